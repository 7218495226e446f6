//! Proxy mode: serve pcscd clients of every protocol version from the host's
//! pcscd, through pcsc-proto's server core (downstream) and client engine
//! (upstream).
//!
//! * **One upstream context per downstream context.** `SCARD_ESTABLISH_CONTEXT`
//!   opens an upstream [`Context`]; the client's cards live there. Sharing,
//!   transactions and their cleanup are the host pcscd's, exactly.
//! * **No blocking on our side**, except one: the engine runs with
//!   `no_blocking`, so sharing violations go back to the client, whose own
//!   library retries (pcscd-protocol.md §7). `SCardBeginTransaction` is the
//!   exception: the engine always waits for the lock, so the connection's
//!   thread waits there instead of the client library (same result for the
//!   app: its call returns when the lock is free).
//! * **Events: a waiter thread** on a dedicated upstream "monitor" context runs
//!   `get_status_change` over every reader plus `\\?PnP?\Notification` with a
//!   3 s timeout; after every return it fetches the reader states and, when they
//!   differ from the last ones (names, counters, states, sharing, ATRs,
//!   protocols), bumps the change counter that the server core turns into
//!   notifications. The timeout is what notices the daemon going away (the
//!   engine otherwise rides out restarts silently): then the readers vanish for
//!   our clients, and come back when it does. Reader add/remove (the name set
//!   changing) increments our own `GET_READER_EVENTS` counter, so 4:5/4:6
//!   clients get one even from a 4:4 host daemon.
//! * **The host daemon going away**: the proxy keeps running; new contexts get
//!   `SCARD_E_NO_SERVICE`, existing ones see no readers and their calls fail
//!   with the engine's codes; as soon as it is back the engine reconnects by
//!   itself (old card handles answer `SCARD_W_REMOVED_CARD`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use pcsc_proto::client::{ClientConfig, Context, ReaderStateQuery};
use pcsc_proto::consts::{reader_state as rs, scope, PNP_NOTIFICATION};
use pcsc_proto::server::{
    Attrib, Backend, CardInfo, CardRef, ChangeSignal, Controlled, Refused, SessionId, Transmitted,
};
use pcsc_proto::server::{Listener, ListenerConfig, Server, ServerConfig};
use pcsc_proto::wire::ReaderState;
use pcsc_proto::Rv;

use crate::cli::ProxyOpts;

/// How long one upstream wait lasts (bounds how late we notice the host
/// daemon going away).
const WAIT_SLICE_MS: u64 = 3000;

/// A [`Backend`] that forwards to a host pcscd.
pub struct ProxyBackend {
    cfg: ClientConfig,
    monitor: Mutex<Option<Arc<Context>>>,
    sessions: Mutex<HashMap<u64, Arc<Context>>>,
    next_session: AtomicU64,
    changes: ChangeSignal,
    reader_events: AtomicU32,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ProxyBackend {
    /// A backend for the daemon at `upstream`, with its waiter thread running.
    pub fn start(upstream: ClientConfig) -> Arc<ProxyBackend> {
        let cfg = ClientConfig { no_blocking: true, ..upstream };
        let me = Arc::new(ProxyBackend {
            cfg,
            monitor: Mutex::new(None),
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            changes: ChangeSignal::new(),
            reader_events: AtomicU32::new(1),
            stop: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&me);
        std::thread::Builder::new()
            .name("proxy-events".into())
            .spawn(move || waiter(weak))
            .expect("spawn the upstream event thread");
        me
    }

    /// Ends the waiter thread (within one wait slice).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(m) = lock(&self.monitor).as_ref() {
            let _ = m.cancel();
        }
    }

    /// The monitor context, established on first use (and again after it
    /// could not be).
    fn monitor(&self) -> Result<Arc<Context>, Rv> {
        let mut m = lock(&self.monitor);
        if let Some(c) = m.as_ref() {
            return Ok(c.clone());
        }
        let c = Arc::new(Context::establish(&self.cfg, scope::SYSTEM)?);
        *m = Some(c.clone());
        Ok(c)
    }

    /// The upstream readers (non-empty slots), or why not.
    fn upstream_states(&self) -> Result<Vec<ReaderState>, Rv> {
        let m = self.monitor()?;
        let states = m.reader_states()?;
        let layout = m.version()?.rs_layout();
        Ok(states.into_iter().filter(|s| !s.is_empty(layout)).collect())
    }

    fn session(&self, s: SessionId) -> Result<Arc<Context>, Rv> {
        lock(&self.sessions).get(&s.0).cloned().ok_or(Rv::E_INVALID_HANDLE)
    }

    fn note_change(&self, before: &Option<Vec<ReaderState>>, after: &Option<Vec<ReaderState>>) {
        let names =
            |s: &Option<Vec<ReaderState>>| -> Vec<Vec<u8>> { s.iter().flatten().map(|r| r.name.clone()).collect() };
        if names(before) != names(after) {
            let _ = self
                .reader_events
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |e| Some(if e >= 0x7FFF { 1 } else { e + 1 }));
        }
        tracing::debug!(up = after.is_some(), readers = after.as_ref().map_or(0, Vec::len), "upstream change");
        self.changes.bump();
    }
}

fn card_id(card: CardRef) -> u32 {
    card.0 as u32
}

/// The upstream event loop (see the module doc).
fn waiter(me: Weak<ProxyBackend>) {
    let mut last: Option<Vec<ReaderState>> = None;
    let mut queries: Vec<ReaderStateQuery> = Vec::new();
    // Whether the last wait returned a change at once: if the states then look
    // the same, pause, so that a query the engine always reports as changed
    // cannot make this loop spin.
    let mut quick_change = false;
    loop {
        let Some(backend) = me.upgrade() else { return };
        if backend.stop.load(Ordering::SeqCst) {
            return;
        }
        let now = backend.upstream_states().ok();
        if now != last {
            backend.note_change(&last, &now);
            last = now.clone();
        } else if quick_change {
            std::thread::sleep(Duration::from_millis(100));
        }
        quick_change = false;
        let (Some(states), Ok(monitor)) = (now, backend.monitor()) else {
            drop(backend);
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        drop(backend);
        let names: Vec<&[u8]> = states.iter().map(|s| s.name.as_slice()).collect();
        let same_readers = queries.len() == names.len() + 1 && queries.iter().zip(&names).all(|(q, n)| q.name == *n);
        if !same_readers {
            queries = names.iter().map(|n| ReaderStateQuery::new(*n, rs::UNAWARE)).collect();
            queries.push(ReaderStateQuery::new(PNP_NOTIFICATION, 0));
            match monitor.get_status_change(0, &mut queries) {
                Ok(()) | Err(Rv::E_TIMEOUT) => {}
                Err(_) => {
                    queries.clear();
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            for q in queries.iter_mut() {
                q.current_state = q.event_state & !rs::CHANGED;
            }
        }
        let started = Instant::now();
        match monitor.get_status_change(WAIT_SLICE_MS, &mut queries) {
            Ok(()) => {
                quick_change = started.elapsed() < Duration::from_millis(100);
                for q in queries.iter_mut() {
                    q.current_state = q.event_state & !rs::CHANGED;
                }
            }
            Err(Rv::E_TIMEOUT) => {}
            Err(Rv::E_UNKNOWN_READER) => queries.clear(),
            Err(rv) => {
                tracing::debug!(?rv, "upstream wait");
                queries.clear();
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

impl Backend for ProxyBackend {
    fn open_session(&self, scope: u32) -> Result<SessionId, Rv> {
        let ctx = Context::establish(&self.cfg, scope)?;
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        lock(&self.sessions).insert(id, Arc::new(ctx));
        Ok(SessionId(id))
    }

    fn close_session(&self, session: SessionId) {
        if let Some(c) = lock(&self.sessions).remove(&session.0) {
            let _ = c.release();
        }
    }

    fn reader_states(&self) -> Vec<ReaderState> {
        self.upstream_states().unwrap_or_default()
    }

    fn reader_events(&self) -> u32 {
        self.reader_events.load(Ordering::SeqCst)
    }

    fn changes(&self) -> &ChangeSignal {
        &self.changes
    }

    fn connect(
        &self,
        session: SessionId,
        reader: &[u8],
        share_mode: u32,
        protocols: u32,
    ) -> Result<(CardRef, u32), Refused> {
        let r = self.session(session)?.connect_reply(reader, share_mode, protocols)?;
        match r.card {
            Some(card) if r.rv.is_success() => Ok((CardRef(u64::from(card)), r.active_protocol)),
            _ => Err(Refused { rv: r.rv, active_protocol: Some(r.active_protocol) }),
        }
    }

    fn reconnect(
        &self,
        session: SessionId,
        card: CardRef,
        share_mode: u32,
        protocols: u32,
        init: u32,
    ) -> Result<u32, Refused> {
        let (rv, p) = self.session(session)?.reconnect_reply(card_id(card), share_mode, protocols, init)?;
        if rv.is_success() {
            Ok(p)
        } else {
            Err(Refused { rv, active_protocol: Some(p) })
        }
    }

    fn disconnect(&self, session: SessionId, card: CardRef, disposition: u32) -> Result<(), Rv> {
        self.session(session)?.disconnect(card_id(card), disposition)
    }

    fn begin_transaction(&self, session: SessionId, card: CardRef) -> Result<(), Rv> {
        self.session(session)?.begin_transaction(card_id(card))
    }

    fn end_transaction(&self, session: SessionId, card: CardRef, disposition: u32) -> Result<(), Rv> {
        self.session(session)?.end_transaction(card_id(card), disposition)
    }

    fn status(&self, session: SessionId, card: CardRef) -> Result<CardInfo, Rv> {
        let s = self.session(session)?.status(card_id(card))?;
        Ok(CardInfo { reader: s.reader, state: s.state & 0xFFFF, protocol: s.protocol, atr: s.atr })
    }

    fn transmit(
        &self,
        session: SessionId,
        card: CardRef,
        send_pci: (u32, u32),
        apdu: &[u8],
        recv_pci: (u32, u32),
        recv: &mut [u8],
    ) -> Transmitted {
        let ctx = match self.session(session) {
            Ok(c) => c,
            Err(rv) => return Transmitted::failed(rv),
        };
        let t = ctx.transmit(card_id(card), send_pci, apdu, Some(recv_pci), recv);
        Transmitted { rv: t.rv, len: t.len, recv_pci: Some((t.recv_pci_protocol, t.recv_pci_length)) }
    }

    fn control(&self, session: SessionId, card: CardRef, code: u32, data: &[u8], recv: &mut [u8]) -> Controlled {
        match self.session(session) {
            Ok(ctx) => {
                let r = ctx.control(card_id(card), code, data, recv);
                Controlled { rv: r.rv, len: r.len }
            }
            Err(rv) => Controlled { rv, len: 0 },
        }
    }

    fn get_attrib(&self, session: SessionId, card: CardRef, attr_id: u32, buf_len: usize) -> Attrib {
        match self.session(session).and_then(|c| c.get_attrib(card_id(card), attr_id, buf_len)) {
            Ok(a) => Attrib { rv: a.rv, len: a.len, data: a.data },
            Err(rv) => Attrib::failed(rv),
        }
    }

    fn set_attrib(&self, session: SessionId, card: CardRef, attr_id: u32, value: &[u8]) -> Result<(), Rv> {
        self.session(session)?.set_attrib(card_id(card), attr_id, value)
    }
}

/// Why the proxy could not run.
#[derive(Debug)]
pub enum ProxyError {
    /// Listening on our own upstream would loop forever.
    SelfUpstream(std::path::PathBuf),
    Folder(std::path::PathBuf, std::io::Error),
    Listen(pcsc_proto::server::ListenError),
    Io(std::io::Error),
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyError::SelfUpstream(p) => {
                write!(f, "the upstream socket is our own listening socket ({})", p.display())
            }
            ProxyError::Folder(p, e) => write!(f, "cannot create {}: {e}", p.display()),
            ProxyError::Listen(e) => write!(f, "{e}"),
            ProxyError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ProxyError {}

/// Runs the proxy until a fatal error.
pub fn run(opts: &ProxyOpts) -> Result<(), ProxyError> {
    let lcfg = ListenerConfig { mode: opts.socket_mode, allow_uids: opts.allow_uids.clone(), ..Default::default() };
    let listener = match Listener::from_systemd(lcfg.clone()).map_err(ProxyError::Listen)? {
        Some(l) => l,
        None => {
            if same_file(&opts.listen, &opts.upstream) {
                return Err(ProxyError::SelfUpstream(opts.listen.clone()));
            }
            if let Some(dir) = opts.listen.parent() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| ProxyError::Folder(dir.to_path_buf(), e))?;
            }
            Listener::bind(&opts.listen, lcfg).map_err(ProxyError::Listen)?
        }
    };
    let path = listener.path();
    if let Some(p) = &path {
        if same_file(p, &opts.upstream) {
            return Err(ProxyError::SelfUpstream(p.clone()));
        }
    }
    let backend = ProxyBackend::start(ClientConfig::with_socket(&opts.upstream));
    let server = Server::new(backend, ServerConfig::default());
    tracing::info!(
        listen = %path.as_deref().map_or("(inherited socket)".into(), |p| p.display().to_string()),
        upstream = %opts.upstream.display(),
        activated = listener.is_activated(),
        "usbpass proxy ready"
    );
    listener.spawn(server).map_err(ProxyError::Io)?.join().map_err(ProxyError::Io)
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    if a == b {
        return true;
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    //! The proxy between our own server over the in-memory backend (as the
    //! "host pcscd") and our client engine at every version.

    use std::path::{Path, PathBuf};
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    use super::*;
    use pcsc_proto::consts::{disposition, protocol, share, INFINITE};
    use pcsc_proto::server::mock::{MockBackend, MOCK_ATR, SELECT_TEST_AID};
    use pcsc_proto::server::RunningListener;
    use pcsc_proto::wire::Version;

    const READER: &str = "Mock Reader 00 00";

    struct Upstream {
        mock: Arc<MockBackend>,
        server: Server<MockBackend>,
        listener: Option<RunningListener>,
    }

    impl Upstream {
        fn start(path: &Path) -> Upstream {
            let mock = Arc::new(MockBackend::with_card());
            let server = Server::new(mock.clone(), ServerConfig { max_version: Version::V4_4, ..Default::default() });
            let listener =
                Some(Listener::bind(path, ListenerConfig::default()).unwrap().spawn(server.clone()).unwrap());
            Upstream { mock, server, listener }
        }

        /// The "daemon" goes away: socket removed, every connection closed.
        fn stop(&mut self) {
            if let Some(l) = self.listener.take() {
                l.stop().unwrap();
            }
            self.server.disconnect_all();
        }
    }

    struct Chain {
        dir: PathBuf,
        up: Upstream,
        proxy: Arc<ProxyBackend>,
        down: PathBuf,
        _listener: RunningListener,
    }

    impl Chain {
        fn new() -> Chain {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "usbpass-proxy-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let up = Upstream::start(&dir.join("up.comm"));
            let proxy = ProxyBackend::start(ClientConfig::with_socket(dir.join("up.comm")));
            let server = Server::new(
                proxy.clone(),
                ServerConfig { notify_hold: Duration::from_millis(20), ..Default::default() },
            );
            let down = dir.join("down.comm");
            let listener = Listener::bind(&down, ListenerConfig::default()).unwrap().spawn(server).unwrap();
            Chain { dir, up, proxy, down, _listener: listener }
        }

        fn ctx(&self, v: Version) -> Result<Context, Rv> {
            let cfg = ClientConfig { max_version: v, no_blocking: true, ..ClientConfig::with_socket(&self.down) };
            Context::establish(&cfg, scope::USER)
        }
    }

    impl Drop for Chain {
        fn drop(&mut self) {
            self.proxy.shutdown();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn transmit(c: &Context, card: u32) -> Result<Vec<u8>, Rv> {
        let mut buf = [0u8; 258];
        let t = c.transmit(card, (protocol::T1, 16), &SELECT_TEST_AID, None, &mut buf);
        t.rv.ok()?;
        Ok(buf[..t.len].to_vec())
    }

    fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn every_version_through_the_proxy() {
        let chain = Chain::new();
        // Newest first: the engine remembers per socket the version a daemon
        // accepted and offers it first next time (if within max_version), and
        // our server echoes what it is offered.
        for v in [Version::V4_6, Version::V4_5, Version::V4_4, Version::V4_3, Version::V4_2, Version::V4_0] {
            let c = chain.ctx(v).unwrap();
            assert_eq!(c.version().unwrap(), v);
            let readers = c.list_readers().unwrap();
            assert_eq!(readers[0], READER.as_bytes(), "{v}");
            let (card, p) = c.connect(READER.as_bytes(), share::SHARED, protocol::ANY).unwrap();
            assert_eq!(p, protocol::T1);
            assert_eq!(c.status(card).unwrap().atr, MOCK_ATR);
            assert_eq!(transmit(&c, card).unwrap(), [0x90, 0x00], "{v}");
            if v.has_reader_events() {
                assert!(c.reader_events().unwrap().is_some());
            }
            c.disconnect(card, disposition::LEAVE).unwrap();
            c.release().unwrap();
        }
        // The proxy's own sessions upstream are gone with them.
        eventually("upstream sessions released", || chain.up.mock.counts().1 == 0);
    }

    #[test]
    fn events_and_sharing_pass_through() {
        let chain = Chain::new();
        let c = Arc::new(chain.ctx(Version::V4_6).unwrap());
        let mut q = [ReaderStateQuery::new(READER, rs::UNAWARE)];
        c.get_status_change(0, &mut q).unwrap();
        q[0].current_state = q[0].event_state & !rs::CHANGED;
        let mock = chain.up.mock.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            mock.remove_card(READER);
        });
        c.get_status_change(10_000, &mut q).unwrap();
        assert!(q[0].event_state & rs::EMPTY != 0, "{:#x}", q[0].event_state);
        t.join().unwrap();
        q[0].current_state = q[0].event_state & !rs::CHANGED;
        let mock = chain.up.mock.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            mock.insert_card(READER, &MOCK_ATR);
        });
        c.get_status_change(INFINITE as u64, &mut q).unwrap();
        assert!(q[0].event_state & rs::PRESENT != 0);
        t.join().unwrap();
        // Readers coming: PnP, and our reader-events counter moves.
        let before = c.reader_events().unwrap().unwrap();
        let mock = chain.up.mock.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            mock.add_reader("Mock Reader 01 00");
        });
        let mut pnp = [ReaderStateQuery::new(PNP_NOTIFICATION, 0)];
        c.get_status_change(10_000, &mut pnp).unwrap();
        t.join().unwrap();
        assert_ne!(c.reader_events().unwrap().unwrap(), before);
        // Exclusive vs shared between two clients of the proxy.
        let d = chain.ctx(Version::V4_4).unwrap();
        let (x, _) = c.connect(READER.as_bytes(), share::EXCLUSIVE, protocol::ANY).unwrap();
        assert_eq!(d.connect(READER.as_bytes(), share::SHARED, protocol::ANY).err(), Some(Rv::E_SHARING_VIOLATION));
        c.reconnect(x, share::SHARED, protocol::ANY, disposition::LEAVE).unwrap();
        let (y, _) = d.connect(READER.as_bytes(), share::SHARED, protocol::ANY).unwrap();
        c.begin_transaction(x).unwrap();
        assert_eq!(transmit(&d, y), Err(Rv::E_SHARING_VIOLATION));
        c.end_transaction(x, disposition::LEAVE).unwrap();
        assert!(transmit(&d, y).is_ok());
        // A client vanishing inside its transaction: released upstream too.
        d.begin_transaction(y).unwrap();
        drop(d);
        eventually("the transaction to end upstream", || chain.up.mock.lock_holder(READER).is_none());
        // It ended with a reset (as pcscd does for a dead client's transaction).
        assert_eq!(transmit(&c, x), Err(Rv::W_RESET_CARD));
        assert_eq!(transmit(&c, x), Err(Rv::W_RESET_CARD));
        c.reconnect(x, share::SHARED, protocol::ANY, disposition::LEAVE).unwrap();
        assert!(transmit(&c, x).is_ok());
    }

    #[test]
    fn upstream_going_away_and_coming_back() {
        let mut chain = Chain::new();
        let c = chain.ctx(Version::V4_5).unwrap();
        let (card, _) = c.connect(READER.as_bytes(), share::SHARED, protocol::ANY).unwrap();
        assert!(transmit(&c, card).is_ok());
        chain.up.stop();
        // New contexts are refused; the readers vanish for existing ones.
        assert_eq!(chain.ctx(Version::V4_4).err(), Some(Rv::E_NO_SERVICE));
        eventually("no readers", || c.list_readers().map(|r| r.is_empty()).unwrap_or(false));
        assert!(transmit(&c, card).is_err());
        // Back (same path): new contexts work, old ones again too.
        chain.up = Upstream::start(&chain.dir.join("up.comm"));
        let d = chain.ctx(Version::V4_6).unwrap();
        assert_eq!(d.list_readers().unwrap()[0], READER.as_bytes());
        eventually("readers back", || c.list_readers().map(|r| !r.is_empty()).unwrap_or(false));
        let (card2, _) = c.connect(READER.as_bytes(), share::SHARED, protocol::ANY).unwrap();
        assert!(transmit(&c, card2).is_ok());
        let _ = c.disconnect(card, disposition::LEAVE);
    }
}
