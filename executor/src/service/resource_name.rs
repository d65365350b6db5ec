//! ByteStream resource names.
//!
//! - read: `{instance}/blobs/{digest_function}/{hash}/{size}`, the
//!   function segment optional (absent: SHA-256 inferred from a 64-hex hash;
//!   BLAKE3 is always named);
//! - write: `{instance}/uploads/{uuid}/blobs/{digest_function}/{hash}/{size}{/optional_metadata}`.
//!
//! The instance name is everything before the first `blobs`/`uploads`
//! segment and may be empty or have several segments.

use crate::digest::{BlobKey, DigestFunction};
use crate::error::{Error, Result};

/// A parsed read resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResource {
    /// The instance name.
    pub instance: String,
    /// The blob.
    pub key: BlobKey,
}

/// A parsed write resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteResource {
    /// The instance name.
    pub instance: String,
    /// The client's upload id.
    pub uuid: String,
    /// The blob.
    pub key: BlobKey,
}

fn malformed(name: &str, why: &str) -> Error {
    Error::InvalidArgument(format!("malformed resource name {name:?}: {why}"))
}

fn instance_of(name: &str, segs: &[&str]) -> Result<String> {
    if segs.iter().any(|s| s.is_empty()) {
        return Err(malformed(name, "the instance name has an empty segment"));
    }
    Ok(segs.join("/"))
}

/// Parses `[{function}/]{hash}/{size}` followed by `extra` allowed trailing
/// segments.
fn parse_blob(name: &str, rest: &[&str], allow_trailing: bool) -> Result<BlobKey> {
    let (function, rest) = match rest.first().map(|s| DigestFunction::from_segment(s)) {
        Some(Ok(Some(f))) => (Some(f), &rest[1..]),
        Some(Err(e)) => return Err(e),
        _ => (None, rest),
    };
    if rest.len() < 2 || (!allow_trailing && rest.len() > 2) {
        return Err(malformed(
            name,
            "expected blobs/[{digest_function}/]{hash}/{size}",
        ));
    }
    let (hash, size) = (rest[0], rest[1]);
    let function = match function {
        Some(f) => f,
        None if hash.len() == 64 => DigestFunction::Sha256,
        None => {
            return Err(malformed(
                name,
                &format!(
                    "cannot infer a digest function from a {}-character hash",
                    hash.len()
                ),
            ));
        }
    };
    let size: i64 = size
        .parse()
        .map_err(|_| malformed(name, &format!("size {size:?} is not a number")))?;
    BlobKey::parse(function, hash, size)
}

/// Parses a ByteStream Read resource name.
pub fn parse_read(name: &str) -> Result<ReadResource> {
    let segs: Vec<&str> = name.split('/').collect();
    let Some(i) = segs
        .iter()
        .position(|s| *s == "blobs" || *s == "compressed-blobs")
    else {
        return Err(malformed(name, "no `blobs` segment"));
    };
    if segs[i] == "compressed-blobs" {
        return Err(Error::InvalidArgument(format!(
            "{name:?}: compressed blobs are not supported (no compressor is advertised)"
        )));
    }
    Ok(ReadResource {
        instance: instance_of(name, &segs[..i])?,
        key: parse_blob(name, &segs[i + 1..], false)?,
    })
}

/// Parses a ByteStream Write resource name.
pub fn parse_write(name: &str) -> Result<WriteResource> {
    let segs: Vec<&str> = name.split('/').collect();
    let Some(i) = segs.iter().position(|s| *s == "uploads") else {
        return Err(malformed(name, "no `uploads` segment"));
    };
    let uuid = segs.get(i + 1).copied().unwrap_or_default();
    if uuid.is_empty() {
        return Err(malformed(name, "no upload id after `uploads`"));
    }
    match segs.get(i + 2).copied() {
        Some("blobs") => {}
        Some("compressed-blobs") => {
            return Err(Error::InvalidArgument(format!(
                "{name:?}: compressed blobs are not supported (no compressor is advertised)"
            )));
        }
        _ => return Err(malformed(name, "expected uploads/{uuid}/blobs/...")),
    }
    Ok(WriteResource {
        instance: instance_of(name, &segs[..i])?,
        uuid: uuid.to_owned(),
        key: parse_blob(name, &segs[i + 3..], true)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn reads() {
        let r = parse_read(&format!("blobs/{H}/0")).unwrap();
        assert_eq!(r.instance, "");
        assert_eq!(r.key.function, DigestFunction::Sha256);
        let r = parse_read(&format!("a/b/blobs/blake3/{H}/5")).unwrap();
        assert_eq!(r.instance, "a/b");
        assert_eq!(r.key.function, DigestFunction::Blake3);
        assert_eq!(r.key.size, 5);
        for bad in [
            format!("blobs/{H}"),
            format!("blobs/{H}/x"),
            format!("blobs/{H}/1/extra"),
            format!("/blobs/{H}/1"),
            "blobs/abc/1".to_owned(),
            format!("blobs/md5/{H}/1"),
            format!("objects/{H}/1"),
            format!("compressed-blobs/zstd/{H}/1"),
        ] {
            assert!(parse_read(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn writes() {
        let w = parse_write(&format!("inst/uploads/u-1/blobs/{H}/0/meta/data")).unwrap();
        assert_eq!(w.instance, "inst");
        assert_eq!(w.uuid, "u-1");
        let w = parse_write(&format!("uploads/u/blobs/blake3/{H}/3")).unwrap();
        assert_eq!(w.key.function, DigestFunction::Blake3);
        for bad in [
            format!("uploads//blobs/{H}/0"),
            format!("uploads/u/{H}/0"),
            format!("blobs/{H}/0"),
            format!("uploads/u/blobs/{H}"),
        ] {
            assert!(parse_write(&bad).is_err(), "{bad}");
        }
    }
}
