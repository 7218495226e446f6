//! PC/SC constants of pcsc-lite on Linux: scopes, share modes, protocols,
//! dispositions, card and reader states, attributes, control codes, limits.

/// `SCARD_SCOPE_*`
pub mod scope {
    pub const USER: u32 = 0;
    pub const TERMINAL: u32 = 1;
    pub const SYSTEM: u32 = 2;
    pub const GLOBAL: u32 = 3;
    pub fn is_valid(s: u64) -> bool {
        s <= GLOBAL as u64
    }
}

/// `SCARD_SHARE_*`
pub mod share {
    pub const EXCLUSIVE: u32 = 1;
    pub const SHARED: u32 = 2;
    pub const DIRECT: u32 = 3;
}

/// `SCARD_PROTOCOL_*`
pub mod protocol {
    pub const UNDEFINED: u32 = 0;
    pub const UNSET: u32 = 0;
    pub const T0: u32 = 1;
    pub const T1: u32 = 2;
    pub const RAW: u32 = 4;
    pub const T15: u32 = 8;
    pub const ANY: u32 = T0 | T1;
    /// Legacy "any" value pcscd still accepts.
    pub const ANY_LEGACY: u32 = 0x1000;
}

/// `SCARD_LEAVE_CARD` ... `SCARD_EJECT_CARD`
pub mod disposition {
    pub const LEAVE: u32 = 0;
    pub const RESET: u32 = 1;
    pub const UNPOWER: u32 = 2;
    pub const EJECT: u32 = 3;
    pub fn is_valid(d: u64) -> bool {
        d <= EJECT as u64
    }
}

/// Card state bit flags (`SCardStatus`, `READER_STATE.readerState`); pcsc-lite uses
/// bit flags, not Windows' enumeration.
pub mod card_state {
    pub const UNKNOWN: u32 = 0x0001;
    pub const ABSENT: u32 = 0x0002;
    pub const PRESENT: u32 = 0x0004;
    pub const SWALLOWED: u32 = 0x0008;
    pub const POWERED: u32 = 0x0010;
    pub const NEGOTIABLE: u32 = 0x0020;
    pub const SPECIFIC: u32 = 0x0040;
}

/// `SCARD_STATE_*` flags of `SCARD_READERSTATE`; bits 16-31 carry the event counter.
pub mod reader_state {
    pub const UNAWARE: u32 = 0x0000;
    pub const IGNORE: u32 = 0x0001;
    pub const CHANGED: u32 = 0x0002;
    pub const UNKNOWN: u32 = 0x0004;
    pub const UNAVAILABLE: u32 = 0x0008;
    pub const EMPTY: u32 = 0x0010;
    pub const PRESENT: u32 = 0x0020;
    pub const ATRMATCH: u32 = 0x0040;
    pub const EXCLUSIVE: u32 = 0x0080;
    pub const INUSE: u32 = 0x0100;
    pub const MUTE: u32 = 0x0200;
    pub const UNPOWERED: u32 = 0x0400;
}

/// `readerSharing` values inside the reader-state record.
pub mod sharing {
    pub const EXCLUSIVE_CONTEXT: i32 = -1;
    pub const NO_CONTEXT: i32 = 0;
    pub const LAST_CONTEXT: i32 = 1;
}

/// `INFINITE` timeout (a 32-bit value even where `DWORD` is 64-bit).
pub const INFINITE: u32 = 0xFFFF_FFFF;
/// `SCARD_AUTOALLOCATE` is `(DWORD)-1`.
pub const AUTOALLOCATE_U64: u64 = u64::MAX;
/// `MAX_ATR_SIZE`
pub const MAX_ATR_SIZE: usize = 33;
/// `cardAtrLength` value meaning "reader not initialised".
pub const READER_NOT_INITIALIZED: u32 = MAX_ATR_SIZE as u32 + 1;
/// `MAX_READERNAME` since 1.8.4 (100 before).
pub const MAX_READERNAME: usize = 128;
/// `PCSCLITE_MAX_READERS_CONTEXTS`
pub const MAX_READERS_CONTEXTS: usize = 16;
/// `MAX_BUFFER_SIZE` (short APDU; attribute buffer).
pub const MAX_BUFFER_SIZE: usize = 264;
/// `MAX_BUFFER_SIZE_EXTENDED` since 1.8.0.
pub const MAX_BUFFER_SIZE_EXTENDED: usize = 65548;
/// `MAX_BUFFER_SIZE_EXTENDED` in 1.6.x-1.7.x.
pub const MAX_BUFFER_SIZE_EXTENDED_OLD: usize = 65546;
/// The reader-group multi-string `SCardListReaderGroups` returns.
pub const DEFAULT_READER_GROUPS: &[u8] = b"SCard$DefaultReaders\0\0";
/// The pseudo reader for reader arrival/departure events.
pub const PNP_NOTIFICATION: &str = "\\\\?PnP?\\Notification";
/// Default daemon socket.
pub const DEFAULT_SOCKET: &str = "/run/pcscd/pcscd.comm";

/// `SCARD_CTL_CODE(code)` of pcsc-lite (not the Windows form).
pub const fn ctl_code(code: u32) -> u32 {
    0x4200_0000 + code
}
/// `CM_IOCTL_GET_FEATURE_REQUEST`
pub const CM_IOCTL_GET_FEATURE_REQUEST: u32 = ctl_code(3400);

/// `SCARD_ATTR_VALUE(class, tag)`
pub const fn attr_value(class: u32, tag: u32) -> u32 {
    (class << 16) | tag
}

/// Commonly used `SCARD_ATTR_*` identifiers.
pub mod attr {
    pub const VENDOR_NAME: u32 = 0x0001_0100;
    pub const VENDOR_IFD_TYPE: u32 = 0x0001_0101;
    pub const VENDOR_IFD_VERSION: u32 = 0x0001_0102;
    pub const VENDOR_IFD_SERIAL_NO: u32 = 0x0001_0103;
    pub const CHANNEL_ID: u32 = 0x0002_0110;
    pub const ASYNC_PROTOCOL_TYPES: u32 = 0x0003_0120;
    pub const DEFAULT_CLK: u32 = 0x0003_0121;
    pub const MAX_CLK: u32 = 0x0003_0122;
    pub const DEFAULT_DATA_RATE: u32 = 0x0003_0123;
    pub const MAX_DATA_RATE: u32 = 0x0003_0124;
    pub const MAX_IFSD: u32 = 0x0003_0125;
    pub const SYNC_PROTOCOL_TYPES: u32 = 0x0003_0126;
    pub const POWER_MGMT_SUPPORT: u32 = 0x0004_0131;
    pub const USER_TO_CARD_AUTH_DEVICE: u32 = 0x0005_0140;
    pub const USER_AUTH_INPUT_DEVICE: u32 = 0x0005_0142;
    pub const CHARACTERISTICS: u32 = 0x0006_0150;
    pub const ESC_RESET: u32 = 0x0007_A000;
    pub const ESC_CANCEL: u32 = 0x0007_A003;
    pub const ESC_AUTHREQUEST: u32 = 0x0007_A005;
    pub const MAXINPUT: u32 = 0x0007_A007;
    pub const CURRENT_PROTOCOL_TYPE: u32 = 0x0008_0201;
    pub const CURRENT_CLK: u32 = 0x0008_0202;
    pub const CURRENT_F: u32 = 0x0008_0203;
    pub const CURRENT_D: u32 = 0x0008_0204;
    pub const CURRENT_N: u32 = 0x0008_0205;
    pub const CURRENT_W: u32 = 0x0008_0206;
    pub const CURRENT_IFSC: u32 = 0x0008_0207;
    pub const CURRENT_IFSD: u32 = 0x0008_0208;
    pub const CURRENT_BWT: u32 = 0x0008_0209;
    pub const CURRENT_CWT: u32 = 0x0008_020A;
    pub const CURRENT_EBC_ENCODING: u32 = 0x0008_020B;
    pub const EXTENDED_BWT: u32 = 0x0008_020C;
    pub const ICC_PRESENCE: u32 = 0x0009_0300;
    pub const ICC_INTERFACE_STATUS: u32 = 0x0009_0301;
    pub const CURRENT_IO_STATE: u32 = 0x0009_0302;
    pub const ATR_STRING: u32 = 0x0009_0303;
    pub const ICC_TYPE_PER_ATR: u32 = 0x0009_0304;
    pub const DEVICE_UNIT: u32 = 0x7FFF_0001;
    pub const DEVICE_IN_USE: u32 = 0x7FFF_0002;
    pub const DEVICE_FRIENDLY_NAME_A: u32 = 0x7FFF_0003;
    pub const DEVICE_SYSTEM_NAME_A: u32 = 0x7FFF_0004;
    pub const DEVICE_FRIENDLY_NAME_W: u32 = 0x7FFF_0005;
    pub const DEVICE_SYSTEM_NAME_W: u32 = 0x7FFF_0006;
    pub const SUPRESS_T1_IFS_REQUEST: u32 = 0x7FFF_0007;
    pub const DEVICE_FRIENDLY_NAME: u32 = DEVICE_FRIENDLY_NAME_A;
    pub const DEVICE_SYSTEM_NAME: u32 = DEVICE_SYSTEM_NAME_A;
}

/// PC/SC part 10 feature tags (`FEATURE_*`).
pub mod feature {
    pub const VERIFY_PIN_START: u8 = 0x01;
    pub const VERIFY_PIN_FINISH: u8 = 0x02;
    pub const MODIFY_PIN_START: u8 = 0x03;
    pub const MODIFY_PIN_FINISH: u8 = 0x04;
    pub const GET_KEY_PRESSED: u8 = 0x05;
    pub const VERIFY_PIN_DIRECT: u8 = 0x06;
    pub const MODIFY_PIN_DIRECT: u8 = 0x07;
    pub const MCT_READER_DIRECT: u8 = 0x08;
    pub const MCT_UNIVERSAL: u8 = 0x09;
    pub const IFD_PIN_PROPERTIES: u8 = 0x0A;
    pub const ABORT: u8 = 0x0B;
    pub const SET_SPE_MESSAGE: u8 = 0x0C;
    pub const VERIFY_PIN_DIRECT_APP_ID: u8 = 0x0D;
    pub const MODIFY_PIN_DIRECT_APP_ID: u8 = 0x0E;
    pub const WRITE_DISPLAY: u8 = 0x0F;
    pub const GET_KEY: u8 = 0x10;
    pub const IFD_DISPLAY_PROPERTIES: u8 = 0x11;
    pub const GET_TLV_PROPERTIES: u8 = 0x12;
    pub const CCID_ESC_COMMAND: u8 = 0x13;
    pub const EXECUTE_PACE: u8 = 0x20;
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ctl_and_attr_codes() {
        assert_eq!(CM_IOCTL_GET_FEATURE_REQUEST, 0x4200_0D48);
        assert_eq!(attr_value(9, 0x0303), attr::ATR_STRING);
        assert_eq!(DEFAULT_READER_GROUPS.len(), 22);
        assert_eq!(PNP_NOTIFICATION, r"\\?PnP?\Notification");
    }
}
