//! The member-info service: what this member says about itself on
//! `canopy.member.<node>.<member>` and, to every scatter-gather asker, on
//! `canopy.hello`.

use tokio::sync::watch;

use super::active::{Active, Ctx};
use super::RoleState;
use crate::nats::OwnServer;
use crate::wire::MemberInfo;

/// What this member is doing right now, for [`answer`].
#[derive(Debug)]
pub struct Now<'a> {
    /// The role as the member acts on it.
    pub role: &'a watch::Receiver<RoleState>,
    /// The activation in service, if active.
    pub active: &'a Option<Active>,
    /// The member's own nats-server.
    pub server: &'a OwnServer,
    /// The PLC link's health, for nodes with a PLC.
    pub plc: &'a Option<watch::Receiver<Option<bool>>>,
    /// For a pair: why this server's copy of the node's stream is not
    /// current yet, if it is not.
    pub stream_copy: &'a Option<watch::Receiver<Option<String>>>,
}

/// The member's info as of now.
pub fn info(ctx: &Ctx, now: &Now<'_>) -> MemberInfo {
    let r = now.role.borrow().clone();
    let plc_ok = now.plc.as_ref().and_then(|p| *p.borrow());
    MemberInfo {
        node: ctx.node.id.clone(),
        member: ctx.member.clone(),
        pid: std::process::id(),
        nats_pid: now.server.pid(),
        role: if now.active.is_some() {
            "active"
        } else {
            "standby"
        }
        .to_owned(),
        epoch: now.active.as_ref().map(|a| a.epoch).unwrap_or(r.epoch),
        active: r.active.clone(),
        leader: None,
        healthy: plc_ok != Some(false),
        plc_ok,
        since_role_change_ms: r.changed_at.elapsed().as_millis() as u64,
        maintenance: r.maintenance.contains(&ctx.member),
        waiting: r.waiting.clone(),
        catching_up: now.stream_copy.as_ref().and_then(|c| c.borrow().clone()),
        counters: ctx.metrics.snapshot(now.server.restarts()),
        resources: now
            .active
            .as_ref()
            .map(|a| a.resources(ctx, plc_ok))
            .unwrap_or_default(),
        troubles: ctx.metrics.troubles.list(),
        cert_expires_ms: ctx.cert_expires_ms,
    }
}

/// Answers a member-info request (no-op without a reply subject).
pub async fn answer(reply: Option<async_nats::Subject>, ctx: &Ctx, now: &Now<'_>) {
    let Some(reply) = reply else { return };
    let body = serde_json::to_vec(&info(ctx, now)).unwrap_or_default();
    let _ = ctx.client.publish(reply, body.into()).await;
}
