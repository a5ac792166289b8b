//! A node member: the process behind `canopy node`.
//!
//! It owns (or attaches to) a nats-server, makes sure the node's streams
//! exist ([`boot`]), and runs two kinds of tasks:
//!
//! - always, whatever the role: the fold of the local streams (the state
//!   service), the member-info and hello services ([`info`]), the PLC
//!   poller's reads (for health, reported to the pair by [`health`]);
//! - only while active: the resources of [`active::Active`] (publisher,
//!   PLC readings → events and the life sign, replica pullers, simulated
//!   points, commands, hooks).
//!
//! The role comes from a [`boot::RoleSource`]: constant (active, epoch 1)
//! for a single node; driven by the pair's raft group and its lease for an
//! HA pair. Every task takes a cancellation token; shutdown takes the active
//! resources out of service and drains the publisher under a grace timeout.

pub mod active;
pub mod authority;
pub mod boot;
pub mod commands;
pub mod control;
pub mod fold;
pub mod health;
pub mod hooks;
pub mod info;
pub mod metrics;
pub mod publisher;
pub mod replicator;
pub mod restore;
pub mod sources;
pub mod status;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::nats::{self, Nats, OwnServer};
use crate::natsconf::Role;
use boot::{Identity, RoleSource};
use metrics::Metrics;

/// Everything `canopy node` was told.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node and member this process runs.
    pub id: Identity,
    /// Data directory (nats config, JetStream store, raft store, logs).
    pub data: PathBuf,
    /// NATS server mode.
    pub nats: Nats,
    /// The member's nkey seed file (`canopy keys gen`): checkpoints are
    /// signed with it. None: no checkpoints.
    pub key: Option<PathBuf>,
    /// The key manifest signed commands are checked against (None: no
    /// signed command can be checked; on a secured tree none is served).
    pub manifest: Option<PathBuf>,
    /// Start a new history even if the parent holds the node's old one
    /// (`--new-history`: an operator's explicit choice after a lost disk).
    pub new_history: bool,
    /// Start the pair's raft voter on an empty store without both other
    /// voters confirming (`--confirm-empty-raft-store`).
    pub confirm_empty_raft_store: bool,
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
    /// The pair's members in maintenance (never granted the role).
    pub maintenance: BTreeSet<String>,
    /// Why this member's raft voter does not run yet (an emptied store
    /// waiting for the other voters to confirm the group), if it does not.
    pub waiting: Option<String>,
}

/// Runs the member until `cancel`.
pub async fn run(opts: Options, cancel: CancellationToken) -> anyhow::Result<()> {
    let id = &opts.id;
    std::fs::create_dir_all(&opts.data)
        .map_err(|e| anyhow::anyhow!("creating data directory {}: {e}", opts.data.display()))?;
    let server = OwnServer::start(
        &opts.nats,
        &id.topo,
        &id.node,
        Role::Member(&id.member),
        &opts.data,
        opts.key.as_deref(),
    )?;
    let span = tracing::info_span!("member", node = %id.node.id, member = %id.member);
    let result = tracing::Instrument::instrument(serve(&opts, &server, cancel), span).await;
    // Stop the server last: the publisher has drained into it.
    server.stop().await;
    result
}

async fn serve(
    opts: &Options,
    server: &OwnServer,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let id = &opts.id;
    let node = &id.node;
    let client = nats::connect_own(server, format!("canopy {}/{}", node.id, id.member)).await?;
    let js = jetstream::ContextBuilder::new()
        .domain(events::subjects::domain(&node.id))
        .timeout(Duration::from_secs(3))
        .build(client.clone());
    boot::streams(&js, id, &server.url, &cancel).await?;

    let metrics = Arc::new(Metrics::default());
    let always = CancellationToken::new();
    {
        let m = metrics.clone();
        tokio::spawn(nats::count_lost_leaf_links(
            id.endpoint.ports.monitor,
            move |n| {
                m.leaf_links_lost
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            },
            always.clone(),
        ));
    }
    let RoleSource {
        rx: mut role_rx,
        fence,
        fencing,
        epochs,
        peer_grant,
        pair,
        constant: _constant,
    } = RoleSource::start(id, opts, always.clone()).await?;

    let signer = match &opts.key {
        Some(path) => Some(publisher::Signer {
            key: Arc::new(crate::keys::load_seed(path)?),
            every_events: id.topo.mesh.checkpoint.every_events,
            every_ms: id.topo.mesh.checkpoint.every_ms,
        }),
        None => {
            tracing::warn!("no --key: this member signs no checkpoints (its history cannot be attributed by an audit)");
            None
        }
    };
    let secured = id.topo.mesh.security == topology::Security::Secured;
    let authority = match &opts.manifest {
        Some(path) if path.exists() || secured => Some(Arc::new(authority::Authority::load(path)?)),
        _ => None,
    };
    if secured && authority.is_none() {
        anyhow::bail!(
            "this tree is secured ([mesh] security is not \"none\"): commands are checked against the key manifest; give --manifest (canopy keys gen writes it) or --key beside it"
        );
    }
    if !secured {
        tracing::warn!(
            "security = \"none\": plaintext tree for development; unsigned commands are served"
        );
    }
    if let Some(a) = &authority {
        // The fold tells it every command from its position on; what came
        // before (a restored snapshot's position) is read once here.
        tokio::spawn(
            a.clone()
                .load_at_start(js.clone(), node.id.clone(), always.clone()),
        );
    }
    let cert_expires_ms = if secured {
        opts.key.as_deref().and_then(crate::certs::expiry_of_seed)
    } else {
        None
    };
    let (own_mark, own_mark_rx) = watch::channel(None);
    let fold_task = tokio::spawn({
        let f = fold::Fold {
            client: client.clone(),
            js: js.clone(),
            node: node.id.clone(),
            member: id.member.clone(),
            origins: id.origins(),
            snapshot: Some(fold::snapshot_path(&opts.data)),
            metrics: metrics.clone(),
            own_mark,
            authority: authority.clone(),
        };
        let c = always.clone();
        async move {
            if let Err(e) = fold::run(f, c).await {
                tracing::error!("state service stopped: {e:#}");
            }
        }
    });
    let (current_tx, current_rx) = watch::channel(None);
    let plc = sources::start_modbus(node, fencing, current_rx, always.clone());
    let ctx = active::Ctx {
        client: client.clone(),
        js: js.clone(),
        topo: id.topo.clone(),
        node: node.clone(),
        member: id.member.clone(),
        metrics: metrics.clone(),
        fence,
        epochs,
        poller: plc.as_ref().map(|(h, _)| h.clone()),
        current: current_tx,
        signer,
        own_mark: own_mark_rx,
        new_history: opts.new_history,
        peer_grant,
        authority,
        secured,
        cert_expires_ms,
    };
    let plc_health = plc.map(|(_, h)| h);
    let mut stream_copy = None;
    if let Some((pair, _)) = &pair {
        let timeout = id.topo.mesh.publish_timeout;
        let (answered, stream) = watch::channel(None);
        let (catching_up, copy) = watch::channel(None);
        stream_copy = Some(copy);
        tokio::spawn(health::probe_stream(
            js.clone(),
            events::subjects::stream_name(&node.id),
            crate::ha::server_name(node, &id.member),
            timeout,
            answered,
            catching_up,
            always.clone(),
        ));
        if let Some(other) = node.members.iter().find(|m| m.name != id.member) {
            let role = role_rx.clone();
            tokio::spawn(crate::ha::keep_leaders_off_active(
                js.clone(),
                crate::streams::held_stream_names(&id.topo, &node.id),
                crate::ha::server_name(node, &id.member),
                crate::ha::server_name(node, &other.name),
                move || role.borrow().me_active,
                always.clone(),
            ));
        }
        tokio::spawn(health::report(
            pair.clone(),
            client.clone(),
            stream,
            timeout,
            plc_health.clone(),
            ctx.poller.clone(),
            always.clone(),
        ));
    }

    let mut info_sub = client
        .subscribe(events::subjects::member_subject(&node.id, &id.member))
        .await?;
    let mut hello_sub = client.subscribe(events::subjects::HELLO.to_owned()).await?;
    let mut ctl_sub = client
        .subscribe(events::subjects::control_subject(&node.id, &id.member))
        .await?;
    // The maintenance set this activation has recorded.
    let mut recorded: BTreeSet<String> = BTreeSet::new();
    let mut active: Option<active::Active> = None;
    let mut retry_at = Instant::now();
    // Why the loop ended other than by a requested stop: the member then
    // exits non-zero (a supervisor restarts it) instead of looking like a
    // clean shutdown.
    let mut failed: Option<&str> = None;
    loop {
        // Converge the resources on the role.
        let want = role_rx.borrow().clone();
        match (&active, want.me_active) {
            (None, true) if Instant::now() >= retry_at => {
                match active::Active::start(&ctx, want.epoch, "granted").await {
                    Ok(a) => {
                        recorded = want.maintenance.clone();
                        active = Some(a);
                    }
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
                    let announce = (ctx.epochs.of(a.epoch))();
                    a.stop(&ctx, announce, "role lost").await;
                }
            }
            (Some(a), true) if recorded != want.maintenance => {
                // Maintenance changes are recorded by the active member.
                for (m, on) in maintenance_changes(&recorded, &want.maintenance) {
                    a.record_maintenance(&m, on).await;
                }
                recorded = want.maintenance.clone();
            }
            _ => {}
        }
        let pending_retry = active.is_none() && role_rx.borrow().me_active;
        tokio::select! {
            changed = role_rx.changed() => {
                if changed.is_err() {
                    failed = Some("the role source stopped (the pair's raft task ended; its reason is logged above)");
                    break;
                }
            }
            req = info_sub.next() => {
                let Some(req) = req else {
                    failed = Some("the member info subscription ended");
                    break;
                };
                let now = info::Now { role: &role_rx, active: &active, server, plc: &plc_health, stream_copy: &stream_copy };
                info::answer(req.reply, &ctx, &now).await;
            }
            req = hello_sub.next() => {
                let Some(req) = req else {
                    failed = Some("the hello subscription ended");
                    break;
                };
                let now = info::Now { role: &role_rx, active: &active, server, plc: &plc_health, stream_copy: &stream_copy };
                info::answer(req.reply, &ctx, &now).await;
            }
            req = ctl_sub.next() => {
                let Some(req) = req else {
                    failed = Some("the control subscription ended");
                    break;
                };
                let p = pair.as_ref().map(|(p, _)| p);
                control::handle(req, &ctx, &mut active, p, &role_rx).await;
            }
            _ = tokio::time::sleep(Duration::from_millis(200)), if pending_retry => {}
            _ = cancel.cancelled() => break,
        }
    }
    match failed {
        Some(why) => tracing::error!("stopping: {why}"),
        None => tracing::info!("stopping"),
    }
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
    match failed {
        Some(why) => anyhow::bail!("{why}"),
        None => Ok(()),
    }
}

/// The members that went into (true) or out of (false) maintenance.
fn maintenance_changes(before: &BTreeSet<String>, now: &BTreeSet<String>) -> Vec<(String, bool)> {
    let on = now.difference(before).map(|m| (m.clone(), true));
    let off = before.difference(now).map(|m| (m.clone(), false));
    on.chain(off).collect()
}
