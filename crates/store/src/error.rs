//! The store's one error type. Messages name what failed and which setting to fix;
//! they never carry a password, the encryption key or the store URL's password.

/// Everything that can go wrong talking to the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL does not parse as a Postgres connection string.
    #[error("the metadata store URL is malformed: {0}")]
    Url(#[source] tokio_postgres::Error),
    /// The store could not be reached or refused the login.
    #[error("cannot connect to the metadata store: {0}")]
    Connect(#[source] tokio_postgres::Error),
    /// Creating or upgrading the store's schema failed.
    #[error("metadata store migration to version {version} failed: {source}")]
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
    /// A query failed.
    #[error("metadata store query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    /// A stored row cannot be turned back into a tenant.
    #[error("a stored row of tenant {tenant:?} cannot be read: {reason}")]
    BadRow { tenant: String, reason: String },
    /// The tenant given to `put` cannot be stored as it is.
    #[error("the tenant cannot be stored: {reason}")]
    InvalidTenant { reason: String },
}
