//! The client engine (`pcsc-proto`) against a real pcscd with the virtual card.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pcsc_bridge_tests::host::{skip_reason, TestHost};
use pcsc_proto::client::{ClientConfig, Context, ReaderStateQuery};
use pcsc_proto::consts::{
    attr, card_state, disposition, protocol, reader_state as rs, scope, share, CM_IOCTL_GET_FEATURE_REQUEST, INFINITE,
    PNP_NOTIFICATION,
};
use pcsc_proto::wire::Version;
use pcsc_proto::Rv;

const SELECT_AID: &[u8] = &[0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01];

macro_rules! host_or_skip {
    () => {{
        if let Some(why) = skip_reason() {
            println!("SKIP: {why}");
            return;
        }
        TestHost::up().expect("test host")
    }};
}

fn ctx(host: &TestHost) -> Context {
    Context::establish(&ClientConfig::with_socket(&host.socket), scope::SYSTEM).expect("establish")
}

fn transmit(c: &Context, card: u32, apdu: &[u8], buf: usize) -> Result<Vec<u8>, Rv> {
    let mut recv = vec![0u8; buf];
    let t = c.transmit(card, (protocol::T1, 16), apdu, None, &mut recv);
    t.rv.ok()?;
    recv.truncate(t.len);
    Ok(recv)
}

fn pattern(off: usize, n: usize) -> Vec<u8> {
    (off..off + n).map(|o| (o as u8) ^ 0x5A).collect()
}

#[test]
fn negotiates_and_lists() {
    let host = host_or_skip!();
    let c = ctx(&host);
    // Debian bookworm's pcscd speaks 4:4: offered 4:6, stepped down.
    assert_eq!(c.version().unwrap(), Version::V4_4);
    let readers = c.list_readers().unwrap();
    assert!(readers.iter().any(|r| r == host.reader.as_bytes()), "{readers:?}");
    assert_eq!(c.reader_slots().unwrap(), Some(16));
    assert!(c.is_valid());
    c.release().unwrap();
    assert!(!c.is_valid());
    assert_eq!(c.list_readers(), Err(Rv::E_INVALID_HANDLE));
}

#[test]
fn refused_versions_step_down_from_any_start() {
    let host = host_or_skip!();
    for max in [Version::V4_6, Version::V4_5, Version::V4_4] {
        let cfg = ClientConfig { max_version: max, ..ClientConfig::with_socket(&host.socket) };
        let c = Context::establish(&cfg, scope::USER).unwrap();
        assert_eq!(c.version().unwrap(), Version::V4_4);
        assert!(!c.list_readers().unwrap().is_empty());
    }
    // Starting below the daemon's version is refused all the way down.
    let cfg = ClientConfig { max_version: Version::V4_3, ..ClientConfig::with_socket(&host.socket) };
    let e = Context::establish(&cfg, scope::USER).err().unwrap();
    assert!(e == Rv::E_SERVICE_STOPPED || e == Rv::E_NO_SERVICE, "{e:?}");
}

#[test]
fn no_daemon_is_no_service() {
    let e = Context::establish(&ClientConfig::with_socket("/nonexistent/pcscd.comm"), scope::USER).err();
    assert_eq!(e, Some(Rv::E_NO_SERVICE));
}

#[test]
fn connect_status_transmit_control_attrib() {
    let host = host_or_skip!();
    let c = ctx(&host);
    let (card, proto) = c.connect(host.reader.as_bytes(), share::SHARED, protocol::ANY).unwrap();
    assert_eq!(proto, protocol::T1);
    let st = c.status(card).unwrap();
    assert_eq!(st.reader, host.reader.as_bytes());
    assert_eq!(st.atr[0], 0x3B);
    assert!(st.state & card_state::PRESENT != 0 && st.state & card_state::POWERED != 0, "{:#x}", st.state);
    assert_eq!(st.protocol, protocol::T1);

    // Short APDUs.
    assert_eq!(
        transmit(&c, card, SELECT_AID, 258).unwrap()[..],
        [0x6F, 0x0E, 0x84, 0x07, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01, 0xA5, 0x03, 0x88, 0x01, 0x01, 0x90, 0x00]
    );
    let rb = transmit(&c, card, &[0x00, 0xB0, 0x00, 0x10, 0x00], 258).unwrap();
    assert_eq!(rb.len(), 258);
    assert_eq!(&rb[..256], &pattern(0x10, 256)[..]);
    assert_eq!(&rb[256..], &[0x90, 0x00]);
    // Extended: READ BINARY of 4096 bytes and a 4096-byte echo.
    let rb = transmit(&c, card, &[0x00, 0xB0, 0x00, 0x00, 0x00, 0x10, 0x00], 65538).unwrap();
    assert_eq!(rb.len(), 4098);
    assert_eq!(&rb[..4096], &pattern(0, 4096)[..]);
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    let mut echo = vec![0x80, 0x01, 0x00, 0x00, 0x00, 0x10, 0x00];
    echo.extend_from_slice(&data);
    echo.extend_from_slice(&[0x10, 0x00]);
    let r = transmit(&c, card, &echo, 65538).unwrap();
    assert_eq!(&r[..4096], &data[..]);
    assert_eq!(&r[4096..], &[0x90, 0x00]);
    // A buffer too small: the needed length comes back.
    let mut small = [0u8; 4];
    let t = c.transmit(card, (protocol::T1, 16), SELECT_AID, None, &mut small);
    assert_eq!(t.rv, Rv::E_INSUFFICIENT_BUFFER);
    assert_eq!(t.len, 18);
    // The stream is still in step afterwards.
    assert_eq!(transmit(&c, card, &[0x00, 0xA4, 0x04, 0x00, 0x02, 0x01, 0x02], 258).unwrap(), [0x6A, 0x82]);

    // Control: the feature request gets whatever the driver says, consistently.
    let mut out = [0u8; 256];
    let r = c.control(card, CM_IOCTL_GET_FEATURE_REQUEST, &[], &mut out);
    assert!(r.rv.is_success() || r.rv == Rv::E_NOT_TRANSACTED || r.rv == Rv::E_UNSUPPORTED_FEATURE, "{:?}", r.rv);

    // Attributes: vpcd's driver knows none; pcscd answers the friendly name
    // itself (1.9.9 reports it as too long for any buffer, a daemon quirk).
    let a = c.get_attrib(card, attr::ATR_STRING, 264).unwrap();
    assert_eq!(a.rv, Rv::E_UNSUPPORTED_FEATURE);
    let f = c.get_attrib(card, attr::DEVICE_FRIENDLY_NAME, 264).unwrap();
    assert!(f.rv == Rv::SUCCESS || f.rv == Rv::E_INSUFFICIENT_BUFFER, "{:?}", f.rv);
    let unknown = c.get_attrib(card, 0x7FFF_7777, 264).unwrap();
    assert_ne!(unknown.rv, Rv::SUCCESS);
    let set = c.set_attrib(card, attr::ATR_STRING, &[1, 2, 3]);
    assert!(set.is_err());

    c.disconnect(card, disposition::LEAVE).unwrap();
    assert_eq!(c.status(card), Err(Rv::E_INVALID_HANDLE));
    c.release().unwrap();
}

#[test]
fn transactions_reconnect_and_sharing() {
    let host = host_or_skip!();
    let c1 = ctx(&host);
    let c2 = ctx(&host);
    let (a, _) = c1.connect(host.reader.as_bytes(), share::SHARED, protocol::ANY).unwrap();
    let (b, _) = c2.connect(host.reader.as_bytes(), share::SHARED, protocol::ANY).unwrap();
    c1.begin_transaction(a).unwrap();
    // While a holds the transaction, b's transmit blocks; with no-blocking it
    // would report a sharing violation. Release after 300 ms from another thread.
    let c1 = Arc::new(c1);
    let c1b = c1.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        c1b.end_transaction(a, disposition::LEAVE).unwrap();
    });
    let start = Instant::now();
    assert!(transmit(&c2, b, SELECT_AID, 258).is_ok());
    assert!(start.elapsed() >= Duration::from_millis(250));
    t.join().unwrap();
    // Exclusive access is refused while another shares the card (without the
    // client-side blocking that would otherwise retry until it is free).
    let cfg = ClientConfig { no_blocking: true, ..ClientConfig::with_socket(&host.socket) };
    let c3 = Context::establish(&cfg, scope::USER).unwrap();
    let (d, _) = c3.connect(host.reader.as_bytes(), share::SHARED, protocol::ANY).unwrap();
    assert_eq!(
        c3.reconnect(d, share::EXCLUSIVE, protocol::ANY, disposition::LEAVE).err(),
        Some(Rv::E_SHARING_VIOLATION)
    );
    c2.disconnect(b, disposition::LEAVE).unwrap();
    c1.disconnect(a, disposition::LEAVE).unwrap();
    assert_eq!(c3.reconnect(d, share::EXCLUSIVE, protocol::ANY, disposition::RESET).unwrap(), protocol::T1);
    assert_eq!(c2.connect(host.reader.as_bytes(), share::SHARED, protocol::ANY).err(), Some(Rv::E_SHARING_VIOLATION));
    // Ending a transaction never begun.
    assert_eq!(c3.end_transaction(d, disposition::LEAVE).err(), Some(Rv::E_NOT_TRANSACTED));
    c3.disconnect(d, disposition::LEAVE).unwrap();
    assert!(c2.connect(host.reader.as_bytes(), share::SHARED, protocol::ANY).is_ok());
    assert_eq!(c2.connect(b"No such reader", share::SHARED, protocol::ANY).err(), Some(Rv::E_UNKNOWN_READER));
}

#[test]
fn card_removal_and_insertion_events() {
    let host = host_or_skip!();
    let c = ctx(&host);
    let mut q = [ReaderStateQuery::new(host.reader.as_bytes(), rs::UNAWARE)];
    c.get_status_change(0, &mut q).unwrap();
    assert!(q[0].event_state & rs::PRESENT != 0);
    assert_eq!(q[0].atr_len, 15);
    // No change within 200 ms: timeout.
    q[0].current_state = q[0].event_state & !rs::CHANGED;
    let start = Instant::now();
    assert_eq!(c.get_status_change(200, &mut q), Err(Rv::E_TIMEOUT));
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(195) && took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(c.get_status_change(0, &mut q), Err(Rv::E_TIMEOUT));
    // Removal seen by a waiting call.
    host.card_remove().unwrap();
    c.get_status_change(10_000, &mut q).unwrap();
    assert!(q[0].event_state & rs::CHANGED != 0);
    assert!(q[0].event_state & rs::EMPTY != 0, "{:#x}", q[0].event_state);
    assert_eq!(q[0].atr_len, 0);
    q[0].current_state = q[0].event_state & !rs::CHANGED;
    host.card_insert().unwrap();
    c.get_status_change(INFINITE as u64, &mut q).unwrap();
    assert!(q[0].event_state & rs::PRESENT != 0, "{:#x}", q[0].event_state);
    // Unknown reader names are refused before waiting.
    let mut bad = [ReaderStateQuery::new("nope", rs::UNAWARE)];
    assert_eq!(c.get_status_change(0, &mut bad), Err(Rv::E_UNKNOWN_READER));
}

#[test]
fn cancel_from_another_thread() {
    let host = host_or_skip!();
    let c = Arc::new(ctx(&host));
    // Not blocked: success, no effect.
    c.cancel().unwrap();
    let mut q = [ReaderStateQuery::new(host.reader.as_bytes(), rs::UNAWARE)];
    c.get_status_change(0, &mut q).unwrap();
    q[0].current_state = q[0].event_state & !rs::CHANGED;
    let c2 = c.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        c2.cancel().unwrap();
    });
    let start = Instant::now();
    assert_eq!(c.get_status_change(u64::MAX, &mut q), Err(Rv::E_CANCELLED));
    assert!(start.elapsed() < Duration::from_secs(5));
    t.join().unwrap();
    // The context still works after a cancel.
    assert!(!c.list_readers().unwrap().is_empty());
}

#[test]
fn pnp_notification_waits_and_times_out() {
    let host = host_or_skip!();
    let c = ctx(&host);
    let mut q = [ReaderStateQuery::new(PNP_NOTIFICATION, 0)];
    assert_eq!(c.get_status_change(100, &mut q), Err(Rv::E_TIMEOUT));
}

#[test]
fn pnp_notification_sees_readers_come_and_go() {
    let host = host_or_skip!();
    let c = Arc::new(ctx(&host));
    let before = c.list_readers().unwrap().len();
    // A waiter on the PnP pseudo reader; the reader set changes across a daemon
    // restart (a stock pcscd re-reads serial readers only when it starts), which
    // the context rides out by reconnecting.
    let c2 = c.clone();
    let waiter = std::thread::spawn(move || {
        let mut q = [ReaderStateQuery::new(PNP_NOTIFICATION, 0)];
        let rv = c2.get_status_change(20_000, &mut q);
        (rv, q[0].event_state)
    });
    std::thread::sleep(Duration::from_millis(300));
    host.reader_change_by_restart(false).unwrap();
    let (rv, ev) = waiter.join().unwrap();
    assert_eq!(rv, Ok(()));
    assert!(ev & rs::CHANGED != 0, "{ev:#x}");
    assert_eq!(c.list_readers().unwrap().len(), 0);
    // And coming back.
    let mut q = [ReaderStateQuery::new(PNP_NOTIFICATION, 0)];
    let c3 = c.clone();
    let waiter = std::thread::spawn(move || c3.get_status_change(20_000, &mut q).map(|_| q[0].event_state));
    std::thread::sleep(Duration::from_millis(300));
    host.reader_change_by_restart(true).unwrap();
    assert!(waiter.join().unwrap().unwrap() & rs::CHANGED != 0);
    assert_eq!(c.list_readers().unwrap().len(), before);
}

#[test]
fn daemon_restart_reconnects_context() {
    let host = host_or_skip!();
    let c = Arc::new(ctx(&host));
    let (card, _) = c.connect(host.reader.as_bytes(), share::SHARED, protocol::ANY).unwrap();
    assert!(transmit(&c, card, SELECT_AID, 258).is_ok());
    // A wait in progress across the restart ends with a change or NO_SERVICE,
    // never hangs.
    host.restart_pcscd().unwrap();
    // Same context, new daemon: works again.
    let readers = c.list_readers().unwrap();
    assert!(readers.iter().any(|r| r == host.reader.as_bytes()));
    // The old card handle answers like a removed card, and goes away cleanly.
    assert_eq!(transmit(&c, card, SELECT_AID, 258), Err(Rv::W_REMOVED_CARD));
    assert_eq!(c.status(card).err(), Some(Rv::W_REMOVED_CARD));
    c.disconnect(card, disposition::LEAVE).unwrap();
    let (card2, _) = c.connect(host.reader.as_bytes(), share::SHARED, protocol::ANY).unwrap();
    assert!(transmit(&c, card2, SELECT_AID, 258).is_ok());
}
