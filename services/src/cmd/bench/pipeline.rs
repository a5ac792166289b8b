//! `canopy bench pipeline`: canopy's publish path against raw JetStream.
//!
//! Method. One run builds a 3-level tree on loopback: `root` and `root.mid`
//! are real `canopy node` processes (their pullers carry the leaf's stream
//! up, hop by hop), `root.mid.leaf` is a nats-server this process starts,
//! whose stream it writes itself. Both contenders write into the *same*
//! stream `EV_root-mid-leaf` and travel the *same* replication to the root:
//!
//! - raw: plain async-nats JetStream publishes of a payload of the same size
//!   as a canopy event, acks pipelined (256 in flight), no fencing headers;
//! - canopy: the member's publisher (seal into the hash chain, CBOR,
//!   expected-last-sequence + msg-id fencing, atomic batches, one in flight).
//!
//! Arrival is observed on the root's replica by a reader (`crate::pull`) in
//! this process. After a raw warm-up, each contender does two throughput runs
//! (best reported): N events / (first send → N-th arrival at the root).
//! Raw goes first because canopy's chain must not have foreign messages
//! appended behind it while it runs.
//! Latency = arrival at the root − send time, at a paced rate.
//! CPU = user + system time of this process and every process below it
//! (members, nats-servers), over the throughput runs, per 100k events.
//!
//! `--compare-tls` does the whole run twice, on a plaintext tree and on a
//! secured one (TLS 1.3 on the client, leafnode and route links, every
//! peer presenting a certificate of the mesh CA), and reports the ratios.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::tree::{
    leaf_publisher, nats_bin, percentiles, sample_body, sample_event_size, Tree, WorkDir, LEAF,
};
use crate::cli::BenchPipelineArgs;
use crate::member::publisher::now_us;

const RAW_MAGIC: &[u8; 4] = b"RAW!";
/// Throughput runs per contender; the best is reported (the machine's other
/// load only ever makes a run slower).
const ROUNDS: u32 = 2;

/// Figures of one contender.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    throughput: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// CPU seconds of the whole tree (and this process) per 100k events,
    /// over the throughput runs.
    cpu_s_per_100k: f64,
}

impl Figures {
    fn json(&self) -> serde_json::Value {
        json!({"throughput_eps": self.throughput, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms,
            "max_ms": self.max_ms, "cpu_s_per_100k": self.cpu_s_per_100k})
    }
}

/// Runs the benchmark and prints the table (or JSON).
pub async fn run(a: BenchPipelineArgs) -> anyhow::Result<u8> {
    if a.compare_tls {
        return compare_tls(a).await;
    }
    let (raw, canopy, size) = on_tree(&a, topology::Security::None).await?;
    let ratio = |c: f64, r: f64| if r > 0.0 { c / r } else { 0.0 };
    let out = json!({
        "method": "3-level tree on loopback; leaf stream -> mid replica -> root replica; see `canopy bench pipeline --help`",
        "events": a.events, "rate": a.rate, "latency_for_s": a.latency_for.as_secs_f64(),
        "payload_bytes": size, "sync": a.sync, "checkpoints": !a.no_checkpoints, "cores": cores(),
        "raw": raw.json(),
        "canopy": canopy.json(),
        "ratio": {"throughput": ratio(canopy.throughput, raw.throughput), "p50": ratio(canopy.p50_ms, raw.p50_ms), "p99": ratio(canopy.p99_ms, raw.p99_ms)},
    });
    if a.common.json {
        println!("{out}");
    } else {
        println!("leaf→root over 2 replica hops, {size}-byte events, sync {}, {} events per throughput run, latency at {} ev/s for {:?}",
            a.sync, a.events, a.rate, a.latency_for);
        table(("raw JetStream", raw), ("canopy", canopy), "canopy/raw");
    }
    Ok(0)
}

/// `--compare-tls`: the whole run on a plaintext tree, then on a secured
/// one (TLS 1.3 on every link, certificates of the mesh CA); canopy's
/// figures side by side.
async fn compare_tls(a: BenchPipelineArgs) -> anyhow::Result<u8> {
    eprintln!("bench: plaintext tree");
    let (plain_raw, plain, size) = on_tree(&a, topology::Security::None).await?;
    eprintln!("bench: secured tree");
    let (tls_raw, tls, _) = on_tree(&a, topology::Security::Secured).await?;
    let ratio = |c: f64, r: f64| if r > 0.0 { c / r } else { 0.0 };
    let out = json!({
        "method": "the same 3-level loopback tree run plaintext, then secured (TLS 1.3 on client, leafnode and route links); see `canopy bench pipeline --help`",
        "events": a.events, "rate": a.rate, "latency_for_s": a.latency_for.as_secs_f64(),
        "payload_bytes": size, "sync": a.sync, "checkpoints": !a.no_checkpoints, "cores": cores(),
        "plaintext": {"raw": plain_raw.json(), "canopy": plain.json()},
        "tls": {"raw": tls_raw.json(), "canopy": tls.json()},
        "ratio": {
            "throughput": ratio(tls.throughput, plain.throughput),
            "p50": ratio(tls.p50_ms, plain.p50_ms),
            "p99": ratio(tls.p99_ms, plain.p99_ms),
            "cpu_per_100k": ratio(tls.cpu_s_per_100k, plain.cpu_s_per_100k),
            "raw_throughput": ratio(tls_raw.throughput, plain_raw.throughput),
        },
    });
    if a.common.json {
        println!("{out}");
    } else {
        println!("canopy leaf→root over 2 replica hops, {size}-byte events, sync {}, {} events per throughput run, latency at {} ev/s for {:?}",
            a.sync, a.events, a.rate, a.latency_for);
        table(("plaintext", plain), ("TLS", tls), "TLS/plain");
        println!(
            "(raw JetStream on the same trees: {:.0} ev/s plaintext, {:.0} ev/s TLS)",
            plain_raw.throughput, tls_raw.throughput
        );
    }
    Ok(0)
}

/// One tree of `security`, measured: (raw, canopy, event size).
async fn on_tree(
    a: &BenchPipelineArgs,
    security: topology::Security,
) -> anyhow::Result<(Figures, Figures, usize)> {
    let nats = nats_bin(&a.common)?;
    let dir = WorkDir::new(&a.common, "pipeline")?;
    let tree = Tree::start(&dir.path, &nats, &a.sync, security).await?;
    let result = measure(a, &tree).await;
    tree.shutdown().await;
    result
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}

/// Prints two contenders side by side, with the ratio second/first.
fn table(first: (&str, Figures), second: (&str, Figures), ratio_name: &str) {
    let ratio = |c: f64, r: f64| if r > 0.0 { c / r } else { 0.0 };
    let ((n1, f1), (n2, f2)) = (first, second);
    println!("{:<26} {:>14} {:>14} {:>10}", "", n1, n2, ratio_name);
    let row = |name: &str, x: f64, y: f64, prec: usize| {
        println!(
            "{name:<26} {x:>14.prec$} {y:>14.prec$} {:>10.2}",
            ratio(y, x)
        );
    };
    row("throughput (ev/s)", f1.throughput, f2.throughput, 0);
    row("latency p50 (ms)", f1.p50_ms, f2.p50_ms, 2);
    row("latency p99 (ms)", f1.p99_ms, f2.p99_ms, 2);
    row(
        "CPU per 100k events (s)",
        f1.cpu_s_per_100k,
        f2.cpu_s_per_100k,
        2,
    );
    println!(
        "{:<26} {:>14.2} {:>14.2}",
        "latency max (ms)", f1.max_ms, f2.max_ms
    );
}

/// CPU seconds used so far by this process and every process below it
/// (the tree's members and nats-servers), from `/proc`.
fn tree_cpu_s() -> f64 {
    let me = std::process::id();
    let mut procs: Vec<(u32, u32, u64)> = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(st) = crate::child::proc_stat(pid) {
            procs.push((pid, st.ppid, st.cpu_ticks));
        }
    }
    let mut mine = vec![me];
    let mut ticks = 0u64;
    while let Some(p) = mine.pop() {
        for (pid, ppid, t) in &procs {
            if *pid == p {
                ticks += t;
            }
            if *ppid == p {
                mine.push(*pid);
            }
        }
    }
    ticks as f64 / crate::child::USER_HZ
}

async fn measure(a: &BenchPipelineArgs, tree: &Tree) -> anyhow::Result<(Figures, Figures, usize)> {
    let (leaf_js, root, replica) = tree.ready().await?;
    let size = sample_event_size();
    let arrivals = Arrivals::start(jetstream::with_domain(root, "root"), replica).await?;

    // Warm-up: stream files, consumers and pullers all running.
    raw_throughput(&leaf_js, (a.events / 5).max(100), size, &arrivals).await?;
    let mut raw_tp = 0f64;
    let cpu = tree_cpu_s();
    for round in 1..=ROUNDS {
        eprintln!(
            "bench: raw throughput ({} events, round {round}/{ROUNDS})",
            a.events
        );
        raw_tp = raw_tp.max(raw_throughput(&leaf_js, a.events, size, &arrivals).await?);
    }
    let per_100k = |cpu: f64| cpu / (a.events * u64::from(ROUNDS)) as f64 * 100_000.0;
    let raw_cpu = per_100k(tree_cpu_s() - cpu);
    eprintln!(
        "bench: raw latency ({} ev/s for {:?})",
        a.rate, a.latency_for
    );
    let raw_lat = paced(a, &arrivals, |_| raw_send(&leaf_js, size)).await?;

    let cancel = CancellationToken::new();
    let (pubr, task) = leaf_publisher(&leaf_js, !a.no_checkpoints, &cancel).await?;
    let mut canopy_tp = 0f64;
    let cpu = tree_cpu_s();
    for round in 1..=ROUNDS {
        eprintln!(
            "bench: canopy throughput ({} events, round {round}/{ROUNDS})",
            a.events
        );
        let start = Instant::now();
        let target = arrivals.count() + a.events;
        for i in 0..a.events {
            pubr.submit(sample_body(i)).await?;
        }
        arrivals.wait_count(target).await?;
        canopy_tp = canopy_tp.max(a.events as f64 / start.elapsed().as_secs_f64());
    }
    let canopy_cpu = per_100k(tree_cpu_s() - cpu);
    eprintln!(
        "bench: canopy latency ({} ev/s for {:?})",
        a.rate, a.latency_for
    );
    let canopy_lat = paced(a, &arrivals, |i| {
        let p = pubr.clone();
        async move { p.submit(sample_body(i)).await.map_err(anyhow::Error::from) }
    })
    .await?;
    cancel.cancel();
    drop(pubr);
    let _ = task.await;
    let f = |tp: f64, lat: (f64, f64, f64), cpu: f64| Figures {
        throughput: tp,
        p50_ms: lat.0,
        p99_ms: lat.1,
        max_ms: lat.2,
        cpu_s_per_100k: cpu,
    };
    Ok((
        f(raw_tp, raw_lat, raw_cpu),
        f(canopy_tp, canopy_lat, canopy_cpu),
        size,
    ))
}

fn raw_payload(size: usize) -> Bytes {
    let mut v = Vec::with_capacity(size.max(12));
    v.extend_from_slice(RAW_MAGIC);
    v.extend_from_slice(&now_us().to_be_bytes());
    v.resize(size.max(12), 0x5a);
    Bytes::from(v)
}

async fn raw_send(js: &Context, size: usize) -> anyhow::Result<()> {
    let subject = events::subjects::event_subject(LEAF, "p");
    // Ack awaited in the background: the raw path pipelines like canopy's.
    let ack = js.publish(subject, raw_payload(size)).await?;
    tokio::spawn(async move {
        let _ = ack.await;
    });
    Ok(())
}

async fn raw_throughput(
    js: &Context,
    n: u64,
    size: usize,
    arrivals: &Arrivals,
) -> anyhow::Result<f64> {
    let subject = events::subjects::event_subject(LEAF, "p");
    let target = arrivals.count() + n;
    let start = Instant::now();
    let mut inflight = std::collections::VecDeque::new();
    for _ in 0..n {
        let ack = js.publish(subject.clone(), raw_payload(size)).await?;
        inflight.push_back(ack);
        if inflight.len() >= 256 {
            if let Some(a) = inflight.pop_front() {
                a.await?;
            }
        }
    }
    for a in inflight {
        a.await?;
    }
    arrivals.wait_count(target).await?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Sends at `a.rate` for `a.latency_for`; returns (p50, p99, max) in ms.
async fn paced<F, Fut>(
    a: &BenchPipelineArgs,
    arrivals: &Arrivals,
    mut send: F,
) -> anyhow::Result<(f64, f64, f64)>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let n = (a.rate as f64 * a.latency_for.as_secs_f64()) as u64;
    let first = arrivals.count();
    let start = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / a.rate as f64)).await;
        send(i).await?;
    }
    arrivals.wait_count(first + n).await?;
    let mut lat = arrivals.latencies_since(first);
    match percentiles(&mut lat) {
        Some(p) => Ok(p),
        None => bail!("no latency samples"),
    }
}

/// Observes arrivals at the root's replica: count and per-message latency.
///
/// The observer is a reader like any other: under load (`sync = "always"`
/// keeps the server busy with fsyncs) its consumer can miss two
/// heartbeats and end with an error. It then resumes from the next sequence
/// it has not seen, as canopy's pullers do; an observer that stopped at the
/// first error counted a fraction of what had arrived and reported a stalled
/// replica that was in fact complete.
struct Arrivals {
    state: Arc<std::sync::Mutex<(u64, Vec<f64>)>>,
    notify: Arc<tokio::sync::Notify>,
    /// Reads resumed after an error.
    resumed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Arrivals {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// When `payload` (a raw one or a canopy event) was sent, in µs.
fn sent_us(payload: &[u8], now: u64) -> u64 {
    if payload.starts_with(RAW_MAGIC) && payload.len() >= 12 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&payload[4..12]);
        u64::from_be_bytes(b)
    } else {
        events::decode(payload).map(|e| e.ts).unwrap_or(now)
    }
}

impl Arrivals {
    async fn start(
        root_js: jetstream::Context,
        mut replica: jetstream::stream::Stream,
    ) -> anyhow::Result<Self> {
        let name = replica.cached_info().config.name.clone();
        let mut next = replica.info().await?.state.last_sequence + 1;
        let state = Arc::new(std::sync::Mutex::new((0u64, Vec::new())));
        let notify = Arc::new(tokio::sync::Notify::new());
        let resumed = Arc::new(AtomicU64::new(0));
        let (s, n, r) = (state.clone(), notify.clone(), resumed.clone());
        let task = tokio::spawn(async move {
            loop {
                let mut msgs = match crate::pull::from_seq(&root_js, &name, next).await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!("arrivals: starting a read at {next}: {e:#}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                while let Some(m) = msgs.next().await {
                    let m = match m {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::debug!("arrivals: read interrupted at {next}: {e}");
                            break;
                        }
                    };
                    let Ok(info) = m.info() else { break };
                    if info.stream_sequence < next {
                        continue;
                    }
                    next = info.stream_sequence + 1;
                    let now = now_us();
                    let sent = sent_us(&m.payload, now);
                    if let Ok(mut g) = s.lock() {
                        g.0 += 1;
                        g.1.push(now.saturating_sub(sent) as f64 / 1000.0);
                    }
                    n.notify_waiters();
                }
                r.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(Self {
            state,
            notify,
            resumed,
            task,
        })
    }

    fn count(&self) -> u64 {
        self.state.lock().map(|g| g.0).unwrap_or(0)
    }

    fn latencies_since(&self, first: u64) -> Vec<f64> {
        self.state
            .lock()
            .map(|g| g.1[first as usize..].to_vec())
            .unwrap_or_default()
    }

    async fn wait_count(&self, n: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.count() < n {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {n} events reached the root in 120 s ({} reads resumed)",
                    self.count(),
                    self.resumed.load(Ordering::Relaxed)
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), self.notify.notified()).await;
        }
        Ok(())
    }
}
