//! The server side of SCRAM-SHA-256: the pooler checking a client's password
//! against a stored [`ScramSecret`].
//!
//! Owns the parsing of client-first-message and client-final-message and the
//! proof check, as a two-step typestate machine. It does not choose nonces,
//! look up users or frame SASL messages; the caller does.

use std::fmt;

use subtle::ConstantTimeEq;

use super::attr::{check_length, malformed, parse_nonce, Attributes};
use super::crypto::{self, Key};
use super::error::{ScramError, ScramMessage};
use super::secret::{ClientKeys, ScramSecret};
use crate::Redacted;

/// Entry point of the server-side exchange; see [`ScramServer::start`].
#[derive(Debug)]
pub enum ScramServer {}

/// The server after sending server-first-message, waiting for client-final-message.
pub struct ScramServerAwaitingFinal {
    stored_key: Key,
    server_key: Key,
    /// The `c=` value the client must send: base64 of the gs2 header it used.
    channel_binding: &'static [u8],
    /// Client nonce followed by server nonce.
    nonce: String,
    /// client-first-message-bare "," server-first-message ",": the AuthMessage up to
    /// client-final-message-without-proof (RFC 5802 §3).
    auth_message_prefix: Vec<u8>,
}

/// A successful exchange.
pub struct ScramServerOutcome {
    /// The server-final-message (`v=<ServerSignature>`) to send in AuthenticationSASLFinal.
    pub server_final: Vec<u8>,
    /// The client's ClientKey, recovered from its proof. With the secret's ServerKey it lets
    /// the pooler log in to a backend that has the same verifier (pass-through).
    pub client_key: [u8; 32],
    server_key: Key,
}

impl ScramServer {
    /// Handles the client-first-message (the data of SASLInitialResponse).
    ///
    /// `server_nonce` is fresh random bytes (Postgres uses 18); they are base64-encoded into
    /// the nonce. Returns the next state and the server-first-message to send in
    /// AuthenticationSASLContinue.
    pub fn start(
        secret: &ScramSecret,
        server_nonce: &[u8],
        client_first: &[u8],
    ) -> Result<(ScramServerAwaitingFinal, Vec<u8>), ScramError> {
        Self::start_with_encoded_nonce(secret, &crypto::encode_base64(server_nonce), client_first)
    }

    /// [`ScramServer::start`] with the server nonce already in its printable form, so tests can
    /// replay the RFC 7677 example.
    pub(crate) fn start_with_encoded_nonce(
        secret: &ScramSecret,
        server_nonce: &str,
        client_first: &[u8],
    ) -> Result<(ScramServerAwaitingFinal, Vec<u8>), ScramError> {
        const MESSAGE: ScramMessage = ScramMessage::ClientFirst;
        check_length(client_first, MESSAGE)?;
        let (channel_binding, bare) = split_gs2_header(client_first)?;

        let mut attrs = Attributes::new(bare, MESSAGE);
        match attrs.next_attr()? {
            Some((b'm', _)) => return Err(ScramError::UnsupportedExtension(MESSAGE)),
            // Postgres ignores the SCRAM username: the startup packet's user is the one that
            // counts, and clients may send an empty one.
            Some((b'n', _username)) => {}
            _ => return Err(attrs.missing(b'n')),
        }
        let client_nonce = parse_nonce(attrs.expect(b'r')?, MESSAGE)?;
        attrs.skip_extensions()?;

        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            crypto::encode_base64(&secret.salt),
            secret.iterations
        )
        .into_bytes();

        let mut auth_message_prefix = Vec::with_capacity(bare.len() + server_first.len() + 2);
        auth_message_prefix.extend_from_slice(bare);
        auth_message_prefix.push(b',');
        auth_message_prefix.extend_from_slice(&server_first);
        auth_message_prefix.push(b',');

        let state = ScramServerAwaitingFinal {
            stored_key: secret.stored_key,
            server_key: secret.server_key,
            channel_binding,
            nonce,
            auth_message_prefix,
        };
        Ok((state, server_first))
    }
}

/// Splits the gs2 header (`n,,` or `y,,`) from client-first-message-bare and returns the
/// `c=` value the client must echo in client-final-message.
fn split_gs2_header(client_first: &[u8]) -> Result<(&'static [u8], &[u8]), ScramError> {
    const MESSAGE: ScramMessage = ScramMessage::ClientFirst;
    let (channel_binding, rest): (&'static [u8], &[u8]) = match client_first {
        // "p=": the client wants channel binding, which we never advertise.
        [b'p', b'=', ..] => return Err(ScramError::ChannelBindingUnsupported),
        // base64("n,,"): the client does not support channel binding.
        [b'n', b',', rest @ ..] => (b"biws", rest),
        // base64("y,,"): the client supports it but thinks we do not, which is true: we never
        // offer SCRAM-SHA-256-PLUS, so this is no downgrade (RFC 5802 §6).
        [b'y', b',', rest @ ..] => (b"eSws", rest),
        _ => {
            return Err(malformed(
                MESSAGE,
                "expected channel-binding flag 'n' or 'y'",
            ))
        }
    };
    match rest {
        [b',', bare @ ..] => Ok((channel_binding, bare)),
        [b'a', b'=', ..] => Err(ScramError::AuthzidUnsupported),
        _ => Err(malformed(MESSAGE, "malformed gs2 header")),
    }
}

impl ScramServerAwaitingFinal {
    /// Handles the client-final-message (the data of SASLResponse) and checks the proof.
    ///
    /// [`ScramError::InvalidProof`] means the password is wrong.
    pub fn finish(self, client_final: &[u8]) -> Result<ScramServerOutcome, ScramError> {
        const MESSAGE: ScramMessage = ScramMessage::ClientFinal;
        check_length(client_final, MESSAGE)?;
        let mut attrs = Attributes::new(client_final, MESSAGE);
        if attrs.expect(b'c')? != self.channel_binding {
            return Err(ScramError::ChannelBindingMismatch);
        }
        if attrs.expect(b'r')? != self.nonce.as_bytes() {
            return Err(ScramError::NonceMismatch);
        }
        // Extensions may come between the nonce and the proof; the proof comes last.
        let proof_text = loop {
            match attrs.next_attr()? {
                Some((b'p', value)) => break value,
                Some(_extension) => {}
                None => return Err(attrs.missing(b'p')),
            }
        };
        attrs.finish()?;
        let proof = crypto::decode_key(proof_text)
            .ok_or_else(|| malformed(MESSAGE, "proof must be base64 of 32 bytes"))?;

        // The proof is the last attribute, so the message without ",p=<proof>" is a prefix.
        let without_proof = client_final
            .len()
            .checked_sub(proof_text.len() + b",p=".len())
            .and_then(|len| client_final.get(..len))
            .ok_or_else(|| malformed(MESSAGE, "truncated proof"))?;
        let auth_message = [self.auth_message_prefix.as_slice(), without_proof];

        let client_signature = crypto::hmac_sha256(&self.stored_key, &auth_message);
        let client_key = crypto::xor(&proof, &client_signature);
        let stored_key = crypto::sha256(&client_key);
        if !bool::from(stored_key.ct_eq(&self.stored_key)) {
            return Err(ScramError::InvalidProof);
        }

        let server_signature = crypto::hmac_sha256(&self.server_key, &auth_message);
        let server_final = format!("v={}", crypto::encode_base64(&server_signature)).into_bytes();
        Ok(ScramServerOutcome {
            server_final,
            client_key,
            server_key: self.server_key,
        })
    }
}

impl ScramServerOutcome {
    /// The keys for logging in to a backend with the same verifier, on the client's behalf.
    pub fn client_keys(&self) -> ClientKeys {
        ClientKeys {
            client_key: self.client_key,
            server_key: self.server_key,
        }
    }
}

impl fmt::Debug for ScramServerAwaitingFinal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServerAwaitingFinal")
            .field("nonce", &self.nonce)
            .field("stored_key", &Redacted)
            .field("server_key", &Redacted)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ScramServerOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServerOutcome")
            .field("server_final", &String::from_utf8_lossy(&self.server_final))
            .field("client_key", &Redacted)
            .field("server_key", &Redacted)
            .finish()
    }
}
