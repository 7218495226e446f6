//! The interposer's fallback to usbpass when no pcscd socket is reachable
//! (interpose/src/fallback.rs): started on demand, once, shared by the
//! processes of the app.
//!
//! This machine has no USB, so `PCSC_BRIDGE_USBPASS_FORCE=1` makes the fallback
//! apply, and the program it starts is a stand-in that runs `usbpass proxy` in
//! front of a test host instead of `usbpass serve` (which needs a USB reader).
//! What is tested is the interposer's part: detection, one start under a lock,
//! detaching, sharing, and clients working through it.

use std::path::PathBuf;
use std::process::Command;

use pcsc_bridge_tests::host::{skip_reason, target_dir, TestHost};

fn built(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    names.iter().map(|n| target_dir().join(n)).find(|p| p.is_file())
}

#[test]
fn starts_usbpass_once_and_shares_it() {
    if let Some(why) = skip_reason() {
        println!("SKIP: {why}");
        return;
    }
    let Some(lib) = built("PCSC_BRIDGE_LIB", &["release/libpcscbridge.so", "debug/libpcscbridge.so"]) else {
        println!("SKIP: libpcscbridge.so not built (cargo build --release -p pcsc-bridge-interpose)");
        return;
    };
    let Some(usbpass) = built("USBPASS_BIN", &["release/usbpass", "debug/usbpass"]) else {
        println!("SKIP: usbpass not built (cargo build --release -p usbpass)");
        return;
    };
    if !std::path::Path::new("/usr/bin/python3").exists() {
        println!("SKIP: /usr/bin/python3 (python3-pyscard) missing");
        return;
    }
    let host = TestHost::up().expect("test host");
    let work = std::env::temp_dir().join(format!("pcsc-bridge-fallback-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let sock = work.join("run/usbpass.comm");
    let pids = work.join("started");
    // The stand-in: records each start, then serves the test host's readers.
    let stand_in = work.join("usbpass-stand-in");
    std::fs::write(
        &stand_in,
        format!(
            "#!/bin/sh\n# args: serve --listen PATH\necho $$ >> {pids}\nexec {usbpass} proxy --listen \"$3\" --upstream {up}\n",
            pids = pids.display(),
            usbpass = usbpass.display(),
            up = host.socket.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&stand_in, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    // Low-level pyscard, so that a card reset by a concurrent first connect
    // (pcscd powers the card up for whoever comes first) can be answered with
    // SCardReconnect, as applications do.
    let script = "from smartcard.scard import *\n\
                  rv, ctx = SCardEstablishContext(SCARD_SCOPE_USER)\n\
                  assert rv == 0, hex(rv)\n\
                  rv, r = SCardListReaders(ctx, [])\n\
                  rv, card, proto = SCardConnect(ctx, r[0], SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1)\n\
                  assert rv == 0, hex(rv)\n\
                  apdu = [0x00,0xA4,0x04,0x00,0x07,0xA0,0x00,0x00,0x05,0x27,0x21,0x01]\n\
                  rv, resp = SCardTransmit(card, proto, apdu)\n\
                  if rv == SCARD_W_RESET_CARD:\n\
                  \x20   rv, proto = SCardReconnect(card, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, SCARD_LEAVE_CARD)\n\
                  \x20   rv, resp = SCardTransmit(card, proto, apdu)\n\
                  assert rv == 0, hex(rv)\n\
                  print('%d readers, SELECT %02X%02X' % (len(r), resp[-2], resp[-1]))\n";
    let run = || {
        Command::new("/usr/bin/python3")
            .args(["-c", script])
            .env("LD_PRELOAD", &lib)
            .env("PCSCLITE_CSOCK_NAME", work.join("no-pcscd-here.comm"))
            .env("PCSC_BRIDGE_USBPASS_FORCE", "1")
            .env("PCSC_BRIDGE_USBPASS_SOCKET", &sock)
            .env("PCSC_BRIDGE_USBPASS_BIN", &stand_in)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3")
    };
    // Three processes of "the app" at once.
    let children: Vec<_> = (0..3).map(|_| run()).collect();
    let outs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    // `pcsc-bridge doctor` names the backend in use.
    let doctor = built("PCSC_BRIDGE_BIN", &["release/pcsc-bridge", "debug/pcsc-bridge"]).map(|bin| {
        Command::new(bin)
            .arg("doctor")
            .env("PCSCLITE_CSOCK_NAME", work.join("no-pcscd-here.comm"))
            .env("PCSC_BRIDGE_USBPASS_SOCKET", &sock)
            .output()
            .expect("pcsc-bridge doctor")
    });
    let started = std::fs::read_to_string(&pids).unwrap_or_default();
    let started: Vec<i32> = started.lines().filter_map(|l| l.trim().parse().ok()).collect();
    // Stop what the stand-in started (its PID became usbpass's through exec).
    for pid in &started {
        // SAFETY: signalling a process this test started.
        unsafe { libc::kill(*pid, libc::SIGTERM) };
    }
    for o in &outs {
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "client failed: {out} {}", String::from_utf8_lossy(&o.stderr));
        assert!(out.contains("SELECT 9000"), "{out}");
    }
    assert_eq!(started.len(), 1, "usbpass started {} times", started.len());
    match doctor {
        Some(d) => {
            let text = String::from_utf8_lossy(&d.stdout);
            assert!(text.contains("usbpass (USB readers, no pcscd)"), "{text}");
        }
        None => println!("SKIP (doctor part): pcsc-bridge not built"),
    }
    std::fs::remove_dir_all(&work).ok();
}
