//! ICCD tokens: USB chip-card tokens (interface class `0x0B`, `bInterfaceProtocol` 1 = ICCD
//! version A, 2 = version B) that talk over the **control pipe** instead of bulk CCID messages
//! (ccid.md Appendix A; libccid's `ICCD_A`/`ICCD_B` branches of `commands.c`).
//!
//! Rather than teaching `Ccid`, `Slot` and the server a second protocol, [`IccdTransport`] is a
//! [`Transport`] adapter: it takes the CCID bulk messages the driver writes, does the class
//! requests they stand for on the token, and hands back the RDR_to_PC reply a CCID reader
//! would have sent. [`driver_descriptor`] gives the driver a class descriptor that fits what
//! the adapter does (one slot, one power-up attempt, no PPS/SetParameters, an exchange level
//! the driver implements). [`adapt`] is the open hook that does both.
//!
//! | the driver writes | version A | version B |
//! |---|---|---|
//! | IccPowerOn | OUT `63`, IN `A0` until not busy, IN `62` → ATR | OUT `63`, OUT `62` wValue 1, IN `6F` → ATR |
//! | IccPowerOff | OUT `63` | OUT `63`, IN `81` |
//! | GetSlotStatus | IN `A0` until not busy (`80` mute reads as "no card", as in libccid) | IN `81` (byte 1 bits 1-0) |
//! | XfrBlock | the T=0 exchange below | OUT `65` wValue = chain code << 8, then IN `6F` |
//! | anything else (SetParameters, Escape, Secure…) | failed SlotStatus, bError `00` (not supported) | same |
//!
//! Power-on starts with a power-off, as libccid's does: that resets the token's state machine.
//!
//! **Version B** answers every IN `6F` with a `bResponseType` byte first ([`BResponse`]): data
//! (`00`, or the chaining codes `01 02 03 10` of ccid.md §3.2, passed to the driver as
//! `bChainParameter`, so the driver's extended-APDU chaining loops run unchanged), status with
//! an error (a failed DataBlock with that `bStatus`/`bError`), or "poll again after N × 10 ms".
//!
//! **Version A** (T=0 tokens, character level in their descriptors) gets whole short APDUs from
//! the driver (the driver's view is the short-APDU level) and runs libccid's character-like
//! loop: OUT `65` with the 5-byte header (a 4-byte case-1 command gets `P3 = 00`); then, per
//! the status byte ([`AStatus`]): `10` with command bytes left → OUT `65` with the rest, `10`
//! otherwise → IN `6F` for the response data, `20` → IN `6F` of 2 bytes, the status word,
//! which ends the exchange; `40` busy → ask again 10 ms later; `80` mute → `ICC_MUTE`.
//!
//! **Waiting.** "Busy" (A) and "poll again" (B) are the token's "still working": the adapter
//! polls again after the requested delay while the driver's read timeout lasts, and when the
//! delay reaches past it, answers a CCID time extension (ccid.md §2.7) so that the driver keeps
//! waiting, as it would for a bulk reader. Like libccid and like CCID time extensions, a token
//! may keep the host waiting indefinitely this way.
//!
//! **Failures.** USB errors of the control requests pass through (NoDevice marks the reader
//! gone, a timeout makes the driver abort: the adapter refuses the CCID ABORT request, so the
//! driver just drops the command). Answers that do not fit the protocol (empty or short
//! answers, unknown response types, a status word that is not 2 bytes) become
//! [`TransportError::Io`] with an [`IccdError`] text; nothing here panics on device bytes.
//! Control transfers carry at most [`MAX_CONTROL`] bytes (Linux usbfs), which caps command
//! chunks and every read.

use super::atr::MAX_ATR_LEN;
use super::descriptor::{CcidDescriptor, ExchangeLevel, Features, PinSupport};
use super::device::{Ccid, DEFAULT_TIMEOUT};
use super::message::{
    AnyCommand, CommandStatus, DataBlock, ErrorCode, Frame, IccPowerOff, IccPowerOn, IccStatus, PowerSelect, Reply,
    SlotStatus, Status, HEADER_LEN,
};
use super::transport::{usb_timeout, Transport, TransportError};
use super::usb::{InterfaceKind, OpenError};
use std::fmt;
use std::time::{Duration, Instant};

#[cfg(any(test, feature = "sim"))]
pub mod sim;

/// Most bytes one control transfer carries (Linux usbfs refuses more; libccid caps its reads
/// at `0x1000` for the same reason).
pub const MAX_CONTROL: usize = 4096;
/// The delay unit of "poll again" (B) and the retry delay after "busy" (A).
pub const POLL_UNIT: Duration = Duration::from_millis(10);

/// The two ICCD versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// `bInterfaceProtocol` 1: status-byte polling, T=0 characters.
    A,
    /// `bInterfaceProtocol` 2: `bResponseType`-framed answers, APDUs.
    B,
}

impl Version {
    /// The version of an interface with this `bInterfaceProtocol`.
    pub fn from_protocol(protocol: u8) -> Option<Self> {
        match protocol {
            1 => Some(Version::A),
            2 => Some(Version::B),
            _ => None,
        }
    }

    /// `bInterfaceProtocol`.
    pub fn protocol(self) -> u8 {
        match self {
            Version::A => 1,
            Version::B => 2,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::A => "ICCD A",
            Version::B => "ICCD B",
        })
    }
}

/// `bRequest` values of the ICCD class requests (interface recipient, `wIndex` = interface).
pub mod request {
    /// A: IN, the ATR. B: OUT with wValue 1; the ATR follows as a DataBlock.
    pub const ICC_POWER_ON: u8 = 0x62;
    /// OUT.
    pub const ICC_POWER_OFF: u8 = 0x63;
    /// OUT with the command bytes.
    pub const XFR_BLOCK: u8 = 0x65;
    /// IN: the answer (A: card bytes; B: `bResponseType` + data).
    pub const DATA_BLOCK: u8 = 0x6F;
    /// A: IN, one status byte.
    pub const GET_ICC_STATUS: u8 = 0xA0;
    /// B: IN, three bytes.
    pub const SLOT_STATUS: u8 = 0x81;
}

/// Direction of a class request: `bmRequestType` `0x21` (OUT) or `0xA1` (IN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Out,
    In,
}

/// The setup stage of a class request (what travels besides the data stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Setup {
    pub direction: Direction,
    pub request: u8,
    pub value: u16,
}

/// Why ICCD bytes do not make sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IccdError {
    /// An IN request answered with no byte at all.
    Empty { request: u8 },
    /// An answer shorter than its kind needs.
    Short { request: u8, len: usize, need: usize },
    /// Version B: a `bResponseType` outside `00 01 02 03 10 40 80`.
    UnknownResponseType(u8),
    /// Version A: a status byte that does not fit the exchange in progress.
    UnexpectedStatus(u8),
    /// Version A: the status-word read did not return exactly 2 bytes.
    BadStatusWord(usize),
    /// The token answered power-on without an ATR.
    NoAtr,
    /// Version A: a command shorter than a T=0 header (4 bytes).
    CommandTooShort(usize),
    /// More bytes than one control transfer carries.
    TooLong(usize),
    /// Version A: chained commands (`wLevelParameter` ≠ 0) do not exist at the T=0 level.
    Chaining(u16),
    /// The driver wrote bytes that are not a CCID command.
    NotACommand,
    /// A request the token does not know (the simulated token's side).
    UnknownRequest(Setup),
}

impl fmt::Display for IccdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IccdError::Empty { request } => write!(f, "empty answer to request {request:#04x}"),
            IccdError::Short { request, len, need } => {
                write!(f, "{len}-byte answer to request {request:#04x} (need {need})")
            }
            IccdError::UnknownResponseType(t) => write!(f, "unknown bResponseType {t:#04x}"),
            IccdError::UnexpectedStatus(s) => write!(f, "unexpected status byte {s:#04x}"),
            IccdError::BadStatusWord(n) => write!(f, "{n}-byte status word"),
            IccdError::NoAtr => f.write_str("power-on answered without an ATR"),
            IccdError::CommandTooShort(n) => write!(f, "{n}-byte command (a T=0 header has 4 or 5)"),
            IccdError::TooLong(n) => write!(f, "{n} bytes exceed one control transfer ({MAX_CONTROL})"),
            IccdError::Chaining(l) => write!(f, "command chaining ({l:#06x}) at the T=0 level"),
            IccdError::NotACommand => f.write_str("not a CCID command"),
            IccdError::UnknownRequest(s) => {
                write!(f, "unknown request {:?} {:#04x} wValue {:#06x}", s.direction, s.request, s.value)
            }
        }
    }
}

impl std::error::Error for IccdError {}

impl From<IccdError> for TransportError {
    fn from(e: IccdError) -> Self {
        TransportError::Io(format!("ICCD: {e}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Wire structures

/// One ICCD class request, in both versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// A: IN `62` (answer: the ATR). B: OUT `62` wValue 1 (the ATR follows as a DataBlock).
    PowerOn,
    /// OUT `63`.
    PowerOff,
    /// OUT `65` with the command bytes; B: wValue = `chain` << 8 (ccid.md §3.2 codes).
    XfrBlock { chain: u8, data: &'a [u8] },
    /// IN `6F`.
    DataBlock,
    /// A: IN `A0`, one [`AStatus`] byte.
    IccStatus,
    /// B: IN `81`, a [`BSlotStatus`].
    SlotStatus,
}

impl<'a> Request<'a> {
    /// The setup stage for `version`.
    pub fn setup(&self, version: Version) -> Setup {
        let (direction, request, value) = match (self, version) {
            (Request::PowerOn, Version::A) => (Direction::In, request::ICC_POWER_ON, 0),
            (Request::PowerOn, Version::B) => (Direction::Out, request::ICC_POWER_ON, 1),
            (Request::PowerOff, _) => (Direction::Out, request::ICC_POWER_OFF, 0),
            (Request::XfrBlock { .. }, Version::A) => (Direction::Out, request::XFR_BLOCK, 0),
            (Request::XfrBlock { chain, .. }, Version::B) => {
                (Direction::Out, request::XFR_BLOCK, u16::from(*chain) << 8)
            }
            (Request::DataBlock, _) => (Direction::In, request::DATA_BLOCK, 0),
            (Request::IccStatus, _) => (Direction::In, request::GET_ICC_STATUS, 0),
            (Request::SlotStatus, _) => (Direction::In, request::SLOT_STATUS, 0),
        };
        Setup { direction, request, value }
    }

    /// The data stage of an OUT request (empty for the others).
    pub fn data(&self) -> &'a [u8] {
        match self {
            Request::XfrBlock { data, .. } => data,
            _ => &[],
        }
    }

    /// What a `version` token makes of a request (the simulated token's side). wValue of
    /// power-on (B) is not checked; version A has no chaining, its wValue is ignored.
    pub fn parse(version: Version, setup: Setup, data: &'a [u8]) -> Result<Self, IccdError> {
        use Direction::{In, Out};
        Ok(match (setup.direction, setup.request, version) {
            (In, request::ICC_POWER_ON, Version::A) | (Out, request::ICC_POWER_ON, Version::B) => Request::PowerOn,
            (Out, request::ICC_POWER_OFF, _) => Request::PowerOff,
            (Out, request::XFR_BLOCK, Version::A) => Request::XfrBlock { chain: 0, data },
            (Out, request::XFR_BLOCK, Version::B) => Request::XfrBlock { chain: (setup.value >> 8) as u8, data },
            (In, request::DATA_BLOCK, _) => Request::DataBlock,
            (In, request::GET_ICC_STATUS, Version::A) => Request::IccStatus,
            (In, request::SLOT_STATUS, Version::B) => Request::SlotStatus,
            _ => return Err(IccdError::UnknownRequest(setup)),
        })
    }
}

/// Version B `bResponseType` values.
pub mod response_type {
    /// Data; the response begins and ends here.
    pub const DATA: u8 = 0x00;
    /// Chaining codes as `bChainParameter` (ccid.md §3.2).
    pub const BEGIN: u8 = 0x01;
    pub const END: u8 = 0x02;
    pub const MIDDLE: u8 = 0x03;
    /// Empty: send the next part of the command.
    pub const NEXT: u8 = 0x10;
    /// Status information: `bStatus`, `bError` follow.
    pub const STATUS: u8 = 0x40;
    /// Poll again after `(byte 1 | byte 2 << 8)` × 10 ms.
    pub const POLL: u8 = 0x80;
}

/// A version-B answer to IN `6F`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BResponse<'a> {
    /// `bResponseType` `00`, `01`, `02`, `03` or `10` (kept as the chain code) and the data.
    Data { chain: u8, data: &'a [u8] },
    /// `40`: the command failed; CCID-style `bStatus` and `bError`.
    Status { status: u8, error: u8 },
    /// `80`: not ready; ask again after `delay` × 10 ms (0: the host chooses).
    Poll { delay: u16 },
}

impl<'a> BResponse<'a> {
    pub fn parse(b: &'a [u8]) -> Result<Self, IccdError> {
        let (&ty, rest) = b.split_first().ok_or(IccdError::Empty { request: request::DATA_BLOCK })?;
        let short = || IccdError::Short { request: request::DATA_BLOCK, len: b.len(), need: 3 };
        Ok(match ty {
            response_type::DATA
            | response_type::BEGIN
            | response_type::END
            | response_type::MIDDLE
            | response_type::NEXT => BResponse::Data { chain: ty, data: rest },
            response_type::STATUS => match rest {
                [status, error, ..] => BResponse::Status { status: *status, error: *error },
                _ => return Err(short()),
            },
            response_type::POLL => match rest {
                [lo, hi, ..] => BResponse::Poll { delay: u16::from_le_bytes([*lo, *hi]) },
                _ => return Err(short()),
            },
            t => return Err(IccdError::UnknownResponseType(t)),
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            BResponse::Data { chain, data } => {
                out.push(*chain);
                out.extend_from_slice(data);
            }
            BResponse::Status { status, error } => out.extend_from_slice(&[response_type::STATUS, *status, *error]),
            BResponse::Poll { delay } => {
                out.push(response_type::POLL);
                out.extend_from_slice(&delay.to_le_bytes());
            }
        }
    }
}

/// How long "poll again after `delay`" means, in units of `unit` (10 ms); 0 is "the host
/// chooses", which libccid takes as one unit.
pub fn poll_wait(delay: u16, unit: Duration) -> Duration {
    unit.saturating_mul(u32::from(delay.max(1)))
}

/// A version-B slot status (IN `81`, 3 bytes). Only byte 1 bits 1-0 mean something to hosts
/// (libccid reads nothing else): 0 active, 1 inactive, 2 and 3 absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BSlotStatus {
    /// Byte 0 (not interpreted).
    pub kind: u8,
    pub status: u8,
    /// Byte 2 (not interpreted; 0 when the token sends only two bytes).
    pub error: u8,
}

impl BSlotStatus {
    pub const LEN: usize = 3;

    pub fn parse(b: &[u8]) -> Result<Self, IccdError> {
        match b {
            [] => Err(IccdError::Empty { request: request::SLOT_STATUS }),
            [_] => Err(IccdError::Short { request: request::SLOT_STATUS, len: 1, need: 2 }),
            [kind, status, rest @ ..] => {
                Ok(BSlotStatus { kind: *kind, status: *status, error: rest.first().copied().unwrap_or(0) })
            }
        }
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.kind, self.status, self.error]);
    }

    /// The card state as CCID's `bmICCStatus` (3, reserved, reads as absent like in libccid).
    pub fn icc(&self) -> IccStatus {
        match self.status & 3 {
            0 => IccStatus::Active,
            1 => IccStatus::Inactive,
            _ => IccStatus::Absent,
        }
    }
}

/// A version-A status byte (IN `A0`). Kept raw: tokens set other bits too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AStatus(pub u8);

impl AStatus {
    /// Bit 6: busy, ask again after 10 ms (tested as a bit, as libccid does).
    pub const BUSY: u8 = 0x40;
    /// The card does not answer (libccid reports "no card").
    pub const MUTE: u8 = 0x80;
    /// The token expects the rest of the command, or has response data to read.
    pub const DATA: u8 = 0x10;
    /// The status word is available.
    pub const STATUS_WORD: u8 = 0x20;
    /// Nothing in progress (what a token says between commands).
    pub const IDLE: u8 = 0x00;

    pub fn parse(b: &[u8]) -> Result<Self, IccdError> {
        b.first().map(|s| AStatus(*s)).ok_or(IccdError::Empty { request: request::GET_ICC_STATUS })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.0);
    }

    pub fn is_busy(self) -> bool {
        self.0 & Self::BUSY != 0
    }

    pub fn is_mute(self) -> bool {
        self.0 == Self::MUTE
    }
}

// ---------------------------------------------------------------------------------------------
// The descriptor the driver sees

/// The class descriptor the driver should work from for a `version` token, and why:
///
/// * one slot, one command at a time (the requests carry no slot number);
/// * no clock or data-rate tables and no PIN pad (ICCD has no such requests);
/// * automatic voltage (one power-up attempt: the requests carry no voltage, libccid powers
///   ICCD tokens with "automatic") and automatic parameter negotiation (no PPS nor
///   SetParameters: the token does that itself; every captured ICCD descriptor says so);
/// * version A: the short-APDU level with 271-byte messages: the adapter turns one short APDU
///   into the T=0 character exchange (the descriptors say character level, but ICCD A has
///   status polling instead of `wLevelParameter`, so `character.rs` does not apply);
/// * version B: a short-APDU level becomes extended, as libccid does (ICCD B tokens chain
///   with `bResponseType`, and libccid sends even a full short APDU in 2 parts to a token
///   whose `dwMaxCCIDMessageLength` is 261); messages are capped at one control transfer.
pub fn driver_descriptor(version: Version, desc: &CcidDescriptor) -> CcidDescriptor {
    let mut d = desc.clone();
    d.max_slot_index = 0;
    d.max_ccid_busy_slots = 1;
    d.num_clock_supported = 0;
    d.num_data_rates_supported = 0;
    d.pin_support = PinSupport(0);
    let mut features = d.features.0 | Features::AUTO_VOLTAGE | Features::AUTO_PARAM_NEGOTIATION;
    let level = match (version, desc.level()) {
        (Version::A, _) => Some(ExchangeLevel::ShortApdu),
        (Version::B, Some(ExchangeLevel::ShortApdu)) => Some(ExchangeLevel::ExtendedApdu),
        (Version::B, other) => other,
    };
    if let Some(level) = level {
        features = (features & !Features::LEVEL_MASK) | level.bits();
    }
    d.features = Features(features);
    d.max_ccid_message_length = match version {
        Version::A => 271,
        Version::B => desc.max_ccid_message_length.min((HEADER_LEN + MAX_CONTROL) as u32),
    };
    d
}

/// The open hook: an ICCD interface gets the adapter (after libccid's power cycle at open) and
/// the descriptor from [`driver_descriptor`]; a CCID interface passes through unchanged.
pub fn adapt<T: Transport + Send + 'static>(
    kind: InterfaceKind,
    desc: CcidDescriptor,
    transport: T,
) -> Result<(CcidDescriptor, Box<dyn Transport + Send>), OpenError> {
    match kind {
        InterfaceKind::Ccid => Ok((desc, Box::new(transport))),
        InterfaceKind::Iccd(p) => {
            let version =
                Version::from_protocol(p).ok_or_else(|| OpenError::Unsupported(format!("ICCD protocol {p}")))?;
            tracing::debug!(%version, "ICCD token: control-pipe adapter");
            Ok((driver_descriptor(version, &desc), Box::new(IccdTransport::open(transport, version))))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The adapter

/// Counters (for logs and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IccdStats {
    /// Control requests made.
    pub requests: u64,
    /// "Busy" (A) and "poll again" (B) answers.
    pub polls: u64,
    /// Time extensions handed to the driver.
    pub time_extensions: u64,
}

/// The CCID command being answered.
#[derive(Debug)]
struct Job {
    slot: u8,
    seq: u8,
    op: Op,
}

#[derive(Debug)]
enum Op {
    /// A: wait until not busy, read the ATR.
    AtrA,
    /// A: the status byte.
    StatusA,
    /// A: a T=0 exchange in progress.
    XfrA(T0Exchange),
    /// B: read a DataBlock (the ATR after power-on, or an answer to XfrBlock).
    DataB { atr: bool },
    /// B: read the slot status.
    SlotB,
}

/// Version A: where a T=0 exchange stands. Each status either moves it on (the rest of the
/// command is sent once, the response data read once) or ends it, so it always ends.
#[derive(Default)]
struct T0Exchange {
    /// Command bytes after the 5-byte header.
    rest: Vec<u8>,
    sent: bool,
    /// Response data read so far.
    data: Option<Vec<u8>>,
}

impl fmt::Debug for T0Exchange {
    /// Lengths only: commands and responses may carry PINs and keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("T0Exchange")
            .field("rest", &self.rest.len())
            .field("sent", &self.sent)
            .field("data", &self.data.as_ref().map(Vec::len))
            .finish()
    }
}

/// One step of an answer: done, or "ask the token again after this long".
enum Step {
    Done(Vec<u8>),
    Again(Duration),
}

/// A [`Transport`] that speaks CCID to the driver and ICCD to the token behind `T` (whose
/// class requests it uses; its bulk and interrupt endpoints are never touched).
pub struct IccdTransport<T: Transport> {
    inner: T,
    version: Version,
    poll_unit: Duration,
    /// Whether the card was powered by us (ICCD A's status byte does not say).
    powered: bool,
    job: Option<Job>,
    ready: Option<Vec<u8>>,
    poll_at: Option<Instant>,
    buf: Vec<u8>,
    stats: IccdStats,
}

impl<T: Transport> fmt::Debug for IccdTransport<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IccdTransport")
            .field("version", &self.version)
            .field("powered", &self.powered)
            .field("job", &self.job)
            .field("stats", &self.stats)
            .finish()
    }
}

impl<T: Transport> IccdTransport<T> {
    /// An adapter over `inner`, without any I/O.
    pub fn new(inner: T, version: Version) -> Self {
        IccdTransport {
            inner,
            version,
            poll_unit: POLL_UNIT,
            powered: false,
            job: None,
            ready: None,
            poll_at: None,
            buf: vec![0; MAX_CONTROL],
            stats: IccdStats::default(),
        }
    }

    /// [`IccdTransport::new`] and libccid's power cycle at open ([`IccdTransport::power_cycle`]).
    pub fn open(inner: T, version: Version) -> Self {
        let mut t = Self::new(inner, version);
        t.power_cycle();
        t
    }

    /// Another delay unit for "busy" and "poll again" (tests and fuzzing use zero).
    pub fn with_poll_unit(mut self, unit: Duration) -> Self {
        self.poll_unit = unit;
        self
    }

    /// Power off, on, off, as libccid does when it opens an ICCD token (resets a token left
    /// in any state). Failures are ignored, as there: the first real power-up starts with a
    /// power-off anyway, and a token that does not answer fails then with a clear error.
    pub fn power_cycle(&mut self) {
        let mut ccid = Ccid::new(&mut *self, HEADER_LEN + MAX_CONTROL);
        for power_on in [false, true, false] {
            let result = if power_on {
                ccid.transact(0, &IccPowerOn { power: PowerSelect::Auto }, DEFAULT_TIMEOUT).map(|_| ())
            } else {
                ccid.transact(0, &IccPowerOff, DEFAULT_TIMEOUT).map(|_| ())
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "ICCD power cycle at open (ignored)");
                if e.is_reader_gone() {
                    break;
                }
            }
        }
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn stats(&self) -> IccdStats {
        self.stats
    }

    pub fn inner(&mut self) -> &mut T {
        &mut self.inner
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    fn icc(&self) -> IccStatus {
        if self.powered {
            IccStatus::Active
        } else {
            IccStatus::Inactive
        }
    }

    fn request_out(&mut self, req: Request<'_>, timeout: Duration) -> Result<(), TransportError> {
        let s = req.setup(self.version);
        self.stats.requests += 1;
        self.inner.class_out(s.request, s.value, req.data(), usb_timeout(timeout))
    }

    /// An IN request with wLength `len` (at most [`MAX_CONTROL`]); the answer is in `self.buf`.
    fn request_in(&mut self, req: Request<'_>, len: usize, timeout: Duration) -> Result<usize, TransportError> {
        let s = req.setup(self.version);
        self.stats.requests += 1;
        let buf = &mut self.buf[..len.min(MAX_CONTROL)];
        let n = self.inner.class_in(s.request, s.value, buf, usb_timeout(timeout))?;
        Ok(n.min(buf.len()))
    }

    /// One CCID command from the driver: the OUT requests now, the reading in [`Self::answer`].
    fn command(&mut self, msg: &[u8], timeout: Duration) -> Result<(), TransportError> {
        self.job = None;
        self.ready = None;
        self.poll_at = None;
        let frame = Frame::parse(msg).map_err(|_| IccdError::NotACommand)?;
        let cmd = AnyCommand::parse(&frame).map_err(|_| IccdError::NotACommand)?;
        let (slot, seq) = (frame.header.slot, frame.header.seq);
        let job = |op| Some(Job { slot, seq, op });
        match (self.version, cmd) {
            (version, AnyCommand::IccPowerOn(_)) => {
                // libccid: power off first, to reset the token's state machine.
                self.powered = false;
                self.request_out(Request::PowerOff, timeout)?;
                if version == Version::B {
                    self.request_out(Request::PowerOn, timeout)?;
                    self.job = job(Op::DataB { atr: true });
                } else {
                    self.job = job(Op::AtrA);
                }
            }
            (Version::A, AnyCommand::IccPowerOff(_)) => {
                self.powered = false;
                self.request_out(Request::PowerOff, timeout)?;
                self.ready = Some(slot_status(slot, seq, Status::new(IccStatus::Inactive, CommandStatus::Ok, 0)));
            }
            (Version::B, AnyCommand::IccPowerOff(_)) => {
                self.powered = false;
                self.request_out(Request::PowerOff, timeout)?;
                self.job = job(Op::SlotB);
            }
            (Version::A, AnyCommand::GetSlotStatus(_)) => self.job = job(Op::StatusA),
            (Version::B, AnyCommand::GetSlotStatus(_)) => self.job = job(Op::SlotB),
            (Version::A, AnyCommand::XfrBlock(x)) => {
                if x.level != 0 {
                    return Err(IccdError::Chaining(x.level).into());
                }
                let (header, rest) = t0_header(x.data)?;
                if rest.len() > MAX_CONTROL {
                    return Err(IccdError::TooLong(rest.len()).into());
                }
                self.request_out(Request::XfrBlock { chain: 0, data: &header }, timeout)?;
                self.job = job(Op::XfrA(T0Exchange { rest: rest.to_vec(), ..Default::default() }));
            }
            (Version::B, AnyCommand::XfrBlock(x)) => {
                if x.data.len() > MAX_CONTROL {
                    return Err(IccdError::TooLong(x.data.len()).into());
                }
                // The §3.2 codes all fit the low byte of wLevelParameter.
                self.request_out(Request::XfrBlock { chain: x.level as u8, data: x.data }, timeout)?;
                self.job = job(Op::DataB { atr: false });
            }
            (_, other) => {
                tracing::debug!(command = ?other, "not an ICCD operation: answered \"command not supported\"");
                let st = Status::new(self.icc(), CommandStatus::Failed, ErrorCode::CMD_NOT_SUPPORTED);
                self.ready = Some(slot_status(slot, seq, st));
            }
        }
        Ok(())
    }

    /// Run the pending job until its reply, polling while the token is busy; past the driver's
    /// deadline (`timeout` from now), a time extension instead.
    fn answer(&mut self, timeout: Duration) -> Result<Vec<u8>, TransportError> {
        let Some(mut job) = self.job.take() else { return Err(TransportError::Timeout) };
        let now = Instant::now();
        let deadline = now.checked_add(timeout).unwrap_or(now);
        loop {
            let now = Instant::now();
            if let Some(at) = self.poll_at {
                if at > deadline {
                    // Still working when the driver stops waiting: sleep what it allows, then
                    // ask it to wait on (the multiplier covers the rest of the token's delay).
                    std::thread::sleep(deadline.saturating_duration_since(now));
                    let wait = at.saturating_duration_since(Instant::now());
                    let mult = wait.as_nanos().div_ceil(timeout.as_nanos().max(1)).clamp(1, 255) as u8;
                    self.stats.time_extensions += 1;
                    let te = job.time_extension(self.icc(), mult);
                    self.job = Some(job);
                    return Ok(te);
                }
                std::thread::sleep(at.saturating_duration_since(now));
                self.poll_at = None;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.step(&mut job, remaining) {
                Ok(Step::Done(reply)) => return Ok(reply),
                Ok(Step::Again(wait)) => {
                    self.stats.polls += 1;
                    let now = Instant::now();
                    self.poll_at = Some(now.checked_add(wait).unwrap_or(now));
                }
                Err(e) => {
                    self.poll_at = None;
                    return Err(e);
                }
            }
        }
    }

    fn step(&mut self, job: &mut Job, timeout: Duration) -> Result<Step, TransportError> {
        let (slot, seq) = (job.slot, job.seq);
        match &mut job.op {
            Op::AtrA => {
                if self.status_a(timeout)?.is_busy() {
                    return Ok(Step::Again(self.poll_unit));
                }
                let n = self.request_in(Request::PowerOn, MAX_ATR_LEN, timeout)?;
                if n == 0 {
                    return Err(IccdError::NoAtr.into());
                }
                self.powered = true;
                Ok(Step::Done(data_block(slot, seq, Status::OK_ACTIVE, 0, &self.buf[..n])))
            }
            Op::StatusA => {
                let st = self.status_a(timeout)?;
                if st.is_busy() {
                    return Ok(Step::Again(self.poll_unit));
                }
                // libccid: a mute token is reported as "no card".
                let icc = if st.is_mute() { IccStatus::Absent } else { self.icc() };
                Ok(Step::Done(slot_status(slot, seq, Status::new(icc, CommandStatus::Ok, 0))))
            }
            Op::XfrA(x) => loop {
                let st = self.status_a(timeout)?;
                if st.is_busy() {
                    return Ok(Step::Again(self.poll_unit));
                }
                match st.0 {
                    AStatus::MUTE => {
                        let failed = Status::new(self.icc(), CommandStatus::Failed, ErrorCode::ICC_MUTE);
                        return Ok(Step::Done(data_block(slot, seq, failed, 0, &[])));
                    }
                    AStatus::DATA if !x.rest.is_empty() && !x.sent => {
                        self.request_out(Request::XfrBlock { chain: 0, data: &x.rest }, timeout)?;
                        x.sent = true;
                    }
                    AStatus::DATA if x.data.is_none() => {
                        let n = self.request_in(Request::DataBlock, MAX_CONTROL, timeout)?;
                        x.data = Some(self.buf[..n].to_vec());
                    }
                    AStatus::STATUS_WORD => {
                        let n = self.request_in(Request::DataBlock, 2, timeout)?;
                        if n != 2 {
                            return Err(IccdError::BadStatusWord(n).into());
                        }
                        let mut resp = x.data.take().unwrap_or_default();
                        resp.extend_from_slice(&self.buf[..2]);
                        return Ok(Step::Done(data_block(slot, seq, Status::OK_ACTIVE, 0, &resp)));
                    }
                    other => return Err(IccdError::UnexpectedStatus(other).into()),
                }
            },
            Op::DataB { atr } => {
                let atr = *atr;
                // libccid reads the ATR with room for 33 bytes + bResponseType.
                let len = if atr { MAX_ATR_LEN + 1 } else { MAX_CONTROL };
                let n = self.request_in(Request::DataBlock, len, timeout)?;
                match BResponse::parse(&self.buf[..n])? {
                    BResponse::Poll { delay } => Ok(Step::Again(poll_wait(delay, self.poll_unit))),
                    BResponse::Status { status, error } => {
                        let st = Status { status: (status & 0x03) | 0x40, error };
                        Ok(Step::Done(data_block(slot, seq, st, 0, &[])))
                    }
                    BResponse::Data { chain, data } => {
                        if atr {
                            if data.is_empty() {
                                return Err(IccdError::NoAtr.into());
                            }
                            self.powered = true;
                        }
                        Ok(Step::Done(data_block(slot, seq, Status::OK_ACTIVE, chain, data)))
                    }
                }
            }
            Op::SlotB => {
                let n = self.request_in(Request::SlotStatus, BSlotStatus::LEN, timeout)?;
                let icc = BSlotStatus::parse(&self.buf[..n])?.icc();
                self.powered = icc == IccStatus::Active;
                Ok(Step::Done(slot_status(slot, seq, Status::new(icc, CommandStatus::Ok, 0))))
            }
        }
    }

    /// Version A: one status byte.
    fn status_a(&mut self, timeout: Duration) -> Result<AStatus, TransportError> {
        let n = self.request_in(Request::IccStatus, 1, timeout)?;
        Ok(AStatus::parse(&self.buf[..n])?)
    }
}

impl Job {
    /// A time-extension reply (multiplier `mult`) of the type this job's reply has.
    fn time_extension(&self, icc: IccStatus, mult: u8) -> Vec<u8> {
        let st = Status::new(icc, CommandStatus::TimeExtension, mult);
        match self.op {
            Op::StatusA | Op::SlotB => slot_status(self.slot, self.seq, st),
            Op::AtrA | Op::XfrA(_) | Op::DataB { .. } => data_block(self.slot, self.seq, st, 0, &[]),
        }
    }
}

/// Version A: the 5-byte T=0 header of a command (a 4-byte case-1 command gets `P3 = 00`, as
/// libccid sends it) and the bytes after it.
fn t0_header(apdu: &[u8]) -> Result<([u8; 5], &[u8]), IccdError> {
    match apdu {
        [cla, ins, p1, p2] => Ok(([*cla, *ins, *p1, *p2, 0], &[])),
        [cla, ins, p1, p2, p3, rest @ ..] => Ok(([*cla, *ins, *p1, *p2, *p3], rest)),
        _ => Err(IccdError::CommandTooShort(apdu.len())),
    }
}

fn data_block(slot: u8, seq: u8, status: Status, chain: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + data.len());
    DataBlock { status, chain, data: data.to_vec() }.emit(slot, seq, &mut v);
    v
}

fn slot_status(slot: u8, seq: u8, status: Status) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN);
    SlotStatus { status, clock_status: 0 }.emit(slot, seq, &mut v);
    v
}

/// The driver's side. The CCID class requests (ABORT, GET_CLOCK_FREQUENCIES, GET_DATA_RATES)
/// do not exist on ICCD tokens: the trait's defaults refuse them (a stall), so a timed-out
/// command is simply dropped; there is no endpoint halt to clear.
impl<T: Transport> Transport for IccdTransport<T> {
    fn bulk_out(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        self.command(data, timeout)
    }

    fn bulk_in(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        let msg = match self.ready.take() {
            Some(m) => m,
            None => self.answer(timeout)?,
        };
        let out = buf.get_mut(..msg.len()).ok_or(TransportError::Overflow)?;
        out.copy_from_slice(&msg);
        Ok(msg.len())
    }

    fn interrupt_in(&mut self, _buf: &mut [u8], _timeout: Duration) -> Result<usize, TransportError> {
        Err(TransportError::Io("ICCD tokens have no interrupt endpoint here (the card is always present)".into()))
    }
}

#[cfg(test)]
mod tests;
