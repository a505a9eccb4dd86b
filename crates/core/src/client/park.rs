//! Idle transaction-mode clients parked outside the runtime. A parked client has
//! no task and no registration with tokio's reactor: its session sits in one slab
//! and its socket in an epoll set of Tidepool's own, which one task watches. Bytes
//! or a hang-up on the socket, its tenant's stop signal or its idle timeout give
//! it a task again (`session::resume`).
//!
//! A client is parked right after its login and again once it has been idle for
//! [`IDLE_TICKS`] ticks of the parking clock. Parking and resuming cost four
//! `epoll_ctl` calls and a task spawn, so a busy client never parks, and an idle
//! one costs the bytes of its session instead of a task, a reactor slot and their
//! allocations.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::session::{resume, Session};
use crate::signal::{Beacon, Watch};
use crate::stream::{Bare, Stream};

/// A parked client: its session around the bare socket.
type Parked = Session<Bare>;

/// How often the parking clock ticks.
const TICK: Duration = Duration::from_secs(1);
/// Whole ticks a client must have been idle to be parked: it has been idle for
/// between one and two seconds.
pub(super) const IDLE_TICKS: u32 = 2;
/// `Session::idle_since` of a client that is not to be parked in this wait.
pub(super) const NOT_PARKING: u32 = u32::MAX;
/// Socket events taken from the epoll set per look.
const EVENTS_PER_LOOK: usize = 1024;
/// Room for this many slots (and free entries) is kept however few clients are
/// parked; past it, the table gives memory back as it empties.
const SLOTS_KEPT: usize = 1024;

/// The parking place of one pooler process.
pub struct Parking {
    lot: Mutex<Lot<Parked>>,
    registry: Registry,
    bell: Arc<Bell>,
    /// `bell` as a waker, for the parked clients' stop signals.
    bell_waker: Waker,
    clock: AtomicU32,
}

/// What the parking place holds, under its lock (generic over the client only so
/// that its bookkeeping can be tested alone).
struct Lot<C> {
    slots: Vec<Slot<C>>,
    /// Empty slots, lowest first: new clients fill the table from the bottom, so
    /// after a crowd has left its top empties and is cut off. May name slots
    /// already cut off (skipped when taken, dropped when they pile up).
    free: BinaryHeap<Reverse<u32>>,
    /// The generation a slot made anew starts at: above that of every slot cut
    /// off, so a token of a client gone with its slot never names a new one.
    first_generation: u32,
    parked: usize,
    /// Idle timeouts of parked clients, earliest first; stale entries (the client
    /// resumed) are skipped when they come up.
    deadlines: BinaryHeap<Reverse<(Instant, usize)>>,
    /// The stop signals of parked clients' tenants, by the signal's address, with
    /// how many parked clients watch each.
    groups: HashMap<usize, Group>,
    /// No more parking: the pooler is shutting down.
    closed: bool,
}

struct Slot<C> {
    /// Counts the clients this slot has held, so a stale token is told apart.
    generation: u32,
    client: Option<C>,
}

struct Group {
    watch: Watch,
    members: u32,
}

/// Wakes the parking task.
#[derive(Default)]
struct Bell {
    notify: Notify,
    /// A stop signal may have fired.
    signalled: AtomicBool,
}

impl Bell {
    fn ring(&self) {
        self.signalled.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

impl Wake for Bell {
    fn wake(self: Arc<Self>) {
        self.ring();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ring();
    }
}

/// A client to give a task again, and whether its idle timeout passed.
type Resumed = (Parked, bool);

/// The epoll token of a slot: its index and its generation.
fn token_of(index: u32, generation: u32) -> usize {
    ((generation as usize) << 32) | index as usize
}

fn index_of(token: usize) -> u32 {
    (token & 0xffff_ffff) as u32
}

/// The epoll set, for tokio to watch as one file.
struct EpollFd(Poll);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Parking {
    /// Opens the epoll set and starts the task that watches it, on the current
    /// runtime. The task ends when `root_stop` (the process's stop signal) fires
    /// and every parked client has its task back.
    pub fn start(tasks: &TaskTracker, root_stop: Arc<Beacon>) -> std::io::Result<Arc<Self>> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        // SAFETY: `EpollFd` owns the `Poll`, which owns its epoll descriptor for its
        // whole life and returns that same descriptor from every `as_raw_fd`; the
        // `AsyncFd` owns the `EpollFd` and is never given another.
        let epoll = unsafe {
            AsyncFd::register_with_interest(EpollFd(poll), tokio::io::Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)?;
        let bell = Arc::new(Bell::default());
        let parking = Arc::new(Self {
            lot: Mutex::new(Lot::default()),
            registry,
            bell_waker: Waker::from(bell.clone()),
            bell,
            clock: AtomicU32::new(0),
        });
        tasks.spawn(parking.clone().watch(epoll, root_stop));
        Ok(parking)
    }

    /// Seconds (ticks) since parking started.
    pub fn clock(&self) -> u32 {
        self.clock.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Lot<Parked>> {
        self.lot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many clients are parked now.
    pub fn parked(&self) -> usize {
        self.lock().parked
    }

    /// Takes `client` in; gives it back if parking has closed or its tenant is
    /// stopping.
    fn park(&self, client: Parked, deadline: Option<Instant>) -> Option<Parked> {
        let mut lot = self.lock();
        if lot.closed || client.stop.is_fired() {
            return Some(client);
        }
        let fd = client.stream.as_raw_fd();
        let beacon = client.stop.beacon().clone();
        client.slot.count_parked(true);
        let (index, generation) = lot.insert(client);
        let token = token_of(index, generation);
        let mut ring = false;
        let group = lot
            .groups
            .entry(Arc::as_ptr(&beacon) as usize)
            .or_insert_with(|| Group {
                watch: Watch::new(beacon),
                members: 0,
            });
        group.members += 1;
        if group.members == 1 {
            // Enter the bell in the new group's signal.
            let mut cx = Context::from_waker(&self.bell_waker);
            ring |= group.watch.poll_fired(&mut cx).is_ready();
        }
        if let Err(e) = self
            .registry
            .register(&mut SourceFd(&fd), Token(token), Interest::READABLE)
        {
            tracing::warn!(error = %e, "cannot park a client");
            // Undone the way a client leaves the lot.
            return self.take(&mut lot, token);
        }
        if let Some(deadline) = deadline {
            ring |= lot.push_deadline(deadline, token);
        }
        drop(lot);
        if ring {
            self.bell.ring();
        }
        None
    }

    /// The parking task: gives clients their task back when their socket is
    /// ready, their tenant stops or their idle timeout passes; ticks the clock.
    async fn watch(self: Arc<Self>, mut epoll: AsyncFd<EpollFd>, root_stop: Arc<Beacon>) {
        let mut events = Events::with_capacity(EVENTS_PER_LOOK);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut root = Watch::new(root_stop.clone());
        let mut ready: Vec<usize> = Vec::new();
        loop {
            let next_deadline = self.lock().deadlines.peek().map(|Reverse((d, _))| *d);
            tokio::select! {
                guard = epoll.readable_mut() => match guard {
                    Ok(mut guard) => {
                        match guard.get_inner_mut().0.poll(&mut events, Some(Duration::ZERO)) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => tracing::warn!(error = %e, "parked clients' epoll failed"),
                        }
                        let mut seen = 0;
                        for event in events.iter() {
                            ready.push(event.token().0);
                            seen += 1;
                        }
                        if seen < EVENTS_PER_LOOK {
                            guard.clear_ready();
                        }
                    }
                    Err(e) => {
                        // The epoll set cannot be watched: give every client back.
                        tracing::error!(error = %e, "cannot watch parked clients; resuming them");
                        self.close_and_resume_all();
                        return;
                    }
                },
                _ = self.bell.notify.notified() => {}
                _ = tick.tick() => {
                    self.clock.fetch_add(1, Ordering::Relaxed);
                    // Clients idle in the runtime look at the clock.
                    root_stop.nudge();
                }
                () = std::future::poll_fn(|cx| root.poll_fired(cx)) => {
                    self.close_and_resume_all();
                    return;
                }
                () = sleep_until(next_deadline), if next_deadline.is_some() => {}
            }
            let resumed = self.collect(&mut ready);
            spawn_all(resumed);
        }
    }

    /// Takes out the clients whose socket is ready, whose tenant stops or whose idle
    /// timeout passed.
    fn collect(&self, ready: &mut Vec<usize>) -> Vec<Resumed> {
        let mut resumed = Vec::new();
        let mut lot = self.lock();
        for token in ready.drain(..) {
            if let Some(client) = self.take(&mut lot, token) {
                resumed.push((client, false));
            }
        }
        let now = Instant::now();
        while let Some(Reverse((deadline, token))) = lot.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            lot.deadlines.pop();
            if let Some(client) = self.take(&mut lot, token) {
                resumed.push((client, true));
            }
        }
        if self.bell.signalled.swap(false, Ordering::Acquire) {
            let fired: Vec<usize> = lot
                .groups
                .iter()
                .filter(|(_, g)| g.watch.is_fired())
                .map(|(key, _)| *key)
                .collect();
            if !fired.is_empty() {
                let tokens = lot
                    .tokens(|client| fired.contains(&(Arc::as_ptr(client.stop.beacon()) as usize)));
                for token in tokens {
                    if let Some(client) = self.take(&mut lot, token) {
                        resumed.push((client, false));
                    }
                }
            }
        }
        resumed
    }

    /// The client in `token`'s slot, if that slot still holds the same one, out of
    /// the epoll set.
    fn take(&self, lot: &mut Lot<Parked>, token: usize) -> Option<Parked> {
        let client = lot.take_token(token)?;
        client.slot.count_parked(false);
        let _ = self
            .registry
            .deregister(&mut SourceFd(&client.stream.as_raw_fd()));
        let key = Arc::as_ptr(client.stop.beacon()) as usize;
        if let Some(group) = lot.groups.get_mut(&key) {
            group.members -= 1;
            if group.members == 0 {
                lot.groups.remove(&key);
            }
        }
        Some(client)
    }

    /// Closes the parking place and gives every parked client its task back (the
    /// pooler is shutting down).
    fn close_and_resume_all(&self) {
        let mut resumed = Vec::new();
        {
            let mut lot = self.lock();
            lot.closed = true;
            for token in lot.tokens(|_| true) {
                if let Some(client) = self.take(&mut lot, token) {
                    resumed.push((client, false));
                }
            }
        }
        spawn_all(resumed);
    }
}

impl<C> Default for Lot<C> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: BinaryHeap::new(),
            first_generation: 0,
            parked: 0,
            deadlines: BinaryHeap::new(),
            groups: HashMap::new(),
            closed: false,
        }
    }
}

impl<C> Lot<C> {
    /// Puts `client` in the lowest free slot; returns the slot and its generation.
    fn insert(&mut self, client: C) -> (u32, u32) {
        self.parked += 1;
        while let Some(Reverse(index)) = self.free.pop() {
            // An entry of a slot cut off since (or cut off and made anew, and
            // maybe filled) is stale.
            if let Some(slot) = self
                .slots
                .get_mut(index as usize)
                .filter(|slot| slot.client.is_none())
            {
                slot.generation = slot.generation.wrapping_add(1);
                slot.client = Some(client);
                return (index, slot.generation);
            }
        }
        let index = self.slots.len() as u32;
        let generation = self.first_generation;
        self.slots.push(Slot {
            generation,
            client: Some(client),
        });
        (index, generation)
    }

    /// Empties slot `index`, and cuts off the empty slots at the top of the table.
    fn take(&mut self, index: u32) -> Option<C> {
        let slot = self.slots.get_mut(index as usize)?;
        let client = slot.client.take()?;
        self.free.push(Reverse(index));
        self.parked -= 1;
        self.shrink();
        Some(client)
    }

    /// Cuts off the empty slots at the top of the table, gives back the room of
    /// a table far larger than what it holds, and lists the empty slots afresh
    /// once stale entries outnumber them.
    fn shrink(&mut self) {
        while self.slots.last().is_some_and(|slot| slot.client.is_none()) {
            if let Some(slot) = self.slots.pop() {
                self.first_generation = self.first_generation.max(slot.generation.wrapping_add(1));
            }
        }
        let len = self.slots.len();
        if self.slots.capacity() > 4 * len + SLOTS_KEPT {
            self.slots.shrink_to(2 * len + SLOTS_KEPT);
        }
        if self.free.len() > 2 * (len - self.parked) + SLOTS_KEPT {
            self.free = (0..len as u32)
                .filter(|&index| self.slots[index as usize].client.is_none())
                .map(Reverse)
                .collect();
        }
    }

    /// The tokens of the clients held that `keep` picks.
    fn tokens(&self, keep: impl Fn(&C) -> bool) -> Vec<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.client.as_ref().is_some_and(&keep))
            .map(|(index, slot)| token_of(index as u32, slot.generation))
            .collect()
    }

    /// Whether `token` names the client its slot holds now.
    fn holds(&self, token: usize) -> bool {
        let index = index_of(token);
        self.slots
            .get(index as usize)
            .is_some_and(|slot| slot.client.is_some() && token_of(index, slot.generation) == token)
    }

    /// Empties the slot `token` names, if it still holds that client.
    fn take_token(&mut self, token: usize) -> Option<C> {
        if !self.holds(token) {
            return None;
        }
        self.take(index_of(token))
    }

    /// Notes the idle deadline of the client in `token`; returns whether it is the
    /// earliest. Deadlines of clients that left are dropped when they come up, or
    /// here once they outnumber the parked clients, so the heap stays bounded by
    /// the clients parked, not by how often they park.
    fn push_deadline(&mut self, deadline: Instant, token: usize) -> bool {
        if self.deadlines.len() >= 2 * self.parked + 64 {
            let mut deadlines = std::mem::take(&mut self.deadlines);
            deadlines.retain(|Reverse((_, t))| self.holds(*t));
            self.deadlines = deadlines;
        }
        let earliest = self
            .deadlines
            .peek()
            .is_none_or(|Reverse((first, _))| deadline < *first);
        self.deadlines.push(Reverse((deadline, token)));
        earliest
    }
}

/// Gives each client a task again.
fn spawn_all(resumed: Vec<Resumed>) {
    for (client, timed_out) in resumed {
        resume(client, timed_out);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Session {
    /// Whether this client could be parked: plain TCP or a Unix socket (a TLS
    /// session's state stays with its task) and no LISTEN (its notifications
    /// arrive through a channel).
    pub(super) fn parkable(&self) -> bool {
        matches!(self.stream, Stream::Plain(_) | Stream::Unix(_)) && self.listening.is_none()
    }

    /// Whether this idle client has waited long enough to be parked.
    pub(super) fn idle_long_enough(&self) -> bool {
        self.idle_since != NOT_PARKING
            && self.app.parking_clock().wrapping_sub(self.idle_since) >= IDLE_TICKS
    }

    /// Parks this idle client. `None` when its task is done with it (parked, or
    /// lost on the way); the session back when it cannot be parked (TLS, LISTEN,
    /// parking off or closed, its tenant stopping).
    pub(super) fn park(mut self) -> Option<Session> {
        if !self.parkable() {
            return Some(self);
        }
        let Some(parking) = self.app.parking().cloned() else {
            return Some(self);
        };
        // The idle timer cannot stay: it would hold this task's waker, and the task
        // with it. The parking place keeps its deadline instead.
        let deadline = self.tenant.client_idle_timeout.map(|limit| {
            self.idle_sleep
                .take()
                .map_or_else(|| Instant::now() + limit, |sleep| sleep.deadline())
        });
        self.stop.unwatch();
        self.kill.unwatch();
        let (bare, stream) = self.with_stream(());
        let socket = match stream.into_bare() {
            Ok(Ok(socket)) => socket,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot park a client; its socket is lost");
                bare.leave();
                return None;
            }
            Err(tls) => return Some(bare.with_stream(tls).0),
        };
        let back = parking.park(bare.with_stream(socket).0, deadline)?;
        let (mut bare, socket) = back.with_stream(());
        bare.idle_sleep = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        match socket.into_stream() {
            Ok(stream) => Some(bare.with_stream(stream).0),
            Err(e) => {
                tracing::warn!(error = %e, "cannot take a client back into the runtime; closing it");
                bare.leave();
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_slot_is_reused_under_a_new_token() {
        let mut lot: Lot<&str> = Lot::default();
        let (a, ga) = lot.insert("a");
        let (b, _) = lot.insert("b");
        let old = token_of(a, ga);
        assert_eq!(lot.take_token(old), Some("a"));
        assert_eq!(lot.take_token(old), None, "taken twice");
        let (c, gc) = lot.insert("c");
        assert_eq!(c, a, "the free slot is reused");
        assert_ne!(token_of(c, gc), old);
        assert_eq!(lot.take_token(old), None, "a stale token finds nothing");
        assert_eq!(lot.parked, 2);
        assert_eq!(lot.take(b), Some("b"));
        assert_eq!(lot.take_token(token_of(c, gc)), Some("c"));
        assert_eq!(lot.parked, 0);
    }

    #[test]
    fn the_table_gives_back_its_top_when_a_crowd_leaves() {
        let mut lot: Lot<u32> = Lot::default();
        let tokens: Vec<usize> = (0..20_000u32)
            .map(|i| {
                let (index, generation) = lot.insert(i);
                token_of(index, generation)
            })
            .collect();
        assert_eq!(lot.slots.len(), 20_000);
        // Everyone leaves but the first and one in the middle.
        for (i, token) in tokens.iter().enumerate() {
            if i != 0 && i != 5_000 {
                assert_eq!(lot.take_token(*token), Some(i as u32));
            }
        }
        assert_eq!(lot.parked, 2);
        assert_eq!(lot.slots.len(), 5_001, "the empty top is cut off");
        assert!(lot.slots.capacity() <= 4 * 5_001 + SLOTS_KEPT);
        assert!(lot.free.len() <= 2 * (5_001 - 2) + SLOTS_KEPT);
        // New clients fill the lowest free slots.
        let (index, _) = lot.insert(7);
        assert_eq!(index, 1);
        assert_eq!(lot.take(index), Some(7));
        // The middle one leaves: all but slot 0 is cut off.
        assert_eq!(lot.take_token(tokens[5_000]), Some(5_000));
        assert_eq!(lot.slots.len(), 1);
        assert!(lot.slots.capacity() <= 4 + SLOTS_KEPT);
        // One slot left, holding a client: no empty slot to list.
        assert!(lot.free.len() <= SLOTS_KEPT + 1);
        // A slot made anew never takes a token of the one cut off before it.
        let (again, generation) = lot.insert(9);
        assert_eq!(again, 1);
        assert!(!tokens.contains(&token_of(again, generation)));
        assert_eq!(lot.take_token(tokens[1]), None);
        // Stale free entries (slots 2.. were cut off) never hand out a slot
        // that holds a client: fill slots made anew, then more.
        let later: Vec<(u32, u32)> = (0..100).map(|i| lot.insert(100 + i)).collect();
        let mut indexes: Vec<u32> = later.iter().map(|(index, _)| *index).collect();
        indexes.sort_unstable();
        indexes.dedup();
        assert_eq!(indexes.len(), 100, "two clients in one slot");
        assert_eq!(lot.parked, 102);
        for (i, (index, generation)) in later.into_iter().enumerate() {
            assert_eq!(
                lot.take_token(token_of(index, generation)),
                Some(100 + i as u32)
            );
        }
        assert_eq!(lot.take_token(token_of(again, generation)), Some(9));
        assert_eq!(lot.take_token(tokens[0]), Some(0));
        assert!(lot.slots.is_empty());
        assert_eq!(lot.parked, 0);
    }

    #[tokio::test]
    async fn deadlines_stay_bounded_by_the_parked_clients() {
        let mut lot: Lot<u32> = Lot::default();
        let now = Instant::now();
        let (kept, gen) = lot.insert(0);
        let kept = token_of(kept, gen);
        assert!(lot.push_deadline(now + Duration::from_secs(3600), kept));
        // A client that parks and wakes again and again, with an hour-long timeout.
        for i in 0..10_000u32 {
            let (index, generation) = lot.insert(i);
            let token = token_of(index, generation);
            lot.push_deadline(now + Duration::from_secs(3600), token);
            assert_eq!(lot.take_token(token), Some(i));
        }
        assert!(lot.deadlines.len() <= 2 * lot.parked + 64 + 1);
        assert!(lot.deadlines.iter().any(|Reverse((_, t))| *t == kept));
        // An earlier deadline is reported as the earliest.
        let (index, generation) = lot.insert(7);
        assert!(lot.push_deadline(now + Duration::from_secs(1), token_of(index, generation)));
    }
}
