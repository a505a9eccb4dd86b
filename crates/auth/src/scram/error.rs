//! The error type of the SCRAM exchange. Every variant's `Display` is safe to
//! log and to show to the peer: none carries keys, proofs or passwords.

use std::fmt;

use super::MAX_ITERATIONS;

/// Which SCRAM message an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramMessage {
    ClientFirst,
    ServerFirst,
    ClientFinal,
    ServerFinal,
}

impl fmt::Display for ScramMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ClientFirst => "client-first-message",
            Self::ServerFirst => "server-first-message",
            Self::ClientFinal => "client-final-message",
            Self::ServerFinal => "server-final-message",
        })
    }
}

/// A failed SCRAM exchange, on either side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("SCRAM {0} is longer than {max} bytes", max = super::MAX_MESSAGE_LEN)]
    MessageTooLong(ScramMessage),
    #[error("malformed SCRAM {message}: {reason}")]
    Malformed {
        message: ScramMessage,
        reason: &'static str,
    },
    #[error("malformed SCRAM {message}: expected attribute '{attribute}'")]
    MissingAttribute {
        message: ScramMessage,
        attribute: char,
    },
    #[error("SCRAM iteration count must be between 1 and {MAX_ITERATIONS}")]
    IterationsOutOfRange,
    #[error("client selected SCRAM channel binding, which is not supported")]
    ChannelBindingUnsupported,
    #[error("client uses an authorization identity, which is not supported")]
    AuthzidUnsupported,
    #[error("SCRAM {0} requires an unsupported extension")]
    UnsupportedExtension(ScramMessage),
    #[error("SCRAM channel binding check failed")]
    ChannelBindingMismatch,
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The client's proof is wrong: the password is wrong. Report it to the client as
    /// "password authentication failed for user ...".
    #[error("invalid SCRAM client proof")]
    InvalidProof,
    /// The backend's signature is wrong: it does not know the password (or is not the server
    /// it claims to be).
    #[error("invalid SCRAM server signature")]
    InvalidServerSignature,
    /// The backend ended the exchange with `e=<text>`.
    #[error("server rejected SCRAM authentication: {0}")]
    ServerError(String),
    /// The caller had no keys for the salt and iteration count the backend asked for.
    #[error("no SCRAM keys available for the server's salt and iteration count")]
    NoKeysForSalt,
}

impl ScramError {
    /// The SQLSTATE to send a client when the pooler is the SCRAM server. For errors met while
    /// logging in to a backend (the client side), the caller reports its own error; this is a
    /// fallback.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            // invalid_password, as Postgres sends for a wrong SCRAM proof.
            Self::InvalidProof => "28P01",
            // feature_not_supported, as Postgres sends for authzid and m= extensions.
            Self::ChannelBindingUnsupported
            | Self::AuthzidUnsupported
            | Self::UnsupportedExtension(_) => "0A000",
            // invalid_authorization_specification: the backend login failed.
            Self::InvalidServerSignature | Self::ServerError(_) | Self::NoKeysForSalt => "28000",
            // protocol_violation, as Postgres sends for malformed SCRAM messages.
            Self::MessageTooLong(_)
            | Self::Malformed { .. }
            | Self::MissingAttribute { .. }
            | Self::IterationsOutOfRange
            | Self::ChannelBindingMismatch
            | Self::NonceMismatch => "08P01",
        }
    }
}
