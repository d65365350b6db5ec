//! ContentAddressableStorage: FindMissingBlobs, the batch calls and GetTree.

use std::pin::Pin;
use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    BatchReadBlobsRequest, BatchReadBlobsResponse, BatchUpdateBlobsRequest,
    BatchUpdateBlobsResponse, FindMissingBlobsRequest, FindMissingBlobsResponse,
    GetChunkMappingRequest, GetChunkMappingResponse, GetTreeRequest, GetTreeResponse,
    RegisterChunkMappingRequest, RegisterChunkMappingResponse, SpliceBlobRequest,
    SpliceBlobResponse, SplitBlobRequest, SplitBlobResponse, batch_read_blobs_response,
    batch_update_blobs_request, batch_update_blobs_response, compressor,
    content_addressable_storage_server::ContentAddressableStorage,
};
use prost::Message;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::cas::blocking;
use crate::cas::tree::{WalkOptions, walk};
use crate::digest::BlobKey;
use crate::error::{Error, Result, ok_status};
use crate::service::Context;

/// Directories per GetTree response when the client does not say.
const DEFAULT_TREE_PAGE: usize = 1000;
/// Bytes of directories per GetTree response at most.
const MAX_TREE_PAGE_BYTES: usize = 2 << 20;

/// The CAS service.
#[derive(Debug, Clone)]
pub struct CasService {
    ctx: Arc<Context>,
}

impl CasService {
    /// A service over `ctx`.
    pub fn new(ctx: Arc<Context>) -> Self {
        CasService { ctx }
    }

    fn batch_limit(&self) -> u64 {
        self.ctx.config.cas.max_batch_total_size()
    }

    async fn batch_update(&self, req: BatchUpdateBlobsRequest) -> Result<BatchUpdateBlobsResponse> {
        let function = self.ctx.request(&req.instance_name, req.digest_function)?;
        let total: u64 = req.requests.iter().map(|r| r.data.len() as u64).sum();
        if total > self.batch_limit() {
            return Err(Error::InvalidArgument(format!(
                "batch of {total} bytes exceeds max_batch_total_size_bytes {}; use ByteStream",
                self.batch_limit()
            )));
        }
        let store = self.ctx.store.clone();
        let max_blob = self.ctx.config.cas.max_blob_size();
        blocking(move || {
            let check = |r: &batch_update_blobs_request::Request| -> Result<BlobKey> {
                let key = BlobKey::from_opt(function, r.digest.as_ref(), "digest")?;
                if r.compressor != compressor::Value::Identity as i32 {
                    return Err(Error::InvalidArgument(
                        "compressed uploads are not supported".into(),
                    ));
                }
                if key.size > max_blob {
                    return Err(Error::InvalidArgument(format!(
                        "blob of {} bytes exceeds the limit of {max_blob}",
                        key.size
                    )));
                }
                Ok(key)
            };
            let checked: Vec<Result<BlobKey>> = req.requests.iter().map(check).collect();
            // The valid blobs are stored together (one group commit, see
            // `crate::cas::batch`); the others keep their error.
            let valid: Vec<(BlobKey, &[u8])> = checked
                .iter()
                .zip(&req.requests)
                .filter_map(|(k, r)| k.as_ref().ok().map(|k| (*k, r.data.as_slice())))
                .collect();
            let mut stored = store.put_batch(&valid).into_iter();
            let responses = checked
                .into_iter()
                .zip(&req.requests)
                .map(|(k, r)| {
                    let outcome = k.and_then(|_| {
                        stored.next().unwrap_or_else(|| {
                            Err(Error::Internal("a blob of the batch was not stored".into()))
                        })
                    });
                    batch_update_blobs_response::Response {
                        digest: r.digest.clone(),
                        status: Some(match outcome {
                            Ok(()) => ok_status(),
                            Err(e) => e.to_rpc_status(),
                        }),
                    }
                })
                .collect();
            Ok(BatchUpdateBlobsResponse { responses })
        })
        .await
    }

    async fn batch_read(&self, req: BatchReadBlobsRequest) -> Result<BatchReadBlobsResponse> {
        let function = self.ctx.request(&req.instance_name, req.digest_function)?;
        let keys: Vec<BlobKey> = req
            .digests
            .iter()
            .map(|d| BlobKey::from_proto(function, d))
            .collect::<Result<_>>()?;
        let total: u64 = keys.iter().map(|k| k.size).sum();
        if total > self.batch_limit() {
            return Err(Error::InvalidArgument(format!(
                "batch of {total} bytes exceeds max_batch_total_size_bytes {}; use ByteStream",
                self.batch_limit()
            )));
        }
        let store = self.ctx.store.clone();
        blocking(move || {
            let responses = keys
                .iter()
                .map(|k| {
                    let (data, status) = match store.read(k) {
                        Ok(d) => (d, ok_status()),
                        Err(e) => (Vec::new(), e.to_rpc_status()),
                    };
                    batch_read_blobs_response::Response {
                        digest: Some(k.to_proto()),
                        data,
                        compressor: compressor::Value::Identity as i32,
                        status: Some(status),
                    }
                })
                .collect();
            Ok(BatchReadBlobsResponse { responses })
        })
        .await
    }

    async fn tree_pages(&self, req: GetTreeRequest) -> Result<Vec<GetTreeResponse>> {
        let function = self.ctx.request(&req.instance_name, req.digest_function)?;
        let root = BlobKey::from_opt(function, req.root_digest.as_ref(), "root_digest")?;
        let start: usize = if req.page_token.is_empty() {
            0
        } else {
            req.page_token.parse().map_err(|_| {
                Error::InvalidArgument(format!("bad page_token {:?}", req.page_token))
            })?
        };
        let page_size = match req.page_size {
            n if n < 0 => return Err(Error::InvalidArgument("negative page_size".into())),
            0 => DEFAULT_TREE_PAGE,
            n => n as usize,
        };
        let store = self.ctx.store.clone();
        let max_depth = self.ctx.config.cas.max_tree_depth();
        let tree = blocking(move || {
            let opts = WalkOptions {
                validate: false,
                max_depth,
                check_files: false,
            };
            walk(&store, root, opts)
        })
        .await?;
        if tree.missing.contains(&root) {
            return Err(Error::NotFound(format!("root directory {root} not found")));
        }
        if start > tree.directories.len() {
            return Err(Error::InvalidArgument(format!(
                "page_token {start} is past the end"
            )));
        }
        let mut pages = Vec::new();
        let mut page = GetTreeResponse::default();
        let mut bytes = 0;
        for (i, (_, dir)) in tree.directories.into_iter().enumerate().skip(start) {
            let len = dir.encoded_len();
            if !page.directories.is_empty()
                && (page.directories.len() >= page_size || bytes + len > MAX_TREE_PAGE_BYTES)
            {
                page.next_page_token = i.to_string();
                pages.push(std::mem::take(&mut page));
                bytes = 0;
            }
            bytes += len;
            page.directories.push(dir);
        }
        pages.push(page);
        Ok(pages)
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ContentAddressableStorage for CasService {
    #[tracing::instrument(skip_all, fields(count = request.get_ref().blob_digests.len()))]
    async fn find_missing_blobs(
        &self,
        request: Request<FindMissingBlobsRequest>,
    ) -> Result<Response<FindMissingBlobsResponse>, Status> {
        let req = request.into_inner();
        let function = self.ctx.request(&req.instance_name, req.digest_function)?;
        let keys: Vec<BlobKey> = req
            .blob_digests
            .iter()
            .map(|d| BlobKey::from_proto(function, d))
            .collect::<Result<_>>()?;
        let missing = self.ctx.store.find_missing(&keys);
        Ok(Response::new(FindMissingBlobsResponse {
            missing_blob_digests: missing.iter().map(|k| k.to_proto()).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(count = request.get_ref().requests.len()))]
    async fn batch_update_blobs(
        &self,
        request: Request<BatchUpdateBlobsRequest>,
    ) -> Result<Response<BatchUpdateBlobsResponse>, Status> {
        Ok(Response::new(
            self.batch_update(request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(count = request.get_ref().digests.len()))]
    async fn batch_read_blobs(
        &self,
        request: Request<BatchReadBlobsRequest>,
    ) -> Result<Response<BatchReadBlobsResponse>, Status> {
        Ok(Response::new(self.batch_read(request.into_inner()).await?))
    }

    type GetTreeStream = BoxStream<GetTreeResponse>;

    #[tracing::instrument(skip_all)]
    async fn get_tree(
        &self,
        request: Request<GetTreeRequest>,
    ) -> Result<Response<Self::GetTreeStream>, Status> {
        let pages = self.tree_pages(request.into_inner()).await?;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            pages.into_iter().map(Ok),
        ))))
    }

    async fn split_blob(
        &self,
        _request: Request<SplitBlobRequest>,
    ) -> Result<Response<SplitBlobResponse>, Status> {
        Err(Error::Unimplemented("SplitBlob is not supported".into()).into())
    }

    type GetChunkMappingStream = BoxStream<GetChunkMappingResponse>;

    async fn get_chunk_mapping(
        &self,
        _request: Request<GetChunkMappingRequest>,
    ) -> Result<Response<Self::GetChunkMappingStream>, Status> {
        Err(Error::Unimplemented("GetChunkMapping is not supported".into()).into())
    }

    async fn splice_blob(
        &self,
        _request: Request<SpliceBlobRequest>,
    ) -> Result<Response<SpliceBlobResponse>, Status> {
        Err(Error::Unimplemented("SpliceBlob is not supported".into()).into())
    }

    async fn register_chunk_mapping(
        &self,
        _request: Request<Streaming<RegisterChunkMappingRequest>>,
    ) -> Result<Response<RegisterChunkMappingResponse>, Status> {
        Err(Error::Unimplemented("RegisterChunkMapping is not supported".into()).into())
    }
}
