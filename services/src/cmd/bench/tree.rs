//! The tree most benchmarks run on, and the helpers they share.
//!
//! A 3-level tree on loopback: `root` and `root.mid` are real `canopy node`
//! processes (their pullers carry the leaf's stream up, hop by hop);
//! `root.mid.leaf` is only a nats-server this process supervises, whose
//! stream the benchmark writes itself, with canopy's own publisher or with
//! plain JetStream publishes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, Context};
use events::{Body, Quality, Value, ValueBody};
use tokio_util::sync::CancellationToken;

use crate::child::{self, Output};
use crate::cli::BenchCommon;
use crate::member::metrics::Metrics;
use crate::member::publisher::{self, now_us};
use crate::natsconf::{self, Role};
use crate::wait::{poll, wait_for};
use crate::{ports, streams, supervisor};

/// The leaf whose stream the benchmarks write.
pub const LEAF: &str = "root.mid.leaf";

/// Where a benchmark keeps its processes' data and logs: `--workdir` (kept
/// afterwards, to read the logs) or a temporary directory removed at the end.
#[derive(Debug)]
pub struct WorkDir {
    /// The directory.
    pub path: PathBuf,
    keep: bool,
}

impl WorkDir {
    /// The `--workdir` of `common`, or `$TMPDIR/canopy-bench-<name>-<pid>`.
    pub fn new(common: &BenchCommon, name: &str) -> anyhow::Result<WorkDir> {
        let (path, keep) = match &common.workdir {
            Some(p) => (p.clone(), true),
            None => (
                std::env::temp_dir().join(format!("canopy-bench-{name}-{}", std::process::id())),
                false,
            ),
        };
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir { path, keep })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A single-member node on a reserved port block, as topology TOML.
pub fn single_node(id: &str) -> anyhow::Result<String> {
    let base = ports::reserve(7)?;
    Ok(format!(
        "\n[[node]]\nid = \"{id}\"\nmembers = [{{ name = \"a\", host = \"127.0.0.1\", port_base = {base} }}]\n"
    ))
}

fn topology_text(sync: &str, security: topology::Security) -> anyhow::Result<String> {
    let mut t = format!("[mesh]\nname = \"bench\"\nsync = \"{sync}\"\n");
    if security == topology::Security::None {
        t.push_str("security = \"none\"\n");
    }
    for id in ["root", "root.mid", LEAF] {
        t.push_str(&single_node(id)?);
    }
    Ok(t)
}

/// The bench tree: `root` and `root.mid` as real `canopy node` processes,
/// the leaf's nats-server supervised by this process.
#[derive(Debug)]
pub struct Tree {
    /// The topology the tree runs.
    pub topo: topology::Topology,
    /// The `canopy node` processes (root, then mid).
    pub members: Vec<Member>,
    /// The benchmark's own client certificate on the secured tree.
    tls: Option<crate::certs::TlsFiles>,
    /// The leaf member's certificate, which the bench presents to the
    /// leaf's server.
    leaf_tls: Option<crate::certs::TlsFiles>,
    stop: CancellationToken,
    sup_task: tokio::task::JoinHandle<()>,
}

impl Tree {
    /// Starts the tree in `dir` with JetStream durability `sync`, secured
    /// (keys and certificates made into `dir/keys`) or plaintext.
    pub async fn start(
        dir: &Path,
        nats_bin: &Path,
        sync: &str,
        security: topology::Security,
    ) -> anyhow::Result<Tree> {
        let topo_path = dir.join("topology.toml");
        std::fs::write(&topo_path, topology_text(sync, security)?)?;
        let topo = crate::cmd::load_topology(&topo_path)?;
        let keys = dir.join("keys");
        let secured = security == topology::Security::Secured;
        let tls = if secured {
            let generated = crate::cmd::keys::gen_for(&topo, &keys, false, true)?;
            let (_, identity) = generated.clients.first().context("the bench's client")?;
            Some(crate::certs::TlsFiles::of(identity)?)
        } else {
            None
        };
        let exe = std::env::current_exe()?;
        let stop = CancellationToken::new();
        let mut members = Vec::new();
        eprintln!(
            "bench: starting root and mid members and the leaf's nats-server in {}",
            dir.display()
        );
        for id in ["root", "root.mid"] {
            let data = dir.join(id);
            std::fs::create_dir_all(&data)?;
            let mut args: Vec<String> = vec![
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
            if secured {
                let key = keys.join(id).join("a.nk");
                args.extend(["--key".into(), key.display().to_string()]);
            }
            let mut m = Member {
                exe: exe.clone(),
                args,
                data,
                process: None,
            };
            m.spawn()?;
            members.push(m);
        }
        let leaf_tls = secured
            .then(|| crate::certs::TlsFiles::of_seed(&keys.join(LEAF).join("a.nk")))
            .transpose()?;
        let (_sup, sup_task) = serve_node(&topo, LEAF, dir, nats_bin, leaf_tls.as_ref(), &stop)?;
        Ok(Tree {
            topo,
            members,
            tls,
            leaf_tls,
            stop,
            sup_task,
        })
    }

    /// Stops the leaf's server and every member.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.sup_task.await;
        for mut c in self.members {
            c.stop().await;
        }
    }

    /// Connections once the tree is up: (leaf JetStream, root client, the
    /// root's replica of the leaf).
    pub async fn ready(
        &self,
    ) -> anyhow::Result<(Context, async_nats::Client, jetstream::stream::Stream)> {
        let topo = &self.topo;
        let leaf_url =
            natsconf::client_url(topo, &topo.node(LEAF).context("leaf")?.members[0].endpoint);
        let root_url = natsconf::client_url(topo, &topo.root().members[0].endpoint);
        let tls = self.tls.as_ref();
        // The bench plays the leaf's member (it creates the leaf's stream
        // and publishes its events): on the secured tree only the leaf's
        // own member may, so it presents that member's certificate there.
        let (_lc, leaf_js) = connect_js(
            &leaf_url,
            &events::subjects::domain(LEAF),
            self.leaf_tls.as_ref(),
        )
        .await?;
        let (root_client, root_js) = connect_js(&root_url, "root", tls).await?;
        wait_for("the leaf's JetStream", Duration::from_secs(60), || async {
            streams::ensure(&leaf_js, streams::own(topo, LEAF, 1))
                .await
                .map(Some)
        })
        .await?;
        let name = events::subjects::stream_name(LEAF);
        let replica = wait_for(
            "the root's replica of the leaf",
            Duration::from_secs(60),
            || async { Ok(Some(root_js.get_stream(&name).await?)) },
        )
        .await?;
        Ok((leaf_js, root_client, replica))
    }
}

/// The nats-server of `node`'s member `a`, run (and supervised until
/// `stop`) by the benchmark itself in `dir/<node>`, with the config canopy
/// generates for it (secured with `tls`, whose manifest it follows).
pub fn serve_node(
    topo: &topology::Topology,
    node: &str,
    dir: &Path,
    nats_bin: &Path,
    tls: Option<&crate::certs::TlsFiles>,
    stop: &CancellationToken,
) -> anyhow::Result<(supervisor::Supervised, tokio::task::JoinHandle<()>)> {
    let n = topo
        .node(node)
        .with_context(|| format!("{node} is not in the topology"))?;
    let data = dir.join(node);
    std::fs::create_dir_all(&data)?;
    let manifest = match tls {
        Some(t) => crate::keys::manifest_beside(t)?,
        None => Default::default(),
    };
    let conf = natsconf::render(
        topo,
        n,
        Role::Member("a"),
        &data.join("jetstream"),
        tls,
        &manifest,
    )
    .map_err(anyhow::Error::msg)?;
    std::fs::write(data.join("nats.conf"), conf)?;
    supervisor::start(
        nats_bin.to_path_buf(),
        data.join("nats.conf"),
        data.join("nats.log"),
        stop.clone(),
    )
}

/// One `canopy node` process of the bench tree.
#[derive(Debug)]
pub struct Member {
    exe: PathBuf,
    args: Vec<String>,
    /// Its data directory.
    pub data: PathBuf,
    process: Option<tokio::process::Child>,
}

impl Member {
    /// `exe args` (not started yet), logging into `data`.
    pub fn new(exe: PathBuf, args: Vec<String>, data: PathBuf) -> Member {
        Member {
            exe,
            args,
            data,
            process: None,
        }
    }

    /// Starts (or starts again) the process, logging to `<data>/member.log`.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        self.process = Some(child::spawn(
            &self.exe,
            &self.args,
            Output::File(self.data.join("member.log")),
        )?);
        Ok(())
    }

    /// SIGTERM, and SIGKILL after 30 s (a stop writes the state snapshot).
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.process.take() {
            child::stop(&mut c, Duration::from_secs(30)).await;
        }
    }
}

/// A client and a JetStream context of `domain` at `url`, once it answers
/// (presenting `tls` on the secured tree).
pub async fn connect_js(
    url: &str,
    domain: &str,
    tls: Option<&crate::certs::TlsFiles>,
) -> anyhow::Result<(async_nats::Client, Context)> {
    let client = wait_for(
        &format!("NATS at {url}"),
        Duration::from_secs(30),
        || async { Ok(Some(crate::nats::options(tls).connect(url).await?)) },
    )
    .await?;
    let js = jetstream::ContextBuilder::new()
        .domain(domain)
        .timeout(Duration::from_secs(5))
        .build(client.clone());
    Ok((client, js))
}

/// The value event every benchmark publishes (its size is the payload size
/// of the raw contender).
pub fn sample_body(i: u64) -> Body {
    Body::Value(ValueBody {
        point: "p".into(),
        value: Value::Float(i as f64 * 0.5),
        quality: Quality::Good,
    })
}

/// The encoded size of [`sample_body`] as the leaf seals it.
pub fn sample_event_size() -> usize {
    let mut chain = events::Chain::new(LEAF, "a", 1);
    chain
        .seal(now_us(), sample_body(12345))
        .map(|s| s.bytes.len())
        .unwrap_or(128)
}

/// canopy's own publisher on the leaf's stream, as a member runs it.
pub async fn leaf_publisher(
    leaf_js: &Context,
    checkpoints: bool,
    cancel: &CancellationToken,
) -> anyhow::Result<(publisher::Publisher, tokio::task::JoinHandle<()>)> {
    publisher::start(
        leaf_js.clone(),
        LEAF.into(),
        "a".into(),
        publisher::Epoch::AtLeast(1),
        None,
        Arc::new(|| true),
        checkpoints.then(bench_signer),
        None,
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

/// Waits until the publisher confirmed `seq`; returns its last seq.
pub async fn wait_confirmed(p: &publisher::Publisher, seq: u64) -> anyhow::Result<u64> {
    let what = format!("the leaf to confirm seq {seq}");
    poll(
        &what,
        Duration::from_secs(300),
        Duration::from_millis(10),
        || async {
            let last = p.last().seq;
            Ok((last >= seq).then_some(last))
        },
    )
    .await
}

/// Waits until the replica's last sequence reaches `seq`.
pub async fn wait_replica(
    replica: &jetstream::stream::Stream,
    seq: u64,
    patience: Duration,
) -> anyhow::Result<u64> {
    let what = format!("the root's replica to reach seq {seq}");
    poll(&what, patience, Duration::from_millis(50), || async {
        let mut r = replica.clone();
        let last = r.info().await?.state.last_sequence;
        Ok((last >= seq).then_some(last))
    })
    .await
}

/// A JSON reply on `subject`, asking again until one comes (up to 60 s).
pub async fn request_json(
    client: &async_nats::Client,
    subject: &str,
) -> anyhow::Result<serde_json::Value> {
    wait_for(
        &format!("a reply on {subject}"),
        Duration::from_secs(60),
        || async {
            let reply = tokio::time::timeout(
                Duration::from_secs(2),
                client.request(subject.to_owned(), "".into()),
            )
            .await??;
            Ok(Some(serde_json::from_slice(&reply.payload)?))
        },
    )
    .await
}

/// A flag's comma-separated list of counts above 0 (`1,2,4,8`); the error
/// names the flag.
pub fn counts(text: &str, flag: &str) -> anyhow::Result<Vec<usize>> {
    let list: Vec<usize> = text
        .split(',')
        .map(|l| l.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{flag} is a comma-separated list of counts, like 1,2,4,8"))?;
    if list.is_empty() || list.contains(&0) {
        anyhow::bail!("{flag}: every count must be above 0");
    }
    Ok(list)
}

/// p50, p99 and max of `v` (sorted in place); `None` when empty.
pub fn percentiles(v: &mut [f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    Some((pct(0.50), pct(0.99), v[v.len() - 1]))
}

/// The nats-server binary of `common`, or why there is none.
pub fn nats_bin(common: &BenchCommon) -> anyhow::Result<PathBuf> {
    supervisor::find_nats_server(common.nats_server.as_deref())
}
