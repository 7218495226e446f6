//! Raw-socket clients speaking each version, with byte-exact expectations built
//! from the reference's tables (pcscd-protocol.md §3-§6), not from our codec.

use std::time::{Duration, Instant};

use super::*;
use crate::consts::{attr, ctl_code, protocol, share};
use crate::server::mock::{MOCK_ATR, SELECT_TEST_AID};
use crate::wire::Version;
use crate::Rv;

const CANCELLED: u32 = 0x8010_0002;
const STOPPED: u32 = 0x8010_001E;

/// One reader-state record, laid out by hand. `layout`: 'A' (4:0), 'B' (4:2/100), 'C'.
#[allow(clippy::too_many_arguments)]
fn record(
    layout: char,
    id: u32,
    name: &str,
    counter: u32,
    state: u32,
    sharing: i32,
    atr: &[u8],
    atr_len: u32,
    proto: u32,
) -> Vec<u8> {
    let rn = if layout == 'C' { 128 } else { 100 };
    let mut v = Vec::new();
    if layout == 'A' {
        v.extend(id.to_ne_bytes());
    }
    let mut n = name.as_bytes().to_vec();
    n.resize(rn, 0);
    v.extend(n);
    if layout != 'A' {
        v.extend(counter.to_ne_bytes());
    }
    // 4:0 has no eventCounter field: the counter is the high 16 bits of readerState.
    let state = if layout == 'A' { (counter << 16) | state } else { state };
    v.extend(state.to_ne_bytes());
    v.extend(sharing.to_ne_bytes());
    let mut a = atr.to_vec();
    a.resize(33, 0);
    v.extend(a);
    v.extend([0u8; 3]);
    v.extend(atr_len.to_ne_bytes());
    v.extend(proto.to_ne_bytes());
    assert_eq!(v.len(), if layout == 'C' { 184 } else { 156 });
    v
}

/// The 16-slot array for the mock's initial readers (card in slot 0).
fn initial_array(layout: char) -> Vec<u8> {
    let mut v = record(layout, 100, READER, 1, 0x34, 0, &MOCK_ATR, 15, 0);
    v.extend(record(layout, 101, EMPTY_READER, 0, 0x02, 0, &[], 0, 0));
    for _ in 2..16 {
        v.extend(record(layout, 0, "", 0, 0, 0, &[], 34, 0));
    }
    v
}

#[test]
fn handshake_echoes_each_version() {
    let rig = Rig::new();
    for minor in [0, 2, 3, 4, 5, 6] {
        let mut c = rig.raw();
        assert_eq!(c.version(4, minor), [4, minor, 0], "4:{minor}");
    }
    // Refusals name our highest with SERVICE_STOPPED; the connection stays
    // usable, and a 2.4.1/2.5-style retry with the named version succeeds.
    let mut c = rig.raw();
    assert_eq!(c.version(4, 7), [4, 6, STOPPED]);
    assert_eq!(c.version(4, 6), [4, 6, 0]);
    let mut c = rig.raw();
    for (ma, mi) in [(5, 6), (4, 1), (3, 0)] {
        assert_eq!(c.version(ma, mi), [4, 6, STOPPED], "{ma}:{mi}");
    }
    // An old exact-match client (≤ 2.4.0) with 4:4 is accepted as it is.
    assert_eq!(c.version(4, 4), [4, 4, 0]);
    assert_ne!(c.establish(), 0);
}

#[test]
fn capped_server_makes_new_clients_retry() {
    let rig = Rig::with(ServerConfig { max_version: Version::V4_5, ..Default::default() });
    let mut c = rig.raw();
    // 2.5 client: 4:6 refused naming 4:5, retries with 4:5.
    assert_eq!(c.version(4, 6), [4, 5, STOPPED]);
    assert_eq!(c.version(4, 5), [4, 5, 0]);
    let mut c = rig.raw();
    assert_eq!(c.version(4, 4), [4, 4, 0]);
}

#[test]
fn reader_states_per_version_byte_exact() {
    let rig = Rig::new();
    for (minor, layout) in [(0, 'A'), (2, 'C'), (3, 'C'), (4, 'C'), (5, 'C'), (6, 'C')] {
        let (mut c, _) = Raw::session(&rig.path, minor);
        c.send(Command::GET_READERS_STATE, &[]);
        same(&c.read(16 * if layout == 'C' { 184 } else { 156 }), &initial_array(layout), &format!("4:{minor}"));
        c.nothing_for(20);
    }
    // Without CMD_VERSION (as 4:4).
    let mut c = rig.raw();
    c.send(Command::GET_READERS_STATE, &[]);
    same(&c.read(2944), &initial_array('C'), "array");
    // 4:6: SIZE then ARRAY (capacity 16, all-zero padding).
    let (mut c, _) = Raw::session(&rig.path, 6);
    c.send(Command::GET_READERS_STATE_SIZE, &[]);
    assert_eq!(c.read_words(1), [16]);
    c.send(Command::GET_READERS_STATE_ARRAY, &[]);
    let mut want = record('C', 0, READER, 1, 0x34, 0, &MOCK_ATR, 15, 0);
    want.extend(record('C', 0, EMPTY_READER, 0, 0x02, 0, &[], 0, 0));
    want.resize(16 * 184, 0);
    same(&c.read(16 * 184), &want, "4:6 array");
}

#[test]
fn v4_2_variants() {
    // Default: 128-byte names; a 124-byte CONNECT switches to the 100-byte variant.
    let rig = Rig::new();
    let (mut c, h) = Raw::session(&rig.path, 2);
    c.send(Command::GET_READERS_STATE, &[]);
    same(&c.read(2944), &initial_array('C'), "array");
    let (card, proto, rv) = c.connect_card(h, READER, share::SHARED, 100);
    assert_eq!((rv, proto), (0, protocol::T1));
    assert!(card != 0 && card <= 0x7FFF_FFFF);
    c.send(Command::GET_READERS_STATE, &[]);
    let got = c.read(2496);
    assert_eq!(&got[..156], &record('B', 0, READER, 1, 0x34, 1, &MOCK_ATR, 15, protocol::T1)[..]);
    c.nothing_for(20);
    // Configured for the 100-byte variant from the start.
    let rig = Rig::with(ServerConfig { v4_2: Version::V4_2Rn100, ..Default::default() });
    let (mut c, _) = Raw::session(&rig.path, 2);
    c.send(Command::GET_READERS_STATE, &[]);
    same(&c.read(2496), &initial_array('B'), "array");
    c.nothing_for(20);
}

#[test]
fn wait_stop_up_to_4_3() {
    let rig = Rig::new();
    for minor in [0, 2, 3] {
        let (mut c, _) = Raw::session(&rig.path, minor);
        // WAIT with its 8-byte body: registered, no reply.
        c.send_words(Command::WAIT_READER_STATE_CHANGE, &[60_000, 0]);
        c.nothing_for(100);
        // STOP while registered: {0, 0}; again: nothing.
        c.send_words(Command::STOP_WAITING_READER_STATE_CHANGE, &[0, 0]);
        assert_eq!(c.read_words(2), [0, 0]);
        c.send_words(Command::STOP_WAITING_READER_STATE_CHANGE, &[0, 0]);
        c.nothing_for(50);
        // A change notifies once ({0, 0}); a STOP after it gets nothing.
        c.send_words(Command::WAIT_READER_STATE_CHANGE, &[60_000, 0]);
        c.nothing_for(30);
        rig.mock.remove_card(READER);
        assert_eq!(c.read_words(2), [0, 0], "4:{minor}");
        rig.mock.insert_card(READER, &MOCK_ATR);
        c.nothing_for(100);
        c.send_words(Command::STOP_WAITING_READER_STATE_CHANGE, &[0, 0]);
        c.nothing_for(50);
    }
}

#[test]
fn wait_after_stale_fetch_notifies_at_once_up_to_4_3() {
    let rig = Rig::new();
    let (mut c, _) = Raw::session(&rig.path, 3);
    c.send(Command::GET_READERS_STATE, &[]);
    c.read(2944);
    // The card goes between the fetch and the WAIT: the upstream protocol
    // would lose this event; we notify at once.
    rig.mock.remove_card(READER);
    c.send_words(Command::WAIT_READER_STATE_CHANGE, &[60_000, 0]);
    assert_eq!(c.read_words(2), [0, 0]);
    c.send(Command::GET_READERS_STATE, &[]);
    let a = c.read(2944);
    same(&a[..184], &record('C', 0, READER, 2, 0x02, 0, &[], 0, 0), "record 0");
    // Let the notifier thread finish with the removal: under load it may
    // otherwise reach the next registration late (a harmless extra
    // notification, but not what this test is about).
    std::thread::sleep(Duration::from_millis(200));
    c.send_words(Command::WAIT_READER_STATE_CHANGE, &[60_000, 0]);
    c.nothing_for(100);
}

#[test]
fn wait_stop_4_4_and_4_5() {
    for minor in [4, 5] {
        let rig = Rig::with(ServerConfig { notify_hold: Duration::from_millis(30), ..Default::default() });
        let (mut c, _) = Raw::session(&rig.path, minor);
        // WAIT: no body, the 16 slots at once.
        c.send(Command::WAIT_READER_STATE_CHANGE, &[]);
        same(&c.read(2944), &initial_array('C'), "array");
        c.nothing_for(60);
        c.send(Command::STOP_WAITING_READER_STATE_CHANGE, &[]);
        assert_eq!(c.read_words(2), [0, 0]);
        c.send(Command::STOP_WAITING_READER_STATE_CHANGE, &[]);
        c.nothing_for(50);
        // Registered; a change; the notification; STOP then gets nothing.
        c.send(Command::WAIT_READER_STATE_CHANGE, &[]);
        c.read(2944);
        rig.mock.remove_card(READER);
        assert_eq!(c.read_words(2), [0, 0]);
        c.send(Command::STOP_WAITING_READER_STATE_CHANGE, &[]);
        c.nothing_for(50);
        // Re-register: the array shows the removal.
        c.send(Command::WAIT_READER_STATE_CHANGE, &[]);
        let a = c.read(2944);
        same(&a[..184], &record('C', 0, READER, 2, 0x02, 0, &[], 0, 0), "record 0");
        c.send(Command::STOP_WAITING_READER_STATE_CHANGE, &[]);
        assert_eq!(c.read_words(2), [0, 0]);
        rig.mock.insert_card(READER, &MOCK_ATR);
    }
}

#[test]
fn wait_4_6_and_held_notification() {
    let rig = Rig::with(ServerConfig { notify_hold: Duration::from_millis(300), ..Default::default() });
    let (mut c, _) = Raw::session(&rig.path, 6);
    // WAIT: nothing.
    c.send(Command::WAIT_READER_STATE_CHANGE, &[]);
    c.nothing_for(50);
    // A change while the client is between WAIT and SIZE: the notification is
    // held; SIZE and ARRAY replies come first, in one piece.
    rig.mock.remove_card(READER);
    std::thread::sleep(Duration::from_millis(50));
    c.send(Command::GET_READERS_STATE_SIZE, &[]);
    assert_eq!(c.read_words(1), [16]);
    c.send(Command::GET_READERS_STATE_ARRAY, &[]);
    let a = c.read(16 * 184);
    same(&a[..184], &record('C', 0, READER, 2, 0x02, 0, &[], 0, 0), "record 0");
    c.send(Command::GET_READER_EVENTS, &[]);
    assert_eq!(c.read_words(2), [3, 0]);
    // Then, after the grace period, the notification.
    let t = Instant::now();
    assert_eq!(c.read_words(2), [0, 0]);
    assert!(t.elapsed() >= Duration::from_millis(200), "{:?}", t.elapsed());
    c.send(Command::STOP_WAITING_READER_STATE_CHANGE, &[]);
    c.nothing_for(50);

    // STOP while a notification is held: the notification is the answer, once.
    c.send(Command::WAIT_READER_STATE_CHANGE, &[]);
    rig.mock.insert_card(READER, &MOCK_ATR);
    std::thread::sleep(Duration::from_millis(50));
    c.send(Command::STOP_WAITING_READER_STATE_CHANGE, &[]);
    assert_eq!(c.read_words(2), [0, 0]);
    c.nothing_for(400);
}

#[test]
fn wait_4_5_reader_events_before_notification() {
    let rig = Rig::with(ServerConfig { notify_hold: Duration::from_millis(200), ..Default::default() });
    let (mut c, _) = Raw::session(&rig.path, 5);
    c.send(Command::WAIT_READER_STATE_CHANGE, &[]);
    c.read(2944);
    rig.mock.add_reader("Mock Reader 01 00");
    std::thread::sleep(Duration::from_millis(30));
    c.send(Command::GET_READER_EVENTS, &[]);
    assert_eq!(c.read_words(2), [4, 0]);
    assert_eq!(c.read_words(2), [0, 0]);
}

#[test]
fn cancel_from_another_connection() {
    let rig = Rig::with(ServerConfig { notify_hold: Duration::from_millis(10), ..Default::default() });
    let (mut a, h) = Raw::session(&rig.path, 4);
    a.send(Command::WAIT_READER_STATE_CHANGE, &[]);
    a.read(2944);
    // The canceller sends no CMD_VERSION and no ESTABLISH.
    let mut x = rig.raw();
    x.send_words(Command::CANCEL, &[h, 0]);
    assert_eq!(x.read_words(2), [h, 0]);
    assert_eq!(a.read_words(2), [0, CANCELLED]);
    // Cancelled means unregistered: STOP gets nothing, a change sends nothing.
    a.send(Command::STOP_WAITING_READER_STATE_CHANGE, &[]);
    a.nothing_for(50);
    rig.mock.remove_card(READER);
    a.nothing_for(100);
    // Not waiting: success for the canceller, nothing for the target (2.0.1+).
    x.send_words(Command::CANCEL, &[h, 0]);
    assert_eq!(x.read_words(2), [h, 0]);
    a.nothing_for(50);
    // No such context.
    x.send_words(Command::CANCEL, &[h ^ 0x1234, 0]);
    assert_eq!(x.read_words(2), [h ^ 0x1234, Rv::E_INVALID_HANDLE.0]);
    // 4:3 target (registered by a WAIT with body).
    let (mut b, hb) = Raw::session(&rig.path, 3);
    b.send_words(Command::WAIT_READER_STATE_CHANGE, &[0, 0]);
    b.nothing_for(30);
    x.send_words(Command::CANCEL, &[hb, 0]);
    assert_eq!(x.read_words(2), [hb, 0]);
    assert_eq!(b.read_words(2), [0, CANCELLED]);
    // A released context is gone.
    b.send_words(Command::RELEASE_CONTEXT, &[hb, 0]);
    assert_eq!(b.read_words(2), [hb, 0]);
    x.send_words(Command::CANCEL, &[hb, 0]);
    assert_eq!(x.read_words(2), [hb, Rv::E_INVALID_HANDLE.0]);
}

#[test]
fn one_shot_and_all_registered_notified() {
    let rig = Rig::with(ServerConfig { notify_hold: Duration::from_millis(10), ..Default::default() });
    let mut clients: Vec<Raw> = (0..5).map(|_| Raw::session(&rig.path, 4).0).collect();
    for c in clients.iter_mut() {
        c.send(Command::WAIT_READER_STATE_CHANGE, &[]);
        c.read(2944);
    }
    std::thread::sleep(Duration::from_millis(30));
    rig.mock.remove_card(READER);
    for c in clients.iter_mut() {
        assert_eq!(c.read_words(2), [0, 0]);
    }
    rig.mock.insert_card(READER, &MOCK_ATR);
    for c in clients.iter_mut() {
        c.nothing_for(30);
    }
}

#[test]
fn status_4_0_and_cancel_transaction() {
    let rig = Rig::new();
    let (mut c, h) = Raw::session(&rig.path, 0);
    let (card, proto, rv) = c.connect_card(h, READER, share::SHARED, 100);
    assert_eq!((rv, proto), (0, protocol::T1));
    // 160-byte STATUS: buffers of 100 (name) and 33 (ATR), as 1.6.x clients send.
    let mut body = words(&[card]);
    body.extend([0u8; 100]);
    body.extend(words(&[100, 0, 0]));
    body.extend([0u8; 36]);
    body.extend(words(&[33, 0]));
    assert_eq!(body.len(), 160);
    c.send(Command::STATUS, &body);
    let r = c.read(160);
    let mut want = words(&[card]);
    let mut name = READER.as_bytes().to_vec();
    name.resize(100, 0);
    want.extend(name);
    want.extend(words(&[READER.len() as u32, 0x34, protocol::T1]));
    let mut atr = MOCK_ATR.to_vec();
    atr.resize(36, 0);
    want.extend(atr);
    want.extend(words(&[15, 0]));
    assert_eq!(r, want);
    // A name buffer larger than the field: INSUFFICIENT_BUFFER, as 1.6.x.
    let mut big = body.clone();
    big[104..108].copy_from_slice(&101u32.to_ne_bytes());
    c.send(Command::STATUS, &big);
    assert_eq!(to_words(&c.read(160)[156..]), [Rv::E_INSUFFICIENT_BUFFER.0]);
    c.send_words(Command::CANCEL_TRANSACTION, &[card, 0]);
    assert_eq!(c.read_words(2), [card, 0]);
}

#[test]
fn card_commands_byte_exact() {
    let rig = Rig::new();
    let (mut c, h) = Raw::session(&rig.path, 4);
    let (card, proto, rv) = c.connect_card(h, READER, share::SHARED, 128);
    assert_eq!((rv, proto), (0, protocol::T1));
    // STATUS (8 bytes).
    c.send_words(Command::STATUS, &[card, 0]);
    assert_eq!(c.read_words(2), [card, 0]);
    // TRANSMIT: struct + APDU; reply struct + data (rv 0).
    let mut t = words(&[card, protocol::T1, 16, SELECT_TEST_AID.len() as u32, 3, 16, 258, 0]);
    t.extend_from_slice(&SELECT_TEST_AID);
    let mut m = Vec::new();
    Header::new(Command::TRANSMIT, 32).emit(&mut m);
    m.extend(t);
    c.s.write_all(&m).unwrap();
    let r = c.read(34);
    assert_eq!(to_words(&r[..32]), [card, protocol::T1, 16, 12, protocol::T1, 16, 2, 0]);
    assert_eq!(&r[32..], &[0x90, 0x00]);
    // A too-small buffer: INSUFFICIENT_BUFFER with the needed length, no data.
    let mut m = Vec::new();
    Header::new(Command::TRANSMIT, 32).emit(&mut m);
    m.extend(words(&[card, protocol::T1, 16, 5, 3, 16, 10, 0]));
    m.extend([0x00, 0xB0, 0x00, 0x00, 0x00]);
    c.s.write_all(&m).unwrap();
    let r = c.read_words(8);
    assert_eq!((r[6], r[7]), (258, Rv::E_INSUFFICIENT_BUFFER.0));
    // Still in step: CONTROL echo.
    let mut m = Vec::new();
    Header::new(Command::CONTROL, 24).emit(&mut m);
    m.extend(words(&[card, ctl_code(1), 3, 100, 0, 0]));
    m.extend([7, 8, 9]);
    c.s.write_all(&m).unwrap();
    let r = c.read(27);
    assert_eq!(to_words(&r[..24]), [card, ctl_code(1), 3, 100, 3, 0]);
    assert_eq!(&r[24..], &[7, 8, 9]);
    // GET_ATTRIB ATR_STRING.
    let mut g = words(&[card, attr::ATR_STRING]);
    g.extend([0u8; 264]);
    g.extend(words(&[264, 0]));
    c.send(Command::GET_ATTRIB, &g);
    let r = c.read(280);
    assert_eq!(&r[8..23], &MOCK_ATR);
    assert_eq!(to_words(&r[272..]), [15, 0]);
    // SET_ATTRIB then GET it back; unknown attribute unsupported.
    let mut s = words(&[card, attr::VENDOR_IFD_SERIAL_NO]);
    let mut val = b"SN42".to_vec();
    val.resize(264, 0);
    s.extend(val);
    s.extend(words(&[4, 0]));
    c.send(Command::SET_ATTRIB, &s);
    assert_eq!(to_words(&c.read(280)[272..]), [4, 0]);
    let mut g = words(&[card, attr::VENDOR_IFD_SERIAL_NO]);
    g.extend([0u8; 264]);
    g.extend(words(&[2, 0]));
    c.send(Command::GET_ATTRIB, &g);
    assert_eq!(to_words(&c.read(280)[272..]), [4, Rv::E_INSUFFICIENT_BUFFER.0]);
    // Transactions and the reply layouts of BEGIN/END/RECONNECT/DISCONNECT.
    c.send_words(Command::BEGIN_TRANSACTION, &[card, 0]);
    assert_eq!(c.read_words(2), [card, 0]);
    c.send_words(Command::END_TRANSACTION, &[card, 0, 0]);
    assert_eq!(c.read_words(3), [card, 0, 0]);
    c.send_words(Command::END_TRANSACTION, &[card, 0, 0]);
    assert_eq!(c.read_words(3), [card, 0, Rv::E_NOT_TRANSACTED.0]);
    c.send_words(Command::RECONNECT, &[card, share::EXCLUSIVE, 3, 1, 0, 0]);
    assert_eq!(c.read_words(6), [card, share::EXCLUSIVE, 3, 1, protocol::T1, 0]);
    // Exclusive now: another context is refused.
    let (mut d, hd) = Raw::session(&rig.path, 4);
    let (c2, _, rv) = d.connect_card(hd, READER, share::SHARED, 128);
    assert_eq!((c2, rv), (0, Rv::E_SHARING_VIOLATION.0));
    c.send_words(Command::DISCONNECT, &[card, 0, 0]);
    assert_eq!(c.read_words(3), [card, 0, 0]);
    let (c2, _, rv) = d.connect_card(hd, READER, share::SHARED, 128);
    assert_eq!(rv, 0);
    assert_ne!(c2, 0);
    // Unknown reader, and a context that is not this connection's.
    let (_, _, rv) = d.connect_card(hd, "Nope", share::SHARED, 128);
    assert_eq!(rv, Rv::E_UNKNOWN_READER.0);
    let (_, _, rv) = d.connect_card(h, READER, share::SHARED, 128);
    assert_eq!(rv, Rv::E_INVALID_HANDLE.0);
    // RELEASE: wrong context → INVALID_VALUE; right one → 0; again → INVALID_HANDLE.
    d.send_words(Command::RELEASE_CONTEXT, &[h, 0]);
    assert_eq!(d.read_words(2), [h, Rv::E_INVALID_VALUE.0]);
    d.send_words(Command::RELEASE_CONTEXT, &[hd, 0]);
    assert_eq!(d.read_words(2), [hd, 0]);
    d.send_words(Command::RELEASE_CONTEXT, &[hd, 0]);
    assert_eq!(d.read_words(2), [hd, Rv::E_INVALID_HANDLE.0]);
    // The released context's card handle is no longer this connection's.
    d.send_words(Command::STATUS, &[c2, 0]);
    d.closed();
    // Bad scope.
    c.send_words(Command::ESTABLISH_CONTEXT, &[7, 0, 0]);
    assert_eq!(c.read_words(3), [7, 0, Rv::E_INVALID_VALUE.0]);
}

#[test]
fn closing_releases_and_resets_open_transactions() {
    let rig = Rig::new();
    let (mut c, h) = Raw::session(&rig.path, 4);
    let (card, _, _) = c.connect_card(h, READER, share::SHARED, 128);
    c.send_words(Command::BEGIN_TRANSACTION, &[card, 0]);
    assert_eq!(c.read_words(2), [card, 0]);
    assert!(rig.mock.lock_holder(READER).is_some());
    let resets = rig.mock.resets(READER);
    drop(c);
    rig.wait_idle();
    assert_eq!(rig.mock.lock_holder(READER), None);
    assert_eq!(rig.mock.resets(READER), resets + 1);
    // Without a transaction the card is left alone.
    let (mut c, h) = Raw::session(&rig.path, 4);
    c.connect_card(h, READER, share::SHARED, 128);
    drop(c);
    rig.wait_idle();
    assert_eq!(rig.mock.resets(READER), resets + 1);
}

#[test]
fn establish_failure_passes_the_backend_code() {
    let rig = Rig::new();
    rig.mock.refuse_sessions(Some(Rv::E_NO_SERVICE));
    let mut c = rig.raw();
    c.version(4, 4);
    c.send_words(Command::ESTABLISH_CONTEXT, &[0, 0, 0]);
    assert_eq!(c.read_words(3), [0, 0, Rv::E_NO_SERVICE.0]);
    rig.mock.refuse_sessions(None);
    assert_ne!(c.establish(), 0);
}

#[test]
fn more_than_16_readers() {
    let rig = Rig::new();
    for i in 0..17 {
        rig.mock.add_reader(&format!("Extra {i:02}"));
    }
    let (mut c, _) = Raw::session(&rig.path, 6);
    c.send(Command::GET_READERS_STATE_SIZE, &[]);
    assert_eq!(c.read_words(1), [20]);
    c.send(Command::GET_READERS_STATE_ARRAY, &[]);
    let a = c.read(20 * 184);
    assert_eq!(&a[18 * 184..18 * 184 + 8], b"Extra 16");
    assert_eq!(a[19 * 184], 0);
    // Old API on the same server: exactly 16.
    c.send(Command::GET_READERS_STATE, &[]);
    let a = c.read(2944);
    assert_eq!(&a[15 * 184..15 * 184 + 8], b"Extra 13");
    c.nothing_for(20);
    // The capacity never shrinks.
    for i in 0..17 {
        rig.mock.remove_reader(&format!("Extra {i:02}"));
    }
    c.send(Command::GET_READERS_STATE_SIZE, &[]);
    assert_eq!(c.read_words(1), [20]);
}
