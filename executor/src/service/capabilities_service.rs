//! Capabilities: what this server offers.

use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionCacheUpdateCapabilities, CacheCapabilities, ExecutionCapabilities,
    GetCapabilitiesRequest, ServerCapabilities, capabilities_server::Capabilities, digest_function,
    symlink_absolute_path_strategy,
};
use bazel_remote_apis::build::bazel::semver::SemVer;
use tonic::{Request, Response, Status};

use crate::digest::DigestFunction;
use crate::service::Context;

/// The lowest REAPI version served.
pub const LOW_API_VERSION: (i32, i32) = (2, 0);
/// The highest REAPI version served.
pub const HIGH_API_VERSION: (i32, i32) = (2, 3);

/// The Capabilities service.
#[derive(Debug, Clone)]
pub struct CapabilitiesService {
    ctx: Arc<Context>,
}

impl CapabilitiesService {
    /// A service over `ctx`.
    pub fn new(ctx: Arc<Context>) -> Self {
        CapabilitiesService { ctx }
    }
}

fn semver((major, minor): (i32, i32)) -> SemVer {
    SemVer {
        major,
        minor,
        patch: 0,
        prerelease: String::new(),
    }
}

#[tonic::async_trait]
impl Capabilities for CapabilitiesService {
    #[tracing::instrument(skip_all)]
    async fn get_capabilities(
        &self,
        request: Request<GetCapabilitiesRequest>,
    ) -> Result<Response<ServerCapabilities>, Status> {
        self.ctx.check_instance(&request.get_ref().instance_name)?;
        let functions: Vec<i32> = DigestFunction::ALL.iter().map(|f| f.to_proto()).collect();
        let cas = &self.ctx.config.cas;
        Ok(Response::new(ServerCapabilities {
            cache_capabilities: Some(CacheCapabilities {
                digest_functions: functions.clone(),
                action_cache_update_capabilities: Some(ActionCacheUpdateCapabilities {
                    update_enabled: self.ctx.config.action_cache.allow_client_updates,
                }),
                max_batch_total_size_bytes: cas.max_batch_total_size() as i64,
                symlink_absolute_path_strategy: symlink_absolute_path_strategy::Value::Disallowed
                    as i32,
                max_cas_blob_size_bytes: cas.max_blob_size() as i64,
                ..Default::default()
            }),
            execution_capabilities: Some(ExecutionCapabilities {
                digest_function: digest_function::Value::Sha256 as i32,
                exec_enabled: true,
                digest_functions: functions,
                ..Default::default()
            }),
            deprecated_api_version: None,
            low_api_version: Some(semver(LOW_API_VERSION)),
            high_api_version: Some(semver(HIGH_API_VERSION)),
        }))
    }
}
