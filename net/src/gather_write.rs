//! Writing an answer made of many pieces (a fetch answer is a header, then per batch its base
//! offset and the rest of its bytes) with as few system calls as the socket allows: one
//! non-blocking `sendmsg` of all the pieces while the socket has room, and glommio's
//! waiting write only when it has none.

use std::io;
use std::os::fd::RawFd;

use bytes::Bytes;
use futures_lite::io::{AsyncWrite, AsyncWriteExt};

/// Most pieces one `sendmsg` takes (Linux's IOV_MAX).
const MAX_IOVECS: usize = 1024;

/// Where the next byte to send is: piece `index`, byte `offset` in it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    index: usize,
    offset: usize,
}

impl Cursor {
    fn advance(&mut self, pieces: &[Bytes], mut n: usize) {
        while n > 0 && self.index < pieces.len() {
            let left = pieces[self.index].len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.index += 1;
            self.offset = 0;
        }
        // Empty pieces after the last byte sent need nothing.
        while self.index < pieces.len() && pieces[self.index].len() == self.offset {
            self.index += 1;
            self.offset = 0;
        }
    }

    fn done(&self, pieces: &[Bytes]) -> bool {
        self.index >= pieces.len()
    }
}

/// Sets an integer socket option (errors ignored: the options set are hints).
pub fn set_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: a socket descriptor and a c_int option value of the right size.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Sends what the socket takes now without waiting; moves `at` past it.
fn send_now(fd: RawFd, pieces: &[Bytes], at: &mut Cursor) -> io::Result<()> {
    loop {
        at.advance(pieces, 0);
        if at.done(pieces) {
            return Ok(());
        }
        let iov: Vec<libc::iovec> = pieces[at.index..]
            .iter()
            .take(MAX_IOVECS)
            .enumerate()
            .map(|(i, p)| {
                let p = if i == 0 { &p[at.offset..] } else { &p[..] };
                libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                }
            })
            .collect();
        let wanted: usize = iov.iter().map(|v| v.iov_len).sum();
        // SAFETY: a zeroed msghdr is valid; it points at `iov`, whose entries point into
        // `pieces`, all alive for the call.
        let sent = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = iov.len() as _;
            libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        if sent < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(()),
                io::ErrorKind::Interrupted => continue,
                _ => Err(e),
            };
        }
        at.advance(pieces, sent as usize);
        if (sent as usize) < wanted {
            // The socket is full.
            return Ok(());
        }
    }
}

/// Writes every piece in order to `writer`, whose socket is `fd`. While the socket has room,
/// pieces go out together in one `sendmsg`; when it is full, the write waits through `writer`
/// (glommio's readiness poll) and carries on. With `cork` the socket is set to TCP_CORK while
/// it has to wait, so a small piece sent alone does not leave as a packet of its own.
pub async fn write_pieces<W: AsyncWrite + Unpin>(
    writer: &mut W,
    fd: RawFd,
    pieces: &[Bytes],
    cork: impl Fn(bool),
) -> io::Result<()> {
    let mut at = Cursor::default();
    let mut corked = false;
    let result = loop {
        if let Err(e) = send_now(fd, pieces, &mut at) {
            break Err(e);
        }
        if at.done(pieces) {
            break Ok(());
        }
        if !corked {
            cork(true);
            corked = true;
        }
        match writer.write(&pieces[at.index][at.offset..]).await {
            Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => at.advance(pieces, n),
            Err(e) => break Err(e),
        }
    };
    if corked {
        cork(false);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(lens: &[usize]) -> Vec<Bytes> {
        lens.iter().map(|&n| Bytes::from(vec![7u8; n])).collect()
    }

    #[test]
    fn the_cursor_steps_over_pieces_and_empty_ones() {
        let p = pieces(&[3, 0, 5, 0]);
        let mut at = Cursor::default();
        at.advance(&p, 2);
        assert_eq!(
            at,
            Cursor {
                index: 0,
                offset: 2
            }
        );
        at.advance(&p, 1);
        assert_eq!(
            at,
            Cursor {
                index: 2,
                offset: 0
            }
        );
        at.advance(&p, 4);
        assert_eq!(
            at,
            Cursor {
                index: 2,
                offset: 4
            }
        );
        assert!(!at.done(&p));
        at.advance(&p, 1);
        assert!(at.done(&p));
    }

    /// Many pieces (thousands, more than one sendmsg takes; empty ones too) through a real
    /// socket whose reader is slow, so the socket fills and the write has to wait: the reader
    /// gets every byte, in order.
    #[test]
    fn every_piece_arrives_in_order_through_a_full_socket() {
        use std::io::Read;
        use std::os::fd::AsRawFd;

        let mut pieces = Vec::new();
        let mut expected = Vec::new();
        for i in 0..3000usize {
            let len = match i % 4 {
                // Pieces larger than the socket's buffer: the waiting write sends part of one,
                // and the next sendmsg starts inside it.
                _ if i % 300 == 2 => 256 * 1024 + i,
                0 => 8,
                1 => 0,
                2 => 3 * 1024 + i,
                _ => 1,
            };
            let piece: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
            expected.extend_from_slice(&piece);
            pieces.push(Bytes::from(piece));
        }
        let total = expected.len();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            for reads in 0.. {
                // Slow at first, so the sender finds the socket full.
                if reads < 50 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                match s.read(&mut buf).unwrap() {
                    0 => break,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
            got
        });
        glommio::LocalExecutorBuilder::default()
            .io_memory(256 * 1024)
            .spawn(move || async move {
                let c = std::cell::Cell::new(0);
                let mut stream = glommio::net::TcpStream::connect(addr).await.unwrap();
                let fd = stream.as_raw_fd();
                // A small send buffer: the socket fills often, mid-piece too.
                set_int_option(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 32 * 1024);
                write_pieces(&mut stream, fd, &pieces, |on| {
                    if on {
                        c.set(c.get() + 1)
                    }
                })
                .await
                .unwrap();
                assert!(
                    c.get() >= 1,
                    "the socket never filled: the test did not wait"
                );
            })
            .unwrap()
            .join()
            .unwrap();
        let got = reader.join().unwrap();
        assert_eq!(got.len(), total);
        assert!(got == expected, "bytes out of order or damaged");
    }
}
