//! `wasi:nn` tensors (dimensions, an element type, little-endian bytes) checked and converted to
//! the typed elements the backends take, and back.

use wasmtime_wasi_nn::wit::TensorType;
use wasmtime_wasi_nn::Tensor;

use super::RunError;

/// A tensor's elements, typed.
pub(super) enum Elements {
    F32(Vec<f32>),
    F64(Vec<f64>),
    U8(Vec<u8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
}

/// The `wasi:nn` name of an element type, for messages and signatures.
pub(super) fn type_name(ty: TensorType) -> &'static str {
    match ty {
        TensorType::Fp16 => "FP16",
        TensorType::Fp32 => "FP32",
        TensorType::Fp64 => "FP64",
        TensorType::Bf16 => "BF16",
        TensorType::U8 => "U8",
        TensorType::I32 => "I32",
        TensorType::I64 => "I64",
    }
}

macro_rules! from_le {
    ($bytes:expr, $t:ty) => {
        $bytes
            .chunks_exact(std::mem::size_of::<$t>())
            .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunks are exact")))
            .collect::<Vec<$t>>()
    };
}

/// Checks that the bytes of `tensor` named `name` match its dimensions.
pub(super) fn check_size(name: &str, tensor: &Tensor) -> Result<(), RunError> {
    let count = tensor
        .dimensions
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(*d as usize))
        .ok_or_else(|| RunError::Invalid(format!("input `{name}`: its dimensions overflow")))?;
    let width = match tensor.ty {
        TensorType::U8 => 1,
        TensorType::Fp16 | TensorType::Bf16 => 2,
        TensorType::Fp32 | TensorType::I32 => 4,
        TensorType::Fp64 | TensorType::I64 => 8,
    };
    if count.checked_mul(width) != Some(tensor.data.len()) {
        return Err(RunError::Invalid(format!(
            "input `{name}`: {} bytes of data for dimensions {:?} of {} ({width} bytes each)",
            tensor.data.len(),
            tensor.dimensions,
            type_name(tensor.ty)
        )));
    }
    Ok(())
}

/// The elements of `tensor` named `name`, after checking its bytes match its dimensions.
pub(super) fn elements(name: &str, tensor: &Tensor) -> Result<Elements, RunError> {
    check_size(name, tensor)?;
    let data = &tensor.data;
    Ok(match tensor.ty {
        TensorType::Fp32 => Elements::F32(from_le!(data, f32)),
        TensorType::Fp64 => Elements::F64(from_le!(data, f64)),
        TensorType::U8 => Elements::U8(data.clone()),
        TensorType::I32 => Elements::I32(from_le!(data, i32)),
        TensorType::I64 => Elements::I64(from_le!(data, i64)),
        TensorType::Fp16 | TensorType::Bf16 => {
            return Err(RunError::Invalid(format!(
                "input `{name}`: {} tensors are not supported; send FP32",
                type_name(tensor.ty)
            )))
        }
    })
}

/// A `wasi:nn` tensor of `dims` holding `values`.
pub(super) fn tensor<T: LeBytes>(dims: Vec<u32>, ty: TensorType, values: &[T]) -> Tensor {
    let mut data = Vec::with_capacity(std::mem::size_of_val(values));
    for v in values {
        v.put(&mut data);
    }
    Tensor::new(dims, ty, data)
}

/// Elements that write themselves little-endian.
pub(super) trait LeBytes {
    fn put(&self, out: &mut Vec<u8>);
}

macro_rules! le_bytes {
    ($($t:ty),*) => {$(
        impl LeBytes for $t {
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
le_bytes!(f32, f64, u8, i32, i64);

/// Dimensions as `wasi:nn` carries them (u32), or why they do not fit.
pub(super) fn dims_u32(name: &str, shape: &[usize]) -> Result<Vec<u32>, RunError> {
    shape
        .iter()
        .map(|d| u32::try_from(*d))
        .collect::<Result<_, _>>()
        .map_err(|_| RunError::Failed(format!("output `{name}`: a dimension exceeds 2^32")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_do_not_match_the_dimensions_are_named() {
        let t = Tensor::new(vec![2, 3], TensorType::Fp32, vec![0; 20]);
        let Err(RunError::Invalid(m)) = elements("x", &t) else {
            panic!("accepted")
        };
        assert!(
            m.contains("20 bytes of data for dimensions [2, 3] of FP32"),
            "{m}"
        );
        let t = tensor(vec![2], TensorType::Fp32, &[1.5f32, -2.0]);
        let Ok(Elements::F32(v)) = elements("x", &t) else {
            panic!("refused")
        };
        assert_eq!(v, [1.5, -2.0]);
    }
}
