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

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use pcsc_bridge_tests::card::ATR;
use pcsc_bridge_tests::cli;
use pcsc_bridge_tests::vpcd::{self, hex, CardHandle, Options};

const USAGE: &str =
    "usage: vcard --port PORT [--ctl PATH] [--absent]\n       vcard ctl PATH insert|remove|status\n       vcard atr";

fn main() -> ExitCode {
    cli::main("vcard", USAGE, &ATR, 1..=1, run_card)
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
            _ => return cli::usage_error("vcard", &format!("unknown argument {a:?}"), USAGE),
        }
    }
    let Some(port) = port else {
        return cli::usage_error("vcard", "--port PORT is required", USAGE);
    };
    cli::install_signals();
    let log = std::env::var("VCARD_LOG").is_ok_and(|v| v == "1");
    println!("ATR: {}", hex(&ATR));
    println!("vpcd port: {port}, initially {}", if absent { "absent" } else { "present" });
    let _ = std::io::stdout().flush();

    let listener = match &ctl {
        Some(path) => match cli::bind(path) {
            Ok(l) => {
                cli::remove_on_signal(&[path]);
                Some(l)
            }
            Err(e) => {
                eprintln!("vcard: {e}");
                return ExitCode::FAILURE;
            }
        },
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
