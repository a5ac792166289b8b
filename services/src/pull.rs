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

/// Reads `stream`'s messages `from..=to` in order, calling `each` with the
/// stream sequence and the message; a read interrupted by an error (a
/// missed heartbeat on a busy server, a leader change) resumes at the next
/// sequence not yet seen, until `patience` passes without progress. For
/// readers that must see every message once (audits, comparisons), unlike
/// a live reader that simply starts over.
pub async fn read_range(
    stream: &Stream,
    from: u64,
    to: u64,
    patience: Duration,
    mut each: impl FnMut(u64, &async_nats::jetstream::Message),
) -> anyhow::Result<()> {
    use futures::StreamExt;
    let mut next = from.max(1);
    let mut last_progress = tokio::time::Instant::now();
    while next <= to {
        let err;
        match from_seq(stream, next).await {
            Ok(mut msgs) => loop {
                match tokio::time::timeout(patience, msgs.next()).await {
                    Ok(Some(Ok(m))) => {
                        let seq = m
                            .info()
                            .map_err(|e| anyhow::anyhow!("message info: {e}"))?
                            .stream_sequence;
                        if seq < next {
                            continue;
                        }
                        each(seq, &m);
                        next = seq + 1;
                        last_progress = tokio::time::Instant::now();
                        if next > to {
                            return Ok(());
                        }
                    }
                    Ok(Some(Err(e))) => {
                        err = anyhow::anyhow!("{e}");
                        break;
                    }
                    Ok(None) => {
                        err = anyhow::anyhow!("the read ended");
                        break;
                    }
                    Err(_) => {
                        err = anyhow::anyhow!("no message for {patience:?}");
                        break;
                    }
                }
            },
            Err(e) => err = e,
        }
        if last_progress.elapsed() > patience {
            anyhow::bail!("reading seq {next} of {to}: {err:#}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
