//! The one error type of the HTTP layer: a status and a message, rendered as `{"error": "..."}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::registry::RouteError;
use crate::runtime::CallError;
use crate::serving::ServeError;

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

impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> Self {
        ApiError {
            status: StatusCode::from_u16(super::status::of(&e))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            retry_after: super::status::retry_after(&e),
            kind: match &e {
                ServeError::Call(c) => Some(c.kind()),
                _ => None,
            },
            message: match &e {
                // Where to send it instead, in this front end's terms.
                ServeError::WrongEntryPoint {
                    model,
                    takes_tensors: true,
                } => format!("{e}: POST /v2/models/{model}/infer"),
                ServeError::WrongEntryPoint { model, .. } => {
                    format!("{e}: POST /v1/models/{model}/predict")
                }
                _ => e.to_string(),
            },
        }
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        ServeError::Call(e).into()
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        ServeError::Route(e).into()
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
