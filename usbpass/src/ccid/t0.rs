//! T=0 at the TPDU level (ISO/IEC 7816-3 §12.2; ccid.md §3.4).
//!
//! At this level the reader runs the character protocol (procedure bytes, NULLs) and returns
//! the card's data + SW1 SW2 for each TPDU, so the host's work is the APDU → TPDU mapping and
//! the status-word follow-ups. The character level reuses all of this, with the procedure bytes
//! run by the host ([`super::character`]). Two modes:
//!
//! * [`T0Mode::PassThrough`] (default): the application's bytes go unchanged into one XfrBlock,
//!   as pcscd + libccid do; the reader pads a 4-byte case-1 command with `P3 = 00`. This is what
//!   keeps responses identical to the reference stack, including on QEMU's reader, which hands
//!   the bytes to its card back-end as an APDU.
//! * [`T0Mode::Iso`]: the ISO 7816-3 mapping done by the host: case 1 gets `P3 = 00`, case 2
//!   sends Le as P3, case 3 as is, case 4 is sent as case 3 (Le dropped; the card answers
//!   `61xx`). Extended APDUs are refused (libccid never uses ENVELOPE either).
//!
//! Follow-ups, both off by default because pcscd + libccid return these status words to the
//! application (OpenSC does its own GET RESPONSE and Le correction):
//! * `fix_wrong_length`: on `6Cxx` to a command with Le, send it again once with `P3 = xx`;
//! * `get_response`: on `61xx`, send GET RESPONSE (`CLA C0 00 00 xx`, CLA `00` after a
//!   proprietary-class command) while the card says more is waiting, and return the
//!   concatenated data with the last SW.

use super::apdu::{status_word, Apdu, ApduError, Case};
use super::character::CharError;
use super::device::CcidError;
use std::fmt;

/// How APDUs become TPDUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum T0Mode {
    /// Bytes unchanged (pcscd + libccid parity).
    #[default]
    PassThrough,
    /// ISO 7816-3 case mapping.
    Iso,
}

/// T=0 behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct T0Options {
    pub mode: T0Mode,
    /// `6Cxx` → send again with `P3 = xx`.
    pub fix_wrong_length: bool,
    /// `61xx` → GET RESPONSE loop.
    pub get_response: bool,
}

/// Why a T=0 exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum T0Error {
    /// [`T0Mode::Iso`]: the bytes are not a command APDU.
    Apdu(ApduError),
    /// [`T0Mode::Iso`]: extended APDUs cannot be mapped to T=0 TPDUs.
    Extended,
    /// The reader answered with fewer than 2 bytes where a status word was needed.
    NoStatusWord,
    /// The GET RESPONSE loop collected more than 65 538 bytes.
    ResponseTooLong,
    /// The XfrBlock failed.
    Ccid(CcidError),
    /// The procedure-byte exchange of a character-level reader failed.
    Character(CharError),
}

impl fmt::Display for T0Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            T0Error::Apdu(e) => write!(f, "T=0: {e}"),
            T0Error::Extended => f.write_str("T=0: extended APDUs cannot be sent to a T=0 card by this reader"),
            T0Error::NoStatusWord => f.write_str("T=0: response without a status word"),
            T0Error::ResponseTooLong => f.write_str("T=0: response too long"),
            T0Error::Ccid(e) => write!(f, "T=0: {e}"),
            T0Error::Character(e) => write!(f, "T=0: {e}"),
        }
    }
}

impl std::error::Error for T0Error {}

impl From<CcidError> for T0Error {
    fn from(e: CcidError) -> Self {
        T0Error::Ccid(e)
    }
}

/// One TPDU out, the card's data + SW back: one XfrBlock at the TPDU level, the procedure-byte
/// exchange at the character level (`super::character::T0OverChars`).
pub trait TpduXfer {
    fn xfer(&mut self, tpdu: &[u8]) -> Result<Vec<u8>, T0Error>;
}

impl<F: FnMut(&[u8]) -> Result<Vec<u8>, CcidError>> TpduXfer for F {
    fn xfer(&mut self, tpdu: &[u8]) -> Result<Vec<u8>, T0Error> {
        self(tpdu).map_err(T0Error::Ccid)
    }
}

const MAX_RESPONSE: usize = 65_538;

/// The command TPDU for `apdu` in [`T0Mode::Iso`] (the bytes unchanged when they are not a
/// well-formed APDU: the card will say what it thinks of them).
pub fn tpdu_for(apdu: &[u8]) -> Result<Vec<u8>, T0Error> {
    let a = match Apdu::parse(apdu) {
        Ok(a) => a,
        Err(ApduError::TooShort(_)) => return Err(T0Error::Apdu(ApduError::TooShort(apdu.len()))),
        Err(_) => return Ok(apdu.to_vec()),
    };
    let mut t = a.header.to_vec();
    match a.case {
        Case::C1 => t.push(0),
        Case::C2S => t.push(apdu[4]),
        Case::C3S | Case::C4S => {
            t.push(a.data.len() as u8);
            t.extend_from_slice(a.data);
        }
        Case::C2E | Case::C3E | Case::C4E => return Err(T0Error::Extended),
    }
    Ok(t)
}

/// Send `apdu` to a T=0 card.
pub fn transmit<X: TpduXfer + ?Sized>(x: &mut X, apdu: &[u8], opts: &T0Options) -> Result<Vec<u8>, T0Error> {
    let tpdu = match opts.mode {
        T0Mode::PassThrough => apdu.to_vec(),
        T0Mode::Iso => tpdu_for(apdu)?,
    };
    let mut resp = x.xfer(&tpdu)?;

    if opts.fix_wrong_length {
        if let Some((0x6C, xx)) = status_word(&resp) {
            // Only for commands that carry Le (case 2 as a TPDU): P3 is the last byte.
            if let Ok(a) = Apdu::parse(&tpdu) {
                if a.case == Case::C2S {
                    let mut again = tpdu.clone();
                    if let Some(p3) = again.last_mut() {
                        *p3 = xx;
                    }
                    resp = x.xfer(&again)?;
                }
            }
        }
    }

    if opts.get_response {
        // GET RESPONSE is interindustry: CLA 00 after a proprietary command, else the command's
        // CLA without the chaining bit (logical channel and secure messaging bits kept).
        let cla = match tpdu.first().copied().unwrap_or(0) {
            c if c & 0x80 != 0 => 0x00,
            c => c & !0x10,
        };
        let mut data = Vec::new();
        loop {
            let Some((sw1, sw2)) = status_word(&resp) else { return Err(T0Error::NoStatusWord) };
            if sw1 != 0x61 {
                break;
            }
            data.extend_from_slice(&resp[..resp.len() - 2]);
            if data.len() > MAX_RESPONSE {
                return Err(T0Error::ResponseTooLong);
            }
            resp = x.xfer(&[cla, 0xC0, 0x00, 0x00, sw2])?;
        }
        if !data.is_empty() {
            data.extend_from_slice(&resp);
            if data.len() > MAX_RESPONSE {
                return Err(T0Error::ResponseTooLong);
            }
            return Ok(data);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted reader: (expected TPDU, answer).
    fn scripted(steps: Vec<(&'static [u8], &'static [u8])>) -> impl FnMut(&[u8]) -> Result<Vec<u8>, CcidError> {
        let mut it = steps.into_iter();
        move |got| {
            let (want, answer) = it.next().expect("more TPDUs than scripted");
            assert_eq!(got, want);
            Ok(answer.to_vec())
        }
    }

    const ISO: T0Options = T0Options { mode: T0Mode::Iso, fix_wrong_length: false, get_response: false };

    #[test]
    fn iso_mapping() {
        assert_eq!(tpdu_for(&[0, 0xA4, 4, 0]).unwrap(), [0, 0xA4, 4, 0, 0]);
        assert_eq!(tpdu_for(&[0, 0xB0, 0, 0, 0x10]).unwrap(), [0, 0xB0, 0, 0, 0x10]);
        assert_eq!(tpdu_for(&[0, 0xA4, 4, 0, 2, 0x3F, 0]).unwrap(), [0, 0xA4, 4, 0, 2, 0x3F, 0]);
        assert_eq!(tpdu_for(&[0, 0xA4, 4, 0, 2, 0x3F, 0, 0]).unwrap(), [0, 0xA4, 4, 0, 2, 0x3F, 0]);
        assert_eq!(tpdu_for(&[0, 0xB0, 0, 0, 0, 1, 0]), Err(T0Error::Extended));
        assert_eq!(tpdu_for(&[0, 1, 2]), Err(T0Error::Apdu(ApduError::TooShort(3))));
        // Malformed lengths go out unchanged.
        assert_eq!(tpdu_for(&[0, 1, 2, 3, 5, 1]).unwrap(), [0, 1, 2, 3, 5, 1]);
    }

    #[test]
    fn passthrough_keeps_61xx_and_6cxx() {
        let mut r =
            scripted(vec![(&[0, 0xA4, 4, 0, 2, 0x3F, 0, 0], &[0x61, 0x10]), (&[0, 0xB0, 0, 0, 0], &[0x6C, 0x10])]);
        let o = T0Options::default();
        assert_eq!(transmit(&mut r, &[0, 0xA4, 4, 0, 2, 0x3F, 0, 0], &o).unwrap(), [0x61, 0x10]);
        assert_eq!(transmit(&mut r, &[0, 0xB0, 0, 0, 0], &o).unwrap(), [0x6C, 0x10]);
    }

    #[test]
    fn iso_case4_returns_61xx() {
        let mut r = scripted(vec![(&[0, 0xA4, 4, 0, 2, 0x3F, 0], &[0x61, 0x10])]);
        assert_eq!(transmit(&mut r, &[0, 0xA4, 4, 0, 2, 0x3F, 0, 0], &ISO).unwrap(), [0x61, 0x10]);
    }

    #[test]
    fn wrong_length_fixed_once() {
        let mut r = scripted(vec![(&[0, 0xB0, 0, 0, 0], &[0x6C, 0x02]), (&[0, 0xB0, 0, 0, 2], &[1, 2, 0x90, 0])]);
        let o = T0Options { fix_wrong_length: true, ..ISO };
        assert_eq!(transmit(&mut r, &[0, 0xB0, 0, 0, 0], &o).unwrap(), [1, 2, 0x90, 0]);
        // Not for a case-3 command.
        let mut r = scripted(vec![(&[0, 0xD6, 0, 0, 1, 9], &[0x6C, 0x02])]);
        assert_eq!(transmit(&mut r, &[0, 0xD6, 0, 0, 1, 9], &o).unwrap(), [0x6C, 0x02]);
    }

    #[test]
    fn get_response_loop() {
        let mut r = scripted(vec![
            (&[0, 0xA4, 4, 0, 1, 0xAA], &[0x61, 0x02]),
            (&[0, 0xC0, 0, 0, 2], &[1, 2, 0x61, 0x01]),
            (&[0, 0xC0, 0, 0, 1], &[3, 0x90, 0]),
        ]);
        let o = T0Options { get_response: true, ..ISO };
        assert_eq!(transmit(&mut r, &[0, 0xA4, 4, 0, 1, 0xAA, 0], &o).unwrap(), [1, 2, 3, 0x90, 0]);
        let mut r = scripted(vec![(&[0, 0xA4, 4, 0, 1, 0xAA], &[0x90])]);
        assert_eq!(transmit(&mut r, &[0, 0xA4, 4, 0, 1, 0xAA], &o), Err(T0Error::NoStatusWord));
    }
}
