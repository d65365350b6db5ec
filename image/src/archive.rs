//! Byte-level plumbing for archives and blobs: compression detected from
//! magic bytes, OCI content digests, and readers that hash or cap what flows
//! through them.

use std::fmt;
use std::io::{self, Read};

use sha2::{Digest as _, Sha256, Sha512};

/// A compression format, detected from the first bytes of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    /// Not compressed (or not recognized: the tar parser decides).
    None,
    /// gzip (`1f 8b`); concatenated members are read as one stream.
    Gzip,
    /// Zstandard (`28 b5 2f fd`); multiple frames are read as one stream.
    Zstd,
}

/// Magic numbers of formats that are recognized but not supported, so that
/// the error can say what the input is.
const UNSUPPORTED_MAGIC: &[(&[u8], &str)] = &[
    (b"BZh", "bzip2"),
    (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
    (&[0x5d, 0, 0], "lzma"),
];

/// Detects the compression of a stream from its first bytes.
pub(crate) fn sniff(head: &[u8]) -> Result<Compression, String> {
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Compression::Gzip);
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Ok(Compression::Zstd);
    }
    for (magic, name) in UNSUPPORTED_MAGIC {
        if head.starts_with(magic) {
            return Err(format!(
                "{name} compression is not supported (plain, gzip or zstd only)"
            ));
        }
    }
    Ok(Compression::None)
}

/// Wraps `r` in the decompressor its magic bytes call for.
pub(crate) fn decompress<'a, R: Read + 'a>(
    mut r: R,
) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut head = [0u8; 6];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..])? {
            0 => break,
            n => got += n,
        }
    }
    let head = head[..got].to_vec();
    let kind = sniff(&head).map_err(|m| io::Error::new(io::ErrorKind::InvalidData, m))?;
    let stream = io::Cursor::new(head).chain(r);
    Ok(match kind {
        Compression::None => (kind, Box::new(stream)),
        Compression::Gzip => (kind, Box::new(flate2::read::MultiGzDecoder::new(stream))),
        Compression::Zstd => (kind, Box::new(zstd::stream::read::Decoder::new(stream)?)),
    })
}

/// An OCI content digest (`algorithm:hex`), validated.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct BlobDigest {
    /// `sha256` or `sha512`.
    pub(crate) algorithm: Algorithm,
    /// Lower-case hex of the right length.
    pub(crate) hex: String,
}

/// The digest algorithms OCI registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Algorithm {
    Sha256,
    Sha512,
}

impl BlobDigest {
    /// Parses `sha256:<64 hex>` or `sha512:<128 hex>`.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| format!("digest {s:?} has no algorithm prefix"))?;
        let (algorithm, len) = match alg {
            "sha256" => (Algorithm::Sha256, 64),
            "sha512" => (Algorithm::Sha512, 128),
            other => return Err(format!("digest algorithm {other:?} is not supported")),
        };
        if hex.len() != len
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!("digest {s:?} is not {len} lower-case hex digits"));
        }
        Ok(BlobDigest {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    /// The blob's path inside an OCI layout (`blobs/<alg>/<hex>`).
    pub(crate) fn layout_path(&self) -> String {
        format!("blobs/{}/{}", self.algorithm.name(), self.hex)
    }
}

impl Algorithm {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
}

impl fmt::Display for BlobDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

/// An incremental hasher for either OCI algorithm.
#[derive(Clone, Debug)]
pub(crate) enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub(crate) fn new(a: Algorithm) -> Self {
        match a {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub(crate) fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }

    /// The digest of everything fed so far, as `alg:hex`.
    pub(crate) fn finish(self) -> BlobDigest {
        match self {
            Hasher::Sha256(h) => BlobDigest {
                algorithm: Algorithm::Sha256,
                hex: hex::encode(h.finalize()),
            },
            Hasher::Sha512(h) => BlobDigest {
                algorithm: Algorithm::Sha512,
                hex: hex::encode(h.finalize()),
            },
        }
    }
}

/// A reader that hashes and counts what passes through it and fails once
/// more than `limit` bytes have been read.
#[derive(Debug)]
pub(crate) struct Hashing<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
    limit: u64,
}

impl<R: Read> Hashing<R> {
    pub(crate) fn new(inner: R, algorithm: Algorithm, limit: u64) -> Self {
        Hashing {
            inner,
            hasher: Hasher::new(algorithm),
            count: 0,
            limit,
        }
    }

    /// Allows `extra` more bytes from the current position on.
    pub(crate) fn extend_limit(&mut self, extra: u64) {
        self.limit = self.count.saturating_add(extra);
    }

    /// Reads the rest of the input (still hashed and capped), then returns
    /// the digest and total length.
    pub(crate) fn finish(mut self) -> io::Result<(BlobDigest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.hasher.finish(), self.count))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other(LimitExceeded(self.limit)));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The error a [`Hashing`] reader raises past its limit.
#[derive(Debug)]
pub(crate) struct LimitExceeded(pub(crate) u64);

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "more than {} bytes", self.0)
    }
}

impl std::error::Error for LimitExceeded {}

/// True when `e` was raised by a [`Hashing`] reader's limit.
pub(crate) fn is_limit(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<LimitExceeded>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Ok(Compression::Gzip));
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Ok(Compression::Zstd));
        assert_eq!(sniff(b"ustar"), Ok(Compression::None));
        assert!(sniff(b"BZh91AY").unwrap_err().contains("bzip2"));
    }

    #[test]
    fn digest_parsing() {
        let d = BlobDigest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        assert_eq!(d.layout_path(), format!("blobs/sha256/{}", "a".repeat(64)));
        assert!(BlobDigest::parse("sha256:../../etc/passwd").is_err());
        assert!(BlobDigest::parse(&format!("md5:{}", "a".repeat(32))).is_err());
        assert!(BlobDigest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
    }

    #[test]
    fn hashing_reader_caps() {
        let data = [1u8; 100];
        let r = Hashing::new(&data[..], Algorithm::Sha256, 50);
        let e = r.finish().unwrap_err();
        assert!(is_limit(&e));
    }
}
