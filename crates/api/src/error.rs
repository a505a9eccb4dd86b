//! What the API answers when a request fails: one error type, its HTTP status and
//! its body, `{"errors": {"<field or detail>": ["<message>"]}}` as Supavisor shapes
//! them. Internal causes (store errors) go to the log; the client sees a short
//! message that holds no secret.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    MissingToken,
    /// A token that is malformed, wrongly signed, expired or not yet valid.
    #[error("invalid token: {0}")]
    BadToken(&'static str),
    #[error("Not Found")]
    NotFound,
    /// A field of the request is wrong; `field` is its path (`users[0].pool_size`).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The tenant is defined in the configuration file.
    #[error("tenant {0:?} is defined in the configuration file")]
    FileTenant(String),
    /// No metadata store is configured, so tenants cannot be changed here.
    #[error("no metadata store is configured")]
    NoStore,
    /// The metadata store failed or did not answer in time (details are logged).
    #[error("the metadata store is unavailable")]
    StoreUnavailable,
    /// The request body is larger than the API accepts.
    #[error("request body too large")]
    TooLarge,
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingToken => StatusCode::UNAUTHORIZED,
            Self::BadToken(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::FileTenant(_) => StatusCode::CONFLICT,
            Self::NoStore | Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The key under `errors` and the message a client may see.
    fn field_and_message(&self) -> (&str, String) {
        match self {
            Self::Invalid { field, reason } => (field, reason.clone()),
            Self::FileTenant(_) => (
                "external_id",
                "tenant is defined in the configuration file; change it there".into(),
            ),
            Self::NoStore => (
                "detail",
                "no metadata store is configured (--metadata-url): tenants cannot be \
                 created, changed or deleted through the API"
                    .into(),
            ),
            Self::BadToken(why) => ("detail", format!("invalid token: {why}")),
            other => ("detail", other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (field, message) = self.field_and_message();
        let body = json!({ "errors": { field: [message] } });
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(ApiError::MissingToken.status(), 401);
        assert_eq!(ApiError::BadToken("expired").status(), 403);
        assert_eq!(ApiError::invalid("db_port", "x").status(), 422);
        assert_eq!(ApiError::FileTenant("t".into()).status(), 409);
        assert_eq!(ApiError::NoStore.status(), 503);
        assert_eq!(ApiError::TooLarge.status(), 413);
    }

    #[test]
    fn invalid_names_the_field() {
        let error = ApiError::invalid("users[0].pool_size", "too big");
        let (field, message) = error.field_and_message();
        assert_eq!((field, message.as_str()), ("users[0].pool_size", "too big"));
    }
}
