//! A cursor over untrusted bytes that can only hand out what is there.

use core::fmt;

/// Why bytes could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Fewer bytes than the message needs.
    Truncated { needed: usize, got: usize },
    /// More bytes than the message holds.
    TrailingData { extra: usize },
    /// A length field out of its allowed range.
    BadLength { field: &'static str, value: u32, max: u32 },
    /// A header `size` that does not match the command's fixed struct.
    SizeMismatch { command: u32, size: u32, expected: u32 },
    /// A command code this version does not know.
    UnknownCommand(u32),
    /// A field whose value is impossible (e.g. ATR length over 34).
    BadValue { field: &'static str, value: u32 },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated { needed, got } => write!(f, "message truncated: need {needed} bytes, got {got}"),
            WireError::TrailingData { extra } => write!(f, "{extra} unexpected trailing bytes"),
            WireError::BadLength { field, value, max } => write!(f, "{field} = {value} exceeds {max}"),
            WireError::SizeMismatch { command, size, expected } => {
                write!(f, "command 0x{command:02X}: size {size}, expected {expected}")
            }
            WireError::UnknownCommand(c) => write!(f, "unknown command 0x{c:02X}"),
            WireError::BadValue { field, value } => write!(f, "{field} has impossible value {value}"),
        }
    }
}

impl std::error::Error for WireError {}

/// A bounded read cursor: every accessor checks the remaining length first.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let rest = &self.buf[self.pos..];
        if rest.len() < n {
            return Err(WireError::Truncated { needed: self.pos + n, got: self.buf.len() });
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_ne_bytes(self.array::<4>()?))
    }

    pub fn i32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_ne_bytes(self.array::<4>()?))
    }

    /// Fails with `TrailingData` if anything is left.
    pub fn finish(self) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(WireError::TrailingData { extra }),
        }
    }
}

/// Checks that `buf` is exactly `size` bytes long.
pub fn expect_len(buf: &[u8], size: usize) -> Result<(), WireError> {
    if buf.len() < size {
        Err(WireError::Truncated { needed: size, got: buf.len() })
    } else if buf.len() > size {
        Err(WireError::TrailingData { extra: buf.len() - size })
    } else {
        Ok(())
    }
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_ne_bytes());
}

pub fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_ne_bytes());
}

/// Writes `s` into a fixed `len`-byte field, NUL-padded; truncated to `len - 1`
/// bytes so the field always ends in NUL.
pub fn put_fixed_str(out: &mut Vec<u8>, s: &[u8], len: usize) {
    let n = s.len().min(len.saturating_sub(1));
    out.extend_from_slice(&s[..n]);
    out.resize(out.len() + (len - n), 0);
}

/// The bytes of a fixed NUL-terminated field up to the first NUL (all of it if none).
pub fn fixed_str(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_never_overreads() {
        let mut r = Reader::new(&[1, 0, 0, 0, 2]);
        assert_eq!(r.u32().unwrap(), u32::from_ne_bytes([1, 0, 0, 0]));
        assert_eq!(r.u32(), Err(WireError::Truncated { needed: 8, got: 5 }));
        assert_eq!(r.remaining(), 1);
        assert_eq!(r.finish(), Err(WireError::TrailingData { extra: 1 }));
    }

    #[test]
    fn fixed_strings() {
        let mut v = Vec::new();
        put_fixed_str(&mut v, b"abcdef", 4);
        assert_eq!(v, b"abc\0");
        assert_eq!(fixed_str(b"ab\0cd"), b"ab");
        assert_eq!(fixed_str(b"abcd"), b"abcd");
    }
}
