//! [`MockBackend`]: in-memory readers and cards with pcscd's sharing rules, for
//! tests of the server core (and of anything that talks to a server).
//!
//! The card answers:
//! * `00 A4 04 00 07 A0 00 00 05 27 21 01` (SELECT of the test AID) → `90 00`;
//! * `80 01 00 00 Lc data` (echo) → `data 90 00`;
//! * `00 B0 00 00 Le` (READ BINARY, Le = 0 means 256) → Le bytes `i ^ 0x5A`, `90 00`;
//! * anything else → `6D 00`.
//!
//! Control code `SCARD_CTL_CODE(1)` echoes its input; the feature request
//! answers nothing; other codes `SCARD_E_UNSUPPORTED_FEATURE`. Attributes:
//! `ATR_STRING`, `DEVICE_FRIENDLY_NAME`, `CHANNEL_ID`, and anything set with
//! `SCardSetAttrib` on `VENDOR_IFD_SERIAL_NO`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::consts::{
    attr, card_state, ctl_code, disposition as disp, protocol, share, CM_IOCTL_GET_FEATURE_REQUEST, MAX_ATR_SIZE,
    MAX_BUFFER_SIZE,
};
use crate::error::Rv;
use crate::wire::ReaderState;

use super::backend::{Attrib, Backend, CardInfo, CardRef, ChangeSignal, Controlled, Refused, SessionId, Transmitted};

/// A T=1 ATR (15 bytes) for the mock card.
pub const MOCK_ATR: [u8; 15] =
    [0x3B, 0x8A, 0x80, 0x01, 0x80, 0x31, 0x80, 0x65, 0xB0, 0x85, 0x03, 0x00, 0xEF, 0x12, 0x0F];
/// The APDU the integration tests select with.
pub const SELECT_TEST_AID: [u8; 12] = [0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00, 0x00, 0x05, 0x27, 0x21, 0x01];

#[derive(Debug, Clone)]
struct Handle {
    reader: usize,
    session: SessionId,
    share_mode: u32,
    /// The card insertion this handle was made for (a new card = removed).
    insertion: u64,
    /// Resets of the card seen by this handle.
    resets_seen: u64,
}

#[derive(Debug)]
struct MockReader {
    id: usize,
    name: Vec<u8>,
    atr: Option<Vec<u8>>,
    /// Protocols the card supports.
    card_protocols: u32,
    active_protocol: u32,
    event_counter: u32,
    insertion: u64,
    resets: u64,
    lock: Option<u64>,
    serial: Vec<u8>,
}

#[derive(Debug, Default)]
struct World {
    readers: Vec<MockReader>,
    handles: HashMap<u64, Handle>,
    sessions: HashMap<u64, ()>,
    next_reader: usize,
    insertions: u64,
    reader_events: u32,
    refuse_sessions: Option<Rv>,
}

/// In-memory readers and cards.
#[derive(Debug)]
pub struct MockBackend {
    world: Mutex<World>,
    changes: ChangeSignal,
    next_id: AtomicU64,
}

impl Default for MockBackend {
    fn default() -> Self {
        MockBackend {
            world: Mutex::new(World { reader_events: 1, ..Default::default() }),
            changes: ChangeSignal::new(),
            next_id: AtomicU64::new(1),
        }
    }
}

fn bump_events(e: &mut u32) {
    *e = if *e >= 0x7FFF { 1 } else { *e + 1 };
}

impl MockBackend {
    /// No readers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Readers "Mock Reader 00 00" (card inserted) and "Mock Reader 00 01" (empty).
    pub fn with_card() -> Self {
        let m = Self::default();
        m.add_reader("Mock Reader 00 00");
        m.add_reader("Mock Reader 00 01");
        m.insert_card("Mock Reader 00 00", &MOCK_ATR);
        m
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_reader(&self, name: &str) {
        let mut w = self.world();
        let id = w.next_reader;
        w.next_reader += 1;
        w.readers.push(MockReader {
            id,
            name: name.as_bytes().to_vec(),
            atr: None,
            card_protocols: 0,
            active_protocol: 0,
            event_counter: 0,
            insertion: 0,
            resets: 0,
            lock: None,
            serial: Vec::new(),
        });
        bump_events(&mut w.reader_events);
        drop(w);
        self.changes.bump();
    }

    pub fn remove_reader(&self, name: &str) {
        let mut w = self.world();
        if let Some(i) = w.readers.iter().position(|r| r.name == name.as_bytes()) {
            let id = w.readers.remove(i).id;
            w.handles.retain(|_, h| h.reader != id);
            bump_events(&mut w.reader_events);
        }
        drop(w);
        self.changes.bump();
    }

    /// Inserts a card (T=1 if the ATR is [`MOCK_ATR`], else T=0 and T=1).
    pub fn insert_card(&self, reader: &str, atr: &[u8]) {
        let mut w = self.world();
        w.insertions += 1;
        let ins = w.insertions;
        if let Some(r) = w.readers.iter_mut().find(|r| r.name == reader.as_bytes()) {
            r.atr = Some(atr[..atr.len().min(MAX_ATR_SIZE)].to_vec());
            r.card_protocols = if atr == MOCK_ATR { protocol::T1 } else { protocol::T0 | protocol::T1 };
            r.active_protocol = 0;
            r.event_counter = (r.event_counter + 1) & 0xFFFF;
            r.insertion = ins;
            r.lock = None;
        }
        drop(w);
        self.changes.bump();
    }

    pub fn remove_card(&self, reader: &str) {
        let mut w = self.world();
        if let Some(r) = w.readers.iter_mut().find(|r| r.name == reader.as_bytes()) {
            if r.atr.take().is_some() {
                r.event_counter = (r.event_counter + 1) & 0xFFFF;
                r.active_protocol = 0;
                r.lock = None;
            }
        }
        drop(w);
        self.changes.bump();
    }

    /// Makes `open_session` fail with `rv` (`None`: succeed again).
    pub fn refuse_sessions(&self, rv: Option<Rv>) {
        self.world().refuse_sessions = rv;
    }

    /// Open sessions and card handles (for leak checks).
    pub fn counts(&self) -> (usize, usize) {
        let w = self.world();
        (w.sessions.len(), w.handles.len())
    }

    /// Which card handle holds the transaction on `reader`, if any.
    pub fn lock_holder(&self, reader: &str) -> Option<CardRef> {
        self.world().readers.iter().find(|r| r.name == reader.as_bytes()).and_then(|r| r.lock).map(CardRef)
    }

    /// How often the card in `reader` was reset.
    pub fn resets(&self, reader: &str) -> u64 {
        self.world().readers.iter().find(|r| r.name == reader.as_bytes()).map_or(0, |r| r.resets)
    }
}

impl World {
    fn reader(&mut self, id: usize) -> Option<&mut MockReader> {
        self.readers.iter_mut().find(|r| r.id == id)
    }

    fn sharing(&self, id: usize) -> i32 {
        let hs: Vec<&Handle> = self.handles.values().filter(|h| h.reader == id).collect();
        if hs.iter().any(|h| h.share_mode == share::EXCLUSIVE) {
            -1
        } else {
            hs.len() as i32
        }
    }

    /// Checks a handle: removed card, or reset by another handle since this one
    /// connected or reconnected.
    fn check(&mut self, card: CardRef, session: SessionId) -> Result<(usize, u64), Rv> {
        let h = self.handles.get(&card.0).cloned().ok_or(Rv::E_INVALID_HANDLE)?;
        if h.session != session {
            return Err(Rv::E_INVALID_HANDLE);
        }
        let (insertion, resets, present) = match self.reader(h.reader) {
            Some(r) => (r.insertion, r.resets, r.atr.is_some()),
            None => return Err(Rv::E_READER_UNAVAILABLE),
        };
        if h.share_mode != share::DIRECT && (!present || insertion != h.insertion) {
            return Err(Rv::W_REMOVED_CARD);
        }
        // As pcscd: sticky until this handle reconnects.
        if resets != h.resets_seen {
            return Err(Rv::W_RESET_CARD);
        }
        Ok((h.reader, card.0))
    }

    /// Whether another handle holds the transaction.
    fn locked_by_other(&mut self, reader: usize, card: u64) -> bool {
        matches!(self.reader(reader).and_then(|r| r.lock), Some(l) if l != card)
    }

    fn apply_disposition(&mut self, reader: usize, disposition: u32) {
        if disposition != disp::LEAVE {
            if let Some(r) = self.reader(reader) {
                r.resets += 1;
            }
        }
    }
}

fn card_response(apdu: &[u8]) -> Vec<u8> {
    if apdu == SELECT_TEST_AID {
        return vec![0x90, 0x00];
    }
    match apdu {
        [0x80, 0x01, _, _, lc, rest @ ..] if rest.len() >= *lc as usize => {
            let mut r = rest[..*lc as usize].to_vec();
            r.extend_from_slice(&[0x90, 0x00]);
            r
        }
        [0x00, 0xB0, _, _, le] => {
            let n = if *le == 0 { 256 } else { *le as usize };
            let mut r: Vec<u8> = (0..n).map(|i| (i as u8) ^ 0x5A).collect();
            r.extend_from_slice(&[0x90, 0x00]);
            r
        }
        _ => vec![0x6D, 0x00],
    }
}

impl Backend for MockBackend {
    fn open_session(&self, _scope: u32) -> Result<SessionId, Rv> {
        let mut w = self.world();
        if let Some(rv) = w.refuse_sessions {
            return Err(rv);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        w.sessions.insert(id, ());
        Ok(SessionId(id))
    }

    fn close_session(&self, session: SessionId) {
        let mut w = self.world();
        w.sessions.remove(&session.0);
        let before = w.handles.len();
        w.handles.retain(|_, h| h.session != session);
        let changed = before != w.handles.len();
        drop(w);
        if changed {
            self.changes.bump();
        }
    }

    fn reader_states(&self) -> Vec<ReaderState> {
        let w = self.world();
        w.readers
            .iter()
            .map(|r| {
                let mut s = ReaderState {
                    name: r.name.clone(),
                    event_counter: r.event_counter,
                    sharing: w.sharing(r.id),
                    protocol: r.active_protocol,
                    ..Default::default()
                };
                match &r.atr {
                    Some(atr) => {
                        s.state = card_state::PRESENT | card_state::POWERED | card_state::NEGOTIABLE;
                        s.atr[..atr.len()].copy_from_slice(atr);
                        s.atr_len = atr.len() as u32;
                    }
                    None => s.state = card_state::ABSENT,
                }
                s
            })
            .collect()
    }

    fn reader_events(&self) -> u32 {
        self.world().reader_events
    }

    fn changes(&self) -> &ChangeSignal {
        &self.changes
    }

    fn connect(
        &self,
        session: SessionId,
        reader: &[u8],
        share_mode: u32,
        protocols: u32,
    ) -> Result<(CardRef, u32), Refused> {
        let mut w = self.world();
        if !w.sessions.contains_key(&session.0) {
            return Err(Rv::E_INVALID_HANDLE.into());
        }
        if !(share::EXCLUSIVE..=share::DIRECT).contains(&share_mode) {
            return Err(Rv::E_INVALID_VALUE.into());
        }
        let Some(id) = w.readers.iter().find(|r| r.name == reader).map(|r| r.id) else {
            return Err(Rv::E_UNKNOWN_READER.into());
        };
        let sharing = w.sharing(id);
        if sharing == -1 || (share_mode == share::EXCLUSIVE && sharing > 0) {
            return Err(Rv::E_SHARING_VIOLATION.into());
        }
        let r = w.reader(id).expect("found above");
        let mut active = r.active_protocol;
        if share_mode != share::DIRECT {
            if r.atr.is_none() {
                return Err(Rv::E_NO_SMARTCARD.into());
            }
            let wanted = if protocols & protocol::ANY_LEGACY != 0 { protocol::ANY } else { protocols };
            if active == 0 {
                active = if wanted & r.card_protocols & protocol::T1 != 0 {
                    protocol::T1
                } else if wanted & r.card_protocols & protocol::T0 != 0 {
                    protocol::T0
                } else {
                    return Err(Rv::E_PROTO_MISMATCH.into());
                };
                r.active_protocol = active;
            } else if wanted & active == 0 {
                return Err(Rv::E_PROTO_MISMATCH.into());
            }
        }
        let (insertion, resets) = (r.insertion, r.resets);
        let card = self.next_id.fetch_add(1, Ordering::Relaxed);
        w.handles.insert(card, Handle { reader: id, session, share_mode, insertion, resets_seen: resets });
        drop(w);
        self.changes.bump();
        Ok((CardRef(card), active))
    }

    fn reconnect(
        &self,
        session: SessionId,
        card: CardRef,
        share_mode: u32,
        protocols: u32,
        init: u32,
    ) -> Result<u32, Refused> {
        let mut w = self.world();
        if !(share::EXCLUSIVE..=share::DIRECT).contains(&share_mode) || init > disp::EJECT {
            return Err(Rv::E_INVALID_VALUE.into());
        }
        let h = w.handles.get(&card.0).cloned().ok_or(Rv::E_INVALID_HANDLE)?;
        if h.session != session {
            return Err(Rv::E_INVALID_HANDLE.into());
        }
        let others = w.handles.iter().filter(|(k, o)| o.reader == h.reader && **k != card.0).count();
        let other_exclusive =
            w.handles.iter().any(|(k, o)| o.reader == h.reader && *k != card.0 && o.share_mode == share::EXCLUSIVE);
        if other_exclusive || (share_mode == share::EXCLUSIVE && others > 0) || w.locked_by_other(h.reader, card.0) {
            return Err(Rv::E_SHARING_VIOLATION.into());
        }
        let r = w.reader(h.reader).ok_or(Rv::E_READER_UNAVAILABLE)?;
        if r.atr.is_none() && share_mode != share::DIRECT {
            return Err(Rv::E_NO_SMARTCARD.into());
        }
        if init != disp::LEAVE || r.insertion != h.insertion {
            r.resets += u64::from(init != disp::LEAVE);
            r.active_protocol = 0;
        }
        let wanted = if protocols & protocol::ANY_LEGACY != 0 { protocol::ANY } else { protocols };
        if r.active_protocol == 0 && r.atr.is_some() {
            r.active_protocol = if wanted & r.card_protocols & protocol::T1 != 0 {
                protocol::T1
            } else if wanted & r.card_protocols & protocol::T0 != 0 {
                protocol::T0
            } else {
                return Err(Rv::E_PROTO_MISMATCH.into());
            };
        }
        let (active, insertion, resets) = (r.active_protocol, r.insertion, r.resets);
        let hm = w.handles.get_mut(&card.0).expect("checked above");
        let mode_changed = hm.share_mode != share_mode;
        hm.share_mode = share_mode;
        hm.insertion = insertion;
        hm.resets_seen = resets;
        drop(w);
        if mode_changed {
            self.changes.bump();
        }
        Ok(active)
    }

    fn disconnect(&self, session: SessionId, card: CardRef, disposition: u32) -> Result<(), Rv> {
        let mut w = self.world();
        if disposition > disp::EJECT {
            return Err(Rv::E_INVALID_VALUE);
        }
        let h = w.handles.get(&card.0).cloned().ok_or(Rv::E_INVALID_HANDLE)?;
        if h.session != session {
            return Err(Rv::E_INVALID_HANDLE);
        }
        w.handles.remove(&card.0);
        if let Some(r) = w.reader(h.reader) {
            if r.lock == Some(card.0) {
                r.lock = None;
            }
        }
        w.apply_disposition(h.reader, disposition);
        drop(w);
        self.changes.bump();
        Ok(())
    }

    fn begin_transaction(&self, session: SessionId, card: CardRef) -> Result<(), Rv> {
        let mut w = self.world();
        let (reader, c) = w.check(card, session)?;
        if w.locked_by_other(reader, c) {
            return Err(Rv::E_SHARING_VIOLATION);
        }
        if let Some(r) = w.reader(reader) {
            r.lock = Some(c);
        }
        Ok(())
    }

    fn end_transaction(&self, session: SessionId, card: CardRef, disposition: u32) -> Result<(), Rv> {
        let mut w = self.world();
        if disposition > disp::EJECT {
            return Err(Rv::E_INVALID_VALUE);
        }
        let (reader, c) = w.check(card, session)?;
        match w.reader(reader).map(|r| r.lock) {
            Some(Some(l)) if l == c => {}
            Some(Some(_)) => return Err(Rv::E_SHARING_VIOLATION),
            _ => return Err(Rv::E_NOT_TRANSACTED),
        }
        if let Some(r) = w.reader(reader) {
            r.lock = None;
        }
        w.apply_disposition(reader, disposition);
        if let Some(hm) = w.handles.get_mut(&c) {
            hm.resets_seen += u64::from(disposition != disp::LEAVE);
        }
        Ok(())
    }

    fn status(&self, session: SessionId, card: CardRef) -> Result<CardInfo, Rv> {
        let mut w = self.world();
        let (reader, _) = w.check(card, session)?;
        let r = w.reader(reader).ok_or(Rv::E_READER_UNAVAILABLE)?;
        let (state, atr) = match &r.atr {
            Some(a) => (card_state::PRESENT | card_state::POWERED | card_state::NEGOTIABLE, a.clone()),
            None => (card_state::ABSENT, Vec::new()),
        };
        Ok(CardInfo { reader: r.name.clone(), state, protocol: r.active_protocol, atr })
    }

    fn transmit(
        &self,
        session: SessionId,
        card: CardRef,
        send_pci: (u32, u32),
        apdu: &[u8],
        _recv_pci: (u32, u32),
        recv: &mut [u8],
    ) -> Transmitted {
        let mut w = self.world();
        let (reader, c) = match w.check(card, session) {
            Ok(x) => x,
            Err(rv) => return Transmitted::failed(rv),
        };
        if w.locked_by_other(reader, c) {
            return Transmitted::failed(Rv::E_SHARING_VIOLATION);
        }
        let active = w.reader(reader).map_or(0, |r| r.active_protocol);
        if active == 0 {
            return Transmitted::failed(Rv::E_NO_SMARTCARD);
        }
        if send_pci.0 & (active | protocol::ANY_LEGACY) == 0 {
            return Transmitted::failed(Rv::E_PROTO_MISMATCH);
        }
        if apdu.len() < 4 {
            return Transmitted::failed(Rv::E_INVALID_PARAMETER);
        }
        let resp = card_response(apdu);
        if resp.len() > recv.len() {
            return Transmitted { rv: Rv::E_INSUFFICIENT_BUFFER, len: resp.len(), recv_pci: None };
        }
        recv[..resp.len()].copy_from_slice(&resp);
        Transmitted { rv: Rv::SUCCESS, len: resp.len(), recv_pci: Some((active, send_pci.1)) }
    }

    fn control(&self, session: SessionId, card: CardRef, code: u32, data: &[u8], recv: &mut [u8]) -> Controlled {
        let mut w = self.world();
        let (reader, c) = match w.check(card, session) {
            Ok(x) => x,
            Err(rv) => return Controlled { rv, len: 0 },
        };
        if w.locked_by_other(reader, c) {
            return Controlled { rv: Rv::E_SHARING_VIOLATION, len: 0 };
        }
        if code == CM_IOCTL_GET_FEATURE_REQUEST {
            return Controlled { rv: Rv::SUCCESS, len: 0 };
        }
        if code != ctl_code(1) {
            return Controlled { rv: Rv::E_UNSUPPORTED_FEATURE, len: 0 };
        }
        if data.len() > recv.len() {
            return Controlled { rv: Rv::E_INSUFFICIENT_BUFFER, len: data.len() };
        }
        recv[..data.len()].copy_from_slice(data);
        Controlled { rv: Rv::SUCCESS, len: data.len() }
    }

    fn get_attrib(&self, session: SessionId, card: CardRef, attr_id: u32, buf_len: usize) -> Attrib {
        let mut w = self.world();
        let (reader, _) = match w.check(card, session) {
            Ok(x) => x,
            Err(rv) => return Attrib::failed(rv),
        };
        let Some(r) = w.reader(reader) else { return Attrib::failed(Rv::E_READER_UNAVAILABLE) };
        let value = match attr_id {
            attr::ATR_STRING => r.atr.clone().unwrap_or_default(),
            attr::DEVICE_FRIENDLY_NAME_A | attr::DEVICE_SYSTEM_NAME_A => {
                let mut n = r.name.clone();
                n.push(0);
                n
            }
            attr::CHANNEL_ID => (0x0020_0000u32 + r.id as u32).to_ne_bytes().to_vec(),
            attr::VENDOR_IFD_SERIAL_NO if !r.serial.is_empty() => r.serial.clone(),
            _ => return Attrib::failed(Rv::E_UNSUPPORTED_FEATURE),
        };
        if value.len() > buf_len.min(MAX_BUFFER_SIZE) {
            return Attrib { rv: Rv::E_INSUFFICIENT_BUFFER, len: value.len(), data: Vec::new() };
        }
        Attrib { rv: Rv::SUCCESS, len: value.len(), data: value }
    }

    fn set_attrib(&self, session: SessionId, card: CardRef, attr_id: u32, value: &[u8]) -> Result<(), Rv> {
        let mut w = self.world();
        let (reader, _) = w.check(card, session)?;
        if attr_id != attr::VENDOR_IFD_SERIAL_NO {
            return Err(Rv::E_UNSUPPORTED_FEATURE);
        }
        if let Some(r) = w.reader(reader) {
            r.serial = value.to_vec();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharing_rules() {
        let m = MockBackend::with_card();
        let r = b"Mock Reader 00 00";
        let s1 = m.open_session(0).unwrap();
        let s2 = m.open_session(0).unwrap();
        let (a, p) = m.connect(s1, r, share::SHARED, protocol::ANY).unwrap();
        assert_eq!(p, protocol::T1);
        assert_eq!(m.connect(s2, r, share::EXCLUSIVE, protocol::ANY).unwrap_err().rv, Rv::E_SHARING_VIOLATION);
        let (b, _) = m.connect(s2, r, share::SHARED, protocol::T1).unwrap();
        assert_eq!(m.reader_states()[0].sharing, 2);
        assert_eq!(m.connect(s2, r, share::SHARED, protocol::T0).unwrap_err().rv, Rv::E_PROTO_MISMATCH);
        m.begin_transaction(s1, a).unwrap();
        assert_eq!(m.begin_transaction(s2, b), Err(Rv::E_SHARING_VIOLATION));
        let mut buf = [0u8; 300];
        assert_eq!(m.transmit(s2, b, (2, 16), &SELECT_TEST_AID, (2, 16), &mut buf).rv, Rv::E_SHARING_VIOLATION);
        assert_eq!(m.transmit(s1, a, (2, 16), &SELECT_TEST_AID, (2, 16), &mut buf).len, 2);
        m.end_transaction(s1, a, disp::RESET).unwrap();
        // b sees the reset until it reconnects.
        assert_eq!(m.status(s2, b).unwrap_err(), Rv::W_RESET_CARD);
        assert_eq!(m.status(s2, b).unwrap_err(), Rv::W_RESET_CARD);
        m.reconnect(s2, b, share::SHARED, protocol::ANY, disp::LEAVE).unwrap();
        assert!(m.status(s2, b).is_ok());
        assert!(m.status(s1, a).is_ok());
        m.remove_card("Mock Reader 00 00");
        assert_eq!(m.status(s1, a).unwrap_err(), Rv::W_REMOVED_CARD);
        m.insert_card("Mock Reader 00 00", &MOCK_ATR);
        assert_eq!(m.status(s1, a).unwrap_err(), Rv::W_REMOVED_CARD);
        assert_eq!(m.reader_states()[0].event_counter, 3);
        m.close_session(s1);
        m.close_session(s2);
        assert_eq!(m.counts(), (0, 0));
        assert_eq!(m.connect(s1, r, share::SHARED, protocol::ANY).unwrap_err().rv, Rv::E_INVALID_HANDLE);
    }

    #[test]
    fn card_answers() {
        assert_eq!(card_response(&SELECT_TEST_AID), [0x90, 0x00]);
        assert_eq!(card_response(&[0x80, 0x01, 0, 0, 2, 7, 8]), [7, 8, 0x90, 0x00]);
        assert_eq!(card_response(&[0x00, 0xB0, 0, 0, 0]).len(), 258);
        assert_eq!(card_response(&[0x00, 0x00, 0, 0]), [0x6D, 0x00]);
    }
}
