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

/// Streams an operation's states until it is done: the current state
/// first, then each change (intermediate states may be skipped when they
/// follow each other faster than the client reads), the done state last.
/// Polled by the response itself, with no task or channel in between.
pub fn follow(op: Arc<Operation>) -> OpStream {
    let current = op.current();
    if current.done {
        // A cache hit (or a finished operation): its one and last state.
        return Box::pin(tokio_stream::once(Ok((*current).clone())));
    }
    Box::pin(Follow {
        states: tokio_stream::wrappers::WatchStream::new(op.subscribe()),
        done: false,
    })
}

struct Follow {
    states: tokio_stream::wrappers::WatchStream<Arc<LroOperation>>,
    done: bool,
}

impl Stream for Follow {
    type Item = Result<LroOperation, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.done {
            return std::task::Poll::Ready(None);
        }
        // WatchStream is Unpin.
        Pin::new(&mut self.states).poll_next(cx).map(|state| {
            state.map(|op| {
                self.done = op.done;
                Ok((*op).clone())
            })
        })
    }
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
