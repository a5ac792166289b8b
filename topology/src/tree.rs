//! Walking the validated tree, and rendering it for humans.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::TopologyError;
use crate::model::{Node, Source, Topology, View};

impl Topology {
    /// Reads and validates the file at `path`; diagnostics name `path` as given.
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        crate::validate::load(path)
    }

    /// Validates `text`; `file` is the name used in diagnostics.
    pub fn parse(file: &str, text: &str) -> Result<Topology, TopologyError> {
        crate::validate::parse(file, text)
    }

    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The single node whose id has one segment.
    ///
    /// # Panics
    ///
    /// If `nodes` is empty, which [`Topology::parse`] never returns.
    pub fn root(&self) -> &Node {
        match self.nodes.iter().find(|n| n.depth() == 0) {
            Some(root) => root,
            None => &self.nodes[0],
        }
    }

    /// The parent of `id`; `None` for the root or an unknown id.
    pub fn parent(&self, id: &str) -> Option<&Node> {
        self.node(id)?.parent_id().and_then(|p| self.node(p))
    }

    /// Direct children of `id`, in file order.
    pub fn children(&self, id: &str) -> Vec<&Node> {
        self.nodes
            .iter()
            .filter(|n| n.parent_id() == Some(id))
            .collect()
    }

    /// The nodes outside `id`'s subtree that `id` keeps copies of: all of
    /// them (in file order) for a node with `view = "tree"`, none
    /// otherwise (and none for the root, whose subtree is everything).
    pub fn outside(&self, id: &str) -> Vec<&Node> {
        let Some(node) = self.node(id) else {
            return Vec::new();
        };
        if node.view != View::Tree {
            return Vec::new();
        }
        let inside = |other: &str| {
            other == id
                || other
                    .strip_prefix(id)
                    .is_some_and(|rest| rest.starts_with('.'))
        };
        self.nodes.iter().filter(|n| !inside(&n.id)).collect()
    }

    /// Every node below `id` at any depth, excluding `id`, parents before
    /// their children (depth-first, siblings in file order).
    pub fn descendants(&self, id: &str) -> Vec<&Node> {
        let mut out = Vec::new();
        let mut stack: Vec<&Node> = self.children(id).into_iter().rev().collect();
        while let Some(node) = stack.pop() {
            out.push(node);
            stack.extend(self.children(&node.id).into_iter().rev());
        }
        out
    }

    /// The child of `from` on the path down to `descendant` (which may be
    /// that child itself); `None` if `descendant` is not below `from`.
    pub fn child_toward(&self, from: &str, descendant: &str) -> Option<&Node> {
        let rest = descendant.strip_prefix(from)?.strip_prefix('.')?;
        let next = rest.split('.').next()?;
        self.node(&format!("{from}.{next}"))
    }

    /// A human-readable tree: one line per node indented by depth, then its
    /// members, witness and points one level deeper.
    pub fn render_tree(&self) -> String {
        let mut out = format!("mesh {}\n", self.mesh.name);
        if let Some(root) = self.nodes.iter().find(|n| n.depth() == 0) {
            self.render_node(root, &mut out);
        }
        out
    }

    fn render_node(&self, node: &Node, out: &mut String) {
        let indent = "  ".repeat(node.depth());
        let _ = write!(out, "{indent}{}", node.id);
        if node.view == View::Tree {
            out.push_str("  view=tree");
        }
        if let Some(prefer) = &node.prefer {
            let _ = write!(out, "  prefer={prefer}");
        }
        if let Some(m) = &node.modbus {
            let _ = write!(out, "  modbus={} unit={}", m.address, m.unit);
        }
        out.push('\n');
        for m in &node.members {
            let _ = writeln!(
                out,
                "{indent}  member {} {}:{}",
                m.name, m.endpoint.host, m.endpoint.ports.nats
            );
        }
        if let Some(w) = &node.witness {
            let _ = writeln!(out, "{indent}  witness {}:{}", w.host, w.ports.nats);
        }
        for p in &node.points {
            let _ = write!(out, "{indent}  point {}: ", p.name);
            match &p.source {
                Source::Sim(sim) => {
                    let _ = write!(out, "sim {}", sim.kind);
                }
                Source::Modbus(m) => {
                    let _ = write!(out, "modbus {} {}", m.register, m.data_type);
                }
            }
            if let Some(unit) = &p.unit {
                let _ = write!(out, " [{unit}]");
            }
            if p.writable {
                out.push_str(" writable");
            }
            out.push('\n');
        }
        for child in self.children(&node.id) {
            self.render_node(child, out);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is the failure report in tests
mod tests {
    use crate::{Topology, DEFAULT_TOPOLOGY, EXAMPLE_TOPOLOGY};

    fn default() -> Topology {
        Topology::parse("default.toml", DEFAULT_TOPOLOGY).unwrap()
    }

    fn ids(nodes: Vec<&crate::Node>) -> Vec<&str> {
        nodes.into_iter().map(|n| n.id.as_str()).collect()
    }

    #[test]
    fn navigation() {
        let t = default();
        assert_eq!(t.root().id, "root");
        assert_eq!(t.node("root.south").unwrap().depth(), 1);
        assert!(t.node("root.west").is_none());
        assert_eq!(t.parent("root.south.cell1").unwrap().id, "root.south");
        assert!(t.parent("root").is_none());
        assert_eq!(ids(t.children("root")), ["root.north", "root.south"]);
        assert_eq!(ids(t.children("root.north")), Vec::<&str>::new());
        assert_eq!(
            ids(t.descendants("root")),
            ["root.north", "root.south", "root.south.cell1"]
        );
        assert_eq!(ids(t.descendants("root.south")), ["root.south.cell1"]);
        assert_eq!(
            t.child_toward("root", "root.south.cell1").unwrap().id,
            "root.south"
        );
        assert_eq!(
            t.child_toward("root.south", "root.south.cell1").unwrap().id,
            "root.south.cell1"
        );
        assert!(t.child_toward("root.south", "root.north").is_none());
        assert!(t.child_toward("root", "root").is_none());
        // A prefix that is not a path segment does not count.
        assert!(t.child_toward("root.south", "root.southx").is_none());
    }

    #[test]
    fn descendants_put_parents_first_in_a_deep_tree() {
        let text = r#"
[mesh]
name = "deep"
[[node]]
id = "r.a.x"
members = [{ name = "a", host = "h", port_base = 1000 }]
[[node]]
id = "r"
members = [{ name = "a", host = "h", port_base = 1010 }]
[[node]]
id = "r.a"
members = [{ name = "a", host = "h", port_base = 1020 }]
[[node]]
id = "r.b"
members = [{ name = "a", host = "h", port_base = 1030 }]
"#;
        let t = Topology::parse("deep.toml", text).unwrap();
        assert_eq!(t.root().id, "r");
        assert_eq!(ids(t.descendants("r")), ["r.a", "r.a.x", "r.b"]);
    }

    #[test]
    fn render_tree_lists_every_node_and_point() {
        for (name, text) in [("default", DEFAULT_TOPOLOGY), ("example", EXAMPLE_TOPOLOGY)] {
            let t = Topology::parse(name, text).unwrap();
            let out = t.render_tree();
            for node in &t.nodes {
                let indent = "  ".repeat(node.depth());
                assert!(
                    out.lines()
                        .any(|l| l.starts_with(&format!("{indent}{}", node.id))),
                    "{name}: {} missing in\n{out}",
                    node.id
                );
                for p in &node.points {
                    assert!(
                        out.contains(&format!("point {}: ", p.name)),
                        "{name}: {} missing",
                        p.name
                    );
                }
            }
        }
    }

    #[test]
    fn render_tree_shows_members_witness_and_point_details() {
        let t = Topology::parse("example", EXAMPLE_TOPOLOGY).unwrap();
        let out = t.render_tree();
        assert!(out.starts_with("mesh lab\nroot\n"), "{out}");
        assert!(out.contains("\n  root.north  view=tree\n"), "{out}");
        assert!(out.contains("\n  member a 127.0.0.1:14000\n"), "{out}");
        assert!(out.contains("\n  witness 127.0.0.1:14020\n"), "{out}");
        assert!(
            out.contains("\n    point temp1: sim sine [degC]\n"),
            "{out}"
        );
        assert!(
            out.contains("\n    point fan1_speed: modbus holding:100 u16 [rpm] writable\n"),
            "{out}"
        );
    }
}
