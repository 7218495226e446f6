//! PC/SC result codes.
//!
//! [`Rv`] is an *open* newtype over the 32-bit value that travels on the wire: every
//! value round-trips, known or not, so an unknown code from a daemon reaches the app
//! unchanged. On 64-bit Linux the C ABI's `LONG` carries it zero-extended
//! (`0x0000_0000_8010_001E`), never sign-extended.

use core::fmt;

/// A PC/SC return value (`LONG` in the C API, `u32` on the wire).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Rv(pub u32);

macro_rules! codes {
    ($( $name:ident = $val:expr, $text:expr; )*) => {
        impl Rv {
            $( pub const $name: Rv = Rv($val); )*

            /// The constant's name (`"SCARD_E_TIMEOUT"`), if the value is known.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $val => Some(stringify!($name)), )*
                    _ => None,
                }
            }

            /// Every known code, in numeric order (aliases listed once).
            pub const ALL: &'static [Rv] = &[$( Rv($val), )*];

            fn known_text(self) -> Option<&'static str> {
                match self.0 {
                    $( $val => $text, )*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    SUCCESS = 0x0000_0000, Some("Command successful.");
    F_INTERNAL_ERROR = 0x8010_0001, Some("Internal error.");
    E_CANCELLED = 0x8010_0002, Some("Command cancelled.");
    E_INVALID_HANDLE = 0x8010_0003, Some("Invalid handle.");
    E_INVALID_PARAMETER = 0x8010_0004, Some("Invalid parameter given.");
    E_INVALID_TARGET = 0x8010_0005, Some("Invalid target given.");
    E_NO_MEMORY = 0x8010_0006, Some("Not enough memory.");
    F_WAITED_TOO_LONG = 0x8010_0007, Some("Waited too long.");
    E_INSUFFICIENT_BUFFER = 0x8010_0008, Some("Insufficient buffer.");
    E_UNKNOWN_READER = 0x8010_0009, Some("Unknown reader specified.");
    E_TIMEOUT = 0x8010_000A, Some("Command timeout.");
    E_SHARING_VIOLATION = 0x8010_000B, Some("Sharing violation.");
    E_NO_SMARTCARD = 0x8010_000C, Some("No smart card inserted.");
    E_UNKNOWN_CARD = 0x8010_000D, Some("Unknown card.");
    E_CANT_DISPOSE = 0x8010_000E, Some("Cannot dispose handle.");
    E_PROTO_MISMATCH = 0x8010_000F, Some("Card protocol mismatch.");
    E_NOT_READY = 0x8010_0010, Some("Subsystem not ready.");
    E_INVALID_VALUE = 0x8010_0011, Some("Invalid value given.");
    E_SYSTEM_CANCELLED = 0x8010_0012, Some("System cancelled.");
    F_COMM_ERROR = 0x8010_0013, Some("RPC transport error.");
    F_UNKNOWN_ERROR = 0x8010_0014, Some("Unknown error.");
    E_INVALID_ATR = 0x8010_0015, Some("Invalid ATR.");
    E_NOT_TRANSACTED = 0x8010_0016, Some("Transaction failed.");
    E_READER_UNAVAILABLE = 0x8010_0017, Some("Reader is unavailable.");
    P_SHUTDOWN = 0x8010_0018, None;
    E_PCI_TOO_SMALL = 0x8010_0019, Some("PCI struct too small.");
    E_READER_UNSUPPORTED = 0x8010_001A, Some("Reader is unsupported.");
    E_DUPLICATE_READER = 0x8010_001B, Some("Reader already exists.");
    E_CARD_UNSUPPORTED = 0x8010_001C, Some("Card is unsupported.");
    E_NO_SERVICE = 0x8010_001D, Some("Service not available.");
    E_SERVICE_STOPPED = 0x8010_001E, Some("Service was stopped.");
    E_UNSUPPORTED_FEATURE = 0x8010_001F, Some("Feature not supported.");
    E_ICC_INSTALLATION = 0x8010_0020, None;
    E_ICC_CREATEORDER = 0x8010_0021, None;
    E_DIR_NOT_FOUND = 0x8010_0023, None;
    E_FILE_NOT_FOUND = 0x8010_0024, None;
    E_NO_DIR = 0x8010_0025, None;
    E_NO_FILE = 0x8010_0026, None;
    E_NO_ACCESS = 0x8010_0027, None;
    E_WRITE_TOO_MANY = 0x8010_0028, None;
    E_BAD_SEEK = 0x8010_0029, None;
    E_INVALID_CHV = 0x8010_002A, None;
    E_UNKNOWN_RES_MSG = 0x8010_002B, None;
    E_NO_SUCH_CERTIFICATE = 0x8010_002C, None;
    E_CERTIFICATE_UNAVAILABLE = 0x8010_002D, None;
    E_NO_READERS_AVAILABLE = 0x8010_002E, Some("Cannot find a smart card reader.");
    E_COMM_DATA_LOST = 0x8010_002F, None;
    E_NO_KEY_CONTAINER = 0x8010_0030, None;
    E_SERVER_TOO_BUSY = 0x8010_0031, None;
    W_UNSUPPORTED_CARD = 0x8010_0065, Some("Card is not supported.");
    W_UNRESPONSIVE_CARD = 0x8010_0066, Some("Card is unresponsive.");
    W_UNPOWERED_CARD = 0x8010_0067, Some("Card is unpowered.");
    W_RESET_CARD = 0x8010_0068, Some("Card was reset.");
    W_REMOVED_CARD = 0x8010_0069, Some("Card was removed.");
    W_SECURITY_VIOLATION = 0x8010_006A, Some("Access denied.");
    W_WRONG_CHV = 0x8010_006B, None;
    W_CHV_BLOCKED = 0x8010_006C, None;
    W_EOF = 0x8010_006D, None;
    W_CANCELLED_BY_USER = 0x8010_006E, None;
    W_CARD_NOT_AUTHENTICATED = 0x8010_006F, None;
}

impl Rv {
    /// pcsc-lite's alias for [`Rv::E_UNSUPPORTED_FEATURE`] (same value, 0x8010001F).
    pub const E_UNEXPECTED: Rv = Rv(0x8010_001F);
    /// Old spelling of [`Rv::E_UNKNOWN_RES_MSG`].
    pub const E_UNKNOWN_RES_MNG: Rv = Rv(0x8010_002B);

    pub fn is_success(self) -> bool {
        self.0 == 0
    }

    /// `Ok(())` for success, `Err(self)` otherwise.
    pub fn ok(self) -> Result<(), Rv> {
        if self.is_success() {
            Ok(())
        } else {
            Err(self)
        }
    }

    /// The text `pcsc_stringify_error` gives for this code, written into `out`
    /// (upstream's wording; unknown codes read `Unknown error: 0x%08lX`).
    pub fn write_text(self, out: &mut impl fmt::Write) -> fmt::Result {
        match self.known_text() {
            Some(t) => out.write_str(t),
            None => write!(out, "Unknown error: 0x{:08X}", self.0),
        }
    }

    /// The text as an owned string.
    pub fn text(self) -> String {
        let mut s = String::new();
        let _ = self.write_text(&mut s);
        s
    }

    /// Value as the C ABI's `LONG` (zero-extended on LP64).
    pub fn as_long(self) -> i64 {
        self.0 as i64
    }

    /// From a C `LONG`; only the low 32 bits carry PC/SC codes.
    pub fn from_long(v: i64) -> Rv {
        Rv(v as u32)
    }
}

impl fmt::Debug for Rv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "SCARD_{n}(0x{:08X})", self.0),
            None => write!(f, "Rv(0x{:08X})", self.0),
        }
    }
}

impl fmt::Display for Rv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_text(f)?;
        write!(f, " (0x{:08X})", self.0)
    }
}

impl std::error::Error for Rv {}

impl From<u32> for Rv {
    fn from(v: u32) -> Self {
        Rv(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_match_upstream_wording() {
        assert_eq!(Rv::SUCCESS.text(), "Command successful.");
        assert_eq!(Rv::E_SERVICE_STOPPED.text(), "Service was stopped.");
        assert_eq!(Rv::E_NO_READERS_AVAILABLE.text(), "Cannot find a smart card reader.");
        // Since 1.9.9 (upstream 34f27e76); verified against Debian's libpcsclite 1.9.9.
        assert_eq!(Rv::W_SECURITY_VIOLATION.text(), "Access denied.");
        assert_eq!(Rv(0x1234).text(), "Unknown error: 0x00001234");
    }

    #[test]
    fn long_conversion_is_zero_extended() {
        assert_eq!(Rv::E_NO_SERVICE.as_long(), 0x8010_001D_i64);
        assert_eq!(Rv::from_long(0x8010_001D), Rv::E_NO_SERVICE);
    }

    #[test]
    fn names_and_debug() {
        assert_eq!(Rv::E_TIMEOUT.name(), Some("E_TIMEOUT"));
        assert_eq!(format!("{:?}", Rv(0x8010_0022)), "Rv(0x80100022)");
        assert!(Rv::ALL.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
