//! `canopy topology check` and `canopy nats-config`.

use std::path::Path;

use crate::cli::NatsConfigArgs;
use crate::natsconf::{self, Role};

/// Validates a topology and prints its tree; exit 1 with `FILE:LINE:COL:`
/// diagnostics when it is invalid.
pub fn check(file: &Path) -> anyhow::Result<u8> {
    match topology::Topology::load(file) {
        Ok(t) => {
            print!("{}", t.render_tree());
            Ok(0)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(1)
        }
    }
}

/// Prints the generated nats-server config of a member.
pub fn nats_config(a: NatsConfigArgs) -> anyhow::Result<u8> {
    let topo = super::load_topology(&a.topology)?;
    let node = topo
        .node(&a.node)
        .ok_or_else(|| anyhow::anyhow!("node {:?} is not in {}", a.node, a.topology.display()))?;
    let member = super::member_name(node, a.member.as_deref())?;
    let conf = natsconf::render(
        &topo,
        node,
        Role::Member(&member),
        &a.data.join("jetstream"),
    )
    .map_err(anyhow::Error::msg)?;
    print!("{conf}");
    Ok(0)
}
