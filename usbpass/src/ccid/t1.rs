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
//! * host S(IFS request) to announce IFSD ([`T1::negotiate_ifsd`]).

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
}

impl fmt::Display for T1Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            T1Error::Dead => f.write_str("T=1 channel dead (resynchronisation failed); reset the card"),
            T1Error::EmptyCommand => f.write_str("empty command"),
            T1Error::ResponseTooLong(n) => write!(f, "T=1 response longer than {n} bytes"),
            T1Error::IfsdRefused => f.write_str("card refused the IFSD request"),
            T1Error::Fatal(e) => write!(f, "T=1: {e}"),
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
                Err(Outcome::Resync) => loop {
                    if resyncs >= RESYNCS {
                        self.dead = true;
                        return Err(T1Error::Dead);
                    }
                    resyncs += 1;
                    self.stats.resyncs += 1;
                    match self.resynch(x) {
                        Ok(true) => break,
                        Ok(false) => continue,
                        Err(e) => {
                            self.dead = true;
                            return Err(T1Error::Fatal(e));
                        }
                    }
                },
            }
            tracing::debug!("T=1 resynchronised: sending the command again");
        }
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
                    if ns != self.nr || inf.len() > self.ifsd.max(254) {
                        fail(self, RError::Other, &mut last, &mut last_kind)?;
                        continue;
                    }
                    if sending {
                        // Implicit acknowledgement of our last chunk.
                        self.ns = !self.ns;
                        sending = false;
                    }
                    self.nr = !self.nr;
                    errors = 0;
                    if resp.len() + inf.len() > self.max_response {
                        return Err(Outcome::TooLong);
                    }
                    resp.extend_from_slice(&inf);
                    if !more {
                        return Ok(resp);
                    }
                    last = self.encode(&Block::R { nr: self.nr, error: RError::None });
                    last_kind = Last::R;
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
                Block::S { kind, response: false, inf } => {
                    let value = inf.first().copied();
                    match (kind, value) {
                        (SKind::Wtx, Some(v)) => {
                            self.stats.wtx += 1;
                            wtx = v;
                        }
                        (SKind::Ifs, Some(v @ 1..=254)) => self.ifsc = v as usize,
                        (SKind::Abort, None) => tracing::debug!("T=1: the card sent S(ABORT request)"),
                        (SKind::Resynch, _) => return Err(Outcome::Resync),
                        _ => {
                            fail(self, RError::Other, &mut last, &mut last_kind)?;
                            continue;
                        }
                    }
                    errors = 0;
                    last = self.encode(&Block::S { kind, response: true, inf });
                    last_kind = Last::S;
                }
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

    #[test]
    fn response_limit() {
        let mut t = T1::new(32, Edc::Lrc);
        t.max_response = 3;
        let mut card = |_: &[u8], _| Ok(i(false, false, &[1, 2, 3, 0x90, 0]));
        assert_eq!(t.transceive(&mut card, &[1, 2, 3, 4]), Err(T1Error::ResponseTooLong(3)));
    }
}
