//! `canopy status`: every node of the tree with its members' roles, epoch
//! and health, from one scatter-gather request on `canopy.hello`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;

use super::connect;
use crate::cli::StatusArgs;
use crate::wire::{MemberInfo, OriginTrouble};
use events::subjects::HELLO;

/// `canopy status --json`: `{"nodes": [...]}`, one entry per node.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatusReport {
    /// Nodes in path order.
    pub nodes: Vec<NodeStatus>,
    /// What needs an operator's attention soon: certificates that expire
    /// within [`crate::certs::EXPIRY_WARN_DAYS`] (or have).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One node of a [`StatusReport`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeStatus {
    /// Node path.
    pub node: String,
    /// The epoch of its active member (0 when none answered as active).
    pub epoch: u64,
    /// Its members, in topology order when the topology was given.
    pub members: Vec<MemberStatus>,
    /// Whether its witness answered (HA pairs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub witness: Option<WitnessStatus>,
    /// Why the witness's raft voter does not run yet, if it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub witness_waiting: Option<String>,
    /// Why the witness's copies of the pair's streams are not current yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub witness_catching_up: Option<String>,
    /// When the witness's certificate expires (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub witness_cert_expires_ms: Option<u64>,
}

/// One member of a [`NodeStatus`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemberStatus {
    /// Member name.
    pub name: String,
    /// `active`, `standby`, or `down` (listed in the topology, no answer).
    pub role: String,
    /// Its own health verdict (false when down).
    pub healthy: bool,
    /// Its PLC link, for nodes with a PLC.
    pub plc_ok: Option<bool>,
    /// Its epoch (None when down).
    pub epoch: Option<u64>,
    /// Milliseconds since its role last changed (None when down).
    pub since_role_change_ms: Option<u64>,
    /// In maintenance (never granted the role until taken out).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub maintenance: bool,
    /// Why its raft voter does not run yet, if it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Why its server's copies of the pair's streams are not current yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catching_up: Option<String>,
    /// Origins whose history this member cannot carry on normally.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub troubles: Vec<OriginTrouble>,
    /// When its certificate expires (ms since the epoch), on a secured tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_expires_ms: Option<u64>,
}

/// The witness of a [`NodeStatus`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WitnessStatus {
    /// It answered.
    pub up: bool,
}

/// `canopy status`.
pub async fn status(a: StatusArgs) -> anyhow::Result<u8> {
    let client = connect(&a.server).await?;
    let answers = hello(&client, &a.server, a.settle_ms).await?;
    let topo = match &a.topology {
        Some(p) => Some(crate::cmd::load_topology(p)?),
        None => None,
    };
    let report = status_report(
        &answers,
        topo.as_ref(),
        crate::member::publisher::now_us() / 1000,
    );
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_status(&report);
    }
    Ok(0)
}

/// Every member's and witness's answer to one scatter-gather request on
/// `canopy.hello`, collected until none came for `settle_ms` (or the
/// server's timeout passed).
pub(crate) async fn hello(
    client: &async_nats::Client,
    server: &crate::cli::ServerArg,
    settle_ms: u64,
) -> anyhow::Result<Vec<MemberInfo>> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await?;
    client.publish_with_reply(HELLO, inbox, "".into()).await?;
    client.flush().await?;
    let mut answers: Vec<MemberInfo> = Vec::new();
    let overall = tokio::time::Instant::now() + Duration::from_secs_f64(server.timeout.max(0.1));
    loop {
        let settle = tokio::time::Instant::now() + Duration::from_millis(settle_ms);
        match tokio::time::timeout_at(settle.min(overall), sub.next()).await {
            Ok(Some(m)) => match serde_json::from_slice::<MemberInfo>(&m.payload) {
                Ok(v) => answers.push(v),
                Err(e) => tracing::warn!("ignoring a hello answer canopy does not send: {e}"),
            },
            _ => break,
        }
    }
    Ok(answers)
}

/// Groups hello answers by node; with a topology, members that did not
/// answer are listed as `down`, and a silent witness as not up; a
/// certificate that ends within [`crate::certs::EXPIRY_WARN_DAYS`] of
/// `now_ms` is a warning.
pub fn status_report(
    answers: &[MemberInfo],
    topo: Option<&topology::Topology>,
    now_ms: u64,
) -> StatusReport {
    let mut warnings = Vec::new();
    for ans in answers {
        if let Some(w) = expiry_warning(ans, now_ms) {
            warnings.push(w);
        }
    }
    let mut nodes: BTreeMap<String, NodeStatus> = BTreeMap::new();
    if let Some(t) = topo {
        for n in &t.nodes {
            let entry = nodes.entry(n.id.clone()).or_default();
            entry.node = n.id.clone();
            for m in &n.members {
                entry.members.push(MemberStatus {
                    name: m.name.clone(),
                    role: "down".to_owned(),
                    ..Default::default()
                });
            }
            if n.witness.is_some() {
                entry.witness = Some(WitnessStatus { up: false });
            }
        }
    }
    for ans in answers {
        let entry = nodes.entry(ans.node.clone()).or_default();
        entry.node = ans.node.clone();
        if ans.role == "witness" {
            entry.witness = Some(WitnessStatus { up: true });
            entry.witness_waiting = ans.waiting.clone();
            entry.witness_catching_up = ans.catching_up.clone();
            entry.witness_cert_expires_ms = ans.cert_expires_ms;
            continue;
        }
        let m = MemberStatus {
            name: ans.member.clone(),
            role: ans.role.clone(),
            healthy: ans.healthy,
            plc_ok: ans.plc_ok,
            epoch: Some(ans.epoch),
            since_role_change_ms: Some(ans.since_role_change_ms),
            maintenance: ans.maintenance,
            waiting: ans.waiting.clone(),
            catching_up: ans.catching_up.clone(),
            troubles: ans.troubles.clone(),
            cert_expires_ms: ans.cert_expires_ms,
        };
        if ans.role == "active" {
            entry.epoch = entry.epoch.max(ans.epoch);
        }
        match entry.members.iter_mut().find(|x| x.name == ans.member) {
            Some(slot) => *slot = m,
            None => entry.members.push(m),
        }
    }
    StatusReport {
        nodes: nodes.into_values().collect(),
        warnings,
    }
}

/// `<node>/<member>: certificate expires in N days (...)`, when it ends
/// within [`crate::certs::EXPIRY_WARN_DAYS`] of `now_ms` or has ended.
fn expiry_warning(ans: &MemberInfo, now_ms: u64) -> Option<String> {
    const DAY_MS: u64 = 86_400_000;
    let end = ans.cert_expires_ms?;
    let who = format!("{}/{}", ans.node, ans.member);
    let fix = "rotate it: README \"Security\"";
    if end <= now_ms {
        let ago = (now_ms - end) / DAY_MS;
        return Some(format!(
            "{who}: its certificate EXPIRED {ago} days ago; its links fail as they reconnect ({fix})"
        ));
    }
    let left = (end - now_ms) / DAY_MS;
    (left < crate::certs::EXPIRY_WARN_DAYS)
        .then(|| format!("{who}: its certificate expires in {left} days ({fix})"))
}

fn print_status(report: &StatusReport) {
    for w in &report.warnings {
        println!("WARNING: {w}");
    }
    println!("{:<28} {:>6}  members", "node", "epoch");
    for n in &report.nodes {
        let members: Vec<String> = n
            .members
            .iter()
            .map(|m| {
                let since = m
                    .since_role_change_ms
                    .map(|ms| format!(" {:.1}s", ms as f64 / 1000.0))
                    .unwrap_or_default();
                let health = if m.healthy { "" } else { " UNHEALTHY" };
                let maint = if m.maintenance { " MAINTENANCE" } else { "" };
                format!("{}={}{}{}{}", m.name, m.role, since, health, maint)
            })
            .collect();
        let witness = match n.witness {
            Some(WitnessStatus { up: true }) => "  witness=up",
            Some(_) => "  witness=DOWN",
            None => "",
        };
        println!(
            "{:<28} {:>6}  {}{}",
            n.node,
            n.epoch,
            members.join("  "),
            witness
        );
        if let Some(why) = &n.witness_waiting {
            println!("{:<28}         WAITING at witness: {why}", "");
        }
        if let Some(why) = &n.witness_catching_up {
            println!("{:<28}         CATCHING UP at witness: {why}", "");
        }
        for m in &n.members {
            if let Some(why) = &m.waiting {
                println!("{:<28}         WAITING at {}: {why}", "", m.name);
            }
            if let Some(why) = &m.catching_up {
                println!("{:<28}         CATCHING UP at {}: {why}", "", m.name);
            }
            for t in &m.troubles {
                let kind = serde_json::to_value(t.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_uppercase))
                    .unwrap_or_default();
                println!(
                    "{:<28}         {kind} at {}: {} since seq {}: {}",
                    "", m.name, t.origin, t.seq, t.reason
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(node: &str, member: &str, role: &str, epoch: u64) -> MemberInfo {
        MemberInfo {
            node: node.into(),
            member: member.into(),
            pid: 1,
            nats_pid: None,
            role: role.into(),
            epoch,
            active: None,
            leader: None,
            healthy: true,
            plc_ok: None,
            since_role_change_ms: 0,
            maintenance: false,
            waiting: None,
            catching_up: None,
            counters: Default::default(),
            resources: Vec::new(),
            troubles: Vec::new(),
            cert_expires_ms: None,
        }
    }

    #[test]
    fn a_certificate_near_or_past_its_end_is_a_warning() {
        const DAY: u64 = 86_400_000;
        let now = 1_000 * DAY;
        let at = |member: &str, end: Option<u64>| MemberInfo {
            cert_expires_ms: end,
            ..answer("root", member, "active", 1)
        };
        let answers = vec![
            at("fine", Some(now + 400 * DAY)),
            at("soon", Some(now + 12 * DAY + 5)),
            at("gone", Some(now - 3 * DAY)),
            at("plain", None),
        ];
        let r = status_report(&answers, None, now);
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(r.warnings[0].starts_with("root/soon: its certificate expires in 12 days"));
        assert!(r.warnings[1].starts_with("root/gone: its certificate EXPIRED 3 days ago"));
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(
            json["nodes"][0]["members"][0]["cert_expires_ms"],
            now + 400 * DAY
        );
    }

    #[test]
    fn status_groups_answers_and_marks_the_silent_down() {
        let t = topology::Topology::parse("x.toml", topology::EXAMPLE_TOPOLOGY).expect("example");
        let answers = vec![
            answer("root.south", "a", "active", 4),
            answer("root.south", "witness", "witness", 4),
        ];
        let r = status_report(&answers, Some(&t), 0);
        let south = r
            .nodes
            .iter()
            .find(|n| n.node == "root.south")
            .expect("south");
        assert_eq!(south.epoch, 4);
        assert_eq!(south.witness, Some(WitnessStatus { up: true }));
        let b = south.members.iter().find(|m| m.name == "b").expect("b");
        assert_eq!(b.role, "down");
        let root = r.nodes.iter().find(|n| n.node == "root").expect("root");
        assert_eq!(root.witness, Some(WitnessStatus { up: false }));
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["nodes"][0]["node"], "root");
    }
}
