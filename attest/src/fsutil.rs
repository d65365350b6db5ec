//! Durable, private file operations shared by the key store and the log.
//!
//! Secrets are created with `O_CREAT|O_EXCL` and mode 0600 in one `open`, so
//! there is no window in which a key file exists with wider permissions, and
//! an existing file is never overwritten. Every file whose loss would matter
//! is fsynced, and so is its directory after the name appears.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Creates `dir` (and parents) with mode 0700 when missing, and fsyncs its
/// parent so the new name is durable.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    sync_dir(parent(dir))
}

/// Fsyncs a directory so that names created or renamed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates a new file with `mode` (`O_EXCL`: fails if it exists), writes
/// `data`, fsyncs it and its directory.
pub(crate) fn write_new(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()?;
    sync_dir(parent(path))
}

/// Replaces `path` atomically: a new temporary file (mode `mode`, `O_EXCL`)
/// is written and fsynced, renamed over `path`, and the directory fsynced.
pub(crate) fn replace_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    // A stale temporary from a crash is ours and incomplete: drop it.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    sync_dir(parent(path))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_new_is_private_and_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        write_new(&p, b"x", 0o600).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = write_new(&p, b"y", 0o600).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"x");
    }

    #[test]
    fn replace_atomic_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        replace_atomic(&p, b"1", 0o644).unwrap();
        replace_atomic(&p, b"2", 0o644).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"2");
        assert!(!p.with_extension("tmp").exists());
    }
}
