//! One client connection: read a frame, run it, write the answer, in order (one request at a
//! time per connection, as Kafka brokers do). A frame that cannot be served closes this
//! connection with a log line saying why; other connections carry on.

use std::os::fd::AsRawFd;
use std::rc::Rc;

use bytes::BytesMut;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::handlers::{dispatch, Outcome};
use crate::Shard;

/// Smallest valid request: api key, version, correlation id.
const MIN_FRAME: i32 = 8;

enum ReadEnd {
    /// The client closed between requests.
    Clean,
    Truncated {
        got: usize,
        wanted: usize,
    },
    Io(std::io::Error),
}

async fn read_full(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(), ReadEnd> {
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]).await {
            Ok(0) if got == 0 => return Err(ReadEnd::Clean),
            Ok(0) => {
                return Err(ReadEnd::Truncated {
                    got,
                    wanted: buf.len(),
                })
            }
            Ok(n) => got += n,
            Err(e) => return Err(ReadEnd::Io(e)),
        }
    }
    Ok(())
}

fn set_cork(stream: &TcpStream, on: bool) {
    let v: libc::c_int = i32::from(on);
    // SAFETY: a valid socket descriptor and a c_int option value of the right size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

pub async fn serve_connection(shard: Rc<Shard>, mut stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
    let max = shard.cluster.config.max_request_bytes;
    tracing::debug!(shard = shard.id, peer = %peer, "connection opened");
    loop {
        let mut size = [0u8; 4];
        match read_full(&mut stream, &mut size).await {
            Ok(()) => {}
            Err(ReadEnd::Clean) => break,
            Err(ReadEnd::Truncated { got, .. }) => {
                tracing::warn!(peer = %peer, "connection closed mid size prefix ({got} of 4 bytes)");
                break;
            }
            Err(ReadEnd::Io(e)) => {
                tracing::debug!(peer = %peer, "read failed: {e}");
                break;
            }
        }
        let n = i32::from_be_bytes(size);
        if n < MIN_FRAME {
            tracing::warn!(peer = %peer, size = n, "closing connection: request size {n} is below the minimum of {MIN_FRAME} bytes");
            break;
        }
        if n as usize > max {
            tracing::warn!(peer = %peer, size = n, max_request_bytes = max, "closing connection: request of {n} bytes is over max_request_bytes ({max})");
            break;
        }
        let mut frame = BytesMut::zeroed(n as usize);
        match read_full(&mut stream, &mut frame).await {
            Ok(()) => {}
            Err(ReadEnd::Clean) => {
                tracing::warn!(peer = %peer, "closing connection: truncated request (0 of {n} bytes arrived)");
                break;
            }
            Err(ReadEnd::Truncated { got, wanted }) => {
                tracing::warn!(peer = %peer, "closing connection: truncated request ({got} of {wanted} bytes arrived)");
                break;
            }
            Err(ReadEnd::Io(e)) => {
                tracing::debug!(peer = %peer, "read failed: {e}");
                break;
            }
        }
        match dispatch(&shard, frame.freeze(), &peer).await {
            Outcome::Respond(chunks) => {
                let corked = chunks.len() > 1;
                if corked {
                    set_cork(&stream, true);
                }
                let mut result = Ok(());
                for c in &chunks {
                    result = stream.write_all(c).await;
                    if result.is_err() {
                        break;
                    }
                }
                if corked {
                    set_cork(&stream, false);
                }
                if let Err(e) = result {
                    tracing::debug!(peer = %peer, "write failed: {e}");
                    break;
                }
            }
            Outcome::Silent => {}
            Outcome::Close(reason) => {
                tracing::warn!(peer = %peer, "closing connection: {reason}");
                break;
            }
        }
    }
    tracing::debug!(shard = shard.id, peer = %peer, "connection closed");
}
