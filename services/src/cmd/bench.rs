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
//!   expected-last-sequence + msg-id fencing, pipelined appends).
//!
//! Arrival is observed on the root's replica by a pull consumer in this
//! process. After a raw warm-up, each contender does two throughput runs
//! (best reported): N events / (first send → N-th arrival at the root).
//! Raw goes first because canopy's chain must not have foreign messages
//! appended behind it while it runs.
//! Latency = arrival at the root − send time, at a paced rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use events::{Body, Quality, Value, ValueBody};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::child::{self, Output};
use crate::cli::{BenchCodecArgs, BenchPipelineArgs};
use crate::member::metrics::Metrics;
use crate::member::publisher::{self, now_us};
use crate::natsconf::{self, Role};
use crate::{streams, supervisor};

const LEAF: &str = "root.mid.leaf";
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
}

/// A block of `n` consecutive free loopback ports, for a bench topology.
pub(crate) fn free_block(n: u16) -> anyhow::Result<u16> {
    for _ in 0..200 {
        let base = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        if base < 20000 || base.checked_add(n).is_none() {
            continue;
        }
        if (base..base + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return Ok(base);
        }
    }
    bail!("no block of {n} free ports")
}

fn topology_text(sync: &str) -> anyhow::Result<String> {
    let mut t = format!("[mesh]\nname = \"bench\"\nsync = \"{sync}\"\n");
    for id in ["root", "root.mid", LEAF] {
        let base = free_block(7)?;
        t.push_str(&format!(
            "\n[[node]]\nid = \"{id}\"\nmembers = [{{ name = \"a\", host = \"127.0.0.1\", port_base = {base} }}]\n"
        ));
    }
    Ok(t)
}

/// Runs the benchmark and prints the table (or JSON).
pub async fn pipeline(a: BenchPipelineArgs) -> anyhow::Result<u8> {
    let nats_bin = supervisor::find_nats_server(a.nats_server.as_deref())?;
    let dir = std::env::temp_dir().join(format!("canopy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run(&a, &nats_bin, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (raw, canopy, size) = result?;
    let ratio = |c: f64, r: f64| if r > 0.0 { c / r } else { 0.0 };
    let out = json!({
        "method": "3-level tree on loopback; leaf stream -> mid replica -> root replica; see `canopy bench pipeline --help`",
        "events": a.events, "rate": a.rate, "latency_for_s": a.latency_for.as_secs_f64(),
        "payload_bytes": size, "sync": a.sync, "checkpoints": !a.no_checkpoints, "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "raw": {"throughput_eps": raw.throughput, "p50_ms": raw.p50_ms, "p99_ms": raw.p99_ms, "max_ms": raw.max_ms},
        "canopy": {"throughput_eps": canopy.throughput, "p50_ms": canopy.p50_ms, "p99_ms": canopy.p99_ms, "max_ms": canopy.max_ms},
        "ratio": {"throughput": ratio(canopy.throughput, raw.throughput), "p50": ratio(canopy.p50_ms, raw.p50_ms), "p99": ratio(canopy.p99_ms, raw.p99_ms)},
    });
    if a.json {
        println!("{out}");
    } else {
        println!("leaf→root over 2 replica hops, {size}-byte events, sync {}, {} events per throughput run, latency at {} ev/s for {:?}",
            a.sync, a.events, a.rate, a.latency_for);
        println!(
            "{:<22} {:>14} {:>14} {:>10}",
            "", "raw JetStream", "canopy", "canopy/raw"
        );
        println!(
            "{:<22} {:>14.0} {:>14.0} {:>10.2}",
            "throughput (ev/s)",
            raw.throughput,
            canopy.throughput,
            ratio(canopy.throughput, raw.throughput)
        );
        println!(
            "{:<22} {:>14.2} {:>14.2} {:>10.2}",
            "latency p50 (ms)",
            raw.p50_ms,
            canopy.p50_ms,
            ratio(canopy.p50_ms, raw.p50_ms)
        );
        println!(
            "{:<22} {:>14.2} {:>14.2} {:>10.2}",
            "latency p99 (ms)",
            raw.p99_ms,
            canopy.p99_ms,
            ratio(canopy.p99_ms, raw.p99_ms)
        );
        println!(
            "{:<22} {:>14.2} {:>14.2}",
            "latency max (ms)", raw.max_ms, canopy.max_ms
        );
    }
    Ok(0)
}

/// The bench tree: `root` and `root.mid` as real `canopy node` processes,
/// the leaf's nats-server supervised by this process (the bench writes the
/// leaf's stream itself).
struct Tree {
    topo: topology::Topology,
    /// The `canopy node` processes (root, then mid) and how to start each again.
    children: Vec<Member>,
    stop: CancellationToken,
    sup_task: tokio::task::JoinHandle<()>,
}

impl Tree {
    async fn start(
        dir: &std::path::Path,
        nats_bin: &std::path::Path,
        sync: &str,
    ) -> anyhow::Result<Tree> {
        let topo_path = dir.join("topology.toml");
        std::fs::write(&topo_path, topology_text(sync)?)?;
        let topo = super::load_topology(&topo_path)?;
        let exe = std::env::current_exe()?;
        let stop = CancellationToken::new();
        let mut children = Vec::new();
        eprintln!(
            "bench: starting root and mid members and the leaf's nats-server in {}",
            dir.display()
        );
        for id in ["root", "root.mid"] {
            let data = dir.join(id);
            std::fs::create_dir_all(&data)?;
            let args: Vec<String> = vec![
                "node".into(),
                "--topology".into(),
                topo_path.display().to_string(),
                "--node".into(),
                id.into(),
                "--data".into(),
                data.display().to_string(),
                "--nats-server".into(),
                nats_bin.display().to_string(),
            ];
            let mut m = Member {
                exe: exe.clone(),
                args,
                data,
                process: None,
            };
            m.spawn()?;
            children.push(m);
        }
        let leaf = topo.node(LEAF).context("leaf")?.clone();
        let leaf_data = dir.join(LEAF);
        std::fs::create_dir_all(&leaf_data)?;
        let conf = natsconf::render(
            &topo,
            &leaf,
            Role::Member("a"),
            &leaf_data.join("jetstream"),
        )
        .map_err(anyhow::Error::msg)?;
        std::fs::write(leaf_data.join("nats.conf"), conf)?;
        let (_sup, sup_task) = supervisor::start(
            nats_bin.to_path_buf(),
            leaf_data.join("nats.conf"),
            leaf_data.join("nats.log"),
            stop.clone(),
        )?;
        Ok(Tree {
            topo,
            children,
            stop,
            sup_task,
        })
    }

    async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.sup_task.await;
        for mut c in self.children {
            c.stop().await;
        }
    }
}

/// One `canopy node` process of the bench tree.
struct Member {
    exe: std::path::PathBuf,
    args: Vec<String>,
    data: std::path::PathBuf,
    process: Option<tokio::process::Child>,
}

impl Member {
    fn spawn(&mut self) -> anyhow::Result<()> {
        self.process = Some(child::spawn(
            &self.exe,
            &self.args,
            Output::File(self.data.join("member.log")),
        )?);
        Ok(())
    }

    /// SIGTERM, and SIGKILL after 30 s (a stop writes the state snapshot).
    async fn stop(&mut self) {
        if let Some(mut c) = self.process.take() {
            child::stop(&mut c, Duration::from_secs(30)).await;
        }
    }
}

async fn run(
    a: &BenchPipelineArgs,
    nats_bin: &std::path::Path,
    dir: &std::path::Path,
) -> anyhow::Result<(Figures, Figures, usize)> {
    let tree = Tree::start(dir, nats_bin, &a.sync).await?;
    let result = measure(a, &tree.topo).await;
    tree.shutdown().await;
    result
}

async fn connect_js(url: &str, domain: &str) -> anyhow::Result<(async_nats::Client, Context)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match async_nats::connect(url).await {
            Ok(c) => {
                let js = jetstream::ContextBuilder::new()
                    .domain(domain)
                    .timeout(Duration::from_secs(5))
                    .build(c.clone());
                return Ok((c, js));
            }
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("waiting for {url}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => bail!("{url}: {e}"),
        }
    }
}

/// Connections to the tree once it is up: (leaf JetStream, root client,
/// the root's replica of the leaf).
async fn tree_ready(
    topo: &topology::Topology,
) -> anyhow::Result<(Context, async_nats::Client, jetstream::stream::Stream)> {
    let leaf_url = natsconf::client_url(&topo.node(LEAF).context("leaf")?.members[0].endpoint);
    let root_url = natsconf::client_url(&topo.root().members[0].endpoint);
    let (_lc, leaf_js) = connect_js(&leaf_url, "root-mid-leaf").await?;
    let (root_client, root_js) = connect_js(&root_url, "root").await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = streams::ensure(&leaf_js, streams::own(topo, LEAF, 1)).await {
        if Instant::now() > deadline {
            bail!("leaf JetStream never came up: {e:#}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let replica = loop {
        match root_js
            .get_stream(events::subjects::stream_name(LEAF))
            .await
        {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("waiting for the root's replica: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => bail!("the root never created its replica: {e}"),
        }
    };
    Ok((leaf_js, root_client, replica))
}

async fn measure(
    a: &BenchPipelineArgs,
    topo: &topology::Topology,
) -> anyhow::Result<(Figures, Figures, usize)> {
    let (leaf_js, _root, replica) = tree_ready(topo).await?;
    let size = sample_event_size();
    let arrivals = Arrivals::start(replica).await?;

    // Warm-up: stream files, consumers and pullers all running.
    raw_throughput(&leaf_js, (a.events / 5).max(100), size, &arrivals).await?;
    let mut raw_tp = 0f64;
    for round in 1..=ROUNDS {
        eprintln!(
            "bench: raw throughput ({} events, round {round}/{ROUNDS})",
            a.events
        );
        raw_tp = raw_tp.max(raw_throughput(&leaf_js, a.events, size, &arrivals).await?);
    }
    eprintln!(
        "bench: raw latency ({} ev/s for {:?})",
        a.rate, a.latency_for
    );
    let raw_lat = paced(a, &arrivals, |_| raw_send(&leaf_js, size)).await?;

    let cancel = CancellationToken::new();
    let (pubr, task) = leaf_publisher(&leaf_js, !a.no_checkpoints, &cancel).await?;
    let mut canopy_tp = 0f64;
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
    let f = |tp: f64, lat: (f64, f64, f64)| Figures {
        throughput: tp,
        p50_ms: lat.0,
        p99_ms: lat.1,
        max_ms: lat.2,
    };
    Ok((f(raw_tp, raw_lat), f(canopy_tp, canopy_lat), size))
}

fn sample_body(i: u64) -> Body {
    Body::Value(ValueBody {
        point: "p".into(),
        value: Value::Float(i as f64 * 0.5),
        quality: Quality::Good,
    })
}

fn sample_event_size() -> usize {
    let mut chain = events::Chain::new(LEAF, "a", 1);
    chain
        .seal(now_us(), sample_body(12345))
        .map(|s| s.bytes.len())
        .unwrap_or(128)
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
    if lat.is_empty() {
        bail!("no latency samples");
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    Ok((pct(0.50), pct(0.99), lat[lat.len() - 1]))
}

/// Observes arrivals at the root's replica: count and per-message latency.
struct Arrivals {
    state: Arc<std::sync::Mutex<(u64, Vec<f64>)>>,
    notify: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Arrivals {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Arrivals {
    async fn start(mut replica: jetstream::stream::Stream) -> anyhow::Result<Self> {
        let tail = replica.info().await?.state.last_sequence;
        let mut msgs = crate::pull::from_seq(&replica, tail + 1).await?;
        let state = Arc::new(std::sync::Mutex::new((0u64, Vec::new())));
        let notify = Arc::new(tokio::sync::Notify::new());
        let (s, n) = (state.clone(), notify.clone());
        let task = tokio::spawn(async move {
            while let Some(Ok(m)) = msgs.next().await {
                let now = now_us();
                let sent = if m.payload.starts_with(RAW_MAGIC) && m.payload.len() >= 12 {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&m.payload[4..12]);
                    u64::from_be_bytes(b)
                } else {
                    events::decode(&m.payload).map(|e| e.ts).unwrap_or(now)
                };
                if let Ok(mut g) = s.lock() {
                    g.0 += 1;
                    g.1.push(now.saturating_sub(sent) as f64 / 1000.0);
                }
                n.notify_waiters();
            }
        });
        Ok(Self {
            state,
            notify,
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
                    "only {} of {n} events reached the root in 120 s",
                    self.count()
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), self.notify.notified()).await;
        }
        Ok(())
    }
}

/// `canopy bench codec`: nanoseconds per event for seal (encode + hash),
/// decode, and verify + fold, on this machine, single-threaded.
pub fn codec(a: BenchCodecArgs) -> anyhow::Result<u8> {
    let n = a.events.max(1);
    let mut chain = events::Chain::new(LEAF, "a", 1);
    let t = Instant::now();
    let mut sealed = Vec::with_capacity(n as usize);
    for i in 0..n {
        sealed.push(chain.seal(1_700_000_000_000_000 + i, sample_body(i))?.bytes);
    }
    let seal_ns = t.elapsed().as_nanos() as f64 / n as f64;
    let t = Instant::now();
    let mut decoded = Vec::with_capacity(n as usize);
    for b in &sealed {
        decoded.push(events::decode(b)?);
    }
    let decode_ns = t.elapsed().as_nanos() as f64 / n as f64;
    let t = Instant::now();
    for b in &sealed {
        std::hint::black_box(events::hash(b));
    }
    let hash_ns = t.elapsed().as_nanos() as f64 / n as f64;
    let t = Instant::now();
    let mut cursor = events::StreamCursor::new(LEAF);
    let mut state = events::State::default();
    for (i, b) in sealed.iter().enumerate() {
        if let events::Verdict::Valid { event, .. } = cursor.judge(i as u64 + 1, b) {
            state.apply(&event);
        }
    }
    let verify_fold_ns = t.elapsed().as_nanos() as f64 / n as f64;
    // A checkpoint: one ed25519 signature over the chain head, then sealed
    // like any event; spread over the default 1000 events per checkpoint.
    let key = events::nkeys::KeyPair::new_user();
    let signs = (n / 100).clamp(100, 2000);
    let t = Instant::now();
    for i in 0..signs {
        std::hint::black_box(events::sign_checkpoint(&key, LEAF, "a", 1, i, [7; 32])?);
    }
    let sign_ns = t.elapsed().as_nanos() as f64 / signs as f64;
    let per_event_ns = (sign_ns + seal_ns) / 1000.0;
    let size = sealed.first().map(Vec::len).unwrap_or(0);
    let out = json!({"events": n, "bytes": size, "seal_ns": seal_ns, "decode_ns": decode_ns,
                     "hash_ns": hash_ns, "decode_verify_fold_ns": verify_fold_ns,
                     "checkpoint_sign_ns": sign_ns, "checkpoint_ns_per_event_at_1000": per_event_ns});
    if a.json {
        println!("{out}");
    } else {
        println!("{n} value events of {size} bytes, one thread:");
        println!("  seal (CBOR encode + SHA-256 chain)  {seal_ns:>8.0} ns/event");
        println!("  decode (hand-written CBOR reader)  {decode_ns:>8.0} ns/event");
        println!("  SHA-256 of the bytes                {hash_ns:>8.0} ns/event");
        println!(
            "  decode + verify chain + fold        {verify_fold_ns:>8.0} ns/event ({:.0} events/s)",
            1e9 / verify_fold_ns
        );
        println!("  checkpoint signature (ed25519)      {sign_ns:>8.0} ns/checkpoint");
        println!("  checkpoints every 1000 events       {per_event_ns:>8.1} ns/event (signature + one more sealed event)");
    }
    Ok(0)
}

/// `canopy bench catchup`: freeze the middle node (its member and its
/// nats-server, SIGSTOP: cut off from both its child and its parent) while
/// the leaf publishes N events, thaw it, and time until the root holds them
/// all.
pub async fn catchup(a: crate::cli::BenchCatchupArgs) -> anyhow::Result<u8> {
    let nats_bin = supervisor::find_nats_server(a.nats_server.as_deref())?;
    let dir = std::env::temp_dir().join(format!("canopy-bench-catchup-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let tree = Tree::start(&dir, &nats_bin, &a.sync).await?;
    let result = catchup_measure(&a, &tree).await;
    tree.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    let (cut_s, resume_s, catchup_s) = result?;
    let rate = a.events as f64 / (catchup_s - resume_s).max(1e-9);
    let out = json!({"events": a.events, "sync": a.sync, "cut_s": cut_s, "resume_s": resume_s, "catchup_s": catchup_s, "transfer_eps": rate});
    if a.json {
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

async fn catchup_measure(
    a: &crate::cli::BenchCatchupArgs,
    tree: &Tree,
) -> anyhow::Result<(f64, f64, f64)> {
    let (leaf_js, root, mut replica) = tree_ready(&tree.topo).await?;
    let cancel = CancellationToken::new();
    let (pubr, task) = leaf_publisher(&leaf_js, true, &cancel).await?;
    // Polls the root's replica until it holds `target`; returns when it
    // first moved past `from` and when it got there.
    let root_tail = |from: u64, target: u64| {
        let mut r = replica.clone();
        async move {
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
    };
    // Warm-up: everything flowing before the cut.
    for i in 0..1000 {
        pubr.submit(sample_body(i)).await?;
    }
    let warm = wait_confirmed(&pubr, 1000).await?;
    root_tail(0, warm).await?;
    let info = request_json(&root, "canopy.member.root.mid.a").await?;
    let member_pid = info["pid"].as_u64().context("mid pid")? as u32;
    let nats_pid = info["nats_pid"].as_u64().context("mid nats pid")? as u32;
    eprintln!("bench: freezing root.mid (member {member_pid}, nats-server {nats_pid}); publishing {} events", a.events);
    child::signal_pid(nats_pid, nix::sys::signal::Signal::SIGSTOP);
    child::signal_pid(member_pid, nix::sys::signal::Signal::SIGSTOP);
    let cut = Instant::now();
    let target = warm + a.events;
    for i in 0..a.events {
        pubr.submit(sample_body(i)).await?;
    }
    wait_confirmed(&pubr, target).await?;
    let cut_s = cut.elapsed().as_secs_f64();
    let t0 = Instant::now();
    child::signal_pid(nats_pid, nix::sys::signal::Signal::SIGCONT);
    child::signal_pid(member_pid, nix::sys::signal::Signal::SIGCONT);
    let (moved, done) = root_tail(warm, target).await?;
    let resume_s = moved.duration_since(t0).as_secs_f64();
    let catchup_s = done.duration_since(t0).as_secs_f64();
    let _ = replica.info().await;
    cancel.cancel();
    drop(pubr);
    let _ = task.await;
    Ok((cut_s, resume_s, catchup_s))
}

async fn wait_confirmed(p: &publisher::Publisher, seq: u64) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while p.last().seq < seq {
        if Instant::now() > deadline {
            bail!("the leaf did not confirm seq {seq} in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(p.last().seq)
}

async fn request_json(
    client: &async_nats::Client,
    subject: &str,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout(
            Duration::from_secs(2),
            client.request(subject.to_owned(), "".into()),
        )
        .await
        {
            Ok(Ok(m)) => return Ok(serde_json::from_slice(&m.payload)?),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => bail!("no reply on {subject}"),
        }
    }
}

/// canopy's own publisher on the leaf's stream, as a member runs it.
async fn leaf_publisher(
    leaf_js: &Context,
    checkpoints: bool,
    cancel: &CancellationToken,
) -> anyhow::Result<(publisher::Publisher, tokio::task::JoinHandle<()>)> {
    publisher::start(
        leaf_js.clone(),
        LEAF.into(),
        "a".into(),
        1,
        Arc::new(|| true),
        checkpoints.then(bench_signer),
        Arc::new(Metrics::default()),
        cancel.clone(),
    )
    .await
}

/// The canopy path includes signed checkpoints (topology defaults: every
/// 1000 events or 1000 ms), so the benchmark measures what a plant runs.
fn bench_signer() -> publisher::Signer {
    publisher::Signer {
        key: Arc::new(events::nkeys::KeyPair::new_user()),
        every_events: 1000,
        every_ms: 1000,
    }
}

/// `canopy bench rebuild`: the leaf writes N events, the tree carries them
/// to the root; then, in one run on the root's replica, a raw pull consumer
/// reads them all (count only) and canopy's rebuild reads them again and
/// decodes, verifies the chain and folds each one. Both read the same
/// stream through the same kind of consumer, one after the other.
pub async fn rebuild(a: crate::cli::BenchRebuildArgs) -> anyhow::Result<u8> {
    let nats_bin = supervisor::find_nats_server(a.nats_server.as_deref())?;
    let dir = std::env::temp_dir().join(format!("canopy-bench-rebuild-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let tree = Tree::start(&dir, &nats_bin, &a.sync).await?;
    let result = rebuild_measure(&a, &tree).await;
    tree.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    let (n, raw, canopy) = result?;
    let ratio = if raw > 0.0 { canopy / raw } else { 0.0 };
    let out = json!({"events": n, "raw_eps": raw, "rebuild_eps": canopy, "ratio": ratio});
    if a.json {
        println!("{out}");
    } else {
        println!("reading the root's replica of {n} events");
        println!(
            "{:<40} {:>12.0} events/s",
            "raw pull consumer (count only)", raw
        );
        println!(
            "{:<40} {:>12.0} events/s",
            "canopy rebuild (decode + chain + fold)", canopy
        );
        println!("{:<40} {:>12.2}", "ratio", ratio);
    }
    Ok(0)
}

async fn rebuild_measure(
    a: &crate::cli::BenchRebuildArgs,
    tree: &Tree,
) -> anyhow::Result<(u64, f64, f64)> {
    let (leaf_js, _root, mut replica) = tree_ready(&tree.topo).await?;
    let cancel = CancellationToken::new();
    let (pubr, task) = leaf_publisher(&leaf_js, true, &cancel).await?;
    eprintln!("bench: writing {} events at the leaf", a.events);
    for i in 0..a.events {
        pubr.submit(sample_body(i)).await?;
    }
    let last = wait_confirmed(&pubr, a.events).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while replica.info().await?.state.last_sequence < last {
        if Instant::now() > deadline {
            bail!("the root did not receive the history in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    drop(pubr);
    let _ = task.await;
    let n = replica.info().await?.state.last_sequence;
    eprintln!("bench: raw read of {n} events");
    let t = Instant::now();
    let mut msgs = crate::pull::from_seq(&replica, 1).await?;
    let mut count = 0u64;
    while count < n {
        let m = tokio::time::timeout(Duration::from_secs(10), msgs.next())
            .await?
            .context("read ended")?;
        let _ = m.map_err(|e| anyhow::anyhow!("{e}"))?;
        count += 1;
    }
    let raw = n as f64 / t.elapsed().as_secs_f64();
    drop(msgs);
    eprintln!("bench: canopy rebuild of {n} events");
    let t = Instant::now();
    let mut msgs = crate::pull::from_seq(&replica, 1).await?;
    let mut cursor = events::StreamCursor::new(LEAF);
    let mut state = events::State::default();
    let mut count = 0u64;
    while count < n {
        let m = tokio::time::timeout(Duration::from_secs(10), msgs.next())
            .await?
            .context("read ended")?;
        let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
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
        count += 1;
    }
    let canopy = n as f64 / t.elapsed().as_secs_f64();
    Ok((n, raw, canopy))
}

/// `canopy bench restart`: the leaf writes N events over P points, the tree
/// carries them to the root; then the root member is stopped and started
/// again twice, once with the state snapshot its stop wrote and once with
/// the snapshot deleted, timing each until its state service answers with
/// the whole history folded.
pub async fn restart(a: crate::cli::BenchRestartArgs) -> anyhow::Result<u8> {
    let nats_bin = supervisor::find_nats_server(a.nats_server.as_deref())?;
    let dir = a.workdir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("canopy-bench-restart-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir)?;
    let mut tree = Tree::start(&dir, &nats_bin, &a.sync).await?;
    let result = restart_measure(&a, &mut tree).await;
    tree.shutdown().await;
    if a.workdir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (n, with, without) = result?;
    let out = json!({"events": n, "points": a.points, "sync": a.sync,
        "with_snapshot": {"answers_s": with.0, "folded_s": with.1},
        "without_snapshot": {"answers_s": without.0, "folded_s": without.1}});
    if a.json {
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

async fn restart_measure(
    a: &crate::cli::BenchRestartArgs,
    tree: &mut Tree,
) -> anyhow::Result<(u64, (f64, f64), (f64, f64))> {
    let (leaf_js, root, mut replica) = tree_ready(&tree.topo).await?;
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
    let deadline = Instant::now() + Duration::from_secs(600);
    while replica.info().await?.state.last_sequence < last {
        if Instant::now() > deadline {
            bail!("the root did not receive the history in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("bench: the root holds {last} events; waiting for its fold");
    folded(&root, last, Duration::from_secs(600)).await?;
    let snapshot = crate::member::fold::snapshot_path(&tree.children[0].data);
    let mut timed = Vec::new();
    for keep in [true, false] {
        tree.children[0].stop().await;
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
        tree.children[0].spawn()?;
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
    let deadline = Instant::now() + patience;
    loop {
        let reply = tokio::time::timeout(
            Duration::from_secs(1),
            root.request("canopy.state.root".to_owned(), "".into()),
        )
        .await;
        if let Ok(Ok(m)) = reply {
            let v: serde_json::Value = serde_json::from_slice(&m.payload)?;
            if v["origins"][LEAF]["seq"].as_u64().unwrap_or(0) >= seq {
                return Ok(Instant::now());
            }
        }
        if Instant::now() > deadline {
            bail!("the root's state did not reach seq {seq} of {LEAF} in {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
