//! Reading requests off a connection: the size prefix, then the frame straight into
//! uninitialised memory.
//!
//! A produce request carries up to a megabyte of records, and the batch cache keeps the very
//! buffer it arrived in, so every frame needs a fresh buffer. Zeroing it before the socket
//! read overwrites it cost about a fifth of a shard's CPU at 1.2 GB/s of produce (memset in
//! the profile), and a client that claimed a large frame and sent nothing made the broker
//! touch all of it. Here the bytes go from the socket into the buffer's spare capacity with
//! `recv(MSG_DONTWAIT)`; when the socket holds less than the rest of the frame, the read goes
//! through the stream for one byte, so glommio's ring does the waiting. (Asking the socket
//! again first, to find it empty, cost more than the zeroing saved: acks=all, alternating
//! runs, 743/844/881 MB/s against 787/980/1046 zeroed; waiting at once, 1042/910/1202 against
//! 963/882/1214.)

use std::io;
use std::os::fd::RawFd;

use bytes::BytesMut;
use futures_lite::io::{AsyncRead, AsyncReadExt};

/// Why a read stopped short.
pub enum ReadEnd {
    /// The client closed between requests.
    Clean,
    Truncated {
        got: usize,
        wanted: usize,
    },
    Io(io::Error),
}

fn ended(got: usize, wanted: usize) -> ReadEnd {
    if got == 0 {
        ReadEnd::Clean
    } else {
        ReadEnd::Truncated { got, wanted }
    }
}

/// Fills `buf` from the stream.
pub async fn read_full<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut [u8],
) -> Result<(), ReadEnd> {
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]).await {
            Ok(0) => return Err(ended(got, buf.len())),
            Ok(n) => got += n,
            Err(e) => return Err(ReadEnd::Io(e)),
        }
    }
    Ok(())
}

/// What a frame's buffer reserves before any of it arrives; a larger frame's buffer doubles as
/// its bytes come. Produce requests (a megabyte or a few) fit at once; a client that claims
/// `max_request_bytes` and sends nothing holds this much, not the claim.
const FIRST_FRAME_CAPACITY: usize = 8 << 20;

/// Reads a frame of `len` bytes. `fd` is the stream's socket; nothing else may read it
/// meanwhile.
pub async fn read_frame<R: AsyncRead + Unpin>(
    stream: &mut R,
    fd: RawFd,
    len: usize,
) -> Result<BytesMut, ReadEnd> {
    let mut frame = BytesMut::with_capacity(len.min(FIRST_FRAME_CAPACITY));
    while frame.len() < len {
        let got = frame.len();
        if frame.capacity() == got {
            // What the client sent fills what was reserved: reserve as much again (up to the
            // frame's size), so memory follows the bytes that arrive, not the size claimed.
            frame.reserve(got.min(len - got));
        }
        let room = frame.capacity().min(len) - got;
        let spare = &mut frame.spare_capacity_mut()[..room];
        // SAFETY: recv writes at most `spare.len()` bytes at the start of the spare capacity
        // and returns how many it wrote; only those become part of the frame.
        let n = unsafe {
            libc::recv(
                fd,
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n > 0 {
            // SAFETY: the `n` bytes after `got` were just written by recv.
            unsafe { frame.set_len(got + n as usize) };
            if frame.len() < len {
                // The socket held less than the frame: wait for more rather than ask again
                // (a recv that finds nothing costs as much as one that finds data).
                wait_for_byte(stream, &mut frame, len).await?;
            }
            continue;
        }
        if n == 0 {
            return Err(ended(got, len));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => wait_for_byte(stream, &mut frame, len).await?,
            _ => return Err(ReadEnd::Io(err)),
        }
    }
    Ok(frame)
}

/// Waits through the stream (glommio's ring) for the next byte of the frame and appends it.
async fn wait_for_byte<R: AsyncRead + Unpin>(
    stream: &mut R,
    frame: &mut BytesMut,
    len: usize,
) -> Result<(), ReadEnd> {
    let mut one = [0u8; 1];
    match stream.read(&mut one).await {
        Ok(0) => Err(ended(frame.len(), len)),
        Ok(_) => {
            frame.extend_from_slice(&one);
            Ok(())
        }
        Err(e) => Err(ReadEnd::Io(e)),
    }
}
