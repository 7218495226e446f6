//! T=1 on arbitrary bytes: the block codec (decode → encode → decode is stable) and the host
//! state machine against a card whose answers come from the input (no panic, always ends).
//!
//! Input after the first byte: a sequence of `ctl [bytes]`: `ctl` 0xFF = parity error, 0xFE =
//! card mute, else `ctl & 0x3F` bytes follow, with a correct LRC appended when bit 7 is set
//! (so the fuzzer reaches the protocol rules instead of guessing checksums).
//!
//! Run: `cd usbpass && RUSTC_BOOTSTRAP=1 cargo fuzz run t1_block -- -max_total_time=60`
#![no_main]
use libfuzzer_sys::fuzz_target;
use usbpass::ccid::device::CcidError;
use usbpass::ccid::t1::{lrc, Block, Edc, XferError, T1};
use usbpass::ccid::transport::TransportError;

fuzz_target!(|data: &[u8]| {
    for edc in [Edc::Lrc, Edc::Crc] {
        if let Ok((nad, b)) = Block::decode(data, edc) {
            let enc = b.encode(nad, edc);
            assert_eq!(enc.len(), data.len());
            assert_eq!(Block::decode(&enc, edc), Ok((nad, b)));
        }
    }

    let Some((&ifsc, mut rest)) = data.split_first() else { return };
    let mut card = |_block: &[u8], _wtx: u8| -> Result<Vec<u8>, XferError> {
        let Some((&ctl, tail)) = rest.split_first() else {
            return Err(XferError::Fatal(CcidError::Transport { cmd: "XfrBlock", source: TransportError::Timeout }));
        };
        rest = tail;
        match ctl {
            0xFF => Err(XferError::Parity),
            0xFE => Err(XferError::Mute),
            _ => {
                let n = ((ctl & 0x3F) as usize).min(rest.len());
                let (blk, tail) = rest.split_at(n);
                rest = tail;
                let mut v = blk.to_vec();
                if ctl & 0x80 != 0 {
                    v.push(lrc(blk));
                }
                Ok(v)
            }
        }
    };
    let mut t1 = T1::new(ifsc, Edc::Lrc);
    let _ = t1.negotiate_ifsd(&mut card, 254);
    t1.reset();
    let long: Vec<u8> = (0..100u8).collect();
    for apdu in [&[0x00, 0xA4, 0x04, 0x00][..], &long] {
        if let Ok(resp) = t1.transceive(&mut card, apdu) {
            assert!(resp.len() <= 65_538);
        }
    }
});
