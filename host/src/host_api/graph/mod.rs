//! Host-side graphs: the named ONNX graphs a version carries, loaded and optimised once per version
//! by a native backend ([`GraphBackend`]: ONNX Runtime or tract), shared by every instance of the
//! version and freed when it unloads. Guests reach them through the standard `wasi:nn` interface
//! (`load-by-name`); `load` (graph bytes from the guest) is refused, so weights never pass through
//! guest memory.
//!
//! Native execution stays under the model's limits:
//! - it runs on the calling instance's thread, so the version's concurrency (`max_instances`) caps
//!   it, and a backend uses at most the version's `graph_threads` threads;
//! - it stops at the call's deadline: ONNX Runtime is told to terminate the run, tract is stopped
//!   between two operators; the caller gets 504 ([`GraphClock`]);
//! - what a graph takes when loaded is charged to the version's memory ([`VersionGraphs::memory_bytes`]);
//! - a backend error or panic fails that request only (the guest gets a `wasi:nn` error).

mod onnxruntime;
mod tensor;
mod tract;
mod wasi_nn;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use onnxruntime::library as onnxruntime_library;
pub use wasi_nn::add_to_linker;
pub(crate) use wasi_nn::StoreGraphs;

use wasmtime_wasi_nn::backend::NamedTensor;

/// Which native library runs a version's graphs: `{"graphs": {"backend": "tract"}}` in the version's
/// config picks one; the default is ONNX Runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GraphBackend {
    /// ONNX Runtime: every ONNX and ONNX-ML operator (tree ensembles, linear classifiers, …).
    #[default]
    #[serde(rename = "onnxruntime")]
    OnnxRuntime,
    /// tract, in the host: pure Rust, the standard ONNX operators but only part of ONNX-ML.
    #[serde(rename = "tract")]
    Tract,
}

impl GraphBackend {
    /// The name used in configs and metadata.
    pub fn name(self) -> &'static str {
        match self {
            GraphBackend::OnnxRuntime => "onnxruntime",
            GraphBackend::Tract => "tract",
        }
    }
}

/// How a version wants its graphs run: the `graphs` object of its config document.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphOptions {
    /// The backend (default: ONNX Runtime).
    pub backend: GraphBackend,
}

impl GraphOptions {
    /// Reads the `graphs` object of a version's config (the defaults when it has none).
    pub fn from_config(config: &str) -> anyhow::Result<GraphOptions> {
        let Ok(serde_json::Value::Object(mut doc)) = serde_json::from_str(config) else {
            return Ok(GraphOptions::default());
        };
        match doc.remove("graphs") {
            None => Ok(GraphOptions::default()),
            Some(graphs) => serde_json::from_value(graphs).context(
                "the config's `graphs` object: it takes `backend`, \"onnxruntime\" (the default) or \"tract\"",
            ),
        }
    }
}

/// A named ONNX graph of a version, as stored.
#[derive(Clone)]
pub struct GraphFile {
    /// The name guests open it by (`load-by-name`).
    pub name: String,
    /// Its content address.
    pub sha256: String,
    /// The ONNX bytes.
    pub bytes: Bytes,
}

/// Why a graph run produced no outputs.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum RunError {
    /// The call's deadline passed; the run was stopped.
    #[error("the call's deadline passed while the graph ran; the run was stopped")]
    Deadline,
    /// The inputs do not fit the graph.
    #[error("{0}")]
    Invalid(String),
    /// The backend failed (or panicked).
    #[error("{0}")]
    Failed(String),
}

/// A graph loaded by a backend, shared by every instance of its version.
pub(crate) trait NativeGraph: Send + Sync {
    /// State for one instance's runs (reused from call to call).
    fn context(self: Arc<Self>) -> anyhow::Result<Box<dyn NativeRun>>;
    /// The graph's inputs and outputs.
    fn signature(&self) -> &Signature;
}

/// One instance's runs of a graph.
pub(crate) trait NativeRun: Send {
    /// Runs the graph on `inputs` (by name), stopping at `deadline`.
    fn run(
        &mut self,
        inputs: Vec<NamedTensor>,
        deadline: Instant,
    ) -> Result<Vec<NamedTensor>, RunError>;
}

/// Takes the input named `name` out of `given`, or says which inputs the graph takes.
fn take_input(
    given: &mut Vec<NamedTensor>,
    name: &str,
    signature: &Signature,
) -> Result<wasmtime_wasi_nn::Tensor, RunError> {
    let at = given.iter().position(|t| t.name == name).ok_or_else(|| {
        let names: Vec<String> = signature
            .inputs
            .iter()
            .map(|(n, _, _)| format!("`{n}`"))
            .collect();
        RunError::Invalid(format!(
            "the graph takes input `{name}`, which was not given (it takes {})",
            names.join(", ")
        ))
    })?;
    Ok(given.swap_remove(at).tensor)
}

/// Refuses inputs left over once the graph's own were taken.
fn no_other_inputs(left: &[NamedTensor]) -> Result<(), RunError> {
    match left.first() {
        Some(extra) => Err(RunError::Invalid(format!(
            "the graph has no input `{}` (or it was given twice)",
            extra.name
        ))),
        None => Ok(()),
    }
}

/// A graph's declared inputs and outputs: name, element type and shape (-1 for any size).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Signature {
    pub inputs: Vec<(String, String, Vec<i64>)>,
    pub outputs: Vec<(String, String, Vec<i64>)>,
}

struct LoadedGraph {
    sha256: String,
    memory_bytes: u64,
    native: Arc<dyn NativeGraph>,
}

/// The graphs of one version, loaded: what its instances' `wasi:nn` opens by name.
pub struct VersionGraphs {
    backend: GraphBackend,
    graphs: BTreeMap<String, LoadedGraph>,
}

impl VersionGraphs {
    /// Loads and optimises every graph with the backend `options` name, each limited to `threads`
    /// threads. An error names the graph and what the backend said.
    pub fn load(
        files: Vec<GraphFile>,
        options: &GraphOptions,
        threads: usize,
    ) -> anyhow::Result<Arc<VersionGraphs>> {
        // One load at a time, so that what the process grew by is this graph's (loads of other
        // kinds running meanwhile still blur it).
        static LOADING: Mutex<()> = Mutex::new(());
        if options.backend == GraphBackend::OnnxRuntime {
            // The library and its environment are the process's, not the first graph's.
            onnxruntime::environment().context("starting ONNX Runtime")?;
        }
        let mut graphs = BTreeMap::new();
        for file in files {
            let _one = LOADING.lock().unwrap_or_else(|p| p.into_inner());
            let before = anonymous_bytes();
            let native = std::panic::catch_unwind(|| match options.backend {
                GraphBackend::OnnxRuntime => onnxruntime::load(&file.bytes, threads),
                GraphBackend::Tract => tract::load(&file.bytes),
            })
            .unwrap_or_else(|p| {
                Err(anyhow::anyhow!(
                    "the backend panicked: {}",
                    crate::panics::message(p.as_ref())
                ))
            })
            .with_context(|| {
                format!(
                    "loading graph `{}` with {}",
                    file.name,
                    options.backend.name()
                )
            })?;
            // The backend's copy of the weights, its optimised graph and buffers: anonymous memory
            // (the mapped graph file's pages are the blob cache's), at least the file's size (what
            // the process grew by can be less when freed memory is reused).
            let grown = anonymous_bytes().saturating_sub(before);
            graphs.insert(
                file.name,
                LoadedGraph {
                    sha256: file.sha256,
                    memory_bytes: grown.max(file.bytes.len() as u64),
                    native,
                },
            );
        }
        Ok(Arc::new(VersionGraphs {
            backend: options.backend,
            graphs,
        }))
    }

    /// Bytes the loaded graphs take, charged to the version.
    pub fn memory_bytes(&self) -> u64 {
        self.graphs.values().map(|g| g.memory_bytes).sum()
    }

    /// The backend that runs them.
    pub fn backend(&self) -> GraphBackend {
        self.backend
    }

    /// What distinguishes these graphs from others: backend and every name and sha256.
    pub fn key(&self) -> String {
        let mut key = self.backend.name().to_owned();
        for (name, graph) in &self.graphs {
            key.push_str(&format!(";{name}={}", graph.sha256));
        }
        key
    }

    /// For the version's description: backend, and per graph its sha256, memory and signature.
    pub fn describe(&self) -> serde_json::Value {
        let graphs: serde_json::Map<String, serde_json::Value> = self
            .graphs
            .iter()
            .map(|(name, g)| {
                let sig = g.native.signature();
                let specs = |list: &[(String, String, Vec<i64>)]| {
                    list.iter()
                        .map(|(n, t, s)| serde_json::json!({"name": n, "datatype": t, "shape": s}))
                        .collect::<Vec<_>>()
                };
                (
                    name.clone(),
                    serde_json::json!({
                        "sha256": g.sha256,
                        "memory_bytes": g.memory_bytes,
                        "inputs": specs(&sig.inputs),
                        "outputs": specs(&sig.outputs),
                    }),
                )
            })
            .collect();
        serde_json::json!({"backend": self.backend.name(), "graphs": graphs})
    }
}

/// One instance's view of the time its current call may take, shared with its graph runs; and what
/// went wrong in a run during the call (the `wasi:nn` error a guest sees carries no detail).
#[derive(Debug)]
pub struct GraphClock {
    state: Mutex<ClockState>,
}

#[derive(Debug)]
struct ClockState {
    deadline: Instant,
    /// When a run stops so that the call gives way (before its deadline), if it must.
    give_way_at: Option<Instant>,
    tripped: bool,
    gave_way: bool,
    failure: Option<String>,
}

impl Default for GraphClock {
    fn default() -> Self {
        GraphClock {
            state: Mutex::new(ClockState {
                deadline: Instant::now() + Duration::from_secs(3600),
                give_way_at: None,
                tripped: false,
                gave_way: false,
                failure: None,
            }),
        }
    }
}

/// What happened to graph runs during one call.
#[derive(Debug, Default, PartialEq)]
pub struct CallGraphs {
    /// A run was stopped at the deadline.
    pub deadline_passed: bool,
    /// A run was stopped so that the call gives way (see [`GraphClock::arm`]).
    pub gave_way: bool,
    /// The first failure, in words.
    pub failure: Option<String>,
}

impl GraphClock {
    /// Starts a call that may take `deadline`, and whose runs stop once the call has run
    /// `give_way_after` (a call on an async worker: it gives way and runs again elsewhere, as its
    /// guest code does at an epoch tick).
    pub fn arm(&self, deadline: Duration, give_way_after: Option<Duration>) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        state.deadline = now + deadline;
        state.give_way_at = give_way_after
            .filter(|after| *after < deadline)
            .map(|after| now + after);
        state.tripped = false;
        state.gave_way = false;
        state.failure = None;
    }

    /// Ends the call: what its graph runs ran into.
    pub fn disarm(&self) -> CallGraphs {
        let mut state = self.state.lock().unwrap();
        CallGraphs {
            deadline_passed: std::mem::take(&mut state.tripped),
            gave_way: std::mem::take(&mut state.gave_way),
            failure: state.failure.take(),
        }
    }

    /// When a run stops: the deadline, or earlier to give way.
    fn deadline(&self) -> Instant {
        let state = self.state.lock().unwrap();
        state.give_way_at.unwrap_or(state.deadline)
    }

    fn record(&self, graph: &str, error: &RunError) {
        let mut state = self.state.lock().unwrap();
        if matches!(error, RunError::Deadline) {
            if state.give_way_at.is_some() {
                // Stopped to give way (though the stop may land past a deadline of a few
                // milliseconds): the call runs again with its own deadline, which says whether
                // the model is too slow. No failure of the model's here.
                state.gave_way = true;
                return;
            }
            state.tripped = true;
        }
        state
            .failure
            .get_or_insert_with(|| format!("graph `{graph}`: {error}"));
    }

    fn refuse(&self, why: &str) {
        let mut state = self.state.lock().unwrap();
        state.failure.get_or_insert_with(|| why.to_owned());
    }
}

/// The process's resident anonymous memory (heap, not mapped files), from `/proc/self/smaps_rollup`
/// (0 where there is none).
fn anonymous_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|text| {
            let kib = text.lines().find_map(|l| l.strip_prefix("Anonymous:"))?;
            kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime_wasi_nn::wit::TensorType;

    fn sample_graph(path: &str) -> GraphFile {
        let bytes = std::fs::read(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        GraphFile {
            name: "model".into(),
            sha256: crate::stamps::sha256_hex(&bytes),
            bytes: bytes.into(),
        }
    }

    fn load(path: &str, backend: GraphBackend) -> anyhow::Result<Arc<VersionGraphs>> {
        if std::env::var_os("FERRY_TOOLS_DIR").is_none() {
            // The checkout's tools, as scripts/test.sh installs them.
            std::env::set_var(
                "FERRY_TOOLS_DIR",
                format!("{}/../target/tools", env!("CARGO_MANIFEST_DIR")),
            );
        }
        VersionGraphs::load(vec![sample_graph(path)], &GraphOptions { backend }, 1)
    }

    fn run(
        graphs: &VersionGraphs,
        inputs: Vec<NamedTensor>,
        deadline: Instant,
    ) -> Result<Vec<NamedTensor>, RunError> {
        let native = graphs.graphs["model"].native.clone();
        native.context().unwrap().run(inputs, deadline)
    }

    fn digit_rows(rows: u32) -> Vec<NamedTensor> {
        let pixels: Vec<f32> = (0..rows * 64).map(|i| (i % 17) as f32).collect();
        vec![NamedTensor {
            name: "input".into(),
            tensor: tensor::tensor(vec![rows, 64], TensorType::Fp32, &pixels),
        }]
    }

    #[test]
    fn both_backends_run_the_digits_network_alike_and_stop_at_a_passed_deadline() {
        let later = Instant::now() + Duration::from_secs(60);
        let mut answers = Vec::new();
        for backend in [GraphBackend::Tract, GraphBackend::OnnxRuntime] {
            let graphs = load("sample-models/digits-onnx/digits.onnx", backend).unwrap();
            let out = run(&graphs, digit_rows(3), later).unwrap();
            assert_eq!(out[0].name, "probabilities");
            assert_eq!(out[0].tensor.dimensions, [3, 10]);
            let tensor::Elements::F32(p) = tensor::elements("p", &out[0].tensor).unwrap() else {
                panic!("not FP32")
            };
            answers.push(p);
            let stopped = run(&graphs, digit_rows(3), Instant::now());
            assert!(
                matches!(stopped, Err(RunError::Deadline)),
                "{backend:?}: not stopped"
            );
            let Err(RunError::Invalid(m)) = run(
                &graphs,
                vec![NamedTensor {
                    name: "pixels".into(),
                    tensor: tensor::tensor(vec![1, 64], TensorType::Fp32, &[0f32; 64]),
                }],
                later,
            ) else {
                panic!("{backend:?} accepted a wrong input name")
            };
            assert!(
                m.contains("takes input `input`, which was not given"),
                "{m}"
            );
        }
        for (a, b) in answers[0].iter().zip(&answers[1]) {
            assert!((a - b).abs() < 1e-5, "tract {a} vs onnxruntime {b}");
        }
    }

    #[test]
    fn tract_stops_a_run_between_operators_and_runs_the_next() {
        let graphs = load("sample-models/digits-onnx/digits.onnx", GraphBackend::Tract).unwrap();
        let mut context = graphs.graphs["model"].native.clone().context().unwrap();
        // The quickest of three whole runs (other tests share the cores)...
        let mut took = Duration::MAX;
        for _ in 0..3 {
            let rows = digit_rows(300_000);
            let started = Instant::now();
            assert!(context
                .run(rows, started + Duration::from_secs(600))
                .is_ok());
            took = took.min(started.elapsed());
        }
        // ...and a tenth of it: the deadline falls within the first operators (the first matrix
        // product alone is a good part of the run), so the run is stopped before its last one.
        let rows = digit_rows(300_000);
        let stopped = context.run(rows, Instant::now() + took / 10);
        assert!(
            matches!(stopped, Err(RunError::Deadline)),
            "a run past its deadline was not stopped"
        );
        let again = context.run(digit_rows(2), Instant::now() + Duration::from_secs(60));
        assert!(again.is_ok(), "the run after a stopped one failed");
    }

    #[test]
    fn tree_ensembles_run_on_onnxruntime_and_tract_says_when_to_use_it() {
        // scikit-learn's classifier ensemble: an ONNX-ML form tract does not read.
        let Err(err) = load(
            "sample-models/python-sklearn-graph/model.onnx",
            GraphBackend::Tract,
        ) else {
            panic!("tract loaded the scikit-learn ensemble")
        };
        let err = format!("{err:#}");
        assert!(err.contains("run on the onnxruntime backend"), "{err}");
        assert!(err.contains("TreeEnsembleClassifier"), "{err}");
        let graphs = load(
            "sample-models/gbdt-graph/model.onnx",
            GraphBackend::OnnxRuntime,
        )
        .unwrap();
        let rows = vec![NamedTensor {
            name: "features".into(),
            tensor: tensor::tensor(vec![2, 30], TensorType::Fp32, &[1f32; 60]),
        }];
        let out = run(&graphs, rows, Instant::now() + Duration::from_secs(60)).unwrap();
        let names: Vec<&str> = out.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["label", "probabilities"]);
        assert_eq!(out[1].tensor.dimensions, [2, 2]);
        let wrong = vec![NamedTensor {
            name: "features".into(),
            tensor: tensor::tensor(vec![2, 30], TensorType::Fp64, &[1f64; 60]),
        }];
        let Err(RunError::Invalid(m)) =
            run(&graphs, wrong, Instant::now() + Duration::from_secs(60))
        else {
            panic!("FP64 accepted for an FP32 input")
        };
        assert!(
            m.contains("input `features` is FP64, the graph takes Float32"),
            "{m}"
        );
    }

    #[test]
    fn the_config_picks_the_backend_and_names_a_wrong_one() {
        assert_eq!(
            GraphOptions::from_config("{}").unwrap().backend,
            GraphBackend::OnnxRuntime
        );
        assert_eq!(
            GraphOptions::from_config(r#"{"graphs": {"backend": "tract"}, "other": 1}"#)
                .unwrap()
                .backend,
            GraphBackend::Tract
        );
        let err = GraphOptions::from_config(r#"{"graphs": {"backend": "tensorrt"}}"#).unwrap_err();
        assert!(format!("{err:#}").contains("\"onnxruntime\" (the default) or \"tract\""));
    }
}
