//! `canopy witness`: the third voter of an HA pair.
//!
//! Runs the pair's third nats-server (so the pair's streams are R3 and
//! survive any one loss), the third raft voter (never a candidate, never
//! active), keeps the pair's stream leaders on itself, and answers hello
//! requests so `canopy status` shows it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::cli::WitnessArgs;
use crate::ha;
use crate::nats::{self, Nats, OwnServer};
use crate::natsconf::Role;
use crate::wire::MemberInfo;
use events::subjects::HELLO;

/// Runs the witness until SIGINT/SIGTERM.
pub async fn run(a: WitnessArgs) -> anyhow::Result<u8> {
    let topo = Arc::new(super::load_topology(&a.topology)?);
    let node = topo
        .node(&a.node)
        .with_context(|| format!("node {:?} is not in {}", a.node, a.topology.display()))?
        .clone();
    if node.witness.is_none() {
        anyhow::bail!("node {} has no witness: only an HA pair has one", node.id);
    }
    let nats = Nats::from_args(a.attach.clone(), a.nats_server.as_deref())?;
    std::fs::create_dir_all(&a.data).with_context(|| format!("creating {}", a.data.display()))?;
    let cancel = super::shutdown_token()?;
    let server = OwnServer::start(
        &nats,
        &topo,
        &node,
        Role::Witness,
        &a.data,
        a.key.as_deref(),
    )?;
    let result = serve(&topo, &node, &server, &a, cancel).await;
    server.stop().await;
    result.map(|()| 0)
}

async fn serve(
    topo: &topology::Topology,
    node: &topology::Node,
    server: &OwnServer,
    a: &WitnessArgs,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let tasks = CancellationToken::new();
    let (pair, pair_task) = raft::Pair::start(
        ha::pair_config(
            topo,
            node,
            ha::WITNESS_ID,
            &a.data,
            ha::raft_tls(topo, node, a.key.as_deref())?,
        )?,
        tasks.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("starting the pair's raft voter: {e}"))?;
    let cert_expires_ms = match topo.mesh.security {
        topology::Security::Secured => a.key.as_deref().and_then(crate::certs::expiry_of_seed),
        topology::Security::None => None,
    };
    if a.confirm_empty_raft_store {
        pair.confirm_empty_store();
    }
    let client = nats::connect_own(server, format!("canopy {}/witness", node.id)).await?;
    let domain = events::subjects::domain(&node.id);
    let js = async_nats::jetstream::with_domain(client.clone(), &domain);
    let me = ha::server_name(node, "witness");
    let (catching_up_tx, catching_up) =
        tokio::sync::watch::channel(Some("not checked yet".to_owned()));
    let keeper = tokio::spawn(ha::keep_leaders(
        js,
        crate::streams::held_stream_names(topo, &node.id),
        me,
        catching_up_tx,
        tasks.clone(),
    ));
    let mut hello = client.subscribe(HELLO.to_owned()).await?;
    let mut info = client
        .subscribe(events::subjects::member_subject(&node.id, "witness"))
        .await?;
    tracing::info!(node = %node.id, "witness up");
    loop {
        let req = tokio::select! {
            m = hello.next() => m,
            m = info.next() => m,
            _ = cancel.cancelled() => break,
        };
        let Some(req) = req else { break };
        let Some(reply) = req.reply else { continue };
        let view = pair.view().borrow().clone();
        let answer = MemberInfo {
            node: node.id.clone(),
            member: "witness".to_owned(),
            pid: std::process::id(),
            nats_pid: server.pid(),
            role: "witness".to_owned(),
            epoch: view.epoch,
            active: view.active.map(|id| ha::id_name(node, id)),
            leader: view.leader.map(|id| ha::id_name(node, id)),
            healthy: true,
            plc_ok: None,
            since_role_change_ms: 0,
            maintenance: false,
            waiting: view.waiting.clone(),
            catching_up: catching_up.borrow().clone(),
            counters: Default::default(),
            resources: Vec::new(),
            troubles: Vec::new(),
            cert_expires_ms,
        };
        let body = serde_json::to_vec(&answer).unwrap_or_default();
        let _ = client.publish(reply, body.into()).await;
    }
    tasks.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(3), keeper).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), pair_task).await;
    Ok(())
}
