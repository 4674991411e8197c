//! What a model declares about itself.

use crate::export::bindings::exports::ferry::model::model::ModelMetadata;
use crate::TensorSpec;

/// A model's declaration: the library that computes it, and its inputs and outputs.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    platform: String,
    description: String,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    predicts_json: bool,
}

impl Metadata {
    /// Starts a declaration; `platform` names the library, e.g. `"tract-onnx"`.
    pub fn new(platform: impl Into<String>) -> Self {
        Metadata {
            platform: platform.into(),
            ..Default::default()
        }
    }
    /// A human-readable line about the model.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }
    /// Declares an input of [`crate::Model::infer`].
    pub fn input(mut self, spec: TensorSpec) -> Self {
        self.inputs.push(spec);
        self
    }
    /// Declares an output of [`crate::Model::infer`].
    pub fn output(mut self, spec: TensorSpec) -> Self {
        self.outputs.push(spec);
        self
    }
    /// Declares that the model answers feature-style [`crate::Model::predict`] requests.
    pub fn predicts_json(mut self) -> Self {
        self.predicts_json = true;
        self
    }
}

impl From<Metadata> for ModelMetadata {
    fn from(m: Metadata) -> Self {
        ModelMetadata {
            platform: m.platform,
            description: m.description,
            inputs: m.inputs,
            outputs: m.outputs,
            predicts_json: m.predicts_json,
        }
    }
}
