//! Bearer-token checks: `Authorization: Bearer <JWT>`, HS256, signed with a shared
//! secret, as Supavisor's API takes them. A missing header is 401; a token that is
//! malformed, wrongly signed, expired or not yet valid is 403. Tokens without `exp`
//! are accepted (as Supavisor does); `exp` and `nbf` are checked when present, with
//! [`LEEWAY_SECS`] of clock skew. Tokens never reach a log line or a response.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tidepool_core::secret::Secret;

use crate::error::ApiError;

/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;
/// Longest token looked at; longer ones are refused unread.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Checks tokens signed with one secret.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenVerifier(***)")
    }
}

impl TokenVerifier {
    pub fn new(secret: &Secret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.leeway = LEEWAY_SECS;
        Self {
            key: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
        }
    }

    /// Accepts the request's bearer token, or says why not.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::MissingToken)?;
        let value = value
            .to_str()
            .map_err(|_| ApiError::BadToken("malformed"))?;
        let token = bearer_token(value).ok_or(ApiError::BadToken("expected `Bearer <token>`"))?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(ApiError::BadToken("too long"));
        }
        jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation)
            .map(|_| ())
            .map_err(|e| ApiError::BadToken(reason(e.kind())))
    }
}

/// The token of `Bearer <token>` (the scheme is case-insensitive, RFC 9110 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not yet valid",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm => "must be signed with HS256",
        _ => "malformed",
    }
}

/// Middleware: lets the request through only with a good token.
pub async fn require_token(
    State(verifier): State<Arc<TokenVerifier>>,
    request: Request,
    next: Next,
) -> Response {
    match verifier.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn token(secret: &str, claims: serde_json::Value, alg: Algorithm) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn check(verifier: &TokenVerifier, value: &str) -> Result<(), ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        verifier.check(&headers)
    }

    #[test]
    fn tokens() {
        let v = TokenVerifier::new(&Secret::new("s3cret"));
        assert!(matches!(
            v.check(&HeaderMap::new()),
            Err(ApiError::MissingToken)
        ));
        let good = token("s3cret", json!({"exp": now() + 60}), Algorithm::HS256);
        assert!(check(&v, &format!("Bearer {good}")).is_ok());
        assert!(check(&v, &format!("bearer  {good}")).is_ok());
        let no_exp = token("s3cret", json!({"role": "anon"}), Algorithm::HS256);
        assert!(check(&v, &format!("Bearer {no_exp}")).is_ok());
        let expired = token("s3cret", json!({"exp": now() - 3600}), Algorithm::HS256);
        assert!(matches!(
            check(&v, &format!("Bearer {expired}")),
            Err(ApiError::BadToken("expired"))
        ));
        let other = token("other", json!({}), Algorithm::HS256);
        assert!(matches!(
            check(&v, &format!("Bearer {other}")),
            Err(ApiError::BadToken("bad signature"))
        ));
        let hs512 = token("s3cret", json!({}), Algorithm::HS512);
        assert!(check(&v, &format!("Bearer {hs512}")).is_err());
        assert!(check(&v, "Bearer not.a.token").is_err());
        assert!(check(&v, "Bearer").is_err());
        assert!(check(&v, &format!("Basic {good}")).is_err());
        assert!(check(&v, &format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1))).is_err());
        assert!(!format!("{v:?}").contains("s3cret"));
    }
}
