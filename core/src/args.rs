//! A script call's own arguments, framed as RESP bulk strings in one buffer. That buffer is what
//! crosses the component boundary and what a transport appends to its EVALSHA as it is: no
//! string per argument to allocate, copy and check on either side of the boundary.

use crate::Decimal;

/// Arguments in RESP framing, `$<length>\r\n<bytes>\r\n` each, one after the other.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Args {
    framed: Vec<u8>,
    count: usize,
}

/// Appends one RESP bulk string to `out`.
pub fn resp_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(Decimal::new(bytes.len() as u64).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

impl Args {
    /// Empties the buffer but keeps its capacity: a warm call allocates nothing for its
    /// arguments (in the component, every allocation is a trip through the guest's allocator).
    pub fn clear(&mut self) {
        self.framed.clear();
        self.count = 0;
    }

    pub fn push(&mut self, arg: &[u8]) {
        resp_bulk(&mut self.framed, arg);
        self.count += 1;
    }

    pub fn push_arg(&mut self, arg: &dyn Arg) {
        arg.push_to(self);
    }

    /// How many arguments.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The RESP bytes of every argument, in order.
    pub fn framed(&self) -> &[u8] {
        &self.framed
    }

    /// The arguments' bytes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.framed[..];
        std::iter::from_fn(move || {
            let (arg, after) = next_bulk(rest).ok()??;
            rest = after;
            Some(arg)
        })
    }

    /// Takes bytes framed elsewhere (by the guest, across the boundary): exactly a sequence of
    /// RESP bulk strings, or an error saying what is wrong. What passes cannot add anything
    /// but arguments to the command it is appended to.
    pub fn parse(framed: Vec<u8>) -> Result<Args, String> {
        let mut count = 0;
        let mut rest = &framed[..];
        while let Some((_, after)) = next_bulk(rest)? {
            rest = after;
            count += 1;
        }
        Ok(Args { framed, count })
    }
}

/// One bulk string's bytes and the bytes after it.
type Split<'a> = (&'a [u8], &'a [u8]);

/// The first bulk string of `framed` and what follows it; `None` at the end.
fn next_bulk(framed: &[u8]) -> Result<Option<Split<'_>>, String> {
    let Some(rest) = framed.strip_prefix(b"$") else {
        return if framed.is_empty() { Ok(None) } else { Err("an argument does not start with '$'".into()) };
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    // At most 10 digits: no argument comes near 10 GB. Counted in u64 and compared with what is
    // there, so a 32-bit host (Pulley on one) cannot overflow either.
    if digits == 0 || digits > 10 || (digits > 1 && rest[0] == b'0') {
        return Err("an argument's length is not a decimal number".into());
    }
    let len = rest[..digits].iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    let body = rest[digits..].strip_prefix(b"\r\n").ok_or("an argument's length is not followed by CRLF")?;
    let len = usize::try_from(len).ok().filter(|len| len.checked_add(2).is_some_and(|end| end <= body.len()));
    let Some(len) = len.filter(|len| &body[*len..*len + 2] == b"\r\n") else {
        return Err("an argument is shorter than its length or not followed by CRLF".into());
    };
    Ok(Some((&body[..len], &body[len + 2..])))
}

impl<S: AsRef<str>> FromIterator<S> for Args {
    fn from_iter<I: IntoIterator<Item = S>>(items: I) -> Self {
        let mut args = Args::default();
        for item in items {
            args.push(item.as_ref().as_bytes());
        }
        args
    }
}

/// A script argument, written as text without `core::fmt` (a few hundred instructions per
/// number in the guest).
pub trait Arg {
    fn push_to(&self, args: &mut Args);
}

impl Arg for u64 {
    fn push_to(&self, args: &mut Args) {
        args.push(Decimal::new(*self).as_bytes());
    }
}

impl Arg for i64 {
    fn push_to(&self, args: &mut Args) {
        if *self >= 0 {
            return self.unsigned_abs().push_to(args);
        }
        let digits = Decimal::new(self.unsigned_abs());
        let digits = digits.as_bytes();
        let mut text = [b'-'; 21];
        text[1..=digits.len()].copy_from_slice(digits);
        args.push(&text[..=digits.len()]);
    }
}

impl Arg for &str {
    fn push_to(&self, args: &mut Args) {
        args.push(self.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_frame_as_resp_and_read_back() {
        let mut args = Args::default();
        for arg in [&0u64 as &dyn Arg, &u64::MAX, &42i64, &-42i64, &i64::MIN, &"", &"é\r\n$3"] {
            args.push_arg(arg);
        }
        let text: Vec<String> = args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        assert_eq!(text, ["0", "18446744073709551615", "42", "-42", "-9223372036854775808", "", "é\r\n$3"]);
        assert_eq!(args.len(), 7);
        assert_eq!(Args::parse(args.framed().to_vec()), Ok(args.clone()));
        args.clear();
        assert!(args.is_empty() && args.framed().is_empty());
    }

    #[test]
    fn parsing_refuses_anything_but_bulk_strings() {
        assert_eq!(Args::parse(Vec::new()).map(|a| a.len()), Ok(0));
        assert_eq!(Args::parse(b"$1\r\na\r\n$0\r\n\r\n".to_vec()).map(|a| a.len()), Ok(2));
        for bad in [
            &b"*1\r\n$1\r\na\r\n"[..],
            b"$1\r\na\r\n\r\nPING\r\n",
            b"$2\r\na\r\n",
            b"$1\r\nab\r\n",
            b"$1\na\r\n",
            b"$\r\n\r\n",
            b"$-1\r\n",
            b"$01\r\na\r\n",
            b"$99999999999\r\n",
            b"$1\r\na",
            // Lengths near the top of 32 and 64 bits, and CRLF missing after an empty one.
            b"$4294967294\r\n",
            b"$4294967295\r\nab\r\n",
            b"$9999999999\r\n",
            b"$0\r\n",
            b"$0\r\nx",
        ] {
            assert!(Args::parse(bad.to_vec()).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
