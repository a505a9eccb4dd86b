//! Frontend messages: encoding those the pooler sends to servers, and decoding the
//! password messages a client sends while the pooler authenticates it.

use bytes::{BufMut, BytesMut};

use crate::read::Reader;
use crate::startup::{begin_message as begin, patch_len, put_cstr};
use crate::{tag, WireError};

/// A simple Query.
pub fn query(sql: &str, out: &mut BytesMut) {
    let start = begin(out, tag::QUERY);
    put_cstr(out, sql);
    patch_len(out, start);
}

/// Parse of `sql` into the statement `name` ("" for the unnamed one), with the
/// parameter types left to the server.
pub fn parse(name: &str, sql: &str, out: &mut BytesMut) {
    let start = begin(out, tag::PARSE);
    put_cstr(out, name);
    put_cstr(out, sql);
    out.put_i16(0);
    patch_len(out, start);
}

/// Bind of text parameters (`None` is NULL) to `statement` into `portal`, asking
/// for text results.
pub fn bind_text(portal: &str, statement: &str, params: &[Option<&str>], out: &mut BytesMut) {
    let start = begin(out, tag::BIND);
    put_cstr(out, portal);
    put_cstr(out, statement);
    out.put_i16(0);
    out.put_i16(params.len() as i16);
    for p in params {
        match p {
            Some(v) => {
                out.put_i32(v.len() as i32);
                out.put_slice(v.as_bytes());
            }
            None => out.put_i32(-1),
        }
    }
    out.put_i16(0);
    patch_len(out, start);
}

/// Execute of `portal`, all rows (`max_rows` 0) or at most `max_rows`.
pub fn execute(portal: &str, max_rows: u32, out: &mut BytesMut) {
    let start = begin(out, tag::EXECUTE);
    put_cstr(out, portal);
    out.put_u32(max_rows);
    patch_len(out, start);
}

/// Close of the prepared statement `name`.
pub fn close_statement(name: &str, out: &mut BytesMut) {
    let start = begin(out, tag::CLOSE);
    out.put_u8(b'S');
    put_cstr(out, name);
    patch_len(out, start);
}

/// A whole Terminate message: a client's last words.
pub const TERMINATE_MESSAGE: [u8; 5] = [tag::TERMINATE, 0, 0, 0, 4];

/// Flush: the server sends what it has buffered, without ending the batch.
pub const FLUSH_MESSAGE: [u8; 5] = [tag::FLUSH, 0, 0, 0, 4];

/// Terminate.
pub fn terminate(out: &mut BytesMut) {
    out.put_slice(&TERMINATE_MESSAGE);
}

/// Sync.
pub fn sync(out: &mut BytesMut) {
    out.put_slice(&[tag::SYNC, 0, 0, 0, 4]);
}

/// PasswordMessage carrying a cleartext or md5 password.
pub fn password(password: &str, out: &mut BytesMut) {
    let start = begin(out, tag::PASSWORD);
    put_cstr(out, password);
    patch_len(out, start);
}

/// SASLInitialResponse.
pub fn sasl_initial_response(mechanism: &str, data: &[u8], out: &mut BytesMut) {
    let start = begin(out, tag::PASSWORD);
    put_cstr(out, mechanism);
    out.put_i32(data.len() as i32);
    out.put_slice(data);
    patch_len(out, start);
}

/// SASLResponse.
pub fn sasl_response(data: &[u8], out: &mut BytesMut) {
    let start = begin(out, tag::PASSWORD);
    out.put_slice(data);
    patch_len(out, start);
}

/// Decodes the body of a PasswordMessage as a NUL-terminated password.
pub fn decode_password(body: &[u8]) -> Result<&str, WireError> {
    let mut r = Reader::new(body, "password message");
    let password = r.cstr()?;
    if !r.is_empty() {
        return Err(WireError::Malformed {
            what: "password message",
        });
    }
    Ok(password)
}

/// A decoded SASLInitialResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaslInitial<'a> {
    pub mechanism: &'a str,
    pub data: &'a [u8],
}

/// Decodes the body of a SASLInitialResponse.
pub fn decode_sasl_initial(body: &[u8]) -> Result<SaslInitial<'_>, WireError> {
    let mut r = Reader::new(body, "SASLInitialResponse");
    let mechanism = r.cstr()?;
    let len = r.i32()?;
    let data = if len < 0 {
        &[][..]
    } else {
        r.bytes(len as usize)?
    };
    if !r.is_empty() {
        return Err(WireError::Malformed {
            what: "SASLInitialResponse",
        });
    }
    Ok(SaslInitial { mechanism, data })
}

/// Reads the query text of a simple Query body.
pub fn decode_query(body: &[u8]) -> Result<&str, WireError> {
    Reader::new(body, "query").cstr()
}

/// Reads a Parse body's statement name and query text (the parameter types are left).
pub fn decode_parse_head(body: &[u8]) -> Result<(&str, &str), WireError> {
    let mut r = Reader::new(body, "Parse");
    Ok((r.cstr()?, r.cstr()?))
}

/// Reads a Bind body's portal and statement names.
pub fn decode_bind_head(body: &[u8]) -> Result<(&str, &str), WireError> {
    let mut r = Reader::new(body, "Bind");
    Ok((r.cstr()?, r.cstr()?))
}

/// Reads the parameter-format count of a Bind body, to validate it is well formed.
pub fn bind_param_format_count(body: &[u8]) -> Result<i16, WireError> {
    let mut r = Reader::new(body, "Bind");
    r.cstr_bytes()?;
    r.cstr_bytes()?;
    r.i16()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::decode_frame;

    #[test]
    fn sasl_initial_round_trip() {
        let mut b = BytesMut::new();
        sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abc", &mut b);
        let f = decode_frame(&b, 1000).unwrap().unwrap();
        assert_eq!(f.tag, tag::PASSWORD);
        let s = decode_sasl_initial(f.body).unwrap();
        assert_eq!(s.mechanism, "SCRAM-SHA-256");
        assert_eq!(s.data, b"n,,n=,r=abc");
    }

    #[test]
    fn password_round_trip_and_garbage() {
        let mut b = BytesMut::new();
        password("secret", &mut b);
        let f = decode_frame(&b, 1000).unwrap().unwrap();
        assert_eq!(decode_password(f.body).unwrap(), "secret");
        assert!(decode_password(b"no terminator").is_err());
        assert!(decode_sasl_initial(b"SCRAM\0\x7f\xff\xff\xff").is_err());
        assert!(decode_sasl_initial(b"SCRAM").is_err());
    }
}
