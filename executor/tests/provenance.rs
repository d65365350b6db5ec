//! Provenance through a real hermeticd: actions run by the real sandbox
//! helper on a busybox rootfs are attested; `hermetic.v1.Provenance`
//! serves bundles, SBOMs, the keyring, checkpoints and consistency proofs;
//! a build step cannot read the signing key; a tampered log stops the
//! daemon from starting.
//!
//! The sandbox tests need root, the helper binary and a static busybox:
//! without them they print a loud SKIP, and with CI=true they fail.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    Action, Digest, ExecuteResponse,
    content_addressable_storage_client::ContentAddressableStorageClient,
    execution_client::ExecutionClient,
};
use common::actions::{ActionSpec, execute, put_action, put_tree, read_blob, sh};
use common::real::{probe, start_with};
use hermetic_attest::{Bundle, Keyring, verify};
use hermetic_proto::ProvenanceClient;
use hermetic_proto::v1::{
    BlobDigest, GetCheckpointRequest, GetConsistencyProofRequest, GetKeyringRequest,
    GetProvenanceRequest,
};
use hermeticd::config::{Config, SandboxMode};
use hermeticd::digest::DigestFunction;
use tonic::transport::Channel;

async fn keyring(channel: &Channel) -> Keyring {
    let data = ProvenanceClient::new(channel.clone())
        .get_keyring(GetKeyringRequest {})
        .await
        .unwrap()
        .into_inner()
        .keyring;
    Keyring::from_json(&data).unwrap()
}

/// The statement inside a bundle's envelope.
fn statement(b: &Bundle) -> serde_json::Value {
    serde_json::from_slice(&b.dsse_envelope.payload_bytes().unwrap()).unwrap()
}

/// Runs `spec` on an input tree; returns the operation name and response.
async fn run(
    channel: &Channel,
    f: DigestFunction,
    spec: &ActionSpec,
    files: &[(&str, &[u8], bool)],
) -> (String, ExecuteResponse, hermeticd::digest::BlobKey) {
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut exec = ExecutionClient::new(channel.clone());
    let root = put_tree(&mut cas, f, files).await;
    let action = put_action(&mut cas, f, spec, root).await;
    let (ops, resp) = execute(&mut exec, f, action, false).await.unwrap();
    let status = resp.status.clone().unwrap_or_default();
    assert_eq!(status.code, 0, "{status:?}");
    (ops.last().unwrap().name.clone(), resp, action)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executed_actions_are_attested_and_served() {
    let Some(server) = start_with(SandboxMode::Supervisor, |c| {
        c.provenance.record_inputs = true;
        c.provenance.builder_id = Some("https://ci.example/hermeticd".into());
    })
    .await
    else {
        return;
    };
    let channel = server.unix_channel().await;
    if !probe(&channel).await {
        return;
    }
    let f = DigestFunction::Blake3;
    let mut spec = sh("mkdir -p out/d && cat src/in.txt > out/hello && echo x > out/d/x");
    spec.output_paths = vec!["out/hello".into(), "out/d".into()];
    let (op, resp, action) = run(&channel, f, &spec, &[("src/in.txt", b"hi\n", false)]).await;
    for name in [
        "provenance",
        "sbom.cdx",
        "sbom.spdx",
        "keyring",
        "execution_log",
    ] {
        assert!(resp.server_logs.contains_key(name), "{name}: {resp:?}");
    }
    let from_logs = Bundle::from_json(
        &read_blob(
            &channel,
            f,
            resp.server_logs["provenance"].digest.as_ref().unwrap(),
        )
        .await,
    )
    .unwrap();
    let ring = keyring(&channel).await;
    verify::verify_artifact(b"hi\n", &from_logs, &ring).unwrap();
    verify::verify_artifact(b"x\n", &from_logs, &ring).unwrap();
    assert!(verify::verify_artifact(b"hi!\n", &from_logs, &ring).is_err());

    let s = statement(&from_logs);
    let names: Vec<&str> = s["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["out/d/x", "out/hello"]);
    let p = &s["predicate"];
    assert_eq!(p["runDetails"]["metadata"]["invocationId"], op);
    assert_eq!(
        p["runDetails"]["builder"]["id"],
        "https://ci.example/hermeticd"
    );
    let deps = p["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    assert_eq!(deps[0]["name"], "base-image");
    // The image as stored: its pinned name, SHA-256 tree digest and the
    // trust record it ran under, which is in the transparency log.
    let images = server.daemon.ctx.engine.choices().images.list().unwrap();
    assert_eq!(images.len(), 1);
    let info = &images[0];
    assert_eq!(deps[0]["uri"], info.digest.to_string());
    let sha = info.record.digest_sha256.strip_prefix("sha256:").unwrap();
    assert_eq!(deps[0]["digest"]["sha256"], sha.split('/').next().unwrap());
    let trust = info.trust.as_ref().expect("a configured image is trusted");
    let trust_value: serde_json::Value =
        serde_json::from_slice(&trust.trust_record_bytes()).unwrap();
    let trust_sha = sha256_hex(&hermetic_attest::canonical::to_vec(&trust_value).unwrap());
    assert_eq!(deps[0]["annotations"]["trustRecordSha256"], trust_sha);
    let logged = server.daemon.ctx.engine.provenance().with(|a| {
        (0..a.log().size()).any(|i| {
            let entry = a.log().entry(i).unwrap();
            matches!(
                hermetic_attest::LogEntry::parse(&entry),
                Ok(hermetic_attest::LogEntry::ImageTrust { record }) if record == trust_value
            )
        })
    });
    assert!(logged, "the image's trust record is not in the log");
    // A trust decision is logged as it is made.
    hermetic_proto::ImagesClient::new(channel.clone())
        .set_trust(hermetic_proto::v1::SetTrustRequest {
            image: info.digest.to_string(),
            trusted: true,
        })
        .await
        .unwrap();
    let images = server.daemon.ctx.engine.choices().images.list().unwrap();
    let decided: serde_json::Value =
        serde_json::from_slice(&images[0].trust.as_ref().unwrap().trust_record_bytes()).unwrap();
    assert_ne!(decided, trust_value);
    let logged = server.daemon.ctx.engine.provenance().with(|a| {
        let last = a.log().entry(a.log().size() - 1).unwrap();
        matches!(
            hermetic_attest::LogEntry::parse(&last),
            Ok(hermetic_attest::LogEntry::ImageTrust { record }) if record == decided
        )
    });
    assert!(logged, "the new trust decision is not the log's last entry");
    assert!(deps.iter().any(|d| d["name"] == "input-root/src/in.txt"));
    // The input root by BLAKE3 too: its key in this (BLAKE3) action's CAS,
    // which `hermetic reproduce` finds the inputs by.
    let action_blob = read_blob(
        &channel,
        f,
        &Digest {
            hash: action.hex(),
            size_bytes: action.size as i64,
        },
    )
    .await;
    let input_root = <Action as prost::Message>::decode(action_blob.as_slice())
        .unwrap()
        .input_root_digest
        .unwrap();
    assert_eq!(deps[1]["name"], "input-root");
    assert_eq!(deps[1]["digest"]["blake3"], input_root.hash);
    assert_eq!(
        deps[1]["annotations"]["sizeBytes"], input_root.size_bytes,
        "{}",
        deps[1]
    );
    let restrictions = &p["buildDefinition"]["internalParameters"]["restrictions"];
    assert_eq!(restrictions["seccomp"], true, "{restrictions}");
    assert_eq!(restrictions["no_new_privs"], true, "{restrictions}");

    let mut client = ProvenanceClient::new(channel.clone());
    // By operation and by action digest: the same attestation.
    for req in [
        GetProvenanceRequest {
            operation: op.clone(),
            ..Default::default()
        },
        GetProvenanceRequest {
            action_digest: Some(BlobDigest {
                hash: action.hex(),
                size_bytes: action.size as i64,
            }),
            digest_function: f.to_proto(),
            ..Default::default()
        },
    ] {
        let got = client.get_provenance(req).await.unwrap().into_inner();
        let b = Bundle::from_json(&got.bundle).unwrap();
        assert_eq!(b.dsse_envelope, from_logs.dsse_envelope);
        assert_eq!(b.log_entry.log_index, from_logs.log_entry.log_index);
        verify::verify_artifact(b"hi\n", &b, &ring).unwrap();
        let cdx: serde_json::Value = serde_json::from_slice(&got.sbom_cyclonedx).unwrap();
        assert_eq!(cdx["bomFormat"], "CycloneDX");
        let spdx: serde_json::Value = serde_json::from_slice(&got.sbom_spdx).unwrap();
        assert_eq!(spdx["spdxVersion"], "SPDX-2.3");
    }
    let bad = client
        .get_provenance(GetProvenanceRequest::default())
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");

    // A second action; the log's two checkpoints are consistent.
    let mut spec2 = sh("echo two > two");
    spec2.output_paths = vec!["two".into()];
    run(&channel, f, &spec2, &[]).await;
    let latest = client
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    let old_size = from_logs.log_entry.tree_size;
    assert!(latest.tree_size > old_size);
    let proof = client
        .get_consistency_proof(GetConsistencyProofRequest {
            old_size,
            new_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(proof.new_size, latest.tree_size);
    let ring = keyring(&channel).await;
    let sizes = verify::verify_consistency(
        &from_logs.log_entry.checkpoint,
        &proof.checkpoint,
        &proof.proof,
        &ring,
    )
    .unwrap();
    assert_eq!(sizes, (old_size, latest.tree_size));
    let err = client
        .get_consistency_proof(GetConsistencyProofRequest {
            old_size: latest.tree_size + 1,
            new_size: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    server.stop().await;
}

/// A cache hit names the bundle stored with the result while no key was
/// rotated or revoked, also after the log grew (the original inclusion
/// proof still verifies): a hit stores nothing new. (A rotation or a
/// revocation makes hits get a fresh bundle: client/tests/provenance.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_hit_keeps_its_bundle_while_no_key_changes() {
    let Some(server) = start_with(SandboxMode::Supervisor, |_| {}).await else {
        return;
    };
    let channel = server.unix_channel().await;
    if !probe(&channel).await {
        return;
    }
    let f = DigestFunction::Blake3;
    let mut spec = sh("cat src/in.txt > out");
    spec.output_paths = vec!["out".into()];
    let files: &[(&str, &[u8], bool)] = &[("src/in.txt", b"kept\n", false)];
    let (_, first, action) = run(&channel, f, &spec, files).await;
    assert!(!first.cached_result);
    let bundle_of = |r: &ExecuteResponse| r.server_logs["provenance"].digest.clone().unwrap();
    let mut exec = ExecutionClient::new(channel.clone());
    let (_, hit) = execute(&mut exec, f, action, false).await.unwrap();
    assert!(hit.cached_result);
    assert_eq!(bundle_of(&hit), bundle_of(&first));
    // Another action appends to the log: the first one's proof is against
    // an older checkpoint, and still verifies.
    let other = sh("echo other > out");
    run(
        &channel,
        f,
        &ActionSpec {
            output_paths: vec!["out".into()],
            ..other
        },
        &[],
    )
    .await;
    let (_, again) = execute(&mut exec, f, action, false).await.unwrap();
    assert!(again.cached_result);
    assert_eq!(bundle_of(&again), bundle_of(&first));
    let bundle = Bundle::from_json(&read_blob(&channel, f, &bundle_of(&again)).await).unwrap();
    verify::verify_artifact(b"kept\n", &bundle, &keyring(&channel).await).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_step_cannot_read_the_signing_key() {
    let Some(server) = start_with(SandboxMode::Supervisor, |_| {}).await else {
        return;
    };
    let channel = server.unix_channel().await;
    if !probe(&channel).await {
        return;
    }
    let ring = keyring(&channel).await;
    let keyid = &ring.active().unwrap().keyid;
    let keys_dir = server.dir.path().join("state/attest/keys");
    let key = keys_dir.join(format!("{keyid}.key"));
    let secret = std::fs::read(&key).expect("the signing key is on the host");
    assert!(!secret.is_empty());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600, "{}", key.display());
    assert_eq!(mode(&keys_dir), 0o700, "{}", keys_dir.display());

    // The step tries the key's host path, the same through /proc, and a
    // search of every file it can see for the key's file name.
    let k = key.display().to_string();
    let script = format!(
        "mkdir -p out; cat '{k}' > out/read 2> out/err; echo $? > out/rc; \
         cat '/proc/1/root{k}' >> out/read 2>> out/err; echo $? >> out/rc; \
         find / -xdev -name '{keyid}.key' > out/found 2>/dev/null; true"
    );
    let mut spec = sh(&script);
    spec.output_paths = vec![
        "out/read".into(),
        "out/err".into(),
        "out/rc".into(),
        "out/found".into(),
    ];
    let f = DigestFunction::Sha256;
    let (_, resp, _) = run(&channel, f, &spec, &[]).await;
    let result = resp.result.unwrap();
    let file = |name: &str| {
        let d = result
            .output_files
            .iter()
            .find(|o| o.path == name)
            .unwrap_or_else(|| panic!("{name} missing: {result:?}"));
        d.digest.clone().unwrap()
    };
    let read = read_blob(&channel, f, &file("out/read")).await;
    let err = String::from_utf8(read_blob(&channel, f, &file("out/err")).await).unwrap();
    let rc = String::from_utf8(read_blob(&channel, f, &file("out/rc")).await).unwrap();
    let found = read_blob(&channel, f, &file("out/found")).await;
    assert!(
        read.is_empty(),
        "the step read {} bytes of the key",
        read.len()
    );
    assert_eq!(rc.lines().collect::<Vec<_>>(), ["1", "1"], "{rc}\n{err}");
    assert!(err.contains("No such file"), "{err}");
    assert!(found.is_empty(), "{}", String::from_utf8_lossy(&found));
    server.stop().await;
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A config for a daemon that only opens its state (no actions run).
fn bare_config(state: &Path) -> Config {
    Config {
        state_dir: Some(state.to_owned()),
        ..Default::default()
    }
}

fn entries_file(state: &Path) -> PathBuf {
    state.join("attest/log/entries")
}

#[test]
fn the_daemon_refuses_to_start_on_a_tampered_log() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // First start: a key and a signed log; start again: still fine.
    drop(hermeticd::Daemon::open(bare_config(&state)).unwrap());
    drop(hermeticd::Daemon::open(bare_config(&state)).unwrap());
    // Flip one byte of the log's only entry (the key's creation).
    let path = entries_file(&state);
    let mut data = std::fs::read(&path).unwrap();
    let at = data
        .windows(7)
        .position(|w| w == b"created")
        .expect("the key event names its creation");
    data[at] = b'C';
    std::fs::write(&path, &data).unwrap();

    let err = hermeticd::Daemon::open(bare_config(&state)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("transparency log"), "{msg}");
    assert!(
        msg.contains(&state.join("attest").display().to_string()),
        "{msg}"
    );

    // And the real binary exits with that message instead of serving.
    let config = dir.path().join("hermeticd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\nlisten = [\"unix://{}\"]\n",
            state,
            dir.path().join("sock").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hermeticd"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("transparency log"), "{stderr}");
}
