//! ONNX Runtime, loaded at run time from the shared library of the pinned `onnxruntime` wheel (PyPI):
//! `$ORT_DYLIB_PATH` when set, else the wheel in Ferry's tools directory, installed there on first
//! use. Nothing is downloaded at build time.
//!
//! One session per graph and version, shared by every instance: ONNX Runtime's `Run` is safe to call
//! from several threads on one session, so it is called through the C API on `&Session` (the `ort`
//! crate asks for `&mut`, which would serialise a version's instances). A run past its deadline is
//! terminated by [`watchdog`].

use std::ffi::{c_char, CStr, CString};
use std::path::PathBuf;
use std::ptr::{self, NonNull};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};
use ort::execution_providers::CPUExecutionProvider;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{RunOptions, Session};
use ort::tensor::TensorElementType;
use ort::value::{DynValue, Tensor as OrtTensor, ValueType};
use ort::AsPointer;
use wasmtime_wasi_nn::backend::NamedTensor;
use wasmtime_wasi_nn::wit::TensorType;

use super::tensor::{dims_u32, elements, tensor, Elements};
use super::{NativeGraph, NativeRun, RunError, Signature};

/// The `onnxruntime` wheel whose shared library Ferry loads (ONNX Runtime 1.23; `ort` 2.0.0-rc.10
/// needs 1.22 or later).
pub const ONNXRUNTIME: crate::tools::PypiTool = crate::tools::PypiTool {
    package: "onnxruntime",
    version: "1.23.2",
    override_var: "ORT_DYLIB_PATH (the path of libonnxruntime.so)",
    // Only the shared library is used: numpy, sympy and protobuf would be 200 MB for nothing.
    no_deps: true,
};

/// Finds the shared library and starts ONNX Runtime's environment, once per process.
pub(super) fn environment() -> anyhow::Result<()> {
    static STARTED: Mutex<bool> = Mutex::new(false);
    let mut started = STARTED.lock().unwrap_or_else(|p| p.into_inner());
    if *started {
        return Ok(());
    }
    let library = library()?;
    let committed = std::panic::catch_unwind(|| {
        ort::init_from(library.display().to_string())
            .with_name("ferry")
            .commit()
    });
    match committed {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => bail!("starting ONNX Runtime from {}: {e}", library.display()),
        Err(p) => bail!(
            "loading ONNX Runtime from {}: {}",
            library.display(),
            crate::panics::message(p.as_ref())
        ),
    }
    *started = true;
    Ok(())
}

/// The ONNX Runtime shared library Ferry loads: `$ORT_DYLIB_PATH`, else the library inside the
/// pinned wheel's venv (installed on first use).
pub fn library() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!(
                "ORT_DYLIB_PATH names {}, which is not a file",
                path.display()
            );
        }
        return Ok(path);
    }
    let venv = ONNXRUNTIME.venv()?;
    let site = std::fs::read_dir(venv.join("lib"))
        .with_context(|| format!("reading {}", venv.join("lib").display()))?
        .flatten()
        .map(|e| e.path().join("site-packages/onnxruntime/capi"))
        .find(|p| p.is_dir())
        .with_context(|| format!("no onnxruntime/capi in {}", venv.display()))?;
    std::fs::read_dir(&site)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .with_context(|| format!("no libonnxruntime.so in {}", site.display()))
}

struct OrtGraph {
    session: Session,
    inputs: Vec<(CString, TensorElementType)>,
    outputs: Vec<CString>,
    signature: Signature,
}

/// Builds the session: full graph optimisation, at most `threads` threads for one run (1: the run
/// stays on the caller's thread), no spinning threads burning a shared CPU while idle, and no CPU
/// arena (it would keep a run's peak memory for the process's life, uncharged).
pub(super) fn load(bytes: &[u8], threads: usize) -> anyhow::Result<Arc<dyn NativeGraph>> {
    Ok(Arc::new(open(bytes, threads)?))
}

fn open(bytes: &[u8], threads: usize) -> anyhow::Result<OrtGraph> {
    environment()?;
    let threads = threads.max(1);
    let session = Session::builder()?
        .with_optimization_level(GraphOptimizationLevel::Level3)?
        .with_intra_threads(threads)?
        .with_inter_threads(1)?
        .with_parallel_execution(false)?
        .with_intra_op_spinning(false)?
        .with_execution_providers([CPUExecutionProvider::default()
            .with_arena_allocator(false)
            .build()])?
        .commit_from_memory(bytes)
        .map_err(|e| anyhow::anyhow!("ONNX Runtime refuses the graph: {e}"))?;
    let spec = |name: &str, ty: &ValueType| -> (String, String, Vec<i64>) {
        match ty {
            ValueType::Tensor { ty, shape, .. } => (
                name.to_owned(),
                format!("{ty:?}"),
                shape.iter().copied().collect(),
            ),
            other => (name.to_owned(), format!("{other}"), Vec::new()),
        }
    };
    let mut inputs = Vec::new();
    let mut signature = Signature::default();
    for input in &session.inputs {
        let ValueType::Tensor { ty, .. } = input.input_type else {
            bail!(
                "input `{}` is not a tensor ({})",
                input.name,
                input.input_type
            );
        };
        inputs.push((CString::new(input.name.as_str())?, ty));
        signature.inputs.push(spec(&input.name, &input.input_type));
    }
    let mut outputs = Vec::new();
    for output in &session.outputs {
        outputs.push(CString::new(output.name.as_str())?);
        signature
            .outputs
            .push(spec(&output.name, &output.output_type));
    }
    Ok(OrtGraph {
        session,
        inputs,
        outputs,
        signature,
    })
}

impl NativeGraph for OrtGraph {
    fn context(self: Arc<Self>) -> anyhow::Result<Box<dyn NativeRun>> {
        Ok(Box::new(OrtRun {
            graph: self,
            options: Arc::new(RunOptions::new()?),
        }))
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }
}

struct OrtRun {
    /// Shared by the version's instances: runs take `&self` (see the module's comment).
    graph: Arc<OrtGraph>,
    /// Its own, so that terminating one instance's run leaves the others running.
    options: Arc<RunOptions>,
}

impl NativeRun for OrtRun {
    fn run(
        &mut self,
        mut given: Vec<NamedTensor>,
        deadline: Instant,
    ) -> Result<Vec<NamedTensor>, RunError> {
        let graph = &self.graph;
        let mut values: Vec<DynValue> = Vec::with_capacity(graph.inputs.len());
        let mut names: Vec<*const c_char> = Vec::with_capacity(graph.inputs.len());
        for (name, ty) in &graph.inputs {
            let text = name.to_string_lossy();
            let input = super::take_input(&mut given, &text, &graph.signature)?;
            values.push(ort_value(&text, *ty, &input)?);
            names.push(name.as_ptr());
        }
        super::no_other_inputs(&given)?;
        if Instant::now() >= deadline {
            return Err(RunError::Deadline);
        }
        // A flag the watchdog set on an earlier run (just as it ended) must not stop this one.
        self.options
            .unterminate()
            .map_err(|e| RunError::Failed(e.to_string()))?;
        let outputs = {
            let _watch = watchdog::watch(deadline, self.options.clone());
            run(graph, &self.options, &names, &values)
        };
        if outputs.is_err() && Instant::now() >= deadline {
            return Err(RunError::Deadline);
        }
        let outputs = outputs.map_err(RunError::Failed)?;
        outputs
            .into_iter()
            .zip(&graph.outputs)
            .map(|(value, name)| output(&name.to_string_lossy(), &value))
            .collect()
    }
}

/// `Run` on a shared session. ONNX Runtime allocates the outputs.
fn run(
    graph: &OrtGraph,
    options: &RunOptions,
    input_names: &[*const c_char],
    inputs: &[DynValue],
) -> Result<Vec<DynValue>, String> {
    let api = ort::api();
    let input_ptrs: Vec<*const ort::sys::OrtValue> = inputs.iter().map(|v| v.ptr()).collect();
    let output_names: Vec<*const c_char> = graph.outputs.iter().map(|n| n.as_ptr()).collect();
    let mut outputs: Vec<*mut ort::sys::OrtValue> = vec![ptr::null_mut(); output_names.len()];
    // Safety: the session, options and input values are alive for the call; names are
    // NUL-terminated; `outputs` has one slot per name, which ONNX Runtime fills on success.
    let status = unsafe {
        (api.Run)(
            graph.session.ptr().cast_mut(),
            options.ptr(),
            input_names.as_ptr(),
            input_ptrs.as_ptr(),
            input_ptrs.len(),
            output_names.as_ptr(),
            output_names.len(),
            outputs.as_mut_ptr(),
        )
    };
    if !status.0.is_null() {
        // Safety: a non-null status is an error ONNX Runtime made; read its message, release it.
        let message = unsafe {
            let text = CStr::from_ptr((api.GetErrorMessage)(status.0))
                .to_string_lossy()
                .into_owned();
            (api.ReleaseStatus)(status.0);
            text
        };
        return Err(message);
    }
    outputs
        .into_iter()
        .map(|p| {
            let p = NonNull::new(p).ok_or("ONNX Runtime returned no output")?;
            // Safety: an output the session allocated for us; the value owns and releases it, and
            // keeps the session alive meanwhile.
            Ok(unsafe { DynValue::from_ptr(p, Some(graph.session.inner())) })
        })
        .collect()
}

fn ort_value(
    name: &str,
    ty: TensorElementType,
    t: &wasmtime_wasi_nn::Tensor,
) -> Result<DynValue, RunError> {
    let shape: Vec<i64> = t.dimensions.iter().map(|d| i64::from(*d)).collect();
    let wrong = |given: &str| {
        RunError::Invalid(format!("input `{name}` is {given}, the graph takes {ty:?}"))
    };
    let made = match (elements(name, t)?, ty) {
        (Elements::F32(v), TensorElementType::Float32) => {
            OrtTensor::from_array((shape, v)).map(|t| t.into_dyn())
        }
        (Elements::F64(v), TensorElementType::Float64) => {
            OrtTensor::from_array((shape, v)).map(|t| t.into_dyn())
        }
        (Elements::U8(v), TensorElementType::Uint8) => {
            OrtTensor::from_array((shape, v)).map(|t| t.into_dyn())
        }
        (Elements::U8(v), TensorElementType::Bool) => {
            OrtTensor::from_array((shape, v.into_iter().map(|b| b != 0).collect::<Vec<bool>>()))
                .map(|t| t.into_dyn())
        }
        (Elements::I32(v), TensorElementType::Int32) => {
            OrtTensor::from_array((shape, v)).map(|t| t.into_dyn())
        }
        (Elements::I64(v), TensorElementType::Int64) => {
            OrtTensor::from_array((shape, v)).map(|t| t.into_dyn())
        }
        (Elements::F32(_), _) => return Err(wrong("FP32")),
        (Elements::F64(_), _) => return Err(wrong("FP64")),
        (Elements::U8(_), _) => return Err(wrong("U8")),
        (Elements::I32(_), _) => return Err(wrong("I32")),
        (Elements::I64(_), _) => return Err(wrong("I64")),
    };
    made.map_err(|e| RunError::Invalid(format!("input `{name}`: {e}")))
}

/// An output as a `wasi:nn` tensor. A sequence of maps (scikit-learn's ZipMap: one `{class: p}` per
/// row) becomes an FP32 tensor [rows, classes], classes in the map's order.
fn output(name: &str, value: &DynValue) -> Result<NamedTensor, RunError> {
    let failed = |e: ort::Error| RunError::Failed(format!("output `{name}`: {e}"));
    let t = match value.dtype() {
        ValueType::Tensor { ty, .. } => {
            macro_rules! typed {
                ($t:ty, $wasi:expr) => {{
                    let (shape, data) = value.try_extract_tensor::<$t>().map_err(failed)?;
                    let dims: Vec<usize> = shape.iter().map(|d| *d as usize).collect();
                    tensor(dims_u32(name, &dims)?, $wasi, data)
                }};
            }
            match ty {
                TensorElementType::Float32 => typed!(f32, TensorType::Fp32),
                TensorElementType::Float64 => typed!(f64, TensorType::Fp64),
                TensorElementType::Uint8 => typed!(u8, TensorType::U8),
                TensorElementType::Int32 => typed!(i32, TensorType::I32),
                TensorElementType::Int64 => typed!(i64, TensorType::I64),
                TensorElementType::Bool => {
                    let (shape, data) = value.try_extract_tensor::<bool>().map_err(failed)?;
                    let dims: Vec<usize> = shape.iter().map(|d| *d as usize).collect();
                    let bytes: Vec<u8> = data.iter().map(|b| u8::from(*b)).collect();
                    tensor(dims_u32(name, &dims)?, TensorType::U8, &bytes)
                }
                other => {
                    return Err(RunError::Failed(format!(
                        "output `{name}` holds {other:?}, which wasi:nn cannot carry"
                    )))
                }
            }
        }
        ValueType::Sequence(_) => zipmap(name, value)?,
        other => {
            return Err(RunError::Failed(format!(
                "output `{name}` is a {other}, which wasi:nn cannot carry"
            )))
        }
    };
    Ok(NamedTensor {
        name: name.to_owned(),
        tensor: t,
    })
}

fn zipmap(name: &str, value: &DynValue) -> Result<wasmtime_wasi_nn::Tensor, RunError> {
    let failed = |e: ort::Error| RunError::Failed(format!("output `{name}`: {e}"));
    let allocator = ort::memory::Allocator::default();
    let maps = value
        .try_extract_sequence::<ort::value::DynMapValueType>(&allocator)
        .map_err(failed)?;
    let mut rows = 0usize;
    let mut width = None;
    let mut data: Vec<f32> = Vec::new();
    for map in &maps {
        let probabilities: Vec<f32> = match map.try_extract_key_values::<i64, f32>() {
            Ok(pairs) => pairs.into_iter().map(|(_, p)| p).collect(),
            Err(_) => map
                .try_extract_key_values::<String, f32>()
                .map_err(failed)?
                .into_iter()
                .map(|(_, p)| p)
                .collect(),
        };
        if *width.get_or_insert(probabilities.len()) != probabilities.len() {
            return Err(RunError::Failed(format!(
                "output `{name}`: rows of the sequence have different lengths"
            )));
        }
        data.extend(probabilities);
        rows += 1;
    }
    let dims = dims_u32(name, &[rows, width.unwrap_or(0)])?;
    Ok(tensor(dims, TensorType::Fp32, &data))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn digits() -> OrtRun {
        if std::env::var_os("FERRY_TOOLS_DIR").is_none() {
            std::env::set_var(
                "FERRY_TOOLS_DIR",
                format!("{}/../target/tools", env!("CARGO_MANIFEST_DIR")),
            );
        }
        let path = format!(
            "{}/../sample-models/digits-onnx/digits.onnx",
            env!("CARGO_MANIFEST_DIR")
        );
        OrtRun {
            graph: Arc::new(open(&std::fs::read(path).unwrap(), 1).unwrap()),
            options: Arc::new(RunOptions::new().unwrap()),
        }
    }

    fn image() -> Vec<NamedTensor> {
        vec![NamedTensor {
            name: "input".into(),
            tensor: tensor(vec![1, 64], TensorType::Fp32, &[1f32; 64]),
        }]
    }

    #[test]
    fn the_watchdog_terminates_a_run_past_its_deadline() {
        let run = digits();
        let input = ort_value("input", TensorElementType::Float32, &image()[0].tensor).unwrap();
        let name = run.graph.inputs[0].0.as_ptr();
        assert!(super::run(
            &run.graph,
            &run.options,
            &[name],
            std::slice::from_ref(&input)
        )
        .is_ok());
        let watch = watchdog::watch(Instant::now(), run.options.clone());
        std::thread::sleep(Duration::from_millis(100));
        drop(watch);
        let err = super::run(
            &run.graph,
            &run.options,
            &[name],
            std::slice::from_ref(&input),
        )
        .expect_err("the watchdog did not terminate the run");
        assert!(err.contains("terminate"), "{err}");
    }

    #[test]
    fn a_terminate_flag_left_from_an_earlier_run_does_not_stop_the_next() {
        let mut run = digits();
        run.options.terminate().unwrap();
        let out = run.run(image(), Instant::now() + Duration::from_secs(60));
        assert!(out.is_ok(), "the next run was stopped");
    }
}

/// Terminates runs that pass their deadline. One thread for the process, started with the first run:
/// it looks every 2 ms, so a run is stopped within a few milliseconds of its deadline (at ONNX
/// Runtime's next check between operators).
mod watchdog {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::{Duration, Instant};

    use ort::session::RunOptions;

    type Watched = Mutex<HashMap<u64, (Instant, Arc<RunOptions>)>>;

    fn watched() -> &'static Watched {
        static WATCHED: OnceLock<&'static Watched> = OnceLock::new();
        WATCHED.get_or_init(|| {
            let watched: &'static Watched = Box::leak(Box::default());
            std::thread::Builder::new()
                .name("ferry-graph-watchdog".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_millis(2));
                    let now = Instant::now();
                    let mut runs = watched.lock().unwrap_or_else(|p| p.into_inner());
                    runs.retain(|_, (deadline, options)| {
                        if *deadline <= now {
                            let _ = options.terminate();
                            return false;
                        }
                        true
                    });
                })
                .expect("starting the graph watchdog");
            watched
        })
    }

    /// Watches one run until dropped.
    pub(super) struct Watch(u64);

    pub(super) fn watch(deadline: Instant, options: Arc<RunOptions>) -> Watch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        watched()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (deadline, options));
        Watch(id)
    }

    impl Drop for Watch {
        fn drop(&mut self) {
            watched()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.0);
        }
    }
}
