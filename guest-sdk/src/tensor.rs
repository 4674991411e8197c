//! Tensors as the contract carries them, with constructors and checked views for model code.

use serde_json::Value;

use crate::{Error, Result};

pub use crate::export::bindings::ferry::model::types::{Datatype, Tensor, TensorData, TensorSpec};

impl TensorSpec {
    /// Declares a tensor: -1 in `shape` accepts any size (use it for the batch dimension).
    pub fn new(name: impl Into<String>, datatype: Datatype, shape: impl Into<Vec<i64>>) -> Self {
        TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.into(),
        }
    }
}

impl TensorData {
    /// The datatype these elements carry.
    pub fn datatype(&self) -> Datatype {
        match self {
            TensorData::Bool(_) => Datatype::Bool,
            TensorData::Uint8(_) => Datatype::Uint8,
            TensorData::Uint16(_) => Datatype::Uint16,
            TensorData::Uint32(_) => Datatype::Uint32,
            TensorData::Uint64(_) => Datatype::Uint64,
            TensorData::Int8(_) => Datatype::Int8,
            TensorData::Int16(_) => Datatype::Int16,
            TensorData::Int32(_) => Datatype::Int32,
            TensorData::Int64(_) => Datatype::Int64,
            TensorData::Fp32(_) => Datatype::Fp32,
            TensorData::Fp64(_) => Datatype::Fp64,
            TensorData::Bytes(_) => Datatype::Bytes,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::Bool(v) => v.len(),
            TensorData::Uint8(v) => v.len(),
            TensorData::Uint16(v) => v.len(),
            TensorData::Uint32(v) => v.len(),
            TensorData::Uint64(v) => v.len(),
            TensorData::Int8(v) => v.len(),
            TensorData::Int16(v) => v.len(),
            TensorData::Int32(v) => v.len(),
            TensorData::Int64(v) => v.len(),
            TensorData::Fp32(v) => v.len(),
            TensorData::Fp64(v) => v.len(),
            TensorData::Bytes(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Tensor {
    fn checked(name: impl Into<String>, shape: &[u64], data: TensorData) -> Self {
        let name = name.into();
        let expected: u64 = shape.iter().product();
        assert_eq!(
            expected as usize,
            data.len(),
            "tensor `{name}`: shape {shape:?} holds {expected} elements but {} were given",
            data.len()
        );
        Tensor {
            name,
            shape: shape.to_vec(),
            data,
        }
    }

    /// An FP32 tensor. Panics if `data.len()` is not the product of `shape` (a bug in the model).
    pub fn fp32(name: impl Into<String>, shape: impl AsRef<[u64]>, data: Vec<f32>) -> Self {
        Self::checked(name, shape.as_ref(), TensorData::Fp32(data))
    }
    /// An FP64 tensor.
    pub fn fp64(name: impl Into<String>, shape: impl AsRef<[u64]>, data: Vec<f64>) -> Self {
        Self::checked(name, shape.as_ref(), TensorData::Fp64(data))
    }
    /// An INT32 tensor.
    pub fn int32(name: impl Into<String>, shape: impl AsRef<[u64]>, data: Vec<i32>) -> Self {
        Self::checked(name, shape.as_ref(), TensorData::Int32(data))
    }
    /// An INT64 tensor.
    pub fn int64(name: impl Into<String>, shape: impl AsRef<[u64]>, data: Vec<i64>) -> Self {
        Self::checked(name, shape.as_ref(), TensorData::Int64(data))
    }
    /// A BOOL tensor.
    pub fn bool(name: impl Into<String>, shape: impl AsRef<[u64]>, data: Vec<bool>) -> Self {
        Self::checked(name, shape.as_ref(), TensorData::Bool(data))
    }
    /// A BYTES tensor (each element a byte string).
    pub fn bytes(name: impl Into<String>, shape: impl AsRef<[u64]>, data: Vec<Vec<u8>>) -> Self {
        Self::checked(name, shape.as_ref(), TensorData::Bytes(data))
    }

    /// The datatype of the elements.
    pub fn datatype(&self) -> Datatype {
        self.data.datatype()
    }
}

/// A row-major matrix view of an FP32 input: `batch()` rows of `cols()` values.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    data: &'a [f32],
    cols: usize,
}

impl<'a> Matrix<'a> {
    /// Number of rows (the batch size).
    pub fn batch(&self) -> u64 {
        (self.data.len() / self.cols.max(1)) as u64
    }
    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// The rows, in order.
    pub fn rows(&self) -> impl Iterator<Item = &'a [f32]> + 'a {
        self.data.chunks_exact(self.cols.max(1))
    }
    /// All values, row-major.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }
}

/// The tensors of one request, looked up by name, and the request's `parameters`.
#[derive(Debug, Clone)]
pub struct Inputs {
    tensors: Vec<Tensor>,
    parameters: Value,
}

impl Inputs {
    /// Wraps request tensors (the host has already checked them against [`crate::Metadata`]).
    pub fn new(tensors: Vec<Tensor>, parameters: Value) -> Self {
        Inputs {
            tensors,
            parameters,
        }
    }

    /// The request's `parameters` object (`{}` when absent).
    pub fn parameters(&self) -> &Value {
        &self.parameters
    }

    /// The input called `name`.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::invalid_input(format!("missing input tensor `{name}`")))
    }

    /// Takes the input called `name` out of the request (no copy).
    pub fn take(&mut self, name: &str) -> Result<Tensor> {
        let at = self
            .tensors
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| Error::invalid_input(format!("missing input tensor `{name}`")))?;
        Ok(self.tensors.swap_remove(at))
    }

    /// The input called `name` as an FP32 matrix of shape `[N, cols]`.
    pub fn matrix_f32(&self, name: &str, cols: usize) -> Result<Matrix<'_>> {
        let t = self.get(name)?;
        let TensorData::Fp32(data) = &t.data else {
            return Err(Error::invalid_input(format!(
                "input `{name}` must be FP32, got {:?}",
                t.datatype()
            )));
        };
        if t.shape.len() != 2 || t.shape[1] as usize != cols {
            return Err(Error::invalid_input(format!(
                "input `{name}` must have shape [N, {cols}], got {:?}",
                t.shape
            )));
        }
        Ok(Matrix { data, cols })
    }

    /// All tensors, in request order.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matrix_view_checks_datatype_and_width() {
        let inputs = Inputs::new(
            vec![Tensor::fp32("x", [2, 3], vec![1., 2., 3., 4., 5., 6.])],
            json!({}),
        );
        let m = inputs.matrix_f32("x", 3).unwrap();
        assert_eq!(m.batch(), 2);
        assert_eq!(m.rows().nth(1).unwrap(), &[4., 5., 6.]);
        assert!(
            matches!(inputs.matrix_f32("x", 2), Err(Error::InvalidInput(m)) if m.contains("[N, 2]"))
        );
        let ints = Inputs::new(vec![Tensor::int32("x", [1], vec![1])], json!({}));
        assert!(
            matches!(ints.matrix_f32("x", 1), Err(Error::InvalidInput(m)) if m.contains("FP32"))
        );
        assert!(matches!(ints.get("y"), Err(Error::InvalidInput(m)) if m.contains("`y`")));
    }

    #[test]
    #[should_panic(expected = "holds 4 elements but 3 were given")]
    fn constructor_rejects_data_that_does_not_fill_the_shape() {
        Tensor::fp32("x", [2, 2], vec![1., 2., 3.]);
    }
}
