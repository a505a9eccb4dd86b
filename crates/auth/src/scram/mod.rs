//! SCRAM-SHA-256 as Postgres speaks it (RFC 5802, RFC 7677; Postgres docs,
//! "SASL Authentication").
//!
//! Owns the stored verifier ([`ScramSecret`]), the cached per-password keys
//! ([`ClientKeys`]), and the two sides of the exchange as typestate machines:
//! [`ScramServer`] authenticates a client of the pooler, [`ScramClient`] logs the
//! pooler in to a backend. Each step consumes the previous state, so a message
//! cannot be handled twice or out of order. Channel binding
//! (`SCRAM-SHA-256-PLUS`) is never offered; the surrounding SASL framing
//! (`AuthenticationSASL*` messages) belongs to the codec, not here.

mod attr;
mod client;
mod crypto;
mod error;
mod secret;
mod server;

#[cfg(test)]
mod malformed_tests;
#[cfg(test)]
mod tests;

pub use client::{ScramClient, ScramClientAwaitingServerFinal, ScramClientAwaitingServerFirst};
pub use error::{ScramError, ScramMessage};
pub use secret::{derive_client_keys, ClientKeys, ScramSecret, SecretError};
pub use server::{ScramServer, ScramServerAwaitingFinal, ScramServerOutcome};

/// Largest PBKDF2 iteration count accepted from a verifier or a server. Postgres defaults to
/// 4096; the bound keeps a hostile peer or a corrupt verifier from burning seconds of CPU.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// Largest SCRAM message (in bytes) either machine accepts. Real messages are well under
/// 200 bytes; the bound keeps copies of hostile input small.
pub const MAX_MESSAGE_LEN: usize = 4096;
