//! The USB side as the CCID driver sees it: one claimed CCID interface with a bulk-OUT, a
//! bulk-IN and an optional interrupt-IN endpoint, plus the class requests on the control pipe.
//!
//! Implemented by the rusb transport (real devices) and by the simulated readers (`sim`).
//! Timeouts are whole transfers' deadlines; implementations must clamp them to at least 1 ms
//! (libusb treats 0 as "forever").

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A USB-level failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// Nothing (or not enough) arrived before the timeout.
    Timeout,
    /// The endpoint is halted (`LIBUSB_ERROR_PIPE`). Clear it with [`Transport::clear_halt`].
    Stall,
    /// The device is gone (`LIBUSB_ERROR_NO_DEVICE`): every later call fails the same way.
    NoDevice,
    /// The device sent more than the buffer holds (`LIBUSB_ERROR_OVERFLOW`).
    Overflow,
    /// Anything else, with a description.
    Io(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Timeout => f.write_str("USB transfer timed out"),
            TransportError::Stall => f.write_str("USB endpoint stalled"),
            TransportError::NoDevice => f.write_str("USB device gone"),
            TransportError::Overflow => f.write_str("USB transfer overflow (device sent too much)"),
            TransportError::Io(s) => write!(f, "USB I/O error: {s}"),
        }
    }
}

impl std::error::Error for TransportError {}

/// An endpoint of the CCID interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    BulkOut,
    BulkIn,
    Interrupt,
}

/// CCID class requests on the control pipe (ccid.md §1.6).
pub mod class_request {
    /// ABORT: `wValue` = bSlot | bSeq << 8; no data.
    pub const ABORT: u8 = 0x01;
    /// GET_CLOCK_FREQUENCIES: u32 kHz each.
    pub const GET_CLOCK_FREQUENCIES: u8 = 0x02;
    /// GET_DATA_RATES: u32 bps each.
    pub const GET_DATA_RATES: u8 = 0x03;
}

/// One CCID interface.
pub trait Transport {
    /// Write one whole message in one bulk-OUT transfer (no trailing zero-length packet).
    fn bulk_out(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError>;

    /// Read one bulk-IN transfer into `buf`; it ends on a short packet (possibly a zero-length
    /// one) or when `buf` is full. Returns the number of bytes received. A transport may also
    /// hand over a message in several pieces of whole packets: the driver keeps reading while
    /// the message is incomplete and the last piece was a multiple of [`Transport::max_packet_size`].
    fn bulk_in(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError>;

    /// Read one interrupt-IN transfer (a NotifySlotChange or HardwareError message).
    /// Readers without an interrupt endpoint return [`TransportError::Io`].
    fn interrupt_in(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError>;

    /// `wMaxPacketSize` of the bulk-IN endpoint (64 at full speed, 512 at high speed).
    fn max_packet_size(&self) -> usize {
        64
    }

    /// A class-specific OUT request to the interface (bmRequestType `0x21`).
    fn class_out(&mut self, request: u8, value: u16, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        let _ = (request, value, data, timeout);
        Err(TransportError::Stall)
    }

    /// A class-specific IN request to the interface (bmRequestType `0xA1`).
    fn class_in(
        &mut self,
        request: u8,
        value: u16,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransportError> {
        let _ = (request, value, buf, timeout);
        Err(TransportError::Stall)
    }

    /// Clear a halted endpoint (resets its data toggle).
    fn clear_halt(&mut self, ep: Endpoint) -> Result<(), TransportError> {
        let _ = ep;
        Ok(())
    }
}

/// Implements [`Transport`] for a handle to a transport by handing every method, the ones with
/// defaults too, to the transport that `$this => $target` reaches from the handle: a wrapper that
/// forgot one would silently fall back to the default (a stalled class request, 64-byte packets).
macro_rules! forward_transport {
    ($(#[$doc:meta])* $handle:ty, $this:ident => $target:expr) => {
        $(#[$doc])*
        impl<T: Transport + ?Sized> Transport for $handle {
            fn bulk_out(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
                let $this = self;
                $target.bulk_out(data, timeout)
            }
            fn bulk_in(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
                let $this = self;
                $target.bulk_in(buf, timeout)
            }
            fn interrupt_in(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
                let $this = self;
                $target.interrupt_in(buf, timeout)
            }
            fn max_packet_size(&self) -> usize {
                let $this = self;
                $target.max_packet_size()
            }
            fn class_out(
                &mut self,
                request: u8,
                value: u16,
                data: &[u8],
                timeout: Duration,
            ) -> Result<(), TransportError> {
                let $this = self;
                $target.class_out(request, value, data, timeout)
            }
            fn class_in(
                &mut self,
                request: u8,
                value: u16,
                buf: &mut [u8],
                timeout: Duration,
            ) -> Result<usize, TransportError> {
                let $this = self;
                $target.class_in(request, value, buf, timeout)
            }
            fn clear_halt(&mut self, ep: Endpoint) -> Result<(), TransportError> {
                let $this = self;
                $target.clear_halt(ep)
            }
        }
    };
}

forward_transport!(&mut T, t => (**t));
forward_transport!(Box<T>, t => (**t));
forward_transport!(
    /// One transport shared by the slots of a multi-slot reader (each slot's `Ccid` holds a clone):
    /// every call locks it. Callers serialise whole commands themselves (one device lock), so the
    /// lock is never contended in the middle of a command; it only makes the sharing safe.
    Arc<Mutex<T>>,
    t => lock(t)
);

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Clamp a timeout to what libusb can express without meaning "forever".
pub fn usb_timeout(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}
