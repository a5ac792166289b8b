//! `canopy bench rebuild`: the leaf writes N events, the tree carries them
//! to the root; then, in one run on the root's replica, a raw read
//! (`crate::pull`, a direct consumer) reads them all (count only) and
//! canopy's rebuild reads them again and decodes, verifies the chain and
//! folds each one. Both read the same
//! stream through the same kind of consumer, one after the other.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream;
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::tree::{
    leaf_publisher, nats_bin, sample_body, wait_confirmed, wait_replica, Tree, WorkDir, LEAF,
};
use crate::cli::BenchRebuildArgs;

/// Runs the benchmark and prints its figures.
pub async fn run(a: BenchRebuildArgs) -> anyhow::Result<u8> {
    let nats = nats_bin(&a.common)?;
    let dir = WorkDir::new(&a.common, "rebuild")?;
    let tree = Tree::start(&dir.path, &nats, &a.sync, topology::Security::None).await?;
    let result = measure(&a, &tree).await;
    tree.shutdown().await;
    let (n, raw, canopy) = result?;
    let ratio = if raw > 0.0 { canopy / raw } else { 0.0 };
    let out = json!({"events": n, "raw_eps": raw, "rebuild_eps": canopy, "ratio": ratio});
    if a.common.json {
        println!("{out}");
    } else {
        println!("reading the root's replica of {n} events");
        println!("{:<40} {:>12.0} events/s", "raw read (count only)", raw);
        println!(
            "{:<40} {:>12.0} events/s",
            "canopy rebuild (decode + chain + fold)", canopy
        );
        println!("{:<40} {:>12.2}", "ratio", ratio);
    }
    Ok(0)
}

/// The next message of a read, failing after 10 s of silence.
async fn next(msgs: &mut crate::pull::Messages) -> anyhow::Result<jetstream::Message> {
    let m = tokio::time::timeout(Duration::from_secs(10), msgs.next())
        .await?
        .context("read ended")?;
    m.map_err(|e| anyhow::anyhow!("{e}"))
}

async fn measure(a: &BenchRebuildArgs, tree: &Tree) -> anyhow::Result<(u64, f64, f64)> {
    let (leaf_js, root, mut replica) = tree.ready().await?;
    let root_js = jetstream::with_domain(root, "root");
    let name = events::subjects::stream_name(LEAF);
    let cancel = CancellationToken::new();
    let (pubr, task) = leaf_publisher(&leaf_js, true, &cancel).await?;
    eprintln!("bench: writing {} events at the leaf", a.events);
    for i in 0..a.events {
        pubr.submit(sample_body(i)).await?;
    }
    let last = wait_confirmed(&pubr, a.events).await?;
    wait_replica(&replica, last, Duration::from_secs(300)).await?;
    cancel.cancel();
    drop(pubr);
    let _ = task.await;
    let n = replica.info().await?.state.last_sequence;
    eprintln!("bench: raw read of {n} events");
    let t = Instant::now();
    let mut msgs = crate::pull::from_seq(&root_js, &name, 1).await?;
    for _ in 0..n {
        next(&mut msgs).await?;
    }
    let raw = n as f64 / t.elapsed().as_secs_f64();
    drop(msgs);
    eprintln!("bench: canopy rebuild of {n} events");
    let t = Instant::now();
    let mut msgs = crate::pull::from_seq(&root_js, &name, 1).await?;
    let mut cursor = events::StreamCursor::new(LEAF);
    let mut state = events::State::default();
    for _ in 0..n {
        let m = next(&mut msgs).await?;
        let seq = m
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        match cursor.judge(seq, &m.payload) {
            events::Verdict::Valid { event, .. } => {
                state.apply(&event);
            }
            events::Verdict::Foreign(why) => {
                bail!("seq {seq} does not verify: {why}")
            }
        }
    }
    let canopy = n as f64 / t.elapsed().as_secs_f64();
    Ok((n, raw, canopy))
}
