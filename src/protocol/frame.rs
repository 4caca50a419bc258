//! Framing: a 4-byte big-endian length, then a MessagePack body.
//!
//! The length is checked against a limit *before* anything is allocated, so
//! a peer that announces a huge frame costs us four bytes, not gigabytes.
//! Bodies are encoded with structs as maps (`to_vec_named`) so that fields
//! can be added without breaking older peers.

use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted before the handshake is done: a Hello is tiny,
/// so anything bigger is a peer that is not speaking our protocol.
pub const MAX_HANDSHAKE_FRAME: usize = 64 * 1024;

/// Largest frame accepted after the handshake.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection cleanly between two frames.
    #[error("connection closed")]
    Closed,
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame ({got} of {want} bytes)")]
    Truncated {
        /// Bytes of the frame (length prefix included) that arrived.
        got: usize,
        /// Bytes the frame should have had.
        want: usize,
    },
    /// The announced length is over the limit in force.
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The body is not a valid message of the expected kind.
    #[error("malformed message: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// The message could not be encoded (a bug, not a peer's fault).
    #[error("cannot encode message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// True when the peer simply went away; not worth a warning in the log.
    pub fn is_disconnect(&self) -> bool {
        match self {
            FrameError::Closed | FrameError::Truncated { .. } => true,
            FrameError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}

/// Encode one message as a complete frame (prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; 4];
    rmp_serde::encode::write_named(&mut buf, msg)?;
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// Decode a frame body. Trailing bytes after the message are refused:
/// rmp-serde would silently ignore them, and a frame must be one message.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let mut rest = body;
    let msg = rmp_serde::from_read(&mut rest)?;
    if !rest.is_empty() {
        return Err(FrameError::Decode(rmp_serde::decode::Error::Syntax(
            format!("{} unexpected bytes after the message", rest.len()),
        )));
    }
    Ok(msg)
}

/// Read one frame body of at most `max` bytes.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = reader.read(&mut prefix[got..]).await?;
        if n == 0 {
            return Err(if got == 0 {
                FrameError::Closed
            } else {
                FrameError::Truncated { got, want: 4 }
            });
        }
        got += n;
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let n = reader.read(&mut body[filled..]).await?;
        if n == 0 {
            return Err(FrameError::Truncated {
                got: 4 + filled,
                want: 4 + len,
            });
        }
        filled += n;
    }
    Ok(body)
}

/// Read and decode one message.
pub async fn read_msg<R: AsyncRead + Unpin, T: DeserializeOwned>(
    reader: &mut R,
    max: usize,
) -> Result<T, FrameError> {
    let body = read_frame(reader, max).await?;
    decode(&body)
}

/// Encode and write one message, flushing it.
pub async fn write_msg<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    let frame = encode(msg)?;
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}
