//! The one error type of the crate. Every variant names what it was looking
//! at: the source file, the layer (by digest or archive member) and the entry
//! path inside it, so that an admin can tell which part of an image is bad.

use std::io;
use std::path::PathBuf;

/// Why an import (or a tree walk) failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An I/O error outside any particular layer entry.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path involved.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The destination already exists; an import never overwrites.
    #[error("destination {0} already exists")]
    DestExists(PathBuf),
    /// The source is neither an OCI layout, a docker archive nor a rootfs tarball.
    #[error("unrecognized image source {path}: {reason}")]
    UnknownFormat {
        /// The path given to `import`.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// Malformed OCI or docker-archive metadata (index, manifest, config).
    #[error("invalid image metadata in {file}: {reason}")]
    Metadata {
        /// The JSON document (file name or blob digest).
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A media type this importer does not handle.
    #[error("unsupported media type {media_type} for {context} (supported: {supported})")]
    UnsupportedMediaType {
        /// The media type found.
        media_type: String,
        /// Where it was found (manifest, layer N, ...).
        context: String,
        /// The media types accepted in that position.
        supported: &'static str,
    },
    /// A blob whose content does not hash to its descriptor digest.
    #[error("blob {digest}: content digest is {actual}, not the digest the descriptor names")]
    DigestMismatch {
        /// The digest the descriptor (or file name) promised.
        digest: String,
        /// The digest of the bytes actually read.
        actual: String,
    },
    /// A blob whose length differs from its descriptor size.
    #[error("blob {digest}: descriptor says {expected} bytes, blob has {actual}")]
    SizeMismatch {
        /// The blob's digest.
        digest: String,
        /// The size from the descriptor.
        expected: u64,
        /// The size found.
        actual: u64,
    },
    /// A referenced blob or archive member is missing.
    #[error("missing {what} {name} in {source_path}")]
    Missing {
        /// What kind of thing (blob, layer, config).
        what: &'static str,
        /// Its name or digest.
        name: String,
        /// The layout or archive searched.
        source_path: PathBuf,
    },
    /// A layer could not be decompressed or parsed as tar.
    #[error("layer {layer}: corrupt or truncated archive: {reason}")]
    CorruptLayer {
        /// The layer (digest or file name).
        layer: String,
        /// What the decoder or tar parser reported.
        reason: String,
    },
    /// An entry was refused by the applier (escape attempt, bad link, ...).
    #[error("layer {layer}: entry {entry}: {reason}")]
    BadEntry {
        /// The layer (digest or file name).
        layer: String,
        /// The entry path as written in the archive (lossy UTF-8).
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// A configured limit (`ImportOptions`) was exceeded.
    #[error("layer {layer}: {what} exceeds the limit of {limit} ({detail})")]
    Limit {
        /// The layer (digest or file name), or the image as a whole.
        layer: String,
        /// Which limit.
        what: &'static str,
        /// The limit's value.
        limit: u64,
        /// The offending value or entry.
        detail: String,
    },
    /// The rootfs contains something a REAPI Directory cannot describe.
    #[error("cannot describe {path} in a REAPI tree: {reason}")]
    Tree {
        /// Path relative to the rootfs.
        path: String,
        /// Why (non-UTF-8 name, special file, ...).
        reason: String,
    },
}

impl ImageError {
    /// Wraps an I/O error with a description of what was being done.
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        ImageError::Io {
            what: what.into(),
            source,
        }
    }
}
