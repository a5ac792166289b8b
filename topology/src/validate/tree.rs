//! The rules across nodes: one root, known parents, unique ids, and names
//! that do not clash between a node's points and its children.

use std::collections::{HashMap, HashSet};

use crate::error::Sink;
use crate::model::{Node, View};

use super::NodeMeta;

pub(super) fn tree(s: &mut Sink, nodes: &[Node], metas: &[NodeMeta]) {
    if nodes.is_empty() {
        s.error(
            0..0,
            "no [[node]] tables: expected at least the root node, e.g. [[node]] id = \"root\"",
        );
        return;
    }

    // id -> line of its first occurrence; roots in file order.
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut roots: Vec<(&Node, &NodeMeta)> = Vec::new();
    for (n, m) in nodes.iter().zip(metas) {
        if !m.id_ok {
            continue;
        }
        if let Some(line) = first.get(n.id.as_str()) {
            s.error(
                m.id_span.clone(),
                format!("duplicate node id \"{}\" (first at line {line})", n.id),
            );
            continue;
        }
        first.insert(&n.id, n.line);
        if n.depth() == 0 {
            roots.push((n, m));
        }
    }

    let root = roots.first().map(|(n, _)| *n);
    match root {
        Some(root) => {
            for (extra, m) in roots.iter().skip(1) {
                s.error(
                    m.id_span.clone(),
                    format!(
                        "second root node \"{}\": the root is \"{}\" (line {}), so every other id starts with \"{}.\"",
                        extra.id, root.id, root.line, root.id
                    ),
                );
            }
        }
        None => {
            let span = metas
                .iter()
                .find(|m| m.id_ok)
                .unwrap_or(&metas[0])
                .id_span
                .clone();
            s.error(
                span,
                "no root node: expected exactly one node whose id has a single segment, e.g. \"root\"",
            );
        }
    }

    let mut reported: HashSet<&str> = HashSet::new();
    for (n, m) in nodes.iter().zip(metas) {
        let Some(parent) = n.parent_id() else {
            continue;
        };
        if !m.id_ok {
            continue;
        }
        let top = n.id.split('.').next().unwrap_or_default();
        match root {
            Some(root) if top != root.id => {
                // Once per id, so a duplicated stray node is one problem.
                if reported.insert(&n.id) {
                    s.error(
                        m.id_span.clone(),
                        format!(
                            "node \"{}\" is not under the root \"{}\": every id starts with \"{}.\"",
                            n.id, root.id, root.id
                        ),
                    );
                }
            }
            // Without a root, "has no parent" for its children would only
            // repeat "no root node".
            None if n.depth() == 1 => {}
            _ => {
                if !first.contains_key(parent) && reported.insert(&n.id) {
                    s.error(
                        m.id_span.clone(),
                        format!("node \"{}\" has no parent \"{parent}\"", n.id),
                    );
                }
            }
        }
    }

    // A node that keeps the whole plant (view = "tree") copies what lies
    // outside its subtree from its parent, which must hold all of it: the
    // root does, and so does a parent that is view = "tree" itself.
    let by_id: HashMap<&str, &Node> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    for (n, m) in nodes.iter().zip(metas) {
        if !m.id_ok || n.view != View::Tree {
            continue;
        }
        let Some(parent) = n.parent_id().and_then(|p| by_id.get(p)) else {
            continue;
        };
        if parent.depth() != 0 && parent.view != View::Tree {
            s.error(
                m.id_span.clone(),
                format!(
                    "node \"{}\" has view = \"tree\", but its parent \"{}\" is neither the root nor view = \"tree\": it does not hold the rest of the plant to copy from",
                    n.id, parent.id
                ),
            );
        }
    }

    // A point named like a child node would share its subject prefix
    // (canopy.ev.<node>.<name>), so consumers could not tell them apart.
    for (n, m) in nodes.iter().zip(metas) {
        if !m.id_ok {
            continue;
        }
        for (point, span) in &m.points {
            let child = format!("{}.{point}", n.id);
            if first.contains_key(child.as_str()) {
                s.error(
                    span.clone(),
                    format!(
                        "point \"{point}\" of node \"{}\" has the same name as child node \"{child}\": expected distinct names",
                        n.id
                    ),
                );
            }
        }
    }
}
