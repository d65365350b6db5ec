//! The mount plan: the new root filesystem as data, executed by one loop.
//!
//! [`plan`] turns a spec into an ordered `Vec<MountOp>`; [`execute`] runs it
//! inside the sandbox's fresh mount namespace, before `pivot_root`. Keeping
//! the plan as data lets it be read, printed and unit-tested without a
//! kernel, as bubblewrap's ordered setup ops are.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;
use nix::sys::statvfs::{FsFlags, statvfs};

/// Top-level entries of an image that the sandbox provides itself.
const PROVIDED: &[&str] = &["proc", "sys", "dev", "tmp", "work", "lost+found"];

/// Device nodes bind-mounted from the host into the sandbox's `/dev`.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// `/proc` files hidden behind `/dev/null`.
pub const MASKED_PROC: &[&str] = &["kcore", "keys", "timer_list"];

/// `/proc` entries made read-only.
pub const READONLY_PROC: &[&str] = &["sys", "sysrq-trigger"];

/// One step of the root filesystem's construction. Paths are absolute host
/// paths as seen inside the new mount namespace before `pivot_root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// A tmpfs with the given size in bytes and mode.
    Tmpfs {
        /// Where.
        dst: PathBuf,
        /// `size=` in bytes.
        size: u64,
        /// Root directory mode.
        mode: u32,
    },
    /// A directory (created with mode 0755 unless it exists).
    Dir(PathBuf),
    /// A symlink.
    Symlink {
        /// Link target, as found in the image.
        target: PathBuf,
        /// The link.
        dst: PathBuf,
    },
    /// A regular file with the given content (mode 0644).
    File {
        /// Where.
        dst: PathBuf,
        /// Its bytes.
        content: Vec<u8>,
    },
    /// A non-recursive bind mount, then remounted read-only, nosuid, nodev.
    BindReadOnly {
        /// Source.
        src: PathBuf,
        /// Mount point (a directory or file must exist).
        dst: PathBuf,
    },
    /// A read-write bind of a device node (nosuid, noexec).
    BindDevice {
        /// Host device.
        src: PathBuf,
        /// Mount point (an empty file).
        dst: PathBuf,
    },
    /// The overlay holding `/work`.
    Overlay {
        /// Read-only lower layer.
        lower: PathBuf,
        /// Writable upper layer.
        upper: PathBuf,
        /// Overlay's work directory.
        work: PathBuf,
        /// Mount point.
        dst: PathBuf,
    },
    /// A fresh procfs.
    Proc(PathBuf),
    /// A private devpts instance.
    Devpts(PathBuf),
    /// Remount an existing path's mount read-only (bind on itself first).
    ReadOnlyBind(PathBuf),
    /// Remount a mount read-only in place (the new root's tmpfs).
    RemountReadOnly(PathBuf),
    /// The inner operation when its target exists (a `/proc` file the
    /// kernel may not have been built with); nothing otherwise.
    IfExists(PathBuf, Box<MountOp>),
}

/// Errors of the mount plan.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A mount-related call failed.
    #[error("failed to {what} {path}: {errno}")]
    Sys {
        /// The operation.
        what: &'static str,
        /// The path it acted on.
        path: String,
        /// The error.
        errno: nix::Error,
    },
    /// Reading the image failed.
    #[error("cannot read base image {path}: {source}")]
    Image {
        /// The image root.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

fn sys<T>(what: &'static str, path: &Path, r: nix::Result<T>) -> Result<T, MountError> {
    r.map_err(|errno| MountError::Sys {
        what,
        path: path.display().to_string(),
        errno,
    })
}

/// What the plan needs to know.
#[derive(Debug)]
pub struct PlanInput<'a> {
    /// The base image.
    pub rootfs: &'a Path,
    /// The scratch tmpfs mount point (inside which upper, work, root live).
    pub scratch: &'a Path,
    /// `/tmp` size.
    pub tmp_bytes: u64,
    /// Scratch size.
    pub scratch_bytes: u64,
    /// Generated `/etc/passwd`.
    pub passwd: Vec<u8>,
    /// Generated `/etc/group`.
    pub group: Vec<u8>,
    /// Generated `/etc/hosts`.
    pub hosts: Vec<u8>,
}

/// Paths inside the scratch tmpfs.
#[derive(Debug, Clone)]
pub struct ScratchLayout {
    /// The overlay's upper layer.
    pub upper: PathBuf,
    /// The overlay's work dir.
    pub ovl_work: PathBuf,
    /// The new root (its own small tmpfs).
    pub root: PathBuf,
    /// Generated files to bind over the image's.
    pub etc: PathBuf,
}

impl ScratchLayout {
    /// The layout under a scratch mount point.
    pub fn new(scratch: &Path) -> Self {
        ScratchLayout {
            upper: scratch.join("upper"),
            ovl_work: scratch.join("ovlwork"),
            root: scratch.join("root"),
            etc: scratch.join("etc"),
        }
    }
}

/// Builds the ordered mount plan.
pub fn plan(input: &PlanInput<'_>) -> Result<Vec<MountOp>, MountError> {
    let s = ScratchLayout::new(input.scratch);
    let root = &s.root;
    let mut ops = vec![
        // Scratch first: everything else lives inside it, and its size bounds
        // what the step can write under /work.
        MountOp::Tmpfs {
            dst: input.scratch.to_path_buf(),
            size: input.scratch_bytes,
            mode: 0o755,
        },
        MountOp::Dir(s.upper.clone()),
        MountOp::Dir(s.ovl_work.clone()),
        MountOp::Dir(s.etc.clone()),
        MountOp::Dir(root.clone()),
        MountOp::Tmpfs {
            dst: root.clone(),
            size: 1 << 20,
            mode: 0o755,
        },
    ];
    // The image, entry by entry, so that the sandbox's own /proc, /dev, /tmp
    // and /work can be created in the (writable until the end) tmpfs root.
    let image_err = |source| MountError::Image {
        path: input.rootfs.display().to_string(),
        source,
    };
    let rootfs = std::fs::canonicalize(input.rootfs).map_err(image_err)?;
    let host_mounts = mount_points()?;
    let mut entries: Vec<_> = std::fs::read_dir(&rootfs)
        .map_err(image_err)?
        .collect::<Result<_, _>>()
        .map_err(image_err)?;
    entries.sort_by_key(|e| e.file_name());
    let mut etc_files = Vec::new();
    for entry in entries {
        let name = entry.file_name();
        if PROVIDED.iter().any(|p| name.as_bytes() == p.as_bytes()) {
            continue;
        }
        let src = entry.path();
        let dst = root.join(&name);
        let ft = entry.file_type().map_err(image_err)?;
        if ft.is_symlink() {
            let target = std::fs::read_link(&src).map_err(image_err)?;
            ops.push(MountOp::Symlink { target, dst });
        } else if ft.is_dir() {
            ops.push(MountOp::Dir(dst.clone()));
            ops.push(MountOp::BindReadOnly {
                src: src.clone(),
                dst: dst.clone(),
            });
            // The recursive bind carries the mounts beneath (a user
            // namespace may not leave them behind): each is made read-only.
            for sub in host_mounts.iter().filter_map(|m| m.strip_prefix(&src).ok()) {
                if !sub.as_os_str().is_empty() {
                    ops.push(MountOp::RemountReadOnly(dst.join(sub)));
                }
            }
            if name.as_bytes() == b"etc" {
                for (file, content) in [
                    ("passwd", &input.passwd),
                    ("group", &input.group),
                    ("hosts", &input.hosts),
                ] {
                    if src_is_file(&entry.path().join(file)) {
                        etc_files.push((file, content.clone()));
                    }
                }
            }
        } else if ft.is_file() {
            ops.push(MountOp::File {
                dst: dst.clone(),
                content: vec![],
            });
            ops.push(MountOp::BindReadOnly { src, dst });
        }
        // Devices, fifos and sockets at the top of an image are not mounted.
    }
    // Fixed identity files over the image's own (same bytes on every host).
    for (file, content) in etc_files {
        let generated = s.etc.join(file);
        ops.push(MountOp::File {
            dst: generated.clone(),
            content,
        });
        ops.push(MountOp::BindReadOnly {
            src: generated,
            dst: root.join("etc").join(file),
        });
    }
    // /work's mount point; the overlay comes with the action
    // ([`work_overlay`]).
    ops.push(MountOp::Dir(root.join("work")));
    ops.push(MountOp::Dir(root.join("tmp")));
    ops.push(MountOp::Tmpfs {
        dst: root.join("tmp"),
        size: input.tmp_bytes,
        mode: 0o1777,
    });
    // /dev before /proc: the /proc masks bind /dev/null.
    let dev = root.join("dev");
    ops.push(MountOp::Dir(dev.clone()));
    ops.push(MountOp::Tmpfs {
        dst: dev.clone(),
        size: 64 << 10,
        mode: 0o755,
    });
    for d in DEVICES {
        ops.push(MountOp::File {
            dst: dev.join(d),
            content: vec![],
        });
        ops.push(MountOp::BindDevice {
            src: Path::new("/dev").join(d),
            dst: dev.join(d),
        });
    }
    ops.push(MountOp::Dir(dev.join("pts")));
    ops.push(MountOp::Devpts(dev.join("pts")));
    ops.push(MountOp::Symlink {
        target: "pts/ptmx".into(),
        dst: dev.join("ptmx"),
    });
    ops.push(MountOp::Dir(dev.join("shm")));
    ops.push(MountOp::Tmpfs {
        dst: dev.join("shm"),
        size: 64 << 20,
        mode: 0o1777,
    });
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ops.push(MountOp::Symlink {
            target: target.into(),
            dst: dev.join(name),
        });
    }
    ops.push(MountOp::RemountReadOnly(dev.clone()));
    let proc = root.join("proc");
    ops.push(MountOp::Dir(proc.clone()));
    ops.push(MountOp::Proc(proc.clone()));
    for p in READONLY_PROC {
        ops.push(MountOp::IfExists(
            proc.join(p),
            Box::new(MountOp::ReadOnlyBind(proc.join(p))),
        ));
    }
    for p in MASKED_PROC {
        let mask = MountOp::BindDevice {
            src: dev.join("null"),
            dst: proc.join(p),
        };
        ops.push(MountOp::IfExists(proc.join(p), Box::new(mask)));
    }
    Ok(ops)
}

/// `/work`: the action's input tree as a read-only lower layer, writes to
/// the upper layer in scratch. The one mount that depends on the action, so
/// it runs after [`plan`]'s operations (a pooled sandbox runs those before
/// the request comes).
pub fn work_overlay(layout: &ScratchLayout, lower: &Path) -> MountOp {
    MountOp::Overlay {
        lower: lower.to_path_buf(),
        upper: layout.upper.clone(),
        work: layout.ovl_work.clone(),
        dst: layout.root.join("work"),
    }
}

fn src_is_file(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file())
}

/// Runs the plan, in order. Call inside a fresh mount namespace whose
/// propagation has been made private.
pub fn execute(ops: &[MountOp]) -> Result<(), MountError> {
    for op in ops {
        execute_one(op)?;
    }
    Ok(())
}

fn execute_one(op: &MountOp) -> Result<(), MountError> {
    let none: Option<&str> = None;
    match op {
        MountOp::Tmpfs { dst, size, mode } => {
            let data = format!("size={size},mode={mode:o}");
            sys(
                "mount tmpfs on",
                dst,
                mount(
                    Some("tmpfs"),
                    dst.as_path(),
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(data.as_str()),
                ),
            )
        }
        MountOp::Dir(dst) => {
            match nix::unistd::mkdir(dst.as_path(), Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(nix::Error::EEXIST) => Ok(()),
                Err(e) => sys("create directory", dst, Err(e)),
            }
        }
        MountOp::Symlink { target, dst } => {
            std::os::unix::fs::symlink(target, dst).map_err(|e| MountError::Sys {
                what: "create symlink",
                path: dst.display().to_string(),
                errno: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })
        }
        MountOp::File { dst, content } => {
            std::fs::write(dst, content).map_err(|e| MountError::Sys {
                what: "create file",
                path: dst.display().to_string(),
                errno: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })
        }
        MountOp::BindReadOnly { src, dst } => {
            // Recursive: a user namespace may not bind a directory without
            // the mounts locked beneath it. Each of those is made read-only
            // too.
            let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
            sys(
                "bind-mount onto",
                dst,
                mount(Some(src.as_path()), dst.as_path(), none, flags, none),
            )?;
            // Mounts beneath follow as RemountReadOnly ops of the plan.
            remount_readonly(dst, MsFlags::MS_NOSUID | MsFlags::MS_NODEV)
        }
        MountOp::BindDevice { src, dst } => {
            sys(
                "bind-mount device onto",
                dst,
                mount(
                    Some(src.as_path()),
                    dst.as_path(),
                    none,
                    MsFlags::MS_BIND,
                    none,
                ),
            )?;
            let flags = MsFlags::MS_REMOUNT
                | MsFlags::MS_BIND
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NOEXEC
                | locked_flags(dst)?;
            sys(
                "remount device",
                dst,
                mount(none, dst.as_path(), none, flags, none),
            )
        }
        MountOp::Overlay {
            lower,
            upper,
            work,
            dst,
        } => {
            let data = format!(
                "lowerdir={},upperdir={},workdir={},userxattr",
                escape_overlay(lower),
                escape_overlay(upper),
                escape_overlay(work)
            );
            sys(
                "mount overlay on",
                dst,
                mount(
                    Some("overlay"),
                    dst.as_path(),
                    Some("overlay"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(data.as_str()),
                ),
            )
        }
        MountOp::Proc(dst) => sys(
            "mount proc on",
            dst,
            mount(
                Some("proc"),
                dst.as_path(),
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                none,
            ),
        ),
        MountOp::Devpts(dst) => sys(
            "mount devpts on",
            dst,
            mount(
                Some("devpts"),
                dst.as_path(),
                Some("devpts"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("newinstance,ptmxmode=0666,mode=0620"),
            ),
        ),
        MountOp::ReadOnlyBind(dst) => {
            sys(
                "bind-mount onto itself",
                dst,
                mount(
                    Some(dst.as_path()),
                    dst.as_path(),
                    none,
                    MsFlags::MS_BIND,
                    none,
                ),
            )?;
            remount_readonly(dst, MsFlags::MS_NOSUID | MsFlags::MS_NODEV)
        }
        MountOp::RemountReadOnly(dst) => {
            remount_readonly(dst, MsFlags::MS_NOSUID | MsFlags::MS_NODEV)
        }
        MountOp::IfExists(path, op) => match std::fs::symlink_metadata(path) {
            Ok(_) => execute_one(op),
            Err(_) => Ok(()),
        },
    }
}

/// Every mount point of this mount namespace, from /proc/self/mountinfo.
fn mount_points() -> Result<Vec<PathBuf>, MountError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| MountError::Sys {
        what: "read",
        path: "/proc/self/mountinfo".into(),
        errno: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })?;
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .collect())
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Remounts a bind read-only with `extra` flags, keeping the flags a user
/// namespace may not clear (the kernel refuses a remount that drops them).
pub fn remount_readonly(dst: &Path, extra: MsFlags) -> Result<(), MountError> {
    let flags =
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | extra | locked_flags(dst)?;
    sys(
        "remount read-only",
        dst,
        mount(None::<&str>, dst, None::<&str>, flags, None::<&str>),
    )
}

fn locked_flags(path: &Path) -> Result<MsFlags, MountError> {
    let st = sys("statvfs", path, statvfs(path))?;
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    Ok(out)
}

/// Overlay options use `,` and `:` as separators; escape them with `\`.
fn escape_overlay(p: &Path) -> String {
    let mut s = String::new();
    for c in p.to_string_lossy().chars() {
        if matches!(c, ',' | ':' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// Moves into the new root: `pivot_root(new, new)` then detach the old root
/// stacked beneath it, so nothing of the host's tree stays reachable.
pub fn pivot_into(new_root: &Path) -> Result<(), MountError> {
    sys("chdir to", new_root, nix::unistd::chdir(new_root))?;
    sys(
        "pivot_root into",
        new_root,
        nix::unistd::pivot_root(".", "."),
    )?;
    sys(
        "detach old root under",
        new_root,
        umount2(".", MntFlags::MNT_DETACH),
    )?;
    sys("chdir to", Path::new("/"), nix::unistd::chdir("/"))?;
    Ok(())
}

/// Makes every mount in this namespace private, so nothing propagates back
/// to the host.
pub fn make_private() -> Result<(), MountError> {
    sys(
        "make mounts private under",
        Path::new("/"),
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ),
    )
}

/// A CString of a path (paths never hold NUL: they come from the OS).
pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_orders_dev_before_proc_and_skips_provided_dirs() {
        let img = std::env::temp_dir().join(format!("hermetic-plan-{}", std::process::id()));
        std::fs::create_dir_all(img.join("usr/bin")).unwrap();
        std::fs::create_dir_all(img.join("etc")).unwrap();
        std::fs::create_dir_all(img.join("proc")).unwrap();
        std::fs::write(img.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        let _ = std::fs::remove_file(img.join("bin"));
        std::os::unix::fs::symlink("usr/bin", img.join("bin")).unwrap();
        let ops = plan(&PlanInput {
            rootfs: &img,
            scratch: Path::new("/s"),
            tmp_bytes: 1 << 20,
            scratch_bytes: 1 << 20,
            passwd: b"p".to_vec(),
            group: b"g".to_vec(),
            hosts: b"h".to_vec(),
        })
        .unwrap();
        std::fs::remove_dir_all(&img).unwrap();
        let pos = |want: &MountOp| ops.iter().position(|o| o == want).unwrap();
        assert!(
            pos(&MountOp::Proc("/s/root/proc".into()))
                > pos(&MountOp::Devpts("/s/root/dev/pts".into()))
        );
        assert!(ops.contains(&MountOp::Symlink {
            target: "usr/bin".into(),
            dst: "/s/root/bin".into()
        }));
        assert!(ops.contains(&MountOp::BindReadOnly {
            src: "/s/etc/passwd".into(),
            dst: "/s/root/etc/passwd".into()
        }));
        // The image's own /proc is never bound: the sandbox mounts a fresh one.
        assert!(
            !ops.iter()
                .any(|o| matches!(o, MountOp::BindReadOnly { src, .. } if src.ends_with("proc")))
        );
        // The root is made read-only by the caller after pivot_root, never before.
        assert!(matches!(ops[0], MountOp::Tmpfs { .. }));
    }

    #[test]
    fn overlay_paths_are_escaped() {
        assert_eq!(escape_overlay(Path::new("/a,b:c")), "/a\\,b\\:c");
    }
}
