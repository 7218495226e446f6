//! vcard: the project's virtual smart card for vsmartcard-vpcd.
//!
//! ```text
//! vcard --port PORT [--ctl PATH] [--absent]   run the card (connects to vpcd on 127.0.0.1:PORT)
//! vcard ctl PATH insert|remove|status          drive a running card through its control socket
//! vcard atr                                    print the ATR
//! ```
//!
//! Control socket (Unix stream, one command line per connection or several in a row):
//! `insert` -> `ok` (after the TCP connection is up, or 2 s), `remove` -> `ok` (after the
//! connection is closed), `status` -> `present` / `absent`, anything else -> `err ...`.
//! `VCARD_LOG=1` logs control messages and every APDU header (never data) to stderr.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use pcsc_bridge_tests::card::ATR;
use pcsc_bridge_tests::vpcd::{self, hex, CardHandle, Options};

const USAGE: &str =
    "usage: vcard --port PORT [--ctl PATH] [--absent]\n       vcard ctl PATH insert|remove|status\n       vcard atr";

static CTL_PATH: OnceLock<CString> = OnceLock::new();

extern "C" fn on_signal(_sig: libc::c_int) {
    // Only async-signal-safe calls here.
    if let Some(p) = CTL_PATH.get() {
        unsafe { libc::unlink(p.as_ptr()) };
    }
    unsafe { libc::_exit(0) };
}

fn install_signals() {
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ctl") => {
            if args.len() != 3 {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
            ctl_client(Path::new(&args[1]), &args[2])
        }
        Some("atr") => {
            println!("{}", hex(&ATR));
            ExitCode::SUCCESS
        }
        Some("-h") | Some("--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => run_card(&args),
    }
}

fn ctl_client(path: &Path, cmd: &str) -> ExitCode {
    pcsc_bridge_tests::ctl::client_main("vcard", path, cmd)
}

fn run_card(args: &[String]) -> ExitCode {
    let mut port: Option<u16> = None;
    let mut ctl: Option<PathBuf> = None;
    let mut absent = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" => port = it.next().and_then(|p| p.parse().ok()),
            "--ctl" => ctl = it.next().map(PathBuf::from),
            "--absent" => absent = true,
            _ => {
                eprintln!("vcard: unknown argument {a:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(port) = port else {
        eprintln!("vcard: --port PORT is required\n{USAGE}");
        return ExitCode::from(2);
    };
    install_signals();
    let log = std::env::var("VCARD_LOG").is_ok_and(|v| v == "1");
    println!("ATR: {}", hex(&ATR));
    println!("vpcd port: {port}, initially {}", if absent { "absent" } else { "present" });
    let _ = std::io::stdout().flush();

    let listener = match &ctl {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            match UnixListener::bind(path) {
                Ok(l) => {
                    let _ = CTL_PATH.set(CString::new(path.as_os_str().as_bytes()).unwrap());
                    Some(l)
                }
                Err(e) => {
                    eprintln!("vcard: bind {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
        }
        None => None,
    };

    let handle = vpcd::spawn(Options { port, inserted: !absent, log });
    match listener {
        Some(l) => {
            for conn in l.incoming() {
                match conn {
                    Ok(c) => {
                        let h = handle.clone();
                        // One thread per client so a stuck client cannot block the others.
                        std::thread::spawn(move || serve_ctl(c, &h));
                    }
                    Err(e) => eprintln!("vcard: accept: {e}"),
                }
            }
            ExitCode::FAILURE
        }
        None => loop {
            std::thread::park();
        },
    }
}

fn serve_ctl(c: UnixStream, h: &CardHandle) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut w) = c.try_clone() else { return };
    for line in BufReader::new(c).lines() {
        let Ok(line) = line else { return };
        let reply = match line.trim() {
            "insert" => {
                if !h.insert(Duration::from_secs(2)) {
                    eprintln!("vcard: inserted, but vpcd does not accept connections yet");
                }
                "ok".to_string()
            }
            "remove" => {
                h.remove(Duration::from_secs(2));
                "ok".to_string()
            }
            "status" => if h.present() { "present" } else { "absent" }.to_string(),
            "" => continue,
            other => format!("err unknown command {other:?} (insert|remove|status)"),
        };
        eprintln!("vcard: ctl {} -> {reply}", line.trim());
        if w.write_all(format!("{reply}\n").as_bytes()).is_err() {
            return;
        }
    }
}
