//! The in-memory backend: a real store that keeps every object in the process. It exists so that
//! unit tests of the registry, sync, routing and pools run without processes or disks, against a
//! backend that passes the same conformance suite as the local directory and S3 — not a mock that
//! agrees with whatever the test expects. Its outage switch ([`Memory::set_reachable`]) lets those
//! tests see what the registry does while the store is away.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::StreamExt;

use super::{
    check_key, ByteStream, Listed, Object, ObjectVersion, Result, Storage, StorageError, Write,
};

/// What one chunk of a stream carries: a large object arrives in many chunks, as it does from a
/// disk or S3, so consumers that join chunks are exercised.
const CHUNK_BYTES: usize = 64 << 10;

/// One counter for the whole process: every write, in any store, gets a version no write has had,
/// so a compare-and-swap never mistakes an object deleted and written again for the one it read.
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

/// One stored object.
struct Entry {
    bytes: Bytes,
    version: ObjectVersion,
    modified: SystemTime,
}

impl Entry {
    fn new(bytes: Bytes) -> Entry {
        let n = NEXT_VERSION.fetch_add(1, Ordering::Relaxed);
        Entry {
            bytes,
            // Quoted like an S3 ETag, so a version never looks like a key or a number to a reader.
            version: ObjectVersion(format!("\"m-{n}\"")),
            modified: SystemTime::now(),
        }
    }

    fn object(&self) -> Object {
        Object {
            bytes: self.bytes.clone(),
            version: self.version.clone(),
        }
    }

    fn listed(&self, key: &str) -> Listed {
        Listed {
            key: key.to_owned(),
            size: self.bytes.len() as u64,
            modified: self.modified,
        }
    }
}

/// A store in memory, shared through an `Arc` like any other backend. It has no files, so
/// `local_path` is the trait's `None`: blobs read from it go through the blob cache.
pub struct Memory {
    name: String,
    /// Keys in order, so a listing is a range of the map. Conditional writes compare and write
    /// under this one lock, which is what makes exactly one racer win.
    objects: Mutex<BTreeMap<String, Entry>>,
    reachable: AtomicBool,
}

impl std::fmt::Debug for Memory {
    // Not the objects: a debug print of a store holding a blob would be megabytes of bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("name", &self.name)
            .field("reachable", &self.reachable.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl Memory {
    /// An empty store, described as `memory://NAME`.
    pub fn new(name: &str) -> Memory {
        Memory {
            name: name.to_owned(),
            objects: Mutex::new(BTreeMap::new()),
            reachable: AtomicBool::new(true),
        }
    }

    /// The in-memory analogue of a store outage, for unit tests of the registry and sync: while
    /// unreachable, every operation answers [`StorageError::Unavailable`] (what S3 gives when it
    /// cannot be reached) and changes nothing; the objects are all there again once it is back.
    pub fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::SeqCst);
    }

    fn reach(&self) -> Result<()> {
        if self.reachable.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(StorageError::Unavailable(super::Failure::new(
                format!("memory://{}", self.name),
                "switched off (set_reachable(false))",
            )))
        }
    }

    /// A bad key is the caller's mistake, known without asking the store (as on the other
    /// backends), so it is refused as such even during an outage.
    fn check(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.reach()
    }

    /// As the local directory does: the folder part of a prefix must be a valid key, the rest
    /// only filters names.
    fn check_prefix(&self, prefix: &str) -> Result<()> {
        let (folder, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        if !folder.is_empty() {
            check_key(folder)?;
        }
        self.reach()
    }

    fn read(&self, key: &str) -> Result<Object> {
        self.check(key)?;
        let objects = self.objects.lock().unwrap();
        objects
            .get(key)
            .map(Entry::object)
            .ok_or_else(|| StorageError::NotFound(key.to_owned()))
    }

    fn write(&self, key: &str, bytes: Bytes, mode: &Write) -> Result<ObjectVersion> {
        self.check(key)?;
        let mut objects = self.objects.lock().unwrap();
        match (mode, objects.get(key)) {
            (Write::Create, Some(_)) => return Err(StorageError::AlreadyExists(key.to_owned())),
            (Write::Replace(expected), Some(e)) if &e.version != expected => {
                return Err(StorageError::Precondition(key.to_owned()))
            }
            (Write::Replace(_), None) => return Err(StorageError::Precondition(key.to_owned())),
            _ => {}
        }
        let entry = Entry::new(bytes);
        let version = entry.version.clone();
        objects.insert(key.to_owned(), entry);
        Ok(version)
    }

    /// The objects starting with `prefix` after `start_after`, in key order, at most `limit`: a
    /// walk of the map from where the page begins, so a page costs what it answers.
    fn page(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<Listed>> {
        self.check_prefix(prefix)?;
        // Keys with the prefix are one run of the map, starting at the prefix itself.
        let from = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let objects = self.objects.lock().unwrap();
        Ok(objects
            .range::<str, _>((from, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(key, entry)| entry.listed(key))
            .collect())
    }
}

#[async_trait::async_trait]
impl Storage for Memory {
    async fn get(&self, key: &str) -> Result<Object> {
        self.read(key)
    }

    async fn get_if_changed(&self, key: &str, version: &ObjectVersion) -> Result<Option<Object>> {
        let object = self.read(key)?;
        Ok((&object.version != version).then_some(object))
    }

    async fn get_stream(&self, key: &str) -> Result<ByteStream> {
        let bytes = self.read(key)?.bytes;
        let len = bytes.len();
        // Slices share the object's buffer: streaming a blob copies nothing.
        let chunks = (0..len)
            .step_by(CHUNK_BYTES)
            .map(move |start| -> Result<Bytes> {
                Ok(bytes.slice(start..len.min(start + CHUNK_BYTES)))
            });
        Ok(futures_util::stream::iter(chunks).boxed())
    }

    async fn put(&self, key: &str, bytes: Bytes, mode: Write) -> Result<ObjectVersion> {
        self.write(key, bytes, &mode)
    }

    async fn put_file(&self, key: &str, file: &Path) -> Result<()> {
        // Checked before reading, so a bad key or an outage does not cost a read of a large file.
        self.check(key)?;
        let bytes = tokio::fs::read(file)
            .await
            .map_err(|e| StorageError::Disk(super::Failure::new(file.display().to_string(), e)))?;
        // One insert: the object appears whole or not at all (and not if the store went away
        // during the read, like an upload cut off).
        self.write(key, bytes.into(), &Write::Overwrite).map(|_| ())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        self.page(prefix, None, usize::MAX)
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>> {
        self.page(prefix, start_after, limit)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.check(key)?;
        let present = self.objects.lock().unwrap().contains_key(key);
        Ok(present)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.check(key)?;
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }

    fn describe(&self) -> String {
        format!("memory://{}", self.name)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::Memory;
    use crate::storage::{Storage, StorageError, Write};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_memory_backend_passes_the_conformance_suite() {
        super::super::conformance::run(
            Arc::new(Memory::new("conformance")),
            "conformance",
            super::super::conformance::Races::ExactlyOneWinner,
        )
        .await;
    }

    #[tokio::test]
    async fn an_unreachable_store_answers_unavailable_until_it_is_back() {
        let store = Memory::new("outage");
        let doc = "models/m/doc.json";
        store
            .put(doc, Bytes::from_static(b"one"), Write::Overwrite)
            .await
            .unwrap();

        store.set_reachable(false);
        let down = |e: Option<StorageError>| matches!(e, Some(StorageError::Unavailable(_)));
        assert!(down(store.get(doc).await.err()), "get");
        let two = Bytes::from_static(b"two");
        assert!(
            down(store.put(doc, two, Write::Overwrite).await.err()),
            "put"
        );
        assert!(down(store.list("models/").await.err()), "list");

        store.set_reachable(true);
        assert_eq!(
            store.get(doc).await.unwrap().bytes.as_ref(),
            b"one",
            "the put during the outage changed nothing"
        );
        assert_eq!(store.list("models/").await.unwrap().len(), 1, "list");
    }
}
