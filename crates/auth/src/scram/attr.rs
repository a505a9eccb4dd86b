//! The attribute grammar shared by all SCRAM messages (RFC 5802 §7):
//! comma-separated `a=value` pairs, nonces of printable characters and decimal
//! iteration counts. Which attribute must come where is decided by the server
//! and client modules, not here.

use super::error::{ScramError, ScramMessage};
use super::MAX_ITERATIONS;

pub(crate) fn malformed(message: ScramMessage, reason: &'static str) -> ScramError {
    ScramError::Malformed { message, reason }
}

/// A cursor over the attributes of one message.
pub(crate) struct Attributes<'a> {
    rest: Option<&'a [u8]>,
    message: ScramMessage,
}

impl<'a> Attributes<'a> {
    pub(crate) fn new(input: &'a [u8], message: ScramMessage) -> Self {
        Self {
            rest: Some(input),
            message,
        }
    }

    /// The next `(name, value)` pair, or `None` once the message is exhausted.
    pub(crate) fn next_attr(&mut self) -> Result<Option<(u8, &'a [u8])>, ScramError> {
        let Some(input) = self.rest else {
            return Ok(None);
        };
        let mut fields = input.splitn(2, |&byte| byte == b',');
        let field = fields.next().unwrap_or_default();
        self.rest = fields.next();
        match field {
            [name, b'=', value @ ..] if name.is_ascii_alphabetic() => Ok(Some((*name, value))),
            _ => Err(malformed(
                self.message,
                "expected an attribute of the form a=value",
            )),
        }
    }

    /// The value of the next attribute, which must be called `name`.
    pub(crate) fn expect(&mut self, name: u8) -> Result<&'a [u8], ScramError> {
        match self.next_attr()? {
            Some((found, value)) if found == name => Ok(value),
            _ => Err(self.missing(name)),
        }
    }

    pub(crate) fn missing(&self, name: u8) -> ScramError {
        ScramError::MissingAttribute {
            message: self.message,
            attribute: char::from(name),
        }
    }

    /// Checks the syntax of the remaining (extension) attributes, which are otherwise ignored.
    pub(crate) fn skip_extensions(&mut self) -> Result<(), ScramError> {
        while self.next_attr()?.is_some() {}
        Ok(())
    }

    /// Fails unless the message is exhausted.
    pub(crate) fn finish(&self) -> Result<(), ScramError> {
        match self.rest {
            None => Ok(()),
            Some(_) => Err(malformed(
                self.message,
                "unexpected data after the last attribute",
            )),
        }
    }
}

/// Fails if `input` is longer than [`super::MAX_MESSAGE_LEN`].
pub(crate) fn check_length(input: &[u8], message: ScramMessage) -> Result<(), ScramError> {
    if input.len() > super::MAX_MESSAGE_LEN {
        return Err(ScramError::MessageTooLong(message));
    }
    Ok(())
}

/// A nonce: one or more printable ASCII characters other than ','.
pub(crate) fn parse_nonce(value: &[u8], message: ScramMessage) -> Result<&str, ScramError> {
    if value.is_empty()
        || !value
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(malformed(
            message,
            "nonce must be non-empty printable ASCII",
        ));
    }
    std::str::from_utf8(value).map_err(|_| malformed(message, "nonce is not ASCII"))
}

/// An iteration count in `1..=MAX_ITERATIONS`.
pub(crate) fn parse_iterations(value: &[u8], message: ScramMessage) -> Result<u32, ScramError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(malformed(message, "iteration count is not a number"));
    }
    // All digits, so the only possible parse failure is overflow.
    let iterations = std::str::from_utf8(value)
        .ok()
        .and_then(|digits| digits.parse::<u32>().ok())
        .ok_or(ScramError::IterationsOutOfRange)?;
    if !(1..=MAX_ITERATIONS).contains(&iterations) {
        return Err(ScramError::IterationsOutOfRange);
    }
    Ok(iterations)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: ScramMessage = ScramMessage::ServerFirst;

    #[test]
    fn walks_attributes_and_reports_end() {
        let mut attrs = Attributes::new(b"r=abc,s=,i=1", MSG);
        assert_eq!(attrs.expect(b'r'), Ok(&b"abc"[..]));
        assert_eq!(attrs.expect(b's'), Ok(&b""[..]));
        assert_eq!(attrs.next_attr(), Ok(Some((b'i', &b"1"[..]))));
        assert_eq!(attrs.next_attr(), Ok(None));
        assert_eq!(attrs.finish(), Ok(()));
    }

    #[test]
    fn rejects_bad_attribute_syntax() {
        for input in [&b""[..], b"r", b"=x", b"1=x", b"r=a,", b"r=a,,s=b", b"rr=a"] {
            let mut attrs = Attributes::new(input, MSG);
            let result = attrs.skip_extensions();
            assert!(result.is_err(), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn nonce_rules() {
        assert_eq!(parse_nonce(b"a%b)c$", MSG), Ok("a%b)c$"));
        assert!(parse_nonce(b"", MSG).is_err());
        assert!(parse_nonce(b"a b", MSG).is_err());
        assert!(parse_nonce(b"a\x7f", MSG).is_err());
        assert!(parse_nonce("é".as_bytes(), MSG).is_err());
    }

    #[test]
    fn iteration_bounds() {
        assert_eq!(parse_iterations(b"4096", MSG), Ok(4096));
        assert_eq!(parse_iterations(b"10000000", MSG), Ok(MAX_ITERATIONS));
        let too_many = [
            &b"0"[..],
            b"10000001",
            b"4294967296",
            b"99999999999999999999999",
        ];
        for value in too_many {
            assert_eq!(
                parse_iterations(value, MSG),
                Err(ScramError::IterationsOutOfRange)
            );
        }
        for value in [&b""[..], b"+1", b"-1", b"1e3", b" 1"] {
            assert!(matches!(
                parse_iterations(value, MSG),
                Err(ScramError::Malformed { .. })
            ));
        }
    }
}
