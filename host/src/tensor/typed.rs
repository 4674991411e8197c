//! OIP JSON `data` decoded straight into a tensor's typed buffer, without a `serde_json::Value` tree
//! (which costs ~32 bytes and often an allocation per element: a 32 MB body became ~200 MB of heap).
//! The elements a shape declares are the most that are kept, and a request whose shape needs more
//! bytes than the model takes is refused before its data is read. Results and messages are those of
//! [`super::tensor_from_json`], which self-tests still use.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{element_count, parse_datatype};
use crate::runtime::{Datatype, Tensor, TensorData};

/// Why a tensor could not be decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    /// The tensor is malformed (400).
    Invalid(String),
    /// Its shape needs more bytes than the model takes (413).
    TooLarge { size: u64, limit: u64 },
}

/// Decodes the tensor `name` of `datatype` and `shape` whose `data` is the JSON text `raw`; its
/// elements may take at most `max_bytes` (BYTES: lengths plus 4 per element, as the host counts).
pub fn tensor_from_raw_json(
    name: &str,
    datatype: &str,
    shape: &[i64],
    raw: &str,
    max_bytes: u64,
) -> Result<Tensor, DecodeError> {
    let fail = |m: String| DecodeError::Invalid(format!("input `{name}`: {m}"));
    let datatype_value = parse_datatype(datatype).map_err(fail)?;
    if let Some(d) = shape.iter().find(|d| **d < 0) {
        return Err(fail(format!(
            "shape {shape:?} has a negative dimension {d}"
        )));
    }
    let dims: Vec<u64> = shape.iter().map(|d| *d as u64).collect();
    let count = element_count(&dims);
    if let (Some(n), Some(size)) = (count, element_size(datatype_value)) {
        let bytes = n.saturating_mul(size);
        if bytes > max_bytes {
            return Err(DecodeError::TooLarge {
                size: bytes,
                limit: max_bytes,
            });
        }
    }
    // Kept: at most the declared count; room reserved: no more than the text can hold.
    let keep = count.unwrap_or(u64::MAX);
    let reserve = keep.min(raw.len() as u64 / 2 + 1) as usize;
    let mut sink = Sink::new(datatype_value, reserve);
    let mut walk = Walk {
        sink: &mut sink,
        datatype,
        seen: 0,
        keep,
        bytes: 0,
        max_bytes,
        depth: 0,
    };
    let mut de = serde_json::Deserializer::from_str(raw);
    let outcome = (&mut walk).deserialize(&mut de).and_then(|()| de.end());
    let seen = walk.seen;
    let bytes = walk.bytes;
    if let Err(e) = outcome {
        // The walk's own messages travel as custom errors; anything else is the JSON itself.
        let text = e.to_string();
        if let Some(limit) = text.strip_prefix(TOO_LARGE) {
            return Err(DecodeError::TooLarge {
                size: bytes,
                limit: limit.parse().unwrap_or(max_bytes),
            });
        }
        let text = text.split(" at line ").next().unwrap_or(&text).to_owned();
        return Err(fail(text));
    }
    if count != Some(seen) {
        return Err(fail(format!(
            "shape {shape:?} needs {} elements, data has {seen}",
            count.map_or("at least 2^64".to_owned(), |c| c.to_string()),
        )));
    }
    Ok(Tensor {
        name: name.to_owned(),
        shape: dims,
        data: sink.into_data(),
    })
}

/// Bytes one element takes (BYTES: not fixed).
fn element_size(d: Datatype) -> Option<u64> {
    Some(match d {
        Datatype::Bool | Datatype::Uint8 | Datatype::Int8 => 1,
        Datatype::Uint16 | Datatype::Int16 => 2,
        Datatype::Uint32 | Datatype::Int32 | Datatype::Fp32 => 4,
        Datatype::Uint64 | Datatype::Int64 | Datatype::Fp64 => 8,
        Datatype::Bytes => return None,
    })
}

const TOO_LARGE: &str = "ferry:too-large:";

/// The typed buffer being filled.
enum Sink {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

impl Sink {
    fn new(d: Datatype, n: usize) -> Sink {
        match d {
            Datatype::Bool => Sink::Bool(Vec::with_capacity(n)),
            Datatype::Uint8 => Sink::Uint8(Vec::with_capacity(n)),
            Datatype::Uint16 => Sink::Uint16(Vec::with_capacity(n)),
            Datatype::Uint32 => Sink::Uint32(Vec::with_capacity(n)),
            Datatype::Uint64 => Sink::Uint64(Vec::with_capacity(n)),
            Datatype::Int8 => Sink::Int8(Vec::with_capacity(n)),
            Datatype::Int16 => Sink::Int16(Vec::with_capacity(n)),
            Datatype::Int32 => Sink::Int32(Vec::with_capacity(n)),
            Datatype::Int64 => Sink::Int64(Vec::with_capacity(n)),
            Datatype::Fp32 => Sink::Fp32(Vec::with_capacity(n)),
            Datatype::Fp64 => Sink::Fp64(Vec::with_capacity(n)),
            // Elements' lengths vary: grown as they come.
            Datatype::Bytes => Sink::Bytes(Vec::new()),
        }
    }

    fn into_data(self) -> TensorData {
        match self {
            Sink::Bool(v) => TensorData::Bool(v),
            Sink::Uint8(v) => TensorData::Uint8(v),
            Sink::Uint16(v) => TensorData::Uint16(v),
            Sink::Uint32(v) => TensorData::Uint32(v),
            Sink::Uint64(v) => TensorData::Uint64(v),
            Sink::Int8(v) => TensorData::Int8(v),
            Sink::Int16(v) => TensorData::Int16(v),
            Sink::Int32(v) => TensorData::Int32(v),
            Sink::Int64(v) => TensorData::Int64(v),
            Sink::Fp32(v) => TensorData::Fp32(v),
            Sink::Fp64(v) => TensorData::Fp64(v),
            Sink::Bytes(v) => TensorData::Bytes(v),
        }
    }

    /// Converts one element (checked whether or not it is kept) and keeps it when `keep`.
    fn take(&mut self, element: &Value, keep: bool) -> Result<u64, String> {
        fn int<T: TryFrom<i64> + TryFrom<u64>>(v: &Value, what: &str) -> Result<T, String> {
            let converted = match (v.as_i64(), v.as_u64()) {
                (_, Some(u)) => T::try_from(u).ok(),
                (Some(i), None) => T::try_from(i).ok(),
                _ => None,
            };
            converted.ok_or_else(|| format!("element {v} is not a {what} integer"))
        }
        fn push<T>(out: &mut Vec<T>, x: T, keep: bool) {
            if keep {
                out.push(x);
            }
        }
        let number = |v: &Value| {
            v.as_f64()
                .ok_or_else(|| format!("element {v} is not a number"))
        };
        match self {
            Sink::Bool(out) => push(
                out,
                element
                    .as_bool()
                    .ok_or_else(|| format!("element {element} is not a boolean"))?,
                keep,
            ),
            Sink::Uint8(out) => push(out, int(element, "UINT8")?, keep),
            Sink::Uint16(out) => push(out, int(element, "UINT16")?, keep),
            Sink::Uint32(out) => push(out, int(element, "UINT32")?, keep),
            Sink::Uint64(out) => push(out, int(element, "UINT64")?, keep),
            Sink::Int8(out) => push(out, int(element, "INT8")?, keep),
            Sink::Int16(out) => push(out, int(element, "INT16")?, keep),
            Sink::Int32(out) => push(out, int(element, "INT32")?, keep),
            Sink::Int64(out) => push(out, int(element, "INT64")?, keep),
            Sink::Fp32(out) => {
                let x = number(element)?;
                let narrow = x as f32;
                if narrow.is_infinite() && x.is_finite() {
                    return Err(format!("element {element} is out of the range of FP32"));
                }
                push(out, narrow, keep)
            }
            Sink::Fp64(out) => push(out, number(element)?, keep),
            Sink::Bytes(out) => {
                let s = element
                    .as_str()
                    .ok_or_else(|| format!("element {element} is not a string"))?;
                let size = s.len() as u64 + 4;
                if keep {
                    out.push(s.as_bytes().to_vec());
                }
                return Ok(size);
            }
        }
        Ok(0)
    }
}

/// Walks `data`: nested arrays down to their elements, each converted into the sink.
struct Walk<'s> {
    sink: &'s mut Sink,
    datatype: &'s str,
    /// Elements seen so far (kept or not).
    seen: u64,
    /// Elements kept at most (the shape's count).
    keep: u64,
    /// BYTES: bytes kept so far, against `max_bytes`.
    bytes: u64,
    max_bytes: u64,
    depth: usize,
}

impl Walk<'_> {
    fn element<E: serde::de::Error>(&mut self, v: Value) -> Result<(), E> {
        if self.depth == 0 {
            return Err(E::custom(format!(
                "`data` must be an array of {} elements (flat or nested), not {}",
                self.datatype,
                super::json_kind(&v)
            )));
        }
        let keep = self.seen < self.keep;
        self.seen += 1;
        let size = self.sink.take(&v, keep).map_err(E::custom)?;
        if keep {
            self.bytes += size;
            if self.bytes > self.max_bytes {
                return Err(E::custom(format!("{TOO_LARGE}{}", self.max_bytes)));
            }
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for &mut Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &mut Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an array of {} elements", self.datatype)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Depth is bounded by serde_json's recursion limit (128), as for the request around it.
        self.depth += 1;
        while seq.next_element_seed(&mut *self)?.is_some() {}
        self.depth -= 1;
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.element(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.element(Value::from(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.element(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.element(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.element(Value::String(v.to_owned()))
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<(), E> {
        self.visit_str(v)
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<(), E> {
        self.element(Value::String(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.element(Value::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        // Only to name it in the error: the body it came from is already bounded.
        let v: Value =
            serde::Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        self.element(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{tensor_from_json, JsonTensor};
    use serde_json::json;

    fn both(
        datatype: &str,
        shape: Value,
        data: Value,
    ) -> (Result<Tensor, String>, Result<Tensor, String>) {
        let tree = tensor_from_json(&JsonTensor {
            name: "x".into(),
            datatype: datatype.into(),
            shape: serde_json::from_value(shape.clone()).unwrap(),
            data: data.clone(),
            parameters: None,
        });
        let shape: Vec<i64> = serde_json::from_value(shape).unwrap();
        let typed = tensor_from_raw_json("x", datatype, &shape, &data.to_string(), u64::MAX)
            .map_err(|e| match e {
                DecodeError::Invalid(m) => m,
                DecodeError::TooLarge { .. } => "too large".into(),
            });
        (tree, typed)
    }

    #[test]
    fn typed_decoding_agrees_with_the_tree_on_answers_and_messages() {
        let cases = [
            ("FP32", json!([2, 2]), json!([[1, 2], [3, 4.5]])),
            ("FP32", json!([4]), json!([1, 2, 3, 4.5])),
            ("FP32", json!([1, 4]), json!("x")),
            ("FP32", json!([1, 2]), json!(["a"])),
            ("FP32", json!([1]), json!([1e39])),
            ("FP32", json!([2, 3]), json!([1, 2])),
            ("FP32", json!([1]), json!([1, 2, 3])),
            ("FP32", json!([4294967296u64, 4294967296u64]), json!([1.0])),
            ("INT8", json!([1]), json!([300])),
            ("INT64", json!([2]), json!([-3, 9007199254740993i64])),
            ("UINT64", json!([1]), json!([18446744073709551615u64])),
            ("FP16", json!([1]), json!([1])),
            ("BOOL", json!([1]), json!([1])),
            ("BOOL", json!([2]), json!([true, false])),
            ("BYTES", json!([2]), json!(["ab", "ç"])),
            ("BYTES", json!([1]), json!([{"a": 1}])),
            ("FP64", json!([1]), json!([null])),
            ("FP64", json!([-1]), json!([1])),
            ("FP64", json!([0]), json!([])),
            ("FP64", json!([1]), json!({"a": 1})),
        ];
        for (datatype, shape, data) in cases {
            let (tree, typed) = both(datatype, shape.clone(), data.clone());
            assert_eq!(tree, typed, "{datatype} {shape} {data}");
        }
    }

    #[test]
    fn a_shape_past_the_models_input_limit_is_refused_before_its_data_is_read() {
        let e = tensor_from_raw_json("x", "FP32", &[1000, 1000], "[not even json", 1 << 20)
            .unwrap_err();
        assert_eq!(
            e,
            DecodeError::TooLarge {
                size: 4_000_000,
                limit: 1 << 20
            }
        );
        let e = tensor_from_raw_json("x", "BYTES", &[2], r#"["aaaa", "bbbb"]"#, 10).unwrap_err();
        assert!(
            matches!(e, DecodeError::TooLarge { limit: 10, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn data_longer_than_its_shape_keeps_only_what_the_shape_declares() {
        let long = format!("[{}]", vec!["1.5"; 100_000].join(","));
        let e = tensor_from_raw_json("x", "FP32", &[2], &long, u64::MAX).unwrap_err();
        assert_eq!(
            e,
            DecodeError::Invalid("input `x`: shape [2] needs 2 elements, data has 100000".into())
        );
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let e = tensor_from_raw_json("x", "FP32", &[1], &deep, u64::MAX).unwrap_err();
        assert!(matches!(e, DecodeError::Invalid(m) if m.contains("recursion limit")));
    }
}
