//! Real devices: discovery of CCID interfaces and a [`Transport`] over rusb (libusb, vendored).
//!
//! Discovery follows libccid (ccid.md §1.1, §1.5): the first altsetting of every interface of
//! the active configuration whose class is `0x0B`, or `0xFF` with exactly 54 bytes of class
//! descriptor (pre-standard readers); ICCD interfaces (protocol 1 and 2, tokens that talk over
//! the control pipe) are claimed without bulk endpoints and driven through [`super::iccd`]; the
//! class descriptor comes from the interface's extra bytes or, failing that, the endpoints'.
//! Only the CCID interface is claimed (a YubiKey's HID interfaces stay untouched).
//!
//! rusb maps libusb's errors; the only place they become [`TransportError`] is
//! [`map_err`]: `NoDevice` is "reader removed", `Pipe` a stall, `Busy` on claim means another
//! driver (the host's pcscd) holds the interface.

use super::descriptor::{CcidDescriptor, DescriptorError};
use super::transport::{usb_timeout, Endpoint, Transport, TransportError};
use rusb::{Context, Device, DeviceHandle, Direction, TransferType, UsbContext};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Interface class of CCID.
pub const CLASS_CCID: u8 = 0x0B;
/// Vendor-specific class (pre-standard readers with a 54-byte descriptor).
pub const CLASS_VENDOR: u8 = 0xFF;

/// How an interface qualifies (or not) as a CCID reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceKind {
    /// Bulk CCID (protocol 0): what this driver handles.
    Ccid,
    /// ICCD version A or B (control-pipe protocols, `bInterfaceProtocol` 1 or 2): driven
    /// through the adapter of [`super::iccd`].
    Iccd(u8),
}

/// Classify an interface from its class, protocol and the length of its extra bytes.
pub fn classify(class: u8, protocol: u8, extra_len: usize) -> Option<InterfaceKind> {
    let is_ccid = class == CLASS_CCID || (class == CLASS_VENDOR && extra_len == super::descriptor::DESCRIPTOR_LEN);
    match (is_ccid, protocol) {
        (false, _) => None,
        (true, 1 | 2) => Some(InterfaceKind::Iccd(protocol)),
        (true, _) => Some(InterfaceKind::Ccid),
    }
}

/// One CCID interface found on the bus.
#[derive(Debug, Clone)]
pub struct CcidInterface {
    pub bus: u8,
    pub address: u8,
    pub vendor_id: u16,
    pub product_id: u16,
    /// `bcdDevice`.
    pub device_version: u16,
    pub interface: u8,
    pub setting: u8,
    pub kind: InterfaceKind,
    pub bulk_in: Option<u8>,
    pub bulk_out: Option<u8>,
    pub interrupt: Option<u8>,
    /// `wMaxPacketSize` of bulk-IN.
    pub max_packet_size: usize,
    pub descriptor: Result<CcidDescriptor, DescriptorError>,
    /// `iInterface` index, for the pcscd-style reader name.
    pub interface_string: Option<u8>,
    /// `iManufacturer`, `iProduct`, `iSerialNumber` indexes.
    pub manufacturer_string: Option<u8>,
    pub product_string: Option<u8>,
    pub serial_string: Option<u8>,
    /// Port numbers from the root hub (sysfs-style path `bus-p1.p2...`), for logs.
    pub ports: Vec<u8>,
}

impl CcidInterface {
    /// `bus-port.port…` (the sysfs name of the device), or `bus:address` without port numbers.
    pub fn path(&self) -> String {
        if self.ports.is_empty() {
            return format!("{}:{}", self.bus, self.address);
        }
        let ports: Vec<String> = self.ports.iter().map(|p| p.to_string()).collect();
        format!("{}-{}", self.bus, ports.join("."))
    }
}

/// Why a device could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// No usable CCID interface (missing endpoints or descriptor).
    Unsupported(String),
    /// `LIBUSB_ERROR_BUSY` on claim: another driver (usually the host's pcscd) holds it.
    Busy,
    /// `LIBUSB_ERROR_ACCESS`: no permission on `/dev/bus/usb/BBB/DDD`.
    Access,
    Usb(TransportError),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Unsupported(s) => write!(f, "unsupported reader: {s}"),
            OpenError::Busy => {
                f.write_str("the CCID interface is in use by another driver (is the host's pcscd running?)")
            }
            OpenError::Access => f.write_str("no permission to open the USB device (see /dev/bus/usb and udev rules)"),
            OpenError::Usb(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// The one place rusb errors become transport errors.
pub fn map_err(e: rusb::Error) -> TransportError {
    match e {
        rusb::Error::Timeout => TransportError::Timeout,
        rusb::Error::Pipe => TransportError::Stall,
        rusb::Error::NoDevice => TransportError::NoDevice,
        rusb::Error::Overflow => TransportError::Overflow,
        other => TransportError::Io(other.to_string()),
    }
}

/// A libusb context. Fails (instead of panicking like rusb's global context) on hosts without
/// USB.
pub fn context() -> Result<Context, TransportError> {
    Context::new().map_err(map_err)
}

/// Every CCID (and ICCD) interface of every device.
pub fn discover(ctx: &Context) -> Result<Vec<(Device<Context>, CcidInterface)>, TransportError> {
    let mut found = Vec::new();
    for dev in ctx.devices().map_err(map_err)?.iter() {
        let Ok(dd) = dev.device_descriptor() else { continue };
        let Ok(config) = dev.active_config_descriptor().or_else(|_| dev.config_descriptor(0)) else { continue };
        for iface in config.interfaces() {
            let Some(alt) = iface.descriptors().next() else { continue };
            let Some(kind) = classify(alt.class_code(), alt.protocol_code(), alt.extra().len()) else { continue };
            let eps: Vec<_> = alt.endpoint_descriptors().collect();
            let mut info = CcidInterface {
                bus: dev.bus_number(),
                address: dev.address(),
                vendor_id: dd.vendor_id(),
                product_id: dd.product_id(),
                device_version: {
                    let v = dd.device_version();
                    // rusb decodes the BCD major digits to a number; put them back.
                    let major = v.major() as u16;
                    (major / 10) << 12 | (major % 10) << 8 | (v.minor() as u16) << 4 | v.sub_minor() as u16
                },
                interface: alt.interface_number(),
                setting: alt.setting_number(),
                kind,
                bulk_in: None,
                bulk_out: None,
                interrupt: None,
                max_packet_size: 64,
                descriptor: CcidDescriptor::locate(
                    alt.extra(),
                    eps.iter().map(|e| e.extra().unwrap_or(&[])).collect::<Vec<_>>().into_iter(),
                ),
                interface_string: alt.description_string_index(),
                manufacturer_string: dd.manufacturer_string_index(),
                product_string: dd.product_string_index(),
                serial_string: dd.serial_number_string_index(),
                ports: dev.port_numbers().unwrap_or_default(),
            };
            for e in &eps {
                match (e.transfer_type(), e.direction()) {
                    (TransferType::Interrupt, Direction::In) => info.interrupt = Some(e.address()),
                    (TransferType::Bulk, Direction::In) => {
                        info.bulk_in = Some(e.address());
                        info.max_packet_size = (e.max_packet_size() & 0x7FF).max(8) as usize;
                    }
                    (TransferType::Bulk, Direction::Out) => info.bulk_out = Some(e.address()),
                    _ => {}
                }
            }
            found.push((dev.clone(), info));
        }
    }
    Ok(found)
}

/// One claimed CCID interface.
pub struct RusbTransport {
    handle: Arc<DeviceHandle<Context>>,
    interface: u8,
    /// `None` on ICCD tokens (control pipe only).
    bulk_in: Option<u8>,
    bulk_out: Option<u8>,
    interrupt: Option<u8>,
    mps: usize,
}

impl fmt::Debug for RusbTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RusbTransport")
            .field("interface", &self.interface)
            .field("bulk_in", &self.bulk_in)
            .field("bulk_out", &self.bulk_out)
            .finish()
    }
}

impl RusbTransport {
    /// Open the device and claim the CCID interface (and nothing else).
    pub fn open(dev: &Device<Context>, info: &CcidInterface) -> Result<Self, OpenError> {
        // ICCD tokens use the control pipe only (`iccd`), and their card is always present:
        // no bulk endpoints needed, no interrupt polling (libccid neither).
        let iccd = matches!(info.kind, InterfaceKind::Iccd(_));
        let (bulk_in, bulk_out) = match (info.bulk_in, info.bulk_out) {
            (Some(i), Some(o)) => (Some(i), Some(o)),
            _ if iccd => (None, None),
            _ => return Err(OpenError::Unsupported("missing bulk endpoints".into())),
        };
        if let Err(e) = &info.descriptor {
            return Err(OpenError::Unsupported(e.to_string()));
        }
        let handle = dev.open().map_err(|e| match e {
            rusb::Error::Access => OpenError::Access,
            e => OpenError::Usb(map_err(e)),
        })?;
        handle.claim_interface(info.interface).map_err(|e| match e {
            rusb::Error::Busy => OpenError::Busy,
            rusb::Error::Access => OpenError::Access,
            e => OpenError::Usb(map_err(e)),
        })?;
        // libccid polls the interrupt pipe only with bInterfaceProtocol 0 and 3 endpoints.
        Ok(RusbTransport {
            handle: Arc::new(handle),
            interface: info.interface,
            bulk_in,
            bulk_out,
            interrupt: if iccd { None } else { info.interrupt },
            mps: info.max_packet_size,
        })
    }

    /// Read a string descriptor (ASCII), e.g. iManufacturer, iSerialNumber, iInterface.
    pub fn string(&self, index: u8) -> Option<String> {
        self.handle.read_string_descriptor_ascii(index).ok()
    }

    /// Read a string descriptor in the device's first language, decoded from UTF-16 (what the
    /// kernel keeps in sysfs, where pcscd takes reader names from). `None`: index 0 or unreadable.
    pub fn unicode_string(&self, index: Option<u8>) -> Option<String> {
        let index = index.filter(|i| *i != 0)?;
        let timeout = Duration::from_secs(1);
        let lang = self.handle.read_languages(timeout).ok().and_then(|l| l.first().copied());
        match lang {
            Some(lang) => self.handle.read_string_descriptor(lang, index, timeout).ok(),
            None => self.string(index),
        }
    }

    pub fn handle(&self) -> &DeviceHandle<Context> {
        &self.handle
    }

    /// A second, independent reader of the interrupt endpoint (NotifySlotChange), usable from
    /// another thread while bulk transfers go on (libusb is thread-safe). `None` without one.
    pub fn interrupt_reader(&self) -> Option<RusbInterrupt> {
        self.interrupt.map(|endpoint| RusbInterrupt { handle: self.handle.clone(), endpoint })
    }
}

/// Reads the interrupt-IN endpoint of a claimed interface (see [`RusbTransport::interrupt_reader`]).
pub struct RusbInterrupt {
    handle: Arc<DeviceHandle<Context>>,
    endpoint: u8,
}

impl RusbInterrupt {
    /// One interrupt transfer.
    pub fn read(&self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        self.handle.read_interrupt(self.endpoint, buf, usb_timeout(timeout)).map_err(map_err)
    }
}

impl fmt::Debug for RusbInterrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RusbInterrupt").field("endpoint", &self.endpoint).finish()
    }
}

impl Drop for RusbTransport {
    fn drop(&mut self) {
        let _ = self.handle.release_interface(self.interface);
    }
}

fn no_bulk() -> TransportError {
    TransportError::Io("no bulk endpoint (ICCD token: control pipe only)".into())
}

impl Transport for RusbTransport {
    fn bulk_out(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        let ep = self.bulk_out.ok_or_else(no_bulk)?;
        let n = self.handle.write_bulk(ep, data, usb_timeout(timeout)).map_err(map_err)?;
        if n < data.len() {
            // rusb returns the partial count when the timeout expires mid-transfer.
            return Err(TransportError::Timeout);
        }
        Ok(())
    }

    fn bulk_in(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        let ep = self.bulk_in.ok_or_else(no_bulk)?;
        self.handle.read_bulk(ep, buf, usb_timeout(timeout)).map_err(map_err)
    }

    fn interrupt_in(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        let ep = self.interrupt.ok_or_else(|| TransportError::Io("no interrupt endpoint".into()))?;
        self.handle.read_interrupt(ep, buf, usb_timeout(timeout)).map_err(map_err)
    }

    fn max_packet_size(&self) -> usize {
        self.mps
    }

    fn class_out(&mut self, request: u8, value: u16, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        self.handle
            .write_control(0x21, request, value, self.interface as u16, data, usb_timeout(timeout))
            .map(|_| ())
            .map_err(map_err)
    }

    fn class_in(
        &mut self,
        request: u8,
        value: u16,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransportError> {
        self.handle
            .read_control(0xA1, request, value, self.interface as u16, buf, usb_timeout(timeout))
            .map_err(map_err)
    }

    fn clear_halt(&mut self, ep: Endpoint) -> Result<(), TransportError> {
        let addr = match ep {
            Endpoint::BulkIn => self.bulk_in,
            Endpoint::BulkOut => self.bulk_out,
            Endpoint::Interrupt => self.interrupt,
        };
        let Some(addr) = addr else { return Ok(()) };
        self.handle.clear_halt(addr).map_err(map_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify(0x0B, 0, 54), Some(InterfaceKind::Ccid));
        assert_eq!(classify(0x0B, 0, 0), Some(InterfaceKind::Ccid));
        assert_eq!(classify(0x0B, 1, 54), Some(InterfaceKind::Iccd(1)));
        assert_eq!(classify(0x0B, 2, 54), Some(InterfaceKind::Iccd(2)));
        assert_eq!(classify(0xFF, 0, 54), Some(InterfaceKind::Ccid));
        assert_eq!(classify(0xFF, 0, 9), None);
        assert_eq!(classify(0x03, 0, 54), None);
    }

    #[test]
    fn errors_map() {
        assert_eq!(map_err(rusb::Error::Timeout), TransportError::Timeout);
        assert_eq!(map_err(rusb::Error::Pipe), TransportError::Stall);
        assert_eq!(map_err(rusb::Error::NoDevice), TransportError::NoDevice);
        assert_eq!(map_err(rusb::Error::Overflow), TransportError::Overflow);
        assert!(matches!(map_err(rusb::Error::Io), TransportError::Io(_)));
    }

    #[test]
    fn no_usb_is_an_error_not_a_panic() {
        // This machine has no /sys/bus/usb: libusb_init fails; so may discovery.
        match context() {
            Ok(ctx) => {
                let _ = discover(&ctx);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}
