//! A node member: the process behind `canopy node`.
//!
//! It owns (or attaches to) a nats-server, makes sure the node's streams
//! exist, and runs its tasks: the publisher (sole owner of the hash chain),
//! the sources (simulated points, Modbus poller), one replica puller per
//! descendant origin, the fold (materialised state + state requests), the
//! command service and the member-info service. Every task takes the same
//! cancellation token; shutdown drains the publisher under a grace timeout.

pub mod commands;
pub mod fold;
pub mod metrics;
pub mod publisher;
pub mod replicator;
pub mod sources;
pub mod verify;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream;
use events::{BirthBody, Body, PointInfo};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use topology::{Source, Topology};

use crate::natsconf::{self, Role};
use crate::supervisor;
use crate::wire::MemberInfo;
use metrics::Metrics;

/// How the member gets its NATS server.
#[derive(Debug, Clone)]
pub enum Nats {
    /// Run nats-server as a child from this binary.
    Supervise(PathBuf),
    /// Use a server run elsewhere.
    Attach(String),
}

/// Everything `canopy node` was told.
#[derive(Debug, Clone)]
pub struct Options {
    /// The loaded topology.
    pub topology: Arc<Topology>,
    /// Node id.
    pub node: String,
    /// Member name.
    pub member: String,
    /// Data directory (nats config, JetStream store, logs).
    pub data: PathBuf,
    /// NATS server mode.
    pub nats: Nats,
}

/// Runs the member until `cancel`.
pub async fn run(opts: Options, cancel: CancellationToken) -> anyhow::Result<()> {
    let topo = opts.topology.clone();
    let node = topo
        .node(&opts.node)
        .with_context(|| format!("node {:?} is not in {}", opts.node, topo.file))?
        .clone();
    let ep = natsconf::endpoint(&node, Role::Member(&opts.member))
        .with_context(|| {
            let names: Vec<&str> = node.members.iter().map(|m| m.name.as_str()).collect();
            format!(
                "node {} has no member {:?} (members: {})",
                node.id,
                opts.member,
                names.join(", ")
            )
        })?
        .clone();
    if node.is_pair() {
        bail!(
            "node {} is an HA pair; HA pairs are not supported by this build yet",
            node.id
        );
    }
    std::fs::create_dir_all(&opts.data)
        .with_context(|| format!("creating data directory {}", opts.data.display()))?;
    let span = tracing::info_span!("member", node = %node.id, member = %opts.member);
    let _g = span.enter();

    // The server: supervised child or external.
    let nats_cancel = CancellationToken::new();
    let (url, supervised, nats_task) = match &opts.nats {
        Nats::Supervise(binary) => {
            let store = opts.data.join("jetstream");
            let conf = natsconf::render(&topo, &node, Role::Member(&opts.member), &store)
                .map_err(anyhow::Error::msg)?;
            let conf_path = opts.data.join("nats.conf");
            std::fs::write(&conf_path, conf)
                .with_context(|| format!("writing {}", conf_path.display()))?;
            let (sup, task) = supervisor::start(
                binary.clone(),
                conf_path,
                opts.data.join("nats.log"),
                nats_cancel.clone(),
            )?;
            (natsconf::client_url(&ep), Some(sup), Some(task))
        }
        Nats::Attach(url) => (url.clone(), None, None),
    };
    let result = serve(&opts, &node, &url, supervised, cancel).await;
    // Stop the server last: the publisher has drained into it.
    nats_cancel.cancel();
    if let Some(t) = nats_task {
        let _ = t.await;
    }
    result
}

async fn serve(
    opts: &Options,
    node: &topology::Node,
    url: &str,
    supervised: Option<supervisor::Supervised>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let topo = &opts.topology;
    let client = async_nats::ConnectOptions::new()
        .name(format!("canopy {}/{}", node.id, opts.member))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|n| Duration::from_millis((50 * (n as u64 + 1)).min(500)))
        .connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let domain = events::subjects::domain(&node.id);
    let js = jetstream::ContextBuilder::new()
        .domain(&domain)
        .timeout(Duration::from_secs(3))
        .build(client.clone());

    // JetStream may take a moment after the port opens.
    let started = Instant::now();
    let mut last_note = Instant::now();
    loop {
        match setup_streams(&js, topo, node).await {
            Ok(()) => break,
            Err(e) if !cancel.is_cancelled() && started.elapsed() < Duration::from_secs(60) => {
                if last_note.elapsed() > Duration::from_secs(5) {
                    tracing::info!("waiting for JetStream at {url}: {e:#}");
                    last_note = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.context(format!("JetStream at {url} is not available"))),
        }
    }

    let metrics = Arc::new(Metrics::default());
    let tasks = CancellationToken::new();
    // Single nodes are always active at epoch 1; HA pairs raise the epoch.
    let epoch = 1;
    let (publisher, pub_task) = publisher::start(
        js.clone(),
        node.id.clone(),
        opts.member.clone(),
        epoch,
        metrics.clone(),
        tasks.clone(),
    )
    .await?;

    // Birth first: a watcher sees every point of this activation.
    let birth = Body::Birth(BirthBody {
        member: opts.member.clone(),
        points: node
            .points
            .iter()
            .map(|p| PointInfo {
                name: p.name.clone(),
                unit: p.unit.clone(),
                writable: p.writable,
            })
            .collect(),
    });
    publisher.submit(birth).await.ok();

    let mut handles = Vec::new();
    let descendants: Vec<String> = topo
        .descendants(&node.id)
        .iter()
        .map(|n| n.id.clone())
        .collect();
    for d in &descendants {
        let Some(child) = topo.child_toward(&node.id, d) else {
            continue;
        };
        let puller = replicator::Puller {
            holder: node.id.clone(),
            origin: d.clone(),
            source_domain: events::subjects::domain(&child.id),
        };
        handles.push(tokio::spawn(puller.run(
            client.clone(),
            js.clone(),
            metrics.clone(),
            tasks.clone(),
        )));
    }
    let mut origins = vec![node.id.clone()];
    origins.extend(descendants.iter().cloned());
    handles.push(tokio::spawn({
        let (client, js, node_id, member, metrics, tasks) = (
            client.clone(),
            js.clone(),
            node.id.clone(),
            opts.member.clone(),
            metrics.clone(),
            tasks.clone(),
        );
        async move {
            if let Err(e) = fold::run(client, js, node_id, member, origins, metrics, tasks).await {
                tracing::error!("state service stopped: {e:#}");
            }
        }
    }));
    for (i, p) in node.points.iter().enumerate() {
        if matches!(p.source, Source::Sim(_)) {
            let seed = (i as u64 + 1) * 7919;
            handles.push(tokio::spawn(sources::run_sim(
                p.clone(),
                seed,
                publisher.clone(),
                tasks.clone(),
            )));
        }
    }
    let poller = sources::start_modbus(node, publisher.clone(), tasks.clone());
    let handler = commands::Handler {
        node: node.clone(),
        publisher: publisher.clone(),
        poller,
        metrics: metrics.clone(),
    };
    handles.push(tokio::spawn({
        let (client, tasks) = (client.clone(), tasks.clone());
        async move {
            if let Err(e) = commands::serve(client, handler, tasks).await {
                tracing::error!("command service stopped: {e:#}");
            }
        }
    }));

    // Member info: the lab and `canopy status` ask it.
    let info_subject = events::subjects::member_subject(&node.id, &opts.member);
    let mut info_sub = client.subscribe(info_subject).await?;
    tracing::info!("member up: {} events in own stream", publisher.last().seq);
    loop {
        tokio::select! {
            req = info_sub.next() => {
                let Some(req) = req else { break };
                let Some(reply) = req.reply else { continue };
                let restarts = supervised.as_ref().map(|s| s.restarts.load(Ordering::Relaxed)).unwrap_or(0);
                let info = MemberInfo {
                    node: node.id.clone(),
                    member: opts.member.clone(),
                    pid: std::process::id(),
                    nats_pid: supervised.as_ref().and_then(|s| *s.pid.borrow()),
                    role: "active".to_owned(),
                    epoch: publisher.last().epoch,
                    counters: metrics.snapshot(restarts),
                };
                let body = serde_json::to_vec(&info).unwrap_or_default();
                let _ = client.publish(reply, body.into()).await;
            }
            _ = cancel.cancelled() => break,
        }
    }
    tracing::info!("stopping");
    tasks.cancel();
    drop(publisher);
    // Drain: the publisher confirms what is in flight, under a grace timeout.
    if tokio::time::timeout(Duration::from_secs(5), pub_task)
        .await
        .is_err()
    {
        tracing::warn!("publisher did not drain within 5 s");
    }
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(2), h).await;
    }
    let _ = client.flush().await;
    Ok(())
}

/// Creates the node's own stream and one replica per descendant origin.
async fn setup_streams(
    js: &jetstream::Context,
    topo: &Topology,
    node: &topology::Node,
) -> anyhow::Result<()> {
    crate::streams::ensure(js, crate::streams::own(topo, &node.id, 1)).await?;
    for d in topo.descendants(&node.id) {
        crate::streams::ensure(js, crate::streams::replica(topo, &node.id, &d.id, 1)).await?;
    }
    Ok(())
}
