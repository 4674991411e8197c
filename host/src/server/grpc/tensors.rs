//! A gRPC inference request's tensors to the contract's, and the answer's back: typed `contents`
//! (one repeated field per datatype) or `raw_input_contents` (little-endian bytes, as the binary
//! tensor extension of REST lays them out). An answer comes back the way its request came: raw
//! for raw (what Triton's clients read), typed for typed.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::pb::infer_parameter::ParameterChoice;
use super::pb::model_infer_response::InferOutputTensor;
use super::pb::{InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse};
use crate::runtime::{elements, tensor_bytes, CallError, Datatype, Tensor, TensorData};
use crate::server::error::ApiError;
use crate::serving::TensorRequest;
use crate::tensor::{binary, datatype_name, datatype_of, element_count, parse_datatype};

/// How a request carried its tensors, and so how its answer carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Contents {
    Raw,
    Typed,
}

/// The tensors of `request` (taken out of it), holding at most `max_bytes` of input. Checked here:
/// datatypes, shapes against element counts, integer ranges; what the model declares is checked
/// by the serving path as for every front end.
pub(super) fn request(
    request: &mut ModelInferRequest,
    max_bytes: u64,
) -> Result<(TensorRequest, Contents), ApiError> {
    let raw = std::mem::take(&mut request.raw_input_contents);
    let contents = if raw.is_empty() {
        Contents::Typed
    } else {
        if request.inputs.iter().any(|i| i.contents.is_some()) {
            return Err(ApiError::bad_request(
                "an input has `contents` although the request has `raw_input_contents`: use one or the other",
            ));
        }
        if raw.len() != request.inputs.len() {
            return Err(ApiError::bad_request(format!(
                "{} inputs but {} `raw_input_contents`: one each, in the inputs' order",
                request.inputs.len(),
                raw.len()
            )));
        }
        Contents::Raw
    };
    let mut left = max_bytes;
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for (i, input) in request.inputs.iter_mut().enumerate() {
        let bad = |m: String| ApiError::bad_request(format!("input `{}`: {m}", input.name));
        let datatype = parse_datatype(&input.datatype).map_err(bad)?;
        let tensor = match contents {
            Contents::Raw => {
                let bytes = &raw[i];
                if bytes.len() as u64 > left {
                    return Err(too_large(bytes.len() as u64, max_bytes));
                }
                binary::decode_tensor(&input.name, datatype, &input.shape, bytes).map_err(bad)?
            }
            Contents::Typed => {
                if input.shape.iter().any(|d| *d < 0) {
                    return Err(bad(format!(
                        "shape {:?} has a negative dimension",
                        input.shape
                    )));
                }
                let shape: Vec<u64> = input.shape.iter().map(|d| *d as u64).collect();
                let count = element_count(&shape)
                    .ok_or_else(|| bad(format!("shape {:?} has too many elements", input.shape)))?;
                let typed = input.contents.take().unwrap_or_default();
                let data = typed_data(datatype, typed).map_err(bad)?;
                let held = elements(&data) as u64;
                if held != count {
                    return Err(bad(format!(
                        "shape {:?} holds {count} elements but `contents` hold {held}",
                        input.shape
                    )));
                }
                Tensor {
                    name: std::mem::take(&mut input.name),
                    shape,
                    data,
                }
            }
        };
        let size = tensor_bytes(&tensor) as u64;
        if size > left {
            return Err(too_large(max_bytes - left + size, max_bytes));
        }
        left -= size;
        inputs.push(tensor);
    }
    Ok((
        TensorRequest {
            inputs,
            parameters: parameters_json(&request.parameters),
            outputs: request.outputs.iter().map(|o| o.name.clone()).collect(),
        },
        contents,
    ))
}

fn too_large(size: u64, limit: u64) -> ApiError {
    CallError::InputTooLarge {
        size: size as usize,
        limit: limit as usize,
    }
    .into()
}

/// The request's parameters as the JSON object text the contract passes to `infer`.
fn parameters_json(parameters: &HashMap<String, InferParameter>) -> String {
    let object: Map<String, Value> = parameters
        .iter()
        .filter_map(|(name, p)| {
            let value = match p.parameter_choice.as_ref()? {
                ParameterChoice::BoolParam(b) => Value::from(*b),
                ParameterChoice::Int64Param(i) => Value::from(*i),
                ParameterChoice::StringParam(s) => Value::from(s.as_str()),
                ParameterChoice::DoubleParam(x) => Value::from(*x),
                ParameterChoice::Uint64Param(u) => Value::from(*u),
            };
            Some((name.clone(), value))
        })
        .collect();
    Value::Object(object).to_string()
}

/// Narrows 32-bit contents to a smaller integer type, refusing what does not fit.
fn narrow<W: Copy + std::fmt::Display, T: TryFrom<W>>(
    values: Vec<W>,
    what: &str,
) -> Result<Vec<T>, String> {
    values
        .into_iter()
        .map(|v| T::try_from(v).map_err(|_| format!("element {v} is out of the range of {what}")))
        .collect()
}

/// The elements of `datatype` from its field of `contents` (moved, not copied, where the types
/// are the same).
fn typed_data(datatype: Datatype, c: InferTensorContents) -> Result<TensorData, String> {
    Ok(match datatype {
        Datatype::Bool => TensorData::Bool(c.bool_contents),
        Datatype::Int8 => TensorData::Int8(narrow(c.int_contents, "INT8")?),
        Datatype::Int16 => TensorData::Int16(narrow(c.int_contents, "INT16")?),
        Datatype::Int32 => TensorData::Int32(c.int_contents),
        Datatype::Int64 => TensorData::Int64(c.int64_contents),
        Datatype::Uint8 => TensorData::Uint8(narrow(c.uint_contents, "UINT8")?),
        Datatype::Uint16 => TensorData::Uint16(narrow(c.uint_contents, "UINT16")?),
        Datatype::Uint32 => TensorData::Uint32(c.uint_contents),
        Datatype::Uint64 => TensorData::Uint64(c.uint64_contents),
        Datatype::Fp32 => TensorData::Fp32(c.fp32_contents),
        Datatype::Fp64 => TensorData::Fp64(c.fp64_contents),
        Datatype::Bytes => TensorData::Bytes(c.bytes_contents),
    })
}

/// The answer's `contents` for `data`.
fn typed_contents(data: &TensorData) -> InferTensorContents {
    let mut c = InferTensorContents::default();
    match data {
        TensorData::Bool(v) => c.bool_contents = v.clone(),
        TensorData::Int8(v) => c.int_contents = v.iter().map(|x| i32::from(*x)).collect(),
        TensorData::Int16(v) => c.int_contents = v.iter().map(|x| i32::from(*x)).collect(),
        TensorData::Int32(v) => c.int_contents = v.clone(),
        TensorData::Int64(v) => c.int64_contents = v.clone(),
        TensorData::Uint8(v) => c.uint_contents = v.iter().map(|x| u32::from(*x)).collect(),
        TensorData::Uint16(v) => c.uint_contents = v.iter().map(|x| u32::from(*x)).collect(),
        TensorData::Uint32(v) => c.uint_contents = v.clone(),
        TensorData::Uint64(v) => c.uint64_contents = v.clone(),
        TensorData::Fp32(v) => c.fp32_contents = v.clone(),
        TensorData::Fp64(v) => c.fp64_contents = v.clone(),
        TensorData::Bytes(v) => c.bytes_contents = v.clone(),
    }
    c
}

/// The answer to a request with `id` that asked for `requested` outputs (none: all), carried as
/// its inputs were.
pub(super) fn response(
    model: &str,
    version: &str,
    id: String,
    requested: &[String],
    outputs: &[Tensor],
    contents: Contents,
) -> ModelInferResponse {
    let mut response = ModelInferResponse {
        model_name: model.to_owned(),
        model_version: version.to_owned(),
        id,
        ..Default::default()
    };
    for t in outputs {
        if !requested.is_empty() && !requested.contains(&t.name) {
            continue;
        }
        let typed = match contents {
            Contents::Typed => Some(typed_contents(&t.data)),
            Contents::Raw => {
                response.raw_output_contents.push(binary::encode(&t.data));
                None
            }
        };
        response.outputs.push(InferOutputTensor {
            name: t.name.clone(),
            datatype: datatype_name(datatype_of(&t.data)).to_owned(),
            shape: t.shape.iter().map(|d| *d as i64).collect(),
            parameters: HashMap::new(),
            contents: typed,
        });
    }
    response
}

#[cfg(test)]
mod tests {
    use super::super::pb::model_infer_request::InferInputTensor;
    use super::*;

    fn input(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn raw_and_typed_contents_decode_to_the_same_tensors_and_answer_in_kind() {
        let mut typed = ModelInferRequest {
            inputs: vec![InferInputTensor {
                contents: Some(InferTensorContents {
                    fp32_contents: vec![1.5, -2.0, 3.25, 0.0],
                    ..Default::default()
                }),
                ..input("x", "FP32", &[2, 2])
            }],
            ..Default::default()
        };
        let mut raw = ModelInferRequest {
            inputs: vec![input("x", "FP32", &[2, 2])],
            raw_input_contents: vec![[1.5f32, -2.0, 3.25, 0.0]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>()
                .into()],
            ..Default::default()
        };
        let (a, kind_a) = request(&mut typed, 1 << 20).unwrap();
        let (b, kind_b) = request(&mut raw, 1 << 20).unwrap();
        assert_eq!(a.inputs, b.inputs);
        assert_eq!((kind_a, kind_b), (Contents::Typed, Contents::Raw));
        assert_eq!(a.parameters, "{}");

        let out = response("m", "1", "r".into(), &[], &a.inputs, Contents::Typed);
        assert!(out.raw_output_contents.is_empty());
        assert_eq!(
            out.outputs[0].contents.as_ref().unwrap().fp32_contents,
            vec![1.5, -2.0, 3.25, 0.0]
        );
        let out = response(
            "m",
            "1",
            "r".into(),
            &["y".into()],
            &a.inputs,
            Contents::Raw,
        );
        assert!(out.outputs.is_empty(), "only the outputs asked for");
        let out = response("m", "1", String::new(), &[], &a.inputs, Contents::Raw);
        assert_eq!(out.raw_output_contents[0].len(), 16);
        assert_eq!(out.outputs[0].shape, vec![2, 2]);
        assert!(out.outputs[0].contents.is_none());
    }

    #[test]
    fn bad_tensors_are_refused_with_the_input_named() {
        let refuse = |mut r: ModelInferRequest, max: u64| request(&mut r, max).unwrap_err();
        let typed = |shape: &[i64], values: Vec<i32>, datatype: &str| ModelInferRequest {
            inputs: vec![InferInputTensor {
                contents: Some(InferTensorContents {
                    int_contents: values,
                    ..Default::default()
                }),
                ..input("x", datatype, shape)
            }],
            ..Default::default()
        };
        let e = refuse(typed(&[3], vec![1, 2], "INT32"), 1 << 20);
        assert_eq!(e.status, 400);
        assert!(
            e.message.contains("input `x`") && e.message.contains("holds 3"),
            "{}",
            e.message
        );
        let e = refuse(typed(&[1], vec![300], "INT8"), 1 << 20);
        assert!(
            e.message.contains("out of the range of INT8"),
            "{}",
            e.message
        );
        let e = refuse(typed(&[-1], vec![], "INT32"), 1 << 20);
        assert!(e.message.contains("negative"), "{}", e.message);
        let e = refuse(typed(&[1], vec![1], "FP16"), 1 << 20);
        assert!(e.message.contains("FP16"), "{}", e.message);
        let e = refuse(typed(&[4], vec![1, 2, 3, 4], "INT32"), 8);
        assert_eq!(e.status, 413);
        // A huge shape over a few raw bytes is refused before anything is sized by it.
        let huge = ModelInferRequest {
            inputs: vec![input("x", "BYTES", &[1 << 40])],
            raw_input_contents: vec![vec![0u8; 8].into()],
            ..Default::default()
        };
        assert_eq!(refuse(huge, 1 << 20).status, 400);
        let mixed = ModelInferRequest {
            raw_input_contents: vec![vec![0u8; 4].into()],
            ..typed(&[1], vec![1], "INT32")
        };
        assert!(refuse(mixed, 1 << 20).message.contains("one or the other"));
        let missing = ModelInferRequest {
            inputs: vec![input("x", "FP32", &[1]), input("y", "FP32", &[1])],
            raw_input_contents: vec![vec![0u8; 4].into()],
            ..Default::default()
        };
        assert!(refuse(missing, 1 << 20).message.contains("2 inputs but 1"));
    }

    #[test]
    fn parameters_become_the_json_object_the_contract_passes() {
        let mut parameters = HashMap::new();
        let p = |c| InferParameter {
            parameter_choice: Some(c),
        };
        parameters.insert("a".to_owned(), p(ParameterChoice::BoolParam(true)));
        parameters.insert("b".to_owned(), p(ParameterChoice::Int64Param(-3)));
        parameters.insert("c".to_owned(), p(ParameterChoice::StringParam("s".into())));
        parameters.insert("d".to_owned(), InferParameter::default());
        assert_eq!(parameters_json(&parameters), r#"{"a":true,"b":-3,"c":"s"}"#);
    }
}
