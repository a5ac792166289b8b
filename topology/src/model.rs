//! The validated topology model: plain data, no parsing state.
//!
//! Every value here has passed validation, so consumers can rely on the
//! invariants written next to each field instead of re-checking them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A whole topology file after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// Name of the file as the caller gave it; later diagnostics (here or in
    /// other crates, via [`Node::line`]) name it so an operator finds the spot.
    pub file: String,
    /// Mesh-wide settings (`[mesh]`): one value for every node and stream.
    pub mesh: Mesh,
    /// Every `[[node]]`, in file order, so listings and renders follow the
    /// order the operator wrote. Exactly one of them is the root.
    pub nodes: Vec<Node>,
    /// Every `[[client]]`: the people and programs that read and command
    /// the tree, each with a role and a subtree (names unique, scopes are
    /// nodes of the tree).
    pub clients: Vec<Client>,
}

/// A client principal (`[[client]]`): its keys come from `canopy keys gen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// One token, unique among the clients.
    pub name: String,
    /// What it may do.
    pub role: ClientRole,
    /// The node whose subtree it may read and command (a node of the tree).
    pub scope: String,
    /// For the web HMI and OPC UA UserName logins (an argon2id PHC string).
    pub password_hash: Option<String>,
    /// Line of its `[[client]]` table (1-based), for later diagnostics.
    pub line: usize,
}

impl Client {
    /// Whether `node` lies in this client's subtree.
    pub fn covers(&self, node: &str) -> bool {
        node == self.scope
            || node
                .strip_prefix(self.scope.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
    }
}

/// What a client may do, each role including the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClientRole {
    /// Read values, state and history.
    Viewer,
    /// Also write to the PLC and release a forced value.
    Operator,
    /// Also force values, switch an HA pair over and set maintenance.
    Engineer,
}

impl ClientRole {
    /// The topology's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientRole::Viewer => "viewer",
            ClientRole::Operator => "operator",
            ClientRole::Engineer => "engineer",
        }
    }
}

impl FromStr for ClientRole {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(ClientRole::Viewer),
            "operator" => Ok(ClientRole::Operator),
            "engineer" => Ok(ClientRole::Engineer),
            other => Err(InvalidValue(format!(
                "role = {other:?}: expected \"viewer\", \"operator\" or \"engineer\""
            ))),
        }
    }
}

/// How the tree's links are protected (`[mesh] security`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Security {
    /// The default: keys and certificates from `canopy keys gen`, commands
    /// signed by their client and checked by the node that serves them.
    #[default]
    Secured,
    /// `security = "none"`: the plaintext tree for development; every
    /// process warns at start.
    None,
}

/// Mesh-wide settings, identical for every node because every host reads
/// the same file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mesh {
    /// Free text shown in UIs, so operators can tell meshes apart.
    pub name: String,
    /// Per-stream limits; bounds the disk each node spends on history.
    pub retention: Retention,
    /// When JetStream fsyncs; trades durability on power loss for throughput.
    pub sync: SyncPolicy,
    /// How often the event chain is checkpointed with a signature; bounds how
    /// much history a verifier must re-hash after a restart.
    pub checkpoint: Checkpoint,
    /// How long an HA pair's active may fail to reach its own stream before
    /// it hands the role to a standby that can (TOML `publish_timeout`,
    /// default 500 ms, at most 10 s). The handover itself adds the health
    /// reports that confirm it (3 × 100 ms) and the grant's grace.
    pub publish_timeout: Duration,
    /// Secured (the default) or the explicit development plaintext tree.
    pub security: Security,
}

/// Default of [`Mesh::publish_timeout`].
pub const PUBLISH_TIMEOUT: Duration = Duration::from_millis(500);

/// Limits applied to every event stream (own and replicated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Events older than this are dropped (TOML `max_age`, default 30 days).
    pub max_age: Duration,
    /// A stream larger than this drops its oldest events (TOML `max_bytes`,
    /// default 1 GiB).
    pub max_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_bytes: 1 << 30,
        }
    }
}

/// JetStream fsync policy (TOML `sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Fsync every write (`"always"`, the default): no acknowledged event is
    /// lost on power loss.
    #[default]
    Always,
    /// Fsync on this interval (a duration such as `"2m"`); always > 0.
    Interval(Duration),
}

/// When the signed chain checkpoint is written: whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// After this many events (>= 1, default 1000).
    pub every_events: u64,
    /// After this many milliseconds with unsigned events (>= 1, default 1000).
    pub every_ms: u64,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint {
            every_events: 1000,
            every_ms: 1000,
        }
    }
}

/// One place in the tree, run by one member (single) or two (HA pair).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Path such as `root.south.cell1`; the parent is the path minus its last
    /// segment, and each segment is a single NATS subject token.
    pub id: String,
    /// How much of the tree this node's UI and state show.
    pub view: View,
    /// The processes that run this node: 1 (single) or 2 (HA pair), names
    /// unique within the node.
    pub members: Vec<Member>,
    /// The tie-breaker of an HA pair; present exactly when there are 2 members.
    pub witness: Option<Endpoint>,
    /// Member that takes the active role back when it returns; only on a pair,
    /// and always names one of [`Node::members`].
    pub prefer: Option<String>,
    /// Commands run on role changes (e.g. to move a virtual IP).
    pub hooks: Option<Hooks>,
    /// The Modbus TCP device this node polls; present whenever a point has
    /// a Modbus source.
    pub modbus: Option<ModbusDevice>,
    /// The values this node owns, in file order, names unique.
    pub points: Vec<Point>,
    /// 1-based line of the node's `id` in [`Topology::file`], so errors found
    /// later (e.g. at start-up) can point at the node.
    pub line: usize,
}

impl Node {
    /// True for an HA pair (two members and a witness).
    pub fn is_pair(&self) -> bool {
        self.members.len() == 2
    }

    /// Every process the node runs, as (name, endpoint): its members, then
    /// its witness (named `witness`) if it has one.
    pub fn processes(&self) -> Vec<(&str, &Endpoint)> {
        let mut out: Vec<(&str, &Endpoint)> = self
            .members
            .iter()
            .map(|m| (m.name.as_str(), &m.endpoint))
            .collect();
        if let Some(w) = &self.witness {
            out.push(("witness", w));
        }
        out
    }

    /// The member called `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The point called `name` (last segment only, not the full name).
    pub fn point(&self, name: &str) -> Option<&Point> {
        self.points.iter().find(|p| p.name == name)
    }

    /// Distance from the root: the root is 0, its children 1, and so on.
    pub fn depth(&self) -> usize {
        self.id.matches('.').count()
    }

    /// The parent's id, or `None` for the root.
    pub fn parent_id(&self) -> Option<&str> {
        self.id.rsplit_once('.').map(|(parent, _)| parent)
    }

    /// The last segment of the id (`cell1` for `root.south.cell1`).
    pub fn name(&self) -> &str {
        self.id.rsplit('.').next().unwrap_or(&self.id)
    }
}

/// What a node's state and UI cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum View {
    /// The node's own subtree (`"subtree"`, the default).
    #[default]
    Subtree,
    /// The whole tree (`"tree"`), e.g. for a control room that is not the root.
    Tree,
}

impl View {
    /// The TOML spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            View::Subtree => "subtree",
            View::Tree => "tree",
        }
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One process running a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Name within the node (`a`, `b`); given on the command line as
    /// `--member` and used in role-change events.
    pub name: String,
    /// Where this member listens.
    pub endpoint: Endpoint,
}

/// A host and the ports a member or witness listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address as written; two endpoints on the same string
    /// never share a port.
    pub host: String,
    /// Resolved ports (from `port_base`, defaults and overrides).
    pub ports: Ports,
}

impl Endpoint {
    /// `nats://host:nats_port`, the client URL of this endpoint's NATS server.
    pub fn nats_url(&self) -> String {
        format!("nats://{}:{}", self.host, self.ports.nats)
    }
}

/// The ports of one endpoint; all distinct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ports {
    /// NATS client port (`port_base` + 0, default 4222).
    pub nats: u16,
    /// NATS leafnode port children connect to (+1, default 7422).
    pub leafnode: u16,
    /// NATS cluster route port between the members of a pair (+2, default 6222).
    pub cluster: u16,
    /// Raft port of the HA group (+3, default 7600).
    pub raft: u16,
    /// HTTP API and UI (+4, default 8080).
    pub http: u16,
    /// OPC UA server (+5, default 4840).
    pub opcua: u16,
    /// NATS monitoring endpoint (+6, default 8222).
    pub monitor: u16,
}

impl Ports {
    /// Ports used when neither `port_base` nor per-port keys are given.
    pub const DEFAULT: Ports = Ports {
        nats: 4222,
        leafnode: 7422,
        cluster: 6222,
        raft: 7600,
        http: 8080,
        opcua: 4840,
        monitor: 8222,
    };

    /// The TOML key of each port, in the order of [`Ports::all`].
    pub const KEYS: [&'static str; 7] = [
        "nats_port",
        "leafnode_port",
        "cluster_port",
        "raft_port",
        "http_port",
        "opcua_port",
        "monitor_port",
    ];

    /// `base + 0 ..= base + 6`, or `None` when `base + 6` overflows a port.
    pub fn from_base(base: u16) -> Option<Ports> {
        Some(Ports {
            nats: base,
            leafnode: base.checked_add(1)?,
            cluster: base.checked_add(2)?,
            raft: base.checked_add(3)?,
            http: base.checked_add(4)?,
            opcua: base.checked_add(5)?,
            monitor: base.checked_add(6)?,
        })
    }

    /// Every port, in `port_base` offset order.
    pub fn all(&self) -> [u16; 7] {
        [
            self.nats,
            self.leafnode,
            self.cluster,
            self.raft,
            self.http,
            self.opcua,
            self.monitor,
        ]
    }

    pub(crate) fn set(&mut self, index: usize, port: u16) {
        let slot = match index {
            0 => &mut self.nats,
            1 => &mut self.leafnode,
            2 => &mut self.cluster,
            3 => &mut self.raft,
            4 => &mut self.http,
            5 => &mut self.opcua,
            _ => &mut self.monitor,
        };
        *slot = port;
    }
}

impl Default for Ports {
    fn default() -> Self {
        Ports::DEFAULT
    }
}

/// Commands run when a member gains or loses the active role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hooks {
    /// Run after becoming active (e.g. bring up a virtual IP).
    pub on_activate: Option<String>,
    /// Run after giving up the active role.
    pub on_deactivate: Option<String>,
    /// A hook still running after this is killed, so a stuck script cannot
    /// block a failover (>= 1, default 5000).
    pub timeout_ms: u64,
}

/// The node's Modbus TCP device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModbusDevice {
    /// `host:port` of the device (validated to have both parts).
    pub address: String,
    /// Modbus unit (slave) id (default 1).
    pub unit: u8,
    /// Poll period of the points (>= 1, default 200).
    pub poll_ms: u64,
    /// A request without reply after this marks the points bad (>= 1,
    /// default 500).
    pub timeout_ms: u64,
    /// A holding register the active member increments so the PLC can tell a
    /// live supervisor from a frozen one.
    pub life_sign: Option<Register>,
}

/// A named value owned by one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Single token, unique in the node; the subject is
    /// `canopy.ev.<node id>.<name>`. Never starts with `_` (system events).
    pub name: String,
    /// Where values come from.
    pub source: Source,
    /// Engineering unit for display only (`rpm`, `degC`).
    pub unit: Option<String>,
    /// Accepts write commands; only for holding registers and coils.
    pub writable: bool,
    /// Publish only changes larger than this (>= 0); cuts event volume of noisy
    /// analog values.
    pub deadband: Option<f64>,
}

/// Where a point's values come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Generated inside the active member (`source = "sim"`).
    Sim(SimSpec),
    /// Polled from the node's Modbus device (`source = "modbus"`).
    Modbus(ModbusPoint),
}

/// A simulated signal.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSpec {
    /// Waveform.
    pub kind: SimKind,
    /// Period of the waveform in seconds (> 0, default 30).
    pub period_s: f64,
    /// Lowest value (default 0, <= max).
    pub min: f64,
    /// Highest value (default 100).
    pub max: f64,
    /// Sample interval (>= 1, default 1000).
    pub every_ms: u64,
}

/// Waveform of a simulated point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimKind {
    /// `"sine"`
    Sine,
    /// `"ramp"`: min to max over a period, then restart.
    Ramp,
    /// `"random_walk"`: bounded random steps.
    RandomWalk,
    /// `"square"`: min for half a period, max for the other half.
    Square,
}

impl SimKind {
    /// Every kind, for error messages and UIs.
    pub const ALL: [SimKind; 4] = [
        SimKind::Sine,
        SimKind::Ramp,
        SimKind::RandomWalk,
        SimKind::Square,
    ];

    /// The TOML spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            SimKind::Sine => "sine",
            SimKind::Ramp => "ramp",
            SimKind::RandomWalk => "random_walk",
            SimKind::Square => "square",
        }
    }
}

impl fmt::Display for SimKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SimKind {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SimKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                InvalidValue(format!(
                    "sim kind {s:?}: expected one of sine, ramp, random_walk, square"
                ))
            })
    }
}

/// A point read from (and maybe written to) the node's Modbus device.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusPoint {
    /// First register of the value.
    pub register: Register,
    /// How the register(s) decode; coils and discrete inputs are always bool,
    /// and 32-bit types span `address` and `address + 1`.
    pub data_type: DataType,
    /// Engineering value = raw * scale (non-zero, finite; default 1.0).
    pub scale: f64,
}

/// A Modbus register address such as `holding:100`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Register {
    /// Which Modbus table.
    pub kind: RegisterKind,
    /// 0-based address within the table.
    pub address: u16,
}

impl fmt::Display for Register {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.address)
    }
}

impl FromStr for Register {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            InvalidValue(format!(
                "register {s:?}: expected holding:N, input:N, coil:N or discrete:N with N in 0..=65535"
            ))
        };
        let (kind, address) = s.split_once(':').ok_or_else(invalid)?;
        let kind = kind.parse::<RegisterKind>().map_err(|_| invalid())?;
        if address.is_empty() || !address.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let address = address.parse::<u16>().map_err(|_| invalid())?;
        Ok(Register { kind, address })
    }
}

/// The four Modbus tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterKind {
    /// Read/write 16-bit registers.
    Holding,
    /// Read-only 16-bit registers.
    Input,
    /// Read/write bits.
    Coil,
    /// Read-only bits.
    Discrete,
}

impl RegisterKind {
    /// The spelling used in register specs.
    pub fn as_str(&self) -> &'static str {
        match self {
            RegisterKind::Holding => "holding",
            RegisterKind::Input => "input",
            RegisterKind::Coil => "coil",
            RegisterKind::Discrete => "discrete",
        }
    }

    /// True for the bit tables (coil, discrete), which only hold bools.
    pub fn is_bit(&self) -> bool {
        matches!(self, RegisterKind::Coil | RegisterKind::Discrete)
    }

    /// True for the tables a master can write (holding, coil).
    pub fn is_writable(&self) -> bool {
        matches!(self, RegisterKind::Holding | RegisterKind::Coil)
    }

    /// The data type a point gets without a `type` key.
    pub fn default_data_type(&self) -> DataType {
        if self.is_bit() {
            DataType::Bool
        } else {
            DataType::U16
        }
    }
}

impl fmt::Display for RegisterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RegisterKind {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "holding" => Ok(RegisterKind::Holding),
            "input" => Ok(RegisterKind::Input),
            "coil" => Ok(RegisterKind::Coil),
            "discrete" => Ok(RegisterKind::Discrete),
            _ => Err(InvalidValue(format!(
                "register kind {s:?}: expected holding, input, coil or discrete"
            ))),
        }
    }
}

/// How a Modbus value decodes (TOML key `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// A bit, or a register that is non-zero.
    Bool,
    /// One unsigned register.
    U16,
    /// One signed register.
    I16,
    /// Two registers, unsigned.
    U32,
    /// Two registers, signed.
    I32,
    /// Two registers, IEEE 754 single precision.
    F32,
}

impl DataType {
    /// Every type, for error messages and UIs.
    pub const ALL: [DataType; 6] = [
        DataType::Bool,
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::F32,
    ];

    /// How many consecutive 16-bit registers the value spans (1 or 2).
    pub fn registers(&self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
        }
    }

    /// The TOML spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::F32 => "f32",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataType {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                InvalidValue(format!(
                    "type {s:?}: expected one of bool, u16, i16, u32, i32, f32"
                ))
            })
    }
}

/// A value that does not parse as the type asked for; says what was
/// expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(String);

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is the failure report in tests
mod tests {
    use super::*;

    #[test]
    fn register_round_trips() {
        for text in ["holding:100", "input:0", "coil:65535", "discrete:7"] {
            let reg: Register = text.parse().unwrap();
            assert_eq!(reg.to_string(), text);
        }
        assert_eq!(
            "coil:10".parse::<Register>().unwrap(),
            Register {
                kind: RegisterKind::Coil,
                address: 10
            }
        );
    }

    #[test]
    fn register_rejects_bad_forms() {
        for text in [
            "holding",
            "holding:",
            "holdin:1",
            "holding:65536",
            "holding:-1",
            "input:+1",
        ] {
            let err = text.parse::<Register>().unwrap_err().to_string();
            assert!(
                err.contains("holding:N, input:N, coil:N or discrete:N"),
                "{err}"
            );
        }
    }

    #[test]
    fn data_type_round_trips_and_sizes() {
        for t in DataType::ALL {
            assert_eq!(t.as_str().parse::<DataType>().unwrap(), t);
            assert_eq!(t.to_string(), t.as_str());
        }
        assert_eq!(DataType::U16.registers(), 1);
        assert_eq!(DataType::F32.registers(), 2);
        assert!("U16".parse::<DataType>().is_err());
    }

    #[test]
    fn ports_from_base() {
        let p = Ports::from_base(14000).unwrap();
        assert_eq!(p.all(), [14000, 14001, 14002, 14003, 14004, 14005, 14006]);
        assert_eq!(Ports::from_base(65529).unwrap().monitor, 65535);
        assert!(Ports::from_base(65530).is_none());
    }

    #[test]
    fn node_path_helpers() {
        let node = Node {
            id: "root.south.cell1".into(),
            view: View::Subtree,
            members: vec![],
            witness: None,
            prefer: None,
            hooks: None,
            modbus: None,
            points: vec![],
            line: 1,
        };
        assert_eq!(node.depth(), 2);
        assert_eq!(node.parent_id(), Some("root.south"));
        assert_eq!(node.name(), "cell1");
    }
}
