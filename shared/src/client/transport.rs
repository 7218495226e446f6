//! One Unix stream connection to the daemon: whole-message sends with
//! `MSG_NOSIGNAL` (never SIGPIPE inside someone else's process), exact reads, and
//! waits that a timeout or a cancel file descriptor can end.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::Rv;
use crate::wire::header::{Command, Header};

/// Why a transport operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// The socket could not be reached (no daemon).
    Unreachable,
    /// The peer closed the connection.
    Closed,
    /// The peer reset the connection (polkit refusal, or closed with unread input).
    Reset,
    /// Any other I/O error.
    Io(i32),
}

impl TransportError {
    /// The code upstream's client reports for this failure.
    pub fn rv(self) -> Rv {
        match self {
            TransportError::Unreachable => Rv::E_NO_SERVICE,
            TransportError::Closed => Rv::F_COMM_ERROR,
            TransportError::Reset => Rv::F_COMM_ERROR,
            TransportError::Io(_) => Rv::F_COMM_ERROR,
        }
    }

    /// Whether the daemon went away (worth a reconnect).
    pub fn is_disconnect(self) -> bool {
        !matches!(self, TransportError::Io(libc::EINVAL))
    }

    fn from_io(e: &io::Error) -> TransportError {
        match e.raw_os_error() {
            Some(libc::ECONNRESET) => TransportError::Reset,
            Some(libc::EPIPE) | Some(libc::ENOTCONN) => TransportError::Closed,
            Some(c) => TransportError::Io(c),
            None => TransportError::Io(0),
        }
    }
}

/// What ended a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    Readable,
    TimedOut,
    Cancelled,
}

/// A connection to the daemon.
#[derive(Debug)]
pub struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Received bytes not consumed yet: a reply's struct and data arrive in one
    /// `recv`, and so do pipelined replies.
    rbuf: Vec<u8>,
    rpos: usize,
}

/// Size of the receive buffer; larger reads go straight to their destination.
const RBUF: usize = 4096;

impl Conn {
    /// Connects (close-on-exec, as std does by default).
    pub fn connect(path: &Path) -> Result<Conn, TransportError> {
        match UnixStream::connect(path) {
            Ok(stream) => Ok(Conn { stream, buf: Vec::with_capacity(512), rbuf: Vec::new(), rpos: 0 }),
            Err(_) => Err(TransportError::Unreachable),
        }
    }

    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Sends one request: header, fixed struct and trailing data in one `send`.
    pub fn request(&mut self, command: Command, body: &[u8], data: &[u8]) -> Result<(), TransportError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        Header::new(command, body.len()).emit(&mut buf);
        buf.extend_from_slice(body);
        buf.extend_from_slice(data);
        let r = self.send_all(&buf);
        self.buf = buf;
        r
    }

    /// Sends bytes already framed by the caller (several requests pipelined).
    pub fn send_all(&mut self, mut b: &[u8]) -> Result<(), TransportError> {
        while !b.is_empty() {
            // SAFETY: b is a valid slice; MSG_NOSIGNAL avoids SIGPIPE.
            let n = unsafe { libc::send(self.fd(), b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(TransportError::from_io(&e));
            }
            b = &b[n as usize..];
        }
        Ok(())
    }

    /// Reads exactly `out.len()` bytes, blocking.
    pub fn read_exact(&mut self, out: &mut [u8]) -> Result<(), TransportError> {
        let mut got = 0;
        while got < out.len() {
            if self.rpos < self.rbuf.len() {
                let n = (out.len() - got).min(self.rbuf.len() - self.rpos);
                out[got..got + n].copy_from_slice(&self.rbuf[self.rpos..self.rpos + n]);
                self.rpos += n;
                got += n;
                continue;
            }
            let direct = out.len() - got >= RBUF;
            if !direct {
                self.rbuf.resize(RBUF, 0);
                self.rpos = 0;
            }
            let dst: &mut [u8] = if direct { &mut out[got..] } else { &mut self.rbuf[..] };
            let fd = self.stream.as_raw_fd();
            // Wait in poll(), then read: measurably faster here than sleeping inside a blocking
            // recv() on the Unix socket (scripts/bench.sh: begin+end transaction 0.89-0.93 of
            // libpcsclite instead of 1.02-1.04, transmit 0.87-0.90 instead of 0.90-0.92). The
            // result does not matter: recv() below blocks if nothing came (EINTR: poll again).
            let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, -1) };
            // SAFETY: the destination range is a valid mutable slice.
            let n = unsafe { libc::recv(fd, dst.as_mut_ptr().cast(), dst.len(), 0) };
            if n <= 0 {
                if !direct {
                    self.rbuf.clear();
                }
                if n == 0 {
                    return Err(TransportError::Closed);
                }
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(TransportError::from_io(&e));
            }
            if direct {
                got += n as usize;
            } else {
                self.rbuf.truncate(n as usize);
            }
        }
        Ok(())
    }

    /// Whether received bytes are waiting in the buffer.
    pub fn has_buffered(&self) -> bool {
        self.rpos < self.rbuf.len()
    }

    pub fn read_vec(&mut self, n: usize) -> Result<Vec<u8>, TransportError> {
        let mut v = vec![0u8; n];
        self.read_exact(&mut v)?;
        Ok(v)
    }

    /// Reads and discards `n` bytes.
    pub fn skip(&mut self, mut n: usize) -> Result<(), TransportError> {
        let mut scratch = [0u8; 1024];
        while n > 0 {
            let k = n.min(scratch.len());
            self.read_exact(&mut scratch[..k])?;
            n -= k;
        }
        Ok(())
    }

    /// Waits until the connection is readable (or closed), the deadline passes, or
    /// `cancel_fd` becomes readable.
    pub fn wait_readable(
        &self,
        deadline: Option<Instant>,
        cancel_fd: Option<RawFd>,
    ) -> Result<WaitOutcome, TransportError> {
        if self.has_buffered() {
            return Ok(WaitOutcome::Readable);
        }
        loop {
            let timeout_ms: i32 = match deadline {
                None => -1,
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(WaitOutcome::TimedOut);
                    }
                    let left = d - now;
                    // Round up so that we never wake before the deadline.
                    (left.as_millis() + u128::from(!left.subsec_nanos().is_multiple_of(1_000_000)))
                        .min(i32::MAX as u128) as i32
                }
            };
            let mut fds = [
                libc::pollfd { fd: self.fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: cancel_fd.unwrap_or(-1), events: libc::POLLIN, revents: 0 },
            ];
            let nfds = if cancel_fd.is_some() { 2 } else { 1 };
            // SAFETY: fds is a valid array of nfds entries.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout_ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(TransportError::from_io(&e));
            }
            if nfds == 2 && fds[1].revents != 0 {
                return Ok(WaitOutcome::Cancelled);
            }
            if fds[0].revents != 0 {
                return Ok(WaitOutcome::Readable);
            }
            if r == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(WaitOutcome::TimedOut);
            }
        }
    }

    /// Whether `n` more bytes arrive within `within` (used for layout detection).
    pub fn readable_within(&self, within: Duration) -> Result<bool, TransportError> {
        Ok(self.wait_readable(Some(Instant::now() + within), None)? == WaitOutcome::Readable)
    }
}
