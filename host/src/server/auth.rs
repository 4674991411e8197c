//! Bearer tokens: one for management routes, optionally one for inference. Compared in constant time,
//! never logged.

use axum::extract::Request;
use axum::http::header::AUTHORIZATION;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// A secret that must accompany requests as `Authorization: Bearer <token>`.
#[derive(Clone)]
pub struct Token(std::sync::Arc<[u8]>);

impl Token {
    /// Wraps the configured token.
    pub fn new(token: &str) -> Token {
        Token(token.as_bytes().into())
    }

    fn admits(&self, request: &Request) -> bool {
        let Some(given) = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some(given) = given.strip_prefix("Bearer ") else {
            return false;
        };
        // Constant time in the content; the length is not a secret worth hiding.
        given.len() == self.0.len() && bool::from(given.as_bytes().ct_eq(&self.0))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Middleware: 401 unless the request carries `token`.
pub async fn require(token: Token, request: Request, next: Next) -> Response {
    if token.admits(&request) {
        next.run(request).await
    } else {
        let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
            .into_response();
        response
            .headers_mut()
            .insert("www-authenticate", "Bearer".parse().expect("static header"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: Option<&str>) -> Request {
        let mut b = axum::http::Request::builder();
        if let Some(a) = auth {
            b = b.header(AUTHORIZATION, a);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let t = Token::new("s3cret");
        assert!(t.admits(&request(Some("Bearer s3cret"))));
        assert!(!t.admits(&request(Some("Bearer s3cre"))));
        assert!(!t.admits(&request(Some("Bearer s3cret2"))));
        assert!(!t.admits(&request(Some("Basic s3cret"))));
        assert!(!t.admits(&request(None)));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }
}
