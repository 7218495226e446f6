//! Server tests over the in-memory backend: raw-socket clients with byte-exact
//! expectations per version (`raw`), hostile clients (`hostile`), and our own
//! client engine at every version (`engine`).

mod engine;
mod hostile;
mod raw;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::listener::{Listener, ListenerConfig, RunningListener};
use super::mock::MockBackend;
use super::{Server, ServerConfig};
use crate::wire::header::{Command, Header};

pub(super) const READER: &str = "Mock Reader 00 00";
pub(super) const EMPTY_READER: &str = "Mock Reader 00 01";

/// A server with the mock backend on a temporary socket.
pub(super) struct Rig {
    pub server: Server<MockBackend>,
    pub mock: Arc<MockBackend>,
    pub path: PathBuf,
    _listener: RunningListener,
}

impl Rig {
    pub fn new() -> Rig {
        Self::with(ServerConfig::default())
    }

    pub fn with(cfg: ServerConfig) -> Rig {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pcsc-proto-server-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pcscd.comm");
        let mock = Arc::new(MockBackend::with_card());
        let server = Server::new(mock.clone(), cfg);
        let listener = Listener::bind(&path, ListenerConfig::default()).unwrap().spawn(server.clone()).unwrap();
        Rig { server, mock, path, _listener: listener }
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(&self.path)
    }

    /// Waits until no connection is left and the backend holds nothing.
    pub fn wait_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.server.connection_count() != 0 || self.mock.counts() != (0, 0) {
            assert!(
                Instant::now() < deadline,
                "not idle: {} connections, {:?}",
                self.server.connection_count(),
                self.mock.counts()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(d) = self.path.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

pub(super) fn words(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_ne_bytes()).collect()
}

pub(super) fn to_words(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4).map(|c| u32::from_ne_bytes(c.try_into().unwrap())).collect()
}

/// A raw client: bytes in, bytes out.
pub(super) struct Raw {
    pub s: UnixStream,
}

impl Raw {
    pub fn connect(path: &std::path::Path) -> Raw {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Raw { s }
    }

    pub fn send(&mut self, cmd: Command, body: &[u8]) {
        let mut v = Vec::new();
        Header::new(cmd, body.len()).emit(&mut v);
        v.extend_from_slice(body);
        self.s.write_all(&v).unwrap();
    }

    pub fn send_words(&mut self, cmd: Command, w: &[u32]) {
        self.send(cmd, &words(w));
    }

    pub fn read(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.s.read_exact(&mut b).unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
        b
    }

    pub fn read_words(&mut self, n: usize) -> Vec<u32> {
        to_words(&self.read(4 * n))
    }

    /// Asserts that nothing arrives within `ms`.
    pub fn nothing_for(&mut self, ms: u64) {
        self.s.set_read_timeout(Some(Duration::from_millis(ms))).unwrap();
        let mut b = [0u8; 64];
        match self.s.read(&mut b) {
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            Ok(0) => panic!("connection closed"),
            Ok(n) => panic!("unexpected {n} bytes: {:02X?}", &b[..n]),
            Err(e) => panic!("read error: {e}"),
        }
        self.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }

    /// Asserts that the server closes the connection (EOF or reset) soon.
    pub fn closed(&mut self) {
        let mut b = [0u8; 4096];
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) => panic!("expected the server to close the connection: {e}"),
            }
        }
    }

    /// `CMD_VERSION` 4:minor; returns the reply words.
    pub fn version(&mut self, major: u32, minor: u32) -> Vec<u32> {
        self.send_words(Command::VERSION, &[major, minor, 0]);
        self.read_words(3)
    }

    /// `SCARD_ESTABLISH_CONTEXT`: the hContext.
    pub fn establish(&mut self) -> u32 {
        self.send_words(Command::ESTABLISH_CONTEXT, &[0, 0, 0]);
        let r = self.read_words(3);
        assert_eq!(r[2], 0, "establish rv");
        assert_ne!(r[1], 0);
        assert!(r[1] <= 0x7FFF_FFFF);
        r[1]
    }

    /// `SCARD_CONNECT` with `rn`-byte names: (hCard, protocol, rv).
    pub fn connect_card(&mut self, h_context: u32, reader: &str, share: u32, rn: usize) -> (u32, u32, u32) {
        let mut body = words(&[h_context]);
        let mut name = reader.as_bytes().to_vec();
        name.resize(rn, 0);
        body.extend_from_slice(&name);
        body.extend(words(&[share, 3, 0, 0, 0]));
        self.send(Command::CONNECT, &body);
        let r = self.read(24 + rn);
        assert_eq!(&r[4..4 + reader.len()], reader.as_bytes(), "name echoed");
        let w = to_words(&r[4 + rn..]);
        (w[2], w[3], w[4])
    }

    /// A session up to an established context at `minor`.
    pub fn session(path: &std::path::Path, minor: u32) -> (Raw, u32) {
        let mut r = Raw::connect(path);
        assert_eq!(r.version(4, minor), [4, minor, 0]);
        let h = r.establish();
        (r, h)
    }
}

/// Compares byte strings, reporting the first difference (not megabytes of dump).
#[track_caller]
pub(super) fn same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        let g = &got[at.min(got.len())..(at + 16).min(got.len())];
        let w = &want[at.min(want.len())..(at + 16).min(want.len())];
        panic!(
            "{what}: lengths {} vs {}, first difference at {at}: got {g:02X?}, want {w:02X?}",
            got.len(),
            want.len()
        );
    }
}

/// Polls `f` until it holds (5 s at most).
pub(super) fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
