//! `canopy autoscale`: local `canopy query` workers, started and stopped
//! against a response-time target.
//!
//! Each worker reports every query it answers on its stdout (handler time
//! and the wait before it, `canopy query --report`); every `--every` the
//! autoscaler takes the window's p90 of wait + handler and asks the
//! [`Scaler`] what to do. The decision is pure (tested below):
//!
//! - over target: add a worker, unless at `--max` (the cost ceiling), or
//!   the last worker added did not help (neither the p90 fell nor the
//!   throughput rose by a tenth: on a machine whose cores are busy another
//!   process only shares them), in which case that worker is stopped again
//!   and no more are added until the load rises by a quarter;
//! - well under target (below half) for three windows, or idle: stop one,
//!   down to `--min`.
//!
//! Every decision is printed with its reason. Workers die with the
//! autoscaler (`PR_SET_PDEATHSIG`, [`crate::child`]), also on SIGKILL.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;

use crate::cli::AutoscaleArgs;

/// A window's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Queries answered in it.
    pub answered: usize,
    /// Answered per second.
    pub rate: f64,
    /// Median response time (wait + handler), ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
}

/// What to do after a window.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Start one more worker.
    Add(String),
    /// Stop the newest worker.
    Remove(String),
    /// Keep the workers as they are.
    Hold(String),
}

/// The scaling policy (module doc).
#[derive(Debug)]
pub struct Scaler {
    target_ms: f64,
    min: usize,
    max: usize,
    /// The window before the last add, to judge it by.
    judging: Option<Window>,
    /// Workers and rate at which another worker did not help.
    plateau: Option<(usize, f64)>,
    /// Windows in a row well under target or idle.
    calm: u32,
}

/// How long a stopped worker may take to answer the queries it holds
/// (each is bounded by `QUERY_TIMEOUT_MS`) before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Windows well under target before a worker is stopped.
const CALM_WINDOWS: u32 = 3;

impl Scaler {
    /// A policy for `target_ms` between `min` and `max` workers.
    pub fn new(target_ms: f64, min: usize, max: usize) -> Scaler {
        Scaler {
            target_ms,
            min: min.max(1),
            max: max.max(min.max(1)),
            judging: None,
            plateau: None,
            calm: 0,
        }
    }

    /// The decision after window `w` with `workers` running.
    pub fn decide(&mut self, workers: usize, w: &Window) -> Decision {
        if let Some(before) = self.judging.take() {
            let helped = w.p90_ms < before.p90_ms * 0.9 || w.rate > before.rate * 1.1;
            if !helped && workers > self.min && w.answered > 0 {
                self.plateau = Some((workers, w.rate));
                return Decision::Remove(format!(
                    "worker {workers} did not help (p90 {:.1} -> {:.1} ms, {:.1} -> {:.1} queries/s): another worker no longer helps at this load",
                    before.p90_ms, w.p90_ms, before.rate, w.rate
                ));
            }
        }
        if w.answered == 0 || w.p90_ms < self.target_ms / 2.0 {
            self.calm += 1;
            if self.calm >= CALM_WINDOWS && workers > self.min {
                self.calm = 0;
                self.plateau = None;
                return Decision::Remove(format!(
                    "{} for {CALM_WINDOWS} windows",
                    if w.answered == 0 {
                        "idle".to_owned()
                    } else {
                        format!("p90 under half the {:.0} ms target", self.target_ms)
                    }
                ));
            }
            return Decision::Hold("under target".into());
        }
        self.calm = 0;
        if w.p90_ms <= self.target_ms {
            return Decision::Hold("within target".into());
        }
        if workers >= self.max {
            return Decision::Hold(format!(
                "over target, at the ceiling of --max {} workers",
                self.max
            ));
        }
        if let Some((n, rate)) = self.plateau {
            if workers + 1 >= n && w.rate < rate * 1.25 {
                return Decision::Hold(format!(
                    "over target, but worker {n} did not help at this load ({rate:.1} queries/s): the machine, not the workers, is the limit"
                ));
            }
            self.plateau = None;
        }
        self.judging = Some(*w);
        Decision::Add(format!(
            "p90 {:.1} ms over the {:.0} ms target",
            w.p90_ms, self.target_ms
        ))
    }
}

/// One worker's report line.
#[derive(Debug, serde::Deserialize)]
struct Report {
    handler_us: u64,
    queued_us: u64,
}

struct Worker {
    name: String,
    child: tokio::process::Child,
}

/// `canopy autoscale`.
pub async fn run(a: AutoscaleArgs) -> anyhow::Result<u8> {
    if a.target_ms <= 0.0 {
        anyhow::bail!("--target-ms must be above 0");
    }
    if a.max == 0 || a.min > a.max {
        anyhow::bail!(
            "--max must be at least 1 and at least --min ({} > {})",
            a.min,
            a.max
        );
    }
    let cancel = super::shutdown_token()?;
    let exe = std::env::current_exe().context("finding the canopy binary")?;
    let (tx, mut rx) = mpsc::unbounded_channel::<f64>();
    let mut workers: Vec<Worker> = Vec::new();
    let mut next_id = 1;
    let mut scaler = Scaler::new(a.target_ms, a.min, a.max);
    let start = |id: usize| -> anyhow::Result<Worker> {
        let name = format!("{}-w{id}", std::process::id());
        let mut args = vec![
            "query".to_owned(),
            "--node".into(),
            a.node.clone(),
            "--server".into(),
            a.server.server.clone(),
            "--name".into(),
            name.clone(),
            "--report".into(),
        ];
        if let Some(i) = &a.server.identity {
            args.extend(["--identity".into(), i.display().to_string()]);
        }
        let mut child = crate::child::spawn(&exe, &args, crate::child::Output::PipedStdout)?;
        let stdout = child.stdout.take().context("a worker's stdout")?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(r) = serde_json::from_str::<Report>(&line) {
                    let _ = tx.send((r.handler_us + r.queued_us) as f64 / 1000.0);
                }
            }
        });
        Ok(Worker { name, child })
    };
    let say = |t: f64, workers: usize, w: &Window, what: &str, why: &str| {
        if a.json {
            println!(
                "{}",
                serde_json::json!({"t_s": t, "workers": workers, "answered": w.answered,
                    "rate": w.rate, "p50_ms": w.p50_ms, "p90_ms": w.p90_ms,
                    "target_ms": a.target_ms, "decision": what, "reason": why})
            );
        } else {
            println!(
                "t={t:>6.1}s workers={workers} answered={} ({:.1}/s) p50={:.1}ms p90={:.1}ms target={}ms: {what} ({why})",
                w.answered, w.rate, w.p50_ms, w.p90_ms, a.target_ms
            );
        }
    };
    for _ in 0..scaler.min {
        workers.push(start(next_id)?);
        next_id += 1;
    }
    eprintln!(
        "autoscale: {} worker(s) for {} (target p90 {} ms, at most {})",
        workers.len(),
        a.node,
        a.target_ms,
        a.max
    );
    let began = Instant::now();
    let mut tick = tokio::time::interval(a.every);
    tick.tick().await;
    let mut window: Vec<f64> = Vec::new();
    let mut window_start = Instant::now();
    let code = loop {
        tokio::select! {
            _ = cancel.cancelled() => break 0,
            Some(ms) = rx.recv() => window.push(ms),
            _ = tick.tick() => {
                // A worker that died is replaced by the next decision.
                let mut died = Vec::new();
                workers.retain_mut(|w| match w.child.try_wait() {
                    Ok(Some(status)) => {
                        died.push(format!("{} exited ({status})", w.name));
                        false
                    }
                    _ => true,
                });
                for d in died {
                    eprintln!("autoscale: {d}");
                }
                let secs = window_start.elapsed().as_secs_f64().max(1e-3);
                let w = summarise(&mut window, secs);
                window.clear();
                window_start = Instant::now();
                let t = began.elapsed().as_secs_f64();
                if workers.len() < scaler.min {
                    workers.push(start(next_id)?);
                    next_id += 1;
                    say(t, workers.len(), &w, "added", "below --min");
                    continue;
                }
                match scaler.decide(workers.len(), &w) {
                    Decision::Add(why) => {
                        workers.push(start(next_id)?);
                        next_id += 1;
                        say(t, workers.len(), &w, "added", &why);
                    }
                    Decision::Remove(why) => {
                        // It answers what it holds before it goes (in the
                        // background: the decisions go on meanwhile).
                        if let Some(mut last) = workers.pop() {
                            tokio::spawn(async move {
                                crate::child::stop(&mut last.child, STOP_GRACE).await;
                            });
                        }
                        say(t, workers.len(), &w, "removed", &why);
                    }
                    Decision::Hold(why) => say(t, workers.len(), &w, "held", &why),
                }
            }
        }
    };
    let stops = workers.into_iter().map(|mut w| async move {
        crate::child::stop(&mut w.child, STOP_GRACE).await;
    });
    futures::future::join_all(stops).await;
    eprintln!("autoscale: stopped");
    Ok(code)
}

/// The window's figures from its response times (ms; sorted in place).
fn summarise(times: &mut [f64], secs: f64) -> Window {
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if times.is_empty() {
            0.0
        } else {
            times[((times.len() as f64 - 1.0) * p).round() as usize]
        }
    };
    Window {
        answered: times.len(),
        rate: times.len() as f64 / secs,
        p50_ms: pct(0.5),
        p90_ms: pct(0.9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(answered: usize, rate: f64, p90_ms: f64) -> Window {
        Window {
            answered,
            rate,
            p50_ms: p90_ms / 2.0,
            p90_ms,
        }
    }

    #[test]
    fn it_adds_while_over_target_and_stops_at_the_ceiling() {
        let mut s = Scaler::new(50.0, 1, 3);
        assert!(matches!(s.decide(1, &w(10, 5.0, 200.0)), Decision::Add(_)));
        // The second worker helped (p90 down by more than a tenth).
        assert!(matches!(s.decide(2, &w(20, 10.0, 120.0)), Decision::Add(_)));
        assert!(
            matches!(s.decide(3, &w(30, 15.0, 80.0)), Decision::Hold(r) if r.contains("--max 3"))
        );
    }

    #[test]
    fn a_worker_that_did_not_help_is_stopped_and_no_more_are_added_at_that_load() {
        let mut s = Scaler::new(50.0, 1, 8);
        assert!(matches!(s.decide(1, &w(10, 5.0, 200.0)), Decision::Add(_)));
        // Two workers answer no faster: the machine is the limit.
        let d = s.decide(2, &w(10, 5.1, 195.0));
        assert!(
            matches!(&d, Decision::Remove(r) if r.contains("no longer helps")),
            "{d:?}"
        );
        let d = s.decide(1, &w(10, 5.0, 200.0));
        assert!(
            matches!(&d, Decision::Hold(r) if r.contains("did not help")),
            "{d:?}"
        );
        // A quarter more load: worth trying again.
        assert!(matches!(s.decide(1, &w(20, 7.0, 300.0)), Decision::Add(_)));
    }

    #[test]
    fn calm_or_idle_windows_stop_workers_down_to_the_minimum() {
        let mut s = Scaler::new(50.0, 1, 4);
        for _ in 0..CALM_WINDOWS - 1 {
            assert!(matches!(s.decide(3, &w(10, 5.0, 10.0)), Decision::Hold(_)));
        }
        assert!(matches!(
            s.decide(3, &w(10, 5.0, 10.0)),
            Decision::Remove(_)
        ));
        for _ in 0..CALM_WINDOWS * 2 {
            assert!(!matches!(s.decide(1, &w(0, 0.0, 0.0)), Decision::Remove(_)));
        }
        assert!(
            matches!(s.decide(1, &w(10, 5.0, 40.0)), Decision::Hold(r) if r == "within target")
        );
    }

    #[test]
    fn summary_percentiles() {
        let mut t: Vec<f64> = (1..=10).map(f64::from).collect();
        let w = summarise(&mut t, 2.0);
        assert_eq!(w.answered, 10);
        assert_eq!(w.rate, 5.0);
        assert_eq!(w.p90_ms, 9.0);
    }
}
