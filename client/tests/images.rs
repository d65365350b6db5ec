//! `hermetic image` and `hermetic run --image` against a real hermeticd on
//! a Unix socket with the real sandbox: import (rootfs tarball, OCI layout
//! directory and tar, rootfs directory), ls and inspect, aliases resolving
//! to the same action digest as the digest forms (also with `--local`),
//! trust, removal refused while a cached result refers to the image, corrupt
//! archives and unknown digests.
//!
//! The busybox image is built by `images/busybox/build.sh` (root; installs
//! busybox-static when missing). The tests share one daemon and take a lock
//! each, so the image store's listing before and after a refused import is
//! exact.

mod common;
#[path = "../../image/tests/common/mod.rs"]
mod image_common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Mutex, MutexGuard, OnceLock};

use common::{Daemon, daemon, scratch, text};

/// One test at a time: they inspect the store's directory.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", text(o)))
}

fn hermetic(d: &Daemon, args: &[&str]) -> Output {
    d.hermetic().args(args).output().unwrap()
}

/// `hermetic --json ARGS`, which must succeed; its JSON.
fn ok_json(d: &Daemon, args: &[&str]) -> serde_json::Value {
    let o = d.hermetic().arg("--json").args(args).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{args:?}: {:?}", text(&o));
    json(&o)
}

/// The busybox reference image, built once.
fn busybox_tar(d: &Daemon) -> PathBuf {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let out = d.dir.join("busybox.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/busybox/build.sh");
        let o = std::process::Command::new(script)
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "images/busybox/build.sh: {:?}",
            text(&o)
        );
        out
    })
    .clone()
}

/// The busybox image unpacked into a directory, plus `/marker` holding
/// `marker`: a distinct image per test.
fn variant_dir(d: &Daemon, marker: &str) -> PathBuf {
    let dir = scratch(d, &format!("variant-{marker}"));
    let o = std::process::Command::new("tar")
        .arg("-xf")
        .arg(busybox_tar(d))
        .arg("-C")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    std::fs::write(dir.join("marker"), marker).unwrap();
    dir
}

/// Names in the daemon's image store.
fn store_listing(d: &Daemon) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(d.dir.join("state/images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lock")
        .collect();
    names.sort();
    names
}

fn path_arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn import_inspect_and_aliases_pin_the_same_action() {
    let Some(d) = daemon() else { return };
    let _serial = serial();
    let tar = busybox_tar(d);
    let imported = ok_json(
        d,
        &["image", "import", path_arg(&tar), "--name", "bb", "--trust"],
    );
    let digest = imported["digest"].as_str().unwrap().to_owned();
    assert!(digest.starts_with("hermetic-image:blake3:"), "{imported}");
    assert_eq!(imported["aliases"], serde_json::json!(["bb"]));
    assert_eq!(imported["trusted"], true);
    assert!(
        imported["total_bytes"].as_u64().unwrap() > 1_000_000,
        "{imported}"
    );
    let sha = imported["digest_sha256"].as_str().unwrap().to_owned();
    let b3 = imported["digest_blake3"].as_str().unwrap().to_owned();
    // A second import of the same bytes is the same image.
    let again = ok_json(d, &["image", "import", path_arg(&tar)]);
    assert_eq!(again["digest"], digest.as_str());
    assert_eq!(again["new"], false);

    // ls and inspect, by alias and by every digest form.
    let list = ok_json(d, &["image", "ls"]);
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["digest"] == digest.as_str())
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(entry["aliases"], serde_json::json!(["bb"]));
    for name in ["bb", digest.as_str(), sha.as_str(), b3.as_str()] {
        let i = ok_json(d, &["image", "inspect", name]);
        assert_eq!(i["digest"], digest.as_str(), "{name}");
    }
    let human = hermetic(d, &["image", "inspect", "bb"]);
    let (out, _) = text(&human);
    assert!(
        out.contains(&sha) && out.contains("setuid/setgid bits stripped"),
        "{out}"
    );

    // The same files as an OCI layout, directory or tar: the same image
    // (the store keeps the first import's record).
    let layout = scratch(d, "oci-layout");
    image_common::write_layout(
        &layout,
        &[image_common::Layer {
            tar: std::fs::read(&tar).unwrap(),
            compression: "gzip",
        }],
        &image_common::Tweaks::default(),
    );
    let from_dir = ok_json(d, &["image", "import", path_arg(&layout)]);
    assert_eq!(from_dir["digest"], digest.as_str(), "{from_dir}");
    assert_eq!(from_dir["new"], false);
    let layout_tar = d.dir.join("oci-layout.tar");
    image_common::tar_dir(&layout, &layout_tar);
    let from_tar = ok_json(d, &["image", "import", path_arg(&layout_tar)]);
    assert_eq!(from_tar["digest"], digest.as_str(), "{from_tar}");
    // A new image from a layout records its manifest digest.
    let small = scratch(d, "oci-layout-small");
    let manifest = image_common::write_layout(
        &small,
        &[image_common::Layer {
            tar: image_common::tar(&[image_common::E::File("hello", b"hi\n", 0o644)]),
            compression: "zstd",
        }],
        &image_common::Tweaks::default(),
    );
    let small_tar = d.dir.join("oci-layout-small.tar");
    image_common::tar_dir(&small, &small_tar);
    let new = ok_json(d, &["image", "import", path_arg(&small_tar)]);
    assert_eq!(new["new"], true, "{new}");
    assert_eq!(new["source_manifest_digest"], manifest.as_str(), "{new}");
    assert_eq!(new["files"], 1);
    assert_ne!(new["digest"], digest.as_str());

    // An alias and every digest form give one action digest, through the
    // daemon and locally.
    let out_dir = scratch(d, "pin-out");
    let run = |image: &str, local: bool| {
        let mut c = d.hermetic();
        c.args(["run", "--json", "--image", image]);
        if local {
            c.arg("--local");
        }
        let o = c
            .arg("--out-dir")
            .arg(&out_dir)
            .args(["--", "sh", "-c", "cat /etc/passwd | wc -l"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{image}: {:?}", text(&o));
        json(&o)["action_digest"].as_str().unwrap().to_owned()
    };
    let by_alias = run("bb", false);
    for form in [digest.as_str(), sha.as_str(), b3.as_str()] {
        assert_eq!(run(form, false), by_alias, "{form}");
    }
    assert_eq!(run("bb", true), by_alias, "--local pins the same image");
}

#[test]
fn untrusted_images_are_refused_until_trusted() {
    let Some(d) = daemon() else { return };
    let _serial = serial();
    let dir = variant_dir(d, "trust-me");
    let imported = ok_json(
        d,
        &["image", "import", path_arg(&dir), "--name", "doubtful"],
    );
    let digest = imported["digest"].as_str().unwrap().to_owned();
    assert_eq!(imported["trusted"], false);
    let out_dir = scratch(d, "trust-out");
    let run = || {
        d.hermetic()
            .args(["run", "--image", "doubtful", "--out-dir"])
            .arg(&out_dir)
            .args(["--", "cat", "/marker"])
            .output()
            .unwrap()
    };
    let refused = run();
    let (_, err) = text(&refused);
    assert_eq!(refused.status.code(), Some(64), "{err}");
    assert!(err.contains(&digest), "{err}");
    assert!(err.contains("hermetic image trust"), "{err}");

    let trusted = ok_json(d, &["image", "trust", "doubtful"]);
    assert_eq!(trusted["trusted"], true);
    assert!(
        trusted["trust"]["by"]
            .as_str()
            .unwrap()
            .starts_with("unix uid"),
        "{trusted}"
    );
    let ran = run();
    let (out, err) = text(&ran);
    assert_eq!(ran.status.code(), Some(0), "{err}");
    assert!(out.contains("trust-me"), "{out}");

    // Untrusted again: a new action on it is refused (the cached result of
    // the one that ran while it was trusted stays servable).
    ok_json(d, &["image", "untrust", digest.as_str()]);
    let other = d
        .hermetic()
        .args(["run", "--image", "doubtful", "--out-dir"])
        .arg(&out_dir)
        .args(["--", "cat", "/marker", "/marker"])
        .output()
        .unwrap();
    assert_eq!(other.status.code(), Some(64), "{:?}", text(&other));
    ok_json(d, &["image", "trust", digest.as_str()]);
}

#[test]
fn removal_is_refused_while_a_cached_result_refers_to_the_image() {
    let Some(d) = daemon() else { return };
    let _serial = serial();
    let used = variant_dir(d, "used");
    let used_digest = ok_json(
        d,
        &[
            "image",
            "import",
            path_arg(&used),
            "--name",
            "used",
            "--trust",
        ],
    )["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let out_dir = scratch(d, "rm-out");
    let ran = d
        .hermetic()
        .args(["run", "--image", "used", "--out-dir"])
        .arg(&out_dir)
        .args(["--", "cat", "/marker"])
        .output()
        .unwrap();
    assert_eq!(ran.status.code(), Some(0), "{:?}", text(&ran));
    let refused = hermetic(d, &["image", "rm", "used"]);
    let (_, err) = text(&refused);
    assert_eq!(refused.status.code(), Some(64), "{err}");
    assert!(err.contains("cached action result"), "{err}");
    assert!(store_listing(d).contains(&used_digest[22..].to_owned()));

    // An image nothing refers to goes, with its alias.
    let unused = variant_dir(d, "unused");
    let unused_digest = ok_json(
        d,
        &["image", "import", path_arg(&unused), "--name", "unused"],
    )["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let removed = ok_json(d, &["image", "rm", "unused"]);
    assert_eq!(removed["removed"], unused_digest.as_str());
    assert_eq!(removed["aliases_removed"], serde_json::json!(["unused"]));
    assert!(!store_listing(d).contains(&unused_digest[22..].to_owned()));
    let gone = hermetic(d, &["image", "inspect", "unused"]);
    assert_eq!(gone.status.code(), Some(64), "{:?}", text(&gone));
    let listed = ok_json(d, &["image", "ls"]);
    assert!(!listed.to_string().contains(&unused_digest), "{listed}");
}

#[test]
fn corrupt_archives_are_refused_and_leave_nothing() {
    let Some(d) = daemon() else { return };
    let _serial = serial();
    let tar = std::fs::read(busybox_tar(d)).unwrap();
    let before = store_listing(d);

    let truncated = d.dir.join("truncated.tar");
    std::fs::write(&truncated, &tar[..tar.len() / 3]).unwrap();
    let o = hermetic(
        d,
        &["image", "import", path_arg(&truncated), "--name", "broken"],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(64), "{err}");
    assert!(
        err.contains("truncated.tar") && err.contains("cannot import"),
        "{err}"
    );

    let layout = scratch(d, "corrupt-layout");
    image_common::write_layout(
        &layout,
        &[image_common::Layer {
            tar,
            compression: "",
        }],
        &image_common::Tweaks {
            corrupt_first_layer: true,
            ..Default::default()
        },
    );
    let o = hermetic(
        d,
        &["image", "import", path_arg(&layout), "--name", "broken"],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(64), "{err}");
    assert!(err.contains("digest"), "{err}");

    let garbage = d.dir.join("garbage.bin");
    std::fs::write(&garbage, b"this is no archive at all").unwrap();
    let o = hermetic(d, &["image", "import", path_arg(&garbage)]);
    assert_eq!(o.status.code(), Some(64), "{:?}", text(&o));

    assert_eq!(store_listing(d), before, "nothing half-imported is visible");
    let o = hermetic(d, &["image", "inspect", "broken"]);
    assert_eq!(o.status.code(), Some(64), "{:?}", text(&o));
}

#[test]
fn unknown_images_are_clear_errors() {
    let Some(d) = daemon() else { return };
    let _serial = serial();
    let unknown = format!("hermetic-image:blake3:{}", "0".repeat(64));
    let o = hermetic(d, &["image", "inspect", &unknown]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(64), "{err}");
    assert!(err.contains("not in this daemon's image store"), "{err}");
    let out_dir = scratch(d, "unknown-out");
    for image in [unknown.as_str(), "no-such-alias", "sha256:xyz"] {
        let o = d
            .hermetic()
            .args(["run", "--image", image, "--out-dir"])
            .arg(&out_dir)
            .args(["--", "true"])
            .output()
            .unwrap();
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(64), "{image}: {err}");
        assert!(err.contains("image"), "{err}");
    }
    let o = hermetic(d, &["image", "rm", &unknown]);
    assert_eq!(o.status.code(), Some(64), "{:?}", text(&o));
}
