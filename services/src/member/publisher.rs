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
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use crate::append::Appender;

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
/// Appends in flight towards JetStream.
const WINDOW: usize = 256;
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
    subject: String,
    bytes: Bytes,
    done: Option<oneshot::Sender<Confirmed>>,
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

/// The last valid event of `origin` at or below `from` in its stream
/// (walking back over foreign messages): its hash and epoch, what the next
/// event must chain onto. None when there is none left (empty, expired,
/// all foreign).
///
/// A read that fails above the stream's first sequence is an error, not
/// the end of history: treating a timeout during a leader change as
/// "expired" would start a fresh link (zero `prev`) and break the chain.
async fn last_valid(
    stream: &mut Stream,
    origin: &str,
    from: u64,
) -> anyhow::Result<Option<(events::Hash, u64)>> {
    let first = stream.info().await?.state.first_sequence;
    let mut seq = from;
    while seq > 0 && seq >= first {
        match stream.get_raw_message(seq).await {
            Ok(msg) => {
                if let Ok(ev) = events::decode(&msg.payload) {
                    if ev.origin == origin && ev.seq == seq {
                        return Ok(Some((events::hash(&msg.payload), ev.epoch)));
                    }
                }
                seq -= 1;
            }
            Err(e) => anyhow::bail!("reading seq {seq} of {origin}'s stream: {e}"),
        }
    }
    // Below the first sequence: expired by retention, nothing to link to.
    Ok(None)
}

/// Reads the chain head from the origin's own stream (resume after restart).
async fn resume(js: &Context, origin: &str, member: &str, epoch: u64) -> anyhow::Result<Chain> {
    let name = events::subjects::stream_name(origin);
    let mut stream = js.get_stream(&name).await.context("own stream")?;
    let last = leader_tail(&mut stream).await?;
    match last_valid(&mut stream, origin, last).await? {
        Some((hash, ev_epoch)) => {
            let e = epoch.max(ev_epoch);
            let mut chain = Chain::resume(origin, member, e, last, hash);
            chain.set_epoch(e).ok();
            Ok(chain)
        }
        None if last == 0 => Ok(Chain::new(origin, member, epoch)),
        // No valid event left (all expired or foreign): start a fresh link
        // after the stream's tail so seq == stream sequence still holds.
        None => Ok(Chain::resume(
            origin,
            member,
            epoch,
            last,
            events::ZERO_HASH,
        )),
    }
}

/// Starts the publisher of `origin` on its own stream.
// Each argument is a distinct piece of the member's identity or wiring; a
// struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    js: Context,
    origin: String,
    member: String,
    epoch: u64,
    fence: Fence,
    signer: Option<Signer>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> anyhow::Result<(Publisher, tokio::task::JoinHandle<()>)> {
    let chain = resume(&js, &origin, &member, epoch).await?;
    let head = Confirmed {
        epoch,
        seq: chain.next_seq() - 1,
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let (ctx, crx) = watch::channel(head);
    let task = Task {
        appender: Appender::new(js.clone(), WINDOW),
        js,
        origin,
        member,
        chain,
        pending: VecDeque::new(),
        unsent: 0,
        confirmed: ctx,
        metrics,
        fence,
        signer,
        unsigned: 0,
        checkpoints: 0,
    };
    let handle = tokio::spawn(task.run(rx, cancel));
    Ok((Publisher { tx, confirmed: crx }, handle))
}

struct Task {
    js: Context,
    appender: Appender,
    origin: String,
    member: String,
    chain: Chain,
    /// Sealed, not yet confirmed, oldest first. `pending[..len-unsent]` are in flight.
    pending: VecDeque<Pending>,
    /// How many of the newest pending are not sent yet (after a reset).
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
    /// Events sealed since the last checkpoint.
    unsigned: u64,
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
        loop {
            if !(self.fence)() {
                tracing::warn!(
                    pending = self.pending.len(),
                    "lease lost: the publisher stops appending"
                );
                return;
            }
            // Send what was queued by a recovery, within the window.
            while self.unsent > 0 && !self.appender.is_full() && (self.fence)() {
                let idx = self.pending.len() - self.unsent;
                let p = &self.pending[idx];
                let res = self
                    .appender
                    .send(
                        p.subject.clone(),
                        Some(msg_id(&self.origin, p.seq)),
                        p.seq,
                        p.bytes.clone(),
                        true,
                    )
                    .await;
                if let Err(e) = res {
                    self.recover(&e.to_string(), &cancel).await;
                    continue;
                }
                self.unsent -= 1;
            }
            let can_take = open
                && self.unsent == 0
                && !self.appender.is_full()
                && self.pending.len() < MAX_PENDING;
            tokio::select! {
                biased;
                _ = cancel.cancelled(), if open => {
                    // Drain: take nothing new, confirm what is in flight.
                    open = false;
                    rx.close();
                }
                ack = self.appender.next_ack(), if !self.appender.is_empty() => {
                    match ack {
                        Ok(seq) => self.confirm(seq),
                        Err(e) => self.recover(&e.to_string(), &cancel).await,
                    }
                }
                req = rx.recv(), if can_take => {
                    match req {
                        Some(req) => {
                            self.seal_and_send(req, &cancel).await;
                            self.unsigned += 1;
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
            if !open && cancel.is_cancelled() && self.appender.is_empty() && self.unsent > 0 {
                // Shutting down with the stream unavailable: the unsent
                // events are lost with this process only if it never comes
                // back; they were never acknowledged to anyone.
                tracing::warn!(unsent = self.unsent, "stopping with unsent events");
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
        self.pending.push_back(Pending {
            seq,
            subject: subject.clone(),
            bytes: bytes.clone(),
            done: req.done,
        });
        if !(self.fence)() {
            // Kept unsent; the run loop sees the fence and stops.
            self.unsent += 1;
            return;
        }
        if let Err(e) = self
            .appender
            .send(subject, Some(msg_id(&self.origin, seq)), seq, bytes, true)
            .await
        {
            self.unsent += 1;
            self.recover(&e.to_string(), cancel).await;
        }
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
        let body = match events::sign_checkpoint(
            &signer.key,
            &self.origin,
            &self.member,
            self.chain.epoch(),
            head_seq,
            self.chain.last_hash(),
        ) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot sign a checkpoint: {e}");
                return;
            }
        };
        self.unsigned = 0;
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

    fn confirm(&mut self, seq: u64) {
        while let Some(front) = self.pending.front() {
            if front.seq > seq {
                break;
            }
            if let Some(p) = self.pending.pop_front() {
                let c = Confirmed {
                    epoch: self.chain.epoch(),
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

    /// After a failed append: find out what the stream holds, confirm what
    /// landed, and queue the rest for resending in order.
    async fn recover(&mut self, why: &str, cancel: &CancellationToken) {
        self.metrics.publish_retries.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("append failed ({why}); resynchronising with the stream");
        self.appender.reset();
        let name = events::subjects::stream_name(&self.origin);
        let mut backoff = Duration::from_millis(50);
        loop {
            // A closed fence ends the recovery: the serve loop then stops
            // without appending (the pending events were never confirmed).
            if !(self.fence)() || (cancel.is_cancelled() && self.pending.is_empty()) {
                return;
            }
            match self.stream_tail(&name).await {
                Ok((mut stream, last)) => {
                    self.reconcile(&mut stream, last).await;
                    self.unsent = self.pending.len();
                    return;
                }
                Err(e) => {
                    tracing::debug!("stream {name} not available: {e:#}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancel.cancelled() => {
                            // Keep trying to flush for a short grace on shutdown.
                            tokio::time::sleep(backoff).await;
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    async fn stream_tail(&mut self, name: &str) -> anyhow::Result<(Stream, u64)> {
        let mut s = self.js.get_stream(name).await?;
        let last = leader_tail(&mut s).await?;
        Ok((s, last))
    }

    /// Confirms pending events the stream already holds (byte-identical) and
    /// re-seals the rest when a foreign message took their place.
    async fn reconcile(&mut self, stream: &mut Stream, last: u64) {
        while let Some(front) = self.pending.front() {
            if front.seq > last {
                break;
            }
            let seq = front.seq;
            match stream.get_raw_message(seq).await {
                Ok(m) if m.payload == front.bytes => self.confirm(seq),
                _ => {
                    // Another message holds this sequence (a foreign one, or
                    // an event of the origin this publisher did not write):
                    // re-seal everything pending after the stream's tail.
                    self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        seq,
                        "another message occupies our stream; re-sealing after it"
                    );
                    match last_valid(stream, &self.origin, last).await {
                        Ok(link) => self.reseal_after(last, link),
                        // Not re-sealed now: the next append fails and the
                        // recovery runs again.
                        Err(e) => tracing::warn!("cannot read the chain head: {e:#}"),
                    }
                    return;
                }
            }
        }
        if let Some(front) = self.pending.front() {
            if front.seq != last + 1 {
                tracing::error!(
                    expected = front.seq,
                    tail = last,
                    "stream tail moved; re-sealing"
                );
                match last_valid(stream, &self.origin, last).await {
                    Ok(link) => self.reseal_after(last, link),
                    Err(e) => tracing::warn!("cannot read the chain head: {e:#}"),
                }
            }
        }
    }

    /// Re-seals every pending event after the stream's tail `last`,
    /// chained onto `link`: the last valid event of the origin the stream
    /// holds (hash, epoch), which may be another member's. Without one
    /// (all foreign or expired), onto the last event this publisher had
    /// confirmed.
    fn reseal_after(&mut self, last: u64, link: Option<(events::Hash, u64)>) {
        let epoch = self.chain.epoch();
        let last_hash = match link {
            Some((hash, link_epoch)) => {
                if link_epoch > epoch {
                    // A newer epoch wrote it: this member is deposed, and
                    // its fence stops the appends before any lands.
                    tracing::error!(link_epoch, epoch, "the stream holds a newer epoch");
                }
                hash
            }
            None => self.last_confirmed_hash(),
        };
        self.chain = Chain::resume(&self.origin, &self.member, epoch, last, last_hash);
        let old: Vec<Pending> = self.pending.drain(..).collect();
        for p in old {
            match events::decode(&p.bytes) {
                Ok(ev) => match self.chain.seal(ev.ts, ev.body) {
                    Ok(sealed) => self.pending.push_back(Pending {
                        seq: sealed.event.seq,
                        subject: p.subject,
                        bytes: Bytes::from(sealed.bytes),
                        done: p.done,
                    }),
                    Err(e) => tracing::error!("cannot re-seal our own event: {e}"),
                },
                Err(e) => tracing::error!("cannot re-seal our own event: {e}"),
            }
        }
    }

    fn last_confirmed_hash(&self) -> events::Hash {
        // The chain's last hash is that of the newest sealed event; the
        // newest confirmed one is the prev of the oldest pending.
        match self
            .pending
            .front()
            .and_then(|p| events::decode(&p.bytes).ok())
        {
            Some(ev) => ev.prev,
            None => self.chain.last_hash(),
        }
    }
}

fn msg_id(origin: &str, seq: u64) -> String {
    format!("{origin}:{seq}")
}

/// Unix time in microseconds.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
