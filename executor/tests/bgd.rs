//! An independent REAPI client against a real hermeticd: BuildGrid's `bgd`
//! CLI (PyPI `buildgrid`, in the venv `scripts/bgd-venv` makes) over TCP,
//! with the real sandbox helper. Capabilities; a directory uploaded and
//! downloaded back; a command executed with an output file and an output
//! directory; its result fetched from the action cache.
//!
//! Without the venv the test prints SKIP; with CI=true it fails.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bazel_remote_apis::build::bazel::remote::execution::v2::Tree;
use common::real::{probe, skip_or_fail, start};
use hermeticd::config::SandboxMode;
use hermeticd::digest::{DigestFunction, key_of};
use prost::Message;

/// `bgd` from $HERMETIC_BGD_VENV, else the repository's `target/bgd-venv`.
fn bgd() -> Option<PathBuf> {
    let venv = std::env::var_os("HERMETIC_BGD_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bgd-venv"));
    let bin = venv.join("bin/bgd");
    bin.is_file().then_some(bin)
}

/// Runs `bgd ARGS` and returns its stdout; panics with its output on failure.
async fn run(bgd: &Path, args: &[&str]) -> String {
    let out = tokio::process::Command::new(bgd)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "bgd {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout + &stderr
}

/// The text between `prefix` and the next `suffix` in `text`.
fn between<'a>(text: &'a str, prefix: &str, suffix: &str) -> &'a str {
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{text}"))
        + prefix.len();
    let len = text[start..].find(suffix).unwrap();
    &text[start..start + len]
}

/// Every entry under `root`: relative path to (kind, mode bits, content).
fn snapshot(root: &Path) -> BTreeMap<String, (char, u32, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (char, u32, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_symlink() {
                let target = std::fs::read_link(&p).unwrap();
                out.insert(rel, ('l', 0, target.display().to_string().into_bytes()));
            } else if m.is_dir() {
                out.insert(rel, ('d', 0, Vec::new()));
                walk(root, &p, out);
            } else {
                let exec = m.permissions().mode() & 0o100;
                out.insert(rel, ('f', exec, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bgd_uploads_downloads_executes_and_reads_the_action_cache() {
    let Some(bgd) = bgd() else {
        skip_or_fail("no bgd venv: run scripts/bgd-venv (BuildGrid needs Python >= 3.13)");
        return;
    };
    let Some(server) = start(SandboxMode::Supervisor).await else {
        return;
    };
    if !probe(&server.tcp_channel().await).await {
        return;
    }
    let url = format!("http://{}", server.tcp);
    let remote = ["--remote", url.as_str()];
    let work = tempfile::tempdir().unwrap();

    // Capabilities.
    let caps = run(&bgd, &[&["capabilities"][..], &remote].concat()).await;
    let caps: serde_json::Value = serde_json::from_str(&caps[caps.find('{').unwrap()..]).unwrap();
    assert_eq!(caps["executionCapabilities"]["execEnabled"], true, "{caps}");
    assert_eq!(caps["highApiVersion"]["minor"], 3, "{caps}");
    let functions = caps["cacheCapabilities"]["digestFunctions"].to_string();
    assert!(
        functions.contains("SHA256") && functions.contains("BLAKE3"),
        "{caps}"
    );

    // A directory with a file, an executable in a subdirectory, a symlink
    // and a file over the batch limit (so it goes through ByteStream).
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), "hello from bgd\n").unwrap();
    std::fs::write(src.join("sub/run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(
        src.join("sub/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    let big: Vec<u8> = (0..5u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
    std::fs::write(src.join("big.bin"), &big).unwrap();
    let src_s = src.to_str().unwrap();
    let up = run(
        &bgd,
        &[&["cas"][..], &remote, &["upload-dir", "--verify", src_s]].concat(),
    )
    .await;
    let root = between(&up, &format!("Pushed path=[{src_s}] with digest=["), "]").to_owned();
    let back = work.path().join("back");
    let back_s = back.to_str().unwrap();
    run(
        &bgd,
        &[
            &["cas"][..],
            &remote,
            &["download-dir", "--verify", &root, back_s],
        ]
        .concat(),
    )
    .await;
    assert_eq!(snapshot(&back), snapshot(&src));

    // Execute with an output file and an output directory, cached (-c).
    let dl = work.path().join("dl");
    let script = "mkdir -p out/tree/deep && cat a.txt > out/result.txt \
                  && sub/run.sh > out/tree/deep/ran && echo done";
    let exec = run(
        &bgd,
        &[
            &["execute"][..],
            &remote,
            &[
                "command",
                "-c",
                "--output-file",
                "out/result.txt",
                "--output-file",
                "out/tree",
                "--output-directory",
                dl.to_str().unwrap(),
                src_s,
                "--",
                "sh",
                "-c",
                script,
            ],
        ]
        .concat(),
    )
    .await;
    let status = between(&exec, "Response status code:", "\n");
    assert_eq!(status.trim(), "", "not OK:\n{exec}");
    assert_eq!(
        std::fs::read(dl.join("out/result.txt")).unwrap(),
        b"hello from bgd\n"
    );
    let action_hash = between(&exec, "Sent action=[hash: \"", "\"");
    let action_size = between(&exec, "Sent action=[hash: \"", "]");
    let action_size = between(action_size, "size_bytes: ", "\n");
    let action = format!("{action_hash}/{action_size}");

    // The action cache has the result, with the output tree.
    let ac = run(
        &bgd,
        &[&["actioncache"][..], &remote, &["get", "--json", &action]].concat(),
    )
    .await;
    let result: serde_json::Value = serde_json::from_str(&ac[ac.find('{').unwrap()..]).unwrap();
    assert_eq!(
        result["outputFiles"][0]["path"], "out/result.txt",
        "{result}"
    );
    assert_eq!(
        result["outputFiles"][0]["digest"]["hash"],
        key_of(DigestFunction::Sha256, b"hello from bgd\n").hex()
    );
    let dir = &result["outputDirectories"][0];
    assert_eq!(dir["path"], "out/tree", "{result}");
    let tree_digest = format!(
        "{}/{}",
        dir["treeDigest"]["hash"].as_str().unwrap(),
        dir["treeDigest"]["sizeBytes"].as_str().unwrap()
    );
    let tree_file = work.path().join("tree.bin");
    run(
        &bgd,
        &[
            &["cas"][..],
            &remote,
            &[
                "download-file",
                "--verify",
                &tree_digest,
                tree_file.to_str().unwrap(),
            ],
        ]
        .concat(),
    )
    .await;
    let tree = Tree::decode(std::fs::read(&tree_file).unwrap().as_slice()).unwrap();
    let root_dir = tree.root.unwrap();
    assert_eq!(root_dir.directories[0].name, "deep");
    let deep = &tree.children[0];
    assert_eq!(deep.files[0].name, "ran");
    assert_eq!(
        deep.files[0].digest.as_ref().unwrap().hash,
        key_of(DigestFunction::Sha256, b"ran\n").hex()
    );
    server.stop().await;
}
