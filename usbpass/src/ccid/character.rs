//! The character exchange level (`dwFeatures & 0x70000 == 0`; ccid.md §3.6).
//!
//! A character-level reader only moves characters between the host and the card: every
//! XfrBlock carries the characters to send and asks, in `wLevelParameter`, for the number of
//! characters to wait for. Everything the other levels leave to the reader is the host's work:
//!
//! * **T=0**: the ISO/IEC 7816-3 §10.3 procedure-byte state machine ([`t0_tpdu`], libccid's
//!   `CmdXfrBlockCHAR_T0`). It carries one T=0 command TPDU (the APDU → TPDU mapping and the
//!   `61xx`/`6Cxx` follow-ups stay in [`super::t0`], shared with the TPDU level through
//!   [`T0OverChars`], so both levels answer the same way). As in libccid only cases 1, 2 and 3
//!   are accepted: a case-4 APDU needs its Le dropped, which pcscd + libccid leave to the
//!   application ([`CharError::Case4`]).
//! * **T=1**: the block engine of [`super::t1`] with a block transport ([`T1OverChars`]) that
//!   sends a block asking for its 3-byte prologue back, then asks for LEN + EDC more characters
//!   (libccid always asks for LEN + 1, which breaks CRC cards).
//!
//! The O2Micro OZ776 mishandles a DataBlock whose size is a multiple of 64 bytes, so no read
//! here asks for `n` characters with `10 + n` a multiple of 64: it asks for 1 first, then
//! `n − 1` (libccid's `O2MICRO_OZ776_PATCH` is compiled in and applies to every character-level
//! reader, so this is not a [`super::quirks`] row; it costs one more XfrBlock elsewhere).

use super::apdu::{Apdu, Case};
use super::device::{Ccid, CcidError};
use super::message::XfrBlock;
use super::t0::{T0Error, TpduXfer};
use super::t1::{BlockXfer, Edc, XferError};
use super::transport::Transport;
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// The T=0 NULL procedure byte: the card is still working, wait for the next one.
pub const NULL: u8 = 0x60;
/// `wLevelParameter` of a T=0 header or data, and of the read of a procedure byte or SW2.
const ONE: u16 = 1;
/// `wLevelParameter` of a T=1 block: its prologue (NAD PCB LEN) expected back.
const PROLOGUE: u16 = 3;
/// Safety net against a card (or reader) that sends NULLs forever: at a NULL per work waiting
/// time (about a second with the default WI) this is many hours.
pub const MAX_ROUNDS: usize = 65_536;

/// Why a T=0 exchange at the character level failed (pcscd reports all of them as
/// `SCARD_E_NOT_TRANSACTED`, libccid's communication error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CharError {
    /// A case-4 APDU (data and Le): T=0 has no TPDU for it, the application must send it as
    /// case 3 and fetch the answer with GET RESPONSE (or enable `T0Mode::Iso`).
    Case4,
    /// INS `6x`/`9x`: such an INS would be taken for a status byte (ISO/IEC 7816-3 §10.3.2).
    Ins(u8),
    /// The card sent a byte that is neither NULL, an ACK nor SW1.
    ProcedureByte(u8),
    /// An ACK asking for data when there is none left to send or to receive.
    UnexpectedAck(u8),
    /// The reader delivered fewer characters than asked for.
    ShortReply { wanted: usize, got: usize },
    /// More than [`MAX_ROUNDS`] procedure bytes for one command.
    TooManyRounds,
}

impl fmt::Display for CharError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CharError::Case4 => {
                f.write_str("case-4 APDU refused at the character level (send it as case 3, then GET RESPONSE)")
            }
            CharError::Ins(i) => write!(f, "INS {i:02X} is not allowed with T=0 (6x/9x)"),
            CharError::ProcedureByte(b) => write!(f, "unexpected procedure byte {b:02X}"),
            CharError::UnexpectedAck(b) => write!(f, "procedure byte {b:02X} asks for data, none is left"),
            CharError::ShortReply { wanted, got } => {
                write!(f, "character reader returned {got} of {wanted} characters")
            }
            CharError::TooManyRounds => write!(f, "more than {MAX_ROUNDS} procedure bytes"),
        }
    }
}

impl std::error::Error for CharError {}

/// One character-level XfrBlock: send `data`, then return the `expect` characters the reader
/// waited for (`wLevelParameter`). `bwi` is the T=1 waiting-time multiplier (0: none).
pub trait CharXfer {
    fn xfr(&mut self, data: &[u8], expect: u16, bwi: u8) -> Result<Vec<u8>, CcidError>;

    /// Largest `abData` of one XfrBlock (`dwMaxCCIDMessageLength − 10`), for both directions.
    fn max_data(&self) -> usize {
        261
    }
}

impl<F: FnMut(&[u8], u16, u8) -> Result<Vec<u8>, CcidError>> CharXfer for F {
    fn xfr(&mut self, data: &[u8], expect: u16, bwi: u8) -> Result<Vec<u8>, CcidError> {
        self(data, expect, bwi)
    }
}

/// [`CharXfer`] over a reader's slot. A `bBWI` above 1 stretches the read like at the TPDU level.
pub struct CcidChars<'a, T: Transport> {
    pub ccid: &'a mut Ccid<T>,
    pub slot: u8,
    pub timeout: Duration,
}

impl<T: Transport> CharXfer for CcidChars<'_, T> {
    fn xfr(&mut self, data: &[u8], expect: u16, bwi: u8) -> Result<Vec<u8>, CcidError> {
        let timeout = if bwi > 1 { self.timeout.saturating_mul(bwi as u32) } else { self.timeout };
        self.ccid.transact(self.slot, &XfrBlock { bwi, level: expect, data }, timeout).map(|r| r.data)
    }

    fn max_data(&self) -> usize {
        self.ccid.max_message_len().saturating_sub(10).max(1)
    }
}

/// How many characters to ask for next when `n` are wanted: at most one message, and never a
/// reply of `10 + n` = 64·k bytes (the OZ776 work-around above).
fn read_size(n: usize, max: usize) -> usize {
    let n = n.min(max).min(u16::MAX as usize);
    if n > 1 && (10 + n).is_multiple_of(64) {
        1
    } else {
        n
    }
}

/// The characters between host and card, with those the reader returned beyond what was asked
/// (libccid keeps them too, a reader may answer a procedure byte and data at once).
struct Line<'x, X: CharXfer + ?Sized> {
    x: &'x mut X,
    pending: VecDeque<u8>,
}

impl<X: CharXfer + ?Sized> Line<'_, X> {
    /// Send `data` (not empty; in pieces when it exceeds a message), the last piece asking for
    /// `expect` characters back, which are kept for [`Line::take`].
    fn send(&mut self, data: &[u8], expect: u16) -> Result<(), T0Error> {
        let max = self.x.max_data();
        let mut pieces = data.chunks(max).peekable();
        while let Some(piece) = pieces.next() {
            let last = pieces.peek().is_none();
            let want = if last { expect } else { 0 };
            let got = self.x.xfr(piece, want, 0)?;
            if got.len() < usize::from(want) {
                return Err(T0Error::Character(CharError::ShortReply { wanted: want.into(), got: got.len() }));
            }
            self.pending.extend(got);
        }
        Ok(())
    }

    /// `n` characters from the card: the kept ones first, then reads.
    fn take(&mut self, n: usize) -> Result<Vec<u8>, T0Error> {
        let mut out: Vec<u8> = self.pending.drain(..n.min(self.pending.len())).collect();
        while out.len() < n {
            let ask = read_size(n - out.len(), self.x.max_data());
            let got = self.x.xfr(&[], ask as u16, 0)?;
            if got.len() < ask {
                return Err(T0Error::Character(CharError::ShortReply { wanted: ask, got: got.len() }));
            }
            let used = ask.min(n - out.len());
            out.extend_from_slice(&got[..used]);
            self.pending.extend(&got[used..]);
        }
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, T0Error> {
        Ok(self.take(1)?[0])
    }
}

/// One T=0 command TPDU through a character-level reader; returns the card's data + SW1 SW2,
/// whatever the status word (`61xx`, `6Cxx` are for [`super::t0::transmit`] or the
/// application).
///
/// The bytes are classified by length as libccid does: 4 bytes case 1 (sent with `P3 = 00`), 5
/// bytes case 2 (Le, `00` = 256), 5 + Lc bytes case 3; case 4 and extended APDUs are refused.
/// Procedure bytes: `60` wait; INS or INS⊕`01` all remaining data; INS⊕`FF` or INS⊕`FE` one
/// byte; `6x`/`9x` SW1, then SW2. Unlike libccid, after an ACK on the receiving side only the
/// data is read and the next procedure byte is waited for again (libccid reads data and a
/// status word at once, which takes a NULL sent after the data for SW1).
pub fn t0_tpdu<X: CharXfer + ?Sized>(x: &mut X, tpdu: &[u8]) -> Result<Vec<u8>, T0Error> {
    let apdu = Apdu::parse(tpdu).map_err(T0Error::Apdu)?;
    let mut header = [0u8; 5];
    header[..4].copy_from_slice(&apdu.header);
    // What goes to the card and what comes back, per case.
    let (mut to_send, to_receive): (&[u8], usize) = match apdu.case {
        Case::C1 => (&[], 0),
        Case::C2S => {
            header[4] = tpdu[4];
            (&[], apdu.ne.unwrap_or(256) as usize)
        }
        Case::C3S => {
            header[4] = tpdu[4];
            (apdu.data, 0)
        }
        Case::C4S => return Err(T0Error::Character(CharError::Case4)),
        Case::C2E | Case::C3E | Case::C4E => return Err(T0Error::Extended),
    };
    let ins = apdu.ins();
    if matches!(ins & 0xF0, 0x60 | 0x90) {
        return Err(T0Error::Character(CharError::Ins(ins)));
    }
    let mut line = Line { x, pending: VecDeque::new() };
    let mut resp = Vec::with_capacity(to_receive + 2);
    line.send(&header, ONE)?;
    for _ in 0..MAX_ROUNDS {
        let pb = line.byte()?;
        let count = if pb == NULL {
            // The card needs more time: wait for the next procedure byte.
            continue;
        } else if pb == ins || pb == ins ^ 0x01 {
            None
        } else if pb == ins ^ 0xFF || pb == ins ^ 0xFE {
            Some(1)
        } else if matches!(pb & 0xF0, 0x60 | 0x90) {
            let sw2 = line.byte()?;
            if !line.pending.is_empty() {
                tracing::debug!(extra = ?line.pending, "T=0 characters after SW2 ignored");
            }
            resp.extend_from_slice(&[pb, sw2]);
            return Ok(resp);
        } else {
            return Err(T0Error::Character(CharError::ProcedureByte(pb)));
        };
        if !to_send.is_empty() {
            let n = count.unwrap_or(to_send.len());
            let (now, rest) = to_send.split_at(n);
            line.send(now, ONE)?;
            to_send = rest;
        } else if resp.len() < to_receive {
            let n = count.unwrap_or(to_receive - resp.len());
            let data = line.take(n)?;
            resp.extend_from_slice(&data);
        } else {
            return Err(T0Error::Character(CharError::UnexpectedAck(pb)));
        }
    }
    Err(T0Error::Character(CharError::TooManyRounds))
}

/// T=0 TPDUs through a character-level reader, for [`super::t0::transmit`].
pub struct T0OverChars<X>(pub X);

impl<X: CharXfer> TpduXfer for T0OverChars<X> {
    fn xfer(&mut self, tpdu: &[u8]) -> Result<Vec<u8>, T0Error> {
        t0_tpdu(&mut self.0, tpdu)
    }
}

/// One T=1 block through a character-level reader: the block out asking for the card's
/// prologue, then LEN + EDC characters. A reply too short to be a block is returned as it is:
/// the T=1 engine rejects it like any invalid block (R-block, retries, resynchronisation).
pub fn t1_block<X: CharXfer + ?Sized>(x: &mut X, block: &[u8], wtx: u8, edc: Edc) -> Result<Vec<u8>, XferError> {
    let fail = |e: CcidError| {
        if e.is_parity_error() {
            XferError::Parity
        } else if e.is_mute() {
            XferError::Mute
        } else {
            XferError::Fatal(e)
        }
    };
    let mut got = x.xfr(block, PROLOGUE, wtx).map_err(fail)?;
    let len = match got.get(2) {
        Some(&len) if len != 0xFF => len as usize,
        _ => return Ok(got),
    };
    let total = 3 + len + edc.len();
    while got.len() < total {
        let ask = read_size(total - got.len(), x.max_data());
        let more = x.xfr(&[], ask as u16, wtx).map_err(fail)?;
        if more.is_empty() {
            break;
        }
        got.extend_from_slice(&more);
    }
    got.truncate(total);
    Ok(got)
}

/// T=1 blocks through a character-level reader, for the [`super::t1::T1`] engine.
pub struct T1OverChars<X> {
    pub chars: X,
    pub edc: Edc,
}

impl<X: CharXfer> BlockXfer for T1OverChars<X> {
    fn xfer(&mut self, block: &[u8], wtx: u8) -> Result<Vec<u8>, XferError> {
        t1_block(&mut self.chars, block, wtx, self.edc)
    }
}

#[cfg(test)]
mod tests;
