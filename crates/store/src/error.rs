//! The store's one error type. Messages name what failed and which setting to fix;
//! they never carry a password, the encryption key or the store URL's password.

use crate::crypto::CryptoError;

/// Everything that can go wrong talking to the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL does not parse as a Postgres connection string. The parser's
    /// message is left out: it may quote a character of the URL's password.
    #[error("the metadata store URL is malformed (expected postgres://user:password@host:port/database or key=value pairs)")]
    Url,
    /// The store could not be reached or refused the login.
    #[error("cannot connect to the metadata store: {}", describe(.0))]
    Connect(#[source] tokio_postgres::Error),
    /// Creating or upgrading the store's schema failed.
    #[error("metadata store migration to version {version} failed: {}", describe(.source))]
    Migration {
        version: i32,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The store was written by a newer Tidepool than this one.
    #[error("the metadata store has schema version {found}, but this Tidepool knows versions up to {known}: upgrade Tidepool")]
    SchemaTooNew { found: i32, known: i32 },
    /// A store is configured but no key was given.
    #[error("a metadata store is configured but TIDEPOOL_ENCRYPTION_KEY is not set: set it to the base64 of 32 random bytes (e.g. `openssl rand -base64 32`)")]
    MissingKey,
    /// The key is not the base64 of exactly 32 bytes.
    #[error(
        "TIDEPOOL_ENCRYPTION_KEY is malformed: it must be the standard base64 of exactly 32 bytes"
    )]
    MalformedKey,
    /// The key is well formed but is not the one the store was created with.
    #[error("TIDEPOOL_ENCRYPTION_KEY does not decrypt the metadata store: it was created with another key")]
    WrongKey,
    /// One stored password does not decrypt although the key is right: the row was
    /// tampered with or copied from another row.
    #[error("the stored password of user {user:?} of tenant {tenant:?} does not decrypt (tampered or moved between rows)")]
    Undecryptable { tenant: String, user: String },
    /// Sealing a password failed (no randomness from the system).
    #[error("cannot encrypt a password for the metadata store")]
    Encrypt,
    /// A query failed.
    #[error("metadata store query failed: {}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
    /// A stored row cannot be turned back into a tenant.
    #[error("a stored row of tenant {tenant:?} cannot be read: {reason}")]
    BadRow { tenant: String, reason: String },
    /// The tenant given to `put` cannot be stored as it is.
    #[error("the tenant cannot be stored: {reason}")]
    InvalidTenant { reason: String },
}

impl From<CryptoError> for StoreError {
    fn from(error: CryptoError) -> Self {
        match error {
            CryptoError::MissingKey => StoreError::MissingKey,
            CryptoError::MalformedKey => StoreError::MalformedKey,
            CryptoError::Open => StoreError::WrongKey,
            CryptoError::Random | CryptoError::Seal => StoreError::Encrypt,
        }
    }
}

impl StoreError {
    /// The connection to the store was lost (closed, reset, or the server shut the
    /// backend down): a fresh connection may well succeed.
    pub(crate) fn is_connection_lost(&self) -> bool {
        match self {
            StoreError::Query(error) | StoreError::Migration { source: error, .. } => {
                connection_lost(error)
            }
            _ => false,
        }
    }
}

/// See [`StoreError::is_connection_lost`].
pub(crate) fn connection_lost(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if error.is_closed() {
        return true;
    }
    match error.code() {
        Some(code) => {
            // Class 08: connection exception; 57P01-03: the server is shutting the
            // backend down (pg_terminate_backend, restart, not yet accepting).
            code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
        }
        // No SQLSTATE and not a database error: the socket failed.
        None => {
            error.as_db_error().is_none()
                && std::error::Error::source(error).is_some_and(|s| s.is::<std::io::Error>())
        }
    }
}

/// A driver error with its cause: tokio-postgres shows only the kind ("db error").
/// The server's DETAIL is left out (it may quote row values); the message, the
/// SQLSTATE and an I/O cause never hold a password (none is ever sent in clear).
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}
