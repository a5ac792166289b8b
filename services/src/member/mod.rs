//! A node member: the process behind `canopy node`.
//!
//! It owns (or attaches to) a nats-server, makes sure the node's streams
//! exist, and runs two kinds of tasks:
//!
//! - always, whatever the role: the fold of the local streams (the state
//!   service), the member-info and hello services, and the PLC poller's
//!   reads (for health);
//! - only while active: the resources of [`active::Active`] (publisher,
//!   PLC readings → events and the life sign, replica pullers, simulated
//!   points, commands, hooks).
//!
//! The role comes from a [`RoleState`] watch: constant (active, epoch 1)
//! for a single node; driven by the pair's raft group and its lease for an
//! HA pair. Every task takes a cancellation token; shutdown takes the active
//! resources out of service and drains the publisher under a grace timeout.

pub mod active;
pub mod commands;
pub mod fold;
pub mod hooks;
pub mod metrics;
pub mod publisher;
pub mod replicator;
pub mod sources;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use topology::Topology;

use crate::natsconf::{self, Role};
use crate::supervisor;
use crate::wire::MemberInfo;
use metrics::Metrics;
use publisher::Fence;

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
    /// The member's nkey seed file (`canopy keys gen`): checkpoints are
    /// signed with it. None: no checkpoints.
    pub key: Option<PathBuf>,
}

/// What the member knows of its role.
#[derive(Debug, Clone)]
pub struct RoleState {
    /// This member holds the role (and, for a pair, a valid lease).
    pub me_active: bool,
    /// The epoch of the current activation.
    pub epoch: u64,
    /// The member the group names active, if any.
    pub active: Option<String>,
    /// When this member's view last changed.
    pub changed_at: Instant,
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
    std::fs::create_dir_all(&opts.data)
        .with_context(|| format!("creating data directory {}", opts.data.display()))?;

    let nats_cancel = CancellationToken::new();
    let (url, supervised, nats_task) = start_nats(
        &opts.nats,
        &topo,
        &node,
        Role::Member(&opts.member),
        &ep,
        &opts.data,
        &nats_cancel,
    )?;
    let span = tracing::info_span!("member", node = %node.id, member = %opts.member);
    let result =
        tracing::Instrument::instrument(serve(&opts, &node, &url, supervised, cancel), span).await;
    // Stop the server last: the publisher has drained into it.
    nats_cancel.cancel();
    if let Some(t) = nats_task {
        let _ = t.await;
    }
    result
}

/// Starts (or attaches to) the process's nats-server; returns its client URL.
pub fn start_nats(
    mode: &Nats,
    topo: &Topology,
    node: &topology::Node,
    role: Role<'_>,
    ep: &topology::Endpoint,
    data: &std::path::Path,
    cancel: &CancellationToken,
) -> anyhow::Result<(
    String,
    Option<supervisor::Supervised>,
    Option<tokio::task::JoinHandle<()>>,
)> {
    match mode {
        Nats::Supervise(binary) => {
            let conf = natsconf::render(topo, node, role, &data.join("jetstream"))
                .map_err(anyhow::Error::msg)?;
            let conf_path = data.join("nats.conf");
            std::fs::write(&conf_path, conf)
                .with_context(|| format!("writing {}", conf_path.display()))?;
            let (sup, task) = supervisor::start(
                binary.clone(),
                conf_path,
                data.join("nats.log"),
                cancel.clone(),
            )?;
            Ok((natsconf::client_url(ep), Some(sup), Some(task)))
        }
        Nats::Attach(url) => Ok((url.clone(), None, None)),
    }
}

/// Connects to the process's own server, retrying forever (it may be
/// restarting).
pub async fn connect_own(url: &str, name: String) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|n| Duration::from_millis((50 * (n as u64 + 1)).min(500)))
        .connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}

async fn serve(
    opts: &Options,
    node: &topology::Node,
    url: &str,
    supervised: Option<supervisor::Supervised>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let topo = &opts.topology;
    let client = connect_own(url, format!("canopy {}/{}", node.id, opts.member)).await?;
    let domain = events::subjects::domain(&node.id);
    let js = jetstream::ContextBuilder::new()
        .domain(&domain)
        .timeout(Duration::from_secs(3))
        .build(client.clone());
    let replicas = if node.is_pair() { 3 } else { 1 };

    // JetStream may take a moment after the port opens.
    let started = Instant::now();
    let mut last_note = Instant::now();
    loop {
        match setup_streams(&js, topo, node, replicas).await {
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
    let always = CancellationToken::new();
    // The role: constant for a single node, from the raft group for a pair.
    let (role_tx, mut role_rx) = watch::channel(RoleState {
        me_active: !node.is_pair(),
        epoch: if node.is_pair() { 0 } else { 1 },
        active: (!node.is_pair()).then(|| opts.member.clone()),
        changed_at: Instant::now(),
    });
    let (fence, pair): (Fence, _) = if node.is_pair() {
        let me = crate::ha::member_id(node, &opts.member).context("member id")?;
        let cfg = crate::ha::pair_config(topo, node, me, &opts.data)?;
        let (pair, task) = raft::Pair::start(cfg, always.clone())
            .await
            .map_err(|e| anyhow::anyhow!("starting the pair's raft group: {e}"))?;
        let lease = pair.lease();
        tokio::spawn(follow_pair(pair.view(), node.clone(), role_tx));
        (Arc::new(move || lease.is_valid()), Some((pair, task)))
    } else {
        (Arc::new(|| true), None)
    };

    let signer = match &opts.key {
        Some(path) => Some(publisher::Signer {
            key: Arc::new(crate::cmd::keys::load(path)?),
            every_events: topo.mesh.checkpoint.every_events,
            every_ms: topo.mesh.checkpoint.every_ms,
        }),
        None => {
            tracing::warn!("no --key: this member signs no checkpoints (its history cannot be attributed by an audit)");
            None
        }
    };
    let mut origins = vec![node.id.clone()];
    origins.extend(topo.descendants(&node.id).iter().map(|n| n.id.clone()));
    let fold_task = tokio::spawn({
        let f = fold::Fold {
            client: client.clone(),
            js: js.clone(),
            node: node.id.clone(),
            member: opts.member.clone(),
            origins,
            snapshot: Some(fold::snapshot_path(&opts.data)),
            metrics: metrics.clone(),
        };
        let c = always.clone();
        async move {
            if let Err(e) = fold::run(f, c).await {
                tracing::error!("state service stopped: {e:#}");
            }
        }
    });
    let (current_tx, current_rx) = watch::channel(None);
    let plc = sources::start_modbus(node, fence.clone(), current_rx, always.clone());
    let ctx = active::Ctx {
        client: client.clone(),
        js: js.clone(),
        topo: topo.clone(),
        node: node.clone(),
        member: opts.member.clone(),
        metrics: metrics.clone(),
        fence,
        poller: plc.as_ref().map(|(h, _)| h.clone()),
        current: current_tx,
        signer,
    };
    let plc_health = plc.map(|(_, h)| h);
    if let Some((pair, _)) = &pair {
        tokio::spawn(report_health(
            pair.clone(),
            client.clone(),
            plc_health.clone(),
            ctx.poller.clone(),
            always.clone(),
        ));
    }

    let mut info_sub = client
        .subscribe(events::subjects::member_subject(&node.id, &opts.member))
        .await?;
    let mut hello_sub = client.subscribe(HELLO.to_owned()).await?;
    let mut active: Option<active::Active> = None;
    let mut retry_at = Instant::now();
    loop {
        // Converge the resources on the role.
        let want = role_rx.borrow().clone();
        match (&active, want.me_active) {
            (None, true) if Instant::now() >= retry_at => {
                match active::Active::start(&ctx, want.epoch, "granted").await {
                    Ok(a) => active = Some(a),
                    Err(e) => {
                        tracing::warn!("activation failed, retrying: {e:#}");
                        retry_at = Instant::now() + Duration::from_millis(200);
                    }
                }
            }
            (Some(a), true) if a.epoch != want.epoch => {
                if let Some(a) = active.take() {
                    a.stop(&ctx, false, "epoch moved on").await;
                }
                continue;
            }
            (Some(_), false) => {
                if let Some(a) = active.take() {
                    let announce = (ctx.fence)();
                    a.stop(&ctx, announce, "role lost").await;
                }
            }
            _ => {}
        }
        let pending_retry = active.is_none() && role_rx.borrow().me_active;
        tokio::select! {
            changed = role_rx.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            req = info_sub.next() => {
                let Some(req) = req else { break };
                reply_info(req.reply, &ctx, &role_rx, &active, &supervised, &plc_health).await;
            }
            req = hello_sub.next() => {
                let Some(req) = req else { break };
                reply_info(req.reply, &ctx, &role_rx, &active, &supervised, &plc_health).await;
            }
            _ = tokio::time::sleep(Duration::from_millis(200)), if pending_retry => {}
            _ = cancel.cancelled() => break,
        }
    }
    tracing::info!("stopping");
    if let Some(a) = active.take() {
        a.stop(&ctx, true, "shutting down").await;
    }
    if let Some((pair, _)) = &pair {
        let _ = tokio::time::timeout(Duration::from_secs(1), pair.step_down()).await;
    }
    always.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), fold_task).await;
    if let Some((_, task)) = pair {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    let _ = client.flush().await;
    Ok(())
}

/// Turns the pair's view into the member's [`RoleState`], waking the member
/// only when the role, the active member or the epoch changes (health
/// reports change the view several times a second).
async fn follow_pair(
    mut view: watch::Receiver<raft::RoleView>,
    node: topology::Node,
    role: watch::Sender<RoleState>,
) {
    loop {
        let v = view.borrow_and_update().clone();
        let active = v.active.map(|id| crate::ha::id_name(&node, id));
        role.send_if_modified(|r| {
            let changed = r.me_active != v.me_active || r.epoch != v.epoch || r.active != active;
            if changed {
                *r = RoleState {
                    me_active: v.me_active,
                    epoch: v.epoch,
                    active: active.clone(),
                    changed_at: Instant::now(),
                };
            }
            changed
        });
        if view.changed().await.is_err() {
            return;
        }
    }
}

/// Tells the pair this member's health: its NATS link (a member that cannot
/// publish must not hold the role) and its PLC link (failover on field
/// health), with the last life-sign value it read.
async fn report_health(
    pair: raft::Pair,
    client: async_nats::Client,
    plc: Option<watch::Receiver<Option<bool>>>,
    poller: Option<adapters::poller::PollerHandle>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let ready = client.connection_state() == async_nats::connection::State::Connected;
        let plc_ok = plc.as_ref().and_then(|p| *p.borrow());
        let life_sign = poller.as_ref().and_then(|p| p.stats().life_sign_seen);
        pair.report_health(raft::Health {
            plc_ok,
            life_sign,
            ready,
        });
    }
}

/// Every member and witness answers this (no queue group): a scatter-gather
/// request on it lists the whole tree (`canopy status`).
pub const HELLO: &str = "canopy.hello";

/// Answers a member-info request; the member's identity, connection and
/// counters come from `ctx`, its role from the rest.
async fn reply_info(
    reply: Option<async_nats::Subject>,
    ctx: &active::Ctx,
    role: &watch::Receiver<RoleState>,
    active: &Option<active::Active>,
    supervised: &Option<supervisor::Supervised>,
    plc: &Option<watch::Receiver<Option<bool>>>,
) {
    let Some(reply) = reply else { return };
    let r = role.borrow().clone();
    let restarts = supervised
        .as_ref()
        .map(|s| s.restarts.load(Ordering::Relaxed))
        .unwrap_or(0);
    let plc_ok = plc.as_ref().and_then(|p| *p.borrow());
    let info = MemberInfo {
        node: ctx.node.id.clone(),
        member: ctx.member.clone(),
        pid: std::process::id(),
        nats_pid: supervised.as_ref().and_then(|s| *s.pid.borrow()),
        role: if active.is_some() {
            "active"
        } else {
            "standby"
        }
        .to_owned(),
        epoch: active.as_ref().map(|a| a.epoch).unwrap_or(r.epoch),
        active: r.active.clone(),
        healthy: plc_ok != Some(false),
        plc_ok,
        since_role_change_ms: r.changed_at.elapsed().as_millis() as u64,
        counters: ctx.metrics.snapshot(restarts),
        resources: active
            .as_ref()
            .map(|a| {
                a.resources(ctx, plc_ok)
                    .iter()
                    .filter_map(|r| serde_json::to_value(r).ok())
                    .collect()
            })
            .unwrap_or_default(),
    };
    let body = serde_json::to_vec(&info).unwrap_or_default();
    let _ = ctx.client.publish(reply, body.into()).await;
}

/// Creates the node's own stream and one replica per descendant origin.
async fn setup_streams(
    js: &jetstream::Context,
    topo: &Topology,
    node: &topology::Node,
    replicas: usize,
) -> anyhow::Result<()> {
    crate::streams::ensure(js, crate::streams::own(topo, &node.id, replicas)).await?;
    for d in topo.descendants(&node.id) {
        crate::streams::ensure(js, crate::streams::replica(topo, &node.id, &d.id, replicas))
            .await?;
    }
    Ok(())
}
