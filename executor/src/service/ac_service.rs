//! ActionCache: GetActionResult and (by policy only) UpdateActionResult.

use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionResult, GetActionResultRequest, UpdateActionResultRequest,
    action_cache_server::ActionCache,
};
use tonic::{Request, Response, Status};

use crate::action_cache::referenced_blobs;
use crate::cas::{Store, blocking};
use crate::digest::{BlobKey, DigestFunction};
use crate::error::{Error, Result};
use crate::service::Context;

/// Inlined bytes per GetActionResult at most.
const MAX_INLINE_BYTES: u64 = 1 << 20;

/// The ActionCache service.
#[derive(Debug, Clone)]
pub struct AcService {
    ctx: Arc<Context>,
}

/// What a client asked to have inlined.
#[derive(Debug, Default, Clone)]
pub struct Inline {
    /// Inline stdout.
    pub stdout: bool,
    /// Inline stderr.
    pub stderr: bool,
    /// Output file paths to inline.
    pub files: Vec<String>,
}

impl Inline {
    /// Whether nothing is to be inlined.
    pub fn is_empty(&self) -> bool {
        !self.stdout && !self.stderr && self.files.is_empty()
    }
}

/// Fills `*_raw` and `contents` fields as asked, within a byte budget.
pub fn inline_result(
    store: &Store,
    function: DigestFunction,
    result: &mut ActionResult,
    inline: &Inline,
) -> Result<()> {
    let mut budget = MAX_INLINE_BYTES;
    let mut take = |digest: Option<
        &bazel_remote_apis::build::bazel::remote::execution::v2::Digest,
    >|
     -> Result<Option<Vec<u8>>> {
        let Some(d) = digest else { return Ok(None) };
        let key = BlobKey::from_proto(function, d)?;
        if key.size > budget {
            return Ok(None);
        }
        budget -= key.size;
        store.read(&key).map(Some)
    };
    if inline.stdout
        && let Some(data) = take(result.stdout_digest.as_ref())?
    {
        result.stdout_raw = data;
    }
    if inline.stderr
        && let Some(data) = take(result.stderr_digest.as_ref())?
    {
        result.stderr_raw = data;
    }
    for f in &mut result.output_files {
        if inline.files.contains(&f.path)
            && let Some(data) = take(f.digest.as_ref())?
        {
            f.contents = data;
        }
    }
    Ok(())
}

impl AcService {
    /// A service over `ctx`.
    pub fn new(ctx: Arc<Context>) -> Self {
        AcService { ctx }
    }

    async fn get(&self, req: GetActionResultRequest) -> Result<ActionResult> {
        let function = self.ctx.request(&req.instance_name, req.digest_function)?;
        let key = BlobKey::from_opt(function, req.action_digest.as_ref(), "action_digest")?;
        let ctx = self.ctx.clone();
        let inline = Inline {
            stdout: req.inline_stdout,
            stderr: req.inline_stderr,
            files: req.inline_output_files,
        };
        // A result served recently needs no blocking trip (see
        // `ActionCache::get_recent_in`); inlining reads blobs.
        if inline.is_empty()
            && let Some(result) =
                ctx.action_cache
                    .get_recent_in(&req.instance_name, &key, &ctx.store)
        {
            return Ok(result);
        }
        blocking(move || {
            let mut result = ctx
                .action_cache
                .get_in(&req.instance_name, &key, &ctx.store)?
                .ok_or_else(|| Error::NotFound(format!("no cached result for action {key}")))?;
            inline_result(&ctx.store, function, &mut result, &inline)?;
            Ok(result)
        })
        .await
    }

    async fn update(&self, req: UpdateActionResultRequest) -> Result<ActionResult> {
        let function = self.ctx.request(&req.instance_name, req.digest_function)?;
        if !self.ctx.config.action_cache.allow_client_updates {
            return Err(Error::PermissionDenied(
                "clients may not write the action cache: only results of actions this daemon \
                 ran are cached (set action_cache.allow_client_updates to allow)"
                    .into(),
            ));
        }
        let key = BlobKey::from_opt(function, req.action_digest.as_ref(), "action_digest")?;
        let result = req
            .action_result
            .ok_or_else(|| Error::InvalidArgument("action_result is missing".into()))?;
        let ctx = self.ctx.clone();
        blocking(move || {
            let blobs = referenced_blobs(&result, function, &ctx.store).map_err(|e| match e {
                Error::NotFound(m) => Error::FailedPrecondition(m),
                e => e,
            })?;
            let missing = ctx.store.find_missing(&blobs);
            if !missing.is_empty() {
                return Err(Error::MissingBlobs(missing));
            }
            ctx.action_cache.put_in(&req.instance_name, &key, &result)?;
            Ok(result)
        })
        .await
    }
}

#[tonic::async_trait]
impl ActionCache for AcService {
    #[tracing::instrument(skip_all)]
    async fn get_action_result(
        &self,
        request: Request<GetActionResultRequest>,
    ) -> Result<Response<ActionResult>, Status> {
        Ok(Response::new(self.get(request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn update_action_result(
        &self,
        request: Request<UpdateActionResultRequest>,
    ) -> Result<Response<ActionResult>, Status> {
        Ok(Response::new(self.update(request.into_inner()).await?))
    }
}
