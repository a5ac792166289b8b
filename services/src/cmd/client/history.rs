//! `canopy history`: the recorded changes of one point over a time range,
//! asked of a node's query workers (`canopy query`) and paged through.

use std::time::Duration;

use anyhow::bail;

use super::{connect, request};
use crate::cli::HistoryArgs;
use crate::wire::{Query, QueryReply, QUERY_MAX_LIMIT};

/// `canopy history`.
pub async fn history(a: HistoryArgs) -> anyhow::Result<u8> {
    let (origin, point) = super::command::split_point(&a.point)?;
    let now_ms = crate::member::publisher::now_us() / 1000;
    let to_ms = a.to_ms.unwrap_or(now_ms);
    let from_ms = a
        .from_ms
        .unwrap_or_else(|| to_ms.saturating_sub(a.since.as_millis() as u64));
    let node = a.node.clone().unwrap_or_else(|| origin.to_owned());
    let subject = events::subjects::query_subject(&node);
    let client = connect(&a.server).await?;
    let (mut after_seq, mut shown) = (None, 0usize);
    if !a.json {
        println!(
            "{:>8} {:>6} {:<26} {:<8} {:>14} {:<9} by",
            "seq", "epoch", "time (UTC)", "kind", "value", "quality"
        );
    }
    loop {
        let left = a.limit.map_or(QUERY_MAX_LIMIT, |l| l.saturating_sub(shown));
        if left == 0 {
            break;
        }
        let q = Query::History {
            origin: origin.to_owned(),
            point: point.to_owned(),
            from_ms,
            to_ms,
            limit: Some(left.min(QUERY_MAX_LIMIT)),
            after_seq,
        };
        let reply: QueryReply = request(&client, subject.clone(), serde_json::to_vec(&q)?)
            .await
            .map_err(|e| {
                e.context(format!(
                    "asking {node}'s query workers (is a `canopy query --node {node}` running?)"
                ))
            })?;
        if let Some(e) = &reply.error {
            bail!("{e}");
        }
        for s in reply.samples.iter().flatten() {
            shown += 1;
            if a.json {
                println!("{}", serde_json::to_string(s)?);
            } else {
                let time = humantime::format_rfc3339_micros(
                    std::time::UNIX_EPOCH + Duration::from_micros(s.ts),
                );
                println!(
                    "{:>8} {:>6} {:<26} {:<8} {:>14} {:<9} {}",
                    s.seq,
                    s.epoch,
                    time.to_string(),
                    s.kind,
                    s.value
                        .as_ref()
                        .map(|v| serde_json::to_string(v).unwrap_or_default())
                        .unwrap_or_default(),
                    s.quality.map(|q| q.as_str()).unwrap_or(""),
                    s.by.as_deref().unwrap_or("")
                );
            }
        }
        match reply.next_after_seq {
            Some(n) => after_seq = Some(n),
            None => break,
        }
    }
    if !a.json {
        eprintln!("{shown} change(s) of {} from {node}'s streams", a.point);
    }
    Ok(0)
}
