//! The reader-state arrays a connection gets, per dialect (pcscd-protocol.md §4).
//!
//! * `CMD_GET_READERS_STATE` and the 4:4/4:5 `WAIT` reply: exactly 16 slots in
//!   the dialect's layout (156-byte records for 4:0 and 4:2/RN 100, 184 bytes
//!   otherwise); readers beyond slot 16 are invisible, as with every pcscd.
//!   Unused slots carry `cardAtrLength` = 34 ("not initialised"), as 1.x did.
//!   4:0 records carry the card event counter in the high 16 bits of
//!   `readerState` (they have no `eventCounter` field).
//! * 4:6 `CMD_GET_READERS_STATE_SIZE`/`_ARRAY`: N 184-byte records, N being the
//!   server's slot capacity. The capacity starts at 16 and only grows (in steps
//!   of 2, as 2.5's), because the 2.5 client fails when it shrinks (§4.3).
//!   Unused slots are all zero, as in 2.5.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::consts::{MAX_READERS_CONTEXTS, READER_NOT_INITIALIZED};
use crate::wire::reader_state::{emit_array, RsLayout};
use crate::wire::{ReaderState, Version};

/// Appends the 16-slot array of `version`'s layout.
pub fn emit_fixed(out: &mut Vec<u8>, states: &[ReaderState], version: Version) {
    let layout = version.rs_layout();
    let n = states.len().min(MAX_READERS_CONTEXTS);
    if layout == RsLayout::A {
        // 4:0 marks used slots by readerID (slot index + 100), and has no
        // eventCounter field: 1.6.0-1.6.4 keep the card event counter in the
        // high 16 bits of readerState, where their clients look for it.
        let with_ids: Vec<ReaderState> = states[..n]
            .iter()
            .enumerate()
            .map(|(i, s)| ReaderState { reader_id: 100 + i as u32, state: state_40(s), event_counter: 0, ..s.clone() })
            .collect();
        emit_array(out, &with_ids, MAX_READERS_CONTEXTS, layout, READER_NOT_INITIALIZED);
    } else {
        emit_array(out, &states[..n], MAX_READERS_CONTEXTS, layout, READER_NOT_INITIALIZED);
    }
}

/// The 4:0 `readerState`: the state flags in the low 16 bits, the card event
/// counter in the high 16. A backend state that already carries a counter in
/// its high bits (a record read from a 4:0 daemon, whose `event_counter` is 0)
/// keeps it.
fn state_40(s: &ReaderState) -> u32 {
    let counter = if s.event_counter != 0 { s.event_counter & 0xFFFF } else { s.state >> 16 };
    (counter << 16) | (s.state & 0xFFFF)
}

/// Appends exactly `slots` 184-byte records (4:6 `CMD_GET_READERS_STATE_ARRAY`).
pub fn emit_variable(out: &mut Vec<u8>, states: &[ReaderState], slots: usize) {
    emit_array(out, states, slots, RsLayout::C, 0);
}

/// The 4:6 slot capacity: never below 16, grows in steps of 2, never shrinks.
#[derive(Debug)]
pub struct Capacity(AtomicUsize);

impl Default for Capacity {
    fn default() -> Self {
        Capacity(AtomicUsize::new(MAX_READERS_CONTEXTS))
    }
}

impl Capacity {
    /// The capacity needed for `readers` readers (recorded).
    pub fn fit(&self, readers: usize) -> usize {
        let want = (readers + 1) & !1;
        self.0.fetch_max(want, Ordering::SeqCst).max(want)
    }
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;
    use crate::wire::reader_state::parse_array;

    fn reader(name: &str) -> ReaderState {
        ReaderState { name: name.as_bytes().to_vec(), state: 2, ..Default::default() }
    }

    #[test]
    fn fixed_arrays_per_layout() {
        let states = [reader("A"), reader("B")];
        for (v, size) in [
            (Version::V4_0, 2496),
            (Version::V4_2Rn100, 2496),
            (Version::V4_2, 2944),
            (Version::V4_4, 2944),
            (Version::V4_6, 2944),
        ] {
            let mut b = Vec::new();
            emit_fixed(&mut b, &states, v);
            assert_eq!(b.len(), size, "{v}");
            let back = parse_array(&b, v.rs_layout()).unwrap();
            assert_eq!(back[1].name, b"B");
            assert!(back[2].is_empty(v.rs_layout()));
            assert_eq!(back[2].atr_len, 34);
        }
        let mut b = Vec::new();
        emit_fixed(&mut b, &states, Version::V4_0);
        assert_eq!(&b[0..4], &100u32.to_le_bytes());
        assert_eq!(&b[156..160], &101u32.to_le_bytes());
        assert_eq!(&b[312..316], &0u32.to_le_bytes());
        // Seventeen readers: the 17th is invisible.
        let many: Vec<ReaderState> = (0..17).map(|i| reader(&format!("R{i}"))).collect();
        let mut b = Vec::new();
        emit_fixed(&mut b, &many, Version::V4_5);
        assert_eq!(b.len(), 2944);
    }

    #[test]
    fn layout_a_counter_in_the_high_bits_of_the_state() {
        let mut a = ReaderState { event_counter: 7, state: 0x34, ..reader("A") };
        let b = ReaderState { event_counter: 0x1_0002, state: 0x12, ..reader("B") };
        let mut out = Vec::new();
        emit_fixed(&mut out, &[a.clone(), b.clone()], Version::V4_0);
        // readerState sits after readerID (4) and the 100-byte name.
        assert_eq!(&out[104..108], &((7u32 << 16) | 0x34).to_le_bytes());
        assert_eq!(&out[156 + 104..156 + 108], &((2u32 << 16) | 0x12).to_le_bytes());
        let back = parse_array(&out, RsLayout::A).unwrap();
        assert_eq!(back[0].state, 0x0007_0034);
        assert_eq!(back[0].event_counter, 0);
        assert_eq!(back[1].state >> 16, 2);
        // What a 4:0 client computes from it (our engine, as 1.6.x does).
        assert_eq!((back[0].state & 0xFFFF, back[0].state >> 16), (0x34, 7));
        // A state that already carries its counter (read from a 4:0 daemon) keeps it.
        a.event_counter = 0;
        a.state = (9 << 16) | 0x34;
        let mut out = Vec::new();
        emit_fixed(&mut out, &[a], Version::V4_0);
        assert_eq!(&out[104..108], &((9u32 << 16) | 0x34).to_le_bytes());
        // Other layouts are unchanged: the counter in its own field, the state as is.
        for v in [Version::V4_2Rn100, Version::V4_2, Version::V4_4] {
            let mut out = Vec::new();
            emit_fixed(&mut out, std::slice::from_ref(&b), v);
            let back = parse_array(&out, v.rs_layout()).unwrap();
            assert_eq!((back[0].state, back[0].event_counter), (0x12, 0x1_0002), "{v}");
        }
    }

    #[test]
    fn variable_array_and_capacity() {
        let c = Capacity::default();
        assert_eq!(c.fit(2), 16);
        assert_eq!(c.fit(17), 18);
        assert_eq!(c.fit(3), 18);
        let mut b = Vec::new();
        emit_variable(&mut b, &[reader("A")], 18);
        assert_eq!(b.len(), 18 * 184);
        assert!(b[184..].iter().all(|&x| x == 0));
    }
}
