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

/// Three voters on loopback, on free ports, each with the TLS `tls` gives
/// it; stopped through `cancel`.
struct Voters {
    _root: tempfile::TempDir,
    peers: BTreeMap<NodeId, Peer>,
    cancel: CancellationToken,
    pairs: Vec<(NodeId, Pair)>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Voters {
    async fn start(
        tls: impl Fn(NodeId) -> anyhow::Result<Option<std::sync::Arc<raft::RaftTls>>>,
    ) -> anyhow::Result<Voters> {
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
                tls: tls(id)?,
            };
            let (pair, handle) = Pair::start(cfg, cancel.child_token()).await?;
            pairs.push((id, pair));
            handles.push(handle);
        }
        Ok(Voters {
            _root: root,
            peers,
            cancel,
            pairs,
            handles,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_voters_over_tcp_elect_one_active_and_refuse_strangers() -> anyhow::Result<()> {
    let Voters {
        _root,
        peers,
        cancel,
        pairs,
        handles,
    } = Voters::start(|_| Ok(None)).await?;
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

/// A certificate and its key, both PEM.
type Pem = (String, String);

/// A CA and, per name, a certificate of it (server and client auth) with
/// that name as its DNS SAN: (CA PEM, name → its certificate).
fn mesh_certs(names: &[&str]) -> anyhow::Result<(String, BTreeMap<String, Pem>)> {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);
    let mut out = BTreeMap::new();
    for name in names {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(vec![name.to_string()])?;
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &issuer)?;
        out.insert(name.to_string(), (cert.pem(), key.serialize_pem()));
    }
    Ok((ca_pem, out))
}

/// A TLS connection to `addr` that expects the server certificate of
/// `server_name` from `ca_pem` and presents `cert` / `key`.
async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    server_name: &str,
    cert: &Pem,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let chain = CertificateDer::pem_slice_iter(cert.0.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(cert.1.as_bytes())?;
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)?;
    let tcp = connect_from("127.0.0.1", addr).await?;
    Ok(
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(ServerName::try_from(server_name.to_owned())?, tcp)
            .await?,
    )
}

async fn tls_frame(
    s: &mut tokio_rustls::client::TlsStream<TcpStream>,
    json: &serde_json::Value,
) -> anyhow::Result<()> {
    let body = serde_json::to_vec(json)?;
    s.write_all(&(body.len() as u32).to_be_bytes()).await?;
    s.write_all(&body).await?;
    s.flush().await?;
    Ok(())
}

/// True if the server closed the TLS connection (or the handshake failed)
/// without a reply.
async fn tls_closed(s: &mut tokio_rustls::client::TlsStream<TcpStream>) -> anyhow::Result<bool> {
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(SETTLE, s.read(&mut buf))
        .await
        .context("server neither replied nor closed")?;
    Ok(matches!(read, Ok(0) | Err(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn voters_over_mutual_tls_elect_one_active_and_refuse_any_other_certificate(
) -> anyhow::Result<()> {
    let names: BTreeMap<NodeId, String> = [1u64, 2, 3]
        .into_iter()
        .map(|id| (id, format!("n{id}.line1.canopy")))
        .collect();
    let all: Vec<&str> = names.values().map(String::as_str).collect();
    let (ca, certs) = mesh_certs(&all)?;
    let (_, other) = mesh_certs(&["n2.line1.canopy"])?;
    let Voters {
        _root,
        peers,
        cancel,
        pairs,
        handles,
    } = Voters::start(|id| {
        let (cert, key) = &certs[&names[&id]];
        let tls = raft::RaftTls::new(
            ca.as_bytes(),
            cert.as_bytes(),
            key.as_bytes(),
            names.clone(),
        )?;
        Ok(Some(std::sync::Arc::new(tls)))
    })
    .await?;
    let rxs = pairs.iter().map(|(id, p)| (*id, p.view())).collect();
    let views = wait_views(rxs, "one active over mutual TLS", SETTLE, stable).await?;
    assert!(!views[&3].me_active);
    let target = &pairs[0].1;
    let before = target.metrics().rejected_connections;
    let addr: SocketAddr = format!("127.0.0.1:{}", peers[&1].raft_port).parse()?;
    let hello2 = serde_json::to_value(Hello {
        mesh: "plant".into(),
        node: "line1".into(),
        from_id: 2,
    })?;

    // A plaintext hello, right in every other way: answered with at most a
    // TLS alert (record type 21), then closed; counted.
    let mut s = connect_from("127.0.0.1", addr).await?;
    frame(&mut s, &hello2).await?;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(SETTLE, s.read_to_end(&mut got))
        .await
        .context("the server neither answered nor closed")?;
    assert!(
        got.first().is_none_or(|&b| b == 21),
        "a plaintext hello got {got:?}"
    );
    assert_eq!(target.metrics().rejected_connections, before + 1);

    // A certificate of another CA for the right name: the handshake fails.
    let refused = match tls_connect(addr, &ca, &names[&1], &other["n2.line1.canopy"]).await {
        Err(_) => true,
        Ok(mut s) => {
            let _ = tls_frame(&mut s, &hello2).await;
            tls_closed(&mut s).await?
        }
    };
    assert!(refused, "a certificate of another CA is refused");
    wait_for_count(target, before + 2).await?;

    // The mesh's own CA, but the witness's certificate with a hello as
    // voter 2: refused (the certificate must name the voter).
    let mut s = tls_connect(addr, &ca, &names[&1], &certs[&names[&3]]).await?;
    tls_frame(&mut s, &hello2).await?;
    assert!(
        tls_closed(&mut s).await?,
        "another voter's certificate is refused"
    );
    wait_for_count(target, before + 3).await?;

    // Voter 2's certificate and hello: served.
    let mut s = tls_connect(addr, &ca, &names[&1], &certs[&names[&2]]).await?;
    tls_frame(&mut s, &hello2).await?;
    tls_frame(&mut s, &serde_json::json!({"Forward": "Probe"})).await?;
    let len = tokio::time::timeout(SETTLE, s.read_u32()).await??;
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).await?;
    let reply: serde_json::Value = serde_json::from_slice(&body)?;
    assert!(reply.get("Failed").is_some(), "a reply frame: {reply}");
    assert_eq!(target.metrics().rejected_connections, before + 3);

    cancel.cancel();
    for h in handles {
        tokio::time::timeout(SETTLE, h).await??;
    }
    Ok(())
}

/// Waits until `pair` has refused `n` connections (the count follows the
/// close the client saw by a moment).
async fn wait_for_count(pair: &Pair, n: u64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    while pair.metrics().rejected_connections < n {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{} refused connections, expected {n}",
            pair.metrics().rejected_connections
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(pair.metrics().rejected_connections, n);
    Ok(())
}
