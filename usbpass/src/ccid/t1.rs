//! The T=1 block protocol (ISO/IEC 7816-3 §11; ccid.md §3.5) as a pure state machine.
//!
//! The host side ([`T1`]) exchanges one block per [`BlockXfer::xfer`] call (one XfrBlock at the
//! TPDU level); nothing here knows about USB, so every rule is unit-tested with scripted cards.
//!
//! Rules implemented:
//! * I-blocks cut by IFSC with the M bit; the card's chained I-blocks acknowledged with R(N(R));
//!   an I-block from the card implicitly acknowledges our last chunk;
//! * an invalid block (bad EDC or parity → R with error 1; bad NAD/PCB/LEN, wrong N(S),
//!   reader-reported mute → error 2) is answered with an R-block asking for the expected block,
//!   or our last R-block again if that is what we sent (rule 7.2); an R-block whose N(R) equals
//!   our N(S) asks us to repeat our I-block;
//! * each block is tried three times; then S(RESYNCH request), up to three times per command;
//!   after a resynchronisation the command starts again from its first byte with N(S) = N(R) = 0;
//!   when that fails too the channel is dead until the card is reset ([`T1::reset`]);
//! * card requests: S(WTX) answered and the multiplier handed to the next exchange (`bBWI`),
//!   S(IFS) answered and IFSC changed, S(ABORT) answered; S(RESYNCH) from the card is not
//!   allowed and makes us resynchronise;
//! * host S(IFS request) to announce IFSD ([`T1::negotiate_ifsd`]);
//! * PIN entry on a pinpad (`PC_to_RDR_Secure`), where the reader builds our I-block:
//!   [`T1::secure_prologue`] gives its first three bytes, [`T1::secure_answer`] reads the card's
//!   answer (ccid.md §3.5 "T=1 under PC_to_RDR_Secure", §7.3).

use super::device::CcidError;
use std::fmt;

/// Error detection code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Edc {
    /// 1 byte: XOR of the prologue and information field.
    Lrc,
    /// 2 bytes: CRC as libccid computes it (see [`crc`]).
    Crc,
}

impl Edc {
    pub fn len(self) -> usize {
        match self {
            Edc::Lrc => 1,
            Edc::Crc => 2,
        }
    }

    pub fn is_empty(self) -> bool {
        false
    }

    /// The EDC of `b` in a 2-byte array, and how many bytes of it are used.
    fn compute(self, b: &[u8]) -> ([u8; 2], usize) {
        match self {
            Edc::Lrc => ([lrc(b), 0], 1),
            Edc::Crc => (crc(b).to_be_bytes(), 2),
        }
    }
}

/// XOR of all bytes.
pub fn lrc(b: &[u8]) -> u8 {
    b.iter().fold(0, |a, x| a ^ x)
}

/// CRC-16 with the reflected CCITT polynomial (0x8408), initial value 0xFFFF and no final XOR,
/// sent high byte first; `123456789` gives `6F 91` (libccid's variant, ccid.md §3.5).
pub fn crc(b: &[u8]) -> u16 {
    let mut c: u16 = 0xFFFF;
    for &byte in b {
        c ^= byte as u16;
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x8408 } else { c >> 1 };
        }
    }
    c
}

/// R-block error indication (PCB bits 4-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RError {
    /// 0: acknowledgement / request for the next block.
    None,
    /// 1: EDC or parity error.
    Edc,
    /// 2: other error.
    Other,
}

/// S-block type (PCB bits 5-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SKind {
    Resynch,
    Ifs,
    Abort,
    Wtx,
}

/// A decoded block (without NAD and EDC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    I { ns: bool, more: bool, inf: Vec<u8> },
    R { nr: bool, error: RError },
    S { kind: SKind, response: bool, inf: Vec<u8> },
}

impl Block {
    pub fn pcb(&self) -> u8 {
        match self {
            Block::I { ns, more, .. } => (*ns as u8) << 6 | (*more as u8) << 5,
            Block::R { nr, error } => {
                0x80 | (*nr as u8) << 4
                    | match error {
                        RError::None => 0,
                        RError::Edc => 1,
                        RError::Other => 2,
                    }
            }
            Block::S { kind, response, .. } => {
                0xC0 | (*response as u8) << 5
                    | match kind {
                        SKind::Resynch => 0,
                        SKind::Ifs => 1,
                        SKind::Abort => 2,
                        SKind::Wtx => 3,
                    }
            }
        }
    }

    pub fn inf(&self) -> &[u8] {
        match self {
            Block::I { inf, .. } | Block::S { inf, .. } => inf,
            Block::R { .. } => &[],
        }
    }

    /// `NAD PCB LEN INF EDC`.
    pub fn encode(&self, nad: u8, edc: Edc) -> Vec<u8> {
        let inf = self.inf();
        let mut v = Vec::with_capacity(3 + inf.len() + 2);
        v.push(nad);
        v.push(self.pcb());
        v.push(inf.len().min(254) as u8);
        v.extend_from_slice(&inf[..inf.len().min(254)]);
        let (e, n) = edc.compute(&v);
        v.extend_from_slice(&e[..n]);
        v
    }

    /// Decode `NAD PCB LEN INF EDC`; returns the NAD and the block.
    pub fn decode(b: &[u8], edc: Edc) -> Result<(u8, Block), BlockError> {
        let (nad, pcb, len) = match b {
            [nad, pcb, len, ..] => (*nad, *pcb, *len),
            _ => return Err(BlockError::TooShort(b.len())),
        };
        if len == 0xFF {
            return Err(BlockError::BadLen);
        }
        let body_end = 3 + len as usize;
        if b.len() != body_end + edc.len() {
            return Err(BlockError::BadLen);
        }
        let (check, n) = edc.compute(&b[..body_end]);
        if check[..n] != b[body_end..] {
            return Err(BlockError::BadEdc);
        }
        let inf = b[3..body_end].to_vec();
        let block = match pcb {
            p if p & 0x80 == 0 => Block::I { ns: p & 0x40 != 0, more: p & 0x20 != 0, inf },
            p if p & 0xC0 == 0x80 => {
                if p & 0x20 != 0 || !inf.is_empty() {
                    return Err(BlockError::BadPcb(p));
                }
                let error = match p & 0x0F {
                    0 => RError::None,
                    1 => RError::Edc,
                    _ => RError::Other,
                };
                Block::R { nr: p & 0x10 != 0, error }
            }
            p => {
                let kind = match p & 0x1F {
                    0 => SKind::Resynch,
                    1 => SKind::Ifs,
                    2 => SKind::Abort,
                    3 => SKind::Wtx,
                    _ => return Err(BlockError::BadPcb(p)),
                };
                let want = match kind {
                    SKind::Ifs | SKind::Wtx => 1,
                    SKind::Resynch | SKind::Abort => 0,
                };
                if inf.len() != want {
                    return Err(BlockError::BadPcb(p));
                }
                Block::S { kind, response: p & 0x20 != 0, inf }
            }
        };
        Ok((nad, block))
    }
}

/// Why bytes are not a valid block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockError {
    TooShort(usize),
    /// LEN = 0xFF, or the length does not match LEN + EDC.
    BadLen,
    BadEdc,
    /// Undefined PCB, or an S/R-block with the wrong INF length.
    BadPcb(u8),
}

impl BlockError {
    fn r_error(self) -> RError {
        match self {
            BlockError::BadEdc => RError::Edc,
            _ => RError::Other,
        }
    }
}

/// How one block exchange can fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XferError {
    /// The reader saw a parity error (`XFR_PARITY_ERROR`): handled like a bad EDC.
    Parity,
    /// The card did not answer within BWT (`ICC_MUTE`, card present): handled like a lost block.
    Mute,
    /// The transport or the reader failed (timeout, card removed, reader gone): the channel is
    /// dead.
    Fatal(CcidError),
}

/// One block out, one block back.
pub trait BlockXfer {
    /// Send `block` (encoded) and return the card's block bytes. `wtx` is the block waiting
    /// time multiplier the card asked for with S(WTX) (0 = none): it goes into `bBWI` and
    /// stretches the read timeout.
    fn xfer(&mut self, block: &[u8], wtx: u8) -> Result<Vec<u8>, XferError>;
}

impl<F: FnMut(&[u8], u8) -> Result<Vec<u8>, XferError>> BlockXfer for F {
    fn xfer(&mut self, block: &[u8], wtx: u8) -> Result<Vec<u8>, XferError> {
        self(block, wtx)
    }
}

/// Why a T=1 exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum T1Error {
    /// The channel is dead (failed resynchronisation or an earlier fatal error) until reset.
    Dead,
    /// T=1 cannot carry an empty command.
    EmptyCommand,
    /// The response exceeds the limit.
    ResponseTooLong(usize),
    /// The card did not accept our S(IFS request).
    IfsdRefused,
    /// Transport failure (the channel is dead now).
    Fatal(CcidError),
    /// A PIN command does not fit one I-block: the reader builds a single block (no chaining),
    /// so the APDU must not exceed IFSC.
    BlockTooLong { len: usize, ifsc: usize },
    /// The card did not take the I-block the pinpad reader built (it asked for it again, or the
    /// exchange did not recover and the channel was resynchronised). Only the reader had the
    /// PIN, so the block cannot be repeated; the command's outcome is unknown to the card's user
    /// but the sequence numbers are in step again.
    PinBlockLost,
}

impl fmt::Display for T1Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            T1Error::Dead => f.write_str("T=1 channel dead (resynchronisation failed); reset the card"),
            T1Error::EmptyCommand => f.write_str("empty command"),
            T1Error::ResponseTooLong(n) => write!(f, "T=1 response longer than {n} bytes"),
            T1Error::IfsdRefused => f.write_str("card refused the IFSD request"),
            T1Error::Fatal(e) => write!(f, "T=1: {e}"),
            T1Error::BlockTooLong { len, ifsc } => {
                write!(f, "{len}-byte PIN command exceeds the card's IFSC ({ifsc}) and cannot be chained")
            }
            T1Error::PinBlockLost => {
                f.write_str("the card did not take the reader's PIN block (it cannot be repeated)")
            }
        }
    }
}

impl std::error::Error for T1Error {}

/// Counters (for logs and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct T1Stats {
    pub blocks: u64,
    pub errors: u64,
    pub resyncs: u64,
    pub wtx: u64,
}

/// Largest response accepted: 65 536 data bytes + SW.
pub const MAX_RESPONSE: usize = 65_538;
/// Safety net against a card that keeps the exchange going forever (WTX, S(IFS), empty chains).
const MAX_EXCHANGES: usize = 200_000;
const TRIES: u32 = 3;
const RESYNCS: u32 = 3;

enum Outcome {
    Resync,
    Fatal(CcidError),
    TooLong,
}

/// Host-side T=1 state for one card.
#[derive(Debug, Clone)]
pub struct T1 {
    /// Our NAD (source in bits 3-1, destination in bits 7-5); 0 normally.
    pub nad: u8,
    ns: bool,
    nr: bool,
    ifsc: usize,
    ifsc_initial: usize,
    ifsd: usize,
    edc: Edc,
    dead: bool,
    pub max_response: usize,
    stats: T1Stats,
}

impl T1 {
    /// After power-up: IFSC from the ATR, IFSD 32 until negotiated, EDC from the ATR.
    pub fn new(ifsc: u8, edc: Edc) -> Self {
        let ifsc = (ifsc as usize).clamp(1, 254);
        T1 {
            nad: 0,
            ns: false,
            nr: false,
            ifsc,
            ifsc_initial: ifsc,
            ifsd: 32,
            edc,
            dead: false,
            max_response: MAX_RESPONSE,
            stats: T1Stats::default(),
        }
    }

    /// Back to the power-up state (after a card reset).
    pub fn reset(&mut self) {
        self.ns = false;
        self.nr = false;
        self.ifsc = self.ifsc_initial;
        self.ifsd = 32;
        self.dead = false;
    }

    pub fn ifsc(&self) -> usize {
        self.ifsc
    }

    pub fn ifsd(&self) -> usize {
        self.ifsd
    }

    pub fn edc(&self) -> Edc {
        self.edc
    }

    pub fn is_dead(&self) -> bool {
        self.dead
    }

    pub fn stats(&self) -> T1Stats {
        self.stats
    }

    /// The NAD the card's blocks must carry (ours with source and destination swapped).
    fn card_nad(&self) -> u8 {
        (self.nad & 0x07) << 4 | (self.nad >> 4) & 0x07
    }

    fn encode(&self, b: &Block) -> Vec<u8> {
        b.encode(self.nad, self.edc)
    }

    fn decode(&self, bytes: &[u8]) -> Result<Block, RError> {
        let (nad, block) = Block::decode(bytes, self.edc).map_err(BlockError::r_error)?;
        if nad & 0x77 != self.card_nad() {
            return Err(RError::Other);
        }
        Ok(block)
    }

    fn exchange<X: BlockXfer + ?Sized>(
        &mut self,
        x: &mut X,
        block: &[u8],
        wtx: u8,
    ) -> Result<Result<Block, RError>, CcidError> {
        self.stats.blocks += 1;
        match x.xfer(block, wtx) {
            Ok(bytes) => Ok(self.decode(&bytes)),
            Err(XferError::Parity) => Ok(Err(RError::Edc)),
            Err(XferError::Mute) => Ok(Err(RError::Other)),
            Err(XferError::Fatal(e)) => Err(e),
        }
    }

    /// Announce our IFSD with S(IFS request); three tries. On failure the channel is dead.
    pub fn negotiate_ifsd<X: BlockXfer + ?Sized>(&mut self, x: &mut X, ifsd: u8) -> Result<(), T1Error> {
        if self.dead {
            return Err(T1Error::Dead);
        }
        let ifsd = ifsd.clamp(1, 254);
        let req = self.encode(&Block::S { kind: SKind::Ifs, response: false, inf: vec![ifsd] });
        for _ in 0..TRIES {
            match self.exchange(x, &req, 0) {
                Err(e) => {
                    self.dead = true;
                    return Err(T1Error::Fatal(e));
                }
                Ok(Ok(Block::S { kind: SKind::Ifs, response: true, inf })) if inf == [ifsd] => {
                    self.ifsd = ifsd as usize;
                    return Ok(());
                }
                Ok(_) => self.stats.errors += 1,
            }
        }
        self.dead = true;
        Err(T1Error::IfsdRefused)
    }

    /// Send one APDU, return the card's response (the concatenated INF of its I-blocks).
    pub fn transceive<X: BlockXfer + ?Sized>(&mut self, x: &mut X, apdu: &[u8]) -> Result<Vec<u8>, T1Error> {
        if self.dead {
            return Err(T1Error::Dead);
        }
        if apdu.is_empty() {
            return Err(T1Error::EmptyCommand);
        }
        let mut resyncs = 0;
        loop {
            match self.run(x, apdu) {
                Ok(resp) => return Ok(resp),
                Err(Outcome::Fatal(e)) => {
                    self.dead = true;
                    return Err(T1Error::Fatal(e));
                }
                Err(Outcome::TooLong) => {
                    self.dead = true;
                    return Err(T1Error::ResponseTooLong(self.max_response));
                }
                Err(Outcome::Resync) => self.recover(x, &mut resyncs)?,
            }
            tracing::debug!("T=1 resynchronised: sending the command again");
        }
    }

    /// S(RESYNCH request) until the card confirms; `resyncs` counts the attempts of the current
    /// command. When they run out, or the transport fails, the channel is dead.
    fn recover<X: BlockXfer + ?Sized>(&mut self, x: &mut X, resyncs: &mut u32) -> Result<(), T1Error> {
        loop {
            if *resyncs >= RESYNCS {
                self.dead = true;
                return Err(T1Error::Dead);
            }
            *resyncs += 1;
            self.stats.resyncs += 1;
            match self.resynch(x) {
                Ok(true) => return Ok(()),
                Ok(false) => continue,
                Err(e) => {
                    self.dead = true;
                    return Err(T1Error::Fatal(e));
                }
            }
        }
    }

    /// The prologue (`NAD PCB LEN`) for the `bTeoPrologue` field of a PIN structure: on a
    /// TPDU-level pinpad reader the reader builds our I-block itself (it inserts the PIN into the
    /// APDU and appends the EDC), so all the host can give is the block's first three bytes,
    /// with our current N(S) and LEN = the APDU's length.
    ///
    /// Nothing changes here. libccid toggles N(S)/N(R) before sending and puts them back when
    /// the PIN entry fails; instead the state advances in [`T1::secure_answer`] when the card's
    /// I-block shows ours arrived, so a PIN entry that never reached the card (timeout,
    /// cancelled, reader error) leaves the sequence numbers as they were without undo logic.
    pub fn secure_prologue(&self, len: usize) -> Result<[u8; 3], T1Error> {
        if self.dead {
            return Err(T1Error::Dead);
        }
        if len == 0 {
            return Err(T1Error::EmptyCommand);
        }
        if len > self.ifsc {
            return Err(T1Error::BlockTooLong { len, ifsc: self.ifsc });
        }
        let pcb = Block::I { ns: self.ns, more: false, inf: Vec::new() }.pcb();
        Ok([self.nad, pcb, len as u8])
    }

    /// Finishes a `PC_to_RDR_Secure` started with [`T1::secure_prologue`]: `first` is what the
    /// reader returned for it (the card's block, or the reader's parity/mute report); the result
    /// is the card's response APDU.
    ///
    /// The answer is a full block (libccid strips NAD/PCB/LEN and assumes a 1-byte LRC; here
    /// the EDC is checked with the ATR's LRC or CRC). Follow-up blocks go through `x` as in
    /// [`T1::transceive`]: S(WTX), S(IFS) and S(ABORT) requests are answered (WTX stretches the
    /// next exchange), a chained response is collected with R-blocks, and a block that arrives
    /// damaged is asked for again with R(N(R)) — the card still has its answer. What cannot be
    /// done is sending our I-block again: only the reader had the PIN. So a card asking for it
    /// ends the command with [`T1Error::PinBlockLost`] (the card did not take it: both sides'
    /// numbers are unchanged), and an exchange that does not recover resynchronises the channel
    /// (N(S) = N(R) = 0 on both sides) before giving the same error, so that the next command
    /// works.
    pub fn secure_answer<X: BlockXfer + ?Sized>(
        &mut self,
        x: &mut X,
        first: Result<Vec<u8>, XferError>,
    ) -> Result<Vec<u8>, T1Error> {
        if self.dead {
            return Err(T1Error::Dead);
        }
        match self.run_secure(x, first) {
            Ok(Some(resp)) => Ok(resp),
            Ok(None) => Err(T1Error::PinBlockLost),
            Err(Outcome::Fatal(e)) => {
                self.dead = true;
                Err(T1Error::Fatal(e))
            }
            Err(Outcome::TooLong) => {
                self.dead = true;
                Err(T1Error::ResponseTooLong(self.max_response))
            }
            Err(Outcome::Resync) => {
                self.recover(x, &mut 0)?;
                tracing::debug!("T=1 resynchronised after a PIN command: its answer is lost");
                Err(T1Error::PinBlockLost)
            }
        }
    }

    /// Our answer to a card's S(request) and the WTX multiplier for the exchange that carries it;
    /// `None` for a malformed request (the caller answers with an R-block).
    fn answer_request(&mut self, kind: SKind, inf: Vec<u8>) -> Result<Option<(Vec<u8>, u8)>, Outcome> {
        let mut wtx = 0;
        match (kind, inf.first().copied()) {
            (SKind::Wtx, Some(v)) => {
                self.stats.wtx += 1;
                wtx = v;
            }
            (SKind::Ifs, Some(v @ 1..=254)) => self.ifsc = v as usize,
            (SKind::Abort, None) => tracing::debug!("T=1: the card sent S(ABORT request)"),
            (SKind::Resynch, _) => return Err(Outcome::Resync),
            _ => return Ok(None),
        }
        Ok(Some((self.encode(&Block::S { kind, response: true, inf }), wtx)))
    }

    /// Whether an I-block from the card is the one expected: N(S) = our N(R), INF within IFSD.
    fn expected_i_block(&self, ns: bool, inf: &[u8]) -> bool {
        ns == self.nr && inf.len() <= self.ifsd.max(254)
    }

    /// Takes an expected I-block of the card's response: N(R) advances and `inf` joins `resp`.
    /// `None` when it was the last block (no M bit), else the R-block asking for the next one.
    fn take_response_block(&mut self, resp: &mut Vec<u8>, inf: &[u8], more: bool) -> Result<Option<Vec<u8>>, Outcome> {
        self.nr = !self.nr;
        if resp.len() + inf.len() > self.max_response {
            return Err(Outcome::TooLong);
        }
        resp.extend_from_slice(inf);
        Ok(more.then(|| self.encode(&Block::R { nr: self.nr, error: RError::None })))
    }

    /// The receiving half of [`T1::run`] for a block the reader sent on our behalf. `Ok(None)`:
    /// the card asks for our I-block again (it never took it).
    fn run_secure<X: BlockXfer + ?Sized>(
        &mut self,
        x: &mut X,
        first: Result<Vec<u8>, XferError>,
    ) -> Result<Option<Vec<u8>>, Outcome> {
        self.stats.blocks += 1;
        let mut answer = match first {
            Ok(bytes) => self.decode(&bytes),
            Err(XferError::Parity) => Err(RError::Edc),
            Err(XferError::Mute) => Err(RError::Other),
            Err(XferError::Fatal(e)) => return Err(Outcome::Fatal(e)),
        };
        // Whether the card's I-block acknowledged ours (we are then receiving its response).
        let mut acknowledged = false;
        let mut last_r: Option<Vec<u8>> = None;
        let mut resp = Vec::new();
        let mut errors = 0u32;
        for _ in 0..MAX_EXCHANGES {
            let mut wtx = 0;
            // An unreadable or unexpected block: our last R-block again (rule 7.2), or R(N(R)).
            let mut fail = |this: &mut Self, kind: RError, last_r: &mut Option<Vec<u8>>| -> Result<Vec<u8>, Outcome> {
                this.stats.errors += 1;
                errors += 1;
                if errors >= TRIES {
                    return Err(Outcome::Resync);
                }
                Ok(last_r.get_or_insert_with(|| this.encode(&Block::R { nr: this.nr, error: kind })).clone())
            };
            let next = match answer {
                Err(kind) => fail(self, kind, &mut last_r)?,
                Ok(Block::I { ns, more, inf }) => {
                    if !self.expected_i_block(ns, &inf) {
                        fail(self, RError::Other, &mut last_r)?
                    } else {
                        if !acknowledged {
                            // Our (reader-built) I-block arrived.
                            self.ns = !self.ns;
                            acknowledged = true;
                        }
                        errors = 0;
                        match self.take_response_block(&mut resp, &inf, more)? {
                            None => return Ok(Some(resp)),
                            Some(r) => {
                                last_r = Some(r.clone());
                                r
                            }
                        }
                    }
                }
                // The card asks for the block the reader built.
                Ok(Block::R { nr, .. }) if !acknowledged && nr == self.ns => return Ok(None),
                // An acknowledgement of a chunk we never chained, or (while receiving) the card
                // did not get our R-block: R-block (again).
                Ok(Block::R { .. }) => fail(self, RError::Other, &mut last_r)?,
                Ok(Block::S { kind, response: false, inf }) => match self.answer_request(kind, inf)? {
                    Some((s, w)) => {
                        errors = 0;
                        wtx = w;
                        last_r = None;
                        s
                    }
                    None => fail(self, RError::Other, &mut last_r)?,
                },
                Ok(Block::S { response: true, .. }) => fail(self, RError::Other, &mut last_r)?,
            };
            answer = self.exchange(x, &next, wtx).map_err(Outcome::Fatal)?;
        }
        Err(Outcome::Resync)
    }

    /// One S(RESYNCH request); `Ok(true)` when the card confirmed.
    fn resynch<X: BlockXfer + ?Sized>(&mut self, x: &mut X) -> Result<bool, CcidError> {
        let req = self.encode(&Block::S { kind: SKind::Resynch, response: false, inf: vec![] });
        match self.exchange(x, &req, 0)? {
            Ok(Block::S { kind: SKind::Resynch, response: true, .. }) => {
                self.ns = false;
                self.nr = false;
                self.ifsc = self.ifsc_initial;
                Ok(true)
            }
            _ => {
                self.stats.errors += 1;
                Ok(false)
            }
        }
    }

    fn i_block(&self, apdu: &[u8], pos: usize, len: usize) -> Vec<u8> {
        let more = pos + len < apdu.len();
        self.encode(&Block::I { ns: self.ns, more, inf: apdu[pos..pos + len].to_vec() })
    }

    fn run<X: BlockXfer + ?Sized>(&mut self, x: &mut X, apdu: &[u8]) -> Result<Vec<u8>, Outcome> {
        #[derive(PartialEq, Eq, Clone, Copy)]
        enum Last {
            I,
            R,
            S,
        }
        let mut pos = 0usize;
        let mut cur = self.ifsc.min(apdu.len());
        let mut last = self.i_block(apdu, pos, cur);
        let mut last_kind = Last::I;
        let mut sending = true;
        let mut resp = Vec::new();
        let mut errors = 0u32;
        let mut wtx = 0u8;
        for _ in 0..MAX_EXCHANGES {
            let answer = self.exchange(x, &last, wtx).map_err(Outcome::Fatal)?;
            wtx = 0;
            // An error of some kind: R-block, or our last R-block again.
            let mut fail =
                |this: &mut Self, kind: RError, last: &mut Vec<u8>, last_kind: &mut Last| -> Result<(), Outcome> {
                    this.stats.errors += 1;
                    errors += 1;
                    if errors >= TRIES {
                        return Err(Outcome::Resync);
                    }
                    if *last_kind != Last::R {
                        *last = this.encode(&Block::R { nr: this.nr, error: kind });
                        *last_kind = Last::R;
                    }
                    Ok(())
                };
            let block = match answer {
                Err(kind) => {
                    fail(self, kind, &mut last, &mut last_kind)?;
                    continue;
                }
                Ok(b) => b,
            };
            match block {
                Block::I { ns, more, inf } => {
                    if sending && pos + cur < apdu.len() {
                        // The card must acknowledge each chunk of our chain with an R-block.
                        fail(self, RError::Other, &mut last, &mut last_kind)?;
                        continue;
                    }
                    if !self.expected_i_block(ns, &inf) {
                        fail(self, RError::Other, &mut last, &mut last_kind)?;
                        continue;
                    }
                    if sending {
                        // Implicit acknowledgement of our last chunk.
                        self.ns = !self.ns;
                        sending = false;
                    }
                    errors = 0;
                    match self.take_response_block(&mut resp, &inf, more)? {
                        None => return Ok(resp),
                        Some(r) => {
                            last = r;
                            last_kind = Last::R;
                        }
                    }
                }
                Block::R { nr, .. } => {
                    if sending && nr != self.ns {
                        if pos + cur < apdu.len() {
                            // Our chunk arrived; the card wants the next one.
                            self.ns = !self.ns;
                            pos += cur;
                            cur = self.ifsc.min(apdu.len() - pos);
                            errors = 0;
                            last = self.i_block(apdu, pos, cur);
                            last_kind = Last::I;
                        } else {
                            // An R-block cannot acknowledge the last chunk.
                            fail(self, RError::Other, &mut last, &mut last_kind)?;
                        }
                    } else if sending {
                        // The card asks for our I-block again.
                        self.stats.errors += 1;
                        errors += 1;
                        if errors >= TRIES {
                            return Err(Outcome::Resync);
                        }
                        last = self.i_block(apdu, pos, cur);
                        last_kind = Last::I;
                    } else {
                        // While receiving: the card did not get our R-block; send it again.
                        self.stats.errors += 1;
                        errors += 1;
                        if errors >= TRIES {
                            return Err(Outcome::Resync);
                        }
                        if last_kind != Last::R {
                            last = self.encode(&Block::R { nr: self.nr, error: RError::None });
                            last_kind = Last::R;
                        }
                    }
                }
                Block::S { kind, response: false, inf } => match self.answer_request(kind, inf)? {
                    Some((answer, w)) => {
                        errors = 0;
                        wtx = w;
                        last = answer;
                        last_kind = Last::S;
                    }
                    None => fail(self, RError::Other, &mut last, &mut last_kind)?,
                },
                Block::S { response: true, .. } => {
                    fail(self, RError::Other, &mut last, &mut last_kind)?;
                }
            }
        }
        Err(Outcome::Resync)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ccid::transport::TransportError;

    fn enc(b: Block) -> Vec<u8> {
        b.encode(0, Edc::Lrc)
    }
    fn i(ns: bool, more: bool, inf: &[u8]) -> Vec<u8> {
        enc(Block::I { ns, more, inf: inf.to_vec() })
    }
    fn r(nr: bool, error: RError) -> Vec<u8> {
        enc(Block::R { nr, error })
    }
    fn s(kind: SKind, response: bool, inf: &[u8]) -> Vec<u8> {
        enc(Block::S { kind, response, inf: inf.to_vec() })
    }

    type Step = (Vec<u8>, Result<Vec<u8>, XferError>);

    /// A card scripted as (expected host block, card answer) pairs.
    fn scripted(steps: Vec<Step>) -> impl FnMut(&[u8], u8) -> Result<Vec<u8>, XferError> {
        let mut it = steps.into_iter();
        move |got: &[u8], _wtx| {
            let (want, answer) = it.next().expect("more exchanges than scripted");
            assert_eq!(got, &want[..], "host sent an unexpected block");
            answer
        }
    }

    #[test]
    fn codec() {
        // ccid.md's worked example: S(WTX request ×9), the answer, an I-block.
        assert_eq!(s(SKind::Wtx, false, &[9]), [0x00, 0xC3, 0x01, 0x09, 0xCB]);
        assert_eq!(s(SKind::Wtx, true, &[9]), [0x00, 0xE3, 0x01, 0x09, 0xEB]);
        assert_eq!(i(true, false, &[0x90, 0x00]), [0x00, 0x40, 0x02, 0x90, 0x00, 0xD2]);
        assert_eq!(r(true, RError::Edc), [0x00, 0x91, 0x00, 0x91]);
        assert_eq!(s(SKind::Ifs, false, &[0xFE]), [0x00, 0xC1, 0x01, 0xFE, 0x3E]);
        for b in [
            Block::I { ns: false, more: true, inf: vec![1, 2, 3] },
            Block::R { nr: true, error: RError::Other },
            Block::S { kind: SKind::Resynch, response: true, inf: vec![] },
            Block::S { kind: SKind::Abort, response: false, inf: vec![] },
        ] {
            for edc in [Edc::Lrc, Edc::Crc] {
                assert_eq!(Block::decode(&b.encode(0x21, edc), edc), Ok((0x21, b.clone())));
            }
        }
        assert_eq!(crc(b"123456789").to_be_bytes(), [0x6F, 0x91]);
    }

    #[test]
    fn decode_errors() {
        assert_eq!(Block::decode(&[0, 0], Edc::Lrc), Err(BlockError::TooShort(2)));
        assert_eq!(Block::decode(&[0, 0, 0xFF, 0xFF], Edc::Lrc), Err(BlockError::BadLen));
        assert_eq!(Block::decode(&[0, 0, 2, 1, 0], Edc::Lrc), Err(BlockError::BadLen));
        assert_eq!(Block::decode(&[0, 0, 0, 1], Edc::Lrc), Err(BlockError::BadEdc));
        // R-block with INF, S-block of an undefined type, S(WTX) without its byte.
        assert_eq!(Block::decode(&[0, 0x80, 1, 0, 0x81], Edc::Lrc), Err(BlockError::BadPcb(0x80)));
        assert_eq!(Block::decode(&[0, 0xA0, 0, 0xA0], Edc::Lrc), Err(BlockError::BadPcb(0xA0)));
        assert_eq!(Block::decode(&[0, 0xC4, 0, 0xC4], Edc::Lrc), Err(BlockError::BadPcb(0xC4)));
        assert_eq!(Block::decode(&[0, 0xC3, 0, 0xC3], Edc::Lrc), Err(BlockError::BadPcb(0xC3)));
        // CRC blocks checked with CRC.
        let b = i(false, false, &[1]);
        assert_eq!(Block::decode(&b, Edc::Crc), Err(BlockError::BadLen));
    }

    #[test]
    fn simple_and_toggling() {
        let mut t = T1::new(32, Edc::Lrc);
        let mut card = scripted(vec![
            (i(false, false, &[0, 0xA4, 0, 0]), Ok(i(false, false, &[0x90, 0]))),
            (i(true, false, &[0, 0xB0, 0, 0, 0]), Ok(i(true, false, &[1, 0x90, 0]))),
            (i(false, false, &[1, 2, 3, 4]), Ok(i(false, false, &[0x6D, 0]))),
        ]);
        assert_eq!(t.transceive(&mut card, &[0, 0xA4, 0, 0]).unwrap(), [0x90, 0]);
        assert_eq!(t.transceive(&mut card, &[0, 0xB0, 0, 0, 0]).unwrap(), [1, 0x90, 0]);
        assert_eq!(t.transceive(&mut card, &[1, 2, 3, 4]).unwrap(), [0x6D, 0]);
        assert_eq!(t.transceive(&mut card, &[]), Err(T1Error::EmptyCommand));
    }

    #[test]
    fn chaining_both_ways() {
        let mut t = T1::new(4, Edc::Lrc);
        let apdu = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        let mut card = scripted(vec![
            (i(false, true, &[1, 2, 3, 4]), Ok(r(true, RError::None))),
            (i(true, true, &[5, 6, 7, 8]), Ok(r(false, RError::None))),
            (i(false, false, &[9, 10]), Ok(i(false, true, &[0xA, 0xB]))),
            (r(true, RError::None), Ok(i(true, true, &[0xC]))),
            (r(false, RError::None), Ok(i(false, false, &[0x90, 0]))),
        ]);
        assert_eq!(t.transceive(&mut card, &apdu).unwrap(), [0xA, 0xB, 0xC, 0x90, 0]);
        assert_eq!((t.ns, t.nr), (true, true));
    }

    #[test]
    fn edc_error_then_retransmission() {
        let mut t = T1::new(32, Edc::Lrc);
        let mut bad = i(false, false, &[0x90, 0]);
        *bad.last_mut().unwrap() ^= 0xFF;
        let mut card = scripted(vec![
            (i(false, false, &[1, 2, 3, 4]), Ok(bad)),
            // We ask for the card's block again (N(R) = 0, EDC error).
            (r(false, RError::Edc), Ok(i(false, false, &[0x90, 0]))),
        ]);
        assert_eq!(t.transceive(&mut card, &[1, 2, 3, 4]).unwrap(), [0x90, 0]);
        assert_eq!(t.stats().errors, 1);
    }

    #[test]
    fn lost_block_and_parity() {
        let mut t = T1::new(32, Edc::Lrc);
        let mut card = scripted(vec![
            // Our I-block is lost: the reader reports mute.
            (i(false, false, &[1, 2, 3, 4]), Err(XferError::Mute)),
            // The card answers our R-block with R(N(R) = our N(S)): repeat the I-block.
            (r(false, RError::Other), Ok(r(false, RError::None))),
            (i(false, false, &[1, 2, 3, 4]), Ok(i(false, false, &[0x90, 0]))),
            // Parity error reported by the reader: R-block with the EDC/parity indication.
            (i(true, false, &[5, 6, 7, 8]), Err(XferError::Parity)),
            (r(true, RError::Edc), Ok(i(true, false, &[0x90, 1]))),
        ]);
        assert_eq!(t.transceive(&mut card, &[1, 2, 3, 4]).unwrap(), [0x90, 0]);
        assert_eq!(t.transceive(&mut card, &[5, 6, 7, 8]).unwrap(), [0x90, 1]);
        assert_eq!(t.stats().errors, 3);
    }

    #[test]
    fn resend_last_r_block_rule() {
        let mut t = T1::new(32, Edc::Lrc);
        let mut card = scripted(vec![
            (i(false, false, &[1, 2, 3, 4]), Ok(i(false, true, &[0xA]))),
            (r(true, RError::None), Err(XferError::Parity)),
            // Rule 7.2: the last block we sent was an R-block: send the same one again.
            (r(true, RError::None), Ok(i(true, false, &[0x90, 0]))),
        ]);
        assert_eq!(t.transceive(&mut card, &[1, 2, 3, 4]).unwrap(), [0xA, 0x90, 0]);
    }

    #[test]
    fn wtx_and_ifs_requests() {
        let mut t = T1::new(32, Edc::Lrc);
        let mut wtx_seen = vec![];
        let mut steps = vec![
            (i(false, false, &[1, 2, 3, 4]), Ok(s(SKind::Wtx, false, &[9]))),
            (s(SKind::Wtx, true, &[9]), Ok(s(SKind::Ifs, false, &[0x80]))),
            (s(SKind::Ifs, true, &[0x80]), Ok(i(false, false, &[0x90, 0]))),
        ]
        .into_iter();
        let mut card = |got: &[u8], wtx: u8| {
            wtx_seen.push(wtx);
            let (want, a) = steps.next().unwrap();
            assert_eq!(got, &want[..]);
            a
        };
        assert_eq!(t.transceive(&mut card, &[1, 2, 3, 4]).unwrap(), [0x90, 0]);
        assert_eq!(wtx_seen, [0, 9, 0]);
        assert_eq!(t.ifsc(), 0x80);
        assert_eq!(t.stats().wtx, 1);
    }

    #[test]
    fn resync_after_three_failures_restarts_the_command() {
        let mut t = T1::new(32, Edc::Lrc);
        let mut card = scripted(vec![
            (i(false, false, &[1, 2, 3, 4]), Err(XferError::Mute)),
            (r(false, RError::Other), Err(XferError::Mute)),
            (r(false, RError::Other), Err(XferError::Mute)),
            (s(SKind::Resynch, false, &[]), Ok(s(SKind::Resynch, true, &[]))),
            (i(false, false, &[1, 2, 3, 4]), Ok(i(false, false, &[0x90, 0]))),
        ]);
        assert_eq!(t.transceive(&mut card, &[1, 2, 3, 4]).unwrap(), [0x90, 0]);
        assert_eq!(t.stats().resyncs, 1);
    }

    #[test]
    fn dead_after_failed_resyncs_until_reset() {
        let mut t = T1::new(32, Edc::Lrc);
        let n = std::cell::Cell::new(0);
        let mut card = |_: &[u8], _| {
            n.set(n.get() + 1);
            Err(XferError::Mute)
        };
        assert_eq!(t.transceive(&mut card, &[1, 2, 3, 4]), Err(T1Error::Dead));
        // 3 tries of the I-block, then 3 resync attempts.
        assert_eq!(n.get(), 6);
        assert!(t.is_dead());
        assert_eq!(t.transceive(&mut card, &[1, 2, 3, 4]), Err(T1Error::Dead));
        assert_eq!(n.get(), 6);
        t.reset();
        let mut ok = |_: &[u8], _| Ok(i(false, false, &[0x90, 0]));
        assert_eq!(t.transceive(&mut ok, &[1, 2, 3, 4]).unwrap(), [0x90, 0]);
    }

    #[test]
    fn fatal_transport_error_kills_the_channel() {
        let mut t = T1::new(32, Edc::Lrc);
        let e = CcidError::Transport { cmd: "XfrBlock", source: TransportError::Timeout };
        let mut card = |_: &[u8], _| Err(XferError::Fatal(e.clone()));
        assert_eq!(t.transceive(&mut card, &[1, 2, 3, 4]), Err(T1Error::Fatal(e.clone())));
        assert!(t.is_dead());
    }

    #[test]
    fn card_resynch_request_and_wrong_sequence() {
        let mut t = T1::new(32, Edc::Lrc);
        let mut card = scripted(vec![
            // Wrong N(S) from the card: R(other error).
            (i(false, false, &[1, 2, 3, 4]), Ok(i(true, false, &[0x90, 0]))),
            (r(false, RError::Other), Ok(s(SKind::Resynch, false, &[]))),
            // The card may not ask for a resync: we do it ourselves.
            (s(SKind::Resynch, false, &[]), Ok(s(SKind::Resynch, true, &[]))),
            (i(false, false, &[1, 2, 3, 4]), Ok(i(false, false, &[0x90, 0]))),
        ]);
        assert_eq!(t.transceive(&mut card, &[1, 2, 3, 4]).unwrap(), [0x90, 0]);
    }

    #[test]
    fn ifsd_negotiation() {
        let mut t = T1::new(32, Edc::Lrc);
        let mut card = scripted(vec![
            (s(SKind::Ifs, false, &[254]), Err(XferError::Parity)),
            (s(SKind::Ifs, false, &[254]), Ok(s(SKind::Ifs, true, &[254]))),
        ]);
        t.negotiate_ifsd(&mut card, 254).unwrap();
        assert_eq!(t.ifsd(), 254);
        let mut t = T1::new(32, Edc::Lrc);
        let mut bad = |_: &[u8], _| Ok(s(SKind::Ifs, true, &[32]));
        assert_eq!(t.negotiate_ifsd(&mut bad, 254), Err(T1Error::IfsdRefused));
        assert!(t.is_dead());
    }

    #[test]
    fn nad_checked_and_crc() {
        let mut t = T1::new(32, Edc::Crc);
        t.nad = 0x12;
        let reply = Block::I { ns: false, more: false, inf: vec![0x90, 0] }.encode(0x21, Edc::Crc);
        let wrong = Block::I { ns: false, more: false, inf: vec![0x90, 0] }.encode(0x12, Edc::Crc);
        let mut n = 0;
        let mut card = |got: &[u8], _| {
            n += 1;
            assert_eq!(got[0], 0x12);
            Ok(if n == 1 { wrong.clone() } else { reply.clone() })
        };
        assert_eq!(t.transceive(&mut card, &[1, 2, 3, 4]).unwrap(), [0x90, 0]);
        assert_eq!(n, 2);
    }

    /// A card that must never be asked anything.
    fn silent(_: &[u8], _: u8) -> Result<Vec<u8>, XferError> {
        panic!("no exchange expected")
    }

    #[test]
    fn secure_prologue_follows_the_sequence() {
        let mut t = T1::new(32, Edc::Lrc);
        assert_eq!(t.secure_prologue(13), Ok([0x00, 0x00, 13]));
        let mut card = scripted(vec![(i(false, false, &[1, 2, 3, 4]), Ok(i(false, false, &[0x90, 0])))]);
        t.transceive(&mut card, &[1, 2, 3, 4]).unwrap();
        // N(S) = 1 now; NAD as configured; the APDU must fit one block (IFSC).
        t.nad = 0x12;
        assert_eq!(t.secure_prologue(32), Ok([0x12, 0x40, 32]));
        assert_eq!(t.secure_prologue(33), Err(T1Error::BlockTooLong { len: 33, ifsc: 32 }));
        assert_eq!(t.secure_prologue(0), Err(T1Error::EmptyCommand));
        // Asking for a prologue changes nothing.
        assert_eq!((t.ns, t.nr), (true, true));
        t.dead = true;
        assert_eq!(t.secure_prologue(5), Err(T1Error::Dead));
    }

    #[test]
    fn secure_answer_advances_the_sequence() {
        let mut t = T1::new(32, Edc::Lrc);
        assert_eq!(t.secure_answer(&mut silent, Ok(i(false, false, &[0x90, 0]))).unwrap(), [0x90, 0]);
        assert_eq!((t.ns, t.nr), (true, true));
        // The next ordinary command carries N(S) = 1 and expects the card's N(S) = 1.
        let mut card = scripted(vec![(i(true, false, &[1, 2, 3, 4]), Ok(i(true, false, &[0x63, 0xC2])))]);
        assert_eq!(t.transceive(&mut card, &[1, 2, 3, 4]).unwrap(), [0x63, 0xC2]);
        assert_eq!(t.secure_prologue(5).unwrap()[1], 0x00);
    }

    #[test]
    fn secure_answer_wtx_ifs_and_chained_response() {
        let mut t = T1::new(32, Edc::Lrc);
        let mut wtx_seen = vec![];
        let mut steps = vec![
            (s(SKind::Wtx, true, &[9]), Ok(s(SKind::Ifs, false, &[0x40]))),
            (s(SKind::Ifs, true, &[0x40]), Ok(i(false, true, &[1, 2]))),
            (r(true, RError::None), Ok(i(true, false, &[0x90, 0]))),
        ]
        .into_iter();
        let mut card = |got: &[u8], wtx: u8| {
            wtx_seen.push(wtx);
            let (want, a) = steps.next().unwrap();
            assert_eq!(got, &want[..]);
            a
        };
        let first = Ok(s(SKind::Wtx, false, &[9]));
        assert_eq!(t.secure_answer(&mut card, first).unwrap(), [1, 2, 0x90, 0]);
        // The S(WTX response) carried the multiplier; the others none.
        assert_eq!(wtx_seen, [9, 0, 0]);
        assert_eq!((t.ifsc(), t.stats().wtx), (0x40, 1));
        assert_eq!((t.ns, t.nr), (true, false));
    }

    #[test]
    fn secure_answer_damaged_block_is_asked_for_again() {
        let mut t = T1::new(32, Edc::Lrc);
        let mut bad = i(false, false, &[0x90, 0]);
        *bad.last_mut().unwrap() ^= 0xFF;
        let mut card = scripted(vec![
            // Bad EDC: R(N(R) = 0, EDC error); the card repeats its answer (parity error on the way).
            (r(false, RError::Edc), Err(XferError::Parity)),
            // Rule 7.2: our R-block again.
            (r(false, RError::Edc), Ok(i(false, false, &[0x90, 0]))),
        ]);
        assert_eq!(t.secure_answer(&mut card, Ok(bad)).unwrap(), [0x90, 0]);
        assert_eq!((t.ns, t.nr, t.stats().errors), (true, true, 2));
        // The reader reports mute: the card's answer was lost; the card repeats it.
        let mut card = scripted(vec![(r(true, RError::Other), Ok(i(true, false, &[0x90, 0])))]);
        assert_eq!(t.secure_answer(&mut card, Err(XferError::Mute)).unwrap(), [0x90, 0]);
        assert_eq!((t.ns, t.nr), (false, false));
    }

    #[test]
    fn secure_answer_block_that_cannot_be_repeated() {
        let mut t = T1::new(32, Edc::Lrc);
        // The card asks for our I-block (R with N(R) = our N(S)): only the reader had the PIN.
        assert_eq!(t.secure_answer(&mut silent, Ok(r(false, RError::Edc))), Err(T1Error::PinBlockLost));
        assert_eq!((t.ns, t.nr, t.stats().resyncs), (false, false, 0));
        // Same after our R-block when the reader reported the card mute.
        let mut card = scripted(vec![(r(false, RError::Other), Ok(r(false, RError::Other)))]);
        assert_eq!(t.secure_answer(&mut card, Err(XferError::Mute)), Err(T1Error::PinBlockLost));
        assert!(!t.is_dead());
    }

    #[test]
    fn secure_answer_that_stays_unreadable_resynchronises() {
        let mut t = T1::new(32, Edc::Lrc);
        let mut card = scripted(vec![(i(false, false, &[1]), Ok(i(false, false, &[0x90, 0])))]);
        t.transceive(&mut card, &[1]).unwrap();
        let mut bad = i(true, false, &[0x90, 0]);
        *bad.last_mut().unwrap() ^= 0xFF;
        let mut card = scripted(vec![
            (r(true, RError::Edc), Ok(bad.clone())),
            (r(true, RError::Edc), Ok(bad.clone())),
            (s(SKind::Resynch, false, &[]), Ok(s(SKind::Resynch, true, &[]))),
        ]);
        assert_eq!(t.secure_answer(&mut card, Ok(bad)), Err(T1Error::PinBlockLost));
        assert_eq!((t.ns, t.nr, t.stats().resyncs), (false, false, 1));
        assert!(!t.is_dead());
        // The wrong N(S) from the card is an error too; a card that never recovers kills the channel.
        let mut t = T1::new(32, Edc::Lrc);
        let mut card = |_: &[u8], _| Ok(i(true, false, &[0x90, 0]));
        assert_eq!(t.secure_answer(&mut card, Ok(i(true, false, &[0x90, 0]))), Err(T1Error::Dead));
        assert!(t.is_dead());
        assert_eq!(t.secure_answer(&mut silent, Ok(i(false, false, &[0x90, 0]))), Err(T1Error::Dead));
    }

    #[test]
    fn secure_answer_crc_and_transport_failure() {
        let mut t = T1::new(32, Edc::Crc);
        let ok = Block::I { ns: false, more: false, inf: vec![0x90, 0] }.encode(0, Edc::Crc);
        // An LRC block where CRC is due: not taken for the answer.
        let lrc = i(false, false, &[0x90, 0]);
        let mut card = scripted(vec![(Block::R { nr: false, error: RError::Other }.encode(0, Edc::Crc), Ok(ok))]);
        assert_eq!(t.secure_answer(&mut card, Ok(lrc)).unwrap(), [0x90, 0]);
        let e = CcidError::Transport { cmd: "XfrBlock", source: TransportError::Timeout };
        let mut t = T1::new(32, Edc::Lrc);
        let mut card = |_: &[u8], _| Err(XferError::Fatal(e.clone()));
        assert_eq!(t.secure_answer(&mut card, Ok(s(SKind::Wtx, false, &[2]))), Err(T1Error::Fatal(e.clone())));
        assert!(t.is_dead());
    }

    #[test]
    fn response_limit() {
        let mut t = T1::new(32, Edc::Lrc);
        t.max_response = 3;
        let mut card = |_: &[u8], _| Ok(i(false, false, &[1, 2, 3, 0x90, 0]));
        assert_eq!(t.transceive(&mut card, &[1, 2, 3, 4]), Err(T1Error::ResponseTooLong(3)));
    }
}
