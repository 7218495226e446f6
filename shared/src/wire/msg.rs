//! The request/reply structs of every command. A reply is the request struct with
//! its output fields filled in; there is no reply header.
//!
//! Every struct has `SIZE` (or `size(version)`), `parse` (exact length required)
//! and `emit`. Field names follow pcsc-lite's `winscard_msg.h`, in snake case.

use super::codec::{expect_len, fixed_str, put_fixed_str, put_u32, Reader, WireError};
use super::version::Version;
use crate::consts::{MAX_ATR_SIZE, MAX_BUFFER_SIZE};
use crate::error::Rv;

macro_rules! fixed_msg {
    ($(#[$meta:meta])* $name:ident { $($field:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name { $(pub $field: u32,)* }

        impl $name {
            pub const SIZE: usize = 4 * [$(stringify!($field)),*].len();

            pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
                expect_len(buf, Self::SIZE)?;
                let mut r = Reader::new(buf);
                Ok($name { $($field: r.u32()?,)* })
            }

            pub fn emit(&self, out: &mut Vec<u8>) {
                $(put_u32(out, self.$field);)*
            }

            pub fn to_bytes(&self) -> Vec<u8> {
                self.to_array().to_vec()
            }

            /// The bytes on the stack (no allocation).
            pub fn to_array(&self) -> [u8; Self::SIZE] {
                let mut a = [0u8; Self::SIZE];
                let mut i = 0;
                $(
                    a[i..i + 4].copy_from_slice(&self.$field.to_ne_bytes());
                    i += 4;
                )*
                let _ = i;
                a
            }
        }
    };
}

macro_rules! with_rv {
    ($($name:ident),*) => {$(
        impl $name {
            pub fn result(&self) -> Rv { Rv(self.rv) }
        }
    )*};
}

fixed_msg! {
    /// `CMD_VERSION` (12 bytes): in, the client's version; out, the server's and rv.
    VersionMsg { major, minor, rv }
}
fixed_msg! {
    /// `SCARD_ESTABLISH_CONTEXT` (12).
    EstablishMsg { scope, h_context, rv }
}
fixed_msg! {
    /// `SCARD_RELEASE_CONTEXT` (8).
    ReleaseMsg { h_context, rv }
}
fixed_msg! {
    /// `SCARD_RECONNECT` (24).
    ReconnectMsg { h_card, share_mode, preferred_protocols, initialization, active_protocol, rv }
}
fixed_msg! {
    /// `SCARD_DISCONNECT` (12).
    DisconnectMsg { h_card, disposition, rv }
}
fixed_msg! {
    /// `SCARD_BEGIN_TRANSACTION` (8).
    BeginMsg { h_card, rv }
}
fixed_msg! {
    /// `SCARD_END_TRANSACTION` (12).
    EndMsg { h_card, disposition, rv }
}
fixed_msg! {
    /// `SCARD_CANCEL` (8): the context to cancel and rv.
    CancelMsg { h_context, rv }
}
fixed_msg! {
    /// `SCARD_CANCEL_TRANSACTION` (8), 4:0 only.
    CancelTransactionMsg { h_card, rv }
}
fixed_msg! {
    /// `SCARD_STATUS` from 4:2 on (8 bytes; only rv is meaningful).
    StatusMsg { h_card, rv }
}
fixed_msg! {
    /// `SCARD_TRANSMIT` (32), followed by `send_length` bytes in the request and,
    /// only when rv is 0, by `recv_length` bytes in the reply.
    TransmitMsg {
        h_card, send_pci_protocol, send_pci_length, send_length,
        recv_pci_protocol, recv_pci_length, recv_length, rv,
    }
}
fixed_msg! {
    /// `SCARD_CONTROL` (24), followed by `send_length` bytes in the request and,
    /// only when rv is 0, by `bytes_returned` bytes in the reply.
    ControlMsg { h_card, control_code, send_length, recv_length, bytes_returned, rv }
}
fixed_msg! {
    /// `wait_reader_state_change` (8): WAIT/STOP body up to 4:3, STOP reply, and
    /// the event notification (`rv` = `SCARD_E_CANCELLED` for a cancel).
    WaitMsg { timeout, rv }
}
fixed_msg! {
    /// Reply to `CMD_GET_READER_EVENTS` (8), 4:5 and later.
    ReaderEventsMsg { reader_events, rv }
}

with_rv!(
    VersionMsg,
    EstablishMsg,
    ReleaseMsg,
    ReconnectMsg,
    DisconnectMsg,
    BeginMsg,
    EndMsg,
    CancelMsg,
    CancelTransactionMsg,
    StatusMsg,
    TransmitMsg,
    ControlMsg,
    WaitMsg,
    ReaderEventsMsg
);

/// `SCARD_CONNECT`: 24 + reader-name bytes (152 with 128-byte names, 124 with 100).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConnectMsg {
    pub h_context: u32,
    /// The reader name without its NUL.
    pub reader: Vec<u8>,
    pub share_mode: u32,
    pub preferred_protocols: u32,
    pub h_card: u32,
    pub active_protocol: u32,
    pub rv: u32,
}

impl ConnectMsg {
    pub fn size(v: Version) -> usize {
        24 + v.reader_name_len()
    }

    pub fn parse(buf: &[u8], v: Version) -> Result<Self, WireError> {
        expect_len(buf, Self::size(v))?;
        let mut r = Reader::new(buf);
        let h_context = r.u32()?;
        let name = r.take(v.reader_name_len())?;
        // The server forces the last byte to NUL; so do we.
        let name = fixed_str(&name[..name.len() - 1]).to_vec();
        Ok(ConnectMsg {
            h_context,
            reader: name,
            share_mode: r.u32()?,
            preferred_protocols: r.u32()?,
            h_card: r.u32()?,
            active_protocol: r.u32()?,
            rv: r.u32()?,
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>, v: Version) {
        put_u32(out, self.h_context);
        put_fixed_str(out, &self.reader, v.reader_name_len());
        put_u32(out, self.share_mode);
        put_u32(out, self.preferred_protocols);
        put_u32(out, self.h_card);
        put_u32(out, self.active_protocol);
        put_u32(out, self.rv);
    }

    pub fn result(&self) -> Rv {
        Rv(self.rv)
    }
}

/// `SCARD_STATUS` of protocol 4:0 (160 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status40Msg {
    pub h_card: u32,
    pub reader_names: Vec<u8>,
    pub reader_len: u32,
    pub state: u32,
    pub protocol: u32,
    pub atr: [u8; MAX_ATR_SIZE],
    pub atr_len: u32,
    pub rv: u32,
}

impl Default for Status40Msg {
    fn default() -> Self {
        Status40Msg {
            h_card: 0,
            reader_names: Vec::new(),
            reader_len: 0,
            state: 0,
            protocol: 0,
            atr: [0; MAX_ATR_SIZE],
            atr_len: 0,
            rv: 0,
        }
    }
}

impl Status40Msg {
    pub const SIZE: usize = 160;

    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        expect_len(buf, Self::SIZE)?;
        let mut r = Reader::new(buf);
        let h_card = r.u32()?;
        let names = fixed_str(r.take(100)?).to_vec();
        let reader_len = r.u32()?;
        let state = r.u32()?;
        let protocol = r.u32()?;
        let atr = r.array::<MAX_ATR_SIZE>()?;
        r.take(3)?;
        let atr_len = r.u32()?;
        let rv = r.u32()?;
        if atr_len as usize > MAX_ATR_SIZE + 1 {
            return Err(WireError::BadValue { field: "pcbAtrLen", value: atr_len });
        }
        Ok(Status40Msg { h_card, reader_names: names, reader_len, state, protocol, atr, atr_len, rv })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        put_u32(out, self.h_card);
        put_fixed_str(out, &self.reader_names, 100);
        put_u32(out, self.reader_len);
        put_u32(out, self.state);
        put_u32(out, self.protocol);
        out.extend_from_slice(&self.atr);
        out.extend_from_slice(&[0; 3]);
        put_u32(out, self.atr_len);
        put_u32(out, self.rv);
    }
}

/// `SCARD_GET_ATTRIB` / `SCARD_SET_ATTRIB` (280 bytes: the value travels in a
/// 264-byte array).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttribMsg {
    pub h_card: u32,
    pub attr_id: u32,
    pub attr: [u8; MAX_BUFFER_SIZE],
    pub attr_len: u32,
    pub rv: u32,
}

impl Default for AttribMsg {
    fn default() -> Self {
        AttribMsg { h_card: 0, attr_id: 0, attr: [0; MAX_BUFFER_SIZE], attr_len: 0, rv: 0 }
    }
}

impl AttribMsg {
    pub const SIZE: usize = 280;

    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        expect_len(buf, Self::SIZE)?;
        let mut r = Reader::new(buf);
        let h_card = r.u32()?;
        let attr_id = r.u32()?;
        let attr = r.array::<MAX_BUFFER_SIZE>()?;
        let attr_len = r.u32()?;
        let rv = r.u32()?;
        if attr_len as usize > MAX_BUFFER_SIZE {
            return Err(WireError::BadLength { field: "cbAttrLen", value: attr_len, max: MAX_BUFFER_SIZE as u32 });
        }
        Ok(AttribMsg { h_card, attr_id, attr, attr_len, rv })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        put_u32(out, self.h_card);
        put_u32(out, self.attr_id);
        out.extend_from_slice(&self.attr);
        put_u32(out, self.attr_len);
        put_u32(out, self.rv);
    }

    /// The value bytes (`attr_len` is checked by `parse`; clamped here for
    /// structs built by hand).
    pub fn value(&self) -> &[u8] {
        &self.attr[..(self.attr_len as usize).min(MAX_BUFFER_SIZE)]
    }

    pub fn result(&self) -> Rv {
        Rv(self.rv)
    }
}

/// Reply to `CMD_GET_READERS_STATE_SIZE` (4:6): one `i32`, no rv.
pub fn parse_state_size(buf: &[u8]) -> Result<u32, WireError> {
    expect_len(buf, 4)?;
    let n = Reader::new(buf).i32()?;
    if n < 0 {
        return Err(WireError::BadValue { field: "readers state size", value: n as u32 });
    }
    Ok(n as u32)
}

pub fn emit_state_size(out: &mut Vec<u8>, n: u32) {
    put_u32(out, n);
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    fn le(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn sizes_match_the_reference() {
        assert_eq!(VersionMsg::SIZE, 12);
        assert_eq!(EstablishMsg::SIZE, 12);
        assert_eq!(ReleaseMsg::SIZE, 8);
        assert_eq!(ReconnectMsg::SIZE, 24);
        assert_eq!(DisconnectMsg::SIZE, 12);
        assert_eq!(BeginMsg::SIZE, 8);
        assert_eq!(EndMsg::SIZE, 12);
        assert_eq!(CancelMsg::SIZE, 8);
        assert_eq!(StatusMsg::SIZE, 8);
        assert_eq!(TransmitMsg::SIZE, 32);
        assert_eq!(ControlMsg::SIZE, 24);
        assert_eq!(WaitMsg::SIZE, 8);
        assert_eq!(ReaderEventsMsg::SIZE, 8);
        assert_eq!(AttribMsg::SIZE, 280);
        assert_eq!(Status40Msg::SIZE, 160);
        for v in Version::ALL_NEWEST_FIRST {
            let expect = if v.reader_name_len() == 100 { 124 } else { 152 };
            assert_eq!(ConnectMsg::size(v), expect);
        }
    }

    #[test]
    fn version_bytes() {
        let m = VersionMsg { major: 4, minor: 4, rv: 0 };
        assert_eq!(m.to_bytes(), [4, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
        let refusal = VersionMsg::parse(&le(&[4, 5, 0x8010_001E])).unwrap();
        assert_eq!(refusal.result(), Rv::E_SERVICE_STOPPED);
        assert!(VersionMsg::parse(&[0; 11]).is_err());
        assert!(VersionMsg::parse(&[0; 13]).is_err());
    }

    #[test]
    fn transmit_bytes() {
        // The reference's example: transmit of 00 A4 04 00 00 with T=1.
        let m = TransmitMsg {
            h_card: 0x1234_5678,
            send_pci_protocol: 2,
            send_pci_length: 16,
            send_length: 5,
            recv_pci_protocol: 3,
            recv_pci_length: 16,
            recv_length: 65548,
            rv: 0,
        };
        let b = m.to_bytes();
        assert_eq!(b, le(&[0x1234_5678, 2, 16, 5, 3, 16, 65548, 0]));
        assert_eq!(TransmitMsg::parse(&b).unwrap(), m);
    }

    #[test]
    fn connect_both_name_widths() {
        let m = ConnectMsg {
            h_context: 7,
            reader: b"Virtual PCD 00 00".to_vec(),
            share_mode: 2,
            preferred_protocols: 3,
            ..Default::default()
        };
        for v in [Version::V4_4, Version::V4_2Rn100] {
            let mut b = Vec::new();
            m.emit(&mut b, v);
            let n = v.reader_name_len();
            assert_eq!(b.len(), 24 + n);
            assert_eq!(&b[0..4], &[7, 0, 0, 0]);
            assert_eq!(&b[4..21], b"Virtual PCD 00 00");
            assert!(b[21..4 + n].iter().all(|&x| x == 0));
            assert_eq!(&b[4 + n..8 + n], &[2, 0, 0, 0]);
            assert_eq!(&b[8 + n..12 + n], &[3, 0, 0, 0]);
            assert_eq!(ConnectMsg::parse(&b, v).unwrap(), m);
            assert!(ConnectMsg::parse(&b[1..], v).is_err());
        }
        // A name with no NUL is cut to RN-1 bytes.
        let long = ConnectMsg { reader: vec![b'x'; 200], ..Default::default() };
        let mut b = Vec::new();
        long.emit(&mut b, Version::V4_4);
        assert_eq!(ConnectMsg::parse(&b, Version::V4_4).unwrap().reader.len(), 127);
        let mut raw = b.clone();
        raw[4..132].fill(b'y');
        assert_eq!(ConnectMsg::parse(&raw, Version::V4_4).unwrap().reader.len(), 127);
    }

    #[test]
    fn status40_layout() {
        let mut m = Status40Msg {
            h_card: 1,
            reader_names: b"R".to_vec(),
            reader_len: 100,
            state: 0x34,
            protocol: 2,
            atr_len: 3,
            rv: 0,
            ..Default::default()
        };
        m.atr[..3].copy_from_slice(&[0x3B, 0x00, 0x11]);
        let mut b = Vec::new();
        m.emit(&mut b);
        assert_eq!(b.len(), 160);
        assert_eq!(&b[104..108], &100u32.to_le_bytes());
        assert_eq!(&b[108..112], &0x34u32.to_le_bytes());
        assert_eq!(&b[116..119], &[0x3B, 0x00, 0x11]);
        assert_eq!(&b[152..156], &3u32.to_le_bytes());
        assert_eq!(Status40Msg::parse(&b).unwrap(), m);
        b[152] = 40;
        assert!(Status40Msg::parse(&b).is_err());
    }

    #[test]
    fn attrib_layout_and_bounds() {
        let mut m = AttribMsg { h_card: 9, attr_id: 0x0009_0303, attr_len: 2, ..Default::default() };
        m.attr[0] = 0x3B;
        m.attr[1] = 0x8A;
        let mut b = Vec::new();
        m.emit(&mut b);
        assert_eq!(b.len(), 280);
        assert_eq!(&b[4..8], &0x0009_0303u32.to_le_bytes());
        assert_eq!(&b[8..10], &[0x3B, 0x8A]);
        assert_eq!(&b[272..276], &2u32.to_le_bytes());
        assert_eq!(AttribMsg::parse(&b).unwrap().value(), &[0x3B, 0x8A]);
        b[272..276].copy_from_slice(&265u32.to_le_bytes());
        assert!(matches!(AttribMsg::parse(&b), Err(WireError::BadLength { .. })));
    }

    #[test]
    fn small_structs_bytes() {
        assert_eq!(EstablishMsg { scope: 2, h_context: 0, rv: 0 }.to_bytes(), le(&[2, 0, 0]));
        assert_eq!(
            ReconnectMsg {
                h_card: 5,
                share_mode: 2,
                preferred_protocols: 3,
                initialization: 1,
                active_protocol: 2,
                rv: 0
            }
            .to_bytes(),
            le(&[5, 2, 3, 1, 2, 0])
        );
        assert_eq!(
            ControlMsg {
                h_card: 5,
                control_code: 0x4200_0D48,
                send_length: 0,
                recv_length: 264,
                bytes_returned: 0,
                rv: 0
            }
            .to_bytes(),
            le(&[5, 0x4200_0D48, 0, 264, 0, 0])
        );
        assert_eq!(WaitMsg::parse(&le(&[0, 0x8010_0002])).unwrap().result(), Rv::E_CANCELLED);
        assert_eq!(parse_state_size(&le(&[2])).unwrap(), 2);
        assert!(parse_state_size(&(-1i32).to_le_bytes()).is_err());
    }
}
