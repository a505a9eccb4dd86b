//! Backend messages: encoding those the pooler sends to clients, and decoding those a
//! server sends while the pooler logs in to it.

use bytes::{BufMut, BytesMut};

use crate::read::Reader;
use crate::startup::{begin_message as begin, patch_len, put_cstr};
use crate::{tag, Frame, TransactionStatus, WireError};

/// AuthenticationOk.
pub fn auth_ok(out: &mut BytesMut) {
    out.put_slice(&[tag::AUTHENTICATION, 0, 0, 0, 8, 0, 0, 0, 0]);
}

/// AuthenticationCleartextPassword.
pub fn auth_cleartext(out: &mut BytesMut) {
    out.put_slice(&[tag::AUTHENTICATION, 0, 0, 0, 8, 0, 0, 0, 3]);
}

/// AuthenticationMD5Password with its salt.
pub fn auth_md5(salt: [u8; 4], out: &mut BytesMut) {
    out.put_slice(&[tag::AUTHENTICATION, 0, 0, 0, 12, 0, 0, 0, 5]);
    out.put_slice(&salt);
}

/// AuthenticationSASL listing the mechanisms offered.
pub fn auth_sasl(mechanisms: &[&str], out: &mut BytesMut) {
    let start = begin(out, tag::AUTHENTICATION);
    out.put_i32(10);
    for m in mechanisms {
        put_cstr(out, m);
    }
    out.put_u8(0);
    patch_len(out, start);
}

/// AuthenticationSASLContinue carrying the server-first-message.
pub fn auth_sasl_continue(data: &[u8], out: &mut BytesMut) {
    let start = begin(out, tag::AUTHENTICATION);
    out.put_i32(11);
    out.put_slice(data);
    patch_len(out, start);
}

/// AuthenticationSASLFinal carrying the server-final-message.
pub fn auth_sasl_final(data: &[u8], out: &mut BytesMut) {
    let start = begin(out, tag::AUTHENTICATION);
    out.put_i32(12);
    out.put_slice(data);
    patch_len(out, start);
}

/// ParameterStatus.
pub fn parameter_status(name: &str, value: &str, out: &mut BytesMut) {
    let start = begin(out, tag::PARAMETER_STATUS);
    put_cstr(out, name);
    put_cstr(out, value);
    patch_len(out, start);
}

/// BackendKeyData with a 4-byte secret (protocol 3.0).
pub fn backend_key_data(process_id: u32, secret: u32, out: &mut BytesMut) {
    out.put_slice(&[tag::BACKEND_KEY_DATA, 0, 0, 0, 12]);
    out.put_u32(process_id);
    out.put_u32(secret);
}

/// CommandComplete with its command tag (e.g. `LISTEN`).
pub fn command_complete(command: &str, out: &mut BytesMut) {
    let start = begin(out, tag::COMMAND_COMPLETE);
    put_cstr(out, command);
    patch_len(out, start);
}

/// ReadyForQuery.
pub fn ready_for_query(status: TransactionStatus, out: &mut BytesMut) {
    out.put_slice(&[tag::READY_FOR_QUERY, 0, 0, 0, 5, status.as_byte()]);
}

/// NegotiateProtocolVersion: the newest minor version we speak and the options we ignored.
pub fn negotiate_protocol_version(newest_minor: u16, unsupported: &[&str], out: &mut BytesMut) {
    let start = begin(out, tag::NEGOTIATE_PROTOCOL_VERSION);
    out.put_i32(newest_minor.into());
    out.put_i32(unsupported.len() as i32);
    for o in unsupported {
        put_cstr(out, o);
    }
    patch_len(out, start);
}

/// Severity of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Notice,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "ERROR",
            Self::Fatal => "FATAL",
            Self::Notice => "NOTICE",
            Self::Warning => "WARNING",
        }
    }
}

/// The fields of an error or notice the pooler itself raises.
#[derive(Debug, Clone, Copy)]
pub struct ErrorFields<'a> {
    pub severity: Severity,
    pub code: &'a str,
    pub message: &'a str,
    pub detail: Option<&'a str>,
    pub hint: Option<&'a str>,
}

/// ErrorResponse (or NoticeResponse for notice severities).
pub fn error_response(fields: &ErrorFields<'_>, out: &mut BytesMut) {
    let msg_tag = match fields.severity {
        Severity::Error | Severity::Fatal => tag::ERROR_RESPONSE,
        Severity::Notice | Severity::Warning => tag::NOTICE_RESPONSE,
    };
    let start = begin(out, msg_tag);
    for (code, value) in [
        (b'S', Some(fields.severity.as_str())),
        (b'V', Some(fields.severity.as_str())),
        (b'C', Some(fields.code)),
        (b'M', Some(fields.message)),
        (b'D', fields.detail),
        (b'H', fields.hint),
    ] {
        if let Some(value) = value {
            out.put_u8(code);
            put_cstr(out, value);
        }
    }
    out.put_u8(0);
    patch_len(out, start);
}

/// An authentication request from a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    Ok,
    Cleartext,
    Md5 {
        salt: [u8; 4],
    },
    Sasl {
        mechanisms: Vec<&'a str>,
    },
    SaslContinue {
        data: &'a [u8],
    },
    SaslFinal {
        data: &'a [u8],
    },
    /// Kerberos, GSSAPI, SSPI and anything newer: not supported by the pooler.
    Unsupported {
        code: i32,
    },
}

/// The backend messages the pooler interprets while logging in to a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage<'a> {
    Authentication(AuthRequest<'a>),
    ParameterStatus {
        name: &'a str,
        value: &'a str,
    },
    BackendKeyData {
        process_id: u32,
        secret: &'a [u8],
    },
    ReadyForQuery(TransactionStatus),
    ErrorResponse(ErrorBody<'a>),
    NoticeResponse(ErrorBody<'a>),
    NegotiateProtocolVersion {
        newest_minor: i32,
    },
    /// Any other message, left undecoded.
    Other {
        tag: u8,
    },
}

impl<'a> BackendMessage<'a> {
    /// Decodes a complete backend message.
    pub fn decode(frame: Frame<'a>) -> Result<Self, WireError> {
        let mut r = Reader::new(frame.body, "backend message");
        Ok(match frame.tag {
            tag::AUTHENTICATION => Self::Authentication(match r.i32()? {
                0 => AuthRequest::Ok,
                3 => AuthRequest::Cleartext,
                5 => {
                    let s = r.bytes(4)?;
                    AuthRequest::Md5 {
                        salt: [s[0], s[1], s[2], s[3]],
                    }
                }
                10 => {
                    let mut mechanisms = Vec::new();
                    loop {
                        let m = r.cstr()?;
                        if m.is_empty() {
                            break;
                        }
                        mechanisms.push(m);
                    }
                    AuthRequest::Sasl { mechanisms }
                }
                11 => AuthRequest::SaslContinue {
                    data: r.remaining(),
                },
                12 => AuthRequest::SaslFinal {
                    data: r.remaining(),
                },
                code => AuthRequest::Unsupported { code },
            }),
            tag::PARAMETER_STATUS => Self::ParameterStatus {
                name: r.cstr()?,
                value: r.cstr()?,
            },
            tag::BACKEND_KEY_DATA => Self::BackendKeyData {
                process_id: r.u32()?,
                secret: r.remaining(),
            },
            tag::READY_FOR_QUERY => Self::ReadyForQuery(
                TransactionStatus::from_byte(r.u8()?).ok_or(WireError::Malformed {
                    what: "ReadyForQuery status",
                })?,
            ),
            tag::ERROR_RESPONSE => Self::ErrorResponse(ErrorBody(frame.body)),
            tag::NOTICE_RESPONSE => Self::NoticeResponse(ErrorBody(frame.body)),
            tag::NEGOTIATE_PROTOCOL_VERSION => Self::NegotiateProtocolVersion {
                newest_minor: r.i32()?,
            },
            other => Self::Other { tag: other },
        })
    }
}

/// The body of an ErrorResponse or NoticeResponse, decoded field by field on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorBody<'a>(pub &'a [u8]);

impl<'a> ErrorBody<'a> {
    /// The value of the field with this code ('C' for SQLSTATE, 'M' for message, ...).
    pub fn field(&self, code: u8) -> Option<&'a str> {
        let mut r = Reader::new(self.0, "error fields");
        loop {
            let field = r.u8().ok()?;
            if field == 0 {
                return None;
            }
            let value = r.cstr().ok()?;
            if field == code {
                return Some(value);
            }
        }
    }

    pub fn code(&self) -> &'a str {
        self.field(b'C').unwrap_or("XX000")
    }

    pub fn message(&self) -> &'a str {
        self.field(b'M').unwrap_or("")
    }

    pub fn severity(&self) -> &'a str {
        self.field(b'V').or_else(|| self.field(b'S')).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::decode_frame;

    fn one(buf: &BytesMut) -> BackendMessage<'_> {
        let f = decode_frame(buf, 1 << 20).unwrap().unwrap();
        assert_eq!(f.wire_len(), buf.len());
        BackendMessage::decode(f).unwrap()
    }

    #[test]
    fn encode_decode() {
        let mut b = BytesMut::new();
        auth_sasl(&["SCRAM-SHA-256"], &mut b);
        assert_eq!(
            one(&b),
            BackendMessage::Authentication(AuthRequest::Sasl {
                mechanisms: vec!["SCRAM-SHA-256"]
            })
        );
        let mut b = BytesMut::new();
        auth_md5([1, 2, 3, 4], &mut b);
        assert_eq!(
            one(&b),
            BackendMessage::Authentication(AuthRequest::Md5 { salt: [1, 2, 3, 4] })
        );
        let mut b = BytesMut::new();
        parameter_status("TimeZone", "UTC", &mut b);
        assert_eq!(
            one(&b),
            BackendMessage::ParameterStatus {
                name: "TimeZone",
                value: "UTC"
            }
        );
        let mut b = BytesMut::new();
        ready_for_query(TransactionStatus::Failed, &mut b);
        assert_eq!(
            one(&b),
            BackendMessage::ReadyForQuery(TransactionStatus::Failed)
        );
        let mut b = BytesMut::new();
        backend_key_data(7, 9, &mut b);
        assert_eq!(
            one(&b),
            BackendMessage::BackendKeyData {
                process_id: 7,
                secret: &[0, 0, 0, 9]
            }
        );
    }

    #[test]
    fn error_fields() {
        let mut b = BytesMut::new();
        error_response(
            &ErrorFields {
                severity: Severity::Fatal,
                code: "28P01",
                message: "password authentication failed for user \"x\"",
                detail: None,
                hint: Some("h"),
            },
            &mut b,
        );
        let BackendMessage::ErrorResponse(e) = one(&b) else {
            panic!("not an error")
        };
        assert_eq!(e.code(), "28P01");
        assert_eq!(e.severity(), "FATAL");
        assert_eq!(e.field(b'H'), Some("h"));
        assert_eq!(e.field(b'D'), None);
        assert!(e.message().starts_with("password authentication failed"));
    }
}
