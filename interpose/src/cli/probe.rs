//! Probing a PC/SC library the way an app uses it, in a child process (`pcsc-bridge
//! __probe LIB`): `dlopen` it, call `SCardEstablishContext` and `SCardListReaders`,
//! and report which file served the calls. A second probe points the library at a
//! socket of ours and records the protocol version its `CMD_VERSION` offers.
//!
//! The child is this very binary, which defines no PC/SC symbols (it does not link
//! the library crate), so the probed library resolves nothing against it.

use std::ffi::{c_char, c_long, c_ulong, c_void, CStr, CString, OsString};
use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ProbeOpts;

/// How long a probed library may take before it is killed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(6);

type EstablishFn = unsafe extern "C" fn(c_ulong, *const c_void, *const c_void, *mut c_long) -> c_long;
type ListReadersFn = unsafe extern "C" fn(c_long, *const c_char, *mut c_char, *mut c_ulong) -> c_long;
type ReleaseFn = unsafe extern "C" fn(c_long) -> c_long;

fn dlerror_text() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl call.
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown error".into()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

fn sym(h: *mut c_void, name: &CStr) -> Option<*mut c_void> {
    // SAFETY: h is a live handle from dlopen; name is NUL-terminated.
    let p = unsafe { libc::dlsym(h, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

/// The child side: prints `key=value` lines on stdout.
pub fn child(o: &ProbeOpts) -> i32 {
    let Ok(name) = CString::new(o.lib.as_bytes()) else { return 2 };
    // SAFETY: name is NUL-terminated; loading a library runs its initialisers,
    // which is the point of the probe (this process does nothing else).
    let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        println!("dlopen_error={}", dlerror_text().replace('\n', " "));
        return 3;
    }
    let Some(est) = sym(h, c"SCardEstablishContext") else {
        println!("dlsym_error={}", dlerror_text().replace('\n', " "));
        return 3;
    };
    // SAFETY: an all-zero Dl_info is a valid value to be overwritten by dladdr.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: est is a code address inside a loaded object; info is writable.
    if unsafe { libc::dladdr(est as *const c_void, &mut info) } != 0 && !info.dli_fname.is_null() {
        // SAFETY: dli_fname is a NUL-terminated path owned by the loader.
        let f = unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned();
        let real = std::fs::canonicalize(&f).map(|p| p.display().to_string()).unwrap_or(f.clone());
        println!("path={f}");
        println!("realpath={real}");
    }
    // SAFETY: the symbol has libpcsclite's SCardEstablishContext signature.
    let est: EstablishFn = unsafe { std::mem::transmute::<*mut c_void, EstablishFn>(est) };
    let mut ctx: c_long = 0;
    // SAFETY: valid out-pointer; reserved pointers NULL as required. Scope 2 = SYSTEM.
    let rv = unsafe { est(2, std::ptr::null(), std::ptr::null(), &mut ctx) } as u32;
    println!("establish=0x{rv:08X}");
    if rv == 0 && !o.establish_only {
        if let Some(list) = sym(h, c"SCardListReaders") {
            // SAFETY: same signature as libpcsclite's SCardListReaders.
            let list: ListReadersFn = unsafe { std::mem::transmute::<*mut c_void, ListReadersFn>(list) };
            let mut n: c_ulong = 0;
            // SAFETY: NULL buffer asks for the length; n is writable.
            let mut rv = unsafe { list(ctx, std::ptr::null(), std::ptr::null_mut(), &mut n) } as u32;
            if rv == 0 && n > 0 && n < 1 << 20 {
                let mut buf = vec![0u8; n as usize];
                // SAFETY: buf holds n bytes, as told to the call.
                rv = unsafe { list(ctx, std::ptr::null(), buf.as_mut_ptr().cast(), &mut n) } as u32;
                if rv == 0 {
                    buf.truncate((n as usize).min(buf.len()));
                    for r in buf.split(|&b| b == 0).filter(|s| !s.is_empty()) {
                        println!("reader={}", String::from_utf8_lossy(r));
                    }
                }
            }
            println!("list=0x{rv:08X}");
        }
        if let Some(rel) = sym(h, c"SCardReleaseContext") {
            // SAFETY: same signature as libpcsclite's SCardReleaseContext.
            let rel: ReleaseFn = unsafe { std::mem::transmute::<*mut c_void, ReleaseFn>(rel) };
            // SAFETY: ctx came from a successful SCardEstablishContext.
            unsafe { rel(ctx) };
        }
    }
    // Which PC/SC libraries are mapped now (a dispatcher loads another one).
    if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
        let exe = std::env::current_exe().ok().and_then(|e| std::fs::canonicalize(e).ok());
        let mut seen: Vec<&str> = Vec::new();
        for l in maps.lines() {
            let Some(p) = l.split_whitespace().nth(5) else { continue };
            let base = p.rsplit('/').next().unwrap_or(p);
            let is_exe = exe.as_deref().is_some_and(|e| e == Path::new(p));
            if p.starts_with('/') && base.contains("pcsc") && !is_exe && !seen.contains(&p) {
                seen.push(p);
                let ours = super::bridge_version(Path::new(p)).ok().flatten();
                println!("loaded={p}\t{}", ours.unwrap_or_default());
            }
        }
    }
    0
}

/// What a probe found.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// The file `SCardEstablishContext` came from (as the loader names it).
    pub path: Option<String>,
    pub realpath: Option<String>,
    /// `dlopen`/`dlsym` failure, or the child's own failure.
    pub error: Option<String>,
    pub establish: Option<u32>,
    pub list: Option<u32>,
    pub readers: Vec<String>,
    /// PC/SC libraries mapped in the child: path, our note's text if ours.
    pub loaded: Vec<(String, Option<String>)>,
}

impl Probe {
    /// `SCardEstablishContext` and `SCardListReaders` succeeded (no readers counts).
    pub fn works(&self) -> bool {
        self.establish == Some(0) && matches!(self.list, Some(0) | Some(0x8010_002E))
    }

    /// The pcsc-bridge library that served the calls, if any.
    pub fn bridge(&self) -> Option<&(String, Option<String>)> {
        self.loaded.iter().find(|(_, v)| v.is_some())
    }

    fn parse(out: &str) -> Probe {
        let mut p = Probe::default();
        let hex = |v: &str| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok();
        for l in out.lines() {
            let Some((k, v)) = l.split_once('=') else { continue };
            match k {
                "path" => p.path = Some(v.to_string()),
                "realpath" => p.realpath = Some(v.to_string()),
                "dlopen_error" | "dlsym_error" => p.error = Some(v.to_string()),
                "establish" => p.establish = hex(v),
                "list" => p.list = hex(v),
                "reader" => p.readers.push(v.to_string()),
                "loaded" => {
                    let (path, note) = v.split_once('\t').unwrap_or((v, ""));
                    p.loaded.push((path.to_string(), (!note.is_empty()).then(|| note.to_string())));
                }
                _ => {}
            }
        }
        p
    }
}

/// Environment changes for a child: `(name, Some(value))` sets, `(name, None)` removes.
pub type EnvChanges = Vec<(OsString, Option<OsString>)>;

fn spawn(lib: &str, establish_only: bool, env: &EnvChanges) -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut c = Command::new(exe);
    c.arg("__probe");
    if establish_only {
        c.arg("--establish-only");
    }
    c.arg("--").arg(lib);
    for (k, v) in env {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()
}

/// Waits up to the deadline, then kills. Returns stdout, or an error text.
fn finish(mut child: Child, deadline: Instant) -> Result<String, String> {
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                let mut out = String::new();
                if let Some(mut so) = child.stdout.take() {
                    let _ = so.read_to_string(&mut out);
                }
                if st.code().is_none() {
                    return Err(format!("the probe crashed ({st}) after: {}", out.trim().replace('\n', "; ")));
                }
                return Ok(out);
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the library did not return within {} s", PROBE_TIMEOUT.as_secs()));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Loads `lib` in a child with `env` applied and talks to the daemon.
pub fn run(lib: &str, env: &EnvChanges) -> Probe {
    let child = match spawn(lib, false, env) {
        Ok(c) => c,
        Err(e) => return Probe { error: Some(format!("cannot run the probe: {e}")), ..Default::default() },
    };
    match finish(child, Instant::now() + PROBE_TIMEOUT) {
        Ok(out) => Probe::parse(&out),
        Err(e) => Probe { error: Some(e), ..Default::default() },
    }
}

/// What a library offers in its first `CMD_VERSION`, learnt on a socket of ours.
#[derive(Debug, Clone, Default)]
pub struct Offer {
    pub probe: Probe,
    /// `(major, minor)` of the first offer.
    pub version: Option<(i32, i32)>,
    pub error: Option<String>,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> std::io::Result<TempDir> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for i in 0..100u32 {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let p = base.join(format!("pcsc-bridge-doctor.{}.{nanos}.{i}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(TempDir(p)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temporary folder name"))
}

pub fn offered_version(lib: &str, env: &EnvChanges) -> Offer {
    let mut offer = Offer::default();
    let dir = match temp_dir() {
        Ok(d) => d,
        Err(e) => {
            offer.error = Some(format!("temporary folder: {e}"));
            return offer;
        }
    };
    let sock = dir.0.join("pcscd.comm");
    let listener = match UnixListener::bind(&sock).and_then(|l| l.set_nonblocking(true).map(|_| l)) {
        Ok(l) => l,
        Err(e) => {
            offer.error = Some(format!("socket {}: {e}", sock.display()));
            return offer;
        }
    };
    let mut env = env.clone();
    env.retain(|(k, _)| k != "PCSCLITE_CSOCK_NAME");
    env.push(("PCSCLITE_CSOCK_NAME".into(), Some(sock.clone().into_os_string())));
    let mut child = match spawn(lib, true, &env) {
        Ok(c) => c,
        Err(e) => {
            offer.error = Some(format!("cannot run the probe: {e}"));
            return offer;
        }
    };
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut conn = None;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((s, _)) => {
                conn = Some(s);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break; // gave up before connecting
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                offer.error = Some(format!("accept: {e}"));
                break;
            }
        }
    }
    if let Some(mut s) = conn {
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
        let mut b = [0u8; 20];
        match s.read_exact(&mut b) {
            Ok(()) => {
                let u = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
                if u(4) == 0x11 {
                    offer.version = Some((u(8) as i32, u(12) as i32));
                } else {
                    offer.error = Some(format!("its first message was command 0x{:X}, not CMD_VERSION", u(4)));
                }
            }
            Err(e) => offer.error = Some(format!("reading its first message: {e}")),
        }
    } else if offer.error.is_none() {
        offer.error = Some("it never connected".into());
    }
    // No answer: the library gives up; no second connection can reach a removed socket.
    drop(listener);
    let _ = std::fs::remove_file(&sock);
    match finish(child, Instant::now() + Duration::from_secs(3)) {
        Ok(out) => offer.probe = Probe::parse(&out),
        Err(e) => offer.probe.error = Some(e),
    }
    offer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_child_output() {
        let p = Probe::parse(
            "path=/usr/lib/libpcsclite.so.1\nrealpath=/usr/lib/libpcsclite.so.1.0.0\nestablish=0x00000000\n\
             reader=Virtual PCD 00 00\nreader=Virtual PCD 00 01\nlist=0x00000000\n\
             loaded=/usr/lib/libpcsclite.so.1.0.0\t\nloaded=/x/libpcscbridge.so\tlibpcscbridge 0.1.0\n",
        );
        assert_eq!(p.path.as_deref(), Some("/usr/lib/libpcsclite.so.1"));
        assert_eq!(p.readers, vec!["Virtual PCD 00 00", "Virtual PCD 00 01"]);
        assert!(p.works());
        assert_eq!(p.bridge().map(|b| b.0.as_str()), Some("/x/libpcscbridge.so"));
        let f = Probe::parse("establish=0x8010001E\n");
        assert!(!f.works());
        assert_eq!(f.establish, Some(0x8010_001E));
        let none = Probe::parse("list=0x8010002E\nestablish=0x00000000\n");
        assert!(none.works());
    }
}
