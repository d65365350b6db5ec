//! The provenance documents that come with a run: the daemon names them in
//! `ExecuteResponse.server_logs` (a cache hit: the original execution's),
//! and `hermetic run` writes them into `OUT/.hermetic/` beside the
//! execution log, where `hermetic verify` finds them.

use std::path::{Path, PathBuf};

use bazel_remote_apis::build::bazel::remote::execution::v2::ExecuteResponse;
use hermeticd::provenance::pointers::{KEYRING_LOG, PROVENANCE_LOG, SBOM_CDX_LOG, SBOM_SPDX_LOG};
use serde::Serialize;

use crate::backend::Backend;
use crate::digests::Function;
use crate::error::{Error, Result};

/// The bundle's file name under `OUT/.hermetic/`.
pub const BUNDLE_FILE: &str = "provenance.json";
/// The public keyring's file name under `OUT/.hermetic/`.
pub const KEYRING_FILE: &str = "keyring.json";

/// `server_logs` key → file name under `OUT/.hermetic/`.
const FILES: [(&str, &str); 4] = [
    (PROVENANCE_LOG, BUNDLE_FILE),
    (SBOM_CDX_LOG, "sbom.cdx.json"),
    (SBOM_SPDX_LOG, "sbom.spdx.json"),
    (KEYRING_LOG, KEYRING_FILE),
];

/// Where the documents were written.
#[derive(Debug, Default, Serialize)]
pub struct Written {
    /// The provenance bundle (DSSE envelope, inclusion proof, checkpoint).
    pub provenance: Option<PathBuf>,
    /// CycloneDX 1.6 SBOM.
    pub sbom_cyclonedx: Option<PathBuf>,
    /// SPDX 2.3 SBOM.
    pub sbom_spdx: Option<PathBuf>,
    /// The public keyring at signing time.
    pub keyring: Option<PathBuf>,
}

/// Downloads (digest-verified) and writes every document the response
/// names into `meta`. An action without outputs has none.
pub async fn download(
    backend: &Backend,
    f: Function,
    resp: &ExecuteResponse,
    meta: &Path,
) -> Result<Written> {
    let mut written = Written::default();
    for (log, file) in FILES {
        let path = meta.join(file);
        let Some(d) = resp.server_logs.get(log).and_then(|l| l.digest.as_ref()) else {
            // Not this run's: a document left by an earlier run must go.
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove the stale", &path)(e)),
            }
            continue;
        };
        let data = backend.read(f, d).await.map_err(|e| match e {
            e @ Error::Verification(_) => e,
            e => Error::Infra(format!("cannot fetch the {log} document: {e}")),
        })?;
        write_file(&path, &data)?;
        let slot = match log {
            PROVENANCE_LOG => &mut written.provenance,
            SBOM_CDX_LOG => &mut written.sbom_cyclonedx,
            SBOM_SPDX_LOG => &mut written.sbom_spdx,
            _ => &mut written.keyring,
        };
        *slot = Some(path);
    }
    Ok(written)
}

/// Writes `data` to `path` through a temporary file and a rename, so a
/// reader never sees half a document.
pub fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir)?;
    tmp.1
        .write_all(data)
        .and_then(|()| tmp.1.sync_all())
        .map_err(Error::io("write", &tmp.0))?;
    std::fs::rename(&tmp.0, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp.0);
        Error::io("rename into place", path)(e)
    })
}

fn tempfile_in(dir: &Path) -> Result<(PathBuf, std::fs::File)> {
    let path = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(Error::io("create", &path))?;
    Ok((path, file))
}
