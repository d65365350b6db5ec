//! Helpers shared by the integration tests: raw tar building (including
//! names a normal archiver refuses to write), OCI layout writing with
//! correct digests, tool detection with the CI rule, and tree comparison.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

/// One archive member.
#[derive(Clone, Debug)]
pub enum E {
    File(&'static str, &'static [u8], u32),
    Dir(&'static str, u32),
    Symlink(&'static str, &'static str),
    Hardlink(&'static str, &'static str),
    Char(&'static str),
    Fifo(&'static str),
    /// A header claiming `size` bytes followed by `data` (may be shorter).
    Lying(&'static str, u64, &'static [u8]),
    /// A regular file owned by uid/gid 1000.
    Owned(&'static str, &'static [u8]),
}

/// Builds a GNU tar from members, writing names verbatim (no checks).
pub fn tar(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        let (name, data, link): (&str, &[u8], Option<&str>) = match e {
            E::File(n, d, m) => {
                h.set_entry_type(EntryType::Regular);
                h.set_mode(*m);
                h.set_size(d.len() as u64);
                (n, d, None)
            }
            E::Owned(n, d) => {
                h.set_entry_type(EntryType::Regular);
                h.set_mode(0o644);
                h.set_uid(1000);
                h.set_gid(1000);
                h.set_size(d.len() as u64);
                (n, d, None)
            }
            E::Dir(n, m) => {
                h.set_entry_type(EntryType::Directory);
                h.set_mode(*m);
                h.set_size(0);
                (n, &[], None)
            }
            E::Symlink(n, t) => {
                h.set_entry_type(EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                (n, &[], Some(t))
            }
            E::Hardlink(n, t) => {
                h.set_entry_type(EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                (n, &[], Some(t))
            }
            E::Char(n) => {
                h.set_entry_type(EntryType::Char);
                h.set_mode(0o666);
                h.set_size(0);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                (n, &[], None)
            }
            E::Fifo(n) => {
                h.set_entry_type(EntryType::Fifo);
                h.set_mode(0o644);
                h.set_size(0);
                (n, &[], None)
            }
            E::Lying(n, size, d) => {
                h.set_entry_type(EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(*size);
                (n, d, None)
            }
        };
        let gnu = h.as_gnu_mut().unwrap();
        assert!(name.len() <= 100, "test names fit the header");
        gnu.name = [0; 100];
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(t) = link {
            gnu.linkname = [0; 100];
            gnu.linkname[..t.len()].copy_from_slice(t.as_bytes());
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend([0u8; 1024]);
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    g.write_all(data).unwrap();
    g.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A layer for [`write_layout`]: uncompressed tar plus how to store it.
pub struct Layer {
    pub tar: Vec<u8>,
    pub compression: &'static str, // "", "gzip", "zstd"
}

/// Knobs for writing deliberately broken layouts.
#[derive(Default)]
pub struct Tweaks {
    /// Override a layer's media type.
    pub layer_media_type: Option<&'static str>,
    /// Flip a byte of the first layer blob after computing its digest.
    pub corrupt_first_layer: bool,
    /// Wrong diff_id for the first layer.
    pub wrong_diff_id: bool,
    /// Descriptor size of the first layer off by one.
    pub wrong_size: bool,
}

/// Writes an OCI image layout with correct digests; returns the manifest
/// digest. The image is tagged `latest`.
pub fn write_layout(dir: &Path, layers: &[Layer], tweaks: &Tweaks) -> String {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let put = |data: &[u8]| -> String {
        let d = sha256(data);
        fs::write(dir.join("blobs/sha256").join(&d[7..]), data).unwrap();
        d
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let (blob, mt) = match l.compression {
            "gzip" => (gzip(&l.tar), "application/vnd.oci.image.layer.v1.tar+gzip"),
            "zstd" => (zstd(&l.tar), "application/vnd.oci.image.layer.v1.tar+zstd"),
            _ => (l.tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
        };
        let mut diff = sha256(&l.tar);
        if i == 0 && tweaks.wrong_diff_id {
            diff = sha256(b"something else");
        }
        diff_ids.push(diff);
        let d = put(&blob);
        let mut size = blob.len();
        if i == 0 && tweaks.corrupt_first_layer {
            let mut bad = blob.clone();
            let last = bad.len() - 1;
            bad[last / 2] ^= 0x55;
            fs::write(dir.join("blobs/sha256").join(&d[7..]), bad).unwrap();
        }
        if i == 0 && tweaks.wrong_size {
            size += 1;
        }
        let mt = tweaks.layer_media_type.unwrap_or(mt);
        descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": size}));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    manifest_digest
}

/// Packs a directory into an uncompressed tar (for `oci-archive`-style input).
pub fn tar_dir(dir: &Path, out: &Path) {
    let st = Command::new("tar")
        .args(["--sort=name", "-cf"])
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
}

/// True when `tool` is on PATH. Otherwise prints SKIP and returns false,
/// unless CI=true, where a missing tool fails the test.
pub fn have_tool(tool: &str, why: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{tool} is required when CI=true ({why}); apt-get install {tool}");
    }
    eprintln!("SKIP: {why}: {tool} is not installed");
    false
}

/// What a tree holds, for comparisons: path → description.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let md = fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let desc = if ft.is_symlink() {
            format!("link {}", fs::read_link(&p).unwrap().display())
        } else if ft.is_dir() {
            walk(root, &p, out);
            "dir".to_owned()
        } else if ft.is_file() {
            let data = fs::read(&p).unwrap();
            format!("file x={} {}", md.mode() & 0o100 != 0, sha256(&data))
        } else {
            format!("special {:o}", md.mode())
        };
        out.insert(rel, desc);
    }
}

pub fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The build dir for artifacts shared between tests.
pub fn tmp_base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Entries of `dir` (to check nothing was left behind).
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
