//! Digests: the two functions the daemon serves, hashing bytes and files,
//! and the `{function}:{hex}/{size}` notation used in output and by
//! `hermetic log`.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use bazel_remote_apis::build::bazel::remote::execution::v2::{Digest, digest_function};
use sha2::Digest as _;

use crate::error::{Error, Result};

/// A digest function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Function {
    /// BLAKE3 (32 bytes), the default.
    #[default]
    Blake3,
    /// SHA-256.
    Sha256,
}

impl Function {
    /// Parses `blake3` or `sha256`.
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "blake3" => Ok(Function::Blake3),
            "sha256" | "sha-256" => Ok(Function::Sha256),
            other => Err(Error::InvalidJob(format!(
                "digest function {other:?} is not one of blake3, sha256"
            ))),
        }
    }

    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Function::Blake3 => "blake3",
            Function::Sha256 => "sha256",
        }
    }

    /// The REAPI `digest_function` value.
    pub fn to_proto(self) -> i32 {
        match self {
            Function::Blake3 => digest_function::Value::Blake3 as i32,
            Function::Sha256 => digest_function::Value::Sha256 as i32,
        }
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Digest {
        let hash = match self {
            Function::Blake3 => blake3::hash(data).to_hex().to_string(),
            Function::Sha256 => hex(&sha2::Sha256::digest(data)),
        };
        Digest {
            hash,
            size_bytes: data.len() as i64,
        }
    }

    /// The digest of a file's content, read in chunks.
    pub fn digest_file(self, path: &Path) -> Result<Digest> {
        let both = Both::of_file(path)?;
        Ok(match self {
            Function::Blake3 => both.blake3,
            Function::Sha256 => both.sha256,
        })
    }
}

/// Both digests of one piece of content, as printed for every output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Both {
    /// BLAKE3.
    pub blake3: Digest,
    /// SHA-256.
    pub sha256: Digest,
}

impl Both {
    /// Both digests of `data`.
    #[cfg(test)]
    pub fn of(data: &[u8]) -> Self {
        Both {
            blake3: Function::Blake3.digest(data),
            sha256: Function::Sha256.digest(data),
        }
    }

    /// Both digests of a file, in one pass.
    pub fn of_file(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(Error::io("open", path))?;
        let mut b3 = blake3::Hasher::new();
        let mut s2 = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0i64;
        loop {
            let n = file.read(&mut buf).map_err(Error::io("read", path))?;
            if n == 0 {
                break;
            }
            b3.update(&buf[..n]);
            s2.update(&buf[..n]);
            size += n as i64;
        }
        Ok(Both {
            blake3: Digest {
                hash: b3.finalize().to_hex().to_string(),
                size_bytes: size,
            },
            sha256: Digest {
                hash: hex(&s2.finalize()),
                size_bytes: size,
            },
        })
    }

    /// The digest under `f`.
    pub fn get(&self, f: Function) -> &Digest {
        match f {
            Function::Blake3 => &self.blake3,
            Function::Sha256 => &self.sha256,
        }
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `{function}:{hex}/{size}`.
pub fn show(f: Function, d: &Digest) -> String {
    format!("{}:{}/{}", f.name(), d.hash, d.size_bytes)
}

/// Parses `[{function}:]{hex}/{size}`; without a prefix, `default` is used.
pub fn parse(text: &str, default: Function) -> Result<(Function, Digest)> {
    let bad = |why: &str| Error::InvalidJob(format!("digest {text:?}: {why}"));
    let (f, rest) = match text.split_once(':') {
        Some((name, rest)) => (Function::parse(name)?, rest),
        None => (default, text),
    };
    let (hash, size) = rest
        .split_once('/')
        .ok_or_else(|| bad("expected [FUNCTION:]HEX/SIZE"))?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("the hash must be 64 hex digits"));
    }
    let size_bytes: i64 = size
        .parse()
        .ok()
        .filter(|s| *s >= 0)
        .ok_or_else(|| bad("the size must be a non-negative number"))?;
    Ok((
        f,
        Digest {
            hash: hash.to_ascii_lowercase(),
            size_bytes,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let d = Function::Sha256.digest(b"");
        assert_eq!(
            d.hash,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let d = Function::Blake3.digest(b"");
        assert_eq!(
            d.hash,
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(Both::of_file(&p).unwrap(), Both::of(b"hello"));
    }

    #[test]
    fn notation_round_trips() {
        let d = Function::Blake3.digest(b"x");
        let text = show(Function::Blake3, &d);
        assert_eq!(
            parse(&text, Function::Sha256).unwrap(),
            (Function::Blake3, d)
        );
        let (f, _) = parse(&format!("{}/1", "a".repeat(64)), Function::Sha256).unwrap();
        assert_eq!(f, Function::Sha256);
        assert!(parse("abc/1", Function::Blake3).is_err());
        assert!(parse(&format!("md5:{}/1", "a".repeat(64)), Function::Blake3).is_err());
    }
}
