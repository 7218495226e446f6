//! vscard: the project's virtual smart card behind QEMU's `ccid-card-passthru` device.
//!
//! ```text
//! vscard --listen SOCK [--ctl PATH] [--qmp PATH] [--absent] [--log] [--once] [--atr HEX]
//!     run the card: listen on the Unix socket SOCK for QEMU, which connects to it as the client
//!     (`-chardev socket,id=ccid,path=SOCK -device ccid-card-passthru,chardev=ccid`)
//! vscard ctl PATH insert|remove|status|count|delay MS|qmp JSON|mark TEXT
//!     drive a running card through its control socket
//! vscard atr
//!     print the ATR
//! ```
//!
//! # Wire protocol (VSCard, as QEMU's passthru card speaks it)
//!
//! Every message is a 12-byte header of three big-endian u32 (type, reader id, payload length)
//! and the payload. Types: 1 Init (`"VSCD"`, u32 version 2, u32 capabilities), 2 Error (u32 code,
//! 0 = success: QEMU's acknowledgement), 3 ReaderAdd (reader name), 4 ReaderRemove, 5 ATR (card
//! inserted), 6 CardRemove, 7 APDU (command from the guest; our answer = response data + SW1 SW2).
//! On a new connection the card sends Init, waits for QEMU's Init, sends ReaderAdd, and once QEMU
//! acknowledges it, the ATR (if the card is present). QEMU uses reader id 0; the card sends
//! Init/ReaderAdd with the "undefined" id `FFFFFFFF` and everything else with 0.
//!
//! # The ATR
//!
//! QEMU 7.2's reader advertises T=0 only, and libccid refuses a card that offers only T=1, so the
//! card presents a T=0-only variant of [`pcsc_bridge_tests::card::ATR`]: [`ATR_T0`] = `3B 0A` + `"pcscbridge"`
//! (TS direct convention, T0 = `0A`: no interface bytes, so T=0 with default Fi/Di/N/WI, ten
//! historical bytes; no TCK, which ISO 7816-3 forbids when only T=0 is indicated). Everything
//! else is the project's card logic ([`Card::process`]); QEMU forwards APDUs unchanged, so the
//! card sees exactly what the host driver sent.
//!
//! # Logging (stdout, one line each, `[seconds]` since start)
//!
//! Every protocol message. APDUs: `apdu #N > 00 A4 04 00 +8` (header and the number of further
//! bytes) and `apdu #N < +16 90 00` (data length and SW); with `--log`, the full hex of both:
//! `apdu #N > 00 A4 04 00 07 A0 ...` / `apdu #N < 6F 0E ... 90 00`. A response longer than 376
//! bytes gets a warning line (QEMU 7.2 answers at most 374 data bytes per bulk-IN message).
//! `mark TEXT` on the control socket logs `=== TEXT`, so a test can cut the log into sections.
//!
//! # Control socket (`--ctl PATH`, Unix stream)
//!
//! One command per line, several per connection; the connection may also be a QEMU serial port
//! (`-chardev socket,id=ctl,path=PATH -serial chardev:ctl`), so a guest can remove and insert the
//! card by writing to its `/dev/ttyS1`. `insert` -> `ok` (sends the ATR), `remove` -> `ok` (sends
//! CardRemove), `status` -> `present` / `absent`, `count` -> the number of APDUs so far,
//! `delay MS` -> `ok` (the answer to the next APDU is held MS milliseconds, at most 60 000),
//! `mark TEXT` -> `ok`, anything else -> `err ...`.
//!
//! With `--qmp PATH` (QEMU's `-qmp unix:PATH,server=on,wait=off`), `qmp JSON` sends one QMP
//! command to QEMU and answers `ok REPLY` or `err REPLY` (QEMU's one-line JSON answer; events in
//! between are skipped). This lets a guest hot-plug and unplug USB devices through the channel it
//! already has (`{"execute":"device_del","arguments":{"id":"ccid0"}}`). The QMP connection is
//! opened, and its capabilities negotiated, on the first such command. Empty lines, CR and NUL bytes are ignored.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use pcsc_bridge_tests::card::Card;
use pcsc_bridge_tests::cli;
use pcsc_bridge_tests::vpcd::hex;

const USAGE: &str = "\
usage: vscard --listen SOCK [--ctl PATH] [--qmp PATH] [--absent] [--log] [--once] [--atr HEX]
       vscard ctl PATH insert|remove|status|count|delay MS|qmp JSON|mark TEXT
       vscard atr";

/// The T=0-only ATR: TS `3B`, T0 `0A` (no interface bytes, 10 historical bytes), `"pcscbridge"`.
pub const ATR_T0: [u8; 12] = [0x3B, 0x0A, b'p', b'c', b's', b'c', b'b', b'r', b'i', b'd', b'g', b'e'];

/// Largest response QEMU 7.2 delivers (384-byte bulk-IN message minus the 10-byte header).
const QEMU_MAX_RESPONSE: usize = 374;

/// The VSCard wire format.
mod vsc {
    use std::io::{self, Read};

    pub const HEADER_LEN: usize = 12;
    /// Largest payload accepted from the peer (an extended APDU with 64 KiB of data fits).
    pub const MAX_PAYLOAD: usize = 70_000;
    pub const MAGIC: [u8; 4] = *b"VSCD";
    pub const VERSION: u32 = 2;
    /// Reader id before QEMU assigned one.
    pub const UNDEFINED_READER: u32 = 0xFFFF_FFFF;
    /// The one reader QEMU's passthru card has.
    pub const READER: u32 = 0;

    /// Message type (open: unknown values round-trip).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Type(pub u32);

    impl Type {
        pub const INIT: Self = Self(1);
        pub const ERROR: Self = Self(2);
        pub const READER_ADD: Self = Self(3);
        pub const READER_REMOVE: Self = Self(4);
        pub const ATR: Self = Self(5);
        pub const CARD_REMOVE: Self = Self(6);
        pub const APDU: Self = Self(7);
        pub const FLUSH: Self = Self(8);
        pub const FLUSH_COMPLETE: Self = Self(9);

        pub fn name(self) -> String {
            match self.0 {
                1 => "Init".into(),
                2 => "Error".into(),
                3 => "ReaderAdd".into(),
                4 => "ReaderRemove".into(),
                5 => "ATR".into(),
                6 => "CardRemove".into(),
                7 => "APDU".into(),
                8 => "Flush".into(),
                9 => "FlushComplete".into(),
                n => format!("type {n}"),
            }
        }
    }

    /// Error codes (payload of [`Type::ERROR`]).
    pub fn error_name(code: u32) -> &'static str {
        match code {
            0 => "success",
            1 => "general error",
            2 => "cannot add more readers",
            3 => "card already inserted",
            _ => "unknown code",
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Msg {
        pub ty: Type,
        pub reader: u32,
        pub payload: Vec<u8>,
    }

    /// One message on the wire.
    pub fn encode(ty: Type, reader: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + payload.len());
        v.extend_from_slice(&ty.0.to_be_bytes());
        v.extend_from_slice(&reader.to_be_bytes());
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// Init payload: magic, version, one (empty) capability word.
    pub fn init_payload() -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&VERSION.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        v
    }

    /// Parse an Init payload: (version, capability words).
    pub fn parse_init(p: &[u8]) -> Result<(u32, Vec<u32>), String> {
        if p.len() < 8 {
            return Err(format!("Init payload of {} bytes (want >= 8)", p.len()));
        }
        if p[..4] != MAGIC {
            return Err(format!("bad magic {:02X?}", &p[..4]));
        }
        let version = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        let caps = p[8..].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect();
        Ok((version, caps))
    }

    fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Read one message; `Ok(None)` on end of stream at a message boundary.
    pub fn read_msg(r: &mut impl Read) -> io::Result<Option<Msg>> {
        let mut h = [0u8; HEADER_LEN];
        match read_full(r, &mut h)? {
            0 => return Ok(None),
            HEADER_LEN => {}
            n => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream ended inside a header ({n} of 12 bytes)"),
                ))
            }
        }
        let word = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let (ty, reader, len) = (Type(word(0)), word(4), word(8) as usize);
        if len > MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} with a payload of {len} bytes", ty.name()),
            ));
        }
        let mut payload = vec![0u8; len];
        if read_full(r, &mut payload)? != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream ended inside a {} payload", ty.name()),
            ));
        }
        Ok(Some(Msg { ty, reader, payload }))
    }
}

use vsc::Type;

static START: OnceLock<Instant> = OnceLock::new();
/// `--qmp PATH`, and the QMP connection once opened (one command at a time).
static QMP_PATH: OnceLock<PathBuf> = OnceLock::new();
static QMP: Mutex<Option<BufReader<UnixStream>>> = Mutex::new(None);

/// Next QMP message that is not an event (QEMU writes one JSON object per line).
fn qmp_answer(rd: &mut BufReader<UnixStream>) -> io::Result<String> {
    let mut line = String::new();
    loop {
        line.clear();
        if rd.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "QEMU closed the QMP socket"));
        }
        if !line.contains("\"event\"") && !line.trim().is_empty() {
            return Ok(line.trim().to_string());
        }
    }
}

/// Forwards one QMP command; `ok REPLY` / `err REPLY` for the control socket.
fn qmp_forward(cmd: &str) -> String {
    let Some(path) = QMP_PATH.get().filter(|p| !p.as_os_str().is_empty()) else {
        return "err no QMP socket (vscard --qmp PATH)".into();
    };
    let mut guard = QMP.lock().unwrap_or_else(|e| e.into_inner());
    let result = (|| -> io::Result<String> {
        if guard.is_none() {
            let c = UnixStream::connect(path)?;
            c.set_read_timeout(Some(std::time::Duration::from_secs(15)))?;
            let mut rd = BufReader::new(c);
            qmp_answer(&mut rd)?; // the greeting
            rd.get_mut().write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
            qmp_answer(&mut rd)?;
            *guard = Some(rd);
        }
        let rd = guard.as_mut().expect("opened above");
        rd.get_mut().write_all(format!("{}\n", cmd.trim()).as_bytes())?;
        qmp_answer(rd)
    })();
    match result {
        Ok(a) if a.contains("\"return\"") => format!("ok {a}"),
        Ok(a) => format!("err {a}"),
        Err(e) => {
            *guard = None;
            format!("err QMP {}: {e}", path.display())
        }
    }
}

fn log_line(s: &str) {
    let t = START.get_or_init(Instant::now).elapsed();
    let out = io::stdout();
    let mut o = out.lock();
    let _ = writeln!(o, "[{:4}.{:03}] {s}", t.as_secs(), t.subsec_millis());
    let _ = o.flush();
}

macro_rules! log {
    ($($a:tt)*) => { log_line(&format!($($a)*)) };
}

/// The card and its link to QEMU. One lock: APDU processing, insertion and removal are serialised.
struct State {
    present: bool,
    /// Write side of the live QEMU connection.
    conn: Option<UnixStream>,
    /// QEMU acknowledged our ReaderAdd on the live connection.
    reader_added: bool,
    card: Card,
    atr: Vec<u8>,
    full_log: bool,
    apdus: u64,
    /// `delay MS`: hold the answer to the next APDU this long (a slow card, so that a test can
    /// pull the reader while a command is in flight).
    delay_next: Option<std::time::Duration>,
}

type Shared = Arc<Mutex<State>>;

impl State {
    fn send(&mut self, ty: Type, reader: u32, payload: &[u8]) -> io::Result<()> {
        let Some(c) = self.conn.as_mut() else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "QEMU is not connected"));
        };
        c.write_all(&vsc::encode(ty, reader, payload))
    }

    fn send_atr(&mut self) {
        let atr = self.atr.clone();
        match self.send(Type::ATR, vsc::READER, &atr) {
            Ok(()) => log!("> ATR {}", hex(&atr)),
            Err(e) => log!("send ATR: {e}"),
        }
    }

    fn insert(&mut self) -> &'static str {
        if self.present {
            return "ok (already present)";
        }
        self.present = true;
        self.card.reset();
        log!("card inserted");
        if self.reader_added {
            self.send_atr();
        }
        "ok"
    }

    fn remove(&mut self) -> &'static str {
        if !self.present {
            return "ok (already absent)";
        }
        self.present = false;
        self.card.reset();
        log!("card removed");
        if self.reader_added {
            match self.send(Type::CARD_REMOVE, vsc::READER, &[]) {
                Ok(()) => log!("> CardRemove"),
                Err(e) => log!("send CardRemove: {e}"),
            }
        }
        "ok"
    }

    fn apdu(&mut self, cmd: &[u8]) {
        self.apdus += 1;
        let n = self.apdus;
        if self.full_log {
            log!("apdu #{n} > {}", hex(cmd));
        } else {
            let h = &cmd[..cmd.len().min(4)];
            log!("apdu #{n} > {} +{}", hex(h), cmd.len() - h.len());
        }
        if !self.present {
            // QEMU does not forward APDUs without a card; answer with an error if it ever does.
            log!("apdu #{n}: no card, answering Error(1)");
            let _ = self.send(Type::ERROR, vsc::READER, &1u32.to_be_bytes());
            return;
        }
        let mut out = Vec::with_capacity(300);
        self.card.process(cmd, &mut out);
        if self.full_log {
            log!("apdu #{n} < {}", hex(&out));
        } else {
            log!("apdu #{n} < +{} {}", out.len() - 2, hex(&out[out.len() - 2..]));
        }
        if out.len() - 2 > QEMU_MAX_RESPONSE {
            log!("apdu #{n}: warning: {} data bytes, more than QEMU 7.2 delivers ({QEMU_MAX_RESPONSE})", out.len() - 2);
        }
        if let Err(e) = self.send(Type::APDU, vsc::READER, &out) {
            log!("apdu #{n}: send response: {e}");
        }
    }
}

fn main() -> ExitCode {
    START.get_or_init(Instant::now);
    cli::main("vscard", USAGE, &ATR_T0, 1..=usize::MAX, run)
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let digits: String = s.chars().filter(|c| !matches!(c, ' ' | ':')).collect();
    if digits.len() & 1 == 1 {
        return None;
    }
    (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).ok()).collect()
}

fn run(args: &[String]) -> ExitCode {
    let mut listen: Option<PathBuf> = None;
    let mut ctl: Option<PathBuf> = None;
    let mut absent = false;
    let mut full_log = false;
    let mut once = false;
    let mut atr = ATR_T0.to_vec();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--listen" => listen = it.next().map(PathBuf::from),
            "--ctl" => ctl = it.next().map(PathBuf::from),
            "--qmp" => {
                let _ = QMP_PATH.set(it.next().map(PathBuf::from).unwrap_or_default());
            }
            "--absent" => absent = true,
            "--log" => full_log = true,
            "--once" => once = true,
            "--atr" => match it.next().and_then(|h| parse_hex(h)) {
                Some(v) if (2..=40).contains(&v.len()) => atr = v,
                _ => {
                    eprintln!("vscard: --atr needs 2 to 40 hex bytes");
                    return ExitCode::from(2);
                }
            },
            _ => return cli::usage_error("vscard", &format!("unknown argument {a:?}"), USAGE),
        }
    }
    let Some(listen) = listen else {
        return cli::usage_error("vscard", "--listen SOCK is required", USAGE);
    };
    cli::install_signals();

    let card_l = match cli::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vscard: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ctl_l = match &ctl {
        Some(p) => match cli::bind(p) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("vscard: {e}");
                let _ = std::fs::remove_file(&listen);
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let paths: Vec<&Path> = [Some(listen.as_path()), ctl.as_deref()].into_iter().flatten().collect();
    cli::remove_on_signal(&paths);

    let shared: Shared = Arc::new(Mutex::new(State {
        present: !absent,
        conn: None,
        reader_added: false,
        card: Card::new(),
        atr,
        full_log,
        apdus: 0,
        delay_next: None,
    }));
    {
        let st = shared.lock().unwrap();
        log!(
            "vscard: ATR {}, card {}, listening on {}{}",
            hex(&st.atr),
            if st.present { "present" } else { "absent" },
            listen.display(),
            ctl.as_ref().map(|p| format!(", control {}", p.display())).unwrap_or_default()
        );
    }
    if let Some(l) = ctl_l {
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                match conn {
                    Ok(c) => {
                        let s = s.clone();
                        std::thread::spawn(move || serve_ctl(c, &s));
                    }
                    Err(e) => log!("ctl accept: {e}"),
                }
            }
        });
    }
    for conn in card_l.incoming() {
        match conn {
            Ok(c) => {
                log!("QEMU connected");
                match serve_qemu(c, &shared) {
                    Ok(()) => log!("QEMU disconnected"),
                    Err(e) => log!("QEMU connection: {e}"),
                }
                let mut st = shared.lock().unwrap();
                st.conn = None;
                st.reader_added = false;
                drop(st);
                if once {
                    break;
                }
            }
            Err(e) => log!("accept: {e}"),
        }
    }
    cli::remove_sockets();
    ExitCode::SUCCESS
}

/// One QEMU connection: handshake, then answer APDUs until it closes.
fn serve_qemu(c: UnixStream, shared: &Shared) -> io::Result<()> {
    let mut rd = BufReader::new(c.try_clone()?);
    {
        let mut st = shared.lock().unwrap();
        st.conn = Some(c);
        st.reader_added = false;
        st.send(Type::INIT, vsc::UNDEFINED_READER, &vsc::init_payload())?;
        log!("> Init VSCD version {} (no capabilities)", vsc::VERSION);
    }
    let mut reader_add_sent = false;
    while let Some(m) = vsc::read_msg(&mut rd)? {
        let mut st = shared.lock().unwrap();
        match m.ty {
            Type::INIT => {
                match vsc::parse_init(&m.payload) {
                    Ok((v, caps)) => log!("< Init version {v} capabilities {caps:08X?}"),
                    Err(e) => log!("< Init, malformed: {e}"),
                }
                if !reader_add_sent {
                    reader_add_sent = true;
                    st.send(Type::READER_ADD, vsc::UNDEFINED_READER, b"pcsc-bridge vscard")?;
                    log!("> ReaderAdd \"pcsc-bridge vscard\"");
                }
            }
            Type::ERROR => {
                let code = match m.payload[..] {
                    [a, b, c, d, ..] => u32::from_be_bytes([a, b, c, d]),
                    _ => u32::MAX,
                };
                log!("< Error {code} ({}), reader {}", vsc::error_name(code), m.reader);
                if reader_add_sent && !st.reader_added {
                    if code == 0 {
                        st.reader_added = true;
                        log!("reader added");
                        if st.present {
                            st.send_atr();
                        }
                    } else {
                        log!("ReaderAdd refused");
                    }
                }
            }
            Type::APDU => {
                if let Some(d) = st.delay_next.take() {
                    log!("holding the answer to the next APDU for {} ms", d.as_millis());
                    drop(st);
                    std::thread::sleep(d);
                    st = shared.lock().unwrap();
                }
                st.apdu(&m.payload)
            }
            Type::READER_REMOVE | Type::CARD_REMOVE | Type::ATR => {
                log!("< {} reader {} (unexpected from QEMU, ignored)", m.ty.name(), m.reader)
            }
            Type::FLUSH => {
                log!("< Flush");
                st.send(Type::FLUSH_COMPLETE, vsc::READER, &[])?;
            }
            ty => log!("< {} reader {} payload {} (ignored)", ty.name(), m.reader, hex(&m.payload)),
        }
    }
    Ok(())
}

fn serve_ctl(c: UnixStream, shared: &Shared) {
    let Ok(mut w) = c.try_clone() else { return };
    let mut rd = BufReader::new(c);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match rd.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&buf);
        let line = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        if line.is_empty() {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("qmp ") {
            // Not under the card's lock: QEMU may need the card while it unplugs the reader.
            let reply = qmp_forward(cmd);
            log!("ctl {line} -> {reply}");
            if w.write_all(format!("{reply}\n").as_bytes()).is_err() {
                return;
            }
            continue;
        }
        let mut st = shared.lock().unwrap();
        let reply = match line.split_once(' ').unwrap_or((line, "")) {
            ("insert", _) => st.insert().to_string(),
            ("remove", _) => st.remove().to_string(),
            ("status", _) => if st.present { "present" } else { "absent" }.to_string(),
            ("count", _) => st.apdus.to_string(),
            ("delay", ms) => match ms.trim().parse::<u64>() {
                Ok(ms) if ms <= 60_000 => {
                    st.delay_next = Some(std::time::Duration::from_millis(ms));
                    "ok".to_string()
                }
                _ => format!("err delay needs milliseconds (0..=60000), got {ms:?}"),
            },
            ("mark", text) => {
                log!("=== {text}");
                "ok".to_string()
            }
            _ => format!("err unknown command {line:?} (insert|remove|status|count|delay MS|qmp JSON|mark TEXT)"),
        };
        drop(st);
        if !line.starts_with("mark") {
            log!("ctl {line} -> {reply}");
        }
        if w.write_all(format!("{reply}\n").as_bytes()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcsc_bridge_tests::card;

    #[test]
    fn atr_is_t0_only() {
        assert_eq!(ATR_T0[0], 0x3B);
        assert_eq!(ATR_T0[1] & 0xF0, 0, "no interface bytes");
        assert_eq!((ATR_T0[1] & 0x0F) as usize, ATR_T0.len() - 2);
        assert_eq!(&ATR_T0[2..], &card::ATR[4..14], "same historical bytes as card::ATR");
    }

    #[test]
    fn codec_round_trip() {
        let m = vsc::encode(Type::APDU, 0, &[0x90, 0x00]);
        assert_eq!(m, [0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 2, 0x90, 0]);
        let got = vsc::read_msg(&mut &m[..]).unwrap().unwrap();
        assert_eq!((got.ty, got.reader, got.payload), (Type::APDU, 0, vec![0x90, 0]));
        assert!(vsc::read_msg(&mut &[][..]).unwrap().is_none());
        assert!(vsc::read_msg(&mut &m[..5]).is_err());
        assert!(vsc::read_msg(&mut &m[..13]).is_err());
        let huge = [0, 0, 0, 7, 0, 0, 0, 0, 0x7F, 0, 0, 0];
        assert!(vsc::read_msg(&mut &huge[..]).is_err());
        let init = vsc::init_payload();
        assert_eq!(init, b"VSCD\0\0\0\x02\0\0\0\0");
        assert_eq!(vsc::parse_init(&init).unwrap(), (2, vec![0]));
        assert!(vsc::parse_init(b"VSCX\0\0\0\x02").is_err());
        assert_eq!(parse_hex("3B:0A 70"), Some(vec![0x3B, 0x0A, 0x70]));
        assert_eq!(parse_hex("3B0"), None);
    }

    /// A fake QEMU: handshake, an APDU, removal and insertion through the state.
    #[test]
    fn fake_qemu_session() {
        let (ours, mut qemu) = UnixStream::pair().unwrap();
        let shared: Shared = Arc::new(Mutex::new(State {
            present: true,
            conn: None,
            reader_added: false,
            card: Card::new(),
            atr: ATR_T0.to_vec(),
            full_log: true,
            apdus: 0,
            delay_next: None,
        }));
        let s2 = shared.clone();
        let t = std::thread::spawn(move || serve_qemu(ours, &s2));
        let next = |q: &mut UnixStream| vsc::read_msg(q).unwrap().unwrap();
        let m = next(&mut qemu);
        assert_eq!((m.ty, m.payload), (Type::INIT, vsc::init_payload()));
        qemu.write_all(&vsc::encode(Type::INIT, 0, &vsc::init_payload())).unwrap();
        let m = next(&mut qemu);
        assert_eq!(m.ty, Type::READER_ADD);
        qemu.write_all(&vsc::encode(Type::ERROR, 0, &[0; 4])).unwrap();
        let m = next(&mut qemu);
        assert_eq!((m.ty, m.reader, &m.payload[..]), (Type::ATR, 0, &ATR_T0[..]));
        qemu.write_all(&vsc::encode(Type::ERROR, 0, &[0; 4])).unwrap();
        let mut sel = vec![0, 0xA4, 4, 0, 7];
        sel.extend_from_slice(&card::AID);
        qemu.write_all(&vsc::encode(Type::APDU, 0, &sel)).unwrap();
        let m = next(&mut qemu);
        let mut want = card::FCI.to_vec();
        want.extend_from_slice(&[0x90, 0]);
        assert_eq!((m.ty, m.payload), (Type::APDU, want));
        assert_eq!(shared.lock().unwrap().remove(), "ok");
        assert_eq!(next(&mut qemu).ty, Type::CARD_REMOVE);
        assert_eq!(shared.lock().unwrap().remove(), "ok (already absent)");
        assert_eq!(shared.lock().unwrap().insert(), "ok");
        assert_eq!(next(&mut qemu).payload, ATR_T0);
        drop(qemu);
        t.join().unwrap().unwrap();
        assert_eq!(shared.lock().unwrap().apdus, 1);
    }
}
