//! The `READER_STATE` record the daemon publishes for each reader slot, in its
//! three layouts, and arrays of it.

use super::codec::{expect_len, fixed_str, put_fixed_str, put_i32, put_u32, Reader, WireError};
use crate::consts::{MAX_ATR_SIZE, READER_NOT_INITIALIZED};

/// Record layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RsLayout {
    /// 4:0: `readerID`, 100-byte name, no event counter (156 bytes).
    A,
    /// 4:2 of 1.6.5-1.8.3: 100-byte name, event counter (156 bytes).
    B,
    /// 4:2 of 1.8.4-1.8.8 and 4:3-4:6: 128-byte name, event counter (184 bytes).
    C,
}

impl RsLayout {
    pub const fn record_size(self) -> usize {
        match self {
            RsLayout::A | RsLayout::B => 156,
            RsLayout::C => 184,
        }
    }

    pub const fn name_len(self) -> usize {
        match self {
            RsLayout::A | RsLayout::B => 100,
            RsLayout::C => 128,
        }
    }
}

/// One reader slot.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ReaderState {
    /// 4:0 only: 0 for an empty slot.
    pub reader_id: u32,
    /// Reader name without NUL; empty for an unused slot.
    pub name: Vec<u8>,
    /// Card insert/remove counter (16 bits used; 0 in layout A).
    pub event_counter: u32,
    /// `SCARD_ABSENT`/`PRESENT`/`POWERED`/... bit flags.
    pub state: u32,
    /// -1 exclusive, 0 unused, n shared handles.
    pub sharing: i32,
    pub atr: [u8; MAX_ATR_SIZE],
    /// 0-33, or 34 (`READER_NOT_INITIALIZED`).
    pub atr_len: u32,
    pub protocol: u32,
}

impl Default for ReaderState {
    fn default() -> Self {
        ReaderState {
            reader_id: 0,
            name: Vec::new(),
            event_counter: 0,
            state: 0,
            sharing: 0,
            atr: [0; MAX_ATR_SIZE],
            atr_len: 0,
            protocol: 0,
        }
    }
}

impl ReaderState {
    /// Whether the slot is unused.
    pub fn is_empty(&self, layout: RsLayout) -> bool {
        match layout {
            RsLayout::A => self.reader_id == 0,
            _ => self.name.is_empty(),
        }
    }

    /// The card's ATR; empty when the length is out of range (34 = not initialised).
    pub fn atr(&self) -> &[u8] {
        let n = self.atr_len as usize;
        if n <= MAX_ATR_SIZE {
            &self.atr[..n]
        } else {
            &[]
        }
    }

    pub fn parse(buf: &[u8], layout: RsLayout) -> Result<ReaderState, WireError> {
        expect_len(buf, layout.record_size())?;
        let mut r = Reader::new(buf);
        let reader_id = if layout == RsLayout::A { r.u32()? } else { 0 };
        let name = fixed_str(r.take(layout.name_len())?).to_vec();
        let event_counter = if layout == RsLayout::A { 0 } else { r.u32()? };
        let state = r.u32()?;
        let sharing = r.i32()?;
        let atr = r.array::<MAX_ATR_SIZE>()?;
        r.take(3)?; // padding, content undefined
        let atr_len = r.u32()?;
        let protocol = r.u32()?;
        r.finish()?;
        if atr_len > READER_NOT_INITIALIZED {
            return Err(WireError::BadValue { field: "cardAtrLength", value: atr_len });
        }
        Ok(ReaderState { reader_id, name, event_counter, state, sharing, atr, atr_len, protocol })
    }

    pub fn emit(&self, out: &mut Vec<u8>, layout: RsLayout) {
        if layout == RsLayout::A {
            put_u32(out, self.reader_id);
        }
        put_fixed_str(out, &self.name, layout.name_len());
        if layout != RsLayout::A {
            put_u32(out, self.event_counter);
        }
        put_u32(out, self.state);
        put_i32(out, self.sharing);
        out.extend_from_slice(&self.atr);
        out.extend_from_slice(&[0; 3]);
        put_u32(out, self.atr_len);
        put_u32(out, self.protocol);
    }
}

/// Parses a whole array; `buf` must be a whole number of records.
pub fn parse_array(buf: &[u8], layout: RsLayout) -> Result<Vec<ReaderState>, WireError> {
    let rs = layout.record_size();
    if !buf.len().is_multiple_of(rs) {
        return Err(WireError::TrailingData { extra: buf.len() % rs });
    }
    buf.chunks_exact(rs).map(|c| ReaderState::parse(c, layout)).collect()
}

/// Emits `slots` records: the given states, then empty ones up to `slots`.
/// `empty_atr_len` is what unused slots carry (34 in 1.x daemons, 0 in 2.5).
pub fn emit_array(out: &mut Vec<u8>, states: &[ReaderState], slots: usize, layout: RsLayout, empty_atr_len: u32) {
    for s in states.iter().take(slots) {
        s.emit(out, layout);
    }
    let empty = ReaderState { atr_len: empty_atr_len, ..Default::default() };
    for _ in states.len().min(slots)..slots {
        empty.emit(out, layout);
    }
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    fn sample() -> ReaderState {
        let mut s = ReaderState {
            reader_id: 100,
            name: b"Virtual PCD 00 00".to_vec(),
            event_counter: 3,
            state: 0x34,
            sharing: -1,
            atr_len: 4,
            protocol: 2,
            ..Default::default()
        };
        s.atr[..4].copy_from_slice(&[0x3B, 0x02, 0x14, 0x50]);
        s
    }

    #[test]
    fn layout_c_offsets() {
        let mut b = Vec::new();
        sample().emit(&mut b, RsLayout::C);
        assert_eq!(b.len(), 184);
        assert_eq!(&b[0..17], b"Virtual PCD 00 00");
        assert_eq!(b[17], 0);
        assert_eq!(&b[128..132], &3u32.to_le_bytes());
        assert_eq!(&b[132..136], &0x34u32.to_le_bytes());
        assert_eq!(&b[136..140], &(-1i32).to_le_bytes());
        assert_eq!(&b[140..144], &[0x3B, 0x02, 0x14, 0x50]);
        assert_eq!(&b[176..180], &4u32.to_le_bytes());
        assert_eq!(&b[180..184], &2u32.to_le_bytes());
        let back = ReaderState::parse(&b, RsLayout::C).unwrap();
        assert_eq!(back, ReaderState { reader_id: 0, ..sample() });
        assert_eq!(back.atr(), &[0x3B, 0x02, 0x14, 0x50]);
    }

    #[test]
    fn layout_a_and_b_offsets() {
        let mut a = Vec::new();
        sample().emit(&mut a, RsLayout::A);
        assert_eq!(a.len(), 156);
        assert_eq!(&a[0..4], &100u32.to_le_bytes());
        assert_eq!(&a[4..21], b"Virtual PCD 00 00");
        assert_eq!(&a[104..108], &0x34u32.to_le_bytes());
        assert_eq!(&a[112..116], &[0x3B, 0x02, 0x14, 0x50]);
        assert_eq!(&a[148..152], &4u32.to_le_bytes());
        let back = ReaderState::parse(&a, RsLayout::A).unwrap();
        assert_eq!(back.event_counter, 0);
        assert_eq!(back.reader_id, 100);

        let mut b = Vec::new();
        sample().emit(&mut b, RsLayout::B);
        assert_eq!(b.len(), 156);
        assert_eq!(&b[100..104], &3u32.to_le_bytes());
        assert_eq!(&b[104..108], &0x34u32.to_le_bytes());
        assert_eq!(&b[152..156], &2u32.to_le_bytes());
        assert_eq!(ReaderState::parse(&b, RsLayout::B).unwrap(), ReaderState { reader_id: 0, ..sample() });
    }

    #[test]
    fn arrays_and_bad_input() {
        let mut b = Vec::new();
        emit_array(&mut b, &[sample()], 16, RsLayout::C, 34);
        assert_eq!(b.len(), 2944);
        let all = parse_array(&b, RsLayout::C).unwrap();
        assert_eq!(all.len(), 16);
        assert!(!all[0].is_empty(RsLayout::C));
        assert!(all[1].is_empty(RsLayout::C));
        assert_eq!(all[1].atr_len, 34);
        assert_eq!(all[1].atr(), &[] as &[u8]);
        assert!(parse_array(&b[..2943], RsLayout::C).is_err());
        let mut bad = b.clone();
        bad[176..180].copy_from_slice(&35u32.to_le_bytes());
        assert!(parse_array(&bad, RsLayout::C).is_err());
        let mut b16 = Vec::new();
        emit_array(&mut b16, &[], 16, RsLayout::B, 34);
        assert_eq!(b16.len(), 2496);
    }
}
