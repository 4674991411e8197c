//! The local-directory backend: one file per key under the store's root, each written atomically
//! (temporary file, fsync, rename, fsync of the directory). Conditional writes hold a lock on
//! `<root>/.lock` (across processes: a `ferry add` beside a running server) while they compare.
//! An object's version is a hash of its content: documents are small, and a hash cannot repeat the
//! way an inode number and a coarse modification time can.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;

use super::{
    check_key, ByteStream, Listed, Object, ObjectVersion, Result, Storage, StorageError, Write,
};
use crate::files;

/// A store directory.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
    /// Serialises this process's conditional writes; the file lock serialises processes.
    writer: Arc<Mutex<()>>,
}

fn disk(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Disk(super::Failure::new(path.display().to_string(), e))
}

fn version_of(bytes: &[u8]) -> ObjectVersion {
    ObjectVersion(crate::stamps::sha256_hex(bytes)[..32].to_owned())
}

impl LocalDir {
    /// Opens (creating) a store directory.
    pub fn open(root: impl Into<PathBuf>) -> anyhow::Result<LocalDir> {
        let root = root.into();
        files::create_dir_all(&root)
            .map_err(|e| anyhow::anyhow!("creating the store {}: {e}", root.display()))?;
        Ok(LocalDir {
            root,
            writer: Default::default(),
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn read(path: &Path, key: &str) -> Result<Object> {
        let mut file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::NotFound(key.to_owned()))
            }
            Err(e) => return Err(disk(path, e)),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| disk(path, e))?;
        Ok(Object {
            version: version_of(&bytes),
            bytes: bytes.into(),
        })
    }

    fn put_blocking(&self, key: &str, bytes: &[u8], mode: &Write) -> Result<ObjectVersion> {
        let path = self.path(key)?;
        let _guard = if mode == &Write::Overwrite {
            None
        } else {
            let local = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let lock =
                std::fs::File::create(self.root.join(".lock")).map_err(|e| disk(&self.root, e))?;
            lock.lock().map_err(|e| disk(&self.root, e))?;
            Some((local, lock))
        };
        let current = match std::fs::read(&path) {
            Ok(existing) => Some(version_of(&existing)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(disk(&path, e)),
        };
        match (mode, &current) {
            (Write::Create, Some(_)) => return Err(StorageError::AlreadyExists(key.to_owned())),
            (Write::Replace(expected), Some(v)) if v != expected => {
                return Err(StorageError::Precondition(key.to_owned()))
            }
            (Write::Replace(_), None) => return Err(StorageError::Precondition(key.to_owned())),
            _ => {}
        }
        files::write_atomically(&path, bytes).map_err(|e| disk(&path, e))?;
        Ok(version_of(bytes))
    }

    fn put_file_blocking(&self, key: &str, file: &Path) -> Result<()> {
        let path = self.path(key)?;
        let dir = path.parent().expect("keys have a parent");
        files::create_dir_all(dir).map_err(|e| disk(dir, e))?;
        let tmp = files::temp_beside(&path);
        // A hard link when the file is on the same filesystem (no copy of a 1 GB blob), else a copy.
        let staged = std::fs::hard_link(file, &tmp).or_else(|_| {
            std::fs::copy(file, &tmp)?;
            std::fs::File::open(&tmp)?.sync_all()
        });
        if let Err(e) = staged.and_then(|_| files::install(&tmp, &path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(disk(&path, e));
        }
        Ok(())
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<Listed>> {
        // The folder part of the prefix is walked; the rest filters names.
        let (folder, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let start = if folder.is_empty() {
            self.root.clone()
        } else {
            self.path(folder)?
        };
        let mut found = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(disk(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| disk(&dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue; // temporary files and the lock
                }
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    // Removed between the directory read and now: not there any more.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(disk(&entry.path(), e)),
                };
                if meta.is_dir() {
                    stack.push(entry.path());
                    continue;
                }
                let key = entry
                    .path()
                    .strip_prefix(&self.root)
                    .expect("walked under the root")
                    .to_string_lossy()
                    .into_owned();
                if key.starts_with(prefix) {
                    found.push(Listed {
                        key,
                        size: meta.len(),
                        modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                    });
                }
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    /// A page of a listing, walking folders in key order and stopping once it has `limit`: only
    /// the names of the folders on the way are read, and only the objects answered are looked at.
    fn list_page_blocking(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>> {
        let (folder, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let start = if folder.is_empty() {
            String::new()
        } else {
            self.path(folder)?;
            format!("{folder}/")
        };
        let mut found = Vec::new();
        self.walk_sorted(&start, prefix, start_after, limit, &mut found)?;
        Ok(found)
    }

    /// Appends to `found`, in key order, the objects under the folder `dir_key` (`""` or ending in
    /// `/`) that start with `prefix` and sort after `start_after`, until it holds `limit`.
    fn walk_sorted(
        &self,
        dir_key: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        found: &mut Vec<Listed>,
    ) -> Result<()> {
        let dir = self.root.join(dir_key);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(disk(&dir, e)),
        };
        // A folder sorts as its name and a `/`, so that keys come out in the order a store lists.
        let mut names: Vec<(String, bool)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| disk(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // temporary files and the lock
            }
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let key = format!("{dir_key}{name}{}", if is_dir { "/" } else { "" });
            // Out of the prefix, or wholly before the page: not looked at.
            let in_prefix = key.starts_with(prefix) || (is_dir && prefix.starts_with(&key));
            let before = start_after.is_some_and(|after| {
                if is_dir {
                    key.as_str() < after && !after.starts_with(&key)
                } else {
                    key.as_str() <= after
                }
            });
            if in_prefix && !before {
                names.push((key, is_dir));
            }
        }
        names.sort();
        for (key, is_dir) in names {
            if found.len() >= limit {
                break;
            }
            if is_dir {
                self.walk_sorted(&key, prefix, start_after, limit, found)?;
                continue;
            }
            let path = self.root.join(&key);
            let meta = match std::fs::metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(disk(&path, e)),
            };
            found.push(Listed {
                key,
                size: meta.len(),
                modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
            });
        }
        Ok(())
    }
}

/// Runs filesystem work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Other(super::Failure::new("a filesystem task", e)))?
}

#[async_trait::async_trait]
impl Storage for LocalDir {
    async fn get(&self, key: &str) -> Result<Object> {
        let (path, key) = (self.path(key)?, key.to_owned());
        blocking(move || LocalDir::read(&path, &key)).await
    }

    async fn get_if_changed(&self, key: &str, version: &ObjectVersion) -> Result<Option<Object>> {
        let (path, key, version) = (self.path(key)?, key.to_owned(), version.clone());
        blocking(move || {
            let object = LocalDir::read(&path, &key)?;
            Ok((object.version != version).then_some(object))
        })
        .await
    }

    async fn get_stream(&self, key: &str) -> Result<ByteStream> {
        let path = self.path(key)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::NotFound(key.to_owned()))
            }
            Err(e) => return Err(disk(&path, e)),
        };
        let chunks = futures_util::stream::unfold((file, path), |(mut file, path)| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 1 << 20];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), (file, path)))
                }
                Err(e) => Some((Err(disk(&path, e)), (file, path))),
            }
        });
        Ok(chunks.boxed())
    }

    async fn put(&self, key: &str, bytes: Bytes, mode: Write) -> Result<ObjectVersion> {
        let (this, key) = (self.clone(), key.to_owned());
        blocking(move || this.put_blocking(&key, &bytes, &mode)).await
    }

    async fn put_file(&self, key: &str, file: &Path) -> Result<()> {
        let (this, key, file) = (self.clone(), key.to_owned(), file.to_owned());
        blocking(move || this.put_file_blocking(&key, &file)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let (this, prefix) = (self.clone(), prefix.to_owned());
        blocking(move || this.list_blocking(&prefix)).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>> {
        let (this, prefix) = (self.clone(), prefix.to_owned());
        let start_after = start_after.map(str::to_owned);
        blocking(move || this.list_page_blocking(&prefix, start_after.as_deref(), limit)).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let path = self.path(key)?;
        Ok(tokio::fs::try_exists(&path).await.unwrap_or(false))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => files::sync_dir(path.parent().expect("keys have a parent"))
                .map_err(|e| disk(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(disk(&path, e)),
        })
        .await
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path(key).ok()
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}
