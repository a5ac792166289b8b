//! Applying one fault of a schedule to the running tree, and healing it:
//! signals, restarts, a wiped leaf, link cuts and a slow PLC link, each on
//! a process no other fault of the schedule is acting on.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::plan::{Fault, Kind, Links, Role};
use super::{info, proxy, Proc, LEAF, PAIRS};
use crate::child::{self, Output};
use crate::faults::NetFault;

/// What a fault task needs.
pub(super) struct FaultCtx {
    pub(super) topo: topology::Topology,
    pub(super) procs: Arc<Mutex<BTreeMap<(String, String), Proc>>>,
    pub(super) restarted: Arc<Mutex<Vec<tokio::process::Child>>>,
    pub(super) writers: proxy::Writers,
    /// Writers killed, recorded before the signal (the proxy names a
    /// connection of a writer that died before it looked by these).
    pub(super) ended: proxy::Ended,
    pub(super) root: async_nats::Client,
    pub(super) delay: proxy::Delay,
    /// Processes a fault is acting on (a second fault on one skips).
    pub(super) busy: Arc<Mutex<std::collections::BTreeSet<(String, String)>>>,
    /// Wipes of the leaf: when, and how far its parent's replica reached.
    pub(super) wiped: Arc<Mutex<Vec<Wiped>>>,
}

/// A wipe of the leaf's disk: what its parent held of it at that moment.
/// A single node has nothing but its disk and its parent's copy: events it
/// had acknowledged but not yet handed to its parent are lost with the
/// disk (reported as such, not as a violation).
#[derive(Debug, Clone, Copy)]
pub struct Wiped {
    /// When the leaf was killed, µs since the Unix epoch.
    pub at_us: u64,
    /// The last seq of the leaf its parent held then.
    pub parent_tail: u64,
}

impl FaultCtx {
    /// Applies `f`, waits its duration, heals it. `Err`: skipped, why.
    pub(super) async fn apply(&self, f: Fault) -> Result<(), String> {
        let pair = PAIRS[f.pair];
        let hold = Duration::from_millis(f.for_ms);
        match f.kind {
            Kind::SlowPlc => {
                // Requests a little late (within the lease's margin), the
                // PLC's answers very late (beyond the device timeout).
                self.delay
                    .set(Duration::from_millis(20), Duration::from_millis(400));
                tokio::time::sleep(hold).await;
                self.delay.set(Duration::ZERO, Duration::ZERO);
                Ok(())
            }
            Kind::WipeLeaf => {
                let p = self.claim(LEAF, "a")?;
                let out = self.wipe(&p, hold).await;
                self.release(&p);
                out
            }
            Kind::Kill(role) => {
                let p = self.claim_role(pair, role).await?;
                if let Ok(mut e) = self.ended.lock() {
                    e.push((p.pid, crate::member::publisher::now_us()));
                }
                signal(p.pid, Signal::SIGKILL);
                gone(p.pid).await;
                tokio::time::sleep(hold).await;
                let out = self.restart(&p);
                self.release(&p);
                out
            }
            Kind::Freeze(role) => {
                let p = self.claim_role(pair, role).await?;
                let frozen = child::Frozen::new(&[p.pid]);
                tokio::time::sleep(hold).await;
                drop(frozen);
                self.release(&p);
                Ok(())
            }
            Kind::KillNats(role) | Kind::FreezeNats(role) => {
                let p = self.claim_role(pair, role).await?;
                let out = match info(&self.root, &p.node, &p.member)
                    .await
                    .and_then(|i| i.nats_pid)
                {
                    Some(nats) if matches!(f.kind, Kind::KillNats(_)) => {
                        signal(nats, Signal::SIGKILL);
                        tokio::time::sleep(hold).await;
                        Ok(())
                    }
                    Some(nats) => {
                        let frozen = child::Frozen::new(&[nats]);
                        tokio::time::sleep(hold).await;
                        drop(frozen);
                        Ok(())
                    }
                    None => Err(format!("{}/{}: no nats-server pid", p.node, p.member)),
                };
                self.release(&p);
                out
            }
            Kind::Cut(role, links) => {
                let p = self.claim_role(pair, role).await?;
                let out = self.cut(&p, links, hold).await;
                self.release(&p);
                out
            }
        }
    }

    fn claim(&self, node: &str, member: &str) -> Result<Proc, String> {
        let key = (node.to_owned(), member.to_owned());
        let mut busy = self.busy.lock().map_err(|e| e.to_string())?;
        if !busy.insert(key.clone()) {
            return Err(format!("{node}/{member} is already under a fault"));
        }
        self.procs
            .lock()
            .map_err(|e| e.to_string())?
            .get(&key)
            .cloned()
            .ok_or_else(|| format!("{node}/{member} unknown"))
    }

    fn release(&self, p: &Proc) {
        if let Ok(mut b) = self.busy.lock() {
            b.remove(&(p.node.clone(), p.member.clone()));
        }
    }

    /// The process of `pair` in `role` right now.
    async fn claim_role(&self, pair: &str, role: Role) -> Result<Proc, String> {
        let member = match role {
            Role::Witness => "witness".to_owned(),
            Role::Active | Role::Standby => {
                let a = info(&self.root, pair, "a").await;
                let b = info(&self.root, pair, "b").await;
                let active = match (&a, &b) {
                    (Some(x), _) if x.role == "active" => "a",
                    (_, Some(y)) if y.role == "active" => "b",
                    _ => return Err(format!("{pair}: no member answers as active")),
                };
                match role {
                    Role::Active => active.to_owned(),
                    _ => if active == "a" { "b" } else { "a" }.to_owned(),
                }
            }
        };
        self.claim(pair, &member)
    }

    /// Starts `p` again from its argv, logging where it logged.
    fn restart(&self, p: &Proc) -> Result<(), String> {
        let (prog, rest) = p.argv.split_first().ok_or("empty argv")?;
        let c = child::spawn(
            Path::new(prog),
            rest,
            Output::File(p.data.join("member.log")),
        )
        .map_err(|e| format!("restarting {}/{}: {e:#}", p.node, p.member))?;
        let pid = c.id().unwrap_or(0);
        if let Ok(mut r) = self.restarted.lock() {
            r.push(c);
        }
        if p.node == PAIRS[0] {
            if let Ok(mut w) = self.writers.lock() {
                w.insert(pid, p.member.clone());
            }
        }
        if let Ok(mut procs) = self.procs.lock() {
            if let Some(entry) = procs.get_mut(&(p.node.clone(), p.member.clone())) {
                entry.pid = pid;
            }
        }
        Ok(())
    }

    async fn wipe(&self, p: &Proc, hold: Duration) -> Result<(), String> {
        signal(p.pid, Signal::SIGKILL);
        let at_us = crate::member::publisher::now_us();
        gone(p.pid).await;
        let parent = self
            .topo
            .parent(&p.node)
            .map(|n| n.id.clone())
            .unwrap_or_default();
        let js = async_nats::jetstream::with_domain(
            self.root.clone(),
            events::subjects::domain(&parent),
        );
        let parent_tail = match js.get_stream(events::subjects::stream_name(&p.node)).await {
            Ok(mut s) => s.info().await.map(|i| i.state.last_sequence).unwrap_or(0),
            Err(_) => 0,
        };
        if let Ok(mut w) = self.wiped.lock() {
            w.push(Wiped { at_us, parent_tail });
        }
        // Its nats-server dies with it (parent-death signal); wait until its
        // store is no longer written before wiping it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::fs::remove_dir_all(&p.data)
            .map_err(|e| format!("wiping {}: {e}", p.data.display()))?;
        std::fs::create_dir_all(&p.data).map_err(|e| e.to_string())?;
        tokio::time::sleep(hold).await;
        self.restart(p)
    }

    /// Cuts `p`'s raft and/or NATS cluster links to the other two
    /// processes of its pair (both ways), for `hold`.
    async fn cut(&self, p: &Proc, links: Links, hold: Duration) -> Result<(), String> {
        let node = self.topo.node(&p.node).ok_or("pair not in the topology")?;
        let mut pids = vec![p.pid];
        if matches!(links, Links::Nats | Links::Both) {
            if let Some(nats) = info(&self.root, &p.node, &p.member)
                .await
                .and_then(|i| i.nats_pid)
            {
                pids.push(nats);
            }
        }
        let mut mine = Vec::new();
        let mut theirs = Vec::new();
        for (name, ep) in node.processes() {
            let ports = ep.ports;
            let chosen: Vec<u16> = match links {
                Links::Raft => vec![ports.raft],
                Links::Nats => vec![ports.cluster],
                Links::Both => vec![ports.raft, ports.cluster],
            };
            if name == p.member {
                mine.extend(chosen);
            } else {
                theirs.extend(chosen);
            }
        }
        let mut fault = NetFault::new(&pids).map_err(|e| format!("{e:#}"))?;
        fault.drop_to(&theirs).map_err(|e| format!("{e:#}"))?;
        fault.drop_from(&mine).map_err(|e| format!("{e:#}"))?;
        tokio::time::sleep(hold).await;
        fault.heal();
        Ok(())
    }
}

fn signal(pid: u32, sig: Signal) {
    child::signal_pid(pid, sig);
}

/// Waits (up to 10 s) until `pid` is gone.
async fn gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while child::signal_pid(pid, Signal::SIGCONT) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
