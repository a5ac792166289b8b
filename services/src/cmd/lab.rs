//! `canopy lab`: a whole topology on this machine, as separate processes.
//!
//! Starts a PLC simulator for every Modbus device on a loopback address,
//! then every member (`canopy node`, each with its own nats-server child),
//! waits until every member answers and every point of the tree has reached
//! the root, prints ONE ready line of JSON on stdout, and runs until
//! SIGINT/SIGTERM, when it stops every child. Progress goes to stderr;
//! members log to `<workdir>/<node>/<member>/member.log`.

use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value as Json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use topology::{DataType, RegisterKind, Source, Topology};

use crate::child::{self, Output};
use crate::cli::LabArgs;
use crate::natsconf;
use crate::supervisor;

/// A started member, as the ready line reports it.
#[derive(Debug)]
struct Started {
    node: String,
    member: String,
    nats: String,
    pid: Option<u32>,
    data: PathBuf,
    argv: Vec<String>,
}

/// One child of the lab, owned by its own task until the lab stops.
struct Proc {
    label: String,
    pid: u32,
    task: JoinHandle<()>,
}

fn own(label: String, mut c: tokio::process::Child, stop: CancellationToken) -> Proc {
    let pid = c.id().unwrap_or(0);
    let l = label.clone();
    let task = tokio::spawn(async move {
        tokio::select! {
            status = c.wait() => {
                if !stop.is_cancelled() {
                    eprintln!("lab: {l} exited ({status:?})");
                }
            }
            _ = stop.cancelled() => child::stop(&mut c, Duration::from_secs(10)).await,
        }
    });
    Proc { label, pid, task }
}

/// Runs the lab until a signal; exit code 0 on a clean stop.
pub async fn run(a: LabArgs) -> anyhow::Result<u8> {
    let (workdir, temporary) = match &a.workdir {
        Some(d) => (absolute(d)?, false),
        None => (
            std::env::temp_dir().join(format!("canopy-lab-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
    let topo_path = match &a.topology {
        Some(p) => absolute(p)?,
        None => {
            let p = workdir.join("topology.toml");
            std::fs::write(&p, topology::DEFAULT_TOPOLOGY)?;
            p
        }
    };
    let topo = super::load_topology(&topo_path)?;
    let nats_bin = absolute(&supervisor::find_nats_server(a.nats_server.as_deref())?)?;
    let exe = std::env::current_exe().context("locating the canopy binary")?;
    let stop = CancellationToken::new();
    let signal = super::shutdown_token()?;
    eprintln!(
        "lab: topology {} ({} nodes), data in {}",
        topo_path.display(),
        topo.nodes.len(),
        workdir.display()
    );

    let result = start_and_wait(
        &a, &topo, &topo_path, &workdir, &nats_bin, &exe, &stop, &signal,
    )
    .await;
    let procs = match result {
        Ok(procs) => procs,
        Err((e, procs)) => {
            stop.cancel();
            for p in procs {
                let _ = p.task.await;
            }
            return Err(e);
        }
    };
    signal.cancelled().await;
    eprintln!("lab: stopping {} processes", procs.len());
    stop.cancel();
    for p in procs {
        if tokio::time::timeout(Duration::from_secs(15), p.task)
            .await
            .is_err()
        {
            eprintln!("lab: {} (pid {}) did not stop in time", p.label, p.pid);
        }
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&workdir);
    }
    eprintln!("lab: stopped");
    Ok(0)
}

#[allow(clippy::too_many_arguments)]
async fn start_and_wait(
    a: &LabArgs,
    topo: &Topology,
    topo_path: &Path,
    workdir: &Path,
    nats_bin: &Path,
    exe: &Path,
    stop: &CancellationToken,
    signal: &CancellationToken,
) -> Result<Vec<Proc>, (anyhow::Error, Vec<Proc>)> {
    let mut procs = Vec::new();
    let mut plcs = Vec::new();
    if !a.no_plc_sim {
        for (address, drives) in plc_sims(topo) {
            let log = workdir.join(format!("plc-{}.writes.jsonl", address.replace(':', "_")));
            let mut args = vec!["plc-sim".to_owned(), "--listen".to_owned(), address.clone()];
            args.extend(["--write-log".to_owned(), log.display().to_string()]);
            for d in drives {
                args.extend(["--drive".to_owned(), d]);
            }
            match start_plc(exe, &args).await {
                Ok((c, addr)) => {
                    plcs.push(json!({ "address": addr, "pid": c.id(), "write_log": log }));
                    procs.push(own(format!("plc-sim {addr}"), c, stop.clone()));
                }
                Err(e) => {
                    return Err((
                        e.context(format!("starting the PLC simulator on {address}")),
                        procs,
                    ))
                }
            }
        }
    }
    // Keys: one per member, kept across lab runs on the same workdir so that
    // old checkpoints stay verifiable against the manifest.
    let keys = workdir.join("keys");
    let generated = match super::keys::gen_for(topo, &keys, false, true) {
        Ok(g) => g,
        Err(e) => return Err((e.context("generating the lab's keys"), procs)),
    };
    if topo.mesh.security == topology::Security::None {
        eprintln!("lab: WARNING: security = \"none\": a plaintext tree for development; unsigned commands are served");
    }
    let mut members = Vec::new();
    for node in &topo.nodes {
        // Members first, then the witness; each is its own process.
        for (name, endpoint) in node.processes() {
            let name = name.to_owned();
            let data = workdir.join(&node.id).join(&name);
            if let Err(e) = std::fs::create_dir_all(&data) {
                return Err((anyhow::anyhow!("creating {}: {e}", data.display()), procs));
            }
            let key = keys.join(&node.id).join(format!("{name}.nk"));
            let mut args: Vec<String> = if name == "witness" {
                vec!["witness".into()]
            } else {
                vec!["node".into(), "--member".into(), name.clone()]
            };
            args.extend(["--key".into(), key.display().to_string()]);
            args.extend([
                "--topology".into(),
                topo_path.display().to_string(),
                "--node".into(),
                node.id.clone(),
                "--data".into(),
                data.display().to_string(),
                "--nats-server".into(),
                nats_bin.display().to_string(),
            ]);
            let c = match child::spawn(exe, &args, Output::File(data.join("member.log"))) {
                Ok(c) => c,
                Err(e) => return Err((e, procs)),
            };
            let mut argv = vec![exe.display().to_string()];
            argv.extend(args);
            members.push(Started {
                node: node.id.clone(),
                member: name.clone(),
                nats: natsconf::client_url(topo, endpoint),
                pid: c.id(),
                data,
                argv,
            });
            procs.push(own(format!("{}/{}", node.id, name), c, stop.clone()));
        }
    }
    eprintln!(
        "lab: started {} members, {} PLC simulators; waiting for them",
        members.len(),
        plcs.len()
    );

    let root_url = natsconf::client_url(topo, &topo.root().members[0].endpoint);
    // The lab looks at its tree as its first client (the root's engineer).
    let tls = match (topo.mesh.security, generated.clients.first()) {
        (topology::Security::Secured, Some((_, identity))) => {
            match crate::certs::TlsFiles::of(identity) {
                Ok(t) => Some(t),
                Err(e) => return Err((e, procs)),
            }
        }
        _ => None,
    };
    let waited = tokio::select! {
        r = wait_ready(topo, &root_url, tls.as_ref(), &members, a.ready_timeout) => r,
        _ = signal.cancelled() => Err(anyhow::anyhow!("interrupted while starting")),
    };
    let infos = match waited {
        Ok(i) => i,
        Err(e) => return Err((e, procs)),
    };
    let list: Vec<Json> = members
        .iter()
        .zip(infos)
        .map(|(s, nats_pid)| {
            json!({ "node": s.node, "member": s.member, "nats": s.nats, "pid": s.pid,
                    "nats_pid": nats_pid, "data": s.data, "argv": s.argv })
        })
        .collect();
    let clients: serde_json::Map<String, Json> = generated
        .clients
        .iter()
        .map(|(c, identity)| {
            let file = |ext| crate::certs::with_ext(identity, ext);
            (
                c.name.clone(),
                json!({ "role": c.role.as_str(), "scope": c.scope, "identity": identity,
                        "nkey": file("nk"), "cert": file("crt"), "key": file("key"),
                        "ca": crate::certs::ca_beside(identity), "tls_first": tls.is_some(),
                        "inbox_prefix": crate::rights::client_inbox(&c.name, Some(&c.scope)) }),
            )
        })
        .collect();
    let ready = json!({ "ready": true, "topology": topo_path, "manifest": generated.manifest,
                        "members": list, "plcs": plcs, "clients": clients });
    println!("{ready}");
    if let Some((_, id)) = generated
        .clients
        .iter()
        .find(|(c, _)| c.role == topology::ClientRole::Engineer)
    {
        eprintln!(
            "lab: commands are signed: export CANOPY_IDENTITY={} (or pass --identity)",
            id.display()
        );
    }
    eprintln!("lab: ready; Ctrl-C stops everything");
    Ok(procs)
}

/// Connects to `url` of a running lab as its client `client`, from the
/// lab's ready line: over TLS with the client's certificate when the lab's
/// tree is secured.
pub async fn connect_as_client(
    ready: &Json,
    client: &str,
    url: &str,
) -> anyhow::Result<async_nats::Client> {
    let entry = &ready["clients"][client];
    let tls = if entry["tls_first"] == true {
        let identity = entry["identity"]
            .as_str()
            .with_context(|| format!("client {client} not in the lab's ready line"))?;
        Some(crate::certs::TlsFiles::of(std::path::Path::new(identity))?)
    } else {
        None
    };
    crate::nats::options(tls.as_ref())
        .name(format!("canopy {client}"))
        .connect(url)
        .await
        .with_context(|| format!("connecting to {url} as {client}"))
}

/// Waits until every member answers and the root's state holds every point.
/// Returns each member's nats-server pid, in `members` order.
async fn wait_ready(
    topo: &Topology,
    root_url: &str,
    tls: Option<&crate::certs::TlsFiles>,
    members: &[Started],
    timeout: Duration,
) -> anyhow::Result<Vec<Option<u64>>> {
    let deadline = Instant::now() + timeout;
    let client = loop {
        match crate::nats::options(tls)
            .name("canopy lab")
            .connect(root_url)
            .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("root not reachable yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => bail!("the root's NATS at {root_url} never came up: {e}"),
        }
    };
    let mut nats_pids = Vec::new();
    for Started { node, member, .. } in members {
        let subject = events::subjects::member_subject(node, member);
        let info = loop {
            match tokio::time::timeout(
                Duration::from_secs(2),
                client.request(subject.clone(), "".into()),
            )
            .await
            {
                Ok(Ok(msg)) => {
                    break serde_json::from_slice::<Json>(&msg.payload).unwrap_or_default()
                }
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                _ => bail!(
                    "member {node}/{member} did not answer within {timeout:?} (see its member.log)"
                ),
            }
        };
        eprintln!("lab: {node}/{member} up");
        nats_pids.push(info.get("nats_pid").and_then(Json::as_u64));
    }
    let root = &topo.root().id;
    let expected: Vec<String> = topo
        .nodes
        .iter()
        .flat_map(|n| n.points.iter().map(move |p| format!("{}.{}", n.id, p.name)))
        .collect();
    let mut last_note = Instant::now();
    loop {
        let missing: Vec<&String> = match client
            .request(events::subjects::state_subject(root), "".into())
            .await
        {
            Ok(msg) => {
                let state: Json = serde_json::from_slice(&msg.payload).unwrap_or_default();
                let points = state.get("points").and_then(Json::as_object);
                expected
                    .iter()
                    .filter(|p| points.is_none_or(|ps| !ps.contains_key(*p)))
                    .collect()
            }
            Err(_) => expected.iter().collect(),
        };
        if missing.is_empty() {
            return Ok(nats_pids);
        }
        if Instant::now() > deadline {
            bail!("points never reached the root within {timeout:?}: {missing:?}");
        }
        if last_note.elapsed() > Duration::from_secs(5) {
            eprintln!("lab: waiting for {} points to reach {root}", missing.len());
            last_note = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts a plc-sim and reads its ready line (the bound address).
async fn start_plc(exe: &Path, args: &[String]) -> anyhow::Result<(tokio::process::Child, String)> {
    let mut c = child::spawn(exe, args, Output::PipedStdout)?;
    let stdout = c.stdout.take().context("plc-sim stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .context("plc-sim did not report ready")??
        .context("plc-sim exited before it was ready")?;
    let v: Json = serde_json::from_str(&line).with_context(|| format!("plc-sim said {line:?}"))?;
    let addr = v
        .get("address")
        .and_then(Json::as_str)
        .context("plc-sim ready line has no address")?;
    Ok((c, addr.to_owned()))
}

/// The PLC simulators a lab needs: one per Modbus device on a loopback
/// address, driving its read-only points with gentle profiles (writable
/// points are left for clients to write).
pub fn plc_sims(topo: &Topology) -> Vec<(String, Vec<String>)> {
    plc_sims_where(topo, is_loopback)
}

/// [`plc_sims`] for the PLC addresses `simulated` accepts (the compose lab
/// simulates every one).
pub fn plc_sims_where(
    topo: &Topology,
    simulated: impl Fn(&str) -> bool,
) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for node in &topo.nodes {
        let Some(dev) = &node.modbus else { continue };
        if !simulated(&dev.address) {
            continue;
        }
        let drives: Vec<String> = node
            .points
            .iter()
            .filter(|p| !p.writable)
            .filter_map(|p| match &p.source {
                Source::Modbus(m) => Some(match (m.register.kind, m.data_type) {
                    (RegisterKind::Coil | RegisterKind::Discrete, _) | (_, DataType::Bool) => {
                        format!("{}=square,period_s=20,min=0,max=1", m.register)
                    }
                    _ => format!(
                        "{}=sine,period_s=60,min=100,max=900,type={}",
                        m.register, m.data_type
                    ),
                }),
                Source::Sim(_) => None,
            })
            .collect();
        match out.iter_mut().find(|(a, _)| *a == dev.address) {
            Some((_, d)) => d.extend(drives),
            None => out.push((dev.address.clone(), drives)),
        }
    }
    out
}

fn is_loopback(address: &str) -> bool {
    address
        .to_socket_addrs()
        .map(|mut it| it.all(|a| a.ip().is_loopback()))
        .unwrap_or(false)
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_topology_gets_one_plc_sim_driving_read_only_points() {
        let t = Topology::parse("d.toml", topology::DEFAULT_TOPOLOGY).expect("default");
        let sims = plc_sims(&t);
        assert_eq!(sims.len(), 1, "{sims:?}");
        let (_, drives) = &sims[0];
        assert!(
            drives.iter().all(|d| !d.starts_with("holding:100")),
            "writable point driven: {drives:?}"
        );
        assert!(!drives.is_empty());
    }
}
