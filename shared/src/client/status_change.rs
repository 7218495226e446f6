//! `SCardGetStatusChange` and `SCardCancel`.
//!
//! Strategy (reference §6.4), the same for every daemon version: the context's
//! own connection never registers for events, so no notification can ever be
//! confused with a reply there. To wait, a dedicated *event connection* is opened
//! that only does `CMD_VERSION` and `WAIT` (with the 8-byte body up to 4:3; its
//! 4:4/4:5 reply, the state array, is read and used) and then reads one 8-byte
//! notification. It registers *before* the states are fetched again on the
//! context's connection, so no event between fetch and registration is lost.
//! Waiting ends by closing it (the daemon unregisters on EOF), never with STOP.
//! `SCardCancel` is purely client-side: it wakes the wait through a pipe.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::consts::{card_state, reader_state as rs, sharing, INFINITE, PNP_NOTIFICATION};
use crate::error::Rv;
use crate::wire::header::{Command, Header};
use crate::wire::msg::WaitMsg;
use crate::wire::reader_state::{parse_array, ReaderState, RsLayout};
use crate::wire::version::WaitReply;
use crate::wire::Version;

use super::config::ClientConfig;
use super::context::Context;
use super::handshake::emit_version_request;
use super::transport::{Conn, TransportError, WaitOutcome};

/// One entry of the caller's `SCARD_READERSTATE` array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderStateQuery {
    pub name: Vec<u8>,
    pub current_state: u32,
    pub event_state: u32,
    pub atr: [u8; 33],
    pub atr_len: u32,
}

impl ReaderStateQuery {
    pub fn new(name: impl Into<Vec<u8>>, current_state: u32) -> Self {
        ReaderStateQuery { name: name.into(), current_state, event_state: 0, atr: [0; 33], atr_len: 0 }
    }

    pub fn is_pnp(&self) -> bool {
        self.name.eq_ignore_ascii_case(PNP_NOTIFICATION.as_bytes())
    }
}

/// Wakes a blocked wait from another thread.
pub(crate) struct Canceller {
    waiting: AtomicUsize,
    pipe: OnceLock<Option<(OwnedFd, OwnedFd)>>,
}

impl Canceller {
    pub(crate) fn new() -> Self {
        Canceller { waiting: AtomicUsize::new(0), pipe: OnceLock::new() }
    }

    fn pipe(&self) -> Option<&(OwnedFd, OwnedFd)> {
        self.pipe
            .get_or_init(|| {
                let mut fds = [0 as RawFd; 2];
                // SAFETY: fds is a valid 2-element array.
                let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
                if r != 0 {
                    return None;
                }
                // SAFETY: pipe2 returned two fresh descriptors that we own.
                Some(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
            })
            .as_ref()
    }

    fn drain(&self) {
        if let Some((r, _)) = self.pipe() {
            let mut b = [0u8; 64];
            // SAFETY: reading into a local buffer from a non-blocking pipe.
            while unsafe { libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) } > 0 {}
        }
    }

    pub(crate) fn cancel(&self) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        if let Some((_, w)) = self.pipe() {
            // SAFETY: writing one byte from a local buffer; a full pipe is fine.
            unsafe { libc::write(w.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        }
    }

    fn begin(&self) -> WaitGuard<'_> {
        self.drain();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        WaitGuard(self)
    }

    /// Sleeps until `until`; returns true if cancelled meanwhile.
    fn sleep_until(&self, until: Instant) -> bool {
        let now = Instant::now();
        if until <= now {
            return false;
        }
        let ms = (until - now).as_millis().min(i32::MAX as u128) as i32;
        let mut fds = [libc::pollfd { fd: self.fd().unwrap_or(-1), events: libc::POLLIN, revents: 0 }];
        // SAFETY: one valid pollfd (a negative fd is ignored by poll).
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        r > 0 && fds[0].revents != 0
    }

    fn fd(&self) -> Option<RawFd> {
        self.pipe().map(|(r, _)| r.as_raw_fd())
    }
}

struct WaitGuard<'a>(&'a Canceller);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
        self.0.drain();
    }
}

/// The dedicated connection that waits for one event notification.
struct EventConn {
    conn: Conn,
    version: Version,
    slots: usize,
}

impl EventConn {
    fn open(cfg: &ClientConfig, version: Version, slots: usize) -> Result<EventConn, TransportError> {
        let mut conn = Conn::connect(&cfg.socket)?;
        let mut req = Vec::with_capacity(20);
        emit_version_request(&mut req, version);
        conn.send_all(&req)?;
        let mut b = [0u8; 12];
        conn.read_exact(&mut b)?;
        Ok(EventConn { conn, version, slots })
    }

    /// Registers for the next event; returns the states when the version's WAIT
    /// reply carries them (4:4, 4:5).
    fn arm(&mut self) -> Result<Option<Vec<ReaderState>>, TransportError> {
        let mut req = Vec::with_capacity(16);
        if self.version.wait_has_body() {
            Header::new(Command::WAIT_READER_STATE_CHANGE, WaitMsg::SIZE).emit(&mut req);
            WaitMsg { timeout: 0, rv: 0 }.emit(&mut req);
        } else {
            Header::new(Command::WAIT_READER_STATE_CHANGE, 0).emit(&mut req);
        }
        self.conn.send_all(&req)?;
        if self.version.wait_reply() == WaitReply::States {
            let b = self.conn.read_vec(self.slots * RsLayout::C.record_size())?;
            return parse_array(&b, RsLayout::C).map(Some).map_err(|_| TransportError::Io(libc::EPROTO));
        }
        Ok(None)
    }

    fn read_notification(&mut self) -> Result<WaitMsg, TransportError> {
        let mut b = [0u8; WaitMsg::SIZE];
        self.conn.read_exact(&mut b)?;
        WaitMsg::parse(&b).map_err(|_| TransportError::Io(libc::EPROTO))
    }
}

/// Evaluates the caller's entries against the daemon's states, as upstream's
/// client does. Returns whether anything changed.
pub fn evaluate(
    queries: &mut [ReaderStateQuery],
    states: &[ReaderState],
    layout: RsLayout,
    initial_reader_count: usize,
    reader_events: Option<u32>,
) -> bool {
    let mut changed = false;
    let reader_count = states.iter().filter(|s| !s.is_empty(layout)).count();
    for q in queries.iter_mut() {
        if q.current_state & rs::IGNORE != 0 {
            continue;
        }
        let found = states.iter().find(|s| !s.is_empty(layout) && s.name == q.name);
        let Some(s) = found else {
            if q.is_pnp() {
                if reader_count != initial_reader_count {
                    q.event_state |= rs::CHANGED;
                    changed = true;
                }
                if let Some(ev) = reader_events {
                    let cur = q.current_state >> 16;
                    if cur != 0 && cur != (ev & 0xFFFF) {
                        q.event_state |= rs::CHANGED;
                        changed = true;
                    }
                    q.event_state = (q.event_state & 0xFFFF) | ((ev & 0xFFFF) << 16);
                }
            } else {
                q.event_state = rs::UNKNOWN | rs::UNAVAILABLE;
                if q.current_state & rs::UNKNOWN == 0 {
                    q.event_state |= rs::CHANGED;
                    changed = true;
                }
            }
            continue;
        };
        if q.current_state & rs::UNKNOWN != 0 {
            q.event_state |= rs::CHANGED;
            q.event_state &= !rs::UNKNOWN;
            changed = true;
        }
        // 4:0 records have no eventCounter field: 1.6.0-1.6.4 keep the counter
        // in the high 16 bits of readerState (what SCardStatus hands out there).
        let (state, counter) =
            if layout == RsLayout::A { (s.state & 0xFFFF, s.state >> 16) } else { (s.state, s.event_counter & 0xFFFF) };
        if q.current_state & 0xFFFF_0000 != 0 && (q.current_state >> 16) != counter {
            q.event_state |= rs::CHANGED;
            changed = true;
        }
        q.event_state = (q.event_state & 0xFFFF) | (counter << 16);

        if state & card_state::UNKNOWN != 0 {
            q.event_state = rs::UNAVAILABLE;
            if q.current_state & rs::UNAVAILABLE == 0 {
                q.event_state |= rs::CHANGED;
                changed = true;
            }
        } else if q.current_state & rs::UNAVAILABLE != 0 {
            q.event_state &= !rs::UNAVAILABLE;
            q.event_state |= rs::CHANGED;
            changed = true;
        }

        if state & card_state::PRESENT != 0 {
            let atr = s.atr();
            q.atr = [0; 33];
            q.atr[..atr.len()].copy_from_slice(atr);
            q.atr_len = atr.len() as u32;
        } else {
            q.atr_len = 0;
        }

        if state & card_state::ABSENT != 0 {
            q.event_state |= rs::EMPTY;
            q.event_state &= !(rs::PRESENT
                | rs::UNAWARE
                | rs::IGNORE
                | rs::UNKNOWN
                | rs::UNAVAILABLE
                | rs::ATRMATCH
                | rs::MUTE
                | rs::INUSE);
            if q.current_state & rs::PRESENT != 0 {
                q.event_state |= rs::CHANGED;
                changed = true;
            }
        } else if state & card_state::PRESENT != 0 {
            q.event_state |= rs::PRESENT;
            q.event_state &= !(rs::EMPTY | rs::UNAWARE | rs::IGNORE | rs::UNKNOWN | rs::UNAVAILABLE | rs::MUTE);
            if q.current_state & rs::EMPTY != 0 {
                q.event_state |= rs::CHANGED;
                changed = true;
            }
            if state & card_state::SWALLOWED != 0 {
                q.event_state |= rs::MUTE;
                if q.current_state & rs::MUTE == 0 {
                    q.event_state |= rs::CHANGED;
                    changed = true;
                }
            } else if q.current_state & rs::MUTE != 0 {
                q.event_state |= rs::CHANGED;
                changed = true;
            }
        }

        if s.sharing == sharing::EXCLUSIVE_CONTEXT {
            q.event_state |= rs::EXCLUSIVE;
            q.event_state &= !rs::INUSE;
            if q.current_state & rs::INUSE != 0 {
                q.event_state |= rs::CHANGED;
                changed = true;
            }
        } else if s.sharing >= sharing::LAST_CONTEXT {
            if state & card_state::PRESENT != 0 {
                q.event_state |= rs::INUSE;
                q.event_state &= !rs::EXCLUSIVE;
                if q.current_state & rs::EXCLUSIVE != 0 {
                    q.event_state |= rs::CHANGED;
                    changed = true;
                }
            }
        } else if s.sharing == sharing::NO_CONTEXT {
            q.event_state &= !(rs::INUSE | rs::EXCLUSIVE);
            if q.current_state & (rs::INUSE | rs::EXCLUSIVE) != 0 {
                q.event_state |= rs::CHANGED;
                changed = true;
            }
        }

        if q.current_state == rs::UNAWARE {
            q.event_state |= rs::CHANGED;
            changed = true;
        }
    }
    changed
}

impl Context {
    /// Takes a snapshot; if the daemon is gone (being restarted), keeps trying
    /// every 100 ms until it is back, the deadline passes or the wait is
    /// cancelled. Upstream gives up with `SCARD_E_NO_SERVICE` at once.
    fn snapshot_riding_restarts(
        &self,
        want_events: bool,
        deadline: Option<Instant>,
    ) -> Result<(Version, usize, Vec<ReaderState>, Option<u32>), Rv> {
        loop {
            match self.snapshot(want_events) {
                Ok(s) => return Ok(s),
                Err(rv) if rv == Rv::E_NO_SERVICE || rv == Rv::F_COMM_ERROR => {
                    let step = Instant::now() + Duration::from_millis(100);
                    let until = match deadline {
                        Some(d) if d <= Instant::now() => return Err(Rv::E_NO_SERVICE),
                        Some(d) => d.min(step),
                        None => step,
                    };
                    if self.canceller.sleep_until(until) {
                        return Err(Rv::E_CANCELLED);
                    }
                }
                Err(rv) => return Err(rv),
            }
        }
    }

    /// `SCardGetStatusChange`. `timeout_ms`: 0 = one pass; `INFINITE` (or any
    /// value from 0xFFFFFFFF up, i.e. `(DWORD)-1`) = no limit.
    pub fn get_status_change(&self, timeout_ms: u64, queries: &mut [ReaderStateQuery]) -> Result<(), Rv> {
        if queries.is_empty() || queries.iter().all(|q| q.current_state & rs::IGNORE != 0) {
            return Ok(());
        }
        let deadline =
            if timeout_ms >= INFINITE as u64 { None } else { Some(Instant::now() + Duration::from_millis(timeout_ms)) };
        let _guard = self.canceller.begin();
        let want_events = queries.iter().any(|q| q.is_pnp() && q.current_state & rs::IGNORE == 0);
        let (mut version, mut slots, mut states, mut events) = self.snapshot(want_events)?;
        let layout_of = |v: Version| v.rs_layout();
        // Every name must be known, ignored entries included (as upstream checks).
        for q in queries.iter() {
            if q.is_pnp() {
                continue;
            }
            if !states.iter().any(|s| !s.is_empty(layout_of(version)) && s.name == q.name) {
                return Err(Rv::E_UNKNOWN_READER);
            }
        }
        for q in queries.iter_mut() {
            q.event_state = 0;
        }
        let initial_count = states.iter().filter(|s| !s.is_empty(layout_of(version))).count();
        // The event connection, and whether it is registered for the next event.
        let mut ev: Option<EventConn> = None;
        let mut armed = false;
        loop {
            if evaluate(queries, &states, layout_of(version), initial_count, events) {
                return Ok(());
            }
            if timeout_ms == 0 {
                return Err(Rv::E_TIMEOUT);
            }
            if !armed {
                // Register first, then look again: nothing can slip in between.
                // 4:4/4:5 hand the states over with the registration itself.
                let reg = match ev.take() {
                    Some(e) => Ok(e),
                    None => EventConn::open(self.config(), version, slots),
                }
                .and_then(|mut e| e.arm().map(|s| (e, s)));
                match reg {
                    Ok((e, Some(armed_states))) if !want_events => {
                        ev = Some(e);
                        armed = true;
                        states = armed_states;
                        continue;
                    }
                    Ok((e, _)) => {
                        ev = Some(e);
                        armed = true;
                    }
                    Err(_) => {
                        // The daemon is going away or restarting: wait for it.
                        if self.canceller.sleep_until(Instant::now() + Duration::from_millis(100)) {
                            return Err(Rv::E_CANCELLED);
                        }
                    }
                }
                (version, slots, states, events) = self.snapshot_riding_restarts(want_events, deadline)?;
                continue;
            }
            let e = ev.as_mut().expect("registered");
            match e.conn.wait_readable(deadline, self.canceller.fd()) {
                Err(_) => return Err(Rv::E_NO_SERVICE),
                Ok(WaitOutcome::Cancelled) => return Err(Rv::E_CANCELLED),
                Ok(WaitOutcome::TimedOut) => return Err(Rv::E_TIMEOUT),
                Ok(WaitOutcome::Readable) => {}
            }
            // Registration is one-shot: after a notification, look first (the
            // change usually answers the caller), register again only if not.
            armed = false;
            match e.read_notification() {
                Ok(n) if n.result() == Rv::E_CANCELLED => return Err(Rv::E_CANCELLED),
                Ok(_) if e.version.wait_reply() == WaitReply::States && !want_events => continue,
                Ok(_) => {}
                // The daemon went away: register again once it is back.
                Err(_) => ev = None,
            }
            (version, slots, states, events) = self.snapshot_riding_restarts(want_events, deadline)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(name: &str, state: u32, counter: u32, sharing: i32) -> ReaderState {
        let mut s = ReaderState {
            name: name.as_bytes().to_vec(),
            state,
            event_counter: counter,
            sharing,
            ..Default::default()
        };
        if state & card_state::PRESENT != 0 {
            s.atr[..3].copy_from_slice(&[0x3B, 0x01, 0x02]);
            s.atr_len = 3;
        }
        s
    }

    #[test]
    fn unaware_always_changes() {
        let states = [reader("R", card_state::PRESENT | card_state::POWERED, 2, 0)];
        let mut q = [ReaderStateQuery::new("R", rs::UNAWARE)];
        assert!(evaluate(&mut q, &states, RsLayout::C, 1, None));
        assert_eq!(q[0].event_state, (2 << 16) | rs::PRESENT | rs::CHANGED);
        assert_eq!(q[0].atr_len, 3);
    }

    #[test]
    fn removal_and_counter() {
        let states = [reader("R", card_state::ABSENT, 3, 0)];
        let mut q = [ReaderStateQuery::new("R", (2 << 16) | rs::PRESENT)];
        assert!(evaluate(&mut q, &states, RsLayout::C, 1, None));
        assert_eq!(q[0].event_state, (3 << 16) | rs::EMPTY | rs::CHANGED);
        // Same state as the caller believes: no change.
        let mut q = [ReaderStateQuery::new("R", (3 << 16) | rs::EMPTY)];
        assert!(!evaluate(&mut q, &states, RsLayout::C, 1, None));
    }

    #[test]
    fn sharing_flags() {
        let states = [reader("R", card_state::PRESENT, 1, -1)];
        let mut q = [ReaderStateQuery::new("R", (1 << 16) | rs::PRESENT | rs::INUSE)];
        assert!(evaluate(&mut q, &states, RsLayout::C, 1, None));
        assert!(q[0].event_state & rs::EXCLUSIVE != 0);
    }

    #[test]
    fn pnp_counts_readers_and_events() {
        let two = [reader("A", card_state::ABSENT, 0, 0), reader("B", card_state::ABSENT, 0, 0)];
        let mut q = [ReaderStateQuery::new(PNP_NOTIFICATION, 0)];
        assert!(!evaluate(&mut q, &two, RsLayout::C, 2, None));
        assert!(evaluate(&mut q, &two, RsLayout::C, 1, None));
        let mut q = [ReaderStateQuery::new(r"\\?pnp?\notification", 5 << 16)];
        assert!(evaluate(&mut q, &two, RsLayout::C, 2, Some(6)));
        assert_eq!(q[0].event_state >> 16, 6);
    }

    #[test]
    fn layout_a_counter_is_in_the_state_high_word() {
        // 1.6.x: readerState 0x0003_0034 = counter 3, card present and powered.
        let s = ReaderState {
            reader_id: 100,
            name: b"R".to_vec(),
            state: (3 << 16) | card_state::PRESENT | card_state::POWERED,
            ..Default::default()
        };
        // The counter SCardStatus returned: no change.
        let mut q = [ReaderStateQuery::new("R", (3 << 16) | rs::PRESENT)];
        assert!(!evaluate(&mut q, std::slice::from_ref(&s), RsLayout::A, 1, None));
        assert_eq!(q[0].event_state, (3 << 16) | rs::PRESENT);
        // The card was swapped meanwhile (counter moved on, state the same): changed.
        let mut q = [ReaderStateQuery::new("R", (2 << 16) | rs::PRESENT)];
        assert!(evaluate(&mut q, std::slice::from_ref(&s), RsLayout::A, 1, None));
        assert_eq!(q[0].event_state, (3 << 16) | rs::PRESENT | rs::CHANGED);
    }

    #[test]
    fn vanished_reader_is_unknown() {
        let mut q = [ReaderStateQuery::new("gone", rs::EMPTY)];
        assert!(evaluate(&mut q, &[], RsLayout::C, 0, None));
        assert_eq!(q[0].event_state, rs::UNKNOWN | rs::UNAVAILABLE | rs::CHANGED);
    }
}
