//! Digest functions and blob keys.
//!
//! Two digest functions are served, chosen per request: SHA-256 and BLAKE3.
//! Both produce 32-byte hashes, so a [`BlobKey`] is a fixed-size value that
//! is cheap to hash, copy and compare.

use std::fmt;

use bazel_remote_apis::build::bazel::remote::execution::v2::{Digest, digest_function};
use sha2::Digest as _;

use crate::error::Error;

/// A digest function this server supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestFunction {
    /// SHA-256, the REAPI default.
    Sha256,
    /// BLAKE3 with 32-byte output.
    Blake3,
}

impl DigestFunction {
    /// Every supported function, in the order advertised.
    pub const ALL: [DigestFunction; 2] = [DigestFunction::Sha256, DigestFunction::Blake3];

    /// The function named by a request's `digest_function` field. `UNKNOWN`
    /// (0) means the client did not say: SHA-256, the only one a 64-hex hash
    /// can be inferred as.
    pub fn from_proto(value: i32) -> Result<Self, Error> {
        match digest_function::Value::try_from(value) {
            Ok(digest_function::Value::Unknown | digest_function::Value::Sha256) => {
                Ok(DigestFunction::Sha256)
            }
            Ok(digest_function::Value::Blake3) => Ok(DigestFunction::Blake3),
            Ok(other) => Err(Error::UnsupportedDigestFunction(
                other.as_str_name().to_owned(),
            )),
            Err(_) => Err(Error::UnsupportedDigestFunction(format!("#{value}"))),
        }
    }

    /// The proto enum value.
    pub fn to_proto(self) -> i32 {
        match self {
            DigestFunction::Sha256 => digest_function::Value::Sha256 as i32,
            DigestFunction::Blake3 => digest_function::Value::Blake3 as i32,
        }
    }

    /// The lower-case name used in ByteStream resource names and on disk.
    pub fn name(self) -> &'static str {
        match self {
            DigestFunction::Sha256 => "sha256",
            DigestFunction::Blake3 => "blake3",
        }
    }

    /// The function named by a ByteStream resource-name segment, if it names
    /// one at all (`Ok(None)`: the segment is not a digest function name).
    pub fn from_segment(segment: &str) -> Result<Option<Self>, Error> {
        match segment {
            "sha256" => Ok(Some(DigestFunction::Sha256)),
            "blake3" => Ok(Some(DigestFunction::Blake3)),
            "sha1" | "md5" | "vso" | "sha384" | "sha512" | "murmur3" | "sha256tree" | "gitsha1" => {
                Err(Error::UnsupportedDigestFunction(segment.to_owned()))
            }
            _ => Ok(None),
        }
    }

    /// A fresh incremental hasher.
    pub fn hasher(self) -> Hasher {
        match self {
            DigestFunction::Sha256 => Hasher::Sha256(Box::default()),
            DigestFunction::Blake3 => Hasher::Blake3(Box::default()),
        }
    }

    /// The key of `data`.
    pub fn compute(self, data: &[u8]) -> BlobKey {
        key_of(self, data)
    }

    /// The key of the empty blob, which is always present.
    pub fn empty(self) -> BlobKey {
        self.compute(&[])
    }
}

impl fmt::Display for DigestFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An incremental hasher for either function.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(Box<sha2::Sha256>),
    /// BLAKE3 state.
    Blake3(Box<blake3::Hasher>),
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hasher::Sha256(_) => f.write_str("Hasher::Sha256"),
            Hasher::Blake3(_) => f.write_str("Hasher::Blake3"),
        }
    }
}

impl Hasher {
    /// Feeds bytes; the size is counted by [`Hasher::finish_sized`]'s caller.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    /// The hash of everything fed, with `size` as the digest's size.
    pub fn finish_sized(self, size: u64) -> BlobKey {
        match self {
            Hasher::Sha256(h) => BlobKey {
                function: DigestFunction::Sha256,
                hash: h.finalize().into(),
                size,
            },
            Hasher::Blake3(h) => BlobKey {
                function: DigestFunction::Blake3,
                hash: *h.finalize().as_bytes(),
                size,
            },
        }
    }
}

/// A blob's identity: digest function, 32-byte hash and size.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobKey {
    /// The digest function the hash was computed with.
    pub function: DigestFunction,
    /// The raw hash.
    pub hash: [u8; 32],
    /// The blob's size in bytes.
    pub size: u64,
}

impl fmt::Debug for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.function, self.hex(), self.size)
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.hex(), self.size)
    }
}

impl BlobKey {
    /// Parses a proto digest under `function`: the hash must be 64 lower-case
    /// hex characters and the size non-negative.
    pub fn from_proto(function: DigestFunction, digest: &Digest) -> Result<Self, Error> {
        Self::parse(function, &digest.hash, digest.size_bytes)
    }

    /// Parses a hash and size under `function`.
    pub fn parse(function: DigestFunction, hash: &str, size: i64) -> Result<Self, Error> {
        let bad = |why: &str| Error::InvalidDigest(format!("{hash}/{size}: {why}"));
        if size < 0 {
            return Err(bad("negative size"));
        }
        if hash.len() != 64 {
            return Err(bad(&format!("a {function} hash has 64 hex digits")));
        }
        let mut out = [0u8; 32];
        for (i, pair) in hash.as_bytes().chunks(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or_else(|| bad("not lower-case hex"))?;
            let lo = hex_value(pair[1]).ok_or_else(|| bad("not lower-case hex"))?;
            out[i] = (hi << 4) | lo;
        }
        Ok(BlobKey {
            function,
            hash: out,
            size: size as u64,
        })
    }

    /// Parses a proto digest that may be absent.
    pub fn from_opt(
        function: DigestFunction,
        digest: Option<&Digest>,
        what: &str,
    ) -> Result<Self, Error> {
        let d = digest.ok_or_else(|| Error::InvalidArgument(format!("{what} is missing")))?;
        Self::from_proto(function, d)
    }

    /// The proto digest.
    pub fn to_proto(&self) -> Digest {
        Digest {
            hash: self.hex(),
            size_bytes: self.size as i64,
        }
    }

    /// Lower-case hex of the hash.
    pub fn hex(&self) -> String {
        // By table: on every digest sent back (each operation's metadata,
        // each cached result's paths), so not through `fmt`.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(self.hash.len() * 2);
        for b in &self.hash {
            s.push(char::from(DIGITS[usize::from(b >> 4)]));
            s.push(char::from(DIGITS[usize::from(b & 0xf)]));
        }
        s
    }

    /// Whether this is the empty blob.
    pub fn is_empty(&self) -> bool {
        self.size == 0 && *self == self.function.empty()
    }

    /// `blobs/{hash}/{size}` for SHA-256, `blobs/blake3/{hash}/{size}`
    /// otherwise: the subject of a MISSING precondition violation.
    pub fn missing_subject(&self) -> String {
        match self.function {
            DigestFunction::Sha256 => format!("blobs/{}/{}", self.hex(), self.size),
            f => format!("blobs/{f}/{}/{}", self.hex(), self.size),
        }
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Hashes `data` and returns its key with the right size.
pub fn key_of(function: DigestFunction, data: &[u8]) -> BlobKey {
    let mut h = function.hasher();
    h.update(data);
    h.finish_sized(data.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_blobs_have_the_well_known_hashes() {
        assert_eq!(
            key_of(DigestFunction::Sha256, b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            key_of(DigestFunction::Blake3, b"").hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert!(DigestFunction::Blake3.empty().is_empty());
    }

    #[test]
    fn parse_rejects_bad_hashes() {
        assert!(BlobKey::parse(DigestFunction::Sha256, "ab", 1).is_err());
        assert!(BlobKey::parse(DigestFunction::Sha256, &"A".repeat(64), 1).is_err());
        assert!(BlobKey::parse(DigestFunction::Sha256, &"a".repeat(64), -1).is_err());
        let k = BlobKey::parse(DigestFunction::Sha256, &"0f".repeat(32), 7).unwrap();
        assert_eq!(k.hex(), "0f".repeat(32));
    }
}
