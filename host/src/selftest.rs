//! Self-tests: the cases a model ships (compiled into the component, or in a tests file written by the
//! training script beside the weights), run against a live instance, each answer compared number by
//! number within the case's tolerance.
//!
//! Tests file format (JSON):
//! ```json
//! {"tolerance": 1e-4, "cases": [
//!   {"name": "row-0", "inputs": [<OIP tensor>...], "outputs": [<OIP tensor>...]},
//!   {"name": "ride-1", "request": {"features": {...}}, "response": {...}, "tolerance": 1e-9}
//! ]}
//! ```

use serde::Deserialize;
use serde_json::Value;

use crate::runtime::{CallError, CasePayload, ModelInstance, SelfTestSuite, Tensor, TensorData};
use crate::tensor::{datatype_name, datatype_of, tensor_from_json, JsonTensor};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestsFile {
    #[serde(default)]
    tolerance: Option<f64>,
    /// Which library computed the expectations (informational).
    #[serde(default)]
    #[allow(dead_code)]
    source: Option<String>,
    cases: Vec<FileCase>,
}

#[derive(Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum FileCase {
    Tensors {
        name: String,
        inputs: Vec<JsonTensor>,
        outputs: Vec<JsonTensor>,
        tolerance: Option<f64>,
    },
    Json {
        name: String,
        request: Value,
        response: Value,
        tolerance: Option<f64>,
    },
}

/// One case to run.
#[derive(Debug, Clone)]
pub struct SelfTestCase {
    /// The case's name.
    pub name: String,
    /// Where it came from: `component` or the tests file.
    pub origin: String,
    /// What the model is called with.
    pub input: CasePayload,
    /// What it must answer.
    pub expected: CasePayload,
    /// Largest |Δ| accepted per number.
    pub tolerance: f64,
}

/// Parses a tests document (a tests file, or one compiled into a component).
pub fn parse_tests_document(text: &str, origin: &str) -> anyhow::Result<Vec<SelfTestCase>> {
    let file: TestsFile = serde_json::from_str(text)
        .map_err(|e| anyhow::anyhow!("{origin}: not a tests document: {e}"))?;
    let default_tolerance = file.tolerance.unwrap_or(0.0);
    file.cases
        .into_iter()
        .map(|case| {
            Ok(match case {
                FileCase::Tensors {
                    name,
                    inputs,
                    outputs,
                    tolerance,
                } => {
                    let convert = |ts: Vec<JsonTensor>| -> anyhow::Result<Vec<Tensor>> {
                        ts.iter()
                            .map(|t| {
                                tensor_from_json(t)
                                    .map_err(|e| anyhow::anyhow!("{origin}: case `{name}`: {e}"))
                            })
                            .collect()
                    };
                    SelfTestCase {
                        input: CasePayload::Tensors(convert(inputs)?),
                        expected: CasePayload::Tensors(convert(outputs)?),
                        tolerance: tolerance.unwrap_or(default_tolerance),
                        origin: origin.to_owned(),
                        name,
                    }
                }
                FileCase::Json {
                    name,
                    request,
                    response,
                    tolerance,
                } => SelfTestCase {
                    input: CasePayload::Json(request.to_string()),
                    expected: CasePayload::Json(response.to_string()),
                    tolerance: tolerance.unwrap_or(default_tolerance),
                    origin: origin.to_owned(),
                    name,
                },
            })
        })
        .collect()
}

/// All cases of a version: the component's own, then the tests file's.
pub fn collect_cases(
    suite: SelfTestSuite,
    tests_file: Option<&str>,
) -> anyhow::Result<Vec<SelfTestCase>> {
    let mut cases: Vec<SelfTestCase> = suite
        .cases
        .into_iter()
        .map(|c| SelfTestCase {
            name: c.name,
            origin: "component".into(),
            input: c.input,
            expected: c.expected,
            tolerance: c.tolerance,
        })
        .collect();
    for doc in &suite.documents {
        cases.extend(parse_tests_document(doc, "component")?);
    }
    if let Some(text) = tests_file {
        cases.extend(parse_tests_document(text, "tests file")?);
    }
    Ok(cases)
}

/// How one case went.
#[derive(Debug, Clone)]
pub struct CaseOutcome {
    /// The case's name.
    pub name: String,
    /// Where it came from.
    pub origin: String,
    /// True when every number was within tolerance and everything else matched exactly.
    pub passed: bool,
    /// Largest absolute difference seen across the compared numbers.
    pub worst_delta: f64,
    /// The case's tolerance.
    pub tolerance: f64,
    /// Why it failed (empty when it passed).
    pub detail: String,
}

/// Results of a version's self-tests.
#[derive(Debug, Clone, Default)]
pub struct SelfTestReport {
    /// One outcome per case, in order.
    pub outcomes: Vec<CaseOutcome>,
}

impl SelfTestReport {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.passed).count()
    }
    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.outcomes.len() - self.passed()
    }
    /// Largest |Δ| over every case.
    pub fn worst_delta(&self) -> f64 {
        self.outcomes
            .iter()
            .map(|o| o.worst_delta)
            .fold(0.0, f64::max)
    }
    /// True when there was at least one case and none failed.
    pub fn all_passed(&self) -> bool {
        !self.outcomes.is_empty() && self.failed() == 0
    }
}

/// Runs `cases` against `instance`.
pub fn run_cases(instance: &mut ModelInstance, cases: &[SelfTestCase]) -> SelfTestReport {
    let outcomes = cases
        .iter()
        .map(|case| {
            let mut cmp = Comparison {
                tolerance: case.tolerance,
                worst: 0.0,
                problems: Vec::new(),
            };
            match run_one(instance, case, &mut cmp) {
                Ok(()) => {}
                Err(e) => cmp.problems.push(format!("call failed: {e}")),
            }
            CaseOutcome {
                name: case.name.clone(),
                origin: case.origin.clone(),
                passed: cmp.problems.is_empty(),
                worst_delta: cmp.worst,
                tolerance: case.tolerance,
                detail: cmp.problems.join("; "),
            }
        })
        .collect();
    SelfTestReport { outcomes }
}

fn run_one(
    instance: &mut ModelInstance,
    case: &SelfTestCase,
    cmp: &mut Comparison,
) -> Result<(), CallError> {
    match (&case.input, &case.expected) {
        (CasePayload::Tensors(inputs), CasePayload::Tensors(expected)) => {
            let actual = instance.infer(inputs, "{}")?;
            cmp.tensors(expected, &actual);
        }
        (CasePayload::Json(request), CasePayload::Json(expected)) => {
            let actual = instance.predict(request)?;
            match (
                serde_json::from_str::<Value>(expected),
                serde_json::from_str::<Value>(&actual),
            ) {
                (Ok(e), Ok(a)) => cmp.json("$", &e, &a),
                (Err(e), _) => cmp
                    .problems
                    .push(format!("expected answer is not JSON: {e}")),
                (_, Err(e)) => cmp
                    .problems
                    .push(format!("the model answered invalid JSON: {e}")),
            }
        }
        _ => cmp
            .problems
            .push("input and expected answer are of different kinds (tensors vs JSON)".into()),
    }
    Ok(())
}

struct Comparison {
    tolerance: f64,
    worst: f64,
    problems: Vec<String>,
}

impl Comparison {
    fn number(&mut self, at: &str, expected: f64, actual: f64) {
        if expected.is_nan() && actual.is_nan() {
            return;
        }
        let delta = (expected - actual).abs();
        if delta.is_nan() || delta > self.tolerance {
            if self.problems.len() < 5 {
                self.problems.push(format!(
                    "{at}: expected {expected}, got {actual} (|Δ| {delta:.3e} > {:.1e})",
                    self.tolerance
                ));
            } else if self.problems.len() == 5 {
                self.problems.push("…".into());
            }
        }
        if delta.is_finite() {
            self.worst = self.worst.max(delta);
        } else {
            self.worst = f64::INFINITY;
        }
    }

    fn tensors(&mut self, expected: &[Tensor], actual: &[Tensor]) {
        for e in expected {
            let Some(a) = actual.iter().find(|a| a.name == e.name) else {
                self.problems
                    .push(format!("output `{}` is missing", e.name));
                continue;
            };
            let (de, da) = (datatype_of(&e.data), datatype_of(&a.data));
            if de != da {
                self.problems.push(format!(
                    "output `{}`: expected {}, got {}",
                    e.name,
                    datatype_name(de),
                    datatype_name(da)
                ));
                continue;
            }
            if e.shape != a.shape {
                self.problems.push(format!(
                    "output `{}`: expected shape {:?}, got {:?}",
                    e.name, e.shape, a.shape
                ));
                continue;
            }
            let at = |i: usize| format!("{}[{i}]", e.name);
            match (as_f64s(&e.data), as_f64s(&a.data)) {
                (Some(ev), Some(av)) => {
                    for (i, (x, y)) in ev.iter().zip(&av).enumerate() {
                        self.number(&at(i), *x, *y);
                    }
                }
                _ if e.data != a.data => self
                    .problems
                    .push(format!("output `{}`: elements differ", e.name)),
                _ => {}
            }
        }
    }

    fn json(&mut self, at: &str, expected: &Value, actual: &Value) {
        match (expected, actual) {
            (Value::Number(e), Value::Number(a)) => self.number(
                at,
                e.as_f64().unwrap_or(f64::NAN),
                a.as_f64().unwrap_or(f64::NAN),
            ),
            (Value::Object(e), Value::Object(a)) => {
                for (k, ev) in e {
                    match a.get(k) {
                        Some(av) => self.json(&format!("{at}.{k}"), ev, av),
                        None => self.problems.push(format!("{at}.{k} is missing")),
                    }
                }
                for k in a.keys().filter(|k| !e.contains_key(*k)) {
                    self.problems.push(format!("{at}.{k} is not expected"));
                }
            }
            (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
                for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                    self.json(&format!("{at}[{i}]"), ev, av);
                }
            }
            (e, a) if e == a => {}
            (e, a) => self.problems.push(format!("{at}: expected {e}, got {a}")),
        }
    }
}

/// Numeric elements widened to f64; `None` for BOOL and BYTES (compared exactly).
fn as_f64s(d: &TensorData) -> Option<Vec<f64>> {
    Some(match d {
        TensorData::Uint8(v) => v.iter().map(|x| *x as f64).collect(),
        TensorData::Uint16(v) => v.iter().map(|x| *x as f64).collect(),
        TensorData::Uint32(v) => v.iter().map(|x| *x as f64).collect(),
        TensorData::Uint64(v) => v.iter().map(|x| *x as f64).collect(),
        TensorData::Int8(v) => v.iter().map(|x| *x as f64).collect(),
        TensorData::Int16(v) => v.iter().map(|x| *x as f64).collect(),
        TensorData::Int32(v) => v.iter().map(|x| *x as f64).collect(),
        TensorData::Int64(v) => v.iter().map(|x| *x as f64).collect(),
        TensorData::Fp32(v) => v.iter().map(|x| *x as f64).collect(),
        TensorData::Fp64(v) => v.clone(),
        TensorData::Bool(_) | TensorData::Bytes(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cmp(tolerance: f64) -> Comparison {
        Comparison {
            tolerance,
            worst: 0.0,
            problems: vec![],
        }
    }

    #[test]
    fn json_answers_compare_numbers_within_tolerance_and_the_rest_exactly() {
        let mut c = cmp(1e-6);
        c.json(
            "$",
            &json!({"p": 0.5, "flag": true}),
            &json!({"p": 0.5000004, "flag": true}),
        );
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert!(c.worst > 3e-7 && c.worst < 5e-7);
        let mut c = cmp(1e-6);
        c.json(
            "$",
            &json!({"p": 0.5, "flag": true}),
            &json!({"p": 0.6, "flag": false, "extra": 1}),
        );
        assert_eq!(c.problems.len(), 3, "{:?}", c.problems);
    }

    #[test]
    fn tensor_answers_must_match_name_type_and_shape() {
        let e = vec![Tensor {
            name: "y".into(),
            shape: vec![2],
            data: TensorData::Fp32(vec![1.0, 2.0]),
        }];
        let mut c = cmp(1e-4);
        c.tensors(
            &e,
            &[Tensor {
                name: "y".into(),
                shape: vec![2],
                data: TensorData::Fp32(vec![1.00001, 2.0]),
            }],
        );
        assert!(c.problems.is_empty());
        let mut c = cmp(1e-4);
        c.tensors(
            &e,
            &[Tensor {
                name: "y".into(),
                shape: vec![1, 2],
                data: TensorData::Fp32(vec![1.0, 2.0]),
            }],
        );
        assert!(c.problems[0].contains("shape"));
        let mut c = cmp(1e-4);
        c.tensors(
            &e,
            &[Tensor {
                name: "y".into(),
                shape: vec![2],
                data: TensorData::Fp32(vec![1.0, 2.1]),
            }],
        );
        assert!(c.problems[0].contains("y[1]"), "{:?}", c.problems);
    }

    #[test]
    fn tests_documents_take_both_kinds_of_case_and_a_default_tolerance() {
        let doc = r#"{"tolerance": 0.01, "cases": [
            {"name": "t", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
                          "outputs": [{"name": "y", "datatype": "FP32", "shape": [1], "data": [2]}]},
            {"name": "j", "request": {"a": 1}, "response": {"b": 2}, "tolerance": 0.5}]}"#;
        let cases = parse_tests_document(doc, "tests file").unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].tolerance, 0.01);
        assert_eq!(cases[1].tolerance, 0.5);
        assert!(parse_tests_document(r#"{"cases": [{"name": "x"}]}"#, "tests file").is_err());
    }
}
