//! [`UsbBackend`]: the [`Backend`] of `usbpass serve`, over the CCID driver core.
//!
//! **Readers.** A rescan ([`UsbBackend::rescan`]) asks the [`Discovery`] for the CCID
//! interfaces present and opens the new ones; a reader another program holds (the host's
//! pcscd) is left alone with one log line, and tried again at the next rescan. Each opened
//! interface is a *device* with one reader per slot (`bMaxSlotIndex + 1`); the slots share the
//! device's transport and `bSeq` counter and are used one command at a time (one I/O lock per
//! device, as pcscd does for libccid readers whose `bMaxCCIDBusySlots` is 1). Names are built as
//! pcscd builds them ([`super::names`]).
//!
//! **Presence.** One thread per device waits on the interrupt endpoint (NotifySlotChange), or
//! sleeps 400 ms without one, then asks GetSlotStatus for every slot (the notification is a
//! hint, the status is the truth; a notification that says a slot changed while the card seems
//! unchanged is a swap). A new card is powered at once (state `PRESENT|POWERED|NEGOTIABLE`,
//! or `PRESENT|SWALLOWED` when it does not answer), a removed one gives `ABSENT`; both bump the
//! reader's event counter, mark the reader's card handles (`SCARD_W_REMOVED_CARD`) and wake the
//! clients. Like pcscd, a card nobody uses is powered down after a grace period (5 s) and
//! powered up again by the next `SCardConnect`; the published state does not change then.
//!
//! **Sharing and handles** follow pcscd 1.9.9 (`winscard.c`, `readerfactory.c`): `readerSharing`
//! is −1 for an exclusive handle, else the number of handles; transactions nest per handle and
//! are dropped with the card; a reset or power cycle by one handle makes every handle of the
//! reader (the caller's too, except through `SCardReconnect`) answer `SCARD_W_RESET_CARD` until
//! it reconnects; after a reader is unplugged its handles answer `SCARD_E_INVALID_VALUE`
//! (disconnect: success). `SCardConnect` and a resetting `SCardDisconnect` wait, as in pcscd,
//! while another client holds a transaction on the reader; every other conflict is answered
//! `SCARD_E_SHARING_VIOLATION` at once (the client library retries).
//!
//! Lock order: a device's I/O lock, then the state lock; never the other way round. Long USB
//! exchanges hold only the device's I/O lock.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use pcsc_proto::consts::{attr, card_state as cs, disposition as disp, protocol as proto, share, MAX_ATR_SIZE};
use pcsc_proto::server::{
    Attrib, Backend, CardInfo, CardRef, ChangeSignal, Controlled, Refused, SessionId, Transmitted,
};
use pcsc_proto::wire::ReaderState;
use pcsc_proto::Rv;

use crate::ccid::atr::{Protocol, Protocols};
use crate::ccid::device::Ccid;
use crate::ccid::exchange::{ExchangeError, ExchangeOptions, Slot};
use crate::ccid::message::{IccStatus, Notification};
use crate::ccid::quirks::{self, DriverOptions, Quirks};
use crate::ccid::transport::{class_request, Transport, TransportError};
use crate::ccid::usb::OpenError;

use super::discovery::{Discovery, InterruptSource, OpenedDevice};
use super::features;
use super::names::{self, FriendlyNames};

/// Timings and knobs of [`UsbBackend`].
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Presence polling of readers without an interrupt endpoint (pcscd: 400 ms).
    pub poll_interval: Duration,
    /// Longest wait on the interrupt endpoint before checking the slots anyway.
    pub interrupt_wait: Duration,
    /// A powered card nobody uses is powered down after this (pcscd: 5 s).
    pub power_off_grace: Duration,
    /// Bring-up and exchange settings for every slot.
    pub exchange: ExchangeOptions,
    /// Friendly names (default: libccid's `Info.plist` if visible, else the built-in table).
    pub names: FriendlyNames,
    /// Most slots used per device (pcscd serves 16 readers in all).
    pub max_slots: usize,
    /// libccid's `ifdDriverOptions` (default: Debian's, none).
    pub driver_options: DriverOptions,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            poll_interval: Duration::from_millis(400),
            interrupt_wait: Duration::from_secs(5),
            power_off_grace: Duration::from_secs(5),
            exchange: ExchangeOptions::default(),
            names: FriendlyNames::default(),
            max_slots: 16,
            driver_options: DriverOptions::DEBIAN,
        }
    }
}

type Shared = Arc<Mutex<Box<dyn Transport + Send>>>;
type DevSlot = Slot<Shared>;

/// One opened CCID interface.
struct Device {
    key: String,
    info: super::discovery::DeviceInfo,
    io: Mutex<Vec<DevSlot>>,
    interrupt: Mutex<Option<Box<dyn InterruptSource>>>,
    gone: AtomicBool,
    /// The reader's special cases (ccid/quirks.rs), with what it said at open.
    quirks: Quirks,
}

/// pcscd's power state of a present card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Power {
    Unpowered,
    /// Powered, no handle since this instant (powered down after the grace period).
    Idle(Instant),
    InUse,
}

/// What a card handle has seen (pcscd's `dwEventStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Nothing,
    Reset,
    Removed,
}

struct Reader {
    id: u64,
    device: Arc<Device>,
    slot: u8,
    number: u8,
    name: Vec<u8>,
    state: u32,
    atr: Vec<u8>,
    protocol: u32,
    event_counter: u32,
    power: Power,
    /// Transaction holder and nesting depth.
    lock: Option<(u64, u32)>,
    /// Present bit of the last NotifySlotChange seen for this slot.
    notified_present: Option<bool>,
}

impl Reader {
    fn removed(&mut self) {
        self.state = cs::ABSENT;
        self.atr.clear();
        self.protocol = 0;
        self.event_counter = (self.event_counter + 1) & 0xFFFF;
        self.power = Power::Unpowered;
        self.lock = None;
    }

    fn powered(&mut self, result: &Result<Vec<u8>, ExchangeError>) {
        self.protocol = 0;
        match result {
            Ok(atr) => {
                self.state = cs::PRESENT | cs::POWERED | cs::NEGOTIABLE;
                self.atr = atr[..atr.len().min(MAX_ATR_SIZE)].to_vec();
                if self.power == Power::Unpowered {
                    self.power = Power::Idle(Instant::now());
                }
            }
            // The card is gone: the presence check that follows counts the removal.
            Err(e) if e.rv() == Rv::E_NO_SMARTCARD => self.power = Power::Unpowered,
            Err(_) => {
                self.state = cs::PRESENT | cs::SWALLOWED;
                self.atr.clear();
                self.power = Power::Unpowered;
            }
        }
    }
}

struct Handle {
    reader: u64,
    session: u64,
    share: u32,
    seen: Seen,
}

#[derive(Default)]
struct State {
    /// pcscd's reader slots: a new reader takes the first free one.
    readers: Vec<Option<Reader>>,
    handles: HashMap<u64, Handle>,
    sessions: HashSet<u64>,
    reader_events: u32,
    devices: HashMap<String, Arc<Device>>,
    /// Interfaces we could not use, with what we logged about them.
    refused: HashMap<String, String>,
    scan_error: Option<String>,
}

impl State {
    fn reader(&mut self, id: u64) -> Option<&mut Reader> {
        self.readers.iter_mut().flatten().find(|r| r.id == id)
    }

    fn reader_at(&mut self, dev: &Arc<Device>, slot: usize) -> Option<&mut Reader> {
        self.readers.iter_mut().flatten().find(|r| Arc::ptr_eq(&r.device, dev) && r.slot as usize == slot)
    }

    fn by_name(&mut self, name: &[u8]) -> Option<&mut Reader> {
        self.readers.iter_mut().flatten().find(|r| r.name == name)
    }

    /// `readerSharing`: −1 exclusive, else the number of handles.
    fn sharing(&self, reader: u64) -> i32 {
        let mut n = 0;
        for h in self.handles.values().filter(|h| h.reader == reader) {
            if h.share == share::EXCLUSIVE {
                return -1;
            }
            n += 1;
        }
        n
    }

    fn handle_count(&self, reader: u64) -> usize {
        self.handles.values().filter(|h| h.reader == reader).count()
    }

    fn mark(&mut self, reader: u64, seen: Seen) {
        for h in self.handles.values_mut().filter(|h| h.reader == reader) {
            h.seen = seen;
        }
    }

    fn session_of(&self, handle: u64) -> Option<u64> {
        self.handles.get(&handle).map(|h| h.session)
    }

    fn bump_reader_events(&mut self) {
        self.reader_events = if self.reader_events >= 0x7FFF { 1 } else { self.reader_events + 1 };
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The USB CCID readers as a pcscd backend.
pub struct UsbBackend {
    discovery: Box<dyn Discovery>,
    cfg: ServeConfig,
    state: Mutex<State>,
    /// Notified when a transaction ends (connect and resetting disconnect wait for it).
    lock_cv: Condvar,
    changes: ChangeSignal,
    next_id: AtomicU64,
    scanning: Mutex<()>,
    stop: AtomicBool,
    me: Weak<UsbBackend>,
}

/// What a card check gives the caller.
struct Checked {
    reader: u64,
    device: Arc<Device>,
    slot: usize,
}

/// Which checks a handle operation makes (pcscd's order: handle, sharing lock, reader status,
/// card events).
#[derive(Clone, Copy)]
struct Checks {
    lock: bool,
    status: bool,
    events: bool,
}

const ALL_CHECKS: Checks = Checks { lock: true, status: true, events: true };

impl UsbBackend {
    /// A backend over `discovery`; no reader is opened until [`UsbBackend::rescan`].
    pub fn new(discovery: Box<dyn Discovery>, cfg: ServeConfig) -> Arc<UsbBackend> {
        Arc::new_cyclic(|me| UsbBackend {
            discovery,
            cfg,
            state: Mutex::new(State { reader_events: 1, ..Default::default() }),
            lock_cv: Condvar::new(),
            changes: ChangeSignal::new(),
            next_id: AtomicU64::new(1),
            scanning: Mutex::new(()),
            stop: AtomicBool::new(false),
            me: me.clone(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Ends the presence threads (within one wait) and releases the readers.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let devices: Vec<Arc<Device>> = self.state().devices.values().cloned().collect();
        for d in devices {
            self.remove_device(&d, "shutting down");
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Reader names, in slot order.
    pub fn reader_names(&self) -> Vec<String> {
        self.state().readers.iter().flatten().map(|r| String::from_utf8_lossy(&r.name).into_owned()).collect()
    }

    /// Looks for new and vanished CCID interfaces now.
    pub fn rescan(&self) {
        if self.is_stopped() {
            return;
        }
        let _one_at_a_time = lock(&self.scanning);
        let found = match self.discovery.scan() {
            Ok(f) => {
                if self.state().scan_error.take().is_some() {
                    tracing::info!("USB devices can be listed again");
                }
                f
            }
            Err(e) => {
                let mut st = self.state();
                if st.scan_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!("cannot list USB devices: {e}");
                    st.scan_error = Some(e);
                }
                return;
            }
        };
        let present: HashSet<String> = found.iter().map(|c| c.key.clone()).collect();
        let vanished: Vec<Arc<Device>> =
            self.state().devices.values().filter(|d| !present.contains(&d.key)).cloned().collect();
        for d in vanished {
            self.remove_device(&d, "unplugged");
        }
        self.state().refused.retain(|k, _| present.contains(k));
        for c in found {
            if self.state().devices.contains_key(&c.key) {
                continue;
            }
            let (key, label) = (c.key, c.label);
            let result = (c.open)().map_err(|e| match e {
                OpenError::Busy => format!(
                    "reader {label} is in use by another program (probably the host's pcscd): left alone; \
                     it will be used when that program lets it go"
                ),
                OpenError::Access => {
                    format!("reader {label}: no permission to open it (see /dev/bus/usb and udev rules)")
                }
                OpenError::Unsupported(why) => format!("reader {label} not used: {why}"),
                OpenError::Usb(e) => format!("reader {label}: cannot open: {e}"),
            });
            let result = result.and_then(|dev| self.add_device(&key, dev));
            let mut st = self.state();
            match result {
                Ok(()) => {
                    st.refused.remove(&key);
                }
                Err(msg) => {
                    if st.refused.get(&key) != Some(&msg) {
                        tracing::warn!("{msg}");
                        st.refused.insert(key, msg);
                    }
                }
            }
        }
    }

    /// Bring-up of a freshly opened interface (ccid.md §2.10) and publication of its readers.
    fn add_device(&self, key: &str, dev: OpenedDevice) -> Result<(), String> {
        let OpenedDevice { mut info, transport, interrupt } = dev;
        let label = info.label();
        // The reader's special cases (ccid/quirks.rs): refused firmware, descriptor fixes.
        let mut quirks =
            Quirks::for_device(info.vendor_id, info.product_id, info.bcd_device).with_options(self.cfg.driver_options);
        quirks.check_firmware().map_err(|e| format!("reader {label} not used: {e}"))?;
        quirks.fix_descriptor(&mut info.descriptor);
        let desc = info.descriptor.clone();
        if desc.level().is_none() {
            return Err(format!("reader {label} not used: undefined-level CCID readers are not supported"));
        }
        let shared: Shared = Arc::new(Mutex::new(transport));
        let mut opts = self.cfg.exchange.clone();
        if desc.num_data_rates_supported != 0 {
            let mut buf = vec![0u8; 4 * desc.num_data_rates_supported as usize];
            let mut t = shared.clone();
            if let Ok(n) = t.class_in(class_request::GET_DATA_RATES, 0, &mut buf, Duration::from_secs(1)) {
                opts.data_rates =
                    buf[..n - n % 4].chunks(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            }
        }
        let seq = Arc::new(AtomicU8::new(0));
        let limit = Slot::<Shared>::message_limit(&desc);
        let count = desc.slots().min(self.cfg.max_slots);
        let mut slots = Vec::with_capacity(count);
        for s in 0..count {
            let ccid = Ccid::with_shared_seq(shared.clone(), limit, seq.clone());
            let (slot_desc, slot_opts) = quirks.for_slot(s as u8, &desc, &opts);
            slots.push(
                Slot::from_ccid(ccid, slot_desc, s as u8, slot_opts)
                    .map_err(|e| format!("reader {label} not used: {e}"))?,
            );
        }
        // Answers a previous owner left in the bulk pipe. A notification left from before is not
        // waited for (that cost 100 ms of every start): it reports the slot as it is now, and the
        // first "present, changed" is never taken for a swap (`notified_present` starts unknown).
        slots[0].ccid().drain(Duration::from_millis(10), 8);
        std::thread::sleep(quirks.open_delay());
        let mut initial = Vec::with_capacity(count);
        for (i, slot) in slots.iter_mut().enumerate() {
            let present = match slot.presence_at_open() {
                Ok(p) => p,
                Err(ExchangeError::Ccid { source, .. }) if source.is_reader_gone() => {
                    return Err(format!("reader {label} went away while starting"));
                }
                // One more try (libccid: the first status may fail while the toggles resync).
                Err(_) => slot.presence_at_open().unwrap_or(false),
            };
            if i == 0 {
                // Escapes some readers need once they answered (ccid/quirks.rs group C).
                quirks.after_first_status(slot).map_err(|e| format!("reader {label} not used: {e}"))?;
            }
            initial.push(if present { Some(slot.power_on()) } else { None });
        }
        let device = Arc::new(Device {
            key: key.to_string(),
            info,
            io: Mutex::new(slots),
            interrupt: Mutex::new(interrupt),
            gone: AtomicBool::new(false),
            quirks,
        });
        let info = &device.info;
        let friendly = self.cfg.names.friendly(
            info.vendor_id,
            info.product_id,
            info.manufacturer.as_deref(),
            info.product.as_deref(),
        );
        let base = names::base_name(&friendly, info.interface_name.as_deref(), info.serial.as_deref());
        let mut st = self.state();
        let number = names::free_number(st.readers.iter().flatten().map(|r| r.number));
        for (s, power) in initial.into_iter().enumerate() {
            let mut r = Reader {
                id: self.id(),
                device: device.clone(),
                slot: s as u8,
                number,
                name: names::reader_name(&base, number, s as u8).into_bytes(),
                state: cs::ABSENT,
                atr: Vec::new(),
                protocol: 0,
                event_counter: 0,
                power: Power::Unpowered,
                lock: None,
                notified_present: None,
            };
            if let Some(result) = power {
                r.power = Power::Idle(Instant::now());
                r.powered(&result);
            }
            tracing::info!(
                reader = %String::from_utf8_lossy(&r.name),
                device = %label,
                level = %desc.level().map_or(String::new(), |l| l.to_string()),
                card = r.state & cs::PRESENT != 0,
                "reader added"
            );
            match st.readers.iter().position(Option::is_none) {
                Some(i) => st.readers[i] = Some(r),
                None => st.readers.push(Some(r)),
            }
        }
        st.devices.insert(key.to_string(), device.clone());
        st.bump_reader_events();
        drop(st);
        self.changes.bump();
        let weak = self.me.clone();
        std::thread::Builder::new()
            .name("usbpass-presence".into())
            .spawn(move || presence_loop(weak, device))
            .map_err(|e| format!("reader {label}: cannot start its thread: {e}"))?;
        Ok(())
    }

    /// A device is gone (unplugged, or shutting down): its readers and their handles vanish.
    fn remove_device(&self, dev: &Arc<Device>, why: &str) {
        dev.gone.store(true, Ordering::SeqCst);
        // Idempotent: a second call finds nothing left.
        let mut st = self.state();
        let ids: Vec<u64> = st.readers.iter().flatten().filter(|r| Arc::ptr_eq(&r.device, dev)).map(|r| r.id).collect();
        if ids.is_empty() && !st.devices.contains_key(&dev.key) {
            return;
        }
        for slot in st.readers.iter_mut() {
            if slot.as_ref().is_some_and(|r| ids.contains(&r.id)) {
                if let Some(r) = slot.take() {
                    tracing::info!(reader = %String::from_utf8_lossy(&r.name), "reader removed ({why})");
                }
            }
        }
        st.handles.retain(|_, h| !ids.contains(&h.reader));
        if st.devices.get(&dev.key).is_some_and(|d| Arc::ptr_eq(d, dev)) {
            st.devices.remove(&dev.key);
        }
        st.bump_reader_events();
        drop(st);
        self.lock_cv.notify_all();
        self.changes.bump();
    }

    /// How long the presence thread of `dev` may wait now.
    fn wait_for(&self, dev: &Arc<Device>, has_interrupt: bool) -> Duration {
        let mut wait = if has_interrupt { self.cfg.interrupt_wait } else { self.cfg.poll_interval };
        let st = self.state();
        for r in st.readers.iter().flatten().filter(|r| Arc::ptr_eq(&r.device, dev)) {
            if let Power::Idle(since) = r.power {
                let due = (since + self.cfg.power_off_grace).saturating_duration_since(Instant::now());
                wait = wait.min(due.max(Duration::from_millis(10)));
            }
        }
        wait
    }

    /// Checks every slot of `dev` (presence, insertion, removal, idle power-down).
    fn poll_device(&self, dev: &Arc<Device>, note: Option<&Notification>) {
        let mut io = lock(&dev.io);
        if dev.gone.load(Ordering::SeqCst) {
            return;
        }
        for (i, slot) in io.iter_mut().enumerate() {
            let present = slot.presence();
            let changed = note.and_then(|n| n.slot(i as u8));
            let mut st = self.state();
            let Some(r) = st.reader_at(dev, i) else { continue };
            let rid = r.id;
            let mut events = false;
            let was_present = r.state & cs::PRESENT != 0;
            let mut insert = false;
            match present {
                Err(ExchangeError::Ccid { source, .. }) if source.is_reader_gone() => {
                    drop(st);
                    drop(io);
                    self.remove_device(dev, "unplugged");
                    return;
                }
                Err(e) => {
                    if r.state != cs::UNKNOWN {
                        tracing::warn!(reader = %String::from_utf8_lossy(&r.name), "reader error: {e}");
                        r.state = cs::UNKNOWN;
                        r.atr.clear();
                        r.protocol = 0;
                        events = true;
                    }
                }
                Ok(now) => {
                    // A notification saying this slot changed while the card seems unchanged:
                    // the card was pulled (and maybe another one inserted) between two looks.
                    let swap = match changed {
                        Some((false, true)) => was_present,
                        Some((true, true)) => was_present && r.notified_present == Some(true),
                        _ => false,
                    };
                    if let Some((p, _)) = changed {
                        r.notified_present = Some(p);
                    }
                    if (!now || swap) && r.state & (cs::PRESENT | cs::UNKNOWN) != 0 {
                        tracing::info!(reader = %String::from_utf8_lossy(&r.name), "card removed");
                        r.removed();
                        st.mark(rid, Seen::Removed);
                        events = true;
                    }
                    let r = st.reader(rid).expect("still here");
                    insert = now && r.state & cs::PRESENT == 0;
                }
            }
            if insert {
                drop(st);
                let result = slot.power_on();
                st = self.state();
                let Some(r) = st.reader(rid) else { continue };
                r.event_counter = (r.event_counter + 1) & 0xFFFF;
                r.power = Power::Idle(Instant::now());
                r.powered(&result);
                match &result {
                    Ok(atr) => {
                        tracing::info!(reader = %String::from_utf8_lossy(&r.name), atr = %hex(atr), "card inserted")
                    }
                    Err(e) => {
                        tracing::warn!(reader = %String::from_utf8_lossy(&r.name), "card inserted, but it does not answer: {e}")
                    }
                }
                events = true;
            }
            // Idle power-down (pcscd's on-demand power): the published state stays.
            let idle_due = {
                let handles = st.handle_count(rid);
                st.reader(rid).is_some_and(|r| {
                    matches!(r.power, Power::Idle(s) if s.elapsed() >= self.cfg.power_off_grace) && handles == 0
                })
            };
            if idle_due {
                drop(st);
                let _ = slot.power_off();
                st = self.state();
                if let Some(r) = st.reader(rid) {
                    tracing::debug!(reader = %String::from_utf8_lossy(&r.name), "idle card powered down");
                    r.power = Power::Unpowered;
                    r.protocol = 0;
                }
            }
            drop(st);
            if events {
                self.lock_cv.notify_all();
                self.changes.bump();
            }
        }
    }

    /// Finds the handle and makes pcscd's checks.
    fn check(&self, st: &mut State, session: SessionId, card: CardRef, checks: Checks) -> Result<Checked, Rv> {
        let h = st.handles.get(&card.0).ok_or(Rv::E_INVALID_VALUE)?;
        if h.session != session.0 {
            return Err(Rv::E_INVALID_HANDLE);
        }
        let (rid, seen) = (h.reader, h.seen);
        let r = st.reader(rid).ok_or(Rv::E_INVALID_VALUE)?;
        if checks.lock && matches!(r.lock, Some((holder, _)) if holder != card.0) {
            return Err(Rv::E_SHARING_VIOLATION);
        }
        if checks.status && r.state & cs::UNKNOWN != 0 {
            return Err(Rv::E_READER_UNAVAILABLE);
        }
        if checks.events {
            match seen {
                Seen::Nothing => {}
                Seen::Reset => return Err(Rv::W_RESET_CARD),
                Seen::Removed => return Err(Rv::W_REMOVED_CARD),
            }
        }
        Ok(Checked { reader: rid, device: r.device.clone(), slot: r.slot as usize })
    }

    /// Waits while a handle of another session holds a transaction on `reader` (pcscd waits
    /// the same way in `SCardConnect`, and in `SCardDisconnect` with a card action).
    fn wait_for_lock<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        reader: u64,
        session: u64,
        me: Option<u64>,
    ) -> MutexGuard<'a, State> {
        loop {
            let holder = st.readers.iter().flatten().find(|r| r.id == reader).and_then(|r| r.lock).map(|(h, _)| h);
            let waiting = match holder {
                Some(h) if Some(h) != me => st.session_of(h).is_some_and(|s| s != session),
                _ => false,
            };
            if !waiting || self.is_stopped() {
                return st;
            }
            st = self.lock_cv.wait_timeout(st, Duration::from_millis(100)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Sets up the protocol for `preferred` on a powered card (pcscd's `PHSetProtocol` via
    /// libccid), or checks it against the one already set. Returns the PC/SC protocol.
    fn negotiate(slot: &mut DevSlot, preferred: u32) -> Result<u32, Rv> {
        let wanted = if preferred & proto::ANY_LEGACY != 0 { proto::ANY } else { preferred };
        if preferred & proto::RAW != 0 {
            return Ok(proto::RAW);
        }
        match slot.protocol() {
            Some(p) if wanted & p.pcsc_bit() != 0 => Ok(p.pcsc_bit()),
            Some(_) => Err(Rv::E_PROTO_MISMATCH),
            None => match slot.connect(Protocols(wanted & proto::ANY)) {
                Ok((_, p)) => Ok(p.pcsc_bit()),
                Err(e) => Err(e.rv()),
            },
        }
    }

    /// Reset (`RESET`: power up again, as libccid) or power cycle (`UNPOWER`).
    fn reset_slot(slot: &mut DevSlot, how: u32) -> Result<Vec<u8>, ExchangeError> {
        if how == disp::UNPOWER {
            let _ = slot.power_off();
        }
        slot.power_on()
    }

    fn after_transfer_error(&self, dev: &Arc<Device>, rv: Rv) {
        if rv == Rv::E_READER_UNAVAILABLE {
            self.remove_device(dev, "unplugged");
        } else if rv == Rv::E_NO_SMARTCARD {
            self.poll_device(dev, None);
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect::<Vec<_>>().join(" ")
}

/// The presence thread of one device.
fn presence_loop(backend: Weak<UsbBackend>, dev: Arc<Device>) {
    let mut interrupt = lock(&dev.interrupt).take();
    loop {
        let Some(b) = backend.upgrade() else { return };
        if b.is_stopped() || dev.gone.load(Ordering::SeqCst) {
            return;
        }
        let wait = b.wait_for(&dev, interrupt.is_some());
        let poll = b.cfg.poll_interval;
        drop(b);
        let mut note = None;
        let mut gone = false;
        match interrupt.as_mut() {
            Some(i) => match i.wait(wait) {
                Ok(n) => {
                    if let Some(Notification::HardwareError { slot, code, .. }) = &n {
                        tracing::warn!(slot, code, "reader reports a hardware error");
                    }
                    note = n;
                }
                Err(TransportError::NoDevice) => gone = true,
                Err(e) => {
                    tracing::debug!("interrupt endpoint: {e}; polling instead");
                    std::thread::sleep(poll);
                }
            },
            None => std::thread::sleep(wait),
        }
        let Some(b) = backend.upgrade() else { return };
        if gone {
            b.remove_device(&dev, "unplugged");
            return;
        }
        b.poll_device(&dev, note.as_ref());
    }
}

impl Backend for UsbBackend {
    fn open_session(&self, _scope: u32) -> Result<SessionId, Rv> {
        let id = self.id();
        self.state().sessions.insert(id);
        Ok(SessionId(id))
    }

    fn close_session(&self, session: SessionId) {
        let mut st = self.state();
        st.sessions.remove(&session.0);
        let gone: Vec<(u64, u64)> =
            st.handles.iter().filter(|(_, h)| h.session == session.0).map(|(k, h)| (*k, h.reader)).collect();
        for (card, reader) in &gone {
            st.handles.remove(card);
            let left = st.handle_count(*reader);
            if let Some(r) = st.reader(*reader) {
                if matches!(r.lock, Some((h, _)) if h == *card) {
                    r.lock = None;
                }
                if left == 0 && r.power == Power::InUse {
                    r.power = Power::Idle(Instant::now());
                }
            }
        }
        drop(st);
        if !gone.is_empty() {
            self.lock_cv.notify_all();
            self.changes.bump();
        }
    }

    fn reader_states(&self) -> Vec<ReaderState> {
        let st = self.state();
        st.readers
            .iter()
            .flatten()
            .map(|r| {
                let mut s = ReaderState {
                    name: r.name.clone(),
                    event_counter: r.event_counter,
                    state: r.state,
                    sharing: st.sharing(r.id),
                    protocol: r.protocol,
                    ..Default::default()
                };
                s.atr[..r.atr.len()].copy_from_slice(&r.atr);
                s.atr_len = r.atr.len() as u32;
                s
            })
            .collect()
    }

    fn reader_events(&self) -> u32 {
        self.state().reader_events
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
        if share_mode != share::DIRECT && protocols & (proto::T0 | proto::T1 | proto::RAW | proto::ANY_LEGACY) == 0 {
            return Err(Rv::E_PROTO_MISMATCH.into());
        }
        if !(share::EXCLUSIVE..=share::DIRECT).contains(&share_mode) {
            return Err(Rv::E_INVALID_VALUE.into());
        }
        let mut st = self.state();
        if !st.sessions.contains(&session.0) {
            return Err(Rv::E_INVALID_HANDLE.into());
        }
        let rid = st.by_name(reader).map(|r| r.id).ok_or(Rv::E_UNKNOWN_READER)?;
        st = self.wait_for_lock(st, rid, session.0, None);
        let sharing = st.sharing(rid);
        let Some(r) = st.reader(rid) else { return Err(Rv::E_UNKNOWN_READER.into()) };
        if r.state & cs::UNKNOWN != 0 {
            return Err(Rv::E_READER_UNAVAILABLE.into());
        }
        if sharing == -1 || (share_mode == share::EXCLUSIVE && sharing > 0) {
            return Err(Rv::E_SHARING_VIOLATION.into());
        }
        if share_mode != share::DIRECT && r.state & cs::PRESENT == 0 {
            return Err(Rv::E_NO_SMARTCARD.into());
        }
        let (dev, slot_no, was_powered) = (r.device.clone(), r.slot as usize, r.state & cs::POWERED != 0);
        drop(st);

        // The card: power (again) if needed, then the protocol.
        let mut io = lock(&dev.io);
        if dev.gone.load(Ordering::SeqCst) {
            return Err(Rv::E_READER_UNAVAILABLE.into());
        }
        let slot = &mut io[slot_no];
        let mut powered = None;
        let mut result = Ok(0);
        if share_mode != share::DIRECT {
            if slot.card().is_none() {
                match slot.power_on() {
                    Ok(atr) => powered = Some(Ok(atr)),
                    // pcscd: the published state stays; a card never powered is "unpowered".
                    Err(e) if e.rv() == Rv::E_NO_SMARTCARD => result = Err(Rv::E_NO_SMARTCARD),
                    Err(e) => {
                        tracing::debug!(error = %e, "power-up failed");
                        result = Err(if was_powered { Rv::W_UNRESPONSIVE_CARD } else { Rv::W_UNPOWERED_CARD });
                    }
                }
            }
            if result.is_ok() {
                result = Self::negotiate(slot, protocols);
            }
        }
        let slot_protocol = slot.protocol().map_or(0, Protocol::pcsc_bit);

        let mut st = self.state();
        let sharing = st.sharing(rid);
        let Some(r) = st.reader(rid) else { return Err(Rv::E_READER_UNAVAILABLE.into()) };
        if let Some(p) = &powered {
            r.powered(p);
        }
        if result.is_ok() && share_mode != share::DIRECT {
            r.protocol = if result == Ok(proto::RAW) { proto::RAW } else { slot_protocol };
        }
        let result = result.and_then(|p| {
            if sharing == -1 || (share_mode == share::EXCLUSIVE && sharing > 0) {
                Err(Rv::E_SHARING_VIOLATION)
            } else {
                Ok(p)
            }
        });
        let active = match result {
            Err(rv) => {
                drop(st);
                drop(io);
                if rv == Rv::E_READER_UNAVAILABLE || rv == Rv::E_NO_SMARTCARD {
                    self.after_transfer_error(&dev, rv);
                }
                self.changes.bump();
                return Err(rv.into());
            }
            Ok(_) if share_mode == share::DIRECT => r.protocol,
            Ok(p) => {
                r.power = Power::InUse;
                p
            }
        };
        let card = self.id();
        st.handles.insert(card, Handle { reader: rid, session: session.0, share: share_mode, seen: Seen::Nothing });
        drop(st);
        drop(io);
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
        if ![disp::LEAVE, disp::RESET, disp::UNPOWER].contains(&init)
            || !(share::EXCLUSIVE..=share::DIRECT).contains(&share_mode)
        {
            return Err(Rv::E_INVALID_VALUE.into());
        }
        if share_mode != share::DIRECT && protocols & (proto::T0 | proto::T1 | proto::RAW | proto::ANY_LEGACY) == 0 {
            return Err(Rv::E_PROTO_MISMATCH.into());
        }
        let mut st = self.state();
        let c = self.check(&mut st, session, card, Checks { lock: true, status: true, events: false })?;
        let sharing = st.sharing(c.reader);
        let mine = st.handles.get(&card.0).map_or(0, |h| h.share);
        if share_mode == share::EXCLUSIVE && !(sharing == -1 || sharing == 1) {
            return Err(Rv::E_SHARING_VIOLATION.into());
        }
        let r = st.reader(c.reader).ok_or(Rv::E_INVALID_VALUE)?;
        if init == disp::LEAVE {
            if r.state & cs::ABSENT != 0 {
                return Err(Rv::E_NO_SMARTCARD.into());
            }
            if r.state & cs::PRESENT != 0 && r.state & cs::SWALLOWED != 0 {
                return Err(Rv::W_UNRESPONSIVE_CARD.into());
            }
        }
        drop(st);

        let mut io = lock(&c.device.io);
        if c.device.gone.load(Ordering::SeqCst) {
            return Err(Rv::E_READER_UNAVAILABLE.into());
        }
        let slot = &mut io[c.slot];
        let mut powered = None;
        let mut result = Ok(0);
        if init != disp::LEAVE {
            let p = Self::reset_slot(slot, init);
            if let Err(e) = &p {
                result = Err(if e.rv() == Rv::E_NO_SMARTCARD { Rv::E_NO_SMARTCARD } else { Rv::W_UNRESPONSIVE_CARD });
            }
            powered = Some(p);
        } else if share_mode != share::DIRECT && slot.card().is_none() {
            let p = slot.power_on();
            if let Err(e) = &p {
                result = Err(e.rv());
            }
            powered = Some(p);
        }
        if result.is_ok() && share_mode != share::DIRECT {
            result = Self::negotiate(slot, protocols);
        }
        let slot_protocol = slot.protocol().map_or(0, Protocol::pcsc_bit);

        let mut st = self.state();
        if init != disp::LEAVE {
            st.mark(c.reader, Seen::Reset);
        }
        let Some(r) = st.reader(c.reader) else { return Err(Rv::E_INVALID_VALUE.into()) };
        if let Some(p) = &powered {
            r.powered(p);
        }
        let active = match result {
            Err(rv) => {
                drop(st);
                drop(io);
                self.changes.bump();
                self.after_transfer_error(&c.device, rv);
                return Err(rv.into());
            }
            Ok(_) if share_mode == share::DIRECT => r.protocol,
            Ok(p) => {
                r.protocol = if p == proto::RAW { proto::RAW } else { slot_protocol };
                r.power = Power::InUse;
                p
            }
        };
        if let Some(h) = st.handles.get_mut(&card.0) {
            h.share = share_mode;
            h.seen = Seen::Nothing;
        }
        drop(st);
        drop(io);
        if mine != share_mode || init != disp::LEAVE {
            self.changes.bump();
        }
        Ok(active)
    }

    fn disconnect(&self, session: SessionId, card: CardRef, disposition: u32) -> Result<(), Rv> {
        if disposition > disp::EJECT {
            return Err(Rv::E_INVALID_VALUE);
        }
        let mut st = self.state();
        let c = match self.check(&mut st, session, card, Checks { lock: false, status: false, events: false }) {
            Ok(c) => c,
            // pcscd: a handle whose reader is gone disconnects fine.
            Err(Rv::E_INVALID_VALUE) => {
                st.handles.remove(&card.0);
                return Ok(());
            }
            Err(rv) => return Err(rv),
        };
        if disposition != disp::LEAVE {
            st = self.wait_for_lock(st, c.reader, session.0, Some(card.0));
        }
        if let Some(r) = st.reader(c.reader) {
            if matches!(r.lock, Some((h, _)) if h == card.0) {
                r.lock = None;
            }
        }
        let reset = disposition == disp::RESET || disposition == disp::UNPOWER;
        if reset {
            st.mark(c.reader, Seen::Reset);
        }
        drop(st);
        self.lock_cv.notify_all();

        let mut io = lock(&c.device.io);
        let mut powered = None;
        let mut unpowered = false;
        if !c.device.gone.load(Ordering::SeqCst) {
            let slot = &mut io[c.slot];
            match disposition {
                disp::RESET => powered = Some(slot.power_on()),
                disp::UNPOWER => unpowered = slot.power_off().is_ok(),
                _ => {}
            }
        }
        let slot_powered = !c.device.gone.load(Ordering::SeqCst) && io[c.slot].card().is_some();
        let mut st = self.state();
        st.handles.remove(&card.0);
        let left = st.handle_count(c.reader);
        if let Some(r) = st.reader(c.reader) {
            if let Some(p) = &powered {
                r.powered(p);
            }
            if disposition == disp::UNPOWER && unpowered {
                r.state = cs::PRESENT;
                r.protocol = 0;
                r.power = Power::Unpowered;
            }
            if left == 0 {
                r.power = if slot_powered { Power::Idle(Instant::now()) } else { Power::Unpowered };
            }
        }
        drop(st);
        drop(io);
        self.changes.bump();
        if matches!(&powered, Some(Err(e)) if e.rv() == Rv::E_NO_SMARTCARD) {
            self.after_transfer_error(&c.device, Rv::E_NO_SMARTCARD);
        }
        Ok(())
    }

    fn begin_transaction(&self, session: SessionId, card: CardRef) -> Result<(), Rv> {
        let mut st = self.state();
        let c = self.check(&mut st, session, card, Checks { lock: false, status: true, events: true })?;
        let r = st.reader(c.reader).ok_or(Rv::E_INVALID_VALUE)?;
        match r.lock {
            Some((h, _)) if h != card.0 => Err(Rv::E_SHARING_VIOLATION),
            Some((h, n)) => {
                r.lock = Some((h, n + 1));
                Ok(())
            }
            None => {
                r.lock = Some((card.0, 1));
                Ok(())
            }
        }
    }

    fn end_transaction(&self, session: SessionId, card: CardRef, disposition: u32) -> Result<(), Rv> {
        if disposition > disp::EJECT {
            return Err(Rv::E_INVALID_VALUE);
        }
        let mut st = self.state();
        let c = self.check(&mut st, session, card, Checks { lock: false, status: false, events: true })?;
        let holder = st.reader(c.reader).and_then(|r| r.lock);
        if disposition != disp::LEAVE && matches!(holder, Some((h, _)) if h != card.0) {
            return Err(Rv::E_SHARING_VIOLATION);
        }
        let mut rv = Ok(());
        if disposition == disp::RESET || disposition == disp::UNPOWER {
            drop(st);
            let mut io = lock(&c.device.io);
            let p = if c.device.gone.load(Ordering::SeqCst) {
                Err(ExchangeError::NotPowered)
            } else {
                Self::reset_slot(&mut io[c.slot], disposition)
            };
            st = self.state();
            st.mark(c.reader, Seen::Reset);
            if let Some(r) = st.reader(c.reader) {
                r.powered(&p);
                if p.is_ok() {
                    r.power = Power::InUse;
                }
            }
            let gone_card = matches!(&p, Err(e) if e.rv() == Rv::E_NO_SMARTCARD);
            if let Err(e) = p {
                rv = Err(if e.rv() == Rv::E_NO_SMARTCARD { Rv::E_NO_SMARTCARD } else { Rv::W_UNRESPONSIVE_CARD });
            }
            drop(st);
            drop(io);
            self.changes.bump();
            if gone_card {
                self.after_transfer_error(&c.device, Rv::E_NO_SMARTCARD);
            }
            st = self.state();
        }
        let Some(r) = st.reader(c.reader) else { return rv };
        let unlock = match r.lock {
            Some((h, _)) if h != card.0 => Err(Rv::E_SHARING_VIOLATION),
            None => Err(Rv::E_NOT_TRANSACTED),
            Some((h, n)) => {
                r.lock = if n > 1 { Some((h, n - 1)) } else { None };
                Ok(())
            }
        };
        drop(st);
        self.lock_cv.notify_all();
        rv.and(unlock)
    }

    fn status(&self, session: SessionId, card: CardRef) -> Result<CardInfo, Rv> {
        let mut st = self.state();
        let c = self.check(&mut st, session, card, ALL_CHECKS)?;
        let r = st.reader(c.reader).ok_or(Rv::E_INVALID_VALUE)?;
        Ok(CardInfo { reader: r.name.clone(), state: r.state & 0xFFFF, protocol: r.protocol, atr: r.atr.clone() })
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
        let mut st = self.state();
        let c = match self.check(&mut st, session, card, ALL_CHECKS) {
            Ok(c) => c,
            Err(rv) => return Transmitted::failed(rv),
        };
        let Some(r) = st.reader(c.reader) else { return Transmitted::failed(Rv::E_INVALID_VALUE) };
        if send_pci.0 != proto::RAW {
            if r.state & cs::ABSENT != 0 {
                return Transmitted::failed(Rv::E_NO_SMARTCARD);
            }
            if send_pci.0 != proto::ANY_LEGACY && send_pci.0 != r.protocol {
                return Transmitted::failed(Rv::E_PROTO_MISMATCH);
            }
        }
        drop(st);
        let mut io = lock(&c.device.io);
        if c.device.gone.load(Ordering::SeqCst) {
            return Transmitted::failed(Rv::E_READER_UNAVAILABLE);
        }
        let result = io[c.slot].transmit(apdu);
        drop(io);
        match result {
            Ok(resp) if resp.len() > recv.len() => {
                Transmitted { rv: Rv::E_INSUFFICIENT_BUFFER, len: resp.len(), recv_pci: None }
            }
            Ok(resp) => {
                recv[..resp.len()].copy_from_slice(&resp);
                Transmitted { rv: Rv::SUCCESS, len: resp.len(), recv_pci: None }
            }
            Err(e) => {
                let rv = e.rv();
                tracing::debug!(error = %e, ?rv, "transmit failed");
                self.after_transfer_error(&c.device, rv);
                Transmitted::failed(rv)
            }
        }
    }

    fn control(&self, session: SessionId, card: CardRef, code: u32, data: &[u8], recv: &mut [u8]) -> Controlled {
        let mut st = self.state();
        let c = match self.check(&mut st, session, card, Checks { lock: true, status: true, events: false }) {
            Ok(c) => c,
            Err(rv) => return Controlled { rv, len: 0 },
        };
        drop(st);
        let info = &c.device.info;
        let desc = &info.descriptor;
        let quirks = &c.device.quirks;
        let answer: Result<Vec<u8>, Rv> = if features::is_feature_request(code) {
            Ok(features::feature_list(desc, quirks))
        } else if code == features::GET_TLV_PROPERTIES {
            // Gemalto readers' sFirmwareID: an Escape each time, as libccid.
            let firmware_id = quirks
                .firmware_id_escape()
                .and_then(|escape| lock(&c.device.io)[c.slot].escape(escape, quirks.command_timeout()).ok());
            Ok(features::tlv_properties(desc, quirks, firmware_id.as_deref()))
        } else if code == features::IFD_PIN_PROPERTIES {
            Ok(features::pin_properties(desc, quirks))
        } else if (code == features::VERIFY_PIN_DIRECT && desc.pin_support.verify())
            || (code == features::MODIFY_PIN_DIRECT && desc.pin_support.modify())
        {
            let cmd = if code == features::VERIFY_PIN_DIRECT {
                features::verify_pin(data, quirks)
            } else {
                features::modify_pin(data, quirks)
            };
            match cmd {
                Err(rv) => Err(rv),
                Ok(cmd) => {
                    // At the TPDU level with T=1 the slot fills in the structure's bTeoPrologue
                    // and unwraps the card's block (exchange.rs `Slot::secure`).
                    let mut io = lock(&c.device.io);
                    // Some readers need a pause or an Escape first (ccid/quirks.rs group F).
                    cmd.prepare(&mut io[c.slot]).and_then(|()| {
                        io[c.slot].secure(&cmd.payload, cmd.timeout).map_err(|e| match e {
                            ExchangeError::NotPowered => Rv::E_NOT_TRANSACTED,
                            e => e.rv(),
                        })
                    })
                }
            }
        } else if code == features::VENDOR_IFD_EXCHANGE {
            // libccid refuses raw escapes, except a few per reader (ccid/quirks.rs group H).
            if quirks.escape_allowed(data) {
                let mut io = lock(&c.device.io);
                io[c.slot].escape(data, Duration::from_secs(30)).map_err(|e| e.rv())
            } else {
                Err(Rv::E_NOT_TRANSACTED)
            }
        } else if code == features::MCT_READER_DIRECT {
            // The Secoder commands go to the reader as an Escape (ccid/quirks.rs group H).
            if quirks::mct_command_ok(data) {
                let mut io = lock(&c.device.io);
                io[c.slot].escape(data, quirks.command_timeout()).map_err(|e| e.rv())
            } else {
                Err(Rv::E_NOT_TRANSACTED)
            }
        } else {
            Err(Rv::E_UNSUPPORTED_FEATURE)
        };
        match answer {
            Ok(v) if v.len() > recv.len() => Controlled { rv: Rv::E_INSUFFICIENT_BUFFER, len: v.len() },
            Ok(v) => {
                recv[..v.len()].copy_from_slice(&v);
                Controlled { rv: Rv::SUCCESS, len: v.len() }
            }
            Err(rv) => {
                if rv == Rv::E_READER_UNAVAILABLE {
                    self.after_transfer_error(&c.device, rv);
                }
                Controlled { rv, len: 0 }
            }
        }
    }

    fn get_attrib(&self, session: SessionId, card: CardRef, attr_id: u32, buf_len: usize) -> Attrib {
        let mut st = self.state();
        let c = match self.check(&mut st, session, card, ALL_CHECKS) {
            Ok(c) => c,
            Err(rv) => return Attrib::failed(rv),
        };
        let name = st.reader(c.reader).map(|r| r.name.clone()).unwrap_or_default();
        drop(st);
        let info = &c.device.info;
        let too_small = |len: usize| Attrib { rv: Rv::E_INSUFFICIENT_BUFFER, len, data: Vec::new() };
        let ok = |data: Vec<u8>| Attrib { rv: Rv::SUCCESS, len: data.len(), data };
        match attr_id {
            attr::VENDOR_NAME | attr::VENDOR_IFD_SERIAL_NO => {
                // libccid copies what fits, NUL-terminated.
                let mut v = features::static_attribute(attr_id, &info.descriptor, info).unwrap_or_default();
                if v.len() > buf_len {
                    v.truncate(buf_len);
                    if let Some(last) = v.last_mut() {
                        *last = 0;
                    }
                }
                ok(v)
            }
            attr::VENDOR_IFD_VERSION | attr::CHANNEL_ID | attr::MAXINPUT => {
                if buf_len < 4 {
                    return too_small(4);
                }
                ok(features::static_attribute(attr_id, &info.descriptor, info).unwrap_or_default())
            }
            attr::ATR_STRING | attr::ICC_PRESENCE | attr::ICC_INTERFACE_STATUS => {
                let mut io = lock(&c.device.io);
                if c.device.gone.load(Ordering::SeqCst) {
                    return Attrib::failed(Rv::E_READER_UNAVAILABLE);
                }
                let slot = &mut io[c.slot];
                if attr_id == attr::ATR_STRING {
                    let atr = slot.atr().map(<[u8]>::to_vec).unwrap_or_default();
                    if atr.len() > buf_len {
                        return too_small(atr.len());
                    }
                    return ok(atr);
                }
                let present = matches!(slot.status(), Ok(IccStatus::Active | IccStatus::Inactive));
                let v = match (attr_id, present) {
                    (attr::ICC_PRESENCE, true) => 2,
                    (attr::ICC_INTERFACE_STATUS, true) => 1,
                    _ => 0,
                };
                if buf_len < 1 {
                    return too_small(1);
                }
                ok(vec![v])
            }
            attr::DEVICE_FRIENDLY_NAME_A | attr::DEVICE_SYSTEM_NAME_A => {
                let mut v = name;
                v.push(0);
                if v.len() > buf_len {
                    return too_small(v.len());
                }
                ok(v)
            }
            _ => Attrib::failed(Rv::E_UNSUPPORTED_FEATURE),
        }
    }

    fn set_attrib(&self, session: SessionId, card: CardRef, _attr_id: u32, _value: &[u8]) -> Result<(), Rv> {
        let mut st = self.state();
        self.check(&mut st, session, card, ALL_CHECKS)?;
        // libccid sets nothing (IFD_NOT_SUPPORTED, which pcscd reports this way).
        Err(Rv::E_NOT_TRANSACTED)
    }
}
