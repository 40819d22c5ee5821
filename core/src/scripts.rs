//! The protocol's Lua scripts: a shared head, helpers, one body each. The host runs nothing
//! else ([`by_sha1`] is its allow list), so a guest cannot touch keys through a script of its own.

use std::sync::OnceLock;

/// A script: `head.lua`, then `parts` (helpers, any fast path first), then its body `file`;
/// `once` for the scripts that must not run again after a lost reply (see [`Script::rerun_safe`]).
macro_rules! script {
    ($name:ident, $file:literal, [$($part:literal),*]) => {
        script!($name, $file, [$($part),*], rerun_safe: true);
    };
    ($name:ident, $file:literal, [$($part:literal),*], once) => {
        script!($name, $file, [$($part),*], rerun_safe: false);
    };
    ($name:ident, $file:literal, [$($part:literal),*], rerun_safe: $safe:literal) => {
        pub static $name: Script = Script {
            name: $file,
            rerun_safe: $safe,
            source: concat!(
                include_str!("../scripts/head.lua"),
                $(include_str!(concat!("../scripts/", $part)),)*
                include_str!(concat!("../scripts/", $file))
            ),
            sha1: OnceLock::new(),
        };
    };
}

#[derive(Debug)]
pub struct Script {
    pub name: &'static str,
    /// Running it a second time after its reply was lost (the connection broke, or the reply
    /// timed out, once the request was sent) does no harm beyond permits the caller never learns
    /// of, which expire: a transport may send it again on a new connection. False for the
    /// scripts whose second run would change more: a release (the permits it names are gone,
    /// so it would give back others'), and adding permits.
    pub rerun_safe: bool,
    pub source: &'static str,
    sha1: OnceLock<String>,
}

impl Script {
    /// Hex SHA-1 of the source, as EVALSHA wants it.
    pub fn sha1(&self) -> &str {
        self.sha1.get_or_init(|| sha1_smol::Sha1::from(self.source).digest().to_string())
    }
}

// One server: the shared prelude and the mode's helpers. The two calls of an uncontended cycle
// return from their fast path, before any helper exists.
script!(INIT, "init.lua", ["prelude.lua", "queue.lua", "opening.lua"]);
script!(ACQUIRE, "acquire.lua", ["acquire_fast.lua", "prelude.lua", "queue.lua"]);
script!(RELEASE, "release.lua", ["done.lua", "release_fast.lua", "prelude.lua", "queue.lua"], once);
script!(POLL, "poll.lua", ["prelude.lua", "queue.lua", "settle.lua"]);
script!(CANCEL, "cancel.lua", ["prelude.lua", "queue.lua", "settle.lua"]);
script!(RELEASE_PERMITS, "release_permits.lua", ["prelude.lua", "queue.lua"]);
script!(REFRESH, "refresh.lua", ["prelude.lua", "queue.lua"]);
script!(PERMITS, "permits.lua", ["prelude.lua", "queue.lua"]);
script!(VALUE, "value.lua", ["prelude.lua", "queue.lua"]);
script!(STATUS, "status.lua", ["prelude.lua", "queue.lua"]);
script!(SET_CAPACITY, "set_capacity.lua", ["done.lua", "prelude.lua", "queue.lua"], once);

// Several masters: the shared prelude, then the mode's own.
script!(MULTI_INIT, "multi/init.lua", ["prelude.lua", "multi/prelude.lua", "opening.lua"]);
script!(MULTI_CLAIM, "multi/claim.lua", ["prelude.lua", "multi/prelude.lua"]);
script!(MULTI_CONFIRM, "multi/confirm.lua", ["prelude.lua", "multi/prelude.lua"]);
script!(MULTI_RELEASE, "multi/release.lua", ["prelude.lua", "multi/prelude.lua"], once);
script!(MULTI_REFRESH, "multi/refresh.lua", ["prelude.lua", "multi/prelude.lua"]);
script!(MULTI_STATUS, "multi/status.lua", ["prelude.lua", "multi/prelude.lua"]);
script!(MULTI_SET_CAPACITY, "multi/set_capacity.lua", ["prelude.lua", "multi/prelude.lua"], once);
script!(MULTI_WAKE, "multi/wake.lua", ["prelude.lua", "multi/prelude.lua"]);

pub static ALL: [&Script; 19] = [
    &INIT,
    &ACQUIRE,
    &POLL,
    &CANCEL,
    &RELEASE,
    &RELEASE_PERMITS,
    &REFRESH,
    &PERMITS,
    &VALUE,
    &STATUS,
    &SET_CAPACITY,
    &MULTI_INIT,
    &MULTI_CLAIM,
    &MULTI_CONFIRM,
    &MULTI_RELEASE,
    &MULTI_REFRESH,
    &MULTI_STATUS,
    &MULTI_SET_CAPACITY,
    &MULTI_WAKE,
];

/// The protocol script with this SHA-1, if any.
pub fn by_sha1(sha1: &str) -> Option<&'static Script> {
    ALL.iter().copied().find(|s| s.sha1() == sha1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shas_are_distinct_and_found() {
        for s in ALL {
            assert_eq!(s.sha1().len(), 40);
            assert_eq!(by_sha1(s.sha1()).map(|f| f.name), Some(s.name));
        }
        assert!(by_sha1("0000000000000000000000000000000000000000").is_none());
    }

    /// The bounds every script enforces on what a guest sends (head.lua) are the guest's own.
    #[test]
    fn the_scripts_bounds_are_the_validated_ones() {
        use crate::validate::{MAX_LEASE_MS, MAX_PERMITS_PER_CALL, MAX_VALUE, MIN_LEASE_MS};
        let head = include_str!("../scripts/head.lua");
        let bounds = format!("local MAX_VALUE, MAX_PER_CALL, MAX_SLOTS = {MAX_VALUE}, {MAX_PERMITS_PER_CALL}, {}", crate::multi::MAX_SLOTS);
        assert!(head.contains(&bounds), "head.lua lacks {bounds:?}");
        assert!(head.contains(&format!("LEASE >= {MIN_LEASE_MS} and LEASE <= {MAX_LEASE_MS}")));
    }

    #[test]
    fn only_releases_and_capacity_changes_must_not_run_twice() {
        let once: Vec<&str> = ALL.iter().filter(|s| !s.rerun_safe).map(|s| s.name).collect();
        assert_eq!(once, ["release.lua", "set_capacity.lua", "multi/release.lua", "multi/set_capacity.lua"]);
    }
}
