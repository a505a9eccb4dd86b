//! Reading whole messages during the handshakes (client login, server login), where
//! the pooler must see complete messages. Lengths are bounded before buffering.

use bytes::{Buf, BytesMut};
use pgwire::frame::decode_frame;
use pgwire::startup::{decode_startup, StartupPacket};
use pgwire::WireError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a handshake read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Largest message accepted during a handshake (passwords, SASL, parameter status).
pub const MAX_HANDSHAKE_MESSAGE: usize = 64 * 1024;

/// Reads one tagged message; returns its tag and body. `buf` keeps any bytes after it.
pub async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max_len: usize,
) -> Result<(u8, BytesMut), ReadError> {
    loop {
        if let Some(frame) = decode_frame(buf, max_len)? {
            let tag = frame.tag;
            let len = frame.wire_len();
            let mut msg = buf.split_to(len);
            msg.advance(5);
            return Ok((tag, msg));
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(ReadError::Closed);
        }
    }
}

/// Reads one startup-phase packet (bounded by the protocol's startup limit).
pub async fn read_startup<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<StartupPacket, ReadError> {
    loop {
        if let Some((packet, used)) = decode_startup(buf)? {
            buf.advance(used);
            return Ok(packet);
        }
        buf.reserve(1024);
        if stream.read_buf(buf).await? == 0 {
            return Err(ReadError::Closed);
        }
    }
}

/// Writes all of `out` and flushes it, then clears it.
pub async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut BytesMut,
) -> std::io::Result<()> {
    stream.write_all(out).await?;
    stream.flush().await?;
    out.clear();
    Ok(())
}
