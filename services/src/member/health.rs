//! What a pair member tells its raft group about itself, every 100 ms: its
//! NATS link (a member that cannot publish must not hold the role), whether
//! it reaches its own stream (publish health, below), and its PLC link
//! (failover on field health), with the last life-sign value read.
//!
//! Publish health: both members ask their node's stream for its info every
//! 100 ms, through their own nats-server, as the publisher's appends go (a
//! stream request reaches the stream's leader). A member whose last answer
//! is older than the topology's `publish_timeout` reports its stream down;
//! the raft group hands the role from an active that reports it down to a
//! standby that reaches the stream (never to one that does not either: when
//! the witness, which leads the streams, is frozen, both are down and
//! nothing moves; nor to one that merely got it back first after both lost
//! it, as when the witness dies and JetStream elects new leaders). The standby asks the same question the active's appends
//! need answered, without writing.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often health is reported and the stream probed.
const EVERY: Duration = Duration::from_millis(100);

/// Reports this member's health to `pair` until `cancel`.
pub async fn report(
    pair: raft::Pair,
    client: async_nats::Client,
    stream: watch::Receiver<Option<Instant>>,
    publish_timeout: Duration,
    plc: Option<watch::Receiver<Option<bool>>>,
    poller: Option<adapters::poller::PollerHandle>,
    cancel: CancellationToken,
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let ready = client.connection_state() == async_nats::connection::State::Connected;
        let plc_ok = plc.as_ref().and_then(|p| *p.borrow());
        let life_sign = poller.as_ref().and_then(|p| p.stats().life_sign_seen);
        let last_ok = *stream.borrow();
        pair.report_stream(stream_ok(last_ok, started, Instant::now(), publish_timeout));
        pair.report_health(raft::Health {
            plc_ok,
            life_sign,
            ready,
        });
    }
}

/// Asks for the info of `stream` every 100 ms (each answer awaited at most
/// `timeout`) and sends the instant of every answer until `cancel`; and on
/// `catching_up`, while this member's server (`me`) does not hold a current
/// copy of it (a wiped store being copied again), why.
pub async fn probe_stream(
    js: async_nats::jetstream::Context,
    stream: String,
    me: String,
    timeout: Duration,
    answered: watch::Sender<Option<Instant>>,
    catching_up: watch::Sender<Option<String>>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let asked = tokio::select! {
            r = tokio::time::timeout(timeout, js.get_stream(&stream)) => r,
            _ = cancel.cancelled() => return,
        };
        match asked {
            Ok(Ok(s)) => {
                answered.send_replace(Some(Instant::now()));
                let cluster = s.cached_info().cluster.as_ref();
                let why = (!crate::ha::copy_current(cluster, &me)).then(|| {
                    let lag = cluster
                        .and_then(|c| c.replicas.iter().find(|r| r.name == me))
                        .and_then(|r| r.lag)
                        .map(|l| format!(" ({l} operations behind)"))
                        .unwrap_or_default();
                    format!("this server's copy of {stream} is not current yet{lag}")
                });
                catching_up.send_if_modified(|c| {
                    let changed = *c != why;
                    *c = why;
                    changed
                });
            }
            Ok(Err(e)) => tracing::debug!(stream, "stream probe: {e}"),
            Err(_) => tracing::debug!(stream, "stream probe: no answer in {timeout:?}"),
        }
    }
}

/// Publish health from the last answer of the stream probe: unknown until
/// the probe had `timeout` to answer once, then whether it answered within
/// the last `timeout`.
pub fn stream_ok(
    last_ok: Option<Instant>,
    started: Instant,
    now: Instant,
    timeout: Duration,
) -> Option<bool> {
    match last_ok {
        Some(t) => Some(now.saturating_duration_since(t) <= timeout),
        None if now.saturating_duration_since(started) <= timeout => None,
        None => Some(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_health_is_the_age_of_the_last_answer() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let timeout = ms(500);
        // Unknown while the first answer may still come, then down.
        assert_eq!(stream_ok(None, t0, t0 + ms(499), timeout), None);
        assert_eq!(stream_ok(None, t0, t0 + ms(501), timeout), Some(false));
        // Up while the last answer is recent, down once it is not.
        let answered = Some(t0 + ms(100));
        assert_eq!(stream_ok(answered, t0, t0 + ms(600), timeout), Some(true));
        assert_eq!(stream_ok(answered, t0, t0 + ms(601), timeout), Some(false));
    }
}
