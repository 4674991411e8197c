//! Tensor requests merged along their leading dimension into one, and the answer split back by rows.
//! Only requests that agree on everything but their rows are merged: the same inputs with the same
//! datatypes and trailing dimensions, the same parameters, the same outputs asked for ([`Shape`]).

use crate::runtime::{elements, CallError, Tensor, TensorData, TensorRequest};

/// Longest parameters (JSON text) of a request that is batched.
const MAX_PARAMETERS: usize = 4096;

/// What a request must share with the others of a batch: every input's name, datatype and
/// trailing dimensions (in name order), its parameters and the outputs it asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Shape {
    inputs: Vec<(String, std::mem::Discriminant<TensorData>, Vec<u64>)>,
    parameters: String,
    outputs: Vec<String>,
}

impl Shape {
    /// The shape of `request` and its rows, when it can join a batch: it has inputs with distinct
    /// names, each with a leading dimension, all the same, of 1 to `max_rows`, and parameters of
    /// at most [`MAX_PARAMETERS`] bytes (the shape is a key compared under a lock).
    pub(super) fn of(request: &TensorRequest, max_rows: usize) -> Option<(Shape, usize)> {
        let rows = *request.inputs.first()?.shape.first()?;
        if rows == 0 || rows > max_rows as u64 || request.parameters.len() > MAX_PARAMETERS {
            return None;
        }
        let mut inputs = Vec::with_capacity(request.inputs.len());
        for t in &request.inputs {
            let (&leading, trailing) = t.shape.split_first()?;
            if leading != rows {
                return None;
            }
            inputs.push((
                t.name.clone(),
                std::mem::discriminant(&t.data),
                trailing.to_vec(),
            ));
        }
        inputs.sort_by(|a, b| a.0.cmp(&b.0));
        if inputs.windows(2).any(|w| w[0].0 == w[1].0) {
            // Two inputs of one name: which one a merge takes would be a guess.
            return None;
        }
        let mut outputs = request.outputs.clone();
        outputs.sort();
        Some((
            Shape {
                inputs,
                parameters: request.parameters.clone(),
                outputs,
            },
            rows as usize,
        ))
    }
}

/// `requests` (all of one [`Shape`]) as one request, their rows one after another in order.
pub(super) fn merge(requests: &[&TensorRequest]) -> TensorRequest {
    let first = requests[0];
    let inputs = first
        .inputs
        .iter()
        .map(|template| {
            let parts: Vec<&Tensor> = requests
                .iter()
                .map(|r| {
                    r.inputs
                        .iter()
                        .find(|t| t.name == template.name)
                        .expect("requests of one shape have the same inputs")
                })
                .collect();
            let mut shape = template.shape.clone();
            shape[0] = parts.iter().map(|t| t.shape[0]).sum();
            Tensor {
                name: template.name.clone(),
                shape,
                data: concat(parts.iter().map(|t| &t.data)),
            }
        })
        .collect();
    TensorRequest {
        inputs,
        parameters: first.parameters.clone(),
        outputs: first.outputs.clone(),
    }
}

fn concat<'a>(mut parts: impl Iterator<Item = &'a TensorData>) -> TensorData {
    let mut whole = parts.next().expect("a batch has requests").clone();
    for part in parts {
        match (&mut whole, part) {
            (TensorData::Bool(a), TensorData::Bool(b)) => a.extend_from_slice(b),
            (TensorData::Uint8(a), TensorData::Uint8(b)) => a.extend_from_slice(b),
            (TensorData::Uint16(a), TensorData::Uint16(b)) => a.extend_from_slice(b),
            (TensorData::Uint32(a), TensorData::Uint32(b)) => a.extend_from_slice(b),
            (TensorData::Uint64(a), TensorData::Uint64(b)) => a.extend_from_slice(b),
            (TensorData::Int8(a), TensorData::Int8(b)) => a.extend_from_slice(b),
            (TensorData::Int16(a), TensorData::Int16(b)) => a.extend_from_slice(b),
            (TensorData::Int32(a), TensorData::Int32(b)) => a.extend_from_slice(b),
            (TensorData::Int64(a), TensorData::Int64(b)) => a.extend_from_slice(b),
            (TensorData::Fp32(a), TensorData::Fp32(b)) => a.extend_from_slice(b),
            (TensorData::Fp64(a), TensorData::Fp64(b)) => a.extend_from_slice(b),
            (TensorData::Bytes(a), TensorData::Bytes(b)) => a.extend_from_slice(b),
            _ => unreachable!("requests of one shape have the same datatypes"),
        }
    }
    whole
}

/// Elements `[from, to)` of `data`.
fn slice(data: &TensorData, from: usize, to: usize) -> TensorData {
    match data {
        TensorData::Bool(v) => TensorData::Bool(v[from..to].to_vec()),
        TensorData::Uint8(v) => TensorData::Uint8(v[from..to].to_vec()),
        TensorData::Uint16(v) => TensorData::Uint16(v[from..to].to_vec()),
        TensorData::Uint32(v) => TensorData::Uint32(v[from..to].to_vec()),
        TensorData::Uint64(v) => TensorData::Uint64(v[from..to].to_vec()),
        TensorData::Int8(v) => TensorData::Int8(v[from..to].to_vec()),
        TensorData::Int16(v) => TensorData::Int16(v[from..to].to_vec()),
        TensorData::Int32(v) => TensorData::Int32(v[from..to].to_vec()),
        TensorData::Int64(v) => TensorData::Int64(v[from..to].to_vec()),
        TensorData::Fp32(v) => TensorData::Fp32(v[from..to].to_vec()),
        TensorData::Fp64(v) => TensorData::Fp64(v[from..to].to_vec()),
        TensorData::Bytes(v) => TensorData::Bytes(v[from..to].to_vec()),
    }
}

/// The answer to a merged request split back into one answer per request of `rows` rows each:
/// every output must have one row per input row.
pub(super) fn split(outputs: &[Tensor], rows: &[usize]) -> Result<Vec<Vec<Tensor>>, CallError> {
    let total: usize = rows.iter().sum();
    let mut answers: Vec<Vec<Tensor>> = rows
        .iter()
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    for t in outputs {
        let leading = t.shape.first().copied().unwrap_or(0);
        let count = elements(&t.data);
        if leading != total as u64 || count % total.max(1) != 0 {
            return Err(CallError::ModelFailed(format!(
                "output `{}` of shape {:?} has no row for each of the batch's {total} rows \
                 (a model batched by the host answers one row per input row)",
                t.name, t.shape
            )));
        }
        let per_row = count / total;
        let mut from = 0;
        for (answer, &n) in answers.iter_mut().zip(rows) {
            let mut shape = t.shape.clone();
            shape[0] = n as u64;
            answer.push(Tensor {
                name: t.name.clone(),
                shape,
                data: slice(&t.data, from * per_row, (from + n) * per_row),
            });
            from += n;
        }
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(x: Vec<f32>, rows: u64, ids: Vec<i64>) -> TensorRequest {
        TensorRequest {
            inputs: vec![
                Tensor {
                    name: "x".into(),
                    shape: vec![rows, 2],
                    data: TensorData::Fp32(x),
                },
                Tensor {
                    name: "id".into(),
                    shape: vec![rows],
                    data: TensorData::Int64(ids),
                },
            ],
            parameters: "{}".into(),
            outputs: vec![],
        }
    }

    #[test]
    fn requests_merge_along_their_rows_and_answers_split_back() {
        let a = request(vec![1.0, 2.0], 1, vec![7]);
        let b = request(vec![3.0, 4.0, 5.0, 6.0], 2, vec![8, 9]);
        let (shape_a, rows_a) = Shape::of(&a, 8).unwrap();
        let (shape_b, rows_b) = Shape::of(&b, 8).unwrap();
        assert_eq!((shape_a == shape_b, rows_a, rows_b), (true, 1, 2));
        let merged = merge(&[&a, &b]);
        assert_eq!(merged.inputs[0].shape, vec![3, 2]);
        assert_eq!(
            merged.inputs[0].data,
            TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        );
        assert_eq!(merged.inputs[1].data, TensorData::Int64(vec![7, 8, 9]));
        // An echo of the merged request splits back into each request's own inputs.
        let answers = split(&merged.inputs, &[1, 2]).unwrap();
        assert_eq!(answers[0], a.inputs);
        assert_eq!(answers[1], b.inputs);
    }

    #[test]
    fn requests_that_differ_beyond_their_rows_are_not_merged() {
        let a = request(vec![1.0, 2.0], 1, vec![7]);
        let mut wider = a.clone();
        wider.inputs[0].shape = vec![1, 1];
        wider.inputs[0].data = TensorData::Fp32(vec![1.0]);
        let mut other_type = a.clone();
        other_type.inputs[1].data = TensorData::Int32(vec![7]);
        let mut parameters = a.clone();
        parameters.parameters = r#"{"t":1}"#.into();
        let mut outputs = a.clone();
        outputs.outputs = vec!["y".into()];
        let base = Shape::of(&a, 8).unwrap().0;
        for r in [wider, other_type, parameters, outputs] {
            assert_ne!(Shape::of(&r, 8).unwrap().0, base, "{r:?}");
        }
        // Ragged leading dimensions, no rows, too many rows, a scalar, an input named twice, long
        // parameters: not batched at all.
        let mut twice = a.clone();
        twice.inputs[1].name = "x".into();
        assert!(Shape::of(&twice, 8).is_none());
        let mut long = a.clone();
        long.parameters = format!(r#"{{"p":"{}"}}"#, "x".repeat(MAX_PARAMETERS));
        assert!(Shape::of(&long, 8).is_none());
        let mut ragged = a.clone();
        ragged.inputs[1].shape = vec![2];
        assert!(Shape::of(&ragged, 8).is_none());
        assert!(Shape::of(&request(vec![], 0, vec![]), 8).is_none());
        assert!(Shape::of(&request(vec![0.0; 18], 9, vec![0; 9]), 8).is_none());
        let mut scalar = a.clone();
        scalar.inputs[0].shape = vec![];
        assert!(Shape::of(&scalar, 8).is_none());
    }

    #[test]
    fn an_answer_without_a_row_per_input_row_fails_the_batch() {
        let summary = Tensor {
            name: "total".into(),
            shape: vec![1],
            data: TensorData::Fp64(vec![1.0]),
        };
        let e = split(&[summary], &[1, 2]).unwrap_err();
        assert!(e.to_string().contains("`total`"), "{e}");
    }
}
