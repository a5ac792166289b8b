//! Raw probes of a server port, below any NATS client library: does the
//! port speak to a peer with this certificate (or none, or in plaintext)?
//!
//! A TLS 1.3 server refuses a client certificate only after the client's
//! half of the handshake is done, so a refusal shows on the first read.
//! After the handshake the probe sends an unknown protocol operation:
//! a server that accepted the session answers (`INFO` on client and
//! leafnode ports, which speak first; `-ERR` on a route port), so every
//! answer is a line from the server and no verdict rests on a timeout.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// How long a probe waits for the server's answer or for it to hang up.
const DEADLINE: Duration = Duration::from_secs(10);

/// What a TLS probe met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Met {
    /// The session was established and the server sent this first line.
    Line(String),
    /// The server ended the session before sending a line: the TLS error
    /// (an alert such as `CertificateRequired`) or `eof`.
    Refused(String),
}

impl Met {
    /// Whether the server accepted the session and spoke NATS.
    pub fn accepted(&self) -> bool {
        matches!(self, Met::Line(l) if l.starts_with("INFO ") || l.starts_with("-ERR "))
    }
}

/// A TLS probe of `addr`: trusts only `ca`, presents `identity`
/// (certificate and key files) when given. Every listener of the secured
/// tree handshakes first (a route port too: nats-server sends nothing
/// before a route's TLS handshake).
pub async fn tls(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> anyhow::Result<Met> {
    tls_session(addr, ca, identity, None).await
}

/// What a probe does once its TLS session is up; returns what it saw.
type Session = Box<
    dyn FnOnce(
            tokio_rustls::client::TlsStream<TcpStream>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = anyhow::Result<String>> + Send>,
        > + Send,
>;

async fn tls_session(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    session: Option<Session>,
) -> anyhow::Result<Met> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).with_context(|| format!("{}", ca.display()))? {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("{}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()?;
            let key =
                PrivateKeyDer::from_pem_file(key).with_context(|| format!("{}", key.display()))?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = match tokio::time::timeout(DEADLINE, connector.connect(name, tcp)).await {
        Err(_) => anyhow::bail!("{addr}: no TLS handshake within {DEADLINE:?}"),
        Ok(Err(e)) => return Ok(Met::Refused(e.to_string())),
        Ok(Ok(s)) => s,
    };
    if let Some(session) = session {
        return session(tls).await.map(Met::Line);
    }
    // An unknown operation: a route answers it with -ERR; a refused session
    // shows its alert on this write or the read after it.
    if let Err(e) = tls.write_all(b"CANOPY-PROBE\r\n").await {
        return Ok(Met::Refused(e.to_string()));
    }
    match first_line(&mut tls).await {
        Ok(line) => Ok(Met::Line(line)),
        Err(e) => Ok(Met::Refused(format!("{e:#}"))),
    }
}

/// A plaintext probe of `addr`: sends a NATS CONNECT and PING without TLS
/// and returns everything the server sent until it hung up (an error if it
/// kept the connection open past the deadline).
pub async fn plaintext(addr: SocketAddr) -> anyhow::Result<String> {
    let mut tcp = TcpStream::connect(addr).await?;
    let _ = tcp.write_all(b"CONNECT {}\r\nPING\r\n").await;
    let (hung_up, text) = until_hang_up(&mut tcp).await;
    anyhow::ensure!(
        hung_up,
        "{addr}: kept a plaintext session open for {DEADLINE:?}, having sent {text:?}"
    );
    Ok(text)
}

/// Everything the peer sends until it hangs up, and whether it did within
/// the deadline.
async fn until_hang_up<S: AsyncRead + Unpin>(s: &mut S) -> (bool, String) {
    let mut got = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    (read.is_ok(), String::from_utf8_lossy(&got).into_owned())
}

/// The first CRLF-terminated line the peer sends (an error if it hangs up
/// or says nothing within the deadline).
async fn first_line<S: AsyncRead + Unpin>(s: &mut S) -> anyhow::Result<String> {
    let mut got = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        let mut b = [0u8; 1];
        while !got.ends_with(b"\r\n") {
            anyhow::ensure!(s.read(&mut b).await? == 1, "eof");
            got.push(b[0]);
            anyhow::ensure!(got.len() < 64 * 1024, "a line longer than 64 KiB");
        }
        Ok(())
    })
    .await
    .context("no line within the deadline")??;
    Ok(String::from_utf8_lossy(&got).trim_end().to_owned())
}

/// A raw leafnode session to a leafnode port as `identity` (a child's
/// stolen certificate, say): below any nats-server, so nothing filters what
/// it sends by the permissions the hub announces. It reads the hub's INFO,
/// sends a leaf CONNECT and a PING, waits for the PONG, then sends `LMSG`
/// of `payload` on `subject` and returns everything the hub sent after it
/// until it hung up (an error if it kept the link open past the deadline).
pub async fn leaf_inject(
    addr: SocketAddr,
    identity: &services::certs::TlsFiles,
    subject: &str,
    payload: &[u8],
) -> anyhow::Result<String> {
    let mut frame = format!("LMSG {subject} {}\r\n", payload.len()).into_bytes();
    frame.extend_from_slice(payload);
    frame.extend_from_slice(b"\r\n");
    leaf_send(addr, identity, frame).await
}

/// [`leaf_inject`]'s session, asking instead for `subject`'s messages
/// (`LS+`), as a leaf that wants to see what is not sent its way.
pub async fn leaf_subscribe(
    addr: SocketAddr,
    identity: &services::certs::TlsFiles,
    subject: &str,
) -> anyhow::Result<String> {
    leaf_send(addr, identity, format!("LS+ {subject}\r\n").into_bytes()).await
}

/// A raw leaf session that sends `frame` once linked; see [`leaf_inject`].
async fn leaf_send(
    addr: SocketAddr,
    identity: &services::certs::TlsFiles,
    frame: Vec<u8>,
) -> anyhow::Result<String> {
    let session: Session = Box::new(move |mut tls| {
        Box::pin(async move {
            let info = first_line(&mut tls).await?;
            anyhow::ensure!(info.starts_with("INFO "), "expected INFO, got {info:?}");
            tls.write_all(
                b"CONNECT {\"tls_required\":true,\"name\":\"canopy-probe\",\"headers\":true}\r\nPING\r\n",
            )
            .await?;
            // Up once the hub answers the PING (it may send INFO, LS+ and a
            // PING of its own first); a refusal shows as -ERR and hang-up.
            loop {
                let line = first_line(&mut tls).await?;
                anyhow::ensure!(
                    !line.starts_with("-ERR"),
                    "the hub refused the link: {line}"
                );
                if line == "PONG" {
                    break;
                }
                if line == "PING" {
                    tls.write_all(b"PONG\r\n").await?;
                }
            }
            tls.write_all(&frame).await?;
            let (hung_up, text) = until_hang_up(&mut tls).await;
            anyhow::ensure!(
                hung_up,
                "the hub kept the link open for {DEADLINE:?} after the message, having sent {text:?}"
            );
            Ok(text)
        })
    });
    match tls_session(
        addr,
        &identity.ca,
        Some((&identity.cert, &identity.key)),
        Some(session),
    )
    .await?
    {
        Met::Line(text) => Ok(text),
        Met::Refused(why) => anyhow::bail!("{addr}: the TLS session was refused: {why}"),
    }
}
