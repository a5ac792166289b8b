//! Faults injected into real processes by the fault campaign
//! (`canopy bench faults`) and the cluster tests: signals, and per-process
//! network cuts on loopback.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context as _};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Sends a signal to a process; false when it does not exist.
pub fn kill(pid: u32, sig: Signal) -> bool {
    nix::sys::signal::kill(Pid::from_raw(pid as i32), sig).is_ok()
}

/// A real per-process network fault on loopback: the processes are moved
/// into their own cgroup (v2) and iptables drops their TCP packets to or
/// from chosen ports. Everything is undone on Drop, also when a test or a
/// benchmark fails.
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
