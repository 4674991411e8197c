//! Self-tests a component ships; the host runs them on every load.

use serde_json::Value;

use crate::export::bindings::exports::ferry::model::model::SelfTestSuite;
use crate::export::bindings::ferry::model::types::{Payload, SelfTest as WitSelfTest};
use crate::Tensor;

/// One case: an input and the answer the model must give, each number within `tolerance`.
#[derive(Debug, Clone)]
pub struct SelfTest(WitSelfTest);

impl SelfTest {
    /// A feature-style case: `predict(request)` must answer `expected`.
    pub fn predict(name: impl Into<String>, request: Value, expected: Value) -> Self {
        SelfTest(WitSelfTest {
            name: name.into(),
            input: Payload::Json(request.to_string()),
            expected: Payload::Json(expected.to_string()),
            tolerance: 0.0,
        })
    }
    /// A tensor case: `infer(inputs)` must answer `expected` (outputs matched by name).
    pub fn infer(name: impl Into<String>, inputs: Vec<Tensor>, expected: Vec<Tensor>) -> Self {
        SelfTest(WitSelfTest {
            name: name.into(),
            input: Payload::Tensors(inputs),
            expected: Payload::Tensors(expected),
            tolerance: 0.0,
        })
    }
    /// Largest absolute difference accepted for each number (default 0: exact).
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.0.tolerance = tolerance;
        self
    }
}

/// The self-tests of a component: cases written in Rust and tests documents (the JSON format that the
/// training script writes and `ferry test --tests` reads), typically embedded with `include_str!`.
#[derive(Debug, Clone, Default)]
pub struct SelfTests {
    cases: Vec<SelfTest>,
    documents: Vec<String>,
}

impl SelfTests {
    /// No tests yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds one case.
    pub fn case(mut self, case: SelfTest) -> Self {
        self.cases.push(case);
        self
    }
    /// Adds a tests document, e.g. `include_str!("../tests.json")`.
    pub fn document(mut self, json: &str) -> Self {
        self.documents.push(json.to_owned());
        self
    }
}

impl From<SelfTests> for SelfTestSuite {
    fn from(s: SelfTests) -> Self {
        SelfTestSuite {
            cases: s.cases.into_iter().map(|c| c.0).collect(),
            documents: s.documents,
        }
    }
}
