//! Every mapping from why a request got no answer to an HTTP status, in one place of the front end.
//! The serving layer records these numbers too (per-version `/metrics`, the prediction log, which
//! `ferry replay` compares), so it is handed [`of`] when it is built rather than knowing HTTP itself;
//! a gRPC front end maps the same errors to its own codes.

use crate::registry::{ChangeError, RouteError};
use crate::runtime::CallError;
use crate::serving::ServeError;

/// The status in the Open Inference Protocol's REST terms.
pub fn of(e: &ServeError) -> u16 {
    match e {
        ServeError::Route(RouteError::UnknownModel(_) | RouteError::UnknownVersion(..)) => 404,
        ServeError::Route(_) => 503,
        ServeError::Invalid(_) | ServeError::WrongEntryPoint { .. } => 400,
        ServeError::Call(e) => of_call(e),
    }
}

/// The status of a failed guest call.
pub fn of_call(e: &CallError) -> u16 {
    match e {
        CallError::InvalidInput(_) => 422,
        CallError::Unsupported(_) => 400,
        CallError::InputTooLarge { .. } => 413,
        CallError::DeadlineExceeded(_)
        | CallError::GraphStopped(_)
        | CallError::FuelExhausted(_) => 504,
        CallError::Overloaded(_) | CallError::OverShare { .. } | CallError::Tripped { .. } => 503,
        // Rerun by the serving layer, never a caller's answer; were it one, the host is at fault.
        CallError::GaveWay(_) => 503,
        CallError::ModelFailed(_)
        | CallError::OutputTooLarge { .. }
        | CallError::Limit(_)
        | CallError::StackOverflow
        | CallError::Panicked(_)
        | CallError::Trapped(_) => 500,
    }
}

/// The status of a refused management change.
pub fn of_change(e: &ChangeError) -> u16 {
    match e {
        ChangeError::NotFound(_) => 404,
        ChangeError::Conflict(_)
        | ChangeError::Shadowed { .. }
        | ChangeError::ModelUnloaded { .. } => 409,
        ChangeError::Invalid(_) => 400,
        ChangeError::Unavailable(_) => 503,
        ChangeError::NoRoom(_) => 507,
        ChangeError::Store(_) => 500,
    }
}

/// What to do about a refused change, in this front end's routes.
pub fn next_step(e: &ChangeError) -> Option<String> {
    match e {
        ChangeError::Shadowed { model, .. } => Some(format!("PUT /v1/models/{model}/traffic")),
        ChangeError::ModelUnloaded { model } => {
            Some(format!("POST /v2/repository/models/{model}/load"))
        }
        _ => None,
    }
}

/// Seconds after which trying again may succeed (`Retry-After`).
pub fn retry_after(e: &ServeError) -> Option<u32> {
    match e {
        ServeError::Route(RouteError::NotReady { .. } | RouteError::NoReadyVersion(_)) => Some(5),
        ServeError::Call(CallError::Overloaded(_) | CallError::OverShare { .. }) => Some(1),
        ServeError::Call(CallError::Tripped { retry_in, .. }) => {
            Some(retry_in.as_secs_f64().ceil().max(1.0) as u32)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::error::ApiError;

    #[test]
    fn a_request_at_the_wrong_entry_point_is_told_the_route_to_use() {
        let wrong = |takes_tensors| ServeError::WrongEntryPoint {
            model: "m".into(),
            takes_tensors,
        };
        assert_eq!(of(&wrong(true)), 400);
        let e = ApiError::from(wrong(true));
        assert_eq!(
            e.message,
            "model `m` takes tensor requests, not JSON features: POST /v2/models/m/infer"
        );
        let e = ApiError::from(wrong(false));
        assert_eq!(
            e.message,
            "model `m` takes feature-style requests, not tensors: POST /v1/models/m/predict"
        );
        assert_eq!(of_call(&CallError::InvalidInput("x".into())), 422);
        assert_eq!(
            retry_after(&ServeError::Call(CallError::Overloaded(Default::default()))),
            Some(1)
        );
    }

    #[test]
    fn a_refused_change_names_the_route_that_unblocks_it() {
        use crate::registry::ChangeError;
        let e = ApiError::from(ChangeError::Shadowed {
            model: "m".into(),
            version: "2".into(),
        });
        assert_eq!(e.status, axum::http::StatusCode::CONFLICT);
        assert_eq!(
            e.message,
            "`m` version `2` is the model's shadow; stop shadowing it first (PUT /v1/models/m/traffic)"
        );
        let e = ApiError::from(ChangeError::ModelUnloaded { model: "m".into() });
        assert_eq!(
            e.message,
            "model `m` is unloaded on request; load it first (POST /v2/repository/models/m/load)"
        );
    }
}
