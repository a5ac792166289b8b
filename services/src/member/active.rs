//! The resources an active member brings into service, and takes out of
//! service in reverse order (seed 002's resource model).
//!
//! In dependency order: the publisher (resumes the chain from the node's
//! stream under the new epoch, then announces the role and the points), the
//! PLC readings and the life sign, the replica pullers, the simulated
//! points, the command handler, and the `on_activate` hook. Every resource
//! runs under one cancellation token; every side effect is also checked
//! against the lease fence at the moment it happens, so a member that lost
//! its lease stops writing even before this module hears about it.

use std::sync::Arc;
use std::time::Duration;

use adapters::poller::PollerHandle;
use async_nats::jetstream::Context;
use async_nats::Client;
use events::{BirthBody, Body, PointInfo, Role, RoleBody};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use topology::{Node, Source, Topology};

use super::metrics::Metrics;
use super::publisher::{self, Fence, Publisher};
use super::{commands, hooks, replicator, sources};

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
    /// The lease check (always true for a single node).
    pub fence: Fence,
    /// The PLC poller, when the node has Modbus points (runs on standby too:
    /// it reads, for health; it writes only through the fence).
    pub poller: Option<PollerHandle>,
    /// Where the PLC readings router finds the publisher; None while standby.
    pub current: watch::Sender<Option<Publisher>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("node", &self.node.id)
            .field("member", &self.member)
            .finish()
    }
}

/// The resources in service for one activation.
#[derive(Debug)]
pub struct Active {
    /// The epoch of this activation.
    pub epoch: u64,
    publisher: Publisher,
    cancel: CancellationToken,
    pub_task: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl Active {
    /// Brings every resource into service under `epoch`.
    pub async fn start(ctx: &Ctx, epoch: u64, reason: &str) -> anyhow::Result<Active> {
        let cancel = CancellationToken::new();
        let node = &ctx.node;
        let (publisher, pub_task) = publisher::start(
            ctx.js.clone(),
            node.id.clone(),
            ctx.member.clone(),
            epoch,
            ctx.fence.clone(),
            ctx.metrics.clone(),
            cancel.clone(),
        )
        .await?;
        tracing::info!(epoch, seq = publisher.last().seq, "active: {reason}");
        // The role first, then the points: a watcher sees who speaks from here on.
        let role = Body::Role(RoleBody {
            member: ctx.member.clone(),
            role: Role::Active,
            reason: reason.to_owned(),
        });
        publisher.submit(role).await.ok();
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
        publisher.submit(birth).await.ok();

        let mut tasks = Vec::new();
        let _ = ctx.current.send(Some(publisher.clone()));
        if let Some(p) = &ctx.poller {
            if node.modbus.as_ref().is_some_and(|m| m.life_sign.is_some()) {
                if let Err(e) = p.set_life_sign(true).await {
                    tracing::warn!("life sign not switched on: {e}");
                }
            }
        }
        for d in ctx.topo.descendants(&node.id) {
            let Some(child) = ctx.topo.child_toward(&node.id, &d.id) else {
                continue;
            };
            let puller = replicator::Puller {
                holder: node.id.clone(),
                origin: d.id.clone(),
                source_domain: events::subjects::domain(&child.id),
            };
            tasks.push(tokio::spawn(puller.run(
                ctx.client.clone(),
                ctx.js.clone(),
                ctx.metrics.clone(),
                cancel.clone(),
            )));
        }
        for (i, p) in node.points.iter().enumerate() {
            if matches!(p.source, Source::Sim(_)) {
                let seed = (i as u64 + 1) * 7919 + epoch;
                tasks.push(tokio::spawn(sources::run_sim(
                    p.clone(),
                    seed,
                    publisher.clone(),
                    cancel.clone(),
                )));
            }
        }
        let handler = commands::Handler {
            node: node.clone(),
            publisher: publisher.clone(),
            poller: ctx.poller.clone(),
            metrics: ctx.metrics.clone(),
        };
        let (client, c) = (ctx.client.clone(), cancel.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = commands::serve(client, handler, c).await {
                tracing::error!("command service stopped: {e:#}");
            }
        }));
        if let Some(h) = node
            .hooks
            .as_ref()
            .and_then(|h| h.on_activate.clone().map(|s| (s, h.timeout_ms)))
        {
            tasks.push(tokio::spawn(hooks::run(
                h.0,
                "activate",
                node.id.clone(),
                ctx.member.clone(),
                epoch,
                h.1,
            )));
        }
        Ok(Active {
            epoch,
            publisher,
            cancel,
            pub_task,
            tasks,
        })
    }

    /// Takes every resource out of service, in reverse order. With
    /// `announce`, the member still holds its lease and says it steps down.
    pub async fn stop(self, ctx: &Ctx, announce: bool, reason: &str) {
        tracing::info!(epoch = self.epoch, "leaving the active role: {reason}");
        if let Some(h) = ctx
            .node
            .hooks
            .as_ref()
            .and_then(|h| h.on_deactivate.clone().map(|s| (s, h.timeout_ms)))
        {
            tokio::spawn(hooks::run(
                h.0,
                "deactivate",
                ctx.node.id.clone(),
                ctx.member.clone(),
                self.epoch,
                h.1,
            ));
        }
        let _ = ctx.current.send(None);
        if let Some(p) = &ctx.poller {
            let _ = p.set_life_sign(false).await;
        }
        if announce && (ctx.fence)() {
            let role = Body::Role(RoleBody {
                member: ctx.member.clone(),
                role: Role::Standby,
                reason: reason.to_owned(),
            });
            let _ =
                tokio::time::timeout(Duration::from_secs(1), self.publisher.publish(role)).await;
        }
        self.cancel.cancel();
        drop(self.publisher);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.pub_task).await;
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }

    /// The last confirmed (epoch, seq).
    pub fn last(&self) -> publisher::Confirmed {
        self.publisher.last()
    }
}
