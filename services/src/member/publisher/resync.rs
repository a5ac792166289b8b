//! The publisher's resync after a failed append: read what the stream
//! holds, confirm what landed byte for byte, resend the rest in order, and
//! re-seal after another message only where a seq is proven taken. The
//! rule is the pure [`step`]; a failed read proves nothing and retries.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use events::{Body, Chain};
use tokio_util::sync::CancellationToken;

use super::{chain_head, leader_tail, Pending, Task};

impl Task {
    /// After a failed append: find out what the stream holds, confirm what
    /// landed, and queue the rest for resending in order. Retries until it
    /// knows (a failed read proves nothing), the fence closes, or the
    /// member stops with nothing pending.
    pub(super) async fn recover(&mut self, why: &str, cancel: &CancellationToken) {
        self.metrics.publish_retries.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("append failed ({why}); resynchronising with the stream");
        self.batcher.reset();
        let mut backoff = Duration::from_millis(50);
        loop {
            // A closed fence ends the recovery: the serve loop then stops
            // without appending (the pending events were never confirmed).
            if !(self.fence)() || (cancel.is_cancelled() && self.pending.is_empty()) {
                return;
            }
            match self.resync().await {
                Ok(()) => {
                    self.unsent = self.pending.len();
                    return;
                }
                Err(e) => {
                    tracing::debug!("resynchronising with the stream: {e:#}");
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

    /// One attempt: reads the stream's tail from its leader, confirms the
    /// pending events the stream holds byte for byte, and re-seals the
    /// rest after the tail when the stream holds something else where they
    /// belong. Only a seq *read* and found to hold other bytes counts as
    /// taken: any failed read is an error, so nothing that may have landed
    /// is ever sealed again (that would store it twice).
    async fn resync(&mut self) -> anyhow::Result<()> {
        let name = events::subjects::stream_name(&self.origin);
        let mut stream = self.js.get_stream(&name).await?;
        let last = leader_tail(&mut stream).await?;
        loop {
            let Some(front) = self.pending.front() else {
                return Ok(());
            };
            let seq = front.seq;
            let held = if seq > last {
                None
            } else {
                Some(match stream.get_raw_message(seq).await {
                    Ok(m) if m.payload == front.bytes => Held::Same,
                    Ok(_) => Held::Other,
                    Err(e) => Held::Unreadable(format!("reading seq {seq}: {e}")),
                })
            };
            match step(seq, last, held) {
                Step::Confirm => self.confirm(seq),
                Step::Resend => return Ok(()),
                Step::Retry(why) => anyhow::bail!("{why}"),
                Step::Reseal => {
                    if seq <= last {
                        // Another message holds this sequence (a foreign
                        // one, or an event this publisher did not write).
                        self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            seq,
                            "another message occupies our stream; re-sealing after it"
                        );
                    } else {
                        tracing::error!(
                            expected = seq,
                            tail = last,
                            "stream tail moved; re-sealing"
                        );
                    }
                    return self.reseal_after(&mut stream, last).await;
                }
            }
        }
    }

    /// Re-seals every pending event after the stream's tail `last`, chained
    /// onto the last valid event of the origin's chain the stream holds
    /// (walked forward from the last one this publisher knows), which may
    /// be another member's; checkpoints are signed again over their new
    /// head. Without a valid event (all foreign or expired), onto nothing:
    /// a fresh link.
    async fn reseal_after(&mut self, stream: &mut Stream, last: u64) -> anyhow::Result<()> {
        let epoch = self.chain.epoch();
        let gate = super::Gate {
            ours: epoch,
            opener: self.opener.as_ref(),
        };
        let head = chain_head(&self.js, stream, &self.origin, self.valid, last, gate).await?;
        if let Some(h) = head.filter(|h| h.epoch > epoch) {
            // A newer epoch wrote it: this member is deposed. Its fence
            // stops the appends; nothing is sealed onto the newer chain.
            anyhow::bail!("the stream holds epoch {} above ours ({epoch})", h.epoch);
        }
        self.valid = head;
        let link = head.map(|h| h.hash).unwrap_or(events::ZERO_HASH);
        self.chain = Chain::resume(&self.origin, &self.member, epoch, last, link);
        let old: Vec<Pending> = self.pending.drain(..).collect();
        for p in old {
            let ev = match events::decode(&p.bytes) {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::error!("cannot re-seal our own event: {e}");
                    continue;
                }
            };
            // A checkpoint signs the head it follows: sign the new one.
            let body = match ev.body {
                Body::Checkpoint(_) => match self.signer.clone().and_then(|s| self.sign_head(&s)) {
                    Some(b) => Body::Checkpoint(b),
                    None => continue,
                },
                other => other,
            };
            match self.chain.seal(ev.ts, body) {
                Ok(sealed) => self.pending.push_back(Pending {
                    seq: sealed.event.seq,
                    epoch: sealed.event.epoch,
                    hash: sealed.hash,
                    subject: p.subject,
                    bytes: Bytes::from(sealed.bytes),
                    done: p.done,
                }),
                Err(e) => tracing::error!("cannot re-seal our own event: {e}"),
            }
        }
        Ok(())
    }
}

/// What the stream holds at a pending event's seq, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Held {
    /// The event's own bytes: it landed.
    Same,
    /// Other bytes: the seq is taken.
    Other,
    /// The read failed: nothing is known.
    Unreadable(String),
}

/// What a resync does with the oldest pending event (seq `seq`), given the
/// stream's tail `last` and what the stream holds there (`None`: beyond the
/// tail).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// It landed: confirm it and look at the next.
    Confirm,
    /// It is exactly the next append: send it and the rest again.
    Resend,
    /// Its seq is taken, or the tail is not where it belongs: re-seal it
    /// and the rest after the tail.
    Reseal,
    /// Nothing is known (a failed read): ask again later. Re-sealing now
    /// could store an event that landed a second time.
    Retry(String),
}

/// The rule of a resync, one pending event at a time: only a seq read and
/// found to hold other bytes is taken; a failed read proves nothing.
fn step(seq: u64, last: u64, held: Option<Held>) -> Step {
    match held {
        Some(Held::Same) => Step::Confirm,
        Some(Held::Other) => Step::Reseal,
        Some(Held::Unreadable(why)) => Step::Retry(why),
        None if seq == last + 1 => Step::Resend,
        None => Step::Reseal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_read_is_never_taken_for_another_message() {
        assert_eq!(
            step(5, 7, Some(Held::Unreadable("timeout".into()))),
            Step::Retry("timeout".into())
        );
        assert_eq!(step(5, 7, Some(Held::Other)), Step::Reseal);
        assert_eq!(step(5, 7, Some(Held::Same)), Step::Confirm);
    }

    #[test]
    fn beyond_the_tail_it_is_resent_only_right_after_it() {
        assert_eq!(step(8, 7, None), Step::Resend);
        // The stream is shorter than what was confirmed before, or longer
        // than it should be: the tail moved, re-seal after it.
        assert_eq!(step(9, 7, None), Step::Reseal);
    }
}
