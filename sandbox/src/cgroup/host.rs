//! Reading the host: which hierarchies are mounted where, which cgroup we
//! are in, and where an action's cgroup goes.

use super::*;

/// Whether a controller must, may, or need not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    Required,
    Optional,
    Skip,
}

/// A mounted cgroup hierarchy, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mount {
    /// Where it is mounted.
    pub(super) point: PathBuf,
    /// The cgroup mounted there (relative to our cgroup namespace).
    pub(super) root: PathBuf,
    /// cgroup2 rather than a v1 hierarchy.
    v2: bool,
    /// v1: the controllers bound to the hierarchy.
    pub(super) controllers: Vec<String>,
}

impl Mount {
    /// The directory of cgroup `cgpath` (as `/proc/<pid>/cgroup` names it).
    pub(super) fn dir_of(&self, cgpath: &Path) -> PathBuf {
        let rel = cgpath.strip_prefix(&self.root).unwrap_or(cgpath);
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        if rel.as_os_str().is_empty() {
            self.point.clone()
        } else {
            self.point.join(rel)
        }
    }

    /// The cgroup path of directory `dir`, as `/proc/<pid>/cgroup` names it.
    pub(super) fn cgpath_of(&self, dir: &Path) -> String {
        match dir.strip_prefix(&self.point) {
            Ok(rel) if !rel.as_os_str().is_empty() => self.root.join(rel),
            _ => self.root.clone(),
        }
        .to_string_lossy()
        .into_owned()
    }
}

/// One line of `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Membership {
    pub(super) id: String,
    pub(super) controllers: Vec<String>,
    pub(super) path: String,
}

impl Membership {
    /// Whether this line describes the hierarchy mounted as `m`.
    pub(super) fn belongs_to(&self, m: &Mount) -> bool {
        if m.v2 {
            self.id == "0" && self.controllers.is_empty()
        } else {
            !self.controllers.is_empty()
                && self.controllers.iter().all(|c| m.controllers.contains(c))
        }
    }
}

/// The cgroup mounts and our own memberships.
#[derive(Debug)]
pub(super) struct Host {
    pub(super) mounts: Vec<Mount>,
    pub(super) own: Vec<Membership>,
}

impl Host {
    pub(super) fn read() -> Result<Self, CgroupError> {
        Ok(Host {
            mounts: parse_mountinfo(&read(Path::new("/proc/self/mountinfo"))?),
            own: parse_memberships(&read(Path::new("/proc/self/cgroup"))?),
        })
    }

    /// The cgroup2 mount, preferring one of the whole namespace.
    pub(super) fn v2(&self) -> Option<&Mount> {
        let mut all = self.mounts.iter().filter(|m| m.v2);
        all.clone()
            .find(|m| m.root == Path::new("/"))
            .or_else(|| all.next())
    }

    /// The v1 hierarchy carrying `controller`.
    pub(super) fn v1(&self, controller: &str) -> Option<&Mount> {
        let mut all = self
            .mounts
            .iter()
            .filter(|m| !m.v2 && m.controllers.iter().any(|c| c == controller));
        all.clone()
            .find(|m| m.root == Path::new("/"))
            .or_else(|| all.next())
    }

    /// Our own cgroup's directory in hierarchy `m`.
    pub(super) fn own_dir(&self, m: &Mount) -> Result<PathBuf, CgroupError> {
        let line = self.own.iter().find(|l| l.belongs_to(m)).ok_or_else(|| {
            let reason = format!(
                "/proc/self/cgroup has no entry for the hierarchy mounted at {}",
                m.point.display()
            );
            CgroupError::Unavailable { reason }
        })?;
        Ok(m.dir_of(Path::new(&line.path)))
    }
}

/// Where one directory of a new cgroup goes.
#[derive(Debug)]
pub(super) struct Place {
    pub(super) mount: Mount,
    pub(super) parent: PathBuf,
    pub(super) roles: Vec<&'static str>,
}

/// One directory of a cgroup.
#[derive(Debug)]
pub(super) struct Dir {
    pub(super) path: PathBuf,
    pub(super) mount: Mount,
    pub(super) roles: Vec<&'static str>,
}

/// v2 when the cgroup2 root offers memory and pids, else v1 when both
/// hierarchies are mounted.
pub(super) fn choose_version(host: &Host) -> Result<CgroupVersion, String> {
    if let Some(m) = host.v2() {
        let offered =
            words(&fs::read_to_string(m.point.join("cgroup.controllers")).unwrap_or_default());
        if ["memory", "pids"]
            .iter()
            .all(|c| offered.iter().any(|o| o == c))
        {
            return Ok(CgroupVersion::V2);
        }
    }
    if host.v1("memory").is_some() && host.v1("pids").is_some() {
        return Ok(CgroupVersion::V1);
    }
    Err(match host.v2() {
        Some(m) => format!(
            "cgroup2 at {} does not offer memory and pids, and no v1 memory and pids hierarchies are mounted",
            m.point.display()
        ),
        None if host.mounts.is_empty() => "no cgroup filesystem is mounted".to_owned(),
        None => "cgroup v1 memory or pids hierarchy is not mounted".to_owned(),
    })
}

/// Where the directories of a new cgroup go, with controllers enabled.
pub(super) fn places(
    host: &Host,
    version: CgroupVersion,
    parent: Option<&Path>,
    cpu: Need,
) -> Result<Vec<Place>, CgroupError> {
    match version {
        CgroupVersion::V2 => {
            let m = host.v2().ok_or_else(|| CgroupError::Unavailable {
                reason: "no cgroup2 mount".to_owned(),
            })?;
            let base = v2_base(host, m, parent)?;
            let mut roles = vec!["memory", "pids"];
            let offered =
                words(&fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default());
            if cpu == Need::Required
                || (cpu == Need::Optional && offered.iter().any(|c| c == "cpu"))
            {
                roles.push("cpu");
            }
            enable_controllers(&base, &roles)?;
            Ok(vec![Place {
                mount: m.clone(),
                parent: base,
                roles,
            }])
        }
        CgroupVersion::V1 => {
            let mut places: Vec<Place> = Vec::new();
            let wanted = [
                ("memory", Need::Required),
                ("pids", Need::Required),
                // CPU time comes from rusage (init reaps every process of the
                // sandbox); cpuacct only joins when a CPU quota does, saving
                // a hierarchy's mkdir, move and rmdir per action.
                (
                    "cpuacct",
                    if cpu == Need::Skip {
                        Need::Skip
                    } else {
                        Need::Optional
                    },
                ),
                ("cpu", cpu),
            ];
            for (role, need) in wanted {
                if need == Need::Skip {
                    continue;
                }
                let Some(m) = host.v1(role) else {
                    if need == Need::Required {
                        let reason = format!("cgroup v1 {role} hierarchy is not mounted");
                        return Err(CgroupError::Unavailable { reason });
                    }
                    continue;
                };
                if let Some(place) = places.iter_mut().find(|p| p.mount.point == m.point) {
                    place.roles.push(role);
                    continue;
                }
                match v1_parent(host, m, parent) {
                    Ok(dir) if need == Need::Required || writable(&dir) => places.push(Place {
                        mount: m.clone(),
                        parent: dir,
                        roles: vec![role],
                    }),
                    Err(e) if need == Need::Required => return Err(e),
                    _ => {}
                }
            }
            Ok(places)
        }
    }
}

/// The v2 directory new cgroups go under (see the module docs).
pub(super) fn v2_base(
    host: &Host,
    m: &Mount,
    parent: Option<&Path>,
) -> Result<PathBuf, CgroupError> {
    if let Some(p) = parent {
        let dir = if p.is_absolute() && p.starts_with(&m.point) {
            p.to_owned()
        } else {
            m.dir_of(&Path::new("/").join(p))
        };
        return match dir.is_dir() {
            true => Ok(dir),
            false => Err(CgroupError::ParentNotFound {
                parent: p.to_owned(),
                tried: vec![dir],
            }),
        };
    }
    let own = host.own_dir(m)?;
    if own == m.point || is_real_root(&own) || !has_procs(&own) {
        return Ok(own);
    }
    // No internal processes: we live in `own`, so siblings go in its parent.
    Ok(own.parent().map_or_else(|| own.clone(), Path::to_owned))
}

/// The v1 directory new cgroups go under in hierarchy `m`.
pub(super) fn v1_parent(
    host: &Host,
    m: &Mount,
    parent: Option<&Path>,
) -> Result<PathBuf, CgroupError> {
    let own = host.own_dir(m)?;
    let Some(p) = parent else { return Ok(own) };
    // An absolute path inside any v1 mount names the same relative path.
    let rel = host
        .mounts
        .iter()
        .filter(|h| !h.v2)
        .find_map(|h| p.strip_prefix(&h.point).ok())
        .unwrap_or_else(|| p.strip_prefix("/").unwrap_or(p));
    let mut tried = vec![m.point.join(rel), own.join(rel)];
    tried.dedup();
    match tried.iter().find(|d| d.is_dir()) {
        Some(dir) => Ok(dir.clone()),
        None => Err(CgroupError::ParentNotFound {
            parent: p.to_owned(),
            tried,
        }),
    }
}

/// Enables `wanted` in `base`'s `cgroup.subtree_control` when missing.
pub(super) fn enable_controllers(base: &Path, wanted: &[&str]) -> Result<(), CgroupError> {
    let control = base.join("cgroup.subtree_control");
    let enabled = words(&read(&control)?);
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|c| !enabled.iter().any(|e| e == c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let offered = words(&read(&base.join("cgroup.controllers"))?);
    if let Some(c) = missing.iter().find(|c| !offered.iter().any(|o| o == *c)) {
        return Err(CgroupError::Controller {
            controller: (*c).to_owned(),
            path: base.to_owned(),
            detail: "not offered by the parent (missing from cgroup.controllers)".to_owned(),
        });
    }
    let value = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    write_file(&control, &value).map_err(|e| match e {
        CgroupError::Write { source, .. } if source.raw_os_error() == Some(libc::EBUSY) => CgroupError::Controller {
            controller: missing.join(","),
            path: base.to_owned(),
            detail: "cannot enable in cgroup.subtree_control: the cgroup has processes (no internal \
                     processes rule); pass a delegated parent without processes"
                .to_owned(),
        },
        e => e,
    })?;
    let now = read(&control)?;
    match missing
        .iter()
        .find(|c| !words(&now).iter().any(|e| e == *c))
    {
        Some(c) => Err(CgroupError::Verify {
            controller: (*c).to_owned(),
            path: control,
            expected: value,
            actual: now.trim().to_owned(),
        }),
        None => Ok(()),
    }
}

/// The cgroup mounts in `/proc/self/mountinfo` text.
pub(super) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let mut post = post.split(' ');
            let v2 = match post.next()? {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            let options = post.nth(1).unwrap_or("");
            let controllers = match v2 {
                true => Vec::new(),
                false => options
                    .split(',')
                    .filter(|o| *o != "rw" && *o != "ro" && !o.contains('='))
                    .map(str::to_owned)
                    .collect(),
            };
            Some(Mount {
                root: unescape(pre.get(3)?),
                point: unescape(pre.get(4)?),
                v2,
                controllers,
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
pub(super) fn unescape(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(
                    d.iter()
                        .fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')),
                );
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// The lines of `/proc/<pid>/cgroup` text.
pub(super) fn parse_memberships(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some(Membership {
                id: id.to_owned(),
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                path: path.to_owned(),
            })
        })
        .collect()
}
