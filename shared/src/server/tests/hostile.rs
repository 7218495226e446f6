//! Hostile clients: each is cut off (or just ignored) without anyone else
//! noticing.

use std::io::Write;
use std::time::Duration;

use super::*;
use crate::consts::share;
use crate::server::mock::MOCK_ATR;

/// A 4:4 client waiting for events, to check that others keep being served.
fn waiter(rig: &Rig) -> Raw {
    let (mut w, _) = Raw::session(&rig.path, 4);
    w.send(Command::WAIT_READER_STATE_CHANGE, &[]);
    w.read(2944);
    w
}

/// Toggles the card and checks that `w` is notified.
fn check_notified(rig: &Rig, w: &mut Raw) {
    rig.mock.remove_card(READER);
    assert_eq!(w.read_words(2), [0, 0]);
    rig.mock.insert_card(READER, &MOCK_ATR);
}

#[test]
fn garbage_cuts_off_only_its_sender() {
    let rig = Rig::with(ServerConfig { notify_hold: Duration::from_millis(5), ..Default::default() });
    let mut w = waiter(&rig);
    type Garbage = Box<dyn Fn(&mut Raw)>;
    let bad: Vec<Garbage> = vec![
        // Unknown commands (incl. the two pcscd never handled).
        Box::new(|c| c.send(Command(0x03), &[])),
        Box::new(|c| c.send(Command(0x0C), &[])),
        Box::new(|c| c.send(Command(0x42), &[])),
        // Wrong sizes.
        Box::new(|c| c.send_words(Command::VERSION, &[4, 4, 0, 0])),
        Box::new(|c| c.send_words(Command::CONNECT, &[0; 30])),
        Box::new(|c| c.send_words(Command::WAIT_READER_STATE_CHANGE, &[0])),
        // Oversize TRANSMIT/CONTROL data.
        Box::new(|c| c.send_words(Command::TRANSMIT, &[0, 2, 16, 65549, 3, 16, 258, 0])),
        Box::new(|c| c.send_words(Command::CONTROL, &[0, 1, 0xFFFF_FFFF, 0, 0, 0])),
        // cbAttrLen over 264.
        Box::new(|c| {
            let mut g = words(&[0, 0x0009_0303]);
            g.extend([0u8; 264]);
            g.extend(words(&[265, 0]));
            c.send(Command::GET_ATTRIB, &g);
        }),
    ];
    for f in &bad {
        let (mut c, h) = Raw::session(&rig.path, 4);
        c.connect_card(h, READER, share::SHARED, 128);
        f(&mut c);
        c.closed();
    }
    // Everyone else is fine, and the cut-off clients' cards are gone.
    check_notified(&rig, &mut w);
    drop(w);
    rig.wait_idle();
}

#[test]
fn foreign_handles_cut_off_the_user() {
    let rig = Rig::new();
    let (mut a, ha) = Raw::session(&rig.path, 4);
    let (card, _, rv) = a.connect_card(ha, READER, share::SHARED, 128);
    assert_eq!(rv, 0);
    for cmd in [Command::STATUS, Command::BEGIN_TRANSACTION] {
        let (mut b, _) = Raw::session(&rig.path, 4);
        b.send_words(cmd, &[card, 0]);
        b.closed();
    }
    let (mut b, _) = Raw::session(&rig.path, 4);
    b.send_words(Command::DISCONNECT, &[card, 0, 0]);
    b.closed();
    // A handle that never existed, too.
    let (mut b, _) = Raw::session(&rig.path, 4);
    b.send_words(Command::STATUS, &[card ^ 0x5555, 0]);
    b.closed();
    // The owner still uses it.
    a.send_words(Command::STATUS, &[card, 0]);
    assert_eq!(a.read_words(2), [card, 0]);
}

#[test]
fn half_written_messages_block_nobody() {
    let rig = Rig::with(ServerConfig { notify_hold: Duration::from_millis(5), ..Default::default() });
    let mut w = waiter(&rig);
    // Half a header, and a header whose body never comes.
    let mut h1 = rig.raw();
    h1.s.write_all(&[12, 0, 0]).unwrap();
    let mut h2 = rig.raw();
    h2.version(4, 4);
    h2.s.write_all(&words(&[32, 0x09, 1, 2])).unwrap();
    // A complete session meanwhile.
    let (mut c, h) = Raw::session(&rig.path, 6);
    let (card, _, rv) = c.connect_card(h, READER, share::SHARED, 128);
    assert_eq!(rv, 0);
    c.send_words(Command::STATUS, &[card, 0]);
    assert_eq!(c.read_words(2), [card, 0]);
    check_notified(&rig, &mut w);
    // The stalled ones are still open (no read timeout, as pcscd).
    h1.nothing_for(50);
    h2.nothing_for(50);
}

#[test]
fn clients_vanishing_mid_wait() {
    let rig = Rig::with(ServerConfig { notify_hold: Duration::from_millis(5), ..Default::default() });
    let mut w = waiter(&rig);
    for minor in [3, 4, 6] {
        let (mut v, h) = Raw::session(&rig.path, minor);
        v.connect_card(h, READER, share::SHARED, 128);
        if minor == 3 {
            v.send_words(Command::WAIT_READER_STATE_CHANGE, &[0, 0]);
        } else {
            v.send(Command::WAIT_READER_STATE_CHANGE, &[]);
        }
        drop(v);
    }
    check_notified(&rig, &mut w);
    drop(w);
    rig.wait_idle();
}

#[test]
fn a_client_that_never_reads_blocks_only_itself() {
    let rig = Rig::with(ServerConfig { notify_hold: Duration::from_millis(5), ..Default::default() });
    // Registered, then floods requests without reading any reply: its thread
    // blocks writing; a notification for it must not block the others.
    let (mut f, _) = Raw::session(&rig.path, 4);
    f.send(Command::WAIT_READER_STATE_CHANGE, &[]);
    let mut flood = Vec::new();
    for _ in 0..400 {
        Header::new(Command::GET_READERS_STATE, 0).emit(&mut flood);
    }
    f.s.set_nonblocking(true).unwrap();
    let _ = f.s.write(&flood);
    let mut w = waiter(&rig);
    check_notified(&rig, &mut w);
    let mut w2 = waiter(&rig);
    check_notified(&rig, &mut w2);
    // New clients are served too.
    let (mut c, _) = Raw::session(&rig.path, 5);
    c.send(Command::GET_READER_EVENTS, &[]);
    assert_eq!(c.read_words(2), [3, 0]);
}

#[test]
fn notification_and_reply_never_interleave() {
    // A client registered with 4:4 whose next request is already in the socket
    // when the event comes: it gets the reply first, then the notification.
    let rig = Rig::with(ServerConfig { notify_hold: Duration::ZERO, ..Default::default() });
    for _ in 0..20 {
        let (mut c, _) = Raw::session(&rig.path, 5);
        c.send(Command::WAIT_READER_STATE_CHANGE, &[]);
        c.read(2944);
        let mut m = Vec::new();
        Header::new(Command::GET_READER_EVENTS, 0).emit(&mut m);
        rig.mock.remove_card(READER);
        c.s.write_all(&m).unwrap();
        // Either order is possible in time, but never a split: the two 8-byte
        // messages are whole, and the STOP that follows gets nothing.
        let a = c.read_words(2);
        let b = c.read_words(2);
        assert!((a == [3, 0] && b == [0, 0]) || (a == [0, 0] && b == [3, 0]), "{a:?} {b:?}");
        c.send(Command::STOP_WAITING_READER_STATE_CHANGE, &[]);
        c.nothing_for(20);
        rig.mock.insert_card(READER, &MOCK_ATR);
    }
}

#[test]
fn disconnect_all_hangs_up_everyone_and_goes_on() {
    let rig = Rig::new();
    let (mut a, h) = Raw::session(&rig.path, 4);
    a.connect_card(h, READER, share::SHARED, 128);
    let mut w = waiter(&rig);
    let mut half = rig.raw();
    half.s.write_all(&[1, 2]).unwrap();
    eventually("three connections", || rig.server.connection_count() == 3);
    rig.server.disconnect_all();
    a.closed();
    w.closed();
    half.closed();
    rig.wait_idle();
    let (mut b, _) = Raw::session(&rig.path, 6);
    b.send(Command::GET_READERS_STATE_SIZE, &[]);
    assert_eq!(b.read_words(1), [16]);
}
