//! The resources an active member brings into service, and takes out of
//! service in reverse order (seed 002's resource model).
//!
//! In dependency order: `publisher` (resumes the chain from the node's
//! stream under the new epoch, then announces the role and the points),
//! `plc` (PLC readings become events, the life sign is written), `pullers`
//! (replicas of the subtree), `sims` (simulated points), `commands` (the
//! command handler) and `hooks` (the `on_activate` script). Each resource
//! exists only where the node needs it, has its own cancellation token, and
//! goes `in_service` → `pending_oos` → `oos`; every transition is a
//! `resource` event on `canopy.ev.<node>._resource` while the member may
//! still publish. Every side effect is also checked against the lease fence
//! at the moment it happens, so a member that lost its lease stops writing
//! even before this module hears about it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use adapters::poller::PollerHandle;
use async_nats::jetstream::Context;
use async_nats::Client;
use events::{BirthBody, Body, PointInfo, ResourceBody, ResourceState, Role, RoleBody};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use topology::{Node, Source, Topology};

use super::metrics::Metrics;
use super::publisher::{self, Fence, Publisher};
use super::{commands, hooks, replicator, sources};
use crate::wire::ResourceInfo;

/// What every activation needs; lives as long as the member.
#[derive(Clone)]
pub struct Ctx {
    /// Connection to the member's own server.
    pub client: Client,
    /// JetStream in the node's domain.
    pub js: Context,
    /// The topology.
    pub topo: Arc<Topology>,
    /// This node.
    pub node: Node,
    /// This member's name.
    pub member: String,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The lease check (always true for a single node): whether this
    /// member holds the role, under whatever epoch.
    pub fence: Fence,
    /// Each activation's own fence: the lease of its epoch.
    pub epochs: super::boot::EpochFence,
    /// The PLC poller, when the node has Modbus points (runs on standby too:
    /// it reads, for health; it writes only through the fence).
    pub poller: Option<PollerHandle>,
    /// Where the PLC readings router finds the publisher; None while standby.
    pub current: watch::Sender<Option<Publisher>>,
    /// Checkpoint signing (None: the member has no key; nothing is signed).
    pub signer: Option<publisher::Signer>,
    /// The fold's last verified event of this node's own origin.
    pub own_mark: watch::Receiver<Option<events::Mark>>,
    /// `--new-history`: see [`super::restore`].
    pub new_history: bool,
    /// For a pair, what bounds an `on_deactivate` hook once the lease ended.
    pub peer_grant: Option<super::hooks::GrantBound>,
    /// The checks on signed commands (None: no key manifest).
    pub authority: Option<Arc<super::authority::Authority>>,
    /// Whether commands must be signed.
    pub secured: bool,
    /// When its certificate expires (ms since the epoch), on a secured tree.
    pub cert_expires_ms: Option<u64>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("node", &self.node.id)
            .field("member", &self.member)
            .finish()
    }
}

/// A resource in service: its own token and tasks.
#[derive(Debug)]
struct Running {
    name: &'static str,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// Counts a hook's outcome.
fn count_hook(metrics: &Metrics, outcome: hooks::Outcome) {
    match outcome {
        hooks::Outcome::Ok => {}
        hooks::Outcome::Failed => {
            metrics.hook_failures.fetch_add(1, Ordering::Relaxed);
        }
        hooks::Outcome::Fenced => {
            metrics.hooks_fenced.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How long an activation waits for its first events (role, birth) to be
/// stored before it gives up and is retried.
const FIRST_EVENTS: Duration = Duration::from_secs(5);

/// The resources in service for one activation.
#[derive(Debug)]
pub struct Active {
    /// The epoch of this activation.
    pub epoch: u64,
    publisher: Publisher,
    pub_cancel: CancellationToken,
    pub_task: JoinHandle<()>,
    /// Set when this activation ends: its publisher's fence is closed for
    /// good, even if the member's lease becomes valid again under a later
    /// epoch (a publisher still retrying a stalled stream must never append
    /// its old epoch's events beside the next activation's).
    retired: Arc<AtomicBool>,
    /// In dependency order (the publisher is separate: first in, last out).
    running: Vec<Running>,
}

impl Active {
    /// Brings every resource into service under `epoch`.
    pub async fn start(ctx: &Ctx, epoch: u64, reason: &str) -> anyhow::Result<Active> {
        let node = &ctx.node;
        let restored = super::restore::own_history(ctx).await?;
        let reason = match restored {
            super::restore::Restored::Copied { first, last } => {
                format!("{reason}; history {first}..={last} restored from the parent")
            }
            super::restore::Restored::NewByOperator => {
                format!("{reason}; a new history (--new-history), the parent holds the old one")
            }
            _ => reason.to_owned(),
        };
        let reason = reason.as_str();
        let pub_cancel = CancellationToken::new();
        let retired = Arc::new(AtomicBool::new(false));
        let fence: Fence = {
            let (lease, retired) = (ctx.epochs.of(epoch), retired.clone());
            Arc::new(move || !retired.load(Ordering::SeqCst) && lease())
        };
        let granted = if node.is_pair() {
            publisher::Epoch::Granted(epoch)
        } else {
            publisher::Epoch::AtLeast(epoch)
        };
        let anchor = *ctx.own_mark.borrow();
        let (publisher, pub_task) = publisher::start(
            ctx.js.clone(),
            node.id.clone(),
            ctx.member.clone(),
            granted,
            anchor,
            fence,
            ctx.signer.clone(),
            super::authority::opener(ctx.authority.as_ref(), &node.id),
            ctx.metrics.clone(),
            pub_cancel.clone(),
        )
        .await?;
        tracing::info!(epoch, seq = publisher.last().seq, "active: {reason}");
        let mut active = Active {
            epoch,
            publisher,
            pub_cancel,
            pub_task,
            retired,
            running: Vec::new(),
        };
        // The role first, then the points: a watcher sees who speaks from here on.
        let role = Body::Role(RoleBody {
            member: ctx.member.clone(),
            role: Role::Active,
            reason: reason.to_owned(),
        });
        active.publisher.submit(role).await.ok();
        let birth = Body::Birth(BirthBody {
            member: ctx.member.clone(),
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
        active.publisher.submit(birth).await.ok();
        // No side effect (PLC, hooks) before this epoch is in the history:
        // the role event, the birth and this transition are stored first,
        // so a member that dies right after its first PLC write has left
        // its epoch behind for the audit and the campaign's writer check.
        let in_service = Body::Resource(ResourceBody {
            member: ctx.member.clone(),
            resource: "publisher".to_owned(),
            state: ResourceState::InService,
            reason: reason.to_owned(),
        });
        let stored = tokio::time::timeout(FIRST_EVENTS, active.publisher.publish(in_service)).await;
        if !matches!(stored, Ok(Ok(_))) {
            active
                .stop(ctx, false, "its first events were not stored")
                .await;
            anyhow::bail!(
                "the activation's first events were not stored within {FIRST_EVENTS:?} (lease lost or stream unavailable)"
            );
        }

        if let Some(p) = &ctx.poller {
            let _ = ctx.current.send(Some(active.publisher.clone()));
            ctx.epochs.plc_on(epoch);
            if node.modbus.as_ref().is_some_and(|m| m.life_sign.is_some()) {
                if let Err(e) = p.set_life_sign(true).await {
                    tracing::warn!("life sign not switched on: {e}");
                }
            }
            active
                .bring_in(ctx, "plc", CancellationToken::new(), Vec::new(), reason)
                .await;
        }

        // Each descendant's history comes from the child on the path to
        // it; with `view = "tree"`, every other origin's from the parent
        // (the root, or a tree view itself: it holds them all).
        let mut sources = Vec::new();
        for d in ctx.topo.descendants(&node.id) {
            if let Some(child) = ctx.topo.child_toward(&node.id, &d.id) {
                sources.push((d.id.clone(), child.id.clone()));
            }
        }
        if let Some(parent) = node.parent_id() {
            for o in ctx.topo.outside(&node.id) {
                sources.push((o.id.clone(), parent.to_owned()));
            }
        }
        if !sources.is_empty() {
            let cancel = CancellationToken::new();
            let mut tasks = Vec::new();
            for (origin, from) in sources {
                let puller = replicator::Puller {
                    holder: node.id.clone(),
                    origin,
                    source_domain: events::subjects::domain(&from),
                };
                tasks.push(tokio::spawn(puller.run(
                    ctx.client.clone(),
                    ctx.js.clone(),
                    ctx.metrics.clone(),
                    cancel.clone(),
                )));
            }
            active.bring_in(ctx, "pullers", cancel, tasks, reason).await;
        }

        let sims: Vec<_> = node
            .points
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p.source, Source::Sim(_)))
            .collect();
        if !sims.is_empty() {
            let cancel = CancellationToken::new();
            let tasks = sims
                .into_iter()
                .map(|(i, p)| {
                    let seed = (i as u64 + 1) * 7919 + epoch;
                    tokio::spawn(sources::run_sim(
                        p.clone(),
                        seed,
                        active.publisher.clone(),
                        cancel.clone(),
                    ))
                })
                .collect();
            active.bring_in(ctx, "sims", cancel, tasks, reason).await;
        }

        let cancel = CancellationToken::new();
        let handler = commands::Handler {
            node: node.clone(),
            publisher: active.publisher.clone(),
            poller: ctx.poller.clone(),
            metrics: ctx.metrics.clone(),
            authority: ctx.authority.clone(),
            secured: ctx.secured,
            own_mark: ctx.own_mark.clone(),
        };
        let (client, c) = (ctx.client.clone(), cancel.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = commands::serve(client, handler, c).await {
                tracing::error!("command service stopped: {e:#}");
            }
        });
        active
            .bring_in(ctx, "commands", cancel, vec![task], reason)
            .await;

        if let Some((script, timeout)) = node
            .hooks
            .as_ref()
            .and_then(|h| h.on_activate.clone().map(|s| (s, h.timeout_ms)))
        {
            let metrics = ctx.metrics.clone();
            let (n, m) = (node.id.clone(), ctx.member.clone());
            let fence = if node.is_pair() {
                hooks::HookFence::While(ctx.epochs.of(epoch))
            } else {
                hooks::HookFence::None
            };
            let task = tokio::spawn(async move {
                let outcome = hooks::run(script, "activate", n, m, epoch, timeout, fence).await;
                count_hook(&metrics, outcome);
            });
            active
                .bring_in(ctx, "hooks", CancellationToken::new(), vec![task], reason)
                .await;
        }
        Ok(active)
    }

    async fn bring_in(
        &mut self,
        ctx: &Ctx,
        name: &'static str,
        cancel: CancellationToken,
        tasks: Vec<JoinHandle<()>>,
        reason: &str,
    ) {
        self.running.push(Running {
            name,
            cancel,
            tasks,
        });
        self.transition(ctx, name, ResourceState::InService, reason)
            .await;
    }

    /// Publishes a resource transition, while this member may publish.
    async fn transition(&self, ctx: &Ctx, name: &str, state: ResourceState, reason: &str) {
        if !(ctx.fence)() {
            return;
        }
        let body = Body::Resource(ResourceBody {
            member: ctx.member.clone(),
            resource: name.to_owned(),
            state,
            reason: reason.to_owned(),
        });
        let _ = self.publisher.submit(body).await;
    }

    /// Takes every resource out of service, in reverse order. With
    /// `announce`, the member still holds its lease and says so in events.
    pub async fn stop(mut self, ctx: &Ctx, announce: bool, reason: &str) {
        tracing::info!(epoch = self.epoch, "leaving the active role: {reason}");
        // No PLC write of this activation from here on, whatever the other
        // resources still take to stop.
        ctx.epochs.plc_off();
        let say = |s| announce.then_some(s);
        while let Some(r) = self.running.pop() {
            if let Some(s) = say(ResourceState::PendingOos) {
                self.transition(ctx, r.name, s, reason).await;
            }
            match r.name {
                "plc" => {
                    let _ = ctx.current.send(None);
                    if let Some(p) = &ctx.poller {
                        let _ = p.set_life_sign(false).await;
                    }
                }
                "hooks" => {
                    if let Some((script, timeout)) = ctx
                        .node
                        .hooks
                        .as_ref()
                        .and_then(|h| h.on_deactivate.clone().map(|s| (s, h.timeout_ms)))
                    {
                        let (n, m, e) = (ctx.node.id.clone(), ctx.member.clone(), self.epoch);
                        let fence = match &ctx.peer_grant {
                            Some(bound) => hooks::HookFence::UntilGrant {
                                fence: ctx.epochs.of(e),
                                bound: bound.clone(),
                            },
                            None => hooks::HookFence::None,
                        };
                        // Awaited: it ends (or is killed) before this
                        // activation is over, and before another member
                        // can have been granted.
                        let outcome =
                            hooks::run(script, "deactivate", n, m, e, timeout, fence).await;
                        count_hook(&ctx.metrics, outcome);
                    }
                }
                _ => {}
            }
            r.cancel.cancel();
            for t in r.tasks {
                let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
            }
            if let Some(s) = say(ResourceState::Oos) {
                self.transition(ctx, r.name, s, reason).await;
            }
        }
        if announce && (ctx.epochs.of(self.epoch))() {
            self.transition(ctx, "publisher", ResourceState::PendingOos, reason)
                .await;
            let role = Body::Role(RoleBody {
                member: ctx.member.clone(),
                role: Role::Standby,
                reason: reason.to_owned(),
            });
            let _ =
                tokio::time::timeout(Duration::from_secs(1), self.publisher.publish(role)).await;
        }
        self.retired.store(true, Ordering::SeqCst);
        self.pub_cancel.cancel();
        drop(self.publisher);
        let abort = self.pub_task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), self.pub_task)
            .await
            .is_err()
        {
            tracing::warn!(
                epoch = self.epoch,
                "the publisher did not stop in 5 s; aborted"
            );
            abort.abort();
        }
    }

    /// Records that `member` went into or out of maintenance: a role event
    /// of that member (it is, or stays, standby), while the lease holds.
    pub async fn record_maintenance(&self, member: &str, on: bool) {
        let reason = if on {
            "maintenance on"
        } else {
            "maintenance off"
        };
        let role = Body::Role(RoleBody {
            member: member.to_owned(),
            role: Role::Standby,
            reason: reason.to_owned(),
        });
        match tokio::time::timeout(Duration::from_secs(1), self.publisher.publish(role)).await {
            Ok(Ok(c)) => tracing::info!(member, seq = c.seq, "recorded: {reason}"),
            _ => tracing::warn!(member, "could not record {reason} in the chain"),
        }
    }

    /// The last confirmed (epoch, seq).
    pub fn last(&self) -> publisher::Confirmed {
        self.publisher.last()
    }

    /// The resources in service, for the member-info service.
    pub fn resources(&self, ctx: &Ctx, plc_ok: Option<bool>) -> Vec<ResourceInfo> {
        let m = &ctx.metrics;
        let mut out = vec![ResourceInfo {
            name: "publisher".to_owned(),
            state: ResourceState::InService.as_str().to_owned(),
            healthy: true,
            failures: m.publish_retries.load(Ordering::Relaxed),
        }];
        for r in &self.running {
            let (healthy, failures) = match r.name {
                "plc" => (
                    plc_ok != Some(false),
                    ctx.poller.as_ref().map(|p| p.stats().errors).unwrap_or(0),
                ),
                "pullers" => (true, m.pull_restarts.load(Ordering::Relaxed)),
                "hooks" => (true, m.hook_failures.load(Ordering::Relaxed)),
                "commands" => (true, m.bad_commands.load(Ordering::Relaxed)),
                _ => (true, 0),
            };
            out.push(ResourceInfo {
                name: r.name.to_owned(),
                state: ResourceState::InService.as_str().to_owned(),
                healthy,
                failures,
            });
        }
        out
    }
}
