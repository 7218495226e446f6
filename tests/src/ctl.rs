//! The one-line control protocol of the virtual cards (`vcard`, `vscard`): a
//! command such as `remove` on a Unix socket, one line back (`ok`, a status, or
//! `err ...`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Sends `cmd` to the card's control socket and returns its reply line.
pub fn request(path: &Path, cmd: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{cmd}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

/// `PROG ctl PATH COMMAND`: prints the reply; fails on `err ...` or no reply.
pub fn client_main(prog: &str, path: &Path, cmd: &str) -> ExitCode {
    match request(path, cmd) {
        Ok(r) => {
            println!("{r}");
            if r.starts_with("err") || r.is_empty() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("{prog} ctl: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}
