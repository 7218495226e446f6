//! `UsbBackend` over simulated readers, driven through the real server core and our client
//! engine over a Unix socket (and, when pyscard is installed, through the system's
//! libpcsclite with a stock pyscard script).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use pcsc_bridge_tests::card::cmd::{echo, select_ok, SELECT};
use pcsc_bridge_tests::card::{self, Card};
use pcsc_proto::client::{ClientConfig, Context, ReaderStateQuery};
use pcsc_proto::consts::{
    attr, card_state as cs, ctl_code, disposition, protocol, reader_state as rs, scope, share, PNP_NOTIFICATION,
};
use pcsc_proto::server::{Listener, ListenerConfig, RunningListener, Server, ServerConfig};
use pcsc_proto::wire::Version;
use pcsc_proto::Rv;

use super::discovery::{SimDiscovery, SimHandle};
use super::names::FriendlyNames;
use super::simulated::{self, T0_ATR};
use super::{features, ServeConfig, UsbBackend};
use crate::ccid::message::msg_type;
use crate::ccid::quirks::{DriverOptions, Quirks};
use crate::ccid::sim::{profiles, Fault, PinEntry, SimReader};

const QEMU_NAME: &str = "Gemalto Gemplus USB SmartCard Reader 433-Swap [CCID Interface] (PCSCBRIDGE01) 00 00";

struct Rig {
    dir: PathBuf,
    sim: Arc<SimDiscovery>,
    backend: Arc<UsbBackend>,
    socket: PathBuf,
    _listener: RunningListener,
}

fn test_config() -> ServeConfig {
    ServeConfig {
        poll_interval: Duration::from_millis(50),
        interrupt_wait: Duration::from_millis(300),
        power_off_grace: Duration::from_secs(30),
        names: FriendlyNames::default(),
        ..Default::default()
    }
}

impl Rig {
    fn new() -> Rig {
        Self::with(test_config())
    }

    fn with(cfg: ServeConfig) -> Rig {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "usbpass-serve-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sim = SimDiscovery::new();
        let backend = UsbBackend::new(Box::new(sim.clone()), cfg);
        let server =
            Server::new(backend.clone(), ServerConfig { notify_hold: Duration::from_millis(20), ..Default::default() });
        let socket = dir.join("usbpass.comm");
        let listener = Listener::bind(&socket, ListenerConfig::default()).unwrap().spawn(server).unwrap();
        Rig { dir, sim, backend, socket, _listener: listener }
    }

    /// Plugs in a simulated reader of `level` (see `simulated::LEVELS`) and rescans.
    fn plug(&self, level: &str, n: u8) -> SimHandle {
        let r = simulated::reader(level).unwrap();
        self.plug_reader(level, n, r)
    }

    fn plug_reader(&self, level: &str, n: u8, r: SimReader) -> SimHandle {
        let h = self.sim.plug(simulated::info(level, n, r.desc.clone()), r);
        self.backend.rescan();
        h
    }

    fn ctx(&self, v: Version) -> Context {
        let cfg = ClientConfig { max_version: v, no_blocking: true, ..ClientConfig::with_socket(&self.socket) };
        Context::establish(&cfg, scope::USER).unwrap()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.backend.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sim(h: &SimHandle) -> MutexGuard<'_, SimReader> {
    h.lock().unwrap_or_else(|p| p.into_inner())
}

fn transmit(c: &Context, card: u32, proto: u32, apdu: &[u8]) -> Result<Vec<u8>, Rv> {
    let mut buf = vec![0u8; 70_000];
    let t = c.transmit(card, (proto, 16), apdu, None, &mut buf);
    t.rv.ok()?;
    Ok(buf[..t.len].to_vec())
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn states(c: &Context) -> Vec<pcsc_proto::wire::ReaderState> {
    c.reader_states().unwrap().into_iter().filter(|s| !s.name.is_empty()).collect()
}

#[test]
fn names_listing_and_every_version() {
    let rig = Rig::new();
    rig.plug("qemu", 0);
    rig.plug("tpdu", 1);
    let tpdu_name = "pcsc-bridge Simulated tpdu reader 01 00";
    for v in [Version::V4_6, Version::V4_5, Version::V4_4, Version::V4_3, Version::V4_2, Version::V4_0] {
        let c = rig.ctx(v);
        assert_eq!(c.version().unwrap(), v);
        let readers: Vec<String> =
            c.list_readers().unwrap().into_iter().map(|r| String::from_utf8(r).unwrap()).collect();
        assert_eq!(readers, [QEMU_NAME, tpdu_name], "{v}");
        let (card, p) = c.connect(QEMU_NAME.as_bytes(), share::SHARED, protocol::ANY).unwrap();
        assert_eq!(p, protocol::T0, "{v}");
        assert_eq!(c.status(card).unwrap().atr, T0_ATR);
        assert_eq!(transmit(&c, card, protocol::T0, &SELECT).unwrap(), select_ok(), "{v}");
        c.disconnect(card, disposition::LEAVE).unwrap();
    }
    // Published like pcscd: powered at insertion, no event counted for a card present at start.
    let c = rig.ctx(Version::V4_4);
    let st = states(&c);
    assert_eq!(st[0].state, cs::PRESENT | cs::POWERED | cs::NEGOTIABLE);
    assert_eq!(st[0].atr(), T0_ATR);
    assert_eq!(st[0].event_counter, 0);
    assert_eq!(st[1].atr(), card::ATR);
}

#[test]
fn transmit_at_every_exchange_level() {
    let rig = Rig::new();
    let levels = [("qemu", protocol::T0), ("tpdu", protocol::T1), ("short", protocol::T1), ("extended", protocol::T1)];
    for (n, (level, _)) in levels.iter().enumerate() {
        rig.plug(level, n as u8);
    }
    let c = rig.ctx(Version::V4_4);
    let names = c.list_readers().unwrap();
    assert_eq!(names.len(), 4);
    for ((level, proto), name) in levels.iter().zip(&names) {
        let (card, p) = c.connect(name, share::SHARED, protocol::ANY).unwrap();
        assert_eq!(p, *proto, "{level}");
        assert_eq!(transmit(&c, card, p, &SELECT).unwrap(), select_ok(), "{level}");
        // Short: 255 bytes out, 255 back; READ BINARY of 256 bytes.
        let (apdu, resp) = echo(255, false);
        assert_eq!(transmit(&c, card, p, &apdu).unwrap(), resp, "{level}");
        let rb = transmit(&c, card, p, &[0x00, 0xB0, 0x00, 0x00, 0x00]).unwrap();
        assert_eq!(rb.len(), 258, "{level}");
        assert_eq!(rb[..256], (0..256).map(card::file_byte).collect::<Vec<u8>>()[..], "{level}");
        // Extended APDUs: through T=1 chaining, extended-level chaining; refused by the
        // short-APDU reader (like libccid); QEMU's answers stop at 374 bytes (not tried).
        let (apdu, resp) = echo(1000, true);
        match *level {
            "tpdu" | "extended" => assert_eq!(transmit(&c, card, p, &apdu).unwrap(), resp, "{level}"),
            "short" => assert_eq!(transmit(&c, card, p, &apdu), Err(Rv::E_NOT_TRANSACTED)),
            _ => {}
        }
        // The wrong protocol in the PCI.
        let other = if p == protocol::T0 { protocol::T1 } else { protocol::T0 };
        assert_eq!(transmit(&c, card, other, &SELECT), Err(Rv::E_PROTO_MISMATCH), "{level}");
        c.disconnect(card, disposition::LEAVE).unwrap();
    }
    // A long extended exchange: 5000 bytes each way, chained both ways at 3072-byte messages.
    let (card, _) = c.connect(&names[3], share::SHARED, protocol::T1).unwrap();
    let (apdu, resp) = echo(5000, true);
    assert_eq!(transmit(&c, card, protocol::T1, &apdu).unwrap(), resp);
    // T=0-only card: T=1 alone is a protocol mismatch.
    assert_eq!(c.connect(&names[0], share::SHARED, protocol::T1).err(), Some(Rv::E_PROTO_MISMATCH));
}

#[test]
fn card_removal_and_insertion_events() {
    let rig = Rig::new();
    let h = rig.plug("qemu", 0);
    let c = rig.ctx(Version::V4_4);
    let (card, p) = c.connect(QEMU_NAME.as_bytes(), share::SHARED, protocol::ANY).unwrap();
    let mut q = [ReaderStateQuery::new(QEMU_NAME, rs::UNAWARE)];
    c.get_status_change(0, &mut q).unwrap();
    assert!(q[0].event_state & rs::PRESENT != 0 && q[0].event_state & rs::INUSE != 0, "{:#x}", q[0].event_state);
    q[0].current_state = q[0].event_state & !rs::CHANGED;
    let h2 = h.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        sim(&h2).remove_card();
    });
    c.get_status_change(10_000, &mut q).unwrap();
    t.join().unwrap();
    assert!(q[0].event_state & rs::EMPTY != 0, "{:#x}", q[0].event_state);
    assert_eq!(q[0].event_state >> 16, 1);
    assert_eq!(transmit(&c, card, p, &SELECT), Err(Rv::W_REMOVED_CARD));
    assert_eq!(c.connect(QEMU_NAME.as_bytes(), share::SHARED, protocol::ANY).err(), Some(Rv::E_NO_SMARTCARD));
    // Insertion: powered at once, counted, the old handle still sees the removal.
    q[0].current_state = q[0].event_state & !rs::CHANGED;
    let h2 = h.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        sim(&h2).insert_card(Box::new(Card::new()), &T0_ATR);
    });
    c.get_status_change(10_000, &mut q).unwrap();
    t.join().unwrap();
    assert!(q[0].event_state & rs::PRESENT != 0, "{:#x}", q[0].event_state);
    assert_eq!(q[0].event_state >> 16, 2);
    assert_eq!(&q[0].atr[..q[0].atr_len as usize], T0_ATR);
    assert_eq!(states(&c)[0].state, cs::PRESENT | cs::POWERED | cs::NEGOTIABLE);
    assert_eq!(transmit(&c, card, p, &SELECT), Err(Rv::W_REMOVED_CARD));
    assert_eq!(c.reconnect(card, share::SHARED, protocol::ANY, disposition::LEAVE).unwrap(), protocol::T0);
    assert_eq!(transmit(&c, card, p, &SELECT).unwrap(), select_ok());

    // A swap between two looks (the notifications say "changed"): removal + insertion.
    {
        let mut s = sim(&h);
        s.remove_card();
        s.insert_card(Box::new(Card::new()), &T0_ATR);
    }
    eventually("the swap to be counted", || states(&c)[0].event_counter == 4);
    assert_eq!(transmit(&c, card, p, &SELECT), Err(Rv::W_REMOVED_CARD));

    // The card pulled during a command: no card (the reader says so), then counted as removed.
    c.reconnect(card, share::SHARED, protocol::ANY, disposition::LEAVE).unwrap();
    sim(&h).fault(0, &[Fault::RemoveCard]);
    assert_eq!(transmit(&c, card, p, &SELECT), Err(Rv::E_NO_SMARTCARD));
    assert_eq!(states(&c)[0].state, cs::ABSENT);
    assert_eq!(states(&c)[0].event_counter, 5);
    assert_eq!(transmit(&c, card, p, &SELECT), Err(Rv::W_REMOVED_CARD));
}

#[test]
fn sharing_and_transactions() {
    let rig = Rig::new();
    rig.plug("tpdu", 0);
    let name = rig.backend.reader_names().remove(0);
    let r = name.as_bytes();
    let c = rig.ctx(Version::V4_4);
    let d = rig.ctx(Version::V4_6);
    let (x, p) = c.connect(r, share::EXCLUSIVE, protocol::ANY).unwrap();
    assert_eq!(p, protocol::T1);
    assert_eq!(states(&c)[0].sharing, -1);
    assert_eq!(d.connect(r, share::SHARED, protocol::ANY).err(), Some(Rv::E_SHARING_VIOLATION));
    // End without begin on an exclusive handle.
    assert_eq!(c.end_transaction(x, disposition::LEAVE), Err(Rv::E_NOT_TRANSACTED));
    c.reconnect(x, share::SHARED, protocol::ANY, disposition::LEAVE).unwrap();
    let (y, _) = d.connect(r, share::SHARED, protocol::ANY).unwrap();
    assert_eq!(states(&c)[0].sharing, 2);
    assert_eq!(
        c.reconnect(x, share::EXCLUSIVE, protocol::ANY, disposition::LEAVE).err(),
        Some(Rv::E_SHARING_VIOLATION)
    );
    // Nested transactions.
    c.begin_transaction(x).unwrap();
    c.begin_transaction(x).unwrap();
    assert_eq!(transmit(&d, y, p, &SELECT), Err(Rv::E_SHARING_VIOLATION));
    assert_eq!(d.status(y).err(), Some(Rv::E_SHARING_VIOLATION));
    c.end_transaction(x, disposition::LEAVE).unwrap();
    assert_eq!(transmit(&d, y, p, &SELECT), Err(Rv::E_SHARING_VIOLATION));
    assert_eq!(d.end_transaction(y, disposition::RESET), Err(Rv::E_SHARING_VIOLATION));
    c.end_transaction(x, disposition::LEAVE).unwrap();
    assert_eq!(transmit(&d, y, p, &SELECT).unwrap(), select_ok());
    assert_eq!(c.end_transaction(x, disposition::LEAVE), Err(Rv::E_NOT_TRANSACTED));
    // A reset at the end of a transaction: every handle sees it, the caller too (pcscd).
    c.begin_transaction(x).unwrap();
    c.end_transaction(x, disposition::RESET).unwrap();
    assert_eq!(transmit(&c, x, p, &SELECT), Err(Rv::W_RESET_CARD));
    assert_eq!(transmit(&d, y, p, &SELECT), Err(Rv::W_RESET_CARD));
    assert_eq!(d.status(y).err(), Some(Rv::W_RESET_CARD));
    assert_eq!(c.reconnect(x, share::SHARED, protocol::T1, disposition::LEAVE).unwrap(), protocol::T1);
    assert_eq!(transmit(&c, x, p, &SELECT).unwrap(), select_ok());
    assert_eq!(transmit(&d, y, p, &SELECT), Err(Rv::W_RESET_CARD));
    // Reconnect with a reset: the others see it, the caller does not.
    assert_eq!(d.reconnect(y, share::SHARED, protocol::ANY, disposition::RESET).unwrap(), protocol::T1);
    assert_eq!(transmit(&d, y, p, &SELECT).unwrap(), select_ok());
    assert_eq!(transmit(&c, x, p, &SELECT), Err(Rv::W_RESET_CARD));
    c.reconnect(x, share::SHARED, protocol::ANY, disposition::LEAVE).unwrap();

    // SCardConnect waits while another client holds a transaction (as pcscd).
    d.begin_transaction(y).unwrap();
    let socket = rig.socket.clone();
    let name2 = name.clone();
    let t = std::thread::spawn(move || {
        let cfg = ClientConfig { no_blocking: true, ..ClientConfig::with_socket(&socket) };
        let e = Context::establish(&cfg, scope::USER).unwrap();
        let start = Instant::now();
        let r = e.connect(name2.as_bytes(), share::SHARED, protocol::ANY).map(|_| ());
        (r, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(400));
    d.end_transaction(y, disposition::LEAVE).unwrap();
    let (res, took) = t.join().unwrap();
    assert_eq!(res, Ok(()));
    assert!(took >= Duration::from_millis(300), "{took:?}");

    // A client that goes away inside its transaction releases it, with a reset (pcscd).
    d.begin_transaction(y).unwrap();
    drop(d);
    let mut last = Ok(());
    eventually("the lock to go", || {
        last = c.begin_transaction(x);
        last != Err(Rv::E_SHARING_VIOLATION)
    });
    assert_eq!(last, Err(Rv::W_RESET_CARD));
    c.reconnect(x, share::SHARED, protocol::ANY, disposition::LEAVE).unwrap();
    c.begin_transaction(x).unwrap();
    c.end_transaction(x, disposition::LEAVE).unwrap();
    // Disconnect with UNPOWER: card present but unpowered, then powered again by a connect.
    c.disconnect(x, disposition::UNPOWER).unwrap();
    eventually("the other handles to go", || states(&c)[0].sharing == 0);
    assert_eq!(states(&c)[0].state, cs::PRESENT);
    let (x, _) = c.connect(r, share::SHARED, protocol::ANY).unwrap();
    assert_eq!(states(&c)[0].state, cs::PRESENT | cs::POWERED | cs::NEGOTIABLE);
    assert_eq!(transmit(&c, x, p, &SELECT).unwrap(), select_ok());
    // Direct connections need no card and count as handles.
    let (z, dp) = c.connect(r, share::DIRECT, 0).unwrap();
    assert_eq!(dp, protocol::T1);
    assert_eq!(states(&c)[0].sharing, 2);
    c.disconnect(z, disposition::LEAVE).unwrap();
}

#[test]
fn readers_come_and_go() {
    let rig = Rig::new();
    let q = rig.plug("qemu", 0);
    let c = rig.ctx(Version::V4_5);
    let (card, p) = c.connect(QEMU_NAME.as_bytes(), share::SHARED, protocol::ANY).unwrap();
    let before = c.reader_events().unwrap().unwrap();
    // A second reader: PnP wakes the waiter, the reader-events counter moves, the name gets 01.
    let mut pnp = [ReaderStateQuery::new(PNP_NOTIFICATION, 0)];
    c.get_status_change(0, &mut pnp).ok();
    pnp[0].current_state = pnp[0].event_state & !rs::CHANGED;
    let (sim2, backend) = (rig.sim.clone(), rig.backend.clone());
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let r = simulated::reader("qemu").unwrap();
        let h = sim2.plug(simulated::info("qemu", 1, r.desc.clone()), r);
        backend.rescan();
        h
    });
    c.get_status_change(10_000, &mut pnp).unwrap();
    let q2 = t.join().unwrap();
    assert_ne!(c.reader_events().unwrap().unwrap(), before);
    let names = c.list_readers().unwrap();
    assert_eq!(names[1], QEMU_NAME.replace(" 00 00", " 01 00").as_bytes());
    // Pulled out in the middle of an APDU: the reader is unavailable, then gone.
    sim(&q).fault(0, &[Fault::Unplug]);
    assert_eq!(transmit(&c, card, p, &SELECT), Err(Rv::E_READER_UNAVAILABLE));
    assert_eq!(c.list_readers().unwrap(), [QEMU_NAME.replace(" 00 00", " 01 00").into_bytes()]);
    // pcscd: the handle of a removed reader is unknown; disconnecting it is fine.
    assert_eq!(transmit(&c, card, p, &SELECT), Err(Rv::E_INVALID_VALUE));
    c.disconnect(card, disposition::LEAVE).unwrap();
    // A new reader takes the free number 00 again; unplugging between scans is noticed.
    rig.plug("tpdu", 2);
    assert_eq!(rig.backend.reader_names()[0], "pcsc-bridge Simulated tpdu reader 00 00");
    rig.sim.unplug(&q2);
    eventually("the reader to go", || rig.backend.reader_names().len() == 1);
}

#[test]
fn controls_and_attributes() {
    let rig = Rig::new();
    let h = rig.plug("qemu", 0);
    let c = rig.ctx(Version::V4_4);
    let (card, _) = c.connect(QEMU_NAME.as_bytes(), share::SHARED, protocol::ANY).unwrap();
    let control = |code: u32, data: &[u8]| {
        let mut buf = [0u8; 300];
        let r = c.control(card, code, data, &mut buf);
        r.rv.ok().map(|()| buf[..r.len].to_vec())
    };
    let features = control(pcsc_proto::consts::CM_IOCTL_GET_FEATURE_REQUEST, &[]).unwrap();
    assert_eq!(
        features,
        [0x06, 4, 0x42, 0x33, 0x00, 0x06, 0x0A, 4, 0x42, 0x33, 0x00, 0x0A, 0x12, 4, 0x42, 0x33, 0x00, 0x12]
    );
    assert_eq!(
        control(features::GET_TLV_PROPERTIES, &[]).unwrap(),
        features::tlv_properties(&sim(&h).desc, &Quirks::for_device(0x08E6, 0x4433, 0), None)
    );
    assert_eq!(control(features::IFD_PIN_PROPERTIES, &[]).unwrap(), [0, 0, 7, 0]);
    // QEMU claims a pinpad but answers Secure (and Escape) "failed".
    let mut verify = vec![30, 0, 0x82, 0x04, 0x00, 0x08, 0x04, 0x02, 0x01, 0x09, 0x04, 0x00, 0, 0, 0];
    let apdu = [0x00, 0x20, 0x00, 0x81, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
    verify.extend_from_slice(&(apdu.len() as u32).to_le_bytes());
    verify.extend_from_slice(&apdu);
    assert_eq!(control(features::VERIFY_PIN_DIRECT, &verify), Err(Rv::E_NOT_TRANSACTED));
    assert_eq!(sim(&h).log.commands.last().map(|m| m[0]), Some(msg_type::SECURE));
    assert_eq!(control(features::VERIFY_PIN_DIRECT, &verify[..10]), Err(Rv::E_UNSUPPORTED_FEATURE));
    assert_eq!(control(features::MODIFY_PIN_DIRECT, &verify), Err(Rv::E_UNSUPPORTED_FEATURE));
    assert_eq!(control(ctl_code(1), &[0x02]), Err(Rv::E_NOT_TRANSACTED));
    assert_eq!(control(ctl_code(1), &[0x6A]), Err(Rv::E_NOT_TRANSACTED));
    assert_eq!(control(ctl_code(3601), &[]), Err(Rv::E_UNSUPPORTED_FEATURE));

    let get = |id: u32| {
        let a = c.get_attrib(card, id, 264).unwrap();
        a.rv.ok().map(|()| a.data[..a.len].to_vec())
    };
    assert_eq!(get(attr::VENDOR_NAME).unwrap(), b"QEMU\0");
    assert_eq!(get(attr::VENDOR_IFD_VERSION).unwrap(), 0u32.to_ne_bytes());
    assert_eq!(get(attr::VENDOR_IFD_SERIAL_NO).unwrap(), b"PCSCBRIDGE01\0");
    assert_eq!(get(attr::CHANNEL_ID).unwrap(), 0x0020_0102u32.to_ne_bytes());
    assert_eq!(get(attr::MAXINPUT).unwrap(), 65_544u32.to_ne_bytes());
    assert_eq!(get(attr::ATR_STRING).unwrap(), T0_ATR);
    assert_eq!(get(attr::ICC_PRESENCE).unwrap(), [2]);
    assert_eq!(get(attr::ICC_INTERFACE_STATUS).unwrap(), [1]);
    let mut name = QEMU_NAME.as_bytes().to_vec();
    name.push(0);
    assert_eq!(get(attr::DEVICE_FRIENDLY_NAME_A).unwrap(), name);
    assert_eq!(get(attr::DEVICE_SYSTEM_NAME_A).unwrap(), name);
    // libccid does not answer these.
    assert_eq!(get(attr::CURRENT_PROTOCOL_TYPE), Err(Rv::E_UNSUPPORTED_FEATURE));
    assert_eq!(get(attr::DEVICE_FRIENDLY_NAME_W), Err(Rv::E_UNSUPPORTED_FEATURE));
    let small = c.get_attrib(card, attr::ATR_STRING, 4).unwrap();
    assert_eq!((small.rv, small.len), (Rv::E_INSUFFICIENT_BUFFER, T0_ATR.len()));
    assert_eq!(c.set_attrib(card, attr::VENDOR_IFD_SERIAL_NO, b"x"), Err(Rv::E_NOT_TRANSACTED));

    // A direct connection to an empty reader: control works, no card needed.
    sim(&h).remove_card();
    eventually("the removal", || states(&c)[0].state == cs::ABSENT);
    let (d, p) = c.connect(QEMU_NAME.as_bytes(), share::DIRECT, 0).unwrap();
    assert_eq!(p, 0);
    let mut buf = [0u8; 64];
    let r = c.control(d, pcsc_proto::consts::CM_IOCTL_GET_FEATURE_REQUEST, &[], &mut buf);
    assert_eq!((r.rv, r.len), (Rv::SUCCESS, 18));
    assert_eq!(c.get_attrib(d, attr::ICC_PRESENCE, 264).unwrap().data, [0]);
}

/// PC/SC part 10 `PIN_VERIFY_STRUCTURE` for VERIFY `00 20 00 81 06` + a 6-byte ASCII block.
fn pin_verify_structure() -> Vec<u8> {
    let apdu = [0x00, 0x20, 0x00, 0x81, 0x06, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
    let mut v = vec![30, 0, 0x82, 0x06, 0x00, 0x08, 0x04, 0x02, 0x01, 0x09, 0x04, 0x00, 0, 0, 0];
    v.extend_from_slice(&(apdu.len() as u32).to_le_bytes());
    v.extend_from_slice(&apdu);
    v
}

/// `PIN_MODIFY_STRUCTURE` for CHANGE REFERENCE DATA `00 24 00 81 0C` (current PIN at 0, new at
/// 6, confirmation, three messages: bTeoPrologue after bMsgIndex3).
fn pin_modify_structure() -> Vec<u8> {
    let mut apdu = vec![0x00, 0x24, 0x00, 0x81, 0x0C];
    apdu.extend_from_slice(&[0xFF; 12]);
    let mut v =
        vec![30, 0, 0x82, 0x06, 0x00, 0x00, 0x06, 0x08, 0x04, 0x03, 0x02, 0x03, 0x09, 0x04, 0x00, 0x01, 0x02, 0, 0, 0];
    v.extend_from_slice(&(apdu.len() as u32).to_le_bytes());
    v.extend_from_slice(&apdu);
    v
}

#[test]
fn pin_entry_on_a_tpdu_t1_pinpad() {
    let rig = Rig::new();
    let h = rig.plug_reader("tpdu", 0, SimReader::new(profiles::tpdu_pinpad(), Box::new(Card::new()), &card::ATR));
    let c = rig.ctx(Version::V4_4);
    let name = c.list_readers().unwrap()[0].clone();
    let (card, p) = c.connect(&name, share::SHARED, protocol::ANY).unwrap();
    assert_eq!(p, protocol::T1);
    let control = |code: u32, data: &[u8]| {
        let mut buf = [0u8; 300];
        let r = c.control(card, code, data, &mut buf);
        r.rv.ok().map(|()| buf[..r.len].to_vec())
    };
    let features = control(pcsc_proto::consts::CM_IOCTL_GET_FEATURE_REQUEST, &[]).unwrap();
    assert_eq!(features[..12], [0x06, 4, 0x42, 0x33, 0x00, 0x06, 0x07, 4, 0x42, 0x33, 0x00, 0x07]);
    let typed = |pin: &[u8], new: &[u8]| sim(&h).pinpad = PinEntry::Types { pin: pin.to_vec(), new: new.to_vec() };
    assert_eq!(transmit(&c, card, p, &SELECT).unwrap(), select_ok());
    typed(b"123456", b"");
    assert_eq!(control(features::VERIFY_PIN_DIRECT, &pin_verify_structure()).unwrap(), [0x90, 0x00]);
    // Transmits after the PIN block go on in step with the card.
    let (apdu, resp) = echo(255, false);
    assert_eq!(transmit(&c, card, p, &apdu).unwrap(), resp);
    typed(b"000000", b"");
    assert_eq!(control(features::VERIFY_PIN_DIRECT, &pin_verify_structure()).unwrap(), [0x63, 0xC2]);
    typed(b"123456", b"654321");
    assert_eq!(control(features::MODIFY_PIN_DIRECT, &pin_modify_structure()).unwrap(), [0x90, 0x00]);
    assert_eq!(transmit(&c, card, p, &SELECT).unwrap(), select_ok());
    // 8 digits do not fit the 6-byte PIN block: the reader blames the field, nothing reaches
    // the card, and the sequence numbers stay as they were.
    typed(b"87654321", b"");
    assert_eq!(control(features::VERIFY_PIN_DIRECT, &pin_verify_structure()), Err(Rv::E_NOT_TRANSACTED));
    let verify_new = [0x00, 0x20, 0x00, 0x81, 0x06, b'6', b'5', b'4', b'3', b'2', b'1'];
    assert_eq!(transmit(&c, card, p, &verify_new).unwrap(), [0x90, 0x00]);
    // Nobody types: `64 00`, and the next transmit still works.
    sim(&h).pinpad = PinEntry::Timeout;
    assert_eq!(control(features::VERIFY_PIN_DIRECT, &pin_verify_structure()).unwrap(), [0x64, 0x00]);
    assert_eq!(transmit(&c, card, p, &SELECT).unwrap(), select_ok());
    // The card asks for more time while checking the PIN.
    sim(&h).fault(0, &[Fault::CardWtx(3)]);
    typed(b"654321", b"");
    assert_eq!(control(features::VERIFY_PIN_DIRECT, &pin_verify_structure()).unwrap(), [0x90, 0x00]);
    assert_eq!(sim(&h).log.bwi.last(), Some(&3));
    assert_eq!(transmit(&c, card, p, &SELECT).unwrap(), select_ok());
    // Each PIN APDU that reached the card went in one reader-built block.
    assert_eq!(sim(&h).log.pin_blocks.len(), 4);
    c.disconnect(card, disposition::LEAVE).unwrap();
}

#[test]
fn idle_card_is_powered_down_and_up_again() {
    let rig = Rig::with(ServeConfig { power_off_grace: Duration::from_millis(300), ..test_config() });
    let h = rig.plug("tpdu", 0);
    let name = rig.backend.reader_names().remove(0);
    let power_offs = |h: &SimHandle| sim(h).log.commands.iter().filter(|m| m[0] == msg_type::ICC_POWER_OFF).count();
    let power_ons = |h: &SimHandle| sim(h).log.commands.iter().filter(|m| m[0] == msg_type::ICC_POWER_ON).count();
    eventually("the idle power-down", || power_offs(&h) == 1);
    let c = rig.ctx(Version::V4_4);
    // The published state does not change (pcscd).
    assert_eq!(states(&c)[0].state, cs::PRESENT | cs::POWERED | cs::NEGOTIABLE);
    let ons = power_ons(&h);
    let (card, p) = c.connect(name.as_bytes(), share::SHARED, protocol::ANY).unwrap();
    assert_eq!(power_ons(&h), ons + 1);
    assert_eq!(transmit(&c, card, p, &SELECT).unwrap(), select_ok());
    // Not while in use.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(power_offs(&h), 1);
    assert_eq!(transmit(&c, card, p, &SELECT).unwrap(), select_ok());
    c.disconnect(card, disposition::LEAVE).unwrap();
    eventually("the second power-down", || power_offs(&h) == 2);
}

#[test]
fn reader_without_interrupt_endpoint_is_polled() {
    let rig = Rig::new();
    let mut r = simulated::reader("extended").unwrap();
    r.quirks.has_interrupt = false;
    let h = rig.plug_reader("extended", 0, r);
    let c = rig.ctx(Version::V4_4);
    sim(&h).remove_card();
    eventually("the removal", || states(&c)[0].state == cs::ABSENT);
    sim(&h).insert_card(Box::new(Card::new()), &card::ATR);
    eventually("the insertion", || states(&c)[0].state & cs::POWERED != 0);
    assert_eq!(states(&c)[0].event_counter, 2);
}

/// pyscard (through the system's libpcsclite) against the server, when installed.
#[test]
fn stock_pyscard_client() {
    let python = "/usr/bin/python3";
    let has_pyscard =
        std::process::Command::new(python).args(["-c", "import smartcard"]).output().is_ok_and(|o| o.status.success());
    if !has_pyscard {
        eprintln!("stock_pyscard_client: skipped (no pyscard for {python})");
        return;
    }
    let rig = Rig::new();
    let h = rig.plug("qemu", 0);
    const SCRIPT: &str = r#"
import sys
from smartcard.scard import *
hresult, ctx = SCardEstablishContext(SCARD_SCOPE_USER)
assert hresult == SCARD_S_SUCCESS, SCardGetErrorMessage(hresult)
hresult, readers = SCardListReaders(ctx, [])
assert hresult == SCARD_S_SUCCESS, hresult
print("readers", readers)
assert readers == [sys.argv[1]], readers
hresult, card, proto = SCardConnect(ctx, readers[0], SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1)
assert hresult == SCARD_S_SUCCESS, hresult
assert proto == SCARD_PROTOCOL_T0, proto
hresult, name, state, proto, atr = SCardStatus(card)
assert hresult == SCARD_S_SUCCESS and name == readers[0], (hresult, name)
print("atr", bytes(atr).hex())
hresult, resp = SCardTransmit(card, SCARD_PCI_T0, [0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01])
assert hresult == SCARD_S_SUCCESS, hresult
print("select", bytes(resp).hex())
hresult, attrib = SCardGetAttrib(card, SCARD_ATTR_VENDOR_NAME)
assert hresult == SCARD_S_SUCCESS, hresult
print("vendor", bytes(attrib))
hresult, feats = SCardControl(card, SCARD_CTL_CODE(3400), [])
assert hresult == SCARD_S_SUCCESS, hresult
print("features", bytes(feats).hex())
hresult = SCardBeginTransaction(card)
assert hresult == SCARD_S_SUCCESS, hresult
hresult = SCardEndTransaction(card, SCARD_LEAVE_CARD)
assert hresult == SCARD_S_SUCCESS, hresult
# Wait for the card to go (the test removes it when it reads "waiting").
states = [(readers[0], SCARD_STATE_UNAWARE)]
hresult, states = SCardGetStatusChange(ctx, 0, states)
states = [(r, s & ~SCARD_STATE_CHANGED) for (r, s, a) in states]
print("waiting", flush=True)
hresult, states = SCardGetStatusChange(ctx, 10000, states)
assert hresult == SCARD_S_SUCCESS, hresult
assert states[0][1] & SCARD_STATE_EMPTY, hex(states[0][1])
hresult, resp = SCardTransmit(card, SCARD_PCI_T0, [0x00, 0xA4, 0x04, 0x00])
print("after removal", hex(hresult & 0xFFFFFFFF))
assert hresult == SCARD_W_REMOVED_CARD, hex(hresult)
SCardDisconnect(card, SCARD_LEAVE_CARD)
SCardReleaseContext(ctx)
print("ok")
"#;
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(python)
        .args(["-c", SCRIPT, QEMU_NAME])
        .env("PCSCLITE_CSOCK_NAME", &rig.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for line in out.lines() {
        let line = line.unwrap();
        if line == "waiting" {
            std::thread::sleep(Duration::from_millis(200));
            sim(&h).remove_card();
        }
        lines.push(line);
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "pyscard failed: {lines:?}\n{err}");
    assert!(
        lines.contains(&format!("atr {}", T0_ATR.iter().map(|b| format!("{b:02x}")).collect::<String>())),
        "{lines:?}"
    );
    assert!(lines.contains(&"select 6f0e8407a0000005272101a5038801019000".to_string()), "{lines:?}");
    assert!(lines.contains(&"features 0604423300060a044233000a120442330012".to_string()), "{lines:?}");
    assert_eq!(lines.last().map(String::as_str), Some("ok"));
}

/// Two simulated one-slot readers behind one two-slot device: commands go to the slot their
/// bSlot names, replies come back with it; notifications are merged into one bitmap.
struct TwoSlots {
    slots: Vec<SimHandle>,
    last: usize,
}

impl crate::ccid::transport::Transport for TwoSlots {
    fn bulk_out(&mut self, data: &[u8], timeout: Duration) -> Result<(), crate::ccid::transport::TransportError> {
        let slot = data.get(5).copied().unwrap_or(0) as usize;
        self.last = slot.min(self.slots.len() - 1);
        let mut d = data.to_vec();
        if d.len() > 5 {
            d[5] = 0;
        }
        sim(&self.slots[self.last]).bulk_out(&d, timeout)
    }
    fn bulk_in(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, crate::ccid::transport::TransportError> {
        let n = sim(&self.slots[self.last]).bulk_in(buf, timeout)?;
        if n > 5 {
            buf[5] = self.last as u8;
        }
        Ok(n)
    }
    fn interrupt_in(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, crate::ccid::transport::TransportError> {
        let mut bitmap = 0u8;
        for (i, s) in self.slots.iter().enumerate() {
            let mut b = [0u8; 8];
            if let Ok(n) = sim(s).interrupt_in(&mut b, timeout) {
                if n >= 2 && b[0] == 0x50 {
                    bitmap |= (b[1] & 3) << (2 * i);
                }
            }
        }
        if bitmap == 0 {
            return Err(crate::ccid::transport::TransportError::Timeout);
        }
        buf[0] = 0x50;
        buf[1] = bitmap;
        Ok(2)
    }
}

#[test]
fn multi_slot_reader_shares_one_device() {
    let rig = Rig::new();
    let a = Arc::new(std::sync::Mutex::new(simulated::reader("tpdu").unwrap()));
    let b = Arc::new(std::sync::Mutex::new(simulated::reader("tpdu").unwrap()));
    let mut desc = crate::ccid::sim::profiles::tpdu();
    desc.max_slot_index = 1;
    let t: super::discovery::SimTransport =
        Arc::new(std::sync::Mutex::new(TwoSlots { slots: vec![a.clone(), b.clone()], last: 0 }));
    rig.sim.plug_transport(simulated::info("tpdu", 0, desc), t, true);
    rig.backend.rescan();
    let names = rig.backend.reader_names();
    assert_eq!(names, ["pcsc-bridge Simulated tpdu reader 00 00", "pcsc-bridge Simulated tpdu reader 00 01"]);
    let c = rig.ctx(Version::V4_4);
    let (x, p) = c.connect(names[0].as_bytes(), share::SHARED, protocol::ANY).unwrap();
    let (y, q) = c.connect(names[1].as_bytes(), share::EXCLUSIVE, protocol::ANY).unwrap();
    assert_eq!((p, q), (protocol::T1, protocol::T1));
    let (e1, r1) = echo(20, false);
    let (e2, r2) = echo(300, true);
    for _ in 0..4 {
        assert_eq!(transmit(&c, x, p, &e1).unwrap(), r1);
        assert_eq!(transmit(&c, y, q, &e2).unwrap(), r2);
    }
    // One bSeq counter for the device: no number used twice by the two slots (fewer than 256
    // commands so far), and each slot only got its own commands.
    let seqs = |h: &SimHandle| sim(h).log.commands.iter().map(|m| m[6]).collect::<Vec<u8>>();
    let (sa, sb) = (seqs(&a), seqs(&b));
    assert!(sa.len() + sb.len() < 256);
    let mut all: Vec<u8> = sa.iter().chain(&sb).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), sa.len() + sb.len());
    assert_eq!(sim(&a).log.apdus.iter().filter(|x| x[1] == 0x01).count(), 4);
    assert_eq!(sim(&b).log.apdus.iter().filter(|x| x[1] == 0x01).count(), 4);
    // A card pulled from slot 1 only.
    sim(&b).remove_card();
    eventually("slot 1 empty", || states(&c)[1].state == cs::ABSENT);
    assert_eq!(states(&c)[0].state, cs::PRESENT | cs::POWERED | cs::NEGOTIABLE);
    assert_eq!(transmit(&c, x, p, &e1).unwrap(), r1);
    assert_eq!(transmit(&c, y, q, &e2), Err(Rv::W_REMOVED_CARD));
}

#[test]
fn card_pulled_during_a_reset() {
    let rig = Rig::new();
    let h = rig.plug("tpdu", 0);
    let name = rig.backend.reader_names().remove(0);
    let c = rig.ctx(Version::V4_4);
    let (x, _) = c.connect(name.as_bytes(), share::SHARED, protocol::ANY).unwrap();
    sim(&h).fault(0, &[Fault::RemoveCard]);
    assert_eq!(c.reconnect(x, share::SHARED, protocol::ANY, disposition::RESET).err(), Some(Rv::E_NO_SMARTCARD));
    // Counted as a removal at once (not left to the next poll), like pcscd's event thread.
    let st = states(&c);
    assert_eq!((st[0].state, st[0].event_counter), (cs::ABSENT, 1));
    assert_eq!(c.status(x).err(), Some(Rv::W_REMOVED_CARD));
    c.disconnect(x, disposition::RESET).unwrap();
    assert_eq!(states(&c)[0].sharing, 0);
}

#[test]
fn reader_held_by_another_program_is_left_alone() {
    let rig = Rig::new();
    let r = simulated::reader("qemu").unwrap();
    let h = rig.sim.plug(simulated::info("qemu", 0, r.desc.clone()), r);
    rig.sim.set_busy(&h, true);
    rig.backend.rescan();
    rig.backend.rescan();
    assert!(rig.backend.reader_names().is_empty());
    // Nothing was sent to it.
    assert!(sim(&h).log.commands.is_empty());
    // Released (the host's pcscd stopped): the next rescan takes it.
    rig.sim.set_busy(&h, false);
    rig.backend.rescan();
    assert_eq!(rig.backend.reader_names(), [QEMU_NAME]);
}

#[test]
fn iccd_tokens_version_a_and_b() {
    use crate::ccid::iccd::sim::SimIccd;
    use crate::ccid::iccd::{self, request, IccdTransport, Version as Iccd};
    use crate::ccid::sim::{T0_ONLY_ATR, T1_ONLY_ATR};
    use std::sync::Mutex;
    let rig = Rig::new();
    let mut tokens = Vec::new();
    for (n, version) in [(0u8, Iccd::A), (1, Iccd::B)] {
        let token = match version {
            Iccd::A => SimIccd::version_a(Box::new(Card::new())),
            Iccd::B => SimIccd::version_b(Box::new(Card::new())),
        };
        let desc = iccd::driver_descriptor(version, &token.desc);
        let token = Arc::new(Mutex::new(token));
        let level = if version == Iccd::A { "iccd-a" } else { "iccd-b" };
        let transport = Arc::new(Mutex::new(IccdTransport::open(token.clone(), version)));
        rig.sim.plug_transport(simulated::info(level, n, desc), transport, false);
        tokens.push(token);
    }
    rig.backend.rescan();
    let c = rig.ctx(Version::V4_4);
    let names: Vec<String> = c.list_readers().unwrap().into_iter().map(|r| String::from_utf8(r).unwrap()).collect();
    assert_eq!(names, ["pcsc-bridge Simulated iccd-a reader 00 00", "pcsc-bridge Simulated iccd-b reader 01 00"]);
    // The card is there and powered from the start, like any card present at start.
    let st = states(&c);
    assert_eq!((st[0].state, st[0].atr()), (cs::PRESENT | cs::POWERED | cs::NEGOTIABLE, &T0_ONLY_ATR[..]));
    assert_eq!((st[1].state, st[1].atr()), (cs::PRESENT | cs::POWERED | cs::NEGOTIABLE, &T1_ONLY_ATR[..]));

    // Version A: a T=0 token; the client does GET RESPONSE itself.
    let (a, p) = c.connect(names[0].as_bytes(), share::SHARED, protocol::ANY).unwrap();
    assert_eq!(p, protocol::T0);
    assert_eq!(transmit(&c, a, p, &SELECT).unwrap(), [0x61, 0x10]);
    assert_eq!(transmit(&c, a, p, &[0x00, 0xC0, 0x00, 0x00, 0x10]).unwrap(), select_ok());
    let rb = transmit(&c, a, p, &[0x00, 0xB0, 0x00, 0x00, 0x00]).unwrap();
    assert_eq!((rb.len(), &rb[256..]), (258, &[0x90, 0x00][..]));
    c.disconnect(a, disposition::LEAVE).unwrap();

    // Version B: T=1, extended APDUs chained both ways over the control pipe.
    let (b, q) = c.connect(names[1].as_bytes(), share::SHARED, protocol::ANY).unwrap();
    assert_eq!(q, protocol::T1);
    assert_eq!(transmit(&c, b, q, &SELECT).unwrap(), select_ok());
    let (apdu, resp) = echo(5000, true);
    assert_eq!(transmit(&c, b, q, &apdu).unwrap(), resp);
    c.disconnect(b, disposition::RESET).unwrap();

    // No interrupt endpoint: presence is polled with the tokens' status requests.
    let polls = |t: &Arc<Mutex<SimIccd>>, code: u8| {
        t.lock().unwrap_or_else(|p| p.into_inner()).log.requests.iter().filter(|r| r.1 == code).count()
    };
    let (a0, b0) = (polls(&tokens[0], request::GET_ICC_STATUS), polls(&tokens[1], request::SLOT_STATUS));
    eventually("status polls", || {
        polls(&tokens[0], request::GET_ICC_STATUS) > a0 && polls(&tokens[1], request::SLOT_STATUS) > b0
    });
    let st = states(&c);
    assert!(st.iter().all(|r| r.state & cs::PRESENT != 0));
}

// ---------------------------------------------------------------------------------------------
// Per-reader special cases (ccid/quirks.rs) as clients see them.

/// Plugs `r` in as the device `vid:pid` with firmware `bcd` (so its quirks apply) and rescans.
fn plug_as(rig: &Rig, n: u8, (vid, pid, bcd): (u16, u16, u16), r: SimReader) -> SimHandle {
    let info = super::discovery::DeviceInfo {
        vendor_id: vid,
        product_id: pid,
        bcd_device: bcd,
        ..simulated::info("tpdu", n, r.desc.clone())
    };
    let h = rig.sim.plug(info, r);
    rig.backend.rescan();
    h
}

/// `SCardControl` on a direct connection to `name`.
fn control_on(c: &Context, name: &str, code: u32, data: &[u8]) -> Result<Vec<u8>, Rv> {
    let (h, _) = c.connect(name.as_bytes(), share::DIRECT, 0).unwrap();
    let mut buf = [0u8; 300];
    let r = c.control(h, code, data, &mut buf);
    c.disconnect(h, disposition::LEAVE).unwrap();
    r.rv.ok().map(|()| buf[..r.len].to_vec())
}

fn with_pinpad(desc: crate::ccid::descriptor::CcidDescriptor) -> crate::ccid::descriptor::CcidDescriptor {
    crate::ccid::descriptor::CcidDescriptor { pin_support: crate::ccid::descriptor::PinSupport(3), ..desc }
}

#[test]
fn omnikey_3x21_fake_pinpad_and_forced_extended_level() {
    const TLV_ONLY: [u8; 6] = [0x12, 4, 0x42, 0x33, 0x00, 0x12];
    let rig = Rig::new();
    // The same short-APDU reader claiming a pinpad, as an unknown device and as an OMNIKEY 3x21.
    let reader = || SimReader::new(with_pinpad(profiles::short_apdu()), Box::new(Card::new()), &card::ATR);
    plug_as(&rig, 0, (0xF1D0, 0x0100, 0x0100), reader());
    plug_as(&rig, 1, (0x076B, 0x3031, 0x0101), reader());
    let names = rig.backend.reader_names();
    let c = rig.ctx(Version::V4_4);
    let features = control_on(&c, &names[0], pcsc_proto::consts::CM_IOCTL_GET_FEATURE_REQUEST, &[]).unwrap();
    assert_eq!(features[..12], [0x06, 4, 0x42, 0x33, 0x00, 0x06, 0x07, 4, 0x42, 0x33, 0x00, 0x07]);
    // The OMNIKEY lists no PIN features (libccid clears bPINSupport) and refuses them.
    assert_eq!(control_on(&c, &names[1], pcsc_proto::consts::CM_IOCTL_GET_FEATURE_REQUEST, &[]).unwrap(), TLV_ONLY);
    let verify = [0u8; 30];
    assert_eq!(control_on(&c, &names[1], features::VERIFY_PIN_DIRECT, &verify), Err(Rv::E_UNSUPPORTED_FEATURE));
    // Its level is extended APDU: dwMaxAPDUDataSize 65 536 instead of 0.
    let tlv = |name: &str| control_on(&c, name, features::GET_TLV_PROPERTIES, &[]).unwrap();
    assert!(tlv(&names[0]).ends_with(&[0x0A, 4, 0, 0, 0, 0]));
    assert!(tlv(&names[1]).ends_with(&[0x0A, 4, 0, 0, 1, 0]));
    let (card, p) = c.connect(names[1].as_bytes(), share::SHARED, protocol::ANY).unwrap();
    assert_eq!(transmit(&c, card, p, &SELECT).unwrap(), select_ok());
}

#[test]
fn reader_with_refused_firmware_is_not_opened() {
    let rig = Rig::new();
    let reader = || simulated::reader("tpdu").unwrap();
    // SCM SCR331 firmware 5.15: libccid refuses it (5.16 and later work).
    let old = plug_as(&rig, 0, (0x04E6, 0xE001, 0x0515), reader());
    assert!(rig.backend.reader_names().is_empty());
    // Refused before any command.
    assert!(sim(&old).log.commands.is_empty());
    plug_as(&rig, 1, (0x04E6, 0xE001, 0x0516), reader());
    assert_eq!(rig.backend.reader_names().len(), 1);
    // With driver option 0x04 the old firmware is used too.
    let accept = DriverOptions(DriverOptions::ACCEPT_BOGUS_FIRMWARE);
    let rig = Rig::with(ServeConfig { driver_options: accept, ..test_config() });
    plug_as(&rig, 0, (0x04E6, 0xE001, 0x0515), reader());
    assert_eq!(rig.backend.reader_names().len(), 1);
}

#[test]
fn gemalto_firmware_features_shape_the_pin_properties() {
    let rig = Rig::new();
    let mut features = [0u8; 21];
    features[3] = 0x02; // bEntryValidationCondition: validation key only
    features[8] = 0x04; // bNumberMessage bug fixed
    features[13] = 4; // PIN sizes
    features[14] = 12;
    let mut r = SimReader::new(with_pinpad(profiles::short_apdu()), Box::new(Card::new()), &card::ATR);
    r.quirks.escape_answers = vec![(vec![0x6A], features.to_vec()), (vec![0x02], b"GemPC V2.00".to_vec())];
    let h = plug_as(&rig, 0, (0x08E6, 0x34C3, 0x0200), r);
    let name = rig.backend.reader_names().remove(0);
    // Escape 6A was sent at open, after the first GetSlotStatus.
    let types: Vec<u8> = sim(&h).log.commands.iter().map(|m| m[0]).collect();
    assert_eq!(types[..3], [msg_type::GET_SLOT_STATUS, msg_type::ESCAPE, msg_type::ICC_POWER_ON]);
    assert_eq!(sim(&h).log.commands[1][10..], [0x6A]);
    let c = rig.ctx(Version::V4_4);
    let mut tlv = vec![0x01, 2, 0, 0, 0x03, 1, 0, 0x08, 11];
    tlv.extend_from_slice(b"GemPC V2.00");
    tlv.extend_from_slice(&[0x06, 1, 4, 0x07, 1, 12, 0x02, 1, 2, 0x09, 1, 0, 0x0B, 2, 0xE6, 0x08, 0x0C, 2, 0xC3, 0x34]);
    tlv.extend_from_slice(&[0x0A, 4, 0, 0, 0, 0]);
    assert_eq!(control_on(&c, &name, features::GET_TLV_PROPERTIES, &[]).unwrap(), tlv);
    assert_eq!(control_on(&c, &name, features::IFD_PIN_PROPERTIES, &[]).unwrap(), [0, 0, 2, 0]);
    assert_eq!(control_on(&c, &name, ctl_code(1), &[0x02]).unwrap(), b"GemPC V2.00");
    assert_eq!(control_on(&c, &name, ctl_code(1), &[0x6A]), Err(Rv::E_NOT_TRANSACTED));
    // A verification asking for validation conditions 1|2|4 goes out with the supported one.
    let (card, _) = c.connect(name.as_bytes(), share::SHARED, protocol::ANY).unwrap();
    let mut verify = pin_verify_structure();
    verify[7] = 0x07;
    let mut buf = [0u8; 64];
    c.control(card, features::VERIFY_PIN_DIRECT, &verify, &mut buf);
    let secure = sim(&h).log.commands.iter().rev().find(|m| m[0] == msg_type::SECURE).cloned().unwrap();
    assert_eq!((secure[10], secure[10 + 7]), (0x00, 0x02));
}

#[test]
fn qemu_reader_gets_the_gemalto_escape_and_nothing_changes() {
    let rig = Rig::new();
    let h = rig.plug("qemu", 0);
    // libccid sends Escape 6A to every Gemalto-VID reader; QEMU refuses it.
    let log: Vec<Vec<u8>> = sim(&h).log.commands.clone();
    assert_eq!(log[0][0], msg_type::GET_SLOT_STATUS);
    assert_eq!((log[1][0], &log[1][10..]), (msg_type::ESCAPE, &[0x6A][..]));
    assert_eq!(log[2][0], msg_type::ICC_POWER_ON);
    let c = rig.ctx(Version::V4_4);
    assert_eq!(
        control_on(&c, QEMU_NAME, pcsc_proto::consts::CM_IOCTL_GET_FEATURE_REQUEST, &[]).unwrap(),
        [0x06, 4, 0x42, 0x33, 0x00, 0x06, 0x0A, 4, 0x42, 0x33, 0x00, 0x0A, 0x12, 4, 0x42, 0x33, 0x00, 0x12]
    );
    // ccid.md §7.4's example, byte for byte (the sFirmwareID Escape fails on QEMU).
    assert_eq!(
        control_on(&c, QEMU_NAME, features::GET_TLV_PROPERTIES, &[]).unwrap(),
        [0x01, 2, 0, 0, 0x03, 1, 0, 0x09, 1, 0, 0x0B, 2, 0xE6, 0x08, 0x0C, 2, 0x33, 0x44, 0x0A, 4, 0, 0, 1, 0]
    );
    assert_eq!(control_on(&c, QEMU_NAME, features::IFD_PIN_PROPERTIES, &[]).unwrap(), [0, 0, 7, 0]);
    let (card, p) = c.connect(QEMU_NAME.as_bytes(), share::SHARED, protocol::ANY).unwrap();
    assert_eq!(transmit(&c, card, p, &SELECT).unwrap(), select_ok());
}

#[test]
fn kobil_readers() {
    let rig = Rig::new();
    // IDToken: the driver answers the token's identification APDUs.
    let idtoken = plug_as(&rig, 0, (0x0D46, 0x301D, 0x0110), simulated::reader("tpdu").unwrap());
    // TriBank: Secoder MCT interface, short APDUs whatever the descriptor says.
    let tribank = SimReader::new(profiles::extended(3072), Box::new(Card::new()), &card::ATR);
    plug_as(&rig, 1, (0x0D46, 0x3010, 0x0100), tribank);
    let names = rig.backend.reader_names();
    let c = rig.ctx(Version::V4_4);
    let (card, p) = c.connect(names[0].as_bytes(), share::SHARED, protocol::ANY).unwrap();
    assert_eq!(transmit(&c, card, p, &[0xFF, 0x9A, 0x01, 0x01, 0x00]).unwrap(), b"KOBIL systems\x90\x00");
    assert_eq!(transmit(&c, card, p, &[0xFF, 0x9A, 0x01, 0x06, 0x00]).unwrap(), b"1.10\x90\x00");
    assert!(sim(&idtoken).log.apdus.iter().all(|a| a[0] != 0xFF));
    // Every power-on of the IDToken is preceded by a power-off.
    let types: Vec<u8> = sim(&idtoken).log.commands.iter().map(|m| m[0]).collect();
    for (i, t) in types.iter().enumerate().filter(|(_, t)| **t == msg_type::ICC_POWER_ON) {
        assert_eq!(types[i - 1], msg_type::ICC_POWER_OFF, "{types:x?} ({t})");
    }
    let features = control_on(&c, &names[1], pcsc_proto::consts::CM_IOCTL_GET_FEATURE_REQUEST, &[]).unwrap();
    assert_eq!(features, [0x08, 4, 0x42, 0x33, 0x00, 0x08, 0x12, 4, 0x42, 0x33, 0x00, 0x12]);
    // The simulated reader echoes escapes.
    let mct = [0x20, 0x70, 0x00, 0x00, 0x00];
    assert_eq!(control_on(&c, &names[1], features::MCT_READER_DIRECT, &mct).unwrap(), mct);
    assert_eq!(
        control_on(&c, &names[1], features::MCT_READER_DIRECT, &[0x20, 0x75, 0, 0, 0]),
        Err(Rv::E_NOT_TRANSACTED)
    );
    let tlv = control_on(&c, &names[1], features::GET_TLV_PROPERTIES, &[]).unwrap();
    assert!(tlv.ends_with(&[0x0A, 4, 0, 0, 0, 0]), "{tlv:x?}");
}

#[test]
fn spr532_gets_its_escape_before_a_case1_verification() {
    let rig = Rig::new();
    let r = SimReader::new(with_pinpad(profiles::short_apdu()), Box::new(Card::new()), &card::ATR);
    let h = plug_as(&rig, 0, (0x04E6, 0xE003, 0x0600), r);
    let name = rig.backend.reader_names().remove(0);
    let c = rig.ctx(Version::V4_4);
    let (card, _) = c.connect(name.as_bytes(), share::SHARED, protocol::ANY).unwrap();
    // VERIFY 00 20 00 81 (case 1), no PIN length insertion (bmPINBlockString 0).
    let mut verify = vec![30, 0, 0x82, 0x00, 0x00, 0x08, 0x04, 0x02, 0x01, 0x09, 0x04, 0x00, 0, 0, 0];
    verify.extend_from_slice(&4u32.to_le_bytes());
    verify.extend_from_slice(&[0x00, 0x20, 0x00, 0x81]);
    let mut buf = [0u8; 64];
    c.control(card, features::VERIFY_PIN_DIRECT, &verify, &mut buf);
    let log = sim(&h).log.commands.clone();
    let secure = log.iter().rposition(|m| m[0] == msg_type::SECURE).unwrap();
    assert_eq!((log[secure - 1][0], &log[secure - 1][10..]), (msg_type::ESCAPE, &[0x80, 0x02, 0x00][..]));
    // A fresh bSeq for the Secure, after the Escape's.
    assert_eq!(log[secure][6], log[secure - 1][6].wrapping_add(1));
}

#[test]
fn transmit_through_character_level_readers() {
    let rig = Rig::new();
    rig.plug_reader("character", 0, SimReader::new(profiles::character(), Box::new(Card::new()), &card::ATR));
    let t0_card = SimReader::new(profiles::character(), Box::new(Card::new()), &crate::ccid::sim::T0_ONLY_ATR);
    rig.plug_reader("character", 1, t0_card);
    let c = rig.ctx(Version::V4_4);
    let names = c.list_readers().unwrap();
    assert_eq!(names.len(), 2);
    // T=1: the host runs the block protocol, prologue first.
    let (card, p) = c.connect(&names[0], share::SHARED, protocol::ANY).unwrap();
    assert_eq!(p, protocol::T1);
    assert_eq!(transmit(&c, card, p, &SELECT).unwrap(), select_ok());
    let (apdu, resp) = echo(255, false);
    assert_eq!(transmit(&c, card, p, &apdu).unwrap(), resp);
    c.disconnect(card, disposition::LEAVE).unwrap();
    // T=0: procedure bytes; 61xx is the application's, case 4 is refused as by libccid.
    let (card, p) = c.connect(&names[1], share::SHARED, protocol::ANY).unwrap();
    assert_eq!(p, protocol::T0);
    assert_eq!(transmit(&c, card, p, &SELECT).unwrap(), [0x61, 0x10]);
    let mut r = transmit(&c, card, p, &[0x00, 0xC0, 0x00, 0x00, 0x10]).unwrap();
    assert_eq!(r.split_off(16), [0x90, 0x00]);
    assert_eq!(r, card::FCI);
    assert_eq!(transmit(&c, card, p, &apdu), Err(Rv::E_NOT_TRANSACTED));
    assert_eq!(transmit(&c, card, p, &[0x00, 0xB0, 0x00, 0x00, 0x00]).unwrap().len(), 258);
    c.disconnect(card, disposition::LEAVE).unwrap();
}
