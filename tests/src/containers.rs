//! Container labs: every member, witness and simulated PLC of a topology in
//! its own container of the lab image (`compose/Dockerfile`: a static canopy
//! and nats-server, FROM scratch), on a Docker network of the lab's own;
//! the containers and the network are removed on `Drop`, also when a test
//! fails.
//!
//! Who does what:
//! - **testcontainers** builds the image (from the Dockerfile, the static
//!   canopy and nats-server; FROM scratch, so nothing is pulled), creates
//!   the lab's network, creates and starts the containers, publishes each
//!   member's NATS port on a free loopback port, pauses and unpauses, reads
//!   logs, and removes the containers and then the network on `Drop`.
//! - **bollard** (testcontainers' re-export, so always the version it is
//!   built on) does what testcontainers does not: SIGKILL a container (it
//!   only stops, SIGTERM first) and sweep what a test process killed before
//!   its `Drop` (a nextest timeout) left behind.
//!
//! Not used: testcontainers' compose support (it runs the `docker compose`
//! v2 plugin; this machine kind has docker-compose 1.29, which
//! `scripts/compose-lab` keeps using). Docker API versions: Debian's engine
//! 20.10 speaks API 1.41 at most and refuses a request for `/v1.53/...`
//! ("client version 1.53 is too new"); bollard 0.21 says 1.53 but joins
//! its paths without the version prefix, so the engine answers at its own
//! version and everything here works. Should a later bollard send the
//! prefix, every call fails with that message: testcontainers has no
//! setting to lower the version.
//!
//! Hosts are container names, not fixed addresses: Docker's DNS on a
//! user-defined network resolves them (the static glibc canopy resolves
//! through `/etc/hosts` and `/etc/resolv.conf`, no NSS library needed), the
//! raft listener binds what its own name resolves to and checks a peer's
//! source address against what the peer's name resolves to (one network per
//! container, so they agree), nats-server routes and leafnode remotes take
//! names, and so does the Modbus `host:port`. So the lab needs neither a
//! subnet of its own nor fixed addresses, and two labs (two engineers, a
//! retried test, `scripts/compose-lab` with its fixed 172.29.0.0/24) can run
//! side by side. A partition by `docker network disconnect` would need a
//! fixed address again (listeners stay bound to the old one across a
//! reconnect): that is a network with a configured subnet, which bollard
//! can create; no test needs it yet.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context as _};
use testcontainers::bollard::models::PortBinding;
use testcontainers::bollard::query_parameters::{
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, PruneImagesOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use testcontainers::core::client::docker_client_instance;
use testcontainers::core::{AccessMode, IntoContainerPort, Mount};
use testcontainers::runners::{AsyncBuilder, AsyncRunner};
use testcontainers::{ContainerAsync, GenericBuildableImage, GenericImage, ImageExt};
use topology::Topology;

use crate::{nats_server_bin, workspace_root};

/// The image the labs run (`scripts/compose-lab` builds the same one).
pub const LAB_IMAGE: (&str, &str) = ("canopy", "lab");

/// Where a container finds the topology and the keys (as in the compose
/// file that `canopy topology compose` writes).
const TOPOLOGY_MOUNT: &str = "/etc/canopy/topology.toml";
const KEYS_MOUNT: &str = "/keys";

/// Every lab's network and containers are named `canopy-tc-<pid>-<n>...`;
/// the pid tells a lab whose process is gone (see [`sweep_dead_labs`]).
const PREFIX: &str = "canopy-tc-";
const PID_LABEL: &str = "org.canopy.lab.pid";

/// The static canopy the image holds: `CANOPY_STATIC_BIN`, else where
/// `scripts/compose-lab static` builds it (scripts/test runs that first and
/// sets the variable).
pub fn static_canopy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CANOPY_STATIC_BIN") {
        return PathBuf::from(p);
    }
    workspace_root().join("target/static/x86_64-unknown-linux-gnu/release/canopy")
}

/// The label `compose/Dockerfile` gives the lab image.
const IMAGE_LABEL: &str = "org.canopy.lab";

/// Builds [`LAB_IMAGE`] from `compose/Dockerfile` around the static canopy
/// and nats-server, so a lab runs the code just built (the build is cached
/// by Docker: a few seconds when nothing changed), then removes the lab
/// images it replaced (dangling; one still running a container stays).
pub async fn build_lab_image() -> anyhow::Result<GenericImage> {
    let canopy = static_canopy_bin();
    if !canopy.is_file() {
        bail!(
            "{} does not exist: build it first (`scripts/compose-lab static`; scripts/test does)",
            canopy.display()
        );
    }
    let nats = nats_server_bin();
    if !nats.is_file() {
        bail!("{} does not exist: run scripts/setup", nats.display());
    }
    let image = GenericBuildableImage::new(LAB_IMAGE.0, LAB_IMAGE.1)
        .with_dockerfile(workspace_root().join("compose/Dockerfile"))
        .with_file(canopy, "canopy")
        .with_file(nats, "nats-server")
        .build_image()
        .await
        .context("building the lab image from compose/Dockerfile")?;
    let docker = docker_client_instance().await?;
    let old = HashMap::from([("label", vec![IMAGE_LABEL]), ("dangling", vec!["true"])]);
    let prune = PruneImagesOptionsBuilder::new().filters(&old).build();
    // Best effort: a leftover image costs disk, not correctness.
    let _ = docker.prune_images(Some(prune)).await;
    Ok(image)
}

/// One container of a lab.
#[derive(Debug)]
struct Process {
    /// The node it runs; for a simulated PLC, `plc<k>` (its host without
    /// the lab's prefix).
    node: String,
    /// `a`, `b`, `witness`, or `plc` for a simulated PLC.
    name: String,
    /// Its NATS client port inside the container (members only), published
    /// on a free loopback port.
    nats: Option<u16>,
    container: ContainerAsync<GenericImage>,
}

/// A topology running in containers; see the module docs.
#[derive(Debug)]
pub struct ContainerLab {
    // Field order is drop order: the containers (and with the last of them
    // the network) go before the directory they mount.
    processes: Vec<Process>,
    name: String,
    topology: Topology,
    dir: tempfile::TempDir,
}

impl ContainerLab {
    /// Starts every process of the topology in `template` in its own
    /// container. The template is rewritten for the lab (every host becomes
    /// the container's name, every Modbus device a `plc-sim` container);
    /// its hosts must be distinct per process, as in a compose topology.
    /// The keys are made for the lab (`canopy keys gen`). Returns once
    /// every container runs, not once the tree is up: wait for that.
    pub async fn start(template: &Path) -> anyhow::Result<ContainerLab> {
        sweep_dead_labs().await;
        let image = build_lab_image().await?;
        let name = lab_name();
        let text = std::fs::read_to_string(template)
            .with_context(|| format!("reading {}", template.display()))?;
        let rehosted = rehost(&text, &name)
            .with_context(|| format!("{}: rewriting the hosts", template.display()))?;

        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .context("lab directory")?;
        let topo_file = dir.path().join("topology.toml");
        std::fs::write(&topo_file, &rehosted)?;
        let topology = Topology::parse(&topo_file.display().to_string(), &rehosted)
            .with_context(|| format!("the rewritten topology:\n{rehosted}"))?;
        let keys = dir.path().join("keys");
        keys_gen(&topo_file, &keys)?;

        let mounts = [
            Mount::bind_mount(topo_file.display().to_string(), TOPOLOGY_MOUNT)
                .with_access_mode(AccessMode::ReadOnly),
            Mount::bind_mount(keys.display().to_string(), KEYS_MOUNT)
                .with_access_mode(AccessMode::ReadOnly),
        ];
        let mut specs = Vec::new();
        for node in &topology.nodes {
            for (member, ep) in node.processes() {
                let nats = (member != "witness").then_some(ep.ports.nats);
                specs.push((
                    node.id.clone(),
                    member.to_owned(),
                    nats,
                    node_args(&node.id, member),
                ));
            }
        }
        for (address, drives) in services::cmd::lab::plc_sims_where(&topology, |_| true) {
            let (host, _) = address.rsplit_once(':').context("PLC address")?;
            let node = host
                .strip_prefix(&format!("{name}-"))
                .unwrap_or(host)
                .to_owned();
            let mut args = vec!["plc-sim".to_owned(), "--listen".to_owned(), address.clone()];
            for d in drives {
                args.extend(["--drive".to_owned(), d]);
            }
            specs.push((node, "plc".to_owned(), None, args));
        }

        let starts = specs.into_iter().map(|(node, member, nats, args)| {
            let container = container_name(&name, &node, &member);
            let mut img = image.clone();
            if let Some(port) = nats {
                img = img.with_exposed_port(port.tcp());
            }
            let req = img
                .with_cmd(args)
                .with_container_name(&container)
                .with_network(&name)
                .with_label(PID_LABEL, std::process::id().to_string())
                .with_env_var("NO_COLOR", "1")
                .with_mount(mounts[0].clone())
                .with_mount(mounts[1].clone())
                .with_host_config_modifier(move |hc| {
                    // Published on loopback only, on a port Docker picks.
                    hc.publish_all_ports = Some(false);
                    hc.port_bindings = Some(
                        nats.map(|p| {
                            let bind = PortBinding {
                                host_ip: Some("127.0.0.1".into()),
                                host_port: Some(String::new()),
                            };
                            HashMap::from([(format!("{p}/tcp"), Some(vec![bind]))])
                        })
                        .unwrap_or_default(),
                    );
                });
            async move {
                let c = req
                    .start()
                    .await
                    .with_context(|| format!("starting container {container}"))?;
                anyhow::Ok(Process {
                    node,
                    name: member,
                    nats,
                    container: c,
                })
            }
        });
        // On an error the containers already started are dropped, so removed.
        let processes = futures::future::try_join_all(starts).await?;
        Ok(ContainerLab {
            processes,
            name,
            topology,
            dir,
        })
    }

    /// The lab's name: its network's, and the prefix of its containers'.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topology as the containers run it (hosts are container names).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The identity prefix of the lab's `operator` client (`--identity`).
    pub fn identity(&self) -> PathBuf {
        self.dir.path().join("keys/clients/operator")
    }

    /// The keys' manifest, for `canopy audit --manifest`.
    pub fn manifest(&self) -> PathBuf {
        self.dir.path().join("keys/manifest.json")
    }

    fn process(&self, node: &str, name: &str) -> anyhow::Result<&Process> {
        self.processes
            .iter()
            .find(|p| p.node == node && p.name == name)
            .with_context(|| format!("lab {}: no process {node}/{name}", self.name))
    }

    /// The URL of a member's NATS server from this host (its published
    /// loopback port).
    pub async fn nats_url(&self, node: &str, member: &str) -> anyhow::Result<String> {
        let p = self.process(node, member)?;
        let port = p
            .nats
            .with_context(|| format!("{node}/{member} has no NATS server"))?;
        let host_port = p.container.get_host_port_ipv4(port.tcp()).await?;
        if self.topology.mesh.security == topology::Security::None {
            return Ok(format!("nats://127.0.0.1:{host_port}"));
        }
        let url = format!("tls://127.0.0.1:{host_port}");
        let tls = services::certs::TlsFiles::of(&self.identity())?;
        crate::nats::trust(&url, tls);
        Ok(url)
    }

    /// SIGKILLs a process's container (a crash: no drain, no goodbye). The
    /// container stays until the lab drops.
    pub async fn kill(&self, node: &str, name: &str) -> anyhow::Result<()> {
        let p = self.process(node, name)?;
        let docker = docker_client_instance().await?;
        docker
            .kill_container(
                p.container.id(),
                Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()),
            )
            .await
            .with_context(|| format!("killing {node}/{name}"))
    }

    /// Freezes a process's container (`docker pause`: the cgroup freezer,
    /// like SIGSTOP to every process in it).
    pub async fn pause(&self, node: &str, name: &str) -> anyhow::Result<()> {
        let p = self.process(node, name)?;
        p.container
            .pause()
            .await
            .with_context(|| format!("pausing {node}/{name}"))
    }

    /// Thaws a container [`pause`](Self::pause)d before.
    pub async fn unpause(&self, node: &str, name: &str) -> anyhow::Result<()> {
        let p = self.process(node, name)?;
        p.container
            .unpause()
            .await
            .with_context(|| format!("unpausing {node}/{name}"))
    }

    /// Prints the last `lines` log lines of every container (stdout, then
    /// stderr) to stderr, where the test harness shows them on a failure.
    pub async fn print_logs(&self, lines: usize) {
        for p in &self.processes {
            let mut text = String::new();
            for out in [
                p.container.stdout_to_vec().await,
                p.container.stderr_to_vec().await,
            ] {
                match out {
                    Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
                    Err(e) => text.push_str(&format!("(no log: {e})\n")),
                }
            }
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            eprintln!("--- {}/{} (last {} lines)", p.node, p.name, tail.len());
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

/// A fresh lab name: unique on this machine while this process lives.
fn lab_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{PREFIX}{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The container (and DNS) name of a lab's process.
fn container_name(lab: &str, node: &str, name: &str) -> String {
    if name == "plc" {
        // A PLC's node part is already its host's suffix (`plc1`).
        format!("{lab}-{node}")
    } else {
        format!("{lab}-{}-{name}", services::cmd::compose::slug(node))
    }
}

/// `template` with every member's and witness's host set to its container
/// name and every Modbus device moved to a `plc<k>` container (one per
/// distinct address, keeping the port).
fn rehost(template: &str, lab: &str) -> anyhow::Result<String> {
    use toml::Value;
    let mut doc: toml::Table = template.parse().context("not TOML")?;
    let nodes = doc
        .get_mut("node")
        .and_then(Value::as_array_mut)
        .context("no [[node]]")?;
    let mut plcs: BTreeMap<String, String> = BTreeMap::new();
    for node in nodes {
        let t = node.as_table_mut().context("[[node]] is not a table")?;
        let id = t
            .get("id")
            .and_then(Value::as_str)
            .context("a node without id")?
            .to_owned();
        if let Some(members) = t.get_mut("members").and_then(Value::as_array_mut) {
            for m in members {
                let m = m.as_table_mut().context("a member is not a table")?;
                let name = m
                    .get("name")
                    .and_then(Value::as_str)
                    .with_context(|| format!("node {id}: a member without name"))?
                    .to_owned();
                m.insert("host".into(), container_name(lab, &id, &name).into());
            }
        }
        if let Some(w) = t.get_mut("witness").and_then(Value::as_table_mut) {
            w.insert("host".into(), container_name(lab, &id, "witness").into());
        }
        if let Some(dev) = t.get_mut("modbus").and_then(Value::as_table_mut) {
            let address = dev
                .get("address")
                .and_then(Value::as_str)
                .with_context(|| format!("node {id}: modbus without address"))?
                .to_owned();
            let (_, port) = address
                .rsplit_once(':')
                .with_context(|| format!("node {id}: modbus address {address:?} has no port"))?;
            let k = plcs.len() + 1;
            let host = plcs
                .entry(address.clone())
                .or_insert_with(|| container_name(lab, &format!("plc{k}"), "plc"))
                .clone();
            dev.insert("address".into(), format!("{host}:{port}").into());
        }
    }
    Ok(format!(
        "# generated for container lab {lab}; hosts are container names\n{}",
        toml::to_string(&doc)?
    ))
}

/// The arguments of a member's or witness's container, as the compose file
/// of `canopy topology compose` gives them.
fn node_args(node: &str, name: &str) -> Vec<String> {
    let mut args: Vec<String> = if name == "witness" {
        vec!["witness".into()]
    } else {
        vec!["node".into(), "--member".into(), name.into()]
    };
    args.extend(["--key".into(), format!("{KEYS_MOUNT}/{node}/{name}.nk")]);
    args.extend(
        [
            "--topology",
            TOPOLOGY_MOUNT,
            "--node",
            node,
            "--data",
            "/data",
            "--nats-server",
            "/bin/nats-server",
        ]
        .map(String::from),
    );
    args
}

/// `canopy keys gen` for the lab's topology, with the image's canopy.
fn keys_gen(topology: &Path, out: &Path) -> anyhow::Result<()> {
    let bin = static_canopy_bin();
    let res = Command::new(&bin)
        .arg("keys")
        .arg("gen")
        .arg("--topology")
        .arg(topology)
        .arg("--out")
        .arg(out)
        .args(["--lab-clients", "--also-host", "127.0.0.1"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} keys gen", bin.display()))?;
    if !res.status.success() {
        bail!(
            "canopy keys gen failed ({}): {}",
            res.status,
            String::from_utf8_lossy(&res.stderr)
        );
    }
    Ok(())
}

/// Removes the containers and networks of labs whose test process is gone
/// (killed before its `Drop` ran: a nextest timeout, a SIGKILL). A lab of a
/// live process, another engineer's included, is left alone. Best effort:
/// a failure here is no reason to fail the test that starts a new lab.
async fn sweep_dead_labs() {
    let Ok(docker) = docker_client_instance().await else {
        return;
    };
    let dead = |pid: &str| {
        pid.parse::<u32>()
            .is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists())
    };
    let list = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&HashMap::from([("label", vec![PID_LABEL])]))
        .build();
    for c in docker.list_containers(Some(list)).await.unwrap_or_default() {
        let pid = c.labels.as_ref().and_then(|l| l.get(PID_LABEL));
        if let (Some(id), Some(pid)) = (c.id.as_deref(), pid) {
            if dead(pid) {
                let force = RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .v(true)
                    .build();
                let _ = docker.remove_container(id, Some(force)).await;
            }
        }
    }
    for n in docker.list_networks(None).await.unwrap_or_default() {
        let Some(name) = n.name.as_deref() else {
            continue;
        };
        let pid = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next());
        if pid.is_some_and(dead) {
            let _ = docker.remove_network(name).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is the failure report in tests
mod tests {
    use super::*;

    const PAIR: &str = r#"
[mesh]
name = "t"
[[node]]
id = "root"
members = [{ name = "a", host = "172.29.0.10", port_base = 14000 }]
[[node]]
id = "root.south"
members = [
  { name = "a", host = "172.29.0.21", port_base = 14000 },
  { name = "b", host = "172.29.0.22", port_base = 14000 },
]
witness = { host = "172.29.0.23", port_base = 14000 }
modbus = { address = "172.29.0.30:502", unit = 1 }
[[node.point]]
name = "co"
source = "modbus"
register = "input:7"
"#;

    #[test]
    fn rehost_names_every_process_after_its_container() {
        let text = rehost(PAIR, "lab").unwrap();
        let t = Topology::parse("t.toml", &text).unwrap();
        let hosts: Vec<String> = t
            .nodes
            .iter()
            .flat_map(|n| n.processes().into_iter().map(|(_, ep)| ep.host.clone()))
            .collect();
        assert_eq!(
            hosts,
            [
                "lab-root-a",
                "lab-root-south-a",
                "lab-root-south-b",
                "lab-root-south-witness"
            ]
        );
        let dev = t.nodes[1].modbus.as_ref().unwrap();
        assert_eq!(dev.address, "lab-plc1:502");
        assert_eq!(container_name("lab", "plc1", "plc"), "lab-plc1");
        // Ports and everything else are kept.
        assert_eq!(t.nodes[1].members[1].endpoint.ports.nats, 14000);
        assert_eq!(t.nodes[1].points.len(), 1);
    }

    #[test]
    fn node_args_match_the_compose_files() {
        assert_eq!(
            node_args("root.south", "b")[..5],
            ["node", "--member", "b", "--key", "/keys/root.south/b.nk"]
        );
        // The witness's key file names its TLS files.
        assert_eq!(
            node_args("root.south", "witness")[..3],
            ["witness", "--key", "/keys/root.south/witness.nk"]
        );
    }
}
