//! The contract's two entry points as types: what each is asked and what it answers. A call is made
//! through one of them ([`Predict`], [`Infer`]), so its answer has that entry point's type: a
//! feature-style call answers JSON text, a tensor call tensors, and no front end asks which it got.
//! [`Payload`] and [`Output`] are the same requests and answers with the entry point erased, for
//! what handles both alike (routing keys, input checks, shadow copies, the prediction log).

use std::sync::Arc;

use crate::runtime::{CallError, ModelInstance, Tensor};

use super::{Output, Payload, TensorRequest};

/// One entry point of the contract.
pub trait EntryPoint: Send + Sync + 'static {
    /// What the model is asked.
    type Ask: Send + Sync + 'static;
    /// What it answers.
    type Reply: Send + Sync + 'static;
    /// The request with its entry point erased (shares `ask`).
    fn payload(ask: &Arc<Self::Ask>) -> Payload;
    /// The answer with its entry point erased (shares `reply`).
    fn output(reply: &Arc<Self::Reply>) -> Output;
    /// The answer of this entry point in `output`, if it is one.
    fn reply(output: Output) -> Option<Self::Reply>;
    /// Calls the entry point on `instance`.
    fn run(instance: &mut ModelInstance, ask: &Self::Ask) -> Result<Self::Reply, CallError>;
    /// Bytes of input the model is handed.
    fn input_bytes(ask: &Self::Ask) -> usize;
}

/// `predict`: a feature-style JSON object in, the model's JSON text out.
pub struct Predict;

/// `infer`: tensors in (with parameters and the outputs asked for), tensors out.
pub struct Infer;

impl EntryPoint for Predict {
    type Ask = String;
    type Reply = String;
    fn payload(ask: &Arc<String>) -> Payload {
        Payload::Features(ask.clone())
    }
    fn output(reply: &Arc<String>) -> Output {
        Output::Features(reply.clone())
    }
    fn reply(output: Output) -> Option<String> {
        match output {
            Output::Features(text) => Some(Arc::unwrap_or_clone(text)),
            Output::Tensors(_) => None,
        }
    }
    fn run(instance: &mut ModelInstance, ask: &String) -> Result<String, CallError> {
        instance.predict(ask)
    }
    fn input_bytes(ask: &String) -> usize {
        ask.len()
    }
}

impl EntryPoint for Infer {
    type Ask = TensorRequest;
    type Reply = Vec<Tensor>;
    fn payload(ask: &Arc<TensorRequest>) -> Payload {
        Payload::Tensors(ask.clone())
    }
    fn output(reply: &Arc<Vec<Tensor>>) -> Output {
        Output::Tensors(reply.clone())
    }
    fn reply(output: Output) -> Option<Vec<Tensor>> {
        match output {
            Output::Tensors(tensors) => Some(Arc::unwrap_or_clone(tensors)),
            Output::Features(_) => None,
        }
    }
    fn run(instance: &mut ModelInstance, ask: &TensorRequest) -> Result<Vec<Tensor>, CallError> {
        instance.infer(&ask.inputs, &ask.parameters)
    }
    fn input_bytes(ask: &TensorRequest) -> usize {
        ask.inputs
            .iter()
            .map(crate::runtime::tensor_bytes)
            .sum::<usize>()
            + ask.parameters.len()
    }
}

impl Payload {
    /// Calls whichever entry point the payload is for (a shadow copy, a replay).
    pub fn run(&self, instance: &mut ModelInstance) -> Result<Output, CallError> {
        Ok(match self {
            Payload::Features(ask) => Output::Features(Arc::new(Predict::run(instance, ask)?)),
            Payload::Tensors(ask) => Output::Tensors(Arc::new(Infer::run(instance, ask)?)),
        })
    }
}
