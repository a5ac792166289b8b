//! `canopy bench queries`: response times of history queries at the root
//! under a rising load, with one fixed `canopy query` worker and then
//! under `canopy autoscale`.
//!
//! The leaf writes `--events` value events cycling over `--points`
//! points; the tree carries them to the root's replica. Each query asks
//! the trend of one point over a random window of `--span` of the leaf's
//! events, so a worker walks (decodes, verifies, gates) `--span` events to
//! answer with `span / points` samples. Closed-loop clients (each sends
//! its next query when the last is answered) rise through `--levels`, each
//! level held for `--step`; the figures are the clients' own response
//! times and, under autoscale, the workers it ran at the end of the step.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use events::{Body, Quality, Value, ValueBody};
use serde_json::json;
use tokio::io::AsyncBufReadExt as _;
use tokio_util::sync::CancellationToken;

use super::tree::{
    leaf_publisher, nats_bin, percentiles, wait_confirmed, wait_replica, Tree, WorkDir, LEAF,
};
use crate::cli::BenchQueriesArgs;
use crate::wire::{Query, QueryReply};

/// One level's figures.
#[derive(Debug, serde::Serialize)]
struct Step {
    clients: usize,
    answered: usize,
    failed: usize,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    workers: usize,
}

/// Runs the benchmark and prints its figures.
pub async fn run(a: BenchQueriesArgs) -> anyhow::Result<u8> {
    let levels = super::tree::counts(&a.levels, "--levels")?;
    if a.points == 0 || a.span == 0 {
        anyhow::bail!("--points and --span must be above 0");
    }
    let nats = nats_bin(&a.common)?;
    let dir = WorkDir::new(&a.common, "queries")?;
    let tree = Tree::start(&dir.path, &nats, "1s", topology::Security::Secured).await?;
    let result = measure(&a, &levels, &tree, &dir.path).await;
    tree.shutdown().await;
    let (fixed, scaled) = result?;
    if a.common.json {
        println!("{}", json!({"fixed": fixed, "autoscale": scaled}));
        return Ok(0);
    }
    println!(
        "history queries at the root: a trend of one of {} points over {} of the leaf's {} events ({} samples each)",
        a.points,
        a.span,
        a.events,
        a.span / a.points as u64
    );
    for (name, steps) in [
        ("one worker".to_owned(), &fixed),
        (
            format!(
                "canopy autoscale --target-ms {} --max {}",
                a.target_ms, a.max
            ),
            &scaled,
        ),
    ] {
        println!("{name}");
        println!(
            "  {:>7} {:>9} {:>7} {:>9} {:>9} {:>9} {:>8}",
            "clients", "answered", "failed", "per s", "p50 ms", "p99 ms", "workers"
        );
        for s in steps {
            println!(
                "  {:>7} {:>9} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>8}",
                s.clients, s.answered, s.failed, s.rate, s.p50_ms, s.p99_ms, s.workers
            );
        }
    }
    Ok(0)
}

async fn measure(
    a: &BenchQueriesArgs,
    levels: &[usize],
    tree: &Tree,
    dir: &std::path::Path,
) -> anyhow::Result<(Vec<Step>, Vec<Step>)> {
    let (leaf_js, client, replica) = tree.ready().await?;
    let cancel = CancellationToken::new();
    let (pubr, task) = leaf_publisher(&leaf_js, true, &cancel).await?;
    eprintln!(
        "bench: writing {} events over {} points at the leaf",
        a.events, a.points
    );
    for i in 0..a.events {
        pubr.submit(Body::Value(ValueBody {
            point: format!("p{}", i % a.points as u64),
            value: Value::Float(i as f64),
            quality: Quality::Good,
        }))
        .await?;
    }
    let last = wait_confirmed(&pubr, a.events).await?;
    wait_replica(&replica, last, Duration::from_secs(300)).await?;
    cancel.cancel();
    drop(pubr);
    let _ = task.await;
    // The windows the clients ask for: (from_ms, to_ms) of `span` events.
    let mut windows = Vec::new();
    let span = a.span.min(last.saturating_sub(1)).max(1);
    for i in 0..64u64 {
        let start = 1 + (i * 7919) % (last - span).max(1);
        let ts = |seq: u64| {
            let replica = replica.clone();
            async move {
                let m = replica.direct_get(seq).await?;
                anyhow::Ok(events::decode(&m.payload)?.ts / 1000)
            }
        };
        windows.push((ts(start).await?, ts(start + span).await?));
    }
    let root_url = crate::natsconf::client_url(&tree.topo, &tree.topo.root().members[0].endpoint);
    let identity = dir
        .join("keys")
        .join("root")
        .join(crate::certs::QUERY_IDENTITY);
    let exe = std::env::current_exe()?;
    let mut results = Vec::new();
    for scaled in [false, true] {
        let mut args: Vec<String> = if scaled {
            vec![
                "autoscale".into(),
                "--target-ms".into(),
                a.target_ms.to_string(),
                "--max".into(),
                a.max.to_string(),
                "--every".into(),
                "1s".into(),
                "--json".into(),
            ]
        } else {
            vec!["query".into()]
        };
        args.extend([
            "--node".into(),
            "root".into(),
            "--server".into(),
            root_url.clone(),
            "--identity".into(),
            identity.display().to_string(),
        ]);
        let mut child = crate::child::spawn(&exe, &args, crate::child::Output::PipedStdout)?;
        let workers = Arc::new(AtomicUsize::new(1));
        if let Some(out) = child.stdout.take() {
            let workers = workers.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("bench: autoscale: {line}");
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                    if let Some(n) = v.get("workers").and_then(|n| n.as_u64()) {
                        workers.store(n as usize, Ordering::Relaxed);
                    }
                }
            });
        }
        let outcome = run_levels(a, levels, &client, &windows, &workers).await;
        crate::child::stop(&mut child, Duration::from_secs(5)).await;
        results.push(outcome?);
    }
    let scaled = results.pop().unwrap_or_default();
    let fixed = results.pop().unwrap_or_default();
    Ok((fixed, scaled))
}

/// The query a client sends: the trend of one point over one window.
fn query(windows: &[(u64, u64)], points: usize, n: usize) -> Query {
    let (from_ms, to_ms) = windows[n % windows.len()];
    Query::History {
        origin: LEAF.into(),
        point: format!("p{}", n % points),
        from_ms,
        to_ms,
        limit: Some(crate::wire::QUERY_MAX_LIMIT),
        after_seq: None,
    }
}

async fn run_levels(
    a: &BenchQueriesArgs,
    levels: &[usize],
    client: &async_nats::Client,
    windows: &[(u64, u64)],
    workers: &AtomicUsize,
) -> anyhow::Result<Vec<Step>> {
    let subject = events::subjects::query_subject("root");
    // The first answer says the workers are serving.
    crate::wait::wait_for(
        "a query worker's answer",
        Duration::from_secs(60),
        || async {
            let body = serde_json::to_vec(&query(windows, a.points, 0))?;
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                client.request(subject.clone(), body.into()),
            )
            .await;
            Ok(matches!(r, Ok(Ok(_))).then_some(()))
        },
    )
    .await?;
    let mut steps = Vec::new();
    let counter = Arc::new(AtomicUsize::new(0));
    for &clients in levels {
        let until = Instant::now() + a.step;
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (client, subject, counter) = (client.clone(), subject.clone(), counter.clone());
            let windows = windows.to_vec();
            let points = a.points;
            tasks.push(tokio::spawn(async move {
                let (mut times, mut failed) = (Vec::new(), 0usize);
                while Instant::now() < until {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let body = serde_json::to_vec(&query(&windows, points, n)).unwrap_or_default();
                    let t = Instant::now();
                    let r = tokio::time::timeout(
                        Duration::from_secs(30),
                        client.request(subject.clone(), body.into()),
                    )
                    .await;
                    let ok = match r {
                        Ok(Ok(m)) => serde_json::from_slice::<QueryReply>(&m.payload)
                            .is_ok_and(|r| r.error.is_none()),
                        _ => false,
                    };
                    if ok {
                        times.push(t.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        failed += 1;
                    }
                }
                (times, failed)
            }));
        }
        let (mut times, mut failed) = (Vec::new(), 0);
        for t in tasks {
            let (mut ts, f) = t.await?;
            times.append(&mut ts);
            failed += f;
        }
        let answered = times.len();
        let (p50, p99, _) = percentiles(&mut times).unwrap_or_default();
        let step = Step {
            clients,
            answered,
            failed,
            rate: answered as f64 / a.step.as_secs_f64(),
            p50_ms: p50,
            p99_ms: p99,
            workers: workers.load(Ordering::Relaxed),
        };
        eprintln!("bench: {step:?}");
        steps.push(step);
    }
    Ok(steps)
}
