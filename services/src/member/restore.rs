//! A node that lost its own history (a wiped disk; for a pair, all three
//! stores) takes it back from its parent before it publishes anything.
//!
//! Every ancestor keeps a seq-for-seq, byte-for-byte replica of the node's
//! stream. A member that starts with an empty own stream and simply began
//! at seq 1 again would write a second history under the same seqs: its
//! parent's puller resumed from its own tail without comparing, the root
//! kept showing the old values, and the new life was foreign everywhere.
//! So before the first publish of an activation:
//!
//! - own stream not empty: nothing to do;
//! - the parent holds no replica of this origin, or an empty one: a
//!   brand-new node, start at seq 1;
//! - the parent holds events: copy the longest copy any ancestor holds
//!   (the parent must answer; each ancestor is asked twice, since a pair's
//!   stream just after a leader change can report a tail from behind) into
//!   the own stream at their seqs (created again at the replica's first
//!   sequence if retention trimmed the start), then the publisher continues
//!   the chain from the restored tail. Whatever the node had published but
//!   no ancestor had copied yet is lost with the disk;
//! - the parent does not answer: wait (a `restoring` trouble in member
//!   info), never start a new history on a guess;
//! - `--new-history` (an operator's explicit choice): start at seq 1 even
//!   though the parent holds the old history; the activation's role event
//!   says so, and the parent's puller reports the divergence.

use std::time::Duration;

use anyhow::{bail, Context as _};
use async_nats::jetstream::{self, Context};
use futures::StreamExt;

use super::active::Ctx;
use crate::append::Appender;
use crate::wire::TroubleKind;

/// Appends in flight while restoring.
const WINDOW: usize = 1024;

/// What [`own_history`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    /// The own stream already holds history (or the node has no parent).
    Kept,
    /// Nothing to restore anywhere: a new node.
    New,
    /// Copied this many events from the parent's replica (first..=last).
    Copied {
        /// First seq restored.
        first: u64,
        /// Last seq restored.
        last: u64,
    },
    /// The operator asked for a new history although one existed.
    NewByOperator,
}

/// Makes sure the node's own stream holds its history before an
/// activation publishes (see the module documentation). An error means
/// "not now" (the parent does not answer); the activation retries.
pub async fn own_history(ctx: &Ctx) -> anyhow::Result<Restored> {
    let origin = &ctx.node.id;
    let name = events::subjects::stream_name(origin);
    let mut own = ctx.js.get_stream(&name).await.context("own stream")?;
    let state = own.info().await?.state.clone();
    if state.last_sequence > 0 {
        return Ok(Restored::Kept);
    }
    let Some(parent) = ctx.topo.parent(origin) else {
        return Ok(Restored::Kept);
    };
    let parent_js = jetstream::ContextBuilder::new()
        .domain(events::subjects::domain(&parent.id))
        .timeout(Duration::from_secs(2))
        .build(ctx.client.clone());
    let mut replica = match parent_js.get_stream(&name).await {
        Ok(s) => s,
        Err(e) if is_not_found(&e) && no_such_stream(&parent_js, &parent.id, &name).await => {
            ctx.metrics.troubles.clear(origin, TroubleKind::Restoring);
            return Ok(Restored::New);
        }
        Err(e) => {
            let why = format!(
                "no history of its own, and the parent {} does not answer: {e}",
                parent.id
            );
            ctx.metrics
                .troubles
                .set(origin, TroubleKind::Restoring, 1, why.clone());
            bail!("{why}");
        }
    };
    // The longest history any ancestor holds: every ancestor keeps the
    // same history seq for seq, so a longer copy is a longer prefix. The
    // parent's answer alone is not enough: a pair's stream just after a
    // leader change can report a tail from behind (a leader that has not
    // applied everything yet), and restoring less than what was replicated
    // forks the history at the first missing seq. So each ancestor that
    // answers is asked twice, a second apart, and the best answer wins.
    let mut best = (
        replica.info().await?.state.clone(),
        parent.id.clone(),
        parent_js.clone(),
    );
    let mut ancestor = ctx.topo.parent(&parent.id);
    let mut sources = vec![(parent.id.clone(), parent_js.clone(), replica)];
    while let Some(a) = ancestor {
        let js = jetstream::ContextBuilder::new()
            .domain(events::subjects::domain(&a.id))
            .timeout(Duration::from_secs(2))
            .build(ctx.client.clone());
        if let Ok(s) = js.get_stream(&name).await {
            sources.push((a.id.clone(), js, s));
        }
        ancestor = ctx.topo.parent(&a.id);
    }
    for round in 0..2 {
        if round > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        for (id, js, s) in &mut sources {
            if let Ok(info) = s.info().await {
                if info.state.last_sequence > best.0.last_sequence {
                    best = (info.state.clone(), id.clone(), js.clone());
                }
            }
        }
    }
    let (theirs, holder, holder_js) = best;
    if theirs.last_sequence == 0 {
        ctx.metrics.troubles.clear(origin, TroubleKind::Restoring);
        return Ok(Restored::New);
    }
    if ctx.new_history {
        ctx.metrics.troubles.clear(origin, TroubleKind::Restoring);
        tracing::warn!(
            parent = %parent.id,
            held = theirs.last_sequence,
            "--new-history: starting a new history although the parent holds {} events of the old one",
            theirs.last_sequence
        );
        return Ok(Restored::NewByOperator);
    }
    let (first, last) = (theirs.first_sequence.max(1), theirs.last_sequence);
    tracing::warn!(
        from = %holder,
        first,
        last,
        "no history of its own: restoring it from an ancestor's replica before publishing"
    );
    ctx.metrics.troubles.set(
        origin,
        TroubleKind::Restoring,
        first,
        format!("restoring seqs {first}..={last} from {holder}"),
    );
    if first > 1 {
        // Retention trimmed the start: the own stream starts where the
        // replica does, so seq == stream sequence holds.
        let mut config = own.info().await?.config.clone();
        config.first_sequence = Some(first);
        ctx.js.delete_stream(&name).await?;
        ctx.js.create_stream(config).await?;
    }
    copy(&ctx.js, &holder_js, origin, first, last).await?;
    ctx.metrics.troubles.clear(origin, TroubleKind::Restoring);
    tracing::info!(first, last, from = %holder, "history restored");
    Ok(Restored::Copied { first, last })
}

/// Copies the messages `first..=last` of the replica in `holder`'s domain
/// into the origin's own stream, at the same seqs and with the same bytes,
/// onto the subjects the origin publishes on.
async fn copy(
    own: &Context,
    holder: &Context,
    origin: &str,
    first: u64,
    last: u64,
) -> anyhow::Result<()> {
    let name = events::subjects::stream_name(origin);
    let mut messages = crate::pull::from_seq(holder, &name, first).await?;
    let mut appender = Appender::new(own.clone(), WINDOW);
    let mut next = first;
    while next <= last {
        if appender.is_full() {
            appender.next_ack().await?;
            continue;
        }
        let msg = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .context("the parent's replica stopped sending")?
            .context("the parent's replica ended")?
            .map_err(|e| anyhow::anyhow!("reading the parent's replica: {e}"))?;
        let seq = msg
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        if seq != next {
            bail!("the parent's replica skipped from {next} to {seq}");
        }
        let token = msg.subject.rsplit('.').next().unwrap_or("_");
        let subject = events::subjects::event_subject(origin, token);
        let ack = seq == last || seq.is_multiple_of(256) || appender.window_left() <= 1;
        appender
            .send(subject, None, seq, msg.payload.clone(), ack)
            .await?;
        next += 1;
    }
    while !appender.is_empty() {
        appender.next_ack().await?;
    }
    Ok(())
}

/// Whether the parent's JetStream really holds no stream `name`: a server
/// of a cluster that is still recovering (a restarted witness, a meta
/// leader being elected) can answer "stream not found" for a stream that
/// exists, and taking that for "a brand-new node" would start a second
/// history. So the answer counts only if the parent lists its own stream
/// (its JetStream is up and knows its streams) and not `name`, twice, a
/// second apart.
async fn no_such_stream(js: &Context, parent: &str, name: &str) -> bool {
    let own = events::subjects::stream_name(parent);
    for attempt in 0..2 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let mut names = js.stream_names();
        let mut listed = Vec::new();
        while let Some(n) = names.next().await {
            match n {
                Ok(n) => listed.push(n),
                Err(_) => return false,
            }
        }
        if !listed.contains(&own) || listed.iter().any(|n| n == name) {
            return false;
        }
    }
    true
}

/// JetStream answered "stream not found" (a definite answer, unlike a
/// timeout or "no responders").
fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(j)
            if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}
