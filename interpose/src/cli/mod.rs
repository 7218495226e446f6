//! The `pcsc-bridge` command-line tool: `doctor` (what works and what does not,
//! in this process's environment) and `flatpak enable|disable|status` (wire
//! `libpcscbridge.so` into a Flatpak app with `flatpak override`).
//!
//! Compiled into the binary only (`src/bin/pcsc-bridge.rs` includes this folder
//! by path): nothing here reaches the cdylib, and the binary does not link the
//! library crate (whose `SCard*` and `dlopen` definitions must never bind inside
//! the binary, which `dlopen`s PC/SC libraries to probe them).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

pub mod doctor;
pub mod flatpak;
pub mod json;
pub mod keyfile;
pub mod probe;

/// The identification note of `libpcscbridge.so` (shared with the library).
#[allow(dead_code)]
#[path = "../marker.rs"]
mod marker;

/// When the library falls back to usbpass (shared with the library: same socket, same test).
#[allow(dead_code)]
#[path = "../fallback.rs"]
mod fallback;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub const USAGE: &str = "\
pcsc-bridge: smart cards in sandboxes, whatever pcsc-lite the host runs

usage:
  pcsc-bridge doctor [--json] [--socket PATH]
      Check PC/SC in this environment (run it inside the sandbox): the daemon socket,
      the daemon's protocol, readers and cards, which pcsc-bridge route is active, what
      an app loading libpcsclite.so.1 gets, and a next step when something is wrong.
      Exit status 0 when PC/SC works, 1 otherwise.
  pcsc-bridge flatpak enable APP-ID [--route preload|delegate|proxy] [--lib PATH]
                                    [--user-dir DIR]
      Copy libpcscbridge.so into ~/.var/app/APP-ID/pcsc-bridge/ and add a Flatpak
      override (flatpak override --user) that loads it in the app (default route:
      preload), with usbpass beside it for sandboxes that see USB readers and no pcscd.
      `proxy` points the app at the usbpass proxy socket instead.
  pcsc-bridge flatpak disable APP-ID [--user-dir DIR]
      Remove exactly what `enable` added.
  pcsc-bridge flatpak status [APP-ID] [--user-dir DIR]
      Show what is enabled (all apps without APP-ID).
  pcsc-bridge --version | help

--user-dir DIR is Flatpak's per-user installation (default $FLATPAK_USER_DIR, else
$XDG_DATA_HOME/flatpak or ~/.local/share/flatpak); overrides live in DIR/overrides.
";

/// A command-line mistake: printed with a pointer to the usage, exit status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

/// How an app gets pcsc-bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `LD_PRELOAD=…/libpcscbridge.so` (any app).
    Preload,
    /// `LIBPCSCLITE_DELEGATE=…/libpcscbridge.so` (apps bundling pcsc-lite 2.1.0+).
    Delegate,
    /// `PCSCLITE_CSOCK_NAME` at the usbpass proxy socket (the app's own library stays).
    Proxy,
}

impl Route {
    pub fn parse(s: &str) -> Option<Route> {
        match s {
            "preload" => Some(Route::Preload),
            "delegate" => Some(Route::Delegate),
            "proxy" => Some(Route::Proxy),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Route::Preload => "preload",
            Route::Delegate => "delegate",
            Route::Proxy => "proxy",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DoctorOpts {
    pub json: bool,
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOpts {
    /// A library name for `dlopen` (`libpcsclite.so.1`) or a path.
    pub lib: String,
    /// Stop after `SCardEstablishContext` (the offered-version probe).
    pub establish_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlatpakCmd {
    Enable { app: String, route: Route, lib: Option<PathBuf>, user_dir: Option<PathBuf> },
    Disable { app: String, user_dir: Option<PathBuf> },
    Status { app: Option<String>, user_dir: Option<PathBuf> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Help,
    Version,
    Doctor(DoctorOpts),
    /// Internal: run by `doctor` in a child process.
    Probe(ProbeOpts),
    Flatpak(FlatpakCmd),
}

/// One command-line word, options split from their inline values.
enum Word {
    Opt(String, Option<String>),
    Pos(String),
}

struct Words {
    rest: VecDeque<String>,
    only_pos: bool,
}

impl Words {
    fn next(&mut self) -> Option<Word> {
        let w = self.rest.pop_front()?;
        if self.only_pos {
            return Some(Word::Pos(w));
        }
        if w == "--" {
            self.only_pos = true;
            return self.next();
        }
        if let Some(long) = w.strip_prefix("--") {
            return Some(match long.split_once('=') {
                Some((k, v)) => Word::Opt(k.to_string(), Some(v.to_string())),
                None => Word::Opt(long.to_string(), None),
            });
        }
        if w == "-h" {
            return Some(Word::Opt("help".into(), None));
        }
        if w.len() > 1 && w.starts_with('-') {
            return Some(Word::Opt(w, None));
        }
        Some(Word::Pos(w))
    }

    /// The value of option `name`: inline (`--x=v`) or the next word.
    fn value(&mut self, name: &str, inline: Option<String>) -> Result<String, UsageError> {
        if let Some(v) = inline {
            return Ok(v);
        }
        match self.rest.pop_front() {
            Some(v) if !v.starts_with("--") => Ok(v),
            _ => Err(UsageError(format!("--{name} needs a value"))),
        }
    }
}

fn no_value(name: &str, inline: &Option<String>) -> Result<(), UsageError> {
    match inline {
        Some(_) => Err(UsageError(format!("--{name} takes no value"))),
        None => Ok(()),
    }
}

fn unknown(name: &str) -> UsageError {
    if name.starts_with('-') {
        UsageError(format!("unknown option {name}"))
    } else {
        UsageError(format!("unknown option --{name}"))
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: Vec<String>) -> Result<Cmd, UsageError> {
    let mut w = Words { rest: args.into(), only_pos: false };
    let sub = match w.next() {
        None => return Ok(Cmd::Help),
        Some(Word::Pos(s)) => s,
        Some(Word::Opt(o, _)) if o == "help" => return Ok(Cmd::Help),
        Some(Word::Opt(o, _)) if o == "version" => return Ok(Cmd::Version),
        Some(Word::Opt(o, _)) => return Err(unknown(&o)),
    };
    match sub.as_str() {
        "help" => Ok(Cmd::Help),
        "version" => Ok(Cmd::Version),
        "doctor" => {
            let mut o = DoctorOpts::default();
            while let Some(word) = w.next() {
                match word {
                    Word::Opt(k, v) if k == "json" => {
                        no_value(&k, &v)?;
                        o.json = true
                    }
                    Word::Opt(k, v) if k == "socket" => o.socket = Some(w.value(&k, v)?.into()),
                    Word::Opt(k, _) if k == "help" => return Ok(Cmd::Help),
                    Word::Opt(k, _) => return Err(unknown(&k)),
                    Word::Pos(p) => return Err(UsageError(format!("doctor: unexpected argument '{p}'"))),
                }
            }
            Ok(Cmd::Doctor(o))
        }
        "__probe" => {
            let mut lib = None;
            let mut establish_only = false;
            while let Some(word) = w.next() {
                match word {
                    Word::Opt(k, v) if k == "establish-only" => {
                        no_value(&k, &v)?;
                        establish_only = true
                    }
                    Word::Opt(k, _) => return Err(unknown(&k)),
                    Word::Pos(p) if lib.is_none() => lib = Some(p),
                    Word::Pos(p) => return Err(UsageError(format!("__probe: unexpected argument '{p}'"))),
                }
            }
            let lib = lib.ok_or_else(|| UsageError("__probe: which library?".into()))?;
            Ok(Cmd::Probe(ProbeOpts { lib, establish_only }))
        }
        "flatpak" => parse_flatpak(&mut w).map(Cmd::Flatpak),
        other => Err(UsageError(format!("unknown command '{other}'"))),
    }
}

fn parse_flatpak(w: &mut Words) -> Result<FlatpakCmd, UsageError> {
    let action = match w.next() {
        Some(Word::Pos(a)) => a,
        Some(Word::Opt(o, _)) => {
            return Err(UsageError(format!("flatpak: expected enable, disable or status before --{o}")))
        }
        None => return Err(UsageError("flatpak: expected enable, disable or status".into())),
    };
    if !matches!(action.as_str(), "enable" | "disable" | "status") {
        return Err(UsageError(format!("flatpak: unknown action '{action}' (enable, disable, status)")));
    }
    let mut app: Option<String> = None;
    let mut route: Option<Route> = None;
    let mut lib: Option<PathBuf> = None;
    let mut user_dir: Option<PathBuf> = None;
    while let Some(word) = w.next() {
        match word {
            Word::Opt(k, v) if k == "user-dir" => user_dir = Some(w.value(&k, v)?.into()),
            Word::Opt(k, v) if k == "route" && action == "enable" => {
                let r = w.value(&k, v)?;
                route = Some(
                    Route::parse(&r)
                        .ok_or_else(|| UsageError(format!("--route: '{r}' is not preload, delegate or proxy")))?,
                );
            }
            Word::Opt(k, v) if k == "lib" && action == "enable" => lib = Some(w.value(&k, v)?.into()),
            Word::Opt(k, _) => return Err(unknown(&k)),
            Word::Pos(p) if app.is_none() => app = Some(p),
            Word::Pos(p) => return Err(UsageError(format!("flatpak {action}: unexpected argument '{p}'"))),
        }
    }
    if let Some(a) = &app {
        if !flatpak::valid_app_id(a) {
            return Err(UsageError(format!(
                "'{a}' is not a Flatpak application ID (reverse DNS such as org.example.App)"
            )));
        }
    }
    let need_app = || app.clone().ok_or_else(|| UsageError(format!("flatpak {action}: which APP-ID?")));
    Ok(match action.as_str() {
        "enable" => FlatpakCmd::Enable { app: need_app()?, route: route.unwrap_or(Route::Preload), lib, user_dir },
        "disable" => FlatpakCmd::Disable { app: need_app()?, user_dir },
        _ => FlatpakCmd::Status { app, user_dir },
    })
}

/// Runs the tool; returns the exit status.
pub fn main(args: Vec<OsString>) -> i32 {
    let mut words = Vec::new();
    for a in args.into_iter().skip(1) {
        match a.into_string() {
            Ok(s) => words.push(s),
            Err(a) => {
                eprintln!("pcsc-bridge: argument {a:?} is not valid UTF-8");
                return 2;
            }
        }
    }
    let cmd = parse(words);
    if !matches!(cmd, Ok(Cmd::Probe(_))) {
        // Die quietly on a closed pipe (`pcsc-bridge doctor | head`), as C tools do. The
        // probe keeps Rust's SIG_IGN: a library writing to a socket the doctor closed
        // must get EPIPE, not die.
        // SAFETY: setting a signal disposition to SIG_DFL has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cmd {
        Ok(Cmd::Help) => {
            print!("{USAGE}");
            0
        }
        Ok(Cmd::Version) => {
            println!("pcsc-bridge {VERSION}");
            0
        }
        Ok(Cmd::Doctor(o)) => doctor::run(&o),
        Ok(Cmd::Probe(o)) => probe::child(&o),
        Ok(Cmd::Flatpak(c)) => flatpak::run(&c),
        Err(UsageError(m)) => {
            eprintln!("pcsc-bridge: {m}\n(pcsc-bridge help shows the usage)");
            2
        }
    }
}

/// The version in `libpcscbridge.so`'s identification note, if `path` has one
/// (`Ok(None)`: readable but not ours).
pub fn bridge_version(path: &Path) -> std::io::Result<Option<String>> {
    let mut f = std::fs::File::open(path)?;
    let mut data = Vec::new();
    // Our library is about 1 MB; a 64 MB cap keeps a wrong path cheap.
    f.by_ref().take(64 << 20).read_to_end(&mut data)?;
    Ok(find_note(&data))
}

/// Finds the identification note's descriptor in file bytes.
pub fn find_note(data: &[u8]) -> Option<String> {
    let needle = marker::NEEDLE;
    let prefix = b"pcsc-bridge\0".len();
    let mut from = 0;
    while let Some(i) = find(&data[from..], needle) {
        let start = from + i + prefix;
        let end = data[start..].iter().take(64).position(|&b| b == 0).map(|n| start + n);
        if let Some(end) = end {
            if let Ok(s) = std::str::from_utf8(&data[start..end]) {
                if s.starts_with("libpcscbridge ") {
                    return Some(s.to_string());
                }
            }
        }
        from = from + i + 1;
    }
    None
}

/// Whether `data` contains `needle`.
pub fn contains(data: &[u8], needle: &[u8]) -> bool {
    find(data, needle).is_some()
}

fn find(data: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || data.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let last = data.len() - needle.len();
    let mut i = 0;
    while i <= last {
        match data[i..=last].iter().position(|&b| b == first) {
            Some(p) => i += p,
            None => return None,
        }
        if &data[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Searches `PATH` for an executable.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    })
}

/// The real user's id.
pub fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Upper-case hex bytes separated by spaces (`3B 8A 80`).
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{x:02X}"));
    }
    s
}

/// Where the usbpass proxy listens by default: `$XDG_RUNTIME_DIR/pcsc-bridge/pcscd.comm`
/// (`XDG_RUNTIME_DIR` defaults to `/run/user/UID`).
pub fn proxy_socket_default() -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/run/user/{}", uid())));
    base.join("pcsc-bridge/pcscd.comm")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Cmd, UsageError> {
        parse(args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn top_level() {
        assert_eq!(p(&[]), Ok(Cmd::Help));
        assert_eq!(p(&["help"]), Ok(Cmd::Help));
        assert_eq!(p(&["--help"]), Ok(Cmd::Help));
        assert_eq!(p(&["-h"]), Ok(Cmd::Help));
        assert_eq!(p(&["--version"]), Ok(Cmd::Version));
        assert_eq!(p(&["version"]), Ok(Cmd::Version));
        assert!(p(&["frobnicate"]).is_err());
        assert!(p(&["--frob"]).is_err());
    }

    #[test]
    fn doctor() {
        assert_eq!(p(&["doctor"]), Ok(Cmd::Doctor(DoctorOpts::default())));
        assert_eq!(
            p(&["doctor", "--json", "--socket", "/x/s"]),
            Ok(Cmd::Doctor(DoctorOpts { json: true, socket: Some("/x/s".into()) }))
        );
        assert_eq!(
            p(&["doctor", "--socket=/y"]),
            Ok(Cmd::Doctor(DoctorOpts { json: false, socket: Some("/y".into()) }))
        );
        assert!(p(&["doctor", "--socket"]).is_err());
        assert!(p(&["doctor", "--json=yes"]).is_err());
        assert!(p(&["doctor", "extra"]).is_err());
        assert!(p(&["doctor", "-x"]).is_err());
        assert_eq!(p(&["doctor", "--help"]), Ok(Cmd::Help));
    }

    #[test]
    fn flatpak_enable() {
        assert_eq!(
            p(&["flatpak", "enable", "org.example.App"]),
            Ok(Cmd::Flatpak(FlatpakCmd::Enable {
                app: "org.example.App".into(),
                route: Route::Preload,
                lib: None,
                user_dir: None
            }))
        );
        assert_eq!(
            p(&["flatpak", "enable", "--route", "delegate", "org.example.App", "--lib=/l.so", "--user-dir", "/u"]),
            Ok(Cmd::Flatpak(FlatpakCmd::Enable {
                app: "org.example.App".into(),
                route: Route::Delegate,
                lib: Some("/l.so".into()),
                user_dir: Some("/u".into())
            }))
        );
        assert_eq!(
            p(&["flatpak", "enable", "org.example.App", "--route=proxy"]),
            Ok(Cmd::Flatpak(FlatpakCmd::Enable {
                app: "org.example.App".into(),
                route: Route::Proxy,
                lib: None,
                user_dir: None
            }))
        );
        assert!(p(&["flatpak", "enable"]).is_err());
        assert!(p(&["flatpak", "enable", "org.example.App", "--route", "dropin"]).is_err());
        assert!(p(&["flatpak", "enable", "org.example.App", "--route"]).is_err());
        assert!(p(&["flatpak", "enable", "org.example.App", "org.other.App"]).is_err());
        assert!(p(&["flatpak", "enable", "../../etc"]).is_err());
        assert!(p(&["flatpak", "enable", "noDots"]).is_err());
    }

    #[test]
    fn flatpak_other_actions() {
        assert_eq!(
            p(&["flatpak", "disable", "org.example.App"]),
            Ok(Cmd::Flatpak(FlatpakCmd::Disable { app: "org.example.App".into(), user_dir: None }))
        );
        assert!(p(&["flatpak", "disable"]).is_err());
        // enable-only options
        assert!(p(&["flatpak", "disable", "org.example.App", "--route", "preload"]).is_err());
        assert_eq!(p(&["flatpak", "status"]), Ok(Cmd::Flatpak(FlatpakCmd::Status { app: None, user_dir: None })));
        assert_eq!(
            p(&["flatpak", "status", "--user-dir=/u", "org.example.App"]),
            Ok(Cmd::Flatpak(FlatpakCmd::Status { app: Some("org.example.App".into()), user_dir: Some("/u".into()) }))
        );
        assert!(p(&["flatpak"]).is_err());
        assert!(p(&["flatpak", "launch", "org.example.App"]).is_err());
        assert!(p(&["flatpak", "--route", "x"]).is_err());
    }

    #[test]
    fn probe_is_internal_but_parsed() {
        assert_eq!(
            p(&["__probe", "libpcsclite.so.1"]),
            Ok(Cmd::Probe(ProbeOpts { lib: "libpcsclite.so.1".into(), establish_only: false }))
        );
        assert_eq!(
            p(&["__probe", "--establish-only", "/a/lib.so"]),
            Ok(Cmd::Probe(ProbeOpts { lib: "/a/lib.so".into(), establish_only: true }))
        );
        assert!(p(&["__probe"]).is_err());
    }

    #[test]
    fn note_scan() {
        let mut data = vec![0u8; 100];
        data.extend_from_slice(b"pcsc-bridge\0libpcscbridge 1.2.3\0\0\0");
        data.extend_from_slice(&[7u8; 50]);
        assert_eq!(find_note(&data).as_deref(), Some("libpcscbridge 1.2.3"));
        assert_eq!(find_note(b"pcsc-bridge\0libpcscbridge 1.2.3"), None); // no NUL
        assert_eq!(find_note(b"nothing here"), None);
        assert!(contains(b"abcLIBPCSCLITE_DELEGATEx", b"LIBPCSCLITE_DELEGATE"));
        assert!(!contains(b"abc", b"abcd"));
    }

    #[test]
    fn hex_text() {
        assert_eq!(hex(&[0x3B, 0x8A, 0x00]), "3B 8A 00");
        assert_eq!(hex(&[]), "");
    }
}
