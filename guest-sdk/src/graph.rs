//! Host-side graphs: the ONNX graphs pushed with the version (`ferry push --graph NAME=FILE.onnx`),
//! run natively by the host (ONNX Runtime or tract) and called here like a function:
//!
//! ```ignore
//! let graph = Graph::named("model");
//! let outputs = graph.run(&[Tensor::fp32("features", [1, 30], row)])?;
//! let p = outputs.get("probabilities")?;
//! ```
//!
//! The model never holds the graph's weights: the host loads each graph once per version and shares
//! it among instances. This is the standard `wasi:nn` interface (`load-by-name`), so a component that
//! uses it runs on any host that offers `wasi:nn` with these graph names.

use std::cell::RefCell;

use crate::export::bindings::wasi::nn::{errors, graph as nn, inference, tensor as nn_tensor};
use crate::{Error, Result, Tensor, TensorData};

/// A graph of the version, by name. Opened on its first run, so that nothing of the host's is held
/// while the model loads (the host snapshots the loaded model) and every instance opens its own.
pub struct Graph {
    name: String,
    opened: RefCell<Option<Opened>>,
}

struct Opened {
    // Kept alive with the context made from it.
    _graph: nn::Graph,
    context: inference::GraphExecutionContext,
}

/// A graph's outputs, by name.
#[derive(Debug, Clone)]
pub struct Outputs(Vec<Tensor>);

impl Outputs {
    /// The output `name`, or an error naming the outputs there are.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.0.iter().find(|t| t.name == name).ok_or_else(|| {
            Error::internal(format!(
                "the graph has no output `{name}` (it has {})",
                self.0
                    .iter()
                    .map(|t| format!("`{}`", t.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// Every output, in the graph's order.
    pub fn into_tensors(self) -> Vec<Tensor> {
        self.0
    }
}

impl Graph {
    /// The version's graph `name` (the NAME of `--graph NAME=FILE.onnx`).
    pub fn named(name: &str) -> Graph {
        Graph {
            name: name.to_owned(),
            opened: RefCell::new(None),
        }
    }

    /// Runs the graph on `inputs`, matched to the graph's inputs by name. FP32, FP64, UINT8, INT32 and
    /// INT64 tensors cross (BOOL goes as UINT8); an error says which input does not fit and why.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Outputs> {
        let mut opened = self.opened.borrow_mut();
        if opened.is_none() {
            let graph = nn::load_by_name(&self.name).map_err(|e| self.failed("opening", e))?;
            let context = graph
                .init_execution_context()
                .map_err(|e| self.failed("opening", e))?;
            *opened = Some(Opened {
                _graph: graph,
                context,
            });
        }
        let context = &opened.as_ref().expect("opened above").context;
        let named = inputs
            .iter()
            .map(|t| Ok((t.name.clone(), to_nn(t)?)))
            .collect::<Result<Vec<_>>>()?;
        let outputs = context
            .compute(named)
            .map_err(|e| self.failed("running", e))?;
        outputs
            .into_iter()
            .map(|(name, t)| from_nn(name, &t))
            .collect::<Result<Vec<_>>>()
            .map(Outputs)
    }

    fn failed(&self, doing: &str, e: errors::Error) -> Error {
        Error::internal(format!(
            "{doing} graph `{}`: {:?}: {}",
            self.name,
            e.code(),
            e.data()
        ))
    }
}

fn to_nn(t: &Tensor) -> Result<nn_tensor::Tensor> {
    let dims = t
        .shape
        .iter()
        .map(|d| u32::try_from(*d))
        .collect::<std::result::Result<Vec<u32>, _>>()
        .map_err(|_| Error::internal(format!("tensor `{}`: a dimension exceeds 2^32", t.name)))?;
    let bools: Vec<u8>;
    let (ty, bytes): (_, &[u8]) = match &t.data {
        TensorData::Fp32(v) => (nn_tensor::TensorType::Fp32, le_bytes(v)),
        TensorData::Fp64(v) => (nn_tensor::TensorType::Fp64, le_bytes(v)),
        TensorData::Uint8(v) => (nn_tensor::TensorType::U8, v),
        TensorData::Bool(v) => {
            bools = v.iter().map(|b| *b as u8).collect();
            (nn_tensor::TensorType::U8, &bools)
        }
        TensorData::Int32(v) => (nn_tensor::TensorType::I32, le_bytes(v)),
        TensorData::Int64(v) => (nn_tensor::TensorType::I64, le_bytes(v)),
        other => {
            return Err(Error::internal(format!(
                "tensor `{}`: {:?} does not cross to a graph (FP32, FP64, UINT8, INT32, INT64 do)",
                t.name,
                other.datatype()
            )))
        }
    };
    Ok(nn_tensor::Tensor::new(&dims, ty, bytes))
}

/// Numbers as wasi:nn's little-endian bytes: on wasm (little-endian) their memory already is, so the
/// host copies them straight from it.
fn le_bytes<T: Copy>(values: &[T]) -> &[u8] {
    const { assert!(cfg!(target_endian = "little")) };
    // Safety: plain numbers, no padding; the bytes live as long as `values`.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), std::mem::size_of_val(values)) }
}

fn from_nn(name: String, t: &nn_tensor::Tensor) -> Result<Tensor> {
    let shape: Vec<u64> = t.dimensions().iter().map(|d| u64::from(*d)).collect();
    let bytes = t.data();
    macro_rules! typed {
        ($t:ty) => {
            bytes
                .chunks_exact(std::mem::size_of::<$t>())
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("exact chunks")))
                .collect::<Vec<$t>>()
        };
    }
    let data = match t.ty() {
        nn_tensor::TensorType::Fp32 => TensorData::Fp32(typed!(f32)),
        nn_tensor::TensorType::Fp64 => TensorData::Fp64(typed!(f64)),
        nn_tensor::TensorType::U8 => TensorData::Uint8(bytes),
        nn_tensor::TensorType::I32 => TensorData::Int32(typed!(i32)),
        nn_tensor::TensorType::I64 => TensorData::Int64(typed!(i64)),
        other => {
            return Err(Error::internal(format!(
                "graph output `{name}` is {other:?}, which this SDK does not read"
            )))
        }
    };
    let expected: u64 = shape.iter().product();
    if expected as usize != data.len() {
        return Err(Error::internal(format!(
            "graph output `{name}`: shape {shape:?} but {} elements",
            data.len()
        )));
    }
    Ok(Tensor { name, shape, data })
}
