//! Retention and garbage collection through a real hermeticd: an action
//! run by the fake helper (the helper's contract, no isolation) gets
//! provenance; blobs are uploaded and pinned; the daemon is stopped, every
//! blob and action-cache file is aged past the retention period on disk
//! (the daemon reads blob ages from access times when it opens the store),
//! and the daemon is started again. Then a garbage collection must evict
//! the old unreferenced blob and keep the pinned one, what the recent
//! provenance names (outputs, inputs, the bundle and SBOMs), and a blob an
//! action in flight holds; a principal without the admin role is refused;
//! each pass, pin and unpin is an admin entry of the transparency log,
//! which still verifies against its signed checkpoint.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    GetActionResultRequest, action_cache_client::ActionCacheClient,
    content_addressable_storage_client::ContentAddressableStorageClient,
    execution_client::ExecutionClient,
};
use common::TestServer;
use common::actions::{execute, put_action, put_tree, sh};
use hermetic_attest::{Keyring, LogEntry, verify};
use hermetic_proto::v1::{
    BlobDigest, GetKeyringRequest, GetProvenanceRequest, ListPinsRequest, PinKind, PinRequest,
    RunGcRequest, RunGcResponse, UnpinRequest,
};
use hermetic_proto::{AdminClient, ProvenanceClient};
use hermeticd::auth::LoopbackTcp;
use hermeticd::config::Config;
use hermeticd::digest::{BlobKey, DigestFunction, key_of};
use tonic::Code;
use tonic::transport::Channel;

const ORIGIN: &str = "gc.test.example/log";

fn config(dir: &Path) -> Config {
    let mut c = Config {
        state_dir: Some(dir.join("state")),
        ..Default::default()
    };
    c.cas.no_fsync = true;
    common::fake::configure(&mut c, dir);
    c.retention.period = Some("1h".into());
    c.retention.gc_interval = Some("0s".into());
    c.provenance.log_origin = Some(ORIGIN.into());
    // Loopback TCP clients are `anonymous`, who may build but not
    // administer; the Unix socket's caller (this process) is admin.
    c.auth.loopback_tcp = LoopbackTcp::Anonymous;
    c.auth.roles.submit = vec!["anonymous".into()];
    c
}

/// Where the store keeps a blob (looking does not touch it).
fn blob_path(dir: &Path, k: &BlobKey) -> PathBuf {
    let hex = k.hex();
    dir.join("state/cas")
        .join(k.function.name())
        .join(&hex[..2])
        .join(hex)
}

fn proto_key(
    f: DigestFunction,
    d: &bazel_remote_apis::build::bazel::remote::execution::v2::Digest,
) -> BlobKey {
    BlobKey::from_proto(f, d).unwrap()
}

/// Sets access and modification times of every file below `root` to `t`.
fn age(root: &Path, t: SystemTime) {
    for e in std::fs::read_dir(root).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            age(&p, t);
        } else {
            let f = std::fs::File::open(&p).unwrap();
            f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
                .unwrap();
        }
    }
}

async fn gc(channel: &Channel, dry_run: bool) -> RunGcResponse {
    AdminClient::new(channel.clone())
        .run_gc(RunGcRequest { dry_run })
        .await
        .unwrap()
        .into_inner()
}

fn log_entry(server: &TestServer, index: u64) -> LogEntry {
    let data = server
        .daemon
        .ctx
        .engine
        .provenance()
        .with(|a| a.log().entry(index))
        .unwrap();
    LogEntry::parse(&data).unwrap()
}

fn blob_digest(k: &BlobKey) -> Option<BlobDigest> {
    Some(BlobDigest {
        hash: k.hex(),
        size_bytes: k.size as i64,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_pins_recent_provenance_and_in_flight_blobs() {
    if !common::fake::python_available() {
        return;
    }
    let f = DigestFunction::Blake3;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let server = TestServer::start_in(dir, cfg.clone()).await;
    let admin = server.unix_channel().await;

    // An action with provenance.
    let mut cas = ContentAddressableStorageClient::new(admin.clone());
    let mut spec = sh("cat src/in.txt > out.txt");
    spec.output_paths = vec!["out.txt".into()];
    let input = b"input kept by provenance\n";
    let root = put_tree(&mut cas, f, &[("src/in.txt", input, false)]).await;
    let action = put_action(&mut cas, f, &spec, root).await;
    let (_, resp) = execute(&mut ExecutionClient::new(admin.clone()), f, action, false)
        .await
        .unwrap();
    assert_eq!(resp.status.clone().unwrap_or_default().code, 0, "{resp:?}");
    let result = resp.result.clone().unwrap();
    let output = proto_key(f, result.output_files[0].digest.as_ref().unwrap());
    let named = |name: &str| proto_key(f, resp.server_logs[name].digest.as_ref().unwrap());
    let (bundle, sbom) = (named("provenance"), named("sbom.cdx"));

    // Blobs nobody references, one of them pinned, one held in flight.
    let old = key_of(f, b"an old blob nothing references");
    let release = key_of(f, b"a released artifact");
    let busy = key_of(f, b"a blob an action in flight holds");
    common::upload(
        &mut cas,
        f,
        &[
            b"an old blob nothing references",
            b"a released artifact",
            b"a blob an action in flight holds",
        ],
    )
    .await;
    let pinned = AdminClient::new(admin.clone())
        .pin(PinRequest {
            digest: blob_digest(&release),
            digest_function: f.to_proto(),
            note: "release 1.0".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let pin = pinned.pin.unwrap();
    assert_eq!(pin.kind, PinKind::Blob as i32, "auto: no action, a blob");
    assert_eq!((pin.closure_blobs, pin.closure_bytes), (1, release.size));
    let me = format!("unix:uid={}", nix::unistd::geteuid());
    match log_entry(&server, pinned.log_index) {
        LogEntry::Admin {
            action, principal, ..
        } => assert!(
            action == "pin" && principal.starts_with(&me),
            "{action} {principal}"
        ),
        e => panic!("not an admin entry: {e:?}"),
    }

    // Two hours later, as far as the store can tell.
    let dir = server.stop().await;
    let long_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    age(&dir.path().join("state/cas"), long_ago);
    age(&dir.path().join("state/ac"), long_ago);
    let server = TestServer::start_in(dir, cfg).await;
    let admin = server.unix_channel().await;
    let d = server.dir.path().to_owned();
    let _in_flight = server.daemon.ctx.store.pin(vec![busy]);

    // A builder may not collect or pin.
    let builder = server.tcp_channel().await;
    let denied = AdminClient::new(builder.clone())
        .run_gc(RunGcRequest { dry_run: true })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("anonymous") && denied.message().contains("RunGc"),
        "{denied:?}"
    );
    let denied = AdminClient::new(builder)
        .pin(PinRequest {
            digest: blob_digest(&old),
            digest_function: f.to_proto(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    // A dry run says what would go and changes nothing.
    let dry = gc(&admin, true).await;
    assert!(dry.dry_run && dry.log_index.is_none(), "{dry:?}");
    assert!(
        dry.evicted_blobs >= 1 && dry.evicted_bytes >= old.size,
        "{dry:?}"
    );
    assert!(blob_path(&d, &old).exists(), "a dry run evicted");
    assert_eq!(dry.pins, 1);
    assert_eq!(dry.recent_attestations, 1, "{dry:?}");

    let report = gc(&admin, false).await;
    assert_eq!(
        (report.evicted_blobs, report.evicted_bytes),
        (dry.evicted_blobs, dry.evicted_bytes),
        "the dry run predicted the pass"
    );
    assert!(
        !blob_path(&d, &old).exists(),
        "the old unreferenced blob stayed"
    );
    for (what, k) in [
        ("pinned", release),
        ("in flight", busy),
        ("output", output),
        ("input", key_of(f, input)),
        ("input root", root),
        ("action", action),
        ("bundle", bundle),
        ("sbom", sbom),
    ] {
        assert!(blob_path(&d, &k).exists(), "the {what} blob was evicted");
    }
    // The recent provenance keeps its cached result too.
    ActionCacheClient::new(admin.clone())
        .get_action_result(GetActionResultRequest {
            action_digest: Some(action.to_proto()),
            digest_function: f.to_proto(),
            ..Default::default()
        })
        .await
        .unwrap();
    let index = report.log_index.expect("a pass that evicted is logged");
    match log_entry(&server, index) {
        LogEntry::Admin {
            action,
            principal,
            details,
            ..
        } => {
            assert_eq!(action, "gc");
            assert!(principal.starts_with(&me), "{principal}");
            assert_eq!(details["evicted_blobs"], report.evicted_blobs);
        }
        e => panic!("not an admin entry: {e:?}"),
    }

    // Unpinned, the release goes at the next pass.
    let unpinned = AdminClient::new(admin.clone())
        .unpin(UnpinRequest {
            digest: blob_digest(&release),
            digest_function: f.to_proto(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(log_entry(&server, unpinned.log_index), LogEntry::Admin { action, .. } if action == "unpin")
    );
    let err = AdminClient::new(admin.clone())
        .unpin(UnpinRequest {
            digest: blob_digest(&release),
            digest_function: f.to_proto(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let pins = AdminClient::new(admin.clone())
        .list_pins(ListPinsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pins;
    assert!(pins.is_empty(), "{pins:?}");
    gc(&admin, false).await;
    assert!(
        !blob_path(&d, &release).exists(),
        "the unpinned release stayed"
    );
    assert!(blob_path(&d, &output).exists());

    // The provenance still verifies against the latest checkpoint, which
    // covers the admin entries.
    let mut prov = ProvenanceClient::new(admin.clone());
    let got = prov
        .get_provenance(GetProvenanceRequest {
            action_digest: Some(BlobDigest {
                hash: action.hex(),
                size_bytes: action.size as i64,
            }),
            digest_function: f.to_proto(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ring = Keyring::from_json(
        &prov
            .get_keyring(GetKeyringRequest {})
            .await
            .unwrap()
            .into_inner()
            .keyring,
    )
    .unwrap();
    let b = hermetic_attest::Bundle::from_json(&got.bundle).unwrap();
    verify::verify_artifact(input, &b, &ring).unwrap();
    drop(_in_flight);
    let dir = server.stop().await;
    // And the whole log verifies against its signed checkpoint.
    hermetic_attest::Attestor::open(&dir.path().join("state/attest"), ORIGIN).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_name_what_they_keep_and_bad_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let server = TestServer::start_in(dir, cfg).await;
    let admin = server.unix_channel().await;
    let f = DigestFunction::Sha256;
    let mut cas = ContentAddressableStorageClient::new(admin.clone());
    let root = put_tree(
        &mut cas,
        f,
        &[("a/b.txt", b"deep", false), ("c", b"top", true)],
    )
    .await;
    let mut client = AdminClient::new(admin.clone());
    let r = client
        .pin(PinRequest {
            digest: blob_digest(&root),
            digest_function: f.to_proto(),
            kind: PinKind::Directory.into(),
            note: "a source release".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The root, the subdirectory and both files.
    assert_eq!(r.pin.unwrap().closure_blobs, 4);
    let missing = key_of(f, b"never uploaded");
    let e = client
        .pin(PinRequest {
            digest: blob_digest(&missing),
            digest_function: f.to_proto(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("nothing to pin"), "{e:?}");
    let e = client
        .pin(PinRequest {
            digest: Some(BlobDigest {
                hash: "xyz".into(),
                size_bytes: 1,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = client
        .pin(PinRequest {
            digest: blob_digest(&root),
            kind: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let pins = client
        .list_pins(ListPinsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pins;
    assert_eq!(pins.len(), 1);
    assert_eq!(pins[0].note, "a source release");
    assert_eq!(pins[0].digest_function, "sha256");
    // Pins survive a restart.
    let dir = server.stop().await;
    let cfg = config(dir.path());
    let server = TestServer::start_in(dir, cfg).await;
    let pins = AdminClient::new(server.unix_channel().await)
        .list_pins(ListPinsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pins;
    assert_eq!(pins.len(), 1);
    assert_eq!(pins[0].closure_blobs, 4);
    // A key rotation: its key event, then who asked for it.
    let rotated = ProvenanceClient::new(server.unix_channel().await)
        .rotate_key(hermetic_proto::v1::RotateKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    let size = server
        .daemon
        .ctx
        .engine
        .provenance()
        .with(|a| a.log().size());
    assert!(matches!(log_entry(&server, size - 2), LogEntry::Key { .. }));
    match log_entry(&server, size - 1) {
        LogEntry::Admin {
            action,
            principal,
            details,
            ..
        } => {
            assert_eq!(action, "key.rotate");
            assert!(principal.starts_with("unix:uid="), "{principal}");
            assert_eq!(details["keyid"], rotated.keyid.as_str());
        }
        e => panic!("not an admin entry: {e:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_limit_evicts_around_pins() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.cas.max_size_bytes = 100;
    let server = TestServer::start_in(dir, cfg).await;
    let admin = server.unix_channel().await;
    let d = server.dir.path().to_owned();
    let f = DigestFunction::Sha256;
    let mut cas = ContentAddressableStorageClient::new(admin.clone());
    let blob = |c: u8| vec![c; 40];
    let (a, b, c) = (
        key_of(f, &blob(b'a')),
        key_of(f, &blob(b'b')),
        key_of(f, &blob(b'c')),
    );
    common::upload(&mut cas, f, &[&blob(b'a')]).await;
    AdminClient::new(admin.clone())
        .pin(PinRequest {
            digest: blob_digest(&a),
            digest_function: f.to_proto(),
            kind: PinKind::Blob.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    common::upload(&mut cas, f, &[&blob(b'b')]).await;
    common::upload(&mut cas, f, &[&blob(b'c')]).await;
    // 120 bytes over a 100-byte limit: the least recently used blob is
    // the pinned one, so the next goes instead.
    assert!(blob_path(&d, &a).exists(), "the pinned blob was evicted");
    assert!(!blob_path(&d, &b).exists(), "nothing was evicted");
    assert!(blob_path(&d, &c).exists());
    let r = gc(&admin, false).await;
    assert_eq!(r.evicted_blobs, 0, "{r:?}");
    assert!(r.store_bytes_after <= 100, "{r:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_policy_collects_and_logs_as_the_daemon() {
    let f = DigestFunction::Sha256;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let server = TestServer::start_in(dir, cfg.clone()).await;
    let mut cas = ContentAddressableStorageClient::new(server.unix_channel().await);
    let old = key_of(f, b"left behind");
    common::upload(&mut cas, f, &[b"left behind"]).await;
    let dir = server.stop().await;
    age(
        &dir.path().join("state/cas"),
        SystemTime::now() - Duration::from_secs(2 * 3600),
    );
    let mut cfg = cfg;
    cfg.retention.gc_interval = Some("1s".into());
    let server = TestServer::start_in(dir, cfg).await;
    let path = blob_path(server.dir.path(), &old);
    // Waits for the pass (a generous bound, not a timing requirement):
    // its log entry comes last.
    let logged = || {
        let size = server
            .daemon
            .ctx
            .engine
            .provenance()
            .with(|a| a.log().size());
        (0..size).any(|i| {
            matches!(log_entry(&server, i), LogEntry::Admin { action, principal, .. }
                if action == "gc" && principal == hermeticd::gc::DAEMON_PRINCIPAL)
        })
    };
    for _ in 0..600 {
        if logged() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logged = logged();
    assert!(!path.exists(), "no periodic pass collected the old blob");
    assert!(logged, "the periodic pass is not in the log");
    server.stop().await;
}
