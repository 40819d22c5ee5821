//! The protocol's Lua scripts: the shared prelude plus one body each. The host runs nothing
//! else ([`by_sha1`] is its allow list), so a guest cannot touch keys through a script of its own.

use std::sync::OnceLock;

macro_rules! script {
    ($name:ident, $file:literal, [$($part:literal),*]) => {
        pub static $name: Script = Script {
            name: $file,
            source: concat!(
                include_str!("../scripts/prelude.lua"),
                $(include_str!(concat!("../scripts/", $part)),)*
                include_str!(concat!("../scripts/", $file))
            ),
            sha1: OnceLock::new(),
        };
    };
}

macro_rules! init_script {
    ($name:ident, $file:literal, [$($prelude:literal),*]) => {
        pub static $name: Script = Script {
            name: $file,
            source: concat!(
                $(include_str!(concat!("../scripts/", $prelude)),)*
                include_str!("../scripts/opening.lua"),
                include_str!(concat!("../scripts/", $file))
            ),
            sha1: OnceLock::new(),
        };
    };
}

/// A script of the several-master mode: the prelude, the mode's own prelude, then its body.
macro_rules! multi_script {
    ($name:ident, $file:literal) => {
        pub static $name: Script = Script {
            name: concat!("multi/", $file),
            source: concat!(
                include_str!("../scripts/prelude.lua"),
                include_str!("../scripts/multi/prelude.lua"),
                include_str!(concat!("../scripts/multi/", $file))
            ),
            sha1: OnceLock::new(),
        };
    };
}

#[derive(Debug)]
pub struct Script {
    pub name: &'static str,
    pub source: &'static str,
    sha1: OnceLock<String>,
}

impl Script {
    /// Hex SHA-1 of the source, as EVALSHA wants it.
    pub fn sha1(&self) -> &str {
        self.sha1.get_or_init(|| sha1_smol::Sha1::from(self.source).digest().to_string())
    }
}

init_script!(INIT, "init.lua", ["prelude.lua", "queue.lua"]);
script!(ACQUIRE, "acquire.lua", ["queue.lua"]);
script!(POLL, "poll.lua", ["queue.lua", "settle.lua"]);
script!(CANCEL, "cancel.lua", ["queue.lua", "settle.lua"]);
script!(RELEASE, "release.lua", ["queue.lua"]);
script!(RELEASE_PERMITS, "release_permits.lua", ["queue.lua"]);
script!(REFRESH, "refresh.lua", ["queue.lua"]);
script!(PERMITS, "permits.lua", ["queue.lua"]);
script!(VALUE, "value.lua", ["queue.lua"]);
script!(STATUS, "status.lua", ["queue.lua"]);
script!(SET_CAPACITY, "set_capacity.lua", ["queue.lua"]);

init_script!(MULTI_INIT, "multi/init.lua", ["prelude.lua", "multi/prelude.lua"]);
multi_script!(MULTI_CLAIM, "claim.lua");
multi_script!(MULTI_CONFIRM, "confirm.lua");
multi_script!(MULTI_RELEASE, "release.lua");
multi_script!(MULTI_REFRESH, "refresh.lua");
multi_script!(MULTI_STATUS, "status.lua");
multi_script!(MULTI_SET_CAPACITY, "set_capacity.lua");

pub static ALL: [&Script; 18] = [
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
}
