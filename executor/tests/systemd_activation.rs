//! The real `hermeticd` binary started the way systemd starts it:
//! socket-activated by `systemd-socket-activate` (which binds the Unix
//! socket, waits for the first connection and execs the daemon with the
//! socket as fd 3 and `LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES` set), with
//! `NOTIFY_SOCKET` naming an abstract datagram socket the test reads.
//!
//! Checks: the first connection, made before the daemon exists, is served
//! over the passed socket (the daemon binds no Unix socket of its own);
//! `READY=1` and `STATUS=` arrive; the sandbox helper does not inherit
//! `NOTIFY_SOCKET` or `LISTEN_*`; SIGTERM sends `STOPPING=1` and the
//! daemon exits 0.

mod common;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    GetCapabilitiesRequest, capabilities_client::CapabilitiesClient,
    content_addressable_storage_client::ContentAddressableStorageClient,
    execution_client::ExecutionClient,
};
use common::actions::{execute, put_action, put_tree, sh};
use common::real::skip_or_fail;
use hermeticd::config::{Config, SandboxMode};
use hermeticd::digest::DigestFunction;

/// Kills the daemon if the test fails before stopping it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every datagram until one contains `key`; a generous receive timeout
/// bounds a hang, it is not a timing assertion.
fn wait_for(notify: &UnixDatagram, key: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = notify
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {key} from the daemon ({e}); got {seen:?}"));
        let msg = String::from_utf8(buf[..n].to_vec()).unwrap();
        let done = msg.lines().any(|l| l == key);
        seen.push(msg);
        if done {
            return seen;
        }
    }
}

/// A helper that records its environment, then is the fake helper.
fn recording_helper(dir: &Path) -> std::path::PathBuf {
    let script = dir.join("helper.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv > \"{}/helper-env.$$\"\nexec python3 {} \"$@\"\n",
            dir.display(),
            common::fake::FAKE
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activated_daemon_notifies_and_serves_the_passed_socket() {
    if Command::new("systemd-socket-activate")
        .arg("--version")
        .output()
        .is_err()
    {
        skip_or_fail("systemd-socket-activate is missing (apt-get install systemd)");
        return;
    }
    if !common::fake::python_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hermeticd.sock");
    let mut config = Config {
        state_dir: Some(dir.path().join("state")),
        // Only TCP is configured: the Unix socket can only come from
        // systemd-socket-activate.
        listen: vec!["tcp://127.0.0.1:0".into()],
        sandbox_mode: SandboxMode::Exec,
        ..Default::default()
    };
    config.cas.no_fsync = true;
    config.metrics.listen = Some("127.0.0.1:0".into());
    common::fake::configure(&mut config, dir.path());
    config.sandbox_helper = Some(recording_helper(dir.path()));
    let config_path = dir.path().join("hermeticd.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();

    let name = format!("hermetic-test-notify-{}", std::process::id());
    let notify =
        UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();

    let path_env = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let mut activator = Command::new("systemd-socket-activate");
    activator
        .arg("--listen")
        .arg(&socket)
        .arg("--fdname=hermeticd.sock")
        .arg(format!("--setenv=NOTIFY_SOCKET=@{name}"))
        .arg(format!("--setenv=PATH={path_env}"))
        .arg("--setenv=RUST_LOG=info")
        .arg(env!("CARGO_BIN_EXE_hermeticd"))
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null());
    let mut daemon = Daemon(activator.spawn().unwrap());
    while !socket.exists() {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            panic!("systemd-socket-activate exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The first connection starts the daemon and is served by it.
    let channel = common::unix_channel_at(&socket).await;
    let caps = CapabilitiesClient::new(channel.clone())
        .get_capabilities(GetCapabilitiesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(caps.execution_capabilities.is_some());
    let ready = wait_for(&notify, "READY=1");
    let last = ready.last().unwrap();
    assert!(
        last.lines()
            .any(|l| l.starts_with("STATUS=serving on") && l.contains("hermeticd.sock")),
        "{ready:?}"
    );

    // An action: the helper's environment carries none of the daemon's
    // systemd variables.
    let f = DigestFunction::Sha256;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut exec = ExecutionClient::new(channel.clone());
    let root = put_tree(&mut cas, f, &[]).await;
    let action = put_action(&mut cas, f, &sh("true"), root).await;
    let (_, resp) = execute(&mut exec, f, action, true).await.unwrap();
    assert_eq!(resp.status.unwrap().code, 0);
    let envs: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("helper-env.")
                .then(|| std::fs::read_to_string(e.path()).unwrap())
        })
        .collect();
    assert!(!envs.is_empty(), "the helper never ran");
    for env in &envs {
        assert!(env.contains("PATH="), "{env}");
        for var in hermeticd::systemd::STRIPPED_ENV {
            assert!(
                !env.lines().any(|l| l.starts_with(&format!("{var}="))),
                "the helper inherited {var}: {env}"
            );
        }
    }

    // SIGTERM: STOPPING=1, then a clean exit.
    drop((cas, exec, channel));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for(&notify, "STOPPING=1");
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "{status}");
}
