//! tract in the host: pure Rust, so nothing to install; runs the standard ONNX operators natively (no
//! ONNX-ML tree ensembles). A run is stopped between two operators once its deadline has passed.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;
use wasmtime_wasi_nn::backend::NamedTensor;
use wasmtime_wasi_nn::wit::TensorType;

use super::tensor::{check_size, dims_u32, type_name};
use super::{NativeGraph, NativeRun, RunError, Signature};

struct TractGraph {
    plan: Arc<TypedRunnableModel>,
    inputs: Vec<(String, DatumType)>,
    outputs: Vec<String>,
    signature: Signature,
}

/// Parses and optimises an ONNX graph. Dimensions the graph leaves open (a batch, say) become
/// symbols, so one optimised plan serves every batch size.
pub(super) fn load(bytes: &[u8]) -> anyhow::Result<Arc<dyn NativeGraph>> {
    parse(bytes).context(
        "tract cannot run this graph (graphs with ONNX-ML operators tract lacks run on the \
         onnxruntime backend, the default)",
    )
}

fn parse(bytes: &[u8]) -> anyhow::Result<Arc<dyn NativeGraph>> {
    let mut model = tract_onnx::onnx().model_for_read(&mut &bytes[..])?;
    for ix in 0..model.inputs.len() {
        let fact = model.input_fact(ix)?.clone();
        let Some(dt) = fact.datum_type.concretize() else {
            bail!("input {ix} has no element type");
        };
        if fact.shape.is_open() {
            bail!("input {ix} has no fixed rank");
        }
        let dims: Vec<TDim> = fact
            .shape
            .dims()
            .enumerate()
            .map(|(d, dim)| {
                dim.concretize()
                    .unwrap_or_else(|| model.sym(&format!("input{ix}_dim{d}")).into())
            })
            .collect();
        model.set_input_fact(ix, TypedFact::dt_shape(dt, dims).into())?;
    }
    // Optimisation may rename the nodes at the graph's edges; the ONNX names are taken here (the
    // inputs' and outputs' order is kept).
    let onnx_name = |outlet: &OutletId| {
        model
            .outlet_label(*outlet)
            .map(str::to_owned)
            .unwrap_or_else(|| model.node(outlet.node).name.clone())
    };
    let input_names: Vec<String> = model.input_outlets()?.iter().map(onnx_name).collect();
    let output_names: Vec<String> = model.output_outlets()?.iter().map(onnx_name).collect();
    let typed = model.into_optimized()?;
    let spec = |name: &str, outlet: &OutletId| -> anyhow::Result<(String, String, Vec<i64>)> {
        let fact = typed.outlet_fact(*outlet)?;
        let shape = fact
            .shape
            .iter()
            .map(|d| d.to_i64().unwrap_or(-1))
            .collect();
        Ok((name.to_owned(), format!("{:?}", fact.datum_type), shape))
    };
    let mut inputs = Vec::new();
    let mut signature = Signature::default();
    for (name, outlet) in input_names.iter().zip(typed.input_outlets()?) {
        inputs.push((name.clone(), typed.outlet_fact(*outlet)?.datum_type));
        signature.inputs.push(spec(name, outlet)?);
    }
    for (name, outlet) in output_names.iter().zip(typed.output_outlets()?) {
        signature.outputs.push(spec(name, outlet)?);
    }
    let outputs = output_names;
    let plan = typed.into_runnable()?;
    Ok(Arc::new(TractGraph {
        plan,
        inputs,
        outputs,
        signature,
    }))
}

impl NativeGraph for TractGraph {
    fn context(self: Arc<Self>) -> anyhow::Result<Box<dyn NativeRun>> {
        Ok(Box::new(TractRun {
            graph: self,
            state: None,
        }))
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }
}

struct TractRun {
    graph: Arc<TractGraph>,
    /// Reused between runs (its buffers); dropped after a failed run.
    state: Option<TypedSimpleState>,
}

/// The error a run is stopped with at its deadline.
#[derive(Debug, thiserror::Error)]
#[error("deadline")]
struct Stopped;

impl NativeRun for TractRun {
    fn run(
        &mut self,
        mut inputs: Vec<NamedTensor>,
        deadline: Instant,
    ) -> Result<Vec<NamedTensor>, RunError> {
        let mut values: TVec<TValue> = tvec![];
        for (name, dt) in &self.graph.inputs {
            let given = super::take_input(&mut inputs, name, &self.graph.signature)?;
            let given_dt = match given.ty {
                TensorType::Fp32 => f32::datum_type(),
                TensorType::Fp64 => f64::datum_type(),
                TensorType::U8 => u8::datum_type(),
                TensorType::I32 => i32::datum_type(),
                TensorType::I64 => i64::datum_type(),
                TensorType::Fp16 => f16::datum_type(),
                TensorType::Bf16 => {
                    return Err(RunError::Invalid(format!(
                        "input `{name}`: BF16 is not supported"
                    )))
                }
            };
            // Booleans cross wasi:nn as bytes.
            let given = if given_dt == u8::datum_type() && *dt == bool::datum_type() {
                check_size(name, &given)?;
                let bools: Vec<bool> = given.data.iter().map(|b| *b != 0).collect();
                let shape: Vec<usize> = given.dimensions.iter().map(|d| *d as usize).collect();
                let tensor = Tensor::from_shape(&shape, &bools)
                    .map_err(|e| RunError::Invalid(format!("input `{name}`: {e}")))?;
                values.push(tensor.into_tvalue());
                continue;
            } else {
                given
            };
            if given_dt != *dt {
                return Err(RunError::Invalid(format!(
                    "input `{name}` is {}, the graph takes {dt:?}",
                    type_name(given.ty)
                )));
            }
            check_size(name, &given)?;
            let shape: Vec<usize> = given.dimensions.iter().map(|d| *d as usize).collect();
            // Safety: `dt` is a plain numeric type and the byte count was checked against `shape`.
            let tensor = unsafe { Tensor::from_raw_dt(*dt, &shape, &given.data) }
                .map_err(|e| RunError::Invalid(format!("input `{name}`: {e}")))?;
            values.push(tensor.into_tvalue());
        }
        super::no_other_inputs(&inputs)?;
        let mut state = match self.state.take() {
            Some(state) => state,
            None => self
                .graph
                .plan
                .spawn()
                .map_err(|e| RunError::Failed(format!("{e:#}")))?,
        };
        let outputs = state
            .run_plan_with_eval(values, |session, op_state, node, input| {
                if Instant::now() >= deadline {
                    return Err(anyhow::Error::new(Stopped));
                }
                tract_onnx::tract_core::plan::eval(session, op_state, node, input)
            })
            .map_err(|e| {
                if e.downcast_ref::<Stopped>().is_some() {
                    RunError::Deadline
                } else {
                    RunError::Failed(format!("{e:#}"))
                }
            })?;
        self.state = Some(state);
        outputs
            .into_iter()
            .zip(&self.graph.outputs)
            .map(|(value, name)| output(name, value.into_tensor()))
            .collect()
    }
}

fn output(name: &str, value: Tensor) -> Result<NamedTensor, RunError> {
    let failed = |e: anyhow::Error| RunError::Failed(format!("output `{name}`: {e:#}"));
    let (ty, value) = match value.datum_type() {
        DatumType::F32 => (TensorType::Fp32, value),
        DatumType::F64 => (TensorType::Fp64, value),
        DatumType::U8 => (TensorType::U8, value),
        DatumType::Bool => (
            TensorType::U8,
            value.cast_to::<u8>().map_err(failed)?.into_owned(),
        ),
        DatumType::I32 => (TensorType::I32, value),
        DatumType::I64 => (TensorType::I64, value),
        DatumType::F16 => (TensorType::Fp16, value),
        dt if dt.is_integer() || dt == DatumType::TDim => (
            TensorType::I64,
            value.cast_to::<i64>().map_err(failed)?.into_owned(),
        ),
        dt => {
            return Err(RunError::Failed(format!(
                "output `{name}` is {dt:?}, which wasi:nn cannot carry"
            )))
        }
    };
    let dims = dims_u32(name, value.shape())?;
    Ok(NamedTensor {
        name: name.to_owned(),
        tensor: wasmtime_wasi_nn::Tensor::new(dims, ty, value.as_bytes().to_vec()),
    })
}
