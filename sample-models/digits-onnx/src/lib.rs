//! Handwritten digits: a neural network trained by scikit-learn, exported to ONNX by
//! `training/train.py`, and run here by tract. The `.onnx` file is the version's weights blob, so a
//! retrained network is a weights-only update.

use std::sync::Arc;

use ferry_sdk::prelude::*;
use ferry_sdk::Tensor;
use tract_onnx::prelude::*;

const PIXELS: usize = 64;
const CLASSES: usize = 10;

struct DigitsModel {
    network: Arc<TypedRunnableModel>,
}

impl Model for DigitsModel {
    fn load(init: Init) -> Result<Self> {
        let network = tract_onnx::onnx()
            .model_for_read(&mut init.weights()?)
            .and_then(|m| {
                let batch = m.sym("N");
                m.with_input_fact(0, f32::fact([TDim::Sym(batch), PIXELS.into()]).into())
            })
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| Error::internal(format!("cannot load the ONNX network: {e:#}")))?;
        Ok(DigitsModel { network })
    }

    fn metadata(&self) -> Metadata {
        Metadata::new("tract-onnx")
            .description("8×8 handwritten digit (pixel intensities 0-16) → class probabilities")
            .input(TensorSpec::new(
                "input",
                Datatype::Fp32,
                [-1, PIXELS as i64],
            ))
            .output(TensorSpec::new(
                "probabilities",
                Datatype::Fp32,
                [-1, CLASSES as i64],
            ))
            .output(TensorSpec::new("label", Datatype::Int64, [-1]))
    }

    fn infer(&self, inputs: Inputs) -> Result<Vec<Tensor>> {
        let x = inputs.matrix_f32("input", PIXELS)?;
        let batch = x.batch();
        let input =
            tract_ndarray::Array2::from_shape_vec((batch as usize, PIXELS), x.as_slice().to_vec())
                .map_err(|e| Error::invalid_input(e.to_string()))?;
        let outputs = self
            .network
            .run(tvec!(input.into_tensor().into()))
            .map_err(|e| Error::internal(format!("tract: {e:#}")))?;
        let probabilities: Vec<f32> = outputs[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| Error::internal(format!("tract output: {e:#}")))?
            .iter()
            .copied()
            .collect();
        // The label is the argmax, as scikit-learn's classifier reports it.
        let label = probabilities
            .chunks_exact(CLASSES)
            .map(|p| {
                p.iter()
                    .enumerate()
                    .fold(0, |best, (i, v)| if *v > p[best] { i } else { best })
                    as i64
            })
            .collect();
        Ok(vec![
            Tensor::fp32("probabilities", [batch, CLASSES as u64], probabilities),
            Tensor::int64("label", [batch], label),
        ])
    }
}

export_model!(DigitsModel);
