//! Authentication and roles against a real daemon.
//!
//! - Unix socket and loopback TCP: clients running as other uids (this
//!   test binary re-executed with `setuid`, which needs root; under
//!   CI=true it must run) are allowed exactly what their role grants, and
//!   refused the rest with PERMISSION_DENIED naming principal and method.
//! - mutual TLS: certificates made here with rcgen; a client certificate
//!   from the configured CA is accepted and its subject is the principal,
//!   one without a role is refused per method, and a client without a
//!   certificate or with one from another CA cannot connect at all.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionResult, BatchReadBlobsRequest, ExecuteRequest, FindMissingBlobsRequest,
    GetActionResultRequest, GetCapabilitiesRequest, UpdateActionResultRequest,
    action_cache_client::ActionCacheClient, capabilities_client::CapabilitiesClient,
    content_addressable_storage_client::ContentAddressableStorageClient,
    execution_client::ExecutionClient,
};
use common::TestServer;
use common::pki::{Pki, tls_channel};
use common::real::skip_or_fail;
use hermeticd::digest::{DigestFunction, key_of};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The calls each client makes, by name, with the code each answered.
async fn probe_calls(channel: Channel) -> BTreeMap<&'static str, (Code, String)> {
    let f = DigestFunction::Sha256;
    let blob = b"auth test blob".to_vec();
    let key = key_of(f, &blob);
    let mut out = BTreeMap::new();
    let mut record = |name, r: Result<(), tonic::Status>| {
        out.insert(
            name,
            match r {
                Ok(()) => (Code::Ok, String::new()),
                Err(s) => (s.code(), s.message().to_owned()),
            },
        );
    };
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut ac = ActionCacheClient::new(channel.clone());
    record(
        "caps",
        CapabilitiesClient::new(channel.clone())
            .get_capabilities(GetCapabilitiesRequest::default())
            .await
            .map(drop),
    );
    record(
        "find",
        cas.find_missing_blobs(FindMissingBlobsRequest {
            blob_digests: vec![key.to_proto()],
            ..Default::default()
        })
        .await
        .map(drop),
    );
    let upload = common::try_upload(&mut cas, f, &[&blob]).await;
    record("upload", upload);
    record(
        "read",
        cas.batch_read_blobs(BatchReadBlobsRequest {
            digests: vec![key.to_proto()],
            ..Default::default()
        })
        .await
        .map(drop),
    );
    let action = key_of(f, b"an action nobody ran");
    record(
        "get-ac",
        ac.get_action_result(GetActionResultRequest {
            action_digest: Some(action.to_proto()),
            ..Default::default()
        })
        .await
        .map(drop),
    );
    record(
        "update-ac",
        ac.update_action_result(UpdateActionResultRequest {
            action_digest: Some(action.to_proto()),
            action_result: Some(ActionResult::default()),
            ..Default::default()
        })
        .await
        .map(drop),
    );
    record(
        "execute",
        ExecutionClient::new(channel.clone())
            .execute(ExecuteRequest {
                action_digest: Some(action.to_proto()),
                ..Default::default()
            })
            .await
            .map(drop),
    );
    record(
        "health",
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .map(drop),
    );
    out
}

/// Checks one client's answers: `denied` are PERMISSION_DENIED (naming
/// the principal), every other call was let through.
fn check(
    who: &str,
    results: &BTreeMap<&'static str, (Code, String)>,
    principal: &str,
    denied: &[&str],
) {
    for (name, (code, message)) in results {
        if denied.contains(name) {
            assert_eq!(*code, Code::PermissionDenied, "{who}: {name}: {message}");
            assert!(
                message.contains(principal) && message.contains('/'),
                "{who}: {name}: the message must name principal and method: {message}"
            );
        } else {
            assert!(
                !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                "{who}: {name} was refused: {code:?} {message}"
            );
        }
    }
}

const CHILD_SOCKET: &str = "HERMETIC_AUTH_CHILD_SOCKET";
const CHILD_TCP: &str = "HERMETIC_AUTH_CHILD_TCP";

/// Not a test of its own: the body of the client that
/// `roles_are_enforced_per_uid_on_both_transports` runs as other uids.
/// Prints one line per call and transport.
#[tokio::test]
#[ignore = "run by roles_are_enforced_per_uid_on_both_transports as another uid"]
async fn as_another_uid() {
    let socket = std::env::var(CHILD_SOCKET).expect("run by the parent test");
    let tcp = std::env::var(CHILD_TCP).expect("run by the parent test");
    let unix = common::unix_channel_at(std::path::Path::new(&socket)).await;
    let tcp = Endpoint::try_from(format!("http://{tcp}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    for (transport, channel) in [("unix", unix), ("tcp", tcp)] {
        for (name, (code, message)) in probe_calls(channel).await {
            println!(
                "RESULT\t{transport}\t{name}\t{}\t{message}",
                i32::from(code)
            );
        }
    }
}

/// Runs [`as_another_uid`] as `uid` and parses its lines by transport.
fn run_as(
    exe: &std::path::Path,
    uid: u32,
    server: &TestServer,
) -> BTreeMap<String, BTreeMap<&'static str, (Code, String)>> {
    run_as_in_groups(exe, uid, &[], server)
}

/// [`run_as`], with supplementary `groups` (set with `setgroups` in the
/// forked child before it changes its gid and uid).
fn run_as_in_groups(
    exe: &std::path::Path,
    uid: u32,
    groups: &[u32],
    server: &TestServer,
) -> BTreeMap<String, BTreeMap<&'static str, (Code, String)>> {
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "--ignored",
        "--exact",
        "as_another_uid",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_SOCKET, &server.socket)
    .env(CHILD_TCP, server.tcp.to_string());
    if groups.is_empty() {
        cmd.uid(uid).gid(uid);
    } else {
        use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
        let groups: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
        // SAFETY: the closure runs in the forked child before exec; it
        // only makes the setgroups, setgid and setuid system calls on data
        // built before the fork, and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                setgroups(&groups)?;
                setgid(Gid::from_raw(uid))?;
                setuid(Uid::from_raw(uid))?;
                Ok(())
            });
        }
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client as uid {uid}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = [
        "caps",
        "find",
        "upload",
        "read",
        "get-ac",
        "update-ac",
        "execute",
        "health",
    ];
    let mut by_transport: BTreeMap<String, BTreeMap<&'static str, (Code, String)>> =
        BTreeMap::new();
    for line in stdout.lines().filter_map(|l| l.strip_prefix("RESULT\t")) {
        let f: Vec<&str> = line.splitn(4, '\t').collect();
        let name = names.iter().find(|n| **n == f[1]).unwrap();
        by_transport.entry(f[0].to_owned()).or_default().insert(
            name,
            (Code::from(f[2].parse::<i32>().unwrap()), f[3].to_owned()),
        );
    }
    assert_eq!(by_transport.len(), 2, "{stdout}");
    by_transport
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced_per_uid_on_both_transports() {
    if !nix::unistd::geteuid().is_root() {
        skip_or_fail("running clients as other uids needs root");
        return;
    }
    let server = TestServer::start(|c, _| {
        c.action_cache.allow_client_updates = true;
        c.auth.roles.submit = vec!["uid:64001".into()];
        c.auth.roles.read = vec!["uid:64002".into()];
        c.auth.roles.cache_write = vec!["uid:64003".into(), "uid:64001".into()];
    })
    .await;
    // Other uids reach the socket and run a copy of this binary.
    std::fs::set_permissions(server.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&server.socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let exe = server.dir.path().join("auth-client");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();

    for (uid, denied) in [
        // submit (also listed as cache-write: separation of duties wins).
        (64001, &["update-ac"][..]),
        // read
        (64002, &["upload", "update-ac", "execute"][..]),
        // cache-write
        (64003, &["read", "execute"][..]),
        // no role at all: only health checks.
        (
            64004,
            &[
                "caps",
                "find",
                "upload",
                "read",
                "get-ac",
                "update-ac",
                "execute",
            ][..],
        ),
    ] {
        for (transport, results) in run_as(&exe, uid, &server) {
            let principal = format!("unix:uid={uid}");
            check(
                &format!("uid {uid} over {transport}"),
                &results,
                &principal,
                denied,
            );
        }
    }
    // The daemon's own user (root here) holds every role by default.
    let mine = probe_calls(server.unix_channel().await).await;
    check("root", &mine, "unix:uid=0", &[]);
    assert_eq!(mine["update-ac"].0, Code::Ok);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_entries_match_supplementary_groups_of_the_peer() {
    if !nix::unistd::geteuid().is_root() {
        skip_or_fail("running clients as other uids and groups needs root");
        return;
    }
    let server = TestServer::start(|c, _| {
        c.auth.roles.submit = vec!["gid:64100".into()];
    })
    .await;
    std::fs::set_permissions(server.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&server.socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let exe = server.dir.path().join("auth-client");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let everything = [
        "caps",
        "find",
        "upload",
        "read",
        "get-ac",
        "update-ac",
        "execute",
    ];
    // uid 64005's primary group is 64005; 64100 is only supplementary.
    let results = run_as_in_groups(&exe, 64005, &[64005, 64100], &server);
    // On the Unix socket the kernel reports the groups it connected with
    // (SO_PEERGROUPS): a submitter.
    check(
        "uid 64005 in group 64100 over unix",
        &results["unix"],
        "unix:uid=64005",
        &["update-ac"],
    );
    // On loopback TCP only the group database speaks, which does not list
    // uid 64005 (no such user): no role.
    check(
        "uid 64005 in group 64100 over tcp",
        &results["tcp"],
        "unix:uid=64005",
        &everything,
    );
    // Without the supplementary group, nothing.
    let results = run_as_in_groups(&exe, 64005, &[64005], &server);
    check(
        "uid 64005 without group 64100 over unix",
        &results["unix"],
        "unix:uid=64005",
        &everything,
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_subjects_are_principals() {
    let pki = Pki::new("hermetic test CA");
    let ci = pki.issue("ci-runner");
    let stranger = pki.issue("stranger");
    let rogue = Pki::new("another CA").issue("ci-runner");
    let server = TestServer::start(|c, dir| {
        pki.configure(c, dir);
        c.auth.roles.submit = vec!["cert:CN=ci-runner, O=hermetic tests".into()];
    })
    .await;
    let ca = pki.ca.pem();

    let results = probe_calls(tls_channel(server.tcp, &ca, Some(&ci)).await.unwrap()).await;
    check(
        "ci-runner",
        &results,
        "x509:CN=ci-runner, O=hermetic tests",
        &["update-ac"],
    );
    let results = probe_calls(tls_channel(server.tcp, &ca, Some(&stranger)).await.unwrap()).await;
    check(
        "stranger",
        &results,
        "x509:CN=stranger, O=hermetic tests",
        &[
            "caps",
            "find",
            "upload",
            "read",
            "get-ac",
            "update-ac",
            "execute",
        ],
    );

    // No certificate, one from another CA, or no TLS: no call succeeds.
    for (who, identity) in [("no certificate", None), ("another CA", Some(&rogue))] {
        let refused = match tls_channel(server.tcp, &ca, identity).await {
            Err(_) => true,
            Ok(ch) => CapabilitiesClient::new(ch)
                .get_capabilities(GetCapabilitiesRequest::default())
                .await
                .is_err(),
        };
        assert!(refused, "{who} was accepted");
    }
    let plain = server.tcp_channel_result().await;
    if let Ok(ch) = plain {
        let r = CapabilitiesClient::new(ch)
            .get_capabilities(GetCapabilitiesRequest::default())
            .await;
        assert!(r.is_err(), "plain HTTP/2 was served on the TLS port");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_are_visible_to_their_owners_and_admins() {
    use bazel_remote_apis::build::bazel::remote::execution::v2::WaitExecutionRequest;
    use bazel_remote_apis::google::longrunning::{
        CancelOperationRequest, GetOperationRequest, ListOperationsRequest,
        operations_client::OperationsClient,
    };
    use common::actions::{execute, put_action, put_tree, sh};

    if !common::fake::python_available() {
        return;
    }
    let pki = Pki::new("hermetic test CA");
    let (alice, bob) = (pki.issue("alice"), pki.issue("bob"));
    let server = TestServer::start(|c, dir| {
        common::fake::configure(c, dir);
        pki.configure(c, dir);
        c.auth.roles.submit = vec![
            "cert:CN=alice, O=hermetic tests".into(),
            "cert:CN=bob, O=hermetic tests".into(),
        ];
    })
    .await;
    let ca = pki.ca.pem();
    let a = tls_channel(server.tcp, &ca, Some(&alice)).await.unwrap();
    let b = tls_channel(server.tcp, &ca, Some(&bob)).await.unwrap();
    let f = DigestFunction::Sha256;
    let mut cas = ContentAddressableStorageClient::new(a.clone());
    let root = put_tree(&mut cas, f, &[]).await;
    let action = put_action(&mut cas, f, &sh("true"), root).await;
    let (ops, resp) = execute(&mut ExecutionClient::new(a.clone()), f, action, true)
        .await
        .unwrap();
    assert_eq!(resp.status.unwrap().code, 0);
    let name = ops.last().unwrap().name.clone();

    let get = |ch: Channel| {
        let name = name.clone();
        async move {
            OperationsClient::new(ch)
                .get_operation(GetOperationRequest { name })
                .await
                .map(|r| r.into_inner().name)
        }
    };
    assert_eq!(get(a.clone()).await.unwrap(), name);
    // The admin (the daemon's own user, on the Unix socket) sees it too.
    assert_eq!(get(server.unix_channel().await).await.unwrap(), name);
    // bob cannot tell it exists.
    let err = get(b.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = OperationsClient::new(b.clone())
        .cancel_operation(CancelOperationRequest { name: name.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = ExecutionClient::new(b.clone())
        .wait_execution(WaitExecutionRequest { name: name.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let listed = |ch: Channel| async move {
        OperationsClient::new(ch)
            .list_operations(ListOperationsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .operations
            .into_iter()
            .map(|o| o.name)
            .collect::<Vec<_>>()
    };
    assert!(listed(a).await.contains(&name));
    assert!(!listed(b).await.contains(&name));
    server.stop().await;
}
