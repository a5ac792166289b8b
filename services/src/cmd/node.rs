//! `canopy node`: run one member until SIGINT/SIGTERM.

use std::sync::Arc;

use crate::cli::NodeArgs;
use crate::member::{self, boot::Identity};
use crate::nats::Nats;

/// Runs a member.
pub async fn run(a: NodeArgs) -> anyhow::Result<u8> {
    let topo = Arc::new(super::load_topology(&a.topology)?);
    let id = Identity::resolve(topo, &a.node, a.member.as_deref())?;
    let nats = Nats::from_args(a.attach, a.nats_server.as_deref())?;
    let cancel = super::shutdown_token()?;
    let opts = member::Options {
        id,
        data: a.data,
        nats,
        manifest: a.manifest.or_else(|| {
            a.key
                .as_ref()
                .and_then(|k| k.parent()?.parent().map(|d| d.join("manifest.json")))
        }),
        key: a.key,
        new_history: a.new_history,
        confirm_empty_raft_store: a.confirm_empty_raft_store,
    };
    member::run(opts, cancel).await?;
    Ok(0)
}
