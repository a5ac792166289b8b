//! `canopy audit`: replays a node's streams (its own and every replica it
//! holds) and checks each origin's history with `events::audit`: seq
//! contiguity, no duplicate, the hash chain, epochs that never go back or
//! interleave, and checkpoints signed by the member active in their epoch.
//! Exit 0 when clean, 1 on any violation.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use events::audit::{AuditConfig, Auditor, Manifest, Until};
use futures::StreamExt;
use serde_json::json;

use crate::cli::AuditArgs;

/// Replays one origin's stream in `js` (all of it, in order) through the
/// auditor; with `keep`, also returns every message's bytes (for the
/// state at an instant). Progress on stderr for long replays.
pub async fn audit_origin(
    js: &async_nats::jetstream::Context,
    origin: &str,
    manifest: &Manifest,
    cfg: AuditConfig,
    keep: bool,
) -> anyhow::Result<(events::audit::OriginReport, Vec<Vec<u8>>)> {
    let mut kept = Vec::new();
    let mut stream = js.get_stream(events::subjects::stream_name(origin)).await?;
    let info = stream.info().await?.state.clone();
    let mut auditor = Auditor::new(origin, manifest, cfg);
    if info.messages > 0 {
        let mut n = 0u64;
        let mut last_note = Instant::now();
        crate::pull::read_range(
            js,
            &events::subjects::stream_name(origin),
            info.first_sequence,
            info.last_sequence,
            Duration::from_secs(10),
            |seq, m| {
                auditor.feed(seq, &m.payload);
                if keep {
                    kept.push(m.payload.to_vec());
                }
                n += 1;
                if last_note.elapsed() > Duration::from_secs(2) {
                    eprintln!("audit: {origin}: {n} of {} messages", info.messages);
                    last_note = Instant::now();
                }
            },
        )
        .await
        .with_context(|| format!("reading {origin}"))?;
    }
    Ok((auditor.finish(), kept))
}

/// Runs the audit.
pub async fn run(a: AuditArgs) -> anyhow::Result<u8> {
    let manifest: Manifest = serde_json::from_str(
        &std::fs::read_to_string(&a.manifest)
            .with_context(|| format!("reading {}", a.manifest.display()))?,
    )
    .with_context(|| format!("{}: not a canopy key manifest", a.manifest.display()))?;
    let cfg = match &a.topology {
        Some(p) => {
            let t = super::load_topology(p)?;
            AuditConfig {
                checkpoint_every_events: t.mesh.checkpoint.every_events,
                checkpoint_every_ms: t.mesh.checkpoint.every_ms,
            }
        }
        None => AuditConfig {
            checkpoint_every_events: 1000,
            checkpoint_every_ms: 1000,
        },
    };
    if a.seq.is_some() && a.origin.is_none() {
        bail!("--seq needs --origin (a seq belongs to one origin)");
    }
    let until = match (&a.seq, &a.at) {
        (Some(n), _) => Some(Until::Seq(*n)),
        (None, Some(t)) => {
            let at = humantime::parse_rfc3339_weak(t)
                .with_context(|| format!("--at {t:?}: expected RFC 3339"))?;
            let us = at
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0);
            Some(Until::Ts(us))
        }
        _ => None,
    };
    let client = super::client::connect_as(&a.server, "canopy audit").await?;
    let js = async_nats::jetstream::with_domain(client, events::subjects::domain(&a.node));
    let mut names: Vec<String> = Vec::new();
    let mut listing = js.stream_names();
    while let Some(n) = listing.next().await {
        names.push(n.map_err(|e| anyhow::anyhow!("listing the streams of {}: {e}", a.node))?);
    }
    let mut origins: Vec<String> = names
        .iter()
        .filter_map(|n| n.strip_prefix("EV_").map(|o| o.replace('-', ".")))
        .filter(|o| a.origin.as_ref().is_none_or(|want| want == o))
        .collect();
    origins.sort();
    if origins.is_empty() {
        bail!("no event stream at node {} matches", a.node);
    }
    let mut reports = Vec::new();
    let mut kept: Vec<Vec<u8>> = Vec::new();
    let started = Instant::now();
    for origin in &origins {
        let (report, payloads) = audit_origin(&js, origin, &manifest, cfg, until.is_some()).await?;
        kept.extend(payloads);
        eprintln!(
            "audit: {origin}: seq {}..{}, {} events, {} checkpoints, {} fenced late appends, {} violations",
            report.first_seq,
            report.last_seq,
            report.events,
            report.checkpoints,
            report.fenced.len(),
            report.violations.len()
        );
        reports.push(report);
    }
    let violations: Vec<_> = reports.iter().flat_map(|r| r.violations.clone()).collect();
    let state = until.map(|u| {
        let st = events::audit::state_at(kept.iter().map(Vec::as_slice), u);
        crate::wire::StateReply::answer(&a.node, "audit", &st, &Default::default())
    });
    let out = json!({
        "node": a.node,
        "origins": reports,
        "violations": violations,
        "state": state,
        "took_ms": started.elapsed().as_millis() as u64,
    });
    if a.json {
        println!("{out}");
    } else {
        for r in &reports {
            let epochs: Vec<String> = r
                .epochs
                .iter()
                .map(|(e, m, a, b)| format!("{e}:{m}@{a}..{b}"))
                .collect();
            println!(
                "{:<28} seq {:>8}..{:<8} {:>8} events {:>6} checkpoints  epochs {}",
                r.origin,
                r.first_seq,
                r.last_seq,
                r.events,
                r.checkpoints,
                epochs.join(" ")
            );
        }
        for v in &violations {
            println!(
                "VIOLATION {} {} seq {}: {}",
                v.kind, v.origin, v.seq, v.detail
            );
        }
        if let Some(s) = &out.get("state").filter(|s| !s.is_null()) {
            println!("{s}");
        }
        println!(
            "{}",
            if violations.is_empty() {
                "clean"
            } else {
                "violations found"
            }
        );
    }
    Ok(if violations.is_empty() { 0 } else { 1 })
}
