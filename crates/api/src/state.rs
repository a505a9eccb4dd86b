//! What every handler shares: the running service, the metadata store (if any)
//! and the token checks. Cloned per request (a few `Arc`s).

use std::sync::Arc;
use std::time::Duration;

use tidepool_core::secret::Secret;
use tidepool_core::App;
use tidepool_store::{Store, StoreError};

use crate::auth::TokenVerifier;
use crate::error::ApiError;

/// How long one store call may take before the API answers 503.
pub(crate) const STORE_DEADLINE: Duration = Duration::from_secs(10);

/// The API's shared state.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) app: Arc<App>,
    pub(crate) store: Option<Arc<Store>>,
    pub(crate) api_tokens: Arc<TokenVerifier>,
    /// `None`: `/metrics` is open.
    pub(crate) metrics_tokens: Option<Arc<TokenVerifier>>,
}

impl ApiState {
    /// `api_secret` signs `/api/tenants*` tokens; `metrics_secret`, when given,
    /// signs `/metrics` tokens. Without a `store` tenants are read-only.
    pub fn new(
        app: Arc<App>,
        store: Option<Arc<Store>>,
        api_secret: &Secret,
        metrics_secret: Option<&Secret>,
    ) -> Self {
        Self {
            app,
            store,
            api_tokens: Arc::new(TokenVerifier::new(api_secret)),
            metrics_tokens: metrics_secret.map(|s| Arc::new(TokenVerifier::new(s))),
        }
    }

    /// The store, or 503 when none is configured.
    pub(crate) fn store(&self) -> Result<&Store, ApiError> {
        self.store.as_deref().ok_or(ApiError::NoStore)
    }
}

/// Runs one store call within [`STORE_DEADLINE`]. A failure is logged (the
/// client only learns that the store is unavailable).
///
/// A macro rather than an `async fn` over a generic future: such a function makes
/// the handler futures fail axum's `Send` check (rust-lang/rust#110338).
macro_rules! store_call {
    ($what:literal, $call:expr) => {
        $crate::state::store_result(
            $what,
            tokio::time::timeout($crate::state::STORE_DEADLINE, $call).await,
        )
    };
}
pub(crate) use store_call;

/// The outcome of one deadline-bound store call, as the API reports it.
pub(crate) fn store_result<T>(
    what: &str,
    result: Result<Result<T, StoreError>, tokio::time::error::Elapsed>,
) -> Result<T, ApiError> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(StoreError::InvalidTenant { reason })) => Err(ApiError::invalid("tenant", reason)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "metadata store: {what} failed");
            Err(ApiError::StoreUnavailable)
        }
        Err(_) => {
            tracing::error!("metadata store: {what} did not answer within {STORE_DEADLINE:?}");
            Err(ApiError::StoreUnavailable)
        }
    }
}
