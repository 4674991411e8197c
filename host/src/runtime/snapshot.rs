//! Snapshots of initialised models. A version's code is instantiated once, its `init` runs with the
//! version's config and weights, and the initialised instance is captured into a new component
//! (wasmtime's Wizer) whose data segments hold the guest's memory as `init` left it. Compiled and
//! mapped from the compile cache, that memory is each instance's copy-on-write image: N instances
//! share the initialised pages and pay only for those they write, and a new instance runs no `init`.
//!
//! What a snapshot shares that used to be private: everything `init` computed, including values it
//! drew at random (Rust's hash-map keys, a language runtime's hash seed). They are drawn on the host
//! that takes the snapshot, from its real random source, and are in no uploaded artifact; but every
//! instance of the version on that host starts from the same ones.
//!
//! A guest whose state cannot be captured — Wizer cannot parse it, or `init` left it holding a host
//! resource (an open stream), or the snapshot does not instantiate — is served with `init` run per
//! instance instead, and the reason is kept on the version.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::component::{Instance, Lift, WasmList};
use wasmtime::Store;
use wasmtime_wizer::{ComponentInstanceState, Wizer};

use super::instance::Startup;
use super::{
    CallError, GuestState, InstancePool, MemoryGovernor, ModelComponent, ModelInstance,
    ModelLimits, ModelRuntime, PoolSpec, PoolStart, VersionInputs,
};
use crate::host_api::graph::VersionGraphs;

/// A version's code and data, as the runtime needs them to bring it up.
pub struct VersionCode<'a> {
    /// The component's bytes.
    pub component: &'a [u8],
    /// The component's sha256.
    pub component_sha256: &'a str,
    /// The config document.
    pub config: &'a str,
    /// The weights and their sha256.
    pub weights: Option<(&'a [u8], &'a str)>,
    /// The version's host-side graphs, loaded.
    pub graphs: Option<&'a Arc<VersionGraphs>>,
}

/// A version to start: its code and what `init` gets (owned: without a snapshot the pool keeps it).
pub struct NewVersion<'a> {
    /// The component's bytes.
    pub component: &'a [u8],
    /// The component's sha256.
    pub component_sha256: &'a str,
    /// Config and weights.
    pub inputs: VersionInputs,
    /// The weights' sha256.
    pub weights_sha256: Option<&'a str>,
    /// The version's host-side graphs, loaded (once, for all its instances).
    pub graphs: Option<Arc<VersionGraphs>>,
    /// Reads the component and inputs again (from the host's blob cache), for when an evicted
    /// version's compiled snapshot has left the host cache meanwhile: it is then taken again.
    pub refetch: Option<Refetch>,
}

/// See [`NewVersion::refetch`]: the component's bytes and the version's inputs.
pub type Refetch = Arc<dyn Fn() -> anyhow::Result<(bytes::Bytes, VersionInputs)> + Send + Sync>;

/// How a version's instances start.
#[derive(Debug, Clone, PartialEq)]
pub enum StartMode {
    /// From a snapshot of the initialised model.
    Snapshot,
    /// Each runs `init`; the reason says why there is no snapshot.
    InitPerInstance(String),
}

/// A version's code ready to instantiate.
pub struct Prepared {
    /// What instances are made of.
    pub component: Arc<ModelComponent>,
    /// How they start.
    pub mode: StartMode,
    /// Bytes of initialised memory image every instance maps copy-on-write (0 without a snapshot).
    pub image_bytes: u64,
    /// The snapshot's cache key (the same key means the same initialised model).
    pub key: String,
}

/// What the host remembers of a snapshot beside its compiled file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SnapshotNote {
    image_bytes: u64,
    /// Tests files (by sha256; "" for the component's own cases only) that passed on this snapshot,
    /// with the number of cases.
    self_tests_passed: std::collections::BTreeMap<String, usize>,
}

/// wasmparser's limit on one module (`MAX_WASM_MODULE_SIZE`), which a snapshot's module must fit in.
const MAX_MODULE_BYTES: u64 = 1 << 30;

/// Dropping the init export is not an option here: the contract's world exports `init`, and
/// instances from a snapshot simply never call it.
fn wizer() -> Wizer {
    let mut wizer = Wizer::new();
    wizer.keep_init_func(true);
    wizer
}

impl ModelRuntime {
    /// Prepares a version (see [`ModelRuntime::prepare`]) and starts its pool: from the snapshot, or
    /// with `init` per instance (then the pool keeps `inputs`; with a snapshot nothing keeps them).
    pub fn start_version(
        self: &Arc<Self>,
        version: NewVersion<'_>,
        limits: &ModelLimits,
        label: &Arc<str>,
        governor: Option<Arc<dyn MemoryGovernor>>,
    ) -> anyhow::Result<(Arc<InstancePool>, Prepared)> {
        let NewVersion {
            component,
            component_sha256,
            inputs,
            weights_sha256,
            graphs,
            refetch,
        } = version;
        let prepared = self.prepare(
            &VersionCode {
                component,
                component_sha256,
                config: &inputs.config,
                weights: inputs.weights.as_deref().zip(weights_sha256),
                graphs: graphs.as_ref(),
            },
            limits,
            label,
        )?;
        let (start, reopen): (PoolStart, super::Reopen) = match &prepared.mode {
            StartMode::Snapshot => {
                let (runtime, key, label) = (self.clone(), prepared.key.clone(), label.clone());
                let (sha, weights_sha) = (
                    component_sha256.to_owned(),
                    weights_sha256.map(str::to_owned),
                );
                let limits = limits.clone();
                let graphs = graphs.clone();
                // The weights went into the snapshot: dropping `inputs` drops the host's copy.
                let reopen = move || match (runtime.reopen_snapshot(&key), &refetch) {
                    (Ok(component), _) => Ok(component),
                    (Err(e), None) => Err(e),
                    (Err(e), Some(refetch)) => {
                        tracing::warn!(version = %label, error = %e, "taking the snapshot again");
                        let (bytes, inputs) = refetch()?;
                        let again = runtime.prepare(
                            &VersionCode {
                                component: &bytes,
                                component_sha256: &sha,
                                config: &inputs.config,
                                weights: inputs.weights.as_deref().zip(weights_sha.as_deref()),
                                graphs: graphs.as_ref(),
                            },
                            &limits,
                            &label,
                        )?;
                        match again.mode {
                            StartMode::Snapshot => Ok(again.component),
                            StartMode::InitPerInstance(reason) => {
                                anyhow::bail!("the snapshot cannot be taken again: {reason}")
                            }
                        }
                    }
                };
                (PoolStart::Snapshot, Box::new(reopen))
            }
            StartMode::InitPerInstance(reason) => {
                if self.snapshots() {
                    tracing::warn!(version = %label, reason = %reason, "no snapshot: every instance runs init itself");
                }
                // Without a snapshot the code stays: it is mapped from the compiled file anyway.
                let code = prepared.component.clone();
                (
                    PoolStart::Init(Arc::new(inputs)),
                    Box::new(move || Ok(code.clone())),
                )
            }
        };
        let pool = InstancePool::start(PoolSpec {
            component: prepared.component.clone(),
            start,
            limits: limits.clone(),
            label: label.clone(),
            image_bytes: prepared.image_bytes,
            reopen,
            governor,
            graphs,
        })
        .map_err(|e: CallError| anyhow::anyhow!("initialising: {e}"))?;
        Ok((pool, prepared))
    }

    /// Compiles `code` and, unless snapshots are off or the guest cannot be captured, runs its `init`
    /// once and snapshots the result. A snapshot this host made before is loaded from the cache
    /// (milliseconds). Errors are the version's own failures (it does not compile, `init` fails).
    pub fn prepare(
        &self,
        code: &VersionCode<'_>,
        limits: &ModelLimits,
        label: &Arc<str>,
    ) -> anyhow::Result<Prepared> {
        check_graph_grant(code.component, code.graphs.is_some()).context("compiling")?;
        let key = snapshot_key(code);
        if !self.snapshots() {
            let component = self.load_component(code.component).context("compiling")?;
            return Ok(per_instance(
                component,
                key,
                "snapshots are off on this host".into(),
            ));
        }
        if let Some(note) = self.note(&key) {
            let cached = self.engine().cached(&key);
            if let Some(compiled) = cached {
                if let Ok(component) = self.component(&key, || Ok(compiled)) {
                    return Ok(Prepared {
                        component,
                        mode: StartMode::Snapshot,
                        image_bytes: note.image_bytes,
                        key,
                    });
                }
            }
        }
        crate::engine::check_header(code.component).context("compiling")?;

        let wizer = wizer();
        // Wizer panics on some shapes it does not support (a funcref global, say): those are
        // guests it cannot capture, not a reason to lose the loader thread.
        let instrumented = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wizer.instrument_component(code.component)
        }))
        .unwrap_or_else(|_| Err(wasmtime::format_err!("Wizer panicked instrumenting it")));
        let (cx, instrumented) = match instrumented {
            Ok(both) => both,
            Err(e) => {
                let component = self.load_component(code.component).context("compiling")?;
                let reason = format!("Wizer cannot instrument the component: {e:#}");
                return Ok(per_instance(component, key, reason));
            }
        };
        // The instrumented component is the original plus exports that read its state: it serves
        // as well as the original when a snapshot cannot be taken, so the original is not compiled.
        let instrumented_key = format!("{}-instrumented", code.component_sha256);
        let base = self
            .component(&instrumented_key, || {
                self.engine().compile(&instrumented_key, &instrumented)
            })
            .context("compiling")?;
        drop(instrumented);

        let mut instance = ModelInstance::start(
            &base,
            limits,
            label.clone(),
            Startup::Init {
                config: code.config,
                weights: code.weights.map(|(w, _)| w),
            },
            code.graphs,
        )
        .map_err(|e| anyhow::anyhow!("initialising: {e}"))?;
        if instance.host_resources_held() {
            let reason = "after `init` the guest holds host resources (open WASI streams or \
                          similar), which a snapshot cannot carry"
                .to_owned();
            return Ok(per_instance(base, key, reason));
        }
        let snapshot = {
            let (store, raw) = instance.raw();
            let mut state = GuestReader {
                store,
                instance: raw,
                error: None,
            };
            let taken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_now(wizer.snapshot_component(&cx, &mut state))
            }))
            .unwrap_or_else(|_| {
                Some(Err(wasmtime::format_err!(
                    "Wizer panicked reading the state"
                )))
            });
            match (taken, state.error) {
                (Some(Ok(bytes)), None) => Ok(bytes),
                (Some(Err(e)), _) => Err(format!("{e:#}")),
                (_, Some(e)) => Err(e),
                (None, None) => Err("the snapshot did not finish".to_owned()),
            }
        };
        drop(instance);
        let snapshot = match snapshot {
            Ok(bytes) => bytes,
            Err(e) => return Ok(per_instance(base, key, format!("taking the snapshot: {e}"))),
        };
        let image_bytes = data_segment_bytes(&snapshot);
        if snapshot.len() as u64 >= MAX_MODULE_BYTES {
            let reason = format!(
                "the initialised memory ({} MiB) is more than a compiled snapshot can hold: wasmtime \
                 reads modules of up to 1 GiB, and the snapshot is one module with the memory in it",
                image_bytes >> 20
            );
            return Ok(per_instance(base, key, reason));
        }
        let component = match self.component(&key, || self.engine().compile(&key, &snapshot)) {
            Ok(component) => component,
            Err(e) => {
                return Ok(per_instance(
                    base,
                    key,
                    format!("the snapshot does not compile: {e:#}"),
                ))
            }
        };
        self.write_note(
            &key,
            &SnapshotNote {
                image_bytes,
                self_tests_passed: Default::default(),
            },
        );
        Ok(Prepared {
            component,
            mode: StartMode::Snapshot,
            image_bytes,
            key,
        })
    }

    /// The compiled snapshot `key` again (after its version was evicted): mapped from the cache.
    pub fn reopen_snapshot(&self, key: &str) -> anyhow::Result<Arc<ModelComponent>> {
        self.component(key, || {
            self.engine().cached(key).ok_or_else(|| {
                anyhow::anyhow!("the compiled snapshot {key} is no longer in the host's cache")
            })
        })
    }

    /// How many cases of `tests_sha256` ("" for none) passed on snapshot `key`, if they all did
    /// before on this host.
    pub fn self_tests_passed(&self, key: &str, tests_sha256: &str) -> Option<usize> {
        self.note(key)?.self_tests_passed.get(tests_sha256).copied()
    }

    /// Remembers that all `cases` self-tests of `tests_sha256` passed on snapshot `key`.
    pub fn record_self_tests_passed(&self, key: &str, tests_sha256: &str, cases: usize) {
        if let Some(mut note) = self.note(key) {
            note.self_tests_passed
                .insert(tests_sha256.to_owned(), cases);
            self.write_note(key, &note);
        }
    }

    fn note(&self, key: &str) -> Option<SnapshotNote> {
        let path = self.engine().compile_cache()?.note_path(key);
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    fn write_note(&self, key: &str, note: &SnapshotNote) {
        if let Some(cache) = self.engine().compile_cache() {
            let path = cache.note_path(key);
            let json = serde_json::to_vec(note).expect("a note serialises");
            if let Err(e) = crate::files::write_atomically(&path, &json) {
                tracing::warn!(path = %path.display(), error = %e, "cannot note the snapshot");
            }
        }
    }
}

fn per_instance(component: Arc<ModelComponent>, key: String, reason: String) -> Prepared {
    Prepared {
        component,
        mode: StartMode::InitPerInstance(reason),
        image_bytes: 0,
        key,
    }
}

/// The snapshot's name: what was initialised with what, and how snapshots are taken.
fn snapshot_key(code: &VersionCode<'_>) -> String {
    let mut h = Sha256::new();
    h.update(b"ferry-snapshot/1 wasmtime-wizer/48.0.8\0");
    h.update(code.component_sha256.as_bytes());
    h.update(b"\0");
    h.update(code.weights.map_or("", |(_, sha)| sha).as_bytes());
    h.update(b"\0");
    h.update(Sha256::digest(code.config.as_bytes()));
    // `init` may have run a graph: its answers are in the snapshot.
    if let Some(graphs) = code.graphs {
        h.update(b"\0graphs\0");
        h.update(graphs.key().as_bytes());
    }
    format!("snapshot-{}", hex::encode(h.finalize()))
}

/// `wasi:nn` is granted only to versions with graphs: a component that imports it without any is
/// refused before anything of it runs.
fn check_graph_grant(component: &[u8], has_graphs: bool) -> anyhow::Result<()> {
    if has_graphs {
        return Ok(());
    }
    if let Some(import) = top_level_imports(component)?
        .into_iter()
        .find(|name| name.starts_with("wasi:nn/"))
    {
        anyhow::bail!(
            "the component imports `{import}` (host-side graphs through wasi:nn), but this version has \
             no graphs: give it its graphs (`--graph NAME=FILE.onnx` to ferry push, add or test)"
        );
    }
    Ok(())
}

/// The names a component imports from the host (not those of components nested inside it).
fn top_level_imports(component: &[u8]) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        match payload {
            Ok(wasmparser::Payload::ModuleSection { .. })
            | Ok(wasmparser::Payload::ComponentSection { .. }) => depth += 1,
            Ok(wasmparser::Payload::End(_)) => depth = depth.saturating_sub(1),
            Ok(wasmparser::Payload::ComponentImportSection(reader)) if depth == 0 => {
                for import in reader {
                    names.push(import?.name.name.to_owned());
                }
            }
            Ok(_) => {}
            Err(e) => anyhow::bail!("reading the component's imports: {e}"),
        }
    }
    Ok(names)
}

/// Bytes of active data segments in every core module of `component`: the initialised memory image.
fn data_segment_bytes(component: &[u8]) -> u64 {
    let mut total = 0u64;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        if let Ok(wasmparser::Payload::DataSection(reader)) = payload {
            for data in reader.into_iter().flatten() {
                if matches!(data.kind, wasmparser::DataKind::Active { .. }) {
                    total += data.data.len() as u64;
                }
            }
        }
    }
    total
}

/// Drives a future whose every await is ready at once (Wizer's snapshot over [`GuestReader`], whose
/// calls are synchronous); `None` if it ever waits.
fn run_now<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => Some(value),
        Poll::Pending => None,
    }
}

/// Reads an initialised instance's globals and memories through the exports Wizer instrumented it
/// with. The trait's methods cannot fail, so the first error is kept and reported after.
struct GuestReader<'a> {
    store: &'a mut Store<GuestState>,
    instance: Instance,
    error: Option<String>,
}

impl GuestReader<'_> {
    fn call<R: Lift + 'static>(&mut self, interface: &str, func: &str) -> Option<R> {
        if self.error.is_some() {
            return None;
        }
        let result = (|| {
            let (_, iface) = self
                .instance
                .get_export(&mut *self.store, None, interface)
                .ok_or_else(|| anyhow::anyhow!("no export `{interface}`"))?;
            let (_, f) = self
                .instance
                .get_export(&mut *self.store, Some(&iface), func)
                .ok_or_else(|| anyhow::anyhow!("no export `{interface}#{func}`"))?;
            let f = self
                .instance
                .get_typed_func::<(), (R,)>(&mut *self.store, f)?;
            Ok::<R, anyhow::Error>(f.call(&mut *self.store, ())?.0)
        })();
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.error = Some(format!("reading `{interface}#{func}`: {e:#}"));
                None
            }
        }
    }
}

impl ComponentInstanceState for GuestReader<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        match self.call::<WasmList<u8>>(instance, func) {
            Some(list) => contents(list.as_le_slice(&*self.store)),
            None => contents(&[]),
        }
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func).unwrap_or_default()
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func).unwrap_or_default()
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call::<f32>(instance, func)
            .unwrap_or_default()
            .to_bits()
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call::<f64>(instance, func)
            .unwrap_or_default()
            .to_bits()
    }
}
