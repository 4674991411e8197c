//! Compiled components on disk, keyed by a content hash of what was compiled and the engine's
//! compatibility hash, so a component (or a snapshot) is compiled once per engine configuration and
//! loaded by `mmap` afterwards — which also lets instances map its memory image copy-on-write from
//! the file instead of copying it.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::Context;
use wasmtime::component::Component;
use wasmtime::Engine;

/// A directory of `.cwasm` files: `<dir>/<engine-hash>/<key>.cwasm`, with notes beside them.
#[derive(Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// Opens (creating) the cache for this engine's configuration.
    pub fn open(root: &Path, engine: &Engine) -> anyhow::Result<CompileCache> {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let dir = root.join(format!("{:016x}", hasher.finish()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating compile cache {}", dir.display()))?;
        Ok(CompileCache { dir })
    }

    /// This cache and those of the other engine configurations beside it (the engine that counts
    /// fuel, earlier configurations): where a file no version uses any more may be, whether or not
    /// this process has made that engine.
    pub fn with_siblings(&self) -> Vec<CompileCache> {
        let is_engine_dir =
            |name: &str| name.len() == 16 && name.bytes().all(|b| b.is_ascii_hexdigit());
        let mut caches = vec![CompileCache {
            dir: self.dir.clone(),
        }];
        let Some(root) = self.dir.parent() else {
            return caches;
        };
        for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let dir = entry.path();
            let sibling = entry.file_name().to_str().is_some_and(is_engine_dir)
                && dir != self.dir
                && entry.file_type().is_ok_and(|t| t.is_dir());
            if sibling {
                caches.push(CompileCache { dir });
            }
        }
        caches
    }

    /// Where Cranelift's per-function cache keeps its entries.
    pub fn incremental_dir(&self) -> PathBuf {
        self.dir.join("functions")
    }

    /// Where the compiled form of `key` lives.
    pub fn path_for(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.cwasm"))
    }

    /// Where a caller keeps what it knows of `key`'s compiled form (a small file of its own format).
    pub fn note_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The cached component for `key`, if there is a readable one.
    pub fn get(&self, engine: &Engine, key: &str) -> Option<Component> {
        let path = self.path_for(key);
        if !path.exists() {
            return None;
        }
        // SAFETY: files in this directory are only ever written by `store` below, from
        // `Engine::precompile_component`, and renamed into place whole; the engine hash in the path
        // guarantees a compatible configuration.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => {
                // Recently used: the host cache's eviction takes it last.
                crate::files::touch(&path);
                Some(component)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding unreadable compiled component");
                None
            }
        }
    }

    /// The compiled component for `bytes` (named by `key`): from the cache when present, otherwise
    /// compiled now, stored, and mapped from the stored file.
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        key: &str,
        bytes: &[u8],
    ) -> anyhow::Result<Component> {
        if let Some(component) = self.get(engine, key) {
            return Ok(component);
        }
        let compiled = engine
            .precompile_component(bytes)
            .map_err(anyhow::Error::from)?;
        let path = self.path_for(key);
        match crate::files::write_atomically(&path, &compiled) {
            Ok(()) => {
                // Mapped from the file, so memory images are shared file pages, not a private copy.
                if let Some(component) = self.get(engine, key) {
                    return Ok(component);
                }
                // Gone already: another host sharing the directory removed it (its version left).
                tracing::warn!(path = %path.display(), "the compiled component just written is gone; using it from memory");
                // SAFETY: `compiled` was produced by `precompile_component` on this very engine.
                unsafe { Component::deserialize(engine, &compiled) }.map_err(anyhow::Error::from)
            }
            Err(e) => {
                // A full or read-only disk costs the next load a compile, not this one its answer.
                tracing::warn!(path = %path.display(), error = %e, "cannot cache compiled component");
                // SAFETY: `compiled` was produced by `precompile_component` on this very engine.
                unsafe { Component::deserialize(engine, &compiled) }.map_err(anyhow::Error::from)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_are_the_other_engine_directories_beside_this_one() {
        let root = tempfile::tempdir().unwrap();
        let own = root.path().join("00000000000000aa");
        let other = root.path().join("00000000000000bb");
        for dir in [&own, &other, &root.path().join("not-an-engine")] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(root.path().join("00000000000000cc"), b"a file").unwrap();
        let cache = CompileCache { dir: own.clone() };
        let mut dirs: Vec<PathBuf> = cache.with_siblings().into_iter().map(|c| c.dir).collect();
        dirs.sort();
        assert_eq!(dirs, vec![own, other]);
    }
}
