//! Authentication and authorisation over HTTP: the translation of [`crate::teams`] into statuses.
//!
//! - Management routes pass [`identified`]: the bearer token becomes a [`Caller`] in the request's
//!   extensions, or the answer is 401 (no token, or one no credential has). Read-only routes need
//!   nothing more, but a scrape-only credential (role `metrics`) gets 403 on every one of them.
//! - A handler that changes a model takes a [`super::change::Change`], which asks
//!   [`Identified::permit`] before the handler runs: 403 with the reason when the credential's
//!   patterns or roles do not cover it (the attempt is audited); the change is
//!   [`Identified::record`]ed once it is done.
//! - Inference routes keep one optional shared [`Token`].
//! - `/metrics` and the OIP statistics and configs follow the read rules ([`super::reads`]).
//!
//! Every 401 and 403 of these routes is counted (`ferry_http_refused_total{status, route}`); 403s
//! are sampled into the audit log ([`AuditLog::refusal`]), so a loop of them cannot grow the store
//! without bound. Tokens are compared by hash or in constant time, and never logged.

use axum::extract::{FromRequestParts, MatchedPath, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::Arc;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::{AppState, REQUEST_ID};
use crate::registry::audit::{AuditLog, AuditRecord};
use crate::registry::check_name;
use crate::teams::{Action, Caller, Teams};

/// A secret that must accompany requests as `Authorization: Bearer <token>`.
#[derive(Clone)]
pub struct Token(std::sync::Arc<[u8]>);

impl Token {
    /// Wraps the configured token.
    pub fn new(token: &str) -> Token {
        Token(token.as_bytes().into())
    }

    fn admits(&self, request: &Request) -> bool {
        bearer(request.headers()).is_some_and(|given| self.matches(given))
    }

    /// Whether `given` is this token.
    pub(super) fn matches(&self, given: &str) -> bool {
        // Constant time in the content; the length is not a secret worth hiding.
        given.len() == self.0.len() && bool::from(given.as_bytes().ct_eq(&self.0))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The bearer token of a request (`Authorization: Bearer <token>`; the scheme in any case).
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_of(headers.get(AUTHORIZATION)?.to_str().ok()?)
}

/// The token of an `Authorization` value (`Bearer <token>`; the scheme in any case), whatever
/// carried it (an HTTP header, gRPC metadata).
pub(super) fn bearer_of(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub(super) fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response
        .headers_mut()
        .insert("www-authenticate", "Bearer".parse().expect("static header"));
    response
}

/// Middleware: 401 unless the request carries `token`.
pub async fn require(token: Token, request: Request, next: Next) -> Response {
    if token.admits(&request) {
        next.run(request).await
    } else {
        count_refusal(StatusCode::UNAUTHORIZED, &route_of(&request));
        unauthorized("missing or wrong bearer token")
    }
}

/// The route's pattern (`/v1/models/{model}`): a bounded label, never a caller's text.
pub(super) fn route_of(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned()
}

/// Counts a 401 or a 403 of `route`.
pub(super) fn count_refusal(status: StatusCode, route: &str) {
    metrics::counter!(
        "ferry_http_refused_total",
        "status" => status.as_str().to_owned(),
        "route" => route.to_owned()
    )
    .increment(1);
}

/// The model a request's path names (`/v1/models/{model}/…`, `/v2/models/{model}/…`,
/// `/v2/repository/models/{model}/…`), when it is a model name; empty otherwise.
pub(super) fn model_of(request: &Request) -> String {
    let route = route_of(request);
    let Some(at) = route.split('/').position(|s| s == "{model}") else {
        return String::new();
    };
    let model = request.uri().path().split('/').nth(at).unwrap_or_default();
    if check_name("model", model).is_ok() {
        model.to_owned()
    } else {
        String::new()
    }
}

/// A 403 of a read (`what`) by `caller`: counted, sampled into the audit log (written on its own
/// task, so the caller is answered at once), logged.
pub(super) fn refuse_read(
    audit: &AuditLog,
    request: &Request,
    actor: &str,
    reason: String,
) -> Response {
    let route = route_of(request);
    count_refusal(StatusCode::FORBIDDEN, &route);
    tracing::warn!(actor, route, reason = %reason, "read refused");
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(|id| id.chars().take(128).collect::<String>());
    let record = AuditRecord::denied(actor, "read", &model_of(request), &reason)
        .request_id(request_id.as_deref());
    let audit = audit.clone();
    tokio::spawn(async move { audit.refusal(record, &route).await });
    ApiError::new(StatusCode::FORBIDDEN, reason).into_response()
}

/// Management routes behind the teams of `options`: every request is identified (see the module
/// docs).
pub fn identified(router: Router<AppState>, options: &super::ServeOptions) -> Router<AppState> {
    describe_metrics();
    let (teams, audit) = (options.teams.clone(), options.audit.clone());
    teams.publish_metrics();
    router.route_layer(axum::middleware::from_fn(move |request, next| {
        identify(teams.clone(), audit.clone(), request, next)
    }))
}

async fn identify(
    teams: Arc<Teams>,
    audit: AuditLog,
    mut request: Request,
    next: Next,
) -> Response {
    let route = route_of(&request);
    let response = match teams.authenticate(bearer(request.headers())) {
        Ok(caller) if caller.scrape_only() => {
            let reason = caller
                .may_read(&format!("{} {}", request.method(), route))
                .err()
                .unwrap_or_default();
            // Counted there.
            return refuse_read(&audit, &request, caller.actor(), reason);
        }
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => unauthorized(&e.to_string()),
    };
    // The 403s of handlers (a credential's scope) as well as this layer's 401s.
    if matches!(
        response.status(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ) {
        count_refusal(response.status(), &route);
    }
    response
}

fn describe_metrics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        metrics::describe_counter!(
            "ferry_management_denied_total",
            "Management requests refused (403) because the credential's models or roles do not cover them, by actor and action"
        );
        metrics::describe_counter!(
            "ferry_http_refused_total",
            "Requests refused with 401 (no or wrong token) or 403 (outside the credential's scope), by status and route pattern"
        );
        metrics::describe_counter!(
            "ferry_audit_refusals_skipped_total",
            "Refused attempts counted but not written to the audit log (at most 10 a minute per credential and route are)"
        );
        metrics::describe_counter!(
            "ferry_audit_write_failures_total",
            "Done management actions whose audit record could not be written to the store"
        );
        metrics::describe_counter!(
            "ferry_tokens_reloads_total",
            "Changes of the tokens file seen while serving, applied or refused"
        );
        metrics::describe_gauge!(
            "ferry_tokens_file_valid",
            "1 while the tokens file as it is now is in force, 0 when its last change was refused"
        );
        metrics::describe_gauge!(
            "ferry_credentials",
            "Management credentials in force (the admin token's included)"
        );
    });
}

/// Who calls a management route, as identified, with the request's id and the audit log that
/// records what they do.
pub struct Identified {
    /// The caller, as identified.
    pub caller: Caller,
    request_id: Option<String>,
    audit: AuditLog,
}

impl FromRequestParts<AppState> for Identified {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Only a route outside `identified` lacks one: a wiring mistake, refused rather than open.
        let caller = parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "this management route does not identify its callers",
            )
        })?;
        let request_id = parts
            .headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            // A caller's own id is kept as given, within reason: records stay small.
            .map(|id| id.chars().take(128).collect());
        Ok(Identified {
            caller,
            request_id,
            audit: state.audit.clone(),
        })
    }
}

impl Identified {
    /// `caller`, identified by a front end other than the REST routes' layer (gRPC metadata), for
    /// the request `request_id`.
    pub(super) fn new(caller: Caller, request_id: Option<String>, audit: AuditLog) -> Identified {
        Identified {
            caller,
            request_id,
            audit,
        }
    }

    /// 403 unless the caller may do `action` on `model` (a refusal is audited as `denied`); 400
    /// when `model` is no model name, before anything is recorded under it.
    pub async fn permit(&self, action: Action, model: &str) -> Result<(), ApiError> {
        check_name("model", model).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let Err(denied) = self.caller.may(action, model) else {
            return Ok(());
        };
        let actor = self.caller.actor();
        let message = denied.to_string();
        tracing::warn!(
            actor,
            action = action.name(),
            model,
            reason = %message,
            "management change refused"
        );
        metrics::counter!(
            "ferry_management_denied_total",
            "actor" => actor.to_owned(),
            "action" => action.name()
        )
        .increment(1);
        // Sampled: a loop of refusals costs the store a few records a minute.
        let record = AuditRecord::denied(actor, action.name(), model, &message)
            .request_id(self.request_id.as_deref());
        let audit = self.audit.clone();
        let _ = tokio::spawn(async move { audit.refusal(record, action.name()).await }).await;
        Err(ApiError::new(StatusCode::FORBIDDEN, message))
    }

    /// A record of `action` on `model` by this caller, for this request, to fill in and
    /// [`Identified::record`].
    pub fn entry(&self, action: Action, model: &str) -> AuditRecord {
        AuditRecord::new(self.caller.actor(), action.name(), model)
            .request_id(self.request_id.as_deref())
    }

    /// Records a done action in the audit log. Never fails (see [`AuditLog::record`]).
    pub async fn record(&self, record: AuditRecord) {
        self.write(record).await
    }

    async fn write(&self, record: AuditRecord) {
        // On its own task: a client that hangs up drops the handler, not the record of what it did.
        let audit = self.audit.clone();
        let _ = tokio::spawn(async move { audit.record(record).await }).await;
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
        assert!(
            t.admits(&request(Some("bearer s3cret"))),
            "the scheme is case-insensitive"
        );
        assert!(!t.admits(&request(Some("Bearer s3cre"))));
        assert!(!t.admits(&request(Some("Bearer s3cret2"))));
        assert!(!t.admits(&request(Some("Basic s3cret"))));
        assert!(!t.admits(&request(Some("Bearers3cret"))));
        assert!(!t.admits(&request(None)));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }
}
