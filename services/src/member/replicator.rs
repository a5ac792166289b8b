//! The replica puller: keeps this node's copy of a descendant origin's
//! stream, seq for seq, by pulling from the child on the path to it.
//!
//! Why canopy pulls instead of using JetStream mirrors: a mirror that lost
//! its upstream retries after 30 s and backs off to 2 min (catch-up measured
//! at 11-41 s), and a mirror stores whatever the upstream holds. The puller
//! resumes from its own last sequence within seconds of the link healing and
//! appends with the same expected-last-sequence fencing as the origin, so
//! the replica's stream sequence is the origin's seq at every level.
//! Replicas are byte-faithful copies, foreign messages included, so that an
//! auditor anywhere sees exactly what the origin's stream held; the fold of
//! every node verifies each message before it touches the state.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use async_nats::jetstream::{self, Context};
use async_nats::Client;
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use crate::append::Appender;

/// Appends in flight into the local replica.
const WINDOW: usize = 2048;
/// During catch-up, one append in this many asks for an ack (see
/// `crate::append`); the last one of what the source holds always does.
const ACK_EVERY: u64 = 256;

/// One puller: `origin`'s stream from `source_domain` into the local replica.
#[derive(Debug, Clone)]
pub struct Puller {
    /// This node (the holder of the replica).
    pub holder: String,
    /// The origin replicated.
    pub origin: String,
    /// The JetStream domain of the child the events come from.
    pub source_domain: String,
}

impl Puller {
    /// Runs until `cancel`, reconnecting and resuming by itself.
    pub async fn run(
        self,
        client: Client,
        local: Context,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
    ) {
        let span = tracing::info_span!("puller", origin = %self.origin, from = %self.source_domain);
        tracing::Instrument::instrument(self.serve(client, local, metrics, cancel), span).await
    }

    async fn serve(
        self,
        client: Client,
        local: Context,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
    ) {
        // Short API timeout: a consumer create that the meta leader placed
        // on a server that just died never answers; asking again soon gets
        // a live placement sooner than waiting out a long timeout.
        let remote = jetstream::ContextBuilder::new()
            .domain(&self.source_domain)
            .timeout(Duration::from_millis(1000))
            .build(client);
        let mut backoff = Duration::from_millis(100);
        loop {
            let res = tokio::select! {
                r = self.pull_once(&remote, &local, &metrics, &cancel) => r,
                _ = cancel.cancelled() => return,
            };
            match res {
                Ok(()) => return,
                Err(e) => {
                    metrics.pull_restarts.fetch_add(1, Ordering::Relaxed);
                    // The link or the source is down: retry soon. The cap is
                    // low on purpose: catch-up must start within a second of
                    // the link healing.
                    tracing::debug!("pull interrupted: {e:#}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancel.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_millis(400));
                }
            }
            if cancel.is_cancelled() {
                return;
            }
        }
    }

    /// One session: from the local tail, pull and append until an error.
    async fn pull_once(
        &self,
        remote: &Context,
        local: &Context,
        metrics: &Metrics,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        let name = events::subjects::stream_name(&self.origin);
        let mut mine = local.get_stream(&name).await.context("local replica")?;
        let tail = mine.info().await?.state.last_sequence;
        let mut source = remote.get_stream(&name).await.context("source stream")?;
        let first = source.info().await?.state.first_sequence;
        if tail == 0 && first > 1 {
            // The source's history starts later (retention): start there too,
            // so stream sequence == seq still holds here.
            mine.purge()
                .sequence(first)
                .await
                .context("aligning empty replica")?;
        } else if tail > 0 && first > tail + 1 {
            bail!(
                "source lost events {}..{} to retention before they reached here",
                tail + 1,
                first - 1
            );
        }
        let mut messages = crate::pull::from_seq(&source, tail + 1)
            .await
            .context("starting the pull")?;
        let mut appender = Appender::new(local.clone(), WINDOW);
        let mut expected = tail + 1;
        let mut confirmed = tail;
        loop {
            tokio::select! {
                ack = appender.next_ack(), if !appender.is_empty() => {
                    let seq = ack?;
                    metrics.replicated.fetch_add(seq - confirmed, Ordering::Relaxed);
                    confirmed = seq;
                }
                msg = messages.next(), if !appender.is_full() => {
                    let Some(msg) = msg else { bail!("pull ended") };
                    let msg = msg.map_err(|e| anyhow::anyhow!("pull: {e}"))?;
                    let info = msg.info().map_err(|e| anyhow::anyhow!("message info: {e}"))?;
                    let (seq, pending) = (info.stream_sequence, info.pending);
                    if seq != expected {
                        // Deleted at the source: seq alignment cannot be kept.
                        bail!("source skipped from {expected} to {seq}");
                    }
                    let token = msg.subject.rsplit('.').next().unwrap_or("_").to_owned();
                    let subject = events::subjects::replica_subject(&self.holder, &self.origin, &token);
                    let payload: Bytes = msg.payload.clone();
                    let ack = pending == 0 || seq.is_multiple_of(ACK_EVERY) || appender.window_left() <= 1;
                    appender.send(subject, None, seq, payload, ack).await?;
                    expected += 1;
                }
                _ = cancel.cancelled() => return Ok(()),
            }
        }
    }
}
