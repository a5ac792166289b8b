//! Reading a stream in order from a given sequence, failing fast.
//!
//! async-nats' ordered consumer recovers by itself, but on its own clock: it
//! notices a dead upstream after two missed 30 s-scale heartbeats and then
//! retries with its own backoff, which left a replica stalled for over 20 s
//! after a nats-server restart (measured here). canopy's readers instead
//! use a plain ephemeral pull consumer with a short heartbeat and surface
//! every error: the caller restarts from its own last sequence, so recovery
//! time is under canopy's control.

use std::time::Duration;

use async_nats::jetstream::consumer::pull::{self, Stream as PullStream};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::Stream;

/// How long one pull request waits server-side before being renewed.
const EXPIRES: Duration = Duration::from_millis(1000);
/// Idle heartbeat: two missed ones end the read (so ~0.5 s to notice that
/// the consumer is gone, e.g. with the server of a pair member that was
/// killed).
const HEARTBEAT: Duration = Duration::from_millis(250);
/// Messages per pull request (also the client-side buffer).
const BATCH: usize = 4000;

/// Reads `stream` from `start` on, in order, without acks. The consumer is
/// ephemeral and removed by the server shortly after the reader goes away.
pub async fn from_seq(stream: &Stream, start: u64) -> anyhow::Result<PullStream> {
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start.max(1),
            },
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(10),
            memory_storage: true,
            ..Default::default()
        })
        .await?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(BATCH)
        .expires(EXPIRES)
        .heartbeat(HEARTBEAT)
        .messages()
        .await?;
    Ok(messages)
}
