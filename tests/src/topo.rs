//! Topologies on free ports, built in code.

use crate::free_ports;

/// A topology builder with free ports, for tests.
#[derive(Debug, Default)]
pub struct TopologyBuilder {
    text: String,
}

impl TopologyBuilder {
    /// Starts a topology named `name` (JetStream flushes every second).
    pub fn new(name: &str) -> Self {
        Self::with_sync(name, "1s")
    }

    /// Starts a topology named `name` with the mesh's `sync` setting
    /// (`"always"`, the product default, fsyncs every write).
    pub fn with_sync(name: &str, sync: &str) -> Self {
        Self {
            text: format!("[mesh]\nname = \"{name}\"\nsync = \"{sync}\"\n"),
        }
    }

    /// Adds a single-member node on free ports; `extra` is raw TOML for the
    /// node table (e.g. a `modbus = {...}` line), `points` raw `[[node.point]]` tables.
    pub fn node(mut self, id: &str, extra: &str, points: &str) -> Self {
        let base = free_ports(7);
        self.text.push_str(&format!(
            "\n[[node]]\nid = \"{id}\"\nmembers = [{{ name = \"a\", host = \"127.0.0.1\", port_base = {base} }}]\n{extra}\n{points}\n"
        ));
        self
    }

    /// Adds an HA pair (members `a`, `b` and a witness) on free ports.
    pub fn pair(mut self, id: &str, extra: &str, points: &str) -> Self {
        let (a, b, w) = (free_ports(7), free_ports(7), free_ports(7));
        self.text.push_str(&format!(
            "\n[[node]]\nid = \"{id}\"\nmembers = [\n  {{ name = \"a\", host = \"127.0.0.1\", port_base = {a} }},\n  {{ name = \"b\", host = \"127.0.0.1\", port_base = {b} }},\n]\nwitness = {{ host = \"127.0.0.1\", port_base = {w} }}\n{extra}\n{points}\n"
        ));
        self
    }

    /// The TOML text.
    pub fn build(self) -> String {
        self.text
    }
}

/// `[[node.point]]` of a fast simulated sine.
pub fn sim_point(name: &str, every_ms: u64) -> String {
    format!(
        "[[node.point]]\nname = \"{name}\"\nsource = \"sim\"\nsim = {{ kind = \"sine\", period_s = 5, min = 0.0, max = 100.0, every_ms = {every_ms} }}\n"
    )
}
