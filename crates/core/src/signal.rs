//! One-shot signals that thousands of client tasks watch for their whole life at
//! no cost per wait: a client enters its task's waker once, and from then on
//! watching is one atomic load per poll. Firing wakes every watcher and fires the
//! signal's children (a tenant's signals are children of the process's).
//!
//! This replaces a `CancellationToken` future per wait, whose registration and
//! removal took the token's lock at every transaction of every client and whose
//! waiter sat in each idle client's future.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

/// A signal that fires once.
#[derive(Default)]
pub struct Beacon {
    fired: AtomicBool,
    state: Mutex<Watchers>,
}

#[derive(Default)]
struct Watchers {
    /// Registered wakers; `None` where a watcher left.
    wakers: Vec<Option<Entered>>,
    /// Free places in `wakers`.
    free: Vec<u32>,
    children: Vec<Weak<Beacon>>,
    /// Length of `children` after the last sweep of dropped ones.
    swept: usize,
}

/// A watcher's waker, and whether [`Beacon::nudge`] wakes it.
struct Entered {
    waker: Waker,
    nudge: bool,
}

impl Beacon {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Watchers> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new signal that fires when this one does (at once if it has).
    pub fn child(&self) -> Arc<Self> {
        let child = Self::new();
        let mut state = self.lock();
        if self.fired.load(Ordering::SeqCst) {
            child.fired.store(true, Ordering::SeqCst);
            return child;
        }
        if state.children.len() >= 2 * state.swept.max(8) {
            state.children.retain(|c| c.strong_count() > 0);
            state.swept = state.children.len();
        }
        state.children.push(Arc::downgrade(&child));
        child
    }

    pub fn is_fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Fires this signal and its children, waking every watcher.
    pub fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        let (wakers, children) = {
            let mut state = self.lock();
            state.free.clear();
            (
                std::mem::take(&mut state.wakers),
                std::mem::take(&mut state.children),
            )
        };
        for entered in wakers.into_iter().flatten() {
            entered.waker.wake();
        }
        for child in children {
            if let Some(child) = child.upgrade() {
                child.fire();
            }
        }
    }

    /// Wakes the watchers that asked for it ([`Watch::nudged`]) without firing,
    /// this signal's and its children's (the parking clock uses it to have idle
    /// clients that may park look at the time; other watchers sleep on).
    pub fn nudge(&self) {
        let children = {
            let state = self.lock();
            for entered in state.wakers.iter().flatten() {
                if entered.nudge {
                    entered.waker.wake_by_ref();
                }
            }
            state.children.clone()
        };
        for child in children {
            if let Some(child) = child.upgrade() {
                child.nudge();
            }
        }
    }

    /// Enters `waker`; returns its place, or `None` if the signal has fired.
    fn enter(&self, waker: &Waker, nudge: bool) -> Option<u32> {
        let mut state = self.lock();
        // Checked under the lock: `fire` sets the flag before taking the lock, so
        // either it sees this waker or this sees the flag.
        if self.fired.load(Ordering::SeqCst) {
            return None;
        }
        let waker = Some(Entered {
            waker: waker.clone(),
            nudge,
        });
        match state.free.pop() {
            Some(place) => {
                if let Some(slot) = state.wakers.get_mut(place as usize) {
                    *slot = waker;
                }
                Some(place)
            }
            None => {
                state.wakers.push(waker);
                Some(state.wakers.len() as u32 - 1)
            }
        }
    }

    /// Replaces the waker at `place` (the watcher moved to another task).
    fn replace(&self, place: u32, waker: &Waker) {
        let mut state = self.lock();
        if let Some(Some(entered)) = state.wakers.get_mut(place as usize) {
            entered.waker.clone_from(waker);
        }
    }

    fn leave(&self, place: u32) {
        let mut state = self.lock();
        if let Some(slot) = state.wakers.get_mut(place as usize) {
            *slot = None;
            state.free.push(place);
        }
    }
}

/// No place taken in a beacon.
const NO_PLACE: u32 = u32::MAX;

/// One task's watch on a beacon: enters the task's waker at the first poll, keeps
/// it there until dropped, and re-enters only if polled with another waker.
pub struct Watch {
    beacon: Arc<Beacon>,
    place: u32,
    /// Whether [`Beacon::nudge`] wakes this watcher, not only firing.
    nudge: bool,
    /// The data pointer of the waker entered, to tell another waker without the
    /// lock (kept as a number: it is only compared).
    waker_data: usize,
}

impl Watch {
    /// A watch woken only when the beacon fires.
    pub fn new(beacon: Arc<Beacon>) -> Self {
        Self {
            beacon,
            place: NO_PLACE,
            nudge: false,
            waker_data: 0,
        }
    }

    /// A watch also woken by every [`Beacon::nudge`] (an idle client that may be
    /// parked, which must look at the parking clock).
    pub fn nudged(beacon: Arc<Beacon>) -> Self {
        let mut watch = Self::new(beacon);
        watch.nudge = true;
        watch
    }

    pub fn is_fired(&self) -> bool {
        self.beacon.is_fired()
    }

    /// Ready once the beacon has fired; otherwise makes sure this task is woken
    /// when it does.
    pub fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.beacon.is_fired() {
            return Poll::Ready(());
        }
        let data = cx.waker().data() as usize;
        if self.place == NO_PLACE {
            match self.beacon.enter(cx.waker(), self.nudge) {
                Some(place) => self.place = place,
                None => return Poll::Ready(()),
            }
        } else if data != self.waker_data {
            self.beacon.replace(self.place, cx.waker());
        }
        self.waker_data = data;
        Poll::Pending
    }

    /// Takes this watch's waker out of the beacon (the task is about to end while
    /// the watch lives on); the next poll enters a waker again.
    pub fn unwatch(&mut self) {
        if self.place != NO_PLACE {
            self.beacon.leave(self.place);
            self.place = NO_PLACE;
        }
    }

    /// The beacon watched.
    pub fn beacon(&self) -> &Arc<Beacon> {
        &self.beacon
    }

    /// Waits until the beacon fires.
    pub async fn fired(&mut self) {
        std::future::poll_fn(|cx| self.poll_fired(cx)).await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.unwatch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_watcher_wakes_when_its_beacon_or_an_ancestor_fires() {
        let root = Beacon::new();
        let tenant = root.child();
        let mut watch = Watch::new(tenant.clone());
        let waiting = tokio::spawn(async move {
            watch.fired().await;
            watch
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        root.fire();
        let watch = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("task");
        assert!(watch.is_fired() && tenant.is_fired());
        // A child made after the parent fired starts fired.
        assert!(root.child().is_fired());
    }

    #[tokio::test]
    async fn many_waits_take_one_place_and_leaving_frees_it() {
        let beacon = Beacon::new();
        {
            let mut watch = Watch::new(beacon.clone());
            for _ in 0..100 {
                let _ = tokio::time::timeout(Duration::from_millis(1), watch.fired()).await;
            }
            assert_eq!(beacon.lock().wakers.iter().flatten().count(), 1);
        }
        assert_eq!(beacon.lock().wakers.iter().flatten().count(), 0);
        assert_eq!(beacon.lock().free.len(), 1);
        let mut second = Watch::new(beacon.clone());
        let _ = tokio::time::timeout(Duration::from_millis(1), second.fired()).await;
        assert_eq!(beacon.lock().wakers.len(), 1, "the free place was reused");
    }

    /// Counts its wakes.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Wakes>, Waker) {
        let wakes = Arc::new(Wakes(0.into()));
        (wakes.clone(), Waker::from(wakes))
    }

    #[test]
    fn a_nudge_wakes_only_nudged_watchers_and_fires_nothing() {
        let root = Beacon::new();
        let tenant = root.child();
        let (quiet_wakes, quiet_waker) = counter();
        let (nudged_wakes, nudged_waker) = counter();
        let mut quiet = Watch::new(tenant.clone());
        let mut nudged = Watch::nudged(tenant.clone());
        assert!(quiet
            .poll_fired(&mut Context::from_waker(&quiet_waker))
            .is_pending());
        assert!(nudged
            .poll_fired(&mut Context::from_waker(&nudged_waker))
            .is_pending());
        root.nudge();
        root.nudge();
        assert_eq!(
            nudged_wakes.0.load(Ordering::SeqCst),
            2,
            "nudged through the child"
        );
        assert_eq!(quiet_wakes.0.load(Ordering::SeqCst), 0);
        assert!(!tenant.is_fired());
        // A watcher that moves to another task keeps its choice.
        let (moved_wakes, moved_waker) = counter();
        assert!(nudged
            .poll_fired(&mut Context::from_waker(&moved_waker))
            .is_pending());
        root.nudge();
        assert_eq!(moved_wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(nudged_wakes.0.load(Ordering::SeqCst), 2);
        // Firing wakes both.
        root.fire();
        assert_eq!(quiet_wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(moved_wakes.0.load(Ordering::SeqCst), 2);
        assert!(quiet
            .poll_fired(&mut Context::from_waker(&quiet_waker))
            .is_ready());
    }

    #[test]
    fn dropped_children_are_swept() {
        let root = Beacon::new();
        for _ in 0..1000 {
            drop(root.child());
        }
        assert!(root.lock().children.len() <= 16);
    }
}
