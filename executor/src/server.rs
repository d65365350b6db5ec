//! Start-up and serving: [`Daemon::open`] builds everything from a
//! [`Config`]; [`serve`] runs the gRPC services on already-bound listeners
//! until a shutdown future completes, so tests bind a temp socket or
//! `127.0.0.1:0` and stop cleanly.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    action_cache_server::ActionCacheServer, capabilities_server::CapabilitiesServer,
    content_addressable_storage_server::ContentAddressableStorageServer,
    execution_server::ExecutionServer,
};
use bazel_remote_apis::google::bytestream::byte_stream_server::ByteStreamServer;
use bazel_remote_apis::google::longrunning::operations_server::OperationsServer;
use hermetic_sandbox::profile::Profile;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::action_cache::ActionCache;
use crate::auth::layer::AuthLayer;
use crate::auth::peer;
use crate::cas::Store;
use crate::config::{Config, ListenAddr};
use crate::error::{Error, Result};
use crate::exec::action::Limits;
use crate::exec::engine::{Engine, EngineSettings};
use crate::exec::helper::Sandbox;
use crate::exec::platform::Choices;
use crate::exec::runner::RunEnv;
use crate::service::Context;
use crate::service::ac_service::AcService;
use crate::service::bytestream_service::ByteStreamService;
use crate::service::capabilities_service::CapabilitiesService;
use crate::service::cas_service::CasService;
use crate::service::execution_service::ExecutionService;
use crate::service::operations_service::OperationsService;

/// gRPC service names reported by the health service.
const SERVICE_NAMES: [&str; 6] = [
    "build.bazel.remote.execution.v2.Capabilities",
    "build.bazel.remote.execution.v2.ContentAddressableStorage",
    "build.bazel.remote.execution.v2.ActionCache",
    "build.bazel.remote.execution.v2.Execution",
    "google.bytestream.ByteStream",
    "google.longrunning.Operations",
];

/// A daemon ready to serve.
#[derive(Debug, Clone)]
pub struct Daemon {
    /// Shared state.
    pub ctx: Arc<Context>,
    /// Who may call what.
    pub auth: Arc<crate::auth::Policy>,
    /// Mutual TLS for TCP listeners, when configured.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// What the daemon counts.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Uploaded bytes per principal, when limited.
    pub uploads: Option<Arc<crate::sched::upload::UploadQuota>>,
    /// Retention: garbage collection and pins.
    pub gc: Arc<crate::gc::Gc>,
}

/// The machine's host name, for `ExecutedActionMetadata.worker`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Loads every profile in `dir`; a missing directory gives none.
fn load_profiles(dir: Option<PathBuf>) -> Result<BTreeMap<String, Arc<Profile>>> {
    let Some(dir) = dir else {
        warn!("no sandbox-profiles directory found; actions cannot run");
        return Ok(BTreeMap::new());
    };
    let profiles = Profile::load_dir(&dir)
        .map_err(|e| Error::FailedPrecondition(format!("cannot load sandbox profiles: {e}")))?;
    for p in &profiles {
        info!(profile = %p.name, digest = %p.digest(), "loaded sandbox profile");
    }
    if profiles.is_empty() {
        warn!(dir = %dir.display(), "no sandbox profiles found; actions cannot run");
    }
    Ok(profiles
        .into_iter()
        .map(|p| (p.name.clone(), Arc::new(p)))
        .collect())
}

/// Opens the image store, imports the configured images and resolves the
/// default image to a digest.
fn open_images(
    config: &Config,
    fsync: bool,
) -> Result<(
    Arc<crate::images::ImageStore>,
    Option<crate::images::ImageDigest>,
)> {
    let images = crate::images::ImageStore::open(&config.image_store(), fsync)?;
    crate::images::configured::import_all(&images, &config.images)?;
    let default_image = match &config.default_image {
        Some(name) => {
            let info = images
                .resolve(name)
                .map_err(|e| Error::FailedPrecondition(format!("default_image {name:?}: {e}")))?;
            info!(image = %info.digest, "default image");
            Some(info.digest)
        }
        None => None,
    };
    Ok((Arc::new(images), default_image))
}

impl Daemon {
    /// The metrics registry: counters, histograms and live values.
    pub fn metrics_registry(&self) -> prometheus_client::registry::Registry {
        self.metrics
            .registry(self.ctx.engine.clone(), self.ctx.store.clone())
    }

    /// Opens the state directory and builds every component.
    pub fn open(config: Config) -> Result<Self> {
        let state_dir = config.state_dir();
        std::fs::create_dir_all(&state_dir).map_err(Error::io("create", &state_dir))?;
        let fsync = !config.cas.no_fsync;
        let store = Arc::new(Store::open_with(
            &state_dir,
            config.cas.max_size(),
            fsync,
            config.cas.batch_commit,
            crate::cas::journal::Limits::default(),
        )?);
        let action_cache = Arc::new(ActionCache::open(&state_dir, store.tmp_dir(), fsync)?);
        let actions_dir = state_dir.join("actions");
        if actions_dir.exists() {
            // Left over from a crash: nothing in it is referenced any more.
            let _ = std::fs::remove_dir_all(&actions_dir);
        }
        std::fs::create_dir_all(&actions_dir).map_err(Error::io("create", &actions_dir))?;
        let profiles = load_profiles(config.profiles_dir())?;
        let (images, default_image) = open_images(&config, fsync)?;
        let helper = config.sandbox_helper();
        info!(helper = %helper.display(), mode = ?config.sandbox_mode, "sandbox helper");
        let kill_grace = Duration::from_secs(5);
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let alerts = crate::alerts::Alerter::new(&config.alerts, Some(metrics.clone()))
            .map_err(|e| Error::FailedPrecondition(e.to_string()))?;
        let provenance = crate::provenance::Provenance::open(
            &state_dir,
            &config.provenance,
            &host_name(),
            images.clone(),
        )
        .inspect_err(|e| {
            // The log failed its verification (or could not be opened):
            // the daemon will not start; the alert hook hears why first.
            if let Some(a) = &alerts {
                a.fire_and_wait(crate::alerts::Alert::new(
                    crate::alerts::AlertKind::VerificationFailure,
                    format!("hermeticd refused to start: {e}"),
                ));
            }
        })?;
        let provenance = Arc::new(provenance);
        let settings = EngineSettings {
            run_env: RunEnv {
                store: store.clone(),
                actions_dir,
                sandbox: Sandbox::new(config.sandbox_mode, helper, kill_grace),
                worker: host_name(),
                kill_grace,
                pool: Arc::new(crate::exec::dirpool::DirPool::open(&state_dir)?),
                cgroup_parent: config.cgroup_parent.clone(),
                metrics: metrics.clone(),
                provenance,
                alerts: alerts.clone(),
            },
            choices: Choices {
                images: images.clone(),
                default_image,
                require_trusted_images: config.require_trusted_images(),
                profiles,
                default_profile: config.default_profile().to_owned(),
                alerts,
            },
            limits: Limits {
                max_tree_depth: config.cas.max_tree_depth(),
                max_timeout: config.max_action_timeout(),
            },
            jobs: config.jobs(),
            max_queued: config.max_queued(),
            retention: config.operation_retention(),
            quotas: config.quotas.clone(),
        };
        let engine = Arc::new(Engine::new(settings, store.clone(), action_cache.clone()));
        let gc = Arc::new(crate::gc::Gc::open(
            &state_dir,
            &config.retention,
            store.clone(),
            action_cache.clone(),
            engine.provenance().clone(),
        )?);
        let instances: HashSet<String> = config.instance_names().into_iter().collect();
        let invalid = |e: crate::config::ConfigError| Error::FailedPrecondition(e.to_string());
        let auth = Arc::new(crate::auth::Policy::new(&config.auth.roles).map_err(invalid)?);
        let tls = match &config.auth.tls {
            Some(t) => Some(crate::auth::tls::server_config(t).map_err(invalid)?),
            None => None,
        };
        Ok(Daemon {
            gc,
            auth,
            tls,
            metrics,
            uploads: crate::sched::upload::UploadQuota::new(&config.quotas),
            ctx: Arc::new(Context {
                config,
                instances,
                store,
                action_cache,
                engine,
            }),
        })
    }

    fn routes(
        &self,
        health: tonic_health::pb::health_server::HealthServer<
            impl tonic_health::pb::health_server::Health,
        >,
    ) -> Routes {
        let ctx = &self.ctx;
        let max_msg = ctx.config.cas.max_batch_total_size() as usize + (1 << 20);
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(hermetic_proto::REAPI_FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(hermetic_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("the bundled descriptors are valid");
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(hermetic_proto::REAPI_FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(hermetic_proto::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .expect("the bundled descriptors are valid");
        let mut builder = Routes::builder();
        builder
            .add_service(CapabilitiesServer::new(CapabilitiesService::new(
                ctx.clone(),
            )))
            .add_service(
                ContentAddressableStorageServer::new(CasService::new(ctx.clone()))
                    .max_decoding_message_size(max_msg)
                    .max_encoding_message_size(max_msg),
            )
            .add_service(
                ByteStreamServer::new(ByteStreamService::new(ctx.clone()))
                    .max_decoding_message_size(max_msg),
            )
            .add_service(ActionCacheServer::new(AcService::new(ctx.clone())))
            .add_service(ExecutionServer::new(ExecutionService::new(ctx.clone())))
            .add_service(OperationsServer::new(OperationsService::new(ctx.clone())))
            .add_service(hermetic_proto::StatusServer::new(
                crate::service::status_service::StatusService::new(ctx.clone()),
            ))
            .add_service(hermetic_proto::ImagesServer::new(
                crate::images::service::ImagesService::new(ctx.clone()),
            ))
            .add_service(hermetic_proto::ProvenanceServer::new(
                crate::provenance::service::ProvenanceService::new(ctx.clone()),
            ))
            .add_service(hermetic_proto::AdminServer::new(
                crate::gc::service::AdminService::new(ctx.clone(), self.gc.clone()),
            ))
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        builder.routes()
    }
}

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix socket.
    Unix(UnixListener),
}

impl Listener {
    /// Binds an address; a stale Unix socket file is replaced and its
    /// directory created.
    pub async fn bind(addr: &ListenAddr) -> std::io::Result<Self> {
        match addr {
            ListenAddr::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a).await?)),
            ListenAddr::Unix(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                if path.exists() {
                    std::fs::remove_file(path)?;
                }
                Ok(Listener::Unix(UnixListener::bind(path)?))
            }
        }
    }

    /// What the listener is bound to, for logs.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "tcp://?".into(), |a| format!("tcp://{a}")),
            Listener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix://{}", p.display())))
                .unwrap_or_else(|| "unix://?".into()),
        }
    }
}

/// The largest HTTP/2 frame a client may send: a 1 MiB ByteStream chunk
/// with its framing.
const MAX_FRAME_SIZE: u32 = (1 << 20) + (16 << 10);

/// Serves on every listener until `shutdown` completes, then stops
/// accepting, drains running actions within the configured grace period
/// (cancelling the rest) and returns when every connection is closed.
pub async fn serve(
    daemon: &Daemon,
    listeners: Vec<Listener>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    for name in SERVICE_NAMES.iter().chain(std::iter::once(&"")) {
        health_reporter
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    let routes = daemon.routes(health);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = Vec::new();
    let metrics = daemon.metrics.clone();
    let denial_hook: crate::auth::layer::DenialHook =
        Arc::new(move |_, method| metrics.auth_denied(method));
    for listener in listeners {
        info!(address = %listener.describe(), "listening");
        let mut rx = stop_rx.clone();
        let signal = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        // Windows well above one 1 MiB ByteStream message, so that uploads
        // stream instead of waiting for a window update per message, and
        // frames of up to one such message: a client then sends a message
        // in one frame instead of 64 of HTTP/2's default 16 KiB, each a
        // write on its side and a frame to parse on ours (128 MiB
        // uploads went from ~700 to ~1,070 MB/s here).
        let mut builder = tonic::transport::Server::builder()
            .initial_stream_window_size(16 << 20)
            .initial_connection_window_size(32 << 20)
            .max_frame_size(MAX_FRAME_SIZE);
        let tls = matches!(listener, Listener::Tcp(_)) && daemon.tls.is_some();
        if tls && let Some(config) = daemon.tls.clone() {
            builder = builder
                .tls_config(config)
                .map_err(|e| Error::FailedPrecondition(format!("TLS configuration: {e}")))?;
        }
        let router = builder
            .layer(
                AuthLayer::new(daemon.auth.clone(), Some(denial_hook.clone()))
                    .with_upload_quota(daemon.uploads.clone()),
            )
            .add_routes(routes.clone());
        let loopback = daemon.ctx.config.auth.loopback_tcp;
        servers.push(tokio::spawn(async move {
            match listener {
                Listener::Tcp(l) => {
                    let incoming = peer::tcp_incoming(l, tls, loopback);
                    router.serve_with_incoming_shutdown(incoming, signal).await
                }
                Listener::Unix(l) => {
                    let incoming = peer::unix_incoming(l);
                    router.serve_with_incoming_shutdown(incoming, signal).await
                }
            }
        }));
    }
    let periodic = tokio::spawn(daemon.gc.clone().periodic(stop_rx.clone()));
    shutdown.await;
    info!("shutting down: no new connections, draining actions");
    for name in SERVICE_NAMES.iter().chain(std::iter::once(&"")) {
        health_reporter
            .set_service_status(*name, ServingStatus::NotServing)
            .await;
    }
    stop_tx.send_replace(true);
    let _ = periodic.await;
    daemon
        .ctx
        .engine
        .shutdown(daemon.ctx.config.shutdown_grace())
        .await;
    for s in servers {
        match tokio::time::timeout(Duration::from_secs(10), s).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(cause = %e, "server ended with an error"),
            Ok(Err(e)) => warn!(cause = %e, "server task failed"),
            Err(_) => warn!("a server did not close its connections in time"),
        }
    }
    let store = daemon.ctx.store.clone();
    if let Err(e) = crate::cas::blocking(move || {
        store.checkpoint();
        Ok(())
    })
    .await
    {
        warn!(cause = %e, "cannot checkpoint the CAS journal; the next start replays it");
    }
    info!("stopped");
    Ok(())
}
