//! OCI image layouts and docker archives: from `index.json` (or
//! `manifest.json`) to the ordered list of layers to apply.
//!
//! Every blob read here (nested indexes, manifests, configs) is checked
//! against its descriptor's size and digest before it is parsed; layers are
//! checked the same way by the caller before they are applied, and their
//! uncompressed digests against the config's `rootfs.diff_ids`.

use std::collections::HashMap;
use std::io::Read;

use serde::Deserialize;

use crate::ImportOptions;
use crate::archive::{BlobDigest, Hashing};
use crate::error::ImageError;
use crate::source::Source;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];
const SUPPORTED_MANIFESTS: &str =
    "OCI image index/manifest v1, Docker manifest list/manifest v2 schema 2";
const SUPPORTED_CONFIGS: &str = "OCI image config v1, Docker container image v1";
const SUPPORTED_LAYERS: &str = "OCI layer tar (plain, +gzip, +zstd), Docker rootfs.diff.tar(.gzip)";
/// How deep nested indexes may go.
const MAX_INDEX_DEPTH: usize = 4;

/// One layer to apply, bottom first.
#[derive(Debug, Clone)]
pub(crate) struct LayerPlan {
    /// How errors name the layer (digest, or archive member).
    pub(crate) name: String,
    /// Member path inside the source.
    pub(crate) member: String,
    /// Digest and size of the (possibly compressed) blob, when known.
    pub(crate) blob: Option<(BlobDigest, u64)>,
    /// Expected digest of the uncompressed tar (config `rootfs.diff_ids`).
    pub(crate) diff_id: Option<BlobDigest>,
}

/// What to apply and what to record.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) layers: Vec<LayerPlan>,
    pub(crate) manifest_digest: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Index {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Config {
    rootfs: Option<RootFs>,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn meta_err(file: impl Into<String>, reason: impl Into<String>) -> ImageError {
    ImageError::Metadata {
        file: file.into(),
        reason: reason.into(),
    }
}

/// Reads a whole (small) file of the layout, capped.
fn read_file(src: &Source, name: &str, limit: u64) -> Result<Vec<u8>, ImageError> {
    let (r, len) = src.open(name)?;
    if len > limit {
        return Err(meta_err(
            name,
            format!("{len} bytes, over max_metadata_bytes {limit}"),
        ));
    }
    let mut buf = Vec::with_capacity(len as usize);
    r.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| ImageError::io(format!("read {name}"), e))?;
    Ok(buf)
}

/// Parses a descriptor's digest and size.
fn descriptor_digest(d: &Descriptor, context: &str) -> Result<(BlobDigest, u64), ImageError> {
    let digest = BlobDigest::parse(&d.digest).map_err(|e| meta_err(context, e))?;
    let size = u64::try_from(d.size)
        .map_err(|_| meta_err(context, format!("negative size for {}", d.digest)))?;
    Ok((digest, size))
}

/// Checks a blob against its descriptor without parsing it.
pub(crate) fn verify_blob(src: &Source, digest: &BlobDigest, size: u64) -> Result<(), ImageError> {
    let member = digest.layout_path();
    let (r, len) = src.open(&member).map_err(|_| ImageError::Missing {
        what: "blob",
        name: digest.to_string(),
        source_path: src.path().to_owned(),
    })?;
    if len != size {
        return Err(ImageError::SizeMismatch {
            digest: digest.to_string(),
            expected: size,
            actual: len,
        });
    }
    let (actual, read) = Hashing::new(r, digest.algorithm, size)
        .finish()
        .map_err(|e| ImageError::io(format!("read blob {digest}"), e))?;
    if read != size {
        return Err(ImageError::SizeMismatch {
            digest: digest.to_string(),
            expected: size,
            actual: read,
        });
    }
    if actual != *digest {
        return Err(ImageError::DigestMismatch {
            digest: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// Reads a JSON blob after checking it against its descriptor.
fn read_blob(
    src: &Source,
    d: &Descriptor,
    opts: &ImportOptions,
    context: &str,
) -> Result<Vec<u8>, ImageError> {
    let (digest, size) = descriptor_digest(d, context)?;
    if size > opts.max_metadata_bytes {
        return Err(meta_err(
            digest.to_string(),
            format!(
                "{size} bytes, over max_metadata_bytes {}",
                opts.max_metadata_bytes
            ),
        ));
    }
    verify_blob(src, &digest, size)?;
    read_file(src, &digest.layout_path(), size)
}

/// The platform string of `opts` (`os/arch[/variant]`) split up.
fn wanted_platform(opts: &ImportOptions) -> (String, String, Option<String>) {
    let mut it = opts.platform.split('/');
    let os = it.next().unwrap_or("linux").to_owned();
    let arch = it.next().unwrap_or("amd64").to_owned();
    (os, arch, it.next().map(str::to_owned))
}

fn platform_matches(p: &Option<Platform>, opts: &ImportOptions) -> bool {
    let (os, arch, variant) = wanted_platform(opts);
    match p {
        None => true,
        Some(p) => {
            p.os == os
                && p.architecture == arch
                && match (&variant, &p.variant) {
                    (Some(w), Some(v)) => w == v,
                    _ => true,
                }
        }
    }
}

fn ref_names(d: &Descriptor) -> Vec<&str> {
    [
        "org.opencontainers.image.ref.name",
        "io.containerd.image.name",
    ]
    .iter()
    .filter_map(|k| d.annotations.get(*k).map(String::as_str))
    .collect()
}

/// Picks the one manifest `opts` asks for out of an index.
fn choose<'a>(
    index: &'a Index,
    opts: &ImportOptions,
    file: &str,
) -> Result<&'a Descriptor, ImageError> {
    let mut candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        // BuildKit attestations are manifests for platform unknown/unknown.
        .filter(|d| {
            d.annotations
                .get("vnd.docker.reference.type")
                .is_none_or(|t| t != "attestation-manifest")
        })
        .filter(|d| platform_matches(&d.platform, opts))
        .collect();
    if let Some(want) = &opts.reference {
        candidates.retain(|d| {
            ref_names(d)
                .iter()
                .any(|n| n == want || n.rsplit_once(':').is_some_and(|(_, t)| t == want))
        });
    }
    let mut distinct: Vec<&Descriptor> = Vec::new();
    for c in candidates {
        if !distinct.iter().any(|d| d.digest == c.digest) {
            distinct.push(c);
        }
    }
    match distinct.as_slice() {
        [one] => Ok(one),
        [] => Err(meta_err(
            file,
            format!(
                "no manifest for platform {}{}",
                opts.platform,
                opts.reference
                    .as_ref()
                    .map(|r| format!(" and reference {r}"))
                    .unwrap_or_default()
            ),
        )),
        many => Err(meta_err(
            file,
            format!(
                "{} manifests match ({}); choose one with ImportOptions::reference",
                many.len(),
                many.iter()
                    .map(|d| ref_names(d).first().map_or(d.digest.as_str(), |n| n))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8], file: &str) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| meta_err(file, e.to_string()))
}

/// Plans an OCI layout: `index.json` → (nested index) → manifest → config.
pub(crate) fn plan_oci(src: &Source, opts: &ImportOptions) -> Result<Plan, ImageError> {
    let layout = read_file(src, "oci-layout", opts.max_metadata_bytes)?;
    let layout: serde_json::Value = parse_json(&layout, "oci-layout")?;
    if layout
        .get("imageLayoutVersion")
        .and_then(|v| v.as_str())
        .is_none()
    {
        return Err(meta_err("oci-layout", "no imageLayoutVersion"));
    }
    let bytes = read_file(src, "index.json", opts.max_metadata_bytes)?;
    let mut index: Index = parse_json(&bytes, "index.json")?;
    let mut file = "index.json".to_owned();
    for _ in 0..MAX_INDEX_DEPTH {
        if index.schema_version != 2 {
            return Err(meta_err(
                &file,
                format!("schemaVersion {} (want 2)", index.schema_version),
            ));
        }
        let d = choose(&index, opts, &file)?;
        match d.media_type.as_str() {
            OCI_INDEX | DOCKER_LIST => {
                let bytes = read_blob(src, d, opts, &file)?;
                file = d.digest.clone();
                index = parse_json(&bytes, &file)?;
            }
            OCI_MANIFEST | DOCKER_MANIFEST => {
                let bytes = read_blob(src, d, opts, &file)?;
                return plan_manifest(src, opts, d, &bytes);
            }
            other => {
                return Err(ImageError::UnsupportedMediaType {
                    media_type: other.to_owned(),
                    context: format!("manifest {} in {file}", d.digest),
                    supported: SUPPORTED_MANIFESTS,
                });
            }
        }
    }
    Err(meta_err(
        file,
        format!("indexes nested deeper than {MAX_INDEX_DEPTH}"),
    ))
}

fn plan_manifest(
    src: &Source,
    opts: &ImportOptions,
    desc: &Descriptor,
    bytes: &[u8],
) -> Result<Plan, ImageError> {
    let file = desc.digest.as_str();
    let m: Manifest = parse_json(bytes, file)?;
    if m.schema_version != 2 {
        return Err(meta_err(
            file,
            format!("schemaVersion {} (want 2)", m.schema_version),
        ));
    }
    if let Some(mt) = &m.media_type
        && *mt != desc.media_type
    {
        return Err(meta_err(
            file,
            format!(
                "mediaType {mt} differs from its descriptor's {}",
                desc.media_type
            ),
        ));
    }
    if m.config.media_type != OCI_CONFIG && m.config.media_type != DOCKER_CONFIG {
        return Err(ImageError::UnsupportedMediaType {
            media_type: m.config.media_type.clone(),
            context: format!("config of manifest {file}"),
            supported: SUPPORTED_CONFIGS,
        });
    }
    let config_bytes = read_blob(src, &m.config, opts, file)?;
    let diff_ids = diff_ids(&config_bytes, &m.config.digest, m.layers.len())?;
    let mut layers = Vec::with_capacity(m.layers.len());
    for (i, (l, diff_id)) in m.layers.iter().zip(diff_ids).enumerate() {
        if !LAYER_TYPES.contains(&l.media_type.as_str()) {
            return Err(ImageError::UnsupportedMediaType {
                media_type: l.media_type.clone(),
                context: format!("layer {i} ({}) of manifest {file}", l.digest),
                supported: SUPPORTED_LAYERS,
            });
        }
        let (digest, size) = descriptor_digest(l, file)?;
        if size > opts.max_total_bytes {
            return Err(ImageError::Limit {
                layer: digest.to_string(),
                what: "compressed layer size",
                limit: opts.max_total_bytes,
                detail: format!("descriptor claims {size} bytes"),
            });
        }
        layers.push(LayerPlan {
            name: digest.to_string(),
            member: digest.layout_path(),
            blob: Some((digest, size)),
            diff_id: Some(diff_id),
        });
    }
    Ok(Plan {
        layers,
        manifest_digest: Some(desc.digest.clone()),
    })
}

fn diff_ids(config: &[u8], file: &str, layers: usize) -> Result<Vec<BlobDigest>, ImageError> {
    let c: Config = parse_json(config, file)?;
    let rootfs = c
        .rootfs
        .ok_or_else(|| meta_err(file, "config has no rootfs"))?;
    if rootfs.kind != "layers" {
        return Err(meta_err(
            file,
            format!("rootfs.type {:?} (want \"layers\")", rootfs.kind),
        ));
    }
    if rootfs.diff_ids.len() != layers {
        return Err(meta_err(
            file,
            format!("{} diff_ids for {layers} layers", rootfs.diff_ids.len()),
        ));
    }
    rootfs
        .diff_ids
        .iter()
        .map(|d| BlobDigest::parse(d).map_err(|e| meta_err(file, e)))
        .collect()
}

/// The digest a docker-archive member name carries, if any:
/// `blobs/sha256/<hex>` or `<hex>.json`.
fn name_digest(name: &str) -> Option<BlobDigest> {
    if let Some(rest) = name.strip_prefix("blobs/")
        && let Some((alg, hex)) = rest.split_once('/')
    {
        return BlobDigest::parse(&format!("{alg}:{hex}")).ok();
    }
    let hex = name.strip_suffix(".json")?;
    BlobDigest::parse(&format!("sha256:{hex}")).ok()
}

/// Plans a docker archive (`manifest.json` form, `docker save` before 25).
pub(crate) fn plan_docker(src: &Source, opts: &ImportOptions) -> Result<Plan, ImageError> {
    let bytes = read_file(src, "manifest.json", opts.max_metadata_bytes)?;
    let entries: Vec<DockerEntry> = parse_json(&bytes, "manifest.json")?;
    let chosen: Vec<&DockerEntry> = match &opts.reference {
        None => entries.iter().collect(),
        Some(want) => entries
            .iter()
            .filter(|e| {
                e.repo_tags
                    .iter()
                    .flatten()
                    .any(|t| t == want || t.rsplit_once(':').is_some_and(|(_, tag)| tag == want))
            })
            .collect(),
    };
    let entry = match chosen.as_slice() {
        [one] => *one,
        [] => return Err(meta_err("manifest.json", "no image matches")),
        many => {
            return Err(meta_err(
                "manifest.json",
                format!(
                    "{} images; choose one with ImportOptions::reference",
                    many.len()
                ),
            ));
        }
    };
    let config = read_file(src, &entry.config, opts.max_metadata_bytes)?;
    if let Some(expected) = name_digest(&entry.config) {
        let (actual, _) = Hashing::new(&config[..], expected.algorithm, u64::MAX)
            .finish()
            .map_err(|e| ImageError::io("hash config", e))?;
        if actual != expected {
            return Err(ImageError::DigestMismatch {
                digest: expected.to_string(),
                actual: actual.to_string(),
            });
        }
    }
    let diff_ids = diff_ids(&config, &entry.config, entry.layers.len())?;
    let mut layers = Vec::new();
    for (member, diff_id) in entry.layers.iter().zip(diff_ids) {
        let blob = match name_digest(member) {
            Some(d) => {
                let (_, len) = src.open(member)?;
                Some((d, len))
            }
            None => None,
        };
        layers.push(LayerPlan {
            name: member.clone(),
            member: blob
                .as_ref()
                .map_or_else(|| member.clone(), |(d, _)| d.layout_path()),
            blob,
            diff_id: Some(diff_id),
        });
    }
    Ok(Plan {
        layers,
        manifest_digest: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(json: serde_json::Value) -> Index {
        serde_json::from_value(json).unwrap()
    }

    fn desc(digest: char, arch: &str, name: &str) -> serde_json::Value {
        serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": format!("sha256:{}", digest.to_string().repeat(64)),
            "size": 1,
            "platform": {"os": "linux", "architecture": arch},
            "annotations": {"org.opencontainers.image.ref.name": name},
        })
    }

    #[test]
    fn picks_the_requested_platform() {
        let idx = index(serde_json::json!({"schemaVersion": 2, "manifests": [
            desc('a', "arm64", "latest"), desc('b', "amd64", "latest"),
        ]}));
        let opts = ImportOptions {
            platform: "linux/amd64".into(),
            ..Default::default()
        };
        assert!(
            choose(&idx, &opts, "index.json")
                .unwrap()
                .digest
                .starts_with("sha256:b")
        );
        let opts = ImportOptions {
            platform: "linux/s390x".into(),
            ..Default::default()
        };
        let e = choose(&idx, &opts, "index.json").unwrap_err().to_string();
        assert!(e.contains("no manifest for platform linux/s390x"), "{e}");
    }

    #[test]
    fn several_images_need_a_reference() {
        let idx = index(serde_json::json!({"schemaVersion": 2, "manifests": [
            desc('a', "amd64", "one"), desc('b', "amd64", "two"), desc('b', "amd64", "two-again"),
        ]}));
        let opts = ImportOptions {
            platform: "linux/amd64".into(),
            ..Default::default()
        };
        let e = choose(&idx, &opts, "index.json").unwrap_err().to_string();
        assert!(
            e.contains("2 manifests match (one, two)") && e.contains("ImportOptions::reference"),
            "{e}"
        );
        let opts = ImportOptions {
            reference: Some("two".into()),
            ..opts
        };
        assert!(
            choose(&idx, &opts, "index.json")
                .unwrap()
                .digest
                .starts_with("sha256:b")
        );
    }
}
