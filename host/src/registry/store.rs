//! The store directory: artifacts by content address and the manifests that make them versions.
//!
//! ```text
//! <store>/blobs/<sha256>                 component, weights, config and tests files, by content
//! <store>/compiled/<engine-hash>/…      compiled components (see engine::CompileCache)
//! <store>/models/<model>/<version>.json  a version's manifest: which blobs, which limits
//! <store>/models/<model>/aliases.json    alias → version, and each alias's earlier targets
//! <store>/models/<model>/unloaded         present while the model is unloaded on request
//! <store>/tmp/                           uploads in progress (emptied at start)
//! ```
//!
//! Every file is written to a temporary name, synced and renamed into place, so a crash leaves either
//! the old file or the new one; a manifest is written only after the blobs it names.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::runtime::{sha256_hex, ModelLimits};

/// What a version is made of. Blobs are named by sha256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VersionManifest {
    /// The model's name.
    pub model: String,
    /// The version's name within the model.
    pub version: String,
    /// Order of creation within the model: "newest" means the highest.
    pub sequence: u64,
    /// The component.
    pub component_sha256: String,
    /// The weights blob, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
    /// The config document, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_sha256: Option<String>,
    /// The tests file, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests_sha256: Option<String>,
    /// Limits set for this version (over the host's per-model defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ModelLimits>,
}

/// A model's aliases (alias → version) and, per alias, the versions it pointed at before (oldest
/// first), so a rollback knows where to go back to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Aliases {
    /// Alias → version.
    pub current: BTreeMap<String, String>,
    /// Alias → earlier targets, oldest first.
    pub history: BTreeMap<String, Vec<String>>,
}

/// A store directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// Model and version names: what is safe in a path and a URL.
pub fn check_name(kind: &str, name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!("invalid {kind} name {name:?}: use 1-128 letters, digits, '-', '_' or '.', not starting with '.'");
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("store paths have a parent");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        path.file_name().unwrap().to_string_lossy()
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable once the directory is synced.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl Store {
    /// Opens (creating) a store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> anyhow::Result<Store> {
        let root = root.into();
        for dir in ["blobs", "models", "compiled", "tmp"] {
            std::fs::create_dir_all(root.join(dir))
                .with_context(|| format!("creating {}", root.join(dir).display()))?;
        }
        Ok(Store { root })
    }

    /// Removes what interrupted uploads left in `tmp/` (call before serving, never during).
    pub fn clean_interrupted_uploads(&self) -> anyhow::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(self.root.join("tmp"))? {
            std::fs::remove_file(entry?.path())?;
            removed += 1;
        }
        Ok(removed)
    }

    /// A new file for an upload in progress; [`Store::commit_upload`] moves it into the blobs.
    pub fn upload_file(&self) -> anyhow::Result<(PathBuf, std::fs::File)> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self
            .root
            .join("tmp")
            .join(format!("upload-{}-{n}", std::process::id()));
        let file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok((path, file))
    }

    /// Moves a finished upload (already synced, with content `sha256`) into the blobs.
    pub fn commit_upload(&self, tmp: &Path, sha256: &str) -> anyhow::Result<()> {
        let path = self.blob_path(sha256);
        if path.exists() {
            std::fs::remove_file(tmp)?;
            return Ok(());
        }
        std::fs::rename(tmp, &path).with_context(|| format!("storing blob {sha256}"))?;
        std::fs::File::open(self.root.join("blobs"))?.sync_all()?;
        Ok(())
    }

    /// True when the blob is stored.
    pub fn has_blob(&self, sha256: &str) -> bool {
        sha256.len() == 64
            && sha256.chars().all(|c| c.is_ascii_hexdigit())
            && self.blob_path(sha256).exists()
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where compiled components are cached.
    pub fn compiled_dir(&self) -> PathBuf {
        self.root.join("compiled")
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join(sha256)
    }

    /// Stores `bytes` by content; returns its sha256. Storing the same bytes twice writes once.
    pub fn put_blob(&self, bytes: &[u8]) -> anyhow::Result<String> {
        let sha = sha256_hex(bytes);
        let path = self.blob_path(&sha);
        if !path.exists() {
            write_atomically(&path, bytes)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(sha)
    }

    /// Reads a blob and checks it still has the content its name says.
    pub fn blob(&self, sha256: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.blob_path(sha256);
        let bytes = std::fs::read(&path).with_context(|| format!("reading blob {sha256}"))?;
        if sha256_hex(&bytes) != sha256 {
            bail!("blob {sha256} is corrupt: its content no longer matches its sha256");
        }
        Ok(bytes)
    }

    fn model_dir(&self, model: &str) -> PathBuf {
        self.root.join("models").join(model)
    }

    /// Writes a version's manifest (its blobs must already be stored).
    pub fn put_version(&self, manifest: &VersionManifest) -> anyhow::Result<()> {
        check_name("model", &manifest.model)?;
        check_name("version", &manifest.version)?;
        let shas = [
            Some(&manifest.component_sha256),
            manifest.weights_sha256.as_ref(),
            manifest.config_sha256.as_ref(),
            manifest.tests_sha256.as_ref(),
        ];
        for sha in shas.into_iter().flatten() {
            if !self.blob_path(sha).exists() {
                bail!("blob {sha} is not in the store");
            }
        }
        let path = self
            .model_dir(&manifest.model)
            .join(format!("{}.json", manifest.version));
        write_atomically(&path, &serde_json::to_vec_pretty(manifest)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Every version manifest in the store, by model. Unreadable manifests are reported and skipped.
    pub fn versions(&self) -> anyhow::Result<BTreeMap<String, Vec<VersionManifest>>> {
        let mut models = BTreeMap::new();
        for entry in std::fs::read_dir(self.root.join("models"))? {
            let entry = entry?;
            let model = entry.file_name().to_string_lossy().into_owned();
            if check_name("model", &model).is_err() || !entry.file_type()?.is_dir() {
                continue;
            }
            let mut versions = Vec::new();
            for file in std::fs::read_dir(entry.path())? {
                let path = file?.path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if name.starts_with('.') || name == "aliases.json" || !name.ends_with(".json") {
                    continue;
                }
                match std::fs::read(&path)
                    .map_err(anyhow::Error::from)
                    .and_then(|b| Ok(serde_json::from_slice::<VersionManifest>(&b)?))
                {
                    Ok(m) => versions.push(m),
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "skipping an unreadable version manifest")
                    }
                }
            }
            versions.sort_by_key(|m| m.sequence);
            models.insert(model, versions);
        }
        Ok(models)
    }

    /// The next sequence number and default version name for `model`.
    pub fn next_version(&self, model: &str) -> anyhow::Result<(u64, String)> {
        let versions = self.versions()?.remove(model).unwrap_or_default();
        let sequence = versions
            .iter()
            .map(|m| m.sequence)
            .max()
            .map_or(1, |s| s + 1);
        let numeric = versions
            .iter()
            .filter_map(|m| m.version.parse::<u64>().ok())
            .max()
            .map_or(1, |n| n + 1);
        Ok((sequence, numeric.to_string()))
    }

    /// The aliases of `model` and their history.
    pub fn aliases(&self, model: &str) -> anyhow::Result<Aliases> {
        let path = self.model_dir(model).join("aliases.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Aliases::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Replaces the aliases of `model`.
    pub fn put_aliases(&self, model: &str, aliases: &Aliases) -> anyhow::Result<()> {
        let path = self.model_dir(model).join("aliases.json");
        write_atomically(&path, &serde_json::to_vec_pretty(aliases)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Removes a version's manifest (its blobs stay: other versions may share them).
    pub fn delete_version(&self, model: &str, version: &str) -> anyhow::Result<()> {
        let path = self.model_dir(model).join(format!("{version}.json"));
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        std::fs::File::open(self.model_dir(model))?.sync_all()?;
        Ok(())
    }

    /// Whether `model` was unloaded on request (it stays unloaded across restarts until loaded).
    pub fn is_unloaded(&self, model: &str) -> bool {
        self.model_dir(model).join("unloaded").exists()
    }

    /// Records that `model` is unloaded on request, or that it is not.
    pub fn set_unloaded(&self, model: &str, unloaded: bool) -> anyhow::Result<()> {
        let path = self.model_dir(model).join("unloaded");
        if unloaded {
            write_atomically(&path, b"unloaded on request\n")?;
        } else if path.exists() {
            std::fs::remove_file(&path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_content_addressed_and_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.put_blob(b"weights").unwrap();
        assert_eq!(store.put_blob(b"weights").unwrap(), a);
        assert_eq!(store.blob(&a).unwrap(), b"weights");
        std::fs::write(dir.path().join("blobs").join(&a), b"tampered").unwrap();
        assert!(store.blob(&a).unwrap_err().to_string().contains("corrupt"));
    }

    #[test]
    fn versions_come_back_in_creation_order_with_their_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let c = store.put_blob(b"component").unwrap();
        for (seq, v) in [(2, "b"), (1, "a")] {
            let m = VersionManifest {
                model: "m".into(),
                version: v.into(),
                sequence: seq,
                component_sha256: c.clone(),
                weights_sha256: None,
                config_sha256: None,
                tests_sha256: None,
                limits: None,
            };
            store.put_version(&m).unwrap();
        }
        let versions = store.versions().unwrap();
        assert_eq!(
            versions["m"]
                .iter()
                .map(|m| m.version.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(store.next_version("m").unwrap(), (3, "1".to_owned()));
        let aliases = Aliases {
            current: BTreeMap::from([("production".into(), "a".into())]),
            history: Default::default(),
        };
        store.put_aliases("m", &aliases).unwrap();
        assert_eq!(store.aliases("m").unwrap(), aliases);
    }

    #[test]
    fn a_manifest_naming_a_missing_blob_or_a_bad_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let m = VersionManifest {
            model: "m".into(),
            version: "1".into(),
            sequence: 1,
            component_sha256: "00".repeat(32),
            weights_sha256: None,
            config_sha256: None,
            tests_sha256: None,
            limits: None,
        };
        assert!(store
            .put_version(&m)
            .unwrap_err()
            .to_string()
            .contains("not in the store"));
        assert!(check_name("model", "../etc").is_err());
        assert!(check_name("model", "digits-onnx_v2.1").is_ok());
    }
}
