//! Character-level readers on arbitrary replies: the T=0 procedure-byte engine and the T=1
//! block reader of `ccid::character` against a reader whose answers come from the input (no
//! panic, always ends, an answer is only returned when it ends with a status word).
//!
//! Input: `sel` (which command: bit 0-1 pick case 1/2/3 or a case-2 READ BINARY of 256 bytes,
//! bit 2 picks T=1), then a sequence of `ctl [bytes]`: `ctl` 0xFF = reader error, else
//! `ctl & 0x7F` bytes follow as the reader's answer to the next XfrBlock.
//!
//! Run: `cd usbpass && RUSTC_BOOTSTRAP=1 cargo fuzz run char_reply -- -max_total_time=60`
#![no_main]
use libfuzzer_sys::fuzz_target;
use usbpass::ccid::character::{t0_tpdu, t1_block};
use usbpass::ccid::device::CcidError;
use usbpass::ccid::t1::Edc;
use usbpass::ccid::transport::TransportError;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, mut rest)) = data.split_first() else { return };
    let mut reader = |_data: &[u8], _expect: u16, _bwi: u8| -> Result<Vec<u8>, CcidError> {
        let Some((&ctl, tail)) = rest.split_first() else {
            return Err(CcidError::Transport { cmd: "XfrBlock", source: TransportError::Timeout });
        };
        rest = tail;
        if ctl == 0xFF {
            return Err(CcidError::Transport { cmd: "XfrBlock", source: TransportError::Stall });
        }
        let n = ((ctl & 0x7F) as usize).min(rest.len());
        let (answer, tail) = rest.split_at(n);
        rest = tail;
        Ok(answer.to_vec())
    };
    if sel & 4 == 0 {
        let tpdu: &[u8] = match sel & 3 {
            0 => &[0x00, 0x20, 0x00, 0x81],
            1 => &[0x00, 0xB0, 0x00, 0x00, 0x10],
            2 => &[0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01],
            _ => &[0x00, 0xB0, 0x00, 0x00, 0x00],
        };
        if let Ok(resp) = t0_tpdu(&mut reader, tpdu) {
            assert!(resp.len() >= 2, "an answer without a status word");
            assert!(resp.len() <= 258);
        }
    } else {
        let edc = if sel & 8 == 0 { Edc::Lrc } else { Edc::Crc };
        let _ = t1_block(&mut reader, &[0x00, 0x00, 0x01, 0x00, 0x01], 0, edc);
    }
});
