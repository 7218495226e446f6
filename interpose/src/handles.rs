//! Process-global handle tables: `SCARDCONTEXT` → `Arc<Context>` and
//! `SCARDHANDLE` → (context, card).
//!
//! * The table lock is held only to look a handle up or change the tables, never
//!   during a call: callers get an `Arc` clone, so `SCardCancel` reaches a context
//!   while another thread waits in `SCardGetStatusChange` on it.
//! * Fork safety: the tables belong to one fork generation
//!   ([`pcsc_proto::client::fork_generation`]). A child (new generation) never
//!   touches the parent's tables, whose lock another parent thread may have held
//!   at `fork()`: the first call in the child installs fresh, empty tables and
//!   leaks the old ones. The parent's handles are therefore invalid in the child,
//!   and the child's sockets are its own.

use pcsc_proto::hash::HandleMap;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use pcsc_proto::client::{fork_generation, CardId, Context};

use crate::types::{SCARDCONTEXT, SCARDHANDLE};

/// The tables, generic over the context type so they can be tested without a
/// daemon.
#[derive(Debug)]
pub struct Tables<C> {
    contexts: HandleMap<SCARDCONTEXT, Arc<C>>,
    cards: HandleMap<CardId, SCARDCONTEXT>,
    next: u32,
}

impl<C> Tables<C> {
    /// Empty tables; context handle values start from `seed`.
    pub fn new(seed: u32) -> Self {
        Tables { contexts: HandleMap::default(), cards: HandleMap::default(), next: seed }
    }

    /// Adds a context; returns its new handle: non-zero, positive, 31-bit and not
    /// in use.
    pub fn insert_context(&mut self, ctx: Arc<C>) -> SCARDCONTEXT {
        loop {
            self.next = self.next.wrapping_add(1) & 0x7FFF_FFFF;
            let h = self.next as SCARDCONTEXT;
            if h != 0 && !self.contexts.contains_key(&h) {
                self.contexts.insert(h, ctx);
                return h;
            }
        }
    }

    pub fn context(&self, h: SCARDCONTEXT) -> Option<Arc<C>> {
        self.contexts.get(&h).cloned()
    }

    /// Removes a context and every card handle of it.
    pub fn remove_context(&mut self, h: SCARDCONTEXT) -> Option<Arc<C>> {
        let ctx = self.contexts.remove(&h)?;
        self.cards.retain(|_, c| *c != h);
        Some(ctx)
    }

    pub fn insert_card(&mut self, card: CardId, ctx: SCARDCONTEXT) {
        self.cards.insert(card, ctx);
    }

    /// The context and card id behind a card handle.
    pub fn card(&self, h: SCARDHANDLE) -> Option<(Arc<C>, CardId)> {
        let id = card_id(h)?;
        let ctx = self.cards.get(&id)?;
        Some((self.contexts.get(ctx)?.clone(), id))
    }

    pub fn remove_card(&mut self, h: SCARDHANDLE) {
        if let Some(id) = card_id(h) {
            self.cards.remove(&id);
        }
    }

    pub fn context_count(&self) -> usize {
        self.contexts.len()
    }

    pub fn card_count(&self) -> usize {
        self.cards.len()
    }
}

/// A card handle value as the engine's card id (they are the same numbers).
pub fn card_id(h: SCARDHANDLE) -> Option<CardId> {
    CardId::try_from(h).ok().filter(|&v| v != 0)
}

/// The card id as the C handle.
pub fn card_handle(id: CardId) -> SCARDHANDLE {
    id as SCARDHANDLE
}

/// The tables of one fork generation.
struct Slot {
    generation: u64,
    tables: Mutex<Tables<Context>>,
}

static CURRENT: AtomicPtr<Slot> = AtomicPtr::new(core::ptr::null_mut());

fn seed() -> u32 {
    // Different values in different processes (and in a child after fork), so
    // that a handle from another process is unlikely to be valid here.
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    (pid.wrapping_mul(2_654_435_761) ^ t.rotate_left(13)) & 0x3FFF_FFFF | 0x0010_0000
}

fn slot() -> &'static Slot {
    let generation = fork_generation();
    loop {
        let p = CURRENT.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: slots are leaked, never freed, once published.
            let s = unsafe { &*p };
            if s.generation == generation {
                return s;
            }
        }
        let new = Box::into_raw(Box::new(Slot { generation, tables: Mutex::new(Tables::new(seed())) }));
        match CURRENT.compare_exchange(p, new, Ordering::AcqRel, Ordering::Acquire) {
            // The old slot (a parent's) is leaked on purpose: its lock may be held
            // by a thread that does not exist in this process.
            // SAFETY: just published; never freed.
            Ok(_) => return unsafe { &*new },
            // SAFETY: `new` was never published.
            Err(_) => drop(unsafe { Box::from_raw(new) }),
        }
    }
}

/// Locks this process's tables (briefly: never call into the engine while
/// holding the guard).
pub fn tables() -> MutexGuard<'static, Tables<Context>> {
    slot().tables.lock().unwrap_or_else(|p| p.into_inner())
}

/// The context behind a handle, if any.
pub fn context(h: SCARDCONTEXT) -> Option<Arc<Context>> {
    tables().context(h)
}

/// The context and card id behind a card handle, if any.
pub fn card(h: SCARDHANDLE) -> Option<(Arc<Context>, CardId)> {
    tables().card(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_and_cards() {
        let mut t: Tables<&'static str> = Tables::new(0x7FFF_FFFE);
        let a = t.insert_context(Arc::new("a"));
        let b = t.insert_context(Arc::new("b"));
        assert!(a > 0 && b > 0 && a != b, "wraps past 0: {a} {b}");
        assert_eq!(*t.context(a).unwrap(), "a");
        assert!(t.context(0).is_none() && t.context(-1).is_none());
        t.insert_card(77, a);
        t.insert_card(78, a);
        t.insert_card(79, b);
        let (c, id) = t.card(77).unwrap();
        assert_eq!((*c, id), ("a", 77));
        assert!(t.card(0).is_none() && t.card(-77).is_none() && t.card(1 << 40).is_none());
        t.remove_card(78);
        assert!(t.card(78).is_none());
        assert!(t.remove_context(a).is_some());
        assert!(t.card(77).is_none(), "cards go with their context");
        assert_eq!(t.card(79).unwrap().1, 79);
        assert!(t.remove_context(a).is_none());
        assert_eq!((t.context_count(), t.card_count()), (1, 1));
    }

    #[test]
    fn handles_skip_values_in_use() {
        let mut t: Tables<u8> = Tables::new(0);
        let a = t.insert_context(Arc::new(1));
        t.next = 0; // force a wrap onto `a`
        let b = t.insert_context(Arc::new(2));
        assert_ne!(a, b);
    }

    #[test]
    fn global_tables_are_per_generation() {
        let s1 = slot() as *const Slot;
        let s2 = slot() as *const Slot;
        assert_eq!(s1, s2);
        assert!(tables().context(0).is_none());
    }
}
