//! Content-addressed storage: the on-disk store, its index, and Directory
//! tree validation.

pub mod batch;
pub mod direct;
pub mod index;
pub mod journal;
pub mod store;
pub mod tree;

pub use store::Store;

/// Runs blocking store work off the async runtime.
pub async fn blocking<T, F>(f: F) -> crate::error::Result<T>
where
    F: FnOnce() -> crate::error::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| crate::error::Error::Internal(format!("blocking task failed: {e}")))?
}
