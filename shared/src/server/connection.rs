//! One client connection: framing, the idle loop that delivers notifications,
//! and cleanup. The per-command semantics are in `commands.rs`.
//!
//! **Notification holding** (pcscd-protocol.md §6.5). Only this thread writes to
//! the socket, so a notification can never split a reply. Beyond that, a
//! pending notification is written only when the connection is idle: no request
//! is being served, no unread input is waiting (that request is served first),
//! and the grace period after a state-fetching reply (`WAIT` with a reply or
//! from a 4:4+ client, `GET_READERS_STATE`, `SIZE`, `ARRAY`,
//! `GET_READER_EVENTS`; [`super::ServerConfig::notify_hold`]) has passed.
//! Upstream 2.3+/2.5 clients send those requests back to back while
//! registered; with the hold they read every reply where they expect it, and
//! the notification afterwards as their wait result or as the answer to their
//! `STOP`, both correct. `STOP` answers `{0,0}` if still registered, else
//! writes the pending notification in its place, else nothing: exactly one
//! 8-byte message per registration.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Instant;

use crate::consts::{disposition, MAX_BUFFER_SIZE_EXTENDED};
use crate::error::Rv;
use crate::wire::header::{Command, Header};
use crate::wire::msg::*;
use crate::wire::{Version, WireError};

use super::backend::{Backend, CardRef, SessionId};
use super::registry::ConnShared;
use super::Shared;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The client closed the connection.
    Closed,
    /// A socket error.
    Io(io::ErrorKind),
    /// Garbage: unknown command, wrong size, oversize length.
    Protocol(WireError),
    /// A card handle this connection does not own.
    ForeignHandle(u32),
}

impl From<WireError> for End {
    fn from(e: WireError) -> Self {
        End::Protocol(e)
    }
}

/// A card handle of this connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CardSlot {
    pub(crate) card: CardRef,
    /// Inside a transaction begun on this handle (reset on release, as pcscd).
    pub(crate) in_transaction: bool,
}

/// The fixed request size of `command` given the header's `size`, or why the
/// connection must be closed. Commands without a body ignore `size`, as pcscd
/// does; `WAIT`/`STOP` take either form (no body, or the ≤ 4:3 8-byte one).
pub(crate) fn body_len(command: Command, size: u32) -> Result<usize, WireError> {
    let fixed = |n: usize| {
        if size as usize == n {
            Ok(n)
        } else {
            Err(WireError::SizeMismatch { command: command.0, size, expected: n as u32 })
        }
    };
    let either =
        |a: usize, b: usize| if size as usize == a || size as usize == b { Ok(size as usize) } else { fixed(b) };
    match command {
        Command::VERSION | Command::ESTABLISH_CONTEXT => fixed(12),
        Command::RELEASE_CONTEXT | Command::BEGIN_TRANSACTION | Command::CANCEL | Command::CANCEL_TRANSACTION => {
            fixed(8)
        }
        Command::CONNECT => either(124, 152),
        Command::RECONNECT => fixed(ReconnectMsg::SIZE),
        Command::DISCONNECT | Command::END_TRANSACTION => fixed(12),
        Command::TRANSMIT => fixed(TransmitMsg::SIZE),
        Command::CONTROL => fixed(ControlMsg::SIZE),
        Command::STATUS => either(StatusMsg::SIZE, Status40Msg::SIZE),
        Command::GET_ATTRIB | Command::SET_ATTRIB => fixed(AttribMsg::SIZE),
        Command::GET_READERS_STATE
        | Command::GET_READER_EVENTS
        | Command::GET_READERS_STATE_SIZE
        | Command::GET_READERS_STATE_ARRAY => Ok(0),
        Command::WAIT_READER_STATE_CHANGE | Command::STOP_WAITING_READER_STATE_CHANGE => either(0, WaitMsg::SIZE),
        other => Err(WireError::UnknownCommand(other.0)),
    }
}

/// The length of the data following a TRANSMIT/CONTROL struct (checked against
/// `MAX_BUFFER_SIZE_EXTENDED`), 0 for other commands.
pub(crate) fn trailing_len(command: Command, body: &[u8]) -> Result<usize, WireError> {
    let (field, at) = match command {
        Command::TRANSMIT => ("cbSendLength", 12),
        Command::CONTROL => ("cbSendLength", 8),
        _ => return Ok(0),
    };
    let b: [u8; 4] = body
        .get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .ok_or(WireError::Truncated { needed: at + 4, got: body.len() })?;
    let n = u32::from_ne_bytes(b);
    if n as usize > MAX_BUFFER_SIZE_EXTENDED {
        return Err(WireError::BadLength { field, value: n, max: MAX_BUFFER_SIZE_EXTENDED as u32 });
    }
    Ok(n as usize)
}

/// The state of one connection, owned by its thread.
/// Size of the receive buffer.
const INBUF: usize = 4096;

pub(crate) struct Conn<'a, B: Backend> {
    pub(crate) shared: &'a Shared<B>,
    pub(crate) me: Arc<ConnShared>,
    stream: UnixStream,
    wake_rx: UnixStream,
    /// Negotiated dialect; `None` until a `CMD_VERSION` was accepted.
    pub(crate) version: Option<Version>,
    pub(crate) session: Option<SessionId>,
    pub(crate) context: Option<u32>,
    pub(crate) cards: HashMap<u32, CardSlot>,
    /// Until when a pending notification is held.
    pub(crate) hold_until: Option<Instant>,
    /// The backend's change counter when this connection last fetched states
    /// (a ≤ 4:3 `WAIT` after a change since then is notified at once).
    pub(crate) last_fetch_gen: Option<u64>,
    /// The slot count of the last 4:6 `SIZE` reply (the next `ARRAY` sends
    /// exactly that many records).
    pub(crate) last_size: Option<usize>,
    body: Vec<u8>,
    data: Vec<u8>,
    pub(crate) out: Vec<u8>,
    pub(crate) recv: Vec<u8>,
    /// Bytes received but not consumed yet (one `recv` takes a whole request,
    /// and whatever else the client already sent).
    inbuf: Vec<u8>,
    inpos: usize,
}

/// A connection registered with the server but not served yet.
pub struct Accepted {
    me: Arc<ConnShared>,
    stream: UnixStream,
    wake_rx: UnixStream,
}

impl Accepted {
    /// The connection's id (to forget it if it cannot be served: [`super::Server::forget`]).
    pub fn id(&self) -> super::registry::ConnId {
        self.me.id
    }
}

/// Registers `stream` (from then on `Server::disconnect_all` reaches it), on the thread that
/// accepted it: a connection accepted just before a `disconnect_all` cannot slip through it.
pub(crate) fn register<B: Backend>(shared: &Shared<B>, stream: UnixStream) -> Option<Accepted> {
    let id = shared.registry.next_id();
    let (me, wake_rx) = match ConnShared::new(id, stream.try_clone().ok()) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %e, "cannot set up a connection");
            return None;
        }
    };
    shared.registry.add(me.clone());
    Some(Accepted { me, stream, wake_rx })
}

/// Serves a registered connection until it ends.
pub(crate) fn run<B: Backend>(shared: &Shared<B>, accepted: Accepted) {
    let Accepted { me, stream, wake_rx } = accepted;
    let id = me.id;
    let mut conn = Conn {
        shared,
        me,
        stream,
        wake_rx,
        version: None,
        session: None,
        context: None,
        cards: HashMap::new(),
        hold_until: None,
        last_fetch_gen: None,
        last_size: None,
        body: Vec::with_capacity(AttribMsg::SIZE),
        data: Vec::new(),
        out: Vec::with_capacity(4096),
        recv: Vec::new(),
        inbuf: Vec::with_capacity(INBUF),
        inpos: 0,
    };
    let end = conn.serve();
    match end {
        End::Closed => tracing::debug!(conn = id, "client left"),
        End::Io(kind) => tracing::debug!(conn = id, ?kind, "connection error"),
        End::Protocol(e) => tracing::warn!(conn = id, error = %e, "client cut off"),
        End::ForeignHandle(h) => {
            tracing::warn!(conn = id, h_card = h, "client cut off: card handle of another connection")
        }
    }
    // `Drop` releases the context and unregisters.
}

impl<B: Backend> Drop for Conn<'_, B> {
    fn drop(&mut self) {
        self.me.unregister();
        self.release_context();
        self.shared.registry.remove(self.me.id, self.context, self.cards.keys().copied());
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

impl<B: Backend> Conn<'_, B> {
    fn serve(&mut self) -> End {
        loop {
            if let Err(e) = self.idle() {
                return e;
            }
            if let Err(e) = self.one_request() {
                return e;
            }
        }
    }

    fn one_request(&mut self) -> Result<(), End> {
        let mut hdr = [0u8; Header::SIZE];
        self.read_exact(&mut hdr)?;
        let h = Header::parse(&hdr)?;
        let n = body_len(h.command, h.size)?;
        let mut body = std::mem::take(&mut self.body);
        let mut data = std::mem::take(&mut self.data);
        body.resize(n, 0);
        let r = (|| {
            self.read_exact(&mut body)?;
            let d = trailing_len(h.command, &body)?;
            data.resize(d, 0);
            self.read_exact(&mut data)?;
            self.hold_until = None;
            tracing::trace!(conn = self.me.id, cmd = h.command.name(), len = n + d, "request");
            self.dispatch(h.command, &body, &data)
        })();
        self.body = body;
        self.data = data;
        r
    }

    /// Waits for the next request, writing a pending notification when allowed.
    fn idle(&mut self) -> Result<(), End> {
        loop {
            let pending = self.me.has_pending();
            let timeout_ms = if !pending {
                -1
            } else {
                match self.hold_until {
                    Some(t) => {
                        let now = Instant::now();
                        if t > now {
                            // Rounded up: never wake before the hold ends.
                            ((t - now).as_nanos().div_ceil(1_000_000)).min(i32::MAX as u128) as i32
                        } else {
                            0
                        }
                    }
                    None => 0,
                }
            };
            if self.inpos < self.inbuf.len() {
                // A request is already buffered: serve it first.
                return Ok(());
            }
            if !pending && !self.me.is_registered() {
                // Nothing can become pending for an unregistered connection
                // (only its own WAIT registers it; hang-ups show as EOF): read
                // the next request straight away, without a poll.
                return Ok(());
            }
            let (input, woken) = self.poll(timeout_ms)?;
            if woken {
                ConnShared::drain(&self.wake_rx);
            }
            if input {
                return Ok(());
            }
            if pending && !matches!(self.hold_until, Some(t) if Instant::now() < t) {
                self.hold_until = None;
                if let Some(rv) = self.me.take_pending() {
                    tracing::trace!(conn = self.me.id, ?rv, "notification");
                    self.out.clear();
                    WaitMsg { timeout: 0, rv: rv.0 }.emit(&mut self.out);
                    self.flush()?;
                }
            }
        }
    }

    /// Polls the client socket and the wake-up channel.
    fn poll(&self, timeout_ms: i32) -> Result<(bool, bool), End> {
        let mut fds = [
            libc::pollfd { fd: self.stream.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: self.wake_rx.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        loop {
            // SAFETY: fds is a valid array of two pollfd entries.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(End::Io(e.kind()));
            }
            return Ok((fds[0].revents != 0, fds[1].revents != 0));
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), End> {
        let mut got = 0;
        while got < buf.len() {
            if self.inpos < self.inbuf.len() {
                let n = (buf.len() - got).min(self.inbuf.len() - self.inpos);
                buf[got..got + n].copy_from_slice(&self.inbuf[self.inpos..self.inpos + n]);
                self.inpos += n;
                got += n;
                continue;
            }
            let want = buf.len() - got;
            if want >= INBUF {
                // Large data: straight into the destination.
                match self.stream.read(&mut buf[got..]) {
                    Ok(0) => return Err(End::Closed),
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(End::Io(e.kind())),
                }
                continue;
            }
            self.inbuf.resize(INBUF, 0);
            self.inpos = 0;
            match self.stream.read(&mut self.inbuf) {
                Ok(0) => {
                    self.inbuf.clear();
                    return Err(End::Closed);
                }
                Ok(n) => self.inbuf.truncate(n),
                Err(e) => {
                    self.inbuf.clear();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(End::Io(e.kind()));
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes `self.out` (whole, `MSG_NOSIGNAL`: a vanished client is an error
    /// here, never a signal).
    pub(crate) fn flush(&mut self) -> Result<(), End> {
        let fd = self.stream.as_raw_fd();
        let mut b = &self.out[..];
        while !b.is_empty() {
            // SAFETY: b is a valid initialised slice.
            let n = unsafe { libc::send(fd, b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(End::Io(e.kind()));
            }
            b = &b[n as usize..];
        }
        Ok(())
    }

    /// Writes `bytes` as the reply.
    pub(crate) fn reply(&mut self, bytes: &[u8]) -> Result<(), End> {
        self.out.clear();
        self.out.extend_from_slice(bytes);
        self.flush()
    }

    /// The dialect for layouts and semantics (4:4 until negotiated).
    pub(crate) fn dialect(&self) -> Version {
        self.version.unwrap_or(Version::V4_4)
    }

    /// The session and backend card for a handle of this connection; any other
    /// handle cuts the client off (after pcscd's delay, if configured).
    pub(crate) fn own_card(&self, h_card: u32) -> Result<(SessionId, CardRef), End> {
        match (self.session, self.cards.get(&h_card)) {
            (Some(s), Some(slot)) => Ok((s, slot.card)),
            _ => {
                let d = self.shared.cfg.foreign_handle_delay;
                if !d.is_zero() {
                    std::thread::sleep(d);
                }
                Err(End::ForeignHandle(h_card))
            }
        }
    }

    /// Releases the context: disconnects its cards (resetting a card whose
    /// transaction is still open, unless it was reset or removed already, as
    /// pcscd) and closes the backend session.
    pub(crate) fn release_context(&mut self) {
        let backend = &self.shared.backend;
        if let Some(s) = self.session.take() {
            for (h, slot) in self.cards.drain() {
                let disp = if slot.in_transaction {
                    match backend.status(s, slot.card) {
                        Err(rv) if rv == Rv::W_RESET_CARD || rv == Rv::W_REMOVED_CARD => disposition::LEAVE,
                        _ => disposition::RESET,
                    }
                } else {
                    disposition::LEAVE
                };
                if let Err(rv) = backend.disconnect(s, slot.card, disp) {
                    tracing::debug!(?rv, "disconnect on release");
                }
                self.shared.registry.drop_card(h);
            }
            backend.close_session(s);
        }
        for (h, _) in self.cards.drain() {
            self.shared.registry.drop_card(h);
        }
        if let Some(c) = self.context.take() {
            self.shared.registry.drop_context(c);
        }
    }

    /// The buffer handed to the backend for responses (65548 bytes).
    pub(crate) fn take_recv(&mut self) -> Vec<u8> {
        let mut r = std::mem::take(&mut self.recv);
        r.resize(MAX_BUFFER_SIZE_EXTENDED, 0);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_rules() {
        assert_eq!(body_len(Command::VERSION, 12), Ok(12));
        assert!(matches!(body_len(Command::VERSION, 13), Err(WireError::SizeMismatch { .. })));
        assert_eq!(body_len(Command::CONNECT, 124), Ok(124));
        assert_eq!(body_len(Command::CONNECT, 152), Ok(152));
        assert!(body_len(Command::CONNECT, 128).is_err());
        assert_eq!(body_len(Command::STATUS, 160), Ok(160));
        assert_eq!(body_len(Command::WAIT_READER_STATE_CHANGE, 8), Ok(8));
        assert_eq!(body_len(Command::WAIT_READER_STATE_CHANGE, 0), Ok(0));
        assert!(body_len(Command::STOP_WAITING_READER_STATE_CHANGE, 4).is_err());
        // Bodiless commands ignore size, as pcscd.
        assert_eq!(body_len(Command::GET_READERS_STATE, 77), Ok(0));
        for c in [0u32, 0x03, 0x0C, 0x18, 0xFFFF_FFFF] {
            assert_eq!(body_len(Command(c), 0), Err(WireError::UnknownCommand(c)));
        }
        let mut t = vec![0u8; 32];
        t[12..16].copy_from_slice(&65548u32.to_ne_bytes());
        assert_eq!(trailing_len(Command::TRANSMIT, &t), Ok(65548));
        t[12..16].copy_from_slice(&65549u32.to_ne_bytes());
        assert!(matches!(trailing_len(Command::TRANSMIT, &t), Err(WireError::BadLength { .. })));
        assert_eq!(trailing_len(Command::BEGIN_TRANSACTION, &t), Ok(0));
    }
}
