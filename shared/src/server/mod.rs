//! The server side of the pcscd protocol: a mini-pcscd core that serves clients
//! of every protocol version (4:0 to 4:6) on top of a [`Backend`].
//!
//! Layers:
//! - [`backend`]: the [`Backend`] trait (readers, cards, change signal).
//! - [`negotiate`]: the `CMD_VERSION` answer and the 4:2 variant rule.
//! - [`states`]: the per-version reader-state arrays.
//! - `registry`: contexts, card handles and event registrations shared by all
//!   connections; `SCARD_CANCEL` across connections.
//! - `connection` / `commands`: one thread per client connection: framing,
//!   per-version semantics, notification holding, cleanup.
//! - [`listener`]: the Unix socket (path or socket-activated), peer checks,
//!   thread per connection.
//! - [`mock`]: an in-memory backend for tests; [`fuzz`]: [`fuzz::fuzz_one`].
//!
//! Like pcscd: one context per connection, card handles bound to the
//! connection that made them, a client that sends garbage or uses another
//! connection's handle is cut off (only that connection is closed), and a
//! connection that goes away releases its context (ending its transactions).
//! Unlike pcscd 2.5, notifications never land inside a reply (§6.5).

pub mod backend;
mod commands;
mod connection;
pub use connection::Accepted;
pub mod fuzz;
pub mod listener;
pub mod mock;
pub mod negotiate;
mod registry;
pub mod states;

#[cfg(test)]
mod tests;

use std::os::unix::net::UnixStream;
use std::sync::{Arc, Weak};
use std::time::Duration;

pub use backend::{Attrib, Backend, CardInfo, CardRef, ChangeSignal, Controlled, Refused, SessionId, Transmitted};
pub use listener::{ListenError, Listener, ListenerConfig, RunningListener};

use crate::wire::Version;
use registry::Registry;
use states::Capacity;

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The newest version accepted (and named in refusals). Default 4:6.
    pub max_version: Version,
    /// Which 4:2 variant a 4:2 connection starts in (see [`negotiate`]).
    /// Default [`Version::V4_2`] (128-byte names).
    pub v4_2: Version,
    /// How long a notification is held after a state-fetching reply
    /// (`WAIT`, `GET_READERS_STATE`, `SIZE`, `ARRAY`, `GET_READER_EVENTS`),
    /// so that upstream 2.3+/2.5 clients, which send these back to back while
    /// registered, never read it in place of a reply (§6.5). Default 50 ms.
    pub notify_hold: Duration,
    /// Sleep before cutting off a client that used a handle it does not own.
    /// pcscd sleeps 2 s; default 0 (we skip it: it only slows the attacker's
    /// own connection thread, and tests).
    pub foreign_handle_delay: Duration,
    /// Card handles per connection (pcscd `--max-card-handle-per-thread`, 200).
    pub max_cards_per_connection: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_version: Version::V4_6,
            v4_2: Version::V4_2,
            notify_hold: Duration::from_millis(50),
            foreign_handle_delay: Duration::ZERO,
            max_cards_per_connection: 200,
        }
    }
}

pub(crate) struct Shared<B: Backend> {
    pub(crate) backend: Arc<B>,
    pub(crate) cfg: ServerConfig,
    pub(crate) registry: Registry,
    pub(crate) capacity: Capacity,
}

/// A server core: hand it connected client sockets with [`Server::serve`]
/// (or let a [`Listener`] do it). Cloning gives another handle to the same core.
pub struct Server<B: Backend> {
    shared: Arc<Shared<B>>,
}

impl<B: Backend> Clone for Server<B> {
    fn clone(&self) -> Self {
        Server { shared: self.shared.clone() }
    }
}

impl<B: Backend> Server<B> {
    /// A server over `backend`; starts the event notifier thread (it ends soon
    /// after the last `Server` handle is dropped).
    pub fn new(backend: Arc<B>, cfg: ServerConfig) -> Self {
        let shared = Arc::new(Shared { backend, cfg, registry: Registry::default(), capacity: Capacity::default() });
        let weak = Arc::downgrade(&shared);
        let backend = shared.backend.clone();
        // Read here, not in the thread: a change before the thread runs must count.
        let start = backend.generation();
        std::thread::Builder::new()
            .name("pcsc-notifier".into())
            .spawn(move || notifier(backend, weak, start))
            .expect("spawn the notifier thread");
        Server { shared }
    }

    pub fn backend(&self) -> &Arc<B> {
        &self.shared.backend
    }

    pub fn config(&self) -> &ServerConfig {
        &self.shared.cfg
    }

    /// Serves one client connection until it ends (EOF, error, or the client
    /// being cut off). Blocks; run it on the connection's own thread.
    pub fn serve(&self, stream: UnixStream) {
        if let Some(a) = self.accept(stream) {
            self.serve_accepted(a);
        }
    }

    /// Registers a new connection (the first half of [`Server::serve`]): call it on the
    /// accepting thread, then [`Server::serve_accepted`] on the connection's own.
    pub fn accept(&self, stream: UnixStream) -> Option<connection::Accepted> {
        connection::register(&self.shared, stream)
    }

    /// Forgets a connection [`Server::accept`] registered that will not be served (its thread
    /// could not start).
    pub fn forget(&self, id: registry::ConnId) {
        self.shared.registry.remove(id, None, std::iter::empty());
    }

    /// Serves a connection [`Server::accept`] registered, until it ends.
    pub fn serve_accepted(&self, accepted: connection::Accepted) {
        connection::run(&self.shared, accepted);
    }

    /// Closes every client connection (their contexts are released as if the
    /// clients had left). New connections are still served.
    pub fn disconnect_all(&self) {
        self.shared.registry.hang_up_all();
    }

    /// Connections being served now.
    pub fn connection_count(&self) -> usize {
        self.shared.registry.connection_count()
    }
}

/// Waits for backend changes and notifies the registered connections.
fn notifier<B: Backend>(backend: Arc<B>, server: Weak<Shared<B>>, mut last: u64) {
    loop {
        let g = backend.wait_change(last, Duration::from_millis(200));
        let Some(shared) = server.upgrade() else { return };
        if g != last {
            last = g;
            let n = shared.registry.notify_all();
            tracing::trace!(generation = g, notified = n, "reader change");
        }
    }
}
