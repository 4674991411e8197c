//! The `wasi:nn` side, through `wasmtime-wasi-nn`'s WIT host: each instance gets a context whose
//! registry names its version's graphs (for `load-by-name`) and whose backends refuse `load`.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi_nn::backend::{
    BackendError, BackendExecutionContext, BackendFromDir, BackendGraph, BackendInner, Id,
    NamedTensor,
};
use wasmtime_wasi_nn::wit::{ExecutionTarget, GraphEncoding, WasiNnCtx, WasiNnView};
use wasmtime_wasi_nn::{Backend, ExecutionContext, Graph, GraphRegistry, Tensor};

use super::{GraphClock, NativeGraph, NativeRun, RunError, VersionGraphs};

/// Adds `wasi:nn` to the linker; `view` finds an instance's [`StoreGraphs`].
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> WasiNnView<'_>,
) -> anyhow::Result<()> {
    Ok(wasmtime_wasi_nn::wit::add_to_linker(linker, view)?)
}

/// What one instance's store holds for `wasi:nn`.
pub(crate) struct StoreGraphs {
    ctx: WasiNnCtx,
    clock: Arc<GraphClock>,
}

const REFUSED_LOAD: &str = "a model opens its version's graphs by name (`load-by-name`); graph bytes \
     from the guest are refused, so weights never pass through guest memory: push the graph with the \
     version (`ferry push --graph NAME=FILE.onnx`)";

impl StoreGraphs {
    /// The context of an instance of a version with `graphs` (none: every name is unknown).
    pub(crate) fn new(graphs: Option<&Arc<VersionGraphs>>) -> StoreGraphs {
        let clock = Arc::new(GraphClock::default());
        let mut registry = NamedGraphs(HashMap::new());
        for (name, graph) in graphs.iter().flat_map(|g| g.graphs.iter()) {
            let graph = StoreGraph {
                name: name.clone(),
                native: graph.native.clone(),
                clock: clock.clone(),
            };
            registry.0.insert(
                name.clone(),
                Graph::from(Box::new(graph) as Box<dyn BackendGraph>),
            );
        }
        let backends = [
            GraphEncoding::Openvino,
            GraphEncoding::Onnx,
            GraphEncoding::Pytorch,
            GraphEncoding::Tensorflow,
            GraphEncoding::Tensorflowlite,
            GraphEncoding::Autodetect,
            GraphEncoding::Ggml,
        ]
        .map(|encoding| {
            Backend::from(RefuseBytes {
                encoding,
                clock: clock.clone(),
            })
        });
        StoreGraphs {
            ctx: WasiNnCtx::new(backends, registry.into()),
            clock,
        }
    }

    /// The view `wasi:nn`'s host functions work on.
    pub(crate) fn view<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiNnView<'a> {
        WasiNnView::new(table, &mut self.ctx)
    }

    /// The clock graph runs of this instance read their deadline from.
    pub(crate) fn clock(&self) -> &GraphClock {
        &self.clock
    }
}

/// A version's graphs by name, as one instance sees them.
struct NamedGraphs(HashMap<String, Graph>);

impl GraphRegistry for NamedGraphs {
    fn get(&self, name: &str) -> Option<&Graph> {
        self.0.get(name)
    }
    fn get_mut(&mut self, name: &str) -> Option<&mut Graph> {
        self.0.get_mut(name)
    }
}

/// One graph as one instance opens it: its runs read that instance's clock.
struct StoreGraph {
    name: String,
    native: Arc<dyn NativeGraph>,
    clock: Arc<GraphClock>,
}

impl BackendGraph for StoreGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let run = self.native.clone().context().map_err(|e| {
            let e = RunError::Failed(format!("{e:#}"));
            self.clock.record(&self.name, &e);
            BackendError::BackendAccess(wasmtime::format_err!("graph `{}`: {e}", self.name))
        })?;
        let context = StoreExecution {
            name: self.name.clone(),
            run: Mutex::new(run),
            clock: self.clock.clone(),
        };
        Ok(ExecutionContext::from(
            Box::new(context) as Box<dyn BackendExecutionContext>
        ))
    }
}

struct StoreExecution {
    name: String,
    run: Mutex<Box<dyn NativeRun>>,
    clock: Arc<GraphClock>,
}

impl StoreExecution {
    fn unsupported(&self) -> BackendError {
        let why =
            "this host takes a graph's inputs with `compute(inputs)` (wasi:nn 0.2), not one by one";
        self.clock.refuse(why);
        BackendError::BackendAccess(wasmtime::format_err!("{why}"))
    }
}

impl BackendExecutionContext for StoreExecution {
    fn set_input(&mut self, _id: Id, _tensor: &Tensor) -> Result<(), BackendError> {
        Err(self.unsupported())
    }

    fn get_output(&mut self, _id: Id) -> Result<Tensor, BackendError> {
        Err(self.unsupported())
    }

    fn compute(
        &mut self,
        inputs: Option<Vec<NamedTensor>>,
    ) -> Result<Option<Vec<NamedTensor>>, BackendError> {
        let Some(inputs) = inputs else {
            return Err(self.unsupported());
        };
        let deadline = self.clock.deadline();
        let run = self.run.get_mut().unwrap_or_else(|p| p.into_inner());
        let started = std::time::Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run.run(inputs, deadline)))
            .unwrap_or_else(|p| {
                Err(RunError::Failed(format!(
                    "the backend panicked: {}",
                    crate::panics::message(p.as_ref())
                )))
            });
        crate::timing::record(crate::timing::Stage::Graph, started.elapsed());
        // The backend's kernels leave AVX state that would slow the rest of the guest's call.
        crate::engine::cpu::clear_upper_vector_state();
        match outcome {
            Ok(outputs) => Ok(Some(outputs)),
            Err(e) => {
                self.clock.record(&self.name, &e);
                Err(BackendError::BackendAccess(wasmtime::format_err!(
                    "graph `{}`: {e}",
                    self.name
                )))
            }
        }
    }
}

/// Stands for every encoding so that `load` is refused with the reason (see [`REFUSED_LOAD`]).
struct RefuseBytes {
    encoding: GraphEncoding,
    clock: Arc<GraphClock>,
}

impl BackendInner for RefuseBytes {
    fn encoding(&self) -> GraphEncoding {
        self.encoding
    }

    fn load(
        &mut self,
        _builders: &[&[u8]],
        _target: ExecutionTarget,
    ) -> Result<Graph, BackendError> {
        self.clock.refuse(REFUSED_LOAD);
        Err(BackendError::BackendAccess(wasmtime::format_err!(
            "{REFUSED_LOAD}"
        )))
    }

    fn as_dir_loadable(&mut self) -> Option<&mut dyn BackendFromDir> {
        None
    }
}
