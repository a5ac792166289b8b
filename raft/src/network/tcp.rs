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
//!
//! Floods cost little: a frame's body is read as it arrives (a peer that
//! announces [`MAX_FRAME`] bytes and sends nothing gets no buffer of that
//! size), and at most `MAX_PRE_HELLO` connections may wait for their
//! hello at once; more are closed at once and counted
//! (`PairMetrics::refused_unauthenticated`). [`decode_frame`] is the
//! frame decoding as a pure function, for fuzzing.
//!
//! With a [`RaftTls`] (a secured tree) every connection is mutual TLS 1.3
//! first, and the hello's voter must also be the one the caller's
//! certificate names (see `tls`); the source-IP check stays. The hello
//! deadline and the limit on connections waiting for it cover the
//! handshake too.

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
use tokio::io::AsyncRead;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWrite;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::TcpSocket;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::tls::RaftTls;
use super::Inbound;
use super::Reply;
use super::Rpc;
use super::Transport;
use crate::error::CallError;
use crate::error::RaftError;
use crate::peer::Peer;
use crate::types::NodeId;

/// Largest frame accepted (request or reply). The largest a pair sends is
/// an AppendEntries of openraft's `max_payload_entries` (300) entries of a
/// few hundred bytes of JSON each, about 100 KiB; a snapshot is the small
/// `PairState` (well under 10 KiB). 1 MiB leaves ten times that; anything
/// larger is garbage or an attack.
pub const MAX_FRAME: usize = 1 << 20;
/// Largest hello accepted from a connection not yet authenticated.
const MAX_HELLO: usize = 4096;
/// Time a new connection has to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections that may wait for their hello at once. Three voters keep a
/// handful of connections each (`MAX_IDLE` idle per peer, plus a few
/// busy); a 17th silent connection is an attack or a bug, and is closed
/// at once rather than held (each one would hold a task and a socket for
/// `HELLO_TIMEOUT`).
const MAX_PRE_HELLO: usize = 16;
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

async fn write_frame<T: Serialize>(
    stream: &mut (impl AsyncWrite + Unpin),
    value: &T,
) -> io::Result<()> {
    stream.write_all(&encode_frame(value)?).await?;
    stream.flush().await
}

/// A raft connection: plain TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Conn = Box<dyn Io>;

/// Why a frame did not decode.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Fewer than the 4 bytes of the length prefix.
    #[error("frame shorter than its 4-byte length prefix")]
    NoLength,
    /// The prefix announces more than the limit.
    #[error("frame of {len} bytes exceeds {max}")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not as long as the prefix says.
    #[error("frame announces {announced} bytes, has {got}")]
    Length {
        /// Announced length.
        announced: usize,
        /// Bytes present after the prefix.
        got: usize,
    },
    /// The body is not the expected JSON.
    #[error("frame body: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<FrameError> for io::Error {
    fn from(e: FrameError) -> Self {
        proto(e)
    }
}

/// The length a 4-byte big-endian prefix announces, checked against `max`.
fn frame_len(prefix: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decodes one whole frame (`[u32 BE length][JSON body]`, nothing after
/// it) into a value: what the listener does with every frame after the
/// hello, as a pure function (the fuzz target's entry point).
pub fn decode_frame_as<T: DeserializeOwned>(frame: &[u8], max: usize) -> Result<T, FrameError> {
    let (prefix, body) = frame.split_first_chunk::<4>().ok_or(FrameError::NoLength)?;
    let len = frame_len(*prefix, max)?;
    if body.len() != len {
        return Err(FrameError::Length {
            announced: len,
            got: body.len(),
        });
    }
    Ok(serde_json::from_slice(body)?)
}

/// Decodes one whole request frame, as the listener does (limit
/// [`MAX_FRAME`]).
pub fn decode_frame(frame: &[u8]) -> Result<Rpc, FrameError> {
    decode_frame_as(frame, MAX_FRAME)
}

/// Decodes one whole hello frame, as the listener does for a connection
/// not yet authenticated (limit 4 KiB).
pub fn decode_hello(frame: &[u8]) -> Result<Hello, FrameError> {
    decode_frame_as(frame, MAX_HELLO)
}

/// Encodes `value` as one frame (what [`decode_frame_as`] reads back).
pub fn encode_frame<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let body = serde_json::to_vec(value).map_err(proto)?;
    let len = u32::try_from(body.len()).map_err(proto)?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    Ok(buf)
}

/// Reads one frame's body into `buf` (cleared first), at most `max`
/// bytes. The buffer grows as bytes arrive, never to the announced length
/// up front: a peer that announces a large frame and sends nothing costs
/// nothing.
async fn read_frame_into<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    let mut prefix = [0u8; 4];
    reader.read_exact(&mut prefix).await?;
    let len = frame_len(prefix, max)?;
    buf.clear();
    let got = (&mut *reader).take(len as u64).read_to_end(buf).await?;
    if got < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame cut after {got} of {len} bytes"),
        ));
    }
    Ok(())
}

async fn read_frame<T: DeserializeOwned, R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> io::Result<T> {
    let mut body = Vec::new();
    read_frame_into(reader, max, &mut body).await?;
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

type Pool = Arc<Mutex<HashMap<NodeId, Vec<Conn>>>>;

/// TCP transport of one node.
pub(crate) struct TcpTransport {
    me: NodeId,
    hello: Hello,
    peers: BTreeMap<NodeId, Peer>,
    pool: Pool,
    tls: Option<Arc<RaftTls>>,
}

impl Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("me", &self.me)
            .field("peers", &self.peers)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl TcpTransport {
    pub(crate) fn new(
        mesh: &str,
        node: &str,
        me: NodeId,
        peers: BTreeMap<NodeId, Peer>,
        tls: Option<Arc<RaftTls>>,
    ) -> Self {
        Self {
            me,
            hello: Hello {
                mesh: mesh.to_string(),
                node: node.to_string(),
                from_id: me,
            },
            peers,
            pool: Arc::new(Mutex::new(HashMap::new())),
            tls,
        }
    }
}

fn take(pool: &Pool, to: NodeId) -> Option<Conn> {
    pool.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_mut(&to)
        .and_then(Vec::pop)
}

fn put(pool: &Pool, to: NodeId, conn: Conn) {
    let mut p = pool.lock().unwrap_or_else(PoisonError::into_inner);
    let idle = p.entry(to).or_default();
    if idle.len() < MAX_IDLE {
        idle.push(conn);
    }
}

async fn exchange(conn: &mut Conn, rpc: &Rpc) -> io::Result<Reply> {
    write_frame(conn, rpc).await?;
    read_frame(conn, MAX_FRAME).await
}

/// Connects to `peer`, from an address of `local_host` when possible (so
/// the peer's source-IP check sees the configured address on a multi-homed
/// host), with TLS when `tls` names the voter it dials, and sends the
/// hello.
async fn connect(
    local_host: &str,
    peer: &Peer,
    hello: &Hello,
    tls: Option<(&RaftTls, NodeId)>,
) -> Result<Conn, CallError> {
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
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                let mut conn: Conn = match tls {
                    None => Box::new(stream),
                    Some((tls, to)) => {
                        let name = tls.name(to).ok_or_else(|| {
                            CallError::Unreachable(format!("no certificate name for voter {to}"))
                        })?;
                        let tls = tokio_rustls::TlsConnector::from(tls.client.clone())
                            .connect(name, stream)
                            .await
                            .map_err(|e| CallError::Unreachable(format!("{addr}: tls: {e}")))?;
                        Box::new(tls)
                    }
                };
                write_frame(&mut conn, hello)
                    .await
                    .map_err(|e| CallError::Unreachable(format!("{addr}: hello: {e}")))?;
                return Ok(conn);
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
        let tls = self.tls.clone();
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
                limits: Limits::default(),
                tls,
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
        let tls = self.tls.clone();
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
                let tls = tls.as_deref().map(|t| (t, to));
                let mut conn = connect(&local_host, &peer, &hello, tls).await?;
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

/// What a listener tolerates from connections that have not said hello.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// Connections waiting for their hello at once; more are closed.
    max_pre_hello: usize,
    /// Time a connection has to send its hello.
    hello_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pre_hello: MAX_PRE_HELLO,
            hello_timeout: HELLO_TIMEOUT,
        }
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
    limits: Limits,
    tls: Option<Arc<RaftTls>>,
}

impl Server {
    async fn accept_loop(self, listener: TcpListener, cancel: CancellationToken) {
        let pre_hello = Arc::new(Semaphore::new(self.limits.max_pre_hello));
        // A flood is logged once per burst, not once per connection.
        let mut refused_since_log = 0u64;
        let mut last_log: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, addr)) => {
                        let Ok(permit) = pre_hello.clone().try_acquire_owned() else {
                            self.inbound.count_refused_unauthenticated();
                            drop(stream);
                            refused_since_log += 1;
                            if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                                tracing::warn!(
                                    me = self.me,
                                    peer = %addr,
                                    refused = refused_since_log,
                                    limit = self.limits.max_pre_hello,
                                    "raft connections refused: too many waiting for their hello"
                                );
                                refused_since_log = 0;
                                last_log = Some(tokio::time::Instant::now());
                            }
                            continue;
                        };
                        let server = self.clone();
                        let cancel = cancel.clone();
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = cancel.cancelled() => {}
                                _ = server.connection(stream, addr, permit) => {}
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

    /// Serves one connection; `pre_hello` is its place among the
    /// connections waiting for their hello, given back once the hello is
    /// checked.
    async fn connection(
        self,
        stream: TcpStream,
        addr: SocketAddr,
        pre_hello: OwnedSemaphorePermit,
    ) {
        let _ = stream.set_nodelay(true);
        // The handshake and the hello share one deadline.
        let opened = tokio::time::timeout(self.limits.hello_timeout, async {
            let (mut conn, cert): (Conn, _) = match &self.tls {
                None => (Box::new(stream), None),
                Some(tls) => {
                    let tls = tokio_rustls::TlsAcceptor::from(tls.server.clone())
                        .accept(stream)
                        .await
                        .map_err(|e| match e.kind() {
                            // The caller gave up mid-handshake (its call
                            // timed out): nothing to refuse.
                            io::ErrorKind::UnexpectedEof => None,
                            _ => Some(format!("tls: {e}")),
                        })?;
                    let cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.clone().into_owned());
                    (Box::new(tls), Some(cert))
                }
            };
            let hello = read_frame::<Hello, _>(&mut conn, MAX_HELLO)
                .await
                .map_err(|e| Some(format!("bad hello: {e}")))?;
            Ok::<_, Option<String>>((conn, cert, hello))
        })
        .await;
        let (mut stream, cert, hello) = match opened {
            Ok(Ok(x)) => x,
            Ok(Err(Some(why))) => return self.reject(addr, &why),
            Ok(Err(None)) => {
                tracing::debug!(me = self.me, peer = %addr, "raft connection closed during its TLS handshake");
                return;
            }
            Err(_) => return self.reject(addr, "no hello in time"),
        };
        if let Err(reason) = self.check(&hello, addr).await {
            return self.reject(addr, &reason);
        }
        if let (Some(tls), Some(cert)) = (&self.tls, &cert) {
            if let Err(reason) = tls.check_peer(hello.from_id, cert.as_ref()) {
                return self.reject(addr, &format!("hello as voter {}: {reason}", hello.from_id));
            }
        }
        drop(pre_hello);
        let from = hello.from_id;
        tracing::debug!(me = self.me, from, peer = %addr, "raft connection accepted");
        loop {
            let rpc = match read_frame::<Rpc, _>(&mut stream, MAX_FRAME).await {
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

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::metrics::Counters;
    use crate::network::LeaderWatch;
    use crate::types::Request;

    #[test]
    fn a_frame_decodes_only_whole_and_within_the_limit() {
        let rpc = Rpc::Forward(Request::Probe);
        let frame = encode_frame(&rpc).expect("encode");
        assert!(matches!(
            decode_frame(&frame),
            Ok(Rpc::Forward(Request::Probe))
        ));
        assert!(matches!(
            decode_frame(&frame[..3]),
            Err(FrameError::NoLength)
        ));
        assert!(matches!(
            decode_frame(&frame[..frame.len() - 1]),
            Err(FrameError::Length { .. })
        ));
        let mut long = frame.clone();
        long.push(b' ');
        assert!(matches!(
            decode_frame(&long),
            Err(FrameError::Length { .. })
        ));
        let mut huge = (MAX_FRAME as u32 + 1).to_be_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert!(matches!(
            decode_frame(&huge),
            Err(FrameError::TooLarge { .. })
        ));
        let garbage = encode_frame(&"not an rpc").expect("encode");
        assert!(matches!(decode_frame(&garbage), Err(FrameError::Json(_))));
        let hello = Hello {
            mesh: "m".into(),
            node: "n".into(),
            from_id: 2,
        };
        let frame = encode_frame(&hello).expect("encode");
        assert_eq!(decode_hello(&frame).expect("hello"), hello);
        let big = encode_frame(&"x".repeat(MAX_HELLO)).expect("encode");
        assert!(matches!(
            decode_hello(&big),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn a_frame_announcing_a_huge_body_gets_no_buffer_of_that_size() {
        let (mut peer, mut conn) = tokio::io::duplex(64 * 1024);
        let announced = MAX_FRAME - 1;
        peer.write_all(&(announced as u32).to_be_bytes())
            .await
            .expect("write");
        peer.write_all(b"0123456789").await.expect("write");
        // The peer sends nothing more: the read waits (once polled, it has
        // taken the prefix and the ten bytes), and what it holds is what
        // arrived, not what was announced.
        let mut buf = Vec::new();
        let pending = read_frame_into(&mut conn, MAX_FRAME, &mut buf).now_or_never();
        assert!(pending.is_none(), "the read waits for the rest");
        assert!(
            buf.capacity() < 64 * 1024,
            "{} bytes allocated for a frame that announced {announced} and sent 10",
            buf.capacity()
        );
        // And a peer that hangs up there leaves an error, not a frame.
        let (mut peer, mut conn) = tokio::io::duplex(64 * 1024);
        peer.write_all(&(announced as u32).to_be_bytes())
            .await
            .expect("write");
        peer.write_all(b"0123456789").await.expect("write");
        drop(peer);
        let mut buf = Vec::new();
        let err = read_frame_into(&mut conn, MAX_FRAME, &mut buf)
            .await
            .expect_err("cut frame");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(buf.capacity() < 64 * 1024, "{}", buf.capacity());
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_before_any_body_is_read() {
        let (mut peer, mut conn) = tokio::io::duplex(1024);
        peer.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
            .await
            .expect("write");
        let mut buf = Vec::new();
        let err = read_frame_into(&mut conn, MAX_FRAME, &mut buf)
            .await
            .expect_err("too large");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(buf.capacity(), 0);
    }

    /// True once the server closed `stream` (EOF or reset).
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(20), stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_17th_silent_connection_is_refused_at_once_and_counted() {
        let counters = Arc::new(Counters::default());
        let timing = crate::timing::Timing::default();
        // No openraft instance behind it: the listener's own rules only.
        let inbound = Inbound::new(
            1,
            counters.clone(),
            timing.rpc_timeout,
            Arc::new(LeaderWatch::new(timing.election_max)),
            timing.election_max,
            crate::store::GroupCell::default(),
        );
        let peer = |name: &str| Peer {
            name: name.into(),
            host: "127.0.0.1".into(),
            raft_port: 1,
        };
        let server = Server {
            me: 1,
            mesh: "plant".into(),
            node: "press".into(),
            peers: Arc::new(BTreeMap::from([
                (1, peer("a")),
                (2, peer("b")),
                (3, peer("w")),
            ])),
            inbound,
            // Silent connections wait as long as the test needs.
            limits: Limits {
                max_pre_hello: MAX_PRE_HELLO,
                hello_timeout: Duration::from_secs(3600),
            },
            tls: None,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cancel = CancellationToken::new();
        let task = tokio::spawn(server.accept_loop(listener, cancel.clone()));

        let mut silent = Vec::new();
        for _ in 0..MAX_PRE_HELLO {
            silent.push(TcpStream::connect(addr).await.expect("connect"));
        }
        // Accepted in order: the 17th finds every place taken.
        let mut extra = TcpStream::connect(addr).await.expect("connect");
        assert!(closed(&mut extra).await, "the 17th is closed at once");
        assert_eq!(counters.snapshot().refused_unauthenticated, 1);
        assert_eq!(counters.snapshot().rejected_connections, 0);
        // The 16 are still open (nothing to read, no EOF).
        for s in &silent {
            let mut byte = [0u8; 1];
            let r = s.try_read(&mut byte);
            assert!(
                matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
                "{r:?}"
            );
        }

        // One of them hangs up: its place is free again, and a voter's
        // connection is served (this node runs no openraft: a pre-vote is
        // answered "no").
        drop(silent.pop());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let reply = loop {
            assert!(tokio::time::Instant::now() < deadline, "never served");
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let hello = Hello {
                mesh: "plant".into(),
                node: "press".into(),
                from_id: 2,
            };
            write_frame(&mut s, &hello).await.expect("hello");
            let ask = Rpc::PreVote {
                term: 1,
                last_log_id: None,
            };
            if write_frame(&mut s, &ask).await.is_err() {
                continue;
            }
            match read_frame::<Reply, _>(&mut s, MAX_FRAME).await {
                Ok(reply) => break reply,
                // Closed: the freed place was not back yet.
                Err(_) => continue,
            }
        };
        assert!(
            matches!(reply, Reply::PreVote { granted: false, .. }),
            "{reply:?}"
        );
        // The one that hung up without a hello is counted as rejected.
        assert_eq!(counters.snapshot().rejected_connections, 1);
        cancel.cancel();
        task.await.expect("accept loop");
    }
}
