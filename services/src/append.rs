//! Pipelined, seq-fenced appends to one JetStream stream.
//!
//! Both the origin's publisher and every replica puller write "message n"
//! into a stream whose sequence must come out as exactly n. Each append
//! carries `Nats-Expected-Last-Sequence: n-1` and `Nats-Msg-Id: <origin>:<n>`,
//! so the stream itself refuses anything out of place (a deposed member's late
//! publish, a replay, a lost message ahead of it). Because the expected
//! sequence of every message is known in advance, appends are pipelined: up
//! to `window` are in flight and their acks are awaited in order.

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
    /// The stream answered with an error (wrong last sequence, unavailable, timeout).
    #[error("stream refused seq {seq}: {source}")]
    Refused {
        /// The seq that was refused.
        seq: u64,
        /// The client's error, carrying the server's description.
        source: PublishError,
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
    /// In-flight appends, oldest first: their seq and ack.
    inflight: VecDeque<(u64, AckFuture)>,
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
        }
    }

    /// True when no further append may be sent before an ack is taken.
    pub fn is_full(&self) -> bool {
        self.inflight.len() >= self.window
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty()
    }

    /// Sends message `seq` (expected to land at stream sequence `seq`).
    pub async fn send(
        &mut self,
        subject: String,
        msg_id: String,
        seq: u64,
        payload: Bytes,
    ) -> Result<(), AppendError> {
        let msg = PublishMessage::build()
            .payload(payload)
            .message_id(msg_id)
            .expected_last_sequence(seq - 1);
        let ack = self
            .js
            .send_publish(subject, msg)
            .await
            .map_err(|source| AppendError::Send { seq, source })?;
        self.inflight.push_back((seq, Box::pin(ack.into_future())));
        Ok(())
    }

    /// Waits for the oldest in-flight append; returns its seq once stored in
    /// place. Cancel-safe: a dropped call leaves the ack in the queue.
    /// Pends forever when nothing is in flight (use it in `select!` guarded
    /// by `!is_empty()`).
    pub async fn next_ack(&mut self) -> Result<u64, AppendError> {
        let Some((seq, fut)) = self.inflight.front_mut() else {
            return std::future::pending().await;
        };
        let seq = *seq;
        let res = fut.await;
        self.inflight.pop_front();
        match res {
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
    }
}
