//! [`Context`]: one PC/SC context = one daemon connection, with every call of the
//! API and each protocol version's semantics.
//!
//! Beyond upstream: when the daemon restarts, the context reconnects by itself on
//! its next call (new socket, new server context, same `Context` for the app);
//! card handles from before then answer what a removed card answers.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::Duration;

use crate::consts::{MAX_BUFFER_SIZE, MAX_READERNAME};
use crate::error::Rv;
use crate::wire::header::{Command, Header};
use crate::wire::msg::*;
use crate::wire::reader_state::{parse_array, ReaderState, RsLayout};
use crate::wire::Version;

use super::config::ClientConfig;
use super::handshake::{self, emit_version_request};
use super::status_change::Canceller;
use super::transport::{Conn, TransportError};

/// An app-visible card handle, unique in the process.
pub type CardId = u32;

/// What `SCardStatus` returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardStatus {
    pub reader: Vec<u8>,
    /// Card state flags; bits 16-31 carry the event counter (4:2 and later).
    pub state: u32,
    pub protocol: u32,
    pub atr: Vec<u8>,
}

/// The daemon's answer to `SCARD_CONNECT`: `card` is set when `rv` is success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectReply {
    pub rv: Rv,
    pub card: Option<CardId>,
    pub active_protocol: u32,
}

/// What `SCardTransmit` returns. `len` is the response length, or the needed
/// length when `rv` is `SCARD_E_INSUFFICIENT_BUFFER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransmitResult {
    pub rv: Rv,
    pub len: usize,
    pub recv_pci_protocol: u32,
    pub recv_pci_length: u32,
}

/// What `SCardControl` returns (`len` = bytes returned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlResult {
    pub rv: Rv,
    pub len: usize,
}

/// What `SCardGetAttrib` returns: the daemon's rv, the length it names and the
/// value bytes (at most 264).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttrResult {
    pub rv: Rv,
    pub len: usize,
    pub data: Vec<u8>,
}

static FORK_GEN: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

extern "C" fn atfork_child() {
    FORK_GEN.fetch_add(1, Ordering::SeqCst);
}

/// Counts `fork()`s seen in this process's ancestry; contexts made before the
/// current value belong to a parent and are never used (their sockets are the
/// parent's).
pub fn fork_generation() -> u64 {
    FORK_GEN.load(Ordering::SeqCst)
}

fn ensure_atfork() {
    ATFORK.call_once(|| {
        // SAFETY: registering a handler with no prepare/parent parts; the child
        // handler only touches an atomic.
        unsafe {
            libc::pthread_atfork(None, None, Some(atfork_child));
        }
    });
}

static NEXT_CARD: AtomicU32 = AtomicU32::new(0);

/// Allocates a card handle value: 31-bit, non-zero, unique in the process.
pub fn alloc_handle_value() -> u32 {
    if NEXT_CARD.load(Ordering::Relaxed) == 0 {
        // Start from a per-process value so handles differ between runs.
        let seed = (std::process::id().wrapping_mul(2_654_435_761) ^ 0x5A5A_0000) & 0x3FFF_FFFF;
        let _ = NEXT_CARD.compare_exchange(0, seed | 0x0100_0000, Ordering::Relaxed, Ordering::Relaxed);
    }
    loop {
        let v = NEXT_CARD.fetch_add(1, Ordering::Relaxed) & 0x7FFF_FFFF;
        if v != 0 {
            return v;
        }
    }
}

struct Card {
    h_card: u32,
    epoch: u64,
    reader: Vec<u8>,
}

struct Inner {
    /// For the per-socket memo of the daemon's array size.
    cfg: ClientConfig,
    conn: Option<Conn>,
    version: Version,
    h_context: u32,
    /// Reader-state slots the daemon publishes (16, 48 on some Fedora builds);
    /// `None` until detected on this connection.
    slots: Option<usize>,
    epoch: u64,
    cards: crate::hash::HandleMap<CardId, Card>,
    released: bool,
}

/// A PC/SC context. All methods take `&self`; calls on one context are serialised
/// by its lock, except [`Context::cancel`], which never waits for it.
pub struct Context {
    cfg: ClientConfig,
    scope: u32,
    fork_gen: u64,
    inner: Mutex<Inner>,
    pub(crate) canceller: Canceller,
}

type Res<T> = Result<T, TransportError>;

/// What this process learnt last about the daemon at a socket: the version it
/// accepted and the size of its reader-state array, so that later contexts offer
/// that version first (one round trip instead of two) and skip the array-size
/// detection. One lock-free entry (fork-safe): bits 63-32 a hash of the socket
/// path, 31-8 the slot count (0 = unknown), 7-0 the version.
static DAEMON_MEMO: AtomicU64 = AtomicU64::new(0);

fn path_key(p: &std::path::Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let mut h: u32 = 0x811C_9DC5;
    for b in p.as_os_str().as_bytes() {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    u64::from(h) << 32
}

fn memo(cfg: &ClientConfig) -> Option<(Version, Option<usize>)> {
    let m = DAEMON_MEMO.load(Ordering::Relaxed);
    if m == 0 || m & 0xFFFF_FFFF_0000_0000 != path_key(&cfg.socket) {
        return None;
    }
    let idx = (m & 0xFF) as usize;
    let v = Version::ALL_NEWEST_FIRST.get(idx.checked_sub(1)?).copied().filter(|r| *r <= cfg.max_version)?;
    let slots = ((m >> 8) & 0xFF_FFFF) as usize;
    Some((v, if slots == 0 { None } else { Some(slots) }))
}

fn remembered(cfg: &ClientConfig) -> Option<Version> {
    memo(cfg).map(|(v, _)| v)
}

fn remember(cfg: &ClientConfig, v: Version, slots: Option<usize>) {
    if let Some(i) = Version::ALL_NEWEST_FIRST.iter().position(|x| *x == v) {
        let slots = slots.unwrap_or(0).min(0xFF_FFFF) as u64;
        DAEMON_MEMO.store(path_key(&cfg.socket) | (slots << 8) | (i as u64 + 1), Ordering::Relaxed);
    }
}

/// Opens a connection, negotiates, and establishes a server context, pipelining
/// `CMD_VERSION` and `SCARD_ESTABLISH_CONTEXT` in one write. The first offer is
/// the version this daemon accepted last, else the newest we speak.
fn open(cfg: &ClientConfig, scope: u32) -> Result<(Conn, Version, u32), Rv> {
    let mut conn = Conn::connect(&cfg.socket).map_err(|e| e.rv())?;
    let offer = remembered(cfg).unwrap_or(cfg.max_version);
    let mut req = Vec::with_capacity(40);
    emit_version_request(&mut req, offer);
    Header::new(Command::ESTABLISH_CONTEXT, EstablishMsg::SIZE).emit(&mut req);
    EstablishMsg { scope, h_context: 0, rv: 0 }.emit(&mut req);
    conn.send_all(&req).map_err(|_| Rv::E_NO_SERVICE)?;
    // The first version reply precedes the establish reply; later versions
    // offered on the same connection are answered after it.
    let mut vbuf = [0u8; VersionMsg::SIZE];
    conn.read_exact(&mut vbuf).map_err(|e| e.rv())?;
    let first = VersionMsg::parse(&vbuf).map_err(|_| Rv::F_COMM_ERROR)?;
    let mut ebuf = [0u8; EstablishMsg::SIZE];
    conn.read_exact(&mut ebuf).map_err(|e| e.rv())?;
    let est = EstablishMsg::parse(&ebuf).map_err(|_| Rv::F_COMM_ERROR)?;
    // A daemon that names a newer version than a remembered offer was upgraded.
    let newer = Version::from_numbers(first.major, first.minor)
        .or(if first.major == 4 && first.minor > 6 { Some(Version::NEWEST) } else { None })
        .map(|v| v.min(cfg.max_version))
        // (compared by number: 4:2 with 100-byte names is not "older" than 4:2)
        .filter(|v| v.minor() > offer.minor());
    let version = if first.result().is_success() {
        match newer {
            Some(up) => reoffer(&mut conn, up)?,
            None => handshake::effective(offer, &first),
        }
    } else {
        let rv = first.result();
        if rv != Rv::E_SERVICE_STOPPED && rv != Rv::E_NO_SERVICE {
            return Err(rv);
        }
        let next = newer.or_else(|| handshake::next_offer(offer, &first, &[offer])).ok_or(rv)?;
        reoffer(&mut conn, next)?
    };
    est.result().ok()?;
    let known_slots = memo(cfg).filter(|(v, _)| *v == version).and_then(|(_, s)| s);
    remember(cfg, version, known_slots);
    tracing::debug!(socket = %cfg.socket.display(), %version, "context established");
    Ok((conn, version, est.h_context))
}

fn reoffer(conn: &mut Conn, v: Version) -> Result<Version, Rv> {
    let mut r = Vec::with_capacity(20);
    emit_version_request(&mut r, v);
    conn.send_all(&r).map_err(|e| e.rv())?;
    handshake::complete(conn, v).map_err(|e| e.rv())
}

impl Context {
    /// `SCardEstablishContext`.
    pub fn establish(cfg: &ClientConfig, scope: u32) -> Result<Context, Rv> {
        ensure_atfork();
        let (conn, version, h_context) = open(cfg, scope)?;
        let ctx = Context {
            cfg: cfg.clone(),
            scope,
            fork_gen: fork_generation(),
            inner: Mutex::new(Inner {
                conn: Some(conn),
                version,
                h_context,
                slots: memo(cfg).filter(|(v, _)| *v == version).and_then(|(_, s)| s),
                cfg: cfg.clone(),
                epoch: 0,
                cards: Default::default(),
                released: false,
            }),
            canceller: Canceller::new(),
        };
        ctx.settle_layout()?;
        Ok(ctx)
    }

    /// 4:2 comes in two layouts under one number: learn which before any
    /// `SCardConnect`, whose struct size depends on it.
    fn settle_layout(&self) -> Result<(), Rv> {
        let mut inner = self.lock()?;
        if inner.version.minor() == 2 && inner.slots.is_none() && inner.conn.is_some() {
            fetch_states(&mut inner).map_err(|e| e.rv())?;
        }
        Ok(())
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, Rv> {
        if self.fork_gen != fork_generation() {
            return Err(Rv::E_INVALID_HANDLE);
        }
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.released {
            return Err(Rv::E_INVALID_HANDLE);
        }
        Ok(g)
    }

    /// Makes sure the context has a live connection, reconnecting after a
    /// daemon restart. Returns whether a reconnection happened.
    fn ensure_conn(&self, inner: &mut Inner) -> Result<bool, Rv> {
        if inner.conn.is_some() {
            return Ok(false);
        }
        let (conn, version, h_context) = open(&self.cfg, self.scope)?;
        tracing::info!(%version, "reconnected to the daemon");
        inner.conn = Some(conn);
        inner.version = version;
        inner.h_context = h_context;
        // A restarted daemon may be another build: learn its array size again.
        inner.slots = None;
        remember(&self.cfg, version, None);
        inner.epoch += 1;
        if version.minor() == 2 {
            fetch_states(inner).map_err(|e| e.rv())?;
        }
        Ok(true)
    }

    /// Runs a context-level exchange, reconnecting once if the daemon went away.
    fn with_conn<T>(&self, mut f: impl FnMut(&mut Inner) -> Res<T>) -> Result<T, Rv> {
        let mut inner = self.lock()?;
        let mut retried = false;
        loop {
            let reconnected = self.ensure_conn(&mut inner)?;
            match f(&mut inner) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    inner.conn = None;
                    if retried || reconnected || !e.is_disconnect() {
                        return Err(if e == TransportError::Unreachable { Rv::E_NO_SERVICE } else { e.rv() });
                    }
                    retried = true;
                    tracing::debug!(?e, "daemon connection lost; reconnecting");
                }
            }
        }
    }

    /// Runs a card-level exchange. A card from before a reconnection reports
    /// `SCARD_W_REMOVED_CARD`.
    fn with_card<T>(&self, card: CardId, f: impl FnOnce(&mut Inner, u32) -> Res<T>) -> Result<T, Rv> {
        let mut inner = self.lock()?;
        let (h_card, epoch) = match inner.cards.get(&card) {
            Some(c) => (c.h_card, c.epoch),
            None => return Err(Rv::E_INVALID_HANDLE),
        };
        if inner.conn.is_none() {
            self.ensure_conn(&mut inner).map_err(|_| Rv::E_NO_SERVICE)?;
        }
        if epoch != inner.epoch {
            return Err(Rv::W_REMOVED_CARD);
        }
        match f(&mut inner, h_card) {
            Ok(v) => Ok(v),
            Err(e) => {
                inner.conn = None;
                if e.is_disconnect() && self.ensure_conn(&mut inner).is_ok() {
                    Err(Rv::W_REMOVED_CARD)
                } else {
                    Err(Rv::E_NO_SERVICE)
                }
            }
        }
    }

    /// The protocol version spoken with the daemon now.
    pub fn version(&self) -> Result<Version, Rv> {
        Ok(self.lock()?.version)
    }

    /// The number of reader-state slots the daemon publishes (after a fetch).
    pub fn reader_slots(&self) -> Result<Option<usize>, Rv> {
        Ok(self.lock()?.slots)
    }

    /// `SCardIsValidContext`: local check only, as upstream.
    pub fn is_valid(&self) -> bool {
        self.lock().is_ok()
    }

    /// `SCardReleaseContext`. Local state goes even if the daemon is gone.
    pub fn release(&self) -> Result<(), Rv> {
        let mut inner = self.lock()?;
        inner.released = true;
        inner.cards.clear();
        let h_context = inner.h_context;
        let Some(mut conn) = inner.conn.take() else { return Ok(()) };
        let r: Res<Rv> = (|| {
            conn.request(Command::RELEASE_CONTEXT, &ReleaseMsg { h_context, rv: 0 }.to_array(), &[])?;
            let mut b = [0u8; ReleaseMsg::SIZE];
            conn.read_exact(&mut b)?;
            Ok(ReleaseMsg::parse(&b).map(|m| m.result()).unwrap_or(Rv::F_COMM_ERROR))
        })();
        // A daemon that went away has released everything already.
        match r {
            Ok(rv) => rv.ok(),
            Err(_) => Ok(()),
        }
    }

    /// The daemon's reader slots (all of them, empty ones included).
    pub fn reader_states(&self) -> Result<Vec<ReaderState>, Rv> {
        self.with_conn(fetch_states)
    }

    /// `SCardListReaders`: names of the readers, in slot order (maybe empty).
    pub fn list_readers(&self) -> Result<Vec<Vec<u8>>, Rv> {
        let (layout, states) = self.with_conn(|inner| {
            let s = fetch_states(inner)?;
            Ok((inner.version.rs_layout(), s))
        })?;
        Ok(states.into_iter().filter(|s| !s.is_empty(layout)).map(|s| s.name).collect())
    }

    /// `CMD_GET_READER_EVENTS` (4:5 and later): the daemon's reader add/remove
    /// counter, or `None` when the daemon's version has none.
    pub fn reader_events(&self) -> Result<Option<u32>, Rv> {
        self.with_conn(fetch_reader_events)
    }

    /// `SCardConnect`: returns the card handle and the active protocol.
    pub fn connect(&self, reader: &[u8], share_mode: u32, protocols: u32) -> Result<(CardId, u32), Rv> {
        let r = self.connect_reply(reader, share_mode, protocols)?;
        r.rv.ok()?;
        Ok((r.card.expect("a card for a successful connect"), r.active_protocol))
    }

    /// `SCardConnect`, with the daemon's answer even when it refused:
    /// upstream's client hands the reply's active protocol to the app in every
    /// case. `Err` when no reply came (local check, transport).
    pub fn connect_reply(&self, reader: &[u8], share_mode: u32, protocols: u32) -> Result<ConnectReply, Rv> {
        if reader.len() > MAX_READERNAME {
            return Err(Rv::E_INVALID_VALUE);
        }
        let mut inner = self.lock()?;
        let mut retried = false;
        let reply = loop {
            let reconnected = self.ensure_conn(&mut inner)?;
            let h_context = inner.h_context;
            let v = inner.version;
            let msg = ConnectMsg {
                h_context,
                reader: reader.to_vec(),
                share_mode,
                preferred_protocols: protocols,
                ..Default::default()
            };
            let r: Res<ConnectMsg> = (|| {
                let conn = inner.conn.as_mut().expect("connected");
                let mut body = Vec::with_capacity(ConnectMsg::size(v));
                msg.emit(&mut body, v);
                conn.request(Command::CONNECT, &body, &[])?;
                let b = conn.read_vec(ConnectMsg::size(v))?;
                ConnectMsg::parse(&b, v).map_err(|_| TransportError::Io(libc::EPROTO))
            })();
            match r {
                Ok(m) => break m,
                Err(e) => {
                    inner.conn = None;
                    if retried || reconnected || !e.is_disconnect() {
                        return Err(e.rv());
                    }
                    retried = true;
                }
            }
        };
        if !reply.result().is_success() {
            return Ok(ConnectReply { rv: reply.result(), card: None, active_protocol: reply.active_protocol });
        }
        let id = alloc_handle_value();
        let epoch = inner.epoch;
        inner.cards.insert(id, Card { h_card: reply.h_card, epoch, reader: reader.to_vec() });
        Ok(ConnectReply { rv: Rv::SUCCESS, card: Some(id), active_protocol: reply.active_protocol })
    }

    /// Retries `f` every 100 ms while it answers `SCARD_E_SHARING_VIOLATION`
    /// (upstream's client-side blocking), unless `PCSCLITE_NO_BLOCKING` is set and
    /// `always` is false.
    fn blocking<T>(&self, always: bool, mut f: impl FnMut() -> Result<T, Rv>) -> Result<T, Rv> {
        loop {
            match f() {
                Err(Rv::E_SHARING_VIOLATION) if always || !self.cfg.no_blocking => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                r => return r,
            }
        }
    }

    /// `SCardReconnect`: returns the active protocol.
    pub fn reconnect(&self, card: CardId, share_mode: u32, protocols: u32, init: u32) -> Result<u32, Rv> {
        let (rv, active_protocol) = self.reconnect_reply(card, share_mode, protocols, init)?;
        rv.ok()?;
        Ok(active_protocol)
    }

    /// `SCardReconnect`, with the daemon's answer `(rv, active protocol)` even
    /// when it refused (upstream's client hands that protocol to the app).
    /// `Err` when no reply came.
    pub fn reconnect_reply(&self, card: CardId, share_mode: u32, protocols: u32, init: u32) -> Result<(Rv, u32), Rv> {
        self.blocking(false, || {
            let m = self.with_card(card, |inner, h_card| {
                let msg = ReconnectMsg {
                    h_card,
                    share_mode,
                    preferred_protocols: protocols,
                    initialization: init,
                    active_protocol: 0,
                    rv: 0,
                };
                exchange_fixed(inner, Command::RECONNECT, &msg.to_array(), ReconnectMsg::SIZE, ReconnectMsg::parse)
            })?;
            if m.result() == Rv::E_SHARING_VIOLATION {
                return Err(Rv::E_SHARING_VIOLATION);
            }
            Ok((m.result(), m.active_protocol))
        })
    }

    /// `SCardDisconnect`. A card from before a daemon restart just goes away.
    pub fn disconnect(&self, card: CardId, disposition: u32) -> Result<(), Rv> {
        let r = self.with_card(card, |inner, h_card| {
            let msg = DisconnectMsg { h_card, disposition, rv: 0 };
            exchange_fixed(inner, Command::DISCONNECT, &msg.to_array(), DisconnectMsg::SIZE, DisconnectMsg::parse)
        });
        match r {
            Ok(m) => {
                m.result().ok()?;
                self.lock()?.cards.remove(&card);
                Ok(())
            }
            Err(Rv::W_REMOVED_CARD) | Err(Rv::E_NO_SERVICE) => {
                self.lock()?.cards.remove(&card);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// `SCardBeginTransaction` (always blocks while another holds the card).
    pub fn begin_transaction(&self, card: CardId) -> Result<(), Rv> {
        self.blocking(true, || {
            let m = self.with_card(card, |inner, h_card| {
                exchange_fixed(
                    inner,
                    Command::BEGIN_TRANSACTION,
                    &BeginMsg { h_card, rv: 0 }.to_array(),
                    BeginMsg::SIZE,
                    BeginMsg::parse,
                )
            })?;
            m.result().ok()
        })
    }

    /// `SCardEndTransaction`.
    pub fn end_transaction(&self, card: CardId, disposition: u32) -> Result<(), Rv> {
        let m = self.with_card(card, |inner, h_card| {
            exchange_fixed(
                inner,
                Command::END_TRANSACTION,
                &EndMsg { h_card, disposition, rv: 0 }.to_array(),
                EndMsg::SIZE,
                EndMsg::parse,
            )
        })?;
        m.result().ok()
    }

    /// `SCardStatus`: the daemon checks the handle; state, protocol and ATR come
    /// from the reader-state array, fetched first (as libpcsclite does).
    pub fn status(&self, card: CardId) -> Result<CardStatus, Rv> {
        self.blocking(false, || self.status_once(card))
    }

    fn status_once(&self, card: CardId) -> Result<CardStatus, Rv> {
        let out = self.with_card(card, |inner, h_card| {
            let reader = inner.cards.get(&card).map(|c| c.reader.clone()).unwrap_or_default();
            let v = inner.version;
            // As libpcsclite: the reader states first; a handle whose reader has gone gets
            // SCARD_E_READER_UNAVAILABLE without asking the daemon (which would say
            // SCARD_E_INVALID_VALUE).
            let layout = v.rs_layout();
            let Some(s) = fetch_states(inner)?.into_iter().find(|s| !s.is_empty(layout) && s.name == reader) else {
                return Ok(Err(Rv::E_READER_UNAVAILABLE));
            };
            if v.status_is_wide() {
                let msg = Status40Msg { h_card, reader_len: 100, atr_len: 33, ..Default::default() };
                let mut body = Vec::with_capacity(Status40Msg::SIZE);
                msg.emit(&mut body);
                let conn = inner.conn.as_mut().expect("connected");
                conn.request(Command::STATUS, &body, &[])?;
                let b = conn.read_vec(Status40Msg::SIZE)?;
                let m = Status40Msg::parse(&b).map_err(|_| TransportError::Io(libc::EPROTO))?;
                if m.rv != 0 {
                    return Ok(Err(Rv(m.rv)));
                }
                return Ok(Ok((reader, layout, s)));
            }
            let conn = inner.conn.as_mut().expect("connected");
            conn.request(Command::STATUS, &StatusMsg { h_card, rv: 0 }.to_array(), &[])?;
            let mut b = [0u8; StatusMsg::SIZE];
            conn.read_exact(&mut b)?;
            let m = StatusMsg::parse(&b).map_err(|_| TransportError::Io(libc::EPROTO))?;
            if m.rv != 0 {
                return Ok(Err(Rv(m.rv)));
            }
            Ok(Ok((reader, layout, s)))
        })?;
        let (reader, layout, s) = out?;
        let state = if layout == RsLayout::A { s.state } else { (s.event_counter << 16).wrapping_add(s.state) };
        Ok(CardStatus { reader, state, protocol: s.protocol, atr: s.atr().to_vec() })
    }

    /// `SCardTransmit`. `recv` is the caller's buffer; `recv_pci` is what the
    /// caller's receive PCI holds (protocol, length) or `None`.
    pub fn transmit(
        &self,
        card: CardId,
        send_pci: (u32, u32),
        send: &[u8],
        recv_pci: Option<(u32, u32)>,
        recv: &mut [u8],
    ) -> TransmitResult {
        let fail = |rv| TransmitResult { rv, len: 0, recv_pci_protocol: 0, recv_pci_length: 0 };
        let r = self.blocking(false, || {
            let t = self.transmit_once(card, send_pci, send, recv_pci, &mut *recv)?;
            if t.rv == Rv::E_SHARING_VIOLATION {
                return Err(t.rv);
            }
            Ok(t)
        });
        r.unwrap_or_else(fail)
    }

    fn transmit_once(
        &self,
        card: CardId,
        send_pci: (u32, u32),
        send: &[u8],
        recv_pci: Option<(u32, u32)>,
        recv: &mut [u8],
    ) -> Result<TransmitResult, Rv> {
        self.with_card(card, |inner, h_card| {
            let max = inner.version.max_buffer();
            if send.len() > max {
                return Ok(TransmitResult {
                    rv: Rv::E_INVALID_PARAMETER,
                    len: 0,
                    recv_pci_protocol: 0,
                    recv_pci_length: 0,
                });
            }
            let (rp, rl) = recv_pci.unwrap_or((crate::consts::protocol::ANY, 16));
            let msg = TransmitMsg {
                h_card,
                send_pci_protocol: send_pci.0,
                send_pci_length: send_pci.1,
                send_length: send.len() as u32,
                recv_pci_protocol: rp,
                recv_pci_length: rl,
                recv_length: recv.len().min(max) as u32,
                rv: 0,
            };
            let conn = inner.conn.as_mut().expect("connected");
            conn.request(Command::TRANSMIT, &msg.to_array(), send)?;
            let mut b = [0u8; TransmitMsg::SIZE];
            conn.read_exact(&mut b)?;
            let m = TransmitMsg::parse(&b).map_err(|_| TransportError::Io(libc::EPROTO))?;
            let rv = read_reply_data(conn, m.result(), m.recv_length as usize, max, recv)?;
            Ok(TransmitResult {
                rv,
                len: m.recv_length as usize,
                recv_pci_protocol: m.recv_pci_protocol,
                recv_pci_length: m.recv_pci_length,
            })
        })
    }

    /// `SCardControl`.
    pub fn control(&self, card: CardId, code: u32, send: &[u8], recv: &mut [u8]) -> ControlResult {
        let r = self.with_card(card, |inner, h_card| {
            let max = inner.version.max_buffer();
            if send.len() > max {
                return Ok(ControlResult { rv: Rv::E_INVALID_PARAMETER, len: 0 });
            }
            let msg = ControlMsg {
                h_card,
                control_code: code,
                send_length: send.len() as u32,
                recv_length: recv.len().min(max) as u32,
                bytes_returned: 0,
                rv: 0,
            };
            let conn = inner.conn.as_mut().expect("connected");
            conn.request(Command::CONTROL, &msg.to_array(), send)?;
            let mut b = [0u8; ControlMsg::SIZE];
            conn.read_exact(&mut b)?;
            let m = ControlMsg::parse(&b).map_err(|_| TransportError::Io(libc::EPROTO))?;
            let rv = read_reply_data(conn, m.result(), m.bytes_returned as usize, max, recv)?;
            Ok(ControlResult { rv, len: m.bytes_returned as usize })
        });
        r.unwrap_or_else(|rv| ControlResult { rv, len: 0 })
    }

    /// `SCardGetAttrib`: asks with a buffer of `buf_len` bytes (at most 264).
    pub fn get_attrib(&self, card: CardId, attr_id: u32, buf_len: usize) -> Result<AttrResult, Rv> {
        self.with_card(card, |inner, h_card| {
            let msg =
                AttribMsg { h_card, attr_id, attr_len: buf_len.min(MAX_BUFFER_SIZE) as u32, ..Default::default() };
            let mut body = Vec::with_capacity(AttribMsg::SIZE);
            msg.emit(&mut body);
            let m = exchange_fixed(inner, Command::GET_ATTRIB, &body, AttribMsg::SIZE, AttribMsg::parse)?;
            Ok(AttrResult { rv: m.result(), len: m.attr_len as usize, data: m.value().to_vec() })
        })
    }

    /// `SCardSetAttrib`.
    pub fn set_attrib(&self, card: CardId, attr_id: u32, value: &[u8]) -> Result<(), Rv> {
        if value.len() > MAX_BUFFER_SIZE {
            return Err(Rv::E_INSUFFICIENT_BUFFER);
        }
        let m = self.with_card(card, |inner, h_card| {
            let mut msg = AttribMsg { h_card, attr_id, attr_len: value.len() as u32, ..Default::default() };
            msg.attr[..value.len()].copy_from_slice(value);
            let mut body = Vec::with_capacity(AttribMsg::SIZE);
            msg.emit(&mut body);
            exchange_fixed(inner, Command::SET_ATTRIB, &body, AttribMsg::SIZE, AttribMsg::parse)
        })?;
        m.result().ok()
    }

    /// Whether `card` is a handle of this context.
    pub fn has_card(&self, card: CardId) -> bool {
        self.lock().map(|g| g.cards.contains_key(&card)).unwrap_or(false)
    }

    /// The card handles of this context.
    pub fn cards(&self) -> Vec<CardId> {
        self.lock().map(|g| g.cards.keys().copied().collect()).unwrap_or_default()
    }

    /// `SCardCancel`: ends a `get_status_change` blocked on this context, from
    /// any thread; a no-op returning success when none is blocked.
    pub fn cancel(&self) -> Result<(), Rv> {
        if self.fork_gen != fork_generation() {
            return Err(Rv::E_INVALID_HANDLE);
        }
        self.canceller.cancel();
        Ok(())
    }

    /// For the status-change loop: states (and the reader-events counter where
    /// the daemon has one), plus the version and the slot count.
    pub(crate) fn snapshot(&self, want_events: bool) -> Result<(Version, usize, Vec<ReaderState>, Option<u32>), Rv> {
        self.with_conn(|inner| {
            let states = fetch_states(inner)?;
            let ev = if want_events { fetch_reader_events(inner)? } else { None };
            Ok((inner.version, inner.slots.unwrap_or(states.len()), states, ev))
        })
    }
}

/// The data after a TRANSMIT or CONTROL reply struct: `n` bytes, present only
/// when `rv` is success. Data that does not fit `recv` is consumed (the stream
/// stays in step) and reported as `SCARD_E_INSUFFICIENT_BUFFER`; more than the
/// protocol allows means a broken daemon.
fn read_reply_data(conn: &mut Conn, rv: Rv, n: usize, max: usize, recv: &mut [u8]) -> Res<Rv> {
    if !rv.is_success() {
        return Ok(rv);
    }
    if n > max {
        return Err(TransportError::Io(libc::EPROTO));
    }
    if n <= recv.len() {
        conn.read_exact(&mut recv[..n])?;
        Ok(rv)
    } else {
        conn.skip(n)?;
        Ok(Rv::E_INSUFFICIENT_BUFFER)
    }
}

/// One fixed-size request and its fixed-size reply.
fn exchange_fixed<T>(
    inner: &mut Inner,
    cmd: Command,
    body: &[u8],
    reply_size: usize,
    parse: fn(&[u8]) -> Result<T, crate::wire::WireError>,
) -> Res<T> {
    let conn = inner.conn.as_mut().expect("connected");
    conn.request(cmd, body, &[])?;
    if reply_size <= 32 {
        let mut b = [0u8; 32];
        let b = &mut b[..reply_size];
        conn.read_exact(b)?;
        return parse(b).map_err(|_| TransportError::Io(libc::EPROTO));
    }
    let b = conn.read_vec(reply_size)?;
    parse(&b).map_err(|_| TransportError::Io(libc::EPROTO))
}

fn fetch_reader_events(inner: &mut Inner) -> Res<Option<u32>> {
    if !inner.version.has_reader_events() {
        return Ok(None);
    }
    let conn = inner.conn.as_mut().expect("connected");
    conn.request(Command::GET_READER_EVENTS, &[], &[])?;
    let mut b = [0u8; ReaderEventsMsg::SIZE];
    conn.read_exact(&mut b)?;
    let m = ReaderEventsMsg::parse(&b).map_err(|_| TransportError::Io(libc::EPROTO))?;
    Ok(Some(m.reader_events))
}

/// Largest reader-state array we accept from a daemon (records).
const MAX_SLOTS: usize = 4096;

/// Whether 12 bytes are a `CMD_VERSION` success reply (the sentinel that ends a
/// reader-state array of unknown length). No reader record starts with the
/// little integer 4: names start with a printable byte or NUL, 4:0 reader IDs
/// are 0 or at least 100.
fn is_version_sentinel(b: &[u8]) -> bool {
    let m = VersionMsg::parse(b);
    matches!(m, Ok(VersionMsg { major: 4, minor, rv: 0 }) if minor < 64)
}

/// Fetches the reader-state array with the semantics of the negotiated version.
/// Without a length on the wire (up to 4:5), the first fetch on a connection
/// learns the array size: it pipelines a `CMD_VERSION` after the request and
/// reads records until the version reply shows up. This tells 16 slots from
/// Fedora's 48 and 4:2's 100-byte layout from its 128-byte one.
fn fetch_states(inner: &mut Inner) -> Res<Vec<ReaderState>> {
    let v = inner.version;
    let conn = inner.conn.as_mut().expect("connected");
    if v.has_state_array() {
        let mut req = Vec::with_capacity(16);
        Header::new(Command::GET_READERS_STATE_SIZE, 0).emit(&mut req);
        Header::new(Command::GET_READERS_STATE_ARRAY, 0).emit(&mut req);
        conn.send_all(&req)?;
        let mut nb = [0u8; 4];
        conn.read_exact(&mut nb)?;
        let n = parse_state_size(&nb).map_err(|_| TransportError::Io(libc::EPROTO))? as usize;
        if n > MAX_SLOTS {
            return Err(TransportError::Io(libc::EPROTO));
        }
        let b = conn.read_vec(n * RsLayout::C.record_size())?;
        inner.slots = Some(n);
        return parse_array(&b, RsLayout::C).map_err(|_| TransportError::Io(libc::EPROTO));
    }
    if let Some(slots) = inner.slots {
        conn.request(Command::GET_READERS_STATE, &[], &[])?;
        let layout = v.rs_layout();
        let b = conn.read_vec(slots * layout.record_size())?;
        return parse_array(&b, layout).map_err(|_| TransportError::Io(libc::EPROTO));
    }
    // First fetch: detect the array's size.
    let mut req = Vec::with_capacity(32);
    Header::new(Command::GET_READERS_STATE, 0).emit(&mut req);
    emit_version_request(&mut req, v);
    conn.send_all(&req)?;
    // Either 4:2 variant: the layout is learnt here, whichever the handshake assumed.
    let is_4_2 = v.minor() == 2;
    let mut layout = if is_4_2 { RsLayout::B } else { v.rs_layout() };
    let mut array_len = 16 * layout.record_size();
    let mut buf = conn.read_vec(array_len)?;
    loop {
        let mut t = [0u8; VersionMsg::SIZE];
        conn.read_exact(&mut t)?;
        if is_version_sentinel(&t) {
            break;
        }
        buf.extend_from_slice(&t);
        // 4:2: 2496 bytes with 100-byte names; anything longer is the 128 variant.
        if is_4_2 && layout == RsLayout::B {
            layout = RsLayout::C;
            array_len = 16 * layout.record_size();
        } else {
            array_len += layout.record_size();
        }
        if array_len / layout.record_size() > MAX_SLOTS {
            return Err(TransportError::Io(libc::EPROTO));
        }
        let more = conn.read_vec(array_len - buf.len())?;
        buf.extend_from_slice(&more);
    }
    if is_4_2 {
        inner.version = if layout == RsLayout::B { Version::V4_2Rn100 } else { Version::V4_2 };
        tracing::debug!(version = %inner.version, "4:2 reader-state layout detected");
    }
    let rs = layout.record_size();
    if !buf.len().is_multiple_of(rs) {
        return Err(TransportError::Io(libc::EPROTO));
    }
    let slots = buf.len() / rs;
    if slots != 16 {
        tracing::info!(slots, "daemon publishes a non-default number of reader slots");
    }
    inner.slots = Some(slots);
    remember(&inner.cfg, inner.version, Some(slots));
    parse_array(&buf, layout).map_err(|_| TransportError::Io(libc::EPROTO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_memory_is_per_socket_and_capped() {
        let a = ClientConfig::with_socket("/tmp/a.comm");
        let b = ClientConfig::with_socket("/tmp/b.comm");
        remember(&a, Version::V4_4, Some(48));
        assert_eq!(remembered(&a), Some(Version::V4_4));
        assert_eq!(memo(&a), Some((Version::V4_4, Some(48))));
        assert_eq!(remembered(&b), None);
        let capped = ClientConfig { max_version: Version::V4_3, ..a.clone() };
        assert_eq!(remembered(&capped), None);
        remember(&b, Version::V4_2Rn100, None);
        assert_eq!(remembered(&b), Some(Version::V4_2Rn100));
        assert_eq!(remembered(&a), None);
    }

    #[test]
    fn version_sentinel_is_unambiguous() {
        assert!(is_version_sentinel(&VersionMsg { major: 4, minor: 4, rv: 0 }.to_array()));
        assert!(!is_version_sentinel(&[0; 12]));
        assert!(!is_version_sentinel(b"Virtual PCD "));
        // 4:0 record: readerID 100 + i.
        assert!(!is_version_sentinel(&[100, 0, 0, 0, b'V', b'i', b'r', b't', 0, 0, 0, 0]));
    }
}
