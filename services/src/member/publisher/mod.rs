//! The origin's publisher: the one owner of the node's hash chain.
//!
//! Sources and command handlers hold a cheap [`Publisher`] handle and send
//! bodies over a bounded queue; one task seals each body into the chain
//! (seq, prev, epoch), appends it to the origin's own stream with
//! expected-last-sequence fencing, and confirms it once JetStream stored it
//! in place. When the stream is unavailable the task keeps what it sealed
//! and retries in order: events are late, never lost, never reordered.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::Context;
use bytes::Bytes;
use events::{Body, Chain};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

mod resync;

use super::metrics::Metrics;
use crate::append::{Batcher, Out};

/// Whether this member may write now (see the `fence` field of the task).
pub type Fence = adapters::poller::WriteGuard;

/// Signs checkpoints over the chain head: every `every_events` events, at
/// least every `every_ms` while events flow, right after the first event of
/// an activation (its role event) and when the publisher stops.
#[derive(Clone)]
pub struct Signer {
    /// The member's key pair (seed loaded at start).
    pub key: Arc<events::nkeys::KeyPair>,
    /// From the topology's `checkpoint.every_events`.
    pub every_events: u64,
    /// From the topology's `checkpoint.every_ms`.
    pub every_ms: u64,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key", &self.key.public_key())
            .finish()
    }
}

/// Bound of the request queue. Full = the stream cannot keep up; senders
/// wait (back-pressure reaches the PLC poll loop, which then polls later
/// rather than dropping a change).
const QUEUE: usize = 4096;
/// Most events in one atomic batch (see `crate::append::Batcher`).
const BATCH: usize = crate::append::BATCH;
/// Sealed but unconfirmed events kept for resending. Past it the task stops
/// taking new requests until the stream is back.
const MAX_PENDING: usize = 100_000;

/// Where an event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirmed {
    /// The epoch it was sealed under.
    pub epoch: u64,
    /// Its seq (== stream sequence).
    pub seq: u64,
}

/// Why a publish was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum PublishFailed {
    /// The publisher has stopped (member shutting down).
    #[error("the publisher has stopped")]
    Stopped,
}

struct Request {
    body: Body,
    done: Option<oneshot::Sender<Confirmed>>,
}

/// Handle on the publisher task.
#[derive(Debug, Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Request>,
    /// Last confirmed (epoch, seq).
    confirmed: watch::Receiver<Confirmed>,
}

impl Publisher {
    /// Publishes `body` and waits until it is stored.
    pub async fn publish(&self, body: Body) -> Result<Confirmed, PublishFailed> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request {
                body,
                done: Some(done),
            })
            .await
            .map_err(|_| PublishFailed::Stopped)?;
        rx.await.map_err(|_| PublishFailed::Stopped)
    }

    /// Queues `body` without waiting for storage (waits only for queue room).
    pub async fn submit(&self, body: Body) -> Result<(), PublishFailed> {
        self.tx
            .send(Request { body, done: None })
            .await
            .map_err(|_| PublishFailed::Stopped)
    }

    /// The last confirmed (epoch, seq).
    pub fn last(&self) -> Confirmed {
        *self.confirmed.borrow()
    }
}

struct Pending {
    seq: u64,
    /// Its epoch and the hash of `bytes`: its mark once confirmed, and its
    /// unique message id.
    epoch: u64,
    hash: events::Hash,
    subject: String,
    bytes: Bytes,
    done: Option<oneshot::Sender<Confirmed>>,
}

impl Pending {
    fn msg_id(&self, origin: &str) -> String {
        events::subjects::msg_id(origin, self.seq, &self.hash)
    }

    fn mark(&self) -> events::Mark {
        events::Mark {
            seq: self.seq,
            epoch: self.epoch,
            hash: self.hash,
        }
    }
}

/// The tail of the origin's own stream: its last sequence, read from the
/// stream's leader. A clustered stream without a leader (a pair whose
/// members both restarted) may be answered by a follower that is behind;
/// sealing after such a tail would fork the chain, so it is an error (the
/// caller asks again).
async fn leader_tail(stream: &mut Stream) -> anyhow::Result<u64> {
    let info = stream.info().await?;
    if let Some(c) = &info.cluster {
        if !c.replicas.is_empty() && c.leader.as_deref().unwrap_or("").is_empty() {
            anyhow::bail!("stream {} has no leader yet", info.config.name);
        }
    }
    Ok(info.state.last_sequence)
}

/// The last valid event of `origin`'s chain among stream sequences
/// `anchor.seq + 1 ..= to`, walking forward from `anchor` (a known valid
/// event; `None`: from the stream's first message) with the one chain
/// verifier every reader uses. A message that does not continue the chain
/// (garbage, a deposed member's append that arrived after the new
/// activation's first event, another history) is stepped over exactly as
/// the fold and the audit step over it, so the next event sealed onto the
/// result continues the chain that every reader follows; linking onto the
/// last message that merely decodes (as before) forked the chain for every
/// reader when that message was a late append.
///
/// `Ok(None)`: no valid event at all (an empty stream, or every message
/// foreign or expired). A failed read is an error (the caller retries),
/// never "no event": treating a timeout during a leader change as the end
/// of history would start a fresh link and break the chain.
async fn chain_head(
    js: &Context,
    stream: &mut Stream,
    origin: &str,
    anchor: Option<events::Mark>,
    to: u64,
    gate: Gate<'_>,
) -> anyhow::Result<Option<events::Mark>> {
    let first = stream.info().await?.state.first_sequence;
    // An anchor retention removed is no anchor: start from what is held.
    let anchor = anchor.filter(|m| m.seq >= first && m.seq <= to);
    let from = anchor.map(|m| m.seq + 1).unwrap_or(first.max(1));
    let mut verifier = events::EpochGate::after(origin, anchor, gate.opener.cloned());
    verifier.open_up_to(gate.ours);
    if from > to {
        return Ok(verifier.mark());
    }
    let mut messages = crate::pull::from_seq(js, &stream.cached_info().config.name, from).await?;
    let mut next = from;
    // Stepped over: how many, and the first (seq, why), logged once.
    let mut foreign: (u64, Option<(u64, String)>) = (0, None);
    while next <= to {
        let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .map_err(|_| anyhow::anyhow!("reading seq {next} of {origin}'s stream timed out"))?
            .ok_or_else(|| anyhow::anyhow!("reading {origin}'s stream ended at {next}"))?
            .map_err(|e| anyhow::anyhow!("reading seq {next} of {origin}'s stream: {e}"))?;
        let seq = msg
            .info()
            .map_err(|e| anyhow::anyhow!("message info: {e}"))?
            .stream_sequence;
        if seq != next {
            anyhow::bail!("{origin}'s stream skipped from {next} to {seq}");
        }
        for g in verifier.judge(seq, &msg.payload) {
            if let events::Gated::Foreign(seq, why) = g {
                foreign.0 += 1;
                foreign.1.get_or_insert((seq, why));
            }
        }
        next += 1;
    }
    if let (n, Some((seq, why))) = foreign {
        tracing::warn!(%origin, "{n} messages from seq {seq} on are not in the chain and were stepped over (the first: {why})");
    }
    if verifier.holding() > 0 {
        tracing::error!(%origin, held = verifier.holding(), "the stream's tail holds an epoch above ours that no checkpoint of this origin's keys opened: not taken for the chain head (an outsider's, or a newer member without its key)");
    }
    Ok(verifier.mark())
}

/// What a walk to the chain head takes as written by the origin: every
/// epoch up to `ours`, and a newer one only once a checkpoint signed with
/// a key `opener` accepts opens it (`None`: any newer one, the plaintext
/// tree).
#[derive(Clone, Copy)]
pub(crate) struct Gate<'a> {
    pub(crate) ours: u64,
    pub(crate) opener: Option<&'a events::Opener>,
}

/// How the epoch of the publisher's events is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epoch {
    /// An HA activation: exactly this epoch (granted by the pair's group,
    /// above every earlier one). A stream that already holds a newer epoch
    /// means this activation is deposed: the publisher does not start.
    Granted(u64),
    /// A single node: at least this epoch, or the newest the stream holds
    /// (a node that was once a pair keeps its history's epoch).
    AtLeast(u64),
}

/// Reads the chain head from the origin's own stream (resume after a
/// restart or a failover): the last valid event, found from `anchor` (the
/// fold's last verified event of this origin, if any) to the stream's tail.
async fn resume(
    js: &Context,
    origin: &str,
    member: &str,
    epoch: Epoch,
    anchor: Option<events::Mark>,
    opener: Option<&events::Opener>,
) -> anyhow::Result<(Chain, Option<events::Mark>)> {
    let name = events::subjects::stream_name(origin);
    let mut stream = js.get_stream(&name).await.context("own stream")?;
    let last = leader_tail(&mut stream).await?;
    let ours = match epoch {
        Epoch::Granted(e) | Epoch::AtLeast(e) => e,
    };
    let head = chain_head(js, &mut stream, origin, anchor, last, Gate { ours, opener }).await?;
    let epoch = match (epoch, head) {
        (Epoch::Granted(e), Some(h)) if h.epoch > e => anyhow::bail!(
            "the stream of {origin} holds epoch {} above this activation's {e}: deposed",
            h.epoch
        ),
        (Epoch::Granted(e), _) => e,
        (Epoch::AtLeast(e), h) => e.max(h.map(|h| h.epoch).unwrap_or(0)),
    };
    let chain = match head {
        Some(h) => Chain::resume(origin, member, epoch, last, h.hash),
        None if last == 0 => Chain::new(origin, member, epoch),
        // No valid event left (all expired or foreign): start a fresh link
        // after the stream's tail so seq == stream sequence still holds.
        None => Chain::resume(origin, member, epoch, last, events::ZERO_HASH),
    };
    Ok((chain, head))
}

/// Starts the publisher of `origin` on its own stream.
// Each argument is a distinct piece of the member's identity or wiring; a
// struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    js: Context,
    origin: String,
    member: String,
    epoch: Epoch,
    anchor: Option<events::Mark>,
    fence: Fence,
    signer: Option<Signer>,
    opener: Option<events::Opener>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> anyhow::Result<(Publisher, tokio::task::JoinHandle<()>)> {
    let (chain, valid) = resume(&js, &origin, &member, epoch, anchor, opener.as_ref()).await?;
    let head = Confirmed {
        epoch: chain.epoch(),
        seq: chain.next_seq() - 1,
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let (ctx, crx) = watch::channel(head);
    let task = Task {
        batcher: Batcher::new(js.clone()),
        js,
        origin,
        member,
        chain,
        valid,
        pending: VecDeque::new(),
        unsent: 0,
        confirmed: ctx,
        metrics,
        fence,
        signer,
        opener,
        unsigned: 0,
        unsigned_since: None,
        checkpoints: 0,
    };
    let handle = tokio::spawn(task.run(rx, cancel));
    Ok((Publisher { tx, confirmed: crx }, handle))
}

struct Task {
    js: Context,
    /// One atomic batch in flight at a time.
    batcher: Batcher,
    origin: String,
    member: String,
    chain: Chain,
    /// The last event of the origin's chain known to be in the stream (the
    /// resumed head, then every confirmed event): where a walk to find the
    /// chain head after a foreign message starts.
    valid: Option<events::Mark>,
    /// Sealed, not yet confirmed, oldest first. `pending[..len-unsent]` are in flight
    /// (one batch).
    pending: VecDeque<Pending>,
    /// How many of the newest pending are not sent yet (sealed while a batch
    /// was in flight, or after a reset).
    unsent: usize,
    confirmed: watch::Sender<Confirmed>,
    metrics: Arc<Metrics>,
    /// Checked right before every append: false once this member may no
    /// longer write (an HA member whose lease ran out). The publisher then
    /// stops at once; what it had not appended is dropped, and was never
    /// acknowledged to anyone.
    fence: Fence,
    /// Checkpoint signing, when the member has a key.
    signer: Option<Signer>,
    /// Which keys open a newer epoch found in the stream (see [`Gate`]).
    opener: Option<events::Opener>,
    /// Events sealed since the last checkpoint.
    unsigned: u64,
    /// When (µs, the `ts` clock) the oldest of them was sealed.
    unsigned_since: Option<u64>,
    /// Checkpoints sealed by this publisher.
    checkpoints: u64,
}

impl Task {
    async fn run(self, rx: mpsc::Receiver<Request>, cancel: CancellationToken) {
        let span = tracing::info_span!("publisher", origin = %self.origin, member = %self.member);
        tracing::Instrument::instrument(self.serve(rx, cancel), span).await
    }

    async fn serve(mut self, mut rx: mpsc::Receiver<Request>, cancel: CancellationToken) {
        let mut open = true;
        let every = self
            .signer
            .as_ref()
            .map(|s| s.every_ms.max(1))
            .unwrap_or(3_600_000);
        let mut checkpoint_tick = tokio::time::interval(Duration::from_millis(every));
        checkpoint_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // An activation first signs the history it takes over, so the
        // unsigned tail of the one before (a member killed before it could
        // sign; for a single node the same epoch goes on after a restart)
        // is covered before this activation writes anything.
        if self.signer.is_some() && self.chain.next_seq() > 1 && (self.fence)() {
            self.checkpoint(&cancel).await;
        }
        loop {
            if !(self.fence)() {
                self.drop_pending("lease lost: the publisher stops appending");
                return;
            }
            // Everything queued goes out as the next batch once the one in
            // flight is answered.
            if self.unsent > 0 && !self.batcher.is_busy() && (self.fence)() {
                if let Err(e) = self.send_batch().await {
                    self.recover(&e.to_string(), &cancel).await;
                    continue;
                }
            }
            // New requests are sealed while a batch is in flight: they form
            // the next one.
            let can_take = open && self.pending.len() < MAX_PENDING;
            tokio::select! {
                biased;
                _ = cancel.cancelled(), if open => {
                    // Drain: take nothing new, confirm what is in flight.
                    open = false;
                    rx.close();
                }
                ack = self.batcher.next_ack(), if self.batcher.is_busy() => {
                    match ack {
                        Ok(seq) => self.confirm(seq),
                        Err(e) => self.recover(&e.to_string(), &cancel).await,
                    }
                }
                req = rx.recv(), if can_take => {
                    match req {
                        Some(req) => {
                            if self.checkpoint_overdue() {
                                // After a stall (a recovery, a slow stream)
                                // the queued requests would be sealed before
                                // the timer's checkpoint: sign first, so no
                                // event is followed by a much younger one
                                // while still unsigned.
                                self.checkpoint(&cancel).await;
                            }
                            self.seal_and_send(req, &cancel).await;
                            self.unsigned += 1;
                            self.unsigned_since.get_or_insert_with(now_us);
                            let due = self.signer.as_ref().is_some_and(|s| {
                                self.checkpoints == 0 || self.unsigned >= s.every_events.max(1)
                            });
                            if due {
                                self.checkpoint(&cancel).await;
                            }
                        }
                        None => open = false,
                    }
                }
                _ = checkpoint_tick.tick(), if open && self.unsigned > 0 && self.signer.is_some() => {
                    self.checkpoint(&cancel).await;
                }
            }
            if !open && self.unsigned > 0 && self.signer.is_some() && (self.fence)() {
                // The last word of this activation is a signature.
                self.checkpoint(&cancel).await;
            }
            if !open && self.pending.is_empty() {
                return;
            }
            if !open && cancel.is_cancelled() && !self.batcher.is_busy() && self.unsent > 0 {
                // Shutting down with the stream unavailable: the unsent
                // events are lost with this process only if it never comes
                // back; they were never acknowledged to anyone.
                self.drop_pending("stopping with unsent events");
                return;
            }
        }
    }

    async fn seal_and_send(&mut self, req: Request, cancel: &CancellationToken) {
        let ts = now_us();
        let subject = events::subjects::event_subject(&self.origin, req.body.subject_token());
        let sealed = match self.chain.seal(ts, req.body) {
            Ok(s) => s,
            Err(e) => {
                // A body no reader could accept (bad name, oversized): refuse
                // it here rather than occupy a seq nobody can fold past.
                self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!("refusing to publish an invalid event: {e}");
                return;
            }
        };
        let seq = sealed.event.seq;
        let bytes = Bytes::from(sealed.bytes);
        let pending = Pending {
            seq,
            epoch: sealed.event.epoch,
            hash: sealed.hash,
            subject: subject.clone(),
            bytes: bytes.clone(),
            done: req.done,
        };
        self.pending.push_back(pending);
        // Sent with the next batch (at once if none is in flight).
        self.unsent += 1;
        if !self.batcher.is_busy() && (self.fence)() {
            if let Err(e) = self.send_batch().await {
                self.recover(&e.to_string(), cancel).await;
            }
        }
    }

    /// Sends the oldest unsent pending events (at most [`BATCH`]) as one
    /// atomic batch.
    async fn send_batch(&mut self) -> Result<(), crate::append::AppendError> {
        let from = self.pending.len() - self.unsent;
        let n = self.unsent.min(BATCH);
        let batch: Vec<Out> = self
            .pending
            .range(from..from + n)
            .map(|p| Out {
                subject: p.subject.clone(),
                msg_id: p.msg_id(&self.origin),
                seq: p.seq,
                payload: p.bytes.clone(),
            })
            .collect();
        self.batcher.send(&batch).await?;
        self.unsent -= n;
        Ok(())
    }

    /// Seals a checkpoint signing the current chain head.
    async fn checkpoint(&mut self, cancel: &CancellationToken) {
        let Some(signer) = self.signer.clone() else {
            return;
        };
        let head_seq = self.chain.next_seq() - 1;
        if head_seq == 0 {
            return;
        }
        let Some(body) = self.sign_head(&signer) else {
            return;
        };
        self.unsigned = 0;
        self.unsigned_since = None;
        self.checkpoints += 1;
        self.seal_and_send(
            Request {
                body: Body::Checkpoint(body),
                done: None,
            },
            cancel,
        )
        .await;
    }

    /// Gives up every event sealed and not confirmed (never acknowledged to
    /// anyone), counting them: the next activation announces every point
    /// afresh, so the state is right again after it.
    fn drop_pending(&mut self, why: &str) {
        let n = self.pending.len() as u64;
        if n > 0 {
            self.metrics.dropped.fetch_add(n, Ordering::Relaxed);
        }
        tracing::warn!(dropped = n, "{why}");
        self.pending.clear();
        self.unsent = 0;
    }

    /// Events are unsigned for longer than the checkpoint interval.
    fn checkpoint_overdue(&self) -> bool {
        match (&self.signer, self.unsigned_since) {
            (Some(s), Some(since)) if self.unsigned > 0 => {
                now_us().saturating_sub(since) >= s.every_ms.saturating_mul(1000)
            }
            _ => false,
        }
    }

    /// A checkpoint over the chain's current head (the last sealed event).
    fn sign_head(&self, signer: &Signer) -> Option<events::CheckpointBody> {
        match events::sign_checkpoint(
            &signer.key,
            &self.origin,
            &self.member,
            self.chain.epoch(),
            self.chain.next_seq() - 1,
            self.chain.last_hash(),
        ) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!("cannot sign a checkpoint: {e}");
                None
            }
        }
    }

    fn confirm(&mut self, seq: u64) {
        while let Some(front) = self.pending.front() {
            if front.seq > seq {
                break;
            }
            if let Some(p) = self.pending.pop_front() {
                self.valid = Some(p.mark());
                let c = Confirmed {
                    epoch: p.epoch,
                    seq: p.seq,
                };
                if let Some(done) = p.done {
                    let _ = done.send(c);
                }
                self.metrics.published.fetch_add(1, Ordering::Relaxed);
                let _ = self.confirmed.send(c);
            }
        }
    }
}

/// Unix time in microseconds.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
