//! How the server answers `CMD_VERSION` (pcscd-protocol.md §5.5) and which
//! dialect a connection then speaks.
//!
//! * A client version we implement (4:0, 4:2, 4:3, 4:4, 4:5, 4:6, up to the
//!   configured maximum) is accepted and **echoed**: 2.4.1+ clients speak what
//!   the reply names, older ones ignore it, so both end up on their own version.
//!   An old exact-match client (≤ 2.4.0) sending 4:4 is accepted with 4:4.
//! * Anything else (newer minor, other major, 4:1) is refused with
//!   `SCARD_E_SERVICE_STOPPED` naming our highest version, so 2.4.1+ clients
//!   retry with it on the same connection. The connection stays usable.
//!
//! **4:2 has two wire variants under one number** (reader names of 128 bytes in
//! pcsc-lite 1.8.4–1.8.8, 100 bytes in 1.6.5–1.8.3), and nothing in the
//! handshake tells them apart. Rule: a 4:2 connection starts in the configured
//! variant ([`super::ServerConfig::v4_2`], default the 128-byte one: RHEL 7's
//! 1.8.8 is the last and most widespread 4:2 release); a 124-byte
//! `SCARD_CONNECT` (the 100-byte variant's size) switches that connection to the
//! 100-byte variant for everything that follows. A 100-byte client's first
//! `CMD_GET_READERS_STATE` before that point gets the wrong array size, so
//! servers for such clients should set `v4_2` to [`Version::V4_2Rn100`].
//!
//! A connection that never negotiated (the cancel connection, or a client that
//! skips `CMD_VERSION`) is treated as 4:4, except that `WAIT`/`STOP` follow the
//! body they carry (8 bytes: the ≤ 4:3 rules).

use crate::error::Rv;
use crate::wire::msg::VersionMsg;
use crate::wire::Version;

/// The reply to a `CMD_VERSION` from `major:minor`, and the dialect accepted.
pub fn answer(major: u32, minor: u32, max: Version, v4_2: Version) -> (VersionMsg, Option<Version>) {
    match Version::from_numbers(major, minor) {
        Some(v) if v <= max || (v == Version::V4_2 && v4_2 <= max) => {
            let v = if v == Version::V4_2 { v4_2 } else { v };
            (VersionMsg { major, minor, rv: Rv::SUCCESS.0 }, Some(v))
        }
        _ => (VersionMsg { major: max.major(), minor: max.minor(), rv: Rv::E_SERVICE_STOPPED.0 }, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(m: u32, n: u32) -> Option<Version> {
        answer(m, n, Version::V4_6, Version::V4_2).1
    }

    #[test]
    fn accepted_versions_are_echoed() {
        for (minor, v) in [
            (0, Version::V4_0),
            (2, Version::V4_2),
            (3, Version::V4_3),
            (4, Version::V4_4),
            (5, Version::V4_5),
            (6, Version::V4_6),
        ] {
            let (reply, accepted) = answer(4, minor, Version::V4_6, Version::V4_2);
            assert_eq!(accepted, Some(v));
            assert_eq!(reply, VersionMsg { major: 4, minor, rv: 0 });
        }
        assert_eq!(answer(4, 2, Version::V4_6, Version::V4_2Rn100).1, Some(Version::V4_2Rn100));
    }

    #[test]
    fn others_are_refused_with_our_highest() {
        for (m, n) in [(4, 7), (4, 1), (5, 6), (3, 0), (0, 0), (u32::MAX, u32::MAX)] {
            let (reply, accepted) = answer(m, n, Version::V4_6, Version::V4_2);
            assert_eq!(accepted, None, "{m}:{n}");
            assert_eq!(reply, VersionMsg { major: 4, minor: 6, rv: Rv::E_SERVICE_STOPPED.0 });
        }
        assert_eq!(ok(4, 6), Some(Version::V4_6));
        // A server capped at 4:5 refuses 4:6 naming 4:5 (2.4.1+ clients retry).
        let (reply, accepted) = answer(4, 6, Version::V4_5, Version::V4_2);
        assert_eq!(accepted, None);
        assert_eq!((reply.major, reply.minor, reply.rv), (4, 5, Rv::E_SERVICE_STOPPED.0));
        assert_eq!(answer(4, 4, Version::V4_5, Version::V4_2).1, Some(Version::V4_4));
    }
}
