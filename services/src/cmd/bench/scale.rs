//! `canopy bench scale`: how the root's cost grows with the number of
//! origins below it.
//!
//! For each size N, one tree: the root is a real HA pair (`canopy node`
//! a and b, `canopy witness`, three nats-servers: every replica is an R3
//! stream, a JetStream raft group); `root.mid` is a nats-server this
//! process runs, holding a replica stream for each of N synthetic leaf
//! origins `root.mid.o<i>` (in the topology, never run: a synthetic leaf
//! domain, so the machine need not run N processes), which the benchmark
//! writes at a fixed aggregate rate, round-robin. The root's pullers copy
//! every origin from mid, as they would from a real child.
//!
//! Measured per size, over `--measure` after a warm-up: CPU per
//! replicated event of the root's active member and its nats-server (and
//! of the standby's and the witness's, from `/proc`), their resident
//! memory, replication lag (the `ts` of each event to its publish into the
//! root's replica, seen by a subscriber at the root), the root's stream
//! and raft-group counts (its `/jsz`: `streams`, `ha_assets`); then the link from mid
//! to the root is cut for `--cut` (iptables on mid's server, as the fault
//! tests cut links) while mid goes on taking events, and the catch-up is
//! the time from the heal until the root holds every origin's events up
//! to the heal. The tree is plaintext: the figures are about growth with
//! N, which TLS scales by a constant (`bench pipeline --compare-tls`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::tree::{connect_js, nats_bin, percentiles, request_json, Member, WorkDir};
use crate::cli::BenchScaleArgs;
use crate::member::publisher::now_us;
use crate::natsconf;
use crate::{ports, streams, supervisor};

/// One size's figures.
#[derive(Debug, Default, serde::Serialize)]
struct Row {
    origins: usize,
    root_streams: Option<u64>,
    root_raft_groups: Option<u64>,
    replicated: u64,
    rate: f64,
    active_us_per_event: f64,
    active_member_us_per_event: f64,
    standby_us_per_event: f64,
    witness_us_per_event: f64,
    active_rss_mib: f64,
    active_server_rss_mib: f64,
    rss_kib_per_origin: f64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    cut_s: f64,
    catchup_s: f64,
    catchup_events: u64,
}

/// Runs the benchmark and prints its figures.
pub async fn run(a: BenchScaleArgs) -> anyhow::Result<u8> {
    let sizes = super::tree::counts(&a.origins, "--origins")?;
    if a.rate == 0 {
        anyhow::bail!("--rate must be above 0");
    }
    let nats = nats_bin(&a.common)?;
    let mut rows = Vec::new();
    for n in sizes {
        let dir = WorkDir::new(&a.common, &format!("scale-{n}"))?;
        eprintln!("bench: {n} origins in {}", dir.path.display());
        rows.push(one(&a, n, &nats, &dir.path).await?);
    }
    if a.common.json {
        println!("{}", json!({"rate": a.rate, "sync": a.sync, "sizes": rows}));
        return Ok(0);
    }
    println!(
        "root pair replicating N origins from a synthetic leaf domain at {} events/s in all (sync {}), cut {:?}",
        a.rate, a.sync, a.cut
    );
    println!(
        "{:>7} {:>7} {:>6} {:>8} {:>10} {:>10} {:>10} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9}",
        "origins",
        "streams",
        "raft",
        "events/s",
        "active µs",
        "standby µs",
        "witness µs",
        "RSS MiB",
        "KiB/orig",
        "lag p50",
        "lag p99",
        "catch-up",
        "caught up"
    );
    for r in &rows {
        let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        println!(
            "{:>7} {:>7} {:>6} {:>8.0} {:>10.1} {:>10.1} {:>10.1} {:>9.0} {:>9.1} {:>7.1}ms {:>7.1}ms {:>7.2}s {:>9}",
            r.origins,
            opt(r.root_streams),
            opt(r.root_raft_groups),
            r.rate,
            r.active_us_per_event,
            r.standby_us_per_event,
            r.witness_us_per_event,
            r.active_rss_mib + r.active_server_rss_mib,
            r.rss_kib_per_origin,
            r.lag_p50_ms,
            r.lag_p99_ms,
            r.catchup_s,
            r.catchup_events
        );
    }
    println!("µs: CPU per replicated event of the process and its nats-server; RSS: the active member and its nats-server");
    Ok(0)
}

fn origin(i: usize) -> String {
    format!("root.mid.o{i}")
}

/// The bench's retention: JetStream reserves a stream's `max_bytes` of
/// storage when it is created, so with the default (1 GiB per stream) a
/// server refuses the replica of about its free disk in GiB-th origin
/// (measured: this machine's 56 GB took fewer than 100).
const RETENTION: &str = "retention = { max_age = \"1d\", max_bytes = \"16MiB\" }";

fn topology_text(n: usize, sync: &str) -> anyhow::Result<String> {
    let mut t = format!(
        "[mesh]\nname = \"scale\"\nsync = \"{sync}\"\nsecurity = \"none\"\n{RETENTION}\n\n[[node]]\nid = \"root\"\nmembers = [\n"
    );
    for m in ["a", "b"] {
        t.push_str(&format!(
            "  {{ name = \"{m}\", host = \"127.0.0.1\", port_base = {} }},\n",
            ports::reserve(7)?
        ));
    }
    t.push_str(&format!(
        "]\nwitness = {{ host = \"127.0.0.1\", port_base = {} }}\n",
        ports::reserve(7)?
    ));
    t.push_str(&super::tree::single_node("root.mid")?);
    // The synthetic leaves never run: an address nothing listens on.
    for i in 0..n {
        t.push_str(&format!(
            "\n[[node]]\nid = \"{}\"\nmembers = [{{ name = \"a\", host = \"127.0.0.2\", port_base = {} }}]\n",
            origin(i),
            20_000 + 10 * i
        ));
    }
    Ok(t)
}

/// CPU seconds of `pid` so far (user + system).
fn cpu_s(pid: u32) -> f64 {
    crate::child::proc_stat(pid).map_or(0.0, |s| s.cpu_ticks as f64 / crate::child::USER_HZ)
}

/// Resident memory of `pid`, MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The (member pid, nats-server pid, role) a member reports.
async fn member_pids(
    client: &async_nats::Client,
    member: &str,
) -> anyhow::Result<(u32, u32, String)> {
    let info = request_json(client, &events::subjects::member_subject("root", member)).await?;
    Ok((
        info["pid"].as_u64().context("pid")? as u32,
        info["nats_pid"].as_u64().context("nats_pid")? as u32,
        info["role"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// What the root's subscriber saw.
#[derive(Default)]
struct Seen {
    /// Highest seq per origin.
    seq: HashMap<String, u64>,
    /// Lags (ms) while measuring.
    lags: Vec<f64>,
    count: u64,
}

async fn one(
    a: &BenchScaleArgs,
    n: usize,
    nats: &std::path::Path,
    dir: &std::path::Path,
) -> anyhow::Result<Row> {
    let topo_path = dir.join("topology.toml");
    std::fs::write(&topo_path, topology_text(n, &a.sync)?)?;
    let topo = crate::cmd::load_topology(&topo_path)?;
    let exe = std::env::current_exe()?;
    let stop = CancellationToken::new();
    let mut procs = Vec::new();
    for (cmd, member) in [("node", "a"), ("node", "b"), ("witness", "witness")] {
        let data = dir.join("root").join(member);
        std::fs::create_dir_all(&data)?;
        let mut args: Vec<String> = vec![
            cmd.into(),
            "--topology".into(),
            topo_path.display().to_string(),
            "--node".into(),
            "root".into(),
            "--data".into(),
            data.display().to_string(),
            "--nats-server".into(),
            nats.display().to_string(),
        ];
        if cmd == "node" {
            args.extend(["--member".into(), member.into()]);
        }
        let mut m = Member::new(exe.clone(), args, data);
        m.spawn()?;
        procs.push(m);
    }
    let mid = topo.node("root.mid").context("mid")?.clone();
    let (mid_sup, mid_task) = super::tree::serve_node(&topo, "root.mid", dir, nats, None, &stop)?;
    let result = measure(a, n, &topo, &mid, &mid_sup).await;
    stop.cancel();
    let _ = mid_task.await;
    for mut p in procs {
        p.stop().await;
    }
    result
}

async fn measure(
    a: &BenchScaleArgs,
    n: usize,
    topo: &topology::Topology,
    mid: &topology::Node,
    mid_sup: &supervisor::Supervised,
) -> anyhow::Result<Row> {
    let mid_url = natsconf::client_url(topo, &mid.members[0].endpoint);
    let (_mc, mid_js) = connect_js(&mid_url, &events::subjects::domain("root.mid"), None).await?;
    eprintln!("bench: creating {n} origin streams at root.mid");
    crate::wait::wait_for("mid's JetStream", Duration::from_secs(60), || async {
        streams::ensure(&mid_js, streams::own(topo, "root.mid", 1))
            .await
            .map(Some)
    })
    .await?;
    for i in 0..n {
        streams::ensure(&mid_js, streams::replica(topo, "root.mid", &origin(i), 1)).await?;
    }
    let root = topo.root();
    // Member a's server (the pair's JetStream answers through any of them).
    let url = natsconf::client_url(topo, &root.members[0].endpoint);
    let (client, root_js) = connect_js(&url, "root", None).await?;
    // Ready: one member active, and the root holds a replica of every
    // origin (its own stream, mid's and the N leaves').
    let started = Instant::now();
    crate::wait::poll(
        &format!("the root pair to create {} streams", n + 2),
        Duration::from_secs(900),
        Duration::from_millis(500),
        || async {
            let names: Vec<String> = root_js
                .stream_names()
                .filter_map(|s| async move { s.ok() })
                .collect()
                .await;
            Ok((names.len() > n + 1).then_some(()))
        },
    )
    .await?;
    eprintln!(
        "bench: the root holds {} streams after {:.1} s",
        n + 2,
        started.elapsed().as_secs_f64()
    );
    let roles = crate::wait::wait_for(
        "an active root member",
        Duration::from_secs(120),
        || async {
            let a = member_pids(&client, "a").await?;
            let b = member_pids(&client, "b").await?;
            Ok((a.2 == "active" || b.2 == "active").then_some((a, b)))
        },
    )
    .await?;
    let ((a_pid, a_nats, a_role), (b_pid, b_nats, _)) = roles;
    let (active, standby) = if a_role == "active" {
        ((a_pid, a_nats), (b_pid, b_nats))
    } else {
        ((b_pid, b_nats), (a_pid, a_nats))
    };
    let witness = {
        let info = request_json(
            &client,
            &events::subjects::member_subject("root", "witness"),
        )
        .await?;
        (
            info["pid"].as_u64().context("witness pid")? as u32,
            info["nats_pid"].as_u64().context("witness nats_pid")? as u32,
        )
    };

    // The subscriber at the root: every replicated event.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut sub = client
        .subscribe(format!("{}.root.>", events::subjects::REPLICA_PREFIX))
        .await?;
    client.flush().await?;
    let sub_task = {
        let (seen, measuring) = (seen.clone(), measuring.clone());
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let Ok(ev) = events::decode(&m.payload) else {
                    continue;
                };
                let lag = now_us().saturating_sub(ev.ts) as f64 / 1000.0;
                let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                let e = s.seq.entry(ev.origin).or_default();
                *e = (*e).max(ev.seq);
                if measuring.load(Ordering::Relaxed) {
                    s.lags.push(lag);
                    s.count += 1;
                }
            }
        })
    };

    // The writers: N chains at mid, `rate` events/s in all.
    let cancel = CancellationToken::new();
    let published: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let writer = {
        let (js, cancel, published, rate) =
            (mid_js.clone(), cancel.clone(), published.clone(), a.rate);
        tokio::spawn(async move { write(js, n, rate, published, cancel).await })
    };

    // Warm-up, then the measured window.
    tokio::time::sleep(a.warmup).await;
    let pids = [
        active.0, active.1, standby.0, standby.1, witness.0, witness.1,
    ];
    let before: Vec<f64> = pids.iter().map(|&p| cpu_s(p)).collect();
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(a.measure).await;
    measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let after: Vec<f64> = pids.iter().map(|&p| cpu_s(p)).collect();
    let d: Vec<f64> = after.iter().zip(&before).map(|(x, y)| x - y).collect();
    let (replicated, mut lags) = {
        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
        (s.count, std::mem::take(&mut s.lags))
    };
    let per = |cpu: f64| cpu * 1e6 / replicated.max(1) as f64;
    let (lag_p50, lag_p99, _) = percentiles(&mut lags).unwrap_or_default();
    let monitor = root.members[0].endpoint.ports.monitor;
    let jsz = crate::nats::monitor_json(monitor, "/jsz", Duration::from_secs(10))
        .await
        .ok();
    let root_streams = jsz.as_ref().and_then(|j| j["streams"].as_u64());
    // Replicated assets: one raft group each (streams, consumers, meta).
    let root_raft_groups = jsz.as_ref().and_then(|j| j["ha_assets"].as_u64());
    let (active_rss, server_rss) = (rss_mib(active.0), rss_mib(active.1));

    // The cut: mid's server drops its packets to the root's leafnode ports.
    let mid_pid = (*mid_sup.pid.borrow()).context("mid's nats-server is not running")?;
    let leaf_ports: Vec<u16> = natsconf::servers(root)
        .iter()
        .map(|e| e.ports.leafnode)
        .collect();
    eprintln!("bench: cutting root.mid from the root for {:?}", a.cut);
    let mut fault = crate::faults::NetFault::new(&[mid_pid])?;
    fault.drop_to(&leaf_ports)?;
    let cut = Instant::now();
    tokio::time::sleep(a.cut).await;
    let target: Vec<u64> = published
        .iter()
        .map(|p| p.load(Ordering::Relaxed))
        .collect();
    let cut_s = cut.elapsed().as_secs_f64();
    let at_heal: u64 = {
        let s = seen.lock().unwrap_or_else(|p| p.into_inner());
        (0..n)
            .map(|i| target[i].saturating_sub(*s.seq.get(&origin(i)).unwrap_or(&0)))
            .sum()
    };
    fault.heal();
    let healed = Instant::now();
    crate::wait::poll(
        "the root to catch up with every origin",
        Duration::from_secs(600),
        Duration::from_millis(20),
        || async {
            let s = seen.lock().unwrap_or_else(|p| p.into_inner());
            Ok((0..n)
                .all(|i| s.seq.get(&origin(i)).copied().unwrap_or(0) >= target[i])
                .then_some(()))
        },
    )
    .await?;
    let catchup_s = healed.elapsed().as_secs_f64();
    drop(fault);
    cancel.cancel();
    writer.await??;
    sub_task.abort();
    let row = Row {
        origins: n,
        root_streams,
        root_raft_groups,
        replicated,
        rate: replicated as f64 / secs,
        active_us_per_event: per(d[0] + d[1]),
        active_member_us_per_event: per(d[0]),
        standby_us_per_event: per(d[2] + d[3]),
        witness_us_per_event: per(d[4] + d[5]),
        active_rss_mib: active_rss,
        active_server_rss_mib: server_rss,
        rss_kib_per_origin: (active_rss + server_rss) * 1024.0 / n as f64,
        lag_p50_ms: lag_p50,
        lag_p99_ms: lag_p99,
        cut_s,
        catchup_s,
        catchup_events: at_heal,
    };
    eprintln!("bench: {row:?}");
    Ok(row)
}

/// Writes `rate` events/s in all into the N replica streams at mid,
/// round-robin, until `cancel`; `published[i]` is origin i's last seq
/// acked.
async fn write(
    js: async_nats::jetstream::Context,
    n: usize,
    rate: u64,
    published: Arc<Vec<AtomicU64>>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut chains: Vec<events::Chain> = (0..n)
        .map(|i| events::Chain::new(origin(i), "a", 1))
        .collect();
    let subjects: Vec<String> = (0..n)
        .map(|i| events::subjects::replica_subject("root.mid", &origin(i), "p"))
        .collect();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let per_tick = rate as f64 / 100.0;
    let (mut owed, mut next) = (0.0, 0usize);
    let mut acks = futures::stream::FuturesUnordered::new();
    let mut value = 0u64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
            Some(r) = acks.next(), if !acks.is_empty() => {
                let (i, seq, ack): (usize, u64, Result<_, async_nats::jetstream::context::PublishError>) = r;
                ack.map_err(|e| anyhow::anyhow!("storing {}'s seq {seq} at mid: {e}", origin(i)))?;
                published[i].fetch_max(seq, Ordering::Relaxed);
                continue;
            }
        }
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            let i = next;
            next = (next + 1) % n;
            value += 1;
            let sealed = chains[i].seal(
                now_us(),
                events::Body::Value(events::ValueBody {
                    point: "p".into(),
                    value: events::Value::Float(value as f64),
                    quality: events::Quality::Good,
                }),
            )?;
            let seq = sealed.event.seq;
            let ack = js
                .publish(subjects[i].clone(), sealed.bytes.into())
                .await
                .map_err(|e| anyhow::anyhow!("publishing at mid: {e}"))?;
            acks.push(async move { (i, seq, ack.await) });
        }
    }
    while let Some((i, seq, ack)) = acks.next().await {
        if ack.is_ok() {
            published[i].fetch_max(seq, Ordering::Relaxed);
        }
    }
    Ok(())
}
