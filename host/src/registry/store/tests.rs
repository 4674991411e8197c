use super::*;
use crate::registry::AliasTarget;

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::storage::open(dir.path().join("store").to_str().unwrap()).unwrap();
    let cache = BlobCache::open(storage, &dir.path().join("cache"), 1 << 30).unwrap();
    (dir, Store::new(cache))
}

fn manifest(version: &str, sequence: u64, component: &str) -> VersionManifest {
    VersionManifest {
        model: "m".into(),
        version: version.into(),
        sequence,
        component_sha256: component.into(),
        weights_sha256: None,
        config_sha256: None,
        tests_sha256: None,
        profile_sha256: None,
        graphs: Default::default(),
        limits: None,
    }
}

async fn put_blob(store: &Store, bytes: &[u8]) -> String {
    let (path, _) = store.blobs().upload_file().unwrap();
    std::fs::write(&path, bytes).unwrap();
    let sha = crate::stamps::sha256_hex(bytes);
    store.blobs().commit_upload(&path, &sha).await.unwrap();
    sha
}

#[tokio::test]
async fn versions_come_back_in_creation_order_and_names_are_not_reused() {
    let (_dir, store) = store().await;
    let c = put_blob(&store, b"component").await;
    assert_eq!(&store.blobs().read(&c).await.unwrap()[..], b"component");
    for v in ["b", "a"] {
        store.create_version(&manifest(v, 0, &c)).await.unwrap();
    }
    let unnamed = store.create_version(&manifest("", 0, &c)).await.unwrap();
    assert_eq!(unnamed.version, "1");
    let view = store.model("m").await.unwrap();
    assert_eq!(
        view.manifests
            .iter()
            .map(|m| m.version.as_str())
            .collect::<Vec<_>>(),
        ["b", "a", "1"]
    );
    let (changes, _) = store.changes().await.unwrap().unwrap();
    assert_eq!(
        changes.models["m"], changes.generation,
        "the last change was to m"
    );
    assert!(matches!(
        store.create_version(&manifest("a", 9, &c)).await,
        Err(ChangeError::Conflict(_))
    ));
    assert_eq!(store.next_version_name("m").await.unwrap(), "2");
}

#[tokio::test]
async fn a_manifest_naming_a_missing_blob_or_a_bad_name_is_refused() {
    let (_dir, store) = store().await;
    let err = store
        .create_version(&manifest("1", 1, &"00".repeat(32)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not in the store"), "{err}");
    assert!(check_name("model", "../etc").is_err());
    assert!(check_name("model", "digits-onnx_v2.1").is_ok());
}

#[tokio::test]
async fn a_corrupt_blob_is_refused_when_read() {
    let (dir, store) = store().await;
    let sha = put_blob(&store, b"weights").await;
    std::fs::write(dir.path().join("store/blobs").join(&sha), b"tampered").unwrap();
    assert!(store
        .blobs()
        .read(&sha)
        .await
        .unwrap_err()
        .to_string()
        .contains("corrupt"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_alias_moves_are_all_applied_in_some_order() {
    let (_dir, store) = store().await;
    let moves = futures_util::future::join_all((0..6).map(|i| {
        let store = store.clone();
        async move {
            store
                .update_aliases("m", |a| {
                    if let Some(old) = a
                        .current
                        .insert("production".into(), AliasTarget::version(i.to_string()))
                    {
                        a.history.entry("production".into()).or_default().push(old);
                    }
                    Ok(())
                })
                .await
        }
    }))
    .await;
    assert!(moves.iter().all(|m| m.is_ok()), "{moves:?}");
    let aliases = store.model("m").await.unwrap().aliases;
    assert_eq!(
        aliases.history["production"].len(),
        5,
        "no move was lost: {aliases:?}"
    );
}

/// A store whose compare-and-swap lets a racing writer win too, once: right after the first
/// write of `traffic.json`, a racer that read the same base replaces it.
#[derive(Debug)]
struct DoubleWin {
    inner: Arc<dyn Storage>,
    raced: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Storage for DoubleWin {
    async fn get(&self, key: &str) -> crate::storage::Result<crate::storage::Object> {
        self.inner.get(key).await
    }
    async fn get_if_changed(
        &self,
        key: &str,
        version: &ObjectVersion,
    ) -> crate::storage::Result<Option<crate::storage::Object>> {
        self.inner.get_if_changed(key, version).await
    }
    async fn get_stream(&self, key: &str) -> crate::storage::Result<crate::storage::ByteStream> {
        self.inner.get_stream(key).await
    }
    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        mode: Write,
    ) -> crate::storage::Result<ObjectVersion> {
        let written = self.inner.put(key, bytes, mode).await?;
        if key.ends_with("traffic.json")
            && !self.raced.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let racer = TrafficDoc {
                policy: serde_json::from_value(serde_json::json!({"log": {"percent": 1}})).unwrap(),
                writes: vec!["racer".into()],
            };
            self.inner
                .put(key, Store::json(&racer), Write::Overwrite)
                .await?;
        }
        Ok(written)
    }
    async fn put_file(&self, key: &str, file: &std::path::Path) -> crate::storage::Result<()> {
        self.inner.put_file(key, file).await
    }
    async fn list(&self, prefix: &str) -> crate::storage::Result<Vec<crate::storage::Listed>> {
        self.inner.list(prefix).await
    }
    async fn exists(&self, key: &str) -> crate::storage::Result<bool> {
        self.inner.exists(key).await
    }
    async fn delete(&self, key: &str) -> crate::storage::Result<()> {
        self.inner.delete(key).await
    }
    fn describe(&self) -> String {
        "double-win".into()
    }
}

#[tokio::test]
async fn a_traffic_change_replaced_by_a_racing_write_is_applied_again() {
    let dir = tempfile::tempdir().unwrap();
    let inner = crate::storage::open(dir.path().join("store").to_str().unwrap()).unwrap();
    let storage = Arc::new(DoubleWin {
        inner,
        raced: Default::default(),
    });
    let cache = BlobCache::open(storage, &dir.path().join("cache"), 1 << 30).unwrap();
    let store = Store::new(cache);
    let wanted: TrafficPolicy =
        serde_json::from_value(serde_json::json!({"log": {"percent": 50}})).unwrap();
    store
        .update_traffic("m", |p| {
            *p = wanted.clone();
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(
        store.model("m").await.unwrap().traffic,
        wanted,
        "the change survives the racer"
    );
    // The write ids stay in the store's document, out of the policy.
    let text = std::fs::read_to_string(dir.path().join("store/models/m/traffic.json")).unwrap();
    assert!(
        text.contains("\"writes\"") && text.contains("racer"),
        "{text}"
    );
    assert!(serde_json::to_string(&wanted)
        .unwrap()
        .find("writes")
        .is_none());
}

#[tokio::test]
async fn stores_written_before_the_change_record_number_on_from_their_versions() {
    let (dir, store) = store().await;
    let c = put_blob(&store, b"component").await;
    // A manifest as the earlier layout wrote it, with no change record beside it.
    let old = manifest("7", 41, &c);
    let path = dir.path().join("store/models/m/7.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
    assert!(store.changes().await.unwrap().is_none());
    assert_eq!(store.reserve_sequence().await.unwrap(), 42);
    assert_eq!(store.next_version_name("m").await.unwrap(), "8");
}

#[tokio::test]
async fn garbage_collection_keeps_named_and_recent_blobs() {
    let (_dir, store) = store().await;
    let named = put_blob(&store, b"named").await;
    let orphan = put_blob(&store, b"orphan").await;
    store
        .create_version(&manifest("1", 1, &named))
        .await
        .unwrap();
    assert_eq!(
        store
            .collect_garbage(Duration::from_secs(3600))
            .await
            .unwrap()
            .0,
        0,
        "recent blobs stay"
    );
    assert_eq!(store.collect_garbage(Duration::ZERO).await.unwrap(), (1, 6));
    assert!(store.blobs().exists(&named).await.unwrap());
    assert!(!store.blobs().exists(&orphan).await.unwrap());
}
