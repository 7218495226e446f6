//! Checked little-endian reads over device-supplied bytes: every read returns `None` past the end,
//! nothing here can panic or index out of bounds.

/// A read cursor over a byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    pub(crate) fn u16le(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32le(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// Everything not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_at_the_end() {
        let mut c = Cursor::new(&[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(c.u8(), Some(1));
        assert_eq!(c.u16le(), Some(0x0302));
        assert_eq!(c.u32le(), Some(0x0706_0504));
        assert_eq!(c.u8(), None);
        assert_eq!(c.u16le(), None);
        assert_eq!(c.take(1), None);
        assert_eq!(c.take(0), Some(&[][..]));
        assert_eq!(c.remaining(), 0);
        let mut c = Cursor::new(&[1]);
        assert_eq!(c.u32le(), None);
        assert_eq!(c.rest(), &[1]);
        assert_eq!(c.take(usize::MAX), None);
    }
}
