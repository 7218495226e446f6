//! CCID bulk and interrupt messages (CCID Rev 1.1 §6; ccid.md §2).
//!
//! Every bulk message is a 10-byte header (`bMessageType`, `dwLength` LE, `bSlot`, `bSeq`, three
//! message-specific bytes) followed by `dwLength` payload bytes. This module has one type per
//! message, each with `emit` and `parse`, in both directions (the driver emits commands and
//! parses replies; the simulated readers in `sim` do the reverse). Parsing never panics: every
//! length the device supplies is checked before it is used.

use super::bytes::Cursor;
use std::fmt;

/// Size of the common header.
pub const HEADER_LEN: usize = 10;

/// `bMessageType` values.
pub mod msg_type {
    pub const SET_PARAMETERS: u8 = 0x61;
    pub const ICC_POWER_ON: u8 = 0x62;
    pub const ICC_POWER_OFF: u8 = 0x63;
    pub const GET_SLOT_STATUS: u8 = 0x65;
    pub const SECURE: u8 = 0x69;
    pub const T0_APDU: u8 = 0x6A;
    pub const ESCAPE: u8 = 0x6B;
    pub const GET_PARAMETERS: u8 = 0x6C;
    pub const RESET_PARAMETERS: u8 = 0x6D;
    pub const ICC_CLOCK: u8 = 0x6E;
    pub const XFR_BLOCK: u8 = 0x6F;
    pub const MECHANICAL: u8 = 0x71;
    pub const ABORT: u8 = 0x72;
    pub const SET_DATA_RATE_AND_CLOCK: u8 = 0x73;

    pub const DATA_BLOCK: u8 = 0x80;
    pub const SLOT_STATUS: u8 = 0x81;
    pub const PARAMETERS: u8 = 0x82;
    pub const ESCAPE_REPLY: u8 = 0x83;
    pub const DATA_RATE_AND_CLOCK: u8 = 0x84;

    pub const NOTIFY_SLOT_CHANGE: u8 = 0x50;
    pub const HARDWARE_ERROR: u8 = 0x51;
}

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    /// Fewer bytes than the header, or than the header's `dwLength` announces.
    Short { need: usize, have: usize },
    /// The message type is not the one expected.
    WrongType { expected: u8, got: u8 },
    /// A message type this module does not know.
    UnknownType(u8),
    /// A payload whose length does not fit the message (e.g. SetParameters not 5/7 bytes).
    BadPayload { message: u8, len: usize },
    /// `bProtocolNum` other than 0 (T=0) and 1 (T=1).
    UnknownProtocol(u8),
    /// `dwLength` larger than anything a CCID message may carry.
    TooLong(u32),
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::Short { need, have } => write!(f, "short CCID message ({have} bytes, need {need})"),
            MessageError::WrongType { expected, got } => {
                write!(f, "CCID message type {got:#04x}, expected {expected:#04x}")
            }
            MessageError::UnknownType(t) => write!(f, "unknown CCID message type {t:#04x}"),
            MessageError::BadPayload { message, len } => {
                write!(f, "CCID message {message:#04x} with a {len}-byte payload")
            }
            MessageError::UnknownProtocol(p) => write!(f, "unknown bProtocolNum {p}"),
            MessageError::TooLong(n) => write!(f, "CCID dwLength {n} too large"),
        }
    }
}

impl std::error::Error for MessageError {}

/// The largest payload any CCID message can carry (`dwMaxCCIDMessageLength` ≤ 65 554 − 10, plus
/// slack for readers that exceed it a little). Longer `dwLength` values are rejected outright.
pub const MAX_PAYLOAD: u32 = 65_546 + 1024;

/// The 10-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub message_type: u8,
    /// `dwLength`: payload bytes after the header.
    pub length: u32,
    pub slot: u8,
    pub seq: u8,
    /// Bytes 7-9: command parameters, or `bStatus`, `bError` and one specific byte in replies.
    pub specific: [u8; 3],
}

impl Header {
    pub fn parse(b: &[u8]) -> Result<Self, MessageError> {
        let mut c = Cursor::new(b);
        let short = || MessageError::Short { need: HEADER_LEN, have: b.len() };
        let message_type = c.u8().ok_or_else(short)?;
        let length = c.u32le().ok_or_else(short)?;
        let slot = c.u8().ok_or_else(short)?;
        let seq = c.u8().ok_or_else(short)?;
        let s = c.take(3).ok_or_else(short)?;
        Ok(Header { message_type, length, slot, seq, specific: [s[0], s[1], s[2]] })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.message_type);
        out.extend_from_slice(&self.length.to_le_bytes());
        out.push(self.slot);
        out.push(self.seq);
        out.extend_from_slice(&self.specific);
    }

    /// Total message length (header + payload), saturating.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.length as usize)
    }

    /// For a reply: the status bytes.
    pub fn status(&self) -> Status {
        Status { status: self.specific[0], error: self.specific[1] }
    }
}

/// A whole message: header and the `dwLength` payload bytes, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub header: Header,
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Parse the message at the start of `b`. Bytes after `10 + dwLength` are not part of it
    /// (see [`Frame::len`]).
    pub fn parse(b: &'a [u8]) -> Result<Self, MessageError> {
        let header = Header::parse(b)?;
        if header.length > MAX_PAYLOAD {
            return Err(MessageError::TooLong(header.length));
        }
        let need = header.frame_len();
        let payload = b.get(HEADER_LEN..need).ok_or(MessageError::Short { need, have: b.len() })?;
        Ok(Frame { header, payload })
    }

    pub fn len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    fn expect(&self, ty: u8) -> Result<(), MessageError> {
        if self.header.message_type == ty {
            Ok(())
        } else {
            Err(MessageError::WrongType { expected: ty, got: self.header.message_type })
        }
    }
}

fn emit_frame(out: &mut Vec<u8>, message_type: u8, slot: u8, seq: u8, specific: [u8; 3], payload: &[u8]) {
    Header { message_type, length: payload.len() as u32, slot, seq, specific }.emit(out);
    out.extend_from_slice(payload);
}

// ---------------------------------------------------------------------------------------------
// Status bytes

/// `bmICCStatus` (bits 1-0 of `bStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IccStatus {
    /// 0: card present and active (powered).
    Active,
    /// 1: card present and inactive.
    Inactive,
    /// 2: no card.
    Absent,
    /// 3: reserved.
    Rfu,
}

/// `bmCommandStatus` (bits 7-6 of `bStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandStatus {
    /// 0: processed without error.
    Ok,
    /// 1: failed, `bError` says why.
    Failed,
    /// 2: time extension requested; `bError` is the multiplier; the real answer follows.
    TimeExtension,
    /// 3: reserved.
    Rfu,
}

/// `bStatus` and `bError` of a reply.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Status {
    pub status: u8,
    pub error: u8,
}

impl Status {
    pub const OK_ACTIVE: Status = Status { status: 0, error: 0 };

    pub fn new(icc: IccStatus, cmd: CommandStatus, error: u8) -> Self {
        let i = match icc {
            IccStatus::Active => 0,
            IccStatus::Inactive => 1,
            IccStatus::Absent => 2,
            IccStatus::Rfu => 3,
        };
        let c = match cmd {
            CommandStatus::Ok => 0,
            CommandStatus::Failed => 1,
            CommandStatus::TimeExtension => 2,
            CommandStatus::Rfu => 3,
        };
        Status { status: c << 6 | i, error }
    }

    pub fn icc(self) -> IccStatus {
        match self.status & 3 {
            0 => IccStatus::Active,
            1 => IccStatus::Inactive,
            2 => IccStatus::Absent,
            _ => IccStatus::Rfu,
        }
    }

    pub fn command(self) -> CommandStatus {
        match self.status >> 6 {
            0 => CommandStatus::Ok,
            1 => CommandStatus::Failed,
            2 => CommandStatus::TimeExtension,
            _ => CommandStatus::Rfu,
        }
    }

    pub fn failed(self) -> bool {
        self.command() == CommandStatus::Failed
    }

    pub fn error_code(self) -> ErrorCode {
        ErrorCode(self.error)
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status({:?}, {:?}", self.icc(), self.command())?;
        if self.command() != CommandStatus::Ok {
            write!(f, ", {:?}", self.error_code())?;
        }
        f.write_str(")")
    }
}

/// `bError` (ccid.md §2.5). Open: every value is kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u8);

impl ErrorCode {
    pub const CMD_ABORTED: u8 = 0xFF;
    pub const ICC_MUTE: u8 = 0xFE;
    pub const XFR_PARITY_ERROR: u8 = 0xFD;
    pub const XFR_OVERRUN: u8 = 0xFC;
    pub const HW_ERROR: u8 = 0xFB;
    pub const BAD_ATR_TS: u8 = 0xF8;
    pub const BAD_ATR_TCK: u8 = 0xF7;
    pub const ICC_PROTOCOL_NOT_SUPPORTED: u8 = 0xF6;
    pub const ICC_CLASS_NOT_SUPPORTED: u8 = 0xF5;
    pub const PROCEDURE_BYTE_CONFLICT: u8 = 0xF4;
    pub const DEACTIVATED_PROTOCOL: u8 = 0xF3;
    pub const BUSY_WITH_AUTO_SEQUENCE: u8 = 0xF2;
    pub const PIN_TIMEOUT: u8 = 0xF0;
    pub const PIN_CANCELLED: u8 = 0xEF;
    pub const CMD_SLOT_BUSY: u8 = 0xE0;
    pub const CMD_NOT_SUPPORTED: u8 = 0x00;

    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            Self::CMD_ABORTED => "CMD_ABORTED",
            Self::ICC_MUTE => "ICC_MUTE",
            Self::XFR_PARITY_ERROR => "XFR_PARITY_ERROR",
            Self::XFR_OVERRUN => "XFR_OVERRUN",
            Self::HW_ERROR => "HW_ERROR",
            Self::BAD_ATR_TS => "BAD_ATR_TS",
            Self::BAD_ATR_TCK => "BAD_ATR_TCK",
            Self::ICC_PROTOCOL_NOT_SUPPORTED => "ICC_PROTOCOL_NOT_SUPPORTED",
            Self::ICC_CLASS_NOT_SUPPORTED => "ICC_CLASS_NOT_SUPPORTED",
            Self::PROCEDURE_BYTE_CONFLICT => "PROCEDURE_BYTE_CONFLICT",
            Self::DEACTIVATED_PROTOCOL => "DEACTIVATED_PROTOCOL",
            Self::BUSY_WITH_AUTO_SEQUENCE => "BUSY_WITH_AUTO_SEQUENCE",
            Self::PIN_TIMEOUT => "PIN_TIMEOUT",
            Self::PIN_CANCELLED => "PIN_CANCELLED",
            Self::CMD_SLOT_BUSY => "CMD_SLOT_BUSY",
            Self::CMD_NOT_SUPPORTED => "CMD_NOT_SUPPORTED",
            0x01..=0x7F => "bad parameter offset",
            0x81..=0xC0 => "vendor error",
            _ => return None,
        })
    }

    /// `0x01..=0x7F`: the offset of the offending field in the command.
    pub fn bad_offset(self) -> Option<u8> {
        (0x01..=0x7F).contains(&self.0).then_some(self.0)
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{:#04x} {n}", self.0),
            None => write!(f, "{:#04x}", self.0),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

// ---------------------------------------------------------------------------------------------
// Protocol data structures (SetParameters / Parameters)

/// `abProtocolDataStructure` for T=0 (5 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct T0Params {
    /// FI (bits 7-4), DI (bits 3-0).
    pub fi_di: u8,
    /// bit 1: inverse convention.
    pub tcckst: u8,
    /// Extra guard time (TC1).
    pub guard_time: u8,
    /// WI (TC2).
    pub waiting_integer: u8,
    pub clock_stop: u8,
}

/// `abProtocolDataStructure` for T=1 (7 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct T1Params {
    pub fi_di: u8,
    /// `0x10` | bit 1 inverse convention | bit 0 CRC.
    pub tcckst: u8,
    pub guard_time: u8,
    /// BWI (bits 7-4), CWI (bits 3-0).
    pub waiting_integers: u8,
    pub clock_stop: u8,
    pub ifsc: u8,
    pub nad: u8,
}

/// One of the two protocol data structures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolParams {
    T0(T0Params),
    T1(T1Params),
}

impl ProtocolParams {
    /// `bProtocolNum`.
    pub fn protocol_num(&self) -> u8 {
        match self {
            ProtocolParams::T0(_) => 0,
            ProtocolParams::T1(_) => 1,
        }
    }

    /// The structure's bytes (5 or 7) in a fixed array, and how many are used.
    pub fn to_bytes(&self) -> ([u8; 7], usize) {
        match *self {
            ProtocolParams::T0(p) => ([p.fi_di, p.tcckst, p.guard_time, p.waiting_integer, p.clock_stop, 0, 0], 5),
            ProtocolParams::T1(p) => {
                ([p.fi_di, p.tcckst, p.guard_time, p.waiting_integers, p.clock_stop, p.ifsc, p.nad], 7)
            }
        }
    }

    pub fn parse(protocol_num: u8, b: &[u8]) -> Result<Self, MessageError> {
        match (protocol_num, b) {
            (0, &[fi_di, tcckst, guard_time, waiting_integer, clock_stop]) => {
                Ok(ProtocolParams::T0(T0Params { fi_di, tcckst, guard_time, waiting_integer, clock_stop }))
            }
            (1, &[fi_di, tcckst, guard_time, waiting_integers, clock_stop, ifsc, nad]) => {
                Ok(ProtocolParams::T1(T1Params { fi_di, tcckst, guard_time, waiting_integers, clock_stop, ifsc, nad }))
            }
            (0 | 1, _) => Err(MessageError::BadPayload { message: msg_type::PARAMETERS, len: b.len() }),
            (p, _) => Err(MessageError::UnknownProtocol(p)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Host → reader

/// A PC_to_RDR message: its type, the reply type it expects, its header bytes 7-9 and payload.
pub trait Command {
    const TYPE: u8;
    const NAME: &'static str;
    type Reply: Reply;
    /// Header bytes 7-9.
    fn specific(&self) -> [u8; 3];
    fn payload(&self) -> &[u8];

    fn emit(&self, slot: u8, seq: u8, out: &mut Vec<u8>) {
        emit_frame(out, Self::TYPE, slot, seq, self.specific(), self.payload());
    }
}

/// `bPowerSelect` of IccPowerOn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerSelect {
    Auto,
    V5,
    V3,
    V1_8,
}

impl PowerSelect {
    pub fn byte(self) -> u8 {
        match self {
            PowerSelect::Auto => 0,
            PowerSelect::V5 => 1,
            PowerSelect::V3 => 2,
            PowerSelect::V1_8 => 3,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => PowerSelect::Auto,
            1 => PowerSelect::V5,
            2 => PowerSelect::V3,
            3 => PowerSelect::V1_8,
            _ => return None,
        })
    }
}

/// `0x62` IccPowerOn → DataBlock (the ATR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IccPowerOn {
    pub power: PowerSelect,
}

/// `0x63` IccPowerOff → SlotStatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IccPowerOff;

/// `0x65` GetSlotStatus → SlotStatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetSlotStatus;

/// `0x6F` XfrBlock → DataBlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XfrBlock<'a> {
    /// `bBWI`: block waiting time multiplier for this command (T=1 WTX), 0 = none.
    pub bwi: u8,
    /// `wLevelParameter`: chaining code at the extended APDU level (§3.2), expected length at
    /// the character level, 0 otherwise.
    pub level: u16,
    pub data: &'a [u8],
}

/// `0x6C` GetParameters → Parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetParameters;

/// `0x6D` ResetParameters → Parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetParameters;

/// `0x61` SetParameters → Parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetParameters {
    pub params: ProtocolParams,
    bytes: [u8; 7],
    len: usize,
}

impl SetParameters {
    pub fn new(params: ProtocolParams) -> Self {
        let (bytes, len) = params.to_bytes();
        SetParameters { params, bytes, len }
    }
}

/// `0x6B` Escape → Escape reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escape<'a> {
    pub data: &'a [u8],
}

/// `0x69` Secure (PIN verification/modification) → DataBlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secure<'a> {
    pub bwi: u8,
    pub level: u16,
    pub data: &'a [u8],
}

/// `0x72` Abort → SlotStatus. Sent after the class request ABORT with the same bSlot/bSeq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abort;

macro_rules! simple_command {
    ($t:ty, $ty:expr, $name:expr, $reply:ty) => {
        impl Command for $t {
            const TYPE: u8 = $ty;
            const NAME: &'static str = $name;
            type Reply = $reply;
            fn specific(&self) -> [u8; 3] {
                [0; 3]
            }
            fn payload(&self) -> &[u8] {
                &[]
            }
        }
    };
}

simple_command!(IccPowerOff, msg_type::ICC_POWER_OFF, "IccPowerOff", SlotStatus);
simple_command!(GetSlotStatus, msg_type::GET_SLOT_STATUS, "GetSlotStatus", SlotStatus);
simple_command!(GetParameters, msg_type::GET_PARAMETERS, "GetParameters", Parameters);
simple_command!(ResetParameters, msg_type::RESET_PARAMETERS, "ResetParameters", Parameters);
simple_command!(Abort, msg_type::ABORT, "Abort", SlotStatus);

impl Command for IccPowerOn {
    const TYPE: u8 = msg_type::ICC_POWER_ON;
    const NAME: &'static str = "IccPowerOn";
    type Reply = DataBlock;
    fn specific(&self) -> [u8; 3] {
        [self.power.byte(), 0, 0]
    }
    fn payload(&self) -> &[u8] {
        &[]
    }
}

impl Command for XfrBlock<'_> {
    const TYPE: u8 = msg_type::XFR_BLOCK;
    const NAME: &'static str = "XfrBlock";
    type Reply = DataBlock;
    fn specific(&self) -> [u8; 3] {
        let l = self.level.to_le_bytes();
        [self.bwi, l[0], l[1]]
    }
    fn payload(&self) -> &[u8] {
        self.data
    }
}

impl Command for SetParameters {
    const TYPE: u8 = msg_type::SET_PARAMETERS;
    const NAME: &'static str = "SetParameters";
    type Reply = Parameters;
    fn specific(&self) -> [u8; 3] {
        [self.params.protocol_num(), 0, 0]
    }
    fn payload(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Command for Escape<'_> {
    const TYPE: u8 = msg_type::ESCAPE;
    const NAME: &'static str = "Escape";
    type Reply = EscapeReply;
    fn specific(&self) -> [u8; 3] {
        [0; 3]
    }
    fn payload(&self) -> &[u8] {
        self.data
    }
}

impl Command for Secure<'_> {
    const TYPE: u8 = msg_type::SECURE;
    const NAME: &'static str = "Secure";
    type Reply = DataBlock;
    fn specific(&self) -> [u8; 3] {
        let l = self.level.to_le_bytes();
        [self.bwi, l[0], l[1]]
    }
    fn payload(&self) -> &[u8] {
        self.data
    }
}

/// Any host → reader message, as a reader (the simulator) parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnyCommand<'a> {
    IccPowerOn(IccPowerOn),
    IccPowerOff(IccPowerOff),
    GetSlotStatus(GetSlotStatus),
    XfrBlock(XfrBlock<'a>),
    GetParameters(GetParameters),
    ResetParameters(ResetParameters),
    SetParameters(SetParameters),
    Escape(Escape<'a>),
    Secure(Secure<'a>),
    Abort(Abort),
    /// A known but unmodelled command (IccClock, T0APDU, Mechanical, SetDataRateAndClock).
    Other {
        message_type: u8,
    },
}

impl<'a> AnyCommand<'a> {
    pub fn parse(f: &Frame<'a>) -> Result<Self, MessageError> {
        let h = &f.header;
        let s = h.specific;
        let level = u16::from_le_bytes([s[1], s[2]]);
        Ok(match h.message_type {
            msg_type::ICC_POWER_ON => {
                // Unknown voltage codes are reported as automatic (readers treat them so or fail).
                AnyCommand::IccPowerOn(IccPowerOn { power: PowerSelect::from_byte(s[0]).unwrap_or(PowerSelect::Auto) })
            }
            msg_type::ICC_POWER_OFF => AnyCommand::IccPowerOff(IccPowerOff),
            msg_type::GET_SLOT_STATUS => AnyCommand::GetSlotStatus(GetSlotStatus),
            msg_type::XFR_BLOCK => AnyCommand::XfrBlock(XfrBlock { bwi: s[0], level, data: f.payload }),
            msg_type::GET_PARAMETERS => AnyCommand::GetParameters(GetParameters),
            msg_type::RESET_PARAMETERS => AnyCommand::ResetParameters(ResetParameters),
            msg_type::SET_PARAMETERS => {
                AnyCommand::SetParameters(SetParameters::new(ProtocolParams::parse(s[0], f.payload)?))
            }
            msg_type::ESCAPE => AnyCommand::Escape(Escape { data: f.payload }),
            msg_type::SECURE => AnyCommand::Secure(Secure { bwi: s[0], level, data: f.payload }),
            msg_type::ABORT => AnyCommand::Abort(Abort),
            t
            @ (msg_type::ICC_CLOCK | msg_type::T0_APDU | msg_type::MECHANICAL | msg_type::SET_DATA_RATE_AND_CLOCK) => {
                AnyCommand::Other { message_type: t }
            }
            t => return Err(MessageError::UnknownType(t)),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Reader → host

/// A RDR_to_PC message.
pub trait Reply: Sized {
    const TYPE: u8;
    fn parse(f: &Frame<'_>) -> Result<Self, MessageError>;
    fn emit(&self, slot: u8, seq: u8, out: &mut Vec<u8>);
    fn status(&self) -> Status;
}

/// `0x80` DataBlock: ATR, response APDU/TPDU/block, characters.
#[derive(Clone, PartialEq, Eq)]
pub struct DataBlock {
    pub status: Status,
    /// `bChainParameter` (extended APDU level), 0 otherwise.
    pub chain: u8,
    pub data: Vec<u8>,
}

impl fmt::Debug for DataBlock {
    /// Length and the first 16 bytes only: responses may carry secrets and be long.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = &self.data[..self.data.len().min(16)];
        write!(f, "DataBlock({:?}, chain {:#04x}, {} bytes {:02X?}", self.status, self.chain, self.data.len(), head)?;
        if self.data.len() > 16 {
            f.write_str("…")?;
        }
        f.write_str(")")
    }
}

/// `0x81` SlotStatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotStatus {
    pub status: Status,
    /// `bClockStatus`: 0 running, 1 stopped low, 2 stopped high, 3 stopped unknown.
    pub clock_status: u8,
}

/// `0x82` Parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameters {
    pub status: Status,
    pub protocol_num: u8,
    /// The protocol data structure as sent (kept raw: a failed reply may carry anything).
    pub data: Vec<u8>,
}

impl Parameters {
    pub fn params(&self) -> Result<ProtocolParams, MessageError> {
        ProtocolParams::parse(self.protocol_num, &self.data)
    }
}

/// `0x83` Escape reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscapeReply {
    pub status: Status,
    pub data: Vec<u8>,
}

impl Reply for DataBlock {
    const TYPE: u8 = msg_type::DATA_BLOCK;
    fn parse(f: &Frame<'_>) -> Result<Self, MessageError> {
        f.expect(Self::TYPE)?;
        Ok(DataBlock { status: f.header.status(), chain: f.header.specific[2], data: f.payload.to_vec() })
    }
    fn emit(&self, slot: u8, seq: u8, out: &mut Vec<u8>) {
        emit_frame(out, Self::TYPE, slot, seq, [self.status.status, self.status.error, self.chain], &self.data);
    }
    fn status(&self) -> Status {
        self.status
    }
}

impl Reply for SlotStatus {
    const TYPE: u8 = msg_type::SLOT_STATUS;
    /// A payload (there should be none) is ignored.
    fn parse(f: &Frame<'_>) -> Result<Self, MessageError> {
        f.expect(Self::TYPE)?;
        Ok(SlotStatus { status: f.header.status(), clock_status: f.header.specific[2] })
    }
    fn emit(&self, slot: u8, seq: u8, out: &mut Vec<u8>) {
        emit_frame(out, Self::TYPE, slot, seq, [self.status.status, self.status.error, self.clock_status], &[]);
    }
    fn status(&self) -> Status {
        self.status
    }
}

impl Reply for Parameters {
    const TYPE: u8 = msg_type::PARAMETERS;
    fn parse(f: &Frame<'_>) -> Result<Self, MessageError> {
        f.expect(Self::TYPE)?;
        Ok(Parameters { status: f.header.status(), protocol_num: f.header.specific[2], data: f.payload.to_vec() })
    }
    fn emit(&self, slot: u8, seq: u8, out: &mut Vec<u8>) {
        emit_frame(out, Self::TYPE, slot, seq, [self.status.status, self.status.error, self.protocol_num], &self.data);
    }
    fn status(&self) -> Status {
        self.status
    }
}

impl Reply for EscapeReply {
    const TYPE: u8 = msg_type::ESCAPE_REPLY;
    fn parse(f: &Frame<'_>) -> Result<Self, MessageError> {
        f.expect(Self::TYPE)?;
        Ok(EscapeReply { status: f.header.status(), data: f.payload.to_vec() })
    }
    fn emit(&self, slot: u8, seq: u8, out: &mut Vec<u8>) {
        emit_frame(out, Self::TYPE, slot, seq, [self.status.status, self.status.error, 0], &self.data);
    }
    fn status(&self) -> Status {
        self.status
    }
}

/// A reply of any type with only its status (what the driver keeps of a failed command, whose
/// reply type may differ from the expected one: QEMU answers Escape with a SlotStatus).
pub fn any_reply_status(f: &Frame<'_>) -> Result<Status, MessageError> {
    match f.header.message_type {
        msg_type::DATA_BLOCK
        | msg_type::SLOT_STATUS
        | msg_type::PARAMETERS
        | msg_type::ESCAPE_REPLY
        | msg_type::DATA_RATE_AND_CLOCK => Ok(f.header.status()),
        t => Err(MessageError::UnknownType(t)),
    }
}

// ---------------------------------------------------------------------------------------------
// Interrupt-IN

/// A message on the interrupt endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// `0x50` RDR_to_PC_NotifySlotChange: 2 bits per slot (present, changed).
    SlotChange { bitmap: Vec<u8> },
    /// `0x51` RDR_to_PC_HardwareError.
    HardwareError { slot: u8, seq: u8, code: u8 },
}

impl Notification {
    pub fn parse(b: &[u8]) -> Result<Self, MessageError> {
        let mut c = Cursor::new(b);
        let ty = c.u8().ok_or(MessageError::Short { need: 1, have: 0 })?;
        match ty {
            msg_type::NOTIFY_SLOT_CHANGE => {
                if c.remaining() == 0 {
                    return Err(MessageError::Short { need: 2, have: b.len() });
                }
                Ok(Notification::SlotChange { bitmap: c.rest().to_vec() })
            }
            msg_type::HARDWARE_ERROR => {
                let short = || MessageError::Short { need: 4, have: b.len() };
                let slot = c.u8().ok_or_else(short)?;
                let seq = c.u8().ok_or_else(short)?;
                let code = c.u8().ok_or_else(short)?;
                Ok(Notification::HardwareError { slot, seq, code })
            }
            t => Err(MessageError::UnknownType(t)),
        }
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Notification::SlotChange { bitmap } => {
                out.push(msg_type::NOTIFY_SLOT_CHANGE);
                out.extend_from_slice(bitmap);
            }
            Notification::HardwareError { slot, seq, code } => {
                out.extend_from_slice(&[msg_type::HARDWARE_ERROR, *slot, *seq, *code]);
            }
        }
    }

    /// For a slot-change notification: `(card present, changed)` of `slot`, `None` if the bitmap
    /// does not cover it (or this is not a slot change).
    pub fn slot(&self, slot: u8) -> Option<(bool, bool)> {
        match self {
            Notification::SlotChange { bitmap } => {
                let byte = *bitmap.get(slot as usize / 4)?;
                let shift = 2 * (slot % 4);
                Some((byte >> shift & 1 != 0, byte >> (shift + 1) & 1 != 0))
            }
            Notification::HardwareError { .. } => None,
        }
    }

    /// Build a slot-change notification for one slot.
    pub fn single_slot(present: bool, changed: bool) -> Self {
        Notification::SlotChange { bitmap: vec![present as u8 | (changed as u8) << 1] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_cmd<C: Command>(c: &C) -> Vec<u8> {
        let mut out = Vec::new();
        c.emit(0, 0x42, &mut out);
        let f = Frame::parse(&out).unwrap();
        assert_eq!(f.header.message_type, C::TYPE);
        assert_eq!(f.header.seq, 0x42);
        assert_eq!(f.len(), out.len());
        // Re-emit through the parsed form.
        let any = AnyCommand::parse(&f).unwrap();
        let mut again = Vec::new();
        match any {
            AnyCommand::IccPowerOn(c) => c.emit(0, 0x42, &mut again),
            AnyCommand::IccPowerOff(c) => c.emit(0, 0x42, &mut again),
            AnyCommand::GetSlotStatus(c) => c.emit(0, 0x42, &mut again),
            AnyCommand::XfrBlock(c) => c.emit(0, 0x42, &mut again),
            AnyCommand::GetParameters(c) => c.emit(0, 0x42, &mut again),
            AnyCommand::ResetParameters(c) => c.emit(0, 0x42, &mut again),
            AnyCommand::SetParameters(c) => c.emit(0, 0x42, &mut again),
            AnyCommand::Escape(c) => c.emit(0, 0x42, &mut again),
            AnyCommand::Secure(c) => c.emit(0, 0x42, &mut again),
            AnyCommand::Abort(c) => c.emit(0, 0x42, &mut again),
            AnyCommand::Other { .. } => unreachable!(),
        }
        assert_eq!(again, out);
        out
    }

    #[test]
    fn commands_bytes() {
        assert_eq!(roundtrip_cmd(&IccPowerOn { power: PowerSelect::V3 }), [0x62, 0, 0, 0, 0, 0, 0x42, 2, 0, 0]);
        assert_eq!(roundtrip_cmd(&IccPowerOff), [0x63, 0, 0, 0, 0, 0, 0x42, 0, 0, 0]);
        assert_eq!(roundtrip_cmd(&GetSlotStatus), [0x65, 0, 0, 0, 0, 0, 0x42, 0, 0, 0]);
        assert_eq!(
            roundtrip_cmd(&XfrBlock { bwi: 3, level: 0x0010, data: &[0x00, 0xA4] }),
            [0x6F, 2, 0, 0, 0, 0, 0x42, 3, 0x10, 0, 0x00, 0xA4]
        );
        assert_eq!(roundtrip_cmd(&GetParameters)[0], 0x6C);
        assert_eq!(roundtrip_cmd(&ResetParameters)[0], 0x6D);
        let t1 = ProtocolParams::T1(T1Params {
            fi_di: 0x13,
            tcckst: 0x10,
            guard_time: 0,
            waiting_integers: 0x15,
            clock_stop: 0,
            ifsc: 0xFE,
            nad: 0,
        });
        assert_eq!(
            roundtrip_cmd(&SetParameters::new(t1)),
            [0x61, 7, 0, 0, 0, 0, 0x42, 1, 0, 0, 0x13, 0x10, 0, 0x15, 0, 0xFE, 0]
        );
        let t0 =
            ProtocolParams::T0(T0Params { fi_di: 0x11, tcckst: 0, guard_time: 0, waiting_integer: 10, clock_stop: 0 });
        assert_eq!(roundtrip_cmd(&SetParameters::new(t0)), [0x61, 5, 0, 0, 0, 0, 0x42, 0, 0, 0, 0x11, 0, 0, 10, 0]);
        assert_eq!(roundtrip_cmd(&Escape { data: &[0x6A] }), [0x6B, 1, 0, 0, 0, 0, 0x42, 0, 0, 0, 0x6A]);
        assert_eq!(roundtrip_cmd(&Secure { bwi: 0, level: 0, data: &[0] })[0], 0x69);
        assert_eq!(roundtrip_cmd(&Abort), [0x72, 0, 0, 0, 0, 0, 0x42, 0, 0, 0]);
    }

    #[test]
    fn replies_roundtrip() {
        let db = DataBlock {
            status: Status::new(IccStatus::Active, CommandStatus::Ok, 0),
            chain: 1,
            data: vec![0x90, 0x00],
        };
        let mut out = Vec::new();
        db.emit(0, 7, &mut out);
        assert_eq!(out, [0x80, 2, 0, 0, 0, 0, 7, 0, 0, 1, 0x90, 0x00]);
        assert_eq!(DataBlock::parse(&Frame::parse(&out).unwrap()).unwrap(), db);

        let ss = SlotStatus {
            status: Status::new(IccStatus::Absent, CommandStatus::Failed, ErrorCode::ICC_MUTE),
            clock_status: 0,
        };
        out.clear();
        ss.emit(0, 9, &mut out);
        assert_eq!(out, [0x81, 0, 0, 0, 0, 0, 9, 0x42, 0xFE, 0]);
        let f = Frame::parse(&out).unwrap();
        assert_eq!(SlotStatus::parse(&f).unwrap(), ss);
        assert_eq!(DataBlock::parse(&f), Err(MessageError::WrongType { expected: 0x80, got: 0x81 }));
        assert_eq!(any_reply_status(&f).unwrap().icc(), IccStatus::Absent);

        let p = Parameters { status: Status::OK_ACTIVE, protocol_num: 0, data: vec![0x11, 0, 0, 10, 0] };
        out.clear();
        p.emit(0, 1, &mut out);
        let back = Parameters::parse(&Frame::parse(&out).unwrap()).unwrap();
        assert_eq!(back, p);
        assert!(matches!(back.params().unwrap(), ProtocolParams::T0(T0Params { waiting_integer: 10, .. })));

        let e = EscapeReply { status: Status::OK_ACTIVE, data: vec![1, 2, 3] };
        out.clear();
        e.emit(0, 2, &mut out);
        assert_eq!(EscapeReply::parse(&Frame::parse(&out).unwrap()).unwrap(), e);
    }

    #[test]
    fn status_bits() {
        let s = Status { status: 0x80, error: 3 };
        assert_eq!(s.command(), CommandStatus::TimeExtension);
        assert_eq!(s.icc(), IccStatus::Active);
        let s = Status { status: 0x41, error: 0xFE };
        assert!(s.failed());
        assert_eq!(s.icc(), IccStatus::Inactive);
        assert_eq!(s.error_code().name(), Some("ICC_MUTE"));
        assert_eq!(Status { status: 0xC3, error: 0 }.command(), CommandStatus::Rfu);
        assert_eq!(Status { status: 0xC3, error: 0 }.icc(), IccStatus::Rfu);
        assert_eq!(ErrorCode(5).bad_offset(), Some(5));
        assert_eq!(ErrorCode(0xFE).bad_offset(), None);
        assert_eq!(ErrorCode(0xD0).name(), None);
        for icc in [IccStatus::Active, IccStatus::Inactive, IccStatus::Absent, IccStatus::Rfu] {
            for cmd in [CommandStatus::Ok, CommandStatus::Failed, CommandStatus::TimeExtension, CommandStatus::Rfu] {
                let s = Status::new(icc, cmd, 0);
                assert_eq!((s.icc(), s.command()), (icc, cmd));
            }
        }
        assert!(format!("{:?}", Status { status: 0x40, error: 0xFB }).contains("HW_ERROR"));
    }

    #[test]
    fn short_and_hostile_frames() {
        assert_eq!(Frame::parse(&[]), Err(MessageError::Short { need: 10, have: 0 }));
        assert_eq!(
            Frame::parse(&[0x80, 5, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]),
            Err(MessageError::Short { need: 15, have: 12 })
        );
        assert_eq!(Frame::parse(&[0x80, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0]), Err(MessageError::TooLong(u32::MAX)));
        // Trailing bytes are not part of the frame.
        let f = Frame::parse(&[0x81, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0xAA]).unwrap();
        assert_eq!(f.len(), 10);
        assert!(f.payload.is_empty());
        // Unknown command and reply types.
        let f = Frame::parse(&[0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(AnyCommand::parse(&f), Err(MessageError::UnknownType(0x99)));
        assert_eq!(any_reply_status(&f), Err(MessageError::UnknownType(0x99)));
        // SetParameters with a bad structure.
        let f = Frame::parse(&[0x61, 2, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2]).unwrap();
        assert!(matches!(AnyCommand::parse(&f), Err(MessageError::BadPayload { .. })));
        let f = Frame::parse(&[0x61, 0, 0, 0, 0, 0, 0, 7, 0, 0]).unwrap();
        assert_eq!(AnyCommand::parse(&f), Err(MessageError::UnknownProtocol(7)));
        let f = Frame::parse(&[0x6E, 0, 0, 0, 0, 0, 0, 7, 0, 0]).unwrap();
        assert_eq!(AnyCommand::parse(&f), Ok(AnyCommand::Other { message_type: 0x6E }));
    }

    #[test]
    fn notifications() {
        let n = Notification::parse(&[0x50, 0x03]).unwrap();
        assert_eq!(n.slot(0), Some((true, true)));
        assert_eq!(n.slot(1), Some((false, false)));
        assert_eq!(n.slot(4), None);
        assert_eq!(Notification::parse(&[0x50, 0x02]).unwrap().slot(0), Some((false, true)));
        // Slot 5 is in the second byte, bits 2-3.
        let n = Notification::parse(&[0x50, 0x00, 0b0000_1100]).unwrap();
        assert_eq!(n.slot(5), Some((true, true)));
        assert_eq!(n.slot(4), Some((false, false)));
        let h = Notification::parse(&[0x51, 0, 7, 1]).unwrap();
        assert_eq!(h, Notification::HardwareError { slot: 0, seq: 7, code: 1 });
        assert_eq!(h.slot(0), None);
        let mut out = Vec::new();
        h.emit(&mut out);
        assert_eq!(out, [0x51, 0, 7, 1]);
        out.clear();
        Notification::single_slot(true, true).emit(&mut out);
        assert_eq!(out, [0x50, 0x03]);
        assert!(Notification::parse(&[]).is_err());
        assert!(Notification::parse(&[0x50]).is_err());
        assert!(Notification::parse(&[0x51, 0, 1]).is_err());
        assert_eq!(Notification::parse(&[0x52, 0]), Err(MessageError::UnknownType(0x52)));
    }
}
