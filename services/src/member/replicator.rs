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

use async_nats::jetstream::{self, Context};
use async_nats::Client;
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use crate::append::Appender;
use crate::wire::TroubleKind;

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
                Err(Stop::Diverged { seq, why }) => {
                    // Copying on would mix two histories in one replica:
                    // stop, loudly, until an operator repairs it.
                    metrics.diverged.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(seq, "replica diverged from its source: {why}; not copying (see ARCHITECTURE.md, Repairs)");
                    metrics
                        .troubles
                        .set(&self.origin, TroubleKind::ReplicaDiverged, seq, why);
                    cancel.cancelled().await;
                    return;
                }
                Err(Stop::Stalled { seq, why }) => {
                    metrics.pull_restarts.fetch_add(1, Ordering::Relaxed);
                    if !metrics
                        .troubles
                        .has(&self.origin, TroubleKind::ReplicaStalled)
                    {
                        tracing::warn!(seq, "replica stalled: {why}");
                    }
                    metrics
                        .troubles
                        .set(&self.origin, TroubleKind::ReplicaStalled, seq, why);
                }
                Err(Stop::Interrupted(e)) => {
                    metrics.pull_restarts.fetch_add(1, Ordering::Relaxed);
                    // The link or the source is down: retry soon.
                    tracing::debug!("pull interrupted: {e:#}");
                }
            }
            // The cap is low on purpose: catch-up must start within a
            // second of the link healing.
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = cancel.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_millis(400));
            if cancel.is_cancelled() {
                return;
            }
        }
    }

    /// Compares what this replica holds with the source before copying on:
    /// the source must hold this replica's last message, byte for byte (a
    /// child that lost its disk and started a new history at seq 1 holds
    /// other bytes, or fewer messages), and must still hold the next one
    /// (retention may have removed it at the source before it got here).
    async fn check_source(
        &self,
        mine: &mut jetstream::stream::Stream,
        source: &mut jetstream::stream::Stream,
        tail: u64,
    ) -> Result<(), Stop> {
        let state = source.info().await.map_err(interrupted)?.state.clone();
        if tail == 0 {
            return Ok(());
        }
        if state.last_sequence < tail {
            // The source holds less than this replica: a child restoring
            // its lost history (it copies it back from here, seq by seq)
            // is behind for a moment; one that started another history
            // holds other bytes. Only other bytes are a divergence.
            let at = state.last_sequence;
            if at == 0 || at < state.first_sequence {
                return Err(Stop::Stalled {
                    seq: tail + 1,
                    why: "the source holds nothing yet (restoring its history?)".to_owned(),
                });
            }
            let theirs = source.get_raw_message(at).await.map_err(interrupted)?;
            let ours = mine.get_raw_message(at).await.map_err(interrupted)?;
            if theirs.payload != ours.payload {
                return Err(Stop::Diverged {
                    seq: at,
                    why: format!(
                        "seq {at} at the source holds other bytes than this replica (the source ends at {at}, this replica at {tail}): the source's history was replaced"
                    ),
                });
            }
            return Err(Stop::Stalled {
                seq: tail + 1,
                why: format!(
                    "the source is behind this replica ({at} of {tail}: restoring its history?)"
                ),
            });
        }
        if state.first_sequence > tail + 1 {
            return Err(Stop::Stalled {
                seq: tail + 1,
                why: format!(
                    "the source lost events {}..{} to retention before they reached here",
                    tail + 1,
                    state.first_sequence - 1
                ),
            });
        }
        if state.first_sequence > tail {
            return Ok(()); // our last is expired there: nothing to compare
        }
        let theirs = source.get_raw_message(tail).await.map_err(interrupted)?;
        let ours = mine.get_raw_message(tail).await.map_err(interrupted)?;
        if theirs.payload != ours.payload {
            return Err(Stop::Diverged {
                seq: tail,
                why: format!("seq {tail} at the source holds other bytes than this replica"),
            });
        }
        Ok(())
    }

    /// One session: from the local tail, pull and append until an error.
    async fn pull_once(
        &self,
        remote: &Context,
        local: &Context,
        metrics: &Metrics,
        cancel: &CancellationToken,
    ) -> Result<(), Stop> {
        let name = events::subjects::stream_name(&self.origin);
        let mut mine = local.get_stream(&name).await.map_err(interrupted)?;
        let tail = mine.info().await.map_err(interrupted)?.state.last_sequence;
        let mut source = remote.get_stream(&name).await.map_err(interrupted)?;
        self.check_source(&mut mine, &mut source, tail).await?;
        let first = source
            .info()
            .await
            .map_err(interrupted)?
            .state
            .first_sequence;
        if tail == 0 && first > 1 {
            // The source's history starts later (retention): this replica
            // starts there too, so stream sequence == seq still holds. An
            // empty stream is created again with its first sequence (the
            // streams deny purges, so no purge can align it).
            let mut config = mine.info().await.map_err(interrupted)?.config.clone();
            config.first_sequence = Some(first);
            local.delete_stream(&name).await.map_err(interrupted)?;
            local.create_stream(config).await.map_err(interrupted)?;
            tracing::info!(first, "replica created at the source's first sequence");
        }
        metrics
            .troubles
            .clear(&self.origin, TroubleKind::ReplicaStalled);
        let mut messages = crate::pull::follow(remote, &name, tail + 1)
            .await
            .map_err(interrupted)?;
        let mut appender = Appender::new(local.clone(), WINDOW);
        let mut expected = tail + 1;
        let mut confirmed = tail;
        loop {
            tokio::select! {
                ack = appender.next_ack(), if !appender.is_empty() => {
                    let seq = ack.map_err(interrupted)?;
                    metrics.replicated.fetch_add(seq - confirmed, Ordering::Relaxed);
                    confirmed = seq;
                }
                msg = messages.next(), if !appender.is_full() => {
                    let Some(msg) = msg else { return Err(Stop::Interrupted(anyhow::anyhow!("pull ended"))) };
                    let msg = msg.map_err(|e| Stop::Interrupted(anyhow::anyhow!("pull: {e}")))?;
                    let info = msg.info().map_err(|e| Stop::Interrupted(anyhow::anyhow!("message info: {e}")))?;
                    let (seq, pending) = (info.stream_sequence, info.pending);
                    if seq != expected {
                        // Deleted at the source: seq alignment cannot be kept.
                        return Err(Stop::Stalled {
                            seq: expected,
                            why: format!("the source skipped from {expected} to {seq} (a deleted message)"),
                        });
                    }
                    let token = msg.subject.rsplit('.').next().unwrap_or("_").to_owned();
                    let subject = events::subjects::replica_subject(&self.holder, &self.origin, &token);
                    let payload: Bytes = msg.payload.clone();
                    let ack = pending == 0 || seq.is_multiple_of(ACK_EVERY) || appender.window_left() <= 1;
                    appender.send(subject, None, seq, payload, ack).await.map_err(interrupted)?;
                    expected += 1;
                }
                _ = cancel.cancelled() => return Ok(()),
            }
        }
    }
}

/// Why a pull session ended.
#[derive(Debug)]
enum Stop {
    /// A link, a server or a call failed: retry soon.
    Interrupted(anyhow::Error),
    /// The source cannot give what comes next (retention, a deleted
    /// message): retry, reported as stalled.
    Stalled { seq: u64, why: String },
    /// The source and this replica hold different histories: stop.
    Diverged { seq: u64, why: String },
}

fn interrupted(e: impl std::fmt::Display) -> Stop {
    Stop::Interrupted(anyhow::anyhow!("{e}"))
}
