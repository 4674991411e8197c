//! Ride-payment fraud: Lyft-style JSON features → feature transforms → logistic regression.
//!
//! Trained by `training/train.py` (scikit-learn); the trained weights and the scikit-learn parity tests
//! are compiled in, so the component serves on its own. A retrained `weights.json` pushed with a version
//! replaces the compiled-in weights without a rebuild.

use ferry_sdk::prelude::*;
use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// A ride payment as callers send it under `"features"` (its text borrowed from the request's
/// unless escaped).
#[derive(Deserialize)]
struct Payment<'a> {
    amount: f64,
    #[serde(borrow)]
    currency: Cow<'a, str>,
    #[serde(borrow)]
    country: Cow<'a, str>,
    hour: u32,
    account_age_days: f64,
    rides_last_24h: f64,
    #[serde(borrow)]
    card_country: Cow<'a, str>,
}

/// The answer.
#[derive(Serialize)]
struct Score {
    fraud_probability: f64,
    is_fraud: bool,
}

#[derive(Deserialize)]
struct FraudModel {
    #[serde(skip)]
    compiled_in: bool,
    currencies: Vec<String>,
    countries: Vec<String>,
    coef: Vec<f64>,
    intercept: f64,
    threshold: f64,
}

impl FraudModel {
    /// The transforms of `train.py::features`, in the same order.
    fn features(&self, p: &Payment) -> Vec<f64> {
        let hour = 2.0 * std::f64::consts::PI * f64::from(p.hour) / 24.0;
        // Sized once: growing it twice cost a tenth of a prediction (callgrind, natively).
        let mut x = Vec::with_capacity(6 + self.currencies.len() + self.countries.len());
        x.extend([
            p.amount.ln_1p(),
            p.account_age_days.ln_1p(),
            hour.sin(),
            hour.cos(),
            p.rides_last_24h,
            if p.card_country != p.country {
                1.0
            } else {
                0.0
            },
        ]);
        x.extend(self.currencies.iter().map(|c| one_hot(*c == p.currency)));
        x.extend(self.countries.iter().map(|c| one_hot(*c == p.country)));
        x
    }
}

impl Model for FraudModel {
    fn load(init: Init) -> Result<Self> {
        let model: FraudModel = match &init.weights {
            Some(_) => init.weights_json()?,
            None => FraudModel {
                compiled_in: true,
                ..serde_json::from_str(include_str!("../weights.json"))?
            },
        };
        let width = 6 + model.currencies.len() + model.countries.len();
        if model.coef.len() != width {
            return Err(Error::internal(format!(
                "weights have {} coefficients, features need {width}",
                model.coef.len()
            )));
        }
        Ok(model)
    }

    fn metadata(&self) -> Metadata {
        Metadata::new("scikit-learn-logistic-regression")
            .description("probability that a ride payment is fraudulent")
            .predicts_json()
    }

    fn predict_json(&self, request: &str) -> Result<String> {
        let payment: Payment = Features::parse(request)?;
        if payment.hour > 23 || payment.amount < 0.0 || payment.account_age_days < 0.0 {
            return Err(Error::invalid_input(
                "`hour` must be 0-23; `amount` and `account_age_days` must be ≥ 0",
            ));
        }
        let z: f64 = self
            .features(&payment)
            .iter()
            .zip(&self.coef)
            .map(|(x, w)| x * w)
            .sum::<f64>()
            + self.intercept;
        let fraud_probability = 1.0 / (1.0 + (-z).exp());
        answer(&Score {
            fraud_probability,
            is_fraud: fraud_probability >= self.threshold,
        })
    }

    fn self_tests(&self) -> SelfTests {
        // These expectations belong to the compiled-in weights; retrained weights bring their own tests file.
        if self.compiled_in {
            SelfTests::new().document(include_str!("../tests.json"))
        } else {
            SelfTests::new()
        }
    }
}

fn one_hot(hit: bool) -> f64 {
    if hit {
        1.0
    } else {
        0.0
    }
}

export_model!(FraudModel);
