//! `canopy bench failover`: how long a Modbus pair takes to move its role.
//!
//! Method. A lab (`canopy lab`, real processes) runs a single root and a
//! pair `root.plc` (two members, a witness) polling a PLC simulator every
//! `--poll-ms` with a life-sign register. Each trial finds the active
//! member, notes the wall-clock time, and kills it (SIGKILL) or freezes it
//! (SIGSTOP). Measured from that instant:
//!
//! - **first PLC poll**: the first life-sign write by another client in the
//!   PLC simulator's write log (the new active writes the life sign at the
//!   start of every poll);
//! - **first event at the root**: arrival, at a reader (`crate::pull`) on
//!   the root's replica of the pair's stream, of the first event with a
//!   newer epoch.
//!
//! The killed member is restarted from its ready-line argv (the frozen one
//! is thawed) and the next trial waits until it is standby again. All
//! processes are on one machine: clocks are the same clock.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::StreamExt;
use nix::sys::signal::Signal;
use serde_json::{json, Value as Json};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::tree::{percentiles, WorkDir};
use crate::child::{self, Output};
use crate::cli::BenchFailoverArgs;
use crate::member::publisher::now_us;
use crate::ports;
use crate::wire::MemberInfo;

const PAIR: &str = "root.plc";

fn topology(poll_ms: u64) -> anyhow::Result<String> {
    let (r, a, b, w, plc) = (
        ports::reserve(7)?,
        ports::reserve(7)?,
        ports::reserve(7)?,
        ports::reserve(7)?,
        ports::reserve(1)?,
    );
    Ok(format!(
        r#"[mesh]
name = "bench-failover"
sync = "1s"

[[node]]
id = "root"
members = [{{ name = "a", host = "127.0.0.1", port_base = {r} }}]

[[node]]
id = "{PAIR}"
members = [
  {{ name = "a", host = "127.0.0.1", port_base = {a} }},
  {{ name = "b", host = "127.0.0.1", port_base = {b} }},
]
witness = {{ host = "127.0.0.1", port_base = {w} }}
modbus = {{ address = "127.0.0.1:{plc}", unit = 1, poll_ms = {poll_ms}, timeout_ms = 200, life_sign = "holding:900" }}

[[node.point]]
name = "speed"
source = "modbus"
register = "holding:100"

[[node.point]]
name = "tick"
source = "sim"
sim = {{ kind = "ramp", period_s = 100, min = 0.0, max = 10000.0, every_ms = 10 }}
"#
    ))
}

/// Runs the benchmark; prints the distributions.
pub async fn run(a: BenchFailoverArgs) -> anyhow::Result<u8> {
    let nats = super::tree::nats_bin(&a.common)?;
    let work = WorkDir::new(&a.common, "failover")?;
    let dir = work.path.clone();
    let topo = dir.join("topology.toml");
    std::fs::write(&topo, topology(a.poll_ms)?)?;
    let exe = std::env::current_exe()?;
    let args: Vec<String> = vec![
        "lab".into(),
        "--topology".into(),
        topo.display().to_string(),
        "--workdir".into(),
        dir.join("work").display().to_string(),
        "--nats-server".into(),
        nats.display().to_string(),
    ];
    eprintln!("bench: starting the lab in {}", dir.display());
    let mut lab = child::spawn(&exe, &args, Output::PipedStdout)?;
    let result = async {
        let stdout = lab.stdout.take().context("lab stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .context("the lab did not get ready in 120 s")??
            .context("the lab exited")?;
        let ready: Json = serde_json::from_str(&line)?;
        trials(&a, &ready, &dir.join("work").join("keys")).await
    }
    .await;
    child::stop(&mut lab, Duration::from_secs(20)).await;
    let (kill, stop, on_leader, witness) = result?;
    let summary = |v: &[(f64, f64, bool)]| {
        let mut poll: Vec<f64> = v.iter().map(|x| x.0).collect();
        let mut root: Vec<f64> = v.iter().map(|x| x.1).collect();
        json!({ "first_plc_poll_ms": dist(&mut poll), "first_event_at_root_ms": dist(&mut root), "trials": v.len(),
            "victim_led_the_stream": v.iter().filter(|x| x.2).count() })
    };
    let stalls = |v: &[Witnessed]| {
        let mut ms: Vec<f64> = v.iter().map(|w| w.stall_ms).collect();
        json!({ "append_stall_ms": dist(&mut ms), "role_changes": v.iter().filter(|w| w.role_changed).count(), "trials": v.len() })
    };
    let out = json!({ "poll_ms": a.poll_ms, "sigkill": summary(&kill), "sigstop": summary(&stop),
        "sigkill_stream_leader": summary(&on_leader),
        "witness_sigkill": stalls(&witness.0), "witness_sigstop": stalls(&witness.1) });
    if a.common.json {
        println!("{out}");
    } else {
        println!("failover of a Modbus pair (poll every {} ms), {} trials per fault, times from the fault in ms", a.poll_ms, a.trials);
        println!(
            "{:<10} {:<22} {:>8} {:>8} {:>8}",
            "fault", "until", "p50", "p99", "max"
        );
        for (fault, key) in [
            ("SIGKILL", "sigkill"),
            ("SIGSTOP", "sigstop"),
            ("SIGKILL*", "sigkill_stream_leader"),
        ] {
            for (what, k) in [
                ("first PLC poll", "first_plc_poll_ms"),
                ("first event at root", "first_event_at_root_ms"),
            ] {
                let d = &out[key][k];
                println!(
                    "{:<10} {:<22} {:>8.0} {:>8.0} {:>8.0}",
                    fault,
                    what,
                    d["p50"].as_f64().unwrap_or(0.0),
                    d["p99"].as_f64().unwrap_or(0.0),
                    d["max"].as_f64().unwrap_or(0.0)
                );
            }
        }
        println!(
            "trials where the member hit led the pair's stream at the fault: SIGKILL {}, SIGSTOP {}, SIGKILL* {} of {}",
            out["sigkill"]["victim_led_the_stream"],
            out["sigstop"]["victim_led_the_stream"],
            out["sigkill_stream_leader"]["victim_led_the_stream"],
            on_leader.len()
        );
        println!("(SIGKILL*: the stream's leader moved onto the active's server first, the case the witness's leader keeping avoids)");
        println!("the witness (the pair's stream leaders live there), times from the fault in ms:");
        for (fault, key) in [
            ("SIGKILL", "witness_sigkill"),
            ("SIGSTOP", "witness_sigstop"),
        ] {
            let d = &out[key]["append_stall_ms"];
            println!(
                "{:<10} {:<22} {:>8.0} {:>8.0} {:>8.0}   role changes: {}",
                fault,
                "next event stored",
                d["p50"].as_f64().unwrap_or(0.0),
                d["p99"].as_f64().unwrap_or(0.0),
                d["max"].as_f64().unwrap_or(0.0),
                out[key]["role_changes"]
            );
        }
    }
    Ok(0)
}

fn dist(v: &mut [f64]) -> Json {
    match percentiles(v) {
        Some((p50, p99, max)) => json!({ "p50": p50, "p99": p99, "max": max }),
        None => json!(null),
    }
}

fn member<'a>(ready: &'a Json, node: &str, name: &str) -> anyhow::Result<&'a Json> {
    ready["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["node"] == node && m["member"] == name))
        .with_context(|| format!("{node}/{name} not in the ready line"))
}

/// The member-info reply of pair member `name`, if it answers in `patience`.
async fn info_of(
    client: &async_nats::Client,
    name: &str,
    patience: Duration,
) -> Option<MemberInfo> {
    let subject = events::subjects::member_subject(PAIR, name);
    let msg = tokio::time::timeout(patience, client.request(subject, "".into()))
        .await
        .ok()?
        .ok()?;
    serde_json::from_slice(&msg.payload).ok()
}

async fn role_of(client: &async_nats::Client, name: &str) -> Option<(String, u64)> {
    let v = info_of(client, name, Duration::from_millis(300)).await?;
    Some((v.role, v.epoch))
}

/// Waits until one member is active and the other standby; returns (active, epoch).
async fn settled(client: &async_nats::Client) -> anyhow::Result<(String, u64)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ra, rb) = (role_of(client, "a").await, role_of(client, "b").await);
        match (ra, rb) {
            (Some((x, e)), Some((y, _))) if x == "active" && y == "standby" => {
                return Ok(("a".into(), e))
            }
            (Some((x, _)), Some((y, e))) if x == "standby" && y == "active" => {
                return Ok(("b".into(), e))
            }
            _ if Instant::now() > deadline => bail!("the pair did not settle in 60 s"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Per trial: ms to the first PLC poll, ms to the first event at the
/// root, whether the member hit led the pair's stream.
type Trials = Vec<(f64, f64, bool)>;

/// One fault of the witness: how long until the pair's stream stored an
/// event produced after the fault, and whether the role moved (it should
/// not: losing the witness leaves the two members a quorum).
#[derive(Debug, Clone, Copy)]
struct Witnessed {
    stall_ms: f64,
    role_changed: bool,
}

type WitnessTrials = (Vec<Witnessed>, Vec<Witnessed>);

async fn trials(
    a: &BenchFailoverArgs,
    ready: &Json,
    keys: &std::path::Path,
) -> anyhow::Result<(Trials, Trials, Trials, WitnessTrials)> {
    let root_url = member(ready, "root", "a")?["nats"]
        .as_str()
        .context("root url")?
        .to_owned();
    let client = crate::cmd::lab::connect_as_client(ready, "operator", &root_url).await?;
    let js = async_nats::jetstream::with_domain(client.clone(), "root");
    let log = std::path::PathBuf::from(
        ready["plcs"][0]["write_log"]
            .as_str()
            .context("write log")?,
    );
    let mut restarted: Vec<tokio::process::Child> = Vec::new();
    let mut out = (Vec::new(), Vec::new(), Vec::new());
    // The witness's own identity may move the pair's stream leaders.
    let keeper = witness_client(ready, keys).await?;
    let runs = [
        (Signal::SIGKILL, a.trials, false),
        (Signal::SIGSTOP, a.trials, false),
        (Signal::SIGKILL, a.leader_trials, true),
    ];
    for (fault, n, on_leader) in runs {
        for i in 0..n {
            // Each trial starts from the pair's steady state: the witness
            // leads its stream (it moves the leader there within a second
            // of the lab's start and of every restart).
            wait_witness_leads(&client).await?;
            let (act, epoch) = settled(&client).await?;
            if on_leader {
                lead_from(&keeper, &client, &act).await?;
            }
            let pid = current_pid(&client, &act).await.context("active pid")?;
            let name = events::subjects::stream_name(PAIR);
            let mut replica = js.get_stream(&name).await?;
            let tail = replica.info().await?.state.last_sequence;
            let mut arrivals = crate::pull::from_seq(&js, &name, tail + 1).await?;
            let old_peer = last_writer(&log)?;
            // Where the pair's stream was led at the fault: a kill of the
            // member that leads it costs a JetStream election (4-9 s).
            let led = stream_leader(&client).await.unwrap_or_default();
            let led_by_victim = led.ends_with(&format!("-{act}"));
            // And the pair's raft leader: a kill of the member that leads
            // raft adds an election before the grace can run out.
            let raft_leader = info_of(&client, &act, Duration::from_millis(300))
                .await
                .and_then(|i| i.leader)
                .unwrap_or_default();
            let t0 = now_us();
            crate::child::signal_pid(pid, fault);
            let root_us = async {
                while let Some(Ok(m)) = arrivals.next().await {
                    if events::decode(&m.payload)
                        .map(|e| e.epoch > epoch)
                        .unwrap_or(false)
                    {
                        return Ok(now_us());
                    }
                }
                bail!("the replica read ended")
            };
            let root_us = tokio::time::timeout(Duration::from_secs(60), root_us)
                .await
                .context("no new epoch at the root in 60 s")??;
            let poll_us = first_write_by_other(&log, &old_peer, t0).await?;
            let r = (
                (poll_us.saturating_sub(t0)) as f64 / 1000.0,
                (root_us.saturating_sub(t0)) as f64 / 1000.0,
                led_by_victim,
            );
            eprintln!(
                "bench: {fault:?} trial {}/{n} of {act}: first poll {:.0} ms, first event at root {:.0} ms (stream leader {led}, raft leader {raft_leader})",
                i + 1,
                r.0,
                r.1
            );
            if fault == Signal::SIGKILL {
                if on_leader {
                    out.2.push(r);
                } else {
                    out.0.push(r);
                }
                let argv: Vec<String> = member(ready, PAIR, &act)?["argv"]
                    .as_array()
                    .context("argv")?
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect();
                let (prog, rest) = argv.split_first().context("empty argv")?;
                let log_file = std::env::temp_dir()
                    .join(format!("canopy-bench-restart-{}.log", std::process::id()));
                restarted.push(child::spawn(
                    std::path::Path::new(prog),
                    rest,
                    Output::File(log_file),
                )?);
            } else {
                out.1.push(r);
                crate::child::signal_pid(pid, Signal::SIGCONT);
            }
        }
    }
    let mut witness = (Vec::new(), Vec::new());
    for fault in [Signal::SIGKILL, Signal::SIGSTOP] {
        for i in 0..a.witness_trials {
            // Each trial starts with the witness leading the streams (the
            // keeper moves them back within a second of its restart, and
            // after a member trial that left them on a member).
            wait_witness_leads(&client).await?;
            let (_, epoch) = settled(&client).await?;
            let pid = current_pid(&client, "witness")
                .await
                .context("witness pid")?;
            let name = events::subjects::stream_name(PAIR);
            let mut replica = js.get_stream(&name).await?;
            let tail = replica.info().await?.state.last_sequence;
            let mut arrivals = crate::pull::from_seq(&js, &name, tail + 1).await?;
            let t0 = now_us();
            crate::child::signal_pid(pid, fault);
            let stored = async {
                while let Some(m) = arrivals.next().await {
                    let Ok(m) = m else { continue };
                    if events::decode(&m.payload)
                        .map(|e| e.ts > t0)
                        .unwrap_or(false)
                    {
                        return Ok(now_us());
                    }
                }
                bail!("the replica read ended")
            };
            let stored = tokio::time::timeout(Duration::from_secs(60), stored)
                .await
                .context("no event stored in 60 s after the witness fault")??;
            let (_, after) = settled(&client).await?;
            let w = Witnessed {
                stall_ms: stored.saturating_sub(t0) as f64 / 1000.0,
                role_changed: after != epoch,
            };
            eprintln!(
                "bench: witness {fault:?} trial {}/{}: next event stored after {:.0} ms, role {}",
                i + 1,
                a.witness_trials,
                w.stall_ms,
                if w.role_changed { "MOVED" } else { "kept" }
            );
            if fault == Signal::SIGKILL {
                witness.0.push(w);
                let argv: Vec<String> = member(ready, PAIR, "witness")?["argv"]
                    .as_array()
                    .context("argv")?
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect();
                let (prog, rest) = argv.split_first().context("empty argv")?;
                let log_file = std::env::temp_dir()
                    .join(format!("canopy-bench-witness-{}.log", std::process::id()));
                restarted.push(child::spawn(
                    std::path::Path::new(prog),
                    rest,
                    Output::File(log_file),
                )?);
            } else {
                witness.1.push(w);
                crate::child::signal_pid(pid, Signal::SIGCONT);
            }
        }
    }
    for mut c in restarted {
        child::stop(&mut c, Duration::from_secs(10)).await;
    }
    Ok((out.0, out.1, out.2, witness))
}

/// A connection to the pair's witness server as the witness (whose rights
/// include moving the pair's stream leaders).
async fn witness_client(
    ready: &Json,
    keys: &std::path::Path,
) -> anyhow::Result<async_nats::Client> {
    let url = member(ready, PAIR, "witness")?["nats"]
        .as_str()
        .context("witness url")?;
    let tls = if url.starts_with("tls://") {
        Some(crate::certs::TlsFiles::of(
            &keys.join(PAIR).join("witness"),
        )?)
    } else {
        None
    };
    crate::nats::options(tls.as_ref())
        .connect(url)
        .await
        .with_context(|| format!("connecting to the witness at {url}"))
}

/// Moves the pair's stream leader onto member `act`'s server and waits
/// until JetStream reports it there.
async fn lead_from(
    keeper: &async_nats::Client,
    client: &async_nats::Client,
    act: &str,
) -> anyhow::Result<()> {
    let domain = events::subjects::domain(PAIR);
    let target = format!("{domain}-{act}");
    let name = events::subjects::stream_name(PAIR);
    let keeper = async_nats::jetstream::with_domain(keeper.clone(), &domain);
    crate::wait::wait_for(
        "the pair's stream leader on the active's server",
        Duration::from_secs(30),
        || async {
            if stream_leader(client).await.as_deref() == Some(target.as_str()) {
                return Ok(Some(()));
            }
            let _ = crate::ha::step_down_to(&keeper, &name, &target).await;
            Ok(None)
        },
    )
    .await
}

/// The server that leads the pair's stream, as JetStream reports it.
async fn stream_leader(client: &async_nats::Client) -> Option<String> {
    let pair_js =
        async_nats::jetstream::with_domain(client.clone(), events::subjects::domain(PAIR));
    let s = pair_js
        .get_stream(events::subjects::stream_name(PAIR))
        .await
        .ok()?;
    s.cached_info().cluster.as_ref()?.leader.clone()
}

/// Waits until the witness answers and leads the pair's stream again.
async fn wait_witness_leads(client: &async_nats::Client) -> anyhow::Result<()> {
    crate::wait::wait_for(
        "the witness leading the pair's stream",
        Duration::from_secs(120),
        || async {
            if info_of(client, "witness", Duration::from_millis(300))
                .await
                .is_none()
            {
                return Ok(None);
            }
            let leader = stream_leader(client).await;
            Ok(leader.filter(|l| l.ends_with("-witness")).map(|_| ()))
        },
    )
    .await
}

async fn current_pid(client: &async_nats::Client, name: &str) -> Option<u32> {
    Some(info_of(client, name, Duration::from_millis(500)).await?.pid)
}

fn entries(log: &std::path::Path) -> anyhow::Result<Vec<Json>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

fn last_writer(log: &std::path::Path) -> anyhow::Result<String> {
    Ok(entries(log)?
        .last()
        .and_then(|e| e["peer"].as_str().map(str::to_owned))
        .unwrap_or_default())
}

async fn first_write_by_other(
    log: &std::path::Path,
    old: &str,
    after_us: u64,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = entries(log)?.into_iter().find(|e| {
            e["peer"].as_str() != Some(old) && e["ts_us"].as_u64().is_some_and(|t| t >= after_us)
        });
        if let Some(e) = found {
            return e["ts_us"].as_u64().context("ts_us");
        }
        if Instant::now() > deadline {
            bail!("no PLC write by the new active in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
