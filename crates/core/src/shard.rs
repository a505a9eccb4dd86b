//! Shards: one single-threaded runtime per core, each with its own reactor, that
//! client sessions are spread over. A client's socket, its task and (as a rule)
//! the server connection it borrows all live on one thread, so a transaction
//! never wakes another thread, and no task is ever stolen between threads.
//!
//! The process's other work (accepting, the management API, the metadata store,
//! signals) runs on the main thread's runtime. A server connection remembers the
//! shard whose reactor watches its socket ([`current`] when it was opened); the
//! pool lends a client one of its own shard's first, and moves a plain socket
//! from another shard's reactor to its own when it has to take another's.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The shard number of a thread that is not a shard (the main thread, tests).
pub const NO_SHARD: u32 = u32::MAX;

thread_local! {
    static CURRENT: Cell<u32> = const { Cell::new(NO_SHARD) };
}

/// The shard this thread runs, or [`NO_SHARD`].
pub fn current() -> u32 {
    CURRENT.with(Cell::get)
}

/// One shard as the others see it: where to spawn onto it and how busy it is.
struct Shard {
    handle: Handle,
    /// Client tasks running on it now (parked clients have none).
    clients: Arc<AtomicU32>,
}

/// The shards of a process, for spawning client tasks onto.
pub struct Shards {
    shards: Box<[Shard]>,
    /// Breaks ties between equally busy shards, in turn.
    next: AtomicUsize,
}

/// The shards' threads; [`Threads::stop`] ends them.
pub struct Threads {
    stop: CancellationToken,
    threads: Vec<JoinHandle<()>>,
}

impl Shards {
    /// Starts `count` threads, each running its own single-threaded runtime until
    /// [`Threads::stop`].
    pub fn start(count: usize) -> std::io::Result<(Arc<Shards>, Threads)> {
        let stop = CancellationToken::new();
        let mut shards = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            shards.push(Shard {
                handle: runtime.handle().clone(),
                clients: Arc::new(AtomicU32::new(0)),
            });
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("tidepool-shard-{index}"))
                .spawn(move || {
                    CURRENT.with(|c| c.set(index as u32));
                    runtime.block_on(stop.cancelled());
                    // Clients still here were given their chance to leave; what
                    // remains is dropped with the runtime.
                    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
                })?;
            threads.push(thread);
        }
        let shards = Arc::new(Shards {
            shards: shards.into_boxed_slice(),
            next: AtomicUsize::new(0),
        });
        Ok((shards, Threads { stop, threads }))
    }

    /// How many shards there are.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Always false: a process has at least one shard.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The shard with the fewest client tasks (in turn among equals), with its count.
    fn least_busy(&self) -> (usize, u32) {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.shards.len();
        let mut best = start % n;
        let mut least = self.shards[best].clients.load(Ordering::Relaxed);
        for k in 1..n {
            let i = (start + k) % n;
            let clients = self.shards[i].clients.load(Ordering::Relaxed);
            if clients < least {
                best = i;
                least = clients;
            }
        }
        (best, least)
    }

    /// Where a new client task goes: the shard of this thread while it is not
    /// much busier than the least busy one (a task spawned here wakes no other
    /// thread, and its socket needs no move to another reactor), else the least
    /// busy shard.
    pub fn pick(&self) -> usize {
        let (least, count) = self.least_busy();
        let here = current() as usize;
        match self.shards.get(here) {
            Some(shard) if shard.clients.load(Ordering::Relaxed) <= count + (count / 8).max(2) => {
                here
            }
            _ => least,
        }
    }

    /// Runs a client's task on shard `index` (from [`Self::pick`]), tracked by
    /// `tasks` and counted as that shard's while it runs.
    pub fn spawn_client_on<F>(&self, index: usize, tasks: &TaskTracker, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let shard = &self.shards[index % self.shards.len()];
        shard.clients.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(shard.clients.clone());
        shard.handle.spawn(tasks.track_future(async move {
            let _counted = counted;
            task.await;
        }));
    }

    /// Runs `task` on every shard, tracked by `tasks` (each gets its own copy).
    pub fn spawn_on_each<F>(&self, tasks: &TaskTracker, mut task: impl FnMut() -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        for shard in self.shards.iter() {
            shard.handle.spawn(tasks.track_future(task()));
        }
    }
}

/// Counts a client task on its shard while it lives.
struct Counted(Arc<AtomicU32>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Threads {
    /// Ends the shards' runtimes (dropping any task still on them) and waits for
    /// their threads.
    pub fn stop(self) {
        self.stop.cancel();
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}
