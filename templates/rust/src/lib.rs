//! {{name}}: trip features → transforms → a linear model that predicts an ETA in minutes.
//!
//! Replace the transforms and the model with yours; `training/train.py` writes `weights.json` and
//! `tests.json` (the self-tests the host runs on every load).

use ferry_sdk::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Trip {
    distance_km: f64,
    hour: u32,
}

#[derive(Deserialize)]
struct EtaModel {
    coef: Vec<f64>,
    intercept: f64,
}

impl Model for EtaModel {
    fn load(init: Init) -> Result<Self> {
        init.weights_json()
    }

    fn metadata(&self) -> Metadata {
        Metadata::new("linear-regression").description("trip → ETA in minutes").predicts_json()
    }

    fn predict(&self, request: Value) -> Result<Value> {
        let trip: Trip = serde_json::from_value(request["features"].clone()).map_err(|e| Error::invalid_input(e.to_string()))?;
        if trip.distance_km < 0.0 {
            return Err(Error::invalid_input("features.distance_km: must be ≥ 0"));
        }
        let hour = 2.0 * std::f64::consts::PI * f64::from(trip.hour % 24) / 24.0;
        let x = [trip.distance_km.ln_1p(), hour.sin(), hour.cos()];
        let eta: f64 = x.iter().zip(&self.coef).map(|(a, b)| a * b).sum::<f64>() + self.intercept;
        Ok(json!({ "eta_minutes": eta }))
    }
}

export_model!(EtaModel);
