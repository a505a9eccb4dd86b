//! A pool's admission: at most `size` server connections lent at once, and the
//! order in which waiting clients get one. Waiters queue per shard; a permit
//! given back on a shard goes to that shard's first waiter, so a busy pool hands
//! connections between clients of one thread without waking another; a waiter
//! on another shard goes first once it has waited [`SLACK`] longer than the local
//! one, and whenever the local shard has no waiter.
//!
//! A waiter carries its deadline, and [`Admission::expire`] (called by the pool's
//! expiry task when the earliest deadline comes) ends the waits past it. A wait
//! arms no timer of its own: registering one per waiting checkout took the
//! runtime's timer lock twice and often an eventfd write to re-arm the reactor.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::shard;

/// How much longer than the local first waiter a waiter on another shard may
/// wait before a permit given back here goes to it instead.
pub const SLACK: Duration = Duration::from_millis(20);

/// Why no permit was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPermit {
    /// All are lent; wait with [`Admission::acquire`].
    Busy,
    /// The pool is closed.
    Closed,
    /// The wait passed its deadline.
    TimedOut,
}

/// The admission of one pool.
pub struct Admission {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Permits not lent.
    available: usize,
    /// Permits to take out of circulation as they come back (the size shrank).
    debt: usize,
    closed: bool,
    /// Nothing is lent: permits given back are kept, and waiters wait (the
    /// admin console's PAUSE).
    paused: bool,
    /// Permits held now (each a live [`Permit`]): what a PAUSE waits to see
    /// come back, connects and hand-overs in progress included.
    lent: usize,
    /// Waiters by shard: index 0 for threads that are not shards, `n + 1` for
    /// shard `n`.
    queues: Vec<VecDeque<Waiter>>,
    /// Waiters queued (some may have given up since).
    queued: usize,
    /// Waiters queued after the last sweep of those that gave up.
    live_at_sweep: usize,
}

struct Waiter {
    since: Instant,
    deadline: Instant,
    /// Sent to with a permit; dropped unsent when the deadline passed or the pool
    /// closed.
    grant: oneshot::Sender<()>,
}

/// One permit, given back when dropped.
pub struct Permit {
    admission: Arc<Admission>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.give_back(true);
    }
}

fn queue_index(shard: u32) -> usize {
    if shard == shard::NO_SHARD {
        0
    } else {
        shard as usize + 1
    }
}

impl State {
    /// The waiter a permit given back on queue `here` goes to, if any.
    fn next_waiter(&mut self, here: usize) -> Option<Waiter> {
        let mut oldest: Option<(usize, Instant)> = None;
        for (i, queue) in self.queues.iter_mut().enumerate() {
            // Waiters that gave up are dropped as they come to the front.
            while queue.front().is_some_and(|w| w.grant.is_closed()) {
                queue.pop_front();
                self.queued -= 1;
            }
            if let Some(w) = queue.front() {
                if oldest.is_none_or(|(_, since)| w.since < since) {
                    oldest = Some((i, w.since));
                }
            }
        }
        let (oldest, oldest_since) = oldest?;
        let local = self.queues.get(here).and_then(VecDeque::front);
        let pick = match local {
            Some(w) if w.since.saturating_duration_since(oldest_since) < SLACK => here,
            _ => oldest,
        };
        self.queued -= 1;
        self.queues[pick].pop_front()
    }

    /// Drops the waiters that gave up and those `keep` refuses, and recounts.
    fn sweep(&mut self, mut keep: impl FnMut(&Waiter) -> bool) {
        let mut live = 0;
        for queue in &mut self.queues {
            queue.retain(|w| !w.grant.is_closed() && keep(w));
            live += queue.len();
        }
        self.queued = live;
        self.live_at_sweep = live;
    }

    /// Queues a waiter on queue `here`; drops waiters that gave up once they
    /// outnumber the live ones, so the queues stay bounded by the clients
    /// waiting, not by how often they gave up.
    fn push(&mut self, here: usize, waiter: Waiter) {
        if self.queues.len() <= here {
            self.queues.resize_with(here + 1, VecDeque::new);
        }
        if self.queued >= 2 * self.live_at_sweep + 64 {
            self.sweep(|_| true);
        }
        self.queues[here].push_back(waiter);
        self.queued += 1;
    }
}

impl Admission {
    pub fn new(size: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                available: size,
                ..State::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A permit now, without waiting. Waiters keep their turn: none is taken
    /// while any wait.
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, NoPermit> {
        let mut state = self.lock();
        if state.closed {
            return Err(NoPermit::Closed);
        }
        if state.available == 0 || state.paused {
            return Err(NoPermit::Busy);
        }
        state.available -= 1;
        state.lent += 1;
        Ok(Permit {
            admission: self.clone(),
        })
    }

    /// A permit, waiting in this shard's queue for one when all are lent, until
    /// `deadline` (enforced by [`Self::expire`]). `since` is when the wait began.
    /// Cancel-safe: a permit granted to a waiter that is dropped is given back.
    pub async fn acquire(
        self: &Arc<Self>,
        since: Instant,
        deadline: Instant,
    ) -> Result<Permit, NoPermit> {
        let rx = {
            let mut state = self.lock();
            if state.closed {
                return Err(NoPermit::Closed);
            }
            if state.available > 0 && !state.paused {
                state.available -= 1;
                state.lent += 1;
                return Ok(Permit {
                    admission: self.clone(),
                });
            }
            let (grant, rx) = oneshot::channel();
            state.push(
                queue_index(shard::current()),
                Waiter {
                    since,
                    deadline,
                    grant,
                },
            );
            rx
        };
        let mut waiting = Waiting {
            admission: self,
            rx,
        };
        match (&mut waiting.rx).await {
            Ok(()) => {
                // Counted as lent when it was granted.
                waiting.rx.close();
                Ok(Permit {
                    admission: self.clone(),
                })
            }
            // The sender was dropped without a grant: by `close`, which marks the
            // pool closed first, or by `expire`.
            Err(_) if self.is_closed() => Err(NoPermit::Closed),
            Err(_) => Err(NoPermit::TimedOut),
        }
    }

    /// Ends the waits whose deadline is `now` or earlier (they get
    /// [`NoPermit::TimedOut`]) and drops those that gave up. Returns the earliest
    /// deadline of the waits left, if any.
    pub fn expire(&self, now: Instant) -> Option<Instant> {
        let mut state = self.lock();
        if state.queued == 0 {
            return None;
        }
        // Deadlines are in queue order unless the timeout changed, so every waiter
        // is looked at; this runs about once per timeout. A dropped grant ends
        // its wait (a tokio waker only schedules the task).
        let mut earliest: Option<Instant> = None;
        state.sweep(|w| {
            let keep = w.deadline > now;
            if keep && earliest.is_none_or(|e| w.deadline < e) {
                earliest = Some(w.deadline);
            }
            keep
        });
        earliest
    }

    /// Gives a permit back: to a waiter, to the debt, or to the available ones.
    /// `from_holder` when a [`Permit`] is dropped (it was counted as lent).
    fn give_back(&self, from_holder: bool) {
        let here = queue_index(shard::current());
        let mut from_holder = from_holder;
        loop {
            let waiter = {
                let mut state = self.lock();
                if std::mem::take(&mut from_holder) {
                    state.lent = state.lent.saturating_sub(1);
                }
                if state.debt > 0 {
                    state.debt -= 1;
                    return;
                }
                if state.paused {
                    state.available += 1;
                    return;
                }
                match state.next_waiter(here) {
                    Some(w) => {
                        // Lent from the grant on, so that no moment of a
                        // hand-over looks like a pool with nothing lent.
                        state.lent += 1;
                        w
                    }
                    None => {
                        state.available += 1;
                        return;
                    }
                }
            };
            // Outside the lock: waking a task may run code that takes it.
            if waiter.grant.send(()).is_ok() {
                return;
            }
            // It gave up between the look and the grant: the next one (and the
            // grant is not lent after all).
            from_holder = true;
        }
    }

    /// Adds `n` permits (the pool grew), paying off any debt first.
    pub fn add_permits(&self, n: usize) {
        let paid = {
            let mut state = self.lock();
            let paid = n.min(state.debt);
            state.debt -= paid;
            paid
        };
        for _ in paid..n {
            self.give_back(false);
        }
    }

    /// Takes `n` permits out of circulation (the pool shrank): the available
    /// ones now, the rest as they come back.
    pub fn remove_permits(&self, n: usize) {
        let mut state = self.lock();
        let now = n.min(state.available);
        state.available -= now;
        state.debt += n - now;
    }

    /// Lends nothing more until [`Self::resume`]: permits given back are kept,
    /// and checkouts wait (their deadlines still count).
    pub fn pause(&self) {
        self.lock().paused = true;
    }

    /// Lends again: the permits kept go to the waiters.
    pub fn resume(&self) {
        let kept = {
            let mut state = self.lock();
            state.paused = false;
            std::mem::take(&mut state.available)
        };
        for _ in 0..kept {
            self.give_back(false);
        }
    }

    /// Refuses all further permits; waiters get [`NoPermit::Closed`].
    pub fn close(&self) {
        let queues = {
            let mut state = self.lock();
            state.closed = true;
            state.queued = 0;
            std::mem::take(&mut state.queues)
        };
        // Dropping the senders ends every wait.
        drop(queues);
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Permits held now.
    pub fn lent(&self) -> usize {
        self.lock().lent
    }
}

/// A waiter in its queue; dropped before its grant arrived, it leaves the queue
/// (the sender sees it closed), and dropped just after, it gives the grant back.
struct Waiting<'a> {
    admission: &'a Arc<Admission>,
    rx: oneshot::Receiver<()>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.rx.close();
        if let Ok(()) = self.rx.try_recv() {
            // Granted (and so counted as lent) but never held.
            self.admission.give_back(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(state: &mut State, queue: usize, since: Instant) -> oneshot::Receiver<()> {
        let (grant, rx) = oneshot::channel();
        state.push(
            queue,
            Waiter {
                since,
                deadline: since + Duration::from_secs(60),
                grant,
            },
        );
        rx
    }

    #[test]
    fn a_permit_goes_to_the_local_waiter_within_the_slack() {
        let t0 = Instant::now();
        let mut state = State::default();
        let _remote = waiter(&mut state, 2, t0);
        let _local = waiter(&mut state, 1, t0 + SLACK / 2);
        let picked = state.next_waiter(1).unwrap();
        assert_eq!(picked.since, t0 + SLACK / 2, "the local waiter");
        let picked = state.next_waiter(1).unwrap();
        assert_eq!(picked.since, t0, "then the remote one, none being local");
        assert!(state.next_waiter(1).is_none());
        assert_eq!(state.queued, 0);
    }

    #[test]
    fn a_remote_waiter_past_the_slack_goes_first() {
        let t0 = Instant::now();
        let mut state = State::default();
        let _local = waiter(&mut state, 1, t0 + SLACK);
        let _remote = waiter(&mut state, 2, t0);
        assert_eq!(state.next_waiter(1).unwrap().since, t0);
    }

    #[test]
    fn waiters_that_gave_up_are_skipped_and_swept() {
        let t0 = Instant::now();
        let mut state = State::default();
        for i in 0..200u32 {
            drop(waiter(
                &mut state,
                1,
                t0 + Duration::from_micros(u64::from(i)),
            ));
        }
        assert!(state.queued <= 64 + 1, "{} queued", state.queued);
        let live = waiter(&mut state, 1, t0 + Duration::from_secs(1));
        let picked = state.next_waiter(1).unwrap();
        assert_eq!(picked.since, t0 + Duration::from_secs(1));
        drop(live);
        assert!(state.next_waiter(1).is_none());
    }

    /// A wait that ends in a minute.
    fn far() -> (Instant, Instant) {
        let now = Instant::now();
        (now, now + Duration::from_secs(60))
    }

    #[tokio::test]
    async fn permits_are_bounded_given_back_and_handed_on() {
        let admission = Admission::new(2);
        let a = admission.try_acquire().unwrap();
        let _b = admission.try_acquire().unwrap();
        assert_eq!(admission.try_acquire().err(), Some(NoPermit::Busy));
        let waiting = tokio::spawn({
            let admission = admission.clone();
            async move {
                let (since, deadline) = far();
                admission.acquire(since, deadline).await.map(drop)
            }
        });
        tokio::task::yield_now().await;
        drop(a);
        assert_eq!(waiting.await.unwrap(), Ok(()));
        // The waiter's permit came back when it dropped it.
        assert!(admission.try_acquire().is_ok());
    }

    #[tokio::test]
    async fn a_pause_lends_nothing_until_resumed() {
        let admission = Admission::new(2);
        let lent = admission.try_acquire().unwrap();
        admission.pause();
        assert_eq!(admission.try_acquire().err(), Some(NoPermit::Busy));
        let (since, deadline) = far();
        let waiter = tokio::spawn({
            let admission = admission.clone();
            async move { admission.acquire(since, deadline).await.map(drop) }
        });
        tokio::task::yield_now().await;
        // Given back while paused: kept, not handed to the waiter.
        drop(lent);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "a permit was lent while paused");
        admission.resume();
        assert_eq!(waiter.await.unwrap(), Ok(()));
        // Both permits are back in circulation.
        let a = admission.try_acquire().unwrap();
        let b = admission.try_acquire().unwrap();
        assert_eq!(admission.try_acquire().err(), Some(NoPermit::Busy));
        drop((a, b));
    }

    #[tokio::test]
    async fn permits_held_are_counted_through_hand_overs() {
        let admission = Admission::new(1);
        let held = admission.try_acquire().unwrap();
        assert_eq!(admission.lent(), 1);
        let (since, deadline) = far();
        let waiter = tokio::spawn({
            let admission = admission.clone();
            async move {
                let permit = admission.acquire(since, deadline).await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(permit);
            }
        });
        tokio::task::yield_now().await;
        drop(held);
        // Handed over: still one lent, until the waiter lets it go.
        assert_eq!(admission.lent(), 1);
        waiter.await.unwrap();
        assert_eq!(admission.lent(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_loses_no_permit() {
        let admission = Admission::new(1);
        let held = admission.try_acquire().unwrap();
        let (since, deadline) = far();
        let gave_up = tokio::time::timeout(
            Duration::from_millis(10),
            admission.acquire(since, deadline),
        )
        .await;
        assert!(gave_up.is_err());
        drop(held);
        let again = admission.try_acquire();
        assert!(again.is_ok(), "the permit was lost");
    }

    #[tokio::test]
    async fn shrinking_takes_permits_as_they_come_back_and_close_ends_waits() {
        let admission = Admission::new(2);
        let a = admission.try_acquire().unwrap();
        admission.remove_permits(2);
        assert_eq!(admission.try_acquire().err(), Some(NoPermit::Busy));
        drop(a);
        assert_eq!(
            admission.try_acquire().err(),
            Some(NoPermit::Busy),
            "paid the debt"
        );
        admission.add_permits(1);
        let b = admission.try_acquire().unwrap();
        let waiting = tokio::spawn({
            let admission = admission.clone();
            async move {
                let (since, deadline) = far();
                admission.acquire(since, deadline).await.map(drop)
            }
        });
        tokio::task::yield_now().await;
        admission.close();
        assert_eq!(waiting.await.unwrap(), Err(NoPermit::Closed));
        drop(b);
        assert_eq!(admission.try_acquire().err(), Some(NoPermit::Closed));
    }

    #[tokio::test]
    async fn expire_ends_only_the_waits_past_their_deadline() {
        let admission = Admission::new(1);
        let held = admission.try_acquire().unwrap();
        let t0 = Instant::now();
        let wait = |deadline: Instant| {
            let admission = admission.clone();
            tokio::spawn(async move { admission.acquire(t0, deadline).await.map(drop) })
        };
        // Out of deadline order, as after the timeout was shortened.
        let late = wait(t0 + Duration::from_secs(60));
        let soon = wait(t0 + Duration::from_millis(5));
        tokio::task::yield_now().await;
        assert_eq!(
            admission.expire(t0 + Duration::from_millis(4)),
            Some(t0 + Duration::from_millis(5)),
            "the next look is due at the earliest deadline, wherever it is queued"
        );
        tokio::task::yield_now().await;
        assert!(!soon.is_finished(), "expired before its deadline");
        assert_eq!(
            admission.expire(t0 + Duration::from_millis(5)),
            Some(t0 + Duration::from_secs(60))
        );
        assert_eq!(soon.await.unwrap(), Err(NoPermit::TimedOut));
        assert!(!late.is_finished());
        drop(held);
        assert_eq!(
            late.await.unwrap(),
            Ok(()),
            "the permit went to the live waiter"
        );
        assert!(admission.try_acquire().is_ok(), "and came back");
        assert_eq!(admission.lock().queued, 0);
        assert_eq!(admission.expire(t0), None, "no wait, no deadline");
    }
}
