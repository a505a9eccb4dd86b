//! Client authentication: the pooler plays the server's part of SCRAM-SHA-256, md5,
//! cleartext password or trust, against the password kept for the user.
//!
//! An unknown user goes through the same exchange against a secret no password
//! matches, so a client cannot tell "no such user" from "wrong password" by the
//! messages or their timing.

use bytes::BytesMut;
use pgauth::{md5_password_hash, md5_verify, ScramError, ScramSecret, ScramServer};
use pgwire::{backend, frontend, tag};
use subtle_compare::equal;

use crate::config::{AuthMethod, StoredPassword, User};
use crate::error::ClientError;
use crate::framed::{read_message, send, ReadError, MAX_HANDSHAKE_MESSAGE};
use crate::stream::Stream;

/// What a successful authentication leaves behind.
#[derive(Debug, Default)]
pub struct Authenticated {
    /// The ClientKey recovered from a SCRAM proof (for pass-through logins upstream).
    pub scram_client_key: Option<[u8; 32]>,
}

/// Why authentication ended without success.
#[derive(Debug)]
pub enum AuthFailure {
    /// Tell the client this, then close.
    Client(ClientError),
    /// The client went away (psql does this to ask for a password); say nothing.
    Gone,
}

impl From<ReadError> for AuthFailure {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Wire(w) => Self::Client(ClientError::Protocol(w)),
            ReadError::Closed | ReadError::Io(_) => Self::Gone,
        }
    }
}

impl From<std::io::Error> for AuthFailure {
    fn from(_: std::io::Error) -> Self {
        Self::Gone
    }
}

fn failed(user_name: &str) -> AuthFailure {
    AuthFailure::Client(ClientError::AuthFailed {
        user: user_name.to_owned(),
    })
}

/// Runs the exchange for `method`. `user` is `None` for an unknown user, which
/// always fails after a full exchange. `dummy` is a SCRAM secret no password matches.
/// `sent_name` is the user name as the client sent it (`app.acme`): md5 clients
/// salt their hash with it.
pub async fn authenticate(
    stream: &mut Stream,
    buf: &mut BytesMut,
    user_name: &str,
    sent_name: &str,
    user: Option<&User>,
    method: AuthMethod,
    dummy: &ScramSecret,
) -> Result<Authenticated, AuthFailure> {
    let mut out = BytesMut::with_capacity(256);
    match method {
        AuthMethod::Trust if user.is_some() => Ok(Authenticated::default()),
        AuthMethod::Trust | AuthMethod::ScramSha256 => {
            let secret = match user.map(|u| &u.password) {
                Some(StoredPassword::Plain { scram, .. }) => scram,
                Some(StoredPassword::Scram(scram)) => scram,
                _ => dummy,
            };
            let known = user.is_some() && !std::ptr::eq(secret, dummy);
            scram(stream, buf, &mut out, user_name, secret, known).await
        }
        AuthMethod::Md5 => {
            let mut salt = [0u8; 4];
            let _ = getrandom::fill(&mut salt);
            backend::auth_md5(salt, &mut out);
            send(stream, &mut out).await?;
            let response = read_password(stream, buf).await?;
            let stored = match user.map(|u| &u.password) {
                Some(StoredPassword::Plain { password, .. }) => {
                    Some(md5_password_hash(sent_name, password.expose()))
                }
                // Salted with the role name: only clients that send the bare role
                // name (tenant chosen by option, server name or database) match.
                Some(StoredPassword::Md5(hash)) => Some(hash.expose().to_owned()),
                _ => None,
            };
            match stored {
                Some(hash) if md5_verify(&hash, salt, &response) => Ok(Authenticated::default()),
                _ => Err(failed(user_name)),
            }
        }
        AuthMethod::Password => {
            if !stream.is_confidential() {
                return Err(AuthFailure::Client(ClientError::CleartextWithoutTls));
            }
            backend::auth_cleartext(&mut out);
            send(stream, &mut out).await?;
            let given = read_password(stream, buf).await?;
            let ok = match user.map(|u| &u.password) {
                Some(StoredPassword::Plain { password, .. }) => {
                    equal(password.expose().as_bytes(), given.as_bytes())
                }
                Some(StoredPassword::Scram(secret)) => {
                    pgauth::derive_client_keys(&given, &secret.salt, secret.iterations)
                        .matches(secret)
                }
                Some(StoredPassword::Md5(hash)) => equal(
                    md5_password_hash(user_name, &given).as_bytes(),
                    hash.expose().as_bytes(),
                ),
                _ => false,
            };
            if ok {
                Ok(Authenticated::default())
            } else {
                Err(failed(user_name))
            }
        }
    }
}

async fn read_password_message(
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> Result<BytesMut, AuthFailure> {
    let (msg_tag, body) = read_message(stream, buf, MAX_HANDSHAKE_MESSAGE).await?;
    match msg_tag {
        tag::PASSWORD => Ok(body),
        tag::TERMINATE => Err(AuthFailure::Gone),
        other => Err(AuthFailure::Client(ClientError::Protocol(
            pgwire::WireError::UnexpectedMessage {
                tag: other as char,
                phase: "authentication",
            },
        ))),
    }
}

async fn read_password(stream: &mut Stream, buf: &mut BytesMut) -> Result<String, AuthFailure> {
    let body = read_password_message(stream, buf).await?;
    let password = frontend::decode_password(&body).map_err(|e| AuthFailure::Client(e.into()))?;
    Ok(password.to_owned())
}

async fn scram(
    stream: &mut Stream,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    user_name: &str,
    secret: &ScramSecret,
    known: bool,
) -> Result<Authenticated, AuthFailure> {
    backend::auth_sasl(&["SCRAM-SHA-256"], out);
    send(stream, out).await?;

    let body = read_password_message(stream, buf).await?;
    let initial =
        frontend::decode_sasl_initial(&body).map_err(|e| AuthFailure::Client(e.into()))?;
    if initial.mechanism != "SCRAM-SHA-256" {
        return Err(AuthFailure::Client(ClientError::AuthProtocol {
            reason: "client selected an invalid SASL authentication mechanism",
        }));
    }
    let mut nonce = [0u8; 18];
    let _ = getrandom::fill(&mut nonce);
    let (server, first) =
        ScramServer::start(secret, &nonce, initial.data).map_err(scram_failure)?;
    backend::auth_sasl_continue(&first, out);
    send(stream, out).await?;

    let body = read_password_message(stream, buf).await?;
    match server.finish(&body) {
        Ok(outcome) if known => {
            backend::auth_sasl_final(&outcome.server_final, out);
            send(stream, out).await?;
            Ok(Authenticated {
                scram_client_key: Some(outcome.client_key),
            })
        }
        Ok(_) | Err(ScramError::InvalidProof) => Err(failed(user_name)),
        Err(e) => Err(scram_failure(e)),
    }
}

fn scram_failure(e: ScramError) -> AuthFailure {
    tracing::debug!(error = %e, "SCRAM exchange with client failed");
    AuthFailure::Client(ClientError::AuthProtocol {
        reason: "malformed SCRAM message",
    })
}

/// Constant-time comparison of secrets.
mod subtle_compare {
    pub fn equal(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}
