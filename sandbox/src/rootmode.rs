//! What the helper needs when it runs as root: host ids for the sandbox's
//! users that nobody else on the host owns, and the capabilities that
//! drive a sandbox running under those ids.
//!
//! Sandbox uid N maps to host uid [`HOST_ID_BASE`]` + N` (gids alike). The
//! base lies in 0x70000000–0x7FFEFFFF, a span that systemd's UID/GID
//! allocation document leaves unassigned: above the range
//! `systemd-nspawn --private-users=pick` hands out (0x00080000–0x6FFFFFFF),
//! below the "foreign" range (0x7FFF0000–0x7FFFFFFF) and under 2^31, which
//! tools that treat ids as signed mishandle. Debian's `useradd` allocates
//! `/etc/subuid` ranges from 100000 upwards, 65536 ids per user, so it would
//! take some 28,000 users before it reached this base.
//!
//! A host id that another principal also owns would let that principal
//! reach the step's writable files (and the step reach theirs), so before
//! the first sandbox the helper reads `/etc/passwd`, `/etc/group`,
//! `/etc/subuid` and `/etc/subgid` and refuses to run if any of them
//! assigns the id.

use std::path::Path;

/// Capabilities root mode uses, with why (`systemd/hermeticd.service` keeps
/// exactly these in its bounding set). Without CAP_KILL, say, the helper
/// could not stop a sandbox at its deadline and would wait forever.
pub const REQUIRED_CAPABILITIES: [(u32, &str, &str); 6] = [
    (
        0,
        "CAP_CHOWN",
        "give the scratch directory to the sandbox's host ids",
    ),
    (1, "CAP_DAC_OVERRIDE", "read outputs the step made private"),
    (
        5,
        "CAP_KILL",
        "signal a sandbox (another uid) at its deadline",
    ),
    (6, "CAP_SETGID", "become the sandbox's host gid"),
    (7, "CAP_SETUID", "become the sandbox's host uid"),
    (
        19,
        "CAP_SYS_PTRACE",
        "collect outputs through /proc/<init>/root",
    ),
];

/// Refuses to run as root without every [`REQUIRED_CAPABILITIES`] in the
/// effective set, naming what is missing and what it is for.
pub fn check_capabilities() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let effective = capability_set(&status, "CapEff:")
        .ok_or("/proc/self/status has no readable CapEff line")?;
    let missing: Vec<String> = REQUIRED_CAPABILITIES
        .iter()
        .filter(|(bit, _, _)| effective & (1u64 << bit) == 0)
        .map(|(_, name, why)| format!("{name} (to {why})"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "running as root without capabilities the sandbox needs: {}",
            missing.join(", ")
        ))
    }
}

fn capability_set(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    u64::from_str_radix(line[key.len()..].trim(), 16).ok()
}

/// Host uid base for sandbox ids when the helper runs as root: sandbox uid
/// N maps to host uid `HOST_ID_BASE + N`.
pub const HOST_ID_BASE: u32 = 0x7000_0000;

/// Which database a conflicting entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `/etc/passwd` or `/etc/group`: one id.
    Account,
    /// `/etc/subuid` or `/etc/subgid`: `name:start:count`.
    Subordinate,
}

/// Refuses host ids that another entry on this host already owns: `uid`
/// against `/etc/passwd` and `/etc/subuid`, `gid` against `/etc/group` and
/// `/etc/subgid`. Missing files are fine (nothing assigned); unreadable
/// ones are an error, since the check cannot be made.
pub fn check_unassigned(uid: u32, gid: u32) -> Result<(), String> {
    let etc = Path::new("/etc");
    check_in(&etc.join("passwd"), Kind::Account, uid, "uid")?;
    check_in(&etc.join("subuid"), Kind::Subordinate, uid, "uid")?;
    check_in(&etc.join("group"), Kind::Account, gid, "gid")?;
    check_in(&etc.join("subgid"), Kind::Subordinate, gid, "gid")
}

fn check_in(path: &Path, kind: Kind, id: u32, what: &str) -> Result<(), String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    match find_owner(&text, kind, id) {
        None => Ok(()),
        Some(owner) => Err(format!(
            "host {what} {id}, which the sandbox's user maps to, is already assigned to \
             {owner:?} in {}; sandbox ids use host ids {HOST_ID_BASE}+N, which must belong \
             to nobody else",
            path.display()
        )),
    }
}

/// The name of the entry in `text` that owns `id`, if any. Lines that do not
/// parse (comments, NIS `+` entries) own nothing.
fn find_owner(text: &str, kind: Kind, id: u32) -> Option<&str> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        match kind {
            Kind::Account => {
                let _password = fields.next()?;
                let owned: u32 = fields.next()?.trim().parse().ok()?;
                (owned == id).then_some(name)
            }
            Kind::Subordinate => {
                let start: u64 = fields.next()?.trim().parse().ok()?;
                let count: u64 = fields.next()?.trim().parse().ok()?;
                (start..start.saturating_add(count))
                    .contains(&u64::from(id))
                    .then_some(name)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_own_their_id() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      # comment\n\
                      +nis\n\
                      builder:x:1879049192:1879049192::/:/bin/sh\n";
        assert_eq!(find_owner(passwd, Kind::Account, 0), Some("root"));
        assert_eq!(
            find_owner(passwd, Kind::Account, HOST_ID_BASE + 1000),
            Some("builder")
        );
        assert_eq!(find_owner(passwd, Kind::Account, 1000), None);
    }

    #[test]
    fn subordinate_ranges_are_half_open() {
        let subuid = "alice:100000:65536\nbob:165536:65536\n";
        assert_eq!(
            find_owner(subuid, Kind::Subordinate, 100_000),
            Some("alice")
        );
        assert_eq!(
            find_owner(subuid, Kind::Subordinate, 165_535),
            Some("alice")
        );
        assert_eq!(find_owner(subuid, Kind::Subordinate, 165_536), Some("bob"));
        assert_eq!(find_owner(subuid, Kind::Subordinate, 231_072), None);
        // The old base (100000 + 1000) sat inside the first user's range.
        assert_eq!(
            find_owner(subuid, Kind::Subordinate, 101_000),
            Some("alice")
        );
        assert_eq!(
            find_owner(subuid, Kind::Subordinate, HOST_ID_BASE + 1000),
            None
        );
    }

    #[test]
    fn huge_ranges_do_not_overflow() {
        let subuid = "all:4294967000:4294967295\n";
        assert_eq!(find_owner(subuid, Kind::Subordinate, u32::MAX), Some("all"));
    }

    #[test]
    fn capability_sets_parse() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t00000000000800e3\n";
        let eff = capability_set(status, "CapEff:").unwrap();
        for (bit, name, _) in REQUIRED_CAPABILITIES {
            assert_ne!(eff & (1 << bit), 0, "{name}");
        }
        assert_eq!(capability_set("CapEff:\tzz\n", "CapEff:"), None);
        assert_eq!(capability_set(status, "CapBnd:"), None);
    }

    #[test]
    fn this_host_leaves_the_sandbox_ids_unassigned() {
        // The default user (uid/gid 1000) on this machine's databases.
        check_unassigned(HOST_ID_BASE + 1000, HOST_ID_BASE + 1000).unwrap();
    }
}
