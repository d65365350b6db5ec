//! The base image's Debian packages, from `var/lib/dpkg/status`.

use std::fs;
use std::io;
use std::path::Path;

/// One installed Debian package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebPackage {
    /// `Package:`.
    pub name: String,
    /// `Version:` (with epoch, if any).
    pub version: String,
    /// `Architecture:`.
    pub architecture: String,
    /// `Maintainer:`, if given.
    pub maintainer: Option<String>,
    /// `Source:` (the source package name, without a version), if given.
    pub source: Option<String>,
    /// `Homepage:`, if given.
    pub homepage: Option<String>,
}

/// The packages of an image and the distribution they belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpkgDb {
    /// `ID` from `etc/os-release` (`debian`, `ubuntu`), `debian` if absent.
    pub distro: String,
    /// Installed packages, sorted by name and architecture.
    pub packages: Vec<DebPackage>,
}

impl DebPackage {
    /// The package URL: `pkg:deb/<distro>/<name>@<version>?arch=<arch>`.
    pub fn purl(&self, distro: &str) -> String {
        format!(
            "pkg:deb/{}/{}@{}?arch={}",
            pct(distro),
            pct(&self.name),
            pct(&self.version),
            pct(&self.architecture)
        )
    }
}

/// Percent-encodes everything but unreserved characters.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses a dpkg status file, keeping packages whose status is
/// `install ok installed`.
pub fn parse_status(text: &str) -> Vec<DebPackage> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let f = |key: &str| -> Option<String> {
            para.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let installed =
            f("Status").is_some_and(|s| s.ends_with(" installed") && s.starts_with("install "));
        let (Some(name), Some(version)) = (f("Package"), f("Version")) else {
            continue;
        };
        if !installed {
            continue;
        }
        out.push(DebPackage {
            name,
            version,
            architecture: f("Architecture").unwrap_or_else(|| "all".into()),
            maintainer: f("Maintainer"),
            source: f("Source")
                .map(|s| s.split_whitespace().next().unwrap_or_default().to_string()),
            homepage: f("Homepage"),
        });
    }
    out.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
    out
}

/// Reads the package database of the rootfs at `root`; `None` when the
/// image has no dpkg status file.
pub fn read_rootfs(root: &Path) -> io::Result<Option<DpkgDb>> {
    let text = match fs::read_to_string(root.join("var/lib/dpkg/status")) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let distro = fs::read_to_string(root.join("etc/os-release"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("ID="))
                .map(|v| v.trim_matches('"').to_ascii_lowercase())
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "debian".into());
    Ok(Some(DpkgDb {
        distro,
        packages: parse_status(&text),
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const STATUS: &str = "Package: libc6\nStatus: install ok installed\nPriority: optional\n\
Architecture: amd64\nMulti-Arch: same\nSource: glibc (2.36-9)\nVersion: 2.36-9+deb12u4\n\
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>\nDescription: GNU C Library\n \
continuation line\nHomepage: https://www.gnu.org/software/libc/libc.html\n\n\
Package: removed\nStatus: deinstall ok config-files\nVersion: 1\n\n\
Package: g++-12\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:12.2.0-14\n";

    #[test]
    fn parses_installed_packages() {
        let p = parse_status(STATUS);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "g++-12");
        assert_eq!(p[1].source.as_deref(), Some("glibc"));
        assert_eq!(
            p[1].homepage.as_deref(),
            Some("https://www.gnu.org/software/libc/libc.html")
        );
        assert_eq!(
            p[0].purl("debian"),
            "pkg:deb/debian/g%2B%2B-12@1%3A12.2.0-14?arch=amd64"
        );
    }

    #[test]
    fn reads_a_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_rootfs(dir.path()).unwrap(), None);
        fs::create_dir_all(dir.path().join("var/lib/dpkg")).unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("var/lib/dpkg/status"), STATUS).unwrap();
        fs::write(
            dir.path().join("etc/os-release"),
            "NAME=\"Ubuntu\"\nID=ubuntu\n",
        )
        .unwrap();
        let db = read_rootfs(dir.path()).unwrap().unwrap();
        assert_eq!((db.distro.as_str(), db.packages.len()), ("ubuntu", 2));
    }
}
