//! Stored SCRAM-SHA-256 secrets and the keys derived from a password.
//!
//! Owns the verifier format Postgres keeps in `pg_authid.rolpassword`
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`) and the one
//! expensive step, PBKDF2. Callers cache [`ClientKeys`] so PBKDF2 runs once per
//! password, not once per login. Knows nothing of messages or sessions.

use std::fmt;

use super::crypto::{self, Key};
use super::MAX_ITERATIONS;
use crate::Redacted;

const MECHANISM: &str = "SCRAM-SHA-256";

/// A SCRAM-SHA-256 verifier: what a server needs to check a client's proof, without the
/// password itself.
// No `PartialEq`: comparing keys must be constant time (see `ClientKeys::matches`).
#[derive(Clone)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

/// The keys a SCRAM client needs to log in: derived from the password, or recovered from a
/// client's proof for pass-through authentication.
#[derive(Clone)]
pub struct ClientKeys {
    pub client_key: [u8; 32],
    pub server_key: [u8; 32],
}

/// A stored verifier that cannot be used. `Display` never includes the verifier text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("not a SCRAM-SHA-256 verifier")]
    UnknownMechanism,
    #[error("malformed SCRAM verifier: expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>")]
    Malformed,
    #[error("SCRAM verifier iteration count must be between 1 and {MAX_ITERATIONS}")]
    IterationsOutOfRange,
    #[error("SCRAM verifier has invalid base64 in its {0}")]
    InvalidBase64(&'static str),
    #[error("SCRAM verifier {0} must be 32 bytes")]
    WrongKeyLength(&'static str),
}

impl SecretError {
    /// The SQLSTATE a client sees: as in Postgres, an unusable verifier fails the login like a
    /// wrong password (invalid_password) and the detail goes only to the log.
    pub fn sqlstate(&self) -> &'static str {
        "28P01"
    }
}

impl ScramSecret {
    /// Parses Postgres's stored verifier format.
    pub fn parse(verifier: &str) -> Result<Self, SecretError> {
        let (mechanism, rest) = verifier.split_once('$').ok_or(SecretError::Malformed)?;
        if mechanism != MECHANISM {
            return Err(SecretError::UnknownMechanism);
        }
        let (parameters, keys) = rest.split_once('$').ok_or(SecretError::Malformed)?;
        let (iterations, salt) = parameters.split_once(':').ok_or(SecretError::Malformed)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(SecretError::Malformed)?;

        if iterations.is_empty() || !iterations.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SecretError::Malformed);
        }
        // All digits, so the only possible parse failure is overflow.
        let iterations = iterations
            .parse::<u32>()
            .map_err(|_| SecretError::IterationsOutOfRange)?;
        if !(1..=MAX_ITERATIONS).contains(&iterations) {
            return Err(SecretError::IterationsOutOfRange);
        }
        let salt =
            crypto::decode_base64(salt.as_bytes()).ok_or(SecretError::InvalidBase64("salt"))?;
        Ok(Self {
            iterations,
            salt,
            stored_key: parse_key(stored_key, "StoredKey")?,
            server_key: parse_key(server_key, "ServerKey")?,
        })
    }

    /// Builds the verifier for `password`, as `CREATE ROLE ... PASSWORD` does in Postgres.
    ///
    /// `salt` should be fresh random bytes (Postgres uses 16). `iterations` is clamped to
    /// `1..=MAX_ITERATIONS` so the result always parses back.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let iterations = iterations.clamp(1, MAX_ITERATIONS);
        let keys = derive_client_keys(password, salt, iterations);
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: crypto::sha256(&keys.client_key),
            server_key: keys.server_key,
        }
    }

    /// The verifier in Postgres's stored format; [`ScramSecret::parse`] reads it back.
    pub fn to_verifier(&self) -> String {
        format!(
            "{MECHANISM}${}:{}${}:{}",
            self.iterations,
            crypto::encode_base64(&self.salt),
            crypto::encode_base64(&self.stored_key),
            crypto::encode_base64(&self.server_key),
        )
    }
}

impl ClientKeys {
    /// Whether these keys belong to `secret` (same password, salt and iteration count).
    pub fn matches(&self, secret: &ScramSecret) -> bool {
        use subtle::ConstantTimeEq;
        let stored_key = crypto::sha256(&self.client_key);
        let stored = stored_key.ct_eq(&secret.stored_key);
        let server = self.server_key.ct_eq(&secret.server_key);
        (stored & server).into()
    }
}

/// Derives the client's keys from `password`: SaltedPassword by PBKDF2-HMAC-SHA-256 (after
/// SASLprep), then ClientKey = HMAC(SaltedPassword, "Client Key") and
/// ServerKey = HMAC(SaltedPassword, "Server Key"). This is the expensive step; cache the result.
///
/// An `iterations` of 0 is treated as 1.
pub fn derive_client_keys(password: &str, salt: &[u8], iterations: u32) -> ClientKeys {
    let salted = crypto::salted_password(password, salt, iterations.max(1));
    ClientKeys {
        client_key: crypto::hmac_sha256(&salted, &[b"Client Key"]),
        server_key: crypto::hmac_sha256(&salted, &[b"Server Key"]),
    }
}

fn parse_key(text: &str, field: &'static str) -> Result<Key, SecretError> {
    let bytes = crypto::decode_base64(text.as_bytes()).ok_or(SecretError::InvalidBase64(field))?;
    bytes
        .try_into()
        .map_err(|_| SecretError::WrongKeyLength(field))
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt", &Redacted)
            .field("stored_key", &Redacted)
            .field("server_key", &Redacted)
            .finish()
    }
}

impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKeys")
            .field("client_key", &Redacted)
            .field("server_key", &Redacted)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example user (password "pencil"); keys computed independently with Python's
    /// hashlib and hmac.
    const PENCIL: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
        WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    fn pencil_salt() -> Vec<u8> {
        crypto::decode_base64(b"W22ZaJ0SNY7soEsUEjb6gQ==").unwrap_or_default()
    }

    #[test]
    fn from_password_known_answer() {
        let secret = ScramSecret::from_password("pencil", &pencil_salt(), 4096);
        assert_eq!(secret.to_verifier(), PENCIL);
    }

    #[test]
    fn parse_to_verifier_round_trip() {
        let secret = ScramSecret::parse(PENCIL);
        assert_eq!(
            secret.as_ref().map(|s| s.to_verifier()).ok().as_deref(),
            Some(PENCIL)
        );
        assert_eq!(
            secret.map(|s| (s.iterations, s.salt)),
            Ok((4096, pencil_salt()))
        );
        let odd = ScramSecret::from_password("", b"", 1).to_verifier();
        let reparsed = ScramSecret::parse(&odd).map(|s| s.to_verifier());
        assert_eq!(reparsed.as_deref(), Ok(odd.as_str()));
    }

    #[test]
    fn derived_keys_match_secret() {
        let keys = derive_client_keys("pencil", &pencil_salt(), 4096);
        let secret = ScramSecret::parse(PENCIL);
        assert_eq!(secret.as_ref().map(|s| keys.matches(s)), Ok(true));
        let wrong = derive_client_keys("pencil2", &pencil_salt(), 4096);
        assert_eq!(secret.map(|s| wrong.matches(&s)), Ok(false));
    }

    #[test]
    fn saslprep_applies_and_falls_back() {
        // U+00AD (soft hyphen) is mapped to nothing by SASLprep.
        let key = |password| derive_client_keys(password, b"salt", 1).client_key;
        assert_eq!(key("pen\u{ad}cil"), key("pencil"));
        // A prohibited character (U+0007) makes SASLprep fail: the raw bytes are used.
        assert_ne!(key("pen\u{7}cil"), key("pencil"));
        assert_ne!(key("pen\u{7}cil"), key("pen\u{ad}cil"));
        let zero = derive_client_keys("pencil", b"salt", 0).client_key;
        assert_eq!(zero, key("pencil"));
    }

    #[test]
    fn rejects_malformed_verifiers() {
        use SecretError::*;
        let key = crypto::encode_base64(&[7u8; 32]);
        let short = crypto::encode_base64(&[7u8; 31]);
        let cases: Vec<(String, SecretError)> = vec![
            (String::new(), Malformed),
            ("md5abc".into(), Malformed),
            (
                format!("SCRAM-SHA-1$4096:c2FsdA==${key}:{key}"),
                UnknownMechanism,
            ),
            ("SCRAM-SHA-256$".into(), Malformed),
            ("SCRAM-SHA-256$4096:c2FsdA==".into(), Malformed),
            (format!("SCRAM-SHA-256$4096:c2FsdA==${key}"), Malformed),
            (format!("SCRAM-SHA-256$4096c2FsdA==${key}:{key}"), Malformed),
            (format!("SCRAM-SHA-256$:c2FsdA==${key}:{key}"), Malformed),
            (format!("SCRAM-SHA-256$-1:c2FsdA==${key}:{key}"), Malformed),
            (
                format!("SCRAM-SHA-256$0:c2FsdA==${key}:{key}"),
                IterationsOutOfRange,
            ),
            (
                format!("SCRAM-SHA-256$10000001:c2FsdA==${key}:{key}"),
                IterationsOutOfRange,
            ),
            (
                format!("SCRAM-SHA-256$99999999999999999999:c2FsdA==${key}:{key}"),
                IterationsOutOfRange,
            ),
            (
                format!("SCRAM-SHA-256$4096:c2Fsd!==${key}:{key}"),
                InvalidBase64("salt"),
            ),
            (
                format!("SCRAM-SHA-256$4096:c2FsdA==$x{key}:{key}"),
                InvalidBase64("StoredKey"),
            ),
            (
                format!("SCRAM-SHA-256$4096:c2FsdA==${key}:{short}"),
                WrongKeyLength("ServerKey"),
            ),
            (
                format!("SCRAM-SHA-256$4096:c2FsdA==${key}:{key}:{key}"),
                InvalidBase64("ServerKey"),
            ),
        ];
        for (verifier, expected) in cases {
            assert_eq!(
                ScramSecret::parse(&verifier).err(),
                Some(expected),
                "{verifier}"
            );
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let secret = ScramSecret::parse(PENCIL);
        let shown = format!("{secret:?}");
        assert!(
            shown.contains("4096") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(!shown.contains("88") && !shown.contains("WG5d"), "{shown}");
        let keys = format!("{:?}", derive_client_keys("pencil", b"s", 1));
        assert!(!keys.contains("pencil") && !keys.contains(", 1"), "{keys}");
    }
}
