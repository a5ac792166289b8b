//! A Modbus TCP proxy in front of the campaign's PLC: it forwards every
//! request to the real server, records every write with the connection and
//! the *process* that sent it, and can delay requests (a slow PLC link).
//!
//! The writer of a connection is found when it is accepted, from the
//! kernel's socket table (`/proc/net/tcp`) and the processes' descriptors
//! (`/proc/<pid>/fd`): the process that owns the client end. The known
//! writers (`Proxy::writers`, kept by the campaign) are looked at first,
//! and at once: a member killed right after it connected is gone by the
//! time a scan of every process reaches it, while its request, already
//! sent, still reaches the PLC. Each
//! activation of a member writes over a connection of its own (the poller
//! resets its connection when the lease it wrote under ends), so "no two
//! connections' writes interleave" is "no two activations wrote at once".
//!
//! A member killed between its connect and the proxy's look leaves no
//! descriptor to find, while what it sent is still read and forwarded. The
//! campaign records each writer it kills (`Proxy::ended`, before the
//! signal); a connection no living process owns is then the one writer
//! killed shortly before it was accepted, if exactly one member was (see
//! [`exited_owner`]). Otherwise it stays unattributed, and the check
//! counts it as a writer of its own: a second writer, the safe side.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::member::publisher::now_us;

/// One write request as it went to the PLC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// When it was forwarded, µs since the Unix epoch.
    pub ts_us: u64,
    /// The client connection (numbered in accept order).
    pub conn: u64,
    /// The process that owns the client end, if found.
    pub pid: Option<u32>,
    /// Modbus function code (5, 6, 15, 16).
    pub fc: u8,
    /// First register or coil written.
    pub address: u16,
}

/// Sets the proxy's delays; cheap to clone.
///
/// A slow PLC link is modelled as a PLC that answers late (every answer
/// waits `answer`) over a link whose requests arrive a little late
/// (`request`). The request delay must stay below the lease's margin: the
/// safety argument assumes a write sent within the lease reaches the PLC
/// within `margin` (ARCHITECTURE.md, "Safety"); a link slower than that is
/// outside what any lease can fence.
#[derive(Debug, Clone)]
pub struct Delay {
    request: Arc<AtomicU64>,
    answer: Arc<AtomicU64>,
}

impl Delay {
    /// Requests wait `request` and answers `answer` before they are
    /// forwarded (zero: none).
    pub fn set(&self, request: Duration, answer: Duration) {
        self.request
            .store(request.as_millis() as u64, Ordering::Relaxed);
        self.answer
            .store(answer.as_millis() as u64, Ordering::Relaxed);
    }
}

/// The running proxy; stopped on drop.
#[derive(Debug)]
pub struct Proxy {
    /// Where it listens (the topology's Modbus address).
    pub addr: SocketAddr,
    writes: Arc<Mutex<Vec<Write>>>,
    writers: Writers,
    ended: Ended,
    delay: Delay,
    cancel: CancellationToken,
}

/// The processes expected to write: pid → member name.
pub type Writers = Arc<Mutex<BTreeMap<u32, String>>>;

/// Writers the campaign killed: (pid, µs since the Unix epoch just before
/// the signal).
pub type Ended = Arc<Mutex<Vec<(u32, u64)>>>;

/// How long before a connection's accept its owner may have been killed
/// and still be named by elimination: a connection waits in the listen
/// backlog for as long as the accept loop is late (milliseconds; a loaded
/// machine, more).
const KILLED_BEFORE_ACCEPT_US: u64 = 2_000_000;

/// The owner of a connection accepted at `accepted_us` that no living
/// process owns: the writer killed at most `KILLED_BEFORE_ACCEPT_US`
/// before, if every writer killed then is the same member (the latest such
/// pid). A process was alive when it connected, the connect came before
/// the accept, and a dead process's socket has no descriptor left to find.
fn exited_owner(
    accepted_us: u64,
    writers: &BTreeMap<u32, String>,
    ended: &[(u32, u64)],
) -> Option<u32> {
    let mut recent: Vec<(u64, u32, &String)> = ended
        .iter()
        .filter(|(_, at)| at.saturating_add(KILLED_BEFORE_ACCEPT_US) >= accepted_us)
        .filter_map(|&(pid, at)| writers.get(&pid).map(|m| (at, pid, m)))
        .collect();
    recent.sort();
    let (_, pid, member) = recent.last()?;
    recent.iter().all(|(_, _, m)| m == member).then_some(*pid)
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Proxy {
    /// Listens on `listen` and forwards to `upstream` (`host:port`).
    pub async fn start(listen: SocketAddr, upstream: String) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("proxy: binding {listen}"))?;
        let addr = listener.local_addr()?;
        let writes = Arc::new(Mutex::new(Vec::new()));
        let writers: Writers = Arc::default();
        let ended: Ended = Arc::default();
        let delay = Delay {
            request: Arc::new(AtomicU64::new(0)),
            answer: Arc::new(AtomicU64::new(0)),
        };
        let cancel = CancellationToken::new();
        let (w, d, c, known, killed) = (
            writes.clone(),
            delay.clone(),
            cancel.clone(),
            writers.clone(),
            ended.clone(),
        );
        tokio::spawn(async move {
            let mut next_conn = 0u64;
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = c.cancelled() => return,
                };
                let Ok((client, peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let accepted_us = now_us();
                next_conn += 1;
                let conn = next_conn;
                // The known writers' descriptors, at once (a few
                // processes: well under a millisecond).
                let first: Vec<u32> = known
                    .lock()
                    .map(|k| k.keys().copied().collect())
                    .unwrap_or_default();
                let pid = owner_of(peer, addr, Some(&first));
                let (w, d, c, up) = (w.clone(), d.clone(), c.clone(), upstream.clone());
                let (known, killed) = (known.clone(), killed.clone());
                tokio::spawn(async move {
                    let pid = match pid {
                        Some(p) => Some(p),
                        None => tokio::task::spawn_blocking(move || owner_of(peer, addr, None))
                            .await
                            .ok()
                            .flatten(),
                    };
                    let pid = pid.or_else(|| {
                        let writers = known.lock().ok()?.clone();
                        let ended = killed.lock().ok()?.clone();
                        let owner = exited_owner(accepted_us, &writers, &ended);
                        match owner {
                            Some(p) => tracing::info!(conn, %peer, pid = p, "proxy: the connection's owner was killed before the proxy looked; it is the only writer killed just before"),
                            None => tracing::warn!(conn, %peer, "proxy: no process owns the connection (it exited?)"),
                        }
                        owner
                    });
                    tokio::select! {
                        r = relay(client, &up, conn, pid, w, d) => {
                            if let Err(e) = r {
                                tracing::debug!(conn, "proxy connection ended: {e:#}");
                            }
                        }
                        _ = c.cancelled() => {}
                    }
                });
            }
        });
        Ok(Proxy {
            addr,
            writes,
            writers,
            ended,
            delay,
            cancel,
        })
    }

    /// Where the campaign records each writer it kills, before the signal.
    pub fn ended(&self) -> Ended {
        self.ended.clone()
    }

    /// The processes expected to write, looked at first when a connection
    /// is accepted: the campaign keeps it current.
    pub fn writers(&self) -> Writers {
        self.writers.clone()
    }

    /// A handle that sets the delays from elsewhere (a fault's task).
    pub fn delay(&self) -> Delay {
        self.delay.clone()
    }

    /// The writes so far, in forwarding order.
    pub fn writes(&self) -> Vec<Write> {
        self.writes.lock().map(|w| w.clone()).unwrap_or_default()
    }
}

/// Forwards one client connection: requests frame by frame (MBAP header,
/// then `length - 1` bytes), answers byte for byte.
async fn relay(
    client: TcpStream,
    upstream: &str,
    conn: u64,
    pid: Option<u32>,
    writes: Arc<Mutex<Vec<Write>>>,
    delay: Delay,
) -> anyhow::Result<()> {
    let server = TcpStream::connect(upstream)
        .await
        .with_context(|| format!("proxy: connecting to {upstream}"))?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // The member closes with zero linger (RST); the PLC side must see the
    // connection die the same way, not linger either.
    let _ = server.set_zero_linger();
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let requests = async {
        loop {
            let (head, pdu) = read_frame(&mut cr).await?;
            let wait = delay.request.load(Ordering::Relaxed);
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            let fc = pdu[0];
            if matches!(fc, 5 | 6 | 15 | 16) && pdu.len() >= 3 {
                let address = u16::from_be_bytes([pdu[1], pdu[2]]);
                if let Ok(mut w) = writes.lock() {
                    w.push(Write {
                        ts_us: now_us(),
                        conn,
                        pid,
                        fc,
                        address,
                    });
                }
            }
            sw.write_all(&head).await?;
            sw.write_all(&pdu).await?;
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    };
    let answers = async {
        loop {
            let (head, pdu) = read_frame(&mut sr).await?;
            let wait = delay.answer.load(Ordering::Relaxed);
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            cw.write_all(&head).await?;
            cw.write_all(&pdu).await?;
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    };
    tokio::select! {
        r = requests => r,
        r = answers => r,
    }
}

/// One Modbus TCP frame: the MBAP header, then `length - 1` bytes.
async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> anyhow::Result<([u8; 7], Vec<u8>)> {
    let mut head = [0u8; 7];
    r.read_exact(&mut head).await?;
    let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
    if !(2..=260).contains(&len) {
        anyhow::bail!("not a Modbus TCP frame (length {len})");
    }
    let mut pdu = vec![0u8; len - 1];
    r.read_exact(&mut pdu).await?;
    Ok((head, pdu))
}

/// The process owning the TCP socket whose local end is `client` and whose
/// remote end is `server`, from `/proc/net/tcp` and `/proc/<pid>/fd`:
/// among `among` only, or among every process.
fn owner_of(client: SocketAddr, server: SocketAddr, among: Option<&[u32]>) -> Option<u32> {
    let inode = socket_inode(client, server)?;
    let needle = format!("socket:[{inode}]");
    let owns = |pid: u32| {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .ok()
                .is_some_and(|t| t.to_string_lossy() == needle)
        })
    };
    if let Some(pids) = among {
        return pids.iter().copied().find(|&p| owns(p));
    }
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .find(|&p| owns(p))
}

/// `/proc/net/tcp`'s `ADDR:PORT` for an IPv4 socket address (the address
/// in host byte order of a little-endian machine, the port in hex).
fn proc_addr(a: SocketAddr) -> Option<String> {
    match a {
        SocketAddr::V4(v4) => {
            let ip = u32::from_le_bytes(v4.ip().octets());
            Some(format!("{ip:08X}:{:04X}", v4.port()))
        }
        SocketAddr::V6(_) => None,
    }
}

fn socket_inode(client: SocketAddr, server: SocketAddr) -> Option<u64> {
    let (local, remote) = (proc_addr(client)?, proc_addr(server)?);
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.get(1) == Some(&local.as_str()) && cols.get(2) == Some(&remote.as_str()))
            .then(|| cols.get(9).and_then(|i| i.parse().ok()))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_addresses_are_little_endian_hex() {
        let a: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        assert_eq!(proc_addr(a).as_deref(), Some("0100007F:1F90"));
    }

    #[test]
    fn a_connection_of_a_killed_writer_is_named_by_elimination() {
        let writers: BTreeMap<u32, String> = [(101, "a"), (102, "b"), (103, "a")]
            .into_iter()
            .map(|(p, m)| (p, m.to_owned()))
            .collect();
        let s = 1_000_000_000;
        // a (pid 101) killed 5 ms before the accept: its connection.
        assert_eq!(exited_owner(s, &writers, &[(101, s - 5_000)]), Some(101));
        // Both incarnations of a: still a (the latest).
        let both = [(101, s - 1_500_000), (103, s - 5_000)];
        assert_eq!(exited_owner(s, &writers, &both), Some(103));
        // a and b both killed just before: no telling which.
        assert_eq!(
            exited_owner(s, &writers, &[(101, s - 5_000), (102, s - 9_000)]),
            None
        );
        // Killed long before, or not a writer, or nobody killed: unknown.
        assert_eq!(exited_owner(s, &writers, &[(101, s - 3_000_000)]), None);
        assert_eq!(exited_owner(s, &writers, &[(999, s - 5_000)]), None);
        assert_eq!(exited_owner(s, &writers, &[]), None);
    }

    #[tokio::test]
    async fn the_owner_of_a_connection_is_this_process() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = listener.local_addr().expect("addr");
        let client = TcpStream::connect(server).await.expect("connect");
        let (_accepted, peer) = listener.accept().await.expect("accept");
        assert_eq!(peer, client.local_addr().expect("local"));
        let owner = tokio::task::spawn_blocking(move || owner_of(peer, server, None))
            .await
            .expect("join");
        assert_eq!(owner, Some(std::process::id()));
        let me = std::process::id();
        assert_eq!(owner_of(peer, server, Some(&[me])), Some(me));
        assert_eq!(owner_of(peer, server, Some(&[])), None);
    }
}
