//! Talking to a running tree: connections, JSON requests, whole streams.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value as Json;

/// The client certificate a test presents to the `tls://` servers of the
/// labs it started (each test is its own process under nextest).
static IDENTITIES: std::sync::Mutex<Vec<(String, services::certs::TlsFiles)>> =
    std::sync::Mutex::new(Vec::new());

/// Presents `tls` to every server whose URL starts with `prefix` (a lab's
/// `tls://host:port` URLs; [`crate::Lab::start`] registers its members').
pub fn trust(prefix: &str, tls: services::certs::TlsFiles) {
    if let Ok(mut ids) = IDENTITIES.lock() {
        ids.push((prefix.to_owned(), tls));
    }
}

/// Connects to a NATS URL: over TLS with the registered certificate when
/// the URL is `tls://`.
pub async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    let tls = if url.starts_with("tls://") {
        let ids = IDENTITIES
            .lock()
            .map_err(|_| anyhow::anyhow!("identity registry poisoned"))?;
        Some(
            ids.iter()
                .rev()
                .find(|(p, _)| url.starts_with(p.as_str()))
                .map(|(_, t)| t.clone())
                .with_context(|| format!("no client certificate registered for {url}"))?,
        )
    } else {
        None
    };
    services::nats::options(tls.as_ref())
        .connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// What a server refused on one connection, in order: its `-ERR` lines
/// (permission violations, authorization failures), and `disconnected`
/// when it closed the connection.
#[derive(Debug, Clone, Default)]
pub struct Refusals(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Refusals {
    /// Waits (with a deadline) for a refusal whose text contains `what`,
    /// case-insensitively, and returns it: the server's verdict, not a
    /// timeout of ours.
    pub async fn wait(&self, what: &str) -> anyhow::Result<String> {
        let what = what.to_lowercase();
        crate::wait_for(
            &format!("the server to refuse {what:?}"),
            Duration::from_secs(20),
            || async {
                let seen = self.0.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                Ok(seen
                    .iter()
                    .find(|e| e.to_lowercase().contains(&what))
                    .cloned())
            },
        )
        .await
    }

    /// Every refusal so far.
    pub fn all(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Connects to a `tls://` URL as the certificate `tls` (a member's, a
/// client's), keeping what the server refuses on this connection.
pub async fn connect_as(
    url: &str,
    tls: &services::certs::TlsFiles,
) -> anyhow::Result<(async_nats::Client, Refusals)> {
    let refusals = Refusals::default();
    let seen = refusals.0.clone();
    let client = services::nats::options(Some(tls))
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                let said = match event {
                    async_nats::Event::ServerError(e) => e.to_string(),
                    async_nats::Event::ClientError(e) => e.to_string(),
                    async_nats::Event::Disconnected => "disconnected".to_owned(),
                    _ => return,
                };
                if let Ok(mut v) = seen.lock() {
                    v.push(said);
                }
            }
        })
        .connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok((client, refusals))
}

/// A JSON request/reply with a timeout.
pub async fn request(
    client: &async_nats::Client,
    subject: &str,
    body: &str,
) -> anyhow::Result<Json> {
    let msg = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(subject.to_owned(), body.to_owned().into()),
    )
    .await
    .context("request timed out")?
    .map_err(|e| anyhow::anyhow!("request {subject}: {e}"))?;
    Ok(serde_json::from_slice(&msg.payload)?)
}

/// A node's state (JSON) through any server of the tree.
pub async fn state(client: &async_nats::Client, node: &str) -> anyhow::Result<Json> {
    request(client, &format!("canopy.state.{node}"), "").await
}

/// A member's info (pid, nats_pid, counters).
pub async fn member_info(
    client: &async_nats::Client,
    node: &str,
    member: &str,
) -> anyhow::Result<Json> {
    request(client, &format!("canopy.member.{node}.{member}"), "").await
}

/// Reads every message of stream `EV_<origin>` in `domain`, in order:
/// (stream sequence, payload).
pub async fn read_stream(
    client: &async_nats::Client,
    domain: &str,
    origin: &str,
) -> anyhow::Result<Vec<(u64, Vec<u8>)>> {
    use async_nats::jetstream::consumer::{pull, DeliverPolicy};
    use futures::StreamExt;
    let js = async_nats::jetstream::with_domain(client.clone(), domain);
    let mut stream = js.get_stream(events::subjects::stream_name(origin)).await?;
    let last = stream.info().await?.state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return Ok(out);
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut msgs = consumer.messages().await?;
    while let Some(m) = tokio::time::timeout(Duration::from_secs(10), msgs.next()).await? {
        let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
        let seq = m
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        out.push((seq, m.payload.to_vec()));
        if seq >= last {
            break;
        }
    }
    Ok(out)
}

/// Checks that `msgs` are `origin`'s events 1..=n, each at its own seq, with
/// an unbroken hash chain and epochs never going back (the strict
/// [`events::verify_contiguous`]). Returns n.
pub fn check_contiguous_chain(origin: &str, msgs: &[(u64, Vec<u8>)]) -> anyhow::Result<u64> {
    Ok(events::verify_contiguous(
        origin,
        msgs.iter().map(|(s, b)| (*s, b.as_slice())),
    )?)
}
