//! Multi-layer flattening: whiteouts, opaque directories, overwrites,
//! normalization, determinism, and agreement with `umoci raw unpack`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::{E, Layer, Tweaks, mode, sha256, snapshot, tar, write_layout};
use hermetic_image::{DigestFunction, ImportOptions, import, tree};

const TOOL: &[u8] = b"#!/bin/sh\necho tool\n";

fn layers(compression: [&'static str; 3]) -> Vec<Layer> {
    let lower = tar(&[
        E::Dir("etc", 0o755),
        E::File("etc/passwd", b"root", 0o644),
        E::File("etc/keep", b"k", 0o644),
        E::Dir("opt", 0o755),
        E::File("opt/a", b"a", 0o644),
        E::Dir("opt/sub", 0o700),
        E::File("opt/sub/b", b"b", 0o644),
        E::File("var/lib/x/data", b"old", 0o644),
        E::Dir("bin", 0o755),
        E::File("bin/tool", TOOL, 0o4755),
        E::Hardlink("bin/tool2", "bin/tool"),
        E::File("gone", b"g", 0o644),
        E::Char("dev/null"),
        E::Fifo("run/fifo"),
        E::Owned("home/user/file", b"mine"),
        E::Dir("sgid", 0o2775),
    ]);
    let middle = tar(&[
        E::File("etc/.wh.keep", b"", 0o644),
        // Same-layer content before the opaque marker must survive it.
        E::File("opt/new", b"n", 0o600),
        E::File("opt/.wh..wh..opq", b"", 0o644),
        E::File(".wh.gone", b"", 0o644),
        E::File("var/lib/.wh.x", b"", 0o644),
        E::File("var/lib/x/fresh", b"f", 0o644),
        E::File("etc/passwd", b"root2", 0o644),
    ]);
    let upper = tar(&[
        E::Dir("opt/sub", 0o755),
        E::Symlink("etc/link", "passwd"),
        E::File(".wh.never-existed", b"", 0o644),
        E::Dir("sgid", 0o2775),
    ]);
    [lower, middle, upper]
        .into_iter()
        .zip(compression)
        .map(|(tar, compression)| Layer { tar, compression })
        .collect()
}

fn expected() -> BTreeMap<String, String> {
    let file = |data: &[u8], x: bool| format!("file x={x} {}", sha256(data));
    [
        ("bin", "dir".to_owned()),
        ("bin/tool", file(TOOL, true)),
        ("bin/tool2", file(TOOL, true)),
        ("dev", "dir".to_owned()),
        ("etc", "dir".to_owned()),
        ("etc/link", "link passwd".to_owned()),
        ("etc/passwd", file(b"root2", false)),
        ("home", "dir".to_owned()),
        ("home/user", "dir".to_owned()),
        ("home/user/file", file(b"mine", false)),
        ("opt", "dir".to_owned()),
        ("opt/new", file(b"n", false)),
        ("opt/sub", "dir".to_owned()),
        ("run", "dir".to_owned()),
        ("sgid", "dir".to_owned()),
        ("var", "dir".to_owned()),
        ("var/lib", "dir".to_owned()),
        ("var/lib/x", "dir".to_owned()),
        ("var/lib/x/fresh", file(b"f", false)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[test]
fn whiteouts_and_opaque_dirs_flatten_to_the_expected_tree() {
    let d = tempfile::tempdir().unwrap();
    let layout = d.path().join("layout");
    let manifest = write_layout(&layout, &layers(["gzip", "zstd", ""]), &Tweaks::default());
    let img = import(&layout, &d.path().join("dest"), &ImportOptions::default()).unwrap();
    assert_eq!(snapshot(&img.rootfs), expected());
    assert_eq!(
        img.source_manifest_digest.as_deref(),
        Some(manifest.as_str())
    );

    // Normalization: setuid/setgid stripped, devices and fifos dropped,
    // hardlink kept, owners counted, whiteouts counted.
    let n = &img.normalized;
    assert_eq!(n.setid_stripped.count, 3, "{n:?}");
    assert!(
        n.setid_stripped
            .paths
            .iter()
            .any(|p| p.ends_with(": bin/tool"))
    );
    assert_eq!(n.devices_dropped.count, 1);
    assert_eq!(n.fifos_dropped.count, 1);
    assert_eq!(n.hardlinks, 1);
    assert_eq!(n.ownership_reset, 1);
    assert_eq!(n.whiteouts, 4);
    assert_eq!(n.opaque_dirs, 1);
    assert_eq!(mode(&img.rootfs.join("bin/tool")), 0o755);
    assert_eq!(mode(&img.rootfs.join("sgid")), 0o775);
    assert_eq!(mode(&img.rootfs.join("opt/new")), 0o600);
    assert_eq!(mode(&img.rootfs.join("opt/sub")), 0o755);
    let tool = fs::metadata(img.rootfs.join("bin/tool")).unwrap();
    assert_eq!(
        tool.ino(),
        fs::metadata(img.rootfs.join("bin/tool2")).unwrap().ino()
    );
    for (path, _) in expected() {
        let md = fs::symlink_metadata(img.rootfs.join(&path)).unwrap();
        assert_eq!(md.mtime(), 0, "{path}");
        if nix::unistd::geteuid().is_root() {
            assert_eq!((md.uid(), md.gid()), (0, 0), "{path}");
        }
    }

    // The record beside the rootfs, and the digests it names.
    let record: hermetic_image::ImportedImage =
        serde_json::from_slice(&fs::read(d.path().join("dest/image.json")).unwrap()).unwrap();
    assert_eq!(record, img);
    let t = tree(&img.rootfs, DigestFunction::Sha256).unwrap();
    assert_eq!(img.digest_sha256, t.digest_string());
    assert_eq!(img.files, 6);
    assert_eq!(img.total_bytes, 2 * TOOL.len() as u64 + 5 + 4 + 1 + 1);
    assert!(img.digest_blake3.starts_with("blake3:"));
}

#[test]
fn same_image_twice_gives_identical_digests() {
    let d = tempfile::tempdir().unwrap();
    let layout = d.path().join("layout");
    write_layout(&layout, &layers(["gzip", "", "zstd"]), &Tweaks::default());
    let a = import(&layout, &d.path().join("a"), &ImportOptions::default()).unwrap();
    let b = import(&layout, &d.path().join("b"), &ImportOptions::default()).unwrap();
    assert_eq!(a.digest_sha256, b.digest_sha256);
    assert_eq!(a.digest_blake3, b.digest_blake3);
    assert_eq!(a.normalized, b.normalized);
    // Compression of the layers does not change the image digest.
    let other = d.path().join("layout-plain");
    let manifest = write_layout(&other, &layers(["", "", ""]), &Tweaks::default());
    let c = import(&other, &d.path().join("c"), &ImportOptions::default()).unwrap();
    assert_eq!(a.digest_sha256, c.digest_sha256);
    assert_ne!(a.source_manifest_digest.as_deref(), Some(manifest.as_str()));
    assert_eq!(c.source_manifest_digest.as_deref(), Some(manifest.as_str()));
}

#[test]
fn digest_ignores_metadata_that_is_normalized() {
    // Same names and contents, different owners, times, non-exec modes.
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a.tar");
    let b = d.path().join("b.tar");
    fs::write(&a, tar(&[E::Dir("d", 0o755), E::File("d/f", b"x", 0o644)])).unwrap();
    fs::write(&b, tar(&[E::Dir("d", 0o700), E::Owned("d/f", b"x")])).unwrap();
    let ia = import(&a, &d.path().join("ia"), &ImportOptions::default()).unwrap();
    let ib = import(&b, &d.path().join("ib"), &ImportOptions::default()).unwrap();
    assert_eq!(ia.digest_sha256, ib.digest_sha256);
    // The executable bit is part of the digest.
    let c = d.path().join("c.tar");
    fs::write(&c, tar(&[E::Dir("d", 0o755), E::File("d/f", b"x", 0o755)])).unwrap();
    let ic = import(&c, &d.path().join("ic"), &ImportOptions::default()).unwrap();
    assert_ne!(ia.digest_sha256, ic.digest_sha256);
}

/// Unpacks with umoci as a reference implementation of OCI whiteouts.
fn umoci_unpack(layout: &Path, out: &Path) {
    let st = Command::new("umoci")
        .args(["raw", "unpack", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success(), "umoci raw unpack failed");
}

#[test]
fn matches_umoci_raw_unpack() {
    if !common::have_tool("umoci", "compare the flattened tree with umoci raw unpack") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let layout = d.path().join("layout");
    // umoci 0.4.7 (Debian 12) reads gzip and plain layers.
    write_layout(&layout, &layers(["gzip", "", "gzip"]), &Tweaks::default());
    let ours = import(&layout, &d.path().join("dest"), &ImportOptions::default()).unwrap();
    let theirs_dir = d.path().join("umoci");
    umoci_unpack(&layout, &theirs_dir);
    let mut theirs = snapshot(&theirs_dir);
    // umoci creates the device node and FIFO (as root) or skips them
    // (rootless); the importer drops them by policy.
    theirs.retain(|_, v| !v.starts_with("special"));
    assert_eq!(snapshot(&ours.rootfs), theirs);
}
