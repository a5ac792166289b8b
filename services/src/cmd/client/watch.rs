//! `canopy watch`: the state of the points matching a pattern, then every
//! change, live, with per-origin gaps filled by range from the replica.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context as _};
use async_nats::Client;
use events::{Body, Event, GapTracker, Observation};
use futures::StreamExt;
use serde_json::{json, Value as Json};

use super::connect;
use crate::cli::WatchArgs;
use crate::wire::{StateReply, StateRequest};

/// Finds the node that serves the snapshot: the longest literal prefix of
/// the pattern that answers a state request.
async fn snapshot(client: &Client, pattern: &str) -> anyhow::Result<(String, StateReply)> {
    let literal: Vec<&str> = pattern
        .split('.')
        .take_while(|t| *t != "*" && *t != ">")
        .collect();
    for n in (1..=literal.len()).rev() {
        let node = literal[..n].join(".");
        let req = StateRequest {
            pattern: Some(pattern.to_owned()),
            digest: false,
        };
        let body = serde_json::to_vec(&req)?;
        match client
            .request(events::subjects::state_subject(&node), body.into())
            .await
        {
            Ok(msg) => {
                let v: StateReply = serde_json::from_slice(&msg.payload)
                    .context("the state reply is not what canopy answers")?;
                if let Some(e) = v.error {
                    bail!("state request to {node}: {e}");
                }
                return Ok((node, v));
            }
            Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => continue,
            Err(e) => bail!("state request to {node}: {e}"),
        }
    }
    bail!("no node serves a prefix of {pattern:?}: start the pattern with a node path, like root.> or root.south.>")
}

fn event_json(ev: &Event) -> Json {
    let (kind, point, value, quality) = match &ev.body {
        Body::Value(b) => (
            "value",
            Some(b.point.as_str()),
            serde_json::to_value(&b.value).ok(),
            Some(b.quality),
        ),
        Body::Forced(b) => (
            "forced",
            Some(b.point.as_str()),
            serde_json::to_value(&b.value).ok(),
            None,
        ),
        Body::Unforced(b) => ("unforced", Some(b.point.as_str()), None, None),
        Body::Role(_) => ("role", None, None, None),
        Body::Birth(_) => ("birth", None, None, None),
        Body::Resource(_) => ("resource", None, None, None),
        Body::Checkpoint(_) => ("checkpoint", None, None, None),
        Body::Command(b) => (
            "command",
            Some(b.point.as_str()),
            serde_json::to_value(&b.value).ok(),
            None,
        ),
    };
    let mut j = json!({
        "kind": kind,
        "point": point.map(|p| format!("{}.{p}", ev.origin)),
        "value": value,
        "quality": quality.map(|q| serde_json::to_value(q).unwrap_or_default()),
        "origin": ev.origin, "seq": ev.seq, "epoch": ev.epoch, "ts": ev.ts, "member": ev.member,
    });
    if let (Body::Command(b), Some(map)) = (&ev.body, j.as_object_mut()) {
        map.insert("op".into(), b.op.as_str().into());
        map.insert("by".into(), b.by.clone().into());
        map.insert("outcome".into(), b.outcome.clone().into());
        map.insert("signed".into(), b.is_signed().into());
    }
    j
}

fn print_event(ev: &Event, as_json: bool) {
    if as_json {
        println!("{}", event_json(ev));
        return;
    }
    match &ev.body {
        Body::Value(b) => println!(
            "{}.{} = {} {} (seq {})",
            ev.origin,
            b.point,
            b.value,
            b.quality.as_str(),
            ev.seq
        ),
        Body::Forced(b) => println!(
            "{}.{} FORCED = {} by {} (seq {})",
            ev.origin, b.point, b.value, b.by, ev.seq
        ),
        Body::Unforced(b) => println!(
            "{}.{} unforced by {} (seq {})",
            ev.origin, b.point, b.by, ev.seq
        ),
        Body::Role(b) => println!(
            "{} role: {} is {} (seq {})",
            ev.origin,
            b.member,
            b.role.as_str(),
            ev.seq
        ),
        Body::Birth(b) => println!(
            "{} birth: member {} with {} points (seq {})",
            ev.origin,
            b.member,
            b.points.len(),
            ev.seq
        ),
        Body::Resource(b) => println!(
            "{} resource: {}/{} is {} (seq {})",
            ev.origin,
            b.member,
            b.resource,
            b.state.as_str(),
            ev.seq
        ),
        Body::Checkpoint(b) => println!(
            "{} checkpoint by {} over seq {} (seq {})",
            ev.origin, b.member, b.head_seq, ev.seq
        ),
        Body::Command(b) => println!(
            "{}.{} command: {} {} by {}{}: {} (seq {})",
            ev.origin,
            b.point,
            b.op,
            b.value,
            b.by,
            if b.is_signed() {
                " (signed)"
            } else {
                " (unsigned)"
            },
            b.outcome,
            ev.seq
        ),
    }
}

/// `canopy watch`: snapshot, then live events with per-origin gap filling.
pub async fn watch(a: WatchArgs) -> anyhow::Result<u8> {
    let client = connect(&a.server).await?;
    // Subscribe before the snapshot so nothing falls between the two.
    let mut live = client
        .subscribe(format!("canopy.ev.{}", a.pattern))
        .await
        .context("subscribing to live events")?;
    let (node, snap) = snapshot(&client, &a.pattern).await?;
    let mut gaps = GapTracker::default();
    for (o, st) in snap.origins.iter().flatten() {
        gaps.set(o, st.seq);
    }
    for (name, p) in snap.points.iter().flatten() {
        if a.json {
            let mut line = serde_json::to_value(p)?;
            if let Some(o) = line.as_object_mut() {
                o.insert("kind".into(), "snapshot".into());
                o.insert("point".into(), name.clone().into());
            }
            println!("{line}");
        } else {
            println!(
                "{name} = {} {} (snapshot, seq {})",
                serde_json::to_string(&p.value).unwrap_or_default(),
                p.quality.as_str(),
                p.seq
            );
        }
    }
    let js = async_nats::jetstream::with_domain(client.clone(), events::subjects::domain(&node));
    let mut streams: HashMap<String, async_nats::jetstream::stream::Stream> = HashMap::new();
    let mut seen = 0u64;
    let cancel = crate::cmd::shutdown_token()?;
    loop {
        let msg = tokio::select! {
            m = live.next() => match m { Some(m) => m, None => break },
            _ = cancel.cancelled() => break,
        };
        let ev = match events::decode(&msg.payload) {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!("skipping undecodable message on {}: {e}", msg.subject);
                continue;
            }
        };
        match gaps.observe(&ev.origin, ev.seq) {
            Observation::Duplicate => continue,
            Observation::InOrder => print_event(&ev, a.json),
            Observation::Gap { from, to } => {
                // Fill exactly the missing range from the node's replica.
                let name = events::subjects::stream_name(&ev.origin);
                if !streams.contains_key(&name) {
                    let s = js
                        .get_stream(&name)
                        .await
                        .with_context(|| format!("stream {name} at {node}"))?;
                    streams.insert(name.clone(), s);
                }
                if let Some(stream) = streams.get(&name) {
                    for seq in from..=to {
                        match fetch(stream, seq).await {
                            Some(missing) => print_event(&missing, a.json),
                            None => tracing::warn!("{} seq {seq} could not be fetched", ev.origin),
                        }
                    }
                }
                print_event(&ev, a.json);
            }
        }
        seen += 1;
        if a.count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    Ok(0)
}

/// Gets one event by seq, waiting briefly for a replica that lags the live path.
async fn fetch(stream: &async_nats::jetstream::stream::Stream, seq: u64) -> Option<Event> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(m) = stream.direct_get(seq).await {
            return events::decode(&m.payload).ok();
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
