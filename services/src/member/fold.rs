//! The node's materialised state: the fold of its local streams.
//!
//! One feeder task per local stream (the node's own, and one replica per
//! descendant origin) reads it in order from the start and sends verified
//! events to the single owner of the [`events::State`]; the same owner
//! answers state requests on `canopy.state.<node>`. Because the state is
//! derived only from what the local streams hold, a restarted node rebuilds
//! exactly the same state by reading them again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::Context;
use async_nats::Client;
use events::{Applied, Event, State};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use super::verify::{Cursor, Verdict};

/// Bound of the feeders → owner queue; a full queue holds the feeders back
/// (JetStream keeps the events, nothing is dropped).
const QUEUE: usize = 4096;

enum Feed {
    /// A valid event at its stream sequence.
    Event(Box<Event>),
    /// A foreign message occupies `seq` of `origin`'s stream.
    Foreign { origin: String, seq: u64 },
}

/// Options of a state request (the JSON body; empty means all).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateRequest {
    /// NATS-style pattern over full point names (`root.south.>`).
    #[serde(default)]
    pub pattern: Option<String>,
    /// Reply with the digest only.
    #[serde(default)]
    pub digest: bool,
}

/// Starts the feeders and the owner; returns when the owner stops.
pub async fn run(
    client: Client,
    js: Context,
    node: String,
    member: String,
    origins: Vec<String>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel(QUEUE);
    for origin in origins {
        tokio::spawn(feeder(
            js.clone(),
            origin,
            tx.clone(),
            metrics.clone(),
            cancel.clone(),
        ));
    }
    drop(tx);
    let mut requests = client
        .queue_subscribe(
            events::subjects::state_subject(&node),
            "canopy-state".to_owned(),
        )
        .await
        .context("subscribing to state requests")?;
    let mut state = State::default();
    loop {
        tokio::select! {
            feed = rx.recv() => match feed {
                Some(Feed::Event(ev)) => {
                    if let Applied::Gap { .. } = state.apply(&ev) {
                        metrics.gaps.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(origin = %ev.origin, seq = ev.seq, "gap in the fold");
                    }
                }
                Some(Feed::Foreign { origin, seq }) => state.skip(&origin, seq),
                None => return Ok(()),
            },
            req = requests.next() => {
                let Some(req) = req else { return Ok(()) };
                let Some(reply) = req.reply.clone() else { continue };
                let body = answer(&state, &node, &member, &req.payload);
                let _ = client.publish(reply, body.into()).await;
            }
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}

fn answer(state: &State, node: &str, member: &str, payload: &[u8]) -> Vec<u8> {
    let req: StateRequest = if payload.iter().all(|b| b.is_ascii_whitespace()) {
        StateRequest::default()
    } else {
        match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                return serde_json::json!({"error": format!("bad state request: {e}")})
                    .to_string()
                    .into_bytes()
            }
        }
    };
    let view = match &req.pattern {
        Some(p) => state.filter(p),
        None => state.clone(),
    };
    let mut v = if req.digest {
        serde_json::json!({ "digest": view.digest() })
    } else {
        serde_json::to_value(&view).unwrap_or_default()
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert("node".into(), node.into());
        obj.insert("member".into(), member.into());
    }
    v.to_string().into_bytes()
}

/// Reads one local stream in order, forever, feeding the owner.
async fn feeder(
    js: Context,
    origin: String,
    tx: mpsc::Sender<Feed>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut next = 1u64;
    let mut cursor = Cursor::new(&origin);
    let mut backoff = Duration::from_millis(100);
    loop {
        let res = tokio::select! {
            r = feed_once(&js, &origin, &mut next, &mut cursor, &tx, &metrics) => r,
            _ = cancel.cancelled() => return,
        };
        if let Err(e) = res {
            tracing::debug!(%origin, "feeder interrupted: {e:#}");
        }
        if tx.is_closed() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

async fn feed_once(
    js: &Context,
    origin: &str,
    next: &mut u64,
    cursor: &mut Cursor,
    tx: &mpsc::Sender<Feed>,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let stream = js.get_stream(events::subjects::stream_name(origin)).await?;
    let mut messages = crate::pull::from_seq(&stream, *next).await?;
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| anyhow::anyhow!("{e}"))?;
        let seq = msg
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        let feed = match cursor.judge(seq, &msg.payload) {
            Verdict::Valid(ev) => Feed::Event(ev),
            Verdict::Foreign(why) => {
                let n = metrics.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                if super::metrics::worth_logging(n) {
                    tracing::warn!(%origin, seq, "not folded ({n} so far): {why}");
                }
                Feed::Foreign {
                    origin: origin.to_owned(),
                    seq,
                }
            }
        };
        if tx.send(feed).await.is_err() {
            return Ok(());
        }
        *next = seq + 1;
    }
    anyhow::bail!("stream read ended")
}
