//! Breast-cancer biopsies → malignant or benign: a LightGBM gradient-boosted classifier (200 trees,
//! `training/train.py`) exported to ONNX by onnxmltools and run by the host's ONNX Runtime, which runs
//! ONNX-ML's tree ensembles natively. The component checks the request and hands the rows to the
//! graph; retraining pushes a new `model.onnx` and tests file, not a new component.

use ferry_sdk::prelude::*;

/// The 30 measurements of `sklearn.datasets.load_breast_cancer`, in its order.
const FEATURES: usize = 30;

struct BiopsyClassifier {
    trees: Graph,
}

impl Model for BiopsyClassifier {
    fn load(_init: Init) -> Result<Self> {
        Ok(BiopsyClassifier {
            trees: Graph::named("model"),
        })
    }

    fn metadata(&self) -> Metadata {
        Metadata::new("lightgbm-onnx")
            .description(
                "30 biopsy measurements → P(benign), P(malignant) and the label (1 = benign)",
            )
            .input(TensorSpec::new(
                "features",
                Datatype::Fp32,
                [-1, FEATURES as i64],
            ))
            .output(TensorSpec::new("probabilities", Datatype::Fp32, [-1, 2]))
            .output(TensorSpec::new("label", Datatype::Int64, [-1]))
    }

    fn infer(&self, inputs: Inputs) -> Result<Vec<Tensor>> {
        let x = inputs.matrix_f32("features", FEATURES)?;
        let rows = Tensor::fp32(
            "features",
            [x.batch(), FEATURES as u64],
            x.as_slice().to_vec(),
        );
        let outputs = self.trees.run(&[rows])?;
        Ok(vec![
            outputs.get("probabilities")?.clone(),
            outputs.get("label")?.clone(),
        ])
    }
}

export_model!(BiopsyClassifier);
