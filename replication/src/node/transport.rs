//! The cluster listener and one connection to each other voter. Sending never waits: a frame
//! goes into the peer's bounded queue, and a full queue or a broken connection loses it (the
//! quorum resends what matters; a heartbeat comes again). Each peer's writer connects when it
//! has something to send, backing off up to 2 s while the peer is unreachable.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::mpsc;
use futures_util::StreamExt;
use glommio::net::{TcpListener, TcpStream};

use super::frame::{read_frame, write_frame, Body, Frame};
use crate::metadata::BrokerId;
use crate::voters::Voter;

const PEER_QUEUE: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the transport knows of a peer's reachability, for the operator.
#[derive(Debug, Default)]
pub struct PeerState {
    pub last_error: Option<String>,
    pub connected: bool,
}

pub struct Transport {
    me: BrokerId,
    cluster_id: [u8; 16],
    peers: BTreeMap<BrokerId, mpsc::Sender<Vec<u8>>>,
    pub states: BTreeMap<BrokerId, Rc<std::cell::RefCell<PeerState>>>,
}

impl Transport {
    /// Starts accepting on `listener` (frames go to `inbox`) and a writer per other voter.
    pub fn start(
        me: BrokerId,
        cluster_id: [u8; 16],
        voters: &[Voter],
        listener: TcpListener,
        inbox: mpsc::Sender<Frame>,
    ) -> Self {
        glommio::spawn_local(accept_loop(listener, cluster_id, inbox)).detach();
        let mut t = Transport {
            me,
            cluster_id,
            peers: BTreeMap::new(),
            states: BTreeMap::new(),
        };
        for v in voters.iter().filter(|v| v.id != me) {
            t.add_peer(v.clone());
        }
        t
    }

    /// Sends to `to`, connecting to `addr` (host:port) first if it is not a known peer (an
    /// observer, which is no voter).
    pub fn send_to(&mut self, to: BrokerId, addr: &str, body: Body) {
        if !self.peers.contains_key(&to) && to != self.me {
            let Some((host, port)) = addr
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            else {
                tracing::debug!(to, addr, "no address to reach a node that is not a voter");
                return;
            };
            self.add_peer(Voter {
                id: to,
                host: host.to_string(),
                port,
            });
        }
        self.send(to, body);
    }

    fn add_peer(&mut self, v: Voter) {
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        let state = Rc::new(std::cell::RefCell::new(PeerState::default()));
        self.peers.insert(v.id, tx);
        self.states.insert(v.id, state.clone());
        glommio::spawn_local(writer(v, rx, state)).detach();
    }

    pub fn send(&mut self, to: BrokerId, body: Body) {
        let Some(tx) = self.peers.get_mut(&to) else {
            tracing::debug!(to, "no connection to a node that is not a voter");
            return;
        };
        let frame = Frame {
            cluster_id: self.cluster_id,
            from: self.me,
            body,
        };
        // A full queue: the peer is slow or unreachable; the frame is lost.
        let _ = tx.try_send(frame.encode());
    }
}

async fn accept_loop(listener: TcpListener, cluster_id: [u8; 16], inbox: mpsc::Sender<Frame>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                glommio::spawn_local(read_loop(stream, cluster_id, inbox.clone())).detach();
            }
            Err(e) => {
                tracing::warn!("cluster listener: accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn read_loop(mut stream: TcpStream, cluster_id: [u8; 16], mut inbox: mpsc::Sender<Frame>) {
    let peer = stream.peer_addr().ok();
    let mut warned = Instant::now() - Duration::from_secs(60);
    loop {
        let bytes = match read_frame(&mut stream).await {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(?peer, "cluster connection closed: {e}");
                return;
            }
        };
        let frame = match Frame::decode(&bytes) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(
                    ?peer,
                    "cluster frame refused, connection closed: it does not decode ({e})"
                );
                return;
            }
        };
        if frame.cluster_id != cluster_id {
            if warned.elapsed() > Duration::from_secs(10) {
                warned = Instant::now();
                tracing::warn!(
                    ?peer,
                    from = frame.from,
                    "refused a frame of another cluster ({}; this is {}): is a broker of another cluster configured with this one's address?",
                    super::identity::hex(&frame.cluster_id),
                    super::identity::hex(&cluster_id)
                );
            }
            continue;
        }
        if inbox.try_send(frame).is_err() {
            // The node is behind; the quorum resends.
            tracing::debug!(?peer, "cluster inbox full: a frame dropped");
        }
    }
}

fn resolve(v: &Voter) -> Result<SocketAddr, String> {
    (v.host.as_str(), v.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", v.addr()))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", v.addr()))
}

async fn writer(
    voter: Voter,
    mut rx: mpsc::Receiver<Vec<u8>>,
    state: Rc<std::cell::RefCell<PeerState>>,
) {
    let mut conn: Option<TcpStream> = None;
    let mut backoff = Duration::from_millis(100);
    let mut retry_at = Instant::now();
    while let Some(bytes) = rx.next().await {
        if conn.is_none() {
            if Instant::now() < retry_at {
                continue;
            }
            let attempt = match resolve(&voter) {
                Ok(addr) => TcpStream::connect_timeout(addr, CONNECT_TIMEOUT)
                    .await
                    .map_err(|e| format!("cannot connect to {voter}: {e}")),
                Err(e) => Err(e),
            };
            match attempt {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    conn = Some(s);
                    backoff = Duration::from_millis(100);
                    let mut st = state.borrow_mut();
                    st.connected = true;
                    st.last_error = None;
                }
                Err(e) => {
                    tracing::debug!("{e}");
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    let mut st = state.borrow_mut();
                    st.connected = false;
                    st.last_error = Some(e);
                    continue;
                }
            }
        }
        if let Some(s) = conn.as_mut() {
            if let Err(e) = write_frame(s, &bytes).await {
                tracing::debug!("connection to {voter} lost: {e}");
                conn = None;
                let mut st = state.borrow_mut();
                st.connected = false;
                st.last_error = Some(format!("connection to {voter} lost: {e}"));
            }
        }
    }
}
