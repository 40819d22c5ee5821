//! Integers as decimal text without `core::fmt`, which costs a few hundred instructions per
//! number: the guest writes every script argument this way, and the host frames its EVALSHA.

/// The digits of a `u64`, most significant first.
#[derive(Debug, Clone, Copy)]
pub struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    pub fn new(mut n: u64) -> Self {
        let mut decimal = Decimal { digits: [0; 20], start: 20 };
        loop {
            decimal.start -= 1;
            decimal.digits[decimal.start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return decimal;
            }
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_the_decimal_text_of_the_number() {
        for n in [0, 7, 10, 1_764_000_000_000_001, u64::MAX] {
            assert_eq!(Decimal::new(n).as_bytes(), n.to_string().as_bytes());
        }
    }
}
