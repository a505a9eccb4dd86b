//! The SCRAM-SHA-256 primitives (RFC 5802 §2.2, §3) over fixed-size keys:
//! PBKDF2, HMAC, SHA-256, XOR and base64. Infallible by construction, so the
//! state machines need no error paths for them.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Length of every SCRAM-SHA-256 key, signature and proof.
pub(crate) const KEY_LEN: usize = 32;

pub(crate) type Key = [u8; KEY_LEN];

/// Bytes of the SHA-256 input block.
const BLOCK_LEN: usize = 64;

/// HMAC-SHA-256 of the concatenation of `parts`, keyed with a 32-byte key.
pub(crate) fn hmac_sha256(key: &Key, parts: &[&[u8]]) -> Key {
    // HMAC zero-pads keys shorter than the block (RFC 2104 §2). Padding here gives the same MAC
    // and lets us use the fixed-size constructor, which cannot fail.
    let mut block = [0u8; BLOCK_LEN];
    for (padded, byte) in block.iter_mut().zip(key) {
        *padded = *byte;
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

pub(crate) fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

/// SaltedPassword := Hi(Normalize(password), salt, i), with Hi = PBKDF2-HMAC-SHA-256.
pub(crate) fn salted_password(password: &str, salt: &[u8], iterations: u32) -> Key {
    let mut out = [0u8; KEY_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(&normalize(password), salt, iterations, &mut out);
    out
}

/// SASLprep the password as Postgres does: if it is not valid for SASLprep, use the raw
/// bytes (Postgres docs, "SASL Authentication"; `pg_saslprep` in Postgres).
fn normalize(password: &str) -> Cow<'_, [u8]> {
    match stringprep::saslprep(password) {
        Ok(Cow::Borrowed(prepared)) => Cow::Borrowed(prepared.as_bytes()),
        Ok(Cow::Owned(prepared)) => Cow::Owned(prepared.into_bytes()),
        Err(_) => Cow::Borrowed(password.as_bytes()),
    }
}

pub(crate) fn xor(left: &Key, right: &Key) -> Key {
    let mut out = [0u8; KEY_LEN];
    for ((out, l), r) in out.iter_mut().zip(left).zip(right) {
        *out = l ^ r;
    }
    out
}

pub(crate) fn encode_base64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Standard, padded base64 as Postgres writes it; `None` if `text` is not that.
pub(crate) fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

/// Decodes base64 that must hold exactly one key.
pub(crate) fn decode_key(text: &[u8]) -> Option<Key> {
    decode_base64(text)?.try_into().ok()
}
