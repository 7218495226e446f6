//! The `CMD_VERSION` handshake: offer the newest version, step down on refusal.
//!
//! Rules (reference §5): on success the effective version is the lower of what we
//! offered and what the daemon names (a 2.4.1 daemon accepts 4:6 but speaks 4:5; a
//! 2.5 daemon always names 4:6). On refusal, whichever code the generation uses
//! (`SCARD_E_NO_SERVICE` up to 1.8.25, `SCARD_E_SERVICE_STOPPED` after), retry with
//! the daemon's own version if we speak it, else with the next lower one, so that
//! a future daemon that names an unknown version but accepts older ones still works.

use crate::error::Rv;
use crate::wire::header::{Command, Header};
use crate::wire::msg::VersionMsg;
use crate::wire::Version;

use super::transport::{Conn, TransportError};

/// What a handshake ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    Transport(TransportError),
    /// Every version we offered was refused; the daemon's last answer.
    Refused {
        rv: Rv,
        major: u32,
        minor: u32,
    },
}

impl HandshakeError {
    pub fn rv(self) -> Rv {
        match self {
            HandshakeError::Transport(t) => t.rv(),
            HandshakeError::Refused { rv, .. } => rv,
        }
    }
}

impl From<TransportError> for HandshakeError {
    fn from(t: TransportError) -> Self {
        HandshakeError::Transport(t)
    }
}

/// Appends a framed `CMD_VERSION` request for `v` to `out`.
pub fn emit_version_request(out: &mut Vec<u8>, v: Version) {
    Header::new(Command::VERSION, VersionMsg::SIZE).emit(out);
    VersionMsg { major: v.major(), minor: v.minor(), rv: 0 }.emit(out);
}

/// The effective version after the daemon accepted `offered` with `reply`.
pub fn effective(offered: Version, reply: &VersionMsg) -> Version {
    match Version::from_numbers(reply.major, reply.minor) {
        Some(v) if v < offered => v,
        _ => offered,
    }
}

/// What to offer after `offered` was refused with `reply`, given what was tried.
pub fn next_offer(offered: Version, reply: &VersionMsg, tried: &[Version]) -> Option<Version> {
    if let Some(v) = Version::from_numbers(reply.major, reply.minor) {
        if v < offered && !tried.contains(&v) {
            return Some(v);
        }
    }
    Version::ALL_NEWEST_FIRST
        .iter()
        .copied()
        // 4:2 with 100-byte names carries the same numbers as 4:2: never offered apart.
        .filter(|v| *v != Version::V4_2Rn100)
        .find(|v| *v < offered && !tried.contains(v))
}

/// Finishes a handshake whose first request (`first`) was already sent: reads
/// replies, retrying on refusal. Returns the effective version.
pub fn complete(conn: &mut Conn, first: Version) -> Result<Version, HandshakeError> {
    let mut offered = first;
    let mut tried = vec![first];
    let mut buf = [0u8; VersionMsg::SIZE];
    loop {
        conn.read_exact(&mut buf)?;
        let reply = VersionMsg::parse(&buf).map_err(|_| TransportError::Io(libc::EPROTO))?;
        if reply.result().is_success() {
            return Ok(effective(offered, &reply));
        }
        let refused = HandshakeError::Refused { rv: reply.result(), major: reply.major, minor: reply.minor };
        // Only the refusal codes mean "try another version".
        if reply.result() != Rv::E_SERVICE_STOPPED && reply.result() != Rv::E_NO_SERVICE {
            return Err(refused);
        }
        match next_offer(offered, &reply, &tried) {
            Some(v) => {
                let mut req = Vec::with_capacity(20);
                emit_version_request(&mut req, v);
                conn.send_all(&req)?;
                tried.push(v);
                offered = v;
            }
            None => return Err(refused),
        }
    }
}

/// A plain handshake on a fresh connection.
pub fn negotiate(conn: &mut Conn, max: Version) -> Result<Version, HandshakeError> {
    let mut req = Vec::with_capacity(20);
    emit_version_request(&mut req, max);
    conn.send_all(&req)?;
    complete(conn, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(minor: u32, rv: Rv) -> VersionMsg {
        VersionMsg { major: 4, minor, rv: rv.0 }
    }

    #[test]
    fn effective_is_the_lower() {
        assert_eq!(effective(Version::V4_6, &reply(5, Rv::SUCCESS)), Version::V4_5); // 2.4.1
        assert_eq!(effective(Version::V4_4, &reply(6, Rv::SUCCESS)), Version::V4_4); // 2.5 old API
        assert_eq!(effective(Version::V4_6, &reply(7, Rv::SUCCESS)), Version::V4_6); // future daemon
        assert_eq!(effective(Version::V4_6, &VersionMsg { major: 5, minor: 0, rv: 0 }), Version::V4_6);
    }

    #[test]
    fn step_down_order() {
        // 1.9.9 refuses 4:6 naming 4:4.
        assert_eq!(next_offer(Version::V4_6, &reply(4, Rv::E_SERVICE_STOPPED), &[Version::V4_6]), Some(Version::V4_4));
        // 1.8.24 refuses with NO_SERVICE naming 4:4: same.
        assert_eq!(next_offer(Version::V4_6, &reply(4, Rv::E_NO_SERVICE), &[Version::V4_6]), Some(Version::V4_4));
        // A daemon naming a version we don't know: step down one at a time.
        let r = VersionMsg { major: 4, minor: 9, rv: Rv::E_SERVICE_STOPPED.0 };
        assert_eq!(next_offer(Version::V4_6, &r, &[Version::V4_6]), Some(Version::V4_5));
        assert_eq!(
            next_offer(Version::V4_3, &r, &[Version::V4_6, Version::V4_5, Version::V4_4, Version::V4_3]),
            Some(Version::V4_2)
        );
        assert_eq!(next_offer(Version::V4_2, &r, &[]), Some(Version::V4_0));
        assert_eq!(next_offer(Version::V4_0, &r, &[]), None);
        // Never loops on a version already tried.
        assert_eq!(next_offer(Version::V4_5, &reply(4, Rv::E_SERVICE_STOPPED), &[Version::V4_4]), Some(Version::V4_3));
    }
}
