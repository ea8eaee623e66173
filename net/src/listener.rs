//! The shard's listener (SO_REUSEPORT, so every shard accepts on the same port) and the
//! start-up work a shard does before serving: replaying the group offsets it coordinates.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::Duration;

use glommio::net::TcpListener;

use crate::{commit_log, Shard, OFFSETS_TOPIC};

/// Binds `addr` with SO_REUSEPORT for this shard.
pub fn bind_reuseport(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    // SAFETY: the descriptor is a bound, listening TCP socket that we hand over whole.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// Replays the `__consumer_offsets` partitions this shard owns. Returns offsets applied.
pub async fn restore_groups(shard: &Rc<Shard>) -> u64 {
    let Some(topic) = shard.cluster.topic(OFFSETS_TOPIC) else {
        return 0;
    };
    let mut applied = 0;
    for p in 0..topic.partitions() {
        if let Some(log) = shard.logs.get(OFFSETS_TOPIC, p) {
            match commit_log::replay(&log, &shard.groups).await {
                Ok(n) => applied += n,
                Err(e) => tracing::error!(partition = p, "cannot replay committed offsets: {e}"),
            }
        }
    }
    if applied > 0 {
        shard.groups.start_ticking();
    }
    applied
}

/// Accepts connections until the future is dropped; each runs as its own task.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                glommio::spawn_local(crate::conn::serve_connection(shard.clone(), stream)).detach();
            }
            Err(e) => {
                tracing::warn!(shard = shard.id, "accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
