//! Protocol versions and everything that differs between them on the wire.

use super::reader_state::RsLayout;
use crate::consts::{MAX_BUFFER_SIZE_EXTENDED, MAX_BUFFER_SIZE_EXTENDED_OLD};

/// A wire dialect. 4:2 shipped in two incompatible variants under one number
/// (reader names of 100 bytes in 1.6.5-1.8.3, 128 in 1.8.4-1.8.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// 4:0, pcsc-lite 1.6.0-1.6.4.
    V4_0,
    /// 4:2 with 100-byte reader names, 1.6.5-1.8.3.
    V4_2Rn100,
    /// 4:2 with 128-byte reader names, 1.8.4-1.8.8.
    V4_2,
    /// 4:3, 1.8.9-1.8.23.
    V4_3,
    /// 4:4, 1.8.24-2.2.3.
    V4_4,
    /// 4:5, 2.3.0-2.4.1.
    V4_5,
    /// 4:6, 2.5.x.
    V4_6,
}

/// What a `CMD_WAIT_READER_STATE_CHANGE` request gets back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitReply {
    /// Nothing until the event notification (4:0-4:3 and 4:6).
    Nothing,
    /// The reader-state array, written atomically with the registration (4:4, 4:5).
    States,
}

impl Version {
    pub const NEWEST: Version = Version::V4_6;
    /// Newest first: the order in which a client offers versions.
    pub const ALL_NEWEST_FIRST: [Version; 7] =
        [Version::V4_6, Version::V4_5, Version::V4_4, Version::V4_3, Version::V4_2, Version::V4_2Rn100, Version::V4_0];

    pub const fn major(self) -> u32 {
        4
    }

    pub const fn minor(self) -> u32 {
        match self {
            Version::V4_0 => 0,
            Version::V4_2Rn100 | Version::V4_2 => 2,
            Version::V4_3 => 3,
            Version::V4_4 => 4,
            Version::V4_5 => 5,
            Version::V4_6 => 6,
        }
    }

    /// The dialect for a `major:minor` pair; 4:2 maps to the 128-byte variant (the
    /// 100-byte one is told apart by the reader-state array length).
    pub fn from_numbers(major: u32, minor: u32) -> Option<Version> {
        if major != 4 {
            return None;
        }
        Some(match minor {
            0 => Version::V4_0,
            2 => Version::V4_2,
            3 => Version::V4_3,
            4 => Version::V4_4,
            5 => Version::V4_5,
            6 => Version::V4_6,
            _ => return None,
        })
    }

    /// `MAX_READERNAME` of this dialect.
    pub const fn reader_name_len(self) -> usize {
        match self {
            Version::V4_0 | Version::V4_2Rn100 => 100,
            _ => 128,
        }
    }

    pub const fn rs_layout(self) -> RsLayout {
        match self {
            Version::V4_0 => RsLayout::A,
            Version::V4_2Rn100 => RsLayout::B,
            _ => RsLayout::C,
        }
    }

    /// WAIT and STOP carry an 8-byte body up to 4:3.
    pub const fn wait_has_body(self) -> bool {
        matches!(self, Version::V4_0 | Version::V4_2Rn100 | Version::V4_2 | Version::V4_3)
    }

    pub const fn wait_reply(self) -> WaitReply {
        match self {
            Version::V4_4 | Version::V4_5 => WaitReply::States,
            _ => WaitReply::Nothing,
        }
    }

    /// `CMD_GET_READER_EVENTS` exists from 4:5.
    pub const fn has_reader_events(self) -> bool {
        matches!(self, Version::V4_5 | Version::V4_6)
    }

    /// `CMD_GET_READERS_STATE_SIZE`/`_ARRAY` (variable array) exist from 4:6.
    pub const fn has_state_array(self) -> bool {
        matches!(self, Version::V4_6)
    }

    /// `SCARD_STATUS` carries the 160-byte struct only in 4:0.
    pub const fn status_is_wide(self) -> bool {
        matches!(self, Version::V4_0)
    }

    /// `SCARD_CANCEL_TRANSACTION` exists only in 4:0.
    pub const fn has_cancel_transaction(self) -> bool {
        matches!(self, Version::V4_0)
    }

    /// The largest `cbSendLength` the daemon accepts, and the receive length a
    /// client should never exceed (older daemons close the connection above it).
    pub const fn max_buffer(self) -> usize {
        match self {
            Version::V4_0 | Version::V4_2Rn100 => MAX_BUFFER_SIZE_EXTENDED_OLD,
            _ => MAX_BUFFER_SIZE_EXTENDED,
        }
    }

    /// pcsc-lite releases that speak this dialect (for diagnostics).
    pub const fn releases(self) -> &'static str {
        match self {
            Version::V4_0 => "pcsc-lite 1.6.0-1.6.4",
            Version::V4_2Rn100 => "pcsc-lite 1.6.5-1.8.3",
            Version::V4_2 => "pcsc-lite 1.8.4-1.8.8",
            Version::V4_3 => "pcsc-lite 1.8.9-1.8.23",
            Version::V4_4 => "pcsc-lite 1.8.24-2.2.3",
            Version::V4_5 => "pcsc-lite 2.3.0-2.4.1",
            Version::V4_6 => "pcsc-lite 2.5.x",
        }
    }
}

impl core::fmt::Display for Version {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}:{}", self.major(), self.minor())?;
        if *self == Version::V4_2Rn100 {
            f.write_str(" (100-byte reader names)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for v in Version::ALL_NEWEST_FIRST {
            let back = Version::from_numbers(v.major(), v.minor()).unwrap();
            if v == Version::V4_2Rn100 {
                assert_eq!(back, Version::V4_2);
            } else {
                assert_eq!(back, v);
            }
        }
        assert_eq!(Version::from_numbers(4, 1), None);
        assert_eq!(Version::from_numbers(4, 7), None);
        assert_eq!(Version::from_numbers(5, 4), None);
    }

    #[test]
    fn per_version_rules() {
        assert!(Version::V4_3.wait_has_body());
        assert!(!Version::V4_4.wait_has_body());
        assert_eq!(Version::V4_5.wait_reply(), WaitReply::States);
        assert_eq!(Version::V4_6.wait_reply(), WaitReply::Nothing);
        assert_eq!(Version::V4_2Rn100.reader_name_len(), 100);
        assert_eq!(Version::V4_0.max_buffer(), 65546);
        assert_eq!(Version::V4_4.max_buffer(), 65548);
        assert_eq!(Version::V4_2.rs_layout().record_size(), 184);
        assert_eq!(Version::V4_0.rs_layout().record_size(), 156);
    }
}
