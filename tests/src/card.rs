//! The virtual card's logic: ISO 7816-4 APDU parsing and a handful of commands.
//!
//! Pure code, no I/O: [`Card::process`] takes a command APDU and writes the response APDU
//! (data + SW1 SW2) into a caller-owned buffer, so the transport can reuse one buffer.
//!
//! What the card does (every test may rely on this):
//!
//! | Command | Effect |
//! |---|---|
//! | `00 A4 04 xx Lc AID [Le]` SELECT by name | [`AID`] -> [`FCI`] + `90 00` (no data when P2 = `0C`); other AIDs -> `6A 82` |
//! | `00 A4 00 xx 02 3F 00 [Le]` / `00 A4 00 xx` SELECT MF | `90 00` ([`FCP_MF`] unless P2 = `0C`); other FIDs -> `6A 82` |
//! | `00 B0 P1 P2 Le` READ BINARY | offset = P1P2 (16 bits) in a file of [`FILE_SIZE`] bytes; byte at offset `o` is [`file_byte`]`(o)` = `(o & 0xFF) ^ 0x5A`; offset >= size -> `6B 00`; fewer bytes than Ne left -> the rest + `62 82` |
//! | `80 01 P1 P2 [Lc data] [Le]` ECHO | the command data back + `90 00` (truncated to Ne; Le absent = everything) |
//! | `80 02 P1 P2 [Le]` PATTERN | N = P1P2 bytes of the file pattern (`file_byte(i)`, i = 0..N) |
//! | `00 C0 00 00 Le` GET RESPONSE | the next part of a chained response |
//! | `00 20 00 81 [PIN]` VERIFY | [`PIN`] -> `90 00`; wrong -> `63 Cx` (x = retries left, starts at [`PIN_TRIES`]); blocked -> `69 83`; no data -> `90 00` if verified else `63 Cx`; P1 = `FF` resets the verified state |
//! | `00 24 00 81 old‖new` CHANGE REFERENCE DATA | old must be the current PIN (same retry counter); new 4..=16 bytes else `6A 80` |
//! | `00 2C 00 81 PUK‖new` / `00 2C 01 81 PUK` RESET RETRY COUNTER | [`PUK`]; resets the counter (and sets the new PIN); wrong PUK -> `69 82` |
//! | other INS in CLA `0x` / `80` | `6D 00` |
//! | other CLA (`FF`, `9x`, `Ax`, ...) | `6E 00` |
//! | malformed length (< 4 bytes, Lc/Le inconsistent with the length) | `67 00` |
//!
//! Chaining (short APDUs only): when a command's response data exceeds 256 bytes, the card returns
//! min(Ne, 256) bytes and `61 xx` (xx = bytes left, `00` when 256 or more), and serves the rest with
//! GET RESPONSE. Any other command discards a pending response. An extended command gets its whole
//! response at once (truncated to Ne). GET RESPONSE without pending data -> `69 85`.

/// ATR: TS=3B, T0=8A (TD1 present, 10 historical bytes), TD1=80 (TD2 present, T=0 indicated),
/// TD2=01 (T=1), historical bytes `"pcscbridge"`, TCK. pcscd chooses T=1 for it.
pub const ATR: [u8; 15] = {
    let mut a = [0x3B, 0x8A, 0x80, 0x01, b'p', b'c', b's', b'c', b'b', b'r', b'i', b'd', b'g', b'e', 0];
    a[14] = tck(&a, 14);
    a
};

/// TCK over `atr[1..len]` (XOR of T0 up to the last byte before TCK).
pub const fn tck(atr: &[u8], len: usize) -> u8 {
    let mut x = 0u8;
    let mut i = 1;
    while i < len {
        x ^= atr[i];
        i += 1;
    }
    x
}

/// The application identifier the card answers to.
pub const AID: [u8; 7] = [0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01];
/// FCI returned by SELECT of [`AID`]: `6F` { `84` AID, `A5` { `88 01 01` } }.
pub const FCI: [u8; 16] =
    [0x6F, 0x0E, 0x84, 0x07, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01, 0xA5, 0x03, 0x88, 0x01, 0x01];
/// FCP returned by SELECT of the MF: `62` { `83 02 3F 00`, `82 01 38` }.
pub const FCP_MF: [u8; 9] = [0x62, 0x07, 0x83, 0x02, 0x3F, 0x00, 0x82, 0x01, 0x38];
/// Size of the transparent file READ BINARY reads.
pub const FILE_SIZE: usize = 32768;
/// The PIN (ASCII).
pub const PIN: &[u8] = b"123456";
/// The PUK (ASCII) for RESET RETRY COUNTER.
pub const PUK: &[u8] = b"12345678";
/// PIN tries after a reset of the counter.
pub const PIN_TRIES: u8 = 3;
/// PIN reference (P2) of VERIFY / CHANGE REFERENCE DATA / RESET RETRY COUNTER.
pub const PIN_REF: u8 = 0x81;

/// The content of the file at offset `o` (and of the PATTERN command's output).
#[inline]
pub const fn file_byte(o: usize) -> u8 {
    (o as u8) ^ 0x5A
}

/// Status words.
pub mod sw {
    pub const OK: u16 = 0x9000;
    pub const EOF: u16 = 0x6282;
    pub const WRONG_LENGTH: u16 = 0x6700;
    pub const PIN_BLOCKED: u16 = 0x6983;
    pub const SECURITY: u16 = 0x6982;
    pub const CONDITIONS: u16 = 0x6985;
    pub const WRONG_DATA: u16 = 0x6A80;
    pub const NOT_FOUND: u16 = 0x6A82;
    pub const WRONG_P1P2: u16 = 0x6A86;
    pub const REF_NOT_FOUND: u16 = 0x6A88;
    pub const WRONG_OFFSET: u16 = 0x6B00;
    pub const INS_NOT_SUPPORTED: u16 = 0x6D00;
    pub const CLA_NOT_SUPPORTED: u16 = 0x6E00;
}

/// A parsed command APDU, borrowing the data field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Apdu<'a> {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    pub data: &'a [u8],
    /// Ne: `None` when Le is absent; short Le 00 = 256, extended Le 0000 = 65536.
    pub ne: Option<usize>,
    pub extended: bool,
}

impl Apdu<'_> {
    /// ISO 7816-4 case of the command APDU (for logging).
    pub fn case(&self) -> &'static str {
        match (self.data.is_empty(), self.ne.is_some(), self.extended) {
            (true, false, _) => "1",
            (true, true, false) => "2S",
            (false, false, false) => "3S",
            (false, true, false) => "4S",
            (true, true, true) => "2E",
            (false, false, true) => "3E",
            (false, true, true) => "4E",
        }
    }
}

/// Parse a command APDU (cases 1, 2S, 3S, 4S, 2E, 3E, 4E). `None` if malformed.
pub fn parse(apdu: &[u8]) -> Option<Apdu<'_>> {
    if apdu.len() < 4 {
        return None;
    }
    let (cla, ins, p1, p2) = (apdu[0], apdu[1], apdu[2], apdu[3]);
    let body = &apdu[4..];
    let mk = |data, ne, extended| Apdu { cla, ins, p1, p2, data, ne, extended };
    match body.len() {
        0 => Some(mk(&[][..], None, false)),
        1 => {
            let le = body[0] as usize;
            Some(mk(&[][..], Some(if le == 0 { 256 } else { le }), false))
        }
        _ if body[0] != 0 => {
            let lc = body[0] as usize;
            if body.len() == 1 + lc {
                Some(mk(&body[1..], None, false))
            } else if body.len() == 2 + lc {
                let le = body[1 + lc] as usize;
                Some(mk(&body[1..1 + lc], Some(if le == 0 { 256 } else { le }), false))
            } else {
                None
            }
        }
        // body[0] == 0 and at least 2 bytes: extended
        3 => {
            let le = u16::from_be_bytes([body[1], body[2]]) as usize;
            Some(mk(&[][..], Some(if le == 0 { 65536 } else { le }), true))
        }
        n if n > 3 => {
            let lc = u16::from_be_bytes([body[1], body[2]]) as usize;
            if lc == 0 {
                None
            } else if n == 3 + lc {
                Some(mk(&body[3..], None, true))
            } else if n == 5 + lc {
                let le = u16::from_be_bytes([body[3 + lc], body[4 + lc]]) as usize;
                Some(mk(&body[3..3 + lc], Some(if le == 0 { 65536 } else { le }), true))
            } else {
                None
            }
        }
        _ => None, // 2 bytes starting with 00
    }
}

/// The virtual card's state.
#[derive(Debug, Clone)]
pub struct Card {
    pin: Vec<u8>,
    tries: u8,
    verified: bool,
    /// Pending chained response data and read position.
    pending: Vec<u8>,
    pending_pos: usize,
}

impl Default for Card {
    fn default() -> Self {
        Self::new()
    }
}

impl Card {
    pub fn new() -> Self {
        Card {
            pin: PIN.to_vec(),
            tries: PIN_TRIES,
            verified: false,
            pending: Vec::with_capacity(65536),
            pending_pos: 0,
        }
    }

    /// Power off / on / reset: drops volatile state (PIN verified, pending response).
    /// The PIN and its retry counter are persistent.
    pub fn reset(&mut self) {
        self.verified = false;
        self.pending.clear();
        self.pending_pos = 0;
    }

    /// Whether the PIN has been verified since the last reset.
    pub fn verified(&self) -> bool {
        self.verified
    }

    /// Convenience for tests: process and return a fresh vector.
    pub fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.process(apdu, &mut out);
        out
    }

    /// Process one command APDU; `out` is cleared and receives the response APDU.
    pub fn process(&mut self, apdu: &[u8], out: &mut Vec<u8>) {
        out.clear();
        let sw = match parse(apdu) {
            None => sw::WRONG_LENGTH,
            Some(cmd) => {
                let is_get_response = cmd.cla & 0x80 == 0 && cmd.ins == 0xC0;
                if !is_get_response {
                    self.pending.clear();
                    self.pending_pos = 0;
                }
                self.dispatch(&cmd, out)
            }
        };
        out.extend_from_slice(&sw.to_be_bytes());
    }

    fn dispatch(&mut self, c: &Apdu, out: &mut Vec<u8>) -> u16 {
        match c.cla {
            cla if cla & 0x90 == 0 => match c.ins {
                0xA4 => self.select(c, out),
                0xB0 => self.read_binary(c, out),
                0xC0 => self.get_response(c, out),
                0x20 => self.verify(c),
                0x24 => self.change_reference_data(c),
                0x2C => self.reset_retry_counter(c),
                _ => sw::INS_NOT_SUPPORTED,
            },
            0x80 => match c.ins {
                0x01 => self.respond_with(c, out, |buf| buf.extend_from_slice(c.data)),
                0x02 => {
                    if !c.data.is_empty() {
                        return sw::WRONG_LENGTH;
                    }
                    let n = u16::from_be_bytes([c.p1, c.p2]) as usize;
                    self.respond_with(c, out, |buf| buf.extend((0..n).map(file_byte)))
                }
                _ => sw::INS_NOT_SUPPORTED,
            },
            _ => sw::CLA_NOT_SUPPORTED,
        }
    }

    /// Deliver response data produced by `fill`: all at once for extended commands or when it fits
    /// in 256 bytes (truncated to Ne), else chained with 61xx.
    fn respond_with(&mut self, c: &Apdu, out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) -> u16 {
        let start = out.len();
        fill(out);
        let len = out.len() - start;
        let ne = c.ne.unwrap_or(usize::MAX);
        if c.extended || len <= 256 {
            out.truncate(start + len.min(ne));
            return sw::OK;
        }
        let first = ne.min(256);
        self.pending.clear();
        self.pending.extend_from_slice(&out[start + first..]);
        self.pending_pos = 0;
        out.truncate(start + first);
        Self::more(self.pending.len())
    }

    fn more(left: usize) -> u16 {
        0x6100 | (if left >= 256 { 0 } else { left as u16 })
    }

    fn get_response(&mut self, c: &Apdu, out: &mut Vec<u8>) -> u16 {
        if c.p1 != 0 || c.p2 != 0 {
            return sw::WRONG_P1P2;
        }
        let Some(ne) = c.ne else {
            return sw::WRONG_LENGTH;
        };
        if !c.data.is_empty() {
            return sw::WRONG_LENGTH;
        }
        let left = self.pending.len() - self.pending_pos;
        if left == 0 {
            return sw::CONDITIONS;
        }
        let n = ne.min(left);
        out.extend_from_slice(&self.pending[self.pending_pos..self.pending_pos + n]);
        self.pending_pos += n;
        let left = left - n;
        if left == 0 {
            self.pending.clear();
            self.pending_pos = 0;
            sw::OK
        } else {
            Self::more(left)
        }
    }

    fn select(&mut self, c: &Apdu, out: &mut Vec<u8>) -> u16 {
        let want_fci = c.p2 & 0x0C != 0x0C;
        match c.p1 {
            0x04 => {
                if c.data != AID {
                    return sw::NOT_FOUND;
                }
                if want_fci {
                    self.respond_with(c, out, |b| b.extend_from_slice(&FCI))
                } else {
                    sw::OK
                }
            }
            0x00 => {
                if !(c.data.is_empty() || c.data == [0x3F, 0x00]) {
                    return sw::NOT_FOUND;
                }
                if want_fci {
                    self.respond_with(c, out, |b| b.extend_from_slice(&FCP_MF))
                } else {
                    sw::OK
                }
            }
            _ => sw::WRONG_P1P2,
        }
    }

    fn read_binary(&mut self, c: &Apdu, out: &mut Vec<u8>) -> u16 {
        let Some(ne) = c.ne else {
            return sw::WRONG_LENGTH;
        };
        if !c.data.is_empty() {
            return sw::WRONG_LENGTH;
        }
        let off = u16::from_be_bytes([c.p1, c.p2]) as usize;
        if off >= FILE_SIZE {
            return sw::WRONG_OFFSET;
        }
        let n = ne.min(FILE_SIZE - off);
        out.extend((off..off + n).map(file_byte));
        if n < ne {
            sw::EOF
        } else {
            sw::OK
        }
    }

    fn tries_sw(&self) -> u16 {
        if self.tries == 0 {
            sw::PIN_BLOCKED
        } else {
            0x63C0 | self.tries as u16
        }
    }

    /// Check a presented PIN against the counter: Ok(()) or the status word.
    fn check_pin(&mut self, pin: &[u8]) -> Result<(), u16> {
        if self.tries == 0 {
            return Err(sw::PIN_BLOCKED);
        }
        if pin == self.pin.as_slice() {
            self.tries = PIN_TRIES;
            Ok(())
        } else {
            self.tries -= 1;
            self.verified = false;
            Err(self.tries_sw())
        }
    }

    fn verify(&mut self, c: &Apdu) -> u16 {
        if c.p2 != PIN_REF {
            return sw::REF_NOT_FOUND;
        }
        match c.p1 {
            0x00 => {}
            0xFF if c.data.is_empty() => {
                self.verified = false;
                return sw::OK;
            }
            _ => return sw::WRONG_P1P2,
        }
        if c.data.is_empty() {
            return if self.verified { sw::OK } else { self.tries_sw() };
        }
        match self.check_pin(c.data) {
            Ok(()) => {
                self.verified = true;
                sw::OK
            }
            Err(sw) => sw,
        }
    }

    fn change_reference_data(&mut self, c: &Apdu) -> u16 {
        if c.p2 != PIN_REF {
            return sw::REF_NOT_FOUND;
        }
        if c.p1 != 0x00 {
            return sw::WRONG_P1P2;
        }
        let cur = self.pin.len();
        if c.data.len() < cur {
            return sw::WRONG_DATA;
        }
        let (old, new) = c.data.split_at(cur);
        if let Err(sw) = self.check_pin(old) {
            return sw;
        }
        if !(4..=16).contains(&new.len()) {
            return sw::WRONG_DATA;
        }
        self.pin = new.to_vec();
        self.verified = true;
        sw::OK
    }

    fn reset_retry_counter(&mut self, c: &Apdu) -> u16 {
        if c.p2 != PIN_REF {
            return sw::REF_NOT_FOUND;
        }
        let (puk, new) = match c.p1 {
            0x00 if c.data.len() >= PUK.len() => c.data.split_at(PUK.len()),
            0x01 => (c.data, &[][..]),
            0x00 => return sw::WRONG_DATA,
            _ => return sw::WRONG_P1P2,
        };
        if puk != PUK {
            return sw::SECURITY;
        }
        if c.p1 == 0x00 {
            if !(4..=16).contains(&new.len()) {
                return sw::WRONG_DATA;
            }
            self.pin = new.to_vec();
        }
        self.tries = PIN_TRIES;
        sw::OK
    }
}

/// Command APDUs for this card and the responses it gives, for the tests of the layers below it
/// (drivers, simulated readers): one copy for every test file.
pub mod cmd {
    use super::{file_byte, FCI};

    /// SELECT by name of [`super::AID`]; the answer is [`select_ok`].
    pub const SELECT: [u8; 12] = [0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01];
    /// The same SELECT with P2 = `0C` (no FCI): the answer is `90 00`.
    pub const SELECT_NO_FCI: [u8; 12] = [0x00, 0xA4, 0x04, 0x0C, 0x07, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01];

    /// The answer to [`SELECT`]: [`FCI`] + `90 00`.
    pub fn select_ok() -> Vec<u8> {
        let mut v = FCI.to_vec();
        v.extend_from_slice(&[0x90, 0x00]);
        v
    }

    /// ECHO (`80 01`) of `n` data bytes, short (n <= 255) or extended, with Le = 0: the command
    /// and the answer (the data + `90 00`).
    pub fn echo(n: usize, extended: bool) -> (Vec<u8>, Vec<u8>) {
        let data: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
        let mut apdu = vec![0x80, 0x01, 0x00, 0x00];
        if extended {
            apdu.push(0);
            apdu.extend_from_slice(&(n as u16).to_be_bytes());
            apdu.extend_from_slice(&data);
            apdu.extend_from_slice(&[0, 0]);
        } else {
            apdu.push(n as u8);
            apdu.extend_from_slice(&data);
            apdu.push(0);
        }
        let mut resp = data;
        resp.extend_from_slice(&[0x90, 0x00]);
        (apdu, resp)
    }

    /// PATTERN (`80 02`) of `n` bytes with an extended Le: the command and the answer.
    pub fn pattern_ext(n: u16) -> (Vec<u8>, Vec<u8>) {
        let [hi, lo] = n.to_be_bytes();
        let apdu = vec![0x80, 0x02, hi, lo, 0x00, 0x00, 0x00];
        let mut resp: Vec<u8> = (0..n as usize).map(file_byte).collect();
        resp.extend_from_slice(&[0x90, 0x00]);
        (apdu, resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_builders_match_the_card() {
        let mut c = Card::new();
        let mut out = Vec::new();
        let mut run = |apdu: &[u8]| {
            out.clear();
            c.process(apdu, &mut out);
            out.clone()
        };
        assert_eq!(cmd::SELECT[5..], AID);
        assert_eq!(run(&cmd::SELECT), cmd::select_ok());
        assert_eq!(run(&cmd::SELECT_NO_FCI), [0x90, 0x00]);
        for (n, ext) in [(1, false), (5, false), (255, false), (300, true)] {
            let (apdu, resp) = cmd::echo(n, ext);
            assert_eq!(run(&apdu), resp, "echo {n}");
        }
        let (apdu, resp) = cmd::pattern_ext(1000);
        assert_eq!(run(&apdu), resp);
    }

    fn sw_of(r: &[u8]) -> u16 {
        u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]])
    }
    fn data_of(r: &[u8]) -> &[u8] {
        &r[..r.len() - 2]
    }
    fn pattern(off: usize, n: usize) -> Vec<u8> {
        (off..off + n).map(file_byte).collect()
    }
    fn ext(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8], le: Option<u16>) -> Vec<u8> {
        let mut v = vec![cla, ins, p1, p2, 0];
        if !data.is_empty() {
            v.extend_from_slice(&(data.len() as u16).to_be_bytes());
            v.extend_from_slice(data);
        }
        if let Some(le) = le {
            v.extend_from_slice(&le.to_be_bytes());
        }
        v
    }

    #[test]
    fn atr_tck_and_shape() {
        assert_eq!(&ATR[..4], &[0x3B, 0x8A, 0x80, 0x01]);
        assert_eq!(ATR[14], 0x8A ^ 0x80 ^ 0x01 ^ b'p' ^ b'c' ^ b's' ^ b'c' ^ b'b' ^ b'r' ^ b'i' ^ b'd' ^ b'g' ^ b'e');
        // XOR of T0..TCK is zero.
        assert_eq!(ATR[1..].iter().fold(0u8, |a, b| a ^ b), 0);
        assert_eq!(ATR[1] & 0x0F, 10); // K historical bytes
        assert_eq!(ATR.len(), 4 + 10 + 1);
        assert_eq!(ATR[14], 0x17);
    }

    #[test]
    fn tck_known_value() {
        // 3B 80 80 01 01: TCK = 80^80^01 = 01
        assert_eq!(tck(&[0x3B, 0x80, 0x80, 0x01, 0], 4), 0x01);
    }

    #[test]
    fn parse_cases() {
        let a = parse(&[0, 0xA4, 4, 0]).unwrap();
        assert_eq!((a.data.len(), a.ne, a.extended, a.case()), (0, None, false, "1"));
        let a = parse(&[0, 0xB0, 0, 0, 0]).unwrap();
        assert_eq!((a.ne, a.extended, a.case()), (Some(256), false, "2S"));
        let a = parse(&[0, 0xB0, 0, 0, 0x10]).unwrap();
        assert_eq!(a.ne, Some(16));
        let a = parse(&[0, 0x20, 0, 0x81, 2, 1, 2]).unwrap();
        assert_eq!((a.data, a.ne, a.case()), (&[1u8, 2][..], None, "3S"));
        let a = parse(&[0, 0x20, 0, 0x81, 2, 1, 2, 0]).unwrap();
        assert_eq!((a.data, a.ne, a.case()), (&[1u8, 2][..], Some(256), "4S"));
        let a = parse(&[0, 0xB0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!((a.ne, a.extended, a.case()), (Some(65536), true, "2E"));
        let a = parse(&[0, 0xB0, 0, 0, 0, 0x10, 0]).unwrap();
        assert_eq!(a.ne, Some(4096));
        let v = ext(0x80, 1, 0, 0, &[7; 300], None);
        let a = parse(&v).unwrap();
        assert_eq!((a.data.len(), a.ne, a.case()), (300, None, "3E"));
        let v = ext(0x80, 1, 0, 0, &[7; 300], Some(0));
        let a = parse(&v).unwrap();
        assert_eq!((a.data.len(), a.ne, a.case()), (300, Some(65536), "4E"));
        let v = ext(0x80, 1, 0, 0, &[7; 3], Some(2));
        let a = parse(&v).unwrap();
        assert_eq!((a.data.len(), a.ne, a.case()), (3, Some(2), "4E"));
    }

    #[test]
    fn parse_malformed() {
        for bad in [
            &[][..],
            &[0],
            &[0, 0xA4, 4],
            &[0, 0xA4, 4, 0, 0, 0],          // 2 bytes after header starting with 00
            &[0, 0xA4, 4, 0, 3, 1, 2],       // Lc 3, 2 bytes
            &[0, 0xA4, 4, 0, 1, 1, 2, 3],    // Lc 1, 3 bytes
            &[0, 0xA4, 4, 0, 0, 0, 0, 1],    // extended Lc 0 with a body
            &[0, 0xA4, 4, 0, 0, 0, 2, 1],    // extended Lc 2, 1 byte
            &[0, 0xA4, 4, 0, 0, 0, 1, 1, 0], // extended Lc 1 + 1 byte (Le needs 2)
        ] {
            assert!(parse(bad).is_none(), "{bad:02X?}");
            assert_eq!(Card::new().transmit(bad), [0x67, 0x00], "{bad:02X?}");
        }
    }

    #[test]
    fn select() {
        let mut c = Card::new();
        let mut cmd = vec![0, 0xA4, 4, 0, AID.len() as u8];
        cmd.extend_from_slice(&AID);
        let r = c.transmit(&cmd);
        assert_eq!((data_of(&r), sw_of(&r)), (&FCI[..], 0x9000));
        cmd.push(0);
        let r = c.transmit(&cmd);
        assert_eq!((data_of(&r), sw_of(&r)), (&FCI[..], 0x9000));
        let mut nofci = cmd.clone();
        nofci[3] = 0x0C;
        nofci.pop();
        assert_eq!(c.transmit(&nofci), [0x90, 0x00]);
        let mut unknown = cmd.clone();
        unknown[5 + 6] = 0x02;
        assert_eq!(c.transmit(&unknown), [0x6A, 0x82]);
        assert_eq!(c.transmit(&[0, 0xA4, 4, 0, 2, 0xA0, 0]), [0x6A, 0x82]);
        // extended SELECT
        assert_eq!(sw_of(&c.transmit(&ext(0, 0xA4, 4, 0, &AID, Some(0)))), 0x9000);
        // by FID
        assert_eq!(c.transmit(&[0, 0xA4, 0, 0x0C, 2, 0x3F, 0]), [0x90, 0x00]);
        let r = c.transmit(&[0, 0xA4, 0, 0, 2, 0x3F, 0]);
        assert_eq!((data_of(&r), sw_of(&r)), (&FCP_MF[..], 0x9000));
        assert_eq!(c.transmit(&[0, 0xA4, 0, 0x0C, 2, 0x2F, 0]), [0x6A, 0x82]);
        assert_eq!(c.transmit(&[0, 0xA4, 0x08, 0x0C, 2, 0x3F, 0]), [0x6A, 0x86]);
    }

    #[test]
    fn read_binary() {
        let mut c = Card::new();
        let r = c.transmit(&[0, 0xB0, 0, 0, 0]);
        assert_eq!(r.len(), 258);
        assert_eq!(data_of(&r), pattern(0, 256));
        assert_eq!(r[0], 0x5A);
        assert_eq!(sw_of(&r), 0x9000);
        let r = c.transmit(&[0, 0xB0, 0x01, 0x02, 0x10]);
        assert_eq!((data_of(&r), sw_of(&r)), (&pattern(0x102, 16)[..], 0x9000));
        // extended 4096 and 65536
        let r = c.transmit(&[0, 0xB0, 0, 0, 0, 0x10, 0x00]);
        assert_eq!((data_of(&r), sw_of(&r)), (&pattern(0, 4096)[..], 0x9000));
        let r = c.transmit(&[0, 0xB0, 0, 0, 0, 0, 0]);
        assert_eq!((data_of(&r), sw_of(&r)), (&pattern(0, FILE_SIZE)[..], 0x6282));
        // partial at the end, beyond the end
        let r = c.transmit(&[0, 0xB0, 0x7F, 0xF0, 0x20]);
        assert_eq!((data_of(&r), sw_of(&r)), (&pattern(0x7FF0, 16)[..], 0x6282));
        let r = c.transmit(&[0, 0xB0, 0x7F, 0xF0, 0x10]);
        assert_eq!((data_of(&r), sw_of(&r)), (&pattern(0x7FF0, 16)[..], 0x9000));
        assert_eq!(c.transmit(&[0, 0xB0, 0x80, 0x00, 0x01]), [0x6B, 0x00]);
        assert_eq!(c.transmit(&[0, 0xB0, 0xFF, 0xFF, 0]), [0x6B, 0x00]);
        // no Le / with data
        assert_eq!(c.transmit(&[0, 0xB0, 0, 0]), [0x67, 0x00]);
        assert_eq!(c.transmit(&[0, 0xB0, 0, 0, 1, 0, 0]), [0x67, 0x00]);
    }

    #[test]
    fn echo() {
        let mut c = Card::new();
        let data: Vec<u8> = (0..200u8).collect();
        let mut cmd = vec![0x80, 1, 0, 0, 200];
        cmd.extend_from_slice(&data);
        let r = c.transmit(&cmd); // 3S: everything
        assert_eq!((data_of(&r), sw_of(&r)), (&data[..], 0x9000));
        cmd.push(0); // 4S Le 256
        assert_eq!(data_of(&c.transmit(&cmd)), &data[..]);
        *cmd.last_mut().unwrap() = 10; // truncated
        let r = c.transmit(&cmd);
        assert_eq!((data_of(&r), sw_of(&r)), (&data[..10], 0x9000));
        // extended 4096-byte echo
        let big: Vec<u8> = (0..4096).map(|i| (i * 7) as u8).collect();
        let r = c.transmit(&ext(0x80, 1, 0, 0, &big, Some(0)));
        assert_eq!((data_of(&r), sw_of(&r)), (&big[..], 0x9000));
        let r = c.transmit(&ext(0x80, 1, 0, 0, &big, Some(100)));
        assert_eq!((data_of(&r), sw_of(&r)), (&big[..100], 0x9000));
        let r = c.transmit(&ext(0x80, 1, 0, 0, &big, None));
        assert_eq!(data_of(&r), &big[..]);
        let big: Vec<u8> = vec![0xEE; 65535];
        let r = c.transmit(&ext(0x80, 1, 0, 0, &big, Some(0)));
        assert_eq!((r.len(), sw_of(&r)), (65537, 0x9000));
        // no data
        assert_eq!(c.transmit(&[0x80, 1, 0, 0]), [0x90, 0x00]);
    }

    #[test]
    fn chaining() {
        let mut c = Card::new();
        // 600 bytes of pattern, short Le 00
        let r = c.transmit(&[0x80, 2, 0x02, 0x58, 0]);
        assert_eq!((data_of(&r), sw_of(&r)), (&pattern(0, 256)[..], 0x6100));
        let r = c.transmit(&[0, 0xC0, 0, 0, 0]);
        assert_eq!((data_of(&r), sw_of(&r)), (&pattern(256, 256)[..], 0x6158));
        let r = c.transmit(&[0, 0xC0, 0, 0, 0x10]);
        assert_eq!((data_of(&r), sw_of(&r)), (&pattern(512, 16)[..], 0x6148));
        let r = c.transmit(&[0, 0xC0, 0, 0, 0x48]);
        assert_eq!((data_of(&r), sw_of(&r)), (&pattern(528, 72)[..], 0x9000));
        assert_eq!(c.transmit(&[0, 0xC0, 0, 0, 0]), [0x69, 0x85]);
        // asking for more than is left: the rest + 9000
        let r = c.transmit(&[0x80, 2, 0x01, 0x10, 0]);
        assert_eq!(sw_of(&r), 0x6110);
        let r = c.transmit(&[0, 0xC0, 0, 0, 0]);
        assert_eq!((data_of(&r), sw_of(&r)), (&pattern(256, 16)[..], 0x9000));
        // another command discards the pending response
        assert_eq!(sw_of(&c.transmit(&[0x80, 2, 0x02, 0x00, 0])), 0x6100);
        assert_eq!(sw_of(&c.transmit(&[0, 0xB0, 0, 0, 1])), 0x9000);
        assert_eq!(c.transmit(&[0, 0xC0, 0, 0, 0]), [0x69, 0x85]);
        // <= 256: no chaining
        let r = c.transmit(&[0x80, 2, 0x01, 0x00, 0]);
        assert_eq!((data_of(&r), sw_of(&r)), (&pattern(0, 256)[..], 0x9000));
        // extended: all at once
        let r = c.transmit(&[0x80, 2, 0x10, 0x00, 0, 0, 0]);
        assert_eq!((data_of(&r), sw_of(&r)), (&pattern(0, 4096)[..], 0x9000));
        // extended GET RESPONSE
        assert_eq!(sw_of(&c.transmit(&[0x80, 2, 0x10, 0x00, 0])), 0x6100);
        let r = c.transmit(&[0, 0xC0, 0, 0, 0, 0, 0]);
        assert_eq!((data_of(&r), sw_of(&r)), (&pattern(256, 4096 - 256)[..], 0x9000));
        // GET RESPONSE malformed
        assert_eq!(sw_of(&c.transmit(&[0x80, 2, 0x10, 0x00, 0])), 0x6100);
        assert_eq!(c.transmit(&[0, 0xC0, 1, 0, 0]), [0x6A, 0x86]);
        assert_eq!(c.transmit(&[0, 0xC0, 0, 0]), [0x67, 0x00]);
        // reset drops it
        assert_eq!(sw_of(&c.transmit(&[0x80, 2, 0x10, 0x00, 0])), 0x6100);
        c.reset();
        assert_eq!(c.transmit(&[0, 0xC0, 0, 0, 0]), [0x69, 0x85]);
    }

    #[test]
    fn pin() {
        let mut c = Card::new();
        let verify = |pin: &[u8]| {
            let mut v = vec![0, 0x20, 0, 0x81, pin.len() as u8];
            v.extend_from_slice(pin);
            v
        };
        assert_eq!(c.transmit(&[0, 0x20, 0, 0x81]), [0x63, 0xC3]);
        assert_eq!(c.transmit(&verify(b"000000")), [0x63, 0xC2]);
        assert_eq!(c.transmit(&[0, 0x20, 0, 0x81]), [0x63, 0xC2]);
        assert_eq!(c.transmit(&verify(b"123456")), [0x90, 0x00]);
        assert!(c.verified());
        assert_eq!(c.transmit(&[0, 0x20, 0, 0x81]), [0x90, 0x00]);
        assert_eq!(c.transmit(&[0, 0x20, 0xFF, 0x81]), [0x90, 0x00]);
        assert_eq!(c.transmit(&[0, 0x20, 0, 0x81]), [0x63, 0xC3]);
        assert_eq!(c.transmit(&[0, 0x20, 0, 0x82, 1, 1]), [0x6A, 0x88]);
        // block, unblock with the PUK
        assert_eq!(c.transmit(&verify(b"1")), [0x63, 0xC2]);
        assert_eq!(c.transmit(&verify(b"2")), [0x63, 0xC1]);
        assert_eq!(c.transmit(&verify(b"3")), [0x69, 0x83]);
        assert_eq!(c.transmit(&verify(b"123456")), [0x69, 0x83]);
        assert_eq!(c.transmit(&[0, 0x20, 0, 0x81]), [0x69, 0x83]);
        assert_eq!(c.transmit(&[0, 0x2C, 1, 0x81, 3, b'1', b'2', b'3']), [0x69, 0x82]);
        let mut rrc = vec![0, 0x2C, 1, 0x81, 8];
        rrc.extend_from_slice(PUK);
        assert_eq!(c.transmit(&rrc), [0x90, 0x00]);
        assert_eq!(c.transmit(&verify(b"123456")), [0x90, 0x00]);
        // change: old || new
        let mut crd = vec![0, 0x24, 0, 0x81, 10];
        crd.extend_from_slice(b"1234564321");
        assert_eq!(c.transmit(&crd), [0x90, 0x00]);
        assert_eq!(c.transmit(&verify(b"123456")), [0x63, 0xC2]);
        assert_eq!(c.transmit(&verify(b"4321")), [0x90, 0x00]);
        // reset retry counter with a new PIN
        let mut rrc = vec![0, 0x2C, 0, 0x81, 14];
        rrc.extend_from_slice(PUK);
        rrc.extend_from_slice(b"123456");
        assert_eq!(c.transmit(&rrc), [0x90, 0x00]);
        assert_eq!(c.transmit(&verify(b"123456")), [0x90, 0x00]);
        c.reset();
        assert!(!c.verified());
        assert_eq!(c.transmit(&[0, 0x20, 0, 0x81]), [0x63, 0xC3]);
    }

    #[test]
    fn unsupported() {
        let mut c = Card::new();
        assert_eq!(c.transmit(&[0, 0xCA, 0, 0x6E, 0]), [0x6D, 0x00]); // GET DATA
        assert_eq!(c.transmit(&[0, 0x84, 0, 0, 8]), [0x6D, 0x00]);
        assert_eq!(c.transmit(&[0x80, 0xCA, 0, 0, 0]), [0x6D, 0x00]);
        assert_eq!(c.transmit(&[0xFF, 0xCA, 0, 0, 0]), [0x6E, 0x00]);
        assert_eq!(c.transmit(&[0x90, 0x01, 0, 0, 0]), [0x6E, 0x00]);
        assert_eq!(c.transmit(&[0x10, 0xA4, 0, 0]), [0x6E, 0x00]); // command chaining bit
        assert_eq!(c.transmit(&[0x80, 0x02, 0, 1, 1, 0]), [0x67, 0x00]);
    }

    #[test]
    fn process_reuses_buffer() {
        let mut c = Card::new();
        let mut out = Vec::with_capacity(70000);
        let p = out.as_ptr();
        for _ in 0..3 {
            c.process(&[0, 0xB0, 0, 0, 0, 0x10, 0], &mut out);
            assert_eq!(out.len(), 4098);
            c.process(&[0, 0xB0, 0, 0, 1], &mut out);
            assert_eq!(out.len(), 3);
        }
        assert_eq!(p, out.as_ptr());
    }
}
