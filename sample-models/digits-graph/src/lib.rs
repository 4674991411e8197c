//! Handwritten digits with the network run by the host: digits-onnx's scikit-learn network
//! (`../digits-onnx/digits.onnx`, its training script and self-tests) pushed as the version's graph
//! `model` and run natively through wasi:nn (by tract here: `config.json` picks the backend). The
//! component keeps the contract — input checks and the label — in a few hundred kilobytes, where
//! digits-onnx embeds tract in 17 MB.

use ferry_sdk::prelude::*;

const PIXELS: usize = 64;
const CLASSES: usize = 10;

struct DigitsModel {
    network: Graph,
}

impl Model for DigitsModel {
    fn load(_init: Init) -> Result<Self> {
        Ok(DigitsModel {
            network: Graph::named("model"),
        })
    }

    fn metadata(&self) -> Metadata {
        Metadata::new("onnx-graph")
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
        let image = Tensor::fp32("input", [batch, PIXELS as u64], x.as_slice().to_vec());
        let probabilities = self.network.run(&[image])?.get("probabilities")?.clone();
        let TensorData::Fp32(p) = &probabilities.data else {
            return Err(Error::internal("the network's probabilities are not FP32"));
        };
        // The label is the argmax, as scikit-learn's classifier reports it.
        let label = p
            .chunks_exact(CLASSES)
            .map(|p| {
                p.iter()
                    .enumerate()
                    .fold(0, |best, (i, v)| if *v > p[best] { i } else { best })
                    as i64
            })
            .collect();
        Ok(vec![probabilities, Tensor::int64("label", [batch], label)])
    }
}

export_model!(DigitsModel);
