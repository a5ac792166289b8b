//! The real TCP transport: three voters on loopback, on free ports, elect
//! exactly one active; the raft listener refuses connections that do not
//! identify as a voter from the voter's address.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Context;
use common::stable;
use common::wait_views;
use common::SETTLE;
use raft::Hello;
use raft::NodeId;
use raft::Pair;
use raft::PairConfig;
use raft::Peer;
use raft::Timing;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

async fn frame(stream: &mut TcpStream, json: &serde_json::Value) -> anyhow::Result<()> {
    let body = serde_json::to_vec(json)?;
    stream.write_all(&(body.len() as u32).to_be_bytes()).await?;
    stream.write_all(&body).await?;
    Ok(())
}

/// True if the server closed the connection (EOF or reset) without a reply.
async fn closed(stream: &mut TcpStream) -> anyhow::Result<bool> {
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(SETTLE, stream.read(&mut buf))
        .await
        .context("server neither replied nor closed")?;
    Ok(matches!(read, Ok(0) | Err(_)))
}

async fn read_reply(stream: &mut TcpStream) -> anyhow::Result<serde_json::Value> {
    let len = tokio::time::timeout(SETTLE, stream.read_u32()).await??;
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

async fn connect_from(local: &str, to: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{local}:0").parse()?)?;
    Ok(socket.connect(to).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_voters_over_tcp_elect_one_active_and_refuse_strangers() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut peers = BTreeMap::new();
    for id in [1u64, 2, 3] {
        peers.insert(
            id,
            Peer {
                name: format!("n{id}"),
                host: "127.0.0.1".into(),
                raft_port: free_port()?,
            },
        );
    }
    let cancel = CancellationToken::new();
    let mut pairs: Vec<(NodeId, Pair)> = Vec::new();
    let mut handles = Vec::new();
    for id in [1u64, 2, 3] {
        let cfg = PairConfig {
            mesh: "plant".into(),
            node: "line1".into(),
            me: id,
            peers: peers.clone(),
            data_dir: root.path().join(format!("n{id}")),
            prefer: None,
            timing: Timing::default(),
        };
        let (pair, handle) = Pair::start(cfg, cancel.child_token()).await?;
        pairs.push((id, pair));
        handles.push(handle);
    }
    let rxs = pairs.iter().map(|(id, p)| (*id, p.view())).collect();
    let views = wait_views(rxs, "one active over TCP", SETTLE, stable).await?;
    assert!(!views[&3].me_active);
    let target = &pairs[0].1;
    let addr: SocketAddr = format!("127.0.0.1:{}", peers[&1].raft_port).parse()?;

    // Unknown voter id.
    let mut s = TcpStream::connect(addr).await?;
    let hello = serde_json::json!({"mesh": "plant", "node": "line1", "from_id": 9});
    frame(&mut s, &hello).await?;
    assert!(
        closed(&mut s).await?,
        "a hello with an unknown id is refused"
    );
    // The server counts before it closes.
    assert_eq!(target.metrics().rejected_connections, 1);

    // Right id, wrong mesh.
    let mut s = TcpStream::connect(addr).await?;
    let hello = Hello {
        mesh: "other".into(),
        node: "line1".into(),
        from_id: 2,
    };
    frame(&mut s, &serde_json::to_value(&hello)?).await?;
    assert!(closed(&mut s).await?);
    assert_eq!(target.metrics().rejected_connections, 2);

    // Right id and mesh, wrong source address (127.0.0.2 is loopback too,
    // but voter 2 is configured at 127.0.0.1).
    let mut s = connect_from("127.0.0.2", addr).await?;
    let hello = Hello {
        mesh: "plant".into(),
        node: "line1".into(),
        from_id: 2,
    };
    frame(&mut s, &serde_json::to_value(&hello)?).await?;
    assert!(closed(&mut s).await?);
    assert_eq!(target.metrics().rejected_connections, 3);

    // Garbage instead of a hello.
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    assert!(closed(&mut s).await?);
    assert_eq!(target.metrics().rejected_connections, 4);

    // A proper hello is served: a forwarded request of voter 2's own gets
    // a reply frame (a release by a process that is not active: fenced, or
    // "not the leader"), and one that only a leader may propose is refused.
    let mut s = connect_from("127.0.0.1", addr).await?;
    frame(&mut s, &serde_json::to_value(&hello)?).await?;
    let own =
        serde_json::json!({"Forward": {"Release": {"member": 2, "incarnation": 1, "epoch": 0}}});
    frame(&mut s, &own).await?;
    let reply = read_reply(&mut s).await?;
    assert!(
        reply.get("Forward").is_some() || reply.get("NotLeader").is_some(),
        "unexpected reply {reply}"
    );
    frame(&mut s, &serde_json::json!({"Forward": "Probe"})).await?;
    let reply = read_reply(&mut s).await?;
    assert!(
        reply
            .get("Failed")
            .and_then(|v| v.as_str())
            .is_some_and(|why| why.contains("refused")),
        "unexpected reply {reply}"
    );
    assert_eq!(target.metrics().rejected_connections, 4);
    assert_eq!(target.metrics().rejected_forwards, 1);

    cancel.cancel();
    for h in handles {
        tokio::time::timeout(SETTLE, h).await??;
    }
    for (_, p) in &pairs {
        assert!(!p.lease().is_valid());
    }
    Ok(())
}
