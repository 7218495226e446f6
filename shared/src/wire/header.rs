//! The 8-byte request header `{u32 size; u32 command}` and the command codes.

use super::codec::{put_u32, Reader, WireError};

/// A command code (open: unknown values round-trip).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Command(pub u32);

impl Command {
    pub const ESTABLISH_CONTEXT: Command = Command(0x01);
    pub const RELEASE_CONTEXT: Command = Command(0x02);
    pub const LIST_READERS: Command = Command(0x03);
    pub const CONNECT: Command = Command(0x04);
    pub const RECONNECT: Command = Command(0x05);
    pub const DISCONNECT: Command = Command(0x06);
    pub const BEGIN_TRANSACTION: Command = Command(0x07);
    pub const END_TRANSACTION: Command = Command(0x08);
    pub const TRANSMIT: Command = Command(0x09);
    pub const CONTROL: Command = Command(0x0A);
    pub const STATUS: Command = Command(0x0B);
    pub const GET_STATUS_CHANGE: Command = Command(0x0C);
    pub const CANCEL: Command = Command(0x0D);
    pub const CANCEL_TRANSACTION: Command = Command(0x0E);
    pub const GET_ATTRIB: Command = Command(0x0F);
    pub const SET_ATTRIB: Command = Command(0x10);
    pub const VERSION: Command = Command(0x11);
    pub const GET_READERS_STATE: Command = Command(0x12);
    pub const WAIT_READER_STATE_CHANGE: Command = Command(0x13);
    pub const STOP_WAITING_READER_STATE_CHANGE: Command = Command(0x14);
    pub const GET_READER_EVENTS: Command = Command(0x15);
    pub const GET_READERS_STATE_SIZE: Command = Command(0x16);
    pub const GET_READERS_STATE_ARRAY: Command = Command(0x17);

    pub fn name(self) -> &'static str {
        match self.0 {
            0x01 => "SCARD_ESTABLISH_CONTEXT",
            0x02 => "SCARD_RELEASE_CONTEXT",
            0x03 => "SCARD_LIST_READERS",
            0x04 => "SCARD_CONNECT",
            0x05 => "SCARD_RECONNECT",
            0x06 => "SCARD_DISCONNECT",
            0x07 => "SCARD_BEGIN_TRANSACTION",
            0x08 => "SCARD_END_TRANSACTION",
            0x09 => "SCARD_TRANSMIT",
            0x0A => "SCARD_CONTROL",
            0x0B => "SCARD_STATUS",
            0x0C => "SCARD_GET_STATUS_CHANGE",
            0x0D => "SCARD_CANCEL",
            0x0E => "SCARD_CANCEL_TRANSACTION",
            0x0F => "SCARD_GET_ATTRIB",
            0x10 => "SCARD_SET_ATTRIB",
            0x11 => "CMD_VERSION",
            0x12 => "CMD_GET_READERS_STATE",
            0x13 => "CMD_WAIT_READER_STATE_CHANGE",
            0x14 => "CMD_STOP_WAITING_READER_STATE_CHANGE",
            0x15 => "CMD_GET_READER_EVENTS",
            0x16 => "CMD_GET_READERS_STATE_SIZE",
            0x17 => "CMD_GET_READERS_STATE_ARRAY",
            _ => "unknown",
        }
    }
}

/// `struct rxHeader`: `size` counts the fixed struct only, never trailing data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Header {
    pub size: u32,
    pub command: Command,
}

impl Header {
    pub const SIZE: usize = 8;

    pub fn new(command: Command, size: usize) -> Header {
        Header { size: size as u32, command }
    }

    pub fn parse(buf: &[u8]) -> Result<Header, WireError> {
        let mut r = Reader::new(buf);
        let size = r.u32()?;
        let command = Command(r.u32()?);
        r.finish()?;
        Ok(Header { size, command })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        put_u32(out, self.size);
        put_u32(out, self.command.0);
    }
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    #[test]
    fn header_bytes() {
        let h = Header::new(Command::TRANSMIT, 32);
        let mut v = Vec::new();
        h.emit(&mut v);
        assert_eq!(v, [0x20, 0, 0, 0, 0x09, 0, 0, 0]);
        assert_eq!(Header::parse(&v).unwrap(), h);
        assert!(Header::parse(&v[..7]).is_err());
    }
}
