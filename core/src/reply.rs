//! RESP replies as the transport hands them over, and the small parsers the protocol needs.

use crate::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scalar {
    Nil,
    Int(i64),
    Bulk(Vec<u8>),
    Status(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Scalar(Scalar),
    Array(Vec<Scalar>),
}

impl Scalar {
    /// Integers arrive as RESP integers or, when a script passes a string through, as bulk text.
    pub fn as_i64(&self) -> Result<i64, Error> {
        match self {
            Scalar::Int(i) => Ok(*i),
            Scalar::Bulk(b) => parse_i64(b).ok_or_else(|| Error::protocol(format!("not an integer: {:?}", String::from_utf8_lossy(b)))),
            other => Err(Error::protocol(format!("not an integer: {other:?}"))),
        }
    }

    pub fn as_u64(&self) -> Result<u64, Error> {
        let v = self.as_i64()?;
        u64::try_from(v).map_err(|_| Error::protocol(format!("negative: {v}")))
    }

    pub fn as_string(&self) -> Result<String, Error> {
        match self {
            Scalar::Bulk(b) => Ok(String::from_utf8_lossy(b).into_owned()),
            Scalar::Status(s) => Ok(s.clone()),
            Scalar::Int(i) => Ok(i.to_string()),
            Scalar::Nil => Err(Error::protocol("nil where text was expected")),
        }
    }
}

/// Decimal text to i64. Tokens and deadlines come back as text (Lua formats them exactly), one
/// or more per call: up to 18 digits cannot overflow, so they skip the checked arithmetic that
/// costs a 128-bit multiply per digit on wasm32; longer text takes the standard parser.
fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return std::str::from_utf8(text).ok()?.parse().ok();
    }
    let value = digits.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
    Some(if negative { -value } else { value })
}

impl Reply {
    pub fn into_array(self) -> Result<Vec<Scalar>, Error> {
        match self {
            Reply::Array(items) => Ok(items),
            Reply::Scalar(s) => Err(Error::protocol(format!("expected an array, got {s:?}"))),
        }
    }

    pub fn into_scalar(self) -> Result<Scalar, Error> {
        match self {
            Reply::Scalar(s) => Ok(s),
            Reply::Array(_) => Err(Error::protocol("expected a scalar, got an array")),
        }
    }
}

/// Reads a flat reply front to back.
#[derive(Debug)]
pub(crate) struct Cursor {
    items: std::vec::IntoIter<Scalar>,
}

impl Cursor {
    pub(crate) fn new(reply: Reply) -> Result<Self, Error> {
        Ok(Cursor { items: reply.into_array()?.into_iter() })
    }

    fn next(&mut self) -> Result<Scalar, Error> {
        self.items.next().ok_or_else(|| Error::protocol("reply too short"))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, Error> {
        self.next()?.as_i64()
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Error> {
        self.next()?.as_u64()
    }

    pub(crate) fn string(&mut self) -> Result<String, Error> {
        self.next()?.as_string()
    }

    /// Every item left, as unsigned integers.
    pub(crate) fn rest_u64(self) -> Result<Vec<u64>, Error> {
        self.items.map(|s| s.as_u64()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_from_text_exactly_and_reject_the_rest() {
        for (text, want) in [
            ("0", Some(0)),
            ("1764000000000001", Some(1_764_000_000_000_001)),
            ("-42", Some(-42)),
            ("999999999999999999", Some(999_999_999_999_999_999)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("", None),
            ("-", None),
            ("12a", None),
            ("+5", Some(5)),
            (" 5", None),
        ] {
            assert_eq!(parse_i64(text.as_bytes()), want, "{text:?}");
        }
    }
}
