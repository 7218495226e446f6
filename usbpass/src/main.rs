//! `usbpass`: the USB path of pcsc-bridge.
//!
//! * `usbpass proxy`: a pcscd-protocol server (every version, 4:0 to 4:6) in
//!   front of the host's pcscd ([`proxy`]).
//! * `usbpass serve`: the user-space USB CCID driver behind the same server
//!   ([`usbpass::serve`]).
//!
//! Command line in [`cli`]; this file only wires things up.

#![forbid(unsafe_code)]

mod cli;
mod proxy;

use std::process::ExitCode;

/// Logs to stderr, or appended to `USBPASS_LOG_FILE` (where an instance started on demand by
/// pcsc-bridge, whose stderr is /dev/null, can still be read).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("USBPASS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let file = std::env::var_os("USBPASS_LOG_FILE")
        .filter(|p| !p.is_empty())
        .and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match file {
        Some(f) => fmt.with_ansi(false).with_writer(std::sync::Mutex::new(f)).try_init(),
        None => fmt.with_writer(std::io::stderr).try_init(),
    };
}

fn main() -> ExitCode {
    let var = |k: &str| std::env::var_os(k);
    let env = cli::Env { var: &var, uid: pcsc_proto::server::listener::euid() };
    match cli::parse(std::env::args_os().skip(1), &env) {
        Ok(cli::Cmd::Help) => {
            println!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Ok(cli::Cmd::Version) => {
            println!("usbpass {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(cli::Cmd::Serve(opts)) => {
            init_logging();
            match usbpass::serve::run(&opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("usbpass serve: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Ok(cli::Cmd::Proxy(opts)) => {
            init_logging();
            match proxy::run(&opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("usbpass proxy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("usbpass: {e}\n\n{}", cli::USAGE);
            ExitCode::from(2)
        }
    }
}
