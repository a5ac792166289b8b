//! The `canopy` command line (clap definitions only; behaviour is in `cmd`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// canopy: live state and full history of a plant's node tree, in sync on NATS.
#[derive(Debug, Parser)]
#[command(name = "canopy", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run one member of a node: its nats-server, sources, replicas, state and commands.
    Node(NodeArgs),
    /// Run the witness of an HA pair (third nats-server and third raft voter; never active).
    Witness(WitnessArgs),
    /// Start a whole topology on this machine (every member, its nats-server, PLC simulators).
    Lab(LabArgs),
    /// Run a Modbus TCP PLC simulator.
    PlcSim(PlcSimArgs),
    /// Topology file tools.
    #[command(subcommand)]
    Topology(TopologyCmd),
    /// Key management: one nkey per member and witness, and a public manifest.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Print the nats-server config canopy generates for a member.
    NatsConfig(NatsConfigArgs),
    /// Print a node's materialised state.
    State(StateArgs),
    /// Every node of the tree with its members' roles, epoch and health.
    Status(StatusArgs),
    /// Print a snapshot of points matching a pattern, then every change, live.
    Watch(WatchArgs),
    /// Write a value to a writable PLC point (the change comes back as an event).
    Write(CommandArgs),
    /// Force a point to a value (an operator override, until unforced).
    Force(CommandArgs),
    /// Remove an operator override.
    Unforce(UnforceArgs),
    /// Hand an HA pair's role from its active member to the other, gracefully.
    ///
    /// The active member takes its resources out of service while its lease
    /// holds (its last event is its role event, reason `switchover`), then
    /// releases the role; the other member is granted it after the grace,
    /// with a new epoch, and the reply names it. Refused, with the reason,
    /// when the other member could not take the role now (not heard from,
    /// not ready, in maintenance, its stream unreachable) or the pair has
    /// no quorum. With `prefer` naming the member that hands over, the role
    /// comes back to it after the flap hold: put it in maintenance instead.
    Switchover(SwitchoverArgs),
    /// Keep a member of an HA pair standby (never granted the role) until turned off.
    ///
    /// Recorded in the pair's chain as a role event of that member (reason
    /// `maintenance on` / `maintenance off`) and shown by `canopy status`.
    /// Putting the active member in maintenance hands its role over first,
    /// as `canopy switchover` does, and is refused when the other member
    /// could not take it.
    Maintenance(MaintenanceArgs),
    /// Replay a node's streams and check them: contiguity, chain, epochs, signed checkpoints.
    Audit(AuditArgs),
    /// Serve a node's history and state-at queries from its streams (a stateless worker).
    ///
    /// Joins the queue group `canopy-query` on `canopy.query.<node>`, so any
    /// number of workers share the load; each answers one query at a time
    /// and puts its handler time (and how long the query waited for it) in
    /// every reply. Connect it to a server of the node: on the secured tree
    /// with the node's query identity (`<keys>/<node>/query`, from `canopy
    /// keys gen`). Queries (`docs/wire-format.md`, "Queries"): `history` of
    /// a point over a time range, paged, and `state_at` an instant.
    Query(QueryArgs),
    /// Print the recorded changes of one point over a time range (from a node's query workers).
    History(HistoryArgs),
    /// Start and stop local query workers to hold a response-time target.
    ///
    /// Every few seconds it reads the response times (wait + handler) its
    /// workers report and adds a worker while the p90 is over the target,
    /// up to `--max`; it stops adding when the last worker added did not
    /// bring the p90 or the throughput down or up by a tenth (another
    /// worker no longer helps: on a small machine that comes soon), and
    /// says which limit stopped it. Workers well under target for a while
    /// are stopped, down to `--min`. Workers never outlive it (they die
    /// with it, also on SIGKILL).
    Autoscale(AutoscaleArgs),
    /// Benchmarks that print figures (no pass/fail).
    #[command(subcommand)]
    Bench(BenchCmd),
}

/// `canopy node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The topology file (identical on every host).
    #[arg(long, short)]
    pub topology: PathBuf,
    /// Which node this process runs (its path, e.g. `root.south`).
    #[arg(long)]
    pub node: String,
    /// Which member of the node (`a`, `b`); defaults to the node's only member.
    #[arg(long)]
    pub member: Option<String>,
    /// Data directory: generated nats config, JetStream store, logs.
    #[arg(long)]
    pub data: PathBuf,
    /// nats-server binary (else $CANOPY_NATS_SERVER, else PATH).
    #[arg(long)]
    pub nats_server: Option<PathBuf>,
    /// Use an already running nats-server at this URL instead of starting one.
    #[arg(long, conflicts_with = "nats_server")]
    pub attach: Option<String>,
    /// This member's nkey seed (`canopy keys gen`); its checkpoints are signed with it.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The key manifest (`canopy keys gen`) that signed commands are checked
    /// against; re-read when the file changes. Default: `manifest.json` in
    /// the directory above `--key`'s (where `canopy keys gen` puts it).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// After a lost disk, start a NEW history at seq 1 even though the parent
    /// holds the node's old one (by default the member restores its history
    /// from the parent first, and waits while the parent does not answer).
    /// The parent then reports its replica as diverged until it is repaired.
    #[arg(long)]
    pub new_history: bool,
    /// This voter's raft store is empty on purpose (a replaced disk, a
    /// rebuilt host) and one of the other two voters is gone for good: start
    /// without waiting for both of them to confirm the group's term and
    /// leader. Without it, an emptied store waits (shown in `canopy status`)
    /// so that it can never help a stale leader commit.
    #[arg(long)]
    pub confirm_empty_raft_store: bool,
}

/// `canopy witness`.
#[derive(Debug, Args)]
pub struct WitnessArgs {
    /// The topology file (identical on every host).
    #[arg(long, short)]
    pub topology: PathBuf,
    /// The HA pair this witness belongs to.
    #[arg(long)]
    pub node: String,
    /// The witness's key file from `canopy keys gen`
    /// (`<out>/<node>/witness.nk`): on a secured tree its TLS certificate
    /// and key beside it, and `ca.crt` two directories up, secure its raft
    /// port.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Data directory: generated nats config, JetStream store, raft log.
    #[arg(long)]
    pub data: PathBuf,
    /// nats-server binary (else $CANOPY_NATS_SERVER, else PATH).
    #[arg(long)]
    pub nats_server: Option<PathBuf>,
    /// Use an already running nats-server at this URL instead of starting one.
    #[arg(long, conflicts_with = "nats_server")]
    pub attach: Option<String>,
    /// This voter's raft store is empty on purpose (a replaced disk, a
    /// rebuilt host) and one of the other two voters is gone for good: start
    /// without waiting for both of them to confirm the group's term and
    /// leader. Without it, an emptied store waits (shown in `canopy status`)
    /// so that it can never help a stale leader commit.
    #[arg(long)]
    pub confirm_empty_raft_store: bool,
}

/// `canopy lab`.
#[derive(Debug, Args)]
pub struct LabArgs {
    /// Topology to run; the embedded default 3-level tree when omitted.
    #[arg(long, short)]
    pub topology: Option<PathBuf>,
    /// Where members keep their data (`DIR/<node>/<member>`); a new temporary
    /// directory when omitted, removed on exit.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// nats-server binary (else $CANOPY_NATS_SERVER, else PATH).
    #[arg(long)]
    pub nats_server: Option<PathBuf>,
    /// Do not start PLC simulators (the topology's Modbus addresses are real PLCs).
    #[arg(long)]
    pub no_plc_sim: bool,
    /// How long to wait for every member to come up and every point to reach the root.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    pub ready_timeout: std::time::Duration,
}

/// `canopy plc-sim`.
#[derive(Debug, Args)]
pub struct PlcSimArgs {
    /// Address to listen on (`127.0.0.1:15020`; port 0 picks one and prints it).
    #[arg(long)]
    pub listen: String,
    /// Drive a register with a profile: `holding:100=sine,period_s=30,min=0,max=1000`
    /// (kinds: sine, ramp, square, random_walk, const with value=N). Repeatable.
    #[arg(long)]
    pub drive: Vec<String>,
    /// Append every client write, as a JSON line with the client's address and a timestamp.
    #[arg(long)]
    pub write_log: Option<PathBuf>,
}

/// `canopy topology ...`.
#[derive(Debug, Subcommand)]
pub enum TopologyCmd {
    /// Validate a topology file and print its node tree.
    Check {
        /// The topology file.
        file: PathBuf,
    },
    /// Print the embedded default topology (what `canopy lab` runs without --topology).
    Default,
    /// Print a docker compose file running the topology: one container per
    /// member, witness and simulated PLC, each at its topology address
    /// (hosts must be IPv4 addresses of one /24). See scripts/compose-lab.
    Compose {
        /// The topology file (mounted from beside the compose file as
        /// `topology.toml`, with the keys from `keys/`).
        file: PathBuf,
        /// The image to run (built by scripts/compose-lab).
        #[arg(long, default_value = "canopy:lab")]
        image: String,
    },
}

/// `canopy keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Create an nkey per member and witness and per `[[client]]` of the
    /// topology, the mesh CA with a TLS certificate for each of them, and
    /// `manifest.json` (the public keys, certificate fingerprints and
    /// client rights that nodes and auditors check against). A client gone
    /// from the topology, or whose seed was deleted, is retired in the
    /// manifest. Existing seeds and certificates are kept.
    Gen {
        /// The topology file.
        #[arg(long, short)]
        topology: PathBuf,
        /// Output directory: `<node>/<member>.nk` and `clients/<name>.nk` seeds,
        /// `.crt` / `.key` beside each (keys and seeds mode 0600), `ca.crt`
        /// and `ca.key` (the CA's key: keep it here, no host needs it), and
        /// `manifest.json`. Each host needs only its own files, `ca.crt` and
        /// the manifest.
        #[arg(long)]
        out: PathBuf,
        /// Replace existing seeds, the CA and every certificate. By default
        /// existing ones are kept: a new member key makes the checkpoints it
        /// signed before unverifiable against the new manifest.
        #[arg(long)]
        force: bool,
        /// When the topology lists no `[[client]]`, add the clients `canopy
        /// lab` makes: `operator` (an engineer scoped to the root) and `viewer`.
        #[arg(long)]
        lab_clients: bool,
        /// Also write one bundle per host into this directory: `DIR/<host>/`
        /// holds only what the processes on that host need (their seeds,
        /// certificates and keys, `ca.crt` and `manifest.json`; no CA key, no
        /// client secret), ready to copy to it.
        #[arg(long, value_name = "DIR")]
        bundles: Option<PathBuf>,
        /// Also make every member's and witness's certificate valid for this
        /// address (repeatable), e.g. `127.0.0.1` where a container's
        /// published ports are reached from the docker host.
        #[arg(long, value_name = "HOST")]
        also_host: Vec<String>,
    },
}

/// `canopy nats-config`.
#[derive(Debug, Args)]
pub struct NatsConfigArgs {
    /// The topology file.
    #[arg(long, short)]
    pub topology: PathBuf,
    /// Node id.
    #[arg(long)]
    pub node: String,
    /// Member name (defaults to the node's only member).
    #[arg(long)]
    pub member: Option<String>,
    /// Data directory the config points JetStream at.
    #[arg(long, default_value = "./data")]
    pub data: PathBuf,
    /// The member's nkey seed (`<keys>/<node>/<member>.nk`): on the secured
    /// tree the config names the certificate, TLS key and CA beside it.
    #[arg(long)]
    pub key: Option<PathBuf>,
}

/// Where to reach the tree.
#[derive(Debug, Args)]
pub struct ServerArg {
    /// Any NATS server of the tree (interest routing reaches the owner).
    #[arg(
        long,
        short,
        default_value = "nats://127.0.0.1:4222",
        env = "CANOPY_SERVER"
    )]
    pub server: String,
    /// Seconds to wait for a reply.
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
    /// The client identity: a path prefix such that `PATH.nk` is the
    /// client's nkey seed and `PATH.crt`, `PATH.key` its TLS certificate
    /// and key, with the mesh CA `ca.crt` two directories up (`canopy keys
    /// gen` writes `<out>/clients/<name>.*`; `canopy lab` prints each
    /// client's in its ready line). A `tls://` server (the secured tree)
    /// needs it to connect, and serves only commands it signed.
    #[arg(long, env = "CANOPY_IDENTITY")]
    pub identity: Option<PathBuf>,
}

/// `canopy state`.
#[derive(Debug, Args)]
pub struct StateArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// The node whose state to print (it holds its whole subtree).
    #[arg(long)]
    pub node: String,
    /// Only points matching this pattern (`root.south.>`).
    #[arg(long)]
    pub pattern: Option<String>,
    /// Print only a digest of the state (to compare two states exactly).
    #[arg(long)]
    pub digest: bool,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `canopy status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// The topology, to also list members that do not answer (as `down`).
    #[arg(long, short)]
    pub topology: Option<PathBuf>,
    /// How long to collect answers after the last one arrived (ms).
    #[arg(long, default_value_t = 300)]
    pub settle_ms: u64,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `canopy query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// The node whose queries to serve (connect to one of its servers).
    #[arg(long)]
    pub node: String,
    /// This worker's name in replies and logs (default `q<pid>`).
    #[arg(long)]
    pub name: Option<String>,
    /// Print one JSON line per query answered on stdout (`{"worker",
    /// "handler_us", "queued_us", "error"}`): what `canopy autoscale`
    /// reads.
    #[arg(long)]
    pub report: bool,
}

/// `canopy history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// Full point name: `root.south.fan1_speed`.
    pub point: String,
    /// The node whose query workers to ask: the point's own node (the
    /// default) or any ancestor of it that runs `canopy query`.
    #[arg(long)]
    pub node: Option<String>,
    /// How far back from the end of the range.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub since: std::time::Duration,
    /// Start of the range, ms since the Unix epoch (instead of `--since`).
    #[arg(long)]
    pub from_ms: Option<u64>,
    /// End of the range, ms since the Unix epoch (default: now).
    #[arg(long)]
    pub to_ms: Option<u64>,
    /// Print at most this many changes (the oldest first).
    #[arg(long)]
    pub limit: Option<usize>,
    /// One JSON sample per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `canopy autoscale`.
#[derive(Debug, Args)]
pub struct AutoscaleArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// The node whose query workers to run.
    #[arg(long)]
    pub node: String,
    /// Response-time target: the p90 of wait + handler time, in ms.
    #[arg(long)]
    pub target_ms: f64,
    /// Most workers ever running (the cost ceiling).
    #[arg(long)]
    pub max: usize,
    /// Fewest workers running.
    #[arg(long, default_value_t = 1)]
    pub min: usize,
    /// How often to look at the response times and decide.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub every: std::time::Duration,
    /// One JSON line per decision instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `canopy audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// The node whose streams (its own and its replicas) are replayed.
    #[arg(long)]
    pub node: String,
    /// Only this origin.
    #[arg(long)]
    pub origin: Option<String>,
    /// The public keys (`manifest.json` from `canopy keys gen`).
    #[arg(long)]
    pub manifest: PathBuf,
    /// The topology, for its checkpoint intervals (else the defaults 1000 events / 1000 ms).
    #[arg(long, short)]
    pub topology: Option<PathBuf>,
    /// Also print the state after this seq of the origin (needs --origin).
    #[arg(long, conflicts_with = "at")]
    pub seq: Option<u64>,
    /// Also print the state at this instant (RFC 3339, e.g. 2026-11-22T04:00:00Z).
    #[arg(long)]
    pub at: Option<String>,
    /// JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// `canopy watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// Point pattern, NATS style: `root.south.>`, `root.*.temp1`, `>`.
    pub pattern: String,
    /// One JSON object a line.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many live events (default: run until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
}

/// `canopy write` and `canopy force`.
#[derive(Debug, Args)]
pub struct CommandArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// Full point name: `root.south.fan1_speed`.
    pub point: String,
    /// The value: a number, `true` or `false`.
    pub value: String,
    #[command(flatten)]
    pub who: WhoArg,
    /// Print the JSON reply.
    #[arg(long)]
    pub json: bool,
}

/// Who sends a command (a secured tree records the `--identity`'s name).
#[derive(Debug, Args)]
pub struct WhoArg {
    /// Who asks, on a plaintext tree (`security = "none"`) only, where it
    /// is recorded as given.
    #[arg(long, default_value = "cli")]
    pub by: String,
}

/// `canopy unforce`.
#[derive(Debug, Args)]
pub struct UnforceArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// Full point name: `root.south.fan1_speed`.
    pub point: String,
    #[command(flatten)]
    pub who: WhoArg,
    /// Print the JSON reply.
    #[arg(long)]
    pub json: bool,
}

/// `canopy switchover` (on a secured tree `--identity` must be an
/// engineer's whose scope holds the pair).
#[derive(Debug, Args)]
pub struct SwitchoverArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// The HA pair, e.g. `root.south`.
    pub node: String,
    /// The member to hand the role to (a pair has one other member: this
    /// only checks that it is the one you mean).
    #[arg(long)]
    pub to: Option<String>,
    /// Print the JSON reply.
    #[arg(long)]
    pub json: bool,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// Into maintenance.
    On,
    /// Out of maintenance.
    Off,
}

/// `canopy maintenance` (on a secured tree `--identity` must be an
/// engineer's whose scope holds the pair).
#[derive(Debug, Args)]
pub struct MaintenanceArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// The HA pair, e.g. `root.south`.
    pub node: String,
    /// The member (`a`, `b`).
    pub member: String,
    /// `on` or `off`.
    #[arg(value_enum)]
    pub state: OnOff,
    /// Print the JSON reply.
    #[arg(long)]
    pub json: bool,
}

/// `canopy bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Leaf→root throughput and latency of canopy's publish path against raw JetStream.
    Pipeline(BenchPipelineArgs),
    /// CPU cost per event of the codec, the chain and the fold (no I/O).
    Codec(BenchCodecArgs),
    /// Kill (then freeze) the active member of a Modbus pair N times; time the takeover.
    Failover(BenchFailoverArgs),
    /// Cut a middle node while the leaf publishes N events; time the catch-up at the root.
    Catchup(BenchCatchupArgs),
    /// Raw read rate of the root's replica against canopy's rebuild (decode, verify, fold).
    Rebuild(BenchRebuildArgs),
    /// Restart time of a root member with a long history, with and without its state snapshot.
    Restart(BenchRestartArgs),
    /// A seeded, randomised fault campaign on a real tree; checks the invariants after each schedule.
    Faults(BenchFaultsArgs),
    /// Response times of history queries at the root under a rising load: one worker, then autoscaled.
    Queries(BenchQueriesArgs),
    /// The root pair's cost as the origins below it grow (CPU, memory, lag, catch-up of a cut).
    Scale(BenchScaleArgs),
}

/// `canopy bench scale`.
#[derive(Debug, Args)]
pub struct BenchScaleArgs {
    /// Sizes to run, one tree each: origins below the root.
    #[arg(long, default_value = "10,100,500")]
    pub origins: String,
    /// Aggregate event rate of all origins (events per second).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// JetStream write durability of the tree ("always" or a flush
    /// interval like "1s").
    #[arg(long, default_value = "always")]
    pub sync: String,
    /// How long events flow before the measured window.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub warmup: std::time::Duration,
    /// The measured window (CPU, memory, lag).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub measure: std::time::Duration,
    /// How long the link from mid to the root is cut (mid goes on taking
    /// events).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub cut: std::time::Duration,
    #[command(flatten)]
    pub common: BenchCommon,
}

/// `canopy bench queries`.
#[derive(Debug, Args)]
pub struct BenchQueriesArgs {
    /// Events in the leaf's history (the root's replica holds them all).
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Points the events cycle over.
    #[arg(long, default_value_t = 20)]
    pub points: usize,
    /// Events of the leaf's history one query's time range spans (each
    /// query walks them all and returns `span / points` samples).
    #[arg(long, default_value_t = 20_000)]
    pub span: u64,
    /// Closed-loop clients of each step, rising.
    #[arg(long, default_value = "1,2,4,8")]
    pub levels: String,
    /// How long each step lasts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub step: std::time::Duration,
    /// The autoscaled run's response-time target (p90, ms).
    #[arg(long, default_value_t = 300.0)]
    pub target_ms: f64,
    /// The autoscaled run's ceiling of workers.
    #[arg(long, default_value_t = 4)]
    pub max: usize,
    #[command(flatten)]
    pub common: BenchCommon,
}

/// `canopy bench faults`.
#[derive(Debug, Args)]
pub struct BenchFaultsArgs {
    /// Schedules to run, one after the other on the same tree.
    #[arg(long, default_value_t = 10)]
    pub schedules: u64,
    /// The campaign's seed (default: the clock; printed, so a run can be
    /// repeated exactly).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Faults per schedule (they overlap).
    #[arg(long, default_value_t = 8)]
    pub faults: usize,
    /// The window the faults of a schedule start in, in seconds.
    #[arg(long, default_value_t = 20)]
    pub window_s: u64,
    /// An external Modbus TCP server (host:port) for the pair `root.plc`,
    /// e.g. pymodbus; by default the campaign runs `canopy plc-sim`.
    #[arg(long)]
    pub plc: Option<String>,
    #[command(flatten)]
    pub common: BenchCommon,
}

/// Flags every benchmark that runs a tree takes.
#[derive(Debug, Clone, Args)]
pub struct BenchCommon {
    /// nats-server binary (else $CANOPY_NATS_SERVER, else PATH).
    #[arg(long)]
    pub nats_server: Option<PathBuf>,
    /// Keep the tree's data and logs here instead of a temporary directory
    /// (which is removed after the run).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `canopy bench restart`.
#[derive(Debug, Args)]
pub struct BenchRestartArgs {
    /// Events in the leaf's history (the root holds a replica of them all).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Distinct points the events are spread over.
    #[arg(long, default_value_t = 200)]
    pub points: u64,
    /// JetStream write durability while the history is written.
    #[arg(long, default_value = "1s")]
    pub sync: String,
    #[command(flatten)]
    pub common: BenchCommon,
}

/// `canopy bench rebuild`.
#[derive(Debug, Args)]
pub struct BenchRebuildArgs {
    /// Events in the history that is read back.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// JetStream write durability while the history is written.
    #[arg(long, default_value = "1s")]
    pub sync: String,
    #[command(flatten)]
    pub common: BenchCommon,
}

/// `canopy bench catchup`.
#[derive(Debug, Args)]
pub struct BenchCatchupArgs {
    /// Events the leaf publishes while the middle node is cut off.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// JetStream write durability for the run ("always" or an interval like "1s").
    #[arg(long, default_value = "1s")]
    pub sync: String,
    #[command(flatten)]
    pub common: BenchCommon,
}

/// `canopy bench failover`.
#[derive(Debug, Args)]
pub struct BenchFailoverArgs {
    /// Trials per fault (SIGKILL, then SIGSTOP).
    #[arg(long, default_value_t = 10)]
    pub trials: u32,
    /// The PLC poll interval of the pair (bounds "first PLC poll").
    #[arg(long, default_value_t = 20)]
    pub poll_ms: u64,
    /// Trials per fault (SIGKILL, then SIGSTOP) of the witness, which holds
    /// the pair's stream leaders: how long appends stall, and whether the
    /// role moves (it should not).
    #[arg(long, default_value_t = 5)]
    pub witness_trials: u32,
    /// SIGKILLs of the active right after the pair's stream leader was
    /// moved onto its server (the case the witness's leader keeping avoids:
    /// a kill then waits for JetStream's own stream election, 4-9 s).
    #[arg(long, default_value_t = 3)]
    pub leader_trials: u32,
    #[command(flatten)]
    pub common: BenchCommon,
}

/// `canopy bench codec`.
#[derive(Debug, Args)]
pub struct BenchCodecArgs {
    /// Events per measurement.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `canopy bench pipeline`.
#[derive(Debug, Args)]
pub struct BenchPipelineArgs {
    /// Events per throughput run.
    #[arg(long, default_value_t = 50_000)]
    pub events: u64,
    /// Rate of the latency runs (events per second).
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// JetStream write durability for the run: "always" (fsync every write,
    /// the topology default) or a flush interval like "1s".
    #[arg(long, default_value = "always")]
    pub sync: String,
    /// Leave out signed checkpoints from canopy's path (to measure their cost).
    #[arg(long)]
    pub no_checkpoints: bool,
    /// Run on a plaintext tree, then on a secured one (TLS 1.3 on every
    /// link), and report canopy's throughput, latency and CPU per 100k
    /// events on both, with the ratios TLS/plaintext.
    #[arg(long)]
    pub compare_tls: bool,
    /// Duration of each latency run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub latency_for: std::time::Duration,
    #[command(flatten)]
    pub common: BenchCommon,
}
