//! Every accepted source format gives the same image digest for the same
//! rootfs: rootfs tarballs (plain, gzip, zstd), OCI layouts (directory and
//! tar, including Docker 25 `docker save` output), docker archives, and
//! layouts written by skopeo.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{E, Layer, Tweaks, tar, tar_dir, write_layout};
use hermetic_image::{ImportOptions, ImportedImage, import};

fn import_ok(src: &Path, out: &Path, name: &str) -> ImportedImage {
    import(src, &out.join(name), &ImportOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The busybox reference image, built once per test process by
/// images/busybox/build.sh into the target directory. `None` (after a SKIP
/// line) when this machine cannot build it and CI is not set.
fn busybox_tar() -> Option<&'static Path> {
    static TAR: OnceLock<Option<PathBuf>> = OnceLock::new();
    TAR.get_or_init(|| {
        let ci = std::env::var("CI").as_deref() == Ok("true");
        let installed = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", "busybox-static"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"));
        if !installed || !nix::unistd::geteuid().is_root() {
            assert!(!ci, "busybox-static and root are required when CI=true");
            eprintln!("SKIP: busybox reference image needs root and busybox-static");
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/busybox/build.sh");
        let out = common::tmp_base().join(format!("busybox-{}.tar", std::process::id()));
        let st = Command::new("bash")
            .arg(&script)
            .arg(&out)
            .env("SOURCE_DATE_EPOCH", "1704067200")
            .status()
            .unwrap();
        assert!(st.success(), "images/busybox/build.sh failed");
        Some(out)
    })
    .as_deref()
}

#[test]
fn busybox_rootfs_tarball_plain_gzip_zstd() {
    let Some(bb) = busybox_tar() else { return };
    let d = tempfile::tempdir().unwrap();
    let bytes = fs::read(bb).unwrap();
    // Compression is detected from magic bytes, not the file name.
    let gz = d.path().join("busybox.img");
    fs::write(&gz, common::gzip(&bytes)).unwrap();
    let zst = d.path().join("busybox.tar.gz");
    fs::write(&zst, common::zstd(&bytes)).unwrap();
    let plain = import_ok(bb, d.path(), "plain");
    let a = import_ok(&gz, d.path(), "gz");
    let b = import_ok(&zst, d.path(), "zst");
    let again = import_ok(bb, d.path(), "again");
    for other in [&a, &b, &again] {
        assert_eq!(other.digest_sha256, plain.digest_sha256);
        assert_eq!(other.digest_blake3, plain.digest_blake3);
    }
    assert_eq!(plain.source_manifest_digest, None);
    eprintln!(
        "busybox image: {} files, {} bytes, {} {}",
        plain.files, plain.total_bytes, plain.digest_sha256, plain.digest_blake3
    );

    let root = &plain.rootfs;
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("builder:x:1000:1000:"), "{passwd}");
    assert!(
        fs::read_to_string(root.join("etc/group"))
            .unwrap()
            .contains("builder:x:1000:")
    );
    for applet in [
        "sh", "ls", "cat", "sed", "awk", "find", "tar", "gzip", "[", "test", "sort", "xargs",
    ] {
        assert_eq!(
            fs::read_link(root.join("bin").join(applet)).unwrap(),
            Path::new("busybox"),
            "{applet}"
        );
    }
    assert_eq!(common::mode(&root.join("tmp")), 0o1777);
    for dir in ["proc", "dev", "sys", "work"] {
        assert!(root.join(dir).is_dir(), "{dir}");
    }
    let out = Command::new(root.join("bin/busybox"))
        .args(["echo", "hi"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"hi\n");
}

#[test]
fn busybox_script_is_reproducible() {
    let Some(bb) = busybox_tar() else { return };
    let again = common::tmp_base().join(format!("busybox-again-{}.tar", std::process::id()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/busybox/build.sh");
    let st = Command::new("bash")
        .arg(&script)
        .arg(&again)
        .env("SOURCE_DATE_EPOCH", "1704067200")
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(fs::read(bb).unwrap(), fs::read(&again).unwrap());
    fs::remove_file(again).unwrap();
}

/// A small two-layer image as rootfs tar and as OCI layout.
fn sample() -> (Vec<u8>, Vec<Layer>) {
    let l1 = tar(&[
        E::Dir("bin", 0o755),
        E::File("bin/app", b"#!/bin/sh\n", 0o755),
        E::File("etc/conf", b"1", 0o644),
    ]);
    let l2 = tar(&[
        E::File("etc/conf", b"2", 0o644),
        E::Symlink("bin/alias", "app"),
    ]);
    let flat = tar(&[
        E::Dir("bin", 0o755),
        E::File("bin/app", b"#!/bin/sh\n", 0o755),
        E::Symlink("bin/alias", "app"),
        E::Dir("etc", 0o755),
        E::File("etc/conf", b"2", 0o644),
    ]);
    (
        flat,
        vec![
            Layer {
                tar: l1,
                compression: "gzip",
            },
            Layer {
                tar: l2,
                compression: "zstd",
            },
        ],
    )
}

#[test]
fn oci_layout_directory_tar_and_docker25_save_agree() {
    let d = tempfile::tempdir().unwrap();
    let (flat, layers) = sample();
    let flat_path = d.path().join("flat.tar");
    fs::write(&flat_path, flat).unwrap();
    let reference = import_ok(&flat_path, d.path(), "flat");

    let layout = d.path().join("layout");
    let manifest = write_layout(&layout, &layers, &Tweaks::default());
    let dir = import_ok(&layout, d.path(), "dir");
    assert_eq!(dir.digest_sha256, reference.digest_sha256);
    assert_eq!(
        dir.source_manifest_digest.as_deref(),
        Some(manifest.as_str())
    );

    let archive = d.path().join("oci-archive.tar");
    tar_dir(&layout, &archive);
    let t = import_ok(&archive, d.path(), "tar");
    assert_eq!(t.digest_sha256, reference.digest_sha256);
    assert_eq!(t.source_manifest_digest.as_deref(), Some(manifest.as_str()));

    // Docker 25+ `docker save`: an OCI layout that also carries the legacy
    // manifest.json; the OCI index wins. Compressed outer archive too.
    let docker25 = d.path().join("docker25");
    write_layout(&docker25, &layers, &Tweaks::default());
    fs::write(docker25.join("manifest.json"), legacy_manifest(&docker25)).unwrap();
    fs::write(docker25.join("repositories"), b"{}").unwrap();
    let saved = d.path().join("docker25.tar");
    tar_dir(&docker25, &saved);
    let gz = d.path().join("docker25.tar.gz");
    fs::write(&gz, common::gzip(&fs::read(&saved).unwrap())).unwrap();
    for (name, src) in [("saved", &saved), ("saved-gz", &gz)] {
        let img = import_ok(src, d.path(), name);
        assert_eq!(img.digest_sha256, reference.digest_sha256, "{name}");
        assert_eq!(
            img.source_manifest_digest.as_deref(),
            Some(manifest.as_str()),
            "{name}"
        );
    }
}

/// manifest.json (docker-archive form) for a layout written by write_layout.
fn legacy_manifest(layout: &Path) -> Vec<u8> {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(&m[7..])).unwrap())
            .unwrap();
    let path =
        |d: &serde_json::Value| format!("blobs/sha256/{}", &d["digest"].as_str().unwrap()[7..]);
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(path)
        .collect();
    serde_json::to_vec(&serde_json::json!([{
        "Config": path(&manifest["config"]),
        "RepoTags": ["sample:latest"],
        "Layers": layers,
    }]))
    .unwrap()
}

#[test]
fn docker_archive_forms() {
    let d = tempfile::tempdir().unwrap();
    let (flat, layers) = sample();
    let flat_path = d.path().join("flat.tar");
    fs::write(&flat_path, flat).unwrap();
    let reference = import_ok(&flat_path, d.path(), "flat");

    // blobs/ form without index.json: the docker-archive path.
    let blobs = d.path().join("blobs-form");
    write_layout(&blobs, &layers, &Tweaks::default());
    fs::write(blobs.join("manifest.json"), legacy_manifest(&blobs)).unwrap();
    fs::remove_file(blobs.join("index.json")).unwrap();
    fs::remove_file(blobs.join("oci-layout")).unwrap();
    let img = import_ok(&blobs, d.path(), "blobs-dir");
    assert_eq!(img.digest_sha256, reference.digest_sha256);
    assert_eq!(img.source_manifest_digest, None);

    // Legacy form: <id>/layer.tar and <hex>.json, one layer tar a symlink
    // to another directory's (as docker does for shared layers).
    let legacy = d.path().join("legacy");
    fs::create_dir_all(legacy.join("one")).unwrap();
    fs::create_dir_all(legacy.join("two")).unwrap();
    fs::create_dir_all(legacy.join("store")).unwrap();
    fs::write(legacy.join("one/layer.tar"), &layers[0].tar).unwrap();
    fs::write(legacy.join("store/layer.tar"), &layers[1].tar).unwrap();
    std::os::unix::fs::symlink("../store/layer.tar", legacy.join("two/layer.tar")).unwrap();
    let diff_ids: Vec<String> = layers.iter().map(|l| common::sha256(&l.tar)).collect();
    let config = serde_json::to_vec(
        &serde_json::json!({"rootfs": {"type": "layers", "diff_ids": diff_ids}}),
    )
    .unwrap();
    let config_name = format!("{}.json", &common::sha256(&config)[7..]);
    fs::write(legacy.join(&config_name), &config).unwrap();
    fs::write(
        legacy.join("manifest.json"),
        serde_json::to_vec(&serde_json::json!([{"Config": config_name, "RepoTags": null, "Layers": ["one/layer.tar", "two/layer.tar"]}]))
            .unwrap(),
    )
    .unwrap();
    let img = import_ok(&legacy, d.path(), "legacy-dir");
    assert_eq!(img.digest_sha256, reference.digest_sha256);
    let legacy_tar = d.path().join("legacy.tar");
    tar_dir(&legacy, &legacy_tar);
    let img = import_ok(&legacy_tar, d.path(), "legacy-tar");
    assert_eq!(img.digest_sha256, reference.digest_sha256);

    // A symlinked layer that leaves the archive directory is refused.
    fs::remove_file(legacy.join("two/layer.tar")).unwrap();
    std::os::unix::fs::symlink(&flat_path, legacy.join("two/layer.tar")).unwrap();
    let err = import(&legacy, &d.path().join("escape"), &ImportOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("outside the layout directory"),
        "{err}"
    );
}

fn skopeo(args: &[&str]) {
    let st = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "skopeo {args:?} failed");
}

#[test]
fn layouts_written_by_skopeo() {
    if !common::have_tool("skopeo", "import layouts written by skopeo") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    // The busybox image when it can be built, else the small sample.
    let rootfs = match busybox_tar() {
        Some(bb) => fs::read(bb).unwrap(),
        None => sample().0,
    };
    let flat_path = d.path().join("flat.tar");
    fs::write(&flat_path, &rootfs).unwrap();
    let reference = import_ok(&flat_path, d.path(), "flat");
    let mine = d.path().join("mine");
    write_layout(
        &mine,
        &[Layer {
            tar: rootfs,
            compression: "gzip",
        }],
        &Tweaks::default(),
    );
    let src = format!("oci:{}:latest", mine.display());

    let oci_dir = d.path().join("skopeo-oci");
    skopeo(&["copy", &src, &format!("oci:{}:v1", oci_dir.display())]);
    let oci_archive = d.path().join("skopeo-oci-archive.tar");
    skopeo(&[
        "copy",
        &src,
        &format!("oci-archive:{}:v1", oci_archive.display()),
    ]);
    let docker_archive = d.path().join("skopeo-docker-archive.tar");
    skopeo(&[
        "copy",
        &src,
        &format!("docker-archive:{}:busybox:latest", docker_archive.display()),
    ]);

    for (name, path) in [
        ("oci", &oci_dir),
        ("oci-archive", &oci_archive),
        ("docker-archive", &docker_archive),
    ] {
        let img = import_ok(path, d.path(), name);
        assert_eq!(img.digest_sha256, reference.digest_sha256, "{name}");
        assert_eq!(img.digest_blake3, reference.digest_blake3, "{name}");
        assert_eq!(
            img.source_manifest_digest.is_some(),
            name != "docker-archive",
            "{name}"
        );
    }
}
