//! How actions and clients name an image: by digest, in the form the
//! `container-image` platform property takes, or by a local alias.
//!
//! The pinned form is `hermetic-image:blake3:<64 hex>` (the BLAKE3 REAPI
//! tree digest of the normalized rootfs). `hermetic-image:sha256:<64 hex>`
//! names the same image by its SHA-256 tree digest; the `hermetic-image:`
//! prefix may be left out and a `/SIZE` suffix (the size of the root
//! `Directory` message, as `hermetic image ls` prints digests) may be
//! added. Anything else is an alias: a local convenience that the client
//! resolves to the pinned form before it builds an action, so that an alias
//! is never part of an action key.

use std::fmt;

use crate::error::{Error, Result};

/// The scheme prefix of a pinned image.
pub const SCHEME: &str = "hermetic-image:";

/// Which tree digest a reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// BLAKE3: the store's key.
    Blake3,
    /// SHA-256.
    Sha256,
}

impl Algorithm {
    /// `blake3` or `sha256`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Blake3 => "blake3",
            Algorithm::Sha256 => "sha256",
        }
    }
}

/// An image digest: algorithm and 64 lower-case hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageDigest {
    /// The digest function.
    pub algorithm: Algorithm,
    /// The hash, lower-case hex.
    pub hex: String,
}

impl fmt::Display for ImageDigest {
    /// The pinned form, `hermetic-image:ALGO:HEX`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}:{}", self.algorithm.name(), self.hex)
    }
}

impl ImageDigest {
    /// Parses a digest form; `Ok(None)` when `text` is not one (an alias).
    /// A string that looks like a digest but is malformed is an error.
    pub fn parse(text: &str) -> Result<Option<ImageDigest>> {
        let body = text.strip_prefix(SCHEME).unwrap_or(text);
        let (algorithm, rest) = if let Some(r) = body.strip_prefix("blake3:") {
            (Algorithm::Blake3, r)
        } else if let Some(r) = body.strip_prefix("sha256:") {
            (Algorithm::Sha256, r)
        } else if text.starts_with(SCHEME) {
            return Err(Error::InvalidArgument(format!(
                "image {text:?}: expected {SCHEME}blake3:<64 hex> or {SCHEME}sha256:<64 hex>"
            )));
        } else {
            return Ok(None);
        };
        let hex = match rest.split_once('/') {
            Some((h, size)) if !size.is_empty() && size.bytes().all(|b| b.is_ascii_digit()) => h,
            Some(_) => {
                return Err(Error::InvalidArgument(format!(
                    "image {text:?}: the part after '/' must be a size in bytes"
                )));
            }
            None => rest,
        };
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::InvalidArgument(format!(
                "image {text:?}: a {} image digest is 64 lower-case hex characters",
                algorithm.name()
            )));
        }
        Ok(Some(ImageDigest {
            algorithm,
            hex: hex.to_owned(),
        }))
    }

    /// The hex part of `ALGO:HEX/SIZE` as `hermetic-image` formats digests.
    pub fn from_formatted(algorithm: Algorithm, formatted: &str) -> Result<ImageDigest> {
        match ImageDigest::parse(formatted)? {
            Some(d) if d.algorithm == algorithm => Ok(d),
            _ => Err(Error::Internal(format!(
                "image record holds a malformed {} digest {formatted:?}",
                algorithm.name()
            ))),
        }
    }
}

/// Checks an alias: 1 to 128 characters of `A-Z a-z 0-9 . _ - : /`,
/// starting with a letter or digit, and not a digest form.
pub fn check_alias(alias: &str) -> Result<()> {
    let ok_chars = alias
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/'));
    let starts = alias
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric());
    if alias.is_empty() || alias.len() > 128 || !ok_chars || !starts {
        return Err(Error::InvalidArgument(format!(
            "alias {alias:?}: 1 to 128 characters of letters, digits and . _ - : /, \
             starting with a letter or digit"
        )));
    }
    let looks_like_digest =
        alias.starts_with(SCHEME) || alias.starts_with("blake3:") || alias.starts_with("sha256:");
    if looks_like_digest {
        return Err(Error::InvalidArgument(format!(
            "alias {alias:?} would read as a digest"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn digest_forms() {
        let pinned = format!("hermetic-image:blake3:{HEX}");
        let d = ImageDigest::parse(&pinned).unwrap().unwrap();
        assert_eq!(d.to_string(), pinned);
        for form in [format!("blake3:{HEX}"), format!("blake3:{HEX}/142")] {
            assert_eq!(ImageDigest::parse(&form).unwrap().unwrap(), d);
        }
        let s = ImageDigest::parse(&format!("sha256:{HEX}"))
            .unwrap()
            .unwrap();
        assert_eq!(s.algorithm, Algorithm::Sha256);
        assert_eq!(ImageDigest::parse("toolchain").unwrap(), None);
        assert!(ImageDigest::parse("blake3:abc").is_err());
        assert!(ImageDigest::parse(&format!("blake3:{HEX}/x")).is_err());
        assert!(ImageDigest::parse("hermetic-image:md5:00").is_err());
        assert!(ImageDigest::parse(&format!("sha256:{}", HEX.to_uppercase())).is_err());
    }

    #[test]
    fn aliases() {
        for ok in ["toolchain", "busybox:1.36", "team/gcc-12", "a"] {
            check_alias(ok).unwrap();
        }
        for bad in [
            "",
            "-x",
            "a b",
            "blake3:x",
            "hermetic-image:y",
            &"a".repeat(129),
        ] {
            assert!(check_alias(bad).is_err(), "{bad}");
        }
    }
}
