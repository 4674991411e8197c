//! A request checked against what the version it was routed to declares, before the guest is called:
//! the entry point it takes, each input's name, datatype and shape, the outputs asked for. (Which
//! version a request meets depends on routing, so this cannot happen in a front end.)

use crate::registry::Routed;
use crate::runtime::{Tensor, TensorSpec};
use crate::tensor::{datatype_name, datatype_of};

use super::{Payload, ServeError, TensorRequest};

/// `Ok` when `payload` fits `version`, else what is wrong, for the caller.
pub(super) fn check(version: &Routed, payload: &Payload) -> Result<(), ServeError> {
    let model = &version.manifest.model;
    let declared = &version.ready.metadata;
    match payload {
        Payload::Features(_) if !declared.predicts_json => Err(ServeError::WrongEntryPoint {
            model: model.clone(),
            takes_tensors: true,
        }),
        Payload::Features(_) => Ok(()),
        Payload::Tensors(_) if declared.inputs.is_empty() => Err(ServeError::WrongEntryPoint {
            model: model.clone(),
            takes_tensors: false,
        }),
        Payload::Tensors(request) => {
            check_tensors(model, &declared.inputs, &declared.outputs, request)
                .map_err(ServeError::Invalid)
        }
    }
}

fn check_tensors(
    model: &str,
    inputs: &[TensorSpec],
    outputs: &[TensorSpec],
    request: &TensorRequest,
) -> Result<(), String> {
    for tensor in &request.inputs {
        let spec = inputs
            .iter()
            .find(|s| s.name == tensor.name)
            .ok_or_else(|| {
                let names: Vec<&str> = inputs.iter().map(|s| s.name.as_str()).collect();
                format!(
                    "model `{model}` has no input `{}` (its inputs: {})",
                    tensor.name,
                    names.join(", ")
                )
            })?;
        check_against_spec(tensor, spec)?;
    }
    if let Some(missing) = inputs
        .iter()
        .find(|s| !request.inputs.iter().any(|i| i.name == s.name))
    {
        return Err(format!(
            "input `{}` is missing ({} {:?})",
            missing.name,
            datatype_name(missing.datatype),
            missing.shape
        ));
    }
    for name in &request.outputs {
        if !outputs.iter().any(|s| s.name == *name) {
            return Err(format!("model `{model}` has no output `{name}`"));
        }
    }
    Ok(())
}

fn check_against_spec(tensor: &Tensor, spec: &TensorSpec) -> Result<(), String> {
    let got = datatype_of(&tensor.data);
    if got != spec.datatype {
        return Err(format!(
            "input `{}`: expected datatype {}, got {}",
            spec.name,
            datatype_name(spec.datatype),
            datatype_name(got)
        ));
    }
    let fits = tensor.shape.len() == spec.shape.len()
        && tensor
            .shape
            .iter()
            .zip(&spec.shape)
            .all(|(d, s)| *s < 0 || *d as i64 == *s);
    if !fits {
        return Err(format!(
            "input `{}`: expected shape {:?} (-1 = any), got {:?}",
            spec.name, spec.shape, tensor.shape
        ));
    }
    Ok(())
}
