//! What a hostile or broken ICCD token can answer: the version-B answer and slot-status
//! parsers and the version-A status byte (whatever parses re-emits to the same bytes), and the
//! driver over the ICCD adapter (`ccid::iccd`) fed from the input: busy and poll-again loops,
//! chaining codes, status-with-error answers, short and empty answers, USB failures. No panic,
//! no endless loop.
//!
//! The driver part reads the input as: byte 0 bit 0 picks the version (0 = A, 1 = B), bit 1
//! runs libccid's power cycle at open first; then each control IN request takes `ctl [bytes]`:
//! 0xFF stall, 0xFE device gone, 0xFD timeout, else the next `ctl` bytes (as many as there
//! are) are the answer. OUT requests succeed. When the input runs out, IN requests time out.
//!
//! Run: `cd usbpass && RUSTC_BOOTSTRAP=1 cargo fuzz run iccd_reply -- -max_total_time=60`
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use usbpass::ccid::atr::Protocols;
use usbpass::ccid::descriptor::CcidDescriptor;
use usbpass::ccid::exchange::{ExchangeOptions, Slot, MAX_RESPONSE};
use usbpass::ccid::iccd::{driver_descriptor, AStatus, BResponse, BSlotStatus, IccdTransport, Version};
use usbpass::ccid::transport::{Transport, TransportError};

struct Answers<'a> {
    data: &'a [u8],
}

impl Transport for Answers<'_> {
    fn bulk_out(&mut self, _: &[u8], _: Duration) -> Result<(), TransportError> {
        Err(TransportError::Io("no bulk endpoints".into()))
    }

    fn bulk_in(&mut self, _: &mut [u8], _: Duration) -> Result<usize, TransportError> {
        Err(TransportError::Io("no bulk endpoints".into()))
    }

    fn interrupt_in(&mut self, _: &mut [u8], _: Duration) -> Result<usize, TransportError> {
        Err(TransportError::Timeout)
    }

    fn class_out(&mut self, _: u8, _: u16, _: &[u8], _: Duration) -> Result<(), TransportError> {
        Ok(())
    }

    fn class_in(&mut self, _: u8, _: u16, buf: &mut [u8], _: Duration) -> Result<usize, TransportError> {
        let (&ctl, tail) = self.data.split_first().ok_or(TransportError::Timeout)?;
        self.data = tail;
        match ctl {
            0xFF => return Err(TransportError::Stall),
            0xFE => return Err(TransportError::NoDevice),
            0xFD => return Err(TransportError::Timeout),
            _ => {}
        }
        let n = (ctl as usize).min(self.data.len()).min(buf.len());
        let (chunk, tail) = self.data.split_at(n);
        self.data = tail;
        buf[..n].copy_from_slice(chunk);
        Ok(n)
    }
}

/// A token descriptor as captured in libccid's `readers/`: version A (character level, T=0,
/// `0x840`) or B (short APDU, T=1, `0x20840`, 261-byte messages).
fn token_descriptor(version: Version) -> CcidDescriptor {
    let (features, max_msg, protocols) = match version {
        Version::A => (0x0000_0840u32, 271u32, 1u32),
        Version::B => (0x0002_0840, 261, 2),
    };
    let mut b = [0u8; 54];
    b[0] = 54;
    b[1] = 0x21;
    b[5] = 1;
    b[6..10].copy_from_slice(&protocols.to_le_bytes());
    b[10..14].copy_from_slice(&4000u32.to_le_bytes());
    b[40..44].copy_from_slice(&features.to_le_bytes());
    b[44..48].copy_from_slice(&max_msg.to_le_bytes());
    CcidDescriptor::parse(&b).expect("valid descriptor")
}

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = BResponse::parse(data) {
        let mut out = Vec::new();
        r.emit(&mut out);
        assert_eq!(out, data[..out.len()]);
    }
    if let Ok(s) = BSlotStatus::parse(data) {
        let mut out = Vec::new();
        s.emit(&mut out);
        let n = data.len().min(3);
        assert_eq!(out[..n], data[..n]);
        let _ = s.icc();
    }
    if let Ok(s) = AStatus::parse(data) {
        let mut out = Vec::new();
        s.emit(&mut out);
        assert_eq!(out, data[..1]);
    }

    // The driver over the adapter over a token that answers the input.
    let Some((&mode, rest)) = data.split_first() else { return };
    let version = if mode & 1 == 0 { Version::A } else { Version::B };
    let desc = driver_descriptor(version, &token_descriptor(version));
    let mut t = IccdTransport::new(Answers { data: rest }, version).with_poll_unit(Duration::ZERO);
    if mode & 2 != 0 {
        t.power_cycle();
    }
    let Ok(mut slot) = Slot::new(t, desc, 0, ExchangeOptions::default()) else { return };
    let _ = slot.presence();
    if slot.power_on().is_ok() {
        let _ = slot.connect(Protocols::ANY);
        let mut extended = vec![0x80, 0x01, 0x00, 0x00, 0x00, 0x03, 0xE8];
        extended.extend(std::iter::repeat(0x5A).take(1000));
        extended.extend_from_slice(&[0x00, 0x00]);
        let select = [0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01];
        for apdu in [&select[..], &extended, &[0x00, 0xB0, 0x00, 0x00, 0x00], &[0x00, 0x20, 0x00, 0x81], &[1, 2]] {
            if let Ok(resp) = slot.transmit(apdu) {
                assert!(resp.len() <= MAX_RESPONSE);
            }
        }
    }
    let _ = slot.escape(&[0x01], Duration::from_millis(10));
    let _ = slot.status();
    let _ = slot.power_off();
});
