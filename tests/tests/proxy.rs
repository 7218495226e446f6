//! `usbpass proxy` in front of a real host pcscd (the test host: Debian's
//! pcscd with a vpcd reader and the virtual card), driven by stock clients
//! (Debian's pyscard, `pcsc_scan`, `opensc-tool`, all on Debian's
//! libpcsclite) and by our own engine at every protocol version.
//!
//! The proxy binary is `USBPASS_BIN` if set, else `target/debug/usbpass`,
//! built first with `cargo build -p usbpass` (a no-op when fresh).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pcsc_bridge_tests::card::ATR;
use pcsc_bridge_tests::host::{repo_root, skip_reason, target_dir, TestHost};
use pcsc_proto::client::{ClientConfig, Context, ReaderStateQuery};
use pcsc_proto::consts::{disposition, protocol, reader_state as rs, scope, share};
use pcsc_proto::wire::Version;
use pcsc_proto::Rv;

const SELECT_AID: &[u8] = &[0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01];

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false)
}

/// The proxy binary (built when needed).
fn usbpass_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("USBPASS_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "USBPASS_BIN={} does not exist", p.display());
        return p;
    }
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-q", "-p", "usbpass"])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build -p usbpass");
        assert!(st.success(), "cargo build -p usbpass failed: {st}");
    });
    let bin = target_dir().join("debug/usbpass");
    assert!(bin.is_file(), "{} not built", bin.display());
    bin
}

/// A running `usbpass proxy` (killed on drop).
struct Proxy {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Proxy {
    fn start(upstream: &Path) -> Proxy {
        let dir = std::env::temp_dir().join(format!("pcsc-bridge-proxy.{}.{}", std::process::id(), rand_suffix()));
        let _ = std::fs::remove_dir_all(&dir);
        // The proxy creates the socket's folder itself (mode 0700).
        let socket = dir.join("run/pcscd.comm");
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("usbpass.log")).unwrap();
        let child = Command::new(usbpass_bin())
            .args(["proxy", "--listen"])
            .arg(&socket)
            .arg("--upstream")
            .arg(upstream)
            .env("USBPASS_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start usbpass proxy");
        let p = Proxy { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&p.socket).is_err() {
            assert!(Instant::now() < deadline, "proxy socket never appeared; log:\n{}", p.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("usbpass.log")).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn engine(&self, v: Version) -> Result<Context, Rv> {
        let cfg = ClientConfig { max_version: v, no_blocking: true, ..ClientConfig::with_socket(&self.socket) };
        Context::establish(&cfg, scope::USER)
    }

    /// A stock client with `PCSCLITE_CSOCK_NAME` pointing at the proxy.
    fn stock(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("PCSCLITE_CSOCK_NAME", &self.socket).stdin(Stdio::null());
        c
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("usbpass log ({}):\n{}", self.dir.display(), self.log());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    t ^ (N.fetch_add(1, Ordering::SeqCst) << 40)
}

fn hex_colon(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

fn host_or_skip() -> Option<TestHost> {
    if let Some(why) = skip_reason() {
        println!("SKIP: {why}");
        return None;
    }
    Some(TestHost::up().expect("test host"))
}

fn transmit(c: &Context, card: u32) -> Result<Vec<u8>, Rv> {
    let mut buf = vec![0u8; 258];
    let t = c.transmit(card, (protocol::T1, 16), SELECT_AID, None, &mut buf);
    t.rv.ok()?;
    buf.truncate(t.len);
    Ok(buf)
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

const PYSCARD_SCRIPT: &str = r#"
import sys, threading, time
from smartcard.scard import *

reader = sys.argv[1]
SELECT = [0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01]

def say(*a):
    print(*a, flush=True)

def rv(hr):
    return "0x%08x" % (hr & 0xffffffff)

hr, ctx = SCardEstablishContext(SCARD_SCOPE_USER)
say("establish", rv(hr))
hr, readers = SCardListReaders(ctx, [])
say("readers", rv(hr), "|".join(readers))
hr, card, proto = SCardConnect(ctx, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1)
say("connect", rv(hr))
hr, name, state, prot, atr = SCardStatus(card)
say("status", rv(hr), ":".join("%02x" % b for b in atr))
hr, resp = SCardTransmit(card, proto, SELECT)
say("select", rv(hr), "%02X%02X" % (resp[-2], resp[-1]))
hr = SCardDisconnect(card, SCARD_LEAVE_CARD)
say("disconnect", rv(hr))

hr, st = SCardGetStatusChange(ctx, 0, [(reader, SCARD_STATE_UNAWARE)])
cur = st[0][1] & ~SCARD_STATE_CHANGED
say("READY remove")
hr, st = SCardGetStatusChange(ctx, 20000, [(reader, cur)])
say("removed", rv(hr), bool(st[0][1] & SCARD_STATE_EMPTY))
cur = st[0][1] & ~SCARD_STATE_CHANGED
say("READY insert")
hr, st = SCardGetStatusChange(ctx, 20000, [(reader, cur)])
say("inserted", rv(hr), bool(st[0][1] & SCARD_STATE_PRESENT))
cur = st[0][1] & ~SCARD_STATE_CHANGED

def later():
    time.sleep(0.3)
    say("cancel-call", rv(SCardCancel(ctx)))
t = threading.Thread(target=later)
t.start()
hr, st = SCardGetStatusChange(ctx, 20000, [(reader, cur)])
t.join()
say("cancelled", rv(hr))
hr, readers = SCardListReaders(ctx, [])
say("after-cancel", rv(hr), len(readers))
say("release", rv(SCardReleaseContext(ctx)))
say("DONE")
"#;

#[test]
fn stock_clients_through_the_proxy() {
    for tool in ["pcsc_scan", "opensc-tool"] {
        if !on_path(tool) {
            println!("SKIP: {tool} not found (apt-get install pcsc-tools opensc)");
            return;
        }
    }
    let pyscard = Command::new("/usr/bin/python3").args(["-c", "import smartcard.scard"]).output();
    if !matches!(pyscard, Ok(o) if o.status.success()) {
        println!("SKIP: pyscard missing for /usr/bin/python3 (apt-get install python3-pyscard)");
        return;
    }
    let Some(host) = host_or_skip() else { return };
    let proxy = Proxy::start(&host.socket);
    let atr = hex_colon(&ATR);

    // pcsc_scan: readers.
    let out = run_ok(proxy.stock("timeout").args(["20", "pcsc_scan", "-r"]), "pcsc_scan -r");
    assert!(out.contains(&format!("0: {}", host.reader)), "{out}");
    assert!(out.contains("1: Virtual PCD 00 01"), "{out}");

    // opensc-tool: readers, ATR, and the SELECT.
    let out = run_ok(proxy.stock("timeout").args(["20", "opensc-tool", "-l"]), "opensc-tool -l");
    assert!(out.contains(&host.reader), "{out}");
    let out = run_ok(proxy.stock("timeout").args(["20", "opensc-tool", "-a"]), "opensc-tool -a");
    assert_eq!(out.trim(), atr, "{out}");
    let apdu = hex_colon(SELECT_AID);
    let out = run_ok(proxy.stock("timeout").args(["20", "opensc-tool", "-s", &apdu]), "opensc-tool -s");
    assert!(out.contains("SW1=0x90, SW2=0x00"), "{out}");

    // pyscard: the whole API, events, and SCardCancel (a separate connection
    // carrying SCARD_CANCEL, served by the proxy's server core).
    let script = proxy.dir.join("pyscard_proxy.py");
    std::fs::write(&script, PYSCARD_SCRIPT).unwrap();
    let mut py = proxy
        .stock("/usr/bin/python3")
        .arg(&script)
        .arg(&host.reader)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run pyscard");
    let mut lines = Vec::new();
    for line in BufReader::new(py.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        println!("pyscard: {line}");
        match line.as_str() {
            "READY remove" => host.card_remove().unwrap(),
            "READY insert" => host.card_insert().unwrap(),
            _ => lines.push(line),
        }
    }
    assert!(py.wait().unwrap().success());
    let want = [
        "establish 0x00000000".to_string(),
        format!("readers 0x00000000 {}|Virtual PCD 00 01", host.reader),
        "connect 0x00000000".into(),
        format!("status 0x00000000 {atr}"),
        "select 0x00000000 9000".into(),
        "disconnect 0x00000000".into(),
        "removed 0x00000000 True".into(),
        "inserted 0x00000000 True".into(),
        "cancel-call 0x00000000".into(),
        "cancelled 0x80100002".into(),
        "after-cancel 0x00000000 2".into(),
        "release 0x00000000".into(),
        "DONE".into(),
    ];
    assert_eq!(lines, want);

    // pcsc_scan watching: sees the ATR, a removal and an insertion.
    let mut scan = proxy.stock("pcsc_scan").arg("-n").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = scan.stdout.take().unwrap();
    let reader_thread = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) => {
                    all.push_str(&l);
                    all.push('\n');
                }
                Err(_) => break,
            }
        }
        all
    });
    std::thread::sleep(Duration::from_millis(1500));
    host.card_remove().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    host.card_insert().unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    let _ = scan.kill();
    let _ = scan.wait();
    let out = reader_thread.join().unwrap();
    let atr_spaced = ATR.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(" ");
    let removed = out.find("Card removed").expect("pcsc_scan saw no removal");
    let inserted_again = out.rfind("Card inserted").expect("pcsc_scan saw no insertion");
    assert!(out.contains(&atr_spaced), "{out}");
    assert!(inserted_again > removed, "{out}");
}

#[test]
fn engine_at_every_version_through_the_proxy() {
    let Some(host) = host_or_skip() else { return };
    let proxy = Proxy::start(&host.socket);
    // Newest first: the engine remembers per socket the version accepted last
    // and offers it first (when within max_version); the proxy echoes it.
    for v in [Version::V4_6, Version::V4_5, Version::V4_4, Version::V4_3, Version::V4_2, Version::V4_0] {
        let c = Arc::new(proxy.engine(v).unwrap_or_else(|rv| panic!("establish {v}: {rv:?}")));
        assert_eq!(c.version().unwrap(), v);
        let readers = c.list_readers().unwrap();
        assert!(readers.iter().any(|r| r == host.reader.as_bytes()), "{v}: {readers:?}");
        let (card, p) = c.connect(host.reader.as_bytes(), share::SHARED, protocol::ANY).unwrap();
        assert_eq!(p, protocol::T1);
        assert_eq!(c.status(card).unwrap().atr, ATR, "{v}");
        let r = transmit(&c, card).unwrap();
        assert_eq!(&r[r.len() - 2..], &[0x90, 0x00], "{v}");
        if v.has_reader_events() {
            assert!(c.reader_events().unwrap().is_some());
        }
        c.disconnect(card, disposition::LEAVE).unwrap();

        // Removal and insertion.
        let mut q = [ReaderStateQuery::new(host.reader.as_bytes(), rs::UNAWARE)];
        c.get_status_change(0, &mut q).unwrap();
        assert!(q[0].event_state & rs::PRESENT != 0, "{v}");
        q[0].current_state = q[0].event_state & !rs::CHANGED;
        host.card_remove().unwrap();
        c.get_status_change(20_000, &mut q).unwrap();
        assert!(q[0].event_state & rs::EMPTY != 0, "{v}: {:#x}", q[0].event_state);
        q[0].current_state = q[0].event_state & !rs::CHANGED;
        host.card_insert().unwrap();
        c.get_status_change(20_000, &mut q).unwrap();
        assert!(q[0].event_state & rs::PRESENT != 0, "{v}: {:#x}", q[0].event_state);
        q[0].current_state = q[0].event_state & !rs::CHANGED;

        // Cancel from another thread.
        let c2 = c.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            c2.cancel().unwrap();
        });
        assert_eq!(c.get_status_change(20_000, &mut q), Err(Rv::E_CANCELLED), "{v}");
        t.join().unwrap();
        c.release().unwrap();
    }
}

#[test]
fn exclusive_and_shared_between_two_clients() {
    let Some(host) = host_or_skip() else { return };
    let proxy = Proxy::start(&host.socket);
    let reader = host.reader.as_bytes();
    let a = proxy.engine(Version::V4_6).unwrap();
    let b = proxy.engine(Version::V4_6).unwrap();
    let (x, _) = a.connect(reader, share::EXCLUSIVE, protocol::ANY).unwrap();
    assert_eq!(b.connect(reader, share::SHARED, protocol::ANY).err(), Some(Rv::E_SHARING_VIOLATION));
    // A stock client is refused too while a holds the card exclusively.
    let out = proxy.stock("timeout").args(["20", "opensc-tool", "-s", &hex_colon(SELECT_AID)]).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("SW1=0x90"), "exclusive card was used by another client");
    // (pcscd keeps an exclusive handle's lock across a reconnect to shared, and
    // makes others' SCardConnect wait for it: so disconnect instead.)
    a.disconnect(x, disposition::LEAVE).unwrap();
    let (x, _) = a.connect(reader, share::SHARED, protocol::ANY).unwrap();
    let (y, _) = b.connect(reader, share::SHARED, protocol::ANY).unwrap();
    assert!(transmit(&a, x).is_ok());
    assert!(transmit(&b, y).is_ok());
    a.begin_transaction(x).unwrap();
    assert_eq!(transmit(&b, y), Err(Rv::E_SHARING_VIOLATION));
    a.end_transaction(x, disposition::LEAVE).unwrap();
    assert!(transmit(&b, y).is_ok());
    // A client dying inside its transaction: the proxy releases its upstream
    // context, the host pcscd resets the card (a sees SCARD_W_RESET_CARD until
    // it reconnects) and a goes on.
    b.begin_transaction(y).unwrap();
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw_reset = false;
    loop {
        match transmit(&a, x) {
            Ok(_) => break,
            Err(Rv::W_RESET_CARD) => {
                saw_reset = true;
                a.reconnect(x, share::SHARED, protocol::ANY, disposition::LEAVE).unwrap();
            }
            Err(Rv::E_SHARING_VIOLATION) => {}
            Err(rv) => panic!("{rv:?}"),
        }
        assert!(Instant::now() < deadline, "the dead client's transaction never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(saw_reset, "the dead client's transaction ended without a reset");
}

#[test]
fn host_pcscd_restart_under_a_running_client() {
    let Some(host) = host_or_skip() else { return };
    let mut proxy = Proxy::start(&host.socket);
    let c = proxy.engine(Version::V4_4).unwrap();
    let (card, _) = c.connect(host.reader.as_bytes(), share::SHARED, protocol::ANY).unwrap();
    assert!(transmit(&c, card).is_ok());
    host.restart_pcscd().unwrap();
    assert!(proxy.alive(), "the proxy died with the host pcscd");
    // New contexts work.
    let deadline = Instant::now() + Duration::from_secs(10);
    let d = loop {
        match proxy.engine(Version::V4_6) {
            Ok(d) if d.list_readers().map(|r| !r.is_empty()).unwrap_or(false) => break d,
            _ => {}
        }
        assert!(Instant::now() < deadline, "no working context after the restart; log:\n{}", proxy.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    let (card2, _) = d.connect(host.reader.as_bytes(), share::SHARED, protocol::ANY).unwrap();
    assert!(transmit(&d, card2).is_ok());
    // The running client: its old card is gone, a new one works.
    assert!(transmit(&c, card).is_err());
    let _ = c.disconnect(card, disposition::LEAVE);
    let (card3, _) = c.connect(host.reader.as_bytes(), share::SHARED, protocol::ANY).unwrap();
    assert!(transmit(&c, card3).is_ok());
    // And stock clients.
    if on_path("opensc-tool") {
        let out = run_ok(proxy.stock("timeout").args(["20", "opensc-tool", "-a"]), "opensc-tool -a");
        assert_eq!(out.trim(), hex_colon(&ATR));
    }
    assert!(proxy.alive());
}

#[test]
fn socket_activation() {
    if !on_path("systemd-socket-activate") {
        println!("SKIP: systemd-socket-activate not found (systemd package)");
        return;
    }
    let Some(host) = host_or_skip() else { return };
    let dir = std::env::temp_dir().join(format!("pcsc-bridge-proxy-sa.{}.{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("activated.comm");
    let log = std::fs::File::create(dir.join("usbpass.log")).unwrap();
    // usbpass is exec'ed on the first connection and gets the socket as fd 3.
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg(usbpass_bin())
        .args(["proxy", "--listen", "/nonexistent/ignored.comm", "--upstream"])
        .arg(&host.socket)
        .env("USBPASS_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("systemd-socket-activate");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no activation socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let cfg = ClientConfig::with_socket(&socket);
    let c = Context::establish(&cfg, scope::USER).expect("establish through the activated proxy");
    assert!(c.list_readers().unwrap().iter().any(|r| r == host.reader.as_bytes()));
    let out =
        Command::new("timeout").args(["20", "pcsc_scan", "-r"]).env("PCSCLITE_CSOCK_NAME", &socket).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(dir.join("usbpass.log")).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    if on_path("pcsc_scan") {
        assert!(text.contains(&host.reader), "{text}\n{log}");
    }
    assert!(log.contains("activated=true"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
