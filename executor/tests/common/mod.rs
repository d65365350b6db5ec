//! A real hermeticd on a temp Unix socket and on 127.0.0.1:0.
#![allow(dead_code)]

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
        Endpoint::try_from(format!("http://{}", self.tcp))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A channel over the Unix socket (authority `localhost`).
    pub async fn unix_channel(&self) -> Channel {
        let path = self.socket.clone();
        Endpoint::try_from("http://localhost")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
            }))
            .await
            .unwrap()
    }

    /// Stops the server gracefully and returns its directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        self.handle.take().unwrap().await.unwrap();
        self.dir
    }
}

/// Uploads blobs with BatchUpdateBlobs, asserting success; returns keys.
pub async fn upload(
    cas: &mut ContentAddressableStorageClient<Channel>,
    function: DigestFunction,
    blobs: &[&[u8]],
) -> Vec<BlobKey> {
    let keys: Vec<BlobKey> = blobs.iter().map(|b| key_of(function, b)).collect();
    let resp = cas
        .batch_update_blobs(BatchUpdateBlobsRequest {
            instance_name: String::new(),
            requests: blobs
                .iter()
                .zip(&keys)
                .map(|(b, k)| batch_update_blobs_request::Request {
                    digest: Some(k.to_proto()),
                    data: b.to_vec(),
                    compressor: 0,
                })
                .collect(),
            digest_function: function.to_proto(),
        })
        .await
        .unwrap()
        .into_inner();
    for r in resp.responses {
        assert_eq!(r.status.unwrap().code, 0);
    }
    keys
}

/// A digest proto.
pub fn digest(k: &BlobKey) -> Option<Digest> {
    Some(k.to_proto())
}
