//! `GET /metrics` and `GET /metrics/{tenant}`: Prometheus text of every tenant or
//! of one. Open unless a metrics secret is configured (`METRICS_JWT_SECRET`); then
//! a bearer token signed with it is required, as for the tenants API.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::openapi::ErrorsDoc;
use crate::state::ApiState;

/// The Prometheus text exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    match &state.metrics_tokens {
        Some(verifier) => verifier.check(headers),
        None => Ok(()),
    }
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

/// Metrics of every tenant.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    responses(
        (status = 200, description = "Prometheus text", content_type = "text/plain", body = String),
        (status = 401, description = "A metrics secret is set and no token was given", body = ErrorsDoc),
        (status = 403, description = "Bad or expired token", body = ErrorsDoc),
    ),
    security((), ("bearer" = []))
)]
pub async fn all_metrics(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    Ok(text(state.app.render_metrics(None).unwrap_or_default()))
}

/// Metrics of one tenant.
#[utoipa::path(
    get,
    path = "/metrics/{tenant}",
    tag = "metrics",
    params(("tenant" = String, Path, description = "The tenant's external_id")),
    responses(
        (status = 200, description = "Prometheus text", content_type = "text/plain", body = String),
        (status = 401, description = "A metrics secret is set and no token was given", body = ErrorsDoc),
        (status = 403, description = "Bad or expired token", body = ErrorsDoc),
        (status = 404, description = "No such tenant", body = ErrorsDoc),
    ),
    security((), ("bearer" = []))
)]
pub async fn tenant_metrics(
    State(state): State<ApiState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let body = state
        .app
        .render_metrics(Some(&tenant))
        .ok_or(ApiError::NotFound)?;
    Ok(text(body))
}
