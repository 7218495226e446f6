//! Command APDU cases (ISO/IEC 7816-3 §12.1, 7816-4 §5.1): what the T=0 mapping and the
//! exchange levels need to know about an application's bytes. Checked, never panics.

use std::fmt;

/// The seven well-formed cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Case {
    /// `CLA INS P1 P2`.
    C1,
    /// header + Le.
    C2S,
    /// header + Lc + data.
    C3S,
    /// header + Lc + data + Le.
    C4S,
    /// header + `00` + Le(2).
    C2E,
    /// header + `00` + Lc(2) + data.
    C3E,
    /// header + `00` + Lc(2) + data + Le(2).
    C4E,
}

impl Case {
    pub fn is_extended(self) -> bool {
        matches!(self, Case::C2E | Case::C3E | Case::C4E)
    }
}

/// A parsed command APDU, borrowing its data field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Apdu<'a> {
    pub header: [u8; 4],
    pub data: &'a [u8],
    /// Ne: `None` without Le; short Le `00` = 256, extended `0000` = 65 536.
    pub ne: Option<u32>,
    pub case: Case,
}

/// Bytes that are not a command APDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApduError {
    /// Fewer than 4 bytes.
    TooShort(usize),
    /// Lc/Le inconsistent with the length.
    BadLength(usize),
}

impl fmt::Display for ApduError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApduError::TooShort(n) => write!(f, "{n}-byte command APDU (need at least 4)"),
            ApduError::BadLength(n) => write!(f, "{n}-byte command APDU with inconsistent Lc/Le"),
        }
    }
}

impl std::error::Error for ApduError {}

impl<'a> Apdu<'a> {
    pub fn parse(b: &'a [u8]) -> Result<Self, ApduError> {
        let (header, body) = match b {
            [cla, ins, p1, p2, body @ ..] => ([*cla, *ins, *p1, *p2], body),
            _ => return Err(ApduError::TooShort(b.len())),
        };
        let bad = ApduError::BadLength(b.len());
        let short_ne = |le: u8| if le == 0 { 256 } else { le as u32 };
        let ext_ne = |hi: u8, lo: u8| match u16::from_be_bytes([hi, lo]) {
            0 => 65_536,
            n => n as u32,
        };
        let mk = |data, ne, case| Apdu { header, data, ne, case };
        Ok(match body {
            [] => mk(&[][..], None, Case::C1),
            [le] => mk(&[][..], Some(short_ne(*le)), Case::C2S),
            [0, hi, lo] => mk(&[][..], Some(ext_ne(*hi, *lo)), Case::C2E),
            [lc, rest @ ..] if *lc != 0 => {
                let lc = *lc as usize;
                match rest.len().checked_sub(lc) {
                    Some(0) => mk(rest, None, Case::C3S),
                    Some(1) => mk(&rest[..lc], Some(short_ne(rest[lc])), Case::C4S),
                    _ => return Err(bad),
                }
            }
            [0, hi, lo, rest @ ..] => {
                let lc = u16::from_be_bytes([*hi, *lo]) as usize;
                if lc == 0 {
                    return Err(bad);
                }
                match rest.len().checked_sub(lc) {
                    Some(0) => mk(rest, None, Case::C3E),
                    Some(2) => mk(&rest[..lc], Some(ext_ne(rest[lc], rest[lc + 1])), Case::C4E),
                    _ => return Err(bad),
                }
            }
            _ => return Err(bad),
        })
    }

    pub fn cla(&self) -> u8 {
        self.header[0]
    }

    pub fn ins(&self) -> u8 {
        self.header[1]
    }
}

/// SW1 SW2 of a response (the last two bytes), `None` if shorter than 2.
pub fn status_word(resp: &[u8]) -> Option<(u8, u8)> {
    match resp {
        [.., sw1, sw2] => Some((*sw1, *sw2)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases() {
        let p = |b: &[u8]| Apdu::parse(b).map(|a| (a.case, a.data.len(), a.ne));
        assert_eq!(p(&[0, 0xA4, 4, 0]), Ok((Case::C1, 0, None)));
        assert_eq!(p(&[0, 0xB0, 0, 0, 0]), Ok((Case::C2S, 0, Some(256))));
        assert_eq!(p(&[0, 0xB0, 0, 0, 0x10]), Ok((Case::C2S, 0, Some(16))));
        assert_eq!(p(&[0, 0xA4, 4, 0, 2, 0x3F, 0]), Ok((Case::C3S, 2, None)));
        assert_eq!(p(&[0, 0xA4, 4, 0, 2, 0x3F, 0, 0]), Ok((Case::C4S, 2, Some(256))));
        assert_eq!(p(&[0, 0xB0, 0, 0, 0, 0, 0]), Ok((Case::C2E, 0, Some(65_536))));
        assert_eq!(p(&[0, 0xB0, 0, 0, 0, 0x01, 0x00]), Ok((Case::C2E, 0, Some(256))));
        let mut c3e = vec![0x80, 1, 0, 0, 0, 0x01, 0x2C];
        c3e.extend_from_slice(&[7u8; 300]);
        assert_eq!(p(&c3e), Ok((Case::C3E, 300, None)));
        c3e.extend_from_slice(&[0, 0]);
        assert_eq!(p(&c3e), Ok((Case::C4E, 300, Some(65_536))));
        assert!(p(&c3e).unwrap().0.is_extended());
    }

    #[test]
    fn malformed() {
        assert_eq!(Apdu::parse(&[0, 1, 2]), Err(ApduError::TooShort(3)));
        assert_eq!(Apdu::parse(&[0, 1, 2, 3, 0, 0]), Err(ApduError::BadLength(6)));
        assert_eq!(Apdu::parse(&[0, 1, 2, 3, 5, 1]), Err(ApduError::BadLength(6)));
        assert_eq!(Apdu::parse(&[0, 1, 2, 3, 1, 1, 1, 1]), Err(ApduError::BadLength(8)));
        assert_eq!(Apdu::parse(&[0, 1, 2, 3, 0, 0, 0, 1]), Err(ApduError::BadLength(8)));
        assert_eq!(Apdu::parse(&[0, 1, 2, 3, 0, 0, 2, 1]), Err(ApduError::BadLength(8)));
    }

    #[test]
    fn sw() {
        assert_eq!(status_word(&[1, 0x90, 0]), Some((0x90, 0)));
        assert_eq!(status_word(&[0x90]), None);
    }
}
