//! Cranelift's incremental compilation cache: machine code of each function by a hash of its compiler
//! input, in memory and (with a compile cache directory) on disk. A snapshot of new weights is the
//! same code with other data segments, so recompiling it finds its functions here and skips
//! optimisation, register allocation and emission — also in a host restarted since it first compiled
//! the code, which is why the entries are on disk too. The memory part is bounded: when full it starts
//! over; the disk part is bounded by the host cache's budget (`[cache] max_bytes`) like every file.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use sha2::{Digest, Sha256};
use wasmtime::CacheStore;

/// The in-memory per-function cache.
#[derive(Debug)]
pub struct IncrementalCache {
    entries: DashMap<Vec<u8>, Vec<u8>>,
    bytes: AtomicUsize,
    max_bytes: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    dir: Option<PathBuf>,
}

/// Lookups of the cache so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IncrementalStats {
    /// Functions whose machine code was reused.
    pub hits: u64,
    /// Functions compiled.
    pub misses: u64,
    /// Bytes held.
    pub bytes: usize,
}

impl IncrementalCache {
    /// A cache holding at most `max_bytes` in memory (0 disables it), and every entry under `dir`.
    pub fn new(max_bytes: usize, dir: Option<PathBuf>) -> IncrementalCache {
        IncrementalCache {
            entries: DashMap::new(),
            bytes: AtomicUsize::new(0),
            max_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            dir,
        }
    }

    /// `<dir>/ab/abcdef…`: keys are hashed (they are Cranelift's own, of any length).
    fn path(&self, key: &[u8]) -> Option<PathBuf> {
        let name = hex::encode(Sha256::digest(key));
        Some(self.dir.as_ref()?.join(&name[..2]).join(name))
    }

    /// An entry from disk; the file ends with the sha256 of the rest, so a torn write is a miss.
    fn read(&self, key: &[u8]) -> Option<Vec<u8>> {
        let mut bytes = std::fs::read(self.path(key)?).ok()?;
        let at = bytes.len().checked_sub(32)?;
        if Sha256::digest(&bytes[..at])[..] != bytes[at..] {
            return None;
        }
        bytes.truncate(at);
        Some(bytes)
    }

    fn write(&self, key: &[u8], value: &[u8]) {
        let Some(path) = self.path(key) else { return };
        let mut bytes = Vec::with_capacity(value.len() + 32);
        bytes.extend_from_slice(value);
        bytes.extend_from_slice(&Sha256::digest(value));
        // No fsync: a cache entry lost in a crash costs one function's compile.
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                let tmp = crate::files::temp_beside(&path);
                let done = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path));
                if done.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                done
            });
        if let Err(e) = written {
            tracing::debug!(path = %path.display(), error = %e, "cannot keep a compiled function");
        }
    }

    fn remember(&self, key: &[u8], value: Vec<u8>) {
        let size = key.len() + value.len();
        if size > self.max_bytes {
            return;
        }
        if self
            .bytes
            .fetch_add(size, Ordering::Relaxed)
            .saturating_add(size)
            > self.max_bytes
        {
            self.entries.clear();
            self.bytes.store(size, Ordering::Relaxed);
        }
        if let Some(old) = self.entries.insert(key.to_vec(), value) {
            // Saturating: a concurrent start-over may already have zeroed the count.
            let freed = key.len() + old.len();
            let _ = self
                .bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_sub(freed))
                });
        }
    }

    /// Hits, misses and size now.
    pub fn stats(&self) -> IncrementalStats {
        IncrementalStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

impl CacheStore for IncrementalCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        if let Some(value) = self.entries.get(key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Some(Cow::Owned(value.clone()));
        }
        match self.read(key) {
            Some(value) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.remember(key, value.clone());
                Some(Cow::Owned(value))
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        self.write(key, &value);
        self.remember(key, value);
        true
    }
}
