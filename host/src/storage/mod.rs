//! Where a store's objects live: one interface with typed errors, three backends — a local directory
//! (the embedded default), any S3-compatible object store (through the `object_store` crate), and
//! the process's memory (`memory://NAME`: a host that keeps nothing, and the registry's unit tests) —
//! and one conformance suite that every backend passes ([`conformance`]).
//!
//! The interface is a key-value store of immutable-or-conditional objects, the shape S3 has: keys are
//! `/`-separated, every write is either unconditional, create-if-absent, or compare-and-swap on the
//! object's version (its ETag). Those conditional writes are the only coordination a fleet of hosts
//! has (see `registry::sync`). It knows nothing of models: the registry gives keys their meaning.

pub mod blob_cache;
pub mod conformance;
mod local;
mod memory;
mod metered;
mod s3;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::stream::BoxStream;

pub use blob_cache::BlobCache;
pub use local::LocalDir;
pub use memory::Memory;
pub use metered::{Metered, RequestCounts};
pub use s3::S3;

// `Failure` and `Cause` below: what a storage error keeps.

/// Why a storage operation failed. Callers branch on the kind, never on the message; a failure
/// keeps the key and the cause whole ([`Failure`]). The message already says the cause, so the
/// variants name no `source()`: a chain printed whole (`{:#}`) says it once.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// No object at the key.
    #[error("{0} is not in the store")]
    NotFound(String),
    /// A create-if-absent found an object there.
    #[error("{0} already exists in the store")]
    AlreadyExists(String),
    /// A compare-and-swap found another version of the object: someone else wrote it meanwhile.
    #[error("{0} was changed meanwhile by another writer")]
    Precondition(String),
    /// The store cannot be reached or answered with a server error: try again later (HTTP 503).
    #[error("the store is unreachable: {0}")]
    Unavailable(Failure),
    /// The host's own disk is full or failing (HTTP 507 on uploads).
    #[error("local disk: {0}")]
    Disk(Failure),
    /// An object's content does not match its name (a blob whose sha256 is not its key).
    #[error("{} is corrupt: {}", .0.key, .0.cause)]
    Corrupt(Failure),
    /// Anything else: a bad key, a refused credential, a malformed answer.
    #[error("store error: {0}")]
    Other(Failure),
}

/// The cause of a failure, shared so that errors stay cheap to clone.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Where a storage operation failed (a key, or a path on this host's disk) and why.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The object's key (or the local file's path).
    pub key: String,
    /// What went wrong there.
    pub cause: Cause,
}

impl Failure {
    /// A failure at `key` caused by `cause` (an error, or a message).
    pub fn new(
        key: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Failure {
        Failure {
            key: key.into(),
            cause: Arc::from(cause.into()),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.cause)
    }
}

impl Failure {
    /// The cause, to look into (e.g. for an HTTP error's kind).
    pub fn cause(&self) -> &(dyn std::error::Error + 'static) {
        self.cause.as_ref()
    }
}

impl StorageError {
    /// The key (or local path) the operation failed at.
    pub fn key(&self) -> &str {
        match self {
            StorageError::NotFound(key)
            | StorageError::AlreadyExists(key)
            | StorageError::Precondition(key) => key,
            StorageError::Unavailable(f)
            | StorageError::Disk(f)
            | StorageError::Corrupt(f)
            | StorageError::Other(f) => &f.key,
        }
    }
}

/// Results of storage operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The version of an object as the store names it (an ETag): what a compare-and-swap compares.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectVersion(pub String);

/// How a write treats an object already at the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Replace whatever is there.
    Overwrite,
    /// Only if nothing is there ([`StorageError::AlreadyExists`] otherwise).
    Create,
    /// Only if the object is still at this version ([`StorageError::Precondition`] otherwise, also
    /// when the object has gone).
    Replace(ObjectVersion),
}

/// An object read whole.
#[derive(Debug, Clone)]
pub struct Object {
    /// Its content.
    pub bytes: Bytes,
    /// Its version, for a later conditional write or conditional read.
    pub version: ObjectVersion,
}

/// One entry of a listing.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The object's key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written.
    pub modified: SystemTime,
}

/// A stream of an object's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// A store of objects by key. Every method is async and never blocks the runtime's workers.
#[async_trait::async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Reads a small object whole.
    async fn get(&self, key: &str) -> Result<Object>;
    /// Reads `key` unless it is still at `version`: `None` means unchanged (one cheap request,
    /// the heart of polling).
    async fn get_if_changed(&self, key: &str, version: &ObjectVersion) -> Result<Option<Object>>;
    /// Streams a (possibly large) object.
    async fn get_stream(&self, key: &str) -> Result<ByteStream>;
    /// Writes a small object under `mode`; returns its new version.
    async fn put(&self, key: &str, bytes: Bytes, mode: Write) -> Result<ObjectVersion>;
    /// Writes a (possibly large) local file to `key`, replacing what is there, streaming it (a
    /// multipart upload on S3). The object appears whole or not at all.
    async fn put_file(&self, key: &str, file: &Path) -> Result<()>;
    /// Every object whose key starts with `prefix` (a folder, ending in `/`, or empty).
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>>;
    /// A page of a listing: at most `limit` objects whose key starts with `prefix` and sorts after
    /// `start_after` (all of them when `None`), in key order. A backend stops reading once it has
    /// them (S3's `start-after`; a sorted walk of the local folder), so a page costs what it
    /// answers, not what the folder holds.
    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>> {
        let mut all = self.list(prefix).await?;
        all.retain(|l| start_after.is_none_or(|after| l.key.as_str() > after));
        all.truncate(limit);
        Ok(all)
    }
    /// Whether an object is at `key` (one HEAD request on S3).
    async fn exists(&self, key: &str) -> Result<bool>;
    /// Removes an object; removing what is not there succeeds.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Where the object lies on this host's disk, when the backend is a local directory (then
    /// blobs need no cached copy).
    fn local_path(&self, key: &str) -> Option<PathBuf> {
        let _ = key;
        None
    }
    /// Where the store is, for logs and messages (`s3://bucket/prefix` or a directory).
    fn describe(&self) -> String;
}

/// Opens the store at `location`: `s3://BUCKET[/PREFIX]` (endpoint and credentials from the
/// standard AWS environment variables), `memory://NAME` (gone when the process ends), otherwise a
/// local directory (created if missing). Its requests are counted.
pub fn open(location: &str) -> anyhow::Result<Arc<Metered>> {
    open_with(location, &[])
}

/// Like [`open`], with AWS settings (variable names and values) over the environment's.
pub fn open_with(location: &str, settings: &[(String, String)]) -> anyhow::Result<Arc<Metered>> {
    let backend: Arc<dyn Storage> = if location.starts_with("s3://") {
        Arc::new(S3::from_env_and(location, settings)?)
    } else if let Some(name) = location.strip_prefix("memory://") {
        Arc::new(Memory::new(name))
    } else {
        Arc::new(LocalDir::open(location)?)
    };
    Ok(Arc::new(Metered::new(backend)))
}

/// Checks a key: relative, `/`-separated, no empty, `.` or `..` segments.
pub fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
        && !key.contains('\\');
    if ok {
        Ok(())
    } else {
        Err(StorageError::Other(Failure::new(key, "an invalid key")))
    }
}
