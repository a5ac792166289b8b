//! A whole `canopy lab` as a test fixture, and processes a test restarts
//! from the lab's ready line; both stopped on Drop, also when a test fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::Value as Json;

use crate::bin::{canopy_bin, cli_env, nats_server_bin};

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
                lab.trust_members()?;
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

    /// Registers a client certificate of the lab (its `operator`, else its
    /// first client) for every member's `tls://` URL, so
    /// [`crate::nats::connect`] reaches them.
    fn trust_members(&self) -> anyhow::Result<()> {
        let clients = self.ready["clients"].as_object().context("clients")?;
        let Some((name, entry)) = clients
            .get_key_value("operator")
            .or_else(|| clients.iter().next())
        else {
            return Ok(());
        };
        if entry["tls_first"] != true {
            return Ok(());
        }
        let tls = services::certs::TlsFiles::of(&self.identity(name)?)?;
        for m in self.ready["members"].as_array().into_iter().flatten() {
            if let Some(url) = m["nats"].as_str() {
                crate::nats::trust(url, tls.clone());
            }
        }
        Ok(())
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

    /// Runs the canopy CLI as the lab's `operator` client (an engineer
    /// scoped to the root: its commands are signed); returns (exit code,
    /// stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        let identity = self.identity("operator")?;
        cli_env(args, &[("CANOPY_IDENTITY", identity.as_os_str())])
    }

    /// The certificate of one of the lab's processes (`member` may be
    /// `witness`), for a test that acts as that process.
    pub fn process_tls(
        &self,
        node: &str,
        member: &str,
    ) -> anyhow::Result<services::certs::TlsFiles> {
        services::certs::TlsFiles::of(
            &self
                .dir
                .path()
                .join("work")
                .join("keys")
                .join(node)
                .join(member),
        )
    }

    /// The identity prefix (`--identity`) of one of the lab's clients.
    pub fn identity(&self, client: &str) -> anyhow::Result<PathBuf> {
        self.ready["clients"][client]["identity"]
            .as_str()
            .map(PathBuf::from)
            .with_context(|| format!("client {client} not in the ready line"))
    }

    /// A command for `node` signed by the lab's client `client`, as JSON
    /// to send on `canopy.cmd.<node>`.
    pub fn signed(
        &self,
        client: &str,
        node: &str,
        op: events::CommandOp,
        point: &str,
        value: Option<Json>,
    ) -> anyhow::Result<String> {
        let id = services::keys::ClientIdentity::load(&self.identity(client)?)?;
        let now_ms = services::member::publisher::now_us() / 1000;
        let cmd = services::wire::SignedCommand::sign(&id.key, node, op, point, value, now_ms)?;
        Ok(serde_json::to_string(&cmd)?)
    }

    /// A switchover (handing over `epoch`) or maintenance change asked of
    /// `member` of `node`, signed by the lab's client `client`, as JSON to
    /// send on `canopy.ctl.<node>.<member>`.
    pub fn signed_control(
        &self,
        client: &str,
        node: &str,
        member: &str,
        control: services::wire::Control,
        epoch: Option<u64>,
    ) -> anyhow::Result<String> {
        let id = services::keys::ClientIdentity::load(&self.identity(client)?)?;
        let now_ms = services::member::publisher::now_us() / 1000;
        let c = services::wire::SignedCommand::sign_control(
            &id.key, node, member, control, epoch, now_ms,
        )?;
        Ok(serde_json::to_string(&c)?)
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
        // `CANOPY_KEEP_LAB=1` keeps the lab's data and logs to look at
        // after a failure (the path is printed).
        if std::env::var_os("CANOPY_KEEP_LAB").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("lab: kept {}", self.dir.path().display());
        }
    }
}

/// A process restarted by a test from a ready line's `argv`, killed on Drop.
#[derive(Debug)]
pub struct Respawned {
    child: Child,
}

impl Respawned {
    /// Starts `argv` (a JSON array of strings). Its output is appended to
    /// `member.log` in its `--data` directory, where the lab kept the first
    /// life's log (so `CANOPY_KEEP_LAB=1` shows both); without `--data`
    /// it is discarded.
    pub fn start(argv: &Json) -> anyhow::Result<Respawned> {
        let args: Vec<String> = argv
            .as_array()
            .context("argv is not an array")?
            .iter()
            .map(|a| a.as_str().unwrap_or_default().to_owned())
            .collect();
        let (program, rest) = args.split_first().context("empty argv")?;
        let log = match rest.iter().position(|a| a == "--data") {
            Some(i) if i + 1 < rest.len() => {
                let data = Path::new(&rest[i + 1]);
                std::fs::create_dir_all(data)?;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(data.join("member.log"))?;
                Some(file)
            }
            _ => None,
        };
        let (stdout, stderr) = match log {
            Some(f) => (Stdio::from(f.try_clone()?), Stdio::from(f)),
            None => (Stdio::null(), Stdio::null()),
        };
        let child = Command::new(program)
            .args(rest)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("restarting {args:?}"))?;
        Ok(Respawned { child })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Respawned {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(10));
    }
}
