//! What a version leaves in this host's cache directory, collected when the version is gone from
//! the host (deleted — by hand or by [`super::retention`] — or replaced under its name): its
//! compiled snapshot and the note beside it (`compiled/<engine>/<snapshot key>.{cwasm,json}`), its
//! compiled component (`<component sha256>.cwasm`, `<sha256>-instrumented.cwasm`) and the cached
//! copies of its blobs (`blobs/<sha256>`, remote stores only), each only when no version this host
//! still lists uses the same one. Weights-only updates give every version a snapshot of its own: a
//! host that sees one every few minutes would otherwise fill its disk up to the cache's bound.
//!
//! A version only unloaded (not targeted) keeps its files: it may be promoted again. A snapshot's
//! key is known once the version has loaded here; a version still loading is matched by what its
//! snapshot is made of (component, weights, config, graphs). Removing a file that instances still
//! map is safe: the mapping outlives the name; only a later reopen would compile again.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::{ModelVersion, Registry, RoutingTable, VersionManifest};

/// A version's label in the notes: the sequence tells apart a version created again under a name.
fn label(m: &VersionManifest) -> String {
    format!("{}@{}#{}", m.model, m.version, m.sequence)
}

/// What a snapshot is made of, as far as the manifest says.
fn makings(m: &VersionManifest) -> (&str, Option<&str>, Option<&str>, Vec<&str>) {
    (
        &m.component_sha256,
        m.weights_sha256.as_deref(),
        m.config_sha256.as_deref(),
        m.graphs.values().map(String::as_str).collect(),
    )
}

fn listed(table: &RoutingTable, m: &VersionManifest) -> bool {
    table
        .models
        .get(&m.model)
        .and_then(|e| e.versions.get(&m.version))
        .is_some_and(|v| v.manifest == *m)
}

impl Registry {
    /// Remembers which snapshot a loaded (or failed after compiling) version has on this host.
    pub(super) fn note_compiled(&self, version: &ModelVersion) {
        if let Some(key) = &version.snapshot_key {
            self.compiled.lock().unwrap().insert(
                label(&version.manifest),
                (version.manifest.clone(), key.clone()),
            );
        }
    }

    /// Removes the cached files of `gone` (versions that just left the routing table) that no
    /// version still listed uses, on a blocking thread. Call after publishing the table.
    pub(super) fn collect_leftovers(&self, gone: Vec<VersionManifest>) {
        let table = self.table();
        let mut gone_keys = Vec::new();
        let still_keys: BTreeSet<String> = {
            let mut compiled = self.compiled.lock().unwrap();
            // Also any note of a version the table lost without this being told (a safety net).
            compiled.retain(|_, (m, key)| {
                let keep = listed(&table, m);
                if !keep {
                    gone_keys.push((m.clone(), key.clone()));
                }
                keep
            });
            compiled.values().map(|(_, k)| k.clone()).collect()
        };
        if gone.is_empty() && gone_keys.is_empty() {
            return;
        }
        let remaining: Vec<&VersionManifest> = table.versions().map(|v| &v.manifest).collect();
        // Compiled keys no version still uses (with whether a note goes with them).
        let mut compiled: Vec<(String, bool)> = Vec::new();
        for (m, key) in &gone_keys {
            let shared =
                still_keys.contains(key) || remaining.iter().any(|r| makings(r) == makings(m));
            if !shared {
                compiled.push((key.clone(), true));
            }
        }
        for m in gone.iter().chain(gone_keys.iter().map(|(m, _)| m)) {
            let sha = &m.component_sha256;
            if !remaining.iter().any(|r| r.component_sha256 == *sha) {
                compiled.push((sha.clone(), false));
                compiled.push((format!("{sha}-instrumented"), false));
            }
        }
        let cache = self.models.engine().compile_cache().cloned();
        let mut files: BTreeSet<PathBuf> = BTreeSet::new();
        let blobs_dir = self.store.blobs().root().join("blobs");
        for m in gone.iter().chain(gone_keys.iter().map(|(m, _)| m)) {
            for blob in m.blobs() {
                if !remaining.iter().any(|r| r.blobs().any(|b| b == blob)) {
                    files.insert(blobs_dir.join(blob));
                }
            }
        }
        let versions: Vec<String> = gone
            .iter()
            .chain(gone_keys.iter().map(|(m, _)| m))
            .map(label)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.tokio.spawn_blocking(move || {
            // A version with a fuel limit ran on the engine that counts fuel, whose compiled files
            // are cached beside the other engine's: a key goes from each (made in this process or
            // not). A key still used on one engine keeps its file on both; the cache's size limit
            // takes such a copy in time.
            for cache in cache.iter().flat_map(|c| c.with_siblings()) {
                for (key, note) in &compiled {
                    files.insert(cache.path_for(key));
                    if *note {
                        files.insert(cache.note_path(key));
                    }
                }
            }
            let (mut removed, mut bytes) = (0, 0);
            for file in files {
                let size = std::fs::metadata(&file).map_or(0, |m| m.len());
                match std::fs::remove_file(&file) {
                    Ok(()) => {
                        removed += 1;
                        bytes += size;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(file = %file.display(), error = %e, "cannot remove a gone version's cached file")
                    }
                }
            }
            if removed > 0 {
                tracing::info!(?versions, files = removed, bytes, "removed the compiled code, snapshots and cached blobs of versions gone from this host");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_matched_by_what_they_are_made_of() {
        let m = |weights: &str| VersionManifest {
            model: "m".into(),
            version: "1".into(),
            sequence: 1,
            component_sha256: "c".into(),
            weights_sha256: Some(weights.into()),
            config_sha256: None,
            tests_sha256: Some("t".into()),
            profile_sha256: None,
            limits: None,
            graphs: Default::default(),
        };
        assert_eq!(makings(&m("w")), makings(&m("w")));
        assert_ne!(makings(&m("w")), makings(&m("x")));
        assert_eq!(label(&m("w")), "m@1#1");
    }
}
