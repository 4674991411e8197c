//! The error a model returns; the host maps its kind to an HTTP status.

use std::fmt;

/// Why a call failed. [`Error::invalid_input`] is the caller's fault (HTTP 422); anything else is the
/// model's (HTTP 500). Any `std::error::Error` converts into an internal error with `?`.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The request does not make sense to the model (e.g. an unknown category, a missing feature).
    InvalidInput(String),
    /// The model does not offer that entry point.
    Unsupported(String),
    /// The model failed on its own (bad weights, a library error).
    Internal(String),
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The caller sent something the model cannot use.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }
    /// The model does not offer this entry point.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::Unsupported(message.into())
    }
    /// The model itself failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Error::Unsupported(m) => write!(f, "unsupported: {m}"),
            Error::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error::Internal(e.to_string())
    }
}
