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

/// Type OID of `text`, for [`row_description`].
pub const TEXT_OID: u32 = 25;
/// Type OID of `int8`, for [`row_description`].
pub const INT8_OID: u32 = 20;

/// RowDescription of a result whose columns are sent as text: each column's name
/// and type OID, no table, the type's own length, no modifier.
pub fn row_description(columns: &[(&str, u32)], out: &mut BytesMut) {
    let start = begin(out, tag::ROW_DESCRIPTION);
    out.put_i16(i16::try_from(columns.len()).unwrap_or(i16::MAX));
    for (name, oid) in columns.iter().take(i16::MAX as usize) {
        put_cstr(out, name);
        out.put_u32(0); // table
        out.put_i16(0); // column in the table
        out.put_u32(*oid);
        out.put_i16(if *oid == INT8_OID { 8 } else { -1 });
        out.put_i32(-1); // type modifier
        out.put_i16(0); // text format
    }
    patch_len(out, start);
}

/// DataRow of text values; `None` is SQL NULL.
pub fn data_row<S: AsRef<str>>(values: &[Option<S>], out: &mut BytesMut) {
    let start = begin(out, tag::DATA_ROW);
    out.put_i16(i16::try_from(values.len()).unwrap_or(i16::MAX));
    for value in values.iter().take(i16::MAX as usize) {
        match value {
            Some(v) => {
                let v = v.as_ref().as_bytes();
                out.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
                out.put_slice(v);
            }
            None => out.put_i32(-1),
        }
    }
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
    #[test]
    fn a_row_and_its_description_are_framed_as_postgres_frames_them() {
        let mut out = BytesMut::new();
        row_description(&[("name", TEXT_OID), ("n", INT8_OID)], &mut out);
        data_row(&[Some("a"), None], &mut out);
        let mut expected = vec![b'T', 0, 0, 0, 49, 0, 2];
        expected.extend_from_slice(b"name\0");
        expected.extend_from_slice(&[
            0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ]);
        expected.extend_from_slice(b"n\0");
        expected.extend_from_slice(&[
            0, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0, 8, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ]);
        expected.extend_from_slice(&[
            b'D', 0, 0, 0, 15, 0, 2, 0, 0, 0, 1, b'a', 0xff, 0xff, 0xff, 0xff,
        ]);
        assert_eq!(&out[..], &expected[..]);
    }

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
