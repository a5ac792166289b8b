//! `canopy bench faults`: a seeded, randomised fault campaign against a
//! real tree, with the invariants checked from outside the processes.
//!
//! The tree (real `canopy lab` processes, keys and signed checkpoints,
//! `sync = "always"`): a single `root`; an HA pair `root.plc` on a Modbus
//! server (the campaign's `plc-sim`, or `--plc ADDR`, e.g. pymodbus) behind
//! a proxy that records every write with the process that sent it; an HA
//! pair `root.south` with simulated points; a single leaf `root.south.cell`.
//! While commands (forces, PLC writes) flow, each schedule applies its
//! faults ([`plan`]), overlapping: kill -9 and SIGSTOP of actives,
//! standbys and witnesses and of members' nats-servers, cuts of one
//! process's raft and/or NATS links (cgroup + iptables: needs root), a slow
//! PLC link, the leaf's data wiped while it is down. Then everything is
//! healed and, once the tree has converged (every pair one active, the
//! root at every origin's tail: the time is printed), the invariants are
//! checked ([`check`]):
//!
//! - the PLC saw no two connections' (activations') writes interleave;
//! - every origin's stream at the root is byte-identical to the origin's
//!   own: nothing lost, nothing extra, no duplicate;
//! - every acknowledged command's event is at the root, at its seq;
//! - `canopy audit` of the root is clean (one member per epoch, epochs only
//!   grow, the chain unbroken, every checkpoint signed by its member).
//!
//! It prints the seed, each fault, a row per schedule and a summary, and
//! exits 1 on any violation.

mod apply;
mod check;
mod load;
pub mod plan;
mod proxy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value as Json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinSet;

use super::tree::{nats_bin, single_node, WorkDir};
use crate::child::{self, Output};
use crate::cli::BenchFaultsArgs;
use crate::ports;
use crate::wire::MemberInfo;
use apply::{FaultCtx, Wiped};
use load::Load;
use plan::{Fault, Shape};

/// The pairs of the campaign's tree, in [`Fault::pair`] order.
const PAIRS: [&str; 2] = ["root.plc", "root.south"];
/// The leaf whose data a fault wipes.
const LEAF: &str = "root.south.cell";
/// How long the tree may take to converge after a schedule is healed.
const CONVERGE: Duration = Duration::from_secs(180);

/// Runs the campaign and prints its report.
pub async fn run(a: BenchFaultsArgs) -> anyhow::Result<u8> {
    let nats = nats_bin(&a.common)?;
    let work = WorkDir::new(&a.common, "faults")?;
    let seed = a.seed.unwrap_or_else(crate::member::publisher::now_us);
    eprintln!(
        "faults: seed {seed}, {} schedules of {} faults in {} s windows; work in {}",
        a.schedules,
        a.faults,
        a.window_s,
        work.path.display()
    );
    let mut campaign = Campaign::start(&a, &nats, &work.path).await?;
    let shape = Shape {
        faults: a.faults,
        window_ms: a.window_s * 1000,
        min_ms: 300,
        max_ms: 4000,
        pairs: PAIRS.len(),
    };
    let mut rows = Vec::new();
    let mut failed = None;
    for i in 0..a.schedules {
        let faults = plan::schedule(seed, i, &shape);
        eprintln!(
            "faults: schedule {} of {} (seed {seed}):",
            i + 1,
            a.schedules
        );
        for f in &faults {
            eprintln!("  {}", plan::describe(f, PAIRS[f.pair]));
        }
        match campaign.schedule(&faults).await {
            Ok(row) => {
                eprintln!(
                    "faults: schedule {}: {} faults applied ({} skipped), {} events, {} violations, converged in {:.1} s",
                    i + 1,
                    row.applied,
                    row.skipped.len(),
                    row.events,
                    row.violations.len(),
                    row.converge_s
                );
                for v in &row.violations {
                    eprintln!("  VIOLATION {v}");
                }
                for l in &row.lost {
                    eprintln!("  lost with the disk: {l}");
                }
                for s in &row.skipped {
                    eprintln!("  skipped: {s}");
                }
                rows.push(row);
            }
            Err(e) => {
                failed = Some(format!("schedule {}: {e:#}", i + 1));
                break;
            }
        }
    }
    campaign.stop().await;
    report(&a, seed, &rows, failed.as_deref())
}

fn report(
    a: &BenchFaultsArgs,
    seed: u64,
    rows: &[Row],
    failed: Option<&str>,
) -> anyhow::Result<u8> {
    let violations: usize = rows.iter().map(|r| r.violations.len()).sum();
    let faults: usize = rows.iter().map(|r| r.applied).sum();
    let events: u64 = rows.iter().map(|r| r.events).sum();
    let worst = rows.iter().map(|r| r.converge_s).fold(0.0, f64::max);
    let out = json!({
        "seed": seed, "schedules": rows.len(), "faults": faults, "events": events,
        "violations": violations, "worst_convergence_s": worst, "failed": failed,
        "rows": rows.iter().map(|r| json!({
            "faults": r.applied, "skipped": r.skipped, "events": r.events, "lost_with_disk": r.lost,
            "violations": r.violations, "converge_s": r.converge_s,
        })).collect::<Vec<_>>(),
    });
    if a.common.json {
        println!("{out}");
    } else {
        println!("fault campaign, seed {seed}");
        println!(
            "{:>9} {:>7} {:>8} {:>11} {:>14}",
            "schedule", "faults", "events", "violations", "converged (s)"
        );
        for (i, r) in rows.iter().enumerate() {
            println!(
                "{:>9} {:>7} {:>8} {:>11} {:>14.1}",
                i + 1,
                r.applied,
                r.events,
                r.violations.len(),
                r.converge_s
            );
        }
        println!(
            "{:>9} {:>7} {:>8} {:>11} {:>14.1}",
            "all", faults, events, violations, worst
        );
        if let Some(f) = failed {
            println!("campaign stopped: {f}");
        }
    }
    Ok(if violations == 0 && failed.is_none() {
        0
    } else {
        1
    })
}

/// What one schedule did and found.
#[derive(Debug, Default)]
struct Row {
    applied: usize,
    skipped: Vec<String>,
    /// Acknowledged events a single node lost with its wiped disk.
    lost: Vec<String>,
    events: u64,
    violations: Vec<String>,
    converge_s: f64,
}

/// One process of the lab, as the campaign knows it now.
#[derive(Debug, Clone)]
struct Proc {
    node: String,
    member: String,
    pid: u32,
    data: PathBuf,
    argv: Vec<String>,
}

/// An acknowledged force: its event must be at the root.
#[derive(Debug, Clone)]
pub struct Acked {
    /// The node that served it.
    pub origin: String,
    /// The seq of its event.
    pub seq: u64,
    /// The point forced.
    pub point: String,
    /// The value forced.
    pub value: f64,
    /// When it was acknowledged, µs since the Unix epoch.
    pub at_us: u64,
}

struct Campaign {
    topo: topology::Topology,
    lab: tokio::process::Child,
    plc: Option<tokio::process::Child>,
    proxy: proxy::Proxy,
    procs: Arc<Mutex<BTreeMap<(String, String), Proc>>>,
    restarted: Arc<Mutex<Vec<tokio::process::Child>>>,
    /// Every pid a member of the PLC's pair ever had → its member name.
    writers: proxy::Writers,
    root: async_nats::Client,
    /// The lab's engineer client, which signs the load's commands.
    operator: Arc<nkeys::KeyPair>,
    manifest: events::audit::Manifest,
    audit: events::audit::AuditConfig,
    /// Violations reported by earlier schedules (the audit reads the whole
    /// history every time): each is reported once, by the schedule that
    /// caused it.
    reported: std::collections::BTreeSet<String>,
}

impl Campaign {
    async fn start(a: &BenchFaultsArgs, nats: &Path, dir: &Path) -> anyhow::Result<Campaign> {
        let exe = std::env::current_exe()?;
        let proxy_port = ports::reserve(1)?;
        let (plc, upstream) = match &a.plc {
            Some(addr) => (None, addr.clone()),
            None => {
                let port = ports::reserve(1)?;
                let addr = format!("127.0.0.1:{port}");
                let args = vec!["plc-sim".to_owned(), "--listen".to_owned(), addr.clone()];
                let c = child::spawn(&exe, &args, Output::File(dir.join("plc-sim.log")))?;
                (Some(c), addr)
            }
        };
        let proxy =
            proxy::Proxy::start(format!("127.0.0.1:{proxy_port}").parse()?, upstream).await?;
        let text = topology_text(proxy.addr.port())?;
        let topo_path = dir.join("topology.toml");
        std::fs::write(&topo_path, &text)?;
        let topo = crate::cmd::load_topology(&topo_path)?;
        let args: Vec<String> = vec![
            "lab".into(),
            "--topology".into(),
            topo_path.display().to_string(),
            "--workdir".into(),
            dir.join("work").display().to_string(),
            "--nats-server".into(),
            nats.display().to_string(),
            "--no-plc-sim".into(),
        ];
        eprintln!("faults: starting the lab");
        let mut lab = child::spawn(&exe, &args, Output::PipedStdout)?;
        let stdout = lab.stdout.take().context("lab stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(180), lines.next_line())
            .await
            .context("the lab did not get ready in 180 s")??
            .context("the lab exited before it was ready")?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let ready: Json = serde_json::from_str(&line)?;
        let mut procs = BTreeMap::new();
        for m in ready["members"].as_array().context("members")? {
            let p = Proc {
                node: m["node"].as_str().context("node")?.to_owned(),
                member: m["member"].as_str().context("member")?.to_owned(),
                pid: m["pid"].as_u64().context("pid")? as u32,
                data: PathBuf::from(m["data"].as_str().context("data")?),
                argv: m["argv"]
                    .as_array()
                    .context("argv")?
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect(),
            };
            procs.insert((p.node.clone(), p.member.clone()), p);
        }
        let writers = proxy.writers();
        if let Ok(mut w) = writers.lock() {
            w.extend(
                procs
                    .values()
                    .filter(|p| p.node == PAIRS[0])
                    .map(|p| (p.pid, p.member.clone())),
            );
        }
        let identity = ready["clients"]["operator"]["identity"]
            .as_str()
            .context("the lab's operator client")?;
        let operator = Arc::new(crate::keys::ClientIdentity::load(Path::new(identity))?.key);
        let manifest_path = ready["manifest"].as_str().context("manifest")?;
        let manifest = serde_json::from_str(&std::fs::read_to_string(manifest_path)?)?;
        let root_url = crate::natsconf::client_url(&topo, &topo.root().members[0].endpoint);
        let root = crate::cmd::lab::connect_as_client(&ready, "operator", &root_url).await?;
        let audit = events::audit::AuditConfig {
            checkpoint_every_events: topo.mesh.checkpoint.every_events,
            checkpoint_every_ms: topo.mesh.checkpoint.every_ms,
        };
        Ok(Campaign {
            topo,
            lab,
            plc,
            proxy,
            procs: Arc::new(Mutex::new(procs)),
            restarted: Arc::new(Mutex::new(Vec::new())),
            writers,
            root,
            operator,
            manifest,
            audit,
            reported: std::collections::BTreeSet::new(),
        })
    }

    async fn stop(mut self) {
        let restarted: Vec<_> = self
            .restarted
            .lock()
            .map(|mut r| r.drain(..).collect())
            .unwrap_or_default();
        for mut c in restarted {
            child::stop(&mut c, Duration::from_secs(10)).await;
        }
        child::stop(&mut self.lab, Duration::from_secs(30)).await;
        if let Some(mut p) = self.plc.take() {
            child::stop(&mut p, Duration::from_secs(5)).await;
        }
    }

    /// Runs one schedule: load and faults, heal, converge, check.
    async fn schedule(&mut self, faults: &[Fault]) -> anyhow::Result<Row> {
        let tails_before = self.root_tails().await?;
        let writes_before = self.proxy.writes().len();
        let load = Load::start(self.root.clone(), self.operator.clone());
        let started = Instant::now();
        let mut set = JoinSet::new();
        let busy = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
        let wiped = Arc::new(Mutex::new(Vec::new()));
        for f in faults.iter().copied() {
            let ctx = FaultCtx {
                topo: self.topo.clone(),
                procs: self.procs.clone(),
                restarted: self.restarted.clone(),
                writers: self.writers.clone(),
                ended: self.proxy.ended(),
                root: self.root.clone(),
                delay: self.proxy.delay(),
                busy: busy.clone(),
                wiped: wiped.clone(),
            };
            set.spawn(async move {
                tokio::time::sleep_until(tokio::time::Instant::from_std(
                    started + Duration::from_millis(f.at_ms),
                ))
                .await;
                ctx.apply(f).await
            });
        }
        let mut row = Row::default();
        while let Some(done) = set.join_next().await {
            match done {
                Ok(Ok(())) => row.applied += 1,
                Ok(Err(skip)) => row.skipped.push(skip),
                Err(e) => row.skipped.push(format!("fault task failed: {e}")),
            }
        }
        let mut acked = load.stop().await;
        let wipes: Vec<Wiped> = wiped.lock().map(|w| w.clone()).unwrap_or_default();
        acked.retain(|a| {
            let lost = a.origin == LEAF
                && wipes.iter().any(|w| a.at_us <= w.at_us && a.seq > w.parent_tail);
            if lost {
                row.lost.push(format!(
                    "{}: force of {} = {} at seq {} acknowledged, not yet at its parent when its disk was wiped",
                    a.origin, a.point, a.value, a.seq
                ));
            }
            !lost
        });
        self.proxy.delay().set(Duration::ZERO, Duration::ZERO);
        let healed = Instant::now();
        self.converge().await?;
        row.converge_s = healed.elapsed().as_secs_f64();
        let tails_after = self.root_tails().await?;
        row.events = tails_after
            .iter()
            .map(|(o, t)| t.saturating_sub(tails_before.get(o).copied().unwrap_or(0)))
            .sum();
        let writes = self.proxy.writes();
        let js = async_nats::jetstream::with_domain(self.root.clone(), "root");
        let plc_history = check::read_stream(&js, PAIRS[0]).await?;
        let writers = self.writers.lock().map(|w| w.clone()).unwrap_or_default();
        row.violations.extend(check::interleavings(
            &writes[writes_before..],
            &writers,
            &check::epoch_starts(&plc_history),
        ));
        row.violations.extend(
            check::histories(&self.root, &self.topo, &acked, &self.manifest, self.audit).await?,
        );
        row.violations.retain(|v| self.reported.insert(v.clone()));
        Ok(row)
    }

    /// The root's replica tail of every origin (the root's own stream too).
    async fn root_tails(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let js = async_nats::jetstream::with_domain(self.root.clone(), "root");
        let mut out = BTreeMap::new();
        for n in &self.topo.nodes {
            let mut s = js.get_stream(events::subjects::stream_name(&n.id)).await?;
            out.insert(n.id.clone(), s.info().await?.state.last_sequence);
        }
        Ok(out)
    }

    /// Waits until every pair has one active member (both members and the
    /// witness answer) and the root's replica of every origin has reached
    /// the origin's tail as it was when the wait began.
    async fn converge(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + CONVERGE;
        for pair in PAIRS {
            loop {
                let a = info(&self.root, pair, "a").await;
                let b = info(&self.root, pair, "b").await;
                let w = info(&self.root, pair, "witness").await;
                let actives = [&a, &b]
                    .iter()
                    .filter(|i| i.as_ref().is_some_and(|i| i.role == "active"))
                    .count();
                if actives == 1 && a.is_some() && b.is_some() && w.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{pair} did not settle on one active member in {CONVERGE:?}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let js = async_nats::jetstream::with_domain(self.root.clone(), "root");
        let root_tail = |id: String| {
            let js = js.clone();
            async move {
                match js.get_stream(events::subjects::stream_name(&id)).await {
                    Ok(mut s) => s.info().await.map(|i| i.state.last_sequence).unwrap_or(0),
                    Err(_) => 0,
                }
            }
        };
        for n in &self.topo.nodes {
            // The origin holds at least what the root holds (a node that
            // lost its disk has restored its history), then the root
            // reaches what the origin held at that moment.
            let own = loop {
                let own = own_tail(&self.root, &n.id).await?;
                let at_root = root_tail(n.id.clone()).await;
                if own >= at_root {
                    break own;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{} holds {own} events of its own history, the root {at_root}, {CONVERGE:?} after the heal",
                        n.id
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            loop {
                let at_root = root_tail(n.id.clone()).await;
                if at_root >= own {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "the root holds {at_root} of {}'s {own} events {CONVERGE:?} after the heal",
                        n.id
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }
}

/// Member info of `node`/`member`, if it answers within 500 ms.
async fn info(client: &async_nats::Client, node: &str, member: &str) -> Option<MemberInfo> {
    let subject = events::subjects::member_subject(node, member);
    let msg = tokio::time::timeout(
        Duration::from_millis(500),
        client.request(subject, "".into()),
    )
    .await
    .ok()?
    .ok()?;
    serde_json::from_slice(&msg.payload).ok()
}

/// The tail of `origin`'s own stream, read in its own domain.
async fn own_tail(client: &async_nats::Client, origin: &str) -> anyhow::Result<u64> {
    let js = async_nats::jetstream::with_domain(client.clone(), events::subjects::domain(origin));
    let deadline = Instant::now() + CONVERGE;
    loop {
        match js.get_stream(events::subjects::stream_name(origin)).await {
            Ok(mut s) => {
                if let Ok(i) = s.info().await {
                    return Ok(i.state.last_sequence);
                }
            }
            Err(e) if Instant::now() > deadline => {
                bail!("{origin}'s own stream does not answer: {e}")
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The campaign's tree: a single root, two pairs (one on the proxied PLC),
/// a single leaf under the second pair. The product's default durability.
fn topology_text(plc_port: u16) -> anyhow::Result<String> {
    let sim = |name: &str, every: u64| {
        format!("[[node.point]]\nname = \"{name}\"\nsource = \"sim\"\nsim = {{ kind = \"random_walk\", period_s = 10, min = 0.0, max = 100.0, every_ms = {every} }}\n")
    };
    let pair = |id: &str| -> anyhow::Result<String> {
        let (a, b, w) = (ports::reserve(7)?, ports::reserve(7)?, ports::reserve(7)?);
        Ok(format!(
            "\n[[node]]\nid = \"{id}\"\nmembers = [\n  {{ name = \"a\", host = \"127.0.0.1\", port_base = {a} }},\n  {{ name = \"b\", host = \"127.0.0.1\", port_base = {b} }},\n]\nwitness = {{ host = \"127.0.0.1\", port_base = {w} }}\n"
        ))
    };
    let mut t = String::from("[mesh]\nname = \"faults\"\nsync = \"always\"\n");
    t.push_str(&single_node("root")?);
    t.push_str(&sim("uptime", 500));
    t.push_str(&pair("root.plc")?);
    t.push_str(&format!(
        "modbus = {{ address = \"127.0.0.1:{plc_port}\", unit = 1, poll_ms = 50, timeout_ms = 300, life_sign = \"holding:900\" }}\n\
         [[node.point]]\nname = \"speed\"\nsource = \"modbus\"\nregister = \"holding:100\"\nwritable = true\n\
         [[node.point]]\nname = \"level\"\nsource = \"modbus\"\nregister = \"holding:101\"\n"
    ));
    t.push_str(&pair("root.south")?);
    t.push_str(&sim("flow", 100));
    t.push_str(&single_node(LEAF)?);
    t.push_str(&sim("temp", 100));
    Ok(t)
}
