//! `ferry replay LOG [--id ID] [--against VERSION]`: runs logged predictions again and says, per
//! record, whether the answer is the same bit for bit. Each record names its version by sha256
//! (component, weights, config, graphs), so the exact version is rebuilt from the store's blobs even
//! after the version itself was deleted; `--against V` runs the same inputs on another version of the
//! model instead (an offline backtest) and reports how far its answers are from the logged ones.
//!
//! A replay runs the way the host serves: compiled by the same engine settings (deterministic NaNs
//! and relaxed SIMD unless the config turns them off), initialised from the same snapshot, under
//! the version's own limits — each record on a fresh instance.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::CacheArgs;
use crate::config::HostConfig;
use crate::engine::EngineSettings;
use crate::host_api::graph::{GraphFile, GraphOptions, VersionGraphs};
use crate::registry::{Store, VersionManifest};
use crate::runtime::{
    CallError, ModelInstance, ModelLimits, ModelRuntime, Prepared, StartMode, Startup, VersionCode,
};
use crate::server::status::of_call as call_status;
use crate::serving::traffic::compare::compare;
use crate::serving::traffic::log::{LogRecord, LoggedOutput};
use crate::serving::{Output, Payload};
use crate::storage::BlobCache;

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The prediction log: a `.jsonl` file, or a directory of them (e.g. `ferry-store/predictions`).
    log: PathBuf,
    /// Only the record with this request id.
    #[arg(long)]
    id: Option<String>,
    /// Run the logged inputs on this version of each record's model instead, and compare.
    #[arg(long)]
    against: Option<String>,
    /// The store holding the versions' blobs: a directory or `s3://BUCKET/PREFIX`.
    #[arg(long, default_value = "ferry-store", env = "FERRY_STORE")]
    store: String,
    /// The host's configuration (engine settings and limits to replay under).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print each record's result as a JSON line instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cache: CacheArgs,
}

/// A version's identity: what it is made of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Identity {
    component: String,
    weights: Option<String>,
    config: Option<String>,
    graphs: Vec<(String, String)>,
}

impl Identity {
    fn of_record(r: &LogRecord) -> Identity {
        Identity {
            component: r.component_sha256.clone(),
            weights: r.weights_sha256.clone(),
            config: r.config_sha256.clone(),
            graphs: r.graphs.clone().into_iter().collect(),
        }
    }

    fn of_manifest(m: &VersionManifest) -> Identity {
        Identity {
            component: m.component_sha256.clone(),
            weights: m.weights_sha256.clone(),
            config: m.config_sha256.clone(),
            graphs: m.graphs.clone().into_iter().collect(),
        }
    }
}

/// One record's result.
enum Verdict {
    /// The same bits (or the same failure).
    Equal,
    /// Something else, and how far.
    Differs(String),
    /// The version could not be run.
    Unrunnable(String),
}

pub fn run(args: ReplayArgs) -> anyhow::Result<i32> {
    let config = match &args.config {
        Some(path) => HostConfig::load(path)?,
        None => HostConfig::default(),
    };
    let mut records = read_log(&args.log)?;
    if let Some(id) = &args.id {
        records.retain(|r| &r.id == id);
        if records.is_empty() {
            anyhow::bail!("no record with id `{id}` in {}", args.log.display());
        }
    }
    if records.is_empty() {
        anyhow::bail!("{} holds no prediction records", args.log.display());
    }
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let storage = crate::storage::open(&args.store)?;
    let cache_dir = match args.cache.dir() {
        Some(dir) => dir,
        None => std::env::temp_dir().join("ferry-replay"),
    };
    let blobs = BlobCache::open(storage, &cache_dir, config.cache.max_bytes)?;
    let store = Store::new(blobs.clone());
    let runtime = ModelRuntime::new(
        EngineSettings {
            max_memory_bytes: config.host.max_memory_mib << 20,
            fuel: config.host.fuel,
            deterministic: config.host.deterministic,
            cache_dir: Some(blobs.compiled_dir()),
            total_instances: 16,
            ..Default::default()
        },
        config.host.snapshots,
    )?;
    let mut replayer = Replayer {
        io,
        store,
        runtime,
        config,
        loaded: HashMap::new(),
        manifests: HashMap::new(),
    };

    let (mut equal, mut differ, mut unrunnable) = (0, 0, 0);
    for record in &records {
        let (verdict, ran_on) = replayer.replay(record, args.against.as_deref());
        match &verdict {
            Verdict::Equal => equal += 1,
            Verdict::Differs(_) => differ += 1,
            Verdict::Unrunnable(_) => unrunnable += 1,
        }
        let (word, detail) = match &verdict {
            Verdict::Equal if args.against.is_some() => ("identical", String::new()),
            Verdict::Equal => ("equal", String::new()),
            Verdict::Differs(d) => ("differs", d.clone()),
            Verdict::Unrunnable(d) => ("not run", d.clone()),
        };
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "id": record.id, "model": record.model, "logged_version": record.version,
                    "ran_on": ran_on, "result": word, "detail": detail,
                })
            );
        } else {
            let sep = if detail.is_empty() { "" } else { ": " };
            println!(
                "{}  {}@{} → {ran_on}  {word}{sep}{detail}",
                record.id, record.model, record.version
            );
        }
    }
    let what = if args.against.is_some() {
        "identical to the logged answer"
    } else {
        "equal bit for bit"
    };
    eprintln!(
        "{} records: {equal} {what}, {differ} differ, {unrunnable} could not be run",
        records.len()
    );
    // A replay of the exact versions is a check: anything but equal fails it. A backtest reports.
    Ok(
        if unrunnable > 0 || (args.against.is_none() && differ > 0) {
            1
        } else {
            0
        },
    )
}

/// Every record of a file, or of every `.jsonl` file under a directory (in name order: by time).
fn read_log(path: &Path) -> anyhow::Result<Vec<LogRecord>> {
    let mut files = Vec::new();
    if path.is_dir() {
        let mut dirs = vec![path.to_owned()];
        while let Some(dir) = dirs.pop() {
            for entry in
                std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
            {
                let p = entry?.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "jsonl") {
                    files.push(p);
                }
            }
        }
        files.sort();
    } else {
        files.push(path.to_owned());
    }
    let mut records = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading the prediction log {}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record: LogRecord = serde_json::from_str(line).with_context(|| {
                format!("{}:{} is not a prediction record", file.display(), n + 1)
            })?;
            records.push(record);
        }
    }
    Ok(records)
}

/// A version made ready to start instances from (compiled, initialised, captured).
struct Loaded {
    prepared: Prepared,
    limits: ModelLimits,
    config: String,
    weights: Option<bytes::Bytes>,
    graphs: Option<Arc<VersionGraphs>>,
    label: Arc<str>,
}

impl Loaded {
    /// A fresh instance: every record runs on one, so no state of an earlier call can change it
    /// (a model that carries state between calls then shows as `differs`).
    fn instance(&self) -> Result<ModelInstance, String> {
        let startup = match &self.prepared.mode {
            StartMode::Snapshot => Startup::Snapshot,
            StartMode::InitPerInstance(_) => Startup::Init {
                config: &self.config,
                weights: self.weights.as_deref(),
            },
        };
        ModelInstance::start(
            &self.prepared.component,
            &self.limits,
            self.label.clone(),
            startup,
            self.graphs.as_ref(),
        )
        .map_err(|e| format!("init failed: {e}"))
    }
}

struct Replayer {
    io: tokio::runtime::Runtime,
    store: Store,
    runtime: Arc<ModelRuntime>,
    config: HostConfig,
    loaded: HashMap<Identity, Result<Loaded, String>>,
    manifests: HashMap<String, Vec<VersionManifest>>,
}

impl Replayer {
    /// Replays one record; answers the verdict and the version it ran on.
    fn replay(&mut self, record: &LogRecord, against: Option<&str>) -> (Verdict, String) {
        let manifests = self.manifests_of(&record.model);
        let (identity, ran_on, manifest) = match against {
            Some(v) => match manifests.iter().find(|m| m.version == v) {
                Some(m) => (Identity::of_manifest(m), v.to_owned(), Some(m.clone())),
                None => {
                    return (
                        Verdict::Unrunnable(format!(
                            "model `{}` has no version `{v}` in the store",
                            record.model
                        )),
                        v.to_owned(),
                    )
                }
            },
            None => {
                let identity = Identity::of_record(record);
                // The logged version's limits, when the store still has it as it was.
                let manifest = manifests
                    .iter()
                    .find(|m| m.version == record.version && Identity::of_manifest(m) == identity)
                    .cloned();
                (identity, record.version.clone(), manifest)
            }
        };
        let payload = match record.input.payload() {
            Ok(p) => p,
            Err(e) => {
                return (
                    Verdict::Unrunnable(format!("the record's input: {e}")),
                    ran_on,
                )
            }
        };
        let instance = self
            .loaded(&record.model, &identity, manifest.as_ref())
            .and_then(Loaded::instance);
        let outcome = match instance {
            Ok(mut instance) => call(&mut instance, &payload),
            Err(e) => return (Verdict::Unrunnable(e), ran_on),
        };
        (judge(record, outcome, against.is_some()), ran_on)
    }

    fn manifests_of(&mut self, model: &str) -> Vec<VersionManifest> {
        if let Some(m) = self.manifests.get(model) {
            return m.clone();
        }
        let found = self
            .io
            .block_on(self.store.model(model))
            .map(|view| view.manifests)
            .unwrap_or_default();
        self.manifests.insert(model.to_owned(), found.clone());
        found
    }

    fn loaded(
        &mut self,
        model: &str,
        identity: &Identity,
        manifest: Option<&VersionManifest>,
    ) -> Result<&Loaded, String> {
        if !self.loaded.contains_key(identity) {
            let loaded = self
                .load(model, identity, manifest)
                .map_err(|e| format!("{e:#}"));
            self.loaded.insert(identity.clone(), loaded);
        }
        match self.loaded.get(identity).expect("inserted above") {
            Ok(loaded) => Ok(loaded),
            Err(e) => Err(e.clone()),
        }
    }

    fn load(
        &self,
        model: &str,
        identity: &Identity,
        manifest: Option<&VersionManifest>,
    ) -> anyhow::Result<Loaded> {
        let read = |sha: &str, what: &str| {
            self.io
                .block_on(self.store.blobs().read(sha))
                .with_context(|| format!("the {what} {sha}"))
        };
        let component = read(&identity.component, "component")?;
        let weights = identity
            .weights
            .as_deref()
            .map(|s| read(s, "weights"))
            .transpose()?;
        let config = match &identity.config {
            Some(sha) => String::from_utf8(read(sha, "config")?.to_vec())
                .context("the config is not UTF-8")?,
            None => "{}".to_owned(),
        };
        let asked = manifest.and_then(|m| m.limits.clone());
        let limits = crate::registry::effective_limits(&self.config, model, asked.as_ref())
            .clamped(self.runtime.engine().settings().max_memory_bytes);
        let graphs = if identity.graphs.is_empty() {
            None
        } else {
            let mut files = Vec::new();
            for (name, sha) in &identity.graphs {
                files.push(GraphFile {
                    name: name.clone(),
                    sha256: sha.clone(),
                    bytes: read(sha, &format!("graph `{name}`"))?,
                });
            }
            Some(VersionGraphs::load(
                files,
                &GraphOptions::from_config(&config)?,
                limits.graph_threads,
            )?)
        };
        let label: Arc<str> = Arc::from(format!("replay:{model}").as_str());
        let prepared = self.runtime.for_limits(&limits)?.prepare(
            &VersionCode {
                component: &component,
                component_sha256: &identity.component,
                config: &config,
                weights: weights.as_deref().zip(identity.weights.as_deref()),
                graphs: graphs.as_ref(),
            },
            &limits,
            &label,
        )?;
        Ok(Loaded {
            prepared,
            limits,
            config,
            weights,
            graphs,
            label,
        })
    }
}

fn call(instance: &mut ModelInstance, payload: &Payload) -> Result<Output, CallError> {
    payload.run(instance)
}

/// Compares a replay with its record.
fn judge(record: &LogRecord, outcome: Result<Output, CallError>, backtest: bool) -> Verdict {
    match (&record.output, outcome) {
        (Some(logged), Ok(now)) => {
            if LoggedOutput::of(&now) == *logged {
                return Verdict::Equal;
            }
            let Ok(logged) = logged.output() else {
                return Verdict::Differs("the logged output cannot be read back".into());
            };
            let a = compare(&logged, &now);
            let mut parts = Vec::new();
            if let Some(d) = a.max_abs_diff {
                parts.push(format!("max |Δ| {d:e}"));
            }
            if a.labels > 0 {
                parts.push(format!("{}/{} labels agree", a.labels_agreed, a.labels));
            }
            if parts.is_empty()
                || (!backtest && a.max_abs_diff == Some(0.0) && a.labels == a.labels_agreed)
            {
                // Equal as numbers but not as bits (a NaN's payload, -0.0, the JSON's spelling).
                parts.push("the same values, other bits".into());
            }
            Verdict::Differs(parts.join(", "))
        }
        (None, Err(e)) if call_status(&e) == record.status => Verdict::Equal,
        (None, Err(e)) => Verdict::Differs(format!(
            "logged status {} ({}), now {} ({e})",
            record.status,
            record.error.as_deref().unwrap_or("-"),
            call_status(&e)
        )),
        (None, Ok(_)) => Verdict::Differs(format!(
            "logged status {} ({}), now an answer",
            record.status,
            record.error.as_deref().unwrap_or("-")
        )),
        (Some(_), Err(e)) => Verdict::Differs(format!("logged an answer, now {e}")),
    }
}
