//! Answering history and state-at queries ([`crate::wire::Query`]) from a
//! node's streams: what a `canopy query` worker does with each request.
//!
//! A query walks one origin's stream (the node's own, or its replica of a
//! descendant's or, with `view = "tree"`, any origin's) through the same
//! [`events::EpochGate`] the fold uses: decode, seq = stream sequence, the
//! hash chain from the first event read, and on the secured tree epochs
//! opened by a checkpoint signed with the origin's manifest key. So a
//! query shows exactly what the fold would, never a value it refused.
//!
//! Where to start is found by a binary search on the events' `ts` with
//! direct gets (log2 of the stream's length, ~17 for 100k events), which
//! assumes `ts` grows with seq; it does, up to the clock step of a
//! failover between members, which at worst moves the start by that step
//! (samples are still filtered by `ts`). The walk itself reads every event
//! of the origin in the range (the chain can only be checked whole): that
//! is what makes a query heavy, and why workers scale.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream::Stream};
use events::{Body, EpochGate, Event, Gated, Mark, State};
use futures::StreamExt;

use crate::wire::{
    PointReply, Query, QueryReply, Sample, StateReply, StateRequest, QUERY_DEFAULT_LIMIT,
    QUERY_MAX_REPLY_BYTES, QUERY_MAX_SCAN,
};

/// What answers queries: a JetStream context in the node's domain and the
/// manifest (for the epoch gate), re-read when its file changes.
pub struct Reader {
    js: jetstream::Context,
    node: String,
    worker: String,
    manifest: Option<Arc<crate::keys::ManifestFile>>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("node", &self.node)
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

/// How a walk ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// It reached the last seq asked for.
    Done,
    /// The visitor had enough.
    Enough,
    /// It walked [`QUERY_MAX_SCAN`] events or ran out of time; the last
    /// seq it read.
    Cut(u64),
}

impl Reader {
    /// A reader of `node`'s streams through `js` (in the node's domain);
    /// `manifest` (the secured tree's) gates epochs.
    pub fn new(
        js: jetstream::Context,
        node: &str,
        worker: &str,
        manifest: Option<Arc<crate::keys::ManifestFile>>,
    ) -> Reader {
        Reader {
            js,
            node: node.to_owned(),
            worker: worker.to_owned(),
            manifest,
        }
    }

    /// The answer to `q`, working until `deadline` at most (the caller
    /// times it: `handler_us`, `queued_us`).
    pub async fn answer(&self, q: &Query, deadline: Instant) -> QueryReply {
        match self.answer_inner(q, deadline).await {
            Ok(r) => QueryReply {
                node: self.node.clone(),
                worker: self.worker.clone(),
                ..r
            },
            Err(e) => QueryReply::error(&self.node, &self.worker, format!("{e:#}")),
        }
    }

    async fn answer_inner(&self, q: &Query, deadline: Instant) -> anyhow::Result<QueryReply> {
        let origin = q.origin();
        let mut stream = self
            .js
            .get_stream(events::subjects::stream_name(origin))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "{} keeps no stream of origin {origin} ({e}): a node answers for its own origin, its descendants and, with view = \"tree\", every origin",
                    self.node
                )
            })?;
        let st = stream.info().await?.state.clone();
        let mut reply = QueryReply::default();
        if st.messages == 0 {
            match q {
                Query::History { .. } => reply.samples = Some(Vec::new()),
                Query::StateAt { .. } => {
                    reply.points = Some(Default::default());
                    reply.at_seq = Some(0);
                }
            }
            return Ok(reply);
        }
        let (first, last) = (st.first_sequence, st.last_sequence);
        match q {
            Query::History {
                point,
                from_ms,
                to_ms,
                limit,
                after_seq,
                ..
            } => {
                let (from_us, to_us) = (from_ms * 1000, to_ms * 1000 + 999);
                let start = first_at_or_after(&stream, origin, first, last, from_us)
                    .await?
                    .max(after_seq.map_or(first, |a| a + 1));
                let end = first_at_or_after(&stream, origin, first, last, to_us + 1)
                    .await?
                    .saturating_sub(1)
                    .min(last);
                let limit = limit.unwrap_or(QUERY_DEFAULT_LIMIT);
                let mut samples = Vec::new();
                let mut bytes = 0;
                let mut next = None;
                let ended = self
                    .walk(&stream, origin, start, end, deadline, &mut reply, |ev| {
                        if ev.ts < from_us || ev.ts > to_us {
                            return true;
                        }
                        if let Some(s) = sample(ev, point) {
                            bytes += serde_json::to_vec(&s).map_or(256, |b| b.len() + 1);
                            samples.push(s);
                            if samples.len() >= limit || bytes >= QUERY_MAX_REPLY_BYTES {
                                next = Some(ev.seq);
                                return false;
                            }
                        }
                        true
                    })
                    .await?;
                if let Ended::Cut(at) = ended {
                    next = Some(at);
                }
                // A page that ended exactly at the range's last event has
                // nothing after it.
                if next.is_some_and(|n| n >= end) {
                    next = None;
                }
                reply.samples = Some(samples);
                reply.next_after_seq = next;
            }
            Query::StateAt {
                at_ms, after_point, ..
            } => {
                let at_us = at_ms * 1000 + 999;
                let end = first_at_or_after(&stream, origin, first, last, at_us + 1)
                    .await?
                    .saturating_sub(1)
                    .min(last);
                let mut state = State::new();
                let mut at_seq = 0;
                if end >= first {
                    let ended = self
                        .walk(&stream, origin, first, end, deadline, &mut reply, |ev| {
                            state.apply(ev);
                            at_seq = ev.seq;
                            true
                        })
                        .await?;
                    if let Ended::Cut(at) = ended {
                        anyhow::bail!(
                            "the state of {origin} at {at_ms} needs events {first}..={end} walked; stopped at {at} (the limit is {QUERY_MAX_SCAN} events or {} ms per query)",
                            crate::wire::QUERY_TIMEOUT_MS
                        );
                    }
                }
                let points: BTreeMap<String, PointReply> =
                    StateReply::answer(&self.node, &self.worker, &state, &StateRequest::default())
                        .points
                        .unwrap_or_default();
                let (points, next) =
                    page_points(points, after_point.as_deref(), QUERY_MAX_REPLY_BYTES);
                reply.points = Some(points);
                reply.next_after_point = next;
                reply.at_seq = Some(at_seq);
            }
        }
        Ok(reply)
    }

    /// Walks `start..=end` of `origin`'s stream through the epoch gate,
    /// calling `visit` with each event the fold would fold, until it
    /// returns false, `end`, [`QUERY_MAX_SCAN`] events or `deadline`.
    #[allow(clippy::too_many_arguments)]
    async fn walk(
        &self,
        stream: &Stream,
        origin: &str,
        start: u64,
        end: u64,
        deadline: Instant,
        reply: &mut QueryReply,
        mut visit: impl FnMut(&Event) -> bool,
    ) -> anyhow::Result<Ended> {
        if start > end {
            return Ok(Ended::Done);
        }
        let mark = mark_before(stream, origin, start).await;
        let opener = self.manifest.as_ref().and_then(|m| m.opener(origin));
        let mut gate = EpochGate::after(origin, mark, opener);
        if let Some(m) = mark {
            // What came before the start was folded as far as this walk is
            // concerned: only a newer epoch must prove itself.
            gate.open_up_to(m.epoch);
        }
        let name = events::subjects::stream_name(origin);
        let mut msgs = crate::pull::from_seq(&self.js, &name, start).await?;
        let mut at = start.saturating_sub(1);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || reply.scanned >= QUERY_MAX_SCAN {
                return Ok(Ended::Cut(at));
            }
            let msg =
                match tokio::time::timeout(left.min(Duration::from_secs(5)), msgs.next()).await {
                    Ok(Some(Ok(m))) => m,
                    Ok(Some(Err(e))) => anyhow::bail!("reading {origin} at seq {}: {e}", at + 1),
                    Ok(None) => anyhow::bail!("the read of {origin} ended at seq {at}"),
                    Err(_) if Instant::now() >= deadline => return Ok(Ended::Cut(at)),
                    Err(_) => anyhow::bail!("no event of {origin} after seq {at} for 5 s"),
                };
            let seq = msg
                .info()
                .map_err(|e| anyhow::anyhow!("message info: {e}"))?
                .stream_sequence;
            if seq > end {
                return Ok(Ended::Done);
            }
            at = seq;
            reply.scanned += 1;
            for gated in gate.judge(seq, &msg.payload) {
                match gated {
                    Gated::Fold(ev, _) => {
                        if !visit(&ev) {
                            return Ok(Ended::Enough);
                        }
                    }
                    Gated::Foreign(..) => reply.foreign += 1,
                    Gated::Held(_) => {}
                }
            }
            if seq >= end {
                return Ok(Ended::Done);
            }
        }
    }
}

/// The sample an event makes of `point`, if it records a change of it.
fn sample(ev: &Event, point: &str) -> Option<Sample> {
    let (kind, value, quality, by) = match &ev.body {
        Body::Value(b) if b.point == point => {
            ("value", Some(b.value.clone()), Some(b.quality), None)
        }
        Body::Forced(b) if b.point == point => {
            ("forced", Some(b.value.clone()), None, Some(b.by.clone()))
        }
        Body::Unforced(b) if b.point == point => ("unforced", None, None, Some(b.by.clone())),
        _ => return None,
    };
    Some(Sample {
        seq: ev.seq,
        epoch: ev.epoch,
        ts: ev.ts,
        kind: kind.to_owned(),
        value,
        quality,
        by,
    })
}

/// The points after `after` (all, without it), in id order, up to about
/// `max_bytes` of JSON; and the last id given when more follow.
fn page_points(
    points: BTreeMap<String, PointReply>,
    after: Option<&str>,
    max_bytes: usize,
) -> (BTreeMap<String, PointReply>, Option<String>) {
    let mut rest = points
        .into_iter()
        .filter(|(id, _)| after.is_none_or(|a| id.as_str() > a))
        .peekable();
    let (mut page, mut bytes) = (BTreeMap::new(), 0);
    for (id, p) in rest.by_ref() {
        bytes += id.len() + serde_json::to_vec(&p).map_or(256, |b| b.len()) + 4;
        page.insert(id, p);
        if bytes >= max_bytes {
            break;
        }
    }
    let next = rest.peek().and(page.keys().next_back().cloned());
    (page, next)
}

/// The event of `origin` at `seq`, if the message there is one.
async fn event_at(stream: &Stream, origin: &str, seq: u64) -> Option<(Event, events::Hash)> {
    let msg = stream.direct_get(seq).await.ok()?;
    let ev = events::decode(&msg.payload).ok()?;
    (ev.origin == origin && ev.seq == seq).then(|| (ev, events::hash(&msg.payload)))
}

/// The chain position just before `start`: the event there (or, past
/// foreign messages, the nearest one before it), `None` at the stream's
/// start.
async fn mark_before(stream: &Stream, origin: &str, start: u64) -> Option<Mark> {
    let mut seq = start.checked_sub(1)?;
    for _ in 0..16 {
        if seq == 0 {
            return None;
        }
        if let Some((ev, hash)) = event_at(stream, origin, seq).await {
            return Some(Mark {
                seq,
                epoch: ev.epoch,
                hash,
            });
        }
        seq -= 1;
    }
    None
}

/// The first seq in `lo..=hi` whose event has `ts >= ts_us` (`hi + 1` if
/// none), by binary search; a message that is not an event of `origin`
/// takes the `ts` of the next one that is.
async fn first_at_or_after(
    stream: &Stream,
    origin: &str,
    lo: u64,
    hi: u64,
    ts_us: u64,
) -> anyhow::Result<u64> {
    let (mut lo, mut hi) = (lo, hi + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let mut probe = mid;
        let ts = loop {
            if probe >= hi {
                break None;
            }
            if let Some((ev, _)) = event_at(stream, origin, probe).await {
                break Some(ev.ts);
            }
            probe += 1;
            if probe - mid > 16 {
                break None;
            }
        };
        match ts {
            Some(t) if t >= ts_us => hi = mid,
            Some(_) => lo = probe + 1,
            None => hi = mid,
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(n: usize) -> BTreeMap<String, PointReply> {
        (0..n)
            .map(|i| {
                let p: PointReply = serde_json::from_value(serde_json::json!({
                    "value": i, "quality": "good", "origin": "root.a", "seq": i,
                    "epoch": 1, "ts": 1, "forced": false
                }))
                .expect("a point");
                (format!("root.a.p{i:04}"), p)
            })
            .collect()
    }

    #[test]
    fn a_state_at_reply_pages_its_points_in_id_order_under_the_byte_cap() {
        let all = points(100);
        let one = serde_json::to_vec(&all["root.a.p0000"])
            .expect("json")
            .len()
            + 16;
        // Everything fits: no next page.
        let (page, next) = page_points(all.clone(), None, usize::MAX);
        assert_eq!((page.len(), next), (100, None));
        // Pages of about ten points, each after the last one given, cover
        // every point exactly once.
        let (mut seen, mut after) = (Vec::new(), None::<String>);
        loop {
            let (page, next) = page_points(all.clone(), after.as_deref(), 10 * one);
            assert!(!page.is_empty() && page.len() <= 11, "{}", page.len());
            seen.extend(page.into_keys());
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, all.keys().cloned().collect::<Vec<_>>());
        // After the last id: nothing.
        let (page, next) = page_points(all, Some("root.a.p0099"), 10 * one);
        assert_eq!((page.len(), next), (0, None));
    }
}
