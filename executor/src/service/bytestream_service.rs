//! ByteStream: Read with offset and limit, resumable Write, QueryWriteStatus.
//!
//! An interrupted Write keeps its temp file and running hash, keyed by
//! resource name, so the client can ask QueryWriteStatus and resume at the
//! committed offset. Idle partial uploads are dropped after an hour.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bazel_remote_apis::google::bytestream::{
    QueryWriteStatusRequest, QueryWriteStatusResponse, ReadRequest, ReadResponse, WriteRequest,
    WriteResponse, byte_stream_server::ByteStream,
};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::cas::blocking;
use crate::cas::store::BlobWriter;
use crate::digest::BlobKey;
use crate::error::{Error, Result};
use crate::service::Context;
use crate::service::resource_name::{parse_read, parse_write};
use crate::service::write_pipeline::WritePipeline;

/// Bytes per ReadResponse.
const READ_CHUNK: usize = 1 << 20;
/// How long an interrupted upload is kept.
const UPLOAD_IDLE: Duration = Duration::from_secs(3600);

/// A partial upload.
#[derive(Debug)]
struct Upload {
    writer: Option<BlobWriter>,
    last_used: Instant,
}

/// A partial upload and its committed size, readable while a write holds
/// the upload (QueryWriteStatus during a Write).
#[derive(Debug)]
struct Slot {
    committed: Arc<AtomicU64>,
    upload: tokio::sync::Mutex<Upload>,
}

type Uploads = Arc<Mutex<HashMap<String, Arc<Slot>>>>;

/// The ByteStream service.
#[derive(Debug, Clone)]
pub struct ByteStreamService {
    ctx: Arc<Context>,
    uploads: Uploads,
}

impl ByteStreamService {
    /// A service over `ctx`.
    pub fn new(ctx: Arc<Context>) -> Self {
        ByteStreamService {
            ctx,
            uploads: Arc::default(),
        }
    }

    fn uploads(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn read_inner(
        &self,
        req: ReadRequest,
    ) -> Result<tokio_stream::wrappers::ReceiverStream<Result<ReadResponse, Status>>> {
        let res = parse_read(&req.resource_name)?;
        self.ctx.check_instance(&res.instance)?;
        let size = res.key.size;
        if req.read_offset < 0 || req.read_offset as u64 > size {
            return Err(Error::OutOfRange(format!(
                "read_offset {} is outside the blob of {size} bytes",
                req.read_offset
            )));
        }
        if req.read_limit < 0 {
            return Err(Error::OutOfRange(format!(
                "negative read_limit {}",
                req.read_limit
            )));
        }
        let offset = req.read_offset as u64;
        let mut remaining = size - offset;
        if req.read_limit > 0 {
            remaining = remaining.min(req.read_limit as u64);
        }
        let store = self.ctx.store.clone();
        let key = res.key;
        let mut file = blocking(move || store.open_blob(&key)).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            if remaining == 0 {
                let _ = tx.blocking_send(Ok(ReadResponse { data: Vec::new() }));
                return;
            }
            if let Err(e) = file.seek(SeekFrom::Start(offset)) {
                let _ = tx.blocking_send(Err(Status::internal(format!("seek failed: {e}"))));
                return;
            }
            while remaining > 0 {
                let mut buf = vec![0u8; remaining.min(READ_CHUNK as u64) as usize];
                if let Err(e) = file.read_exact(&mut buf) {
                    let _ = tx.blocking_send(Err(Status::internal(format!("read failed: {e}"))));
                    return;
                }
                remaining -= buf.len() as u64;
                if tx.blocking_send(Ok(ReadResponse { data: buf })).is_err() {
                    return;
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    async fn write_inner(&self, mut stream: Streaming<WriteRequest>) -> Result<WriteResponse> {
        let first = stream
            .next()
            .await
            .ok_or_else(|| Error::InvalidArgument("empty write stream".into()))?
            .map_err(|e| Error::Cancelled(format!("write stream failed: {e}")))?;
        let name = first.resource_name.clone();
        let res = parse_write(&name)?;
        self.ctx.check_instance(&res.instance)?;
        let key = res.key;
        if key.size > self.ctx.config.cas.max_blob_size() {
            return Err(Error::InvalidArgument(format!(
                "blob of {} bytes exceeds the limit of {}",
                key.size,
                self.ctx.config.cas.max_blob_size()
            )));
        }
        let done = WriteResponse {
            committed_size: key.size as i64,
        };
        if self.ctx.store.contains(&key) {
            self.uploads().remove(&name);
            return Ok(done);
        }
        let slot = self.upload_for(&name, key)?;
        let mut upload = slot.upload.try_lock().map_err(|_| {
            Error::FailedPrecondition(format!("another write to {name:?} is in progress"))
        })?;
        upload.last_used = Instant::now();
        let Some(writer) = upload.writer.take() else {
            // An earlier write failed and lost the temp file.
            self.uploads().remove(&name);
            return Err(Error::Internal(format!(
                "upload {name:?} was lost; start again"
            )));
        };
        let mut sent = writer.written();
        let pipe = WritePipeline::start(writer, slot.committed.clone());
        let mut msg = Some(first);
        // Ok(true): finish_write; Ok(false): stored meanwhile by another
        // client; Err: the upload stays resumable unless removed below.
        let outcome: Result<bool> = loop {
            let req = match msg.take() {
                Some(m) => m,
                None => match stream.next().await {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        break Err(Error::Cancelled(format!("write stream failed: {e}")));
                    }
                    None => {
                        break Err(Error::InvalidArgument(
                            "write stream ended before finish_write".into(),
                        ));
                    }
                },
            };
            if !req.resource_name.is_empty() && req.resource_name != name {
                break Err(Error::InvalidArgument(format!(
                    "resource_name changed mid-stream from {name:?} to {:?}",
                    req.resource_name
                )));
            }
            if req.write_offset < 0 || req.write_offset as u64 != sent {
                break Err(Error::InvalidArgument(format!(
                    "write_offset {} does not match the committed size {sent}",
                    req.write_offset
                )));
            }
            if sent + req.data.len() as u64 > key.size {
                self.uploads().remove(&name);
                break Err(Error::InvalidArgument(format!(
                    "more data than the digest's size {}",
                    key.size
                )));
            }
            sent += req.data.len() as u64;
            if pipe.send(req.data).await.is_err() {
                break Ok(false); // the writer failed: reported below
            }
            upload.last_used = Instant::now();
            if req.finish_write {
                break Ok(true);
            }
            if self.ctx.store.contains(&key) {
                break Ok(false);
            }
        };
        let (writer, written) = pipe.finish().await?;
        upload.last_used = Instant::now();
        if let Err(e) = written {
            self.uploads().remove(&name);
            return Err(e);
        }
        match outcome {
            Ok(true) => {
                self.uploads().remove(&name);
                if writer.written() != key.size {
                    return Err(Error::InvalidArgument(format!(
                        "finish_write after {} bytes; the digest says {}",
                        writer.written(),
                        key.size
                    )));
                }
                let store = self.ctx.store.clone();
                blocking(move || store.commit(writer, key)).await?;
                Ok(done)
            }
            Ok(false) => {
                self.uploads().remove(&name);
                Ok(done)
            }
            Err(e) => {
                upload.writer = Some(writer);
                Err(e)
            }
        }
    }

    /// The partial upload for `name`, created when absent.
    fn upload_for(&self, name: &str, key: BlobKey) -> Result<Arc<Slot>> {
        let mut uploads = self.uploads();
        uploads.retain(|_, u| {
            u.upload
                .try_lock()
                .map(|u| u.last_used.elapsed() < UPLOAD_IDLE)
                .unwrap_or(true)
        });
        if let Some(u) = uploads.get(name) {
            return Ok(u.clone());
        }
        let writer = self.ctx.store.writer_for(key)?;
        let u = Arc::new(Slot {
            committed: Arc::new(AtomicU64::new(0)),
            upload: tokio::sync::Mutex::new(Upload {
                writer: Some(writer),
                last_used: Instant::now(),
            }),
        });
        uploads.insert(name.to_owned(), u.clone());
        Ok(u)
    }

    fn query(&self, req: QueryWriteStatusRequest) -> Result<QueryWriteStatusResponse> {
        let res = parse_write(&req.resource_name)?;
        self.ctx.check_instance(&res.instance)?;
        if self.ctx.store.contains(&res.key) {
            return Ok(QueryWriteStatusResponse {
                committed_size: res.key.size as i64,
                complete: true,
            });
        }
        let slot = self.uploads().get(&req.resource_name).cloned();
        let Some(slot) = slot else {
            return Err(Error::NotFound(format!(
                "no upload in progress for {:?}",
                req.resource_name
            )));
        };
        // Bytes written so far, also while a Write is streaming more.
        let committed = slot.committed.load(Ordering::Acquire);
        Ok(QueryWriteStatusResponse {
            committed_size: committed as i64,
            complete: false,
        })
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ByteStream for ByteStreamService {
    type ReadStream = BoxStream<ReadResponse>;

    #[tracing::instrument(skip_all, fields(resource = %request.get_ref().resource_name))]
    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let stream = self.read_inner(request.into_inner()).await?;
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(skip_all)]
    async fn write(
        &self,
        request: Request<Streaming<WriteRequest>>,
    ) -> Result<Response<WriteResponse>, Status> {
        Ok(Response::new(self.write_inner(request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all, fields(resource = %request.get_ref().resource_name))]
    async fn query_write_status(
        &self,
        request: Request<QueryWriteStatusRequest>,
    ) -> Result<Response<QueryWriteStatusResponse>, Status> {
        Ok(Response::new(self.query(request.into_inner())?))
    }
}
