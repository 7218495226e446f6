//! Falling back to usbpass when no pcscd is reachable.
//!
//! Inside a sandbox granted USB devices (`--device=all` or `--device=usb`) on a
//! host that runs no pcscd, `SCardEstablishContext` would fail with
//! `SCARD_E_NO_SERVICE`. Instead, pcsc-bridge then uses `usbpass serve`, which
//! drives the USB reader itself and speaks the pcscd protocol: it connects to
//! its socket, or starts it on demand (once per sandbox: a lock file serialises
//! the start, and every process of the app shares the one instance).
//!
//! Environment (all ignored in secure-execution processes):
//! - `PCSC_BRIDGE_USBPASS=0` disables the fallback;
//! - `PCSC_BRIDGE_USBPASS_SOCKET` its socket (default
//!   `$XDG_RUNTIME_DIR/pcsc-bridge/usbpass.comm`, else `/tmp/pcsc-bridge-UID/usbpass.comm`);
//! - `PCSC_BRIDGE_USBPASS_BIN` the program (default: `usbpass` beside this
//!   library, else on `PATH`);
//! - `PCSC_BRIDGE_USBPASS_FORCE=1` tries it even when no USB device is visible.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pcsc_proto::client::config::secure_getenv;
use pcsc_proto::client::ClientConfig;

/// How long a started usbpass may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether a USB device node is visible (`/dev/bus/usb/BBB/DDD`).
pub fn usb_visible() -> bool {
    let Ok(buses) = std::fs::read_dir("/dev/bus/usb") else { return false };
    buses.flatten().any(|b| std::fs::read_dir(b.path()).map(|mut d| d.next().is_some()).unwrap_or(false))
}

/// The usbpass socket this process would use.
pub fn socket_path() -> PathBuf {
    if let Some(p) = secure_getenv("PCSC_BRIDGE_USBPASS_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    match secure_getenv("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        Some(d) => Path::new(&d).join("pcsc-bridge/usbpass.comm"),
        // SAFETY: getuid has no preconditions.
        None => PathBuf::from(format!("/tmp/pcsc-bridge-{}/usbpass.comm", unsafe { libc::getuid() })),
    }
}

/// Whether something accepts connections at `path`.
pub fn reachable(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

/// This library's own file (where `usbpass` is looked for first).
fn self_dir() -> Option<PathBuf> {
    // SAFETY: Dl_info is plain data (pointers and integers): all zeroes is valid.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr writes into `info`; the address is a function of ours.
    let ok = unsafe { libc::dladdr(usb_visible as *const libc::c_void, &mut info) };
    if ok == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr gives a NUL-terminated name owned by the loader.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    Path::new(OsStr::from_bytes(name.to_bytes())).parent().map(Path::to_path_buf)
}

fn find_program() -> Option<PathBuf> {
    if let Some(p) = secure_getenv("PCSC_BRIDGE_USBPASS_BIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = self_dir().map(|d| d.join("usbpass")).filter(|p| p.is_file()) {
        return Some(p);
    }
    let path: OsString = secure_getenv("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("usbpass")).find(|p| p.is_file())
}

/// Starts `program serve --listen path` detached from this process (its own
/// session, reparented to init, no zombie left behind), then waits until it
/// listens.
fn start(program: &Path, path: &Path) -> bool {
    let mut cmd = Command::new(program);
    cmd.arg("serve").arg("--listen").arg(path).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls: fork, _exit, setsid.
    unsafe {
        cmd.pre_exec(|| {
            match libc::fork() {
                -1 => return Err(std::io::Error::last_os_error()),
                0 => {}
                _ => libc::_exit(0),
            }
            libc::setsid();
            Ok(())
        });
    }
    // Waits for the intermediate child only.
    if cmd.status().is_err() {
        return false;
    }
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if reachable(path) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Whether the fallback is to be tried: enabled, and USB visible (or forced).
/// Cheap: no socket, no process.
pub fn applies() -> bool {
    secure_getenv("PCSC_BRIDGE_USBPASS").is_none_or(|v| v != "0")
        && (usb_visible() || secure_getenv("PCSC_BRIDGE_USBPASS_FORCE").is_some())
}

/// A configuration pointing at a running usbpass, if the fallback applies:
/// enabled, USB visible (or forced), and usbpass reachable or startable.
pub fn usbpass_config(base: &ClientConfig) -> Option<ClientConfig> {
    if !applies() {
        return None;
    }
    let path = socket_path();
    let cfg = ClientConfig { socket: path.clone(), ..base.clone() };
    if reachable(&path) {
        return Some(cfg);
    }
    let program = find_program()?;
    let dir = path.parent()?;
    let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
    // One start per sandbox: whoever holds the lock starts it, the others then
    // find it listening.
    let lock =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path.with_extension("lock")).ok()?;
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    let ok = reachable(&path) || {
        tracing::info!(program = %program.display(), socket = %path.display(), "no pcscd reachable: starting usbpass");
        start(&program, &path)
    };
    drop(lock);
    ok.then_some(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_has_a_default() {
        let p = socket_path();
        assert!(p.ends_with("usbpass.comm"), "{}", p.display());
    }

    #[test]
    fn unreachable_socket() {
        assert!(!reachable(Path::new("/nonexistent/usbpass.comm")));
    }
}
