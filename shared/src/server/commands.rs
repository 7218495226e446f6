//! What the server does for each command, per negotiated dialect
//! (pcscd-protocol.md §3.4, §5.5, §6).

use std::time::Instant;

use crate::consts::{scope, MAX_ATR_SIZE, MAX_BUFFER_SIZE};
use crate::error::Rv;
use crate::wire::header::Command;
use crate::wire::msg::*;
use crate::wire::version::WaitReply;
use crate::wire::Version;

use super::backend::Backend;
use super::connection::{CardSlot, Conn, End};
use super::{negotiate, states};

impl<B: Backend> Conn<'_, B> {
    /// Serves one parsed request (`body` has the command's fixed size, `data`
    /// the TRANSMIT/CONTROL payload).
    pub(crate) fn dispatch(&mut self, cmd: Command, body: &[u8], data: &[u8]) -> Result<(), End> {
        match cmd {
            Command::VERSION => self.version_cmd(body),
            Command::ESTABLISH_CONTEXT => self.establish(body),
            Command::RELEASE_CONTEXT => self.release(body),
            Command::CONNECT => self.connect(body),
            Command::RECONNECT => self.reconnect(body),
            Command::DISCONNECT => self.disconnect(body),
            Command::BEGIN_TRANSACTION => self.begin(body),
            Command::END_TRANSACTION => self.end(body),
            Command::TRANSMIT => self.transmit(body, data),
            Command::CONTROL => self.control(body, data),
            Command::STATUS if body.len() == Status40Msg::SIZE => self.status40(body),
            Command::STATUS => self.status(body),
            Command::CANCEL => self.cancel(body),
            Command::CANCEL_TRANSACTION => self.cancel_transaction(body),
            Command::GET_ATTRIB => self.get_attrib(body),
            Command::SET_ATTRIB => self.set_attrib(body),
            Command::GET_READERS_STATE => self.readers_state(),
            Command::WAIT_READER_STATE_CHANGE => self.wait(body.len() == WaitMsg::SIZE),
            Command::STOP_WAITING_READER_STATE_CHANGE => self.stop(),
            Command::GET_READER_EVENTS => self.reader_events(),
            Command::GET_READERS_STATE_SIZE => self.state_size(),
            Command::GET_READERS_STATE_ARRAY => self.state_array(),
            other => Err(End::Protocol(crate::wire::WireError::UnknownCommand(other.0))),
        }
    }

    fn hold(&mut self) {
        self.hold_until = Some(Instant::now() + self.shared.cfg.notify_hold);
    }

    fn version_cmd(&mut self, body: &[u8]) -> Result<(), End> {
        let m = VersionMsg::parse(body)?;
        let cfg = &self.shared.cfg;
        let (reply, accepted) = negotiate::answer(m.major, m.minor, cfg.max_version, cfg.v4_2);
        match accepted {
            Some(v) => {
                tracing::debug!(conn = self.me.id, version = %v, "version accepted");
                self.version = Some(v);
            }
            None => tracing::debug!(conn = self.me.id, major = m.major, minor = m.minor, "version refused"),
        }
        self.reply(&reply.to_bytes())
    }

    fn establish(&mut self, body: &[u8]) -> Result<(), End> {
        let mut m = EstablishMsg::parse(body)?;
        if !scope::is_valid(u64::from(m.scope)) {
            m.h_context = 0;
            m.rv = Rv::E_INVALID_VALUE.0;
        } else {
            let session = match self.session {
                Some(s) => Ok(s),
                None => self.shared.backend.open_session(m.scope),
            };
            match session {
                Ok(s) => {
                    self.session = Some(s);
                    // One context per connection: a second ESTABLISH replaces the
                    // number and keeps the cards, as pcscd.
                    let h = self.shared.registry.new_context(self.me.id, self.context);
                    self.context = Some(h);
                    m.h_context = h;
                    m.rv = 0;
                }
                Err(rv) => {
                    m.h_context = 0;
                    m.rv = rv.0;
                }
            }
        }
        self.reply(&m.to_bytes())
    }

    fn release(&mut self, body: &[u8]) -> Result<(), End> {
        let mut m = ReleaseMsg::parse(body)?;
        m.rv = match self.context {
            None => Rv::E_INVALID_HANDLE.0,
            Some(c) if c != m.h_context => Rv::E_INVALID_VALUE.0,
            Some(_) => {
                self.release_context();
                0
            }
        };
        self.reply(&m.to_bytes())
    }

    /// The backend's name for a reader a client named in a `CONNECT` of `rn`
    /// bytes: names that did not fit the client's field were cut to `rn - 1`.
    fn resolve_reader(&self, name: &[u8], rn: usize) -> Vec<u8> {
        if name.len() + 1 < rn {
            return name.to_vec();
        }
        let states = self.shared.backend.reader_states();
        if states.iter().any(|s| s.name == name) {
            return name.to_vec();
        }
        let mut longer = states.iter().filter(|s| s.name.starts_with(name));
        match (longer.next(), longer.next()) {
            (Some(s), None) => s.name.clone(),
            _ => name.to_vec(),
        }
    }

    fn connect(&mut self, body: &[u8]) -> Result<(), End> {
        // The body size tells the name width: 124 = the 100-byte 4:2 variant.
        let layout =
            if body.len() == ConnectMsg::size(Version::V4_2Rn100) { Version::V4_2Rn100 } else { Version::V4_4 };
        if layout == Version::V4_2Rn100 && self.version == Some(Version::V4_2) {
            tracing::debug!(conn = self.me.id, "4:2 client with 100-byte reader names");
            self.version = Some(Version::V4_2Rn100);
        }
        let mut m = ConnectMsg::parse(body, layout)?;
        let requested_protocol = m.active_protocol;
        m.h_card = 0;
        let session = match (self.session, self.context) {
            (Some(s), Some(c)) if c == m.h_context => Some(s),
            _ => None,
        };
        match session {
            None => m.rv = Rv::E_INVALID_HANDLE.0,
            Some(_) if self.cards.len() >= self.shared.cfg.max_cards_per_connection => m.rv = Rv::E_NO_MEMORY.0,
            Some(s) => {
                let reader = self.resolve_reader(&m.reader, layout.reader_name_len());
                match self.shared.backend.connect(s, &reader, m.share_mode, m.preferred_protocols) {
                    Ok((card, protocol)) => {
                        let h = self.shared.registry.new_card();
                        self.cards.insert(h, CardSlot { card, in_transaction: false });
                        m.h_card = h;
                        m.active_protocol = protocol;
                        m.rv = 0;
                    }
                    Err(r) => {
                        m.active_protocol = r.active_protocol.unwrap_or(requested_protocol);
                        m.rv = r.rv.0;
                    }
                }
            }
        }
        self.out.clear();
        m.emit(&mut self.out, layout);
        self.flush()
    }

    fn reconnect(&mut self, body: &[u8]) -> Result<(), End> {
        let mut m = ReconnectMsg::parse(body)?;
        let (s, card) = self.own_card(m.h_card)?;
        match self.shared.backend.reconnect(s, card, m.share_mode, m.preferred_protocols, m.initialization) {
            Ok(p) => {
                m.active_protocol = p;
                m.rv = 0;
            }
            Err(r) => {
                m.active_protocol = r.active_protocol.unwrap_or(m.active_protocol);
                m.rv = r.rv.0;
            }
        }
        self.reply(&m.to_bytes())
    }

    fn disconnect(&mut self, body: &[u8]) -> Result<(), End> {
        let mut m = DisconnectMsg::parse(body)?;
        let (s, card) = self.own_card(m.h_card)?;
        m.rv = match self.shared.backend.disconnect(s, card, m.disposition) {
            Ok(()) => {
                self.cards.remove(&m.h_card);
                self.shared.registry.drop_card(m.h_card);
                0
            }
            Err(rv) => rv.0,
        };
        self.reply(&m.to_bytes())
    }

    fn begin(&mut self, body: &[u8]) -> Result<(), End> {
        let mut m = BeginMsg::parse(body)?;
        let (s, card) = self.own_card(m.h_card)?;
        m.rv = match self.shared.backend.begin_transaction(s, card) {
            Ok(()) => {
                if let Some(slot) = self.cards.get_mut(&m.h_card) {
                    slot.in_transaction = true;
                }
                0
            }
            Err(rv) => rv.0,
        };
        self.reply(&m.to_bytes())
    }

    fn end(&mut self, body: &[u8]) -> Result<(), End> {
        let mut m = EndMsg::parse(body)?;
        let (s, card) = self.own_card(m.h_card)?;
        m.rv = match self.shared.backend.end_transaction(s, card, m.disposition) {
            Ok(()) => {
                if let Some(slot) = self.cards.get_mut(&m.h_card) {
                    slot.in_transaction = false;
                }
                0
            }
            Err(rv) => rv.0,
        };
        self.reply(&m.to_bytes())
    }

    fn status(&mut self, body: &[u8]) -> Result<(), End> {
        let mut m = StatusMsg::parse(body)?;
        let (s, card) = self.own_card(m.h_card)?;
        m.rv = match self.shared.backend.status(s, card) {
            Ok(_) => 0,
            Err(rv) => rv.0,
        };
        self.reply(&m.to_bytes())
    }

    /// 4:0's 160-byte STATUS: the server fills name, state, protocol and ATR
    /// (1.6.x rules: buffers larger than the fields are refused, a too-small
    /// buffer gets `SCARD_E_INSUFFICIENT_BUFFER` with the needed length).
    fn status40(&mut self, body: &[u8]) -> Result<(), End> {
        let mut m = Status40Msg::parse(body)?;
        let (s, card) = self.own_card(m.h_card)?;
        if m.reader_len as usize > 100 || m.atr_len as usize > MAX_ATR_SIZE {
            m.rv = Rv::E_INSUFFICIENT_BUFFER.0;
        } else {
            match self.shared.backend.status(s, card) {
                Err(rv) => m.rv = rv.0,
                Ok(info) => {
                    let mut rv = Rv::SUCCESS;
                    let name = &info.reader[..info.reader.len().min(99)];
                    if m.reader_len as usize >= name.len() {
                        m.reader_names = name.to_vec();
                    } else {
                        rv = Rv::E_INSUFFICIENT_BUFFER;
                    }
                    m.reader_len = name.len() as u32;
                    m.state = info.state & 0xFFFF;
                    m.protocol = info.protocol;
                    let atr = &info.atr[..info.atr.len().min(MAX_ATR_SIZE)];
                    if m.atr_len as usize >= atr.len() {
                        m.atr = [0; MAX_ATR_SIZE];
                        m.atr[..atr.len()].copy_from_slice(atr);
                    } else {
                        rv = Rv::E_INSUFFICIENT_BUFFER;
                    }
                    m.atr_len = atr.len() as u32;
                    m.rv = rv.0;
                }
            }
        }
        self.out.clear();
        m.emit(&mut self.out);
        self.flush()
    }

    fn transmit(&mut self, body: &[u8], data: &[u8]) -> Result<(), End> {
        let mut m = TransmitMsg::parse(body)?;
        let (s, card) = self.own_card(m.h_card)?;
        let mut recv = self.take_recv();
        let t = self.shared.backend.transmit(
            s,
            card,
            (m.send_pci_protocol, m.send_pci_length),
            data,
            (m.recv_pci_protocol, m.recv_pci_length),
            &mut recv,
        );
        if let Some((p, l)) = t.recv_pci {
            m.recv_pci_protocol = p;
            m.recv_pci_length = l;
        }
        let mut payload = 0;
        if t.rv.is_success() {
            let len = t.len.min(recv.len());
            if len > m.recv_length as usize {
                // Since 1.8.14: the needed length, no data.
                m.rv = Rv::E_INSUFFICIENT_BUFFER.0;
            } else {
                m.rv = 0;
                payload = len;
            }
            m.recv_length = len as u32;
        } else {
            m.rv = t.rv.0;
            m.recv_length = t.len as u32;
        }
        self.out.clear();
        m.emit(&mut self.out);
        self.out.extend_from_slice(&recv[..payload]);
        self.recv = recv;
        self.flush()
    }

    fn control(&mut self, body: &[u8], data: &[u8]) -> Result<(), End> {
        let mut m = ControlMsg::parse(body)?;
        let (s, card) = self.own_card(m.h_card)?;
        let mut recv = self.take_recv();
        let c = self.shared.backend.control(s, card, m.control_code, data, &mut recv);
        let mut payload = 0;
        if c.rv.is_success() {
            let len = c.len.min(recv.len());
            if len > m.recv_length as usize {
                m.rv = Rv::E_INSUFFICIENT_BUFFER.0;
            } else {
                m.rv = 0;
                payload = len;
            }
            m.bytes_returned = len as u32;
        } else {
            m.rv = c.rv.0;
            m.bytes_returned = c.len as u32;
        }
        self.out.clear();
        m.emit(&mut self.out);
        self.out.extend_from_slice(&recv[..payload]);
        self.recv = recv;
        self.flush()
    }

    fn get_attrib(&mut self, body: &[u8]) -> Result<(), End> {
        let mut m = AttribMsg::parse(body)?;
        let (s, card) = self.own_card(m.h_card)?;
        let a = self.shared.backend.get_attrib(s, card, m.attr_id, m.attr_len as usize);
        let n = a.data.len().min(MAX_BUFFER_SIZE);
        m.attr[..n].copy_from_slice(&a.data[..n]);
        m.attr_len = a.len as u32;
        m.rv = a.rv.0;
        self.out.clear();
        m.emit(&mut self.out);
        self.flush()
    }

    fn set_attrib(&mut self, body: &[u8]) -> Result<(), End> {
        let mut m = AttribMsg::parse(body)?;
        let (s, card) = self.own_card(m.h_card)?;
        m.rv = match self.shared.backend.set_attrib(s, card, m.attr_id, m.value()) {
            Ok(()) => 0,
            Err(rv) => rv.0,
        };
        self.out.clear();
        m.emit(&mut self.out);
        self.flush()
    }

    fn cancel(&mut self, body: &[u8]) -> Result<(), End> {
        let mut m = CancelMsg::parse(body)?;
        m.rv = self.shared.registry.cancel(m.h_context).0;
        tracing::debug!(conn = self.me.id, h_context = m.h_context, rv = ?Rv(m.rv), "cancel");
        self.reply(&m.to_bytes())
    }

    /// 4:0's `SCARD_CANCEL_TRANSACTION`: validates the handle, nothing else
    /// (as 1.6.x).
    fn cancel_transaction(&mut self, body: &[u8]) -> Result<(), End> {
        let mut m = CancelTransactionMsg::parse(body)?;
        let (s, card) = self.own_card(m.h_card)?;
        m.rv = match self.shared.backend.status(s, card) {
            Ok(_) => 0,
            Err(rv) => rv.0,
        };
        self.reply(&m.to_bytes())
    }

    fn fetch_states(&mut self) -> Vec<crate::wire::ReaderState> {
        let g = self.shared.backend.generation();
        let states = self.shared.backend.reader_states();
        self.last_fetch_gen = Some(g);
        states
    }

    fn readers_state(&mut self) -> Result<(), End> {
        let states = self.fetch_states();
        let v = self.dialect();
        self.out.clear();
        states::emit_fixed(&mut self.out, &states, v);
        self.hold();
        self.flush()
    }

    /// `WAIT`. ≤ 4:3 (8-byte body): register, no reply; if the states changed
    /// since this connection last fetched them, notify at once instead (closes
    /// the fetch-then-register race of that protocol). 4:4/4:5: register, then
    /// reply with the 16 slots (taken after registering: no event can be lost,
    /// and the notification, if any, is held until after the reply). 4:6:
    /// register, no reply.
    fn wait(&mut self, with_body: bool) -> Result<(), End> {
        let v = match self.version {
            Some(v) => v,
            None if with_body => Version::V4_3,
            None => Version::V4_4,
        };
        match v.wait_reply() {
            WaitReply::Nothing => {
                let stale = v.wait_has_body()
                    && matches!(self.last_fetch_gen, Some(g) if g != self.shared.backend.generation());
                if stale {
                    self.me.notify_now();
                } else {
                    self.me.register();
                }
                if !v.wait_has_body() {
                    self.hold();
                }
                Ok(())
            }
            WaitReply::States => {
                self.me.register();
                let states = self.fetch_states();
                self.out.clear();
                states::emit_fixed(&mut self.out, &states, v);
                self.hold();
                self.flush()
            }
        }
    }

    fn stop(&mut self) -> Result<(), End> {
        match self.me.stop() {
            Some(rv) => self.reply(&WaitMsg { timeout: 0, rv: rv.0 }.to_bytes()),
            None => Ok(()),
        }
    }

    fn reader_events(&mut self) -> Result<(), End> {
        let m = ReaderEventsMsg { reader_events: self.shared.backend.reader_events(), rv: 0 };
        self.hold();
        self.reply(&m.to_bytes())
    }

    fn state_size(&mut self) -> Result<(), End> {
        let n = self.shared.capacity.fit(self.shared.backend.reader_states().len());
        self.last_size = Some(n);
        self.out.clear();
        emit_state_size(&mut self.out, n as u32);
        self.hold();
        self.flush()
    }

    fn state_array(&mut self) -> Result<(), End> {
        let states = self.fetch_states();
        let n = match self.last_size.take() {
            Some(n) => n,
            None => self.shared.capacity.fit(states.len()),
        };
        self.out.clear();
        states::emit_variable(&mut self.out, &states, n);
        self.hold();
        self.flush()
    }
}
