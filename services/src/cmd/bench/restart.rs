//! `canopy bench restart`: the leaf writes N events over P points, the tree
//! carries them to the root; then the root member is stopped and started
//! again twice, once with the state snapshot its stop wrote and once with
//! the snapshot deleted, timing each until its state service answers with
//! the whole history folded.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use events::{Body, Quality, Value, ValueBody};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::tree::{leaf_publisher, nats_bin, wait_confirmed, wait_replica, Tree, WorkDir, LEAF};
use crate::cli::BenchRestartArgs;
use crate::wait::poll;
use crate::wire::StateReply;

/// Runs the benchmark and prints its figures.
pub async fn run(a: BenchRestartArgs) -> anyhow::Result<u8> {
    let nats = nats_bin(&a.common)?;
    let dir = WorkDir::new(&a.common, "restart")?;
    let mut tree = Tree::start(&dir.path, &nats, &a.sync, topology::Security::None).await?;
    let result = measure(&a, &mut tree).await;
    tree.shutdown().await;
    let (n, with, without) = result?;
    let out = json!({"events": n, "points": a.points, "sync": a.sync,
        "with_snapshot": {"answers_s": with.0, "folded_s": with.1},
        "without_snapshot": {"answers_s": without.0, "folded_s": without.1}});
    if a.common.json {
        println!("{out}");
    } else {
        println!(
            "restart of the root member holding {n} events of root.mid.leaf ({} points)",
            a.points
        );
        println!(
            "{:<22} {:>16} {:>22}",
            "", "state answers (s)", "history folded (s)"
        );
        println!("{:<22} {:>16.2} {:>22.2}", "with snapshot", with.0, with.1);
        println!(
            "{:<22} {:>16.2} {:>22.2}",
            "without snapshot", without.0, without.1
        );
    }
    Ok(0)
}

type Timed = (f64, f64);

async fn measure(a: &BenchRestartArgs, tree: &mut Tree) -> anyhow::Result<(u64, Timed, Timed)> {
    let (leaf_js, root, replica) = tree.ready().await?;
    let cancel = CancellationToken::new();
    let (pubr, task) = leaf_publisher(&leaf_js, true, &cancel).await?;
    eprintln!("bench: writing {} events at the leaf", a.events);
    let points = a.points.max(1);
    for i in 0..a.events {
        pubr.submit(Body::Value(ValueBody {
            point: format!("p{}", i % points),
            value: Value::Float(i as f64 * 0.5),
            quality: Quality::Good,
        }))
        .await?;
        if (i + 1) % 100_000 == 0 {
            eprintln!("bench: {} events submitted", i + 1);
        }
    }
    let last = wait_confirmed(&pubr, a.events).await?;
    cancel.cancel();
    drop(pubr);
    let _ = task.await;
    wait_replica(&replica, last, Duration::from_secs(600)).await?;
    eprintln!("bench: the root holds {last} events; waiting for its fold");
    folded(&root, last, Duration::from_secs(600)).await?;
    let snapshot = crate::member::fold::snapshot_path(&tree.members[0].data);
    let mut timed = Vec::new();
    for keep in [true, false] {
        tree.members[0].stop().await;
        if !keep {
            std::fs::remove_file(&snapshot)
                .with_context(|| format!("removing {}", snapshot.display()))?;
        } else if !snapshot.exists() {
            bail!(
                "the root's stop wrote no snapshot at {}",
                snapshot.display()
            );
        }
        eprintln!(
            "bench: restarting the root member {} its snapshot",
            if keep { "with" } else { "without" }
        );
        let t = Instant::now();
        tree.members[0].spawn()?;
        let answers = folded(&root, 0, Duration::from_secs(120)).await?;
        let answers_s = answers.duration_since(t).as_secs_f64();
        let done = folded(&root, last, Duration::from_secs(600)).await?;
        timed.push((answers_s, done.duration_since(t).as_secs_f64()));
    }
    Ok((last, timed[0], timed[1]))
}

/// When the root's state service answered with the leaf folded to `seq`.
async fn folded(
    root: &async_nats::Client,
    seq: u64,
    patience: Duration,
) -> anyhow::Result<Instant> {
    let what = format!("the root's state to reach seq {seq} of {LEAF}");
    poll(&what, patience, Duration::from_millis(20), || async {
        let m = tokio::time::timeout(
            Duration::from_secs(1),
            root.request(events::subjects::state_subject("root"), "".into()),
        )
        .await??;
        let v: StateReply = serde_json::from_slice(&m.payload)?;
        Ok((v.origin_seq(LEAF) >= seq).then(Instant::now))
    })
    .await
}
