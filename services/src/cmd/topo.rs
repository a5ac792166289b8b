//! `canopy topology check` and `canopy nats-config`.

use std::path::Path;

use crate::cli::NatsConfigArgs;
use crate::member::boot::Identity;
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
    let topo = std::sync::Arc::new(super::load_topology(&a.topology)?);
    let id = Identity::resolve(topo, &a.node, a.member.as_deref())?;
    let tls = a
        .key
        .as_deref()
        .map(crate::certs::TlsFiles::of_seed)
        .transpose()?;
    let manifest = match &tls {
        Some(t) => crate::keys::manifest_beside(t)?,
        None => Default::default(),
    };
    let conf = natsconf::render(
        &id.topo,
        &id.node,
        Role::Member(&id.member),
        &a.data.join("jetstream"),
        tls.as_ref(),
        &manifest,
    )
    .map_err(anyhow::Error::msg)?;
    print!("{conf}");
    Ok(0)
}
