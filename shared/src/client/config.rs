//! Where the daemon is and how to talk to it, from the environment.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::consts::DEFAULT_SOCKET;
use crate::wire::Version;

/// Client settings. [`ClientConfig::from_env`] reads them the way libpcsclite does.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The daemon socket (`PCSCLITE_CSOCK_NAME`, default `/run/pcscd/pcscd.comm`).
    pub socket: PathBuf,
    /// `PCSCLITE_NO_BLOCKING`: do not retry on `SCARD_E_SHARING_VIOLATION`.
    pub no_blocking: bool,
    /// The newest protocol version to offer (default: the newest we speak).
    pub max_version: Version,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig { socket: PathBuf::from(DEFAULT_SOCKET), no_blocking: false, max_version: Version::NEWEST }
    }
}

impl ClientConfig {
    pub fn from_env() -> Self {
        let mut c = ClientConfig::default();
        if let Some(p) = secure_getenv("PCSCLITE_CSOCK_NAME") {
            if !p.is_empty() {
                c.socket = PathBuf::from(p);
            }
        }
        c.no_blocking = secure_getenv("PCSCLITE_NO_BLOCKING").is_some();
        if let Some(v) = secure_getenv("PCSC_BRIDGE_MAX_PROTOCOL") {
            if let Some(v) = parse_version(&v.to_string_lossy()) {
                c.max_version = v;
            }
        }
        c
    }

    pub fn with_socket(socket: impl Into<PathBuf>) -> Self {
        ClientConfig { socket: socket.into(), ..Default::default() }
    }
}

/// `4:4`-style text to a version (`4:2` means the 128-byte variant, `4:2/100` the other).
pub fn parse_version(s: &str) -> Option<Version> {
    if s.trim() == "4:2/100" {
        return Some(Version::V4_2Rn100);
    }
    let (a, b) = s.trim().split_once(':')?;
    Version::from_numbers(a.parse().ok()?, b.parse().ok()?)
}

/// Whether the process runs in secure-execution mode (set-uid, set-gid or file
/// capabilities), where environment redirection must be ignored.
pub fn is_secure_execution() -> bool {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// `secure_getenv`: the variable, unless the process is in secure-execution mode.
pub fn secure_getenv(name: &str) -> Option<OsString> {
    if is_secure_execution() {
        None
    } else {
        std::env::var_os(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn version_text() {
        assert_eq!(parse_version("4:4"), Some(Version::V4_4));
        assert_eq!(parse_version("4:2/100"), Some(Version::V4_2Rn100));
        assert_eq!(parse_version("5:1"), None);
        assert_eq!(parse_version("junk"), None);
    }
}
