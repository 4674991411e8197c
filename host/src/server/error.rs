//! The one error type of the HTTP layer: a status and a message, rendered as `{"error": "..."}`,
//! and, for a failure of the host's own (a 5xx), the error that caused it, kept whole for the log
//! and never shown to the caller.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::registry::{ChangeError, RouteError};
use crate::runtime::CallError;
use crate::serving::ServeError;
use crate::storage::StorageError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for the caller.
    pub message: String,
    /// Seconds after which a retry may succeed (503 only).
    pub retry_after: Option<u32>,
    /// What caused it, with its chain, for the log.
    pub source: Option<anyhow::Error>,
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
            source: None,
        }
    }

    /// The same answer, remembering `source` for the log.
    pub fn caused_by(mut self, source: impl Into<anyhow::Error>) -> Self {
        self.source = Some(source.into());
        self
    }
}

impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> Self {
        ApiError {
            status: StatusCode::from_u16(super::status::of(&e))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            retry_after: super::status::retry_after(&e),
            source: None,
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

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        let status = StatusCode::from_u16(super::status::of_change(&e))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match super::status::next_step(&e) {
            Some(next) => format!("{e:#} ({next})"),
            None => format!("{e:#}"),
        };
        let mut error = ApiError::new(status, message);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            error.retry_after = Some(5);
        }
        match e {
            ChangeError::Store(source) => error.caused_by(source),
            _ => error,
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        ChangeError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(source) = &self.source {
            // The host's own failure: the caller gets the message, the log the whole chain.
            tracing::error!(status = self.status.as_u16(), error = %self.message, cause = format!("{source:#}"), "request failed");
        }
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
