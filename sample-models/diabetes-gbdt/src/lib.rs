//! Diabetes progression: XGBoost gradient-boosted trees, evaluated in the guest from XGBoost's own JSON
//! model file (the version's weights blob, written by `training/train.py`).

mod xgboost;

use ferry_sdk::prelude::*;
use xgboost::Forest;

struct DiabetesModel {
    forest: Forest,
}

impl Model for DiabetesModel {
    fn load(init: Init) -> Result<Self> {
        Ok(DiabetesModel {
            forest: Forest::from_json(init.weights()?)?,
        })
    }

    fn metadata(&self) -> Metadata {
        let width = self.forest.num_features() as i64;
        Metadata::new("xgboost-json")
            .description("disease progression one year after baseline (scikit-learn diabetes data)")
            .input(TensorSpec::new("features", Datatype::Fp32, [-1, width]))
            .output(TensorSpec::new("progression", Datatype::Fp32, [-1]))
            .predicts_json()
    }

    fn infer(&self, inputs: Inputs) -> Result<Vec<Tensor>> {
        let x = inputs.matrix_f32("features", self.forest.num_features())?;
        let y = x.rows().map(|row| self.forest.predict(row)).collect();
        Ok(vec![Tensor::fp32("progression", [x.batch()], y)])
    }

    /// `{"features": {"age": 0.03, "sex": -0.04, "bmi": ...}}` → `{"progression": 151.2}`.
    fn predict(&self, request: Value) -> Result<Value> {
        let row = self
            .forest
            .feature_names()
            .iter()
            .map(|name| {
                request["features"][name]
                    .as_f64()
                    .map(|v| v as f32)
                    .ok_or_else(|| {
                        Error::invalid_input(format!("`features.{name}` must be a number"))
                    })
            })
            .collect::<Result<Vec<f32>>>()?;
        Ok(json!({ "progression": self.forest.predict(&row) }))
    }
}

export_model!(DiabetesModel);
