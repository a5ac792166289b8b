//! `canopy bench catchup`: freeze the middle node (its member and its
//! nats-server, SIGSTOP: cut off from both its child and its parent) while
//! the leaf publishes N events, thaw it, and time until the root holds them
//! all.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::tree::{
    leaf_publisher, nats_bin, request_json, sample_body, wait_confirmed, wait_replica, Tree,
    WorkDir,
};
use crate::child;
use crate::cli::BenchCatchupArgs;

/// Runs the benchmark and prints its figures.
pub async fn run(a: BenchCatchupArgs) -> anyhow::Result<u8> {
    let nats = nats_bin(&a.common)?;
    let dir = WorkDir::new(&a.common, "catchup")?;
    let tree = Tree::start(&dir.path, &nats, &a.sync, topology::Security::None).await?;
    let result = measure(&a, &tree).await;
    tree.shutdown().await;
    let (cut_s, resume_s, catchup_s) = result?;
    let rate = a.events as f64 / (catchup_s - resume_s).max(1e-9);
    let out = json!({"events": a.events, "sync": a.sync, "cut_s": cut_s, "resume_s": resume_s, "catchup_s": catchup_s, "transfer_eps": rate});
    if a.common.json {
        println!("{out}");
    } else {
        println!(
            "root.mid frozen while root.mid.leaf published {} events ({cut_s:.1} s), sync {}",
            a.events, a.sync
        );
        println!("catch-up after the thaw: {catchup_s:.2} s until the root held them all");
        println!("  of which {resume_s:.2} s until the root's replica first moved (links and pulls resuming),");
        println!("  then {rate:.0} events/s over two hops");
    }
    Ok(0)
}

/// Polls the root's replica every 10 ms until it holds `target`; returns
/// when it first moved past `from` and when it got there.
async fn root_tail(
    replica: &jetstream::stream::Stream,
    from: u64,
    target: u64,
) -> anyhow::Result<(Instant, Instant)> {
    let mut r = replica.clone();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut moved = None;
    loop {
        let last = r.info().await.map(|i| i.state.last_sequence).unwrap_or(0);
        if last > from && moved.is_none() {
            moved = Some(Instant::now());
        }
        if last >= target {
            let now = Instant::now();
            return Ok((moved.unwrap_or(now), now));
        }
        if Instant::now() > deadline {
            bail!("the root did not reach seq {target} in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn measure(a: &BenchCatchupArgs, tree: &Tree) -> anyhow::Result<(f64, f64, f64)> {
    let (leaf_js, root, replica) = tree.ready().await?;
    let cancel = CancellationToken::new();
    let (pubr, task) = leaf_publisher(&leaf_js, true, &cancel).await?;
    // Warm-up: everything flowing before the cut.
    for i in 0..1000 {
        pubr.submit(sample_body(i)).await?;
    }
    let warm = wait_confirmed(&pubr, 1000).await?;
    wait_replica(&replica, warm, Duration::from_secs(300)).await?;
    let info = request_json(&root, &events::subjects::member_subject("root.mid", "a")).await?;
    let member_pid = info["pid"].as_u64().context("mid pid")? as u32;
    let nats_pid = info["nats_pid"].as_u64().context("mid nats pid")? as u32;
    eprintln!("bench: freezing root.mid (member {member_pid}, nats-server {nats_pid}); publishing {} events", a.events);
    let frozen = child::Frozen::new(&[nats_pid, member_pid]);
    let cut = Instant::now();
    let target = warm + a.events;
    for i in 0..a.events {
        pubr.submit(sample_body(i)).await?;
    }
    wait_confirmed(&pubr, target).await?;
    let cut_s = cut.elapsed().as_secs_f64();
    let t0 = Instant::now();
    drop(frozen);
    let (moved, done) = root_tail(&replica, warm, target).await?;
    let resume_s = moved.duration_since(t0).as_secs_f64();
    let catchup_s = done.duration_since(t0).as_secs_f64();
    cancel.cancel();
    drop(pubr);
    let _ = task.await;
    Ok((cut_s, resume_s, catchup_s))
}
