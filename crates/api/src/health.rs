//! `GET /api/health`: whether this node can serve. Open (no token), for load
//! balancers and orchestrators: 200 when the pooler is running and the metadata
//! store (if one is configured) answers; 503 while shutting down or when the store
//! does not answer.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::openapi::HealthData;
use crate::state::ApiState;

/// How long the store may take to answer the health check's ping.
const PING_DEADLINE: Duration = Duration::from_secs(2);

/// Health of this node.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "health",
    responses(
        (status = 200, description = "Serving", body = HealthData),
        (status = 503, description = "Shutting down, or the metadata store does not answer", body = HealthData),
    )
)]
pub async fn health(State(state): State<ApiState>) -> (StatusCode, Json<Value>) {
    let store = match &state.store {
        None => "none",
        Some(store) => match tokio::time::timeout(PING_DEADLINE, store.ping()).await {
            Ok(true) => "ok",
            Ok(false) | Err(_) => "unavailable",
        },
    };
    let shutting_down = state.app.shutdown.is_cancelled();
    let healthy = !shutting_down && store != "unavailable";
    let status = if healthy { "ok" } else { "unavailable" };
    let body = json!({
        "data": {
            "status": status,
            "store": store,
            "shutting_down": shutting_down,
            "tenants": state.app.tenants.len(),
        }
    });
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}
