//! A ByteStream upload's hashing and writing on two blocking threads of
//! their own, each fed through a short queue: the connection keeps
//! receiving the next messages while earlier ones are digested and written,
//! and digesting overlaps writing (instead of one round trip to a blocking
//! thread per message doing both in turn).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cas::store::BlobWriter;
use crate::digest::Hasher;
use crate::error::{Error, Result};

/// Messages queued ahead of each thread at most.
const QUEUE: usize = 4;

/// A writer and its hasher running on their own threads.
#[derive(Debug)]
pub struct WritePipeline {
    to_writer: mpsc::Sender<Arc<Vec<u8>>>,
    to_hasher: mpsc::Sender<Arc<Vec<u8>>>,
    writer: JoinHandle<(BlobWriter, Result<()>)>,
    hasher: JoinHandle<Hasher>,
}

impl WritePipeline {
    /// Starts the threads; `committed` follows the bytes written.
    pub fn start(writer: BlobWriter, committed: Arc<AtomicU64>) -> Self {
        let (to_writer, mut data_w) = mpsc::channel::<Arc<Vec<u8>>>(QUEUE);
        let (to_hasher, mut data_h) = mpsc::channel::<Arc<Vec<u8>>>(QUEUE);
        let mut hasher = writer.hasher();
        let hasher = tokio::task::spawn_blocking(move || {
            while let Some(data) = data_h.blocking_recv() {
                hasher.update(&data);
            }
            hasher
        });
        let writer = tokio::task::spawn_blocking(move || {
            let mut writer = writer;
            while let Some(data) = data_w.blocking_recv() {
                if let Err(e) = writer.write_unhashed(&data) {
                    return (writer, Err(e));
                }
                committed.store(writer.written(), Ordering::Release);
            }
            (writer, Ok(()))
        });
        WritePipeline {
            to_writer,
            to_hasher,
            writer,
            hasher,
        }
    }

    /// Queues bytes; fails when the writer stopped on an error (which
    /// [`WritePipeline::finish`] then returns).
    pub async fn send(&self, data: Vec<u8>) -> std::result::Result<(), ()> {
        let data = Arc::new(data);
        self.to_hasher.send(data.clone()).await.map_err(|_| ())?;
        self.to_writer.send(data).await.map_err(|_| ())
    }

    /// Waits for everything queued to be hashed and written and returns
    /// the writer (its hash covering every byte written) with the first
    /// write error, if any.
    pub async fn finish(self) -> Result<(BlobWriter, Result<()>)> {
        drop(self.to_writer);
        drop(self.to_hasher);
        let join =
            |e: tokio::task::JoinError| Error::Internal(format!("upload writer failed: {e}"));
        let hasher = self.hasher.await.map_err(join)?;
        let (mut writer, written) = self.writer.await.map_err(join)?;
        writer.set_hasher(hasher);
        Ok((writer, written))
    }
}
