//! The one error type of the HTTP layer: a status and a message, rendered as `{"error": "..."}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::registry::RouteError;
use crate::runtime::CallError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for the caller.
    pub message: String,
    /// Seconds after which a retry may succeed (503 only).
    pub retry_after: Option<u32>,
    /// The call error's kind, for metrics (`None` for errors raised before the guest).
    pub kind: Option<&'static str>,
}

impl ApiError {
    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    /// Any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
            kind: None,
        }
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        let status = match &e {
            CallError::InvalidInput(_) => StatusCode::UNPROCESSABLE_ENTITY,
            CallError::Unsupported(_) => StatusCode::BAD_REQUEST,
            CallError::InputTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            CallError::DeadlineExceeded(_)
            | CallError::GraphStopped(_)
            | CallError::FuelExhausted(_) => StatusCode::GATEWAY_TIMEOUT,
            CallError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            CallError::ModelFailed(_)
            | CallError::OutputTooLarge { .. }
            | CallError::Limit(_)
            | CallError::StackOverflow
            | CallError::Panicked(_)
            | CallError::Trapped(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let retry_after = matches!(e, CallError::Overloaded(_)).then_some(1);
        ApiError {
            status,
            message: e.to_string(),
            retry_after,
            kind: Some(e.kind()),
        }
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::UnknownModel(_) | RouteError::UnknownVersion(..) => {
                ApiError::not_found(e.to_string())
            }
            RouteError::NotReady { .. } | RouteError::NoReadyVersion(_) => ApiError {
                retry_after: Some(5),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
