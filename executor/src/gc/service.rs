//! `hermetic.v1.Admin`: garbage collection and pins. Every method needs
//! the admin role (the auth layer refuses anyone else before a handler
//! runs, as for RotateKey).

use std::sync::Arc;

use hermetic_proto::v1::{
    BlobDigest, ListPinsRequest, ListPinsResponse, PinInfo, PinKind as ProtoKind, PinRequest,
    PinResponse, RunGcRequest, RunGcResponse, UnpinRequest, UnpinResponse,
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::Gc;
use super::pins::{Pin, PinKind};
use crate::cas::blocking;
use crate::digest::BlobKey;
use crate::error::{Error, Result};
use crate::service::Context;

/// The Admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    ctx: Arc<Context>,
    gc: Arc<Gc>,
}

impl AdminService {
    /// A service over `ctx` and the collector.
    pub fn new(ctx: Arc<Context>, gc: Arc<Gc>) -> Self {
        AdminService { ctx, gc }
    }

    fn key(&self, instance: &str, f: i32, d: Option<&BlobDigest>) -> Result<BlobKey> {
        let f = self.ctx.request(instance, f)?;
        let d = d.ok_or_else(|| Error::InvalidArgument("the digest is missing".into()))?;
        BlobKey::parse(f, &d.hash, d.size_bytes)
    }
}

/// The caller's principal as the auth layer found it.
pub fn principal_of<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<crate::auth::Caller>()
        .map_or_else(|| "unknown".into(), |c| c.principal.to_string())
}

fn kind_to_proto(k: PinKind) -> ProtoKind {
    match k {
        PinKind::Blob => ProtoKind::Blob,
        PinKind::Directory => ProtoKind::Directory,
        PinKind::Tree => ProtoKind::Tree,
        PinKind::Action => ProtoKind::Action,
    }
}

fn info(p: &Pin, (blobs, bytes): (u64, u64)) -> PinInfo {
    PinInfo {
        instance_name: p.instance.clone(),
        digest: Some(BlobDigest {
            hash: p.hash.clone(),
            size_bytes: p.size as i64,
        }),
        digest_function: p.function.clone(),
        kind: kind_to_proto(p.kind).into(),
        note: p.note.clone(),
        principal: p.principal.clone(),
        created_unix: p.created,
        closure_blobs: blobs,
        closure_bytes: bytes,
    }
}

#[tonic::async_trait]
impl hermetic_proto::Admin for AdminService {
    #[instrument(skip_all, fields(dry_run = request.get_ref().dry_run))]
    async fn run_gc(
        &self,
        request: Request<RunGcRequest>,
    ) -> std::result::Result<Response<RunGcResponse>, Status> {
        let who = principal_of(&request);
        let dry_run = request.into_inner().dry_run;
        let gc = self.gc.clone();
        let r = blocking(move || gc.run(&who, dry_run)).await?;
        Ok(Response::new(RunGcResponse {
            dry_run: r.dry_run,
            evicted_blobs: r.evicted_blobs,
            evicted_bytes: r.evicted_bytes,
            removed_action_results: r.removed_action_results,
            retained_blobs: r.retained_blobs,
            pins: r.pins,
            recent_attestations: r.recent_attestations,
            store_bytes_before: r.store_bytes_before,
            store_bytes_after: r.store_bytes_after,
            retention_period_secs: r.retention_period_secs,
            log_index: r.log_index,
        }))
    }

    #[instrument(skip_all)]
    async fn pin(
        &self,
        request: Request<PinRequest>,
    ) -> std::result::Result<Response<PinResponse>, Status> {
        let who = principal_of(&request);
        let req = request.into_inner();
        let key = self.key(&req.instance_name, req.digest_function, req.digest.as_ref())?;
        let kind = match ProtoKind::try_from(req.kind) {
            Ok(ProtoKind::Auto) => None,
            Ok(ProtoKind::Blob) => Some(PinKind::Blob),
            Ok(ProtoKind::Directory) => Some(PinKind::Directory),
            Ok(ProtoKind::Tree) => Some(PinKind::Tree),
            Ok(ProtoKind::Action) => Some(PinKind::Action),
            Err(_) => {
                return Err(
                    Error::InvalidArgument(format!("unknown pin kind {}", req.kind)).into(),
                );
            }
        };
        let gc = self.gc.clone();
        let (pin, stored, log_index) =
            blocking(move || gc.pin(&who, &req.instance_name, key, kind, &req.note)).await?;
        Ok(Response::new(PinResponse {
            pin: Some(info(&pin, stored)),
            log_index,
        }))
    }

    #[instrument(skip_all)]
    async fn unpin(
        &self,
        request: Request<UnpinRequest>,
    ) -> std::result::Result<Response<UnpinResponse>, Status> {
        let who = principal_of(&request);
        let req = request.into_inner();
        let key = self.key(&req.instance_name, req.digest_function, req.digest.as_ref())?;
        let gc = self.gc.clone();
        let (pin, log_index) = blocking(move || gc.unpin(&who, &req.instance_name, key)).await?;
        Ok(Response::new(UnpinResponse {
            pin: Some(info(&pin, (0, 0))),
            log_index,
        }))
    }

    #[instrument(skip_all)]
    async fn list_pins(
        &self,
        _request: Request<ListPinsRequest>,
    ) -> std::result::Result<Response<ListPinsResponse>, Status> {
        let gc = self.gc.clone();
        let pins = blocking(move || Ok(gc.pins())).await?;
        Ok(Response::new(ListPinsResponse {
            pins: pins.iter().map(|(p, s)| info(p, *s)).collect(),
        }))
    }
}
