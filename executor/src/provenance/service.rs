//! `hermetic.v1.Provenance`: an action's bundle and SBOMs, the keyring,
//! checkpoints, consistency proofs, and key rotation and revocation.
//!
//! RotateKey and RevokeKey are administrative: the auth layer lets only
//! the admin role call them, and each is followed in the log by an `admin`
//! entry naming the principal (the key event itself names only keys).

use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2::{ActionResult, ExecuteResponse};
use bazel_remote_apis::google::longrunning::operation;
use hermetic_proto::v1::{
    BlobDigest, GetCheckpointRequest, GetCheckpointResponse, GetConsistencyProofRequest,
    GetConsistencyProofResponse, GetKeyringRequest, GetKeyringResponse, GetProvenanceRequest,
    GetProvenanceResponse, RevokeKeyRequest, RevokeKeyResponse, RotateKeyRequest,
    RotateKeyResponse,
};
use prost::Message;
use tonic::{Request, Response, Status};
use tracing::{info, instrument};

use crate::cas::blocking;
use crate::digest::{BlobKey, DigestFunction};
use crate::error::{Error, Result};
use crate::provenance::{Provenance, from_result};
use crate::service::Context;

/// The Provenance service.
#[derive(Debug, Clone)]
pub struct ProvenanceService {
    ctx: Arc<Context>,
}

impl ProvenanceService {
    /// A service over `ctx`.
    pub fn new(ctx: Arc<Context>) -> Self {
        ProvenanceService { ctx }
    }

    fn provenance(&self) -> Arc<Provenance> {
        self.ctx.engine.provenance().clone()
    }

    /// The ActionResult an operation or an action digest names, and its
    /// digest function.
    fn result_of(&self, req: &GetProvenanceRequest) -> Result<(DigestFunction, ActionResult)> {
        if !req.operation.is_empty() {
            let op = self.ctx.engine.get(&req.operation)?;
            let f = op.action_key.function;
            let lro = op.current();
            let Some(operation::Result::Response(any)) = &lro.result else {
                return Err(Error::FailedPrecondition(format!(
                    "operation {:?} has not finished",
                    req.operation
                )));
            };
            let resp = ExecuteResponse::decode(any.value.as_slice())
                .map_err(|e| Error::Internal(format!("stored response does not decode: {e}")))?;
            let result = resp.result.ok_or_else(|| {
                Error::NotFound(format!(
                    "operation {:?} has no result, hence no provenance",
                    req.operation
                ))
            })?;
            return Ok((f, result));
        }
        let Some(d) = &req.action_digest else {
            return Err(Error::InvalidArgument(
                "name an operation or an action digest".into(),
            ));
        };
        let f = self.ctx.request(&req.instance_name, req.digest_function)?;
        let key = BlobKey::parse(f, &d.hash, d.size_bytes)?;
        let result = self
            .ctx
            .action_cache
            .get_raw_in(&req.instance_name, &key)?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no cached result for action {key:?}; a failed action's provenance is \
                     reached through its operation"
                ))
            })?;
        Ok((f, result))
    }

    async fn get_provenance(&self, req: GetProvenanceRequest) -> Result<GetProvenanceResponse> {
        let (f, result) = self.result_of(&req)?;
        let r = from_result(&result).ok_or_else(|| {
            Error::NotFound(
                "the action has no provenance (it produced no output files, or ran before \
                 provenance was recorded)"
                    .into(),
            )
        })?;
        let (store, prov) = (self.ctx.store.clone(), self.provenance());
        blocking(move || {
            let read = |b: &Option<BlobDigest>| -> Result<Option<Vec<u8>>> {
                let Some(b) = b else { return Ok(None) };
                match store.read(&BlobKey::parse(f, &b.hash, b.size_bytes)?) {
                    Ok(d) => Ok(Some(d)),
                    Err(Error::NotFound(_)) => Ok(None),
                    Err(e) => Err(e),
                }
            };
            // From the log, the record of truth: the original envelope with
            // a proof against the latest checkpoint.
            let bundle = prov.bundle_for(r.log_index)?.to_json();
            Ok(GetProvenanceResponse {
                bundle,
                sbom_cyclonedx: read(&r.sbom_cyclonedx)?.unwrap_or_default(),
                sbom_spdx: read(&r.sbom_spdx)?.unwrap_or_default(),
                r#ref: Some(r),
            })
        })
        .await
    }

    async fn rotate(&self, principal: String) -> Result<RotateKeyResponse> {
        let prov = self.provenance();
        blocking(move || {
            prov.with(|a| {
                let keyid = a
                    .rotate()
                    .map_err(|e| Error::Internal(format!("cannot rotate the signing key: {e}")))?;
                info!(keyid = %keyid, principal = %principal, "signing key rotated");
                a.log_admin(
                    "key.rotate",
                    &principal,
                    &serde_json::json!({"keyid": keyid}),
                )
                .map_err(|e| Error::Internal(format!("cannot log the key rotation: {e}")))?;
                Ok(RotateKeyResponse {
                    keyid,
                    keyring: a.keyring().to_json(),
                })
            })
        })
        .await
    }

    async fn revoke(&self, principal: String, keyid: String) -> Result<RevokeKeyResponse> {
        let prov = self.provenance();
        blocking(move || {
            prov.with(|a| {
                a.keyring()
                    .get(&keyid)
                    .map_err(|e| Error::NotFound(e.to_string()))?;
                let proof = a.revoke(&keyid).map_err(|e| match e {
                    hermetic_attest::AttestError::Key(k) => {
                        Error::FailedPrecondition(k.to_string())
                    }
                    e => Error::Internal(format!("cannot revoke key {keyid}: {e}")),
                })?;
                info!(keyid = %keyid, log_index = proof.log_index, principal = %principal, "signing key revoked");
                a.log_admin(
                    "key.revoke",
                    &principal,
                    &serde_json::json!({"keyid": keyid, "revocation_index": proof.log_index}),
                )
                .map_err(|e| Error::Internal(format!("cannot log the key revocation: {e}")))?;
                Ok(RevokeKeyResponse {
                    log_index: proof.log_index,
                    keyring: a.keyring().to_json(),
                })
            })
        })
        .await
    }
}

#[tonic::async_trait]
impl hermetic_proto::Provenance for ProvenanceService {
    #[instrument(skip_all, fields(operation = %request.get_ref().operation))]
    async fn get_provenance(
        &self,
        request: Request<GetProvenanceRequest>,
    ) -> Result<Response<GetProvenanceResponse>, Status> {
        Ok(Response::new(
            ProvenanceService::get_provenance(self, request.into_inner()).await?,
        ))
    }

    async fn get_keyring(
        &self,
        _request: Request<GetKeyringRequest>,
    ) -> Result<Response<GetKeyringResponse>, Status> {
        let prov = self.provenance();
        let keyring = blocking(move || Ok(prov.with(|a| a.keyring().to_json()))).await?;
        Ok(Response::new(GetKeyringResponse { keyring }))
    }

    async fn get_checkpoint(
        &self,
        _request: Request<GetCheckpointRequest>,
    ) -> Result<Response<GetCheckpointResponse>, Status> {
        let prov = self.provenance();
        let (checkpoint, tree_size) = blocking(move || {
            Ok(prov.with(|a| (a.checkpoint().to_owned(), a.log().checkpoint_size())))
        })
        .await?;
        Ok(Response::new(GetCheckpointResponse {
            checkpoint,
            tree_size,
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<GetConsistencyProofRequest>,
    ) -> Result<Response<GetConsistencyProofResponse>, Status> {
        let req = request.into_inner();
        let prov = self.provenance();
        let r =
            blocking(move || {
                prov.with(|a| {
            let latest = a.log().checkpoint_size();
            let new = if req.new_size == 0 {
                latest
            } else {
                req.new_size
            };
            if req.old_size == 0 || req.old_size > new || new > latest {
                return Err(Error::InvalidArgument(format!(
                    "a consistency proof needs 1 <= old_size ({}) <= new_size ({new}) <= the \
                     latest checkpoint's size ({latest})",
                    req.old_size
                )));
            }
            let proof = a
                .log()
                .consistency_proof(req.old_size, new)
                .map_err(|e| Error::Internal(e.to_string()))?;
            Ok(GetConsistencyProofResponse {
                proof: proof.iter().map(|h| crate::provenance::record::hex(h)).collect(),
                old_size: req.old_size,
                new_size: new,
                checkpoint: a.checkpoint().to_owned(),
            })
        })
            })
            .await?;
        Ok(Response::new(r))
    }

    async fn rotate_key(
        &self,
        request: Request<RotateKeyRequest>,
    ) -> Result<Response<RotateKeyResponse>, Status> {
        let principal = crate::gc::service::principal_of(&request);
        Ok(Response::new(self.rotate(principal).await?))
    }

    async fn revoke_key(
        &self,
        request: Request<RevokeKeyRequest>,
    ) -> Result<Response<RevokeKeyResponse>, Status> {
        let principal = crate::gc::service::principal_of(&request);
        let keyid = request.into_inner().keyid;
        if keyid.is_empty() {
            return Err(Error::InvalidArgument("keyid is empty".into()).into());
        }
        Ok(Response::new(self.revoke(principal, keyid).await?))
    }
}
