//! The `pcsc-bridge` command-line tool: `doctor` against a real test host (and against
//! missing or dead sockets), `flatpak enable/disable/status` on a private Flatpak user
//! folder.
//!
//! The tool is `PCSC_BRIDGE_BIN` if set, else `target/release/pcsc-bridge` (brought up to
//! date with `cargo build --release -p pcsc-bridge-interpose`, which also builds the library).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pcsc_bridge_tests::host::{repo_root, skip_reason, target_dir, TestHost};

const ATR: &str = "3B 8A 80 01 70 63 73 63 62 72 69 64 67 65 17";

/// The tool under test (and the library next to it), built when needed.
fn tool() -> PathBuf {
    if let Some(p) = std::env::var_os("PCSC_BRIDGE_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "PCSC_BRIDGE_BIN={} does not exist", p.display());
        return p;
    }
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "--release", "-p", "pcsc-bridge-interpose"])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(st.success(), "cargo build --release -p pcsc-bridge-interpose failed: {st}");
    });
    let bin = target_dir().join("release/pcsc-bridge");
    assert!(bin.is_file(), "{} not produced by the build", bin.display());
    bin
}

fn library() -> PathBuf {
    std::env::var_os("PCSC_BRIDGE_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| tool().parent().unwrap().join("libpcscbridge.so"))
}

/// A command for the tool with a clean PC/SC environment (no route, no sandbox).
fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(tool());
    c.args(args);
    for v in [
        "LD_PRELOAD",
        "LIBPCSCLITE_DELEGATE",
        "PCSCLITE_CSOCK_NAME",
        "FLATPAK_ID",
        "SNAP_NAME",
        "PCSC_BRIDGE_MAX_PROTOCOL",
    ] {
        c.env_remove(v);
    }
    c
}

fn run(mut c: Command) -> (i32, String, Output) {
    let out = c.output().expect("run pcsc-bridge");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), text, out)
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("pcsc-bridge-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn doctor_reports_protocol_readers_and_card() {
    if let Some(why) = skip_reason() {
        println!("SKIP: {why}");
        return;
    }
    let host = TestHost::up().expect("test host");

    let mut c = cmd(&["doctor"]);
    c.env("PCSCLITE_CSOCK_NAME", &host.socket);
    let (code, text, out) = run(c);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(code, 0, "doctor should pass against a working host");
    assert!(text.contains("(from PCSCLITE_CSOCK_NAME): a socket, accepting connections"), "{text}");
    assert!(text.contains("daemon: protocol 4:4, spoken by pcsc-lite 1.8.24-2.2.3"), "{text}");
    assert!(text.contains("reader-states: 16 slots, the default"), "{text}");
    assert!(text.contains(&format!("{}: card present, ATR {ATR}", host.reader)), "{text}");
    assert!(text.contains("route: none"), "{text}");
    assert!(text.contains("offers protocol 4:4"), "{text}");
    assert!(text.contains("result: OK"), "{text}");

    // JSON carries the same facts
    let mut c = cmd(&["doctor", "--json"]);
    c.env("PCSCLITE_CSOCK_NAME", &host.socket);
    let (code, json, _) = run(c);
    assert_eq!(code, 0, "{json}");
    assert!(json.contains("\"ok\": true"), "{json}");
    assert!(json.contains("\"protocol\": \"4:4\""), "{json}");
    assert!(json.contains(&format!("\"name\": \"{}\"", host.reader)), "{json}");
    assert!(json.contains(&format!("\"atr\": \"{ATR}\"")), "{json}");

    // --socket instead of the environment
    let (code, text, _) = run(cmd(&["doctor", "--socket", host.socket.to_str().unwrap()]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("(--socket)"), "{text}");

    // through the preload route: the app-level probe is served by pcsc-bridge
    let lib = library();
    let mut c = cmd(&["doctor"]);
    c.env("PCSCLITE_CSOCK_NAME", &host.socket).env("LD_PRELOAD", &lib);
    let (code, text, _) = run(c);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("route: preload"), "{text}");
    assert!(text.contains(&format!("gets {} (libpcscbridge ", lib.display())), "{text}");
    assert!(text.contains("without pcsc-bridge, an app here: works"), "{text}");

    // no card: still a working setup, the reader says so (pcscd notices within ~0.5 s)
    host.card_remove().expect("card remove");
    let mut last = String::new();
    for _ in 0..40 {
        let mut c = cmd(&["doctor"]);
        c.env("PCSCLITE_CSOCK_NAME", &host.socket);
        let (code, text, _) = run(c);
        assert_eq!(code, 0, "{text}");
        last = text;
        if last.contains(&format!("{}: no card", host.reader)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(last.contains(&format!("{}: no card", host.reader)), "{last}");
    assert!(last.contains("2 readers, 0 cards"), "{last}");
}

#[test]
fn doctor_without_a_socket_says_what_to_do() {
    let dir = TempDir::new("nosock");
    let missing = dir.0.join("pcscd.comm");
    let mut c = cmd(&["doctor"]);
    c.env("PCSCLITE_CSOCK_NAME", &missing);
    let (code, text, _) = run(c);
    println!("{text}");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("[FAIL] socket: {} (from PCSCLITE_CSOCK_NAME) does not exist", missing.display())),
        "{text}"
    );
    assert!(text.contains("result: PROBLEM"), "{text}");
    assert!(text.contains("next step: no pcscd socket at"), "{text}");
    assert!(text.contains("usbpass"), "{text}");

    let mut c = cmd(&["doctor", "--json"]);
    c.env("PCSCLITE_CSOCK_NAME", &missing);
    let (code, json, _) = run(c);
    assert_eq!(code, 1);
    assert!(json.contains("\"ok\": false") && json.contains("\"exists\": false"), "{json}");
}

#[test]
fn doctor_on_a_dead_socket() {
    let dir = TempDir::new("dead");
    let path = dir.0.join("pcscd.comm");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // the file stays, nobody listens
    let mut c = cmd(&["doctor"]);
    c.env("PCSCLITE_CSOCK_NAME", &path);
    let (code, text, _) = run(c);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("is a socket, but no daemon answers on it"), "{text}");
    assert!(text.contains("next step: pcscd is not running"), "{text}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, out) = run(cmd(&["doctor", "--bogus"]));
    assert_eq!(code, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option --bogus"));
    let (code, _, _) = run(cmd(&["flatpak", "enable", "not-an-app-id"]));
    assert_eq!(code, 2);
    let (code, text, _) = run(cmd(&["--version"]));
    assert_eq!(code, 0);
    assert!(text.starts_with("pcsc-bridge "));
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false)
}

#[test]
fn flatpak_enable_and_disable_round_trip() {
    if !on_path("flatpak") {
        println!("SKIP: flatpak not installed (apt-get install flatpak)");
        return;
    }
    let dir = TempDir::new("flatpak");
    let home = dir.0.join("home");
    let user = dir.0.join("flatpak");
    std::fs::create_dir_all(user.join("overrides")).unwrap();
    let app = "org.example.PcscBridgeTest";
    let ovr = user.join("overrides").join(app);
    // the user's own override, which must survive
    let before = "[Environment]\nKEEP=1\n";
    std::fs::write(&ovr, before).unwrap();
    let fp = |args: &[&str]| {
        let mut c = cmd(args);
        c.env("HOME", &home).env("FLATPAK_USER_DIR", &user);
        run(c)
    };
    let lib = library();
    let (code, text, out) = fp(&["flatpak", "enable", app, "--lib", lib.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}{}", String::from_utf8_lossy(&out.stderr));
    let copied = home.join(".var/app").join(app).join("pcsc-bridge/libpcscbridge.so");
    assert!(copied.is_file());
    assert!(home.join(".var/app").join(app).join("pcsc-bridge/pcsc-bridge").is_file());
    let on = std::fs::read_to_string(&ovr).unwrap();
    assert!(on.contains(&format!("LD_PRELOAD={}", copied.display())), "{on}");
    assert!(on.contains("KEEP=1"), "{on}");
    assert!(on.contains("sockets=pcsc;"), "{on}"); // the app is not installed: its metadata is unknown

    let (code, text, _) = fp(&["flatpak", "status", app]);
    assert_eq!(code, 0);
    assert!(text.contains("enabled (route preload)"), "{text}");
    let (_, all, _) = fp(&["flatpak", "status"]);
    assert!(all.contains(app), "{all}");

    // switching route replaces the first one
    let (code, text, _) = fp(&["flatpak", "enable", app, "--route", "proxy", "--user-dir", user.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    let on = std::fs::read_to_string(&ovr).unwrap();
    assert!(!on.contains("LD_PRELOAD"), "{on}");
    assert!(on.contains("PCSCLITE_CSOCK_NAME=/run/user/"), "{on}");
    assert!(on.contains("filesystems=xdg-run/pcsc-bridge;"), "{on}");

    let (code, text, _) = fp(&["flatpak", "disable", app]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(std::fs::read_to_string(&ovr).unwrap(), before, "disable must restore the override file");
    assert!(!home.join(".var/app").join(app).join("pcsc-bridge").exists());
    let (_, text, _) = fp(&["flatpak", "status", app]);
    assert!(text.contains("not enabled"), "{text}");
    let (code, text, _) = fp(&["flatpak", "disable", app]);
    assert_eq!(code, 0);
    assert!(text.contains("nothing to do"), "{text}");
    assert!(Path::new(&ovr).exists());
}
