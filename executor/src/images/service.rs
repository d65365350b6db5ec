//! `hermetic.v1.Images`: thin handlers over the [`ImageStore`]: parse,
//! call the store on a blocking thread, map the error.

use std::sync::Arc;

use hermetic_image::ImportOptions;
use hermetic_proto::v1::{
    Image, ImportImageRequest, ImportImageResponse, InspectImageRequest, ListImagesRequest,
    ListImagesResponse, Normalization, RemoveImageRequest, RemoveImageResponse, SetTrustRequest,
    TrustRecord as ProtoTrust,
};
use tonic::{Request, Response, Status};
use tracing::{info, instrument};

use crate::cas::blocking;
use crate::digest::{BlobKey, DigestFunction};
use crate::error::{Error, Result};
use crate::images::store::{ImageInfo, ImageStore, Origin};
use crate::images::trust::now_rfc3339;
use crate::service::Context;

/// The Images service.
#[derive(Debug, Clone)]
pub struct ImagesService {
    ctx: Arc<Context>,
}

impl ImagesService {
    /// A service over `ctx` (its engine's image store).
    pub fn new(ctx: Arc<Context>) -> Self {
        ImagesService { ctx }
    }

    fn store(&self) -> Arc<ImageStore> {
        self.ctx.engine.choices().images.clone()
    }
}

/// Who sent a request: the principal the authentication layer found
/// (`unix uid N`, `x509 SUBJECT`, `anonymous`), else what the connection
/// says (`unix uid N` on a Unix socket, `tcp ADDR` on TCP).
pub fn peer<T>(request: &Request<T>) -> String {
    if let Some(caller) = request.extensions().get::<crate::auth::Caller>() {
        return match &caller.principal {
            crate::auth::Principal::Unix { uid, .. } => format!("unix uid {uid}"),
            crate::auth::Principal::Cert { subject } => format!("x509 {subject}"),
            crate::auth::Principal::Anonymous => "anonymous".into(),
        };
    }
    if let Some(info) = request
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
    {
        return match info.peer_cred {
            Some(cred) => format!("unix uid {}", cred.uid()),
            None => "unix peer".into(),
        };
    }
    match request.remote_addr() {
        Some(addr) => format!("tcp {addr}"),
        None => "unknown peer".into(),
    }
}

/// Sample paths as `LAYER: PATH`; a layer named by a host path (a rootfs
/// tarball, here a CAS blob) says nothing to the client and is left out.
fn entry_paths(paths: &[String]) -> Vec<String> {
    paths
        .iter()
        .map(|p| match p.split_once(": ") {
            Some((layer, path)) if layer.starts_with('/') => path.to_owned(),
            _ => p.clone(),
        })
        .collect()
}

/// The proto form of an image.
pub fn to_proto(info: &ImageInfo) -> Image {
    let r = &info.record;
    let n = &r.normalized;
    Image {
        digest: info.digest.to_string(),
        digest_blake3: r.digest_blake3.clone(),
        digest_sha256: r.digest_sha256.clone(),
        source_manifest_digest: r.source_manifest_digest.clone().unwrap_or_default(),
        aliases: info.aliases.clone(),
        total_bytes: r.total_bytes,
        files: r.files,
        trusted: info.trusted(),
        trust: info.trust.as_ref().map(|t| ProtoTrust {
            trusted: t.trusted,
            by: t.by.clone(),
            at: t.at.clone(),
            canonical: t.trust_record_bytes(),
        }),
        normalized: Some(Normalization {
            setid_stripped: n.setid_stripped.count,
            setid_stripped_paths: entry_paths(&n.setid_stripped.paths),
            devices_dropped: n.devices_dropped.count,
            devices_dropped_paths: entry_paths(&n.devices_dropped.paths),
            fifos_dropped: n.fifos_dropped.count,
            hardlinks: n.hardlinks,
            ownership_reset: n.ownership_reset,
            xattrs_dropped: n.xattrs_dropped,
            whiteouts: n.whiteouts,
            opaque_dirs: n.opaque_dirs,
        }),
        source: info
            .origin
            .as_ref()
            .map(|o| o.source.clone())
            .unwrap_or_default(),
        imported_by: info
            .origin
            .as_ref()
            .map(|o| o.by.clone())
            .unwrap_or_default(),
        imported_at: info
            .origin
            .as_ref()
            .map(|o| o.at.clone())
            .unwrap_or_default(),
    }
}

impl ImagesService {
    async fn import(
        &self,
        by: String,
        principal: String,
        req: ImportImageRequest,
    ) -> Result<ImportImageResponse> {
        self.ctx.check_instance(&req.instance_name)?;
        let function = match req.digest_function.as_str() {
            "" | "blake3" => DigestFunction::Blake3,
            "sha256" => DigestFunction::Sha256,
            other => return Err(Error::UnsupportedDigestFunction(other.to_owned())),
        };
        let key = BlobKey::parse(function, &req.blob_hash, req.blob_size)?;
        if !req.alias.is_empty() {
            crate::images::reference::check_alias(&req.alias)?;
        }
        let mut opts = ImportOptions::default();
        if !req.platform.is_empty() {
            opts.platform = req.platform.clone();
        }
        if !req.reference.is_empty() {
            opts.reference = Some(req.reference.clone());
        }
        let _pin = self.ctx.store.pin(vec![key]);
        let (cas, images) = (self.ctx.store.clone(), self.store());
        let provenance = self.ctx.engine.provenance().clone();
        let imported = blocking(move || {
            let path = cas.variant_path(&key, false)?;
            let what = format!("archive {key:?}");
            let origin = Origin {
                source: format!("cas {key:?}"),
                by: by.clone(),
                at: now_rfc3339(),
            };
            let imported = images.import(&path, &what, &opts, origin)?;
            if !req.alias.is_empty() {
                images.set_alias(&req.alias, &imported.info.digest)?;
            }
            if req.trust {
                images.set_trust(&imported.info, true, &by)?;
            }
            let info = images.resolve(&imported.info.digest.to_string())?;
            provenance.log_admin(
                "image.import",
                &principal,
                &serde_json::json!({
                    "image": info.digest.to_string(),
                    "archive": format!("{key:?}"),
                    "alias": req.alias,
                    "trust": req.trust,
                    "new": imported.new,
                }),
            )?;
            if req.trust {
                provenance.log_trust(&info)?;
            }
            Ok((info, imported.new))
        })
        .await?;
        info!(image = %imported.0.digest, new = imported.1, "image imported");
        Ok(ImportImageResponse {
            image: Some(to_proto(&imported.0)),
            new: imported.1,
        })
    }

    async fn remove(
        &self,
        principal: String,
        req: RemoveImageRequest,
    ) -> Result<RemoveImageResponse> {
        let (images, ac) = (self.store(), self.ctx.action_cache.clone());
        let default = self.ctx.engine.choices().default_image.clone();
        let provenance = self.ctx.engine.provenance().clone();
        blocking(move || {
            let info = images.resolve(&req.image)?;
            let removed = images.remove(&info, &ac, default.as_ref())?;
            info!(image = %info.digest, "image removed");
            provenance.log_admin(
                "image.rm",
                &principal,
                &serde_json::json!({
                    "image": info.digest.to_string(),
                    "aliases_removed": removed,
                }),
            )?;
            Ok(RemoveImageResponse {
                digest: info.digest.to_string(),
                aliases_removed: removed,
            })
        })
        .await
    }
}

#[tonic::async_trait]
impl hermetic_proto::Images for ImagesService {
    #[instrument(skip_all)]
    async fn import(
        &self,
        request: Request<ImportImageRequest>,
    ) -> std::result::Result<Response<ImportImageResponse>, Status> {
        let by = peer(&request);
        let principal = crate::gc::service::principal_of(&request);
        Ok(Response::new(
            ImagesService::import(self, by, principal, request.into_inner()).await?,
        ))
    }

    #[instrument(skip_all)]
    async fn list(
        &self,
        _request: Request<ListImagesRequest>,
    ) -> std::result::Result<Response<ListImagesResponse>, Status> {
        let images = self.store();
        let list = blocking(move || images.list()).await?;
        Ok(Response::new(ListImagesResponse {
            images: list.iter().map(to_proto).collect(),
        }))
    }

    #[instrument(skip_all)]
    async fn inspect(
        &self,
        request: Request<InspectImageRequest>,
    ) -> std::result::Result<Response<Image>, Status> {
        let images = self.store();
        let name = request.into_inner().image;
        let info = blocking(move || images.resolve(&name)).await?;
        Ok(Response::new(to_proto(&info)))
    }

    #[instrument(skip_all)]
    async fn remove(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> std::result::Result<Response<RemoveImageResponse>, Status> {
        let principal = crate::gc::service::principal_of(&request);
        Ok(Response::new(
            ImagesService::remove(self, principal, request.into_inner()).await?,
        ))
    }

    #[instrument(skip_all)]
    async fn set_trust(
        &self,
        request: Request<SetTrustRequest>,
    ) -> std::result::Result<Response<Image>, Status> {
        let by = peer(&request);
        let principal = crate::gc::service::principal_of(&request);
        let images = self.store();
        let provenance = self.ctx.engine.provenance().clone();
        let req = request.into_inner();
        let info = blocking(move || {
            let info = images.resolve(&req.image)?;
            images.set_trust(&info, req.trusted, &by)?;
            info!(image = %info.digest, trusted = req.trusted, by = %by, "image trust recorded");
            let info = images.resolve(&info.digest.to_string())?;
            // Who decided, then the decision itself (the trust record).
            provenance.log_admin(
                if req.trusted {
                    "image.trust"
                } else {
                    "image.untrust"
                },
                &principal,
                &serde_json::json!({"image": info.digest.to_string()}),
            )?;
            provenance.log_trust(&info)?;
            Ok(info)
        })
        .await?;
        Ok(Response::new(to_proto(&info)))
    }
}
