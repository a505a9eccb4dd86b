//! Tidepool's management HTTP API: tenants (`/api/tenants*`), health
//! (`/api/health`), Prometheus metrics (`/metrics`), the OpenAPI description
//! (`/api/openapi`) and Swagger UI (`/swaggerui`, files built into the binary);
//! and the loop that keeps a node's tenants in step with the metadata store
//! ([`sync`]).
//!
//! It owns HTTP: routes, bodies, status codes, tokens. It does not validate tenants
//! (core does), store them (the store does) or touch pools and clients (core's
//! `App` does, when asked).

mod auth;
mod body;
mod error;
mod health;
mod metrics;
pub mod openapi;
mod state;
pub mod sync;
mod tenants;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

pub use error::ApiError;
pub use state::ApiState;

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The API's routes over `state`.
pub fn router(state: ApiState) -> Router {
    let tenants = Router::new()
        .route("/api/tenants", get(tenants::list_tenants))
        .route(
            "/api/tenants/{id}",
            get(tenants::get_tenant)
                .put(tenants::put_tenant)
                .delete(tenants::delete_tenant),
        )
        .route(
            "/api/tenants/{id}/terminate",
            post(tenants::terminate_tenant),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.api_tokens.clone(),
            auth::require_token,
        ));
    Router::new()
        .merge(tenants)
        .route("/api/health", get(health::health))
        .route("/metrics", get(metrics::all_metrics))
        .route("/metrics/{tenant}", get(metrics::tenant_metrics))
        .fallback(not_found)
        .with_state(state)
        .merge(SwaggerUi::new("/swaggerui").url("/api/openapi", openapi::ApiDoc::openapi()))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_oversized))
}

/// Answers 413 at once to a request whose `Content-Length` is over the limit,
/// without waiting for a body it will not read. (Bodies without a length are cut
/// off at the limit by `DefaultBodyLimit`.)
async fn refuse_oversized(request: Request, next: Next) -> Response {
    let oversized = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BODY_BYTES as u64);
    if oversized {
        return ApiError::TooLarge.into_response();
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// Serves the API on `listener` until `stop` fires; then lets requests in flight
/// finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    stop: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(listen = %addr, "management API listening");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}
