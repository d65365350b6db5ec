//! A minimal reader of unit files: enough to take the hardening settings
//! out of `systemd/hermeticd.service` so that the emulation runs what the
//! unit says, not a copy of it.

use std::path::Path;

/// One unit file: `(section, key, value)` in file order.
#[derive(Debug)]
pub struct Unit {
    entries: Vec<(String, String, String)>,
}

impl Unit {
    /// Reads `path`; panics with the path on error (a test helper).
    pub fn load(path: &Path) -> Unit {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        Unit::parse(&text)
    }

    /// Parses unit-file text (no line continuations: our units have none).
    pub fn parse(text: &str) -> Unit {
        let mut section = String::new();
        let mut entries = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
            } else if let Some((key, value)) = line.split_once('=') {
                entries.push((
                    section.clone(),
                    key.trim().to_owned(),
                    value.trim().to_owned(),
                ));
            }
        }
        Unit { entries }
    }

    /// The last value of `key` in `section` (what systemd uses for a
    /// single-valued setting).
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
    }

    /// Every value of `key` in `section`, in order (list settings).
    pub fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    /// A boolean setting of `[Service]`, `false` when absent.
    pub fn yes(&self, key: &str) -> bool {
        matches!(
            self.get("Service", key),
            Some("yes" | "true" | "on" | "1" | "strict" | "full" | "invisible")
        )
    }

    /// The words of a space-separated list setting of `[Service]`.
    pub fn words(&self, key: &str) -> Vec<String> {
        self.all("Service", key)
            .iter()
            .flat_map(|v| v.split_whitespace())
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn parses_sections_lists_and_comments() {
    let u = Unit::parse("[Service]\n# x=1\nA=1\nL=~a b\nL=c\nA=2\n[Socket]\nA=3\n");
    assert_eq!(u.get("Service", "A"), Some("2"));
    assert_eq!(u.get("Socket", "A"), Some("3"));
    assert_eq!(u.all("Service", "L"), vec!["~a b", "c"]);
    assert_eq!(u.words("L"), vec!["~a", "b", "c"]);
    assert_eq!(u.get("Service", "x"), None);
}
