//! Our own client engine against the server at every protocol version: the
//! engine speaks every version, so this cross-checks both sides.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::client::{ClientConfig, Context, ReaderStateQuery};
use crate::consts::{
    attr, ctl_code, disposition, protocol, reader_state as rs, scope, share, INFINITE, PNP_NOTIFICATION,
};
use crate::server::mock::{MOCK_ATR, SELECT_TEST_AID};
use crate::wire::Version;
use crate::Rv;

const ALL: [Version; 7] =
    [Version::V4_0, Version::V4_2Rn100, Version::V4_2, Version::V4_3, Version::V4_4, Version::V4_5, Version::V4_6];

/// A rig whose server starts 4:2 connections in the variant `v` needs.
fn rig_for(v: Version) -> Rig {
    let v4_2 = if v == Version::V4_2Rn100 { Version::V4_2Rn100 } else { Version::V4_2 };
    Rig::with(ServerConfig { v4_2, notify_hold: Duration::from_millis(20), ..Default::default() })
}

fn ctx(rig: &Rig, v: Version) -> Context {
    let cfg = ClientConfig { max_version: v, no_blocking: true, ..ClientConfig::with_socket(&rig.path) };
    Context::establish(&cfg, scope::USER).unwrap_or_else(|rv| panic!("establish at {v}: {rv:?}"))
}

fn transmit(c: &Context, card: u32, apdu: &[u8]) -> Result<Vec<u8>, Rv> {
    let mut buf = vec![0u8; 300];
    let t = c.transmit(card, (protocol::T1, 16), apdu, None, &mut buf);
    t.rv.ok()?;
    buf.truncate(t.len);
    Ok(buf)
}

#[test]
fn every_version_lists_connects_transmits() {
    for v in ALL {
        let rig = rig_for(v);
        let c = ctx(&rig, v);
        assert_eq!(c.version().unwrap(), v);
        assert_eq!(c.list_readers().unwrap(), [READER.as_bytes().to_vec(), EMPTY_READER.as_bytes().to_vec()], "{v}");
        assert_eq!(c.reader_slots().unwrap(), Some(16), "{v}");
        let (card, p) = c.connect(READER.as_bytes(), share::SHARED, protocol::ANY).unwrap();
        assert_eq!(p, protocol::T1);
        let st = c.status(card).unwrap();
        assert_eq!(st.reader, READER.as_bytes());
        assert_eq!(st.atr, MOCK_ATR);
        assert_eq!(st.protocol, protocol::T1);
        assert_eq!(st.state & 0xFFFF, 0x34, "{v}");
        assert_eq!(transmit(&c, card, &SELECT_TEST_AID).unwrap(), [0x90, 0x00], "{v}");
        let rb = transmit(&c, card, &[0x00, 0xB0, 0x00, 0x00, 0x00]).unwrap();
        assert_eq!(rb.len(), 258);
        let mut small = [0u8; 4];
        let t = c.transmit(card, (protocol::T1, 16), &SELECT_TEST_AID[..5], None, &mut small);
        assert_eq!(t.rv, Rv::SUCCESS);
        let t = c.transmit(card, (protocol::T1, 16), &[0x00, 0xB0, 0x00, 0x00, 0x00], None, &mut small);
        assert_eq!((t.rv, t.len), (Rv::E_INSUFFICIENT_BUFFER, 258));
        let mut out = [0u8; 16];
        let r = c.control(card, ctl_code(1), &[1, 2, 3], &mut out);
        assert_eq!((r.rv, &out[..r.len]), (Rv::SUCCESS, &[1u8, 2, 3][..]));
        let a = c.get_attrib(card, attr::ATR_STRING, 264).unwrap();
        assert_eq!((a.rv, a.data.as_slice()), (Rv::SUCCESS, &MOCK_ATR[..]));
        c.set_attrib(card, attr::VENDOR_IFD_SERIAL_NO, b"x").unwrap();
        assert_eq!(c.set_attrib(card, attr::ATR_STRING, b"x"), Err(Rv::E_UNSUPPORTED_FEATURE));
        c.begin_transaction(card).unwrap();
        c.end_transaction(card, disposition::LEAVE).unwrap();
        assert_eq!(c.reconnect(card, share::SHARED, protocol::ANY, disposition::RESET).unwrap(), protocol::T1);
        assert_eq!(c.reader_events().unwrap(), if v.has_reader_events() { Some(3) } else { None });
        c.disconnect(card, disposition::LEAVE).unwrap();
        assert_eq!(c.connect(b"No such reader", share::SHARED, protocol::ANY).err(), Some(Rv::E_UNKNOWN_READER));
        c.release().unwrap();
        rig.wait_idle();
    }
}

#[test]
fn every_version_sees_removal_insertion_and_cancel() {
    for v in ALL {
        let rig = rig_for(v);
        let c = Arc::new(ctx(&rig, v));
        let mut q = [ReaderStateQuery::new(READER, rs::UNAWARE)];
        c.get_status_change(0, &mut q).unwrap();
        assert!(q[0].event_state & rs::PRESENT != 0, "{v}: {:#x}", q[0].event_state);
        assert_eq!(q[0].atr_len, 15);
        q[0].current_state = q[0].event_state & !rs::CHANGED;
        assert_eq!(c.get_status_change(50, &mut q), Err(Rv::E_TIMEOUT), "{v}");
        // Removal seen by a waiting call.
        let mock = rig.mock.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            mock.remove_card(READER);
        });
        let start = Instant::now();
        c.get_status_change(10_000, &mut q).unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(q[0].event_state & rs::EMPTY != 0, "{v}: {:#x}", q[0].event_state);
        t.join().unwrap();
        q[0].current_state = q[0].event_state & !rs::CHANGED;
        let mock = rig.mock.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            mock.insert_card(READER, &MOCK_ATR);
        });
        c.get_status_change(INFINITE as u64, &mut q).unwrap();
        assert!(q[0].event_state & rs::PRESENT != 0, "{v}");
        t.join().unwrap();
        // Cancel from another thread.
        q[0].current_state = q[0].event_state & !rs::CHANGED;
        let c2 = c.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            c2.cancel().unwrap();
        });
        assert_eq!(c.get_status_change(INFINITE as u64, &mut q), Err(Rv::E_CANCELLED), "{v}");
        t.join().unwrap();
        assert_eq!(c.list_readers().unwrap().len(), 2);
    }
}

#[test]
fn pnp_and_many_readers() {
    for v in [Version::V4_4, Version::V4_5, Version::V4_6] {
        let rig = rig_for(v);
        let c = Arc::new(ctx(&rig, v));
        let mock = rig.mock.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            mock.add_reader("Mock Reader 01 00");
        });
        let mut q = [ReaderStateQuery::new(PNP_NOTIFICATION, 0)];
        c.get_status_change(10_000, &mut q).unwrap();
        assert!(q[0].event_state & rs::CHANGED != 0);
        t.join().unwrap();
        if v.has_reader_events() {
            assert_eq!(c.reader_events().unwrap(), Some(4));
        }
        for i in 0..17 {
            rig.mock.add_reader(&format!("Extra {i:02}"));
        }
        let n = c.list_readers().unwrap().len();
        assert_eq!(n, if v == Version::V4_6 { 20 } else { 16 }, "{v}");
    }
}

#[test]
fn sharing_between_two_contexts() {
    for v in [Version::V4_0, Version::V4_3, Version::V4_6] {
        let rig = rig_for(v);
        let a = ctx(&rig, v);
        let b = ctx(&rig, v);
        let (x, _) = a.connect(READER.as_bytes(), share::EXCLUSIVE, protocol::ANY).unwrap();
        assert_eq!(b.connect(READER.as_bytes(), share::SHARED, protocol::ANY).err(), Some(Rv::E_SHARING_VIOLATION));
        a.reconnect(x, share::SHARED, protocol::ANY, disposition::LEAVE).unwrap();
        let (y, _) = b.connect(READER.as_bytes(), share::SHARED, protocol::ANY).unwrap();
        // a's transaction makes b's transmit wait (client-side blocking is
        // off here: b sees the violation).
        a.begin_transaction(x).unwrap();
        assert_eq!(transmit(&b, y, &SELECT_TEST_AID), Err(Rv::E_SHARING_VIOLATION));
        a.end_transaction(x, disposition::LEAVE).unwrap();
        assert!(transmit(&b, y, &SELECT_TEST_AID).is_ok());
        // b begins; a's context goes away without ending anything; b still works.
        b.begin_transaction(y).unwrap();
        drop(a);
        assert!(transmit(&b, y, &SELECT_TEST_AID).is_ok());
        b.end_transaction(y, disposition::LEAVE).unwrap();
        // A context dropped inside its transaction: the card is reset for the others.
        b.begin_transaction(y).unwrap();
        drop(b);
        eventually("the dead client's transaction to end", || rig.mock.lock_holder(READER).is_none());
        rig.wait_idle();
    }
}

#[test]
fn engine_steps_down_to_a_capped_server() {
    let rig = Rig::with(ServerConfig { max_version: Version::V4_4, ..Default::default() });
    let c = ctx(&rig, Version::V4_6);
    assert_eq!(c.version().unwrap(), Version::V4_4);
    assert_eq!(c.list_readers().unwrap().len(), 2);
    let rig = Rig::with(ServerConfig { max_version: Version::V4_5, ..Default::default() });
    let c = ctx(&rig, Version::V4_6);
    assert_eq!(c.version().unwrap(), Version::V4_5);
    assert_eq!(c.reader_events().unwrap(), Some(3));
}
