//! Execution: Execute and WaitExecution, streaming operation updates.
//!
//! A stream follows the operation until it is done; a client that goes away
//! stops only its stream, never the execution.

use std::pin::Pin;
use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ExecuteRequest, WaitExecutionRequest, execution_server::Execution,
};
use bazel_remote_apis::google::longrunning::Operation as LroOperation;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::digest::BlobKey;
use crate::error::Result;
use crate::exec::engine::{ExecuteParams, Operation};
use crate::service::Context;
use crate::service::ac_service::Inline;

/// The Execution service.
#[derive(Debug, Clone)]
pub struct ExecutionService {
    ctx: Arc<Context>,
}

type OpStream = Pin<Box<dyn Stream<Item = Result<LroOperation, Status>> + Send>>;

/// Streams an operation's states until it is done.
pub fn follow(op: Arc<Operation>) -> OpStream {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut state = op.subscribe();
    tokio::spawn(async move {
        loop {
            let current = state.borrow_and_update().clone();
            let done = current.done;
            if tx.send(Ok((*current).clone())).await.is_err() || done {
                break;
            }
            if state.changed().await.is_err() {
                break;
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

impl ExecutionService {
    /// A service over `ctx`.
    pub fn new(ctx: Arc<Context>) -> Self {
        ExecutionService { ctx }
    }

    async fn execute_inner(
        &self,
        req: ExecuteRequest,
        principal: Option<crate::auth::Principal>,
    ) -> Result<Arc<Operation>> {
        let function = self.ctx.request(&req.instance_name, req.digest_function)?;
        let action_key = BlobKey::from_opt(function, req.action_digest.as_ref(), "action_digest")?;
        self.ctx
            .engine
            .execute_in(
                &req.instance_name,
                ExecuteParams {
                    action_key,
                    skip_cache_lookup: req.skip_cache_lookup,
                    inline: Inline {
                        stdout: req.inline_stdout,
                        stderr: req.inline_stderr,
                        files: req.inline_output_files,
                    },
                    principal,
                },
            )
            .await
    }
}

#[tonic::async_trait]
impl Execution for ExecutionService {
    type ExecuteStream = OpStream;

    #[tracing::instrument(skip_all, fields(action = ?request.get_ref().action_digest.as_ref().map(|d| &d.hash)))]
    async fn execute(
        &self,
        request: Request<ExecuteRequest>,
    ) -> Result<Response<Self::ExecuteStream>, Status> {
        let principal = request
            .extensions()
            .get::<crate::auth::Principal>()
            .cloned();
        let op = self.execute_inner(request.into_inner(), principal).await?;
        Ok(Response::new(follow(op)))
    }

    type WaitExecutionStream = OpStream;

    #[tracing::instrument(skip_all, fields(operation = %request.get_ref().name))]
    async fn wait_execution(
        &self,
        request: Request<WaitExecutionRequest>,
    ) -> Result<Response<Self::WaitExecutionStream>, Status> {
        let op = crate::service::operations_service::visible(
            &self.ctx,
            &request,
            &request.get_ref().name,
        )?;
        Ok(Response::new(follow(op)))
    }
}
