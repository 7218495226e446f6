//! `Ccid<T>`: one CCID interface over any [`Transport`]: framing, `bSeq`, reply reassembly,
//! time extensions, stale replies, stalls, timeouts (abort) and the mapping of failures to
//! PC/SC return codes (ccid.md §2.6-2.11).
//!
//! One command is in flight at a time. [`Ccid::transact`] sends a command and returns its typed
//! reply:
//!
//! * replies are read into a buffer of at least `max(dwMaxCCIDMessageLength, 10 + 65 546)`
//!   bytes rounded up to whole packets; a transport that hands over whole packets one read at a
//!   time is reassembled until `10 + dwLength` bytes are in;
//! * zero-length reads are "nothing yet" (QEMU sends one after every 64-byte reply);
//! * replies whose `bSeq` or `bSlot` differ from the command's are stale and dropped (at most
//!   [`STALE_LIMIT`] per command), as are fragments too short to be a message;
//! * a time-extension reply (`bmCommandStatus` 2) restarts the wait with the original timeout
//!   multiplied by `bError` (at least 1), for every command;
//! * a failed reply is accepted whatever its message type (QEMU answers a failed Escape with a
//!   SlotStatus) and becomes [`CcidError::Failed`]; a successful one must have the expected type;
//! * a read timeout sends the class request ABORT and, if the reader accepts it,
//!   `PC_to_RDR_Abort` with the same bSlot/bSeq, then reads until the abort's SlotStatus; if
//!   the request stalls (QEMU), later `bSeq` filtering drops the late reply;
//! * a stall clears the halted endpoint and resynchronises with one GetSlotStatus; the command
//!   fails (APDUs are not idempotent, nothing is re-sent);
//! * `NoDevice` makes every later call fail at once.

use super::message::{
    self, msg_type, Command, Frame, GetSlotStatus, IccStatus, MessageError, Notification, Reply, Status, HEADER_LEN,
};
use super::transport::{class_request, usb_timeout, Endpoint, Transport, TransportError};
use pcsc_proto::Rv;
use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Stale or unusable replies dropped per command before giving up.
pub const STALE_LIMIT: usize = 10;
/// Bulk-OUT timeout (libccid's 5 s).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the abort sequence may take.
pub const ABORT_TIMEOUT: Duration = Duration::from_secs(2);
/// libccid's default read timeout (presence checks, open, escapes with no timeout).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Read timeout of IccPowerOn.
pub const POWER_ON_TIMEOUT: Duration = Duration::from_secs(60);
/// Consecutive zero-length reads tolerated (a device that only sends ZLPs is broken).
const ZLP_LIMIT: usize = 10_000;

/// `now + timeout`, saturating (a timeout from a hostile ATR or time extension may be huge).
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout).or_else(|| now.checked_add(Duration::from_secs(1 << 40))).unwrap_or(now)
}

/// What the caller was doing: decides the PC/SC code a failure maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Card power-up (`SCardConnect`, `SCardReconnect` with reset/unpower).
    PowerOn,
    /// PPS / SetParameters / IFSD after power-up (pcscd's `PHSetProtocol`).
    SetProtocol,
    /// `SCardTransmit`.
    Transmit,
    /// `SCardControl`.
    Control,
    /// Presence polling.
    Status,
}

/// A failed CCID command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CcidError {
    /// The USB transfer failed.
    Transport { cmd: &'static str, source: TransportError },
    /// The reader answered with `bmCommandStatus` = failed.
    Failed { cmd: &'static str, status: Status },
    /// The reply could not be decoded.
    Message { cmd: &'static str, source: MessageError },
    /// A successful reply of the wrong message type.
    UnexpectedType { cmd: &'static str, got: u8 },
    /// The command does not fit `dwMaxCCIDMessageLength`.
    TooLong { cmd: &'static str, len: usize, max: usize },
    /// More than [`STALE_LIMIT`] replies for other commands in a row.
    Stale { cmd: &'static str },
}

impl CcidError {
    /// The command that failed.
    pub fn command(&self) -> &'static str {
        match self {
            CcidError::Transport { cmd, .. }
            | CcidError::Failed { cmd, .. }
            | CcidError::Message { cmd, .. }
            | CcidError::UnexpectedType { cmd, .. }
            | CcidError::TooLong { cmd, .. }
            | CcidError::Stale { cmd } => cmd,
        }
    }

    /// The reader status of a failed reply.
    pub fn status(&self) -> Option<Status> {
        match self {
            CcidError::Failed { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// `LIBUSB_ERROR_NO_DEVICE`: the reader was unplugged.
    pub fn is_reader_gone(&self) -> bool {
        matches!(self, CcidError::Transport { source: TransportError::NoDevice, .. })
    }

    /// A failed reply saying no card is in the slot (libccid: `IFD_ICC_NOT_PRESENT`).
    pub fn is_card_absent(&self) -> bool {
        matches!(self, CcidError::Failed { status, .. } if status.icc() == IccStatus::Absent)
    }

    /// `ICC_MUTE` with a card present: the card did not answer.
    pub fn is_mute(&self) -> bool {
        matches!(self, CcidError::Failed { status, .. }
            if status.error == message::ErrorCode::ICC_MUTE && status.icc() != IccStatus::Absent)
    }

    /// `XFR_PARITY_ERROR`.
    pub fn is_parity_error(&self) -> bool {
        matches!(self, CcidError::Failed { status, .. } if status.error == message::ErrorCode::XFR_PARITY_ERROR)
    }

    /// The host gave up waiting.
    pub fn is_timeout(&self) -> bool {
        matches!(self, CcidError::Transport { source: TransportError::Timeout, .. })
    }

    /// The PC/SC code pcscd + libccid report for this failure during `op` (ccid.md §2.11, §6.4;
    /// pcscd's `SCardConnect`/`PHSetProtocol` mapping: a failed power-up or protocol setup is
    /// `SCARD_W_UNRESPONSIVE_CARD`).
    ///
    /// Card removal mid-command gives `SCARD_E_NO_SMARTCARD` here; `SCARD_W_REMOVED_CARD` is
    /// what later calls on the same card handle get, which is the server's bookkeeping.
    pub fn rv(&self, op: Op) -> Rv {
        if self.is_reader_gone() {
            return Rv::E_READER_UNAVAILABLE;
        }
        if self.is_card_absent() && op != Op::Control {
            return Rv::E_NO_SMARTCARD;
        }
        match op {
            Op::PowerOn | Op::SetProtocol => Rv::W_UNRESPONSIVE_CARD,
            Op::Transmit | Op::Control | Op::Status => Rv::E_NOT_TRANSACTED,
        }
    }
}

impl fmt::Display for CcidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CcidError::Transport { cmd, source } => write!(f, "{cmd}: {source}"),
            CcidError::Failed { cmd, status } => write!(f, "{cmd} failed: {status:?}"),
            CcidError::Message { cmd, source } => write!(f, "{cmd}: bad reply: {source}"),
            CcidError::UnexpectedType { cmd, got } => write!(f, "{cmd}: unexpected reply type {got:#04x}"),
            CcidError::TooLong { cmd, len, max } => write!(f, "{cmd}: {len}-byte message exceeds the reader's {max}"),
            CcidError::Stale { cmd } => write!(f, "{cmd}: too many stale replies"),
        }
    }
}

impl std::error::Error for CcidError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CcidError::Transport { source, .. } => Some(source),
            CcidError::Message { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Counters of the oddities seen (for logs and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub commands: u64,
    pub zero_length_reads: u64,
    pub stale_replies: u64,
    pub time_extensions: u64,
    pub aborts: u64,
    pub stalls: u64,
}

/// One CCID interface.
pub struct Ccid<T: Transport> {
    transport: T,
    seq: u8,
    /// The device's counter when several slots (each with its own `Ccid`) share one device.
    shared_seq: Option<Arc<AtomicU8>>,
    max_msg: usize,
    rx: Vec<u8>,
    tx: Vec<u8>,
    gone: bool,
    stats: Stats,
}

impl<T: Transport> fmt::Debug for Ccid<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ccid")
            .field("seq", &self.seq)
            .field("max_msg", &self.max_msg)
            .field("gone", &self.gone)
            .finish()
    }
}

impl<T: Transport> Ccid<T> {
    /// `max_message_len` is the descriptor's `dwMaxCCIDMessageLength` (see
    /// `CcidDescriptor::max_message_len`).
    pub fn new(transport: T, max_message_len: usize) -> Self {
        let mps = transport.max_packet_size().max(1);
        let want = max_message_len.max(HEADER_LEN + 65_546) + mps;
        let size = want.div_ceil(mps) * mps;
        Ccid {
            transport,
            seq: 0,
            shared_seq: None,
            max_msg: max_message_len,
            rx: vec![0; size],
            tx: Vec::with_capacity(max_message_len),
            gone: false,
            stats: Stats::default(),
        }
    }

    /// A `Ccid` whose `bSeq` comes from `seq`, shared with the other slots of the same device
    /// (ccid.md §2.6: one counter per USB device). The slots must not send commands at the same
    /// time (the caller serialises them: one device lock).
    pub fn with_shared_seq(transport: T, max_message_len: usize, seq: Arc<AtomicU8>) -> Self {
        let mut c = Self::new(transport, max_message_len);
        c.shared_seq = Some(seq);
        c
    }

    /// Take the next `bSeq` (own or shared counter).
    fn take_seq(&mut self) -> u8 {
        match &self.shared_seq {
            Some(s) => s.fetch_add(1, Ordering::SeqCst),
            None => {
                let seq = self.seq;
                self.seq = self.seq.wrapping_add(1);
                seq
            }
        }
    }

    pub fn transport(&mut self) -> &mut T {
        &mut self.transport
    }

    pub fn into_transport(self) -> T {
        self.transport
    }

    /// The `bSeq` the next command will carry.
    pub fn next_seq(&self) -> u8 {
        match &self.shared_seq {
            Some(s) => s.load(Ordering::SeqCst),
            None => self.seq,
        }
    }

    pub fn max_message_len(&self) -> usize {
        self.max_msg
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the device has been seen unplugged.
    pub fn is_gone(&self) -> bool {
        self.gone
    }

    /// Send `cmd` to `slot` and wait up to `timeout` (stretched by time extensions) for its reply.
    pub fn transact<C: Command>(&mut self, slot: u8, cmd: &C, timeout: Duration) -> Result<C::Reply, CcidError> {
        let seq = self.take_seq();
        self.stats.commands += 1;
        self.send(slot, seq, cmd)?;
        let frame = match self.receive(C::NAME, slot, seq, timeout) {
            Ok(f) => f,
            Err(e) => {
                if e.is_timeout() {
                    self.abort(slot, seq);
                }
                return Err(e);
            }
        };
        let (start, end) = frame;
        let f = Frame::parse(&self.rx[start..end]).map_err(|source| CcidError::Message { cmd: C::NAME, source })?;
        let status = f.header.status();
        if status.failed() {
            message::any_reply_status(&f).map_err(|source| CcidError::Message { cmd: C::NAME, source })?;
            return Err(CcidError::Failed { cmd: C::NAME, status });
        }
        // A "successful" DataBlock from an empty slot is no answer: QEMU completes a command that
        // was in flight when the reader is unplugged with an empty DataBlock and ICC status
        // "absent". Taken as it is, that would be an empty response APDU with SCARD_S_SUCCESS.
        if f.header.message_type == msg_type::DATA_BLOCK && status.icc() == IccStatus::Absent {
            return Err(CcidError::Failed { cmd: C::NAME, status });
        }
        match C::Reply::parse(&f) {
            Ok(r) => Ok(r),
            Err(MessageError::WrongType { got, .. }) => Err(CcidError::UnexpectedType { cmd: C::NAME, got }),
            Err(source) => Err(CcidError::Message { cmd: C::NAME, source }),
        }
    }

    fn send<C: Command>(&mut self, slot: u8, seq: u8, cmd: &C) -> Result<(), CcidError> {
        if self.gone {
            return Err(CcidError::Transport { cmd: C::NAME, source: TransportError::NoDevice });
        }
        self.tx.clear();
        cmd.emit(slot, seq, &mut self.tx);
        if self.tx.len() > self.max_msg {
            return Err(CcidError::TooLong { cmd: C::NAME, len: self.tx.len(), max: self.max_msg });
        }
        if tracing::enabled!(tracing::Level::TRACE) {
            tracing::trace!(cmd = C::NAME, seq, len = self.tx.len(), head = ?&self.tx[..self.tx.len().min(26)], "bulk out");
        }
        match self.transport.bulk_out(&self.tx, usb_timeout(WRITE_TIMEOUT)) {
            Ok(()) => Ok(()),
            Err(source) => Err(self.usb_failure(C::NAME, Endpoint::BulkOut, slot, source)),
        }
    }

    /// Bookkeeping for a transport failure: remember NoDevice, recover from stalls.
    fn usb_failure(&mut self, cmd: &'static str, ep: Endpoint, slot: u8, source: TransportError) -> CcidError {
        match source {
            TransportError::NoDevice => self.gone = true,
            TransportError::Stall => {
                self.stats.stalls += 1;
                tracing::debug!(cmd, ?ep, "endpoint stalled: clearing the halt");
                if self.transport.clear_halt(ep) == Err(TransportError::NoDevice) {
                    self.gone = true;
                } else {
                    self.resync(slot);
                }
            }
            _ => {}
        }
        CcidError::Transport { cmd, source }
    }

    /// After a stall: one GetSlotStatus, errors ignored (the data toggles are reset by the
    /// clear; this flushes a reply the reader may still hold).
    fn resync(&mut self, slot: u8) {
        let seq = self.take_seq();
        self.tx.clear();
        GetSlotStatus.emit(slot, seq, &mut self.tx);
        if self.transport.bulk_out(&self.tx, usb_timeout(WRITE_TIMEOUT)).is_ok() {
            let _ = self.receive_raw("GetSlotStatus", slot, seq, DEFAULT_TIMEOUT, false);
        }
    }

    /// Wait for the reply to (slot, seq): returns its position in `rx`.
    fn receive(
        &mut self,
        cmd: &'static str,
        slot: u8,
        seq: u8,
        timeout: Duration,
    ) -> Result<(usize, usize), CcidError> {
        self.receive_raw(cmd, slot, seq, timeout, true)
    }

    fn receive_raw(
        &mut self,
        cmd: &'static str,
        slot: u8,
        seq: u8,
        timeout: Duration,
        recover: bool,
    ) -> Result<(usize, usize), CcidError> {
        let mut deadline = deadline_after(timeout);
        let mut stale = 0usize;
        loop {
            let n = match self.read_message(deadline) {
                Ok(n) => n,
                Err(source) if recover => return Err(self.usb_failure(cmd, Endpoint::BulkIn, slot, source)),
                Err(source) => return Err(CcidError::Transport { cmd, source }),
            };
            let header = match Frame::parse(&self.rx[..n]) {
                Ok(f) => f.header,
                Err(e) => {
                    // A fragment or garbage: not our reply.
                    tracing::debug!(cmd, len = n, error = %e, "dropping an undecodable bulk-IN message");
                    stale += 1;
                    self.stats.stale_replies += 1;
                    if stale > STALE_LIMIT {
                        return Err(CcidError::Message { cmd, source: e });
                    }
                    continue;
                }
            };
            if header.seq != seq || header.slot != slot {
                tracing::debug!(cmd, want = seq, got = header.seq, slot = header.slot, "dropping a stale reply");
                stale += 1;
                self.stats.stale_replies += 1;
                if stale > STALE_LIMIT {
                    return Err(CcidError::Stale { cmd });
                }
                continue;
            }
            if tracing::enabled!(tracing::Level::TRACE) {
                tracing::trace!(cmd, seq, len = n, head = ?&self.rx[..n.min(26)], "bulk in");
            }
            let status = header.status();
            if status.command() == message::CommandStatus::TimeExtension {
                let mult = u32::from(status.error.max(1));
                self.stats.time_extensions += 1;
                tracing::debug!(cmd, mult, "time extension");
                deadline = deadline_after(timeout.saturating_mul(mult));
                continue;
            }
            return Ok((0, header.frame_len()));
        }
    }

    /// Read one whole message into `rx[..n]`, ignoring zero-length reads.
    fn read_message(&mut self, deadline: Instant) -> Result<usize, TransportError> {
        let mps = self.transport.max_packet_size().max(1);
        let mut filled = 0usize;
        let mut zlps = 0usize;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() && (filled > 0 || zlps > 0) {
                return Err(TransportError::Timeout);
            }
            let Some(space) = self.rx.get_mut(filled..) else { return Ok(filled) };
            if space.is_empty() {
                return Ok(filled);
            }
            let n = self.transport.bulk_in(space, usb_timeout(remaining))?;
            let n = n.min(space.len());
            if n == 0 {
                self.stats.zero_length_reads += 1;
                zlps += 1;
                if zlps > ZLP_LIMIT {
                    return Err(TransportError::Timeout);
                }
                if filled == 0 {
                    continue;
                }
                // A ZLP ending a transfer of whole packets: the message is as long as it gets.
                return Ok(filled);
            }
            filled += n;
            if filled >= HEADER_LEN {
                let need = HEADER_LEN
                    .saturating_add(u32::from_le_bytes([self.rx[1], self.rx[2], self.rx[3], self.rx[4]]) as usize);
                if filled >= need {
                    if filled > need {
                        tracing::debug!(extra = filled - need, "bytes after a CCID message ignored");
                    }
                    return Ok(need);
                }
            }
            if n % mps != 0 {
                // Short packet: the transfer ended, incomplete or not.
                return Ok(filled);
            }
        }
    }

    /// ABORT (class request) then PC_to_RDR_Abort for the command (slot, seq) that timed out.
    fn abort(&mut self, slot: u8, seq: u8) {
        if self.gone {
            return;
        }
        self.stats.aborts += 1;
        let value = u16::from(slot) | u16::from(seq) << 8;
        match self.transport.class_out(class_request::ABORT, value, &[], usb_timeout(ABORT_TIMEOUT)) {
            Ok(()) => {}
            Err(TransportError::NoDevice) => {
                self.gone = true;
                return;
            }
            Err(e) => {
                // QEMU stalls the request; bSeq filtering will drop the late reply.
                tracing::debug!(error = %e, "ABORT class request refused");
                if e == TransportError::Stall {
                    let _ = self.transport.clear_halt(Endpoint::BulkOut);
                }
                return;
            }
        }
        self.tx.clear();
        message::Abort.emit(slot, seq, &mut self.tx);
        if self.transport.bulk_out(&self.tx, usb_timeout(WRITE_TIMEOUT)).is_err() {
            return;
        }
        let deadline = deadline_after(ABORT_TIMEOUT);
        for _ in 0..=STALE_LIMIT {
            let Ok(n) = self.read_message(deadline) else { return };
            if let Ok(f) = Frame::parse(&self.rx[..n]) {
                if f.header.seq == seq && f.header.slot == slot && f.header.message_type == msg_type::SLOT_STATUS {
                    return;
                }
            }
        }
    }

    /// Wait for an interrupt-IN message. `Ok(None)`: nothing before the timeout, or bytes that
    /// are not a notification (logged; the caller polls GetSlotStatus anyway).
    pub fn wait_notification(&mut self, timeout: Duration) -> Result<Option<Notification>, CcidError> {
        const CMD: &str = "interrupt";
        if self.gone {
            return Err(CcidError::Transport { cmd: CMD, source: TransportError::NoDevice });
        }
        let mut buf = [0u8; 64];
        match self.transport.interrupt_in(&mut buf, usb_timeout(timeout)) {
            Ok(n) => match Notification::parse(&buf[..n.min(buf.len())]) {
                Ok(note) => Ok(Some(note)),
                Err(e) => {
                    tracing::debug!(error = %e, "ignoring an interrupt message");
                    Ok(None)
                }
            },
            Err(TransportError::Timeout) => Ok(None),
            Err(TransportError::NoDevice) => {
                self.gone = true;
                Err(CcidError::Transport { cmd: CMD, source: TransportError::NoDevice })
            }
            Err(source) => Err(CcidError::Transport { cmd: CMD, source }),
        }
    }

    /// Discard whatever bulk-IN replies a previous owner left (at most `max` reads of `per_read`).
    pub fn drain(&mut self, per_read: Duration, max: usize) -> usize {
        let mut dropped = 0;
        for _ in 0..max {
            match self.transport.bulk_in(&mut self.rx, usb_timeout(per_read)) {
                Ok(0) => {}
                Ok(_) => dropped += 1,
                Err(TransportError::NoDevice) => {
                    self.gone = true;
                    break;
                }
                Err(_) => break,
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ccid::message::{CommandStatus, DataBlock, ErrorCode, IccPowerOn, PowerSelect, SlotStatus, XfrBlock};
    use std::collections::VecDeque;

    /// A scripted transport: every bulk-IN read pops the next entry.
    #[derive(Default)]
    struct Script {
        out: Vec<Vec<u8>>,
        reads: VecDeque<Result<Vec<u8>, TransportError>>,
        class: Vec<(u8, u16)>,
        class_result: Option<TransportError>,
        halts: Vec<Endpoint>,
        mps: usize,
    }

    impl Transport for Script {
        fn bulk_out(&mut self, data: &[u8], _: Duration) -> Result<(), TransportError> {
            self.out.push(data.to_vec());
            Ok(())
        }
        fn bulk_in(&mut self, buf: &mut [u8], _: Duration) -> Result<usize, TransportError> {
            match self.reads.pop_front() {
                None => Err(TransportError::Timeout),
                Some(Err(e)) => Err(e),
                Some(Ok(v)) => {
                    let n = v.len().min(buf.len());
                    buf[..n].copy_from_slice(&v[..n]);
                    Ok(n)
                }
            }
        }
        fn interrupt_in(&mut self, _: &mut [u8], _: Duration) -> Result<usize, TransportError> {
            Err(TransportError::Timeout)
        }
        fn max_packet_size(&self) -> usize {
            if self.mps == 0 {
                64
            } else {
                self.mps
            }
        }
        fn class_out(&mut self, request: u8, value: u16, _: &[u8], _: Duration) -> Result<(), TransportError> {
            self.class.push((request, value));
            match &self.class_result {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            }
        }
        fn clear_halt(&mut self, ep: Endpoint) -> Result<(), TransportError> {
            self.halts.push(ep);
            Ok(())
        }
    }

    fn data_block(seq: u8, status: Status, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        DataBlock { status, chain: 0, data: data.to_vec() }.emit(0, seq, &mut v);
        v
    }

    fn slot_status(seq: u8, status: Status) -> Vec<u8> {
        let mut v = Vec::new();
        SlotStatus { status, clock_status: 0 }.emit(0, seq, &mut v);
        v
    }

    const T: Duration = Duration::from_millis(200);

    #[test]
    fn plain_exchange_and_seq() {
        let mut s = Script::default();
        s.reads.push_back(Ok(data_block(0, Status::OK_ACTIVE, &[0x3B, 0x00])));
        s.reads.push_back(Ok(data_block(1, Status::OK_ACTIVE, &[0x90, 0x00])));
        let mut c = Ccid::new(s, 271);
        let r = c.transact(0, &IccPowerOn { power: PowerSelect::Auto }, T).unwrap();
        assert_eq!(r.data, [0x3B, 0x00]);
        let r = c.transact(0, &XfrBlock { bwi: 0, level: 0, data: &[0, 0xA4, 0, 0] }, T).unwrap();
        assert_eq!(r.data, [0x90, 0x00]);
        assert_eq!(c.next_seq(), 2);
        let t = c.into_transport();
        assert_eq!(t.out[0], [0x62, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(t.out[1][6], 1);
    }

    #[test]
    fn zlp_stale_and_time_extension() {
        let mut s = Script::default();
        s.reads.push_back(Ok(vec![]));
        s.reads.push_back(Ok(data_block(0xFF, Status::OK_ACTIVE, &[1])));
        s.reads.push_back(Ok(vec![]));
        s.reads.push_back(Ok(data_block(0, Status::new(IccStatus::Active, CommandStatus::TimeExtension, 2), &[])));
        s.reads.push_back(Ok(data_block(0, Status::OK_ACTIVE, &[0x90, 0x00])));
        let mut c = Ccid::new(s, 271);
        let r = c.transact(0, &XfrBlock { bwi: 0, level: 0, data: &[0; 4] }, T).unwrap();
        assert_eq!(r.data, [0x90, 0x00]);
        let st = c.stats();
        assert_eq!((st.zero_length_reads, st.stale_replies, st.time_extensions), (2, 1, 1));
    }

    #[test]
    fn reassembly_from_packets() {
        // 10 + 100 bytes delivered as 64 + 46 (packet-level transport).
        let msg = data_block(0, Status::OK_ACTIVE, &[0x55; 100]);
        let mut s = Script::default();
        s.reads.push_back(Ok(msg[..64].to_vec()));
        s.reads.push_back(Ok(msg[64..].to_vec()));
        // Exactly 64 bytes, then the next read of the next command gets the ZLP.
        let msg2 = data_block(1, Status::OK_ACTIVE, &[0x66; 54]);
        assert_eq!(msg2.len(), 64);
        s.reads.push_back(Ok(msg2));
        s.reads.push_back(Ok(vec![]));
        s.reads.push_back(Ok(data_block(2, Status::OK_ACTIVE, &[0x90, 0])));
        let mut c = Ccid::new(s, 271);
        assert_eq!(c.transact(0, &XfrBlock { bwi: 0, level: 0, data: &[] }, T).unwrap().data, [0x55; 100]);
        assert_eq!(c.transact(0, &XfrBlock { bwi: 0, level: 0, data: &[] }, T).unwrap().data, [0x66; 54]);
        assert_eq!(c.transact(0, &XfrBlock { bwi: 0, level: 0, data: &[] }, T).unwrap().data, [0x90, 0]);
    }

    #[test]
    fn truncated_and_garbage_are_dropped() {
        let mut s = Script::default();
        s.reads.push_back(Ok(vec![0x80, 0x05]));
        // Header says 20 bytes of payload, 5 arrive in a short packet.
        let mut bad = data_block(0, Status::OK_ACTIVE, &[0; 20]);
        bad.truncate(15);
        s.reads.push_back(Ok(bad));
        s.reads.push_back(Ok(data_block(0, Status::OK_ACTIVE, &[7])));
        let mut c = Ccid::new(s, 271);
        assert_eq!(c.transact(0, &XfrBlock { bwi: 0, level: 0, data: &[] }, T).unwrap().data, [7]);
        assert_eq!(c.stats().stale_replies, 2);
    }

    #[test]
    fn too_many_stale() {
        let mut s = Script::default();
        for _ in 0..=STALE_LIMIT {
            s.reads.push_back(Ok(data_block(9, Status::OK_ACTIVE, &[])));
        }
        let mut c = Ccid::new(s, 271);
        assert_eq!(
            c.transact(0, &XfrBlock { bwi: 0, level: 0, data: &[] }, T),
            Err(CcidError::Stale { cmd: "XfrBlock" })
        );
    }

    #[test]
    fn failed_reply_of_another_type() {
        let mut s = Script::default();
        s.reads.push_back(Ok(slot_status(0, Status::new(IccStatus::Active, CommandStatus::Failed, 0))));
        let mut c = Ccid::new(s, 271);
        let e = c.transact(0, &message::Escape { data: &[0x6A] }, T).unwrap_err();
        assert!(matches!(e, CcidError::Failed { cmd: "Escape", .. }));
        assert_eq!(e.rv(Op::Control), Rv::E_NOT_TRANSACTED);
        // A successful reply of the wrong type is an error.
        let mut s = Script::default();
        s.reads.push_back(Ok(slot_status(0, Status::OK_ACTIVE)));
        let mut c = Ccid::new(s, 271);
        assert_eq!(
            c.transact(0, &XfrBlock { bwi: 0, level: 0, data: &[] }, T),
            Err(CcidError::UnexpectedType { cmd: "XfrBlock", got: 0x81 })
        );
    }

    /// QEMU's answer to a command in flight when its reader is unplugged: an empty, "successful"
    /// DataBlock with ICC status absent. It must not become an empty response APDU.
    #[test]
    fn empty_data_block_from_an_empty_slot_is_card_absent() {
        let mut s = Script::default();
        s.reads.push_back(Ok(data_block(0, Status::new(IccStatus::Absent, CommandStatus::Ok, 0), &[])));
        let mut c = Ccid::new(s, 271);
        let e = c.transact(0, &XfrBlock { bwi: 0, level: 0, data: &[0, 0xA4, 4, 0] }, T).unwrap_err();
        assert!(e.is_card_absent(), "{e}");
        assert_eq!(e.rv(Op::Transmit), Rv::E_NO_SMARTCARD);
        // A SlotStatus saying "absent" is an ordinary answer.
        let mut s = Script::default();
        s.reads.push_back(Ok(slot_status(1, Status::new(IccStatus::Absent, CommandStatus::Ok, 0))));
        let mut c = Ccid::new(s, 271);
        c.seq = 1;
        assert!(c.transact(0, &GetSlotStatus, T).is_ok());
    }

    #[test]
    fn timeout_aborts() {
        let mut c = Ccid::new(Script::default(), 271);
        let e = c.transact(0, &XfrBlock { bwi: 0, level: 0, data: &[] }, T).unwrap_err();
        assert!(e.is_timeout());
        assert_eq!(e.rv(Op::Transmit), Rv::E_NOT_TRANSACTED);
        let t = c.into_transport();
        assert_eq!(t.class, [(class_request::ABORT, 0x0000)]);
        assert_eq!(t.out.len(), 2);
        assert_eq!(&t.out[1][..7], &[0x72, 0, 0, 0, 0, 0, 0]);

        // Refused ABORT (QEMU): no bulk Abort.
        let s = Script { class_result: Some(TransportError::Stall), ..Default::default() };
        let mut c = Ccid::new(s, 271);
        c.seq = 5;
        assert!(c.transact(0, &GetSlotStatus, T).unwrap_err().is_timeout());
        let t = c.into_transport();
        assert_eq!(t.class, [(class_request::ABORT, 0x0500)]);
        assert_eq!(t.out.len(), 1);
    }

    #[test]
    fn stall_clears_and_resyncs() {
        let mut s = Script::default();
        s.reads.push_back(Err(TransportError::Stall));
        s.reads.push_back(Ok(slot_status(1, Status::OK_ACTIVE)));
        s.reads.push_back(Ok(data_block(2, Status::OK_ACTIVE, &[0x90, 0])));
        let mut c = Ccid::new(s, 271);
        let e = c.transact(0, &XfrBlock { bwi: 0, level: 0, data: &[] }, T).unwrap_err();
        assert_eq!(e, CcidError::Transport { cmd: "XfrBlock", source: TransportError::Stall });
        assert_eq!(c.next_seq(), 2);
        assert_eq!(c.transact(0, &XfrBlock { bwi: 0, level: 0, data: &[] }, T).unwrap().data, [0x90, 0]);
        let t = c.into_transport();
        assert_eq!(t.halts, [Endpoint::BulkIn]);
        assert_eq!(t.out[1][0], 0x65);
    }

    #[test]
    fn no_device_sticks() {
        let mut s = Script::default();
        s.reads.push_back(Err(TransportError::NoDevice));
        let mut c = Ccid::new(s, 271);
        let e = c.transact(0, &GetSlotStatus, T).unwrap_err();
        assert!(e.is_reader_gone());
        assert_eq!(e.rv(Op::Transmit), Rv::E_READER_UNAVAILABLE);
        assert_eq!(e.rv(Op::PowerOn), Rv::E_READER_UNAVAILABLE);
        assert!(c.is_gone());
        assert!(c.transact(0, &GetSlotStatus, T).unwrap_err().is_reader_gone());
        assert_eq!(c.into_transport().out.len(), 1);
    }

    #[test]
    fn too_long_is_refused_before_sending() {
        let mut c = Ccid::new(Script::default(), 271);
        let big = [0u8; 262];
        assert_eq!(
            c.transact(0, &XfrBlock { bwi: 0, level: 0, data: &big }, T),
            Err(CcidError::TooLong { cmd: "XfrBlock", len: 272, max: 271 })
        );
        assert!(c.into_transport().out.is_empty());
    }

    #[test]
    fn rv_mapping() {
        let absent = CcidError::Failed {
            cmd: "XfrBlock",
            status: Status::new(IccStatus::Absent, CommandStatus::Failed, ErrorCode::ICC_MUTE),
        };
        let mute = CcidError::Failed {
            cmd: "XfrBlock",
            status: Status::new(IccStatus::Active, CommandStatus::Failed, ErrorCode::ICC_MUTE),
        };
        assert!(absent.is_card_absent() && !absent.is_mute());
        assert!(mute.is_mute() && !mute.is_card_absent());
        assert_eq!(absent.rv(Op::Transmit), Rv::E_NO_SMARTCARD);
        assert_eq!(absent.rv(Op::PowerOn), Rv::E_NO_SMARTCARD);
        assert_eq!(mute.rv(Op::PowerOn), Rv::W_UNRESPONSIVE_CARD);
        assert_eq!(mute.rv(Op::SetProtocol), Rv::W_UNRESPONSIVE_CARD);
        assert_eq!(mute.rv(Op::Transmit), Rv::E_NOT_TRANSACTED);
    }

    #[test]
    fn shared_seq_counts_across_slots() {
        let seq = Arc::new(AtomicU8::new(0xFE));
        let mut a = Script::default();
        a.reads.push_back(Ok(slot_status(0xFE, Status::OK_ACTIVE)));
        a.reads.push_back(Ok(slot_status(0x00, Status::OK_ACTIVE)));
        let mut b = Script::default();
        let mut reply = Vec::new();
        SlotStatus { status: Status::OK_ACTIVE, clock_status: 0 }.emit(1, 0xFF, &mut reply);
        b.reads.push_back(Ok(reply));
        let mut s0 = Ccid::with_shared_seq(a, 271, seq.clone());
        let mut s1 = Ccid::with_shared_seq(b, 271, seq.clone());
        s0.transact(0, &GetSlotStatus, T).unwrap();
        s1.transact(1, &GetSlotStatus, T).unwrap();
        s0.transact(0, &GetSlotStatus, T).unwrap();
        assert_eq!(s0.next_seq(), 1);
        assert_eq!(s1.next_seq(), 1);
        let (a, b) = (s0.into_transport(), s1.into_transport());
        assert_eq!((a.out[0][6], b.out[0][6], a.out[1][6]), (0xFE, 0xFF, 0x00));
    }

    #[test]
    fn long_reply_in_whole_packets() {
        let msg = data_block(0, Status::OK_ACTIVE, &[0xAB; 1000]);
        let mut s = Script { mps: 512, ..Default::default() };
        for chunk in msg.chunks(512) {
            s.reads.push_back(Ok(chunk.to_vec()));
        }
        let mut c = Ccid::new(s, 3072);
        assert_eq!(c.transact(0, &XfrBlock { bwi: 0, level: 0, data: &[] }, T).unwrap().data.len(), 1000);
    }
}
