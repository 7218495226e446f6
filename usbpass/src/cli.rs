//! Command line: `usbpass proxy [--listen PATH] [--upstream PATH] [--allow-uid UID]...
//! [--socket-mode OCTAL]`, `usbpass serve [--listen PATH] [--allow-uid UID]... [--socket-mode
//! OCTAL]`, `usbpass --help`, `usbpass --version`. `serve` also takes the test-only, undocumented
//! `--simulate LEVEL` (a simulated reader instead of USB; needs the `sim` feature).

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: usbpass proxy [--listen PATH] [--upstream PATH] [--allow-uid UID]... [--socket-mode OCTAL]
       usbpass serve [--listen PATH] [--allow-uid UID]... [--socket-mode OCTAL]
       usbpass --help | --version

proxy   serve pcscd clients of every protocol version (4:0 to 4:6) on PATH and
        forward to the host pcscd at the upstream socket.
          --listen PATH      default $XDG_RUNTIME_DIR/pcsc-bridge/pcscd.comm
                             (else /run/user/UID/pcsc-bridge/pcscd.comm); ignored
                             when started by systemd socket activation
          --upstream PATH    default $PCSCLITE_CSOCK_NAME, else /run/pcscd/pcscd.comm
          --allow-uid UID    also accept clients of this uid (repeatable; default:
                             only our own uid)
          --socket-mode MODE permissions of the socket file (octal, default 600)
serve   drive the USB CCID smart-card readers itself (no pcscd, no libccid) and serve
        pcscd clients of every protocol version on PATH. Readers that another program
        (the host's pcscd) holds are left alone.
          --listen PATH      default $XDG_RUNTIME_DIR/pcsc-bridge/usbpass.comm
                             (else /run/user/UID/pcsc-bridge/usbpass.comm); ignored
                             when started by systemd socket activation
          --allow-uid UID    also accept clients of this uid (repeatable; default:
                             only our own uid)
          --socket-mode MODE permissions of the socket file (octal, default 600)

Logging: USBPASS_LOG (tracing filter, default \"info\"), to stderr or appended to the
file USBPASS_LOG_FILE.";

/// Proxy settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyOpts {
    pub listen: PathBuf,
    pub upstream: PathBuf,
    pub allow_uids: Vec<u32>,
    pub socket_mode: u32,
}

pub use usbpass::serve::ServeOptions;

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cmd {
    Proxy(ProxyOpts),
    Serve(ServeOptions),
    Help,
    Version,
}

/// A command line we cannot use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CliError {
    NoCommand,
    UnknownCommand(String),
    UnknownOption(String),
    MissingValue(&'static str),
    BadValue { option: &'static str, value: String },
    NoListenPath,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::NoCommand => write!(f, "no command given"),
            CliError::UnknownCommand(c) => write!(f, "unknown command {c:?}"),
            CliError::UnknownOption(o) => write!(f, "unknown option {o:?}"),
            CliError::MissingValue(o) => write!(f, "{o} needs a value"),
            CliError::BadValue { option, value } => write!(f, "bad value for {option}: {value:?}"),
            CliError::NoListenPath => write!(f, "no default socket path: set XDG_RUNTIME_DIR or give --listen"),
        }
    }
}

impl std::error::Error for CliError {}

/// Where the process's defaults come from (the environment and our uid).
pub struct Env<'a> {
    pub var: &'a dyn Fn(&str) -> Option<OsString>,
    pub uid: u32,
}

impl Env<'_> {
    fn default_listen(&self) -> Option<PathBuf> {
        self.runtime_file("pcscd.comm")
    }

    /// `$XDG_RUNTIME_DIR/pcsc-bridge/NAME`, else `/run/user/UID/pcsc-bridge/NAME`.
    fn runtime_file(&self, name: &str) -> Option<PathBuf> {
        match (self.var)("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
            Some(d) => Some(PathBuf::from(d).join("pcsc-bridge").join(name)),
            None => Some(PathBuf::from(format!("/run/user/{}/pcsc-bridge/{name}", self.uid))),
        }
    }

    fn default_upstream(&self) -> PathBuf {
        match (self.var)("PCSCLITE_CSOCK_NAME").filter(|v| !v.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(pcsc_proto::consts::DEFAULT_SOCKET),
        }
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>, env: &Env<'_>) -> Result<Cmd, CliError> {
    let mut args = args.into_iter().map(|a| a.to_string_lossy().into_owned());
    let cmd = args.next().ok_or(CliError::NoCommand)?;
    let serve = match cmd.as_str() {
        "-h" | "--help" | "help" => return Ok(Cmd::Help),
        "-V" | "--version" => return Ok(Cmd::Version),
        "serve" => true,
        "proxy" => false,
        other => return Err(CliError::UnknownCommand(other.to_string())),
    };
    let Some(o) = parse_options(args, serve)? else { return Ok(Cmd::Help) };
    if serve {
        let listen = match o.listen {
            Some(l) => l,
            None => env.runtime_file("usbpass.comm").ok_or(CliError::NoListenPath)?,
        };
        return Ok(Cmd::Serve(ServeOptions {
            listen,
            allow_uids: o.allow_uids,
            socket_mode: o.socket_mode,
            simulate: o.simulate,
        }));
    }
    let listen = match o.listen {
        Some(l) => l,
        None => env.default_listen().ok_or(CliError::NoListenPath)?,
    };
    let upstream = o.upstream.unwrap_or_else(|| env.default_upstream());
    Ok(Cmd::Proxy(ProxyOpts { listen, upstream, allow_uids: o.allow_uids, socket_mode: o.socket_mode }))
}

/// The options `proxy` and `serve` take (`--upstream` only for `proxy`, the
/// test-only `--simulate` only for `serve`).
struct Options {
    listen: Option<PathBuf>,
    upstream: Option<PathBuf>,
    simulate: Option<String>,
    allow_uids: Vec<u32>,
    socket_mode: u32,
}

/// `None` when help was asked for.
fn parse_options(mut args: impl Iterator<Item = String>, serve: bool) -> Result<Option<Options>, CliError> {
    let mut o = Options { listen: None, upstream: None, simulate: None, allow_uids: Vec::new(), socket_mode: 0o600 };
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value =
            |option: &'static str| inline.clone().or_else(|| args.next()).ok_or(CliError::MissingValue(option));
        match name.as_str() {
            "--listen" => o.listen = Some(PathBuf::from(value("--listen")?)),
            "--upstream" if !serve => o.upstream = Some(PathBuf::from(value("--upstream")?)),
            "--allow-uid" => {
                let v = value("--allow-uid")?;
                o.allow_uids.push(v.parse().map_err(|_| CliError::BadValue { option: "--allow-uid", value: v })?);
            }
            "--socket-mode" => {
                let v = value("--socket-mode")?;
                o.socket_mode = u32::from_str_radix(v.trim_start_matches("0o"), 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or(CliError::BadValue { option: "--socket-mode", value: v })?;
            }
            // Test-only (not in the usage text): a simulated reader instead of USB.
            "--simulate" if serve => o.simulate = Some(value("--simulate")?),
            "-h" | "--help" => return Ok(None),
            _ => return Err(CliError::UnknownOption(arg)),
        }
    }
    Ok(Some(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], vars: &[(&str, &str)]) -> Result<Cmd, CliError> {
        let vars: Vec<(String, String)> = vars.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let var = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| OsString::from(v));
        let env = Env { var: &var, uid: 1000 };
        parse(args.iter().map(OsString::from), &env)
    }

    fn proxy(args: &[&str], vars: &[(&str, &str)]) -> ProxyOpts {
        match run(args, vars) {
            Ok(Cmd::Proxy(o)) => o,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let o = proxy(&["proxy"], &[("XDG_RUNTIME_DIR", "/run/user/1000")]);
        assert_eq!(o.listen, PathBuf::from("/run/user/1000/pcsc-bridge/pcscd.comm"));
        assert_eq!(o.upstream, PathBuf::from("/run/pcscd/pcscd.comm"));
        assert_eq!(o.socket_mode, 0o600);
        assert!(o.allow_uids.is_empty());
        let o = proxy(&["proxy"], &[("PCSCLITE_CSOCK_NAME", "/tmp/up.comm")]);
        assert_eq!(o.listen, PathBuf::from("/run/user/1000/pcsc-bridge/pcscd.comm"));
        assert_eq!(o.upstream, PathBuf::from("/tmp/up.comm"));
    }

    #[test]
    fn serve_options() {
        let serve = |args: &[&str], vars: &[(&str, &str)]| match run(args, vars) {
            Ok(Cmd::Serve(o)) => o,
            other => panic!("{other:?}"),
        };
        let o = serve(&["serve"], &[("XDG_RUNTIME_DIR", "/run/user/1000")]);
        assert_eq!(
            o,
            ServeOptions {
                listen: "/run/user/1000/pcsc-bridge/usbpass.comm".into(),
                allow_uids: vec![],
                socket_mode: 0o600,
                simulate: None
            }
        );
        assert_eq!(serve(&["serve"], &[]).listen, PathBuf::from("/run/user/1000/pcsc-bridge/usbpass.comm"));
        let o = serve(
            &[
                "serve",
                "--listen",
                "/run/pcscd/pcscd.comm",
                "--allow-uid=7",
                "--socket-mode",
                "666",
                "--simulate",
                "qemu",
            ],
            &[],
        );
        assert_eq!(
            o,
            ServeOptions {
                listen: "/run/pcscd/pcscd.comm".into(),
                allow_uids: vec![7],
                socket_mode: 0o666,
                simulate: Some("qemu".into())
            }
        );
        assert_eq!(run(&["serve", "--upstream", "x"], &[]), Err(CliError::UnknownOption("--upstream".into())));
        assert_eq!(
            run(&["serve", "--allow-uid", "me"], &[]),
            Err(CliError::BadValue { option: "--allow-uid", value: "me".into() })
        );
        assert_eq!(run(&["serve", "-h"], &[]), Ok(Cmd::Help));
    }

    #[test]
    fn options() {
        let o = proxy(
            &[
                "proxy",
                "--listen",
                "/tmp/l",
                "--upstream=/tmp/u",
                "--allow-uid",
                "7",
                "--allow-uid=8",
                "--socket-mode",
                "660",
            ],
            &[],
        );
        assert_eq!(
            o,
            ProxyOpts {
                listen: "/tmp/l".into(),
                upstream: "/tmp/u".into(),
                allow_uids: vec![7, 8],
                socket_mode: 0o660
            }
        );
        assert_eq!(
            run(&["proxy", "--allow-uid", "x"], &[]),
            Err(CliError::BadValue { option: "--allow-uid", value: "x".into() })
        );
        assert_eq!(run(&["proxy", "--listen"], &[]), Err(CliError::MissingValue("--listen")));
        assert_eq!(
            run(&["proxy", "--socket-mode", "999"], &[]),
            Err(CliError::BadValue { option: "--socket-mode", value: "999".into() })
        );
        assert_eq!(run(&["proxy", "--frob"], &[]), Err(CliError::UnknownOption("--frob".into())));
        assert_eq!(run(&["serve", "x"], &[]), Err(CliError::UnknownOption("x".into())));
        assert_eq!(run(&["--help"], &[]), Ok(Cmd::Help));
        assert_eq!(run(&["proxy", "-h"], &[]), Ok(Cmd::Help));
        assert_eq!(run(&[], &[]), Err(CliError::NoCommand));
        assert_eq!(run(&["frob"], &[]), Err(CliError::UnknownCommand("frob".into())));
    }
}
