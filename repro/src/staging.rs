//! Staging an input tree with its directory entries created in a chosen
//! order: the staging-order variation. The daemon stages from its CAS in
//! its own way; this copy from a directory serves `hermetic reproduce`
//! from a given input directory, and the tests.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::Error;
use crate::plan::{SplitMix64, permute};

/// Copies `src` into `dst` (created; must not exist), creating each
/// directory's entries in the order [`permute`] gives their sorted names
/// for a seed drawn from `seed` (each directory its own; [`ORDER_REVERSED`]
/// reverses every directory, [`ORDER_AS_GIVEN`] keeps sorted order).
/// Files keep their permission bits; symlinks are copied as symlinks,
/// never followed; directories are given to `owner` (uid, gid) when set, so
/// that the step can create files beside its inputs. Anything else (fifos,
/// devices) is refused.
///
/// [`ORDER_REVERSED`]: crate::plan::ORDER_REVERSED
/// [`ORDER_AS_GIVEN`]: crate::plan::ORDER_AS_GIVEN
pub fn copy_tree(
    src: &Path,
    dst: &Path,
    seed: u64,
    owner: Option<(u32, u32)>,
) -> Result<(), Error> {
    let mut rng = SplitMix64(seed);
    copy_dir(src, dst, seed, &mut rng, owner)
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    seed: u64,
    rng: &mut SplitMix64,
    owner: Option<(u32, u32)>,
) -> Result<(), Error> {
    let meta = fs::symlink_metadata(src).map_err(|e| Error::io(src, e))?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory {
            path: src.to_owned(),
        });
    }
    fs::create_dir(dst).map_err(|e| Error::io(dst, e))?;
    let mut names: Vec<_> = fs::read_dir(src)
        .map_err(|e| Error::io(src, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| Error::io(src, e))?;
    names.sort();
    // Seeds 0 and 1 mean the same in every directory; others differ per
    // directory so that no two directories share one shuffle.
    let dir_seed = if seed <= crate::plan::ORDER_REVERSED {
        seed
    } else {
        rng.next() | 2
    };
    permute(&mut names, dir_seed);
    for name in names {
        let (s, d) = (src.join(&name), dst.join(&name));
        let m = fs::symlink_metadata(&s).map_err(|e| Error::io(&s, e))?;
        let ty = m.file_type();
        if ty.is_dir() {
            copy_dir(&s, &d, seed, rng, owner)?;
        } else if ty.is_symlink() {
            let target = fs::read_link(&s).map_err(|e| Error::io(&s, e))?;
            std::os::unix::fs::symlink(target, &d).map_err(|e| Error::io(&d, e))?;
        } else if ty.is_file() {
            fs::copy(&s, &d).map_err(|e| Error::io(&d, e))?;
            fs::set_permissions(&d, fs::Permissions::from_mode(m.mode() & 0o777))
                .map_err(|e| Error::io(&d, e))?;
        } else {
            return Err(Error::Unsupported { path: s });
        }
    }
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o777))
        .map_err(|e| Error::io(dst, e))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dst, Some(uid), Some(gid)).map_err(|e| Error::io(dst, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use crate::tree::Tree;

    #[test]
    fn copies_exactly_in_the_chosen_order() {
        let dir = TempDir::new("staging");
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("d")).unwrap();
        for n in ["a", "b", "c", "d/x", "d/y"] {
            fs::write(src.join(n), n).unwrap();
        }
        std::os::unix::fs::symlink("a", src.join("link")).unwrap();
        for (i, seed) in [0, 1, 77].into_iter().enumerate() {
            let dst = dir.path().join(format!("dst{i}"));
            copy_tree(&src, &dst, seed, None).unwrap();
            assert_eq!(
                Tree::read(&src).unwrap().digest(),
                Tree::read(&dst).unwrap().digest()
            );
        }
        assert!(
            copy_tree(&src, &dir.path().join("dst0"), 0, None).is_err(),
            "exists"
        );
    }
}
