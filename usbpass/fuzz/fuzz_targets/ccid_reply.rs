//! What a hostile or broken reader can send: every bulk-IN and interrupt message parser, and the
//! driver's reply loop (reassembly, zero-length packets, stale bSeq, time extensions, failed
//! replies, extended-APDU chaining) fed from the input. No panic, no endless loop; whatever
//! parses re-emits to the same bytes.
//!
//! The driver part reads the input as `ctl [bytes]` per bulk-IN read: 0xFF stall, 0xFE device
//! gone, 0xFD timeout; else `(ctl & 0x3F) * 4` bytes, whose bSlot/bSeq are set to the command's
//! when bit 7 is set, and bit 6 makes the read a zero-length packet.
//!
//! Run: `cd usbpass && RUSTC_BOOTSTRAP=1 cargo fuzz run ccid_reply -- -max_total_time=60`
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use usbpass::ccid::descriptor::CcidDescriptor;
use usbpass::ccid::exchange::{ExchangeOptions, Slot};
use usbpass::ccid::message::*;
use usbpass::ccid::transport::{Transport, TransportError};

struct Reads<'a> {
    data: &'a [u8],
    slot: u8,
    seq: u8,
}

impl Transport for Reads<'_> {
    fn bulk_out(&mut self, d: &[u8], _: Duration) -> Result<(), TransportError> {
        if let (Some(&slot), Some(&seq)) = (d.get(5), d.get(6)) {
            self.slot = slot;
            self.seq = seq;
        }
        Ok(())
    }

    fn bulk_in(&mut self, buf: &mut [u8], _: Duration) -> Result<usize, TransportError> {
        let (&ctl, tail) = self.data.split_first().ok_or(TransportError::Timeout)?;
        self.data = tail;
        match ctl {
            0xFF => return Err(TransportError::Stall),
            0xFE => return Err(TransportError::NoDevice),
            0xFD => return Err(TransportError::Timeout),
            c if c & 0x40 != 0 => return Ok(0),
            _ => {}
        }
        let n = (((ctl & 0x3F) as usize) * 4).min(self.data.len()).min(buf.len());
        let (chunk, tail) = self.data.split_at(n);
        self.data = tail;
        buf[..n].copy_from_slice(chunk);
        if ctl & 0x80 != 0 && n >= 7 {
            buf[5] = self.slot;
            buf[6] = self.seq;
        }
        Ok(n)
    }

    fn interrupt_in(&mut self, buf: &mut [u8], _: Duration) -> Result<usize, TransportError> {
        let n = self.data.len().min(buf.len()).min(8);
        buf[..n].copy_from_slice(&self.data[..n]);
        Ok(n)
    }

    fn max_packet_size(&self) -> usize {
        16
    }
}

/// Parse and re-emit; `rfu9`: header byte 9 is reserved in this message and emitted as 0.
fn roundtrip<R: Reply>(f: &Frame<'_>, whole: &[u8], rfu9: bool) {
    if let Ok(r) = R::parse(f) {
        let mut out = Vec::new();
        r.emit(f.header.slot, f.header.seq, &mut out);
        let mut want = whole.to_vec();
        if rfu9 {
            want[9] = 0;
        }
        assert_eq!(out, want);
    }
}

/// A YubiKey-like extended-APDU reader with 64-byte messages (lots of chaining).
fn descriptor() -> CcidDescriptor {
    let mut b = [0u8; 54];
    b[0] = 54;
    b[1] = 0x21;
    b[5] = 7;
    b[6] = 3;
    b[10..14].copy_from_slice(&4000u32.to_le_bytes());
    b[40..44].copy_from_slice(&0x0004_00FEu32.to_le_bytes());
    b[44..48].copy_from_slice(&64u32.to_le_bytes());
    CcidDescriptor::parse(&b).expect("valid descriptor")
}

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = Frame::parse(data) {
        let whole = &data[..f.len()];
        roundtrip::<DataBlock>(&f, whole, false);
        roundtrip::<Parameters>(&f, whole, false);
        roundtrip::<EscapeReply>(&f, whole, true);
        if f.payload.is_empty() {
            roundtrip::<SlotStatus>(&f, whole, false);
        }
        let _ = any_reply_status(&f);
        if let Ok(Parameters { protocol_num, data: p, .. }) = Parameters::parse(&f) {
            let _ = ProtocolParams::parse(protocol_num, &p);
        }
        if let Ok(cmd) = AnyCommand::parse(&f) {
            let mut out = Vec::new();
            let (sl, sq) = (f.header.slot, f.header.seq);
            match cmd {
                AnyCommand::XfrBlock(c) => c.emit(sl, sq, &mut out),
                AnyCommand::Escape(c) => c.emit(sl, sq, &mut out),
                AnyCommand::Secure(c) => c.emit(sl, sq, &mut out),
                AnyCommand::SetParameters(c) => c.emit(sl, sq, &mut out),
                _ => out = whole.to_vec(),
            }
            // Commands whose header bytes 7-9 are all meaningful re-emit identically.
            if matches!(cmd, AnyCommand::XfrBlock(_) | AnyCommand::Secure(_)) {
                assert_eq!(out, whole);
            }
        }
    }
    if let Ok(n) = Notification::parse(data) {
        let mut out = Vec::new();
        n.emit(&mut out);
        assert_eq!(out, data[..out.len()]);
        for s in 0..=255u8 {
            let _ = n.slot(s);
        }
    }
    let _ = CcidDescriptor::find_in(data);

    // The driver on top of a reader that sends the input.
    let t = Reads { data, slot: 0, seq: 0 };
    let Ok(mut slot) = Slot::new(t, descriptor(), 0, ExchangeOptions::default()) else { return };
    let _ = slot.status();
    if slot.power_on().is_ok() {
        let mut apdu = vec![0x80, 0x01, 0x00, 0x00, 0x00, 0x00, 0x96];
        apdu.extend(std::iter::repeat(0x5A).take(150));
        apdu.extend_from_slice(&[0x00, 0x00]);
        if let Ok(resp) = slot.transmit(&apdu) {
            assert!(resp.len() <= 65_538);
        }
        let _ = slot.transmit(&[0x00, 0xA4, 0x04, 0x00]);
    }
    let _ = slot.escape(&[0x6A], Duration::from_secs(1));
    let _ = slot.ccid().wait_notification(Duration::from_millis(1));
});
