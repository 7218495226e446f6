//! [`Backend`]: what the server core needs from whatever owns the readers (the
//! proxy to a host pcscd, the USB CCID driver, the in-memory [`super::mock`]).
//!
//! The server core owns everything that is protocol: versions, layouts, handles
//! and their owners, registrations and notifications, cancel, cleanup of dead
//! clients. A backend only answers PC/SC questions about readers and cards, with
//! pcsc-lite's result codes ([`Rv`]), and says when something changed.
//!
//! Rules for implementors:
//! * Never block on a sharing conflict: answer `SCARD_E_SHARING_VIOLATION` at
//!   once; blocking is the client library's job (pcscd-protocol.md §7).
//! * [`Backend::reader_states`] lists the readers in slot order (no empty slots);
//!   the server makes the per-version arrays out of it.
//! * Bump the change signal ([`ChangeSignal`]) on every change a client could see
//!   in the reader states: card inserted or removed, reader added or removed,
//!   reader error, change of the number of handles on a reader (`sharing`).

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::Rv;
use crate::wire::ReaderState;

/// A backend's session: one per client context (`SCARD_ESTABLISH_CONTEXT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(pub u64);

/// A backend's card handle (never shown to clients: the server hands out its
/// own random 31-bit `hCard` values and maps them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CardRef(pub u64);

/// A refused `SCardConnect`/`SCardReconnect`: the code, and the active protocol
/// to report (`None`: echo what the client sent, as pcscd does for early
/// failures).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub rv: Rv,
    pub active_protocol: Option<u32>,
}

impl From<Rv> for Refused {
    fn from(rv: Rv) -> Self {
        Refused { rv, active_protocol: None }
    }
}

/// What `SCardStatus` knows about a card handle (used for 4:0's wide STATUS
/// reply; later versions only need the code).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CardInfo {
    pub reader: Vec<u8>,
    /// `SCARD_ABSENT`/`PRESENT`/`POWERED`/... flags; only the low 16 bits are used.
    pub state: u32,
    pub protocol: u32,
    pub atr: Vec<u8>,
}

/// The outcome of a transmit. `len` is the response length written to the
/// buffer, or the needed length when `rv` is `SCARD_E_INSUFFICIENT_BUFFER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmitted {
    pub rv: Rv,
    pub len: usize,
    /// Receive PCI (protocol, length) to report; `None` echoes the client's.
    pub recv_pci: Option<(u32, u32)>,
}

impl Transmitted {
    pub fn failed(rv: Rv) -> Self {
        Transmitted { rv, len: 0, recv_pci: None }
    }
}

/// The outcome of a control call: as [`Transmitted`] without PCI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Controlled {
    pub rv: Rv,
    pub len: usize,
}

/// The outcome of `SCardGetAttrib`: `len` is the attribute's length (also when
/// `rv` is `SCARD_E_INSUFFICIENT_BUFFER`), `data` at most 264 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attrib {
    pub rv: Rv,
    pub len: usize,
    pub data: Vec<u8>,
}

impl Attrib {
    pub fn failed(rv: Rv) -> Self {
        Attrib { rv, len: 0, data: Vec::new() }
    }
}

/// The readers and cards behind a server. Every method may be called from many
/// connection threads at once.
pub trait Backend: Send + Sync + 'static {
    /// A client established a context. `Err` is sent back as the establish rv
    /// (e.g. `SCARD_E_NO_SERVICE` while a proxied daemon is away).
    fn open_session(&self, scope: u32) -> Result<SessionId, Rv>;
    /// The context is gone; the server has already disconnected its cards.
    fn close_session(&self, session: SessionId);

    /// The readers, in slot order, without empty slots.
    fn reader_states(&self) -> Vec<ReaderState>;
    /// The reader add/remove counter of `CMD_GET_READER_EVENTS` (1 … 32767).
    fn reader_events(&self) -> u32;
    /// The change counter the backend bumps on every change a client could see
    /// (see the module's rules). Every backend keeps one, so the default
    /// [`Backend::generation`] and [`Backend::wait_change`] read it and a backend
    /// only hands it out.
    fn changes(&self) -> &ChangeSignal;
    /// The current value of the change counter.
    fn generation(&self) -> u64 {
        self.changes().current()
    }
    /// Waits until the change counter differs from `since` or `timeout` passes;
    /// returns its value then.
    fn wait_change(&self, since: u64, timeout: Duration) -> u64 {
        self.changes().wait(since, timeout)
    }

    /// `SCardConnect`: the backend card and the active protocol.
    fn connect(
        &self,
        session: SessionId,
        reader: &[u8],
        share_mode: u32,
        protocols: u32,
    ) -> Result<(CardRef, u32), Refused>;
    /// `SCardReconnect`: the active protocol.
    fn reconnect(
        &self,
        session: SessionId,
        card: CardRef,
        share_mode: u32,
        protocols: u32,
        init: u32,
    ) -> Result<u32, Refused>;
    fn disconnect(&self, session: SessionId, card: CardRef, disposition: u32) -> Result<(), Rv>;
    fn begin_transaction(&self, session: SessionId, card: CardRef) -> Result<(), Rv>;
    fn end_transaction(&self, session: SessionId, card: CardRef, disposition: u32) -> Result<(), Rv>;
    /// `SCardStatus`: validates the handle (reset/removed card, sharing) and
    /// describes it.
    fn status(&self, session: SessionId, card: CardRef) -> Result<CardInfo, Rv>;
    /// `SCardTransmit` into `recv` (always 65548 bytes, as pcscd gives its
    /// drivers); the server compares with the client's buffer size itself.
    fn transmit(
        &self,
        session: SessionId,
        card: CardRef,
        send_pci: (u32, u32),
        apdu: &[u8],
        recv_pci: (u32, u32),
        recv: &mut [u8],
    ) -> Transmitted;
    /// `SCardControl` into `recv` (65548 bytes).
    fn control(&self, session: SessionId, card: CardRef, code: u32, data: &[u8], recv: &mut [u8]) -> Controlled;
    /// `SCardGetAttrib` with a client buffer of `buf_len` (≤ 264) bytes.
    fn get_attrib(&self, session: SessionId, card: CardRef, attr_id: u32, buf_len: usize) -> Attrib;
    fn set_attrib(&self, session: SessionId, card: CardRef, attr_id: u32, value: &[u8]) -> Result<(), Rv>;
}

/// A change counter with a blocking wait: what [`Backend::changes`] hands out,
/// and what the default [`Backend::generation`] and [`Backend::wait_change`] read.
#[derive(Debug, Default)]
pub struct ChangeSignal {
    generation: Mutex<u64>,
    cv: Condvar,
}

impl ChangeSignal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a change and wakes the waiters.
    pub fn bump(&self) {
        let mut g = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        *g = g.wrapping_add(1);
        self.cv.notify_all();
    }

    pub fn current(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn wait(&self, since: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut g = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        while *g == since {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            g = self.cv.wait_timeout(g, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        *g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_signal_wakes_and_times_out() {
        let s = std::sync::Arc::new(ChangeSignal::new());
        assert_eq!(s.wait(0, Duration::from_millis(10)), 0);
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait(0, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        s.bump();
        assert_eq!(t.join().unwrap(), 1);
        assert_eq!(s.wait(0, Duration::from_secs(10)), 1);
        assert_eq!(Refused::from(Rv::E_NO_SMARTCARD).active_protocol, None);
    }
}
