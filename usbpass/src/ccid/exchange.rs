//! One card slot: bring-up (voltage, ATR, protocol choice, PPS, SetParameters, IFSD) and one
//! `transmit(apdu) → response` that takes the path the reader's exchange level requires
//! (ccid.md §3-5):
//!
//! | level | path |
//! |---|---|
//! | extended APDU | XfrBlock with `wLevelParameter` command chaining 1/3/2, `bChainParameter` response chaining answered with `0x10` |
//! | short APDU | one XfrBlock (≤ `dwMaxCCIDMessageLength − 10`), same response-chaining loop (some firmware chains anyway) |
//! | TPDU, T=1 | the block protocol of [`super::t1`], one block per XfrBlock |
//! | TPDU, T=0 | [`super::t0`]: pass-through by default |
//! | character | [`super::character`]: T=0 procedure bytes run by the host under [`super::t0`], T=1 blocks of [`super::t1`] read prologue first |
//!
//! [`Slot::secure`] (PIN entry on a pinpad) is one `PC_to_RDR_Secure` at every level except
//! TPDU with T=1, where the reader builds an I-block for us: the T=1 engine fills in its
//! prologue and reads the card's block(s) back (ccid.md §3.5, §7.3).
//!
//! [`Slot::connect`] reproduces pcscd's protocol choice (`PHSetProtocol`: T=1 first, fall back
//! to the card's default protocol when the driver says "protocol not supported") over libccid's
//! `IFDHSetProtocolParameters` ([`Slot::set_protocol`]).

use super::atr::{self, Atr, AtrError, Protocol, Protocols};
use super::character::{CcidChars, T0OverChars, T1OverChars};
use super::descriptor::{CcidDescriptor, ExchangeLevel};
use super::device::{self, Ccid, CcidError, Op};
use super::message::{
    DataBlock, ErrorCode, Escape, GetSlotStatus, IccPowerOff, IccPowerOn, IccStatus, PowerSelect, ProtocolParams,
    Secure, SetParameters, Status, T0Params, T1Params, XfrBlock,
};
use super::quirks::{self, Quirks};
use super::t0::{self, T0Error, T0Options};
use super::t1::{BlockXfer, Edc, T1Error, XferError, T1};
use super::transport::Transport;
use pcsc_proto::Rv;
use std::fmt;
use std::time::Duration;

/// `wLevelParameter` / `bChainParameter` codes (ccid.md §3.2).
pub mod chain {
    pub const WHOLE: u16 = 0x00;
    pub const BEGIN: u16 = 0x01;
    pub const END: u16 = 0x02;
    pub const MIDDLE: u16 = 0x03;
    pub const NEXT: u16 = 0x10;
}

/// Largest response accepted (65 536 data bytes + SW).
pub const MAX_RESPONSE: usize = 65_538;
/// libccid's chunk limit for extended-APDU command chaining.
const MAX_CHUNK: usize = 65_546;

/// Knobs of the bring-up and exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeOptions {
    pub t0: T0Options,
    /// First voltage tried when the reader does not choose by itself (libccid: 5 V).
    pub start_voltage: PowerSelect,
    /// The reader's GET_DATA_RATES table (empty: none, any rate up to `dwMaxDataRate`).
    pub data_rates: Vec<u32>,
    /// Added to every ATR-derived read timeout.
    pub slack: Duration,
    /// The reader's special cases (power-on, protocol setup, timeouts, transmit, presence).
    pub quirks: Quirks,
}

impl Default for ExchangeOptions {
    fn default() -> Self {
        ExchangeOptions {
            t0: T0Options::default(),
            start_voltage: PowerSelect::V5,
            data_rates: Vec::new(),
            slack: Duration::from_secs(1),
            quirks: Quirks::default(),
        }
    }
}

/// Why a slot operation failed. [`ExchangeError::rv`] gives the PC/SC code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeError {
    /// A CCID command failed while doing `op`.
    Ccid { op: Op, source: CcidError },
    /// The reader's exchange level is undefined (`dwFeatures & 0x70000` not a known value).
    UnsupportedLevel(Option<ExchangeLevel>),
    /// No card is powered (power it up first).
    NotPowered,
    /// No protocol has been set up (connect first).
    NotConnected,
    /// The ATR is malformed (libccid: protocol not supported).
    Atr(AtrError),
    /// None of the requested protocols is offered by the card (`SCARD_E_PROTO_MISMATCH`).
    ProtocolMismatch { requested: Protocols, offered: Protocols },
    /// The reader (`dwProtocols`) or the card's specific mode (TA2) excludes the protocol.
    ProtocolNotSupported(Protocol),
    /// The PPS exchange failed (or the reader lacks the speed a specific-mode card needs).
    PpsFailed,
    /// SetParameters failed.
    SetParameters(Status),
    /// The T=1 IFSD request failed.
    Ifsd(T1Error),
    /// The T=1 exchange failed.
    T1(T1Error),
    /// The T=0 exchange failed.
    T0(T0Error),
    /// The command does not fit the reader's message size at this level.
    CommandTooLong { len: usize, max: usize },
    /// The response exceeds 65 538 bytes.
    ResponseTooLong,
    /// An empty command.
    EmptyCommand,
    /// A `PC_to_RDR_Secure` payload whose `bTeoPrologue` cannot be located (a PIN operation
    /// other than verify/modify, or too short to hold the prologue and an APDU).
    SecurePayload,
}

impl ExchangeError {
    /// The PC/SC code pcscd + libccid report (ccid.md §2.11; pcscd's `SCardConnect`: failed
    /// power-up or protocol setup is `SCARD_W_UNRESPONSIVE_CARD`, protocol not offered is
    /// `SCARD_E_PROTO_MISMATCH`).
    pub fn rv(&self) -> Rv {
        match self {
            ExchangeError::Ccid { op, source } => source.rv(*op),
            ExchangeError::UnsupportedLevel(_) => Rv::E_READER_UNSUPPORTED,
            ExchangeError::NotPowered => Rv::W_UNPOWERED_CARD,
            ExchangeError::NotConnected => Rv::E_NOT_TRANSACTED,
            ExchangeError::ProtocolMismatch { .. } => Rv::E_PROTO_MISMATCH,
            ExchangeError::Atr(_)
            | ExchangeError::ProtocolNotSupported(_)
            | ExchangeError::PpsFailed
            | ExchangeError::SetParameters(_) => Rv::W_UNRESPONSIVE_CARD,
            ExchangeError::Ifsd(T1Error::Fatal(c)) => c.rv(Op::SetProtocol),
            ExchangeError::Ifsd(_) => Rv::W_UNRESPONSIVE_CARD,
            ExchangeError::T1(T1Error::Fatal(c)) | ExchangeError::T0(T0Error::Ccid(c)) => c.rv(Op::Transmit),
            ExchangeError::T1(_) | ExchangeError::T0(_) => Rv::E_NOT_TRANSACTED,
            ExchangeError::CommandTooLong { .. }
            | ExchangeError::ResponseTooLong
            | ExchangeError::EmptyCommand
            | ExchangeError::SecurePayload => Rv::E_NOT_TRANSACTED,
        }
    }
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::Ccid { op, source } => write!(f, "{op:?}: {source}"),
            ExchangeError::UnsupportedLevel(Some(l)) => write!(f, "{l}-level CCID readers are not supported"),
            ExchangeError::UnsupportedLevel(None) => f.write_str("the reader declares an undefined exchange level"),
            ExchangeError::NotPowered => f.write_str("card not powered"),
            ExchangeError::NotConnected => f.write_str("no protocol set up"),
            ExchangeError::Atr(e) => write!(f, "{e}"),
            ExchangeError::ProtocolMismatch { requested, offered } => {
                write!(f, "protocols {:#x} requested, card offers {:#x}", requested.0, offered.0)
            }
            ExchangeError::ProtocolNotSupported(p) => {
                write!(f, "{p} not supported by the reader or the card's specific mode")
            }
            ExchangeError::PpsFailed => f.write_str("PPS failed"),
            ExchangeError::SetParameters(s) => write!(f, "SetParameters failed: {s:?}"),
            ExchangeError::Ifsd(e) => write!(f, "IFSD request: {e}"),
            ExchangeError::T1(e) => write!(f, "{e}"),
            ExchangeError::T0(e) => write!(f, "{e}"),
            ExchangeError::CommandTooLong { len, max } => write!(f, "{len}-byte command exceeds the reader's {max}"),
            ExchangeError::ResponseTooLong => f.write_str("response too long"),
            ExchangeError::EmptyCommand => f.write_str("empty command"),
            ExchangeError::SecurePayload => f.write_str("PIN command without room for the T=1 prologue"),
        }
    }
}

impl std::error::Error for ExchangeError {}

/// What is known about the powered card.
#[derive(Debug, Clone)]
pub struct CardState {
    /// The ATR as received (at most 33 bytes kept, like libccid).
    pub atr: Vec<u8>,
    /// The parsed ATR, or why it did not parse.
    pub parsed: Result<Atr, AtrError>,
    /// The voltage the card came up with.
    pub voltage: PowerSelect,
    /// Set by [`Slot::set_protocol`] / [`Slot::connect`].
    pub protocol: Option<Protocol>,
    /// Read timeout for exchanges with the card.
    pub timeout: Duration,
    t1: Option<T1>,
}

impl CardState {
    /// The T=1 engine state (TPDU level with T=1 only).
    pub fn t1(&self) -> Option<&T1> {
        self.t1.as_ref()
    }
}

/// One slot of a CCID reader.
pub struct Slot<T: Transport> {
    ccid: Ccid<T>,
    desc: CcidDescriptor,
    level: ExchangeLevel,
    slot: u8,
    opts: ExchangeOptions,
    card: Option<CardState>,
    /// Whether the last power-on worked (presence of readers that always report a card).
    powered_up: bool,
}

impl<T: Transport> fmt::Debug for Slot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot").field("slot", &self.slot).field("level", &self.level).field("card", &self.card).finish()
    }
}

impl<T: Transport> Slot<T> {
    /// Undefined-level readers are refused.
    pub fn new(transport: T, desc: CcidDescriptor, slot: u8, opts: ExchangeOptions) -> Result<Self, ExchangeError> {
        let max = Self::message_limit(&desc);
        Self::from_ccid(Ccid::new(transport, max), desc, slot, opts)
    }

    /// A slot over an existing `Ccid` (e.g. one made with [`Ccid::with_shared_seq`] for a
    /// multi-slot reader; build it with [`Slot::message_limit`] as its message size).
    pub fn from_ccid(
        ccid: Ccid<T>,
        desc: CcidDescriptor,
        slot: u8,
        opts: ExchangeOptions,
    ) -> Result<Self, ExchangeError> {
        let level = match desc.level() {
            Some(l) => l,
            other => return Err(ExchangeError::UnsupportedLevel(other)),
        };
        Ok(Slot { ccid, desc, level, slot, opts, card: None, powered_up: true })
    }

    /// The message size the driver uses for a reader: `dwMaxCCIDMessageLength`, except that
    /// SCM firmware reporting 263 instead of 271 gets 271 (libccid sends full short APDUs anyway).
    pub fn message_limit(desc: &CcidDescriptor) -> usize {
        match desc.max_message_len() {
            263 => 271,
            m => m,
        }
    }

    /// The slot number (`bSlot`).
    pub fn index(&self) -> u8 {
        self.slot
    }

    pub fn descriptor(&self) -> &CcidDescriptor {
        &self.desc
    }

    pub fn level(&self) -> ExchangeLevel {
        self.level
    }

    pub fn ccid(&mut self) -> &mut Ccid<T> {
        &mut self.ccid
    }

    pub fn card(&self) -> Option<&CardState> {
        self.card.as_ref()
    }

    /// The ATR of the powered card.
    pub fn atr(&self) -> Option<&[u8]> {
        self.card.as_ref().map(|c| &c.atr[..])
    }

    pub fn protocol(&self) -> Option<Protocol> {
        self.card.as_ref().and_then(|c| c.protocol)
    }

    pub fn into_transport(self) -> T {
        self.ccid.into_transport()
    }

    /// GetSlotStatus. A failed reply with a status (`ICC_MUTE` on an empty slot) is a status,
    /// not an error.
    pub fn status(&mut self) -> Result<IccStatus, ExchangeError> {
        self.status_within(device::DEFAULT_TIMEOUT)
    }

    fn status_within(&mut self, timeout: Duration) -> Result<IccStatus, ExchangeError> {
        match self.ccid.transact(self.slot, &GetSlotStatus, timeout) {
            Ok(s) => Ok(s.status.icc()),
            Err(CcidError::Failed { status, .. }) if status.error == ErrorCode::ICC_MUTE => Ok(status.icc()),
            Err(source) => Err(ExchangeError::Ccid { op: Op::Status, source }),
        }
    }

    /// Card presence the way libccid reports it to pcscd (ccid.md §6.1): a card we powered that
    /// is now present but inactive was swapped between two polls, and reads as absent once.
    pub fn presence(&mut self) -> Result<bool, ExchangeError> {
        self.presence_within(device::DEFAULT_TIMEOUT)
    }

    /// [`Slot::presence`] for the first look at a reader being opened, which some readers
    /// answer slowly ([`Quirks::open_timeout`]).
    pub fn presence_at_open(&mut self) -> Result<bool, ExchangeError> {
        self.presence_within(self.opts.quirks.open_timeout())
    }

    fn presence_within(&mut self, timeout: Duration) -> Result<bool, ExchangeError> {
        if self.opts.quirks.presence_from_power_on {
            // The reader always reports a card (GemCore SIM Pro, ccid/quirks.rs group I).
            return Ok(self.powered_up);
        }
        let st = match self.status_within(timeout) {
            Ok(s) => s,
            Err(e) => {
                if matches!(&e, ExchangeError::Ccid { source, .. } if source.is_reader_gone()) {
                    self.card = None;
                }
                return Err(e);
            }
        };
        Ok(match st {
            IccStatus::Active => true,
            IccStatus::Inactive if self.card.is_some() => {
                self.card = None;
                false
            }
            IccStatus::Inactive => true,
            IccStatus::Absent | IccStatus::Rfu => {
                self.card = None;
                false
            }
        })
    }

    /// The voltages to try, in order (ccid.md §4.2).
    pub fn voltage_sequence(&self) -> Vec<PowerSelect> {
        if self.desc.features.auto_voltage() || self.opts.start_voltage == PowerSelect::Auto {
            return vec![PowerSelect::Auto];
        }
        let support = self.desc.voltage_support;
        let supported = |v: PowerSelect| match v {
            PowerSelect::V5 => support.v5(),
            PowerSelect::V3 => support.v3(),
            PowerSelect::V1_8 => support.v1_8(),
            PowerSelect::Auto => true,
        };
        let mut start = self.opts.start_voltage;
        if support.0 & 7 != 0 {
            for _ in 0..3 {
                if supported(start) {
                    break;
                }
                start = match start {
                    PowerSelect::V5 => PowerSelect::V3,
                    PowerSelect::V3 => PowerSelect::V1_8,
                    _ => PowerSelect::V5,
                };
            }
        }
        let next = |v: PowerSelect| match v {
            PowerSelect::V5 => PowerSelect::V1_8,
            PowerSelect::V1_8 => PowerSelect::V3,
            _ => PowerSelect::V5,
        };
        vec![start, next(start), next(next(start))]
    }

    /// Power the card up (IccPowerOn through the voltage sequence) and keep its ATR. Any
    /// protocol state of a previous power-up is dropped (this is also the reset).
    pub fn power_on(&mut self) -> Result<Vec<u8>, ExchangeError> {
        let result = self.power_up();
        self.powered_up = result.is_ok();
        result
    }

    fn power_up(&mut self) -> Result<Vec<u8>, ExchangeError> {
        self.card = None;
        let quirks = &self.opts.quirks;
        let (power_off_first, mut iso_retry, timeout) =
            (quirks.power_off_first, quirks.iso_mode_escape, quirks.command_timeout());
        if power_off_first {
            // Kobil IDToken (ccid/quirks.rs group D).
            self.ccid
                .transact(self.slot, &IccPowerOff, timeout)
                .map_err(|source| ExchangeError::Ccid { op: Op::PowerOn, source })?;
        }
        let mut last = None;
        for v in self.voltage_sequence() {
            let mut attempt = self.ccid.transact(self.slot, &IccPowerOn { power: v }, device::POWER_ON_TIMEOUT);
            if iso_retry && attempt.as_ref().is_err_and(|e| self.opts.quirks.wants_iso_mode(e)) {
                // A GemPC 433 / Cherry XX33 in EMV mode: ISO mode, once more (ccid/quirks.rs group D).
                iso_retry = false;
                self.ccid
                    .transact(self.slot, &Escape { data: &quirks::ISO_MODE }, timeout)
                    .map_err(|source| ExchangeError::Ccid { op: Op::PowerOn, source })?;
                attempt = self.ccid.transact(self.slot, &IccPowerOn { power: v }, device::POWER_ON_TIMEOUT);
            }
            match attempt {
                Ok(DataBlock { mut data, .. }) => {
                    data.truncate(atr::MAX_ATR_LEN);
                    let parsed = Atr::parse(&data);
                    tracing::debug!(voltage = ?v, atr = ?data, "card powered");
                    self.card = Some(CardState {
                        atr: data.clone(),
                        parsed,
                        voltage: v,
                        protocol: None,
                        timeout: device::DEFAULT_TIMEOUT,
                        t1: None,
                    });
                    return Ok(data);
                }
                Err(e) if e.is_reader_gone() || e.is_card_absent() => {
                    return Err(ExchangeError::Ccid { op: Op::PowerOn, source: e })
                }
                Err(e) => {
                    tracing::debug!(voltage = ?v, error = %e, "power-on failed");
                    last = Some(e);
                }
            }
        }
        match last {
            Some(source) => Err(ExchangeError::Ccid { op: Op::PowerOn, source }),
            None => Err(ExchangeError::NotPowered),
        }
    }

    /// IccPowerOff.
    pub fn power_off(&mut self) -> Result<(), ExchangeError> {
        self.card = None;
        self.ccid
            .transact(self.slot, &IccPowerOff, self.opts.quirks.command_timeout())
            .map(|_| ())
            .map_err(|source| ExchangeError::Ccid { op: Op::Control, source })
    }

    /// PC_to_RDR_Escape (`SCardControl` with the vendor IFD exchange code).
    pub fn escape(&mut self, data: &[u8], timeout: Duration) -> Result<Vec<u8>, ExchangeError> {
        self.ccid
            .transact(self.slot, &Escape { data }, timeout)
            .map(|r| r.data)
            .map_err(|source| ExchangeError::Ccid { op: Op::Control, source })
    }

    /// PC_to_RDR_Secure (PIN verification or modification on a pinpad; `data` starts with
    /// bPINOperation). A failed `PIN_TIMEOUT` / `PIN_CANCELLED` becomes the fake response
    /// `64 00` / `64 01`, as libccid (ccid.md §7.3).
    ///
    /// At the TPDU level with T=1 the reader sends the card one I-block made of the structure's
    /// `bTeoPrologue`, the APDU with the PIN inserted and an EDC, and returns the card's block:
    /// the prologue comes from the T=1 engine ([`T1::secure_prologue`], overwriting whatever
    /// the caller put there) and the answer goes back through it ([`T1::secure_answer`]), which
    /// keeps N(S)/N(R) in step with the card for the next transmit.
    pub fn secure(&mut self, data: &[u8], timeout: Duration) -> Result<Vec<u8>, ExchangeError> {
        let card = self.card.as_mut().ok_or(ExchangeError::NotPowered)?;
        let t1 = match (self.level, card.protocol) {
            (ExchangeLevel::Tpdu, Some(Protocol::T1)) => Some(card.t1.as_mut().ok_or(ExchangeError::NotConnected)?),
            _ => None,
        };
        let Some(t1) = t1 else {
            return match self.ccid.transact(self.slot, &Secure { bwi: 0, level: 0, data }, timeout) {
                Ok(r) => Ok(r.data),
                Err(e) => Self::pin_entry_failed(e),
            };
        };
        let at = teo_prologue_offset(data).ok_or(ExchangeError::SecurePayload)?;
        let prologue = t1.secure_prologue(data.len() - at - 3).map_err(ExchangeError::T1)?;
        let mut payload = data.to_vec();
        payload[at..at + 3].copy_from_slice(&prologue);
        let first = match self.ccid.transact(self.slot, &Secure { bwi: 0, level: 0, data: &payload }, timeout) {
            // The fake answers are never a block (4 bytes at least); a reader that sends them as
            // data (libccid tests for them too) did not reach the card.
            Ok(r) if r.data == [0x64, 0x00] || r.data == [0x64, 0x01] => return Ok(r.data),
            Ok(r) => Ok(r.data),
            Err(e) if e.is_parity_error() => Err(XferError::Parity),
            Err(e) if e.is_mute() => Err(XferError::Mute),
            // No block reached the card (PIN entry failed) or the command itself failed: the
            // sequence numbers stay as they were (libccid restores them here).
            Err(e) => return Self::pin_entry_failed(e),
        };
        let card_timeout = card.timeout;
        let mut x = CcidBlocks { ccid: &mut self.ccid, slot: self.slot, timeout: card_timeout };
        t1.secure_answer(&mut x, first).map_err(ExchangeError::T1)
    }

    /// A failed Secure: the pinpad's timeout and cancel become the fake answers.
    fn pin_entry_failed(e: CcidError) -> Result<Vec<u8>, ExchangeError> {
        match e {
            CcidError::Failed { status, .. } if status.error == ErrorCode::PIN_TIMEOUT => Ok(vec![0x64, 0x00]),
            CcidError::Failed { status, .. } if status.error == ErrorCode::PIN_CANCELLED => Ok(vec![0x64, 0x01]),
            source => Err(ExchangeError::Ccid { op: Op::Control, source }),
        }
    }

    /// PPS1 to use (ccid.md §4.5 step 6): TA1 when the card's speed is above the default and the
    /// reader can do it, else a slower Fi 512 value the reader can do, else none.
    fn pps1(&self, atr: &Atr) -> Result<Option<u8>, ExchangeError> {
        let Some(ta1) = atr.ta1() else { return Ok(None) };
        let clock = self.desc.default_clock;
        let Some(s) = atr::bit_rate(ta1, clock) else { return Ok(None) };
        let s0 = (1000u64 * clock as u64 / 372) as u32;
        let max = self.desc.max_data_rate;
        let rates = &self.opts.data_rates;
        let in_table = |r: u32| rates.is_empty() || rates.iter().any(|&x| x.abs_diff(r) <= 2);
        if s > s0 && s <= max {
            if in_table(s) {
                return Ok(Some(ta1));
            }
            if atr.specific_mode().is_some() {
                return Err(ExchangeError::PpsFailed);
            }
            return Ok(None);
        }
        if s > max.saturating_add(2) && (0x95..=0x97).contains(&ta1) {
            for cand in (0x94..ta1).rev() {
                if let Some(r) = atr::bit_rate(cand, clock) {
                    if r <= max && in_table(r) {
                        return Ok(Some(cand));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Set up `protocol` with the powered card, as libccid's `IFDHSetProtocolParameters`.
    /// [`ExchangeError::Atr`] and [`ExchangeError::ProtocolNotSupported`] are its "protocol not
    /// supported"; a SetParameters refused with `bError 0` is "command not supported".
    pub fn set_protocol(&mut self, mut protocol: Protocol) -> Result<Protocol, ExchangeError> {
        let card = self.card.as_ref().ok_or(ExchangeError::NotPowered)?;
        let atr = card.parsed.clone().map_err(ExchangeError::Atr)?;
        let offered_by_reader = match protocol {
            Protocol::T0 => self.desc.protocols.t0(),
            Protocol::T1 => self.desc.protocols.t1(),
        };
        if !offered_by_reader {
            return Err(ExchangeError::ProtocolNotSupported(protocol));
        }
        let sm = atr.specific_mode();
        if let Some(sm) = sm {
            if sm.protocol != protocol.number() {
                return Err(ExchangeError::ProtocolNotSupported(protocol));
            }
        }
        let features = self.desc.features;
        if !features.auto_parameters() {
            let mut fi_di = self.pps1(&atr)?.unwrap_or(0x11);
            let default = atr.default_protocol();
            let host_pps = !features.auto_pps() && sm.is_none() && (default != Some(protocol) || fi_di != 0x11);
            if host_pps && self.opts.quirks.no_pps {
                // O2Micro OZ776 (ccid/quirks.rs group E): the card stays in its default protocol.
                protocol = default.unwrap_or(protocol);
            } else if host_pps {
                let pps1 = (fi_di != 0x11).then_some(fi_di);
                let req = atr::pps_request(protocol, pps1);
                let timeout = self.opts.quirks.command_timeout();
                // A character-level reader waits for 4 characters (libccid asks that many).
                let level = if self.level == ExchangeLevel::Character { 4 } else { 0 };
                let answer = self
                    .ccid
                    .transact(self.slot, &XfrBlock { bwi: 0, level, data: &req }, timeout)
                    .map_err(|source| ExchangeError::Ccid { op: Op::SetProtocol, source })?;
                fi_di = atr::pps_accepted(&req, &answer.data).ok_or(ExchangeError::PpsFailed)?;
            }
            if sm.is_some_and(|s| s.implicit) {
                return Err(ExchangeError::PpsFailed);
            }
            let inverse = atr.convention == atr::Convention::Inverse;
            let params = match protocol {
                Protocol::T0 => ProtocolParams::T0(T0Params {
                    fi_di,
                    tcckst: if inverse { 0x02 } else { 0x00 },
                    guard_time: atr.extra_guard_time(),
                    waiting_integer: atr.wi(),
                    clock_stop: 0,
                }),
                Protocol::T1 => ProtocolParams::T1(T1Params {
                    fi_di,
                    tcckst: 0x10 | if inverse { 0x02 } else { 0 } | atr.t1_uses_crc() as u8,
                    guard_time: atr.extra_guard_time(),
                    waiting_integers: atr.t1_waiting_integers(),
                    clock_stop: 0,
                    ifsc: atr.ifsc(),
                    nad: 0,
                }),
            };
            match self.ccid.transact(self.slot, &SetParameters::new(params), self.opts.quirks.command_timeout()) {
                Ok(_) => {}
                Err(CcidError::Failed { status, .. }) if status.error_code().bad_offset().is_some() => {
                    tracing::debug!(?status, "SetParameters: parameter not changeable, carrying on");
                }
                Err(e) if protocol == Protocol::T1 && self.opts.quirks.reset_after_refused_set_parameters => {
                    // Alcor AU9540 (ccid/quirks.rs group E): two resets, then on without it.
                    tracing::debug!(error = %e, "SetParameters refused: resetting the card twice");
                    let refused = match e {
                        CcidError::Failed { status, .. } => ExchangeError::SetParameters(status),
                        source => ExchangeError::Ccid { op: Op::SetProtocol, source },
                    };
                    for _ in 0..2 {
                        self.power_on().map_err(|_| refused.clone())?;
                    }
                }
                Err(CcidError::Failed { status, .. }) => return Err(ExchangeError::SetParameters(status)),
                Err(source) => return Err(ExchangeError::Ccid { op: Op::SetProtocol, source }),
            }
        }
        self.activate(&atr, protocol)?;
        Ok(protocol)
    }

    /// Timeouts and, at the TPDU and character levels with T=1, the block engine and the IFSD
    /// request (libccid does neither at the character level, leaving IFSC at 32 whatever the
    /// ATR says; the host runs the block protocol there as at the TPDU level, so it does too).
    fn activate(&mut self, atr: &Atr, protocol: Protocol) -> Result<(), ExchangeError> {
        let mut timeout = atr.timeout(protocol, self.desc.default_clock).saturating_add(self.opts.slack);
        if protocol == Protocol::T1 {
            // Thales eToken Fusion NFC (ccid/quirks.rs group E): on-board key generation.
            timeout = timeout.saturating_add(self.opts.quirks.extra_t1_timeout);
        }
        let mut t1 = None;
        let host_t1 = matches!(self.level, ExchangeLevel::Tpdu | ExchangeLevel::Character);
        if host_t1 && protocol == Protocol::T1 {
            let edc = if atr.t1_uses_crc() { Edc::Crc } else { Edc::Lrc };
            let mut engine = T1::new(atr.ifsc(), edc);
            if !self.desc.features.auto_ifsd() {
                let (ccid, slot) = (&mut self.ccid, self.slot);
                let r = if self.level == ExchangeLevel::Character {
                    engine.negotiate_ifsd(
                        &mut T1OverChars { chars: CcidChars { ccid, slot, timeout }, edc },
                        self.desc.ifsd(),
                    )
                } else {
                    engine.negotiate_ifsd(&mut CcidBlocks { ccid, slot, timeout }, self.desc.ifsd())
                };
                r.map_err(ExchangeError::Ifsd)?;
            }
            t1 = Some(engine);
        }
        let card = self.card.as_mut().ok_or(ExchangeError::NotPowered)?;
        card.protocol = Some(protocol);
        card.timeout = timeout;
        card.t1 = t1;
        Ok(())
    }

    /// Power the card up if needed and choose the protocol the way pcscd does for
    /// `SCardConnect(preferred)`. Returns the ATR and the active protocol.
    pub fn connect(&mut self, preferred: Protocols) -> Result<(Vec<u8>, Protocol), ExchangeError> {
        if self.card.is_none() {
            self.power_on()?;
        }
        let card = self.card.as_ref().ok_or(ExchangeError::NotPowered)?;
        if let Some(p) = card.protocol {
            if preferred.contains(p) {
                return Ok((card.atr.clone(), p));
            }
            return Err(ExchangeError::ProtocolMismatch {
                requested: preferred,
                offered: Protocols::default().with(p),
            });
        }
        let atr = card.atr.clone();
        let (offered, default) = match &card.parsed {
            Ok(a) => (a.protocols(), a.default_protocol().unwrap_or(Protocol::T0)),
            Err(_) => (Protocols::T0, Protocol::T0),
        };
        let mut pref = preferred.intersect(offered);
        if pref.is_empty() {
            return Err(ExchangeError::ProtocolMismatch { requested: preferred, offered });
        }
        let mut chosen = if pref.contains(Protocol::T1) { Protocol::T1 } else { Protocol::T0 };
        loop {
            match self.set_protocol(chosen) {
                Ok(p) => return Ok((atr, p)),
                Err(e @ (ExchangeError::Atr(_) | ExchangeError::ProtocolNotSupported(_))) => {
                    let default_set = Protocols::default().with(default);
                    if default_set != pref {
                        if pref.contains(default) {
                            tracing::debug!(error = %e, "falling back to the card's default protocol {default}");
                            chosen = default;
                            pref = default_set;
                            continue;
                        }
                        return Err(ExchangeError::ProtocolMismatch { requested: preferred, offered });
                    }
                    return Err(e);
                }
                Err(ExchangeError::SetParameters(s)) if s.error == ErrorCode::CMD_NOT_SUPPORTED => {
                    // libccid's IFD_NOT_SUPPORTED: pcscd goes on with the card's default protocol.
                    let parsed =
                        self.card.as_ref().and_then(|c| c.parsed.clone().ok()).ok_or(ExchangeError::NotPowered)?;
                    self.activate(&parsed, default)?;
                    return Ok((atr, default));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Send one command APDU, return the response APDU.
    pub fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, ExchangeError> {
        if apdu.is_empty() {
            return Err(ExchangeError::EmptyCommand);
        }
        let card = self.card.as_mut().ok_or(ExchangeError::NotPowered)?;
        if let Some(answer) = self.opts.quirks.driver_answer(apdu) {
            // Kobil IDToken (ccid/quirks.rs group G): the driver answers, not the card.
            return Ok(answer);
        }
        let timeout = quirks::transmit_timeout(apdu, card.timeout);
        match self.level {
            ExchangeLevel::Tpdu => match card.protocol {
                Some(Protocol::T1) => {
                    let t1 = card.t1.as_mut().ok_or(ExchangeError::NotConnected)?;
                    let mut x = CcidBlocks { ccid: &mut self.ccid, slot: self.slot, timeout };
                    t1.transceive(&mut x, apdu).map_err(ExchangeError::T1)
                }
                Some(Protocol::T0) => {
                    let (ccid, slot) = (&mut self.ccid, self.slot);
                    let mut x = |tpdu: &[u8]| {
                        ccid.transact(slot, &XfrBlock { bwi: 0, level: 0, data: tpdu }, timeout).map(|r| r.data)
                    };
                    t0::transmit(&mut x, apdu, &self.opts.t0).map_err(ExchangeError::T0)
                }
                None => Err(ExchangeError::NotConnected),
            },
            ExchangeLevel::ShortApdu => self.xfr_apdu(apdu, false, timeout),
            ExchangeLevel::ExtendedApdu => self.xfr_apdu(apdu, true, timeout),
            ExchangeLevel::Character => {
                let chars = CcidChars { ccid: &mut self.ccid, slot: self.slot, timeout };
                match card.protocol {
                    Some(Protocol::T1) => {
                        let t1 = card.t1.as_mut().ok_or(ExchangeError::NotConnected)?;
                        let edc = t1.edc();
                        t1.transceive(&mut T1OverChars { chars, edc }, apdu).map_err(ExchangeError::T1)
                    }
                    Some(Protocol::T0) => {
                        t0::transmit(&mut T0OverChars(chars), apdu, &self.opts.t0).map_err(ExchangeError::T0)
                    }
                    None => Err(ExchangeError::NotConnected),
                }
            }
        }
    }

    fn xfr(&mut self, level: u16, data: &[u8], timeout: Duration) -> Result<DataBlock, ExchangeError> {
        self.ccid
            .transact(self.slot, &XfrBlock { bwi: 0, level, data }, timeout)
            .map_err(|source| ExchangeError::Ccid { op: Op::Transmit, source })
    }

    /// APDU levels: command chaining (extended only) and the response-chaining loop.
    fn xfr_apdu(&mut self, apdu: &[u8], extended: bool, timeout: Duration) -> Result<Vec<u8>, ExchangeError> {
        let chunk = self.ccid.max_message_len().saturating_sub(10).clamp(1, MAX_CHUNK);
        let first = if apdu.len() <= chunk {
            self.xfr(chain::WHOLE, apdu, timeout)?
        } else if extended {
            let mut parts = apdu.chunks(chunk).peekable();
            let mut code = chain::BEGIN;
            loop {
                let part = parts.next().unwrap_or(&[]);
                let last = parts.peek().is_none();
                if last {
                    code = chain::END;
                }
                let reply = self.xfr(code, part, timeout)?;
                if last {
                    break reply;
                }
                code = chain::MIDDLE;
            }
        } else {
            return Err(ExchangeError::CommandTooLong { len: apdu.len(), max: chunk });
        };
        let mut resp = first.data;
        let mut code = first.chain as u16;
        let mut rounds = 0usize;
        while matches!(code, chain::BEGIN | chain::MIDDLE | chain::NEXT) {
            rounds += 1;
            if rounds > MAX_RESPONSE {
                return Err(ExchangeError::ResponseTooLong);
            }
            let next = self.xfr(chain::NEXT, &[], timeout)?;
            resp.extend_from_slice(&next.data);
            if resp.len() > MAX_RESPONSE {
                return Err(ExchangeError::ResponseTooLong);
            }
            code = next.chain as u16;
        }
        Ok(resp)
    }
}

/// Where `bTeoPrologue` sits in a `PC_to_RDR_Secure` payload (ccid.md §7.3): after
/// bPINOperation, bTimerOut, bmFormatString, bmPINBlockString, bmPINLengthFormat,
/// wPINMaxExtraDigit, bEntryValidationCondition, bNumberMessage, wLangId and bMsgIndex for a
/// verification (offset 12); a modification has bInsertionOffsetOld/New and bConfirmPIN too,
/// and bMsgIndex2/3 only when bNumberMessage asks for them (offset 15 to 17). `None` for other
/// PIN operations or a payload with no APDU after the prologue.
pub fn teo_prologue_offset(payload: &[u8]) -> Option<usize> {
    let at = match payload.first()? {
        0x00 => 12,
        0x01 => {
            let messages = *payload.get(11)?;
            15 + usize::from(messages != 0) + usize::from(messages >= 3)
        }
        _ => return None,
    };
    (payload.len() > at + 3).then_some(at)
}

/// T=1 blocks over XfrBlock: `bBWI` carries the WTX multiplier, which also stretches the read.
struct CcidBlocks<'a, T: Transport> {
    ccid: &'a mut Ccid<T>,
    slot: u8,
    timeout: Duration,
}

impl<T: Transport> BlockXfer for CcidBlocks<'_, T> {
    fn xfer(&mut self, block: &[u8], wtx: u8) -> Result<Vec<u8>, XferError> {
        let timeout = if wtx > 1 { self.timeout.saturating_mul(wtx as u32) } else { self.timeout };
        match self.ccid.transact(self.slot, &XfrBlock { bwi: wtx, level: 0, data: block }, timeout) {
            Ok(r) => Ok(r.data),
            Err(e) if e.is_parity_error() => Err(XferError::Parity),
            Err(e) if e.is_mute() => Err(XferError::Mute),
            Err(e) => Err(XferError::Fatal(e)),
        }
    }
}
