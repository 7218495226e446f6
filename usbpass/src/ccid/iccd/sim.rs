//! A simulated ICCD token ([`SimIccd`], version A or B) that answers the class requests as
//! ccid.md Appendix A describes, with a card behind it ([`SimCard`], in tests the project's
//! virtual card) and fault injection ([`IccdFault`]): busy / poll-again answers, status with an
//! error, truncated or replaced answers, stalls, unplugging.
//!
//! * **Version B**: APDUs with the §3.2 chaining codes in wValue; command chaining is
//!   acknowledged with an empty `10` answer; a response longer than what one IN `6F` may carry
//!   (its wLength − 1, and [`SimIccd::chunk`]) is chained `01`, `03`…, `02`, each part fetched
//!   after an OUT `65` with code `10`.
//! * **Version A**: a T=0 card ([`CardT0`]: case 4 answered `61xx`, GET RESPONSE) behind the
//!   status-byte protocol: after a header, status `10` asks for the command data (commands
//!   whose INS sends data to the card) or offers response data, `20` offers the status word.
//!   Which commands carry data is decided the T=0 way, by INS: READ BINARY (`B0`), GET RESPONSE
//!   (`C0`) and the virtual card's PATTERN (`80 02`) send data out, everything else takes in.

use super::{AStatus, BResponse, BSlotStatus, Direction, Request, Setup, Version};
use crate::ccid::descriptor::{CcidDescriptor, Features, ReaderProtocols, VoltageSupport};
use crate::ccid::message::ErrorCode;
use crate::ccid::sim::{profiles, CardT0, SimCard, T0_ONLY_ATR, T1_ONLY_ATR};
use crate::ccid::transport::{Transport, TransportError};
use std::collections::VecDeque;
use std::time::Duration;

/// A fault for the next control request it applies to (see [`SimIccd::fault`]); faults are
/// applied in order, each waiting for a request it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IccdFault {
    /// The next `times` DataBlock reads (B: "poll again after `delay` × 10 ms") or status
    /// reads (A: busy; `delay` unused) say "not yet".
    Busy { times: u32, delay: u16 },
    /// B: the next DataBlock read answers "status" with this bError (the pending answer is
    /// dropped). A: the next status read says mute (`80`).
    Error(u8),
    /// The next IN answer is cut to this many bytes.
    Truncate(usize),
    /// The next IN answer is these bytes instead.
    Replace(Vec<u8>),
    /// The next request stalls (it is not processed).
    Stall,
    /// The token is unplugged before the next request.
    Unplug,
}

/// What the token saw (for assertions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IccdLog {
    /// Every control request: direction, bRequest, wValue, OUT data length or IN wLength.
    pub requests: Vec<(Direction, u8, u16, usize)>,
    /// What the card processed: APDUs (B) or TPDUs (A).
    pub apdus: Vec<Vec<u8>>,
}

impl IccdLog {
    /// The bRequest values, in order.
    pub fn request_codes(&self) -> Vec<u8> {
        self.requests.iter().map(|r| r.1).collect()
    }

    /// Version B: the chain code of every XfrBlock request.
    pub fn chain_codes(&self) -> Vec<u8> {
        self.requests
            .iter()
            .filter(|r| r.0 == Direction::Out && r.1 == super::request::XFR_BLOCK)
            .map(|r| (r.2 >> 8) as u8)
            .collect()
    }
}

/// Version B: what the next IN `6F` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Nothing,
    Atr,
    /// The rest of `response` from `pos`.
    Response,
    /// Command chaining: "send the next part".
    NextCommand,
    Error(u8),
}

/// Version A: where the T=0 exchange stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TpduState {
    Idle,
    /// Header received, its P3 command bytes expected.
    AwaitData([u8; 5]),
    /// Response data, then the status word.
    Data(Vec<u8>, [u8; 2]),
    StatusWord([u8; 2]),
}

/// A simulated ICCD token.
pub struct SimIccd {
    pub version: Version,
    /// The token's own class descriptor (what a real token declares, not the driver's view).
    pub desc: CcidDescriptor,
    pub log: IccdLog,
    /// Version B: most data bytes per DataBlock answer (the request's wLength − 1 also limits).
    pub chunk: usize,
    card: Box<dyn SimCard>,
    atr: Vec<u8>,
    powered: bool,
    faults: VecDeque<IccdFault>,
    gone: bool,
    command: Vec<u8>,
    answer: Answer,
    response: Vec<u8>,
    pos: usize,
    t0: CardT0,
    tpdu: TpduState,
}

impl std::fmt::Debug for SimIccd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimIccd").field("version", &self.version).field("powered", &self.powered).finish()
    }
}

/// Class descriptors of simulated tokens, as captured in libccid's `readers/`.
pub mod descriptors {
    use super::*;

    /// Version A (BIFIT iBank2Key / e-gate like): character level, T=0, ICCD token and
    /// automatic parameter negotiation (`0x840`), 5 V.
    pub fn version_a() -> CcidDescriptor {
        let mut d = profiles::short_apdu();
        d.features = Features(0x0000_0840);
        d.max_ccid_message_length = 271;
        d.protocols = ReaderProtocols(1);
        d.voltage_support = VoltageSupport(1);
        d
    }

    /// Version B (Gemalto PDT / JCOP / Rutoken Magistra like): short APDU level (`0x20840`),
    /// T=1, 261-byte messages, 5 V.
    pub fn version_b() -> CcidDescriptor {
        let mut d = profiles::short_apdu();
        d.features = Features(0x0002_0840);
        d.max_ccid_message_length = 261;
        d.protocols = ReaderProtocols(2);
        d.voltage_support = VoltageSupport(1);
        d
    }
}

impl SimIccd {
    /// A `version` token with `card` (whose ATR is `atr`).
    pub fn new(version: Version, card: Box<dyn SimCard>, atr: &[u8]) -> Self {
        let desc = match version {
            Version::A => descriptors::version_a(),
            Version::B => descriptors::version_b(),
        };
        SimIccd {
            version,
            desc,
            log: IccdLog::default(),
            chunk: usize::MAX,
            card,
            atr: atr.to_vec(),
            powered: false,
            faults: VecDeque::new(),
            gone: false,
            command: Vec::new(),
            answer: Answer::Nothing,
            response: Vec::new(),
            pos: 0,
            t0: CardT0::default(),
            tpdu: TpduState::Idle,
        }
    }

    /// A version-A token with a T=0-only ATR.
    pub fn version_a(card: Box<dyn SimCard>) -> Self {
        Self::new(Version::A, card, &T0_ONLY_ATR)
    }

    /// A version-B token with a T=1-only ATR.
    pub fn version_b(card: Box<dyn SimCard>) -> Self {
        Self::new(Version::B, card, &T1_ONLY_ATR)
    }

    /// Queue a fault.
    pub fn fault(&mut self, f: IccdFault) {
        self.faults.push_back(f);
    }

    pub fn is_powered(&self) -> bool {
        self.powered
    }

    /// Every later request fails with NoDevice.
    pub fn unplug(&mut self) {
        self.gone = true;
    }

    /// The front fault, if it applies to `req` (consumed, except a `Busy` with more to go).
    fn take_fault(&mut self, dir: Direction, req: Option<&Request<'_>>) -> Option<IccdFault> {
        let front = self.faults.front_mut()?;
        let waits = matches!(
            (self.version, req),
            (Version::B, Some(Request::DataBlock)) | (Version::A, Some(Request::IccStatus))
        );
        let applies = match front {
            IccdFault::Stall | IccdFault::Unplug => true,
            IccdFault::Truncate(_) | IccdFault::Replace(_) => dir == Direction::In,
            IccdFault::Busy { .. } | IccdFault::Error(_) => waits,
        };
        if !applies {
            return None;
        }
        if let IccdFault::Busy { times, delay } = front {
            if *times > 1 {
                *times -= 1;
                return Some(IccdFault::Busy { times: 1, delay: *delay });
            }
        }
        self.faults.pop_front()
    }

    /// Stall / unplug faults, and the request itself.
    fn request<'a>(
        &mut self,
        setup: Setup,
        data: &'a [u8],
    ) -> Result<(Request<'a>, Option<IccdFault>), TransportError> {
        if self.gone {
            return Err(TransportError::NoDevice);
        }
        let len = if setup.direction == Direction::Out { data.len() } else { 0 };
        self.log.requests.push((setup.direction, setup.request, setup.value, len));
        // An unknown request stalls, as on a real device.
        let req = Request::parse(self.version, setup, data).ok();
        let fault = self.take_fault(setup.direction, req.as_ref());
        match fault {
            Some(IccdFault::Unplug) => {
                self.gone = true;
                return Err(TransportError::NoDevice);
            }
            Some(IccdFault::Stall) => return Err(TransportError::Stall),
            _ => {}
        }
        Ok((req.ok_or(TransportError::Stall)?, fault))
    }

    fn icc_bits(&self) -> u8 {
        if self.powered {
            0
        } else {
            1
        }
    }

    fn power_on(&mut self) {
        self.card.reset();
        self.powered = true;
        self.t0 = CardT0::default();
        self.tpdu = TpduState::Idle;
        self.command.clear();
        self.response.clear();
        self.pos = 0;
    }

    fn run_apdu(&mut self, apdu: &[u8]) {
        let mut out = Vec::new();
        self.card.process(apdu, &mut out);
        self.log.apdus.push(apdu.to_vec());
        self.response = out;
        self.pos = 0;
        self.answer = Answer::Response;
    }

    fn on_out_b(&mut self, req: Request<'_>) {
        match req {
            Request::PowerOn => {
                self.power_on();
                self.answer = Answer::Atr;
            }
            Request::PowerOff => {
                self.powered = false;
                self.answer = Answer::Nothing;
            }
            Request::XfrBlock { .. } if !self.powered => self.answer = Answer::Error(ErrorCode::ICC_MUTE),
            Request::XfrBlock { chain, data } => match chain {
                0x00 => self.run_apdu(data),
                0x01 | 0x03 => {
                    if chain == 0x01 {
                        self.command.clear();
                    }
                    self.command.extend_from_slice(data);
                    self.answer = Answer::NextCommand;
                }
                0x02 => {
                    let mut cmd = std::mem::take(&mut self.command);
                    cmd.extend_from_slice(data);
                    self.run_apdu(&cmd);
                }
                0x10 if self.answer == Answer::Response => {}
                _ => self.answer = Answer::Error(ErrorCode::CMD_NOT_SUPPORTED),
            },
            _ => {}
        }
    }

    fn on_in_b(&mut self, req: Request<'_>, len: usize, fault: Option<IccdFault>) -> Vec<u8> {
        let mut out = Vec::new();
        match req {
            Request::SlotStatus => BSlotStatus { kind: 0, status: self.icc_bits(), error: 0 }.emit(&mut out),
            Request::DataBlock => {
                let answer = match fault {
                    Some(IccdFault::Busy { delay, .. }) => {
                        BResponse::Poll { delay }.emit(&mut out);
                        return out;
                    }
                    Some(IccdFault::Error(e)) => Answer::Error(e),
                    _ => std::mem::replace(&mut self.answer, Answer::Nothing),
                };
                match answer {
                    Answer::Nothing => {
                        BResponse::Status { status: 0x40 | self.icc_bits(), error: ErrorCode::HW_ERROR }.emit(&mut out)
                    }
                    Answer::Error(error) => BResponse::Status { status: 0x40 | self.icc_bits(), error }.emit(&mut out),
                    Answer::Atr => BResponse::Data { chain: 0, data: &self.atr }.emit(&mut out),
                    Answer::NextCommand => BResponse::Data { chain: 0x10, data: &[] }.emit(&mut out),
                    Answer::Response => {
                        let max = len.saturating_sub(1).min(self.chunk).max(1);
                        let start = self.pos.min(self.response.len());
                        let end = (start + max).min(self.response.len());
                        let chain = match (start == 0, end == self.response.len()) {
                            (true, true) => 0x00,
                            (true, false) => 0x01,
                            (false, true) => 0x02,
                            (false, false) => 0x03,
                        };
                        BResponse::Data { chain, data: &self.response[start..end] }.emit(&mut out);
                        self.pos = end;
                        if end < self.response.len() {
                            self.answer = Answer::Response;
                        }
                    }
                }
            }
            _ => {}
        }
        out
    }

    /// Version A: whether a command's P3 counts bytes sent to the card (T=0: decided by INS).
    fn takes_data(header: &[u8; 5]) -> bool {
        !(matches!(header[1], 0xB0 | 0xC0) || (header[0] == 0x80 && header[1] == 0x02))
    }

    fn run_tpdu(&mut self, tpdu: &[u8]) {
        let mut resp = self.t0.on_tpdu(tpdu, self.card.as_mut(), &mut self.log.apdus);
        if resp.len() < 2 {
            resp = vec![0x6F, 0x00];
        }
        let sw = resp.split_off(resp.len() - 2);
        let sw = [sw[0], sw[1]];
        self.tpdu = if resp.is_empty() { TpduState::StatusWord(sw) } else { TpduState::Data(resp, sw) };
    }

    fn on_out_a(&mut self, req: Request<'_>) {
        match req {
            Request::PowerOff => {
                self.powered = false;
                self.tpdu = TpduState::Idle;
            }
            Request::XfrBlock { .. } if !self.powered => {}
            Request::XfrBlock { data, .. } => match std::mem::replace(&mut self.tpdu, TpduState::Idle) {
                TpduState::AwaitData(header) => {
                    let mut tpdu = header.to_vec();
                    tpdu.extend_from_slice(data);
                    self.run_tpdu(&tpdu);
                }
                _ => match <[u8; 5]>::try_from(data) {
                    Ok(h) if Self::takes_data(&h) && h[4] > 0 => self.tpdu = TpduState::AwaitData(h),
                    Ok(h) if Self::takes_data(&h) => self.run_tpdu(&h[..4]),
                    _ => self.run_tpdu(data),
                },
            },
            _ => {}
        }
    }

    fn on_in_a(&mut self, req: Request<'_>, fault: Option<IccdFault>) -> Vec<u8> {
        match req {
            Request::PowerOn => {
                self.power_on();
                self.atr.clone()
            }
            Request::IccStatus => {
                let s = match fault {
                    Some(IccdFault::Busy { .. }) => AStatus::BUSY,
                    Some(IccdFault::Error(_)) => AStatus::MUTE,
                    // An unpowered token is idle, not mute (libccid would report mute as "no
                    // card", and pcscd would never power it again).
                    _ if !self.powered => AStatus::IDLE,
                    _ => match &self.tpdu {
                        TpduState::Idle => AStatus::IDLE,
                        TpduState::AwaitData(_) | TpduState::Data(..) => AStatus::DATA,
                        TpduState::StatusWord(_) => AStatus::STATUS_WORD,
                    },
                };
                vec![s]
            }
            Request::DataBlock => match std::mem::replace(&mut self.tpdu, TpduState::Idle) {
                TpduState::Data(data, sw) => {
                    self.tpdu = TpduState::StatusWord(sw);
                    data
                }
                TpduState::StatusWord(sw) => sw.to_vec(),
                other => {
                    self.tpdu = other;
                    Vec::new()
                }
            },
            _ => Vec::new(),
        }
    }
}

/// The token's USB side: control requests only.
impl Transport for SimIccd {
    fn bulk_out(&mut self, _data: &[u8], _timeout: Duration) -> Result<(), TransportError> {
        Err(TransportError::Io("an ICCD token has no bulk endpoints".into()))
    }

    fn bulk_in(&mut self, _buf: &mut [u8], _timeout: Duration) -> Result<usize, TransportError> {
        Err(TransportError::Io("an ICCD token has no bulk endpoints".into()))
    }

    fn interrupt_in(&mut self, _buf: &mut [u8], _timeout: Duration) -> Result<usize, TransportError> {
        Err(TransportError::Io("no interrupt endpoint".into()))
    }

    fn class_out(&mut self, request: u8, value: u16, data: &[u8], _timeout: Duration) -> Result<(), TransportError> {
        let (req, _) = self.request(Setup { direction: Direction::Out, request, value }, data)?;
        match self.version {
            Version::A => self.on_out_a(req),
            Version::B => self.on_out_b(req),
        }
        Ok(())
    }

    fn class_in(
        &mut self,
        request: u8,
        value: u16,
        buf: &mut [u8],
        _timeout: Duration,
    ) -> Result<usize, TransportError> {
        let (req, fault) = self.request(Setup { direction: Direction::In, request, value }, &[])?;
        if let Some(last) = self.log.requests.last_mut() {
            last.3 = buf.len();
        }
        let mut answer = match self.version {
            Version::A => self.on_in_a(req, fault.clone()),
            Version::B => self.on_in_b(req, buf.len(), fault.clone()),
        };
        match fault {
            Some(IccdFault::Truncate(n)) => answer.truncate(n),
            Some(IccdFault::Replace(bytes)) => answer = bytes,
            _ => {}
        }
        let n = answer.len().min(buf.len());
        buf[..n].copy_from_slice(&answer[..n]);
        Ok(n)
    }
}
