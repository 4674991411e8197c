//! Open Inference Protocol v2 JSON tensors (`{"name", "datatype", "shape", "data"}`) to and from the
//! contract's tensors. `data` may be flat or nested (row-major); BYTES elements are strings.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::runtime::{Datatype, Tensor, TensorData};

pub mod binary;
pub mod typed;

/// A tensor as it appears in OIP JSON.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct JsonTensor {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

/// Every datatype the contract carries, with its OIP name.
pub const DATATYPES: [(Datatype, &str); 12] = [
    (Datatype::Bool, "BOOL"),
    (Datatype::Uint8, "UINT8"),
    (Datatype::Uint16, "UINT16"),
    (Datatype::Uint32, "UINT32"),
    (Datatype::Uint64, "UINT64"),
    (Datatype::Int8, "INT8"),
    (Datatype::Int16, "INT16"),
    (Datatype::Int32, "INT32"),
    (Datatype::Int64, "INT64"),
    (Datatype::Fp32, "FP32"),
    (Datatype::Fp64, "FP64"),
    (Datatype::Bytes, "BYTES"),
];

/// The OIP name of a datatype.
pub fn datatype_name(d: Datatype) -> &'static str {
    DATATYPES
        .iter()
        .find(|(x, _)| *x == d)
        .map(|(_, n)| *n)
        .expect("every datatype is listed")
}

/// The datatype called `name` in OIP.
pub fn parse_datatype(name: &str) -> Result<Datatype, String> {
    DATATYPES
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(d, _)| *d)
        .ok_or_else(|| {
            if name == "FP16" || name == "BF16" {
                format!("datatype {name} is not supported by Ferry models (use FP32)")
            } else {
                format!("unknown datatype {name:?}")
            }
        })
}

/// The datatype of some tensor data.
pub fn datatype_of(data: &TensorData) -> Datatype {
    match data {
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

fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

fn ints<T: TryFrom<i64> + TryFrom<u64>>(items: &[&Value], what: &str) -> Result<Vec<T>, String> {
    items
        .iter()
        .map(|v| {
            let converted = match (v.as_i64(), v.as_u64()) {
                (_, Some(u)) => T::try_from(u).ok(),
                (Some(i), None) => T::try_from(i).ok(),
                _ => None,
            };
            converted.ok_or_else(|| format!("element {v} is not a {what} integer"))
        })
        .collect()
}

fn floats(items: &[&Value]) -> Result<Vec<f64>, String> {
    items
        .iter()
        .map(|v| {
            v.as_f64()
                .ok_or_else(|| format!("element {v} is not a number"))
        })
        .collect()
}

/// FP32 elements: a finite number past FP32's range is refused rather than turned into infinity.
fn floats32(items: &[&Value]) -> Result<Vec<f32>, String> {
    items
        .iter()
        .map(|v| {
            let x = v
                .as_f64()
                .ok_or_else(|| format!("element {v} is not a number"))?;
            let narrow = x as f32;
            if narrow.is_infinite() && x.is_finite() {
                return Err(format!("element {v} is out of the range of FP32"));
            }
            Ok(narrow)
        })
        .collect()
}

/// The number of elements a shape holds; `None` when it cannot be counted in 64 bits. The
/// dimensions other than 0 must multiply within 64 bits whatever their order, so that
/// `[0, 2^32, 2^32]` is refused like `[2^32, 2^32, 0]` (a guest that multiplies them would wrap).
pub fn element_count(shape: &[u64]) -> Option<u64> {
    let nonzero = shape
        .iter()
        .filter(|d| **d != 0)
        .try_fold(1u64, |n, d| n.checked_mul(*d))?;
    Some(if shape.contains(&0) { 0 } else { nonzero })
}

/// Converts an OIP JSON tensor, checking that the element count matches the shape.
pub fn tensor_from_json(t: &JsonTensor) -> Result<Tensor, String> {
    let fail = |m: String| format!("input `{}`: {m}", t.name);
    let datatype = parse_datatype(&t.datatype).map_err(fail)?;
    if let Some(d) = t.shape.iter().find(|d| **d < 0) {
        return Err(fail(format!(
            "shape {:?} has a negative dimension {d}",
            t.shape
        )));
    }
    let shape: Vec<u64> = t.shape.iter().map(|d| *d as u64).collect();
    if !t.data.is_array() {
        return Err(fail(format!(
            "`data` must be an array of {} elements (flat or nested), not {}",
            t.datatype,
            json_kind(&t.data)
        )));
    }
    let mut items = Vec::new();
    flatten(&t.data, &mut items);
    let data = match datatype {
        Datatype::Bool => TensorData::Bool(
            items
                .iter()
                .map(|v| {
                    v.as_bool()
                        .ok_or_else(|| format!("element {v} is not a boolean"))
                })
                .collect::<Result<_, _>>()
                .map_err(fail)?,
        ),
        Datatype::Uint8 => TensorData::Uint8(ints(&items, "UINT8").map_err(fail)?),
        Datatype::Uint16 => TensorData::Uint16(ints(&items, "UINT16").map_err(fail)?),
        Datatype::Uint32 => TensorData::Uint32(ints(&items, "UINT32").map_err(fail)?),
        Datatype::Uint64 => TensorData::Uint64(ints(&items, "UINT64").map_err(fail)?),
        Datatype::Int8 => TensorData::Int8(ints(&items, "INT8").map_err(fail)?),
        Datatype::Int16 => TensorData::Int16(ints(&items, "INT16").map_err(fail)?),
        Datatype::Int32 => TensorData::Int32(ints(&items, "INT32").map_err(fail)?),
        Datatype::Int64 => TensorData::Int64(ints(&items, "INT64").map_err(fail)?),
        Datatype::Fp32 => TensorData::Fp32(floats32(&items).map_err(fail)?),
        Datatype::Fp64 => TensorData::Fp64(floats(&items).map_err(fail)?),
        Datatype::Bytes => TensorData::Bytes(
            items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(|s| s.as_bytes().to_vec())
                        .ok_or_else(|| format!("element {v} is not a string"))
                })
                .collect::<Result<_, _>>()
                .map_err(fail)?,
        ),
    };
    // Checked after the elements' types, so that data of the wrong type is named as such.
    let count = element_count(&shape);
    if count != Some(items.len() as u64) {
        return Err(fail(format!(
            "shape {:?} needs {} elements, data has {}",
            t.shape,
            count.map_or("at least 2^64".to_owned(), |c| c.to_string()),
            items.len()
        )));
    }
    Ok(Tensor {
        name: t.name.clone(),
        shape,
        data,
    })
}

/// What kind of JSON value `v` is, for messages.
pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Converts a tensor to OIP JSON with flat `data` (BYTES as UTF-8 strings, lossy).
pub fn tensor_to_json(t: &Tensor) -> JsonTensor {
    let data = match &t.data {
        TensorData::Bool(v) => serde_json::json!(v),
        TensorData::Uint8(v) => serde_json::json!(v),
        TensorData::Uint16(v) => serde_json::json!(v),
        TensorData::Uint32(v) => serde_json::json!(v),
        TensorData::Uint64(v) => serde_json::json!(v),
        TensorData::Int8(v) => serde_json::json!(v),
        TensorData::Int16(v) => serde_json::json!(v),
        TensorData::Int32(v) => serde_json::json!(v),
        TensorData::Int64(v) => serde_json::json!(v),
        TensorData::Fp32(v) => serde_json::json!(v),
        TensorData::Fp64(v) => serde_json::json!(v),
        TensorData::Bytes(v) => Value::Array(
            v.iter()
                .map(|b| Value::String(String::from_utf8_lossy(b).into_owned()))
                .collect(),
        ),
    };
    JsonTensor {
        name: t.name.clone(),
        datatype: datatype_name(datatype_of(&t.data)).to_owned(),
        shape: t.shape.iter().map(|d| *d as i64).collect(),
        data,
        parameters: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Tensor, String> {
        tensor_from_json(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn nested_and_flat_data_give_the_same_tensor() {
        let flat = parse(
            json!({"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4.5]}),
        )
        .unwrap();
        let nested = parse(
            json!({"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4.5]]}),
        )
        .unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat.data, TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.5]));
    }

    #[test]
    fn every_datatype_round_trips() {
        for (dt, name) in DATATYPES {
            let data = match dt {
                Datatype::Bool => json!([true, false]),
                Datatype::Bytes => json!(["ab", "ç"]),
                Datatype::Int8 | Datatype::Int16 | Datatype::Int32 | Datatype::Int64 => {
                    json!([-3, 7])
                }
                Datatype::Fp32 | Datatype::Fp64 => json!([0.5, -2.25]),
                _ => json!([3, 7]),
            };
            let t =
                parse(json!({"name": "t", "datatype": name, "shape": [2], "data": data})).unwrap();
            assert_eq!(datatype_of(&t.data), dt);
            let back = tensor_to_json(&t);
            assert_eq!(back.datatype, name);
            assert_eq!(back.data, data, "{name}");
        }
    }

    #[test]
    fn data_of_the_wrong_kind_is_named_as_such() {
        let e = parse(json!({"name": "x", "datatype": "FP32", "shape": [1, 4], "data": "x"}))
            .unwrap_err();
        assert!(
            e.contains("must be an array of FP32") && e.contains("not a string"),
            "{e}"
        );
        let e = parse(json!({"name": "x", "datatype": "FP32", "shape": [1, 2], "data": ["a"]}))
            .unwrap_err();
        assert!(e.contains("is not a number"), "{e}");
        let e = parse(json!({"name": "x", "datatype": "FP32", "shape": [4294967296u64, 4294967296u64], "data": [1.0]}))
            .unwrap_err();
        assert!(e.contains("at least 2^64"), "{e}");
    }

    #[test]
    fn element_counts_do_not_wrap_whatever_the_order() {
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[0, 3]), Some(0));
        assert_eq!(element_count(&[2, 3]), Some(6));
        assert_eq!(element_count(&[1 << 32, 1 << 32]), None);
        assert_eq!(element_count(&[0, 1 << 32, 1 << 32]), None);
        assert_eq!(element_count(&[1 << 32, 1 << 32, 0]), None);
    }

    #[test]
    fn an_fp32_element_past_its_range_is_refused() {
        let e = parse(json!({"name": "x", "datatype": "FP32", "shape": [1], "data": [1e39]}))
            .unwrap_err();
        assert!(e.contains("out of the range of FP32"), "{e}");
        let t = parse(json!({"name": "x", "datatype": "FP32", "shape": [2], "data": [3.4028234663852886e38, 1e-50]}))
            .unwrap();
        assert_eq!(t.data, TensorData::Fp32(vec![f32::MAX, 0.0]));
    }

    #[test]
    fn bad_tensors_name_the_input_and_the_problem() {
        let e = parse(json!({"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [1, 2]}))
            .unwrap_err();
        assert!(
            e.contains("input `x`") && e.contains("needs 6 elements, data has 2"),
            "{e}"
        );
        let e = parse(json!({"name": "x", "datatype": "INT8", "shape": [1], "data": [300]}))
            .unwrap_err();
        assert!(e.contains("not a INT8 integer"), "{e}");
        let e =
            parse(json!({"name": "x", "datatype": "FP16", "shape": [1], "data": [1]})).unwrap_err();
        assert!(e.contains("FP16 is not supported"), "{e}");
        let e =
            parse(json!({"name": "x", "datatype": "BOOL", "shape": [1], "data": [1]})).unwrap_err();
        assert!(e.contains("not a boolean"), "{e}");
    }
}
