//! What an OIP inference request should decode to, written apart from the server's own code: the
//! fuzz targets compare the server's answer with it. Mirrors of the request types carry the same
//! serde attributes (serde is not what is tested); the rules after that are re-stated here with
//! 128-bit arithmetic, so a wrapping count or an off-by-one in the server shows as a disagreement.
//! `tests/e2e/fuzz_guest.rs` includes this file too.

#![allow(dead_code)]

use ferry::runtime::{Datatype, Tensor, TensorData};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The request as `host/src/server/oip.rs` deserialises it.
#[derive(Deserialize)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    pub inputs: Vec<RequestInput>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
pub struct RequestInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    #[serde(default)]
    pub data: Option<Value>,
}

#[derive(Deserialize)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

/// The OIP names, in the contract's order.
pub const NAMES: [&str; 12] = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32",
    "FP64", "BYTES",
];

/// The datatype called `name`, if it is one Ferry carries.
pub fn datatype(name: &str) -> Option<Datatype> {
    use Datatype::*;
    let all = [
        Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp32, Fp64, Bytes,
    ];
    NAMES.iter().position(|n| *n == name).map(|i| all[i])
}

/// Bytes per element on the binary extension (`None`: BYTES, length-prefixed).
pub fn width(d: Datatype) -> Option<usize> {
    use Datatype::*;
    match d {
        Bool | Uint8 | Int8 => Some(1),
        Uint16 | Int16 => Some(2),
        Uint32 | Int32 | Fp32 => Some(4),
        Uint64 | Int64 | Fp64 => Some(8),
        Bytes => None,
    }
}

/// The range of an integer datatype.
pub fn int_range(d: Datatype) -> Option<(i128, i128)> {
    use Datatype::*;
    Some(match d {
        Uint8 => (0, u8::MAX as i128),
        Uint16 => (0, u16::MAX as i128),
        Uint32 => (0, u32::MAX as i128),
        Uint64 => (0, u64::MAX as i128),
        Int8 => (i8::MIN as i128, i8::MAX as i128),
        Int16 => (i16::MIN as i128, i16::MAX as i128),
        Int32 => (i32::MIN as i128, i32::MAX as i128),
        Int64 => (i64::MIN as i128, i64::MAX as i128),
        _ => return None,
    })
}

/// Elements a shape holds, `None` past 64 bits (the nonzero dimensions' product must fit, in any
/// order; negative dimensions never get here).
pub fn count(shape: &[i64]) -> Option<u64> {
    let mut product: u128 = 1;
    for d in shape.iter().filter(|d| **d != 0) {
        product = product.checked_mul(*d as u128)?;
        if product > u64::MAX as u128 {
            return None;
        }
    }
    Some(if shape.contains(&0) {
        0
    } else {
        product as u64
    })
}

fn leaves<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| leaves(i, out)),
        other => out.push(other),
    }
}

fn as_int(v: &Value) -> Option<i128> {
    let n = v.as_number()?;
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// The tensor a JSON input should become, or `None` when it must be refused.
pub fn json_tensor(name: &str, dt: &str, shape: &[i64], data: &Value) -> Option<Tensor> {
    let d = datatype(dt)?;
    if shape.iter().any(|x| *x < 0) || !data.is_array() {
        return None;
    }
    let mut items = Vec::new();
    leaves(data, &mut items);
    if count(shape)? != items.len() as u64 {
        return None;
    }
    macro_rules! ints {
        ($variant:ident, $t:ty) => {{
            let (lo, hi) = int_range(d).unwrap();
            let mut out = Vec::new();
            for v in &items {
                let x = as_int(v).filter(|x| (lo..=hi).contains(x))?;
                out.push(x as $t);
            }
            TensorData::$variant(out)
        }};
    }
    let data = match d {
        Datatype::Bool => {
            TensorData::Bool(items.iter().map(|v| v.as_bool()).collect::<Option<_>>()?)
        }
        Datatype::Uint8 => ints!(Uint8, u8),
        Datatype::Uint16 => ints!(Uint16, u16),
        Datatype::Uint32 => ints!(Uint32, u32),
        Datatype::Uint64 => ints!(Uint64, u64),
        Datatype::Int8 => ints!(Int8, i8),
        Datatype::Int16 => ints!(Int16, i16),
        Datatype::Int32 => ints!(Int32, i32),
        Datatype::Int64 => ints!(Int64, i64),
        Datatype::Fp32 => TensorData::Fp32(
            items
                .iter()
                .map(|v| {
                    // Past FP32's range is refused, not made infinite (JSON has no infinities).
                    let x = v.as_f64()? as f32;
                    x.is_finite().then_some(x)
                })
                .collect::<Option<_>>()?,
        ),
        Datatype::Fp64 => {
            TensorData::Fp64(items.iter().map(|v| v.as_f64()).collect::<Option<_>>()?)
        }
        Datatype::Bytes => TensorData::Bytes(
            items
                .iter()
                .map(|v| v.as_str().map(|s| s.as_bytes().to_vec()))
                .collect::<Option<_>>()?,
        ),
    };
    Some(Tensor {
        name: name.to_owned(),
        shape: shape.iter().map(|x| *x as u64).collect(),
        data,
    })
}

/// `count` elements of `d` from raw little-endian bytes, or `None` when they are not exactly that.
pub fn binary_data(d: Datatype, bytes: &[u8], count: u64) -> Option<TensorData> {
    let Some(w) = width(d) else {
        let mut rest = bytes;
        let mut items = Vec::new();
        for _ in 0..count {
            if rest.len() < 4 {
                return None;
            }
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            rest = &rest[4..];
            if rest.len() < len {
                return None;
            }
            items.push(rest[..len].to_vec());
            rest = &rest[len..];
        }
        return rest.is_empty().then_some(TensorData::Bytes(items));
    };
    if bytes.len() as u128 != w as u128 * count as u128 {
        return None;
    }
    let c = bytes.chunks_exact(w);
    macro_rules! le {
        ($variant:ident, $t:ty) => {
            TensorData::$variant(
                c.map(|b| <$t>::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
            )
        };
    }
    Some(match d {
        Datatype::Bool => TensorData::Bool(bytes.iter().map(|b| *b != 0).collect()),
        Datatype::Uint8 => TensorData::Uint8(bytes.to_vec()),
        Datatype::Int8 => TensorData::Int8(bytes.iter().map(|b| *b as i8).collect()),
        Datatype::Uint16 => le!(Uint16, u16),
        Datatype::Int16 => le!(Int16, i16),
        Datatype::Uint32 => le!(Uint32, u32),
        Datatype::Int32 => le!(Int32, i32),
        Datatype::Fp32 => le!(Fp32, f32),
        Datatype::Uint64 => le!(Uint64, u64),
        Datatype::Int64 => le!(Int64, i64),
        Datatype::Fp64 => le!(Fp64, f64),
        Datatype::Bytes => unreachable!(),
    })
}

/// What the server should make of a body (and its `Inference-Header-Content-Length`, when sent):
/// the input tensors, or `None` when it must answer 400.
pub fn request(header: Option<&axum::http::HeaderValue>, body: &[u8]) -> Option<Vec<Tensor>> {
    let (json, mut binary) = match header {
        None => (body, &[][..]),
        Some(h) => {
            let n: usize = h.to_str().ok()?.trim().parse().ok()?;
            if n > body.len() {
                return None;
            }
            body.split_at(n)
        }
    };
    let request: InferRequest = serde_json::from_slice(json).ok()?;
    let mut tensors = Vec::new();
    for input in request.inputs {
        let size = input
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"));
        let tensor = match (size, &input.data) {
            (Some(size), _) => {
                let size = size.as_u64()?;
                if size > binary.len() as u64 {
                    return None;
                }
                let (mine, rest) = binary.split_at(size as usize);
                binary = rest;
                let d = datatype(&input.datatype)?;
                if input.shape.iter().any(|x| *x < 0) {
                    return None;
                }
                let data = binary_data(d, mine, count(&input.shape)?)?;
                Tensor {
                    name: input.name.clone(),
                    shape: input.shape.iter().map(|x| *x as u64).collect(),
                    data,
                }
            }
            // `"data": null` is no data.
            (None, Some(data)) if !data.is_null() => {
                json_tensor(&input.name, &input.datatype, &input.shape, data)?
            }
            (None, _) => return None,
        };
        tensors.push(tensor);
    }
    binary.is_empty().then_some(tensors)
}

/// Bit-exact equality of tensor data (so that NaN payloads from binary data compare too).
pub fn same_data(a: &TensorData, b: &TensorData) -> bool {
    match (a, b) {
        (TensorData::Fp32(x), TensorData::Fp32(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        }
        (TensorData::Fp64(x), TensorData::Fp64(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        }
        _ => a == b,
    }
}

/// Bit-exact equality of tensors.
pub fn same_tensor(a: &Tensor, b: &Tensor) -> bool {
    a.name == b.name && a.shape == b.shape && same_data(&a.data, &b.data)
}
