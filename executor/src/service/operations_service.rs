//! google.longrunning.Operations over execution operations.

use std::sync::Arc;

use bazel_remote_apis::google::longrunning::{
    CancelOperationRequest, DeleteOperationRequest, GetOperationRequest, ListOperationsRequest,
    ListOperationsResponse, Operation as LroOperation, WaitOperationRequest,
    operations_server::Operations,
};
use bazel_remote_apis::google::protobuf::Empty;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::error::{Error, Result as OpResult};
use crate::exec::engine::Operation;
use crate::service::Context;

/// The operation `name` when the caller may see it; NOT_FOUND otherwise,
/// so that other principals' operation names reveal nothing.
pub fn visible<T>(ctx: &Context, request: &Request<T>, name: &str) -> OpResult<Arc<Operation>> {
    let op = ctx.engine.get(name)?;
    if op.visible_to(request.extensions().get::<Caller>()) {
        Ok(op)
    } else {
        Err(Error::NotFound(format!("no operation named {name:?}")))
    }
}

/// The Operations service.
#[derive(Debug, Clone)]
pub struct OperationsService {
    ctx: Arc<Context>,
}

impl OperationsService {
    /// A service over `ctx`.
    pub fn new(ctx: Arc<Context>) -> Self {
        OperationsService { ctx }
    }
}

#[tonic::async_trait]
impl Operations for OperationsService {
    /// Operations ordered by name, `page_size` at a time (default 100, at
    /// most 1000); `next_page_token` is the last name of the page. No
    /// filters.
    #[tracing::instrument(skip_all)]
    async fn list_operations(
        &self,
        request: Request<ListOperationsRequest>,
    ) -> Result<Response<ListOperationsResponse>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let req = request.into_inner();
        if !req.filter.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "ListOperations filters are not supported (got {:?})",
                req.filter
            ))
            .into());
        }
        let size = match req.page_size {
            n if n < 0 => {
                return Err(Error::InvalidArgument(format!("negative page_size {n}")).into());
            }
            0 => 100,
            n => (n as usize).min(1000),
        };
        let ops: Vec<_> = self
            .ctx
            .engine
            .list()
            .into_iter()
            .filter(|o| o.visible_to(caller.as_ref()))
            .collect();
        let start = ops.partition_point(|o| o.name.as_str() <= req.page_token.as_str());
        let start = if req.page_token.is_empty() { 0 } else { start };
        let page: Vec<LroOperation> = ops[start..]
            .iter()
            .take(size)
            .map(|o| (*o.current()).clone())
            .collect();
        let next_page_token = if start + page.len() < ops.len() {
            page.last().map(|o| o.name.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListOperationsResponse {
            operations: page,
            next_page_token,
            unreachable: Vec::new(),
        }))
    }

    #[tracing::instrument(skip_all, fields(operation = %request.get_ref().name))]
    async fn get_operation(
        &self,
        request: Request<GetOperationRequest>,
    ) -> Result<Response<LroOperation>, Status> {
        let op = visible(&self.ctx, &request, &request.get_ref().name)?;
        Ok(Response::new((*op.current()).clone()))
    }

    #[tracing::instrument(skip_all, fields(operation = %request.get_ref().name))]
    async fn delete_operation(
        &self,
        request: Request<DeleteOperationRequest>,
    ) -> Result<Response<Empty>, Status> {
        visible(&self.ctx, &request, &request.get_ref().name)?;
        self.ctx.engine.delete(&request.get_ref().name)?;
        Ok(Response::new(Empty {}))
    }

    #[tracing::instrument(skip_all, fields(operation = %request.get_ref().name))]
    async fn cancel_operation(
        &self,
        request: Request<CancelOperationRequest>,
    ) -> Result<Response<Empty>, Status> {
        let op = visible(&self.ctx, &request, &request.get_ref().name)?;
        op.cancel();
        Ok(Response::new(Empty {}))
    }

    #[tracing::instrument(skip_all, fields(operation = %request.get_ref().name))]
    async fn wait_operation(
        &self,
        request: Request<WaitOperationRequest>,
    ) -> Result<Response<LroOperation>, Status> {
        let op = visible(&self.ctx, &request, &request.get_ref().name)?;
        let req = request.into_inner();
        let mut state = op.subscribe();
        let timeout = req
            .timeout
            .map(|t| std::time::Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32))
            .unwrap_or(std::time::Duration::from_secs(60));
        let _ = tokio::time::timeout(timeout, state.wait_for(|o| o.done)).await;
        Ok(Response::new((*op.current()).clone()))
    }
}
