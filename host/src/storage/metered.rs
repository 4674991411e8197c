//! Counts the requests a host makes of its store, by operation and outcome, for `/metrics`
//! (`ferry_store_requests_total`) and for the benchmark that checks that polling costs the same
//! whatever the number of models.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::{ByteStream, Listed, Object, ObjectVersion, Result, Storage, Write};

/// Requests made so far, by operation.
#[derive(Debug, Default)]
pub struct RequestCounts {
    pub get: AtomicU64,
    pub put: AtomicU64,
    pub list: AtomicU64,
    pub delete: AtomicU64,
    pub failed: AtomicU64,
}

impl RequestCounts {
    /// Every request so far.
    pub fn total(&self) -> u64 {
        [&self.get, &self.put, &self.list, &self.delete]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

/// A backend whose requests are counted.
#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn Storage>,
    counts: Arc<RequestCounts>,
}

impl Metered {
    /// Counts the requests made of `inner`.
    pub fn new(inner: Arc<dyn Storage>) -> Metered {
        Metered {
            inner,
            counts: Default::default(),
        }
    }

    /// The counts, shared.
    pub fn counts(&self) -> Arc<RequestCounts> {
        self.counts.clone()
    }

    fn count<T>(&self, op: &'static str, counter: &AtomicU64, result: Result<T>) -> Result<T> {
        counter.fetch_add(1, Ordering::Relaxed);
        let outcome = match &result {
            Ok(_) => "ok",
            Err(super::StorageError::Unavailable(_)) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                "unavailable"
            }
            Err(_) => "refused",
        };
        metrics::counter!("ferry_store_requests_total", "op" => op, "outcome" => outcome)
            .increment(1);
        result
    }
}

#[async_trait::async_trait]
impl Storage for Metered {
    async fn get(&self, key: &str) -> Result<Object> {
        let r = self.inner.get(key).await;
        self.count("get", &self.counts.get, r)
    }
    async fn get_if_changed(&self, key: &str, version: &ObjectVersion) -> Result<Option<Object>> {
        let r = self.inner.get_if_changed(key, version).await;
        self.count("get", &self.counts.get, r)
    }
    async fn get_stream(&self, key: &str) -> Result<ByteStream> {
        let r = self.inner.get_stream(key).await;
        self.count("get", &self.counts.get, r)
    }
    async fn put(&self, key: &str, bytes: Bytes, mode: Write) -> Result<ObjectVersion> {
        let r = self.inner.put(key, bytes, mode).await;
        self.count("put", &self.counts.put, r)
    }
    async fn put_file(&self, key: &str, file: &Path) -> Result<()> {
        let r = self.inner.put_file(key, file).await;
        self.count("put", &self.counts.put, r)
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let r = self.inner.list(prefix).await;
        self.count("list", &self.counts.list, r)
    }
    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>> {
        let r = self.inner.list_page(prefix, start_after, limit).await;
        self.count("list", &self.counts.list, r)
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        let r = self.inner.exists(key).await;
        self.count("head", &self.counts.get, r)
    }
    async fn delete(&self, key: &str) -> Result<()> {
        let r = self.inner.delete(key).await;
        self.count("delete", &self.counts.delete, r)
    }
    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.inner.local_path(key)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}
