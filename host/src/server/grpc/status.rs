//! Why a gRPC call got no answer, as a gRPC status: the HTTP front end's status for the same
//! error (`server::status`) turned into the code gRPC clients act on, with the same message, and a
//! `retry-after` in the trailers where HTTP sends `Retry-After`.

use axum::http::StatusCode;
use tonic::{Code, Status};

use crate::server::error::ApiError;

/// The gRPC code of an HTTP status.
pub(super) fn code_of(status: StatusCode) -> Code {
    match status.as_u16() {
        400 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 | 504 => Code::DeadlineExceeded,
        409 => Code::FailedPrecondition,
        // Too large for the model or the host: what gRPC answers a message over its size limit.
        413 | 507 => Code::ResourceExhausted,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// `e` as a gRPC status.
pub(super) fn of(e: ApiError) -> Status {
    if let Some(source) = &e.source {
        // The host's own failure: the caller gets the message, the log the whole chain.
        tracing::error!(status = e.status.as_u16(), error = %e.message, cause = format!("{source:#}"), "gRPC call failed");
    }
    let mut status = Status::new(code_of(e.status), e.message);
    if let Some(seconds) = e.retry_after {
        status
            .metadata_mut()
            .insert("retry-after", seconds.to_string().parse().expect("digits"));
    }
    status
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        of(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RouteError;
    use crate::runtime::CallError;
    use crate::serving::ServeError;

    #[test]
    fn serving_errors_get_the_codes_clients_act_on_with_the_same_messages() {
        let unknown = of(ServeError::Route(RouteError::UnknownModel("m".into())).into());
        assert_eq!(unknown.code(), Code::NotFound);
        assert_eq!(unknown.message(), "unknown model `m`");
        let invalid = of(ServeError::Invalid("input `x`: wrong shape".into()).into());
        assert_eq!(invalid.code(), Code::InvalidArgument);
        let busy = of(CallError::Overloaded(Default::default()).into());
        assert_eq!(busy.code(), Code::Unavailable);
        assert_eq!(busy.metadata().get("retry-after").unwrap(), "1");
        let slow = of(CallError::DeadlineExceeded(Default::default()).into());
        assert_eq!(slow.code(), Code::DeadlineExceeded);
        let trapped = of(CallError::Trapped("unreachable".into()).into());
        assert_eq!(trapped.code(), Code::Internal);
    }
}
