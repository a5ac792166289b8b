//! Pipelined, seq-fenced appends to one JetStream stream.
//!
//! Both the origin's publisher and every replica puller write "message n"
//! into a stream whose sequence must come out as exactly n. Each append
//! carries `Nats-Expected-Last-Sequence: n-1` and `Nats-Msg-Id: <origin>:<n>`,
//! so the stream itself refuses anything out of place (a deposed member's late
//! publish, a replay, a lost message ahead of it). Because the expected
//! sequence of every message is known in advance, appends are pipelined: up
//! to `window` are in flight and their acks are awaited in order.
//!
//! An append may also go without a reply ([`Appender::send`] with `ack`
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
//! audit reports it. Replica pullers ack sparsely (the ack is a large part
//! of the server's and the client's work per message); the origin's
//! publisher, whose appends are fenced by the lease, acks every event.

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
