//! One direction of a relay: bytes read and not yet written, as a borrowed raw
//! buffer (forwarded untouched) followed by an owned buffer of bytes the pooler
//! rewrote or added.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use pgwire::MessageScanner;
use tokio::io::AsyncWrite;

use crate::bufpool::RelayBuf;
use crate::stream::Stream;

pub(super) struct Leg {
    pub buf: RelayBuf,
    /// Untouched bytes `buf[start..end]` still to write.
    pub start: usize,
    pub end: usize,
    /// Rewritten or added bytes, written after the untouched ones.
    pub out: BytesMut,
    out_pos: usize,
    needs_flush: bool,
    pub scanner: MessageScanner,
    /// Bytes read from the source so far (for metrics).
    pub total_read: u64,
}

impl Leg {
    pub fn new(max_message: usize) -> Self {
        Self {
            buf: RelayBuf::take(),
            start: 0,
            end: 0,
            out: BytesMut::new(),
            out_pos: 0,
            needs_flush: false,
            scanner: MessageScanner::new(max_message),
            total_read: 0,
        }
    }

    /// Empties this leg in place for another transaction, keeping its buffers.
    /// Every field is named (no `..`), so a field added later must be reset here.
    pub fn reset(&mut self, max_message: usize) {
        let Self {
            buf,
            start,
            end,
            out,
            out_pos,
            needs_flush,
            scanner,
            total_read,
        } = self;
        buf.clear();
        *start = 0;
        *end = 0;
        super::recycle_bytes(out);
        *out_pos = 0;
        *needs_flush = false;
        *scanner = MessageScanner::new(max_message);
        *total_read = 0;
    }

    pub fn is_drained(&self) -> bool {
        self.start == self.end && self.out_pos == self.out.len() && !self.needs_flush
    }

    /// True when the pooler wrote bytes of its own to this leg.
    pub fn has_out(&self) -> bool {
        !self.out.is_empty()
    }

    /// Puts `bytes` in this empty leg as if just read from its source.
    pub fn refill(&mut self, bytes: &[u8]) {
        self.buf.clear();
        self.buf.bytes_mut().extend_from_slice(bytes);
        self.filled(bytes.len());
    }

    /// Notes that the buffer now holds `n` bytes read from the source, all still
    /// to forward.
    fn filled(&mut self, n: usize) {
        self.start = 0;
        self.end = n;
        self.total_read += n as u64;
    }

    pub fn has_raw(&self) -> bool {
        self.start < self.end
    }

    /// Drops the untouched bytes (they were consumed into `out` or elsewhere).
    pub fn consume_raw(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    fn poll_write_all(
        to: &mut Stream,
        cx: &mut Context<'_>,
        bytes: &[u8],
        pos: &mut usize,
        needs_flush: &mut bool,
    ) -> Poll<io::Result<()>> {
        while *pos < bytes.len() {
            match Pin::new(&mut *to).poll_write(cx, &bytes[*pos..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    *pos += n;
                    *needs_flush = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Writes everything buffered to `to`, then flushes it.
    pub fn poll_drain(&mut self, to: &mut Stream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let raw = &self.buf.as_slice()[..self.end];
        match Self::poll_write_all(to, cx, raw, &mut self.start, &mut self.needs_flush) {
            Poll::Ready(Ok(())) => self.consume_raw(),
            other => return other,
        }
        match Self::poll_write_all(to, cx, &self.out, &mut self.out_pos, &mut self.needs_flush) {
            Poll::Ready(Ok(())) => {
                self.out.clear();
                self.out_pos = 0;
            }
            other => return other,
        }
        if self.needs_flush {
            match Pin::new(&mut *to).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads what `from` has into the (drained) raw buffer; returns the byte count, 0
    /// at end of stream.
    pub fn poll_fill(
        &mut self,
        from: &mut Stream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        self.buf.clear();
        match tokio_util::io::poll_read_buf(Pin::new(from), cx, self.buf.bytes_mut()) {
            Poll::Ready(Ok(n)) => {
                self.filled(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}
