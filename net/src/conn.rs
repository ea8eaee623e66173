//! One client connection: read a frame, run it, write the answers in request order. A
//! Produce may overlap the next requests once its batches are queued in their logs (they have
//! their offsets, in request order): a client with several produce requests in flight keeps
//! the disk busy while the next request arrives. Every other request runs alone, as Kafka
//! brokers run every request, and an idempotent producer's batches are stored before the next
//! request starts. A frame that cannot be served closes this connection with a log line
//! saying why (at a bounded rate: a client repeating a bad request cannot fill the log); other
//! connections carry on.

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use glommio::channels::local_channel;
use glommio::net::TcpStream;

use spate_engine::warn_limited;

use crate::frame_read::{read_frame, read_full, ReadEnd};
use crate::gather_write;
use crate::handlers::{dispatch_ordered, Outcome};
use crate::Shard;

/// Smallest valid request: api key, version, correlation id.
const MIN_FRAME: i32 = 8;

/// Requests of one connection being served or answered at once, at most (Kafka clients send
/// up to 5 by default).
const MAX_IN_FLIGHT: usize = 16;

type Writer = futures_lite::io::WriteHalf<TcpStream>;
/// Told when a request's answer is written (or dropped, the connection being closed).
type Answered = futures_channel::oneshot::Sender<()>;

fn set_cork(fd: std::os::fd::RawFd, on: bool) {
    gather_write::set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_CORK, i32::from(on));
}

pub async fn serve_connection(shard: Rc<Shard>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
    let fd = stream.as_raw_fd();
    tracing::debug!(shard = shard.id, peer = %peer, "connection opened");
    let (mut reader, writer) = futures_lite::io::split(stream);
    let (answers, to_write) = local_channel::new_bounded(MAX_IN_FLIGHT);
    let closed = Rc::new(Cell::new(false));
    let write_task = glommio::spawn_local(write_answers(
        writer,
        to_write,
        fd,
        peer.clone(),
        closed.clone(),
    ));
    let max = shard.cluster.config.max_request_bytes;
    while !closed.get() {
        let mut size = [0u8; 4];
        match read_full(&mut reader, &mut size).await {
            Ok(()) => {}
            Err(ReadEnd::Clean) => break,
            Err(ReadEnd::Truncated { got, .. }) => {
                warn_limited!("truncated request", peer = %peer, "connection closed mid size prefix ({got} of 4 bytes)");
                break;
            }
            Err(ReadEnd::Io(e)) => {
                if !closed.get() {
                    tracing::debug!(peer = %peer, "read failed: {e}");
                }
                break;
            }
        }
        let n = i32::from_be_bytes(size);
        if n < MIN_FRAME {
            warn_limited!("request size", peer = %peer, size = n, "closing connection: request size {n} is below the minimum of {MIN_FRAME} bytes");
            break;
        }
        if n as usize > max {
            warn_limited!("request size", peer = %peer, size = n, max_request_bytes = max, "closing connection: request of {n} bytes is over max_request_bytes ({max})");
            break;
        }
        let frame = match read_frame(&mut reader, fd, n as usize).await {
            Ok(frame) => frame,
            Err(ReadEnd::Clean) => {
                warn_limited!("truncated request", peer = %peer, "closing connection: truncated request (0 of {n} bytes arrived)");
                break;
            }
            Err(ReadEnd::Truncated { got, wanted }) => {
                warn_limited!("truncated request", peer = %peer, "closing connection: truncated request ({got} of {wanted} bytes arrived)");
                break;
            }
            Err(ReadEnd::Io(e)) => {
                tracing::debug!(peer = %peer, "read failed: {e}");
                break;
            }
        };
        let (queued, may_go_on) = futures_channel::oneshot::channel();
        let (written, answered) = futures_channel::oneshot::channel();
        let (s, p) = (shard.clone(), peer.clone());
        let task =
            glommio::spawn_local(
                async move { dispatch_ordered(&s, frame.freeze(), &p, queued).await },
            );
        if answers.send((task, written)).await.is_err() {
            break;
        }
        // The next request starts once this one is queued (a Produce says so), else once its
        // answer is written (so a request that closes the connection is the last one run).
        if may_go_on.await.is_err() {
            let _ = answered.await;
        }
    }
    // No more requests: the answers already due are still written, then the connection ends.
    drop(answers);
    write_task.await;
    tracing::debug!(shard = shard.id, peer = %peer, "connection closed");
}

/// Writes the answers in request order. On a write error or a request that closes the
/// connection, shuts the socket down so the reader stops too.
async fn write_answers(
    mut writer: Writer,
    to_write: local_channel::LocalReceiver<(glommio::Task<Outcome>, Answered)>,
    fd: std::os::fd::RawFd,
    peer: String,
    closed: Rc<Cell<bool>>,
) {
    while let Some((task, written)) = to_write.recv().await {
        let outcome = task.await;
        if !closed.get() {
            write_answer(&mut writer, outcome, fd, &peer, &closed).await;
        }
        // (A request after a close still finishes, its appends being queued; its answer is
        // not sent.)
        let _ = written.send(());
    }
}

async fn write_answer(
    writer: &mut Writer,
    outcome: Outcome,
    fd: std::os::fd::RawFd,
    peer: &str,
    closed: &Cell<bool>,
) {
    match outcome {
        Outcome::Respond(chunks) => {
            let result =
                gather_write::write_pieces(writer, fd, &chunks, |on| set_cork(fd, on)).await;
            if let Err(e) = result {
                tracing::debug!(peer = %peer, "write failed: {e}");
                shut_down(fd, closed);
            }
        }
        Outcome::Silent => {}
        Outcome::Close(reason) => {
            warn_limited!("bad request", peer = %peer, "closing connection: {reason}");
            shut_down(fd, closed);
        }
    }
}

/// Marks the connection closed and shuts its socket down both ways: a read waiting for the
/// next request returns at once.
fn shut_down(fd: std::os::fd::RawFd, closed: &Cell<bool>) {
    closed.set(true);
    // SAFETY: shutdown on a socket descriptor this connection owns; it stays open until the
    // stream is dropped.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}
