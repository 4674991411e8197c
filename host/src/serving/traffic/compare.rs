//! How far a shadow's answer is from the primary's: numbers by their absolute difference, labels
//! (strings, booleans, BYTES elements) by whether they are equal, structure (keys, shapes, types) by
//! whether it matches — a mismatch counts as a label that disagrees.

use serde_json::Value;

use super::super::Output;
use crate::runtime::TensorData;

/// The comparison of one request's two answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Agreement {
    /// The largest |Δ| between paired numbers (`None`: no numbers were paired).
    pub max_abs_diff: Option<f64>,
    /// Labels and structure compared.
    pub labels: u64,
    /// Of those, equal.
    pub labels_agreed: u64,
}

impl Agreement {
    fn number(&mut self, a: f64, b: f64) {
        let d = if a.is_nan() && b.is_nan() {
            0.0
        } else {
            (a - b).abs()
        };
        // A NaN against a number is as far apart as numbers get.
        let d = if d.is_nan() { f64::INFINITY } else { d };
        self.max_abs_diff = Some(self.max_abs_diff.map_or(d, |m| m.max(d)));
    }

    fn label(&mut self, agreed: bool) {
        self.labels += 1;
        self.labels_agreed += agreed as u64;
    }
}

/// Compares a primary answer with a shadow's.
pub fn compare(primary: &Output, shadow: &Output) -> Agreement {
    let mut a = Agreement::default();
    match (primary, shadow) {
        (Output::Features(p), Output::Features(s)) => {
            match (
                serde_json::from_str::<Value>(p),
                serde_json::from_str::<Value>(s),
            ) {
                (Ok(p), Ok(s)) => json(&mut a, &p, &s),
                _ => a.label(p == s),
            }
        }
        (Output::Tensors(p), Output::Tensors(s)) => {
            for t in p.iter() {
                match s.iter().find(|o| o.name == t.name) {
                    Some(o) if o.shape == t.shape => tensor(&mut a, &t.data, &o.data),
                    _ => a.label(false),
                }
            }
            for o in s.iter() {
                if !p.iter().any(|t| t.name == o.name) {
                    a.label(false);
                }
            }
        }
        _ => a.label(false),
    }
    a
}

fn json(a: &mut Agreement, p: &Value, s: &Value) {
    match (p, s) {
        (Value::Number(x), Value::Number(y)) => a.number(
            x.as_f64().unwrap_or(f64::NAN),
            y.as_f64().unwrap_or(f64::NAN),
        ),
        (Value::Array(x), Value::Array(y)) => {
            for (x, y) in x.iter().zip(y) {
                json(a, x, y);
            }
            if x.len() != y.len() {
                a.label(false);
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            for (k, x) in x {
                match y.get(k) {
                    Some(y) => json(a, x, y),
                    None => a.label(false),
                }
            }
            for k in y.keys() {
                if !x.contains_key(k) {
                    a.label(false);
                }
            }
        }
        (x, y) => a.label(x == y),
    }
}

fn tensor(a: &mut Agreement, p: &TensorData, s: &TensorData) {
    fn numbers<T: Copy + Into<f64>>(a: &mut Agreement, x: &[T], y: &[T]) {
        for (x, y) in x.iter().zip(y) {
            a.number((*x).into(), (*y).into());
        }
    }
    use TensorData as D;
    match (p, s) {
        (D::Fp32(x), D::Fp32(y)) => numbers(a, x, y),
        (D::Fp64(x), D::Fp64(y)) => numbers(a, x, y),
        (D::Int8(x), D::Int8(y)) => numbers(a, x, y),
        (D::Int16(x), D::Int16(y)) => numbers(a, x, y),
        (D::Int32(x), D::Int32(y)) => numbers(a, x, y),
        (D::Uint8(x), D::Uint8(y)) => numbers(a, x, y),
        (D::Uint16(x), D::Uint16(y)) => numbers(a, x, y),
        (D::Uint32(x), D::Uint32(y)) => numbers(a, x, y),
        (D::Int64(x), D::Int64(y)) => x
            .iter()
            .zip(y)
            .for_each(|(x, y)| a.number(*x as f64, *y as f64)),
        (D::Uint64(x), D::Uint64(y)) => x
            .iter()
            .zip(y)
            .for_each(|(x, y)| a.number(*x as f64, *y as f64)),
        (D::Bool(x), D::Bool(y)) => x.iter().zip(y).for_each(|(x, y)| a.label(x == y)),
        (D::Bytes(x), D::Bytes(y)) => x.iter().zip(y).for_each(|(x, y)| a.label(x == y)),
        _ => a.label(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Tensor;
    use std::sync::Arc;

    #[test]
    fn numbers_give_their_largest_difference_and_labels_their_agreement() {
        let a = compare(
            &Output::Features(Arc::new(
                r#"{"score": 0.93, "label": "fraud", "flags": [true, 1]}"#.to_string(),
            )),
            &Output::Features(Arc::new(
                r#"{"score": 0.90, "label": "ok", "flags": [true, 3], "x": 1}"#.to_string(),
            )),
        );
        assert!((a.max_abs_diff.unwrap() - 2.0).abs() < 1e-9);
        // label, flags[0], and the extra key `x`.
        assert_eq!((a.labels, a.labels_agreed), (3, 1));
    }

    #[test]
    fn tensors_pair_by_name_and_shape() {
        let t = |name: &str, v: Vec<f32>| Tensor {
            name: name.into(),
            shape: vec![v.len() as u64],
            data: TensorData::Fp32(v),
        };
        let a = compare(
            &Output::Tensors(Arc::new(vec![
                t("p", vec![0.5, f32::NAN]),
                t("q", vec![1.0]),
            ])),
            &Output::Tensors(Arc::new(vec![
                t("p", vec![0.25, f32::NAN]),
                t("q", vec![1.0, 2.0]),
            ])),
        );
        assert_eq!(a.max_abs_diff, Some(0.25));
        assert_eq!((a.labels, a.labels_agreed), (1, 0), "q's shape differs");
        let same = compare(
            &Output::Tensors(Arc::new(vec![t("p", vec![1.0])])),
            &Output::Tensors(Arc::new(vec![t("p", vec![1.0])])),
        );
        assert_eq!(same.max_abs_diff, Some(0.0));
    }
}
