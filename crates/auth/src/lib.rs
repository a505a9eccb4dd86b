//! PostgreSQL authentication for Tidepool, without I/O.
//!
//! This crate owns the cryptography and message grammar of the two password
//! methods a pooler meets:
//!
//! - [`scram`]: SCRAM-SHA-256 (RFC 5802 / RFC 7677, as Postgres implements it),
//!   both as a server (authenticating a client of the pooler) and as a client
//!   (the pooler logging in to a real Postgres), plus the stored verifier format
//!   and the derived keys callers cache so PBKDF2 runs once per password.
//! - [`md5`]: the legacy `md5` password method.
//!
//! Everything here is a pure function or a typestate machine: no sockets, no
//! async, no clock and no randomness of its own. Nonces and salts are passed in
//! by the caller. Input from the wire is never trusted: malformed messages give
//! typed errors, never panics, and no error or `Debug` output carries a secret.

pub mod md5;
pub mod scram;

pub use crate::md5::{md5_client_response, md5_password_hash, md5_verify};
pub use crate::scram::{
    derive_client_keys, ClientKeys, ScramClient, ScramClientAwaitingServerFinal,
    ScramClientAwaitingServerFirst, ScramError, ScramMessage, ScramSecret, ScramServer,
    ScramServerAwaitingFinal, ScramServerOutcome, SecretError, MAX_ITERATIONS, MAX_MESSAGE_LEN,
};

/// Stands in for secret material in `Debug` output.
struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}
