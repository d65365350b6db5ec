//! `hermetic.v1.Status`: what `hermetic status` shows — health, the
//! sandbox features in force on this host, the queue, images, profiles and
//! the store.
//!
//! The sandbox features come from `hermetic-sandbox --features`, run once
//! (it forks to probe user namespaces, which the daemon never does itself)
//! when the service is built and cached for the daemon's lifetime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hermetic_proto::v1::{
    GetStatusRequest, GetStatusResponse, Profile, Queue, SandboxFeatures, Store,
};
use tokio::sync::OnceCell;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::exec::platform::{CONTAINER_IMAGE, HERMETIC_MEMORY, HERMETIC_PROFILE, ISA, OS_FAMILY};
use crate::service::Context;
use crate::systemd::StripSystemdEnv as _;

/// How long `hermetic-sandbox --features` may take.
const FEATURES_TIMEOUT: Duration = Duration::from_secs(20);

/// The Status service.
#[derive(Debug, Clone)]
pub struct StatusService {
    ctx: Arc<Context>,
    started: Instant,
    features: Arc<OnceCell<SandboxFeatures>>,
}

impl StatusService {
    /// A service over `ctx`; starts detecting the sandbox features when
    /// called inside a Tokio runtime (otherwise on the first request).
    pub fn new(ctx: Arc<Context>) -> Self {
        let service = StatusService {
            ctx,
            started: Instant::now(),
            features: Arc::new(OnceCell::new()),
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (cell, helper) = (
                service.features.clone(),
                service.ctx.config.sandbox_helper(),
            );
            rt.spawn(async move {
                let f = cell.get_or_init(|| detect(helper)).await;
                if f.detected {
                    info!(
                        landlock_abi = f.landlock_abi,
                        cgroup = %f.cgroup_version,
                        user_namespaces = f.user_namespaces,
                        seccomp = f.seccomp,
                        "sandbox features"
                    );
                } else {
                    warn!(cause = %f.error, "cannot detect the sandbox features");
                }
            });
        }
        service
    }

    async fn status(&self) -> GetStatusResponse {
        let ctx = &self.ctx;
        let config = &ctx.config;
        let helper = config.sandbox_helper();
        let sandbox = self.features.get_or_init(|| detect(helper)).await.clone();
        let (queued, active) = ctx.engine.queue_load();
        let choices = ctx.engine.choices();
        GetStatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            worker: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            uptime_seconds: self.started.elapsed().as_secs(),
            serving: ctx.engine.is_accepting(),
            sandbox: Some(sandbox),
            queue: Some(Queue {
                queued: queued as u64,
                active: active as u64,
                jobs: config.jobs() as u64,
                max_queued: config.max_queued() as u64,
            }),
            images: choices
                .images
                .list()
                .unwrap_or_default()
                .iter()
                .map(|i| i.digest.to_string())
                .collect(),
            default_image: choices
                .default_image
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            profiles: choices
                .profiles
                .values()
                .map(|p| Profile {
                    name: p.name.clone(),
                    digest: p.digest(),
                })
                .collect(),
            default_profile: choices.default_profile.clone(),
            store: Some(Store {
                bytes: ctx.store.total_bytes(),
                max_bytes: config.cas.max_size(),
            }),
            instance_names: config.instance_names(),
            platform_properties: [
                CONTAINER_IMAGE,
                HERMETIC_PROFILE,
                HERMETIC_MEMORY,
                OS_FAMILY,
                ISA,
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        }
    }
}

/// Runs `HELPER --features` and reads its JSON.
async fn detect(helper: PathBuf) -> SandboxFeatures {
    let mut features = SandboxFeatures {
        helper: helper.display().to_string(),
        ..Default::default()
    };
    let run = tokio::process::Command::new(&helper)
        .strip_systemd_env()
        .arg("--features")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(FEATURES_TIMEOUT, run).await {
        Ok(Ok(out)) if out.status.success() => out,
        Ok(Ok(out)) => {
            features.error = format!(
                "{} --features exited with {}: {}",
                helper.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return features;
        }
        Ok(Err(e)) => {
            features.error = format!("cannot run {} --features: {e}", helper.display());
            return features;
        }
        Err(_) => {
            features.error = format!("{} --features did not answer in time", helper.display());
            return features;
        }
    };
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    match serde_json::from_str::<serde_json::Value>(&raw) {
        Ok(v) => fill(&mut features, &v),
        Err(e) => features.error = format!("the helper's --features output does not parse: {e}"),
    }
    features.raw_json = raw;
    features
}

/// Copies the fields of `hermetic-sandbox --features` JSON.
fn fill(f: &mut SandboxFeatures, v: &serde_json::Value) {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    f.detected = true;
    f.kernel = s(&v["kernel"]);
    f.root = v["root"].as_bool().unwrap_or(false);
    f.user_namespaces = v["user_namespaces"].as_bool().unwrap_or(false);
    f.landlock_abi = v["landlock_abi"].as_i64().unwrap_or(-1) as i32;
    f.seccomp = v["seccomp"].as_bool().unwrap_or(false);
    f.overlayfs = v["overlayfs"].as_bool().unwrap_or(false);
    let cg = &v["cgroup"];
    f.cgroup_version = s(&cg["version"]);
    f.cgroup_controllers = cg["controllers"]
        .as_array()
        .map(|a| a.iter().map(s).collect())
        .unwrap_or_default();
    f.cgroup_reason = s(&cg["reason"]);
}

#[tonic::async_trait]
impl hermetic_proto::Status for StatusService {
    #[tracing::instrument(skip_all)]
    async fn get_status(
        &self,
        _request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        Ok(Response::new(self.status().await))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_helpers_json() {
        let v = serde_json::json!({
            "kernel": "6.1", "root": true, "user_namespaces": true, "landlock_abi": 6,
            "seccomp": true, "overlayfs": true,
            "cgroup": {"version": "v2", "controllers": ["memory", "pids"], "base": "/x",
                       "reason": null}
        });
        let mut f = SandboxFeatures::default();
        fill(&mut f, &v);
        assert!(f.detected && f.root && f.user_namespaces && f.seccomp && f.overlayfs);
        assert_eq!(f.landlock_abi, 6);
        assert_eq!(f.cgroup_version, "v2");
        assert_eq!(f.cgroup_controllers, ["memory", "pids"]);
        assert_eq!(f.cgroup_reason, "");
    }

    #[tokio::test]
    async fn a_missing_helper_is_reported() {
        let f = detect(PathBuf::from("/nonexistent/hermetic-sandbox")).await;
        assert!(!f.detected);
        assert!(f.error.contains("cannot run"), "{}", f.error);
    }
}
