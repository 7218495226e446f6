//! The process side shared by the virtual card binaries (`vcard`, `vscard`): the subcommands
//! both have (`ctl`, `atr`, `--help`), usage errors, their listening sockets, and what a signal
//! does to them.

use std::ffi::CString;
use std::ops::RangeInclusive;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::ExitCode;
use std::sync::OnceLock;

use crate::vpcd::hex;

/// The sockets to remove on a signal (set once, after binding): a test host that stops the card
/// must not find a stale socket on its next start. Read by the signal handler, so fixed by then.
static SOCKETS: OnceLock<Vec<CString>> = OnceLock::new();

/// `PROG ctl PATH COMMAND...`, `PROG atr` and `PROG -h|--help`; any other command line goes to
/// `run`. `ctl_words` is how many words a control command may have (joined with spaces).
pub fn main(
    prog: &str,
    usage: &str,
    atr: &[u8],
    ctl_words: RangeInclusive<usize>,
    run: impl FnOnce(&[String]) -> ExitCode,
) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ctl") => {
            if args.len() < 2 || !ctl_words.contains(&(args.len() - 2)) {
                eprintln!("{usage}");
                return ExitCode::from(2);
            }
            crate::ctl::client_main(prog, Path::new(&args[1]), &args[2..].join(" "))
        }
        Some("atr") => {
            println!("{}", hex(atr));
            ExitCode::SUCCESS
        }
        Some("-h") | Some("--help") => {
            println!("{usage}");
            ExitCode::SUCCESS
        }
        _ => run(&args),
    }
}

/// `PROG: MSG` and the usage on stderr; exit status 2.
pub fn usage_error(prog: &str, msg: &str, usage: &str) -> ExitCode {
    eprintln!("{prog}: {msg}\n{usage}");
    ExitCode::from(2)
}

/// Listens on `path`, replacing a socket a previous run left behind.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).map_err(|e| format!("bind {}: {e}", path.display()))
}

/// SIGTERM, SIGINT and SIGHUP remove the sockets given to [`remove_on_signal`] and exit with
/// status 0 (being stopped is how a card ends); SIGPIPE is ignored, so a control client or
/// peer that goes away only fails a write.
pub fn install_signals() {
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// The sockets a signal removes (the first call counts).
pub fn remove_on_signal(paths: &[&Path]) {
    let _ = SOCKETS.set(paths.iter().map(|p| CString::new(p.as_os_str().as_bytes()).unwrap()).collect());
}

/// Removes the sockets given to [`remove_on_signal`]; async-signal-safe.
pub fn remove_sockets() {
    if let Some(v) = SOCKETS.get() {
        for p in v {
            unsafe { libc::unlink(p.as_ptr()) };
        }
    }
}

extern "C" fn on_signal(_sig: libc::c_int) {
    // Only async-signal-safe calls here.
    remove_sockets();
    unsafe { libc::_exit(0) };
}
