//! The Unix socket a server listens on: a path we bind (mode 0600 by default),
//! or a socket handed over by systemd (`LISTEN_FDS`/`LISTEN_PID`, fd 3). One
//! thread per connection, at most [`ListenerConfig::max_connections`] at once
//! (pcscd: 200; the next is accepted and closed at once). Every peer is checked
//! with `SO_PEERCRED` before anything is read: same uid as the server, or one
//! listed in [`ListenerConfig::allow_uids`]. No read timeouts (pcscd has none);
//! a client that sends half a message only blocks its own thread.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::backend::Backend;
use super::Server;

/// Listener settings.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// Permissions of a socket file we create (default 0600).
    pub mode: u32,
    /// Peers allowed besides our own uid.
    pub allow_uids: Vec<u32>,
    /// Simultaneous connections (default 200, as pcscd).
    pub max_connections: usize,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig { mode: 0o600, allow_uids: Vec::new(), max_connections: 200 }
    }
}

/// Why a listener could not be set up.
#[derive(Debug)]
pub enum ListenError {
    /// Something answers on the path already.
    AlreadyRunning(PathBuf),
    /// A socket-activation environment we cannot use.
    Activation(String),
    Io {
        what: &'static str,
        path: PathBuf,
        err: io::Error,
    },
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenError::AlreadyRunning(p) => write!(f, "another server is listening on {}", p.display()),
            ListenError::Activation(why) => write!(f, "socket activation: {why}"),
            ListenError::Io { what, path, err } => write!(f, "{what} {}: {err}", path.display()),
        }
    }
}

impl std::error::Error for ListenError {}

/// A listening socket.
#[derive(Debug)]
pub struct Listener {
    sock: UnixListener,
    /// The file we created (removed when the listener stops); `None` when
    /// socket-activated (systemd owns the file).
    owned_path: Option<PathBuf>,
    cfg: ListenerConfig,
}

/// The credentials `SO_PEERCRED` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// The peer's credentials.
pub fn peer_cred(s: &UnixStream) -> io::Result<PeerCred> {
    let mut c = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: c and len are valid for writing and len holds c's size.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut c as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred { pid: c.pid, uid: c.uid, gid: c.gid })
}

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

impl Listener {
    /// Binds `path`, replacing a stale socket (one nobody answers on). Any
    /// other file there is left alone (bind then fails).
    pub fn bind(path: &Path, cfg: ListenerConfig) -> Result<Listener, ListenError> {
        use std::os::unix::fs::FileTypeExt;
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.file_type().is_socket() {
                if UnixStream::connect(path).is_ok() {
                    return Err(ListenError::AlreadyRunning(path.to_path_buf()));
                }
                std::fs::remove_file(path).map_err(|err| ListenError::Io {
                    what: "remove stale",
                    path: path.to_path_buf(),
                    err,
                })?;
            }
        }
        let sock =
            UnixListener::bind(path).map_err(|err| ListenError::Io { what: "bind", path: path.to_path_buf(), err })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.mode)).map_err(|err| ListenError::Io {
            what: "chmod",
            path: path.to_path_buf(),
            err,
        })?;
        Ok(Listener { sock, owned_path: Some(path.to_path_buf()), cfg })
    }

    /// The socket systemd passed (`LISTEN_PID` = our pid, `LISTEN_FDS` = 1:
    /// fd 3, which must be a listening `AF_UNIX` stream socket), or `None`
    /// when not socket-activated. Clears the variables, as `sd_listen_fds(1)`.
    pub fn from_systemd(cfg: ListenerConfig) -> Result<Option<Listener>, ListenError> {
        let pid = std::env::var("LISTEN_PID").ok();
        let fds = std::env::var("LISTEN_FDS").ok();
        let (Some(pid), Some(fds)) = (pid, fds) else { return Ok(None) };
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return Ok(None);
        }
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
        match fds.trim().parse::<u32>() {
            Ok(1) => {}
            Ok(0) => return Ok(None),
            _ => return Err(ListenError::Activation(format!("LISTEN_FDS={fds}: exactly one socket expected"))),
        }
        const FD: RawFd = 3;
        check_unix_stream(FD).map_err(ListenError::Activation)?;
        // SAFETY: systemd passed fd 3 to us (LISTEN_PID is ours); nothing else
        // in the process owns it, and it was checked to be a Unix stream socket.
        let sock = unsafe { UnixListener::from_raw_fd(FD) };
        // SAFETY: fcntl on an fd we own.
        unsafe { libc::fcntl(FD, libc::F_SETFD, libc::FD_CLOEXEC) };
        Ok(Some(Listener { sock, owned_path: None, cfg }))
    }

    /// The socket path (bound or activated).
    pub fn path(&self) -> Option<PathBuf> {
        self.sock.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf))
    }

    pub fn is_activated(&self) -> bool {
        self.owned_path.is_none()
    }

    /// Accepts connections and serves each on its own thread until stopped
    /// (see [`RunningListener::stop`]) or a fatal accept error.
    pub fn run<B: Backend>(&self, server: &Server<B>, stop: &AtomicBool) -> io::Result<()> {
        let active = Arc::new(AtomicUsize::new(0));
        let me = euid();
        loop {
            let stream = match self.sock.accept() {
                Ok((s, _)) => s,
                Err(e) if stop.load(Ordering::SeqCst) => {
                    return if e.kind() == io::ErrorKind::InvalidInput { Ok(()) } else { Err(e) }
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) | Some(libc::ECONNABORTED) | Some(libc::EPROTO) => continue,
                    Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM) => {
                        tracing::warn!(error = %e, "accept: out of resources; retrying");
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        continue;
                    }
                    _ => return Err(e),
                },
            };
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let cred = match peer_cred(&stream) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "SO_PEERCRED failed; closing");
                    continue;
                }
            };
            if cred.uid != me && !self.cfg.allow_uids.contains(&cred.uid) {
                tracing::warn!(uid = cred.uid, pid = cred.pid, "peer not allowed; closing");
                continue;
            }
            if active.fetch_add(1, Ordering::SeqCst) >= self.cfg.max_connections {
                active.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(max = self.cfg.max_connections, "too many connections; closing the new one");
                continue;
            }
            // Registered here, so that once `stop` has returned every accepted connection is
            // known to `Server::disconnect_all`.
            let Some(accepted) = server.accept(stream) else {
                active.fetch_sub(1, Ordering::SeqCst);
                continue;
            };
            let id = accepted.id();
            let server2 = server.clone();
            let count = active.clone();
            let spawned =
                std::thread::Builder::new().name("pcsc-conn".into()).stack_size(256 * 1024).spawn(move || {
                    struct Release(Arc<AtomicUsize>);
                    impl Drop for Release {
                        fn drop(&mut self) {
                            self.0.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    let _release = Release(count);
                    tracing::debug!(uid = cred.uid, pid = cred.pid, "client connected");
                    server2.serve_accepted(accepted);
                });
            if let Err(e) = spawned {
                server.forget(id);
                active.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(error = %e, "cannot start a connection thread");
            }
        }
    }

    /// Runs the accept loop on its own thread.
    pub fn spawn<B: Backend>(self, server: Server<B>) -> io::Result<RunningListener> {
        let stop = Arc::new(AtomicBool::new(false));
        let path = self.path();
        // Shared with the handle, so that the socket (and its fd number, which
        // `stop` shuts down) lives until the handle goes.
        let listener = Arc::new(self);
        let (flag, mine) = (stop.clone(), listener.clone());
        let thread = std::thread::Builder::new().name("pcsc-accept".into()).spawn(move || {
            let r = mine.run(&server, &flag);
            if let Err(e) = &r {
                tracing::error!(error = %e, "accept loop ended");
            }
            r
        })?;
        Ok(RunningListener { stop, listener, thread: Some(thread), path })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(p) = &self.owned_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn check_unix_stream(fd: RawFd) -> Result<(), String> {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: ty and len are valid for writing; len holds ty's size.
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE, (&mut ty as *mut libc::c_int).cast(), &mut len)
    };
    if r != 0 {
        return Err(format!("fd {fd} is not a socket: {}", io::Error::last_os_error()));
    }
    if ty != libc::SOCK_STREAM {
        return Err(format!("fd {fd} is not a stream socket"));
    }
    // SAFETY: an all-zero sockaddr_storage is valid; getsockname writes at most len bytes.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut alen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: addr and alen are valid for writing; alen holds addr's size.
    let r = unsafe { libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_storage).cast(), &mut alen) };
    if r != 0 || i32::from(addr.ss_family) != libc::AF_UNIX {
        return Err(format!("fd {fd} is not an AF_UNIX socket"));
    }
    Ok(())
}

/// An accept loop running on its own thread.
#[derive(Debug)]
pub struct RunningListener {
    stop: Arc<AtomicBool>,
    listener: Arc<Listener>,
    thread: Option<JoinHandle<io::Result<()>>>,
    path: Option<PathBuf>,
}

impl RunningListener {
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Stops accepting (connections being served go on until their clients
    /// leave) and removes the socket file we created.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> io::Result<()> {
        let Some(t) = self.thread.take() else { return Ok(()) };
        self.stop.store(true, Ordering::SeqCst);
        // SAFETY: shutting down our own listening socket, kept open by
        // `self.listener`; Linux wakes a blocked accept() with EINVAL.
        unsafe { libc::shutdown(self.listener.sock.as_raw_fd(), libc::SHUT_RDWR) };
        t.join().unwrap_or_else(|_| Err(io::Error::other("accept thread panicked")))
    }

    /// Waits for the accept loop to end (it only ends on a fatal error).
    pub fn join(mut self) -> io::Result<()> {
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err(io::Error::other("accept thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for RunningListener {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::mock::MockBackend;
    use crate::server::ServerConfig;
    use std::io::{Read, Write};

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pcsc-proto-listener-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.join("s.comm")
    }

    #[test]
    fn bind_mode_stale_and_busy() {
        let p = tmp("bind");
        // Not a socket: never removed.
        std::fs::write(&p, b"precious").unwrap();
        assert!(matches!(Listener::bind(&p, ListenerConfig::default()), Err(ListenError::Io { what: "bind", .. })));
        assert_eq!(std::fs::read(&p).unwrap(), b"precious");
        std::fs::remove_file(&p).unwrap();
        // A stale socket (nobody listening) is replaced.
        drop(UnixListener::bind(&p).unwrap());
        let l = Listener::bind(&p, ListenerConfig::default()).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(Listener::bind(&p, ListenerConfig::default()), Err(ListenError::AlreadyRunning(_))));
        assert_eq!(l.path().as_deref(), Some(p.as_path()));
        drop(l);
        assert!(!p.exists());
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }

    #[test]
    fn serves_stops_and_caps_connections() {
        let p = tmp("cap");
        let server = Server::new(std::sync::Arc::new(MockBackend::with_card()), ServerConfig::default());
        let cfg = ListenerConfig { max_connections: 2, ..Default::default() };
        let running = Listener::bind(&p, cfg).unwrap().spawn(server.clone()).unwrap();
        let version = |s: &mut UnixStream| -> io::Result<Vec<u8>> {
            let mut req = Vec::new();
            for w in [12u32, 0x11, 4, 4, 0] {
                req.extend_from_slice(&w.to_ne_bytes());
            }
            s.write_all(&req)?;
            let mut b = vec![0u8; 12];
            s.read_exact(&mut b)?;
            Ok(b)
        };
        let mut a = UnixStream::connect(&p).unwrap();
        let mut b = UnixStream::connect(&p).unwrap();
        assert!(version(&mut a).is_ok());
        assert!(version(&mut b).is_ok());
        // The third is closed at once.
        let mut c = UnixStream::connect(&p).unwrap();
        assert!(version(&mut c).is_err());
        drop(a);
        // A slot frees when a client leaves.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mut d = UnixStream::connect(&p).unwrap();
            if version(&mut d).is_ok() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "slot never freed");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        running.stop().unwrap();
        assert!(!p.exists());
        assert!(UnixStream::connect(&p).is_err());
        drop(b);
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }

    #[test]
    fn peer_cred_is_ours() {
        let (a, _b) = UnixStream::pair().unwrap();
        let c = peer_cred(&a).unwrap();
        assert_eq!(c.uid, euid());
        assert_eq!(c.pid as u32, std::process::id());
    }
}
