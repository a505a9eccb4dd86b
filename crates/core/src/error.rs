//! Errors a client can be told about. Each knows its SQLSTATE, its severity and the
//! words the client sees; internal detail goes to the log, never to the client.

use bytes::BytesMut;
use pgwire::backend::{error_response, ErrorFields, Severity};
use pgwire::WireError;

/// Why a client's session, or one of its requests, failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("password authentication failed for user \"{user}\"")]
    AuthFailed { user: String },
    #[error("{reason}")]
    AuthProtocol { reason: &'static str },
    #[error("no tenant matches this connection (give the user as user.tenant)")]
    NoTenant,
    #[error("database \"{database}\" does not exist")]
    UnknownDatabase { database: String },
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
    #[error("cleartext password authentication requires TLS")]
    CleartextWithoutTls,
    #[error("timeout while authenticating")]
    AuthTimeout,
    #[error("{0}")]
    Protocol(#[from] WireError),
    #[error("could not get a server connection within {waited_ms} ms")]
    CheckoutTimeout { waited_ms: u128 },
    #[error("could not connect to the database server")]
    ServerUnavailable,
    #[error("{message}")]
    ServerRefused { code: String, message: String },
    #[error("server connection lost")]
    ServerLost,
    #[error("the pooler is shutting down")]
    ShuttingDown,
    #[error("terminating connection due to administrator command")]
    Terminated,
    #[error(
        "terminating connection because its tenant or user was removed from the configuration"
    )]
    Removed,
    #[error("too many client connections for tenant \"{tenant}\"")]
    TenantFull { tenant: String },
    #[error("too many client connections for user \"{user}\" of tenant \"{tenant}\"")]
    UserFull { tenant: String, user: String },
    #[error("connections from {from} are not allowed for tenant \"{tenant}\"")]
    AddressNotAllowed {
        tenant: String,
        /// The client's IP address, or the Unix socket.
        from: String,
    },
    #[error("tenant \"{tenant}\" requires an SSL connection (sslmode=require)")]
    SslRequired { tenant: String },
    #[error("terminating connection because tenant \"{tenant}\" was deleted")]
    TenantDeleted { tenant: String },
    #[error("terminating connection: the connections of tenant \"{tenant}\" were terminated by an administrator")]
    TenantTerminated { tenant: String },
    #[error("terminating connection due to idle-session timeout")]
    IdleTimeout,
    #[error(transparent)]
    StartupOption(#[from] crate::params::OptionsError),
}

impl ClientError {
    pub fn sqlstate(&self) -> &str {
        match self {
            Self::AuthFailed { .. } => "28P01",
            Self::AuthProtocol { .. } => "08P01",
            Self::NoTenant | Self::NoUser | Self::CleartextWithoutTls => "28000",
            Self::UnknownDatabase { .. } => "3D000",
            Self::AuthTimeout => "08006",
            Self::Protocol(e) => e.sqlstate(),
            Self::CheckoutTimeout { .. } => "53300",
            Self::ServerUnavailable => "08006",
            Self::ServerRefused { code, .. } => code,
            Self::ServerLost => "08006",
            Self::ShuttingDown => "57P03",
            Self::Terminated
            | Self::Removed
            | Self::TenantDeleted { .. }
            | Self::TenantTerminated { .. } => "57P01",
            Self::TenantFull { .. } | Self::UserFull { .. } => "53300",
            Self::AddressNotAllowed { .. } | Self::SslRequired { .. } => "28000",
            Self::IdleTimeout => "57P05",
            // As Postgres answers a bad option at startup.
            Self::StartupOption(_) => "42601",
        }
    }

    /// Writes this error as a FATAL ErrorResponse (the session ends after it).
    pub fn encode_fatal(&self, out: &mut BytesMut) {
        let message = self.to_string();
        error_response(
            &ErrorFields {
                severity: Severity::Fatal,
                code: self.sqlstate(),
                message: &message,
                detail: None,
                hint: None,
            },
            out,
        );
    }
}
