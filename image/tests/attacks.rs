//! Hostile layers: each must fail with an error that names the problem,
//! leave nothing in the destination's parent and touch nothing outside.

mod common;

use std::fs;
use std::path::Path;

use common::{E, Layer, Tweaks, tar, write_layout};
use hermetic_image::{ImageError, ImportOptions, import};

/// Imports `src` into a fresh `out/dest`; asserts failure and a clean `out`.
fn refuse(src: &Path, opts: &ImportOptions) -> ImageError {
    let out = tempfile::tempdir().unwrap();
    let err = import(src, &out.path().join("dest"), opts).expect_err("import must fail");
    assert_eq!(
        common::listing(out.path()),
        Vec::<String>::new(),
        "left behind after: {err}"
    );
    err
}

fn refuse_tar(entries: &[E]) -> String {
    refuse_tar_with(entries, &ImportOptions::default())
}

fn refuse_tar_with(entries: &[E], opts: &ImportOptions) -> String {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("rootfs.tar");
    fs::write(&src, tar(entries)).unwrap();
    refuse(&src, opts).to_string()
}

/// Two-layer OCI layout; returns the error text.
fn refuse_layers(lower: &[E], upper: &[E]) -> String {
    let d = tempfile::tempdir().unwrap();
    let layout = d.path().join("layout");
    let layers = [
        Layer {
            tar: tar(lower),
            compression: "gzip",
        },
        Layer {
            tar: tar(upper),
            compression: "",
        },
    ];
    write_layout(&layout, &layers, &Tweaks::default());
    refuse(&layout, &ImportOptions::default()).to_string()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[test]
fn dotdot_component() {
    let e = refuse_tar(&[E::File("a/../../evil", b"x", 0o644)]);
    assert!(
        e.contains("`..` component refused") && e.contains("a/../../evil"),
        "{e}"
    );
}

#[test]
fn absolute_path() {
    let e = refuse_tar(&[E::File("/etc/evil", b"x", 0o644)]);
    assert!(
        e.contains("absolute path refused") && e.contains("/etc/evil"),
        "{e}"
    );
}

#[test]
fn non_utf8_name() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("r.tar");
    let mut bytes = tar(&[E::File("bad-XX", b"x", 0o644)]);
    bytes[4] = 0xff;
    // Re-checksum the edited header.
    let mut h = tar::Header::from_byte_slice(&bytes[..512]).clone();
    h.set_cksum();
    bytes[..512].copy_from_slice(h.as_bytes());
    fs::write(&src, bytes).unwrap();
    let e = refuse(&src, &ImportOptions::default()).to_string();
    assert!(e.contains("not valid UTF-8"), "{e}");
}

#[test]
fn symlinked_parent_in_same_layer() {
    let outside = tempfile::tempdir().unwrap();
    let target = leak(outside.path().display().to_string());
    let e = refuse_tar(&[E::Symlink("lnk", target), E::File("lnk/evil", b"x", 0o644)]);
    assert!(
        e.contains("entry lnk/evil") && e.contains("symbolic link lnk"),
        "{e}"
    );
    assert!(!outside.path().join("evil").exists());
}

#[test]
fn relative_symlinked_parent() {
    let e = refuse_tar(&[
        E::Dir("d", 0o755),
        E::Symlink("d/up", "../../../.."),
        E::File("d/up/tmp/evil", b"x", 0o644),
    ]);
    assert!(e.contains("symbolic link d/up"), "{e}");
}

#[test]
fn symlinked_parent_from_lower_layer() {
    let outside = tempfile::tempdir().unwrap();
    let target = leak(outside.path().display().to_string());
    let e = refuse_layers(
        &[E::Symlink("etc", target)],
        &[E::File("etc/passwd", b"pwned", 0o644)],
    );
    assert!(
        e.contains("entry etc/passwd") && e.contains("symbolic link etc"),
        "{e}"
    );
    assert!(!outside.path().join("passwd").exists());
}

#[test]
fn hardlink_outside_root() {
    let e = refuse_tar(&[E::Hardlink("h", "../../../etc/passwd")]);
    assert!(e.contains("hardlink target") && e.contains("`..`"), "{e}");
    let e = refuse_tar(&[E::Hardlink("h", "/etc/passwd")]);
    assert!(
        e.contains("hardlink target") && e.contains("absolute"),
        "{e}"
    );
}

#[test]
fn hardlink_to_missing_target() {
    let e = refuse_tar(&[E::Hardlink("h", "later"), E::File("later", b"x", 0o644)]);
    assert!(
        e.contains("entry h") && e.contains("hardlink target later does not exist"),
        "{e}"
    );
}

#[test]
fn hardlink_through_symlink() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), b"s").unwrap();
    let target = leak(outside.path().display().to_string());
    let e = refuse_tar(&[E::Symlink("s", target), E::Hardlink("h", "s/secret")]);
    assert!(
        e.contains("hardlink target s/secret") && e.contains("symbolic link s"),
        "{e}"
    );
}

#[test]
fn whiteout_outside_root() {
    let e = refuse_tar(&[E::File("../.wh.victim", b"", 0o644)]);
    assert!(e.contains("`..`"), "{e}");
}

#[test]
fn whiteout_through_symlink() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("victim"), b"v").unwrap();
    let target = leak(outside.path().display().to_string());
    let e = refuse_layers(
        &[E::Symlink("d", target)],
        &[E::File("d/.wh.victim", b"", 0o644)],
    );
    assert!(
        e.contains("whiteout of d/victim") && e.contains("symbolic link d"),
        "{e}"
    );
    assert!(outside.path().join("victim").exists());
    let e = refuse_layers(
        &[E::Symlink("d", target)],
        &[E::File("d/.wh..wh..opq", b"", 0o644)],
    );
    assert!(
        e.contains("opaque directory d") && e.contains("symbolic link d"),
        "{e}"
    );
    assert!(outside.path().join("victim").exists());
}

#[test]
fn header_claims_huge_size() {
    let e = refuse_tar(&[E::Lying("big", 1 << 40, b"")]);
    assert!(
        e.contains("entry size exceeds the limit") && e.contains("big claims 1099511627776 bytes"),
        "{e}"
    );
}

#[test]
fn huge_extension_header() {
    // A GNU long-name header claiming 2 MiB: refused before it is read.
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNULongName);
    h.set_size(2 << 20);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    h.set_cksum();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("x.tar");
    fs::write(&src, h.as_bytes()).unwrap();
    let e = refuse(&src, &ImportOptions::default()).to_string();
    assert!(
        e.contains("extension header") && e.contains("exceeds"),
        "{e}"
    );
}

#[test]
fn total_size_cap() {
    let opts = ImportOptions {
        max_total_bytes: 100,
        ..Default::default()
    };
    let e = refuse_tar_with(
        &[E::File("a", &[1; 80], 0o644), E::File("b", &[2; 80], 0o644)],
        &opts,
    );
    assert!(
        e.contains("entry b") && e.contains("max_total_bytes 100"),
        "{e}"
    );
}

#[test]
fn too_many_entries() {
    let opts = ImportOptions {
        max_entries: 5,
        ..Default::default()
    };
    let many: Vec<E> = ["a", "b", "c", "d", "e", "f", "g"]
        .iter()
        .map(|n| E::File(n, b"", 0o644))
        .collect();
    let e = refuse_tar_with(&many, &opts);
    assert!(
        e.contains("number of entries exceeds the limit of 5") && e.contains("at f"),
        "{e}"
    );
}

#[test]
fn too_deep() {
    let opts = ImportOptions {
        max_depth: 3,
        ..Default::default()
    };
    let e = refuse_tar_with(&[E::File("a/b/c/d", b"", 0o644)], &opts);
    assert!(e.contains("deeper than max_depth 3"), "{e}");
}

#[test]
fn truncated_tar() {
    let d = tempfile::tempdir().unwrap();
    let full = tar(&[E::File("a", &[7; 3000], 0o644), E::File("b", b"bb", 0o644)]);
    // Cut inside a's data.
    let src = d.path().join("mid.tar");
    fs::write(&src, &full[..2000]).unwrap();
    let e = refuse(&src, &ImportOptions::default()).to_string();
    assert!(e.contains("truncated"), "{e}");
    // Cut exactly after a's data: no end-of-archive block.
    let src = d.path().join("boundary.tar");
    fs::write(&src, &full[..512 + 3072]).unwrap();
    let e = refuse(&src, &ImportOptions::default()).to_string();
    assert!(
        e.contains("truncated") && e.contains("end-of-archive"),
        "{e}"
    );
    // Cut inside a header.
    let src = d.path().join("header.tar");
    fs::write(&src, &full[..512 + 3072 + 100]).unwrap();
    let e = refuse(&src, &ImportOptions::default()).to_string();
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn corrupt_gzip_and_zstd() {
    let d = tempfile::tempdir().unwrap();
    let body = tar(&[E::File("a", &[7; 50_000], 0o644)]);
    for (name, mut bytes) in [
        ("x.tar.gz", common::gzip(&body)),
        ("x.tar.zst", common::zstd(&body)),
    ] {
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        bytes[n / 2 + 1] ^= 0xff;
        let src = d.path().join(name);
        fs::write(&src, &bytes).unwrap();
        let e = refuse(&src, &ImportOptions::default()).to_string();
        assert!(
            e.contains("corrupt") || e.contains("truncated") || e.contains("invalid"),
            "{name}: {e}"
        );
        // Truncated compressed stream.
        let src = d.path().join(format!("cut-{name}"));
        fs::write(&src, &bytes[..n / 3]).unwrap();
        let e = refuse(&src, &ImportOptions::default()).to_string();
        assert!(e.contains(&format!("cut-{name}")), "{name}: {e}");
    }
}

#[test]
fn unsupported_compression_is_named() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("x.tar.bz2");
    fs::write(&src, b"BZh91AY&SY").unwrap();
    let e = refuse(&src, &ImportOptions::default()).to_string();
    assert!(e.contains("bzip2 compression is not supported"), "{e}");
}

fn broken_layout(t: Tweaks) -> String {
    let d = tempfile::tempdir().unwrap();
    let layout = d.path().join("layout");
    let layers = [Layer {
        tar: tar(&[E::File("a", &[1; 4000], 0o644)]),
        compression: "gzip",
    }];
    write_layout(&layout, &layers, &t);
    refuse(&layout, &ImportOptions::default()).to_string()
}

#[test]
fn blob_digest_mismatch() {
    let e = broken_layout(Tweaks {
        corrupt_first_layer: true,
        ..Default::default()
    });
    assert!(
        e.starts_with("blob sha256:") && e.contains("content digest is sha256:"),
        "{e}"
    );
}

#[test]
fn blob_size_mismatch() {
    let e = broken_layout(Tweaks {
        wrong_size: true,
        ..Default::default()
    });
    assert!(
        e.contains("descriptor says") && e.contains("blob has"),
        "{e}"
    );
}

#[test]
fn diff_id_mismatch() {
    let e = broken_layout(Tweaks {
        wrong_diff_id: true,
        ..Default::default()
    });
    assert!(e.contains("config diff_id"), "{e}");
}

#[test]
fn unsupported_media_type() {
    let e = broken_layout(Tweaks {
        layer_media_type: Some("application/vnd.example.weird.layer"),
        ..Default::default()
    });
    assert!(
        e.contains("unsupported media type application/vnd.example.weird.layer for layer 0")
            && e.contains("supported:"),
        "{e}"
    );
}

#[test]
fn missing_blob() {
    let d = tempfile::tempdir().unwrap();
    let layout = d.path().join("layout");
    let layers = [Layer {
        tar: tar(&[E::File("a", b"x", 0o644)]),
        compression: "",
    }];
    write_layout(&layout, &layers, &Tweaks::default());
    let blob = sha256_of_layer(&layers[0].tar);
    fs::remove_file(layout.join("blobs/sha256").join(&blob[7..])).unwrap();
    let e = refuse(&layout, &ImportOptions::default()).to_string();
    assert!(e.contains("missing blob") && e.contains(&blob), "{e}");
}

fn sha256_of_layer(t: &[u8]) -> String {
    common::sha256(t)
}

#[test]
fn destination_must_not_exist() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("r.tar");
    fs::write(&src, tar(&[E::File("a", b"x", 0o644)])).unwrap();
    fs::create_dir(d.path().join("dest")).unwrap();
    let e = import(&src, &d.path().join("dest"), &ImportOptions::default()).unwrap_err();
    assert!(matches!(e, ImageError::DestExists(_)), "{e}");
}

#[test]
fn file_replacing_symlink_does_not_write_through_it() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, b"original").unwrap();
    let target = leak(victim.display().to_string());
    let d = tempfile::tempdir().unwrap();
    let layout = d.path().join("layout");
    let layers = [
        Layer {
            tar: tar(&[E::Symlink("x", target), E::Symlink("y", target)]),
            compression: "",
        },
        Layer {
            tar: tar(&[E::File("x", b"new", 0o644), E::Dir("y", 0o755)]),
            compression: "",
        },
    ];
    write_layout(&layout, &layers, &Tweaks::default());
    let img = import(&layout, &d.path().join("dest"), &ImportOptions::default()).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"original");
    assert_eq!(fs::read(img.rootfs.join("x")).unwrap(), b"new");
    assert!(fs::symlink_metadata(img.rootfs.join("y")).unwrap().is_dir());
}
