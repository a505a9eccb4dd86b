//! The legacy `md5` password method (Postgres docs, "Password Authentication").
//!
//! Owns the two hashing steps: the stored hash `md5` + hex(md5(password ++ user))
//! and the salted response `md5` + hex(md5(hex ++ salt)) that travels on the
//! wire. Nothing here can fail on input, so the module has no error type;
//! [`md5_verify`] simply answers `false`.

use ::md5::{Digest, Md5};
use subtle::ConstantTimeEq;

const PREFIX: &str = "md5";
const HEX_LEN: usize = 32;

/// The hash Postgres stores for `user`'s `password`: `md5` followed by 32 lowercase hex digits.
pub fn md5_password_hash(user: &str, password: &str) -> String {
    let digest = Md5::new()
        .chain_update(password.as_bytes())
        .chain_update(user.as_bytes())
        .finalize();
    prefixed_hex(&digest)
}

/// The response to an `AuthenticationMD5Password` request carrying `salt`, computed from the
/// stored hash (so a pooler can answer without knowing the password).
///
/// `stored_hash` is expected to be an `md5...` hash as made by [`md5_password_hash`]; if the
/// `md5` prefix is missing, the whole string is taken as the hex part.
pub fn md5_client_response(stored_hash: &str, salt: [u8; 4]) -> String {
    let hex_part = stored_hash.strip_prefix(PREFIX).unwrap_or(stored_hash);
    let digest = Md5::new()
        .chain_update(hex_part.as_bytes())
        .chain_update(salt)
        .finalize();
    prefixed_hex(&digest)
}

/// Whether `response` (from a client's PasswordMessage) answers `salt` for `stored_hash`.
///
/// Compares in constant time. A `stored_hash` that is not `md5` + 32 lowercase hex digits never
/// verifies.
pub fn md5_verify(stored_hash: &str, salt: [u8; 4], response: &str) -> bool {
    if !is_md5_hash(stored_hash) {
        return false;
    }
    let expected = md5_client_response(stored_hash, salt);
    expected.as_bytes().ct_eq(response.as_bytes()).into()
}

fn is_md5_hash(candidate: &str) -> bool {
    candidate.strip_prefix(PREFIX).is_some_and(|hex| {
        hex.len() == HEX_LEN && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

fn prefixed_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(PREFIX.len() + 2 * bytes.len());
    out.push_str(PREFIX);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values computed independently with Python's hashlib.
    const POSTGRES_SECRET: &str = "md553f48b7c4b76a86ce72276c5755f217d";
    const SALT: [u8; 4] = [1, 2, 3, 4];
    const RESPONSE: &str = "md5bb41a296aab6baccb36ff243a562abff";

    #[test]
    fn password_hash_known_answer() {
        assert_eq!(md5_password_hash("postgres", "secret"), POSTGRES_SECRET);
    }

    #[test]
    fn client_response_known_answer() {
        assert_eq!(md5_client_response(POSTGRES_SECRET, SALT), RESPONSE);
    }

    #[test]
    fn verify_accepts_right_and_rejects_wrong() {
        assert!(md5_verify(POSTGRES_SECRET, SALT, RESPONSE));
        assert!(!md5_verify(POSTGRES_SECRET, [1, 2, 3, 5], RESPONSE));
        assert!(!md5_verify(POSTGRES_SECRET, SALT, &RESPONSE[..34]));
        assert!(!md5_verify(POSTGRES_SECRET, SALT, ""));
        let other = md5_password_hash("postgres", "wrong");
        assert!(!md5_verify(&other, SALT, RESPONSE));
    }

    #[test]
    fn verify_rejects_malformed_stored_hash() {
        assert!(!md5_verify("secret", SALT, RESPONSE));
        assert!(!md5_verify("md5", SALT, &md5_client_response("md5", SALT)));
        let upper = POSTGRES_SECRET.to_uppercase().replacen("MD5", "md5", 1);
        assert!(!md5_verify(
            &upper,
            SALT,
            &md5_client_response(&upper, SALT)
        ));
    }
}
