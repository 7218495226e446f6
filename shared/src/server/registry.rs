//! What the connections share: who holds which context and card handle, and
//! each connection's event registration.
//!
//! Only a connection's own thread ever writes to its socket. Others (the event
//! notifier, a `SCARD_CANCEL` on another connection) only mark a notification as
//! *pending* under the connection's small lock and wake its thread through a
//! socket pair; the thread sends it when that cannot land inside a reply
//! (see `connection.rs`). So no lock is ever held across socket I/O, and a
//! client that stops reading only ever blocks its own thread.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::Rv;

/// A connection's number (server-internal, for logs and lookups).
pub type ConnId = u64;

/// A connection's event registration.
#[derive(Debug, Default)]
struct EventState {
    /// Registered by `WAIT` and not notified since.
    registered: bool,
    /// A notification decided but not yet written (`SUCCESS` or `E_CANCELLED`).
    pending: Option<Rv>,
}

/// The part of a connection other threads may touch.
#[derive(Debug)]
pub struct ConnShared {
    pub id: ConnId,
    events: Mutex<EventState>,
    wake_tx: UnixStream,
    /// The client socket, only to shut it down from outside.
    client: Option<UnixStream>,
}

impl ConnShared {
    /// A new connection record and the read end of its wake-up channel.
    pub fn new(id: ConnId, client: Option<UnixStream>) -> std::io::Result<(Arc<ConnShared>, UnixStream)> {
        let (tx, rx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok((Arc::new(ConnShared { id, events: Mutex::new(EventState::default()), wake_tx: tx, client }), rx))
    }

    /// Shuts the client socket down: the connection's thread sees EOF and
    /// cleans up as if the client had left.
    pub fn hang_up(&self) {
        if let Some(c) = &self.client {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        self.wake();
    }

    fn events(&self) -> MutexGuard<'_, EventState> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self) {
        // A full channel already holds a wake-up: ignoring WouldBlock is right.
        let _ = (&self.wake_tx).write(&[1]);
    }

    /// Consumes the registration with a notification `rv`, if registered.
    /// Returns whether it did.
    pub fn notify(&self, rv: Rv) -> bool {
        let mut e = self.events();
        if !e.registered {
            return false;
        }
        e.registered = false;
        e.pending = Some(rv);
        drop(e);
        self.wake();
        true
    }

    /// `WAIT`: registers, unless a notification is still pending (it then
    /// answers this wait too). Returns whether it registered.
    pub fn register(&self) -> bool {
        let mut e = self.events();
        if e.pending.is_some() {
            return false;
        }
        e.registered = true;
        true
    }

    /// `WAIT` after a stale state fetch: a notification at once, unless one is
    /// pending already.
    pub fn notify_now(&self) {
        let mut e = self.events();
        e.registered = false;
        if e.pending.is_none() {
            e.pending = Some(Rv::SUCCESS);
        }
    }

    /// `STOP`: the 8-byte answer to write, if any: `{0, 0}` when still
    /// registered, else the pending notification (exactly one of the two, so
    /// the client never sees two messages), else nothing.
    pub fn stop(&self) -> Option<Rv> {
        let mut e = self.events();
        if e.registered {
            e.registered = false;
            return Some(Rv::SUCCESS);
        }
        e.pending.take()
    }

    pub fn has_pending(&self) -> bool {
        self.events().pending.is_some()
    }

    pub fn take_pending(&self) -> Option<Rv> {
        self.events().pending.take()
    }

    pub fn is_registered(&self) -> bool {
        self.events().registered
    }

    /// Forgets the registration (connection closing).
    pub fn unregister(&self) {
        let mut e = self.events();
        e.registered = false;
        e.pending = None;
    }

    /// Empties the wake-up channel.
    pub fn drain(rx: &UnixStream) {
        let mut b = [0u8; 64];
        while matches!((&*rx).read(&mut b), Ok(n) if n > 0) {}
    }
}

#[derive(Debug, Default)]
struct Tables {
    conns: HashMap<ConnId, Arc<ConnShared>>,
    /// hContext → the connection holding it.
    contexts: HashMap<u32, ConnId>,
    /// Every live hCard (values are unique server-wide).
    cards: HashSet<u32>,
}

/// The server-wide tables.
#[derive(Debug, Default)]
pub struct Registry {
    tables: Mutex<Tables>,
    next_id: AtomicU64,
}

/// A random non-zero 31-bit value (pcscd's handles are non-negative `int32`).
pub fn random_handle() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), libc::GRND_NONBLOCK) };
    let v = if n == 4 {
        u32::from_ne_bytes(b)
    } else {
        // No entropy yet (early boot): a mixed clock and counter still gives
        // unique, unpredictable-enough values (uniqueness is checked anyway).
        static FALLBACK: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let x = FALLBACK.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ t;
        let x = (x ^ (x >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        (x >> 32) as u32
    };
    v & 0x7FFF_FFFF
}

impl Registry {
    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn next_id(&self) -> ConnId {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn add(&self, conn: Arc<ConnShared>) {
        self.tables().conns.insert(conn.id, conn);
    }

    /// Removes a connection and whatever handles are still recorded for it.
    pub fn remove(&self, id: ConnId, context: Option<u32>, cards: impl Iterator<Item = u32>) {
        let mut t = self.tables();
        t.conns.remove(&id);
        if let Some(c) = context {
            if t.contexts.get(&c) == Some(&id) {
                t.contexts.remove(&c);
            }
        }
        for h in cards {
            t.cards.remove(&h);
        }
    }

    pub fn connection_count(&self) -> usize {
        self.tables().conns.len()
    }

    /// A fresh hContext for connection `id`, replacing `old`.
    pub fn new_context(&self, id: ConnId, old: Option<u32>) -> u32 {
        let mut t = self.tables();
        if let Some(o) = old {
            t.contexts.remove(&o);
        }
        loop {
            let h = random_handle();
            if h != 0 && !t.contexts.contains_key(&h) {
                t.contexts.insert(h, id);
                return h;
            }
        }
    }

    pub fn drop_context(&self, h: u32) {
        self.tables().contexts.remove(&h);
    }

    /// A fresh hCard value.
    pub fn new_card(&self) -> u32 {
        let mut t = self.tables();
        loop {
            let h = random_handle();
            if h != 0 && t.cards.insert(h) {
                return h;
            }
        }
    }

    pub fn drop_card(&self, h: u32) {
        self.tables().cards.remove(&h);
    }

    /// Notifies every registered connection (one-shot: registrations end).
    /// Returns how many were notified.
    pub fn notify_all(&self) -> usize {
        let conns: Vec<Arc<ConnShared>> = self.tables().conns.values().cloned().collect();
        conns.iter().filter(|c| c.notify(Rv::SUCCESS)).count()
    }

    /// Hangs up every connection.
    pub fn hang_up_all(&self) {
        let conns: Vec<Arc<ConnShared>> = self.tables().conns.values().cloned().collect();
        for c in conns {
            c.hang_up();
        }
    }

    /// `SCARD_CANCEL` of `h_context`: the waiting connection (if any) gets
    /// `{0, SCARD_E_CANCELLED}`; the canceller gets 0 when the context exists
    /// (2.0.1+ semantics), `SCARD_E_INVALID_HANDLE` otherwise.
    pub fn cancel(&self, h_context: u32) -> Rv {
        let target = {
            let t = self.tables();
            t.contexts.get(&h_context).and_then(|id| t.conns.get(id)).cloned()
        };
        match target {
            Some(c) => {
                c.notify(Rv::E_CANCELLED);
                Rv::SUCCESS
            }
            None => Rv::E_INVALID_HANDLE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_31_bit_and_unique() {
        let r = Registry::default();
        let mut seen = HashSet::new();
        for _ in 0..2000 {
            let h = r.new_card();
            assert!(h != 0 && h <= 0x7FFF_FFFF);
            assert!(seen.insert(h));
        }
    }

    #[test]
    fn registration_is_one_shot_and_stop_answers_once() {
        let (c, rx) = ConnShared::new(1, None).unwrap();
        assert!(!c.notify(Rv::SUCCESS));
        assert!(c.register());
        assert!(c.notify(Rv::SUCCESS));
        assert!(!c.notify(Rv::SUCCESS));
        // The pending notification answers the STOP; a second STOP gets nothing.
        assert_eq!(c.stop(), Some(Rv::SUCCESS));
        assert_eq!(c.stop(), None);
        assert!(c.register());
        assert_eq!(c.stop(), Some(Rv::SUCCESS));
        assert!(!c.is_registered());
        ConnShared::drain(&rx);
    }

    #[test]
    fn cancel_finds_the_context() {
        let r = Registry::default();
        let (c, _rx) = ConnShared::new(r.next_id(), None).unwrap();
        r.add(c.clone());
        let h = r.new_context(c.id, None);
        assert_eq!(r.cancel(h ^ 1), Rv::E_INVALID_HANDLE);
        // Not waiting: success, nothing sent.
        assert_eq!(r.cancel(h), Rv::SUCCESS);
        assert!(!c.has_pending());
        c.register();
        assert_eq!(r.cancel(h), Rv::SUCCESS);
        assert_eq!(c.take_pending(), Some(Rv::E_CANCELLED));
        r.remove(c.id, Some(h), std::iter::empty());
        assert_eq!(r.cancel(h), Rv::E_INVALID_HANDLE);
        assert_eq!(r.connection_count(), 0);
    }
}
