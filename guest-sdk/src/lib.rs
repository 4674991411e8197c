//! # ferry-sdk: a Ferry model in Rust
//!
//! A model is a type that implements [`Model`]: it loads itself from the version's config and weights,
//! declares what it takes and returns, and answers tensor requests ([`Model::infer`]), feature-style JSON
//! requests ([`Model::predict`]), or both. [`export_model!`] turns it into a component that Ferry can serve;
//! build it with `cargo build --release --target wasm32-wasip2`.
//!
//! ```ignore
//! use ferry_sdk::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! struct LogisticRegression { coef: Vec<f32>, intercept: f32 }
//!
//! impl Model for LogisticRegression {
//!     fn load(init: Init) -> Result<Self> {
//!         init.weights_json()
//!     }
//!     fn metadata(&self) -> Metadata {
//!         Metadata::new("logistic-regression")
//!             .input(TensorSpec::new("x", Datatype::Fp32, [-1, self.coef.len() as i64]))
//!             .output(TensorSpec::new("p", Datatype::Fp32, [-1]))
//!     }
//!     fn infer(&self, inputs: Inputs) -> Result<Vec<Tensor>> {
//!         let x = inputs.matrix_f32("x", self.coef.len())?;
//!         let p = x.rows().map(|row| {
//!             let z: f32 = row.iter().zip(&self.coef).map(|(a, b)| a * b).sum::<f32>() + self.intercept;
//!             1.0 / (1.0 + (-z).exp())
//!         });
//!         Ok(vec![Tensor::fp32("p", [x.batch()], p.collect())])
//!     }
//! }
//!
//! export_model!(LogisticRegression);
//! ```
//!
//! The host runs every call under the version's limits (memory, deadline, fuel) with no filesystem and no
//! network; write to the log with [`log`] or `eprintln!` (both captured, with a volume cap).

// Generated bindings name this crate by its external path, also from inside it.
extern crate self as ferry_sdk;

mod error;
mod export;
pub mod graph;
mod metadata;
pub mod profile;
mod selftest;
mod tensor;

pub use error::{Error, Result};
pub use graph::Graph;
pub use metadata::Metadata;
pub use selftest::{SelfTest, SelfTests};
pub use serde_json::{json, Value};
pub use tensor::{Datatype, Inputs, Matrix, Tensor, TensorData, TensorSpec};

/// The model contract. Implement [`Model::load`] and at least one of [`Model::infer`] / [`Model::predict`].
pub trait Model: Sized + 'static {
    /// Builds the model once per instance, from the version's config (JSON) and weights blob.
    fn load(init: Init) -> Result<Self>;

    /// What the model takes and returns. The host validates tensor requests against it before calling
    /// [`Model::infer`], and reports it as the model's metadata.
    fn metadata(&self) -> Metadata;

    /// Tensor inference (Open Inference Protocol requests).
    fn infer(&self, inputs: Inputs) -> Result<Vec<Tensor>> {
        let _ = inputs;
        Err(Error::unsupported(
            "this model answers feature-style `predict` requests, not tensor `infer`",
        ))
    }

    /// Feature-style prediction: a JSON request in (e.g. `{"features": {...}}`), a JSON answer out.
    fn predict(&self, request: Value) -> Result<Value> {
        let _ = request;
        Err(Error::unsupported(
            "this model answers tensor `infer` requests, not feature-style `predict`",
        ))
    }

    /// Feature-style prediction from the request's JSON text to the answer's. By default the text is
    /// parsed into a [`Value`] for [`Model::predict`] and its answer written out; a model that reads
    /// its request into its own types overrides this instead, with [`Features::parse`] and
    /// [`answer`], and skips the tree (a third of a small model's call).
    fn predict_json(&self, request: &str) -> Result<String> {
        let request: Value = serde_json::from_str(request)
            .map_err(|e| Error::invalid_input(format!("request is not valid JSON: {e}")))?;
        answer(&self.predict(request)?)
    }

    /// Self-tests compiled into the component. The host runs them after every load; a failing case keeps
    /// the version from serving. Tests that depend on retrained weights belong in the tests file the
    /// training script writes beside the weights instead.
    fn self_tests(&self) -> SelfTests {
        SelfTests::default()
    }
}

/// A feature-style request as callers send it, `{"features": {...}}`, read into the model's own
/// type `T` (other top-level fields are ignored).
#[derive(serde::Deserialize)]
pub struct Features<T> {
    /// The features.
    pub features: T,
}

impl<'a, T: serde::Deserialize<'a>> Features<T> {
    /// Reads `request` (JSON text; `T` may borrow from it); an error names the field that does not
    /// fit.
    pub fn parse(request: &'a str) -> Result<T> {
        serde_json::from_str::<Features<T>>(request)
            .map(|r| r.features)
            .map_err(|e| Error::invalid_input(format!("`features`: {e}")))
    }
}

/// Writes a model's answer as JSON text, for [`Model::predict_json`].
pub fn answer<T: serde::Serialize>(answer: &T) -> Result<String> {
    serde_json::to_string(answer).map_err(|e| Error::internal(e.to_string()))
}

/// What [`Model::load`] receives: the version's config and weights.
pub struct Init {
    /// The version's config document (`{}` when it has none).
    pub config: Value,
    /// The version's weights blob, when it has one.
    pub weights: Option<Vec<u8>>,
}

impl Init {
    /// The weights blob, or an error naming what is missing.
    pub fn weights(&self) -> Result<&[u8]> {
        self.weights.as_deref().ok_or_else(|| {
            Error::internal("this model needs a weights file; push one with the version")
        })
    }

    /// The weights blob parsed as JSON into `T`.
    pub fn weights_json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(self.weights()?)
            .map_err(|e| Error::internal(format!("weights are not valid JSON for this model: {e}")))
    }

    /// A config value parsed into `T` (missing keys become serde defaults when `T` allows).
    pub fn config_as<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.config.clone())
            .map_err(|e| Error::internal(format!("config does not fit this model: {e}")))
    }
}

/// Writes a line to the host's log for this model (bounded per call by the host).
pub mod log {
    use crate::export::bindings::ferry::model::log::{log, Level};

    /// Logs at info level.
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
    /// Logs at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
}

/// Everything a model file needs: `use ferry_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::{
        answer, export_model, json, Datatype, Error, Features, Graph, Init, Inputs, Matrix,
        Metadata, Model, Result, SelfTest, SelfTests, Tensor, TensorData, TensorSpec, Value,
    };
}

/// Exports a [`Model`] implementation as the component's `ferry:model/model` interface.
///
/// Call it once, at the top level of the model crate (a `cdylib`).
#[macro_export]
macro_rules! export_model {
    ($model:ty) => {
        type __FerryExportedModel = $crate::__private::Exported<$model>;
        $crate::__private::export!(__FerryExportedModel with_types_in $crate::__private::bindings);
    };
}

#[doc(hidden)]
pub mod __private {
    pub use crate::export::bindings;
    pub use crate::export::bindings::export;
    pub use crate::export::Exported;
    pub use wit_bindgen;
}
