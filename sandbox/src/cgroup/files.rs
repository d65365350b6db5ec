//! Small filesystem helpers for cgroupfs: reads, verified writes, pid
//! lists and removal.

use super::*;

/// Writes a limit and checks that it reads back as `expected`.
pub(super) fn set(
    controller: &str,
    path: &Path,
    value: &str,
    expected: &str,
) -> Result<(), CgroupError> {
    write_file(path, value).map_err(|e| match e {
        CgroupError::Write {
            path,
            value,
            source,
        } => CgroupError::Limit {
            controller: controller.to_owned(),
            path,
            value,
            source,
        },
        e => e,
    })?;
    let actual = read(path)?.trim().to_owned();
    if actual != expected {
        return Err(CgroupError::Verify {
            controller: controller.to_owned(),
            path: path.to_owned(),
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(())
}

pub(super) fn check_name(name: &str) -> Result<(), CgroupError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0', '\n']) {
        return Err(CgroupError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Whether `dir` is the real root cgroup (exempt from the no internal
/// processes rule); `cgroup.type` exists only below it.
pub(super) fn is_real_root(dir: &Path) -> bool {
    !dir.join("cgroup.type").exists()
}

/// Whether processes live directly in `dir` (unreadable: assume so).
pub(super) fn has_procs(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cgroup.procs")).map_or(true, |t| !t.trim().is_empty())
}

pub(super) fn writable(path: &Path) -> bool {
    access(path, AccessFlags::W_OK).is_ok()
}

pub(super) fn sysconf(name: libc::c_int, fallback: u64) -> u64 {
    // SAFETY: sysconf takes no pointers and only reads a system value.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value)
        .ok()
        .filter(|&v| v > 0)
        .unwrap_or(fallback)
}

pub(super) fn mkdir(path: &Path) -> Result<(), CgroupError> {
    fs::create_dir(path).map_err(|source| CgroupError::Create {
        path: path.to_owned(),
        source,
    })
}

pub(super) fn chown_to(path: &Path, uid: u32, gid: u32) -> Result<(), CgroupError> {
    chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(|source| {
        CgroupError::Chown {
            path: path.to_owned(),
            uid,
            gid,
            source,
        }
    })
}

pub(super) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// One `write(2)` of `value`, as cgroup files want.
pub(super) fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write {
            path: path.to_owned(),
            value: value.to_owned(),
            source,
        })
}

pub(super) fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// A file holding one number.
pub(super) fn number(path: &Path) -> Result<u64, CgroupError> {
    let text = read(path)?;
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_owned(),
        detail: format!("not a number: {:?}", text.trim()),
    })
}

/// The value of `key` in a flat keyed file (`key value` lines).
pub(super) fn keyed(path: &Path, text: &str, key: &str) -> Result<u64, CgroupError> {
    text.lines()
        .find_map(|l| {
            l.split_once(' ')
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.trim())
        })
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| CgroupError::Parse {
            path: path.to_owned(),
            detail: format!("no numeric {key:?} line"),
        })
}

/// The pids in `dirs` and their sub-cgroups, sorted and deduplicated.
pub(super) fn pids_in<'a>(
    dirs: impl IntoIterator<Item = &'a Path>,
) -> Result<Vec<i32>, CgroupError> {
    let mut pids = Vec::new();
    for dir in dirs {
        collect_pids(dir, true, &mut pids)?;
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

pub(super) fn collect_pids(dir: &Path, top: bool, out: &mut Vec<i32>) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.procs");
    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        // A sub-cgroup removed while we walk.
        Err(e) if !top && e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(CgroupError::Read { path: file, source }),
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let pid = line.parse().map_err(|_| CgroupError::Parse {
            path: file.clone(),
            detail: format!("not a pid: {line:?}"),
        })?;
        out.push(pid);
    }
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_pids(&entry.path(), false, out)?;
        }
    }
    Ok(())
}

/// Removes a cgroup directory and any sub-cgroups, retrying a bounded time
/// while the kernel still reports it busy.
pub(super) fn remove_tree(path: &Path) -> Result<(), CgroupError> {
    match fs::read_dir(path) {
        Ok(entries) => {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&entry.path())?;
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: path.to_owned(),
                source,
            });
        }
    }
    let deadline = Instant::now() + RMDIR_TIMEOUT;
    loop {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                sleep(Duration::from_millis(10))
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
}
