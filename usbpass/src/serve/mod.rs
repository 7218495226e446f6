//! `usbpass serve`: a mini-pcscd over the USB CCID readers this process drives itself (no
//! pcscd, no libccid), for every client protocol version (4:0 to 4:6) through
//! `pcsc_proto::server`.
//!
//! * [`backend`]: [`UsbBackend`], the reader manager and the PC/SC semantics (pcscd's);
//! * [`discovery`]: where readers come from (libusb, or simulated readers in tests);
//! * [`names`]: reader names as pcscd + libccid build them;
//! * [`features`]: control codes and attributes as libccid answers them;
//! * [`hotplug`]: inotify on `/dev/bus/usb` and a periodic rescan.
//!
//! The socket: `--listen PATH`, default `$XDG_RUNTIME_DIR/pcsc-bridge/usbpass.comm` (else
//! `/run/user/UID/pcsc-bridge/usbpass.comm`), created mode 0600 in a 0700 folder: only our own
//! uid (and `--allow-uid` ones) may connect, as the readers are ours once claimed. Socket
//! activation by systemd is honoured as in `usbpass proxy`.

pub mod backend;
pub mod discovery;
pub mod features;
pub mod hotplug;
pub mod names;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pcsc_proto::server::{ListenError, Listener, ListenerConfig, Server, ServerConfig};

pub use backend::{ServeConfig, UsbBackend};
pub use discovery::{Discovery, UsbDiscovery};

/// How often readers are looked for without a hot-plug event (also retries readers another
/// program held).
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(10);

/// `usbpass serve` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    pub listen: PathBuf,
    pub allow_uids: Vec<u32>,
    pub socket_mode: u32,
    /// Test-only: serve one simulated reader instead of USB (needs the `sim` feature).
    pub simulate: Option<String>,
}

/// Why `usbpass serve` could not run.
#[derive(Debug)]
pub enum ServeError {
    Folder(PathBuf, std::io::Error),
    Listen(ListenError),
    Io(std::io::Error),
    Simulate(String),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Folder(p, e) => write!(f, "cannot create {}: {e}", p.display()),
            ServeError::Listen(e) => write!(f, "{e}"),
            ServeError::Io(e) => write!(f, "{e}"),
            ServeError::Simulate(s) => write!(f, "--simulate: {s}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// The reader source for `opts`.
fn discovery(opts: &ServeOptions) -> Result<Box<dyn Discovery>, ServeError> {
    match &opts.simulate {
        None => Ok(Box::new(UsbDiscovery)),
        #[cfg(feature = "sim")]
        Some(level) => simulated::discovery(level).map_err(ServeError::Simulate),
        #[cfg(not(feature = "sim"))]
        Some(_) => Err(ServeError::Simulate("this usbpass was built without the \"sim\" feature".into())),
    }
}

/// Runs the server until a fatal error.
pub fn run(opts: &ServeOptions) -> Result<(), ServeError> {
    let discovery = discovery(opts)?;
    let lcfg = ListenerConfig { mode: opts.socket_mode, allow_uids: opts.allow_uids.clone(), ..Default::default() };
    let listener = match Listener::from_systemd(lcfg.clone()).map_err(ServeError::Listen)? {
        Some(l) => l,
        None => {
            if let Some(dir) = opts.listen.parent() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| ServeError::Folder(dir.to_path_buf(), e))?;
            }
            Listener::bind(&opts.listen, lcfg).map_err(ServeError::Listen)?
        }
    };
    let names = names::FriendlyNames::load();
    match &names.source {
        Some(s) => tracing::debug!("reader names from {s}"),
        None => tracing::debug!("no libccid Info.plist found: built-in reader names"),
    }
    let backend = UsbBackend::new(discovery, ServeConfig { names, ..Default::default() });
    backend.rescan();
    if opts.simulate.is_none() {
        hotplug::spawn(Arc::downgrade(&backend), PathBuf::from(hotplug::USB_DEV_ROOT), RESCAN_INTERVAL)
            .map_err(ServeError::Io)?;
    }
    let readers = backend.reader_names();
    let server = Server::new(backend, ServerConfig::default());
    tracing::info!(
        listen = %listener.path().as_deref().map_or("(inherited socket)".into(), |p| p.display().to_string()),
        activated = listener.is_activated(),
        readers = ?readers,
        "usbpass serve ready"
    );
    listener.spawn(server).map_err(ServeError::Io)?.join().map_err(ServeError::Io)
}

/// `--simulate LEVEL` (test-only, feature `sim`): one simulated reader with the project's
/// virtual card, so stock clients can be tested against `usbpass serve` without USB.
#[cfg(any(test, feature = "sim"))]
pub mod simulated {
    use super::discovery::{DeviceInfo, SimDiscovery};
    use super::*;
    use crate::ccid::descriptor::CcidDescriptor;
    use crate::ccid::sim::{profiles, SimReader};
    use pcsc_bridge_tests::card::{Card, ATR as CARD_ATR};

    /// The ATR QEMU's guest test gives its card: T=0 only, historical bytes "pcscbridge".
    pub const T0_ATR: [u8; 12] = [0x3B, 0x0A, b'p', b'c', b's', b'c', b'b', b'r', b'i', b'd', b'g', b'e'];

    /// Simulated levels: `qemu` (QEMU 7.2's usb-ccid with a T=0 card), `tpdu` (T=1 card),
    /// `short`, `extended`, `character` (T=1 card), `character-t0`, and the ICCD tokens
    /// `iccd-a` (T=0 card) and `iccd-b` (T=1 card).
    pub const LEVELS: &[&str] = &["qemu", "tpdu", "short", "extended", "character", "character-t0", "iccd-a", "iccd-b"];

    /// The identity of a simulated device (`n` makes the bus address unique).
    pub fn info(level: &str, n: u8, desc: CcidDescriptor) -> DeviceInfo {
        if level == "qemu" {
            return DeviceInfo {
                bus: 1,
                address: 2 + n,
                interface: 0,
                path: format!("1-{}", 1 + n),
                vendor_id: 0x08E6,
                product_id: 0x4433,
                bcd_device: 0,
                manufacturer: Some("QEMU".into()),
                product: Some("QEMU USB CCID".into()),
                serial: Some("PCSCBRIDGE01".into()),
                interface_name: Some("CCID Interface".into()),
                descriptor: desc,
            };
        }
        DeviceInfo {
            bus: 3,
            address: 2 + n,
            interface: 0,
            path: format!("3-{}", 1 + n),
            vendor_id: 0xF1D0,
            product_id: 0x0100 + u16::from(n),
            bcd_device: 0x0100,
            manufacturer: Some("pcsc-bridge".into()),
            product: Some(format!("Simulated {level} reader")),
            serial: None,
            interface_name: None,
            descriptor: desc,
        }
    }

    /// A simulated reader of `level` with the virtual card inserted.
    pub fn reader(level: &str) -> Result<SimReader, String> {
        let card = Box::new(Card::new());
        Ok(match level {
            "qemu" => SimReader::qemu(card, &T0_ATR),
            "tpdu" => SimReader::new(profiles::tpdu(), card, &CARD_ATR),
            "short" => SimReader::new(profiles::short_apdu(), card, &CARD_ATR),
            "extended" => SimReader::new(profiles::extended(3072), card, &CARD_ATR),
            "character" => SimReader::new(profiles::character(), card, &CARD_ATR),
            "character-t0" => SimReader::new(profiles::character(), card, &crate::ccid::sim::T0_ONLY_ATR),
            other => return Err(format!("unknown level {other:?} (one of {})", LEVELS.join(", "))),
        })
    }

    pub fn discovery(level: &str) -> Result<Box<dyn Discovery>, String> {
        let d = SimDiscovery::new();
        if let Some(version) = match level {
            "iccd-a" => Some(crate::ccid::iccd::Version::A),
            "iccd-b" => Some(crate::ccid::iccd::Version::B),
            _ => None,
        } {
            // An ICCD token behind the control-pipe adapter, as `open_usb` sets it up.
            use crate::ccid::iccd::{self, sim::SimIccd, IccdTransport};
            let card = Box::new(Card::new());
            let token = match version {
                iccd::Version::A => SimIccd::version_a(card),
                iccd::Version::B => SimIccd::version_b(card),
            };
            let desc = iccd::driver_descriptor(version, &token.desc);
            let token = std::sync::Arc::new(std::sync::Mutex::new(token));
            let transport = std::sync::Arc::new(std::sync::Mutex::new(IccdTransport::open(token, version)));
            d.plug_transport(info(level, 0, desc), transport, false);
            tracing::warn!("serving a SIMULATED {level} token (test-only --simulate)");
            return Ok(Box::new(d));
        }
        let r = reader(level)?;
        d.plug(info(level, 0, r.desc.clone()), r);
        tracing::warn!("serving a SIMULATED {level} reader (test-only --simulate)");
        Ok(Box::new(d))
    }
}
