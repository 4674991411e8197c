//! Blobs on this host's disk: the read-through cache in front of a remote store, and the staging
//! area for uploads. A blob is downloaded once, streamed to a temporary file while hashed, and kept
//! only if its content matches its sha256; a restarted host finds it again and downloads nothing. The
//! cache directory (`--cache-dir`) is bounded: past `max_bytes` the least recently used blobs and
//! compiled components go first. A local-directory store needs no copies: its blobs are read in place.
//!
//! ```text
//! <cache>/blobs/<sha256>                      downloaded blobs
//! <cache>/compiled/<engine-hash>/<sha256>.cwasm  compiled components (engine::CompileCache)
//! <cache>/uploads/                            uploads in progress on this host
//! <cache>/state/                              the last state synced from each store (registry::sync)
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{Failure, Result, Storage, StorageError};
use crate::files;

/// The key of a blob in the store.
pub fn blob_key(sha256: &str) -> String {
    format!("blobs/{sha256}")
}

/// True for a well-formed sha256 (64 lowercase hex digits).
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// A host's cache directory and the store it caches.
#[derive(Debug, Clone)]
pub struct BlobCache {
    storage: Arc<dyn Storage>,
    root: PathBuf,
    max_bytes: u64,
}

fn disk(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Disk(Failure::new(path.display().to_string(), e))
}

impl BlobCache {
    /// A cache of `storage` in `root` (created), bounded to `max_bytes`. Removes what uploads
    /// interrupted by an earlier stop left (files of processes no longer running: another host may
    /// share the directory).
    pub fn open(
        storage: Arc<dyn Storage>,
        root: &Path,
        max_bytes: u64,
    ) -> anyhow::Result<BlobCache> {
        for dir in ["blobs", "compiled", "uploads", "state"] {
            crate::files::create_dir_all(&root.join(dir)).map_err(|e| {
                anyhow::anyhow!("creating the cache {}: {e}", root.join(dir).display())
            })?;
        }
        let mut interrupted = 0;
        for entry in std::fs::read_dir(root.join("uploads"))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix(".tmp-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            let running = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !running && std::fs::remove_file(entry.path()).is_ok() {
                interrupted += 1;
            }
        }
        if interrupted > 0 {
            tracing::warn!(
                files = interrupted,
                "removed uploads interrupted by an earlier stop"
            );
        }
        Ok(BlobCache {
            storage,
            root: root.to_owned(),
            max_bytes,
        })
    }

    /// The store behind the cache.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where compiled components are cached.
    pub fn compiled_dir(&self) -> PathBuf {
        self.root.join("compiled")
    }

    /// Where uploads in progress are written.
    pub fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// Where the last synced state of stores is kept.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    /// The blob's content, checked against its sha256: read in place from a local store, else from
    /// the cache, downloading it first if needed. A cached copy that no longer matches is dropped and
    /// downloaded again.
    pub async fn read(&self, sha256: &str) -> Result<Bytes> {
        if !is_sha256(sha256) {
            return Err(StorageError::Other(Failure::new(sha256, "not a sha256")));
        }
        if let Some(path) = self.storage.local_path(&blob_key(sha256)) {
            return read_verified(path, sha256).await;
        }
        let path = self.fetch(sha256).await?;
        match read_verified(path.clone(), sha256).await {
            Err(StorageError::Corrupt(_)) => {
                tracing::warn!(
                    blob = sha256,
                    "the cached copy is corrupt; downloading it again"
                );
                let _ = tokio::fs::remove_file(&path).await;
                let path = self.fetch(sha256).await?;
                read_verified(path, sha256).await
            }
            other => other,
        }
    }

    /// The cached copy of a remote blob, downloaded (streamed, hashed, verified) if missing.
    async fn fetch(&self, sha256: &str) -> Result<PathBuf> {
        let path = self.root.join("blobs").join(sha256);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(path);
        }
        let tmp = files::temp_beside(&path);
        let result = async {
            let mut stream = self.storage.get_stream(&blob_key(sha256)).await?;
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| disk(&tmp, e))?;
            let mut hasher = Sha256::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(|e| disk(&tmp, e))?;
            }
            file.sync_all().await.map_err(|e| disk(&tmp, e))?;
            let got = hex::encode(hasher.finalize());
            if got != sha256 {
                return Err(StorageError::Corrupt(Failure::new(
                    blob_key(sha256),
                    format!("its content in the store has sha256 {got}"),
                )));
            }
            files::install(&tmp, &path).map_err(|e| disk(&path, e))?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        self.enforce_budget().await;
        Ok(path)
    }

    /// A new file for an upload in progress on this host.
    pub fn upload_file(&self) -> Result<(PathBuf, std::fs::File)> {
        let path = files::temp_beside(&self.uploads_dir().join("upload"));
        let file = std::fs::File::create(&path).map_err(|e| disk(&path, e))?;
        Ok((path, file))
    }

    /// Puts a finished upload (synced, with content `sha256`) into the store as a blob, streaming
    /// it, and keeps it as the cached copy; the file is gone afterwards either way.
    pub async fn commit_upload(&self, file: &Path, sha256: &str) -> Result<()> {
        let key = blob_key(sha256);
        let result = self.storage.put_file(&key, file).await;
        let kept = match (&result, self.storage.local_path(&key)) {
            (Ok(()), None) => {
                let cached = self.root.join("blobs").join(sha256);
                files::install(file, &cached).is_ok()
            }
            _ => false,
        };
        if !kept {
            let _ = tokio::fs::remove_file(file).await;
        } else {
            self.enforce_budget().await;
        }
        result
    }

    /// True when the store has the blob.
    pub async fn exists(&self, sha256: &str) -> Result<bool> {
        if !is_sha256(sha256) {
            return Ok(false);
        }
        self.storage.exists(&blob_key(sha256)).await
    }

    /// Evicts least recently used blobs and compiled components past the bound.
    pub async fn enforce_budget(&self) {
        let (roots, max) = (
            vec![self.root.join("blobs"), self.compiled_dir()],
            self.max_bytes,
        );
        let _ = tokio::task::spawn_blocking(move || files::evict_least_recently_used(&roots, max))
            .await;
    }
}

/// Reads a file that should hold the blob `sha256`, checking that it does.
async fn read_verified(path: PathBuf, sha256: &str) -> Result<Bytes> {
    let sha = sha256.to_owned();
    tokio::task::spawn_blocking(move || {
        let bytes = map_or_read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StorageError::NotFound(blob_key(&sha)),
            _ => disk(&path, e),
        })?;
        if crate::stamps::sha256_hex(&bytes) != sha {
            return Err(StorageError::Corrupt(Failure::new(
                path.display().to_string(),
                "the cached copy no longer matches its sha256",
            )));
        }
        files::touch(&path);
        Ok(bytes)
    })
    .await
    .map_err(|e| StorageError::Other(Failure::new(sha256, e)))?
}

/// Blobs above this are mapped rather than read: gigabytes of weights become file pages the kernel
/// can share and drop, not heap.
const MAP_ABOVE: u64 = 1 << 20;

/// The file's content, mapped read-only when large. Blobs are immutable (written whole, then renamed
/// into place; removal unlinks), so the mapping never sees them change.
fn map_or_read(path: &Path) -> std::io::Result<Bytes> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() <= MAP_ABOVE {
        return std::fs::read(path).map(Bytes::from);
    }
    // SAFETY: see above — nothing writes to or truncates a blob file in place.
    let map = unsafe { memmap2::Mmap::map(&file) }?;
    Ok(Bytes::from_owner(map))
}
