//! Encryption of stored secrets: AES-256-GCM under `TIDEPOOL_ENCRYPTION_KEY`, a
//! random 96-bit nonce per value, stored as `nonce || ciphertext || tag`.
//!
//! The associated data names the row a value belongs to, so a value copied into
//! another row does not decrypt there. Pure functions only: no I/O, no logging; the
//! key never leaves this module and its `Debug` shows nothing of it.

use std::fmt;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::Engine;

/// Bytes of an AES-256 key.
const KEY_LEN: usize = 32;

/// What can go wrong with the key or a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CryptoError {
    #[error("no key given")]
    MissingKey,
    #[error("the key is not the base64 of 32 bytes")]
    MalformedKey,
    #[error("the system gave no random bytes for a nonce")]
    Random,
    #[error("encryption failed")]
    Seal,
    /// Wrong key, tampered value, or a value moved from another row.
    #[error("the value does not decrypt")]
    Open,
}

/// The row a sealed value belongs to; it becomes the associated data.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Binding<'a> {
    /// The store's single key-check value.
    KeyCheck,
    /// The password of one user of one tenant.
    Password { tenant: &'a str, alias: &'a str },
}

impl Binding<'_> {
    /// Length-prefixed, so (`ab`, `c`) and (`a`, `bc`) differ.
    fn associated_data(&self) -> Vec<u8> {
        match self {
            Binding::KeyCheck => b"tidepool.keycheck".to_vec(),
            Binding::Password { tenant, alias } => {
                let mut aad = b"tidepool.users\0".to_vec();
                let tenant_len = u32::try_from(tenant.len()).unwrap_or(u32::MAX);
                aad.extend_from_slice(&tenant_len.to_be_bytes());
                aad.extend_from_slice(tenant.as_bytes());
                aad.extend_from_slice(alias.as_bytes());
                aad
            }
        }
    }
}

/// The store's encryption key.
pub(crate) struct EncryptionKey {
    key: LessSafeKey,
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(***)")
    }
}

impl EncryptionKey {
    /// Reads the key from its standard base64 text (surrounding whitespace ignored,
    /// as environment files often end in a newline).
    pub(crate) fn parse(text: Option<&str>) -> Result<Self, CryptoError> {
        let text = text.ok_or(CryptoError::MissingKey)?;
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| CryptoError::MalformedKey)?;
        let result = if bytes.len() == KEY_LEN {
            UnboundKey::new(&AES_256_GCM, &bytes)
                .map(|key| EncryptionKey {
                    key: LessSafeKey::new(key),
                })
                .map_err(|_| CryptoError::MalformedKey)
        } else {
            Err(CryptoError::MalformedKey)
        };
        // Best effort: the decoded key should not linger in freed memory.
        bytes.fill(0);
        std::hint::black_box(&bytes);
        result
    }

    /// Encrypts `plaintext` for the row `binding`: `nonce || ciphertext || tag`.
    pub(crate) fn seal(
        &self,
        plaintext: &[u8],
        binding: Binding<'_>,
    ) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        sealed.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(binding.associated_data()),
                &mut body,
            )
            .map_err(|_| CryptoError::Seal)?;
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// Decrypts a value sealed by [`EncryptionKey::seal`] for the same row.
    pub(crate) fn open(&self, sealed: &[u8], binding: Binding<'_>) -> Result<Vec<u8>, CryptoError> {
        let (nonce, body) = sealed
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(CryptoError::Open)?;
        let mut body = body.to_vec();
        let plaintext = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(binding.associated_data()),
                &mut body,
            )
            .map_err(|_| CryptoError::Open)?;
        Ok(plaintext.to_vec())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // "0123456789abcdef" x2
    const OTHER_KEY: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

    fn alice() -> Binding<'static> {
        Binding::Password {
            tenant: "t1",
            alias: "alice",
        }
    }

    #[test]
    fn key_must_be_base64_of_32_bytes() {
        assert!(EncryptionKey::parse(Some(KEY)).is_ok());
        assert!(EncryptionKey::parse(Some(&format!("  {KEY}\n"))).is_ok());
        assert_eq!(
            EncryptionKey::parse(None).err(),
            Some(CryptoError::MissingKey)
        );
        for bad in [
            "",
            "not base64 at all!",
            "MDEyMzQ1Njc4OWFiY2RlZg==",                         // 16 bytes
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMQ==", // 34 bytes
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY",      // unpadded
        ] {
            assert_eq!(
                EncryptionKey::parse(Some(bad)).err(),
                Some(CryptoError::MalformedKey),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_shows_nothing_of_the_key() {
        let key = EncryptionKey::parse(Some(KEY)).unwrap();
        assert_eq!(format!("{key:?}"), "EncryptionKey(***)");
    }

    #[test]
    fn round_trip() {
        let key = EncryptionKey::parse(Some(KEY)).unwrap();
        let sealed = key.seal(b"hunter2", alice()).unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + 7 + 16);
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(key.open(&sealed, alice()).unwrap(), b"hunter2");
        assert_eq!(
            key.open(&key.seal(b"", alice()).unwrap(), alice()).unwrap(),
            b""
        );
    }

    #[test]
    fn every_value_gets_its_own_nonce() {
        let key = EncryptionKey::parse(Some(KEY)).unwrap();
        let a = key.seal(b"same", alice()).unwrap();
        let b = key.seal(b"same", alice()).unwrap();
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
        assert_ne!(a, b);
    }

    #[test]
    fn another_row_does_not_decrypt() {
        let key = EncryptionKey::parse(Some(KEY)).unwrap();
        let sealed = key.seal(b"hunter2", alice()).unwrap();
        for other in [
            Binding::Password {
                tenant: "t1",
                alias: "bob",
            },
            Binding::Password {
                tenant: "t2",
                alias: "alice",
            },
            Binding::Password {
                tenant: "t1a",
                alias: "lice",
            },
            Binding::KeyCheck,
        ] {
            assert_eq!(
                key.open(&sealed, other),
                Err(CryptoError::Open),
                "{other:?}"
            );
        }
    }

    #[test]
    fn another_key_or_tampering_does_not_decrypt() {
        let key = EncryptionKey::parse(Some(KEY)).unwrap();
        let other = EncryptionKey::parse(Some(OTHER_KEY)).unwrap();
        let sealed = key.seal(b"hunter2", alice()).unwrap();
        assert_eq!(other.open(&sealed, alice()), Err(CryptoError::Open));
        let mut flipped = sealed.clone();
        if let Some(byte) = flipped.last_mut() {
            *byte ^= 1;
        }
        assert_eq!(key.open(&flipped, alice()), Err(CryptoError::Open));
        assert_eq!(key.open(&sealed[..5], alice()), Err(CryptoError::Open));
    }
}
