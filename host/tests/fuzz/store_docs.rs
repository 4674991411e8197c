//! Documents read from a store: version manifests, `aliases.json` (plain and split targets, the
//! history), `traffic.json`, the change record and host statuses, as random bytes and as valid
//! documents mutated (values replaced by hostile ones, keys dropped or added, names made invalid,
//! weights made zero, huge, negative or fractional, splits emptied or overfilled), then the bytes
//! themselves cut or flipped. Reading the model must never fail or panic over them; what it returns
//! must hold only what a writer through the registry could have written, and everything valid must
//! be kept. The registry then applies the view and routes through it.

use std::collections::BTreeMap;

use ferry::registry::{
    check_graph_name, check_name, AliasTarget, Aliases, Store, TrafficPolicy, VersionManifest,
};
use ferry::storage::BlobCache;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

use crate::oip_json::{mutate, mutation, Mutation};

const MODEL: &str = "m";

fn sha(c: char) -> String {
    c.to_string().repeat(64)
}

fn valid_manifest(version: &str) -> Value {
    json!({
        "model": MODEL,
        "version": version,
        "sequence": 3,
        "component_sha256": sha('a'),
        "weights_sha256": sha('b'),
        "limits": {"deadline_ms": 200, "max_instances": 2},
        "graphs": {"g": sha('c')},
    })
}

fn valid_aliases() -> Value {
    json!({
        "current": {
            "production": "3",
            "canary": {"split": {"3": 90, "4": 10}, "routing_key_field": "/x"},
        },
        "history": {"production": ["1", "2", {"split": {"1": 1, "2": 1}}]},
        "writes": ["0123456789abcdef"],
    })
}

fn valid_traffic() -> Value {
    json!({"shadow": {"version": "4", "percent": 12.5}, "log": {"percent": 100}})
}

/// Values a mutation puts in a document.
fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            json!(null),
            json!(true),
            json!(0),
            json!(-1),
            json!(1.5),
            json!(4294967295u64),
            json!(4294967296u64),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(""),
            json!("../etc"),
            json!(".hidden"),
            json!("a b"),
            json!("x".repeat(200)),
            json!("3"),
            json!({}),
            json!([]),
            json!({"split": {}}),
            json!({"split": {"3": 0}}),
            json!({"split": {"3": -1}}),
            json!({"split": {"3": 1.5}}),
            json!({"split": {"3": 4294967295u64, "4": 4294967295u64}}),
            json!({"split": {"../x": 5}}),
            json!({"split": {"3": 1}, "routing_key_field": "x"}),
            json!({"split": {"3": 1}, "extra": 1}),
            json!({"version": "3"}),
            json!(Value::Object(
                (0..20).map(|i| (i.to_string(), json!(1))).collect()
            )),
            json!({"percent": 101}),
            json!({"percent": -0.5}),
            json!({"percent": "50"}),
            json!("ABCDEF".repeat(11)),
            json!(sha('g')),
            json!(sha('A')),
        ]),
        any::<i64>().prop_map(|x| json!(x)),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(|x| json!(x)),
    ]
}

/// A change to a document's value.
#[derive(Debug, Clone)]
enum Edit {
    /// The node at a path (indexes into each level) becomes a value.
    Replace(Vec<prop::sample::Index>, Value),
    /// A key of the object at a path goes.
    Remove(Vec<prop::sample::Index>),
    /// A key is added to the object at a path.
    Insert(Vec<prop::sample::Index>, String, Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    let path = prop::collection::vec(any::<prop::sample::Index>(), 0..4);
    prop_oneof![
        4 => (path.clone(), hostile_value()).prop_map(|(p, v)| Edit::Replace(p, v)),
        1 => path.clone().prop_map(Edit::Remove),
        2 => (path, prop::sample::select(vec!["3", "x", "", ".a", "production", "percent", "split", "limits"]), hostile_value())
            .prop_map(|(p, k, v)| Edit::Insert(p, k.to_owned(), v)),
    ]
}

/// The node a path leads to (stopping early at a leaf).
fn walk<'a>(v: &'a mut Value, path: &[prop::sample::Index]) -> &'a mut Value {
    let Some((first, rest)) = path.split_first() else {
        return v;
    };
    let len = match v {
        Value::Array(a) => a.len(),
        Value::Object(m) => m.len(),
        _ => 0,
    };
    if len == 0 {
        return v;
    }
    let i = first.index(len);
    // Borrow checking: decide first, then descend.
    if v.is_array() {
        walk(&mut v.as_array_mut().unwrap()[i], rest)
    } else {
        let key = v.as_object().unwrap().keys().nth(i).unwrap().clone();
        walk(v.as_object_mut().unwrap().get_mut(&key).unwrap(), rest)
    }
}

fn apply(doc: &mut Value, edit: &Edit) {
    match edit {
        Edit::Replace(path, value) => *walk(doc, path) = value.clone(),
        Edit::Remove(path) => {
            if let Value::Object(m) = walk(doc, path) {
                if let Some(k) = m.keys().next().cloned() {
                    m.remove(&k);
                }
            }
        }
        Edit::Insert(path, key, value) => {
            if let Value::Object(m) = walk(doc, path) {
                m.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Which document, where.
#[derive(Debug, Clone)]
enum Kind {
    /// A manifest stored as `<file>.json` for version `version`.
    Manifest {
        file: &'static str,
        version: &'static str,
    },
    Aliases,
    Traffic,
    Changes,
    Host,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => prop::sample::select(vec![("3", "3"), ("4", "4"), ("5", "5"), ("3", "4"), ("x", "../x"), ("y", "")])
            .prop_map(|(file, version)| Kind::Manifest { file, version }),
        4 => Just(Kind::Aliases),
        2 => Just(Kind::Traffic),
        1 => Just(Kind::Changes),
        1 => Just(Kind::Host),
    ]
}

#[derive(Debug, Clone)]
struct Doc {
    kind: Kind,
    /// Random bytes instead of a document.
    random: Option<Vec<u8>>,
    edits: Vec<Edit>,
    bytes: Option<Mutation>,
}

fn doc() -> impl Strategy<Value = Doc> {
    (
        kind(),
        prop_oneof![8 => Just(None), 1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Some)],
        prop_oneof![
            3 => Just(vec![]),
            3 => prop::collection::vec(edit(), 1..2),
            3 => prop::collection::vec(edit(), 2..4),
        ],
        prop_oneof![3 => Just(None), 1 => mutation()],
    )
        .prop_map(|(kind, random, edits, bytes)| Doc {
            kind,
            random,
            edits,
            bytes,
        })
}

fn key_of(kind: &Kind) -> String {
    match kind {
        Kind::Manifest { file, .. } => format!("models/{MODEL}/{file}.json"),
        Kind::Aliases => format!("models/{MODEL}/aliases.json"),
        Kind::Traffic => format!("models/{MODEL}/traffic.json"),
        Kind::Changes => "changes.json".into(),
        Kind::Host => "hosts/h.json".into(),
    }
}

fn bytes_of(doc: &Doc) -> Vec<u8> {
    if let Some(r) = &doc.random {
        return r.clone();
    }
    let mut v = match &doc.kind {
        Kind::Manifest { version, .. } => valid_manifest(version),
        Kind::Aliases => valid_aliases(),
        Kind::Traffic => valid_traffic(),
        Kind::Changes => json!({"generation": 7, "models": {MODEL: 7}}),
        Kind::Host => {
            json!({"host": "h", "heartbeat_unix_ms": 1, "versions": [{"model": MODEL, "version": "3", "state": "ready"}]})
        }
    };
    for e in &doc.edits {
        apply(&mut v, e);
    }
    mutate(serde_json::to_vec(&v).unwrap(), &doc.bytes)
}

fn valid_target(t: &AliasTarget) -> bool {
    t.check().is_ok()
        && t.versions()
            .iter()
            .all(|v| check_name("version", v).is_ok())
}

/// The aliases a document must come back as: parsed, less every entry that is not valid.
fn expected_aliases(bytes: &[u8]) -> Option<Aliases> {
    let mut a: Aliases = serde_json::from_slice(bytes).ok()?;
    a.current
        .retain(|alias, t| check_name("alias", alias).is_ok() && valid_target(t));
    a.history
        .retain(|alias, _| check_name("alias", alias).is_ok());
    for ts in a.history.values_mut() {
        ts.retain(valid_target);
    }
    Some(a)
}

fn expected_manifest(file: &str, bytes: &[u8]) -> Option<VersionManifest> {
    let m: VersionManifest = serde_json::from_slice(bytes).ok()?;
    let sha = |s: &String| {
        s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = m.model == MODEL
        && check_name("version", &m.version).is_ok()
        && file == m.version
        && m.blobs().all(sha)
        && m.graphs.keys().all(|g| check_graph_name(g).is_ok());
    ok.then_some(m)
}

#[test]
fn store_documents() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = runtime.block_on(async {
        let storage = ferry::storage::open(root.to_str().unwrap()).unwrap();
        Store::new(BlobCache::open(storage, &dir.path().join("cache"), 1 << 30).unwrap())
    });
    let registry = runtime.block_on(async {
        let models = ferry::runtime::ModelRuntime::new(Default::default(), false).unwrap();
        ferry::registry::Registry::new(store.clone(), models, ferry::config::HostConfig::default())
    });
    let strategy = prop::collection::vec(doc(), 1..4);
    let tally = crate::Tally::default();
    crate::run("store_documents", 3_000, strategy, |docs| {
        let _ = std::fs::remove_dir_all(&root);
        let mut written: BTreeMap<String, (Kind, Vec<u8>)> = BTreeMap::new();
        for d in &docs {
            let key = key_of(&d.kind);
            let bytes = bytes_of(d);
            let path = root.join(&key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
            written.insert(key, (d.kind.clone(), bytes));
        }
        let view = runtime.block_on(store.model(MODEL));
        let view = match view {
            Ok(v) => v,
            Err(e) => {
                return Err(TestCaseError::fail(format!(
                    "reading the model failed: {e}"
                )))
            }
        };
        let mut manifests = Vec::new();
        let mut aliases = Aliases::default();
        let mut traffic = TrafficPolicy::default();
        for (kind, bytes) in written.values() {
            match kind {
                Kind::Manifest { file, .. } => manifests.extend(expected_manifest(file, bytes)),
                Kind::Aliases => aliases = expected_aliases(bytes).unwrap_or_default(),
                Kind::Traffic => {
                    // The policy's fields, beside the ids of its last writes (`writes`), which are
                    // the store's own and no part of the policy.
                    traffic = serde_json::from_slice::<Value>(bytes)
                        .ok()
                        .and_then(|mut doc| {
                            if let Some(writes) = doc.as_object_mut()?.remove("writes") {
                                serde_json::from_value::<Vec<String>>(writes).ok()?;
                            }
                            serde_json::from_value::<TrafficPolicy>(doc).ok()
                        })
                        .unwrap_or_default();
                    if traffic
                        .shadow
                        .as_ref()
                        .is_some_and(|s| check_name("version", &s.version).is_err())
                    {
                        traffic.shadow = None;
                    }
                }
                Kind::Changes | Kind::Host => {}
            }
        }
        tally.note(format!("cases keeping {} manifests", manifests.len()));
        tally.note(format!("cases keeping {} aliases", aliases.current.len()));
        // The view is in sequence order; among equal sequences, in the listing's.
        let mut got = view.manifests.clone();
        let by_name = |a: &VersionManifest, b: &VersionManifest| a.version.cmp(&b.version);
        got.sort_by(by_name);
        manifests.sort_by(by_name);
        prop_assert!(view
            .manifests
            .windows(2)
            .all(|w| w[0].sequence <= w[1].sequence));
        prop_assert_eq!(&got, &manifests);
        prop_assert_eq!(&view.aliases, &aliases);
        prop_assert_eq!(&view.traffic, &traffic);
        for p in [&view.traffic.log.percent]
            .into_iter()
            .chain(view.traffic.shadow.as_ref().map(|s| &s.percent))
        {
            prop_assert!((0.0..=100.0).contains(&p.get()));
        }
        // The rest of the store's documents: an error or a value, never a panic.
        let _ = runtime.block_on(store.changes());
        let hosts = runtime.block_on(store.hosts());
        prop_assert!(
            hosts.is_ok(),
            "an unreadable host status is skipped: {:?}",
            hosts.err()
        );
        prop_assert!(runtime.block_on(store.all_models()).is_ok());
        // The registry takes the view and routes through it (its versions fail to load: their blobs
        // are not in the store).
        runtime.block_on(async {
            let _ = registry.refresh(MODEL).await;
        });
        let table = registry.table();
        let _ = table.route(MODEL, None);
        for alias in view.aliases.current.keys() {
            let _ = table.route(MODEL, Some(alias));
        }
        Ok(())
    });
    tally.report("store_documents");
    runtime.block_on(registry.settle(std::time::Duration::from_secs(10)));
}

mod regressions {
    use super::*;

    async fn view_with(files: &[(&str, &str)]) -> ferry::registry::ModelView {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        for (key, text) in files {
            let path = root.join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let storage = ferry::storage::open(root.to_str().unwrap()).unwrap();
        let store =
            Store::new(BlobCache::open(storage, &dir.path().join("cache"), 1 << 30).unwrap());
        store.model(MODEL).await.unwrap()
    }

    #[tokio::test]
    async fn invalid_aliases_in_the_store_are_dropped_and_valid_ones_kept() {
        // Caught by `store_documents`: aliases.json was taken as it was, so a split with no weight,
        // an empty split or a version named `../x` reached the routing table.
        let view = view_with(&[(
            "models/m/aliases.json",
            r#"{"current": {"production": "3", "a": {"split": {"3": 0}}, "b": {"split": {}},
                "c": "../x", ".d": "3", "e": {"split": {"3": 4294967295, "4": 4294967295}},
                "f": {"split": {"3": 1}, "routing_key_field": "x"}},
               "history": {"production": ["1", {"split": {}}], "../p": ["1"]}}"#,
        )])
        .await;
        assert_eq!(
            view.aliases.current.keys().collect::<Vec<_>>(),
            ["production"],
            "{:?}",
            view.aliases
        );
        assert_eq!(view.aliases.history.len(), 1);
        assert_eq!(
            view.aliases.history["production"],
            [AliasTarget::version("1")]
        );
    }

    #[tokio::test]
    async fn a_manifest_with_an_invalid_name_or_blob_is_skipped() {
        // Caught by `store_documents`: a manifest was kept whatever its version name, its file name
        // or its blobs' names said.
        let m = |version: &str, component: &str| {
            json!({"model": "m", "version": version, "sequence": 1, "component_sha256": component})
                .to_string()
        };
        let view = view_with(&[
            ("models/m/1.json", &m("1", &sha('a'))),
            ("models/m/2.json", &m("3", &sha('a'))),
            ("models/m/x.json", &m("../x", &sha('a'))),
            ("models/m/4.json", &m("4", "../../etc/passwd")),
            ("models/m/5.json", &m("5", &sha('A'))),
        ])
        .await;
        let versions: Vec<&str> = view.manifests.iter().map(|m| m.version.as_str()).collect();
        assert_eq!(versions, ["1"]);
    }

    #[tokio::test]
    async fn a_shadow_with_an_invalid_version_name_is_dropped() {
        let view = view_with(&[(
            "models/m/traffic.json",
            r#"{"shadow": {"version": "../x", "percent": 10}, "log": {"percent": 5}}"#,
        )])
        .await;
        assert!(view.traffic.shadow.is_none());
        assert_eq!(view.traffic.log.percent.get(), 5.0);
    }
}
