//! `canopy node`: run one member until SIGINT/SIGTERM.

use std::sync::Arc;

use crate::cli::NodeArgs;
use crate::member::{self, Nats};
use crate::supervisor;

/// Runs a member.
pub async fn run(a: NodeArgs) -> anyhow::Result<u8> {
    let topo = super::load_topology(&a.topology)?;
    let node = topo
        .node(&a.node)
        .ok_or_else(|| anyhow::anyhow!("node {:?} is not in {}", a.node, a.topology.display()))?;
    let member = super::member_name(node, a.member.as_deref())?;
    let nats = match a.attach {
        Some(url) => Nats::Attach(url),
        None => Nats::Supervise(supervisor::find_nats_server(a.nats_server.as_deref())?),
    };
    let cancel = super::shutdown_token()?;
    let opts = member::Options {
        topology: Arc::new(topo),
        node: a.node,
        member,
        data: a.data,
        nats,
        key: a.key,
    };
    member::run(opts, cancel).await?;
    Ok(0)
}
