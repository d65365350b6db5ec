//! Base-image import for hermetic.
//!
//! [`import`] turns what users already have — an OCI image layout (directory
//! or tar, including `docker save` output since Docker 25), an older docker
//! archive (`manifest.json` + layer tars) or a plain rootfs tarball (plain,
//! gzip or zstd, detected from magic bytes) — into one flattened, normalized
//! rootfs directory, and computes the image digest that actions pin: the
//! REAPI tree digest of that rootfs, with SHA-256 and BLAKE3 ([`tree`]).
//!
//! # Output
//!
//! `dest` is created and holds `rootfs/` and `image.json` (the
//! [`ImportedImage`] record). It is built in a temporary directory beside
//! `dest` and renamed into place (`RENAME_NOREPLACE`) only when everything
//! succeeded, so on any error nothing is left behind.
//!
//! # Security
//!
//! Layers are untrusted. The applier (`apply.rs`) refuses absolute names,
//! `..`, entries under a symlink, hardlinks that leave the root or point at
//! nothing yet, whiteouts outside the root, oversized entries and images,
//! too many entries, truncated or corrupt streams; every blob is checked
//! against its descriptor's size and digest before it is parsed, and every
//! layer's uncompressed stream against the config's `diff_ids`. All writes
//! go through directory fds with `O_NOFOLLOW` walks (`fsops.rs`); no
//! archive-supplied name is ever joined onto a host path.
//!
//! # Determinism
//!
//! The digest covers names, file contents, the executable bit and symlink
//! targets only (see `digest.rs`), and the rootfs on disk is normalized (see
//! [`Normalization`]), so the same image gives the same digests on any
//! machine.

mod apply;
mod archive;
mod digest;
mod error;
mod fsops;
mod import;
mod normalize;
mod oci;
mod source;
mod tarstream;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use digest::{Digest, DigestFunction, Tree, TreeDirectory, TreeFile, format_digest, tree};
pub use error::ImageError;
pub use import::import;
pub use normalize::{NORMALIZED_MTIME, Normalization, PathList};

/// Limits and choices for [`import`]. Every limit is checked before the data
/// it guards is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportOptions {
    /// Total bytes of regular-file content written across all layers
    /// (overwritten files count each time). Default 16 GiB.
    pub max_total_bytes: u64,
    /// Archive entries across all layers, whiteouts included. Default 2M.
    pub max_entries: u64,
    /// Size of any single entry as its header claims it. Default 4 GiB.
    pub max_file_bytes: u64,
    /// Size of a JSON document (index, manifest, config). Default 4 MiB.
    pub max_metadata_bytes: u64,
    /// Path components of an entry. Default 128.
    pub max_depth: u32,
    /// Platform to pick from a multi-platform index, `os/arch[/variant]`.
    /// Default: this host (`linux/amd64` on x86-64).
    pub platform: String,
    /// Which image to pick when a layout or archive holds several: matched
    /// against `org.opencontainers.image.ref.name`,
    /// `io.containerd.image.name` or docker `RepoTags` (full name or tag).
    /// Default `None`: the source must hold exactly one.
    pub reference: Option<String>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            max_total_bytes: 16 << 30,
            max_entries: 2_000_000,
            max_file_bytes: 4 << 30,
            max_metadata_bytes: 4 << 20,
            max_depth: 128,
            platform: host_platform(),
            reference: None,
        }
    }
}

/// `linux/<GOARCH-style arch>` of this machine.
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    format!("linux/{arch}")
}

/// The result of an import; also written to `DEST/image.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedImage {
    /// The normalized rootfs (`DEST/rootfs`).
    pub rootfs: PathBuf,
    /// Image digest with SHA-256: the REAPI digest of the root `Directory`
    /// message, `sha256:HEX/SIZE` ([`format_digest`]).
    pub digest_sha256: String,
    /// The same with BLAKE3: `blake3:HEX/SIZE`.
    pub digest_blake3: String,
    /// The source's OCI manifest digest (`sha256:...`), when it had one.
    pub source_manifest_digest: Option<String>,
    /// What import changed.
    pub normalized: Normalization,
    /// Sum of regular-file sizes in the rootfs.
    pub total_bytes: u64,
    /// Number of regular files in the rootfs (each hardlink name counts).
    pub files: u64,
}
