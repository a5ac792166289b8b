//! Turning the raw file into a [`Topology`], collecting every problem.
//!
//! Serde only checks shapes (and stops at the first problem); every rule of
//! the contract (shared/TOPOLOGY.md) is checked here so that one run reports
//! all of them. Checks run in three passes: per value (while converting each
//! node), across the tree (ids, parents, names), and across hosts (ports).
//!
//! - `mesh.rs`: the `[mesh]` table.
//! - `node.rs`: one node on its own (id, members, witness, hooks, Modbus
//!   device, point names).
//! - `points.rs`: one point (deadband, simulator or Modbus source).
//! - `ports.rs`: one endpoint's ports, and clashes between hosts.
//! - `tree.rs`: the rules across nodes (root, parents, ids, names).
//! - `clients.rs`: the `[[client]]` principals (names, roles, scopes).

use std::ops::Range;
use std::path::Path;

use serde_spanned::Spanned;

use crate::error::{Diagnostic, Sink, TopologyError};
use crate::model::{Ports, Topology};
use crate::raw::RawFile;

mod clients;
mod mesh;
mod node;
mod points;
mod ports;
mod tree;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is the failure report in tests
mod tests;

pub(crate) fn load(path: &Path) -> Result<Topology, TopologyError> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&file, &text),
        Err(err) => Err(TopologyError {
            errors: vec![Diagnostic {
                file,
                line: 0,
                col: 0,
                message: format!("cannot read the topology file: {err}"),
            }],
        }),
    }
}

pub(crate) fn parse(file: &str, text: &str) -> Result<Topology, TopologyError> {
    let mut sink = Sink::new(file, text);
    let raw: RawFile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(err) => {
            // toml's message may span lines; a diagnostic is one line. The
            // raw shapes read numbers as i64/f64, which means nothing to an
            // operator.
            let message = err
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ")
                .replace("expected i64", "expected an integer")
                .replace("expected f64", "expected a number");
            sink.error(err.span().unwrap_or(0..0), message);
            return Err(sink.into_error());
        }
    };

    let mesh = mesh::mesh(&mut sink, raw.mesh);
    let mut nodes = Vec::with_capacity(raw.node.len());
    let mut metas = Vec::with_capacity(raw.node.len());
    for raw_node in &raw.node {
        let (node, meta) = node::node(&mut sink, raw_node);
        nodes.push(node);
        metas.push(meta);
    }
    tree::tree(&mut sink, &nodes, &metas);
    ports::port_clashes(&mut sink, &metas);
    let clients = clients::clients(&mut sink, &raw.client, &nodes);
    sink.finish()?;
    Ok(Topology {
        file: file.to_owned(),
        mesh,
        nodes,
        clients,
    })
}

/// What the cross-node passes need to know about a node beyond [`Node`]:
/// where things are written, and which parts passed their own checks.
struct NodeMeta {
    id_span: Range<usize>,
    /// The id passed its syntax check; tree rules only look at these.
    id_ok: bool,
    /// Point names that passed their own checks, with their spans.
    points: Vec<(String, Range<usize>)>,
    /// Endpoints (members, witness) whose ports resolved.
    endpoints: Vec<EndpointMeta>,
}

struct EndpointMeta {
    /// `node/member` or `node/witness`, as named in clash messages.
    label: String,
    host: String,
    ports: Ports,
    /// Where each port (in [`Ports::all`] order) was set: its own key, the
    /// `port_base`, or the whole endpoint when defaults apply.
    spans: [Range<usize>; 7],
}

/// A count or interval that must be >= 1; `default` when absent.
fn at_least_one(s: &mut Sink, v: &Option<Spanned<i64>>, key: &str, default: u64) -> u64 {
    match v {
        None => default,
        Some(v) => match u64::try_from(*v.get_ref()) {
            Ok(n) if n >= 1 => n,
            _ => {
                s.error(
                    v.span(),
                    format!("{key} = {}: expected an integer >= 1", v.get_ref()),
                );
                default
            }
        },
    }
}
