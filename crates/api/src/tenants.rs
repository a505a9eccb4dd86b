//! `/api/tenants*`: list, read, create or replace, delete and terminate tenants,
//! in Supavisor's shapes (`{"data": ...}`, `{"errors": {...}}`).
//!
//! Reads come from the running service (file and store tenants alike). Writes go
//! to the metadata store first, then are applied here at once; other nodes apply
//! them when the store's notification reaches them. File tenants are read-only.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Map, Value};
use tidepool_core::app::ApplyError;
use tidepool_core::config::ConfigError;
use tidepool_core::tenants::{TenantEntry, TenantSource};
use tidepool_store::PutOutcome;

use crate::body::parse_tenant;
use crate::error::ApiError;
use crate::openapi::{ErrorsDoc, TenantBody, TenantData, TenantList};
use crate::state::{store_call, ApiState};

/// A tenant as the API shows it: its fields as given (never a password), its
/// `external_id`, and where it comes from (`"source": "file" | "store"`).
pub fn tenant_json(entry: &TenantEntry) -> Value {
    let mut fields = match serde_json::to_value(&entry.tenant.raw) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    fields.insert("external_id".into(), Value::from(entry.tenant.id.as_str()));
    fields.insert("source".into(), Value::from(entry.source.as_str()));
    Value::Object(fields)
}

fn file_tenant(state: &ApiState, id: &str) -> Result<(), ApiError> {
    match state.app.tenants.get(id) {
        Some(e) if e.source == TenantSource::File => Err(ApiError::FileTenant(id.to_owned())),
        _ => Ok(()),
    }
}

/// Every tenant, sorted by id.
#[utoipa::path(
    get,
    path = "/api/tenants",
    tag = "tenants",
    responses(
        (status = 200, description = "Every tenant", body = TenantList),
        (status = 401, description = "No bearer token", body = ErrorsDoc),
        (status = 403, description = "Bad or expired token", body = ErrorsDoc),
    ),
    security(("bearer" = []))
)]
pub async fn list_tenants(State(state): State<ApiState>) -> Json<Value> {
    let all: Vec<Value> = state.app.tenants.list().iter().map(tenant_json).collect();
    Json(json!({ "data": all }))
}

/// One tenant.
#[utoipa::path(
    get,
    path = "/api/tenants/{id}",
    tag = "tenants",
    params(("id" = String, Path, description = "The tenant's external_id")),
    responses(
        (status = 200, description = "The tenant", body = TenantData),
        (status = 401, description = "No bearer token", body = ErrorsDoc),
        (status = 403, description = "Bad or expired token", body = ErrorsDoc),
        (status = 404, description = "No such tenant", body = ErrorsDoc),
    ),
    security(("bearer" = []))
)]
pub async fn get_tenant(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let entry = state.app.tenants.get(&id).ok_or(ApiError::NotFound)?;
    Ok(Json(json!({ "data": tenant_json(&entry) })))
}

/// Creates or replaces a tenant. The id in the path is the tenant's `external_id`.
#[utoipa::path(
    put,
    path = "/api/tenants/{id}",
    tag = "tenants",
    params(("id" = String, Path, description = "The tenant's external_id")),
    request_body(content = TenantBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = TenantData),
        (status = 200, description = "Replaced", body = TenantData),
        (status = 401, description = "No bearer token", body = ErrorsDoc),
        (status = 403, description = "Bad or expired token", body = ErrorsDoc),
        (status = 409, description = "The tenant is defined in the configuration file", body = ErrorsDoc),
        (status = 413, description = "Body over 1 MiB", body = ErrorsDoc),
        (status = 422, description = "Malformed JSON or an invalid field (the key names it)", body = ErrorsDoc),
        (status = 503, description = "No metadata store configured, or it is unavailable", body = ErrorsDoc),
    ),
    security(("bearer" = []))
)]
pub async fn put_tenant(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge,
        _ => ApiError::invalid("body", "cannot read the request body"),
    })?;
    let mut raw = parse_tenant(&body)?;
    match raw.external_id.as_deref() {
        Some(given) if given != id => {
            return Err(ApiError::invalid(
                "external_id",
                "does not match the id in the path",
            ))
        }
        _ => raw.external_id = Some(id.clone()),
    }
    file_tenant(&state, &id)?;
    let store = state.store()?;
    state.app.check_tenant(&raw).map_err(config_error)?;
    let outcome = store_call!("put", store.put(&raw))?;
    match state.app.apply_store_tenant(&raw) {
        Ok(_) => {}
        Err(ApplyError::FileTenant(_)) => return Err(ApiError::FileTenant(id)),
        Err(ApplyError::Invalid(e)) => return Err(config_error(e)),
    }
    tracing::info!(tenant = %id, ?outcome, "tenant stored through the API");
    let entry = state.app.tenants.get(&id).ok_or(ApiError::NotFound)?;
    let status = match outcome {
        PutOutcome::Created => StatusCode::CREATED,
        PutOutcome::Updated => StatusCode::OK,
    };
    Ok((status, Json(json!({ "data": tenant_json(&entry) }))))
}

fn config_error(e: ConfigError) -> ApiError {
    match e {
        ConfigError::Invalid { key, reason } => ApiError::Invalid { field: key, reason },
        other => ApiError::invalid("tenant", other.to_string()),
    }
}

/// Deletes a tenant: its pools close and its clients are sent away.
#[utoipa::path(
    delete,
    path = "/api/tenants/{id}",
    tag = "tenants",
    params(("id" = String, Path, description = "The tenant's external_id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No bearer token", body = ErrorsDoc),
        (status = 403, description = "Bad or expired token", body = ErrorsDoc),
        (status = 404, description = "No such tenant", body = ErrorsDoc),
        (status = 409, description = "The tenant is defined in the configuration file", body = ErrorsDoc),
        (status = 503, description = "No metadata store configured, or it is unavailable", body = ErrorsDoc),
    ),
    security(("bearer" = []))
)]
pub async fn delete_tenant(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    file_tenant(&state, &id)?;
    let store = state.store()?;
    let stored = store_call!("delete", store.delete(&id))?;
    let here = state
        .app
        .remove_store_tenant(&id)
        .map_err(|_| ApiError::FileTenant(id.clone()))?;
    if !(stored || here) {
        return Err(ApiError::NotFound);
    }
    tracing::info!(tenant = %id, "tenant deleted through the API");
    Ok(StatusCode::NO_CONTENT)
}

/// Closes a tenant's pools and sends its clients away, on every node; the tenant
/// stays and new clients start afresh.
#[utoipa::path(
    post,
    path = "/api/tenants/{id}/terminate",
    tag = "tenants",
    params(("id" = String, Path, description = "The tenant's external_id")),
    responses(
        (status = 204, description = "Terminated"),
        (status = 401, description = "No bearer token", body = ErrorsDoc),
        (status = 403, description = "Bad or expired token", body = ErrorsDoc),
        (status = 404, description = "No such tenant", body = ErrorsDoc),
        (status = 503, description = "Terminated here, but the store could not tell the other nodes", body = ErrorsDoc),
    ),
    security(("bearer" = []))
)]
pub async fn terminate_tenant(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.app.terminate_tenant(&id) {
        return Err(ApiError::NotFound);
    }
    tracing::info!(tenant = %id, "tenant terminated through the API");
    if let Some(store) = &state.store {
        store_call!("announce_terminate", store.announce_terminate(&id))?;
    }
    Ok(StatusCode::NO_CONTENT)
}
