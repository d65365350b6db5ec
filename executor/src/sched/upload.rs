//! The uploaded-bytes quota: request bytes of BatchUpdateBlobs and
//! ByteStream Write, per principal, in fixed windows of one period that
//! start with the principal's first upload. The request body is counted
//! as it arrives ([`CountedBody`]), so a streamed write stops at the
//! frame that crosses the limit with RESOURCE_EXHAUSTED, before the rest
//! is read.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
use hyper::body::Bytes;

use super::{QuotaConfig, QuotaExceeded};

/// gRPC methods whose request bytes count as uploads.
pub const UPLOAD_METHODS: [&str; 2] = [
    "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs",
    "/google.bytestream.ByteStream/Write",
];

/// Uploaded bytes per principal.
#[derive(Debug)]
pub struct UploadQuota {
    limit: u64,
    period: Duration,
    used: Mutex<HashMap<String, (Instant, u64)>>,
}

impl UploadQuota {
    /// The quota configured, or `None` when there is no limit.
    pub fn new(q: &QuotaConfig) -> Option<Arc<Self>> {
        (q.upload_bytes_per_period > 0).then(|| {
            Arc::new(UploadQuota {
                limit: q.upload_bytes_per_period,
                period: Duration::from_secs(if q.upload_period_secs > 0 {
                    q.upload_period_secs
                } else {
                    3600
                }),
                used: Mutex::default(),
            })
        })
    }

    /// Adds `bytes` to `principal`'s use in the current window; refuses
    /// (adding nothing) when that would pass the limit.
    pub fn charge(&self, principal: &str, bytes: u64) -> Result<(), QuotaExceeded> {
        let now = Instant::now();
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        // Forget windows that ended, so the map holds active uploaders only.
        used.retain(|_, (start, _)| now.duration_since(*start) < self.period);
        let (start, n) = used.entry(principal.to_owned()).or_insert((now, 0));
        if *n + bytes > self.limit {
            let left = self.period.saturating_sub(now.duration_since(*start));
            return Err(QuotaExceeded(format!(
                "{principal} has uploaded {n} bytes in this period and {bytes} more would pass its quota of {} bytes per {} s; retry in {} s",
                self.limit,
                self.period.as_secs(),
                left.as_secs() + 1
            )));
        }
        *n += bytes;
        Ok(())
    }
}

/// A request body whose data frames are charged to a principal.
#[derive(Debug)]
pub struct CountedBody {
    inner: tonic::body::Body,
    quota: Arc<UploadQuota>,
    principal: String,
}

impl CountedBody {
    /// Wraps `inner`.
    pub fn new(inner: tonic::body::Body, quota: Arc<UploadQuota>, principal: String) -> Self {
        CountedBody {
            inner,
            quota,
            principal,
        }
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
            && let Err(e) = self.quota.charge(&self.principal, data.len() as u64)
        {
            return Poll::Ready(Some(Err(tonic::Status::resource_exhausted(e.0))));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_principal_has_its_own_allowance() {
        let q = UploadQuota::new(&QuotaConfig {
            upload_bytes_per_period: 100,
            ..Default::default()
        })
        .unwrap();
        q.charge("a", 60).unwrap();
        let err = q.charge("a", 50).unwrap_err();
        assert!(err.0.contains("a has uploaded 60 bytes"), "{err}");
        q.charge("b", 100).unwrap();
        q.charge("a", 40).unwrap();
        assert!(q.charge("a", 1).is_err());
    }
}
