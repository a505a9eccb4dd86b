//! Reading a tenant from a request body, `{"tenant": {...}}`. Every failure names
//! the field it is about, as the path inside the tenant (`db_port`,
//! `users[0].mode_type`), so the client gets `{"errors": {"db_port": [...]}}`.
//! Nothing here trusts the input: malformed bytes give an error, never a panic.

use serde::Deserialize;
use tidepool_core::config::RawTenant;

use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantBody {
    tenant: RawTenant,
}

/// The tenant of a PUT body.
pub fn parse_tenant(bytes: &[u8]) -> Result<RawTenant, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let body: TenantBody = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        to_api_error(&path, e.inner())
    })?;
    de.end()
        .map_err(|e| ApiError::invalid("body", e.to_string()))?;
    Ok(body.tenant)
}

fn to_api_error(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    if matches!(
        e.classify(),
        Category::Syntax | Category::Eof | Category::Io
    ) {
        return ApiError::invalid("body", format!("invalid JSON: {e}"));
    }
    let message = e.to_string();
    // `path` is where serde stood (an unknown field included); a missing field is
    // named only in the message.
    let field = match quoted_field(&message, "missing field `") {
        Some(name) => join(path, name),
        None => path.to_owned(),
    };
    let field = field
        .strip_prefix("tenant.")
        .map(str::to_owned)
        .unwrap_or(field);
    let field = if field.is_empty() || field == "." {
        "tenant".to_owned()
    } else {
        field
    };
    // A value in the wrong place could be a password: it is not quoted back.
    let reason = if field.ends_with("db_password") {
        "must be a string".to_owned()
    } else {
        without_position(&message).to_owned()
    };
    ApiError::invalid(field, reason)
}

/// `name` in `...prefix name` ...`, when the message starts with `prefix`.
fn quoted_field<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split_once('`').map(|(name, _)| name)
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() || path == "." {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// The message without serde_json's ` at line N column M`.
fn without_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> (String, String) {
        match parse_tenant(body.as_bytes()) {
            Err(ApiError::Invalid { field, reason }) => (field, reason),
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn good_body() {
        let t = parse_tenant(br#"{"tenant": {"db_host": "h", "db_port": 5432, "users": [{"db_user": "u", "db_password": "p"}]}}"#).unwrap();
        assert_eq!(t.db_port, Some(5432));
        assert_eq!(t.users.len(), 1);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(r#"{"tenant": {"db_port": "x"}}"#).0, "db_port");
        assert_eq!(field_of(r#"{"tenant": {"db_port": -1}}"#).0, "db_port");
        assert_eq!(
            field_of(r#"{"tenant": {"users": [{"pool_size": true}]}}"#).0,
            "users[0].pool_size"
        );
        let (field, reason) = field_of(r#"{"tenant": {"bogus": 1}}"#);
        assert_eq!(field, "bogus");
        assert!(reason.starts_with("unknown field"), "{reason}");
        assert_eq!(
            field_of(r#"{"tenant": {"users": [{"passwd": "x"}]}}"#).0,
            "users[0].passwd"
        );
        assert_eq!(field_of(r#"{"tenants": {}}"#).0, "tenants");
        assert_eq!(field_of(r#"{}"#).0, "tenant");
        assert_eq!(field_of(r#"[]"#).0, "tenant");
        assert_eq!(field_of(r#"{"tenant": 5}"#).0, "tenant");
        assert_eq!(field_of(r#"{"tenant": {"#).0, "body");
        assert_eq!(field_of("").0, "body");
        assert_eq!(field_of("\u{0}\u{ff}").0, "body");
        assert_eq!(field_of(r#"{"tenant": {}} x"#).0, "body");
    }

    #[test]
    fn password_values_are_not_echoed() {
        let (field, reason) = field_of(r#"{"tenant": {"users": [{"db_password": 12345}]}}"#);
        assert_eq!(field, "users[0].db_password");
        assert!(!reason.contains("12345"), "{reason}");
    }
}
