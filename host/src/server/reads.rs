//! What a credential can see beyond management: `/metrics` and the OIP statistics and configs
//! (`/v2/models/stats`, `/v2/models/{m}[/versions/{v}]/stats|config`). They follow the read rules
//! of [`crate::teams`]:
//!
//! - with no credential configured at all (no admin token, tokens file, inference or metrics
//!   token), they are open, as they always were;
//! - `/metrics` otherwise needs a credential: any management credential (a scrape-only one, role
//!   `metrics` or `--metrics-token`, included), or the inference token;
//! - statistics and configs need a management credential that is not scrape-only (403 for one that
//!   is), or the inference token (OIP clients read a model's config to call it).
//!
//! 401s and 403s are counted; 403s are sampled into the audit log (see [`super::auth`]).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::auth::{bearer, refuse_read, unauthorized, Token};
use super::{oip, AppState, ServeOptions};
use crate::registry::audit::AuditLog;
use crate::teams::Teams;

/// What is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    /// `/metrics`.
    Metrics,
    /// A model's (or every model's) statistics or config.
    Models,
}

/// What a read gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Served: no credential is configured for it, or the caller has one that may read it.
    Allowed,
    /// 401: no token, or one nobody has.
    Unauthorized(String),
    /// 403: a credential that may not read this.
    Forbidden {
        /// The credential's name.
        actor: String,
        /// Why.
        reason: String,
    },
}

/// Whether a caller with `token` may read `read` (`what` names it in a refusal).
pub(super) fn decide(
    read: Read,
    what: &str,
    teams: &Teams,
    inference: Option<&Token>,
    token: Option<&str>,
) -> Verdict {
    let guarded = match read {
        Read::Metrics => teams.guards_metrics() || inference.is_some(),
        Read::Models => teams.required() || inference.is_some(),
    };
    if !guarded {
        return Verdict::Allowed;
    }
    if let (Some(inference), Some(token)) = (inference, token) {
        if inference.matches(token) {
            return Verdict::Allowed;
        }
    }
    match teams.find(token) {
        Ok(_) if read == Read::Metrics => Verdict::Allowed,
        Ok(caller) => match caller.may_read(what) {
            Ok(()) => Verdict::Allowed,
            Err(reason) => Verdict::Forbidden {
                actor: caller.actor().to_owned(),
                reason,
            },
        },
        Err(e) => Verdict::Unauthorized(e.to_string()),
    }
}

#[derive(Clone)]
struct Guard {
    read: Read,
    teams: Arc<Teams>,
    audit: AuditLog,
    inference: Option<Token>,
}

async fn guard(guard: Guard, request: Request, next: Next) -> Response {
    let what = format!("{} {}", request.method(), request.uri().path());
    let verdict = decide(
        guard.read,
        &what,
        &guard.teams,
        guard.inference.as_ref(),
        bearer(request.headers()),
    );
    match verdict {
        Verdict::Allowed => next.run(request).await,
        Verdict::Unauthorized(message) => {
            super::auth::count_refusal(
                axum::http::StatusCode::UNAUTHORIZED,
                &super::auth::route_of(&request),
            );
            unauthorized(&message)
        }
        Verdict::Forbidden { actor, reason } => refuse_read(&guard.audit, &request, &actor, reason),
    }
}

/// The routes read under these rules, each guarded.
pub(super) fn routes(options: &ServeOptions) -> Router<AppState> {
    let layer = |read: Read| {
        let g = Guard {
            read,
            teams: options.teams.clone(),
            audit: options.audit.clone(),
            inference: options.inference_token.clone(),
        };
        axum::middleware::from_fn(move |request, next| guard(g.clone(), request, next))
    };
    let metrics = Router::new()
        .route("/metrics", get(super::render_metrics))
        .route_layer(layer(Read::Metrics));
    let models = Router::new()
        .route("/v2/models/stats", get(oip::all_stats))
        .route("/v2/models/{model}/stats", get(oip::model_stats))
        .route("/v2/models/{model}/config", get(oip::model_config))
        .route(
            "/v1/models/{model}/monitoring",
            get(super::monitoring::monitoring),
        )
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(oip::model_version_config),
        )
        .route(
            "/v2/models/{model}/versions/{version}/stats",
            get(oip::model_version_stats),
        )
        .route_layer(layer(Read::Models));
    // Reads take no body.
    metrics.merge(models).layer(DefaultBodyLimit::max(64 << 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn teams(admin: Option<&str>, metrics: Option<&str>) -> Teams {
        Teams::load_with(admin, metrics, None).unwrap()
    }

    #[test]
    fn with_no_credential_configured_everything_is_open() {
        let open = teams(None, None);
        for read in [Read::Metrics, Read::Models] {
            for token in [None, Some("anything")] {
                assert_eq!(decide(read, "x", &open, None, token), Verdict::Allowed);
            }
        }
    }

    #[test]
    fn with_credentials_reads_need_one_and_a_scrape_token_reads_metrics_only() {
        let t = teams(Some("root"), Some("scrape"));
        let inference = Token::new("infer");
        for read in [Read::Metrics, Read::Models] {
            for token in [None, Some("wrong")] {
                assert!(
                    matches!(
                        decide(read, "x", &t, Some(&inference), token),
                        Verdict::Unauthorized(_)
                    ),
                    "{read:?} {token:?}"
                );
            }
            for token in ["root", "infer"] {
                assert_eq!(
                    decide(read, "x", &t, Some(&inference), Some(token)),
                    Verdict::Allowed,
                    "{read:?} {token}"
                );
            }
        }
        assert_eq!(
            decide(Read::Metrics, "x", &t, None, Some("scrape")),
            Verdict::Allowed
        );
        match decide(
            Read::Models,
            "GET /v2/models/stats",
            &t,
            None,
            Some("scrape"),
        ) {
            Verdict::Forbidden { actor, reason } => {
                assert_eq!(actor, "metrics");
                assert!(reason.contains("/v2/models/stats"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_metrics_token_alone_guards_metrics_and_an_inference_token_alone_guards_both() {
        let scrape = teams(None, Some("scrape"));
        assert!(matches!(
            decide(Read::Metrics, "x", &scrape, None, None),
            Verdict::Unauthorized(_)
        ));
        assert_eq!(
            decide(Read::Models, "x", &scrape, None, None),
            Verdict::Allowed,
            "nobody could read them otherwise"
        );
        let open = teams(None, None);
        let inference = Token::new("infer");
        for read in [Read::Metrics, Read::Models] {
            assert!(matches!(
                decide(read, "x", &open, Some(&inference), None),
                Verdict::Unauthorized(_)
            ));
            assert_eq!(
                decide(read, "x", &open, Some(&inference), Some("infer")),
                Verdict::Allowed
            );
        }
    }
}
