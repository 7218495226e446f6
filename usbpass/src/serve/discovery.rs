//! Where readers come from. [`Discovery::scan`] lists the CCID interfaces present now, each
//! with a way to open (claim) it; the reader manager ([`super::UsbBackend`]) opens those it does
//! not have yet. Two implementations: [`UsbDiscovery`] (libusb through rusb) and, for tests and
//! `usbpass serve --simulate`, [`SimDiscovery`] (the simulated readers of `ccid::sim`).

use std::fmt;
use std::time::Duration;

use crate::ccid::descriptor::CcidDescriptor;
use crate::ccid::message::Notification;
use crate::ccid::transport::{Transport, TransportError};
use crate::ccid::usb::{self, OpenError, RusbInterrupt, RusbTransport};

/// What the manager knows about an opened CCID interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub bus: u8,
    pub address: u8,
    pub interface: u8,
    /// Where it is, for logs (`bus-port.port`).
    pub path: String,
    pub vendor_id: u16,
    pub product_id: u16,
    /// `bcdDevice`.
    pub bcd_device: u16,
    /// `iManufacturer`, `iProduct`, `iSerialNumber`, `iInterface` (as the kernel shows them in
    /// sysfs, which is where pcscd takes them from).
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
    pub interface_name: Option<String>,
    pub descriptor: CcidDescriptor,
}

impl DeviceInfo {
    /// `VVVV:PPPP at PATH interface N`, for logs.
    pub fn label(&self) -> String {
        format!("{:04X}:{:04X} at {} interface {}", self.vendor_id, self.product_id, self.path, self.interface)
    }
}

/// The interrupt-IN endpoint of an opened reader, read by the reader's presence thread while
/// other threads use the bulk endpoints.
pub trait InterruptSource: Send {
    /// Wait up to `timeout` for a message. `Ok(None)`: nothing came (or something that is not a
    /// notification: the caller checks the slots anyway).
    fn wait(&mut self, timeout: Duration) -> Result<Option<Notification>, TransportError>;
}

/// An opened, claimed CCID interface.
pub struct OpenedDevice {
    pub info: DeviceInfo,
    pub transport: Box<dyn Transport + Send>,
    pub interrupt: Option<Box<dyn InterruptSource>>,
}

impl fmt::Debug for OpenedDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedDevice").field("info", &self.info).field("interrupt", &self.interrupt.is_some()).finish()
    }
}

/// A CCID interface found by a scan.
pub struct Candidate {
    /// Identity while it stays plugged in (a re-plugged device gets a new one).
    pub key: String,
    /// For logs.
    pub label: String,
    /// Open and claim it.
    pub open: Box<dyn FnOnce() -> Result<OpenedDevice, OpenError> + Send>,
}

impl fmt::Debug for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Candidate").field("key", &self.key).field("label", &self.label).finish()
    }
}

/// A source of readers.
pub trait Discovery: Send + Sync + 'static {
    /// The CCID interfaces present now. `Err`: the bus cannot be listed (no USB at all).
    fn scan(&self) -> Result<Vec<Candidate>, String>;
}

// ---------------------------------------------------------------------------------------------
// Real devices

/// CCID interfaces on the USB buses, through libusb.
///
/// Every scan uses a **fresh libusb context**: libusb fills a context's device list once at
/// creation and afterwards only from its own hot-plug monitor (udev or netlink), which sees
/// nothing inside a Flatpak sandbox; a new context enumerates the buses again. Opened devices
/// keep the context they were opened with.
#[derive(Debug, Default)]
pub struct UsbDiscovery;

impl Discovery for UsbDiscovery {
    fn scan(&self) -> Result<Vec<Candidate>, String> {
        let t0 = std::time::Instant::now();
        let ctx = usb::context().map_err(|e| format!("libusb: {e}"))?;
        let t1 = std::time::Instant::now();
        let found = usb::discover(&ctx).map_err(|e| format!("listing USB devices: {e}"))?;
        tracing::debug!(
            init_us = (t1 - t0).as_micros() as u64,
            list_us = t1.elapsed().as_micros() as u64,
            "USB devices listed"
        );
        Ok(found
            .into_iter()
            .map(|(dev, info)| {
                let key = format!("usb:{}:{}:{}", info.bus, info.address, info.interface);
                let label = format!(
                    "{:04X}:{:04X} at {} interface {}",
                    info.vendor_id,
                    info.product_id,
                    info.path(),
                    info.interface
                );
                Candidate { key, label, open: Box::new(move || open_usb(&dev, &info)) }
            })
            .collect())
    }
}

fn open_usb(dev: &rusb::Device<rusb::Context>, info: &usb::CcidInterface) -> Result<OpenedDevice, OpenError> {
    let kind = info.kind;
    let descriptor = match &info.descriptor {
        Ok(d) => d.clone(),
        Err(e) => return Err(OpenError::Unsupported(e.to_string())),
    };
    let t0 = std::time::Instant::now();
    let t = RusbTransport::open(dev, info)?;
    let t1 = std::time::Instant::now();
    let info = DeviceInfo {
        bus: info.bus,
        address: info.address,
        interface: info.interface,
        path: info.path(),
        vendor_id: info.vendor_id,
        product_id: info.product_id,
        bcd_device: info.device_version,
        manufacturer: t.unicode_string(info.manufacturer_string),
        product: t.unicode_string(info.product_string),
        serial: t.unicode_string(info.serial_string),
        interface_name: t.unicode_string(info.interface_string),
        descriptor,
    };
    tracing::debug!(
        open_us = (t1 - t0).as_micros() as u64,
        strings_us = t1.elapsed().as_micros() as u64,
        "reader opened"
    );
    let interrupt = t.interrupt_reader().map(|r| Box::new(UsbInterrupt(r)) as Box<dyn InterruptSource>);
    // ICCD tokens (control pipe) get the adapter and the descriptor the driver works from.
    let (descriptor, transport) = crate::ccid::iccd::adapt(kind, info.descriptor, t)?;
    Ok(OpenedDevice { info: DeviceInfo { descriptor, ..info }, transport, interrupt })
}

struct UsbInterrupt(RusbInterrupt);

impl InterruptSource for UsbInterrupt {
    fn wait(&mut self, timeout: Duration) -> Result<Option<Notification>, TransportError> {
        let mut buf = [0u8; 64];
        match self.0.read(&mut buf, timeout) {
            Ok(n) => Ok(Notification::parse(&buf[..n.min(buf.len())]).ok()),
            Err(TransportError::Timeout) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Simulated devices

#[cfg(any(test, feature = "sim"))]
pub use sim::{SimDiscovery, SimHandle, SimTransport};

#[cfg(any(test, feature = "sim"))]
mod sim {
    use super::*;
    use crate::ccid::sim::SimReader;
    use std::sync::{Arc, Mutex, MutexGuard};

    /// A simulated transport as the discovery keeps it.
    pub type SimTransport = Arc<Mutex<dyn Transport + Send>>;

    /// Simulated readers that tests plug in and out.
    #[derive(Default)]
    pub struct SimDiscovery {
        devices: Mutex<Vec<(String, DeviceInfo, SimTransport, bool)>>,
        /// Keys of interfaces "another program" holds (open fails with `Busy`).
        busy: Arc<Mutex<Vec<String>>>,
    }

    /// A plugged-in simulated reader: the test's side (insert/remove the card, faults, logs).
    pub type SimHandle = Arc<Mutex<SimReader>>;

    fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn same(a: &SimTransport, b: &SimHandle) -> bool {
        std::ptr::eq(Arc::as_ptr(a) as *const u8, Arc::as_ptr(b) as *const u8)
    }

    impl SimDiscovery {
        pub fn new() -> Arc<Self> {
            Arc::new(SimDiscovery::default())
        }

        /// Plug a reader in (found by the next scan).
        pub fn plug(&self, info: DeviceInfo, reader: SimReader) -> SimHandle {
            let has_interrupt = reader.quirks.has_interrupt;
            let h = Arc::new(Mutex::new(reader));
            self.plug_transport(info, h.clone(), has_interrupt);
            h
        }

        /// Plug in any simulated transport (e.g. several simulated slots behind one device).
        pub fn plug_transport(&self, info: DeviceInfo, transport: SimTransport, has_interrupt: bool) {
            let key = format!("sim:{}:{}:{}", info.bus, info.address, info.interface);
            lock(&self.devices).push((key, info, transport, has_interrupt));
        }

        /// Make opening `reader` fail as if another program (the host's pcscd) had claimed it.
        pub fn set_busy(&self, reader: &SimHandle, busy: bool) {
            let devices = lock(&self.devices);
            let Some((key, ..)) = devices.iter().find(|(_, _, t, _)| same(t, reader)) else { return };
            let mut b = lock(&self.busy);
            b.retain(|k| k != key);
            if busy {
                b.push(key.clone());
            }
        }

        /// Pull a reader out: its transport fails with NoDevice from now on, and scans no
        /// longer list it.
        pub fn unplug(&self, reader: &SimHandle) {
            lock(reader).unplug();
            lock(&self.devices).retain(|(_, _, t, _)| !same(t, reader));
        }
    }

    impl fmt::Debug for SimDiscovery {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("SimDiscovery").field("devices", &lock(&self.devices).len()).finish()
        }
    }

    impl Discovery for Arc<SimDiscovery> {
        fn scan(&self) -> Result<Vec<Candidate>, String> {
            Ok(lock(&self.devices)
                .iter()
                .map(|(key, info, t, has_interrupt)| {
                    let (info, t, has_interrupt) = (info.clone(), t.clone(), *has_interrupt);
                    let busy = lock(&self.busy).contains(key);
                    Candidate {
                        key: key.clone(),
                        label: info.label(),
                        open: Box::new(move || {
                            if busy {
                                return Err(OpenError::Busy);
                            }
                            let interrupt =
                                has_interrupt.then(|| Box::new(SimInterrupt(t.clone())) as Box<dyn InterruptSource>);
                            Ok(OpenedDevice { info, transport: Box::new(t), interrupt })
                        }),
                    }
                })
                .collect())
        }
    }

    /// The simulated interrupt pipe: the simulator answers at once, so wait by polling it.
    struct SimInterrupt(SimTransport);

    impl InterruptSource for SimInterrupt {
        fn wait(&mut self, timeout: Duration) -> Result<Option<Notification>, TransportError> {
            let deadline = std::time::Instant::now() + timeout;
            let mut buf = [0u8; 64];
            loop {
                match lock(&self.0).interrupt_in(&mut buf, timeout) {
                    Ok(n) => return Ok(Notification::parse(&buf[..n]).ok()),
                    Err(TransportError::Timeout) => {}
                    Err(e) => return Err(e),
                }
                if std::time::Instant::now() >= deadline {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}
