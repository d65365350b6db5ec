//! `hermetic admin gc|pin|unpin|pins ls` and the client's mTLS flags,
//! with the real `hermetic` binary against a real hermeticd (in this
//! process, through its library's `serve`; no sandbox is needed): over
//! its Unix socket, and over TCP with mutual TLS, certificates made here
//! with rcgen.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hermeticd::config::{Config, ListenAddr};
use hermeticd::digest::{BlobKey, DigestFunction};

/// A CA and certificates it signs, as PEM files in a directory.
struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hermetic client test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki {
            ca,
            dir: dir.to_owned(),
        }
    }

    /// (certificate file, key file) for `CN={cn}, O=hermetic tests`.
    fn issue(&self, cn: &str) -> (PathBuf, PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "hermetic tests");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (
            self.dir.join(format!("{cn}.pem")),
            self.dir.join(format!("{cn}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

/// A daemon on a temp Unix socket and 127.0.0.1:0, running in a thread
/// until the test process ends.
struct Daemon {
    dir: PathBuf,
    socket: PathBuf,
    tcp: SocketAddr,
    /// A blob put into its CAS before it started.
    blob: BlobKey,
}

fn start(tweak: impl FnOnce(&mut Config, &Path)) -> Daemon {
    let dir = tempfile::tempdir().unwrap().keep();
    let mut config = Config {
        state_dir: Some(dir.join("state")),
        ..Default::default()
    };
    config.cas.no_fsync = true;
    config.retention.gc_interval = Some("0s".into());
    tweak(&mut config, &dir);
    let daemon = hermeticd::Daemon::open(config).unwrap();
    let blob = daemon
        .ctx
        .store
        .put_new(DigestFunction::Blake3, b"a released artifact")
        .unwrap();
    let socket = dir.join("hermeticd.sock");
    let (tx, rx) = std::sync::mpsc::channel();
    let sock = socket.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let unix = hermeticd::Listener::bind(&ListenAddr::Unix(sock))
                .await
                .unwrap();
            let tcp = hermeticd::Listener::bind(&ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()))
                .await
                .unwrap();
            let hermeticd::Listener::Tcp(t) = &tcp else {
                unreachable!()
            };
            tx.send(t.local_addr().unwrap()).unwrap();
            hermeticd::serve(&daemon, vec![unix, tcp], std::future::pending())
                .await
                .unwrap();
        });
    });
    let tcp = rx.recv().unwrap();
    Daemon {
        dir,
        socket,
        tcp,
        blob,
    }
}

impl Daemon {
    fn hermetic(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_hermetic"))
            .env_remove("HERMETIC_REMOTE")
            .env("HERMETIC_CONFIG", self.dir.join("no-client-settings.toml"))
            .arg("--remote")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .output()
            .unwrap()
    }

    fn digest(&self) -> String {
        format!("blake3:{}/{}", self.blob.hex(), self.blob.size)
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

#[test]
fn admin_pins_and_gc_from_the_command_line() {
    let d = start(|_, dir| {
        std::fs::write(dir.join("no-client-settings.toml"), "").unwrap();
    });
    let digest = d.digest();
    let o = d.hermetic(&["admin", "pin", &digest, "--note", "release 1.0"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("pinned blake3:"),
        "{}",
        text(&o)
    );

    let listed = json(&d.hermetic(&["--json", "admin", "pins", "ls"]));
    let pins = listed["pins"].as_array().unwrap();
    assert_eq!(pins.len(), 1, "{listed}");
    assert_eq!(pins[0]["digest"], digest.as_str());
    assert_eq!(pins[0]["note"], "release 1.0");
    assert_eq!(pins[0]["kind"], "blob");
    assert_eq!(pins[0]["closure_blobs"], 1);
    // The daemon's directory was made by this process: its owner is us.
    let me = format!(
        "unix:uid={}",
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&d.dir).unwrap())
    );
    assert!(
        pins[0]["principal"].as_str().unwrap().starts_with(&me),
        "{listed}"
    );
    let table = d.hermetic(&["admin", "pins", "ls"]);
    let out = String::from_utf8_lossy(&table.stdout);
    assert!(
        out.starts_with("DIGEST") && out.contains("release 1.0"),
        "{}",
        text(&table)
    );

    let o = d.hermetic(&["admin", "gc", "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("would free"),
        "{}",
        text(&o)
    );
    let report = json(&d.hermetic(&["--json", "admin", "gc"]));
    assert_eq!(report["dry_run"], false, "{report}");
    assert_eq!(report["pins"], 1, "{report}");
    assert!(report["log_index"].is_u64(), "a pass is logged: {report}");

    let o = d.hermetic(&["admin", "unpin", &digest]);
    assert!(o.status.success(), "{}", text(&o));
    let listed = json(&d.hermetic(&["--json", "admin", "pins", "ls"]));
    assert_eq!(listed["pins"].as_array().unwrap().len(), 0, "{listed}");
    let o = d.hermetic(&["admin", "unpin", &digest]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no pin"),
        "{}",
        text(&o)
    );
    // A malformed digest is the caller's mistake, named.
    let o = d.hermetic(&["admin", "pin", "xyz"]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("\"xyz\""),
        "{}",
        text(&o)
    );
}

#[test]
fn mtls_flags_and_settings_reach_a_daemon_requiring_client_certificates() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(pki_dir.path());
    let (server_cert, server_key) = pki.issue("hermeticd");
    let admin = pki.issue("admin-client");
    let auditor = pki.issue("auditor");
    let ca = pki.ca_file();
    let d = start(|c, dir| {
        std::fs::write(dir.join("no-client-settings.toml"), "").unwrap();
        c.auth.tls = Some(hermeticd::auth::TlsConfig {
            cert: server_cert,
            key: server_key,
            client_ca: ca.clone(),
        });
        c.auth.roles.admin = vec!["cert:CN=admin-client, O=hermetic tests".into()];
        c.auth.roles.read = vec!["cert:CN=auditor, O=hermetic tests".into()];
    });
    let remote = format!("grpcs://{}", d.tcp);
    let p = |x: &Path| x.to_str().unwrap().to_owned();
    let with = |cert: Option<&(PathBuf, PathBuf)>, args: &[&str]| {
        let mut all = vec![
            "--remote".to_owned(),
            remote.clone(),
            "--tls-ca".into(),
            p(&ca),
        ];
        if let Some((c, k)) = cert {
            all.extend(["--tls-cert".into(), p(c), "--tls-key".into(), p(k)]);
        }
        all.extend(args.iter().map(|s| s.to_string()));
        Command::new(env!("CARGO_BIN_EXE_hermetic"))
            .env_remove("HERMETIC_REMOTE")
            .env("HERMETIC_CONFIG", d.dir.join("no-client-settings.toml"))
            .args(&all)
            .output()
            .unwrap()
    };

    // The admin's certificate: a pin through TLS, named by its subject.
    let digest = d.digest();
    let pinned = json(&with(
        Some(&admin),
        &["--json", "admin", "pin", &digest, "--note", "over mTLS"],
    ));
    assert_eq!(
        pinned["pin"]["principal"], "x509:CN=admin-client, O=hermetic tests",
        "{pinned}"
    );
    // An auditor connects but may not administer.
    let o = with(Some(&auditor), &["admin", "gc"]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("x509:CN=auditor, O=hermetic tests") && err.contains("RunGc"),
        "{}",
        text(&o)
    );
    // Without a client certificate the daemon does not talk at all.
    let o = with(None, &["admin", "pins", "ls"]);
    assert!(!o.status.success(), "{}", text(&o));
    // A certificate without its key is refused before connecting.
    let o = Command::new(env!("CARGO_BIN_EXE_hermetic"))
        .env("HERMETIC_CONFIG", d.dir.join("no-client-settings.toml"))
        .args([
            "--remote",
            &remote,
            "--tls-cert",
            &p(&admin.0),
            "admin",
            "gc",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));

    // The same from the settings file.
    let settings = d.dir.join("mtls-client.toml");
    std::fs::write(
        &settings,
        format!(
            "remote = {remote:?}\ntls_ca = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
            p(&ca),
            p(&admin.0),
            p(&admin.1)
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_hermetic"))
        .env_remove("HERMETIC_REMOTE")
        .env("HERMETIC_CONFIG", &settings)
        .args(["--json", "admin", "pins", "ls"])
        .output()
        .unwrap();
    let listed = json(&o);
    assert_eq!(listed["pins"][0]["note"], "over mTLS", "{listed}");
}
