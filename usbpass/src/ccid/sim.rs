//! Simulated CCID readers: [`SimReader`] implements [`Transport`] for every exchange level, with
//! a simulated card behind it and fault injection, so the whole driver runs in unit tests.
//!
//! * **TPDU, T=1**: a card-side T=1 engine ([`CardT1`]: chaining both ways, R-block
//!   retransmission, S(RESYNCH)/S(IFS)/S(WTX)/S(ABORT)); faults: corrupted EDC, lost command or
//!   reply (the reader reports `ICC_MUTE`), parity errors, WTX and IFS requests by the card,
//!   smaller card chunks.
//! * **TPDU, T=0**: a card-side T=0 over TPDUs ([`CardT0`]): case 4 answered `61xx` + GET
//!   RESPONSE, optional strict Le (`6Cxx`).
//! * **character**: the card's characters through a reader that moves `wLevelParameter` of
//!   them per XfrBlock ([`CardChars`]). T=0: the card answers a 5-byte header with procedure
//!   bytes (optional NULLs, ACK for all data or `INS⊕FF` per byte, [`Quirks::char_ack`]), takes
//!   or sends the data, ends with SW1 SW2 (`61xx` after data-in commands, `6Cxx` for a wrong
//!   Le); it knows its commands' direction ([`CardChars::incoming`]). T=1: the card's blocks
//!   read as the host asks (prologue, then the rest). A reply can be replaced
//!   ([`Fault::CharReply`]); too few characters → `ICC_MUTE`.
//! * **short APDU** and **extended APDU**: APDUs to the card, `wLevelParameter` command chaining
//!   and `bChainParameter` response chaining; optionally a short-APDU reader that chains anyway.
//! * **pinpad** (a descriptor with `bPINSupport`, e.g. [`profiles::tpdu_pinpad`]):
//!   `PC_to_RDR_Secure` verify/modify with what the user types ([`SimReader::pinpad`],
//!   [`PinEntry`]) inserted into the APDU per the structure (ASCII, BCD or binary digits,
//!   justification, PIN block size, PIN length field); at the TPDU level with T=1 the reader
//!   sends the card one I-block made of `bTeoPrologue`, the APDU and the EDC, and returns the
//!   card's block, so the card-side engine checks the host's N(S) and LEN; the T=1 faults apply.
//! * **QEMU 7.2** ([`SimReader::qemu`]): its descriptor, APDU pass-through at the TPDU level,
//!   384-byte answer limit (larger answers vanish), failed SlotStatus for Escape/Secure, stalled
//!   ABORT request.
//! * **USB**: replies that are a multiple of `wMaxPacketSize` are followed by a zero-length
//!   packet (what QEMU shows after every 64-byte message), optional packet-by-packet delivery,
//!   time extensions, stale replies, withheld (late) replies, stalls, unplugging, card removal
//!   with NotifySlotChange.
//!
//! The card is anything implementing [`SimCard`]; the tests use the project's virtual card
//! (`pcsc_bridge_tests::card::Card`).

use super::apdu::{Apdu, Case};
use super::atr::Atr;
use super::descriptor::{
    CcidDescriptor, ExchangeLevel, Features, PinSupport, ReaderProtocols, VoltageSupport, DESCRIPTOR_TYPE,
};
use super::message::{
    AnyCommand, CommandStatus, DataBlock, ErrorCode, EscapeReply, Frame, IccStatus, Notification, Parameters,
    PowerSelect, Reply, SlotStatus, Status,
};
use super::t1::{Block, Edc, RError, SKind};
use super::transport::{class_request, Endpoint, Transport, TransportError};
use std::collections::VecDeque;
use std::time::Duration;

/// The card behind a simulated reader: APDU in, response APDU out.
pub trait SimCard: Send {
    /// Power-up or reset.
    fn reset(&mut self);
    /// Process one command APDU; `out` receives data + SW1 SW2.
    fn process(&mut self, apdu: &[u8], out: &mut Vec<u8>);
}

#[cfg(any(test, feature = "sim"))]
impl SimCard for pcsc_bridge_tests::card::Card {
    fn reset(&mut self) {
        pcsc_bridge_tests::card::Card::reset(self)
    }
    fn process(&mut self, apdu: &[u8], out: &mut Vec<u8>) {
        pcsc_bridge_tests::card::Card::process(self, apdu, out)
    }
}

/// A fault applied to one bulk-OUT command (see [`SimReader::fault`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `n` time-extension replies (multiplier `m`) before the answer.
    TimeExtension(u8, u8),
    /// A reply with another bSeq before the answer.
    Stale,
    /// A zero-length packet before the answer.
    Zlp,
    /// No answer now; it arrives before the next command's answer (unless aborted).
    Withhold,
    /// The reader stalls bulk-IN instead of answering.
    StallIn,
    /// The reader stalls bulk-OUT: the command is not processed.
    StallOut,
    /// The device is unplugged before this command.
    Unplug,
    /// The card is pulled out before this command.
    RemoveCard,
    /// T=1: the card never sees the block; the reader answers `ICC_MUTE`.
    LoseCommand,
    /// T=1: the card processes the block but its answer is lost (`ICC_MUTE`).
    LoseReply,
    /// T=1: the reader reports a parity error; the card never sees the block.
    Parity,
    /// T=1: the card's answer arrives with a corrupted EDC.
    CorruptReply,
    /// T=1: before its response the card asks for a waiting-time extension.
    CardWtx(u8),
    /// T=1: before its response the card announces a new IFSC.
    CardIfs(u8),
    /// Character level: the reader returns these characters (status OK) instead of the card's.
    CharReply(Vec<u8>),
}

/// What the user does at a simulated pinpad on `PC_to_RDR_Secure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinEntry {
    /// Types `pin` (ASCII digits) and OK; for a modification `pin` is the current PIN and `new`
    /// the new one (typed again when the structure asks for a confirmation).
    Types { pin: Vec<u8>, new: Vec<u8> },
    /// Nobody types: the reader gives up with `PIN_TIMEOUT` (also when the typed PIN is outside
    /// the structure's minimum/maximum length: the reader never accepts it).
    Timeout,
    /// The user presses Cancel: `PIN_CANCELLED`.
    Cancel,
}

/// Reader behaviour switches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quirks {
    /// QEMU 7.2 behaviour (see the module documentation).
    pub qemu: bool,
    /// A short-APDU reader that chains long responses with `bChainParameter`.
    pub chain_short_responses: bool,
    /// Deliver bulk-IN one packet per read.
    pub packetize: bool,
    /// `wMaxPacketSize`.
    pub mps: usize,
    /// The reader has an interrupt endpoint.
    pub has_interrupt: bool,
    /// T=0 card: a case-2 TPDU whose P3 differs from the data available gets `6Cxx`.
    pub t0_strict_le: bool,
    /// Character level, T=0: NULL bytes (`60`) the card sends before each procedure byte.
    pub char_nulls: u8,
    /// Character level, T=0: the card's ACKs are `INS ⊕ char_ack`: `00`/`01` for all the data
    /// at once, `FF`/`FE` for one byte at a time.
    pub char_ack: u8,
    /// T=1 card: largest INF per I-block it sends (0: the host's IFSD).
    pub card_chunk: usize,
    /// SetParameters fails with this bError.
    pub set_parameters_error: Option<u8>,
    /// The card answers PPS requests wrongly.
    pub pps_reject: bool,
    /// The only voltage the card powers up with (`None`: any).
    pub voltage: Option<PowerSelect>,
    /// Escape answers by command (other escapes are echoed; QEMU refuses them all).
    pub escape_answers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The next power-ons fail with these bError values, in order (`BB`: a reader in EMV mode).
    pub power_on_errors: Vec<u8>,
}

impl Default for Quirks {
    fn default() -> Self {
        Quirks {
            qemu: false,
            chain_short_responses: false,
            packetize: false,
            mps: 64,
            has_interrupt: true,
            t0_strict_le: false,
            char_nulls: 0,
            char_ack: 0,
            card_chunk: 0,
            set_parameters_error: None,
            pps_reject: false,
            voltage: None,
            escape_answers: Vec::new(),
            power_on_errors: Vec::new(),
        }
    }
}

/// What the simulated reader saw (for assertions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimLog {
    /// Every bulk-OUT message.
    pub commands: Vec<Vec<u8>>,
    /// `bBWI` of every XfrBlock.
    pub bwi: Vec<u8>,
    /// `bPowerSelect` of every IccPowerOn.
    pub voltages: Vec<u8>,
    /// The data of every XfrBlock (TPDUs, T=1 blocks, APDU chunks).
    pub xfr: Vec<Vec<u8>>,
    /// Class requests (request, wValue).
    pub class_requests: Vec<(u8, u16)>,
    pub halts: Vec<Endpoint>,
    /// APDUs the card processed.
    pub apdus: Vec<Vec<u8>>,
    /// The I-blocks a T=1 pinpad built for `PC_to_RDR_Secure` (prologue from the host, APDU
    /// with the PIN, EDC), as sent to the card.
    pub pin_blocks: Vec<Vec<u8>>,
}

/// Card side of T=1.
#[derive(Debug, Clone)]
pub struct CardT1 {
    ns: bool,
    nr: bool,
    /// The host's IFSD (what the card may send per block).
    pub ifsd: usize,
    pub edc: Edc,
    rx: Vec<u8>,
    tx: Vec<u8>,
    tx_pos: usize,
    sending: bool,
    last_i: Option<(bool, Vec<u8>)>,
    last_r: Option<Vec<u8>>,
    awaiting: Option<Vec<u8>>,
    pending_wtx: Option<u8>,
    pending_ifs: Option<u8>,
    /// Largest INF per I-block the card sends (0: IFSD).
    pub chunk: usize,
}

impl CardT1 {
    fn new(edc: Edc) -> Self {
        CardT1 {
            ns: false,
            nr: false,
            ifsd: 32,
            edc,
            rx: Vec::new(),
            tx: Vec::new(),
            tx_pos: 0,
            sending: false,
            last_i: None,
            last_r: None,
            awaiting: None,
            pending_wtx: None,
            pending_ifs: None,
            chunk: 0,
        }
    }

    fn enc(&self, b: Block) -> Vec<u8> {
        b.encode(0, self.edc)
    }

    fn r(&mut self, error: RError) -> Vec<u8> {
        let b = self.enc(Block::R { nr: self.nr, error });
        self.last_r = Some(b.clone());
        b
    }

    fn next_i(&mut self) -> Vec<u8> {
        if let Some(m) = self.pending_wtx.take() {
            let b = self.enc(Block::S { kind: SKind::Wtx, response: false, inf: vec![m] });
            self.awaiting = Some(b.clone());
            return b;
        }
        if let Some(v) = self.pending_ifs.take() {
            let b = self.enc(Block::S { kind: SKind::Ifs, response: false, inf: vec![v] });
            self.awaiting = Some(b.clone());
            return b;
        }
        let max = if self.chunk > 0 { self.chunk.min(self.ifsd) } else { self.ifsd }.max(1);
        let end = (self.tx_pos + max).min(self.tx.len());
        let more = end < self.tx.len();
        let b = self.enc(Block::I { ns: self.ns, more, inf: self.tx[self.tx_pos..end].to_vec() });
        self.last_i = Some((self.ns, b.clone()));
        self.ns = !self.ns;
        self.tx_pos = end;
        b
    }

    /// One block from the host, the card's block back.
    pub fn on_block(&mut self, bytes: &[u8], card: &mut dyn SimCard, apdus: &mut Vec<Vec<u8>>) -> Vec<u8> {
        let block = match Block::decode(bytes, self.edc) {
            Ok((_, b)) => b,
            Err(super::t1::BlockError::BadEdc) => return self.r(RError::Edc),
            Err(_) => return self.r(RError::Other),
        };
        match block {
            Block::I { ns, more, inf } => {
                if ns != self.nr {
                    return self.r(RError::Other);
                }
                if self.sending {
                    // A new command: our last response is acknowledged.
                    self.sending = false;
                    self.last_i = None;
                }
                self.awaiting = None;
                self.nr = !self.nr;
                self.rx.extend_from_slice(&inf);
                if more {
                    return self.r(RError::None);
                }
                let apdu = std::mem::take(&mut self.rx);
                let mut resp = Vec::new();
                card.process(&apdu, &mut resp);
                apdus.push(apdu);
                self.tx = resp;
                self.tx_pos = 0;
                self.sending = true;
                self.last_i = None;
                self.next_i()
            }
            Block::R { nr, .. } => {
                if let Some(req) = &self.awaiting {
                    return req.clone();
                }
                if self.sending {
                    match &self.last_i {
                        Some((lns, enc)) if nr == *lns => enc.clone(),
                        Some(_) if self.tx_pos < self.tx.len() => self.next_i(),
                        Some(_) => self.r(RError::Other),
                        None => self.next_i(),
                    }
                } else {
                    match &self.last_r {
                        Some(r) => r.clone(),
                        None => self.r(RError::None),
                    }
                }
            }
            Block::S { kind, response: false, inf } => match kind {
                SKind::Resynch => {
                    let (edc, chunk) = (self.edc, self.chunk);
                    *self = CardT1::new(edc);
                    self.chunk = chunk;
                    self.enc(Block::S { kind, response: true, inf: vec![] })
                }
                SKind::Ifs => {
                    self.ifsd = inf.first().copied().unwrap_or(32) as usize;
                    self.enc(Block::S { kind, response: true, inf })
                }
                SKind::Abort => {
                    self.rx.clear();
                    self.sending = false;
                    self.enc(Block::S { kind, response: true, inf })
                }
                SKind::Wtx => self.r(RError::Other),
            },
            Block::S { kind: SKind::Wtx | SKind::Ifs, response: true, .. } if self.awaiting.is_some() => {
                self.awaiting = None;
                self.next_i()
            }
            Block::S { response: true, .. } => self.r(RError::Other),
        }
    }
}

/// Card side of T=0 over TPDUs (the reader handles the procedure bytes).
#[derive(Debug, Clone, Default)]
pub struct CardT0 {
    pending: Vec<u8>,
    pub strict_le: bool,
}

impl CardT0 {
    fn more(left: usize) -> [u8; 2] {
        [0x61, if left >= 256 { 0 } else { left as u8 }]
    }

    /// One TPDU, data + SW back.
    pub fn on_tpdu(&mut self, tpdu: &[u8], card: &mut dyn SimCard, apdus: &mut Vec<Vec<u8>>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut run = |apdu: &[u8], out: &mut Vec<u8>| {
            card.process(apdu, out);
            apdus.push(apdu.to_vec());
        };
        match tpdu.len() {
            0..=3 => return vec![0x67, 0x00],
            4 => {
                self.pending.clear();
                run(tpdu, &mut out);
            }
            5 => {
                let p3 = tpdu[4];
                let ne = if p3 == 0 { 256 } else { p3 as usize };
                if tpdu[1] == 0xC0 && !self.pending.is_empty() {
                    if self.strict_le && ne > self.pending.len() {
                        return vec![0x6C, self.pending.len() as u8];
                    }
                    let n = ne.min(self.pending.len());
                    out.extend(self.pending.drain(..n));
                    if self.pending.is_empty() {
                        out.extend_from_slice(&[0x90, 0x00]);
                    } else {
                        out.extend_from_slice(&Self::more(self.pending.len()));
                    }
                    return out;
                }
                self.pending.clear();
                run(tpdu, &mut out);
                if self.strict_le && out.len() >= 2 && out[out.len() - 2..] == [0x90, 0x00] && out.len() - 2 != ne {
                    return vec![0x6C, (out.len() - 2) as u8];
                }
            }
            _ => {
                // Case 3 TPDU (a trailing Le byte of a case-4 APDU is ignored, like many readers).
                self.pending.clear();
                let p3 = tpdu[4] as usize;
                let end = (5 + p3).min(tpdu.len());
                run(&tpdu[..end], &mut out);
                if out.len() > 2 {
                    let sw = out.split_off(out.len() - 2);
                    if sw == [0x90, 0x00] {
                        self.pending = out;
                        return Self::more(self.pending.len()).to_vec();
                    }
                    out.extend_from_slice(&sw);
                }
            }
        }
        out
    }
}

/// Card side of the character level (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct CardChars {
    /// Characters the card has sent that the host has not read yet.
    pub out: VecDeque<u8>,
    /// T=0: the command header being received, then its incoming data.
    header: Vec<u8>,
    data: Vec<u8>,
    /// T=0: NULLs before each procedure byte.
    pub nulls: u8,
    /// T=0: ACK = `INS ⊕ ack`.
    pub ack: u8,
}

impl CardChars {
    /// Whether the card expects data from the host after this INS (when P3 is not 0): the
    /// commands of the project's card that carry data in (SELECT, ECHO, VERIFY, CHANGE
    /// REFERENCE DATA, RESET RETRY COUNTER, UPDATE BINARY); a T=0 card knows this per command.
    pub fn incoming(ins: u8) -> bool {
        matches!(ins, 0xA4 | 0x01 | 0x20 | 0x24 | 0x2C | 0xD6)
    }

    fn one_at_a_time(&self) -> bool {
        self.ack & 0xFE == 0xFE
    }

    /// A procedure byte (after the configured NULLs).
    fn procedure(&mut self, b: u8) {
        self.out.extend(std::iter::repeat_n(super::character::NULL, usize::from(self.nulls)));
        self.out.push_back(b);
    }

    fn status(&mut self, resp: &[u8]) {
        let [sw1, sw2] = match resp {
            [.., a, b] => [*a, *b],
            _ => [0x6F, 0x00],
        };
        self.procedure(sw1);
        self.out.push_back(sw2);
    }

    /// T=0 characters from the host.
    pub fn on_t0(&mut self, input: &[u8], t0: &mut CardT0, card: &mut dyn SimCard, apdus: &mut Vec<Vec<u8>>) {
        for &b in input {
            if self.header.len() < 5 {
                self.header.push(b);
                if self.header.len() == 5 {
                    self.command(t0, card, apdus);
                }
                continue;
            }
            self.data.push(b);
            let ins = self.header[1];
            if self.data.len() < usize::from(self.header[4]) {
                if self.one_at_a_time() {
                    self.procedure(ins ^ self.ack);
                }
                continue;
            }
            let mut tpdu = std::mem::take(&mut self.header);
            tpdu.append(&mut self.data);
            let resp = t0.on_tpdu(&tpdu, card, apdus);
            // Data cannot follow a data-in command at T=0: CardT0 keeps it for GET RESPONSE.
            self.status(&resp);
        }
    }

    /// A complete 5-byte header.
    fn command(&mut self, t0: &mut CardT0, card: &mut dyn SimCard, apdus: &mut Vec<Vec<u8>>) {
        let ins = self.header[1];
        let p3 = self.header[4];
        if matches!(ins & 0xF0, 0x60 | 0x90) {
            self.header.clear();
            self.status(&[0x6D, 0x00]);
            return;
        }
        if Self::incoming(ins) && p3 != 0 {
            self.procedure(ins ^ self.ack);
            return;
        }
        let header = std::mem::take(&mut self.header);
        let tpdu = if Self::incoming(ins) { &header[..4] } else { &header[..] };
        let mut resp = t0.on_tpdu(tpdu, card, apdus);
        let ne = if p3 == 0 { 256 } else { usize::from(p3) };
        if Self::incoming(ins) && resp.len() > 2 {
            // A data-in command without data (case 1) that has an answer: GET RESPONSE.
            let sw = resp.split_off(resp.len() - 2);
            if sw == [0x90, 0x00] {
                t0.pending = resp;
                resp = CardT0::more(t0.pending.len()).to_vec();
            } else {
                resp = sw;
            }
        } else if resp.len() > 2 && resp.len() - 2 != ne {
            // Exactly P3 bytes or none: the card tells the right length.
            resp = vec![0x6C, (resp.len() - 2) as u8];
        }
        let data = &resp[..resp.len().saturating_sub(2)];
        if self.one_at_a_time() {
            for &d in data {
                self.procedure(ins ^ self.ack);
                self.out.push_back(d);
            }
        } else if !data.is_empty() {
            self.procedure(ins ^ self.ack);
            self.out.extend(data);
        }
        self.status(&resp);
    }
}

/// A simulated reader with one slot.
pub struct SimReader {
    pub desc: CcidDescriptor,
    pub quirks: Quirks,
    pub log: SimLog,
    /// What the user does on the next `PC_to_RDR_Secure` (pinpad readers; default: nothing,
    /// [`PinEntry::Timeout`]).
    pub pinpad: PinEntry,
    card: Option<Box<dyn SimCard>>,
    atr: Vec<u8>,
    powered: bool,
    protocol: u8,
    params: Vec<u8>,
    pps_window: bool,
    t1: CardT1,
    t0: CardT0,
    chars: CardChars,
    ext_cmd: Vec<u8>,
    ext_resp: Vec<u8>,
    ext_pos: usize,
    faults: VecDeque<Vec<Fault>>,
    pending: VecDeque<Result<Vec<u8>, TransportError>>,
    late: Vec<Vec<u8>>,
    interrupts: VecDeque<Vec<u8>>,
    gone: bool,
}

/// Descriptors of the simulated readers (values per ccid.md §9.1).
pub mod profiles {
    use super::*;

    fn base(features: u32, max_msg: u32, protocols: u32) -> CcidDescriptor {
        made(features, max_msg, protocols, 7, 254, 0)
    }

    /// A descriptor built per specification with the values ccid.md §9.1 gives for a reader:
    /// `dwFeatures`, `dwMaxCCIDMessageLength`, `dwProtocols`, `bVoltageSupport`, `dwMaxIFSD`,
    /// `bPINSupport`; the rest as common readers have them (4 MHz clock, one slot).
    pub fn made(features: u32, max_msg: u32, protocols: u32, voltage: u8, max_ifsd: u32, pin: u8) -> CcidDescriptor {
        CcidDescriptor {
            descriptor_type: DESCRIPTOR_TYPE,
            bcd_ccid: 0x0110,
            max_slot_index: 0,
            voltage_support: VoltageSupport(voltage),
            protocols: ReaderProtocols(protocols),
            default_clock: 4000,
            maximum_clock: 4000,
            num_clock_supported: 0,
            data_rate: 10752,
            max_data_rate: 344_086,
            num_data_rates_supported: 0,
            max_ifsd,
            synch_protocols: 0,
            mechanical: 0,
            features: Features(features),
            max_ccid_message_length: max_msg,
            class_get_response: 0xFF,
            class_envelope: 0xFF,
            lcd_layout: 0,
            pin_support: PinSupport(pin),
            max_ccid_busy_slots: 1,
        }
    }

    /// A GemPC Twin-like TPDU reader: only automatic clock/baud and NAD; the host does voltage
    /// selection, PPS, SetParameters and the IFSD request.
    pub fn tpdu() -> CcidDescriptor {
        base(0x0001_0230, 271, 3)
    }

    /// [`tpdu`] with a pinpad (verify and modify in `bPINSupport`), like a GemPC Pinpad.
    pub fn tpdu_pinpad() -> CcidDescriptor {
        CcidDescriptor { pin_support: PinSupport(3), ..tpdu() }
    }

    /// A Cherry XX44-like short-APDU reader: automatic voltage and PPS, host SetParameters.
    pub fn short_apdu() -> CcidDescriptor {
        base(0x0002_07B8, 271, 3)
    }

    /// A YubiKey-like extended-APDU reader (everything automatic) with `max_msg`.
    pub fn extended(max_msg: u32) -> CcidDescriptor {
        base(0x0004_00FE, max_msg, 3)
    }

    /// A character-level reader.
    pub fn character() -> CcidDescriptor {
        base(0x0000_0030, 271, 3)
    }

    /// QEMU 7.2's descriptor.
    pub fn qemu() -> CcidDescriptor {
        let bytes: [u8; 54] = [
            0x36, 0x21, 0x10, 0x01, 0x00, 0x07, 0x01, 0x00, 0x00, 0x00, 0xA0, 0x0F, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
            0x00, 0x80, 0x25, 0x00, 0x00, 0x00, 0xC2, 0x01, 0x00, 0x00, 0xFE, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0xFE, 0x04, 0x01, 0x00, 0x12, 0x00, 0x01, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x01, 0x01,
        ];
        CcidDescriptor::parse(&bytes).unwrap_or_else(|_| base(0x0001_04FE, 65_554, 1))
    }
}

fn status(icc: IccStatus, cmd: CommandStatus, error: u8) -> Status {
    Status::new(icc, cmd, error)
}

impl SimReader {
    /// A reader with `card` inserted (its ATR `atr`).
    pub fn new(desc: CcidDescriptor, card: Box<dyn SimCard>, atr: &[u8]) -> Self {
        SimReader {
            desc,
            quirks: Quirks::default(),
            log: SimLog::default(),
            pinpad: PinEntry::Timeout,
            card: Some(card),
            atr: atr.to_vec(),
            powered: false,
            protocol: 0,
            params: vec![0x11, 0, 0, 10, 0],
            pps_window: false,
            t1: CardT1::new(Edc::Lrc),
            t0: CardT0::default(),
            chars: CardChars::default(),
            ext_cmd: Vec::new(),
            ext_resp: Vec::new(),
            ext_pos: 0,
            faults: VecDeque::new(),
            pending: VecDeque::new(),
            late: Vec::new(),
            interrupts: VecDeque::new(),
            gone: false,
        }
    }

    /// QEMU 7.2's `usb-ccid` with a passthru card.
    pub fn qemu(card: Box<dyn SimCard>, atr: &[u8]) -> Self {
        let mut r = SimReader::new(profiles::qemu(), card, atr);
        r.quirks.qemu = true;
        // QEMU's "powered" is true from device creation.
        r.powered = true;
        r
    }

    /// Faults for the `n`-th bulk-OUT command from now (0 = the next one).
    pub fn fault(&mut self, n: usize, faults: &[Fault]) {
        while self.faults.len() <= n {
            self.faults.push_back(Vec::new());
        }
        self.faults[n].extend_from_slice(faults);
    }

    /// Pull the card out (NotifySlotChange `50 02`).
    pub fn remove_card(&mut self) {
        self.card = None;
        self.powered = false;
        self.push_interrupt(Notification::single_slot(false, true));
    }

    /// Insert a card (NotifySlotChange `50 03`).
    pub fn insert_card(&mut self, card: Box<dyn SimCard>, atr: &[u8]) {
        self.card = Some(card);
        self.atr = atr.to_vec();
        self.powered = self.quirks.qemu;
        self.push_interrupt(Notification::single_slot(true, true));
    }

    /// Unplug the device: every later call fails with NoDevice.
    pub fn unplug(&mut self) {
        self.gone = true;
    }

    fn push_interrupt(&mut self, n: Notification) {
        let mut v = Vec::new();
        n.emit(&mut v);
        self.interrupts.push_back(v);
    }

    fn icc(&self) -> IccStatus {
        match (&self.card, self.powered) {
            (None, _) => IccStatus::Absent,
            (Some(_), true) => IccStatus::Active,
            (Some(_), false) => IccStatus::Inactive,
        }
    }

    fn queue(&mut self, msg: Vec<u8>) {
        let mps = self.quirks.mps.max(1);
        let zlp = msg.len().checked_rem(mps) == Some(0);
        if self.quirks.packetize {
            for c in msg.chunks(mps) {
                self.pending.push_back(Ok(c.to_vec()));
            }
        } else {
            self.pending.push_back(Ok(msg));
        }
        // A transfer that is a whole number of packets ends with a zero-length packet.
        if zlp {
            self.pending.push_back(Ok(Vec::new()));
        }
    }

    fn data_block(&self, slot: u8, seq: u8, st: Status, chain: u8, data: Vec<u8>) -> Vec<u8> {
        let mut v = Vec::new();
        DataBlock { status: st, chain, data }.emit(slot, seq, &mut v);
        v
    }

    fn slot_status(&self, slot: u8, seq: u8, st: Status) -> Vec<u8> {
        let mut v = Vec::new();
        SlotStatus { status: st, clock_status: 0 }.emit(slot, seq, &mut v);
        v
    }

    fn power_on(&mut self) {
        if let Some(c) = self.card.as_mut() {
            c.reset();
        }
        self.powered = true;
        self.pps_window = true;
        let atr = Atr::parse(&self.atr).ok();
        let edc = if atr.as_ref().is_some_and(|a| a.t1_uses_crc()) { Edc::Crc } else { Edc::Lrc };
        let chunk = self.quirks.card_chunk;
        self.t1 = CardT1::new(edc);
        self.t1.chunk = chunk;
        // A T=0 card at the character level sends exactly P3 bytes: a wrong Le gets 6Cxx.
        let strict_le = self.quirks.t0_strict_le || self.desc.level() == Some(ExchangeLevel::Character);
        self.t0 = CardT0 { pending: Vec::new(), strict_le };
        self.chars = CardChars { nulls: self.quirks.char_nulls, ack: self.quirks.char_ack, ..CardChars::default() };
        self.protocol = atr.and_then(|a| a.default_protocol()).map_or(0, |p| p.number());
        self.ext_cmd.clear();
        self.ext_resp.clear();
        self.ext_pos = 0;
    }

    /// Process one command; `None` when the reader does not answer.
    fn process(&mut self, f: &Frame<'_>, faults: &[Fault]) -> Option<Vec<u8>> {
        let (slot, seq) = (f.header.slot, f.header.seq);
        let qemu = self.quirks.qemu;
        if slot > self.desc.max_slot_index {
            return Some(self.slot_status(slot, seq, status(IccStatus::Absent, CommandStatus::Failed, 5)));
        }
        let cmd = match AnyCommand::parse(f) {
            Ok(c) => c,
            Err(_) => return Some(self.slot_status(slot, seq, status(self.icc(), CommandStatus::Failed, 0))),
        };
        let ok = status(self.icc(), CommandStatus::Ok, 0);
        Some(match cmd {
            AnyCommand::IccPowerOn(p) => {
                self.log.voltages.push(p.power.byte());
                if self.card.is_none() {
                    return Some(self.data_block(
                        slot,
                        seq,
                        status(IccStatus::Absent, CommandStatus::Failed, ErrorCode::ICC_MUTE),
                        0,
                        vec![],
                    ));
                }
                if !self.quirks.power_on_errors.is_empty() {
                    let error = self.quirks.power_on_errors.remove(0);
                    self.powered = false;
                    let st = status(IccStatus::Inactive, CommandStatus::Failed, error);
                    return Some(self.data_block(slot, seq, st, 0, vec![]));
                }
                if let Some(v) = self.quirks.voltage {
                    if !qemu && p.power != PowerSelect::Auto && p.power != v {
                        self.powered = false;
                        let st = status(IccStatus::Inactive, CommandStatus::Failed, ErrorCode::ICC_CLASS_NOT_SUPPORTED);
                        return Some(self.data_block(slot, seq, st, 0, vec![]));
                    }
                }
                self.power_on();
                let atr = self.atr.clone();
                self.data_block(slot, seq, status(IccStatus::Active, CommandStatus::Ok, 0), 0, atr)
            }
            AnyCommand::IccPowerOff(_) => {
                self.powered = false;
                self.slot_status(slot, seq, status(self.icc(), CommandStatus::Ok, 0))
            }
            AnyCommand::GetSlotStatus(_) => {
                if self.card.is_none() && !qemu {
                    self.slot_status(slot, seq, status(IccStatus::Absent, CommandStatus::Failed, ErrorCode::ICC_MUTE))
                } else {
                    self.slot_status(slot, seq, ok)
                }
            }
            AnyCommand::XfrBlock(x) => {
                self.log.bwi.push(x.bwi);
                self.log.xfr.push(x.data.to_vec());
                if self.card.is_none() {
                    return Some(self.data_block(
                        slot,
                        seq,
                        status(IccStatus::Absent, CommandStatus::Failed, ErrorCode::ICC_MUTE),
                        0,
                        vec![],
                    ));
                }
                if !self.powered {
                    return Some(self.data_block(
                        slot,
                        seq,
                        status(IccStatus::Inactive, CommandStatus::Failed, ErrorCode::ICC_MUTE),
                        0,
                        vec![],
                    ));
                }
                return self.xfr(slot, seq, x.level, x.data, faults);
            }
            AnyCommand::GetParameters(_) | AnyCommand::ResetParameters(_) => {
                let p = Parameters { status: ok, protocol_num: self.protocol, data: self.params.clone() };
                let mut v = Vec::new();
                p.emit(slot, seq, &mut v);
                v
            }
            AnyCommand::SetParameters(sp) => {
                let mut v = Vec::new();
                if let Some(e) = self.quirks.set_parameters_error {
                    let p = Parameters {
                        status: status(self.icc(), CommandStatus::Failed, e),
                        protocol_num: self.protocol,
                        data: self.params.clone(),
                    };
                    p.emit(slot, seq, &mut v);
                    return Some(v);
                }
                let (bytes, n) = sp.params.to_bytes();
                self.params = bytes[..n].to_vec();
                self.protocol = sp.params.protocol_num();
                self.pps_window = false;
                Parameters { status: ok, protocol_num: self.protocol, data: self.params.clone() }
                    .emit(slot, seq, &mut v);
                v
            }
            AnyCommand::Escape(e) if !qemu => {
                let answer = self.quirks.escape_answers.iter().find(|(cmd, _)| cmd == e.data);
                let data = answer.map_or_else(|| e.data.to_vec(), |(_, a)| a.clone());
                let mut v = Vec::new();
                EscapeReply { status: ok, data }.emit(slot, seq, &mut v);
                v
            }
            AnyCommand::Secure(c) if !qemu && self.desc.pin_support.0 != 0 => {
                return self.secure(slot, seq, c.data, faults);
            }
            AnyCommand::Secure(_) if !qemu => {
                self.data_block(slot, seq, status(self.icc(), CommandStatus::Failed, 0), 0, vec![])
            }
            AnyCommand::Abort(_) => {
                self.late.clear();
                self.slot_status(slot, seq, ok)
            }
            AnyCommand::Escape(_) | AnyCommand::Secure(_) | AnyCommand::Other { .. } => {
                self.slot_status(slot, seq, status(self.icc(), CommandStatus::Failed, 0))
            }
        })
    }

    fn run_apdu(&mut self, apdu: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(c) = self.card.as_mut() {
            c.process(apdu, &mut out);
        }
        self.log.apdus.push(apdu.to_vec());
        out
    }

    fn xfr(&mut self, slot: u8, seq: u8, level: u16, data: &[u8], faults: &[Fault]) -> Option<Vec<u8>> {
        let ok = status(IccStatus::Active, CommandStatus::Ok, 0);
        let failed = |e| status(IccStatus::Active, CommandStatus::Failed, e);
        if self.quirks.qemu {
            // QEMU hands abData to the card as an APDU; answers above 384 bytes vanish (7.2).
            let resp = self.run_apdu(data);
            if resp.len() + 10 > 384 {
                return None;
            }
            return Some(self.data_block(slot, seq, ok, 0, resp));
        }
        let level_kind = self.desc.level().unwrap_or(ExchangeLevel::Character);
        let max_data = self.desc.max_message_len().saturating_sub(10);
        match level_kind {
            ExchangeLevel::Tpdu | ExchangeLevel::Character if self.pps_window && data.first() == Some(&0xFF) => {
                self.pps_window = false;
                let mut answer = data.to_vec();
                if self.quirks.pps_reject && answer.len() > 2 {
                    answer[2] ^= 0x01;
                } else if let Some(p0) = data.get(1) {
                    self.protocol = p0 & 0x0F;
                }
                Some(self.data_block(slot, seq, ok, 0, answer))
            }
            ExchangeLevel::Tpdu => {
                self.pps_window = false;
                if self.protocol == 1 {
                    self.t1_block(slot, seq, data, faults)
                } else {
                    let reply = match self.card.as_deref_mut() {
                        Some(card) => self.t0.on_tpdu(data, card, &mut self.log.apdus),
                        None => return None,
                    };
                    Some(self.data_block(slot, seq, ok, 0, reply))
                }
            }
            ExchangeLevel::ShortApdu if level == 0x10 && self.quirks.chain_short_responses => {
                Some(self.next_part(slot, seq))
            }
            ExchangeLevel::ShortApdu => {
                let resp = self.run_apdu(data);
                if resp.len() <= max_data {
                    Some(self.data_block(slot, seq, ok, 0, resp))
                } else if self.quirks.chain_short_responses {
                    self.ext_resp = resp;
                    self.ext_pos = 0;
                    Some(self.next_part(slot, seq))
                } else {
                    Some(self.data_block(slot, seq, failed(ErrorCode::XFR_OVERRUN), 0, vec![]))
                }
            }
            ExchangeLevel::ExtendedApdu => match level {
                0x00 | 0x02 => {
                    let cmd = if level == 0 {
                        data.to_vec()
                    } else {
                        let mut c = std::mem::take(&mut self.ext_cmd);
                        c.extend_from_slice(data);
                        c
                    };
                    self.ext_resp = self.run_apdu(&cmd);
                    self.ext_pos = 0;
                    Some(self.next_part(slot, seq))
                }
                0x01 | 0x03 => {
                    if level == 0x01 {
                        self.ext_cmd.clear();
                    }
                    self.ext_cmd.extend_from_slice(data);
                    Some(self.data_block(slot, seq, ok, 0x10, vec![]))
                }
                0x10 => Some(self.next_part(slot, seq)),
                _ => Some(self.data_block(slot, seq, failed(8), 0, vec![])),
            },
            ExchangeLevel::Character => {
                self.pps_window = false;
                self.char_xfr(slot, seq, level, data, faults)
            }
        }
    }

    /// Character level: the host's characters to the card, then the `expect` characters the
    /// card has sent (or `ICC_MUTE` when it has sent fewer: those are lost, as on a real line).
    fn char_xfr(&mut self, slot: u8, seq: u8, expect: u16, data: &[u8], faults: &[Fault]) -> Option<Vec<u8>> {
        let ok = status(IccStatus::Active, CommandStatus::Ok, 0);
        let failed = |e| status(IccStatus::Active, CommandStatus::Failed, e);
        let card = self.card.as_deref_mut()?;
        if self.protocol == 1 {
            for f in faults {
                match f {
                    Fault::CardWtx(m) => self.t1.pending_wtx = Some(*m),
                    Fault::CardIfs(v) => self.t1.pending_ifs = Some(*v),
                    _ => {}
                }
            }
            if faults.contains(&Fault::Parity) {
                return Some(self.data_block(slot, seq, failed(ErrorCode::XFR_PARITY_ERROR), 0, vec![]));
            }
            if !data.is_empty() {
                // The host sends a whole block at once.
                let mut reply = self.t1.on_block(data, card, &mut self.log.apdus);
                if faults.contains(&Fault::CorruptReply) {
                    if let Some(b) = reply.last_mut() {
                        *b ^= 0x5A;
                    }
                }
                self.chars.out.extend(reply);
            }
        } else {
            self.chars.on_t0(data, &mut self.t0, card, &mut self.log.apdus);
        }
        let n = usize::from(expect);
        if self.chars.out.len() < n {
            self.chars.out.clear();
            return Some(self.data_block(slot, seq, failed(ErrorCode::ICC_MUTE), 0, vec![]));
        }
        let mut reply: Vec<u8> = self.chars.out.drain(..n).collect();
        if let Some(Fault::CharReply(r)) = faults.iter().find(|f| matches!(f, Fault::CharReply(_))) {
            reply = r.clone();
        }
        Some(self.data_block(slot, seq, ok, 0, reply))
    }

    /// One T=1 block to the card and its block back, with the T=1 faults.
    fn t1_block(&mut self, slot: u8, seq: u8, data: &[u8], faults: &[Fault]) -> Option<Vec<u8>> {
        let ok = status(IccStatus::Active, CommandStatus::Ok, 0);
        let failed = |e| status(IccStatus::Active, CommandStatus::Failed, e);
        for f in faults {
            match f {
                Fault::CardWtx(m) => self.t1.pending_wtx = Some(*m),
                Fault::CardIfs(v) => self.t1.pending_ifs = Some(*v),
                _ => {}
            }
        }
        if faults.contains(&Fault::Parity) {
            return Some(self.data_block(slot, seq, failed(ErrorCode::XFR_PARITY_ERROR), 0, vec![]));
        }
        if faults.contains(&Fault::LoseCommand) {
            return Some(self.data_block(slot, seq, failed(ErrorCode::ICC_MUTE), 0, vec![]));
        }
        let mut reply = match self.card.as_deref_mut() {
            Some(card) => self.t1.on_block(data, card, &mut self.log.apdus),
            None => return None,
        };
        if faults.contains(&Fault::LoseReply) {
            return Some(self.data_block(slot, seq, failed(ErrorCode::ICC_MUTE), 0, vec![]));
        }
        if faults.contains(&Fault::CorruptReply) {
            if let Some(b) = reply.last_mut() {
                *b ^= 0x5A;
            }
        }
        Some(self.data_block(slot, seq, ok, 0, reply))
    }

    /// PC_to_RDR_Secure on a pinpad reader: the user's entry goes into the APDU, which goes to
    /// the card the way the exchange level carries APDUs (at the TPDU level with T=1: one
    /// I-block whose prologue is the host's `bTeoPrologue`, checked by the card like any block).
    fn secure(&mut self, slot: u8, seq: u8, data: &[u8], faults: &[Fault]) -> Option<Vec<u8>> {
        let failed = |icc, e| status(icc, CommandStatus::Failed, e);
        if self.card.is_none() || !self.powered {
            return Some(self.data_block(slot, seq, failed(self.icc(), ErrorCode::ICC_MUTE), 0, vec![]));
        }
        let cmd = match PinCommand::parse(data) {
            Ok(c) => c,
            Err(offset) => return Some(self.data_block(slot, seq, failed(self.icc(), offset), 0, vec![])),
        };
        let apdu = match cmd.apdu_with(&self.pinpad) {
            Ok(a) => a,
            Err(e) => return Some(self.data_block(slot, seq, failed(self.icc(), e), 0, vec![])),
        };
        let ok = status(IccStatus::Active, CommandStatus::Ok, 0);
        match self.desc.level() {
            Some(ExchangeLevel::Tpdu) if self.protocol == 1 => {
                let mut block = cmd.prologue.to_vec();
                block.extend_from_slice(&apdu);
                let edc = match self.t1.edc {
                    Edc::Lrc => vec![super::t1::lrc(&block)],
                    Edc::Crc => super::t1::crc(&block).to_be_bytes().to_vec(),
                };
                block.extend_from_slice(&edc);
                self.log.pin_blocks.push(block.clone());
                self.t1_block(slot, seq, &block, faults)
            }
            Some(ExchangeLevel::Tpdu) => {
                let reply = match self.card.as_deref_mut() {
                    Some(card) => self.t0.on_tpdu(&apdu, card, &mut self.log.apdus),
                    None => return None,
                };
                Some(self.data_block(slot, seq, ok, 0, reply))
            }
            Some(ExchangeLevel::ShortApdu | ExchangeLevel::ExtendedApdu) => {
                let resp = self.run_apdu(&apdu);
                Some(self.data_block(slot, seq, ok, 0, resp))
            }
            _ => Some(self.data_block(slot, seq, failed(self.icc(), 0), 0, vec![])),
        }
    }

    /// The next piece of a chained response.
    fn next_part(&mut self, slot: u8, seq: u8) -> Vec<u8> {
        let max = self.desc.max_message_len().saturating_sub(10).max(1);
        let start = self.ext_pos.min(self.ext_resp.len());
        let end = (start + max).min(self.ext_resp.len());
        let chain = match (start == 0, end == self.ext_resp.len()) {
            (true, true) => 0x00,
            (true, false) => 0x01,
            (false, true) => 0x02,
            (false, false) => 0x03,
        };
        let part = self.ext_resp[start..end].to_vec();
        self.ext_pos = end;
        let ok = status(IccStatus::Active, CommandStatus::Ok, 0);
        self.data_block(slot, seq, ok, chain, part)
    }
}

impl Transport for SimReader {
    fn bulk_out(&mut self, data: &[u8], _timeout: Duration) -> Result<(), TransportError> {
        if self.gone {
            return Err(TransportError::NoDevice);
        }
        let faults = self.faults.pop_front().unwrap_or_default();
        if faults.contains(&Fault::Unplug) {
            self.gone = true;
            return Err(TransportError::NoDevice);
        }
        if faults.contains(&Fault::StallOut) {
            return Err(TransportError::Stall);
        }
        self.log.commands.push(data.to_vec());
        let Ok(frame) = Frame::parse(data) else {
            // QEMU stalls a message shorter than its header.
            return Err(TransportError::Stall);
        };
        if faults.contains(&Fault::RemoveCard) {
            self.remove_card();
        }
        for l in std::mem::take(&mut self.late) {
            self.queue(l);
        }
        let Some(reply) = self.process(&frame, &faults) else { return Ok(()) };
        for f in &faults {
            match f {
                Fault::Zlp => self.pending.push_back(Ok(Vec::new())),
                Fault::Stale => {
                    let mut stale = reply.clone();
                    if let Some(s) = stale.get_mut(6) {
                        *s = s.wrapping_add(0x80);
                    }
                    self.queue(stale);
                }
                Fault::TimeExtension(n, m) => {
                    for _ in 0..*n {
                        let mut te = reply.get(..10).map(|h| h.to_vec()).unwrap_or_default();
                        if te.len() == 10 {
                            te[1..5].copy_from_slice(&0u32.to_le_bytes());
                            te[7] = 0x80 | (te[7] & 3);
                            te[8] = *m;
                            te[9] = 0;
                            self.queue(te);
                        }
                    }
                }
                _ => {}
            }
        }
        if faults.contains(&Fault::StallIn) {
            self.pending.push_back(Err(TransportError::Stall));
        } else if faults.contains(&Fault::Withhold) {
            self.late.push(reply);
        } else {
            self.queue(reply);
        }
        Ok(())
    }

    fn bulk_in(&mut self, buf: &mut [u8], _timeout: Duration) -> Result<usize, TransportError> {
        if self.gone {
            return Err(TransportError::NoDevice);
        }
        match self.pending.pop_front() {
            None => Err(TransportError::Timeout),
            Some(Err(e)) => Err(e),
            Some(Ok(m)) => {
                if m.len() > buf.len() {
                    return Err(TransportError::Overflow);
                }
                buf[..m.len()].copy_from_slice(&m);
                Ok(m.len())
            }
        }
    }

    fn interrupt_in(&mut self, buf: &mut [u8], _timeout: Duration) -> Result<usize, TransportError> {
        if self.gone {
            return Err(TransportError::NoDevice);
        }
        if !self.quirks.has_interrupt {
            return Err(TransportError::Io("no interrupt endpoint".into()));
        }
        match self.interrupts.pop_front() {
            None => Err(TransportError::Timeout),
            Some(m) => {
                let n = m.len().min(buf.len());
                buf[..n].copy_from_slice(&m[..n]);
                Ok(n)
            }
        }
    }

    fn max_packet_size(&self) -> usize {
        self.quirks.mps
    }

    fn class_out(&mut self, request: u8, value: u16, _data: &[u8], _timeout: Duration) -> Result<(), TransportError> {
        if self.gone {
            return Err(TransportError::NoDevice);
        }
        self.log.class_requests.push((request, value));
        if self.quirks.qemu || request != class_request::ABORT {
            return Err(TransportError::Stall);
        }
        // The reader abandons the command: its answer will not come.
        self.late.clear();
        Ok(())
    }

    fn clear_halt(&mut self, ep: Endpoint) -> Result<(), TransportError> {
        if self.gone {
            return Err(TransportError::NoDevice);
        }
        self.log.halts.push(ep);
        Ok(())
    }
}

impl std::fmt::Debug for SimReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimReader")
            .field("level", &self.desc.level())
            .field("powered", &self.powered)
            .field("protocol", &self.protocol)
            .finish()
    }
}

/// The fields of a `PC_to_RDR_Secure` payload (ccid.md §7.3) the simulated pinpad uses.
/// Failures are `bError` values: the message offset of the bad field, or the PIN entry's
/// `PIN_TIMEOUT` / `PIN_CANCELLED`.
#[derive(Debug, Clone)]
struct PinCommand {
    modify: bool,
    /// bmFormatString: bit 7 position unit (bytes), bits 6-3 PIN position in the APDU data,
    /// bit 2 right-justified, bits 1-0 digits as binary (0), BCD (1) or ASCII (2).
    format: u8,
    /// bmPINBlockString: bits 7-4 size of the PIN length field in bits, bits 3-0 PIN block
    /// size in bytes (0: just the digits).
    block: u8,
    /// bmPINLengthFormat: bit 4 position unit (bytes), bits 3-0 position of the length field.
    length_format: u8,
    /// bInsertionOffsetOld / bInsertionOffsetNew (bytes, added to the positions above).
    offsets: [u8; 2],
    min: u8,
    max: u8,
    /// bConfirmPIN: bit 1 asks for the current PIN (the confirmation, bit 0, is always typed
    /// the same here).
    confirm: u8,
    prologue: [u8; 3],
    apdu: Vec<u8>,
}

/// Message offsets (10-byte header + payload index) of the fields a reader may blame.
mod pin_field {
    pub const OPERATION: u8 = 10;
    pub const FORMAT: u8 = 12;
    pub const BLOCK: u8 = 13;
}

impl PinCommand {
    fn parse(d: &[u8]) -> Result<Self, u8> {
        let (modify, at) = match d.first() {
            Some(0) => (false, 12),
            Some(1) => {
                let n = *d.get(11).ok_or(pin_field::OPERATION)?;
                (true, 15 + usize::from(n != 0) + usize::from(n >= 3))
            }
            _ => return Err(pin_field::OPERATION),
        };
        // The prologue, then at least an APDU header with Lc.
        if d.len() < at + 3 + 5 {
            return Err(pin_field::OPERATION + at as u8);
        }
        let (max, min) = if modify { (d[7], d[8]) } else { (d[5], d[6]) };
        Ok(PinCommand {
            modify,
            format: d[2],
            block: d[3],
            length_format: d[4],
            offsets: if modify { [d[5], d[6]] } else { [0, 0] },
            min,
            max,
            confirm: if modify { d[9] } else { 0 },
            prologue: [d[at], d[at + 1], d[at + 2]],
            apdu: d[at + 3..].to_vec(),
        })
    }

    /// The APDU with what the user typed.
    fn apdu_with(&self, entry: &PinEntry) -> Result<Vec<u8>, u8> {
        let (pin, new) = match entry {
            PinEntry::Timeout => return Err(ErrorCode::PIN_TIMEOUT),
            PinEntry::Cancel => return Err(ErrorCode::PIN_CANCELLED),
            PinEntry::Types { pin, new } => (pin, new),
        };
        let mut apdu = self.apdu.clone();
        let mut enter = |pin: &[u8], offset: u8| {
            if pin.len() < usize::from(self.min) || (self.max != 0 && pin.len() > usize::from(self.max)) {
                return Err(ErrorCode::PIN_TIMEOUT);
            }
            self.insert(&mut apdu, offset, pin)
        };
        if !self.modify {
            enter(pin, 0)?;
        } else {
            if self.confirm & 0x02 != 0 {
                enter(pin, self.offsets[0])?;
            }
            enter(new, self.offsets[1])?;
        }
        Ok(apdu)
    }

    /// Writes the digits of `pin` into the APDU's data field (after `CLA INS P1 P2 Lc`) at the
    /// structure's position plus `offset` bytes, and its length where the structure says.
    fn insert(&self, apdu: &mut [u8], offset: u8, pin: &[u8]) -> Result<(), u8> {
        let kind = self.format & 0x03;
        if kind == 3 || pin.iter().any(|c| !c.is_ascii_digit()) {
            return Err(pin_field::FORMAT);
        }
        let unit = if kind == 1 { 4 } else { 8 };
        let bits = |pos: u8, bytes: bool| 40 + 8 * usize::from(offset) + usize::from(pos) * if bytes { 8 } else { 1 };
        let start = bits((self.format >> 3) & 0x0F, self.format & 0x80 != 0);
        let used = pin.len() * unit;
        let size = match self.block & 0x0F {
            0 => used,
            n => usize::from(n) * 8,
        };
        if used > size {
            return Err(pin_field::BLOCK);
        }
        let first = if self.format & 0x04 != 0 { start + size - used } else { start };
        for (i, c) in pin.iter().enumerate() {
            let v = if kind == 2 { *c } else { c - b'0' };
            set_bits(apdu, first + i * unit, unit, v.into()).ok_or(pin_field::BLOCK)?;
        }
        let length_bits = usize::from(self.block >> 4);
        if length_bits > 0 {
            let at = bits(self.length_format & 0x0F, self.length_format & 0x10 != 0);
            set_bits(apdu, at, length_bits, pin.len() as u32).ok_or(pin_field::BLOCK)?;
        }
        Ok(())
    }
}

/// Writes the low `n` bits of `value`, most significant first, at bit `at` (bit 0 = the most
/// significant bit of `buf[0]`). `None` when they do not fit.
fn set_bits(buf: &mut [u8], at: usize, n: usize, value: u32) -> Option<()> {
    if at + n > buf.len() * 8 {
        return None;
    }
    for i in 0..n {
        let bit = (value >> (n - 1 - i)) & 1 != 0;
        let (byte, mask) = ((at + i) / 8, 0x80u8 >> ((at + i) % 8));
        if bit {
            buf[byte] |= mask;
        } else {
            buf[byte] &= !mask;
        }
    }
    Some(())
}

/// A T=0 card whose ATR offers only T=0: the project's virtual card with another ATR is enough
/// for the simulator (the ATR is the reader's business here).
pub const T0_ONLY_ATR: [u8; 12] = [0x3B, 0x89, 0x00, 0x56, 0x43, 0x41, 0x52, 0x44, 0x5F, 0x4E, 0x53, 0x53];

/// A small reproducible generator for the randomised robustness tests (xorshift64*; no
/// dependency). Seed with a non-zero value.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}

/// A T=1-only ATR (YubiKey 5's).
pub const T1_ONLY_ATR: [u8; 23] = [
    0x3B, 0xFD, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x80, 0x73, 0xC0, 0x21, 0xC0, 0x57, 0x59, 0x75, 0x62, 0x69,
    0x4B, 0x65, 0x79, 0x40,
];

/// Helper for the case check used by tests: whether `apdu` is extended.
pub fn is_extended(apdu: &[u8]) -> bool {
    Apdu::parse(apdu).is_ok_and(|a| matches!(a.case, Case::C2E | Case::C3E | Case::C4E))
}
