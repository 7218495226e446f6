//! Two test hosts at once: sockets exist, card remove/insert round trip, tear-down.

use std::time::{Duration, Instant};

use pcsc_bridge_tests::card::ATR;
use pcsc_bridge_tests::host::{skip_reason, TestHost};
use pcsc_bridge_tests::vpcd::hex;

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timeout waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_hosts_card_round_trip() {
    if let Some(why) = skip_reason() {
        println!("SKIP: {why}");
        return;
    }
    let t0 = Instant::now();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(TestHost::up);
        let b = s.spawn(TestHost::up);
        (a.join().unwrap(), b.join().unwrap())
    });
    let a = a.expect("host a");
    let b = b.expect("host b");
    println!("two hosts up in {:?}", t0.elapsed());
    assert_ne!(a.dir, b.dir);
    assert_ne!(a.port, b.port);
    assert_ne!(a.socket, b.socket);
    let atr_line = format!("Card ATR: {}", hex(&ATR));
    for h in [&a, &b] {
        assert!(h.socket.exists(), "{} missing", h.socket.display());
        assert_eq!(h.reader, "Virtual PCD 00 00");
        assert!(h.card_ctl.exists());
        assert!(h.pcscd_log().contains(&atr_line));
        assert_eq!(h.card_status().unwrap(), "present");
    }

    a.card_remove().unwrap();
    assert_eq!(a.card_status().unwrap(), "absent");
    assert_eq!(b.card_status().unwrap(), "present");
    wait_for("pcscd to see the removal", Duration::from_secs(5), || {
        a.pcscd_log().contains("Card Removed From Virtual PCD 00 00")
    });
    assert!(!b.pcscd_log().contains("Card Removed"));

    a.card_insert().unwrap();
    assert_eq!(a.card_status().unwrap(), "present");
    wait_for("pcscd to see the insertion", Duration::from_secs(5), || a.pcscd_log().matches(&atr_line).count() >= 2);

    let (da, db) = (a.dir.clone(), b.dir.clone());
    drop(a);
    drop(b);
    assert!(!da.exists() && !db.exists());
}

#[test]
fn restart_pcscd_keeps_socket_and_card() {
    if let Some(why) = skip_reason() {
        println!("SKIP: {why}");
        return;
    }
    let h = TestHost::up().expect("host");
    let t0 = Instant::now();
    h.restart_pcscd().expect("restart");
    println!("pcscd restarted in {:?}", t0.elapsed());
    assert!(h.socket.exists());
    assert!(h.pcscd_log().contains(&format!("Card ATR: {}", hex(&ATR))));
    assert_eq!(h.card_status().unwrap(), "present");
}
