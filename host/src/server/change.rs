//! A management change as a handler receives it: the caller identified, permitted to make this
//! action on the path's model (400 for a bad model name, 403 — audited as denied — outside the
//! credential's scope), all before the handler runs or reads a byte of the body; then run to the end
//! and recorded in the audit log ([`Change::run`]). So a management handler states only its change:
//!
//! ```ignore
//! async fn delete_version(change: Change<act::DeleteVersion>, ...) -> ... {
//!     change.run(|record| async move {
//!         registry.delete_version(&model, &version).await?;
//!         Ok(((), record.version(&version)))
//!     }).await
//! }
//! ```

use std::future::Future;
use std::marker::PhantomData;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::StatusCode;

use super::auth::Identified;
use super::error::ApiError;
use super::AppState;
use crate::registry::audit::AuditRecord;
use crate::teams::Action;

/// A management action as a type, so that a handler's signature says which one it makes.
pub trait Act: Send + Sync + 'static {
    /// The action.
    const ACTION: Action;
}

/// The management actions (see [`Action`]).
pub mod act {
    use super::{Act, Action};

    macro_rules! acts {
        ($($name:ident),* $(,)?) => {$(
            #[doc = concat!("[`Action::", stringify!($name), "`]")]
            pub struct $name;
            impl Act for $name {
                const ACTION: Action = Action::$name;
            }
        )*};
    }

    acts!(
        PutVersion,
        SetAlias,
        Rollback,
        SetTraffic,
        DeleteVersion,
        LoadModel,
        UnloadModel
    );
}

/// A permitted change of action `A` on the model the route names.
pub struct Change<A: Act> {
    caller: Identified,
    model: String,
    action: PhantomData<A>,
}

impl<A: Act> FromRequestParts<AppState> for Change<A> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Identified::from_request_parts(parts, state).await?;
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        // Every management route names its model; one that does not is a wiring mistake.
        let model = params
            .iter()
            .find(|(name, _)| *name == "model")
            .map(|(_, value)| value.to_owned())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "this management route names no model",
                )
            })?;
        Change::ask(caller, model).await
    }
}

impl<A: Act> Change<A> {
    /// A change of `model` by `caller`, once permitted (the extractor above asks the same for the
    /// REST routes; the gRPC front end asks it of a caller its metadata identified).
    pub(super) async fn ask(caller: Identified, model: String) -> Result<Change<A>, ApiError> {
        caller.permit(A::ACTION, &model).await?;
        Ok(Change {
            caller,
            model,
            action: PhantomData,
        })
    }

    /// Makes the change: `change` gets the audit record of this action on this model by this caller
    /// and answers what the handler needs and the record, filled in. Both run to the end on a task
    /// of their own: a client that hangs up mid-change drops its answer, never the change's record
    /// (a dropped handler would lose both at whatever point it had reached).
    pub async fn run<T, F, Fut>(self, change: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(AuditRecord) -> Fut,
        Fut: Future<Output = Result<(T, AuditRecord), ApiError>> + Send + 'static,
    {
        let made = change(self.caller.entry(A::ACTION, &self.model));
        let caller = self.caller;
        to_the_end(async move {
            let (answer, record) = made.await?;
            caller.record(record).await;
            Ok(answer)
        })
        .await
    }
}

/// Runs `work` to the end on a task of its own, whether or not its caller still waits.
pub(super) async fn to_the_end<T: Send + 'static>(
    work: impl Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(work).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the change failed unexpectedly: {e}"),
        )
    })?
}
