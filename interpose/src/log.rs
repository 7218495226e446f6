//! Logging: off unless `PCSC_BRIDGE_LOG` is set, set up lazily on the first PC/SC
//! call, synchronous (no thread, no guard), never to stdout.
//!
//! * `PCSC_BRIDGE_LOG=debug` (or a `tracing-subscriber` `Targets` filter such
//!   as `info,pcsc_proto=trace`): one line per call with its result; `trace` adds
//!   APDU headers (CLA INS P1 P2, Lc, Le) and status words.
//! * `PCSC_BRIDGE_LOG_FILE=/path`: append to that file instead of stderr.
//! * `PCSC_BRIDGE_LOG_APDU=1`: also log APDU data at trace level, except the data
//!   of PIN-bearing commands (VERIFY, CHANGE REFERENCE DATA, RESET RETRY
//!   COUNTER), which is never logged. `SCardControl` data is never logged.
//!
//! In secure-execution processes (set-uid, set-gid, file capabilities) the
//! environment is ignored and nothing is logged.

use std::fmt::{self, Write as _};
use std::io;
use std::os::fd::RawFd;
use std::sync::OnceLock;

use pcsc_proto::client::config::secure_getenv;

/// What was decided at set-up.
#[derive(Debug, Clone, Copy, Default)]
struct LogState {
    /// `PCSC_BRIDGE_LOG_APDU=1`: APDU data (never PIN data) may be logged.
    apdu_data: bool,
}

static STATE: OnceLock<LogState> = OnceLock::new();

/// Sets logging up once per process; cheap after the first call.
pub fn init() {
    STATE.get_or_init(setup);
}

/// Whether APDU data may be logged (besides headers).
pub fn apdu_data_enabled() -> bool {
    STATE.get().is_some_and(|s| s.apdu_data)
}

fn setup() -> LogState {
    let Some(spec) = secure_getenv("PCSC_BRIDGE_LOG") else { return LogState::default() };
    let spec = spec.to_string_lossy().trim().to_string();
    if spec.is_empty() || spec == "0" || spec.eq_ignore_ascii_case("off") {
        return LogState::default();
    }
    let spec = if spec == "1" || spec.eq_ignore_ascii_case("true") { "debug".to_string() } else { spec };
    let writer = match secure_getenv("PCSC_BRIDGE_LOG_FILE") {
        Some(path) if !path.is_empty() => match open_append(&path) {
            Some(fd) => FdWriter(fd),
            None => FdWriter(libc::STDERR_FILENO),
        },
        _ => FdWriter(libc::STDERR_FILENO),
    };
    use tracing_subscriber::layer::SubscriberExt as _;
    let filter: tracing_subscriber::filter::Targets =
        spec.parse().unwrap_or_else(|_| tracing_subscriber::filter::Targets::new().with_default(tracing::Level::DEBUG));
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(writer)
        .with_thread_ids(true)
        .with_max_level(tracing::Level::TRACE)
        .finish()
        .with(filter);
    // An application may have installed its own global subscriber in *its* copy
    // of tracing; ours is a separate copy, so this normally succeeds.
    let _ = tracing::subscriber::set_global_default(subscriber);
    let apdu_data = secure_getenv("PCSC_BRIDGE_LOG_APDU").is_some_and(|v| v == "1");
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    tracing::info!(pid, apdu_data, "pcsc-bridge {} logging", env!("CARGO_PKG_VERSION"));
    LogState { apdu_data }
}

fn open_append(path: &std::ffi::OsStr) -> Option<RawFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_bytes()).ok()?;
    // SAFETY: c is a NUL-terminated path; flags and mode are plain integers.
    let fd = unsafe {
        libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC, 0o600 as libc::c_uint)
    };
    (fd >= 0).then_some(fd)
}

/// Writes straight to a file descriptor: no lock (a lock held by another thread
/// at `fork()` would hang the child), one `write(2)` per formatted event.
#[derive(Debug, Clone, Copy)]
struct FdWriter(RawFd);

impl io::Write for FdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: buf is a valid slice; the descriptor stays open for the
            // life of the process (stderr, or our O_APPEND file never closed).
            let n = unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for FdWriter {
    type Writer = FdWriter;
    fn make_writer(&'a self) -> FdWriter {
        *self
    }
}

// ---------------------------------------------------------------- APDUs

/// Whether an instruction byte carries a PIN or other reference data: VERIFY
/// (0x20/0x21), CHANGE REFERENCE DATA (0x24/0x25), RESET RETRY COUNTER
/// (0x2C/0x2D). Their data is never logged.
pub fn is_pin_ins(ins: u8) -> bool {
    matches!(ins, 0x20 | 0x21 | 0x24 | 0x25 | 0x2C | 0x2D)
}

/// The parts of a command APDU that may be logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApduHeader {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    /// Command data length (Lc), 0 when absent.
    pub lc: usize,
    /// Expected response length (Ne), when present (256 / 65536 for a 0 Le).
    pub le: Option<usize>,
    /// Offset of the command data in the APDU.
    pub data_offset: usize,
    /// Whether the bytes form a well-formed short or extended APDU.
    pub well_formed: bool,
}

/// Parses the header and lengths of a command APDU (ISO 7816-4 cases 1-4, short
/// and extended). Never panics.
pub fn parse_apdu(cmd: &[u8]) -> Option<ApduHeader> {
    if cmd.len() < 4 {
        return None;
    }
    let mut h = ApduHeader {
        cla: cmd[0],
        ins: cmd[1],
        p1: cmd[2],
        p2: cmd[3],
        lc: 0,
        le: None,
        data_offset: 4,
        well_formed: true,
    };
    let body = &cmd[4..];
    let short_le = |b: u8| if b == 0 { 256 } else { b as usize };
    let ext_le = |hi: u8, lo: u8| match (hi as usize) << 8 | lo as usize {
        0 => 65536,
        n => n,
    };
    match body.len() {
        0 => {}
        1 => h.le = Some(short_le(body[0])),
        _ if body[0] != 0 => {
            let lc = body[0] as usize;
            h.lc = lc;
            h.data_offset = 5;
            match body.len() - 1 {
                n if n == lc => {}
                n if n == lc + 1 => h.le = Some(short_le(body[1 + lc])),
                _ => h.well_formed = false,
            }
        }
        3 => h.le = Some(ext_le(body[1], body[2])),
        n if n >= 3 => {
            let lc = (body[1] as usize) << 8 | body[2] as usize;
            h.lc = lc;
            h.data_offset = 7;
            match n - 3 {
                m if m == lc => {}
                m if m == lc + 2 => h.le = Some(ext_le(body[3 + lc], body[4 + lc])),
                _ => h.well_formed = false,
            }
        }
        _ => h.well_formed = false,
    }
    if !h.well_formed {
        h.lc = 0;
        h.le = None;
        h.data_offset = cmd.len();
    }
    Some(h)
}

/// Whether the data of this command may ever be logged.
pub fn command_data_loggable(cmd: &[u8]) -> bool {
    match parse_apdu(cmd) {
        Some(h) => !is_pin_ins(h.ins),
        // Too short to have data.
        None => true,
    }
}

/// A loggable description of a command APDU: header and lengths, plus the data
/// when `with_data` and the command carries no PIN. Never contains PIN bytes.
pub struct CommandSummary<'a> {
    cmd: &'a [u8],
    with_data: bool,
}

impl<'a> CommandSummary<'a> {
    pub fn new(cmd: &'a [u8], with_data: bool) -> Self {
        CommandSummary { cmd, with_data }
    }
}

impl fmt::Display for CommandSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(h) = parse_apdu(self.cmd) else {
            return write!(f, "len={} (not an APDU)", self.cmd.len());
        };
        write!(f, "CLA={:02X} INS={:02X} P1={:02X} P2={:02X}", h.cla, h.ins, h.p1, h.p2)?;
        if !h.well_formed {
            return write!(f, " len={} (malformed)", self.cmd.len());
        }
        write!(f, " Lc={}", h.lc)?;
        match h.le {
            Some(le) => write!(f, " Le={le}")?,
            None => f.write_str(" Le=-")?,
        }
        if h.lc > 0 {
            if is_pin_ins(h.ins) {
                f.write_str(" data=<redacted>")?;
            } else if self.with_data {
                f.write_str(" data=")?;
                hex(f, &self.cmd[h.data_offset..h.data_offset + h.lc])?;
            }
        }
        Ok(())
    }
}

/// A loggable description of a response APDU: length and SW1SW2, plus the data
/// when `with_data` (callers pass `false` for replies to PIN commands).
pub struct ResponseSummary<'a> {
    resp: &'a [u8],
    with_data: bool,
}

impl<'a> ResponseSummary<'a> {
    pub fn new(resp: &'a [u8], with_data: bool) -> Self {
        ResponseSummary { resp, with_data }
    }
}

impl fmt::Display for ResponseSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.resp;
        write!(f, "len={}", r.len())?;
        if r.len() >= 2 {
            write!(f, " SW={:02X}{:02X}", r[r.len() - 2], r[r.len() - 1])?;
            if self.with_data && r.len() > 2 {
                f.write_str(" data=")?;
                hex(f, &r[..r.len() - 2])?;
            }
        }
        Ok(())
    }
}

fn hex(f: &mut fmt::Formatter<'_>, b: &[u8]) -> fmt::Result {
    for x in b {
        write!(f, "{x:02X}")?;
    }
    Ok(())
}

/// Logs one APDU exchange at trace level (called by `SCardTransmit`).
pub fn trace_transmit(cmd: &[u8], resp: Option<&[u8]>) {
    if !tracing::enabled!(tracing::Level::TRACE) {
        return;
    }
    let data = apdu_data_enabled();
    let pin = !command_data_loggable(cmd);
    let mut line = String::with_capacity(96);
    let _ = write!(line, "APDU > {}", CommandSummary::new(cmd, data));
    if let Some(r) = resp {
        let _ = write!(line, " | < {}", ResponseSummary::new(r, data && !pin));
    }
    tracing::trace!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(cmd: &[u8], data: bool) -> String {
        CommandSummary::new(cmd, data).to_string()
    }

    #[test]
    fn apdu_cases() {
        assert_eq!(parse_apdu(&[0, 0xA4, 4, 0]).unwrap().le, None);
        let h = parse_apdu(&[0, 0xB0, 0, 0, 0]).unwrap();
        assert_eq!((h.lc, h.le), (0, Some(256)));
        let h = parse_apdu(&[0, 0xA4, 4, 0, 2, 0x3F, 0x00]).unwrap();
        assert_eq!((h.lc, h.le, h.data_offset), (2, None, 5));
        let h = parse_apdu(&[0, 0xA4, 4, 0, 2, 0x3F, 0x00, 0x10]).unwrap();
        assert_eq!((h.lc, h.le), (2, Some(16)));
        let h = parse_apdu(&[0, 0xB0, 0, 0, 0, 0x01, 0x00]).unwrap();
        assert_eq!((h.lc, h.le), (0, Some(256)));
        let mut ext = vec![0x80, 0x01, 0, 0, 0, 0x01, 0x00];
        ext.extend_from_slice(&[0xAB; 256]);
        ext.extend([0, 0]);
        let h = parse_apdu(&ext).unwrap();
        assert_eq!((h.lc, h.le, h.data_offset, h.well_formed), (256, Some(65536), 7, true));
        assert!(!parse_apdu(&[0, 0xA4, 4, 0, 5, 1]).unwrap().well_formed);
        assert!(parse_apdu(&[0, 0xA4]).is_none());
    }

    #[test]
    fn pin_data_never_shown() {
        let pin = [0x00, 0x20, 0x00, 0x81, 0x06, b'1', b'2', b'3', b'4', b'5', b'6'];
        for with_data in [false, true] {
            let s = show(&pin, with_data);
            assert!(s.contains("INS=20"), "{s}");
            assert!(s.contains("data=<redacted>"), "{s}");
            assert!(!s.contains("313233"), "{s}");
        }
        for ins in [0x21u8, 0x24, 0x25, 0x2C, 0x2D] {
            let mut c = pin;
            c[1] = ins;
            assert!(!show(&c, true).contains("313233"));
            assert!(!command_data_loggable(&c));
        }
        // Extended-length VERIFY too.
        let ext = [0x00, 0x20, 0x00, 0x81, 0x00, 0x00, 0x04, 0x31, 0x32, 0x33, 0x34];
        assert!(!show(&ext, true).contains("31323334"));
    }

    #[test]
    fn other_data_only_when_asked() {
        let sel = [0x00, 0xA4, 0x04, 0x00, 0x02, 0xA0, 0x01];
        assert_eq!(show(&sel, false), "CLA=00 INS=A4 P1=04 P2=00 Lc=2 Le=-");
        assert_eq!(show(&sel, true), "CLA=00 INS=A4 P1=04 P2=00 Lc=2 Le=- data=A001");
        let r = [0x12, 0x34, 0x90, 0x00];
        assert_eq!(ResponseSummary::new(&r, false).to_string(), "len=4 SW=9000");
        assert_eq!(ResponseSummary::new(&r, true).to_string(), "len=4 SW=9000 data=1234");
        assert_eq!(show(&[1, 2], true), "len=2 (not an APDU)");
    }
}
