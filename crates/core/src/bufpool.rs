//! Relay buffers lent per transaction, not owned per client: an idle client holds no
//! buffer at all. Each worker thread keeps a short free list, so taking and returning
//! a buffer is neither an allocation nor a lock in the steady state; a buffer is
//! never zeroed (reads fill it from the socket), so a miss costs one `malloc`.

use std::cell::RefCell;

use bytes::BytesMut;

/// Size of one relay buffer (one per direction of a busy client).
pub const RELAY_BUF_SIZE: usize = 16 * 1024;
/// Buffers a worker keeps for reuse; beyond this they are freed.
const KEEP_PER_THREAD: usize = 256;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A relay buffer (empty, with [`RELAY_BUF_SIZE`] bytes of room), returned to its
/// worker's free list when dropped.
pub struct RelayBuf(BytesMut);

/// An empty stand-in with no room, never returned to the free list.
impl Default for RelayBuf {
    fn default() -> Self {
        Self(BytesMut::new())
    }
}

impl RelayBuf {
    pub fn take() -> Self {
        let reused = FREE.with(|f| f.borrow_mut().pop());
        Self(reused.unwrap_or_else(|| BytesMut::with_capacity(RELAY_BUF_SIZE)))
    }

    /// The bytes read since the last [`Self::clear`].
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// The buffer itself, to read into its free room.
    pub fn bytes_mut(&mut self) -> &mut BytesMut {
        &mut self.0
    }
}

impl Drop for RelayBuf {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        // A buffer that grew or was split is not the pool's shape any more.
        if buf.capacity() != RELAY_BUF_SIZE {
            return;
        }
        buf.clear();
        // `try_with`: during thread teardown the free list may already be gone.
        let _ = FREE.try_with(|f| {
            let mut f = f.borrow_mut();
            if f.len() < KEEP_PER_THREAD {
                f.push(buf);
            }
        });
    }
}
