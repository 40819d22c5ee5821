//! Key layout. Every key of one semaphore starts with `pottery-semaphore:{<key>}:`, so they
//! share a cluster hash slot, and ends with a short suffix of `[a-z0-9:_-]` (see
//! `scripts/prelude.lua`). [`Keys::owns`] is the host's sandbox check.

const NAMESPACE: &str = "pottery-semaphore:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(key: &str) -> Self {
        Keys { prefix: format!("{NAMESPACE}{{{key}}}:") }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// KEYS of the one-server scripts (`scripts/queue.lua`): meta, leases, queue, waiters. A
    /// permit names its holder inside `leases`, so no key depends on the caller.
    pub fn script_keys(&self) -> Vec<String> {
        ["meta", "leases", "queue", "waiters"].iter().map(|s| self.key(s)).collect()
    }

    /// KEYS of the several-master scripts (`scripts/multi/prelude.lua`) run by `holder`: meta,
    /// leases, owner, the holder's `held` set, tokens.
    pub fn multi_script_keys(&self, holder: &str) -> Vec<String> {
        vec![self.key("meta"), self.key("leases"), self.key("owner"), self.key(&format!("held:{holder}")), self.key("tokens")]
    }

    /// The list waiters of the several-master mode pop to learn that slots were released.
    pub fn multi_wake(&self) -> String {
        format!("{}mwake", self.prefix)
    }

    pub fn meta(&self) -> String {
        format!("{}meta", self.prefix)
    }

    pub fn wake(&self, waiter: u64) -> String {
        format!("{}wake:{waiter}", self.prefix)
    }

    /// True when `key` is one of this semaphore's keys. The suffix may not contain braces, so
    /// another semaphore whose name extends this one's (`a}:x`) cannot be reached through it.
    pub fn owns(&self, key: &str) -> bool {
        key.strip_prefix(&self.prefix).is_some_and(|suffix| {
            !suffix.is_empty()
                && suffix.len() <= 128
                && suffix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_:-".contains(&b) || b.is_ascii_uppercase())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_keys_share_one_hash_tag() {
        let keys = Keys::new("jobs");
        for k in keys.script_keys().iter().chain(&keys.multi_script_keys("h1")).chain([keys.meta(), keys.wake(7)].iter()) {
            assert!(k.starts_with("pottery-semaphore:{jobs}:"), "{k}");
            assert!(keys.owns(k), "{k}");
        }
    }

    #[test]
    fn sandbox_rejects_foreign_keys() {
        let keys = Keys::new("a");
        assert!(!keys.owns("pottery-semaphore:{b}:meta"));
        assert!(!keys.owns("other"));
        assert!(!keys.owns("pottery-semaphore:{a}:"));
        // A semaphore named `a}:x` lives under `pottery-semaphore:{a}:x}:`; `a` cannot reach it.
        assert!(!keys.owns(&Keys::new("a}:x").meta()));
    }
}
