//! Who is calling, and what they may do.
//!
//! - Authentication happens per connection, when it is accepted
//!   ([`peer`]): on the Unix socket the kernel's `SO_PEERCRED` (uid, gid);
//!   on TCP with TLS the client certificate's subject ([`tls`]); on
//!   loopback TCP without TLS, as configured, the uid owning the client's
//!   socket (read from `/proc/net/tcp`, the kernel's own record), an
//!   anonymous principal, or nothing (refused).
//! - Authorization happens per call ([`layer`]): each gRPC method needs
//!   one of a set of [`Role`]s ([`required`]); roles are granted to
//!   principals in the configuration ([`AuthConfig`]). Deny by default:
//!   a method not listed needs `admin`. A denial is PERMISSION_DENIED
//!   naming the principal and the method, and is logged.
//!
//! Separation of duties: only a caller with `cache-write` and without
//! `submit` may call UpdateActionResult, so no submitter can put a result
//! it chose into the cache (unless it is also `admin`, who is trusted
//! with everything).

pub mod layer;
pub mod peer;
pub mod tls;

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    /// A local process: on the Unix socket (`SO_PEERCRED`), or on loopback
    /// TCP (the owner of its socket, with the user's primary group).
    Unix {
        /// User id.
        uid: u32,
        /// Group id, when known.
        gid: Option<u32>,
        /// Supplementary group ids: on the Unix socket those the peer
        /// had when it connected (`SO_PEERGROUPS`), on loopback TCP the
        /// user's groups in the group database. Not part of the name.
        groups: Vec<u32>,
    },
    /// A TLS client, by its certificate's subject (RFC 4514 form, e.g.
    /// `CN=ci-runner,O=Example`).
    Cert {
        /// The subject.
        subject: String,
    },
    /// An unauthenticated loopback TCP client (`loopback_tcp = "anonymous"`).
    Anonymous,
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Unix {
                uid, gid: Some(g), ..
            } => write!(f, "unix:uid={uid},gid={g}"),
            Principal::Unix { uid, gid: None, .. } => write!(f, "unix:uid={uid}"),
            Principal::Cert { subject } => write!(f, "x509:{subject}"),
            Principal::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// The caller of a request, with its roles: put into every authorized
/// request's extensions by [`layer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// The roles it holds.
    pub roles: BTreeSet<Role>,
}

impl Caller {
    /// Whether the caller may see an operation owned by `owners`: its
    /// own, or any with `admin`. Requests without a caller (the daemon's
    /// own, in-process) see everything.
    pub fn may_see(caller: Option<&Caller>, owners: &BTreeSet<String>) -> bool {
        caller.is_none_or(|c| {
            c.roles.contains(&Role::Admin) || owners.contains(&c.principal.to_string())
        })
    }
}

/// A set of powers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Execute, upload, read results.
    Submit,
    /// Read the CAS and the action cache.
    Read,
    /// Write the action cache (UpdateActionResult).
    CacheWrite,
    /// Everything, including images, trust, keys and GC.
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Submit => "submit",
            Role::Read => "read",
            Role::CacheWrite => "cache-write",
            Role::Admin => "admin",
        })
    }
}

/// How loopback TCP clients without TLS are identified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoopbackTcp {
    /// By the uid owning the client's socket (`/proc/net/tcp`): as strong
    /// as `SO_PEERCRED`, since both ends are on this host's loopback.
    #[default]
    PeerUid,
    /// As the principal `anonymous` (unauthenticated; grant it roles with
    /// the entry `anonymous`).
    Anonymous,
    /// Refused.
    Deny,
}

/// The `[auth]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Principals granted each role.
    pub roles: RolesConfig,
    /// Loopback TCP without TLS. Default `"peer-uid"`.
    pub loopback_tcp: LoopbackTcp,
    /// mutual TLS on every TCP listener. Default: none (then only loopback
    /// TCP addresses may be listened on).
    pub tls: Option<TlsConfig>,
}

/// Certificates for mutual TLS.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM).
    pub cert: std::path::PathBuf,
    /// The server's private key (PEM).
    pub key: std::path::PathBuf,
    /// CA certificates (PEM) that client certificates must chain to.
    pub client_ca: std::path::PathBuf,
}

/// Principals per role, each entry one of `uid:N`, `gid:N`, `user:NAME`,
/// `group:NAME` (resolved at start-up), `cert:SUBJECT`, `anonymous`, or
/// `self` (the daemon's own uid). `gid:`/`group:` match the caller's
/// primary group and its supplementary groups.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RolesConfig {
    /// Default: none.
    pub submit: Vec<String>,
    /// Default: none.
    pub read: Vec<String>,
    /// Default: none.
    #[serde(rename = "cache-write")]
    pub cache_write: Vec<String>,
    /// Default: `["uid:0", "self"]`: the host's root and the daemon's own
    /// user may do everything.
    pub admin: Vec<String>,
}

impl Default for RolesConfig {
    fn default() -> Self {
        RolesConfig {
            submit: Vec::new(),
            read: Vec::new(),
            cache_write: Vec::new(),
            admin: vec!["uid:0".into(), "self".into()],
        }
    }
}

/// One role entry, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    Uid(u32),
    Gid(u32),
    Subject(String),
    Anonymous,
}

impl Matcher {
    fn parse(entry: &str) -> Result<Self, String> {
        let number = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| format!("{entry:?}: {v:?} is not a number"))
        };
        match entry.split_once(':') {
            Some(("uid", v)) => Ok(Matcher::Uid(number(v)?)),
            Some(("gid", v)) => Ok(Matcher::Gid(number(v)?)),
            Some(("user", v)) => match nix::unistd::User::from_name(v) {
                Ok(Some(u)) => Ok(Matcher::Uid(u.uid.as_raw())),
                _ => Err(format!("{entry:?}: no such user")),
            },
            Some(("group", v)) => match nix::unistd::Group::from_name(v) {
                Ok(Some(g)) => Ok(Matcher::Gid(g.gid.as_raw())),
                _ => Err(format!("{entry:?}: no such group")),
            },
            Some(("cert", v)) if !v.is_empty() => Ok(Matcher::Subject(v.to_owned())),
            None if entry == "anonymous" => Ok(Matcher::Anonymous),
            None if entry == "self" => Ok(Matcher::Uid(nix::unistd::geteuid().as_raw())),
            _ => Err(format!(
                "{entry:?}: expected uid:N, gid:N, user:NAME, group:NAME, cert:SUBJECT, anonymous or self"
            )),
        }
    }

    fn matches(&self, p: &Principal) -> bool {
        match (self, p) {
            (Matcher::Uid(u), Principal::Unix { uid, .. }) => u == uid,
            (Matcher::Gid(g), Principal::Unix { gid, groups, .. }) => {
                *gid == Some(*g) || groups.contains(g)
            }
            (Matcher::Subject(s), Principal::Cert { subject }) => s == subject,
            (Matcher::Anonymous, Principal::Anonymous) => true,
            _ => false,
        }
    }
}

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who reached the server (health checks, reflection).
    Open,
    /// Any principal holding at least one role.
    AnyRole,
    /// One of these roles.
    OneOf(&'static [Role]),
    /// `cache-write` without `submit` (separation of duties).
    CacheWriteOnly,
}

const REAPI: &str = "/build.bazel.remote.execution.v2.";

/// What the gRPC method at `path` (`/package.Service/Method`) needs. Not
/// listed: `admin`.
pub fn required(path: &str) -> Access {
    use Role::*;
    if path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.") {
        return Access::Open;
    }
    if path.starts_with("/hermetic.v1.Status/") {
        return Access::AnyRole;
    }
    // Reading images and provenance is for builders and auditors; importing,
    // trusting and removing images and rotating or revoking keys is admin.
    match path {
        "/hermetic.v1.Images/List" | "/hermetic.v1.Images/Inspect" => {
            return Access::OneOf(&[Submit, Read]);
        }
        "/hermetic.v1.Provenance/GetProvenance"
        | "/hermetic.v1.Provenance/GetKeyring"
        | "/hermetic.v1.Provenance/GetCheckpoint"
        | "/hermetic.v1.Provenance/GetConsistencyProof" => {
            return Access::OneOf(&[Submit, Read]);
        }
        _ => {}
    }
    if let Some(m) = path.strip_prefix(REAPI) {
        return match m {
            "Capabilities/GetCapabilities" => Access::AnyRole,
            "ContentAddressableStorage/FindMissingBlobs" => {
                Access::OneOf(&[Submit, Read, CacheWrite])
            }
            "ContentAddressableStorage/BatchUpdateBlobs" => Access::OneOf(&[Submit, CacheWrite]),
            "ContentAddressableStorage/BatchReadBlobs" | "ContentAddressableStorage/GetTree" => {
                Access::OneOf(&[Submit, Read])
            }
            "ActionCache/GetActionResult" => Access::OneOf(&[Submit, Read, CacheWrite]),
            "ActionCache/UpdateActionResult" => Access::CacheWriteOnly,
            "Execution/Execute" | "Execution/WaitExecution" => Access::OneOf(&[Submit]),
            _ => Access::OneOf(&[Admin]),
        };
    }
    match path {
        "/google.bytestream.ByteStream/Read" => Access::OneOf(&[Submit, Read]),
        "/google.bytestream.ByteStream/Write"
        | "/google.bytestream.ByteStream/QueryWriteStatus" => Access::OneOf(&[Submit, CacheWrite]),
        p if p.starts_with("/google.longrunning.Operations/") => Access::OneOf(&[Submit]),
        _ => Access::OneOf(&[Admin]),
    }
}

/// Roles granted to principals, resolved from [`RolesConfig`].
#[derive(Debug, Clone)]
pub struct Policy {
    grants: Vec<(Role, Matcher)>,
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Who.
    pub principal: String,
    /// Which method.
    pub method: String,
    /// What was missing.
    pub needed: String,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} may not call {}: {}",
            self.principal, self.method, self.needed
        )
    }
}

impl Policy {
    /// Resolves every entry; an unknown user or group, or a malformed
    /// entry, is a configuration error naming it.
    pub fn new(roles: &RolesConfig) -> Result<Self, ConfigError> {
        let mut grants = Vec::new();
        for (role, entries) in [
            (Role::Submit, &roles.submit),
            (Role::Read, &roles.read),
            (Role::CacheWrite, &roles.cache_write),
            (Role::Admin, &roles.admin),
        ] {
            for e in entries {
                let m = Matcher::parse(e)
                    .map_err(|why| ConfigError::Invalid(format!("auth.roles.{role}: {why}")))?;
                grants.push((role, m));
            }
        }
        Ok(Policy { grants })
    }

    /// The roles `p` holds.
    pub fn roles_of(&self, p: &Principal) -> BTreeSet<Role> {
        self.grants
            .iter()
            .filter(|(_, m)| m.matches(p))
            .map(|(r, _)| *r)
            .collect()
    }

    /// Whether `p` may call `path`.
    pub fn authorize(&self, p: &Principal, path: &str) -> Result<(), Denial> {
        let roles = self.roles_of(p);
        let deny = |needed: String| Denial {
            principal: p.to_string(),
            method: path.to_owned(),
            needed,
        };
        let access = required(path);
        if roles.contains(&Role::Admin) || access == Access::Open {
            return Ok(());
        }
        match access {
            Access::Open => Ok(()),
            Access::AnyRole if roles.is_empty() => Err(deny("it holds no role".into())),
            Access::AnyRole => Ok(()),
            Access::OneOf(need) if need.iter().any(|r| roles.contains(r)) => Ok(()),
            Access::OneOf(need) => Err(deny(format!(
                "needs the role {}",
                need.iter()
                    .map(Role::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))),
            Access::CacheWriteOnly if roles.contains(&Role::Submit) => Err(deny(
                "a submitter may never write the action cache (separation of duties)".into(),
            )),
            Access::CacheWriteOnly if roles.contains(&Role::CacheWrite) => Ok(()),
            Access::CacheWriteOnly => Err(deny("needs the role cache-write".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(uid: u32, gid: u32) -> Principal {
        Principal::Unix {
            uid,
            gid: Some(gid),
            groups: Vec::new(),
        }
    }

    #[test]
    fn group_entries_match_supplementary_groups() {
        let policy = Policy::new(&RolesConfig {
            submit: vec!["gid:4242".into()],
            ..Default::default()
        })
        .unwrap();
        let exec = "/build.bazel.remote.execution.v2.Execution/Execute";
        let member = Principal::Unix {
            uid: 5,
            gid: Some(5),
            groups: vec![27, 4242],
        };
        assert!(policy.authorize(&member, exec).is_ok());
        assert_eq!(member.to_string(), "unix:uid=5,gid=5");
        assert!(policy.authorize(&unix(5, 5), exec).is_err());
        assert!(policy.authorize(&unix(5, 4242), exec).is_ok());
    }

    #[test]
    fn roles_are_granted_by_uid_gid_and_subject() {
        let policy = Policy::new(&RolesConfig {
            submit: vec!["gid:100".into(), "cert:CN=ci".into()],
            read: vec!["uid:7".into()],
            cache_write: vec!["uid:8".into(), "gid:100".into()],
            admin: vec!["uid:0".into()],
        })
        .unwrap();
        let exec = "/build.bazel.remote.execution.v2.Execution/Execute";
        let update = "/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult";
        let get = "/build.bazel.remote.execution.v2.ActionCache/GetActionResult";
        assert!(policy.authorize(&unix(5, 100), exec).is_ok());
        let ci = Principal::Cert {
            subject: "CN=ci".into(),
        };
        assert!(policy.authorize(&ci, exec).is_ok());
        let err = policy.authorize(&unix(7, 7), exec).unwrap_err();
        assert_eq!(err.principal, "unix:uid=7,gid=7");
        assert!(err.to_string().contains("submit"), "{err}");
        assert!(policy.authorize(&unix(7, 7), get).is_ok());
        // cache-write alone may update; cache-write with submit may not.
        assert!(policy.authorize(&unix(8, 8), update).is_ok());
        let err = policy.authorize(&unix(5, 100), update).unwrap_err();
        assert!(err.needed.contains("separation of duties"), "{err}");
        // Unknown methods need admin; admin may do everything.
        let admin_only = "/hermetic.v1.Images/Import";
        assert!(
            policy
                .authorize(&unix(7, 7), "/hermetic.v1.Images/List")
                .is_ok()
        );
        assert!(
            policy
                .authorize(&unix(5, 100), "/hermetic.v1.Provenance/RotateKey")
                .is_err()
        );
        assert!(policy.authorize(&unix(8, 8), admin_only).is_err());
        assert!(policy.authorize(&unix(0, 0), admin_only).is_ok());
        assert!(policy.authorize(&unix(0, 0), update).is_ok());
        // Nobody else.
        let stranger = unix(9, 9);
        assert!(policy.authorize(&stranger, get).is_err());
        assert!(
            policy
                .authorize(&stranger, "/grpc.health.v1.Health/Check")
                .is_ok()
        );
        assert!(policy.authorize(&Principal::Anonymous, get).is_err());
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "uid:x",
            "cert:",
            "nobody-knows",
            "user:no-such-user-hermetic",
        ] {
            let roles = RolesConfig {
                read: vec![bad.into()],
                ..Default::default()
            };
            let err = Policy::new(&roles).unwrap_err().to_string();
            assert!(
                err.contains(bad) && err.contains("auth.roles.read"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_default_lets_root_and_self_do_everything() {
        let policy = Policy::new(&RolesConfig::default()).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        for uid in [0, me] {
            let p = Principal::Unix {
                uid,
                gid: None,
                groups: Vec::new(),
            };
            assert!(policy.roles_of(&p).contains(&Role::Admin));
        }
    }
}
