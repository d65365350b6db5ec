//! A real hermeticd on a temp Unix socket and on 127.0.0.1:0.
#![allow(dead_code)]

pub mod pki;

use std::path::{Path, PathBuf};

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    BatchUpdateBlobsRequest, Digest, batch_update_blobs_request,
    content_addressable_storage_client::ContentAddressableStorageClient,
};
use hermeticd::config::{Config, ListenAddr};
use hermeticd::digest::{BlobKey, DigestFunction, key_of};
use hermeticd::{Daemon, Listener};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// A running server.
pub struct TestServer {
    /// Temp directory holding the state and the socket.
    pub dir: tempfile::TempDir,
    /// The Unix socket.
    pub socket: PathBuf,
    /// The TCP address.
    pub tcp: std::net::SocketAddr,
    /// The daemon.
    pub daemon: Daemon,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server; `tweak` adjusts the config (state_dir is preset).
    pub async fn start(tweak: impl FnOnce(&mut Config, &Path)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            state_dir: Some(dir.path().join("state")),
            ..Default::default()
        };
        config.cas.no_fsync = true;
        tweak(&mut config, dir.path());
        Self::start_in(dir, config).await
    }

    /// Starts a server over an existing directory and config.
    pub async fn start_in(dir: tempfile::TempDir, config: Config) -> TestServer {
        config.validate().unwrap();
        let socket = dir.path().join("hermeticd.sock");
        let daemon = Daemon::open(config).unwrap();
        let unix = Listener::bind(&ListenAddr::Unix(socket.clone()))
            .await
            .unwrap();
        let tcp = Listener::bind(&ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
        let Listener::Tcp(ref t) = tcp else {
            unreachable!()
        };
        let tcp_addr = t.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let d2 = daemon.clone();
        let handle = tokio::spawn(async move {
            hermeticd::serve(&d2, vec![unix, tcp], async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            dir,
            socket,
            tcp: tcp_addr,
            daemon,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// A channel over TCP.
    pub async fn tcp_channel(&self) -> Channel {
        self.tcp_channel_result().await.unwrap()
    }

    /// A channel over TCP (plain HTTP/2), or why it failed.
    pub async fn tcp_channel_result(&self) -> Result<Channel, tonic::transport::Error> {
        Endpoint::try_from(format!("http://{}", self.tcp))?
            .connect()
            .await
    }

    /// A channel over the Unix socket (authority `localhost`).
    pub async fn unix_channel(&self) -> Channel {
        unix_channel_at(&self.socket).await
    }

    /// Stops the server gracefully and returns its directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        self.handle.take().unwrap().await.unwrap();
        self.dir
    }
}

/// A channel over the Unix socket at `path` (authority `localhost`).
pub async fn unix_channel_at(path: &Path) -> Channel {
    let path = path.to_owned();
    Endpoint::try_from("http://localhost")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .unwrap()
}

/// Uploads blobs with BatchUpdateBlobs, asserting success; returns keys.
pub async fn upload(
    cas: &mut ContentAddressableStorageClient<Channel>,
    function: DigestFunction,
    blobs: &[&[u8]],
) -> Vec<BlobKey> {
    try_upload(cas, function, blobs).await.unwrap();
    blobs.iter().map(|b| key_of(function, b)).collect()
}

/// Uploads blobs with BatchUpdateBlobs; the call's error, or the first
/// blob's.
pub async fn try_upload(
    cas: &mut ContentAddressableStorageClient<Channel>,
    function: DigestFunction,
    blobs: &[&[u8]],
) -> Result<(), tonic::Status> {
    let resp = cas
        .batch_update_blobs(BatchUpdateBlobsRequest {
            instance_name: String::new(),
            requests: blobs
                .iter()
                .map(|b| batch_update_blobs_request::Request {
                    digest: Some(key_of(function, b).to_proto()),
                    data: b.to_vec(),
                    compressor: 0,
                })
                .collect(),
            digest_function: function.to_proto(),
        })
        .await?
        .into_inner();
    for r in resp.responses {
        let status = r.status.unwrap_or_default();
        if status.code != 0 {
            return Err(tonic::Status::new(status.code.into(), status.message));
        }
    }
    Ok(())
}

/// A digest proto.
pub fn digest(k: &BlobKey) -> Option<Digest> {
    Some(k.to_proto())
}

pub mod real {
    //! A daemon driving the real `hermetic-sandbox` helper on a busybox
    //! rootfs. On a machine without the helper binary, a static busybox, or
    //! a kernel that lets the sandbox run, tests print a loud SKIP; with
    //! CI=true they fail instead.

    use std::path::{Path, PathBuf};

    use bazel_remote_apis::build::bazel::remote::execution::v2::{
        content_addressable_storage_client::ContentAddressableStorageClient,
        execution_client::ExecutionClient,
    };
    use hermeticd::config::SandboxMode;
    use hermeticd::digest::DigestFunction;
    use tonic::Code;
    use tonic::transport::Channel;

    use super::TestServer;
    use super::actions::{execute, put_action, put_tree, sh};

    pub fn skip_or_fail(why: &str) {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("required in CI (CI=true): {why}");
        }
        eprintln!("\n==== SKIP: {why} ====\n");
    }

    /// The helper binary: $HERMETIC_SANDBOX_HELPER, else `hermetic-sandbox`
    /// in the target directory this test was built into.
    pub fn helper() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("HERMETIC_SANDBOX_HELPER") {
            return Some(p.into());
        }
        let exe = std::env::current_exe().ok()?;
        let p = exe.parent()?.parent()?.join("hermetic-sandbox");
        p.is_file().then_some(p)
    }

    /// A busybox rootfs built by `scripts/busybox-rootfs.sh`.
    pub fn busybox_rootfs(dir: &Path) -> Option<PathBuf> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/busybox-rootfs.sh");
        let dest = dir.join("busybox");
        let out = std::process::Command::new("sh")
            .arg(&script)
            .arg(&dest)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        Some(dest)
    }

    pub async fn start(mode: SandboxMode) -> Option<TestServer> {
        start_with(mode, |_| {}).await
    }

    /// [`start`], with `tweak` applied to the configuration last.
    pub async fn start_with(
        mode: SandboxMode,
        tweak: impl FnOnce(&mut hermeticd::config::Config),
    ) -> Option<TestServer> {
        let Some(helper) = helper() else {
            skip_or_fail(
                "the hermetic-sandbox binary is not built (cargo build --workspace --bins)",
            );
            return None;
        };
        let images = tempfile::tempdir().unwrap();
        let Some(rootfs) = busybox_rootfs(images.path()) else {
            skip_or_fail("no static busybox for the test rootfs (apt-get install busybox-static)");
            return None;
        };
        let server = TestServer::start(move |c, dir| {
            let moved = dir.join("busybox");
            std::fs::rename(&rootfs, &moved).unwrap();
            c.images.insert("busybox".into(), moved);
            c.default_image = Some("busybox".into());
            c.sandbox_helper = Some(helper);
            c.sandbox_mode = mode;
            c.profiles_dir =
                Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox-profiles"));
            tweak(c);
        })
        .await;
        drop(images);
        Some(server)
    }

    /// Can the sandbox run at all here? Runs `true`; SKIP (or fail in CI)
    /// when the sandbox cannot be set up.
    pub async fn probe(channel: &Channel) -> bool {
        let mut cas = ContentAddressableStorageClient::new(channel.clone());
        let mut exec = ExecutionClient::new(channel.clone());
        let f = DigestFunction::Sha256;
        let empty = put_tree(&mut cas, f, &[]).await;
        let probe = put_action(&mut cas, f, &sh("true"), empty).await;
        let (_, resp) = execute(&mut exec, f, probe, false).await.unwrap();
        let status = resp.status.clone().unwrap();
        if status.code == Code::Internal as i32 && status.message.contains("sandbox") {
            skip_or_fail(&format!("the sandbox cannot run here: {}", status.message));
            return false;
        }
        assert_eq!(status.code, 0, "{resp:?}");
        true
    }
}

pub mod fake {
    //! The fake helper (`tests/support/fake-sandbox.py`): the helper's
    //! contract (spec/status files, and the `--supervisor` JSON lines)
    //! without any isolation, for engine tests.

    use std::path::Path;

    use hermeticd::config::Config;

    /// The fake helper script.
    pub const FAKE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/fake-sandbox.py");

    /// A test profile, an empty image made the default, the fake helper.
    pub fn configure(c: &mut Config, dir: &Path) {
        let profiles = dir.join("profiles");
        std::fs::create_dir_all(&profiles).unwrap();
        std::fs::write(
            profiles.join("strict.toml"),
            "name = \"strict\"\ndescription = \"test profile\"\n",
        )
        .unwrap();
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        c.profiles_dir = Some(profiles);
        c.images.insert("busybox".into(), rootfs);
        c.default_image = Some("busybox".into());
        c.sandbox_helper = Some(FAKE.into());
    }

    /// Whether python3 runs (required under CI=true).
    pub fn python_available() -> bool {
        let ok = std::process::Command::new("python3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "python3 is required for the engine tests in CI"
            );
            eprintln!("SKIP: python3 is not available; the fake sandbox helper cannot run");
        }
        ok
    }
}

pub mod actions {
    //! Building and running actions.

    use std::collections::BTreeMap;

    use bazel_remote_apis::build::bazel::remote::execution::v2::{
        Action, Command, Directory, DirectoryNode, ExecuteRequest, ExecuteResponse, FileNode,
        Platform, command::EnvironmentVariable,
        content_addressable_storage_client::ContentAddressableStorageClient,
        execution_client::ExecutionClient, platform::Property,
    };
    use bazel_remote_apis::google::longrunning::{Operation, operation};
    use hermeticd::digest::{BlobKey, DigestFunction};
    use prost::Message;
    use tokio_stream::StreamExt;
    use tonic::transport::Channel;

    /// A blob's bytes through BatchReadBlobs; panics unless it was found.
    pub async fn read_blob(
        channel: &Channel,
        f: DigestFunction,
        d: &bazel_remote_apis::build::bazel::remote::execution::v2::Digest,
    ) -> Vec<u8> {
        let mut r = ContentAddressableStorageClient::new(channel.clone())
            .batch_read_blobs(
                bazel_remote_apis::build::bazel::remote::execution::v2::BatchReadBlobsRequest {
                    digests: vec![d.clone()],
                    digest_function: f.to_proto(),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .into_inner()
            .responses;
        assert_eq!(r[0].status.as_ref().map_or(0, |s| s.code), 0, "{r:?}");
        std::mem::take(&mut r[0].data)
    }

    use super::upload;

    /// A command and how it is run.
    #[derive(Debug, Default, Clone)]
    pub struct ActionSpec {
        /// argv.
        pub args: Vec<String>,
        /// Environment.
        pub env: Vec<(String, String)>,
        /// v2.1 outputs.
        pub output_paths: Vec<String>,
        /// v2.0 output files.
        pub output_files: Vec<String>,
        /// v2.0 output directories.
        pub output_dirs: Vec<String>,
        /// Working directory.
        pub workdir: String,
        /// Platform properties (on the Action).
        pub platform: Vec<(String, String)>,
        /// Timeout in seconds (0: none).
        pub timeout_secs: i64,
        /// Do not cache.
        pub do_not_cache: bool,
        /// Salt.
        pub salt: Vec<u8>,
    }

    /// `sh -c SCRIPT`.
    pub fn sh(script: &str) -> ActionSpec {
        ActionSpec {
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![("PATH".into(), "/bin:/usr/bin".into())],
            ..Default::default()
        }
    }

    enum Node {
        File(Vec<u8>, bool),
        Dir(BTreeMap<String, Node>),
    }

    fn insert(root: &mut BTreeMap<String, Node>, path: &str, data: &[u8], exec: bool) {
        let mut segs: Vec<&str> = path.split('/').collect();
        let last = segs.pop().unwrap();
        let mut dir = root;
        for s in segs {
            let Node::Dir(d) = dir
                .entry(s.to_owned())
                .or_insert_with(|| Node::Dir(BTreeMap::new()))
            else {
                panic!("{s} is a file")
            };
            dir = d;
        }
        dir.insert(last.to_owned(), Node::File(data.to_vec(), exec));
    }

    fn build(
        f: DigestFunction,
        map: &BTreeMap<String, Node>,
        blobs: &mut Vec<Vec<u8>>,
    ) -> (Directory, BlobKey) {
        let mut d = Directory::default();
        for (name, node) in map {
            match node {
                Node::File(data, exec) => {
                    blobs.push(data.clone());
                    d.files.push(FileNode {
                        name: name.clone(),
                        digest: Some(hermeticd::digest::key_of(f, data).to_proto()),
                        is_executable: *exec,
                        node_properties: None,
                    });
                }
                Node::Dir(sub) => {
                    let (_, k) = build(f, sub, blobs);
                    d.directories.push(DirectoryNode {
                        name: name.clone(),
                        digest: Some(k.to_proto()),
                    });
                }
            }
        }
        let data = d.encode_to_vec();
        blobs.push(data.clone());
        let k = hermeticd::digest::key_of(f, &data);
        (d, k)
    }

    /// Uploads a tree given as `(path, contents, executable)` and returns
    /// its root digest. An empty list gives the empty directory.
    pub async fn put_tree(
        cas: &mut ContentAddressableStorageClient<Channel>,
        f: DigestFunction,
        files: &[(&str, &[u8], bool)],
    ) -> BlobKey {
        let mut root = BTreeMap::new();
        for (p, data, exec) in files {
            insert(&mut root, p, data, *exec);
        }
        let mut blobs = Vec::new();
        let (_, key) = build(f, &root, &mut blobs);
        let refs: Vec<&[u8]> = blobs.iter().map(|b| b.as_slice()).collect();
        upload(cas, f, &refs).await;
        key
    }

    /// Uploads the Command and Action; returns the action's key.
    #[allow(deprecated)]
    pub async fn put_action(
        cas: &mut ContentAddressableStorageClient<Channel>,
        f: DigestFunction,
        spec: &ActionSpec,
        input_root: BlobKey,
    ) -> BlobKey {
        let command = Command {
            arguments: spec.args.clone(),
            environment_variables: spec
                .env
                .iter()
                .map(|(n, v)| EnvironmentVariable {
                    name: n.clone(),
                    value: v.clone(),
                })
                .collect(),
            output_paths: spec.output_paths.clone(),
            output_files: spec.output_files.clone(),
            output_directories: spec.output_dirs.clone(),
            working_directory: spec.workdir.clone(),
            ..Default::default()
        };
        let cmd_data = command.encode_to_vec();
        let cmd_key = upload(cas, f, &[&cmd_data]).await[0];
        let action = Action {
            command_digest: Some(cmd_key.to_proto()),
            input_root_digest: Some(input_root.to_proto()),
            timeout: (spec.timeout_secs > 0).then_some(
                bazel_remote_apis::google::protobuf::Duration {
                    seconds: spec.timeout_secs,
                    nanos: 0,
                },
            ),
            do_not_cache: spec.do_not_cache,
            salt: spec.salt.clone(),
            platform: (!spec.platform.is_empty()).then(|| Platform {
                properties: spec
                    .platform
                    .iter()
                    .map(|(n, v)| Property {
                        name: n.clone(),
                        value: v.clone(),
                    })
                    .collect(),
            }),
        };
        let data = action.encode_to_vec();
        upload(cas, f, &[&data]).await[0]
    }

    /// The ExecuteResponse of a finished operation.
    pub fn response_of(op: &Operation) -> ExecuteResponse {
        match op.result.as_ref().expect("operation is done") {
            operation::Result::Response(any) => {
                ExecuteResponse::decode(any.value.as_slice()).unwrap()
            }
            operation::Result::Error(e) => panic!("operation error set: {e:?}"),
        }
    }

    /// The stage of an operation.
    pub fn stage_of(op: &Operation) -> i32 {
        use bazel_remote_apis::build::bazel::remote::execution::v2::ExecuteOperationMetadata;
        ExecuteOperationMetadata::decode(op.metadata.as_ref().unwrap().value.as_slice())
            .unwrap()
            .stage
    }

    /// Executes (stdout and stderr inlined) and follows the stream to the
    /// end.
    pub async fn execute(
        exec: &mut ExecutionClient<Channel>,
        f: DigestFunction,
        action: BlobKey,
        skip_cache_lookup: bool,
    ) -> Result<(Vec<Operation>, ExecuteResponse), tonic::Status> {
        let request = ExecuteRequest {
            action_digest: Some(action.to_proto()),
            skip_cache_lookup,
            digest_function: f.to_proto(),
            inline_stdout: true,
            inline_stderr: true,
            ..Default::default()
        };
        follow(exec, request).await
    }

    /// Sends `request` and follows the stream to the end.
    pub async fn follow(
        exec: &mut ExecutionClient<Channel>,
        request: ExecuteRequest,
    ) -> Result<(Vec<Operation>, ExecuteResponse), tonic::Status> {
        let mut stream = exec.execute(request).await?.into_inner();
        let mut ops = Vec::new();
        while let Some(op) = stream.next().await {
            ops.push(op?);
        }
        let last = ops.last().expect("at least one operation");
        assert!(last.done, "the stream ended before the operation was done");
        let resp = response_of(last);
        Ok((ops, resp))
    }
}
