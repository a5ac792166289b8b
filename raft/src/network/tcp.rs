//! Raft RPC over TCP: the topology's raft port of each voter.
//!
//! Wire format (stable between the three voters of a pair):
//! - every frame is a big-endian `u32` length followed by that many bytes
//!   of serde_json;
//! - the connecting side sends one [`Hello`] frame
//!   `{"mesh":…,"node":…,"from_id":N}` first; the server closes the
//!   connection (logging why and counting it) unless mesh and node are its
//!   own, `from_id` is one of the other two voters, and the connection's
//!   source IP is one the configured host of `from_id` resolves to;
//! - then request/response pairs: an `Rpc` frame, a `Reply` frame, one at
//!   a time per connection. Callers keep a small pool of idle connections
//!   per peer, drop a connection on any error and reconnect on the next
//!   call.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fmt::Debug;
use std::io;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::TcpSocket;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Inbound;
use super::Reply;
use super::Rpc;
use super::Transport;
use crate::error::CallError;
use crate::error::RaftError;
use crate::peer::Peer;
use crate::types::NodeId;

/// Largest frame accepted from an authenticated peer (a snapshot or a batch
/// of entries is a few KiB; this only stops garbage from allocating).
const MAX_FRAME: usize = 16 << 20;
/// Largest hello accepted from a connection not yet authenticated.
const MAX_HELLO: usize = 4096;
/// Time a new connection has to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept per peer; enough for openraft's replication and
/// vote streams plus forwarded proposals running at once.
const MAX_IDLE: usize = 4;

/// The first frame on every connection: who is calling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The caller's mesh; must equal the server's.
    pub mesh: String,
    /// The caller's pair (topology node) name; must equal the server's.
    pub node: String,
    /// The caller's voter id (1, 2 or 3).
    pub from_id: NodeId,
}

fn proto(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

async fn write_frame<T: Serialize>(stream: &mut TcpStream, value: &T) -> io::Result<()> {
    let body = serde_json::to_vec(value).map_err(proto)?;
    let len = u32::try_from(body.len()).map_err(proto)?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    stream.write_all(&buf).await
}

async fn read_frame<T: DeserializeOwned>(stream: &mut TcpStream, max: usize) -> io::Result<T> {
    let len = stream.read_u32().await? as usize;
    if len > max {
        return Err(proto(format!("frame of {len} bytes exceeds {max}")));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(proto)
}

/// Every address `host` resolves to, with `port`.
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => {
            let v: Vec<SocketAddr> = addrs.collect();
            if v.is_empty() {
                Err(format!("{host} resolves to no address"))
            } else {
                Ok(v)
            }
        }
        Err(e) => Err(format!("{host}: {e}")),
    }
}

type Pool = Arc<Mutex<HashMap<NodeId, Vec<TcpStream>>>>;

/// TCP transport of one node.
pub(crate) struct TcpTransport {
    me: NodeId,
    hello: Hello,
    peers: BTreeMap<NodeId, Peer>,
    pool: Pool,
}

impl Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("me", &self.me)
            .field("peers", &self.peers)
            .finish()
    }
}

impl TcpTransport {
    pub(crate) fn new(mesh: &str, node: &str, me: NodeId, peers: BTreeMap<NodeId, Peer>) -> Self {
        Self {
            me,
            hello: Hello {
                mesh: mesh.to_string(),
                node: node.to_string(),
                from_id: me,
            },
            peers,
            pool: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

fn take(pool: &Pool, to: NodeId) -> Option<TcpStream> {
    pool.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_mut(&to)
        .and_then(Vec::pop)
}

fn put(pool: &Pool, to: NodeId, conn: TcpStream) {
    let mut p = pool.lock().unwrap_or_else(PoisonError::into_inner);
    let idle = p.entry(to).or_default();
    if idle.len() < MAX_IDLE {
        idle.push(conn);
    }
}

async fn exchange(conn: &mut TcpStream, rpc: &Rpc) -> io::Result<Reply> {
    write_frame(conn, rpc).await?;
    read_frame(conn, MAX_FRAME).await
}

/// Connects to `peer`, from an address of `local_host` when possible (so
/// the peer's source-IP check sees the configured address on a multi-homed
/// host), and sends the hello.
async fn connect(local_host: &str, peer: &Peer, hello: &Hello) -> Result<TcpStream, CallError> {
    let addrs = resolve(&peer.host, peer.raft_port)
        .await
        .map_err(CallError::Unreachable)?;
    let locals = resolve(local_host, 0).await.unwrap_or_default();
    let mut last = String::new();
    for addr in addrs {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        };
        let Ok(socket) = socket else { continue };
        if let Some(local) = locals.iter().find(|l| l.is_ipv4() == addr.is_ipv4()) {
            if let Err(e) = socket.bind(SocketAddr::new(local.ip(), 0)) {
                tracing::debug!(%local, error = %e, "cannot bind raft client to own host; using any");
            }
        }
        match socket.connect(addr).await {
            Ok(mut stream) => {
                let _ = stream.set_nodelay(true);
                write_frame(&mut stream, hello)
                    .await
                    .map_err(|e| CallError::Unreachable(format!("{addr}: hello: {e}")))?;
                return Ok(stream);
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(CallError::Unreachable(last))
}

impl Transport for TcpTransport {
    fn serve(
        &self,
        inbound: Inbound,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<JoinHandle<()>, RaftError>> {
        let me = self.me;
        let peers = self.peers.clone();
        let hello = self.hello.clone();
        Box::pin(async move {
            let own = peers.get(&me).ok_or_else(|| RaftError::Config {
                field: "peers".into(),
                reason: format!("no entry for own id {me}"),
            })?;
            let addr = *resolve(&own.host, own.raft_port)
                .await
                .map_err(|reason| RaftError::Resolve {
                    host: own.host.clone(),
                    reason,
                })?
                .first()
                .ok_or_else(|| RaftError::Resolve {
                    host: own.host.clone(),
                    reason: "no address".into(),
                })?;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| RaftError::Bind { addr, source })?;
            tracing::info!(%addr, "raft listener bound");
            let server = Server {
                me,
                mesh: hello.mesh,
                node: hello.node,
                peers: Arc::new(peers),
                inbound,
            };
            Ok(tokio::spawn(server.accept_loop(listener, cancel)))
        })
    }

    fn call(
        &self,
        to: NodeId,
        rpc: Rpc,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Reply, CallError>> {
        let peer = self.peers.get(&to).cloned();
        let local_host = self
            .peers
            .get(&self.me)
            .map(|p| p.host.clone())
            .unwrap_or_default();
        let hello = self.hello.clone();
        let pool = self.pool.clone();
        Box::pin(async move {
            let Some(peer) = peer else {
                return Err(CallError::Unreachable(format!("unknown voter {to}")));
            };
            let attempt = async {
                if let Some(mut conn) = take(&pool, to) {
                    // An idle connection may have died with its peer; on
                    // error fall through to a fresh one (every RPC here is
                    // safe to repeat).
                    if let Ok(reply) = exchange(&mut conn, &rpc).await {
                        put(&pool, to, conn);
                        return Ok(reply);
                    }
                }
                let mut conn = connect(&local_host, &peer, &hello).await?;
                let reply = exchange(&mut conn, &rpc)
                    .await
                    .map_err(|e| CallError::Unreachable(format!("voter {to}: {e}")))?;
                put(&pool, to, conn);
                Ok(reply)
            };
            tokio::time::timeout(timeout, attempt)
                .await
                .unwrap_or(Err(CallError::Timeout))
        })
    }
}

/// The accepting side of one node.
#[derive(Clone)]
struct Server {
    me: NodeId,
    mesh: String,
    node: String,
    peers: Arc<BTreeMap<NodeId, Peer>>,
    inbound: Inbound,
}

impl Server {
    async fn accept_loop(self, listener: TcpListener, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, addr)) => {
                        let server = self.clone();
                        let cancel = cancel.clone();
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = cancel.cancelled() => {}
                                _ = server.connection(stream, addr) => {}
                            }
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: do not spin.
                        tracing::warn!(error = %e, "raft accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    fn reject(&self, addr: SocketAddr, reason: &str) {
        tracing::warn!(me = self.me, peer = %addr, reason, "raft connection rejected");
        self.inbound.count_rejected();
    }

    /// Why `hello` from `addr` is not acceptable, if it is not.
    async fn check(&self, hello: &Hello, addr: SocketAddr) -> Result<(), String> {
        if hello.mesh != self.mesh || hello.node != self.node {
            return Err(format!(
                "hello for {}/{}, this is {}/{}",
                hello.mesh, hello.node, self.mesh, self.node
            ));
        }
        if hello.from_id == self.me {
            return Err(format!("hello claims this node's own id {}", self.me));
        }
        let Some(peer) = self.peers.get(&hello.from_id) else {
            return Err(format!("unknown voter id {}", hello.from_id));
        };
        let source: IpAddr = addr.ip().to_canonical();
        let allowed = resolve(&peer.host, 0).await?;
        if allowed.iter().any(|a| a.ip().to_canonical() == source) {
            Ok(())
        } else {
            Err(format!(
                "voter {} must connect from {} ({:?}), not {source}",
                hello.from_id,
                peer.host,
                allowed.iter().map(|a| a.ip()).collect::<Vec<_>>()
            ))
        }
    }

    async fn connection(self, mut stream: TcpStream, addr: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let hello =
            match tokio::time::timeout(HELLO_TIMEOUT, read_frame::<Hello>(&mut stream, MAX_HELLO))
                .await
            {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => return self.reject(addr, &format!("bad hello: {e}")),
                Err(_) => return self.reject(addr, "no hello in time"),
            };
        if let Err(reason) = self.check(&hello, addr).await {
            return self.reject(addr, &reason);
        }
        let from = hello.from_id;
        tracing::debug!(me = self.me, from, peer = %addr, "raft connection accepted");
        loop {
            let rpc = match read_frame::<Rpc>(&mut stream, MAX_FRAME).await {
                Ok(rpc) => rpc,
                Err(e) => {
                    if e.kind() != io::ErrorKind::UnexpectedEof {
                        tracing::debug!(from, error = %e, "raft connection closed");
                    }
                    return;
                }
            };
            let reply = self.inbound.handle(from, rpc).await;
            if let Err(e) = write_frame(&mut stream, &reply).await {
                tracing::debug!(from, error = %e, "raft reply not sent");
                return;
            }
        }
    }
}
