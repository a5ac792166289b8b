//! Seq-fenced appends to one JetStream stream: the pipeline of the
//! replica pullers ([`Appender`]) and the atomic batches of the origin's
//! publisher ([`Batcher`]).
//!
//! Both write "message n" into a stream whose sequence must come out as
//! exactly n. Each append (for a batch, its first message) carries
//! `Nats-Expected-Last-Sequence: n-1`, so the stream itself refuses
//! anything out of place (a deposed member's late publish, a replay, a lost
//! message ahead of it). The publisher also gives every sealed event its
//! own `Nats-Msg-Id` (`<origin>:<seq>:<hash prefix>`, unique per sealed
//! event, so a re-sealed event or another writer's message never shares an
//! id) and never takes a `duplicate` ack for a confirmation: only a byte
//! compare of what the stream holds confirms an event.
//!
//! Pullers pipeline: the expected sequence of every message is known in
//! advance, so up to `window` are in flight and their acks are awaited in
//! order. An append may go without a reply ([`Appender::send`] with `ack`
//! false). The server handles a connection's messages to one stream in
//! order and every message carries its expected last sequence, so a
//! refused append (a lost message ahead of it, a full store) leaves the
//! stream short and every later append fails its expectation too, up to the
//! next acknowledged one, whose error surfaces; the caller then re-reads
//! the tail and resends. An ack of seq n stored at n thus confirms the run
//! before it. The one thing sparse acks do not tell is a *foreign* writer
//! taking a seq on the stream's subjects: the next append then lands on top
//! of it, exactly as it would after a refused, acknowledged append and a
//! resend from the new tail, so per-message acks would keep no more; the
//! foreign message stays at its seq, where the fold steps over it and an
//! audit reports it. Why the publisher does not pipeline: see [`Batcher`].

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::pin::Pin;

use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::Context;
use bytes::Bytes;

type AckFuture = Pin<Box<dyn Future<Output = Result<PublishAck, PublishError>> + Send>>;

/// Why an append did not land where it should.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The publish could not be sent (connection down, no stream responder).
    #[error("publishing seq {seq}: {source}")]
    Send {
        /// The seq that failed.
        seq: u64,
        /// The client's error.
        source: PublishError,
    },
    /// An unacknowledged append could not be sent (connection down).
    #[error("publishing seq {seq}: {reason}")]
    Unsent {
        /// The seq that failed.
        seq: u64,
        /// The client's error.
        reason: String,
    },
    /// The stream answered with an error (wrong last sequence, unavailable, timeout).
    #[error("stream refused seq {seq}: {source}")]
    Refused {
        /// The seq that was refused.
        seq: u64,
        /// The client's error, carrying the server's description.
        source: PublishError,
    },
    /// The stream answered "duplicate": it holds a message with this
    /// message id (at `stored`). Never a confirmation by itself: only a byte
    /// compare of what the stream holds tells whether it is this message.
    #[error("seq {seq}: the stream holds a message with its id at {stored} (duplicate)")]
    Duplicate {
        /// The message's own seq.
        seq: u64,
        /// Where the stream holds the message it took for the same one.
        stored: u64,
    },
    /// The stream stored the message at another sequence than its seq.
    #[error("seq {seq} was stored at stream sequence {stored}")]
    Misplaced {
        /// The message's own seq.
        seq: u64,
        /// Where the stream put it.
        stored: u64,
    },
}

/// An in-flight pipeline of appends to one stream.
pub struct Appender {
    /// JetStream context of the stream's domain.
    js: Context,
    /// Maximum appends in flight; the caller stops sending when `is_full`.
    window: usize,
    /// In-flight acknowledged appends, oldest first: their seq, ack, and
    /// how many appends the ack confirms (itself and the unacknowledged
    /// ones just before it).
    inflight: VecDeque<(u64, AckFuture, usize)>,
    /// Appends sent without a reply since the last acknowledged one.
    unacked: usize,
    /// Appends not yet confirmed by an ack (acknowledged or covered by a
    /// later one): what the window bounds.
    outstanding: usize,
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender")
            .field("window", &self.window)
            .field("inflight", &self.inflight.len())
            .finish()
    }
}

impl Appender {
    /// A pipeline into `js` with at most `window` appends in flight.
    pub fn new(js: Context, window: usize) -> Self {
        Self {
            js,
            window: window.max(1),
            inflight: VecDeque::new(),
            unacked: 0,
            outstanding: 0,
        }
    }

    /// True when no further append may be sent before an ack is taken.
    pub fn is_full(&self) -> bool {
        self.outstanding >= self.window
    }

    /// How many more appends the window takes.
    pub fn window_left(&self) -> usize {
        self.window.saturating_sub(self.outstanding)
    }

    /// True when no acknowledged append is in flight (unacknowledged ones
    /// may be: the caller must end a run of them with an acknowledged one).
    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty()
    }

    /// Sends message `seq` (expected to land at stream sequence `seq`),
    /// asking for an ack or not (see the module documentation).
    pub async fn send(
        &mut self,
        subject: String,
        msg_id: Option<String>,
        seq: u64,
        payload: Bytes,
        ack: bool,
    ) -> Result<(), AppendError> {
        if !ack {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
                (seq - 1).to_string().as_str(),
            );
            if let Some(id) = msg_id {
                headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
            }
            self.js
                .client()
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| AppendError::Unsent {
                    seq,
                    reason: e.to_string(),
                })?;
            self.unacked += 1;
            self.outstanding += 1;
            return Ok(());
        }
        let mut msg = PublishMessage::build()
            .payload(payload)
            .expected_last_sequence(seq - 1);
        if let Some(id) = msg_id {
            msg = msg.message_id(id);
        }
        let ack = self
            .js
            .send_publish(subject, msg)
            .await
            .map_err(|source| AppendError::Send { seq, source })?;
        self.inflight
            .push_back((seq, Box::pin(ack.into_future()), self.unacked + 1));
        self.unacked = 0;
        self.outstanding += 1;
        Ok(())
    }

    /// Waits for the oldest acknowledged append; returns its seq once
    /// stored in place (which confirms every append before it).
    /// Cancel-safe: a dropped call leaves the ack in the queue. Pends
    /// forever when nothing is in flight (use it in `select!` guarded by
    /// `!is_empty()`).
    pub async fn next_ack(&mut self) -> Result<u64, AppendError> {
        let Some((seq, fut, covers)) = self.inflight.front_mut() else {
            return std::future::pending().await;
        };
        let (seq, covers) = (*seq, *covers);
        let res = fut.await;
        self.inflight.pop_front();
        self.outstanding = self.outstanding.saturating_sub(covers);
        match res {
            Ok(ack) if ack.duplicate => Err(AppendError::Duplicate {
                seq,
                stored: ack.sequence,
            }),
            Ok(ack) if ack.sequence == seq => Ok(seq),
            Ok(ack) => Err(AppendError::Misplaced {
                seq,
                stored: ack.sequence,
            }),
            Err(source) => Err(AppendError::Refused { seq, source }),
        }
    }

    /// Forgets everything in flight (after an error the caller re-reads the
    /// stream's last sequence and resends from there).
    pub fn reset(&mut self) {
        self.inflight.clear();
        self.unacked = 0;
        self.outstanding = 0;
    }
}

/// One message of a [`Batcher`] batch.
#[derive(Debug, Clone)]
pub struct Out {
    /// The subject it is published on.
    pub subject: String,
    /// Its `Nats-Msg-Id`.
    pub msg_id: String,
    /// The seq it must land at.
    pub seq: u64,
    /// Its bytes.
    pub payload: Bytes,
}

/// Atomic appends of consecutive messages, one batch in flight at a time:
/// the writer of an origin's chain (the publisher).
///
/// Why not the pipeline of [`Appender`]: there, when the stream's tail is
/// not where the writer thinks (a stale tail read from a leader that had
/// not applied everything; a deposed member's late append that slipped in),
/// the first append is refused but a later one in flight, expecting exactly
/// the real tail, lands: an event chained onto one that was refused, in
/// the middle of the stream. For replica pullers that is harmless (what
/// lands at seq n is the source's message n), for the chain's writer it
/// is a fragment every reader must step over. A JetStream atomic batch
/// (ADR-50; `allow_atomic` streams) is stored entirely or not at all, and
/// only its first message carries the expected last sequence; with one
/// batch in flight, a refused batch is never followed by one that lands
/// on the wrong tail. The batch is the unit of pipelining instead: while
/// one is in flight the writer queues, and the next batch takes everything
/// queued (up to [`BATCH`]), so a busy origin writes few large batches
/// (one fsync each with `sync = "always"`) and a quiet one single events.
pub struct Batcher {
    js: Context,
    /// The batch in flight: its first and last seq and its ack.
    inflight: Option<(u64, u64, AckFuture)>,
    /// Batch ids: a random prefix of this writer and a counter.
    id_prefix: String,
    next_id: u64,
}

/// Most messages in one batch (nats-server accepts up to 1000 by default).
pub const BATCH: usize = 512;

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field(
                "inflight",
                &self.inflight.as_ref().map(|(a, b, _)| (*a, *b)),
            )
            .finish()
    }
}

impl Batcher {
    /// A batcher into `js`.
    pub fn new(js: Context) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        Self {
            js,
            inflight: None,
            id_prefix: format!("{:016x}", h.finish()),
            next_id: 0,
        }
    }

    /// A batch is in flight: wait for [`Batcher::next_ack`] before sending.
    pub fn is_busy(&self) -> bool {
        self.inflight.is_some()
    }

    /// Sends `batch` (consecutive seqs, at most [`BATCH`]): stored at
    /// exactly those seqs, after `batch[0].seq - 1`, all or nothing.
    pub async fn send(&mut self, batch: &[Out]) -> Result<(), AppendError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let (first_seq, last_seq) = (first.seq, last.seq);
        let unsent = |seq: u64, e: &dyn std::fmt::Display| AppendError::Unsent {
            seq,
            reason: e.to_string(),
        };
        let ack = if batch.len() == 1 {
            let msg = PublishMessage::build()
                .payload(first.payload.clone())
                .expected_last_sequence(first_seq - 1)
                .message_id(&first.msg_id);
            self.js
                .send_publish(first.subject.clone(), msg)
                .await
                .map_err(|source| AppendError::Send {
                    seq: first_seq,
                    source,
                })?
        } else {
            self.next_id += 1;
            let id = format!("{}-{}", self.id_prefix, self.next_id);
            for (i, m) in batch[..batch.len() - 1].iter().enumerate() {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Batch-Id", id.as_str());
                headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
                headers.insert(async_nats::header::NATS_MESSAGE_ID, m.msg_id.as_str());
                if i == 0 {
                    headers.insert(
                        async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
                        (first_seq - 1).to_string().as_str(),
                    );
                }
                self.js
                    .client()
                    .publish_with_headers(m.subject.clone(), headers, m.payload.clone())
                    .await
                    .map_err(|e| unsent(m.seq, &e))?;
            }
            let msg = PublishMessage::build()
                .payload(last.payload.clone())
                .message_id(&last.msg_id)
                .header("Nats-Batch-Id", id.as_str())
                .header("Nats-Batch-Sequence", batch.len().to_string().as_str())
                .header("Nats-Batch-Commit", "1");
            self.js
                .send_publish(last.subject.clone(), msg)
                .await
                .map_err(|source| AppendError::Send {
                    seq: last_seq,
                    source,
                })?
        };
        self.inflight = Some((first_seq, last_seq, Box::pin(ack.into_future())));
        Ok(())
    }

    /// Waits for the batch in flight; returns its last seq once it is
    /// stored at its place. Cancel-safe; pends forever when idle (guard it
    /// with [`Batcher::is_busy`]).
    pub async fn next_ack(&mut self) -> Result<u64, AppendError> {
        let Some((first, last, fut)) = self.inflight.as_mut() else {
            return std::future::pending().await;
        };
        let (first, last) = (*first, *last);
        let res = fut.await;
        self.inflight = None;
        match res {
            Ok(ack) if ack.duplicate => Err(AppendError::Duplicate {
                seq: last,
                stored: ack.sequence,
            }),
            Ok(ack) if ack.sequence == last => Ok(last),
            Ok(ack) => Err(AppendError::Misplaced {
                seq: last,
                stored: ack.sequence,
            }),
            Err(source) => Err(AppendError::Refused { seq: first, source }),
        }
    }

    /// Forgets the batch in flight (after an error the caller re-reads the
    /// stream: the batch landed entirely or not at all).
    pub fn reset(&mut self) {
        self.inflight = None;
    }
}
