//! Relay buffers lent per transaction, not owned per client: an idle client holds no
//! buffer at all. Each worker thread keeps a short free list, so taking and returning
//! a buffer is neither an allocation nor a lock in the steady state.

use std::cell::RefCell;

/// Size of one relay buffer (one per direction of a busy client).
pub const RELAY_BUF_SIZE: usize = 16 * 1024;
/// Buffers a worker keeps for reuse; beyond this they are freed.
const KEEP_PER_THREAD: usize = 256;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A relay buffer, returned to its worker's free list when dropped.
pub struct RelayBuf(Option<Box<[u8]>>);

impl RelayBuf {
    pub fn take() -> Self {
        let reused = FREE.with(|f| f.borrow_mut().pop());
        Self(Some(reused.unwrap_or_else(|| {
            vec![0u8; RELAY_BUF_SIZE].into_boxed_slice()
        })))
    }

    pub fn as_slice(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or(&mut [])
    }
}

impl Drop for RelayBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.0.take() {
            // `try_with`: during thread teardown the free list may already be gone.
            let _ = FREE.try_with(|f| {
                let mut f = f.borrow_mut();
                if f.len() < KEEP_PER_THREAD {
                    f.push(buf);
                }
            });
        }
    }
}
