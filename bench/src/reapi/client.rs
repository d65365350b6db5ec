//! A real `hermeticd` for the REAPI benchmark, and the gRPC calls it makes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bazel_remote_apis::build::bazel::remote::execution::v2::{
    Action, BatchUpdateBlobsRequest, Command as ReCommand, ExecuteRequest, ExecuteResponse,
    batch_update_blobs_request,
    content_addressable_storage_client::ContentAddressableStorageClient,
    execution_client::ExecutionClient,
};
use bazel_remote_apis::google::longrunning::operation;
use hermeticd::digest::{BlobKey, DigestFunction, key_of};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint, Uri};

/// SHA-256, as most clients use.
pub const F: DigestFunction = DigestFunction::Sha256;

/// A `hermeticd` process on a Unix socket, killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// Its socket.
    pub socket: PathBuf,
    /// Its state directory, removed when dropped (gigabytes of blobs).
    state: PathBuf,
}

/// What a benchmark's `hermeticd` differs in from the default one.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// Its name: state directory `NAME-state`, socket `NAME.sock`, log
    /// `NAME.log` under the work directory. Default `reapi`.
    pub name: Option<String>,
    /// Top-level TOML lines added to the configuration (`jobs = 2`, ...).
    pub extra: String,
    /// More images, alias → path (the busybox rootfs is always there).
    pub images: Vec<(String, PathBuf)>,
    /// The default image's alias. Default: `busybox`.
    pub default_image: Option<String>,
    /// `[cas] no_fsync = true` (also set by `HERMETIC_BENCH_NO_FSYNC`).
    pub no_fsync: bool,
}

impl Daemon {
    /// Starts `hermeticd` with a fresh state directory under `work`, the
    /// busybox `rootfs` as default image and `sandbox` as its helper (in
    /// supervisor mode, the default).
    pub fn start(
        hermeticd: &Path,
        sandbox: &Path,
        rootfs: &Path,
        profiles: &Path,
        work: &Path,
    ) -> Result<Self> {
        Self::start_with(
            hermeticd,
            sandbox,
            rootfs,
            profiles,
            work,
            &DaemonOptions::default(),
        )
    }

    /// [`Daemon::start`] with `options`.
    pub fn start_with(
        hermeticd: &Path,
        sandbox: &Path,
        rootfs: &Path,
        profiles: &Path,
        work: &Path,
        options: &DaemonOptions,
    ) -> Result<Self> {
        let name = options.name.as_deref().unwrap_or("reapi");
        let state = work.join(format!("{name}-state"));
        let _ = std::fs::remove_dir_all(&state);
        let socket = work.join(format!("{name}.sock"));
        let config = work.join(format!("{name}.toml"));
        let mut images = format!("busybox = {rootfs:?}\n");
        for (alias, path) in &options.images {
            images.push_str(&format!("{alias} = {path:?}\n"));
        }
        std::fs::write(
            &config,
            format!(
                "state_dir = {:?}\nlisten = [\"unix://{}\"]\nsandbox_helper = {:?}\n\
                 profiles_dir = {:?}\ndefault_image = {:?}\n{}\n\
                 [images]\n{}[cas]\nmax_size_bytes = {}\nno_fsync = {}\n\
                 [metrics]\nlisten = \"127.0.0.1:0\"\n",
                state,
                socket.display(),
                sandbox,
                profiles,
                options.default_image.as_deref().unwrap_or("busybox"),
                options.extra,
                images,
                8u64 << 30,
                // For comparison only; the recorded runs keep fsync.
                options.no_fsync || std::env::var_os("HERMETIC_BENCH_NO_FSYNC").is_some(),
            ),
        )?;
        let log = std::fs::File::create(work.join(format!("{name}.log")))?;
        let child = Command::new(hermeticd)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", hermeticd.display()))?;
        eprintln!(
            "hermetic-bench: hermeticd pid {} (state {})",
            child.id(),
            state.display()
        );
        Ok(Daemon {
            child,
            socket,
            state,
        })
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new connection (its own HTTP/2 connection), waiting for the socket.
    pub async fn connect(&self) -> Result<Channel> {
        connect_unix(&self.socket, "hermeticd").await
    }
}

/// A new gRPC connection to the server on the Unix socket `path` (authority
/// `localhost`), retried for 300 s while the server comes up (a daemon
/// importing a large image takes a while).
pub async fn connect_unix(path: &Path, what: &str) -> Result<Channel> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let path = path.to_owned();
        let attempt = Endpoint::try_from("http://localhost")?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await;
        match attempt {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => bail!("{what} did not come up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Uploads blobs with BatchUpdateBlobs, in batches under 3.5 MiB.
pub async fn upload(channel: &Channel, blobs: &[Vec<u8>]) -> Result<Vec<BlobKey>> {
    let mut cas = ContentAddressableStorageClient::new(channel.clone())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let keys: Vec<BlobKey> = blobs.iter().map(|b| key_of(F, b)).collect();
    let mut start = 0;
    while start < blobs.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < blobs.len() && (end == start || bytes + blobs[end].len() < 3_500_000) {
            bytes += blobs[end].len();
            end += 1;
        }
        let resp = cas
            .batch_update_blobs(BatchUpdateBlobsRequest {
                requests: (start..end)
                    .map(|i| batch_update_blobs_request::Request {
                        digest: Some(keys[i].to_proto()),
                        data: blobs[i].clone(),
                        compressor: 0,
                    })
                    .collect(),
                digest_function: F.to_proto(),
                ..Default::default()
            })
            .await?
            .into_inner();
        for r in resp.responses {
            let code = r.status.map_or(0, |s| s.code);
            if code != 0 {
                bail!("upload failed with code {code}");
            }
        }
        start = end;
    }
    Ok(keys)
}

/// Uploads a Command and an Action (with `salt`) and returns the action.
pub async fn put_action(
    channel: &Channel,
    command: &ReCommand,
    input_root: BlobKey,
    salt: &[u8],
) -> Result<BlobKey> {
    let cmd = upload(channel, &[command.encode_to_vec()]).await?[0];
    let action = Action {
        command_digest: Some(cmd.to_proto()),
        input_root_digest: Some(input_root.to_proto()),
        salt: salt.to_vec(),
        ..Default::default()
    };
    Ok(upload(channel, &[action.encode_to_vec()]).await?[0])
}

/// `argv` with a PATH, and these outputs.
pub fn command(argv: &[&str], outputs: &[&str]) -> ReCommand {
    ReCommand {
        arguments: argv.iter().map(|s| (*s).to_owned()).collect(),
        output_paths: outputs.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

/// Executes and follows the stream to the end; fails unless the action
/// ran (or was served) with status OK and exit code 0.
pub async fn execute(
    exec: &mut ExecutionClient<Channel>,
    action: BlobKey,
) -> Result<ExecuteResponse> {
    let mut stream = exec
        .execute(ExecuteRequest {
            action_digest: Some(action.to_proto()),
            digest_function: F.to_proto(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(op) = stream.next().await {
        last = Some(op?);
    }
    let op = last.context("empty Execute stream")?;
    let Some(operation::Result::Response(any)) = op.result else {
        bail!("operation {} ended without a response", op.name);
    };
    let resp = ExecuteResponse::decode(any.value.as_slice())?;
    let status = resp.status.clone().unwrap_or_default();
    let exit = resp.result.as_ref().map_or(-1, |r| r.exit_code);
    if status.code != 0 || exit != 0 {
        bail!(
            "action failed: status {} {:?}, exit code {exit}",
            status.code,
            status.message
        );
    }
    Ok(resp)
}

/// Microseconds between two protobuf timestamps.
pub fn span_us(
    start: Option<&bazel_remote_apis::google::protobuf::Timestamp>,
    end: Option<&bazel_remote_apis::google::protobuf::Timestamp>,
) -> Option<f64> {
    let (s, e) = (start?, end?);
    let us = |t: &bazel_remote_apis::google::protobuf::Timestamp| {
        t.seconds as f64 * 1e6 + f64::from(t.nanos) / 1e3
    };
    Some(us(e) - us(s))
}
