//! The reader-state arrays a connection gets, per dialect (pcscd-protocol.md §4).
//!
//! * `CMD_GET_READERS_STATE` and the 4:4/4:5 `WAIT` reply: exactly 16 slots in
//!   the dialect's layout (156-byte records for 4:0 and 4:2/RN 100, 184 bytes
//!   otherwise); readers beyond slot 16 are invisible, as with every pcscd.
//!   Unused slots carry `cardAtrLength` = 34 ("not initialised"), as 1.x did.
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
        // 4:0 marks used slots by readerID (slot index + 100).
        let with_ids: Vec<ReaderState> = states[..n]
            .iter()
            .enumerate()
            .map(|(i, s)| ReaderState { reader_id: 100 + i as u32, ..s.clone() })
            .collect();
        emit_array(out, &with_ids, MAX_READERS_CONTEXTS, layout, READER_NOT_INITIALIZED);
    } else {
        emit_array(out, &states[..n], MAX_READERS_CONTEXTS, layout, READER_NOT_INITIALIZED);
    }
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
        for (v, size) in [(Version::V4_0, 2496), (Version::V4_2Rn100, 2496), (Version::V4_2, 2944), (Version::V4_4, 2944), (Version::V4_6, 2944)] {
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
