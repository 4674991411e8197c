//! The training profile, for training code written in Rust: what the training data looked like, so
//! the host can tell when live traffic no longer does (drift). One call writes it beside
//! `tests.json` (the same format as the Python SDK's `ferry_sdk.profile.write_profile`):
//!
//! ```no_run
//! use ferry_sdk::profile::{write_profile, Column};
//! let amounts = vec![12.5, 80.0, 17.25];
//! let currencies = vec!["USD".to_string(), "EUR".into(), "USD".into()];
//! let probabilities = vec![0.02, 0.71, 0.05];
//! write_profile(
//!     "profile.json",
//!     &[("amount", Column::Numbers(amounts)), ("currency", Column::Categories(currencies))],
//!     &[("fraud_probability", Column::Numbers(probabilities))],
//! )
//! .unwrap();
//! ```
//!
//! Numbers are binned at the training data's quantiles (10 bins, fewer where values repeat);
//! categories are counted (at most 256). Names follow the request: a field of a feature-style
//! request's `features` object (or the answer's top level, for outputs), a 1-D tensor by name, or a
//! column of a 2-D tensor as `name[column]`. Push it with `ferry push --profile profile.json`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// Bins a numeric column is cut into at most.
pub const BINS: usize = 10;
/// Categories a categorical column may have.
pub const MAX_CATEGORIES: usize = 256;

/// One column of training values, a value per row.
#[derive(Debug, Clone)]
pub enum Column {
    /// Numbers (NaN and ±inf are left out).
    Numbers(Vec<f64>),
    /// Categories (strings; a boolean as `"true"`/`"false"`).
    Categories(Vec<String>),
}

/// The profile document for these training columns.
pub fn profile(features: &[(&str, Column)], outputs: &[(&str, Column)]) -> Result<Value, String> {
    if features.is_empty() && outputs.is_empty() {
        return Err("a profile needs at least one feature or output".into());
    }
    let rows = features
        .iter()
        .chain(outputs)
        .map(|(_, c)| match c {
            Column::Numbers(v) => v.len(),
            Column::Categories(v) => v.len(),
        })
        .max()
        .unwrap_or(0);
    let side = |columns: &[(&str, Column)]| -> Result<Vec<Value>, String> {
        columns
            .iter()
            .map(|(name, values)| column(name, values))
            .collect()
    };
    Ok(json!({
        "ferry_profile": 1,
        "rows": rows,
        "features": side(features)?,
        "outputs": side(outputs)?,
    }))
}

/// Writes the profile to `path` (JSON).
pub fn write_profile(
    path: impl AsRef<std::path::Path>,
    features: &[(&str, Column)],
    outputs: &[(&str, Column)],
) -> Result<(), String> {
    let doc = profile(features, outputs)?;
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())? + "\n";
    std::fs::write(path.as_ref(), text)
        .map_err(|e| format!("writing {}: {e}", path.as_ref().display()))
}

fn column(name: &str, values: &Column) -> Result<Value, String> {
    match values {
        Column::Numbers(values) => {
            // NaN and ±inf are no value (the host counts them as missing, never binned).
            let mut numbers: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
            if numbers.is_empty() {
                return Err(format!("column `{name}` has no values"));
            }
            numbers.sort_by(f64::total_cmp);
            let n = numbers.len();
            let mut edges: Vec<f64> = Vec::new();
            for i in 1..BINS {
                let edge = numbers[((i * n) / BINS).min(n - 1)];
                // Strictly ascending, and below the largest value (the last bin is never empty).
                if edges.last().is_none_or(|last| edge > *last) && edge < numbers[n - 1] {
                    edges.push(edge);
                }
            }
            let mut counts = vec![0u64; edges.len() + 1];
            for x in &numbers {
                counts[edges.partition_point(|e| e < x)] += 1;
            }
            Ok(json!({"name": name, "numeric": {"edges": edges, "counts": counts}}))
        }
        Column::Categories(values) => {
            if values.is_empty() {
                return Err(format!("column `{name}` has no values"));
            }
            let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
            for v in values {
                *counts.entry(v).or_default() += 1;
            }
            if counts.len() > MAX_CATEGORIES {
                return Err(format!(
                    "column `{name}` has {} categories; at most {MAX_CATEGORIES} are watched (bin it, \
                     or leave it out of the profile)",
                    counts.len()
                ));
            }
            Ok(json!({"name": name, "categorical": {"counts": counts}}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_cut_at_their_quantiles_and_categories_counted() {
        let numbers: Vec<f64> = (1..=100).map(f64::from).collect();
        let doc = profile(
            &[
                ("x", Column::Numbers(numbers)),
                (
                    "c",
                    Column::Categories(vec!["a".into(), "b".into(), "a".into()]),
                ),
            ],
            &[("p", Column::Numbers(vec![0.5; 7]))],
        )
        .unwrap();
        let x = &doc["features"][0]["numeric"];
        assert_eq!(x["edges"].as_array().unwrap().len(), 9);
        assert_eq!(x["counts"], json!([11, 10, 10, 10, 10, 10, 10, 10, 10, 9]));
        assert_eq!(
            doc["features"][1]["categorical"]["counts"],
            json!({"a": 2, "b": 1})
        );
        // One repeated value: one bin.
        assert_eq!(
            doc["outputs"][0]["numeric"],
            json!({"edges": [], "counts": [7]})
        );
        assert_eq!(doc["rows"], 100);
    }

    #[test]
    fn empty_columns_and_too_many_categories_are_refused() {
        assert!(profile(
            &[("x", Column::Numbers(vec![f64::NAN, f64::INFINITY]))],
            &[]
        )
        .unwrap_err()
        .contains("no values"));
        let many = (0..300).map(|i| i.to_string()).collect();
        assert!(profile(&[("c", Column::Categories(many))], &[])
            .unwrap_err()
            .contains("300 categories"));
    }
}
