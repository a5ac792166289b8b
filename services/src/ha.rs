//! HA pair plumbing shared by members and the witness: the raft group's
//! configuration from the topology, the role view a member acts on, and
//! the JetStream leader keeper.
//!
//! Raft ids follow the topology: 1 = first member, 2 = second member,
//! 3 = the witness.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::stream::ClusterInfo;
use async_nats::jetstream::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use topology::{Node, Topology};

/// The witness's raft id.
pub const WITNESS_ID: u64 = 3;

/// The raft id of a member of `node` (1 or 2).
pub fn member_id(node: &Node, member: &str) -> Option<u64> {
    node.members
        .iter()
        .position(|m| m.name == member)
        .map(|i| i as u64 + 1)
}

/// The member name of a raft id.
pub fn id_name(node: &Node, id: u64) -> String {
    match id {
        WITNESS_ID => "witness".to_owned(),
        i => node
            .members
            .get((i as usize).wrapping_sub(1))
            .map(|m| m.name.clone())
            .unwrap_or_else(|| format!("#{i}")),
    }
}

/// Mutual TLS for the raft port of `node`'s process whose nkey seed is
/// `key` (`<out>/<node>/<name>.nk` of `canopy keys gen`: its certificate
/// and TLS key are beside it, the CA two directories up). `None` on the
/// plaintext tree; on a secured one the files must be there.
pub fn raft_tls(
    topo: &Topology,
    node: &Node,
    key: Option<&Path>,
) -> anyhow::Result<Option<std::sync::Arc<raft::RaftTls>>> {
    if topo.mesh.security == topology::Security::None {
        return Ok(None);
    }
    let Some(key) = key else {
        anyhow::bail!(
            "this tree is secured: the raft port of {} needs this process's certificate; give --key (canopy keys gen writes <node>/<member>.nk with .crt and .key beside it)",
            node.id
        );
    };
    let files = crate::certs::TlsFiles::of_seed(key)?;
    let mut names = BTreeMap::new();
    for (i, m) in node.members.iter().enumerate() {
        names.insert(i as u64 + 1, crate::certs::member_name(&node.id, &m.name));
    }
    names.insert(WITNESS_ID, crate::certs::member_name(&node.id, "witness"));
    let tls = raft::RaftTls::load(&files.ca, &files.cert, &files.key, names).map_err(|e| {
        anyhow::anyhow!(
            "raft TLS of {}: {e} (canopy keys gen makes these files)",
            node.id
        )
    })?;
    Ok(Some(std::sync::Arc::new(tls)))
}

/// The pair's raft configuration for process `me` (`tls`: see
/// [`raft_tls`]).
pub fn pair_config(
    topo: &Topology,
    node: &Node,
    me: u64,
    data: &Path,
    tls: Option<std::sync::Arc<raft::RaftTls>>,
) -> anyhow::Result<raft::PairConfig> {
    let witness = node
        .witness
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("node {} is not an HA pair", node.id))?;
    let mut peers = BTreeMap::new();
    for (i, m) in node.members.iter().enumerate() {
        peers.insert(
            i as u64 + 1,
            raft::Peer {
                name: m.name.clone(),
                host: m.endpoint.host.clone(),
                raft_port: m.endpoint.ports.raft,
            },
        );
    }
    peers.insert(
        WITNESS_ID,
        raft::Peer {
            name: "witness".to_owned(),
            host: witness.host.clone(),
            raft_port: witness.ports.raft,
        },
    );
    Ok(raft::PairConfig {
        mesh: topo.mesh.name.clone(),
        node: node.id.clone(),
        me,
        peers,
        data_dir: data.join("raft"),
        prefer: node.prefer.as_deref().and_then(|p| member_id(node, p)),
        timing: raft::Timing::default(),
        tls,
    })
}

/// The JetStream server name of a pair's process (`<domain>-<member>`,
/// `<domain>-witness`), as `natsconf` writes it.
pub fn server_name(node: &Node, member: &str) -> String {
    format!("{}-{member}", events::subjects::domain(&node.id))
}

/// Whether server `me` holds a current copy of a stream whose cluster
/// info is `cluster`: it leads it, or it is a replica the leader calls
/// current. A stream without cluster info (a single server) is current.
pub fn copy_current(cluster: Option<&ClusterInfo>, me: &str) -> bool {
    let Some(c) = cluster else { return true };
    c.leader.as_deref() == Some(me)
        || c.replicas
            .iter()
            .any(|r| r.name == me && r.current && !r.offline)
}

/// Keeps the leaders of every stream in `js`'s domain on this server, the
/// witness, and says on `catching_up` while this server's copies of the
/// pair's streams are not all current (a witness whose store was wiped:
/// until they are, the pair cannot lose a member without its streams
/// stalling, since an R3 stream needs two current copies). (The JetStream
/// meta leader can only be moved from the system account; it matters only
/// for creating streams and ordinary consumers, which canopy's readers do
/// not use.)
///
/// Why: JetStream's own elections take 4-9 s (hard-coded in nats-server);
/// a stream whose leader dies refuses writes that long. With the leaders on
/// the witness, losing a member never stalls the pair's streams, and the
/// role moves in canopy's own sub-second time.
///
/// The streams are `streams`, the pair's from the topology, not JetStream's
/// list of names: that list is answered by the meta leader alone, so a
/// keeper that asked for it could move nothing while the meta leader was
/// being elected again (measured: a member killed holding the meta leader,
/// the stream leader left on the other member for seconds, and the next
/// kill waited out a stream election).
pub async fn keep_leaders(
    js: Context,
    streams: Vec<String>,
    me: String,
    catching_up: watch::Sender<Option<String>>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_report = Instant::now() - Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let mut moved = 0;
        let (mut seen, mut behind) = (0, Vec::new());
        for name in &streams {
            let Ok(stream) = js.get_stream(name).await else {
                behind.push(name.clone());
                continue;
            };
            seen += 1;
            let info = stream.cached_info();
            if !copy_current(info.cluster.as_ref(), &me) {
                behind.push(name.clone());
            }
            let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
            if leader.as_deref().is_some_and(|l| l != me)
                && step_down_to(&js, name, &me).await.is_ok()
            {
                moved += 1;
            }
        }
        let why = match (seen, behind.len()) {
            (0, _) => Some("no stream known here yet (JetStream catching up)".to_owned()),
            (_, 0) => None,
            (_, b) => Some(format!(
                "{b} of {} of the pair's streams not yet current here: {}",
                streams.len(),
                behind.join(", ")
            )),
        };
        catching_up.send_if_modified(|c| {
            let changed = *c != why;
            *c = why.clone();
            changed
        });
        if moved > 0 && last_report.elapsed() > Duration::from_secs(10) {
            tracing::info!(moved, "asked stream leaders to move to the witness");
            last_report = Instant::now();
        }
    }
}

/// How long the active member leaves a stream's leadership on its own
/// server for the witness to take before it hands it to the standby.
const WITNESS_FIRST: Duration = Duration::from_secs(2);
/// Streams besides the node's own that the active looks at per turn (a
/// root pair holds hundreds: the cost stays bounded, the own stream, the
/// one its publisher appends to, is looked at every turn).
const OTHERS_PER_TURN: usize = 8;

/// Run by each member of a pair: while it is the active one, keeps the
/// pair's stream leaders off its own server when the witness's server
/// cannot take them (it is restarting, or its copies are catching up after
/// its store was lost, while the witness's raft voter still makes the
/// quorum a takeover needs): a stream that this server has led for
/// [`WITNESS_FIRST`] is handed to the standby's server, if the standby's
/// copy is current and was heard from lately. `streams[0]` is the node's
/// own stream, looked at every turn; the others in turns of
/// [`OTHERS_PER_TURN`].
///
/// Why: a stream whose leader dies refuses appends until JetStream has
/// elected another (4-9 s, hard-coded in nats-server). The witness keeps
/// the leaders on itself, so losing a member costs no election; while the
/// witness is away the leaders sit on a member, and a kill of the active
/// that leads them then stalled its takeover for that long (measured:
/// `canopy bench failover --leader-trials`, 6.7-10 s). On the standby they
/// cost nothing more: losing the standby as well leaves one server of
/// three, which no placement saves. The witness's keeper moves them back
/// to itself once it is current again.
#[allow(clippy::too_many_arguments)]
pub async fn keep_leaders_off_active(
    js: Context,
    streams: Vec<String>,
    me: String,
    standby: String,
    active: impl Fn() -> bool,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Since when this server has led each stream, as this loop saw it.
    let mut leading: BTreeMap<String, Instant> = BTreeMap::new();
    let mut turn = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        if !active() {
            leading.clear();
            continue;
        }
        let (own, others) = streams
            .split_first()
            .map_or((None, &[][..]), |(o, r)| (Some(o), r));
        let from = turn;
        turn = turn.wrapping_add(OTHERS_PER_TURN);
        let round =
            (0..others.len().min(OTHERS_PER_TURN)).map(|i| &others[(from + i) % others.len()]);
        for name in own.into_iter().chain(round) {
            let Ok(stream) = js.get_stream(name).await else {
                continue;
            };
            let cluster = stream.cached_info().cluster.as_ref();
            if cluster.and_then(|c| c.leader.as_deref()) != Some(me.as_str()) {
                leading.remove(name);
                continue;
            }
            let since = *leading.entry(name.clone()).or_insert_with(Instant::now);
            if since.elapsed() < WITNESS_FIRST || !standby_can_lead(cluster, &standby) {
                continue;
            }
            match step_down_to(&js, name, &standby).await {
                Ok(_) => tracing::info!(
                    stream = %name,
                    to = %standby,
                    "the witness does not lead this stream: its leader moves from the active's server to the standby's"
                ),
                Err(e) => tracing::debug!(stream = %name, "moving the leader to the standby: {e}"),
            }
            leading.remove(name);
        }
    }
}

/// Asks the leader of stream `name` in `js`'s domain to hand its
/// leadership to server `to` (a JetStream stepdown with a preferred
/// placement; refused while `to`'s copy is not current).
pub async fn step_down_to(js: &Context, name: &str, to: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({ "placement": { "preferred": to } });
    let reply: serde_json::Value = js
        .request(format!("STREAM.LEADER.STEPDOWN.{name}"), &body)
        .await
        .map_err(|e| anyhow::anyhow!("moving the leader of {name} to {to}: {e}"))?;
    match reply.pointer("/error/description").and_then(|d| d.as_str()) {
        Some(why) => anyhow::bail!("moving the leader of {name} to {to}: {why}"),
        None => Ok(()),
    }
}

/// Whether the standby's copy of a stream is current and its server was
/// heard from within the last second (as the stream's leader reports it).
fn standby_can_lead(cluster: Option<&ClusterInfo>, standby: &str) -> bool {
    cluster.is_some_and(|c| {
        c.replicas.iter().any(|r| {
            r.name == standby && r.current && !r.offline && r.active < Duration::from_secs(1)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_current_standby_heard_from_lately_may_lead() {
        let c = |active_ms: u64, current: bool, offline: bool| -> ClusterInfo {
            serde_json::from_value(serde_json::json!({
                "leader": "p-a",
                "replicas": [
                    {"name": "p-b", "current": current, "offline": offline, "active": active_ms * 1_000_000},
                    {"name": "p-witness", "current": false, "offline": true, "active": 9_000_000_000u64},
                ]
            }))
            .expect("cluster info")
        };
        assert!(standby_can_lead(Some(&c(20, true, false)), "p-b"));
        assert!(!standby_can_lead(Some(&c(20, false, false)), "p-b"));
        assert!(!standby_can_lead(Some(&c(20, true, true)), "p-b"));
        assert!(!standby_can_lead(Some(&c(3000, true, false)), "p-b"));
        assert!(!standby_can_lead(Some(&c(20, true, false)), "p-witness"));
        assert!(!standby_can_lead(None, "p-b"));
    }

    fn cluster(leader: &str, replicas: &[(&str, bool)]) -> ClusterInfo {
        let replicas: Vec<_> = replicas
            .iter()
            .map(|(n, c)| serde_json::json!({"name": n, "current": c, "active": 1000}))
            .collect();
        serde_json::from_value(serde_json::json!({"leader": leader, "replicas": replicas}))
            .expect("cluster info")
    }

    #[test]
    fn a_copy_is_current_where_it_leads_or_the_leader_says_so() {
        let c = cluster("p-a", &[("p-b", true), ("p-witness", false)]);
        assert!(copy_current(Some(&c), "p-a"));
        assert!(copy_current(Some(&c), "p-b"));
        assert!(!copy_current(Some(&c), "p-witness"));
        // Not listed at all (its server has not joined the stream yet).
        assert!(!copy_current(Some(&c), "p-c"));
        // A stream on a single server.
        assert!(copy_current(None, "p-a"));
    }
}
