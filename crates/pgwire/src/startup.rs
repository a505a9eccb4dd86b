//! The untagged packets that open a connection: StartupMessage, SSLRequest,
//! GSSENCRequest and CancelRequest. Each is `Int32 length` then `Int32 code`.

use crate::read::Reader;
use crate::WireError;

/// Postgres refuses startup packets longer than this (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET_LEN: usize = 10_000;

const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSSENC_REQUEST_CODE: u32 = 80_877_104;
const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// Protocol 3.0 as a startup code.
pub const PROTOCOL_3_0: u32 = 3 << 16;
/// Longest cancel key any protocol version allows (3.2 caps it at 256 bytes).
const MAX_CANCEL_KEY_LEN: usize = 256;
/// A client sending more startup parameters than this is not a real driver.
const MAX_STARTUP_PARAMS: usize = 64;

/// A decoded startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption.
    GssEncRequest,
    /// The client asks to cancel the query running on the backend with this key.
    CancelRequest { process_id: u32, secret: Vec<u8> },
    /// A StartupMessage for protocol 3.x.
    Startup(StartupParams),
}

/// A protocol 3.x StartupMessage.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartupParams {
    /// Minor version the client asked for (0 for 3.0).
    pub minor_version: u16,
    /// Parameters in the order the client sent them; `user` is among them.
    pub params: Vec<(String, String)>,
}

impl StartupParams {
    /// Value of a startup parameter, if the client sent it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Protocol options (`_pq_.*`) the client asked for; we support none of them.
    pub fn protocol_options(&self) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| k.starts_with("_pq_."))
    }
}

/// Decodes one startup packet from the front of `buf`.
///
/// Returns `Ok(None)` while the packet is incomplete, else the packet and the number of
/// bytes it used. The length is checked before the body is awaited, so a peer cannot
/// make the caller buffer more than [`MAX_STARTUP_PACKET_LEN`] bytes.
pub fn decode_startup(buf: &[u8]) -> Result<Option<(StartupPacket, usize)>, WireError> {
    let Some(len_bytes) = buf.get(..4) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
    if len < 8 {
        return Err(WireError::InvalidLength { len: len.into() });
    }
    let len = len as usize;
    if len > MAX_STARTUP_PACKET_LEN {
        return Err(WireError::TooLong {
            len,
            max: MAX_STARTUP_PACKET_LEN,
        });
    }
    let Some(packet) = buf.get(4..len) else {
        return Ok(None);
    };
    let mut r = Reader::new(packet, "startup packet");
    let code = r.u32()?;
    let parsed = match code {
        SSL_REQUEST_CODE if r.is_empty() => StartupPacket::SslRequest,
        GSSENC_REQUEST_CODE if r.is_empty() => StartupPacket::GssEncRequest,
        CANCEL_REQUEST_CODE => {
            let process_id = r.u32()?;
            let secret = r.remaining();
            if secret.len() < 4 || secret.len() > MAX_CANCEL_KEY_LEN {
                return Err(WireError::Malformed {
                    what: "cancel request",
                });
            }
            StartupPacket::CancelRequest {
                process_id,
                secret: secret.to_vec(),
            }
        }
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
            return Err(WireError::Malformed {
                what: "encryption request",
            })
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(WireError::UnsupportedProtocol { major, minor });
            }
            StartupPacket::Startup(decode_params(&mut r, minor)?)
        }
    };
    Ok(Some((parsed, len)))
}

fn decode_params(r: &mut Reader<'_>, minor_version: u16) -> Result<StartupParams, WireError> {
    let mut params = Vec::new();
    loop {
        let name = r.cstr()?;
        if name.is_empty() {
            break;
        }
        let value = r.cstr()?;
        if params.len() == MAX_STARTUP_PARAMS {
            return Err(WireError::Malformed {
                what: "startup packet (too many parameters)",
            });
        }
        params.push((name.to_owned(), value.to_owned()));
    }
    if !r.is_empty() {
        return Err(WireError::Malformed {
            what: "startup packet (bytes after the terminator)",
        });
    }
    Ok(StartupParams {
        minor_version,
        params,
    })
}

/// Encodes a StartupMessage for protocol 3.0.
pub fn encode_startup(params: &[(&str, &str)], out: &mut bytes::BytesMut) {
    use bytes::BufMut;
    let start = out.len();
    out.put_i32(0);
    out.put_u32(PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(out, k);
        put_cstr(out, v);
    }
    out.put_u8(0);
    patch_len(out, start);
}

/// Encodes an SSLRequest.
pub fn encode_ssl_request(out: &mut bytes::BytesMut) {
    use bytes::BufMut;
    out.put_i32(8);
    out.put_u32(SSL_REQUEST_CODE);
}

/// Encodes a CancelRequest carrying a server's backend key.
pub fn encode_cancel_request(process_id: u32, secret: &[u8], out: &mut bytes::BytesMut) {
    use bytes::BufMut;
    let start = out.len();
    out.put_i32(0);
    out.put_u32(CANCEL_REQUEST_CODE);
    out.put_u32(process_id);
    out.put_slice(secret);
    patch_len(out, start);
}

/// Writes a message's tag and a length placeholder; returns where the length is, for
/// [`patch_len`] once the body is written.
pub(crate) fn begin_message(out: &mut bytes::BytesMut, tag: u8) -> usize {
    use bytes::BufMut;
    out.put_u8(tag);
    let start = out.len();
    out.put_i32(0);
    start
}

pub(crate) fn put_cstr(out: &mut bytes::BytesMut, s: &str) {
    use bytes::BufMut;
    // A NUL inside would end the string early on the peer's side; strip it instead.
    // Strings without one (all but hostile ones) are copied whole.
    if s.as_bytes().contains(&0) {
        out.extend(s.bytes().filter(|&b| b != 0));
    } else {
        out.put_slice(s.as_bytes());
    }
    out.put_u8(0);
}

/// Writes the length of the packet that starts at `start` (its own 4 bytes included).
pub(crate) fn patch_len(out: &mut bytes::BytesMut, start: usize) {
    let len = (out.len() - start) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn startup_round_trip() {
        let mut buf = BytesMut::new();
        encode_startup(&[("user", "alice"), ("database", "db")], &mut buf);
        let (packet, used) = decode_startup(&buf).unwrap().unwrap();
        assert_eq!(used, buf.len());
        let StartupPacket::Startup(p) = packet else {
            panic!("not a startup")
        };
        assert_eq!(p.get("user"), Some("alice"));
        assert_eq!(p.get("database"), Some("db"));
        assert_eq!(p.minor_version, 0);
    }

    #[test]
    fn strings_are_written_nul_terminated_with_inner_nuls_stripped() {
        let mut buf = BytesMut::new();
        put_cstr(&mut buf, "plain");
        put_cstr(&mut buf, "a\0b\0");
        put_cstr(&mut buf, "");
        assert_eq!(&buf[..], b"plain\0ab\0\0");
    }

    #[test]
    fn incomplete_is_none() {
        let mut buf = BytesMut::new();
        encode_startup(&[("user", "alice")], &mut buf);
        for cut in 0..buf.len() {
            assert_eq!(decode_startup(&buf[..cut]).unwrap(), None, "cut {cut}");
        }
    }

    #[test]
    fn ssl_and_cancel() {
        let mut buf = BytesMut::new();
        encode_ssl_request(&mut buf);
        assert_eq!(
            decode_startup(&buf).unwrap(),
            Some((StartupPacket::SslRequest, 8))
        );
        let mut buf = BytesMut::new();
        encode_cancel_request(42, &[1, 2, 3, 4], &mut buf);
        assert_eq!(
            decode_startup(&buf).unwrap(),
            Some((
                StartupPacket::CancelRequest {
                    process_id: 42,
                    secret: vec![1, 2, 3, 4]
                },
                16
            ))
        );
    }

    #[test]
    fn rejects_bad_lengths_and_versions() {
        assert!(decode_startup(&[0, 0, 0, 3, 0, 0, 0, 0]).is_err());
        assert!(decode_startup(&[0x7f, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_startup(&(-1i32).to_be_bytes()).is_err());
        let mut v2 = vec![0, 0, 0, 8];
        v2.extend_from_slice(&(2u32 << 16).to_be_bytes());
        assert_eq!(
            decode_startup(&v2),
            Err(WireError::UnsupportedProtocol { major: 2, minor: 0 })
        );
        // Unterminated parameter list.
        let mut bad = vec![0, 0, 0, 13];
        bad.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        bad.extend_from_slice(b"user\0");
        assert!(decode_startup(&bad).is_err());
    }
}
