//! Argument checks, done once here for every language the SDKs reach.

use crate::Error;

pub const MAX_KEY_BYTES: usize = 1024;
pub const MAX_VALUE: i64 = 1_000_000_000;
/// Permits are tracked one by one in Redis; a single call may move at most this many.
pub const MAX_PERMITS_PER_CALL: i64 = 10_000;
pub const MIN_LEASE_MS: i64 = 100;
pub const MAX_LEASE_MS: i64 = 86_400_000;
/// Longest finite time-out accepted, in seconds (about 31 years); longer means "forever".
pub const MAX_TIMEOUT_S: f64 = 1e9;

pub fn key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::invalid("key must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::invalid(format!("key is {} bytes long; at most {MAX_KEY_BYTES} are allowed", key.len())));
    }
    // The keys are `pottery-semaphore:{<key>}:...`: a leading '}' would end that hash tag empty,
    // and a cluster would then spread one semaphore's keys over several slots.
    if key.starts_with('}') {
        return Err(Error::invalid("key must not start with '}' (its Redis keys could not share one cluster hash tag)"));
    }
    Ok(())
}

pub fn value(value: i64) -> Result<u64, Error> {
    if value < 0 {
        return Err(Error::invalid("Semaphore value must be non-negative"));
    }
    if value > MAX_VALUE {
        return Err(Error::invalid(format!("Semaphore value must be at most {MAX_VALUE}")));
    }
    Ok(value as u64)
}

/// Tokens named in one call (release or refresh of exact permits).
pub fn tokens(tokens: &[u64]) -> Result<(), Error> {
    if tokens.len() as i64 > MAX_PERMITS_PER_CALL {
        return Err(Error::invalid(format!("at most {MAX_PERMITS_PER_CALL} tokens per call")));
    }
    Ok(())
}

pub fn count(n: i64) -> Result<u64, Error> {
    if n < 1 {
        return Err(Error::invalid("n must be >= 1"));
    }
    if n > MAX_PERMITS_PER_CALL {
        return Err(Error::invalid(format!("n must be <= {MAX_PERMITS_PER_CALL}")));
    }
    Ok(n as u64)
}

/// A change of the number of permits (negative removes).
pub fn delta(delta: i64) -> Result<i64, Error> {
    if delta.unsigned_abs() > MAX_VALUE as u64 {
        return Err(Error::invalid(format!("delta must be within ±{MAX_VALUE}")));
    }
    Ok(delta)
}

pub fn lease_ms(lease: i64) -> Result<u64, Error> {
    if !(MIN_LEASE_MS..=MAX_LEASE_MS).contains(&lease) {
        return Err(Error::invalid(format!("lease must be between {MIN_LEASE_MS} ms and {MAX_LEASE_MS} ms, got {lease} ms")));
    }
    Ok(lease as u64)
}

/// Holder ids end up inside key names: keep them short and plain.
pub fn holder(holder: &str) -> Result<(), Error> {
    let plain = holder.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if holder.is_empty() || holder.len() > 64 || !plain {
        return Err(Error::invalid("holder must be 1 to 64 characters of [A-Za-z0-9_-]"));
    }
    Ok(())
}

/// `None` waits forever. Returns the time-out in milliseconds.
pub fn timeout(blocking: bool, timeout: Option<f64>) -> Result<Option<u64>, Error> {
    let Some(t) = timeout else { return Ok(None) };
    if !blocking {
        return Err(Error::invalid("can't specify a timeout for a non-blocking call"));
    }
    if t.is_nan() || t < 0.0 {
        return Err(Error::invalid(format!("timeout must be a non-negative number of seconds, got {t}")));
    }
    if t > MAX_TIMEOUT_S {
        return Ok(None);
    }
    Ok(Some((t * 1000.0).ceil() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_arguments_with_clear_messages() {
        assert!(key("").is_err());
        assert!(key(&"k".repeat(1 << 20)).is_err());
        assert!(key("ok").is_ok());
        assert!(key("}x").is_err(), "the hash tag would be empty");
        assert!(key("a}b{c").is_ok(), "the tag is then 'a', the same for all its keys");
        assert_eq!(value(-1), Err(Error::invalid("Semaphore value must be non-negative")));
        assert_eq!(value(0), Ok(0));
        assert_eq!(count(0), Err(Error::invalid("n must be >= 1")));
        assert!(count(-5).is_err());
        assert!(count(MAX_PERMITS_PER_CALL + 1).is_err());
        assert!(lease_ms(99).is_err());
        assert!(holder("a b").is_err());
        assert!(holder("").is_err());
        assert!(timeout(true, Some(f64::NAN)).is_err());
        assert!(timeout(true, Some(-0.5)).is_err());
        assert!(timeout(false, Some(1.0)).is_err());
        assert_eq!(timeout(true, Some(f64::INFINITY)), Ok(None));
        assert_eq!(timeout(true, Some(0.25)), Ok(Some(250)));
        assert_eq!(timeout(false, None), Ok(None));
    }
}
