//! Compiled components on disk, keyed by the component's sha256 and the engine's compatibility hash,
//! so a component is compiled once per engine configuration and loaded by `mmap` afterwards.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::Context;
use wasmtime::component::Component;
use wasmtime::Engine;

/// A directory of `.cwasm` files: `<dir>/<engine-hash>/<sha256>.cwasm`.
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

    /// Where the compiled form of `sha256` lives.
    pub fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.cwasm"))
    }

    /// The compiled component for `bytes` (whose digest is `sha256`): from the cache when present,
    /// otherwise compiled now and stored.
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        sha256: &str,
        bytes: &[u8],
    ) -> anyhow::Result<Component> {
        let path = self.path_for(sha256);
        if path.exists() {
            // SAFETY: files in this directory are only ever written by `store` below, from
            // `Engine::precompile_component`, and renamed into place whole; the engine hash in the path
            // guarantees a compatible configuration.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => {
                    // Recently used: the host cache's eviction takes it last.
                    crate::files::touch(&path);
                    return Ok(component);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unreadable compiled component")
                }
            }
        }
        let compiled = engine
            .precompile_component(bytes)
            .map_err(anyhow::Error::from)?;
        if let Err(e) = self.store(&path, &compiled) {
            // A full or read-only disk costs the next load a compile, not this one its answer.
            tracing::warn!(path = %path.display(), error = %e, "cannot cache compiled component");
        }
        // SAFETY: `compiled` was produced by `precompile_component` on this very engine just above.
        unsafe { Component::deserialize(engine, &compiled) }.map_err(anyhow::Error::from)
    }

    fn store(&self, path: &Path, compiled: &[u8]) -> std::io::Result<()> {
        crate::files::write_atomically(path, compiled)
    }
}
