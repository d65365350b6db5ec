//! The daemon over gRPC: only the Remote Execution API (CAS, ByteStream,
//! Execution, ActionCache, Capabilities, Operations) and `hermetic.v1`.

use std::pin::Pin;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionResult, BatchReadBlobsRequest, BatchUpdateBlobsRequest, Digest, Directory,
    ExecuteRequest, FindMissingBlobsRequest, GetActionResultRequest, GetCapabilitiesRequest,
    GetTreeRequest, ServerCapabilities, WaitExecutionRequest,
    action_cache_client::ActionCacheClient, batch_update_blobs_request,
    capabilities_client::CapabilitiesClient,
    content_addressable_storage_client::ContentAddressableStorageClient,
    execution_client::ExecutionClient,
};
use bazel_remote_apis::google::bytestream::{
    ReadRequest, WriteRequest, byte_stream_client::ByteStreamClient,
};
use bazel_remote_apis::google::longrunning::{
    GetOperationRequest, Operation, operations_client::OperationsClient,
};
use tokio::io::AsyncReadExt;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Channel;

use crate::action::{Blob, Source};
use crate::digests::Function;
use crate::error::{Error, Result};

/// An Execute or WaitExecution stream.
pub type OpStream = Pin<Box<dyn Stream<Item = Result<Operation, tonic::Status>> + Send>>;

/// ByteStream chunk size.
const CHUNK: usize = 1 << 20;
/// Largest message we accept.
const MAX_MESSAGE: usize = 64 << 20;
/// Digests per FindMissingBlobs request.
const FIND_BATCH: usize = 4096;
/// Room for framing in a batch request.
const BATCH_OVERHEAD: u64 = 64 << 10;

/// A connected daemon.
#[derive(Debug, Clone)]
pub struct Remote {
    channel: Channel,
    instance: String,
    max_batch: u64,
}

impl Remote {
    /// A client over `channel`; call [`Remote::capabilities`] to learn the
    /// batch limit.
    pub fn new(channel: Channel, instance: String) -> Self {
        Remote {
            channel,
            instance,
            max_batch: 1 << 20,
        }
    }

    fn cas(&self) -> ContentAddressableStorageClient<Channel> {
        ContentAddressableStorageClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    fn bytestream(&self) -> ByteStreamClient<Channel> {
        ByteStreamClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }

    /// The connection, for services without a wrapper here.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// GetCapabilities; remembers the batch limit and checks that the
    /// daemon executes with `f`.
    pub async fn capabilities(&mut self, f: Option<Function>) -> Result<ServerCapabilities> {
        let caps = CapabilitiesClient::new(self.channel.clone())
            .get_capabilities(GetCapabilitiesRequest {
                instance_name: self.instance.clone(),
            })
            .await
            .map_err(Error::rpc("GetCapabilities"))?
            .into_inner();
        if let Some(c) = &caps.cache_capabilities
            && c.max_batch_total_size_bytes > 0
        {
            self.max_batch = c.max_batch_total_size_bytes as u64;
        }
        if let Some(f) = f {
            let offered = caps
                .execution_capabilities
                .as_ref()
                .map(|e| e.digest_functions.clone())
                .unwrap_or_default();
            if !offered.is_empty() && !offered.contains(&f.to_proto()) {
                return Err(Error::InvalidJob(format!(
                    "the daemon does not execute with digest function {}",
                    f.name()
                )));
            }
        }
        Ok(caps)
    }

    fn blob_path(f: Function, d: &Digest) -> String {
        match f {
            // REAPI omits the function for SHA-256, for older servers.
            Function::Sha256 => format!("blobs/{}/{}", d.hash, d.size_bytes),
            Function::Blake3 => format!("blobs/blake3/{}/{}", d.hash, d.size_bytes),
        }
    }

    fn prefixed(&self, rest: String) -> String {
        if self.instance.is_empty() {
            rest
        } else {
            format!("{}/{rest}", self.instance)
        }
    }

    /// The digests among `digests` the daemon lacks.
    pub async fn find_missing(&self, f: Function, digests: Vec<Digest>) -> Result<Vec<Digest>> {
        let mut missing = Vec::new();
        let mut cas = self.cas();
        for chunk in digests.chunks(FIND_BATCH) {
            let resp = cas
                .find_missing_blobs(FindMissingBlobsRequest {
                    instance_name: self.instance.clone(),
                    blob_digests: chunk.to_vec(),
                    digest_function: f.to_proto(),
                })
                .await
                .map_err(Error::rpc("FindMissingBlobs"))?;
            missing.extend(resp.into_inner().missing_blob_digests);
        }
        Ok(missing)
    }

    /// GetTree: every `Directory` of the tree under `root` the daemon holds
    /// (a subdirectory it lacks is left out, with what is below it), all
    /// pages. NotFound when it lacks the root itself.
    pub async fn get_tree(&self, f: Function, root: &Digest) -> Result<Vec<Directory>> {
        let mut dirs = Vec::new();
        let mut page_token = String::new();
        loop {
            let mut stream = self
                .cas()
                .get_tree(GetTreeRequest {
                    instance_name: self.instance.clone(),
                    root_digest: Some(root.clone()),
                    page_size: 0,
                    page_token: page_token.clone(),
                    digest_function: f.to_proto(),
                })
                .await
                .map_err(Error::rpc("GetTree"))?
                .into_inner();
            let mut next = String::new();
            while let Some(page) = stream.next().await {
                let page = page.map_err(Error::rpc("GetTree"))?;
                dirs.extend(page.directories);
                next = page.next_page_token;
            }
            // The server streams every page; a token left on the last one
            // means it stopped early: ask again from there.
            if next.is_empty() || next == page_token {
                return Ok(dirs);
            }
            page_token = next;
        }
    }

    /// Uploads blobs: small ones with BatchUpdateBlobs, large ones with
    /// ByteStream Write. `progress` gets byte counts as they go.
    pub async fn upload(
        &self,
        f: Function,
        blobs: Vec<Blob>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        let limit = self.max_batch.saturating_sub(BATCH_OVERHEAD).max(1);
        let (small, large): (Vec<Blob>, Vec<Blob>) = blobs
            .into_iter()
            .partition(|b| (b.digest.size_bytes as u64) < limit);
        let mut batch = Vec::new();
        let mut batch_bytes = 0u64;
        for b in small {
            let size = b.digest.size_bytes as u64;
            if batch_bytes + size > limit {
                self.send_batch(f, std::mem::take(&mut batch), progress)
                    .await?;
                batch_bytes = 0;
            }
            let data = match b.source {
                Source::Bytes(d) => d,
                Source::File(p) => tokio::fs::read(&p).await.map_err(Error::io("read", &p))?,
            };
            batch_bytes += size;
            batch.push(batch_update_blobs_request::Request {
                digest: Some(b.digest),
                data,
                compressor: 0,
            });
        }
        if !batch.is_empty() {
            self.send_batch(f, batch, progress).await?;
        }
        for b in large {
            self.write(f, b, progress).await?;
        }
        Ok(())
    }

    async fn send_batch(
        &self,
        f: Function,
        requests: Vec<batch_update_blobs_request::Request>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        let bytes: u64 = requests.iter().map(|r| r.data.len() as u64).sum();
        let resp = self
            .cas()
            .batch_update_blobs(BatchUpdateBlobsRequest {
                instance_name: self.instance.clone(),
                requests,
                digest_function: f.to_proto(),
            })
            .await
            .map_err(Error::rpc("BatchUpdateBlobs"))?
            .into_inner();
        for r in resp.responses {
            if let Some(s) = r.status.filter(|s| s.code != 0) {
                let hash = r.digest.map(|d| d.hash).unwrap_or_default();
                return Err(Error::Rpc {
                    what: format!("BatchUpdateBlobs of {hash}"),
                    status_code: tonic::Code::from_i32(s.code),
                    message: s.message,
                });
            }
        }
        progress(bytes);
        Ok(())
    }

    /// One blob with ByteStream Write, streamed from its source.
    async fn write(&self, f: Function, blob: Blob, progress: &(dyn Fn(u64) + Sync)) -> Result<()> {
        let resource = self.prefixed(format!(
            "uploads/{}/{}",
            uuid::Uuid::new_v4(),
            Self::blob_path(f, &blob.digest)
        ));
        let total = blob.digest.size_bytes;
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteRequest>(4);
        let source = blob.source.clone();
        let reader = tokio::spawn(async move {
            let mut offset = 0i64;
            let mut file = match &source {
                Source::File(p) => Some(
                    tokio::fs::File::open(p)
                        .await
                        .map_err(Error::io("open", p))?,
                ),
                Source::Bytes(_) => None,
            };
            let mut first = true;
            loop {
                let data = match (&mut file, &source) {
                    (Some(file), Source::File(p)) => {
                        let mut buf = vec![0u8; CHUNK];
                        let n = file.read(&mut buf).await.map_err(Error::io("read", p))?;
                        buf.truncate(n);
                        buf
                    }
                    (_, Source::Bytes(b)) => {
                        let start = offset as usize;
                        b[start..(start + CHUNK).min(b.len())].to_vec()
                    }
                    _ => unreachable!("a file source has a file"),
                };
                let n = data.len() as i64;
                let finish = offset + n >= total;
                let req = WriteRequest {
                    resource_name: if first {
                        resource.clone()
                    } else {
                        String::new()
                    },
                    write_offset: offset,
                    finish_write: finish,
                    data,
                };
                first = false;
                offset += n;
                if tx.send(req).await.is_err() || finish {
                    break;
                }
                if n == 0 {
                    return Err(Error::Infra(format!(
                        "{resource}: the input file shrank while uploading"
                    )));
                }
            }
            Ok::<i64, Error>(offset)
        });
        let resp = self
            .bytestream()
            .write(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        let read = reader
            .await
            .map_err(|e| Error::Infra(format!("upload task failed: {e}")))??;
        let resp = resp.map_err(Error::rpc(format!(
            "ByteStream Write of {}",
            blob.digest.hash
        )))?;
        if resp.into_inner().committed_size != total || read != total {
            return Err(Error::Infra(format!(
                "ByteStream Write of {} committed a different size",
                blob.digest.hash
            )));
        }
        progress(total as u64);
        Ok(())
    }

    /// Execute, streaming the operation.
    pub async fn execute(&self, f: Function, action: Digest, skip_cache: bool) -> Result<OpStream> {
        let stream = ExecutionClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .execute(ExecuteRequest {
                instance_name: self.instance.clone(),
                skip_cache_lookup: skip_cache,
                action_digest: Some(action),
                digest_function: f.to_proto(),
                ..Default::default()
            })
            .await
            .map_err(Error::rpc("Execute"))?
            .into_inner();
        Ok(Box::pin(stream))
    }

    /// WaitExecution of an operation.
    pub async fn wait_execution(&self, name: &str) -> Result<OpStream> {
        let stream = ExecutionClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .wait_execution(WaitExecutionRequest { name: name.into() })
            .await
            .map_err(Error::rpc("WaitExecution"))?
            .into_inner();
        Ok(Box::pin(stream))
    }

    /// GetOperation.
    pub async fn get_operation(&self, name: &str) -> Result<Operation> {
        Ok(OperationsClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .get_operation(GetOperationRequest { name: name.into() })
            .await
            .map_err(Error::rpc("GetOperation"))?
            .into_inner())
    }

    /// GetActionResult; `None` when not cached.
    pub async fn action_result(&self, f: Function, action: Digest) -> Result<Option<ActionResult>> {
        match ActionCacheClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .get_action_result(GetActionResultRequest {
                instance_name: self.instance.clone(),
                action_digest: Some(action),
                digest_function: f.to_proto(),
                ..Default::default()
            })
            .await
        {
            Ok(r) => Ok(Some(r.into_inner())),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(Error::rpc("GetActionResult")(s)),
        }
    }

    /// A whole blob: BatchReadBlobs when it fits a batch, else ByteStream
    /// Read. Not verified here (see `download`).
    pub async fn read(&self, f: Function, d: &Digest) -> Result<Vec<u8>> {
        if (d.size_bytes as u64) < self.max_batch.saturating_sub(BATCH_OVERHEAD) {
            let mut resp = self
                .cas()
                .batch_read_blobs(BatchReadBlobsRequest {
                    instance_name: self.instance.clone(),
                    digests: vec![d.clone()],
                    digest_function: f.to_proto(),
                    ..Default::default()
                })
                .await
                .map_err(Error::rpc("BatchReadBlobs"))?
                .into_inner()
                .responses;
            let r = resp
                .pop()
                .ok_or_else(|| Error::Infra("BatchReadBlobs answered nothing".into()))?;
            if let Some(s) = r.status.filter(|s| s.code != 0) {
                return Err(Error::Rpc {
                    what: format!("BatchReadBlobs of {}", d.hash),
                    status_code: tonic::Code::from_i32(s.code),
                    message: s.message,
                });
            }
            return Ok(r.data);
        }
        let mut out = Vec::with_capacity(d.size_bytes as usize);
        let mut stream = self.read_stream(f, d).await?;
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    /// A blob's bytes in chunks, with ByteStream Read.
    pub async fn read_stream(
        &self,
        f: Function,
        d: &Digest,
    ) -> Result<Pin<Box<dyn Stream<Item = Result<Vec<u8>>> + Send>>> {
        let what = format!("ByteStream Read of {}", d.hash);
        let stream = self
            .bytestream()
            .read(ReadRequest {
                resource_name: self.prefixed(Self::blob_path(f, d)),
                read_offset: 0,
                read_limit: 0,
            })
            .await
            .map_err(Error::rpc(what.clone()))?
            .into_inner();
        Ok(Box::pin(stream.map(move |r| {
            r.map(|c| c.data).map_err(Error::rpc(what.clone()))
        })))
    }

    /// A `hermetic.v1.Provenance` client on this connection.
    pub fn provenance(&self) -> hermetic_proto::ProvenanceClient<Channel> {
        hermetic_proto::ProvenanceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// `hermetic.v1.Status/GetStatus`.
    pub async fn status(&self) -> Result<hermetic_proto::v1::GetStatusResponse> {
        Ok(hermetic_proto::StatusClient::new(self.channel.clone())
            .get_status(hermetic_proto::v1::GetStatusRequest {})
            .await
            .map_err(Error::rpc("hermetic.v1.Status/GetStatus"))?
            .into_inner())
    }
}
