//! `canopy switchover` and `canopy maintenance`: operator control of an HA
//! pair's role, asked of the member concerned on
//! `canopy.ctl.<node>.<member>` (see `member::control`).

use std::time::Duration;

use anyhow::bail;

use super::connect;
use crate::cli::{MaintenanceArgs, OnOff, SwitchoverArgs};
use crate::wire::{Control, ControlReply};

/// How long a control request may take at least: the handover, the grace
/// and the other member's activation.
const AT_LEAST: Duration = Duration::from_secs(20);

/// `canopy switchover`.
pub async fn switchover(a: SwitchoverArgs) -> anyhow::Result<u8> {
    let client = connect(&a.server).await?;
    let mut answers = super::status::hello(&client, &a.server, 300).await?;
    answers.retain(|m| m.node == a.node && m.role != "witness");
    if !answers.iter().any(|m| m.role == "active") {
        // A busy member can answer the scatter after it settled: ask the
        // members heard from, and the one they name active, directly.
        let mut names: Vec<String> = answers.iter().map(|m| m.member.clone()).collect();
        names.extend(answers.iter().filter_map(|m| m.active.clone()));
        names.sort();
        names.dedup();
        let mut asked = Vec::new();
        for name in names {
            if let Ok(info) = member_info(&client, &a.server, &a.node, &name).await {
                asked.push(info);
            }
        }
        if !asked.is_empty() {
            answers = asked;
        }
    }
    let members: Vec<_> = answers.iter().collect();
    if members.is_empty() {
        bail!(
            "no member of {} answers: is the node running and linked to {}?",
            a.node,
            a.server.server
        );
    }
    let Some(active) = members.iter().find(|m| m.role == "active") else {
        bail!(
            "no member of {} answers as active: nothing to hand over",
            a.node
        );
    };
    if let Some(to) = &a.to {
        if *to == active.member {
            bail!("{}/{to} is already active", a.node);
        }
        if !members.iter().any(|m| m.member == *to) {
            let names: Vec<_> = members.iter().map(|m| m.member.as_str()).collect();
            bail!(
                "{to} is not an answering member of {} (members answering: {})",
                a.node,
                names.join(", ")
            );
        }
    }
    let from = active.member.clone();
    let body = body(
        a.server.identity.as_deref(),
        &a.node,
        &from,
        Control::Switchover,
        Some(active.epoch),
    )?;
    let reply = ask(&client, &a.server, &a.node, &from, body).await?;
    if a.json {
        println!("{}", serde_json::to_string(&reply)?);
    } else if reply.ok {
        println!(
            "{}: role handed from {from} to {} at epoch {}",
            a.node,
            reply.active.as_deref().unwrap_or("?"),
            reply.epoch.unwrap_or(0)
        );
    } else {
        eprintln!(
            "{}: switchover refused: {}",
            a.node,
            reply.error.as_deref().unwrap_or("no reason given")
        );
    }
    Ok(if reply.ok { 0 } else { 1 })
}

/// One member's info, asked on its own subject (within the server's
/// timeout).
async fn member_info(
    client: &async_nats::Client,
    server: &crate::cli::ServerArg,
    node: &str,
    member: &str,
) -> anyhow::Result<crate::wire::MemberInfo> {
    let subject = events::subjects::member_subject(node, member);
    let asked = client.request(subject, "".into());
    let m = tokio::time::timeout(Duration::from_secs_f64(server.timeout.max(0.1)), asked)
        .await
        .map_err(|_| anyhow::anyhow!("{node}/{member} did not answer"))??;
    Ok(serde_json::from_slice(&m.payload)?)
}

/// `canopy maintenance`.
pub async fn maintenance(a: MaintenanceArgs) -> anyhow::Result<u8> {
    if a.member == "witness" {
        bail!("the witness is never active: maintenance is for the members of a pair");
    }
    let client = connect(&a.server).await?;
    let on = a.state == OnOff::On;
    let control = Control::Maintenance { on };
    let body = body(
        a.server.identity.as_deref(),
        &a.node,
        &a.member,
        control,
        None,
    )?;
    let reply = ask(&client, &a.server, &a.node, &a.member, body).await?;
    if a.json {
        println!("{}", serde_json::to_string(&reply)?);
    } else if reply.ok {
        let state = if on {
            "in maintenance"
        } else {
            "out of maintenance"
        };
        println!(
            "{}: {} {state}; active {} at epoch {}",
            a.node,
            a.member,
            reply.active.as_deref().unwrap_or("none"),
            reply.epoch.unwrap_or(0)
        );
    } else {
        eprintln!(
            "{}: maintenance {} refused: {}",
            a.node,
            if on { "on" } else { "off" },
            reply.error.as_deref().unwrap_or("no reason given")
        );
    }
    Ok(if reply.ok { 0 } else { 1 })
}

/// The request for `control` of `member`: signed with the identity at
/// `identity` (a switchover for `epoch`), else bare (the plaintext tree).
fn body(
    identity: Option<&std::path::Path>,
    node: &str,
    member: &str,
    control: Control,
    epoch: Option<u64>,
) -> anyhow::Result<Vec<u8>> {
    Ok(match identity {
        Some(prefix) => {
            let id = crate::keys::ClientIdentity::load(prefix)?;
            let now_ms = crate::member::publisher::now_us() / 1000;
            let signed = crate::wire::SignedCommand::sign_control(
                &id.key, node, member, control, epoch, now_ms,
            )?;
            serde_json::to_vec(&signed)?
        }
        None => serde_json::to_vec(&control)?,
    })
}

async fn ask(
    client: &async_nats::Client,
    server: &crate::cli::ServerArg,
    node: &str,
    member: &str,
    body: Vec<u8>,
) -> anyhow::Result<ControlReply> {
    let subject = events::subjects::control_subject(node, member);
    let wait = Duration::from_secs_f64(server.timeout.max(0.1)).max(AT_LEAST);
    let asked = async_nats::Request::new()
        .payload(body.into())
        .timeout(Some(wait));
    let msg = client
        .send_request(subject.clone(), asked)
        .await
        .map_err(|e| {
            use async_nats::client::RequestErrorKind as K;
            match e.kind() {
                K::NoResponders => anyhow::anyhow!(
                    "nobody serves {subject}: is {node}/{member} running and linked to this server?"
                ),
                K::TimedOut => anyhow::anyhow!("{node}/{member} did not answer within {wait:?}"),
                _ => anyhow::anyhow!("request on {subject}: {e}"),
            }
        })?;
    serde_json::from_slice(&msg.payload)
        .map_err(|e| anyhow::anyhow!("the reply on {subject} is not what canopy answers: {e}"))
}
