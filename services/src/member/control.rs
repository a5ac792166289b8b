//! Operator control of a pair's role, on `canopy.ctl.<node>.<member>`:
//! `switchover` (asked of the active member: it hands the role to the
//! other) and `maintenance on|off` (asked of the member concerned: in
//! maintenance it is never granted the role; an active one hands it over
//! first).
//!
//! A handover is graceful: the active first takes its resources out of
//! service while its lease still holds, so its last event is its own role
//! event (`standby`, reason `switchover` or `maintenance`) and the chain
//! has no gap; only then does it release the role through raft, and the
//! other member is granted it after the grace (one role event each side).
//! If raft refuses the release after all (the peer's health changed in
//! between), the member still holds its lease and the role loop brings its
//! resources back. Changes of the maintenance set are recorded by the
//! active member as role events of the member concerned (`standby`,
//! reason `maintenance on` / `maintenance off`). The reply names the
//! active member and the epoch once the change took effect, or why it was
//! refused.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::Message;
use tokio::sync::watch;

use super::active::{Active, Ctx};
use super::RoleState;
use crate::wire::{Control, ControlReply};

/// How long a reply waits for the other member to be granted the role.
const TAKEOVER: Duration = Duration::from_secs(10);

/// Answers one control request. `active` is the role loop's activation:
/// a handover stops it here, before the release.
pub async fn handle(
    msg: Message,
    ctx: &Ctx,
    active: &mut Option<Active>,
    pair: Option<&raft::Pair>,
    role: &watch::Receiver<RoleState>,
) {
    let Some(reply_to) = msg.reply.clone() else {
        ctx.metrics.bad_commands.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let answer = {
        let client = ctx.client.clone();
        move |reply: ControlReply| async move {
            let body = serde_json::to_vec(&reply).unwrap_or_default();
            let _ = client.publish(reply_to, body.into()).await;
        }
    };
    let Some(pair) = pair else {
        let why = format!(
            "{} is a single node: there is no other member to hand the role to",
            ctx.node.id
        );
        return answer(ControlReply::refused(why)).await;
    };
    let view = pair.view().borrow().clone();
    let control = match authorized(&msg.payload, ctx, view.epoch) {
        Ok(c) => c,
        Err(Refusal::Bad(e)) => {
            ctx.metrics.bad_commands.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("control request refused: {e}");
            return answer(ControlReply::refused(e)).await;
        }
        Err(Refusal::Refused(e)) => {
            ctx.metrics.refused_commands.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("control request {e}");
            return answer(ControlReply::refused(e)).await;
        }
    };
    let me = crate::ha::member_id(&ctx.node, &ctx.member);
    let name = |id: u64| crate::ha::id_name(&ctx.node, id);
    let handover = match control {
        Control::Switchover => {
            if !view.me_active {
                let who = view.active.map(name).unwrap_or_else(|| "none".into());
                let why = format!("{} is not active (the active member is {who})", ctx.member);
                return answer(ControlReply::refused(why)).await;
            }
            true
        }
        Control::Maintenance { on } => on && view.me_active,
    };
    let reason = match control {
        Control::Switchover => "switchover",
        Control::Maintenance { .. } => "maintenance",
    };
    if handover {
        if let Some(why) = peer_cannot_take(&view, me) {
            return answer(ControlReply::refused(why)).await;
        }
        if let Some(a) = active.take() {
            let announce = (ctx.epochs.of(a.epoch))();
            a.stop(ctx, announce, reason).await;
        }
    }
    let done = match control {
        Control::Switchover => pair.switchover().await,
        Control::Maintenance { on } => pair.set_maintenance(on).await,
    };
    if let Err(e) = done {
        let stays = if handover {
            "; this member keeps the role"
        } else {
            ""
        };
        tracing::info!("{reason} refused: {e}");
        return answer(ControlReply::refused(format!("{e}{stays}"))).await;
    }
    tracing::info!(epoch = view.epoch, "{reason}: done");
    // The reply waits for the change to show here, off the role loop.
    let (role, member, epoch) = (role.clone(), ctx.member.clone(), view.epoch);
    tokio::spawn(async move {
        let settled = move |r: &RoleState| match control {
            _ if handover => r.epoch > epoch && r.active.as_ref().is_some_and(|a| *a != member),
            Control::Maintenance { on } => r.maintenance.contains(&member) == on,
            Control::Switchover => true,
        };
        let mut role = role;
        let settled_in_time = tokio::time::timeout(TAKEOVER, role.wait_for(|r| settled(r)))
            .await
            .is_ok_and(|r| r.is_ok());
        let now = role.borrow().clone();
        let mut reply = ControlReply {
            ok: true,
            active: now.active.clone(),
            epoch: Some(now.epoch),
            maintenance: now.maintenance.iter().cloned().collect(),
            error: None,
        };
        if !settled_in_time {
            reply.ok = false;
            reply.error = Some(format!(
                "the {reason} was committed, but no other member took the role within {TAKEOVER:?}"
            ));
        }
        answer(reply).await;
    });
}

/// Why a control request is not carried out.
enum Refusal {
    /// It is not a control request at all.
    Bad(String),
    /// A check of the secured tree refused it (`refused (<check>): ...`).
    Refused(String),
}

/// The control `payload` asks for, once its checks pass: on a secured
/// tree a [`crate::wire::SignedCommand`] envelope of a
/// [`events::ControlRequest`] an engineer of the node signed for this
/// member (a switchover for the pair's current `epoch`); on the plaintext
/// tree the bare request is served too.
fn authorized(payload: &[u8], ctx: &Ctx, epoch: u64) -> Result<Control, Refusal> {
    if let Ok(signed) = serde_json::from_slice::<crate::wire::SignedCommand>(payload) {
        let Some(authority) = &ctx.authority else {
            return Err(Refusal::Refused(
                "refused (key): this member has no key manifest to check the signature against"
                    .into(),
            ));
        };
        let now_ms = super::publisher::now_us() / 1000;
        let (by, request) = authority
            .check_control(&ctx.node.id, &ctx.member, &signed, now_ms, epoch)
            .map_err(Refusal::Refused)?;
        let control = Control::of(&request).map_err(Refusal::Bad)?;
        tracing::info!(%by, op = %request.op, "control request signed by {by}");
        return Ok(control);
    }
    let control = Control::parse(payload).map_err(Refusal::Bad)?;
    if ctx.secured {
        return Err(Refusal::Refused(
            "refused (signature): this tree is secured; a switchover or maintenance change must be signed by an engineer (--identity)".into(),
        ));
    }
    Ok(control)
}

/// Why the other member could not take the role now, as this member sees
/// it (raft checks again when the release is proposed).
fn peer_cannot_take(view: &raft::RoleView, me: Option<u64>) -> Option<String> {
    if view.leader.is_none() {
        return Some("no quorum: no raft leader known".into());
    }
    let other = match me {
        Some(1) => 2,
        Some(2) => 1,
        _ => return Some("this process is not a member of the pair".into()),
    };
    if view.maintenance.contains(&other) {
        return Some("no healthy peer to take the role: the other member is in maintenance".into());
    }
    let fresh = raft::Timing::default().health_fresh;
    match view.health.get(&other) {
        None => {
            Some("no healthy peer to take the role: the other member was not heard from".into())
        }
        Some((_, age)) if *age > fresh => Some(format!(
            "no healthy peer to take the role: the other member was last heard from {} ms ago",
            age.as_millis()
        )),
        Some((h, _)) if !h.ready => {
            Some("no healthy peer to take the role: the other member is not ready".into())
        }
        Some(_) if view.stream_ok.get(&other) == Some(&false) => Some(
            "no healthy peer to take the role: the other member cannot reach its stream".into(),
        ),
        Some(_) => None,
    }
}
