//! Transport between the virtual card ([`crate::card::Card`]) and vsmartcard-vpcd.
//!
//! vpcd (the pcscd driver `libifdvpcd.so`) listens on TCP `PORT`; the card connects to it as a
//! client. Every message either way is a 2-byte big-endian length then the payload. A 1-byte
//! payload from vpcd is a control code (0 power off, 1 power on, 2 reset, 4 get ATR: answered with
//! the ATR); anything longer is a command APDU, answered with the response APDU. Closing the TCP
//! connection is a card removal as pcscd sees it; connecting again is an insertion.
//!
//! [`spawn`] runs the card in a thread that keeps a connection open while the card is "inserted"
//! (retrying every 50 ms while vpcd does not listen, and reconnecting when the connection drops,
//! e.g. when pcscd restarts). [`CardHandle::insert`] / [`CardHandle::remove`] flip that state.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::card::{parse, Card, ATR};

/// Retry interval while vpcd does not accept connections.
pub const RETRY: Duration = Duration::from_millis(50);

#[derive(Default)]
struct State {
    inserted: bool,
    /// A clone of the live connection (to shut it down on removal).
    conn: Option<TcpStream>,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

/// Control of a card thread started by [`spawn`].
#[derive(Clone)]
pub struct CardHandle {
    shared: Arc<Shared>,
}

/// Options of the card thread.
#[derive(Debug, Clone)]
pub struct Options {
    pub port: u16,
    pub inserted: bool,
    /// Log every APDU header (never data) and control message to stderr.
    pub log: bool,
}

/// Start the card thread.
pub fn spawn(opts: Options) -> CardHandle {
    let shared =
        Arc::new(Shared { state: Mutex::new(State { inserted: opts.inserted, conn: None }), cv: Condvar::new() });
    let s2 = shared.clone();
    thread::Builder::new().name("vcard".into()).spawn(move || run(s2, opts)).expect("spawn card thread");
    CardHandle { shared }
}

impl CardHandle {
    /// Whether the card is meant to be inserted.
    pub fn present(&self) -> bool {
        self.shared.state.lock().unwrap().inserted
    }

    /// Whether a TCP connection to vpcd is up.
    pub fn connected(&self) -> bool {
        self.shared.state.lock().unwrap().conn.is_some()
    }

    /// Insert the card; waits up to `wait` for the connection to vpcd (returns whether it is up).
    pub fn insert(&self, wait: Duration) -> bool {
        let mut st = self.shared.state.lock().unwrap();
        st.inserted = true;
        self.shared.cv.notify_all();
        let deadline = Instant::now() + wait;
        while st.conn.is_none() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self.shared.cv.wait_timeout(st, deadline - now).unwrap().0;
        }
        true
    }

    /// Remove the card: close the connection to vpcd; waits up to `wait` for the card thread to
    /// notice (returns whether the connection is down).
    pub fn remove(&self, wait: Duration) -> bool {
        let mut st = self.shared.state.lock().unwrap();
        st.inserted = false;
        if let Some(c) = &st.conn {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.shared.cv.notify_all();
        let deadline = Instant::now() + wait;
        while st.conn.is_some() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self.shared.cv.wait_timeout(st, deadline - now).unwrap().0;
        }
        true
    }
}

fn run(shared: Arc<Shared>, opts: Options) {
    let mut card = Card::new();
    let mut io = Buffers::new();
    let mut refused_logged = false;
    loop {
        {
            let mut st = shared.state.lock().unwrap();
            while !st.inserted {
                st = shared.cv.wait(st).unwrap();
            }
        }
        let stream = match TcpStream::connect(("127.0.0.1", opts.port)) {
            Ok(s) => s,
            Err(e) => {
                if !refused_logged {
                    eprintln!("vcard: connect 127.0.0.1:{}: {e} (retrying every 50 ms)", opts.port);
                    refused_logged = true;
                }
                thread::sleep(RETRY);
                continue;
            }
        };
        refused_logged = false;
        let _ = stream.set_nodelay(true);
        {
            let mut st = shared.state.lock().unwrap();
            if !st.inserted {
                continue; // removed while connecting
            }
            match stream.try_clone() {
                Ok(c) => st.conn = Some(c),
                Err(e) => {
                    eprintln!("vcard: try_clone: {e}");
                    drop(st);
                    thread::sleep(RETRY);
                    continue;
                }
            }
            shared.cv.notify_all();
        }
        eprintln!("vcard: connected to vpcd on 127.0.0.1:{}", opts.port);
        card.reset();
        let res = serve(stream, &mut card, &mut io, opts.log);
        let still_inserted = {
            let mut st = shared.state.lock().unwrap();
            st.conn = None;
            shared.cv.notify_all();
            st.inserted
        };
        match res {
            Ok(()) => eprintln!("vcard: vpcd closed the connection"),
            Err(e) if !still_inserted => eprintln!("vcard: removed ({e})"),
            Err(e) => eprintln!("vcard: connection lost: {e}"),
        }
        if still_inserted {
            thread::sleep(RETRY);
        }
    }
}

/// Reusable I/O buffers (no allocation per APDU).
struct Buffers {
    input: Vec<u8>,
    resp: Vec<u8>,
    frame: Vec<u8>,
}

impl Buffers {
    fn new() -> Self {
        Buffers { input: vec![0u8; 65535], resp: Vec::with_capacity(65536 + 2), frame: Vec::with_capacity(65536 + 4) }
    }
}

/// Serve one connection until EOF (Ok) or an error.
fn serve(mut s: TcpStream, card: &mut Card, b: &mut Buffers, log: bool) -> io::Result<()> {
    let mut hdr = [0u8; 2];
    loop {
        quickack(&s);
        match s.read_exact(&mut hdr) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let n = u16::from_be_bytes(hdr) as usize;
        quickack(&s);
        s.read_exact(&mut b.input[..n])?;
        let msg = &b.input[..n];
        if n == 1 {
            if log {
                let what = match msg[0] {
                    0 => "power off",
                    1 => "power on",
                    2 => "reset",
                    4 => "get ATR",
                    _ => "unknown",
                };
                eprintln!("vcard: ctrl {:02X} ({what})", msg[0]);
            }
            match msg[0] {
                0..=2 => card.reset(),
                4 => {
                    b.frame.clear();
                    b.frame.extend_from_slice(&(ATR.len() as u16).to_be_bytes());
                    b.frame.extend_from_slice(&ATR);
                    s.write_all(&b.frame)?;
                }
                _ => {}
            }
            continue;
        }
        if n == 0 {
            continue;
        }
        card.process(msg, &mut b.resp);
        if b.resp.len() > 0xFFFF {
            // Cannot be framed (only an echo/pattern of 65534+ bytes); report an error instead.
            b.resp.clear();
            b.resp.extend_from_slice(&[0x6F, 0x00]);
        }
        if log {
            log_apdu(msg, &b.resp);
        }
        b.frame.clear();
        b.frame.extend_from_slice(&(b.resp.len() as u16).to_be_bytes());
        b.frame.extend_from_slice(&b.resp);
        s.write_all(&b.frame)?;
    }
}

/// vpcd writes the 2-byte length and the payload with two `send` calls and without TCP_NODELAY:
/// with Nagle on its side and delayed ACKs on ours every exchange would stall for ~40 ms. Asking
/// for an immediate ACK (TCP_QUICKACK, which the kernel clears again by itself) before each read
/// avoids that.
fn quickack(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Header-only log line: never the command or response data (PINs must not be logged).
fn log_apdu(cmd: &[u8], resp: &[u8]) {
    let sw = &resp[resp.len() - 2..];
    match parse(cmd) {
        Some(a) => eprintln!(
            "vcard: apdu {:02X} {:02X} {:02X} {:02X} case {} Lc={} Ne={} -> {} bytes SW {:02X}{:02X}",
            a.cla,
            a.ins,
            a.p1,
            a.p2,
            a.case(),
            a.data.len(),
            a.ne.map_or_else(|| "-".to_string(), |n| n.to_string()),
            resp.len() - 2,
            sw[0],
            sw[1]
        ),
        None => eprintln!(
            "vcard: apdu (malformed, {} bytes{}) -> SW {:02X}{:02X}",
            cmd.len(),
            if cmd.len() >= 4 {
                format!(", header {:02X} {:02X} {:02X} {:02X}", cmd[0], cmd[1], cmd[2], cmd[3])
            } else {
                String::new()
            },
            sw[0],
            sw[1]
        ),
    }
}

/// Format bytes as upper-case hex separated by spaces.
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{x:02X}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn send(s: &mut TcpStream, p: &[u8]) {
        let mut f = (p.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(p);
        s.write_all(&f).unwrap();
    }
    fn recv(s: &mut TcpStream) -> Vec<u8> {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).unwrap();
        let mut v = vec![0u8; u16::from_be_bytes(h) as usize];
        s.read_exact(&mut v).unwrap();
        v
    }

    /// A fake vpcd: accept the card, get the ATR, exchange APDUs, remove and insert.
    #[test]
    fn fake_vpcd_round_trip() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = spawn(Options { port, inserted: true, log: false });
        let (mut s, _) = l.accept().unwrap();
        assert!(h.insert(Duration::from_secs(2)));
        send(&mut s, &[1]);
        send(&mut s, &[4]);
        assert_eq!(recv(&mut s), ATR);
        send(&mut s, &[0, 0xB0, 0, 0, 0, 0x10, 0]);
        let r = recv(&mut s);
        assert_eq!(r.len(), 4098);
        assert_eq!(&r[4096..], &[0x90, 0]);
        assert!(h.remove(Duration::from_secs(2)));
        assert!(!h.present());
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).unwrap(), 0); // EOF = removal
        assert!(h.insert(Duration::from_secs(2)));
        let (mut s2, _) = l.accept().unwrap();
        send(&mut s2, &[4]);
        assert_eq!(recv(&mut s2), ATR);
        // vpcd drops the connection: the card reconnects by itself
        drop(s2);
        let (mut s3, _) = l.accept().unwrap();
        send(&mut s3, &[0x80, 0x01, 0, 0, 2, 0xAB, 0xCD]);
        assert_eq!(recv(&mut s3), [0xAB, 0xCD, 0x90, 0x00]);
    }

    #[test]
    fn hex_format() {
        assert_eq!(hex(&[0x3B, 0x0A]), "3B 0A");
        assert_eq!(hex(&[]), "");
    }
}
