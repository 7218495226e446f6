//! `pcsc-bridge doctor`: what works and what does not in this environment, in plain
//! words, with a next step when something is wrong. Meant to be run inside the
//! sandbox (`flatpak run --command=… APP-ID doctor`), where the app runs.
//!
//! Checks, in order: the environment (Flatpak, Snap or none); the daemon socket
//! (exists, is a socket, accepts connections); the daemon through pcsc-bridge's own
//! engine (protocol version, size of its reader-state array, readers and cards);
//! which pcsc-bridge route this environment activates; what an app that loads
//! `libpcsclite.so.1` gets (probed in a child process); the library the app would
//! use without pcsc-bridge and the protocol version it offers; the usbpass proxy.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use pcsc_proto::client::config::secure_getenv;
use pcsc_proto::client::{ClientConfig, Context};
use pcsc_proto::consts::{card_state, scope, MAX_READERS_CONTEXTS};
use pcsc_proto::wire::Version;
use pcsc_proto::Rv;

use super::json::J;
use super::keyfile::KeyFile;
use super::probe::{self, EnvChanges, Probe};
use super::{bridge_version, fallback, hex, proxy_socket_default, DoctorOpts, VERSION};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Info,
    Warn,
    Fail,
}

impl Status {
    fn tag(self) -> &'static str {
        match self {
            Status::Ok => "[ ok ]",
            Status::Info => "[info]",
            Status::Warn => "[warn]",
            Status::Fail => "[FAIL]",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Info => "info",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub summary: String,
    pub details: Vec<String>,
    pub data: Vec<(String, J)>,
}

impl Check {
    fn new(name: &'static str, status: Status, summary: impl Into<String>) -> Check {
        Check { name, status, summary: summary.into(), details: Vec::new(), data: Vec::new() }
    }
    fn detail(mut self, d: impl Into<String>) -> Check {
        self.details.push(d.into());
        self
    }
    fn data(mut self, k: &str, v: impl Into<J>) -> Check {
        self.data.push((k.to_string(), v.into()));
        self
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub checks: Vec<Check>,
    pub next_steps: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        !self.checks.iter().any(|c| c.status == Status::Fail)
    }

    fn push(&mut self, c: Check) {
        self.checks.push(c);
    }

    fn step(&mut self, s: impl Into<String>) {
        let s = s.into();
        if !self.next_steps.contains(&s) {
            self.next_steps.push(s);
        }
    }

    pub fn text(&self) -> String {
        let mut s = format!("pcsc-bridge {VERSION} doctor\n");
        for c in &self.checks {
            s.push_str(&format!("{} {}: {}\n", c.status.tag(), c.name, c.summary));
            for d in &c.details {
                s.push_str(&format!("         {d}\n"));
            }
        }
        s.push('\n');
        if self.ok() {
            s.push_str("result: OK, PC/SC works here.\n");
        } else {
            s.push_str("result: PROBLEM, PC/SC does not work here.\n");
        }
        for n in &self.next_steps {
            s.push_str(&format!("next step: {n}\n"));
        }
        s
    }

    pub fn json(&self) -> J {
        let checks = self
            .checks
            .iter()
            .map(|c| {
                J::Obj(vec![
                    ("name".into(), c.name.into()),
                    ("status".into(), c.status.name().into()),
                    ("summary".into(), c.summary.clone().into()),
                    ("details".into(), J::Arr(c.details.iter().map(|d| d.clone().into()).collect())),
                    ("data".into(), J::Obj(c.data.clone())),
                ])
            })
            .collect();
        J::Obj(vec![
            ("pcsc_bridge".into(), VERSION.into()),
            ("ok".into(), self.ok().into()),
            ("checks".into(), J::Arr(checks)),
            ("next_steps".into(), J::Arr(self.next_steps.iter().map(|n| n.clone().into()).collect())),
        ])
    }
}

pub fn run(o: &DoctorOpts) -> i32 {
    let r = diagnose(o);
    if o.json {
        println!("{}", r.json().render());
    } else {
        print!("{}", r.text());
    }
    if r.ok() {
        0
    } else {
        1
    }
}

/// Where this process runs.
#[derive(Debug, Clone, Default)]
struct Sandbox {
    flatpak_app: Option<String>,
    flatpak_runtime: Option<String>,
    in_flatpak: bool,
    snap: Option<String>,
}

fn sandbox() -> Sandbox {
    let mut s = Sandbox::default();
    if let Ok(t) = std::fs::read_to_string("/.flatpak-info") {
        let k = KeyFile::parse(&t);
        s.in_flatpak = true;
        s.flatpak_app = k.get("Application", "name");
        s.flatpak_runtime = k.get("Application", "runtime");
    }
    if let Some(id) = std::env::var("FLATPAK_ID").ok().filter(|v| !v.is_empty()) {
        s.in_flatpak = true;
        s.flatpak_app.get_or_insert(id);
    }
    s.snap = std::env::var("SNAP_NAME").ok().filter(|v| !v.is_empty());
    s
}

impl Sandbox {
    /// The app ID for hints (a placeholder outside Flatpak).
    fn app(&self) -> String {
        self.flatpak_app.clone().unwrap_or_else(|| "APP-ID".into())
    }
}

/// How this environment brings pcsc-bridge in.
#[derive(Debug, Clone, Default)]
struct Routes {
    /// `(path, version)` of ours in LD_PRELOAD.
    preload: Vec<(String, String)>,
    /// LD_PRELOAD entries named like ours that are missing or not ours.
    preload_broken: Vec<String>,
    /// Folders on LD_LIBRARY_PATH whose libpcsclite.so.1 is ours.
    dropin: Vec<(String, String)>,
    /// LIBPCSCLITE_DELEGATE: path, our version if ours.
    delegate: Option<(String, Option<String>)>,
    /// PCSCLITE_CSOCK_NAME names the usbpass proxy.
    proxy: bool,
}

impl Routes {
    fn active(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if !self.preload.is_empty() {
            v.push("preload");
        }
        if !self.dropin.is_empty() {
            v.push("drop-in");
        }
        if matches!(&self.delegate, Some((_, Some(_)))) {
            v.push("delegate");
        }
        if self.proxy {
            v.push("proxy");
        }
        v
    }

    /// A route that replaces the app's library with ours.
    fn bridge_loaded(&self) -> bool {
        !self.preload.is_empty() || !self.dropin.is_empty() || matches!(&self.delegate, Some((_, Some(_))))
    }
}

fn env_str(name: &str) -> Option<String> {
    secure_getenv(name).map(|v| v.to_string_lossy().into_owned()).filter(|v| !v.is_empty())
}

fn ours(path: &Path) -> Option<String> {
    bridge_version(path).ok().flatten()
}

fn routes(socket: &Path) -> Routes {
    let mut r = Routes::default();
    if let Some(pre) = env_str("LD_PRELOAD") {
        for e in pre.split([':', ' ']).filter(|e| !e.is_empty()) {
            match ours(Path::new(e)) {
                Some(v) => r.preload.push((e.to_string(), v)),
                None if e.contains("pcscbridge") || e.contains("pcsc-bridge") => r.preload_broken.push(e.to_string()),
                None => {}
            }
        }
    }
    if let Some(lp) = env_str("LD_LIBRARY_PATH") {
        for d in lp.split(':').filter(|d| !d.is_empty()) {
            if let Some(v) = ours(&Path::new(d).join("libpcsclite.so.1")) {
                r.dropin.push((d.to_string(), v));
            }
        }
    }
    if let Some(d) = env_str("LIBPCSCLITE_DELEGATE") {
        let v = ours(Path::new(&d));
        r.delegate = Some((d, v));
    }
    r.proxy = socket == proxy_socket_default() || socket.ends_with("pcsc-bridge/pcscd.comm");
    r
}

/// The environment for "the app without pcsc-bridge": our entries removed.
fn native_env(r: &Routes) -> EnvChanges {
    let mut env: EnvChanges = Vec::new();
    if !r.preload.is_empty() || !r.preload_broken.is_empty() {
        let pre = env_str("LD_PRELOAD").unwrap_or_default();
        let keep: Vec<&str> = pre
            .split([':', ' '])
            .filter(|e| !e.is_empty())
            .filter(|e| !r.preload.iter().any(|(p, _)| p == e) && !r.preload_broken.iter().any(|p| p == e))
            .collect();
        env.push(("LD_PRELOAD".into(), (!keep.is_empty()).then(|| OsString::from(keep.join(":")))));
    }
    if !r.dropin.is_empty() {
        let lp = env_str("LD_LIBRARY_PATH").unwrap_or_default();
        let keep: Vec<&str> =
            lp.split(':').filter(|d| !d.is_empty() && !r.dropin.iter().any(|(x, _)| x == d)).collect();
        env.push(("LD_LIBRARY_PATH".into(), (!keep.is_empty()).then(|| OsString::from(keep.join(":")))));
    }
    if matches!(&r.delegate, Some((_, Some(_)))) {
        env.push(("LIBPCSCLITE_DELEGATE".into(), None));
    }
    env
}

fn multiarch() -> String {
    match std::env::consts::ARCH {
        "x86" => "i386-linux-gnu".into(),
        a => format!("{a}-linux-gnu"),
    }
}

/// Copies of libpcsclite.so.1 where apps find them: `(path, canonical path, note)`.
fn library_copies() -> Vec<(String, PathBuf, String)> {
    let ma = multiarch();
    let mut dirs: Vec<String> = Vec::new();
    if let Some(lp) = env_str("LD_LIBRARY_PATH") {
        dirs.extend(lp.split(':').filter(|d| !d.is_empty()).map(str::to_string));
    }
    for d in [
        "/app/lib",
        "/app/lib64",
        &format!("/app/lib/{ma}"),
        &format!("/usr/lib/{ma}"),
        "/usr/lib64",
        "/usr/lib",
        &format!("/lib/{ma}"),
    ] {
        dirs.push(d.to_string());
    }
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut out = Vec::new();
    for d in dirs {
        let p = Path::new(&d).join("libpcsclite.so.1");
        let Ok(real) = std::fs::canonicalize(&p) else { continue };
        if seen.contains(&real) {
            continue;
        }
        seen.push(real.clone());
        let d = describe_library(&real);
        out.push((p.display().to_string(), real, d));
    }
    out
}

/// What kind of libpcsclite a file is, in words.
fn describe_library(path: &Path) -> String {
    let Ok(data) = std::fs::read(path) else { return "unreadable".into() };
    if let Some(v) = super::find_note(&data) {
        return format!("pcsc-bridge ({v})");
    }
    let mut s = if super::contains(&data, b"LIBPCSCLITE_DELEGATE") {
        "pcsc-lite 2.1.0 or later (a dispatcher: honours LIBPCSCLITE_DELEGATE)".to_string()
    } else if super::contains(&data, b"SCardEstablishContext") {
        "pcsc-lite before 2.1.0 (ignores LIBPCSCLITE_DELEGATE)".to_string()
    } else {
        "not a PC/SC library".to_string()
    };
    if let Some(v) = pkgconfig_version(path) {
        s.push_str(&format!(", pkg-config says {v}"));
    }
    s
}

/// `Version:` of a libpcsclite.pc next to the library (`DIR/pkgconfig/`).
fn pkgconfig_version(lib: &Path) -> Option<String> {
    let pc = lib.parent()?.join("pkgconfig/libpcsclite.pc");
    let t = std::fs::read_to_string(pc).ok()?;
    t.lines().find_map(|l| l.strip_prefix("Version:")).map(|v| format!("pcsc-lite {}", v.trim()))
}

fn version_of(major: i32, minor: i32) -> Option<Version> {
    Version::from_numbers(major as u32, minor as u32)
}

fn rv_text(rv: u32) -> String {
    Rv(rv).to_string()
}

/// The daemon socket: true when a daemon accepts connections. With `fallback_possible`
/// (pcsc-bridge is the app's library and falls back to usbpass for the USB readers it sees)
/// a missing socket is not a failure.
fn check_socket(
    r: &mut Report,
    cfg: &ClientConfig,
    source: &str,
    sb: &Sandbox,
    proxy: bool,
    fallback_possible: bool,
) -> bool {
    let path = cfg.socket.display().to_string();
    let mut c = Check::new("socket", Status::Ok, format!("{path} ({source})"))
        .data("path", path.clone())
        .data("source", source);
    let app = sb.app();
    let hint_missing = if proxy {
        format!(
            "{path} is the usbpass proxy's socket: start the proxy on the host (`usbpass proxy`, or \
             `systemctl --user enable --now usbpass-proxy.socket`){}.",
            if sb.in_flatpak { ", then restart the app" } else { "" }
        )
    } else if sb.in_flatpak {
        format!(
            "the sandbox has no pcscd socket: the app lacks --socket=pcsc, or the host ran no pcscd when the app \
             started (Flatpak binds the socket only if it exists then). On the host: `flatpak override --user \
             --socket=pcsc {app}`, make sure pcscd runs (`systemctl enable --now pcscd.socket`), and restart the app. \
             Without a pcscd on the host, use usbpass (`usbpass proxy`, then `pcsc-bridge flatpak enable {app} --route proxy`)."
        )
    } else {
        format!(
            "no pcscd socket at {path}: start pcscd (`systemctl enable --now pcscd.socket`), or point \
             PCSCLITE_CSOCK_NAME at the daemon's socket; without pcscd, use usbpass (`usbpass proxy`)."
        )
    };
    let meta = match std::fs::metadata(&cfg.socket) {
        Ok(m) => m,
        Err(e) => {
            let what = if e.kind() == ErrorKind::NotFound {
                "does not exist".to_string()
            } else {
                format!("cannot be read: {e}")
            };
            c.summary = format!("{path} ({source}) {what}");
            if fallback_possible {
                c.status = Status::Info;
                c.summary.push_str(": pcsc-bridge uses usbpass for the USB readers instead");
            } else {
                c.status = Status::Fail;
                r.step(hint_missing);
            }
            r.push(c.data("exists", false).data("is_socket", false).data("connectable", false));
            return false;
        }
    };
    c = c.data("exists", true);
    if !meta.file_type().is_socket() {
        c.status = Status::Fail;
        c.summary = format!("{path} ({source}) exists but is not a socket");
        r.push(c.data("is_socket", false).data("connectable", false));
        r.step(format!("{path} is not pcscd's socket: point PCSCLITE_CSOCK_NAME at the daemon's socket."));
        return false;
    }
    c = c.data("is_socket", true);
    match UnixStream::connect(&cfg.socket) {
        Ok(_) => {
            c.summary.push_str(": a socket, accepting connections");
            r.push(c.data("connectable", true));
            true
        }
        Err(e) => {
            c.status = Status::Fail;
            c = c.data("connectable", false).data("error", e.to_string());
            if e.kind() == ErrorKind::ConnectionRefused {
                c.summary = format!("{path} ({source}) is a socket, but no daemon answers on it");
                r.push(c);
                r.step(if sb.in_flatpak {
                    "pcscd stopped, or restarted after this app started (Flatpak keeps the old socket file): \
                     make sure pcscd runs on the host, then restart the app."
                        .to_string()
                } else {
                    "pcscd is not running (a stale socket): start it (`systemctl start pcscd.socket`).".to_string()
                });
            } else {
                c.summary = format!("{path} ({source}) is a socket, but connecting fails: {e}");
                r.push(c);
                if e.kind() == ErrorKind::PermissionDenied {
                    r.step(format!("this user may not connect to {path}: check its permissions."));
                }
            }
            false
        }
    }
}

struct Daemon {
    version: Version,
}

fn check_daemon(r: &mut Report, cfg: &ClientConfig) -> Option<Daemon> {
    let ctx = match Context::establish(cfg, scope::SYSTEM) {
        Ok(c) => c,
        Err(rv) => {
            r.push(
                Check::new(
                    "daemon",
                    Status::Fail,
                    format!("SCardEstablishContext through pcsc-bridge's engine fails: {rv}"),
                )
                .data("error", format!("0x{:08X}", rv.0)),
            );
            if rv == Rv::W_SECURITY_VIOLATION {
                r.step("polkit refuses this user access to pcscd (pcscd 2.x): allow `org.debian.pcsc-lite.access_pcsc`, or run pcscd with --disable-polkit.");
            } else {
                r.step("the daemon does not complete the handshake: check pcscd's log (`journalctl -u pcscd`).");
            }
            return None;
        }
    };
    let version = match ctx.version() {
        Ok(v) => v,
        Err(rv) => {
            r.push(Check::new("daemon", Status::Fail, format!("no protocol version: {rv}")));
            return None;
        }
    };
    r.push(
        Check::new("daemon", Status::Ok, format!("protocol {version}, spoken by {}", version.releases()))
            .data("protocol", version.to_string())
            .data("releases", version.releases()),
    );
    let states = match ctx.reader_states() {
        Ok(s) => s,
        Err(rv) => {
            r.push(Check::new("readers", Status::Fail, format!("reading the daemon's reader states fails: {rv}")));
            let _ = ctx.release();
            return Some(Daemon { version });
        }
    };
    let slots = ctx.reader_slots().ok().flatten().unwrap_or(states.len());
    let c = if version.has_state_array() {
        Check::new("reader-states", Status::Info, format!("{slots} slots (4:6 sends its size, any size works)"))
    } else if slots == MAX_READERS_CONTEXTS {
        Check::new("reader-states", Status::Ok, format!("{slots} slots, the default"))
    } else {
        Check::new(
            "reader-states",
            Status::Warn,
            format!("{slots} slots, not the default {MAX_READERS_CONTEXTS}: pcsc-lite's own library of the same protocol misreads it (as with Fedora's 48-slot build); pcsc-bridge adapts"),
        )
    };
    r.push(c.data("slots", slots).data("default", slots == MAX_READERS_CONTEXTS || version.has_state_array()));
    let layout = version.rs_layout();
    let mut readers = Vec::new();
    let mut details = Vec::new();
    let mut cards = 0;
    for s in states.iter().filter(|s| !s.is_empty(layout)) {
        let name = String::from_utf8_lossy(&s.name).into_owned();
        let present = s.state & card_state::PRESENT != 0;
        let atr = s.atr();
        let mut d = format!("{name}: ");
        if present {
            cards += 1;
            d.push_str("card present");
            if !atr.is_empty() {
                d.push_str(&format!(", ATR {}", hex(atr)));
            }
            if s.sharing == -1 {
                d.push_str(" (in exclusive use)");
            }
        } else if s.state & card_state::ABSENT != 0 {
            d.push_str("no card");
        } else {
            d.push_str(&format!("state 0x{:04X}", s.state));
        }
        details.push(d);
        readers.push(J::Obj(vec![
            ("name".into(), name.into()),
            ("card".into(), present.into()),
            ("atr".into(), (present && !atr.is_empty()).then(|| hex(atr)).into()),
        ]));
    }
    let n = readers.len();
    let mut c = if n == 0 {
        Check::new("readers", Status::Warn, "none: the daemon sees no reader")
    } else {
        Check::new("readers", Status::Ok, format!("{n} reader{}, {cards} card{}", plural(n), plural(cards)))
    };
    c.details = details;
    r.push(c.data("readers", J::Arr(readers)));
    if n == 0 {
        r.step("plug in a reader (on the host); a reader pcscd cannot see (no driver, no pcscd access to USB) can be served by usbpass.");
    }
    let _ = ctx.release();
    Some(Daemon { version })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn check_routes(r: &mut Report, routes: &Routes, copies: &[(String, PathBuf, String)]) {
    let active = routes.active();
    let mut c = if active.is_empty() {
        Check::new("route", Status::Info, "none: apps use their own libpcsclite")
    } else {
        Check::new("route", Status::Info, active.join(", "))
    };
    for (p, v) in &routes.preload {
        c = c.detail(format!("preload: LD_PRELOAD has {p} ({v})"));
    }
    for p in &routes.preload_broken {
        c.status = Status::Warn;
        c = c.detail(format!("LD_PRELOAD names {p}, which is missing or not pcsc-bridge's library here"));
    }
    for (d, v) in &routes.dropin {
        c = c.detail(format!("drop-in: {d}/libpcsclite.so.1 on LD_LIBRARY_PATH is pcsc-bridge ({v})"));
    }
    if let Some((p, v)) = &routes.delegate {
        match v {
            Some(v) => {
                c = c.detail(format!("delegate: LIBPCSCLITE_DELEGATE={p} ({v})"));
                let dispatcher = copies.iter().any(|(_, _, d)| d.contains("dispatcher"));
                if !dispatcher && routes.preload.is_empty() && routes.dropin.is_empty() {
                    c.status = Status::Warn;
                    c = c.detail("no libpcsclite here honours LIBPCSCLITE_DELEGATE (only pcsc-lite 2.1.0 and later do): use the preload route");
                }
            }
            None => c = c.detail(format!("LIBPCSCLITE_DELEGATE={p} is not pcsc-bridge's library")),
        }
    }
    if routes.proxy {
        c = c.detail("proxy: PCSCLITE_CSOCK_NAME is the usbpass proxy's socket");
    }
    let j: Vec<J> = active.iter().map(|a| J::from(*a)).collect();
    r.push(c.data("active", J::Arr(j)));
}

fn probe_summary(p: &Probe) -> String {
    if let Some(e) = &p.error {
        return e.clone();
    }
    match p.establish {
        Some(0) => match p.list {
            Some(0) => format!("works ({} reader{})", p.readers.len(), plural(p.readers.len())),
            Some(0x8010_002E) => "works (no readers)".into(),
            Some(rv) => format!("SCardListReaders fails: {}", rv_text(rv)),
            None => "works".into(),
        },
        Some(rv) => format!("SCardEstablishContext fails: {}", rv_text(rv)),
        None => "no result".into(),
    }
}

fn served_by(p: &Probe) -> String {
    match (p.bridge(), &p.path) {
        (Some((b, v)), _) => format!("{b} ({})", v.as_deref().unwrap_or("pcsc-bridge")),
        (None, Some(path)) => {
            let extra: Vec<&str> = p
                .loaded
                .iter()
                .map(|(l, _)| l.as_str())
                .filter(|l| Some(*l) != p.realpath.as_deref() && l != path)
                .collect();
            if extra.is_empty() {
                path.clone()
            } else {
                format!("{path} (loading {})", extra.join(", "))
            }
        }
        (None, None) => "nothing".into(),
    }
}

/// A CCID interface (USB class 0x0B) as sysfs shows it.
struct CcidInterface {
    /// `VID:PID product`.
    label: String,
    /// Bound to `usbfs`: a program (pcscd, usbpass, ...) has claimed it.
    claimed: bool,
}

/// CCID interfaces in `/sys/bus/usb/devices` (Flatpak binds it read-only into sandboxes).
fn ccid_interfaces() -> Vec<CcidInterface> {
    let root = Path::new("/sys/bus/usb/devices");
    let Ok(dir) = std::fs::read_dir(root) else { return Vec::new() };
    let read = |p: PathBuf| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
    let mut v: Vec<(String, CcidInterface)> = dir
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (device, _) = name.split_once(':')?;
            let iface = root.join(&name);
            if read(iface.join("bInterfaceClass")) != "0b" {
                return None;
            }
            let dev = root.join(device);
            let product = read(dev.join("product"));
            let label = format!(
                "{}:{} {}",
                read(dev.join("idVendor")).to_uppercase(),
                read(dev.join("idProduct")).to_uppercase(),
                if product.is_empty() { "(no product name)" } else { &product }
            );
            let claimed =
                std::fs::read_link(iface.join("driver")).is_ok_and(|d| d.file_name().is_some_and(|n| n == "usbfs"));
            Some((name, CcidInterface { label, claimed }))
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v.into_iter().map(|(_, i)| i).collect()
}

/// The USB readers this sandbox sees, and whether usbpass could take them: a reader another
/// program holds (the host's pcscd) is left alone, so the app must use that program instead.
fn check_usb_readers(r: &mut Report, usbpass_readers: Option<usize>, sb: &Sandbox) {
    let ifaces = ccid_interfaces();
    if ifaces.is_empty() {
        r.push(Check::new("usb-readers", Status::Info, "no CCID interface in /sys/bus/usb/devices"));
        return;
    }
    let list: Vec<String> = ifaces
        .iter()
        .map(|i| format!("{}{}", i.label, if i.claimed { " (claimed by a program)" } else { "" }))
        .collect();
    let mut c = Check::new(
        "usb-readers",
        Status::Info,
        format!("{} CCID interface{}: {}", ifaces.len(), plural(ifaces.len()), list.join(", ")),
    )
    .data("interfaces", J::Arr(list.iter().map(|s| J::from(s.as_str())).collect()));
    if let Some(n) = usbpass_readers {
        c = c.data("usbpass_readers", n);
        if n < ifaces.len() && ifaces.iter().any(|i| i.claimed) {
            c.status = Status::Warn;
            c = c.detail(format!(
                "usbpass serves {n} of them: the others are held by another program (probably the host's pcscd), \
                 which usbpass never takes over"
            ));
            r.step(if sb.in_flatpak {
                format!(
                    "a USB reader is held by the host's pcscd: give the app that pcscd instead (on the host: \
                     `flatpak override --user --socket=pcsc {}`, then restart the app).",
                    sb.app()
                )
            } else {
                "a USB reader is held by another program (probably pcscd): use that daemon (its socket in \
                 PCSCLITE_CSOCK_NAME), or stop it to let usbpass drive the reader."
                    .to_string()
            });
        }
    }
    r.push(c);
}

/// Which backend serves PC/SC here: a daemon (pcscd or the usbpass proxy), or
/// usbpass driving USB readers itself.
fn backend_check(socket_ok: bool, cfg: &ClientConfig) -> Check {
    if socket_ok {
        return Check::new("backend", Status::Info, format!("a daemon at {}", cfg.socket.display()));
    }
    let p = fallback::socket_path();
    if std::os::unix::net::UnixStream::connect(&p).is_ok() {
        return Check::new("backend", Status::Info, format!("usbpass (USB readers, no pcscd) at {}", p.display()));
    }
    if fallback::usb_visible() {
        return Check::new(
            "backend",
            Status::Info,
            format!(
                "none running: no pcscd, USB devices visible: pcsc-bridge starts usbpass on the first PC/SC call ({})",
                p.display()
            ),
        );
    }
    Check::new("backend", Status::Info, "none: no daemon socket and no USB device visible")
}

pub fn diagnose(o: &DoctorOpts) -> Report {
    let mut r = Report::default();
    let sb = sandbox();
    let env = if sb.in_flatpak {
        format!(
            "Flatpak app {}{}",
            sb.app(),
            sb.flatpak_runtime.as_ref().map(|rt| format!(" on {rt}")).unwrap_or_default()
        )
    } else if let Some(s) = &sb.snap {
        format!("Snap {s}")
    } else {
        "no sandbox detected".into()
    };
    r.push(
        Check::new("environment", Status::Info, env)
            .data("flatpak", sb.in_flatpak)
            .data("flatpak_app", sb.flatpak_app.clone())
            .data("snap", sb.snap.clone()),
    );

    let mut cfg = ClientConfig::from_env();
    let source = if let Some(s) = &o.socket {
        cfg.socket = s.clone();
        "--socket"
    } else if env_str("PCSCLITE_CSOCK_NAME").is_some() {
        "from PCSCLITE_CSOCK_NAME"
    } else {
        "the default"
    };
    let routes = routes(&cfg.socket);
    // No pcscd reachable, but the library apps load here falls back to usbpass.
    // Without a reachable pcscd, the library apps load here would fall back to usbpass.
    let fallback_possible = routes.bridge_loaded() && fallback::applies();
    let socket_ok = check_socket(&mut r, &cfg, source, &sb, routes.proxy, fallback_possible);
    let usb_fallback = fallback_possible && !socket_ok;
    let daemon = if socket_ok { check_daemon(&mut r, &cfg) } else { None };

    let copies = library_copies();
    check_routes(&mut r, &routes, &copies);

    // The socket for probes: what the app would use.
    let mut probe_env: EnvChanges = Vec::new();
    if o.socket.is_some() {
        probe_env.push(("PCSCLITE_CSOCK_NAME".into(), Some(cfg.socket.clone().into_os_string())));
    }
    const LIB: &str = "libpcsclite.so.1";
    let mut app_fails = false;
    let mut usbpass_readers = None;
    if daemon.is_some() || usb_fallback {
        let p = probe::run(LIB, &probe_env);
        if usb_fallback {
            usbpass_readers = Some(p.readers.len());
        }
        let status = if p.works() {
            Status::Ok
        } else if p.error.as_deref().is_some_and(|e| e.contains("cannot open shared object")) {
            Status::Warn
        } else {
            Status::Fail
        };
        app_fails = status == Status::Fail;
        let summary = if status == Status::Warn {
            "no libpcsclite.so.1 for the dynamic loader here: apps that load it by name find none".to_string()
        } else {
            format!("an app loading {LIB} gets {}: {}", served_by(&p), probe_summary(&p))
        };
        r.push(
            Check::new("app-library", status, summary)
                .data("path", p.path.clone())
                .data("pcsc_bridge", p.bridge().is_some())
                .data("establish", p.establish.map(|v| format!("0x{v:08X}")))
                .data("readers", J::Arr(p.readers.iter().map(|x| J::from(x.as_str())).collect())),
        );
    }
    // After the probe: with the USB fallback, the probe has started usbpass.
    r.push(backend_check(socket_ok, &cfg));
    if fallback::usb_visible() {
        check_usb_readers(&mut r, usbpass_readers, &sb);
    }

    // The app's own library, without pcsc-bridge.
    let mut nenv = native_env(&routes);
    nenv.extend(probe_env.iter().cloned());
    let offer = probe::offered_version(LIB, &nenv);
    let offered = offer.version.and_then(|(a, b)| version_of(a, b));
    let mut c = Check::new("native-library", Status::Info, String::new());
    match (&offer.probe.path, offer.probe.error.as_deref()) {
        (_, Some(e)) if e.contains("cannot open shared object") => {
            c.summary = "none: no libpcsclite.so.1 for the dynamic loader without pcsc-bridge".into();
        }
        (Some(path), _) => {
            let kind = offer.probe.realpath.as_deref().map(|p| describe_library(Path::new(p))).unwrap_or_default();
            c.summary = format!("{path}: {kind}");
            match (offer.version, offered) {
                (Some(_), Some(v)) => {
                    let mut t = format!("offers protocol {v} ({})", v.releases());
                    if let Some(d) = &daemon {
                        if d.version == v {
                            t.push_str(": the daemon's");
                        } else {
                            t.push_str(&format!(": the daemon speaks {}", d.version));
                        }
                    }
                    c = c.detail(t);
                }
                (Some((a, b)), None) => c = c.detail(format!("offers protocol {a}:{b}, unknown to pcsc-bridge")),
                _ => {
                    c = c.detail(format!(
                        "its protocol version could not be learnt: {}",
                        offer.error.as_deref().unwrap_or("no offer")
                    ))
                }
            }
        }
        (None, _) => c.summary = format!("not probed: {}", offer.error.as_deref().unwrap_or("no result")),
    }
    // Without pcsc-bridge, against the real daemon (only worth it when a route is active).
    if daemon.is_some() && routes.bridge_loaded() {
        let p = probe::run(LIB, &nenv);
        c = c.detail(format!("without pcsc-bridge, an app here: {}", probe_summary(&p)));
        c = c.data("works_without_pcsc_bridge", p.works());
    }
    let probed = offer.probe.realpath.as_deref().map(PathBuf::from);
    for (p, real, d) in &copies {
        if Some(real) != probed.as_ref() {
            c = c.detail(format!("also found {p}: {d}"));
        }
    }
    r.push(
        c.data("path", offer.probe.path.clone())
            .data("offered_protocol", offer.version.map(|(a, b)| format!("{a}:{b}")))
            .data(
                "copies",
                J::Arr(
                    copies
                        .iter()
                        .map(|(p, _, d)| {
                            J::Obj(vec![("path".into(), p.clone().into()), ("kind".into(), d.clone().into())])
                        })
                        .collect(),
                ),
            ),
    );

    // The usbpass proxy (the socket in use when it is the proxy's).
    let proxy = if routes.proxy { cfg.socket.clone() } else { proxy_socket_default() };
    let pstate = match std::fs::metadata(&proxy) {
        Err(_) => "absent",
        Ok(m) if !m.file_type().is_socket() => "not a socket",
        Ok(_) => match UnixStream::connect(&proxy) {
            Ok(_) => "accepting connections",
            Err(_) => "a socket nobody answers on",
        },
    };
    r.push(
        Check::new("usbpass-proxy", Status::Info, format!("{}: {pstate}", proxy.display()))
            .data("path", proxy.display().to_string())
            .data("state", pstate),
    );

    // Next steps for what failed.
    let app = sb.app();
    if !socket_ok && pstate == "accepting connections" && !routes.proxy {
        r.step(format!(
            "the usbpass proxy runs: use it with `PCSCLITE_CSOCK_NAME={}`{}",
            proxy.display(),
            if sb.in_flatpak {
                format!(" (on the host: `pcsc-bridge flatpak enable {app} --route proxy`)")
            } else {
                String::new()
            }
        ));
    }
    if app_fails {
        let mismatch = match (offered, &daemon) {
            (Some(v), Some(d)) if v != d.version => {
                format!("the app's libpcsclite offers protocol {v}, the daemon speaks {}: ", d.version)
            }
            _ => String::new(),
        };
        if routes.bridge_loaded() {
            r.step(format!(
                "{mismatch}pcsc-bridge is set up but the app still fails: re-run with PCSC_BRIDGE_LOG=debug and report the log."
            ));
        } else if sb.in_flatpak {
            r.step(format!(
                "{mismatch}enable pcsc-bridge: on the host, `pcsc-bridge flatpak enable {app}`, then restart the app."
            ));
        } else {
            let lib = super::flatpak::find_library(None)
                .map(|(p, _)| p.display().to_string())
                .unwrap_or_else(|_| "/path/to/libpcscbridge.so".into());
            r.step(format!("{mismatch}enable pcsc-bridge: run the app with `LD_PRELOAD={lib}`."));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_rendering() {
        let mut r = Report::default();
        r.push(Check::new("socket", Status::Ok, "/s (the default)").detail("d1").data("path", "/s"));
        assert!(r.ok());
        r.push(Check::new("daemon", Status::Fail, "bad"));
        r.step("do this");
        r.step("do this");
        assert!(!r.ok());
        let t = r.text();
        assert!(t.contains("[ ok ] socket: /s (the default)\n         d1\n"), "{t}");
        assert!(t.contains("[FAIL] daemon: bad"));
        assert!(t.contains("result: PROBLEM"));
        assert_eq!(t.matches("next step: do this").count(), 1);
        let j = r.json().render();
        assert!(j.contains("\"ok\": false"));
        assert!(j.contains("\"status\": \"fail\""));
        assert!(j.contains("\"path\": \"/s\""));
    }

    #[test]
    fn native_env_drops_only_ours() {
        let r = Routes {
            preload: vec![("/a/libpcscbridge.so".into(), "libpcscbridge 0.1.0".into())],
            dropin: vec![],
            delegate: Some(("/a/libpcscbridge.so".into(), Some("libpcscbridge 0.1.0".into()))),
            ..Default::default()
        };
        let env = native_env(&r);
        assert!(env.iter().any(|(k, v)| k == "LIBPCSCLITE_DELEGATE" && v.is_none()));
        assert!(env.iter().any(|(k, _)| k == "LD_PRELOAD"));
        assert_eq!(r.active(), vec!["preload", "delegate"]);
        assert!(r.bridge_loaded());
        assert!(Routes::default().active().is_empty());
    }
}
