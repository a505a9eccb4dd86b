//! The client side of SCRAM-SHA-256: the pooler logging in to a real Postgres.
//!
//! Owns building client-first-message and client-final-message and checking
//! the server's signature, as a typestate machine. Keys come from the caller
//! (cached, freshly derived, or recovered from a client's proof for
//! pass-through), so PBKDF2 never runs here. No nonces are chosen here either.

use std::fmt;

use subtle::ConstantTimeEq;

use super::attr::{check_length, malformed, parse_iterations, parse_nonce, Attributes};
use super::crypto::{self, Key};
use super::error::{ScramError, ScramMessage};
use super::secret::ClientKeys;
use crate::Redacted;

/// The gs2 header we send: no channel binding, no authorization identity.
const GS2_HEADER: &str = "n,,";
/// base64 of [`GS2_HEADER`], echoed in client-final-message.
const CHANNEL_BINDING: &str = "biws";

/// Entry point of the client-side exchange; see [`ScramClient::new`].
#[derive(Debug)]
pub enum ScramClient {}

/// The client after sending client-first-message, waiting for server-first-message.
#[derive(Debug)]
pub struct ScramClientAwaitingServerFirst {
    client_nonce: String,
    client_first_bare: Vec<u8>,
}

/// The client after sending client-final-message, waiting for server-final-message.
pub struct ScramClientAwaitingServerFinal {
    server_signature: Key,
}

impl ScramClient {
    /// Starts an exchange. `client_nonce` is fresh random bytes (libpq uses 18); they are
    /// base64-encoded into the nonce. Returns the first state and the client-first-message to
    /// send in SASLInitialResponse. The username is left empty, as libpq does: Postgres takes
    /// it from the startup packet.
    #[allow(clippy::new_ret_no_self)] // A typestate machine: starting it yields its first state.
    pub fn new(client_nonce: &[u8]) -> (ScramClientAwaitingServerFirst, Vec<u8>) {
        ScramClientAwaitingServerFirst::with_encoded_nonce("", crypto::encode_base64(client_nonce))
    }
}

impl ScramClientAwaitingServerFirst {
    /// [`ScramClient::new`] with a username and a nonce already in printable form, so tests can
    /// replay the RFC 7677 example.
    pub(crate) fn with_encoded_nonce(username: &str, client_nonce: String) -> (Self, Vec<u8>) {
        // saslname escaping (RFC 5802 §5.1).
        let username = username.replace('=', "=3D").replace(',', "=2C");
        let client_first_bare = format!("n={username},r={client_nonce}").into_bytes();
        let mut client_first = Vec::with_capacity(GS2_HEADER.len() + client_first_bare.len());
        client_first.extend_from_slice(GS2_HEADER.as_bytes());
        client_first.extend_from_slice(&client_first_bare);
        let state = Self {
            client_nonce,
            client_first_bare,
        };
        (state, client_first)
    }

    /// Handles server-first-message (the data of AuthenticationSASLContinue). `keys` is called
    /// with the server's salt and iteration count once they have been checked. Returns the next
    /// state and the client-final-message to send in SASLResponse.
    pub fn handle_server_first(
        self,
        server_first: &[u8],
        keys: impl FnOnce(&[u8], u32) -> ClientKeys,
    ) -> Result<(ScramClientAwaitingServerFinal, Vec<u8>), ScramError> {
        self.handle_server_first_checked(server_first, |salt, iterations| {
            Some(keys(salt, iterations))
        })
    }

    /// Like [`Self::handle_server_first`], for callers that may have no keys for the server's
    /// salt and iteration count (for example pass-through keys made for another verifier):
    /// `None` fails the exchange with [`ScramError::NoKeysForSalt`].
    pub fn handle_server_first_checked(
        self,
        server_first: &[u8],
        keys: impl FnOnce(&[u8], u32) -> Option<ClientKeys>,
    ) -> Result<(ScramClientAwaitingServerFinal, Vec<u8>), ScramError> {
        const MESSAGE: ScramMessage = ScramMessage::ServerFirst;
        check_length(server_first, MESSAGE)?;
        let mut attrs = Attributes::new(server_first, MESSAGE);
        let nonce = match attrs.next_attr()? {
            Some((b'm', _)) => return Err(ScramError::UnsupportedExtension(MESSAGE)),
            Some((b'r', nonce)) => parse_nonce(nonce, MESSAGE)?,
            _ => return Err(attrs.missing(b'r')),
        };
        // The server must extend our nonce with its own.
        if nonce.len() <= self.client_nonce.len() || !nonce.starts_with(&self.client_nonce) {
            return Err(ScramError::NonceMismatch);
        }
        let salt = crypto::decode_base64(attrs.expect(b's')?)
            .ok_or_else(|| malformed(MESSAGE, "salt is not valid base64"))?;
        let iterations = parse_iterations(attrs.expect(b'i')?, MESSAGE)?;
        attrs.skip_extensions()?;

        let keys = keys(&salt, iterations).ok_or(ScramError::NoKeysForSalt)?;
        let without_proof = format!("c={CHANNEL_BINDING},r={nonce}");
        let auth_message = [
            self.client_first_bare.as_slice(),
            b",",
            server_first,
            b",",
            without_proof.as_bytes(),
        ];
        let stored_key = crypto::sha256(&keys.client_key);
        let client_signature = crypto::hmac_sha256(&stored_key, &auth_message);
        let proof = crypto::xor(&keys.client_key, &client_signature);
        let server_signature = crypto::hmac_sha256(&keys.server_key, &auth_message);

        let client_final = format!("{without_proof},p={}", crypto::encode_base64(&proof));
        let state = ScramClientAwaitingServerFinal { server_signature };
        Ok((state, client_final.into_bytes()))
    }
}

impl ScramClientAwaitingServerFinal {
    /// Checks server-final-message (the data of AuthenticationSASLFinal): the server proves it
    /// knows the verifier. An `e=` message fails with [`ScramError::ServerError`].
    pub fn verify_server_final(self, server_final: &[u8]) -> Result<(), ScramError> {
        const MESSAGE: ScramMessage = ScramMessage::ServerFinal;
        check_length(server_final, MESSAGE)?;
        let mut attrs = Attributes::new(server_final, MESSAGE);
        match attrs.next_attr()? {
            Some((b'e', text)) => Err(ScramError::ServerError(
                String::from_utf8_lossy(text).into_owned(),
            )),
            Some((b'v', signature)) => {
                let signature = crypto::decode_key(signature).ok_or_else(|| {
                    malformed(MESSAGE, "server signature must be base64 of 32 bytes")
                })?;
                attrs.skip_extensions()?;
                if bool::from(signature.ct_eq(&self.server_signature)) {
                    Ok(())
                } else {
                    Err(ScramError::InvalidServerSignature)
                }
            }
            _ => Err(attrs.missing(b'v')),
        }
    }
}

impl fmt::Debug for ScramClientAwaitingServerFinal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClientAwaitingServerFinal")
            .field("server_signature", &Redacted)
            .finish()
    }
}
