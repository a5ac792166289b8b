//! The node's materialised state: the fold of its local streams.
//!
//! One feeder task per local stream (the node's own, and one replica per
//! descendant origin) reads it in order from the start and sends verified
//! events to the single owner of the [`events::State`]. The owner publishes
//! a copy of the state at most every [`PUBLISH_EVERY`]; a separate
//! responder answers state requests on `canopy.state.<node>` from the
//! latest copy, through a bounded queue ([`REQUESTS`], requests beyond it
//! are dropped and counted), so a flood of requests never holds the fold
//! back. Because the state is derived only from what the local streams
//! hold, a restarted node rebuilds exactly the same state by reading them
//! again.
//!
//! A fold never stops silently: an origin whose stream goes on with
//! [`STALL_AFTER`] or more messages that are not the next event of its
//! chain is a `fold_stalled` trouble (member info, `canopy status`) and its
//! points are shown `uncertain` in the state reply until it folds again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::Context;
use async_nats::Client;
use events::{Applied, EpochGate, Event, Gated, Hash, Mark, Position, Snapshot, State};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use crate::wire::{StateReply, StateRequest, TroubleKind};

/// Bound of the feeders → owner queue; a full queue holds the feeders back
/// (JetStream keeps the events, nothing is dropped).
const QUEUE: usize = 4096;
/// How often, at most, the owner hands a copy of the state to the
/// responder (a copy per event would cost more than the fold at a busy
/// root); a reply is at most this much older than the fold.
const PUBLISH_EVERY: Duration = Duration::from_millis(50);
/// State requests waiting for the responder. Beyond it a request is
/// dropped (the asker times out) and counted in `state_requests_dropped`.
const REQUESTS: usize = 256;
/// Messages in a row, after an origin's last valid event, that make its
/// fold a `fold_stalled` trouble. One or two are what a deposed member's
/// late appends or a stray publish leave; the origin's next event then
/// chains over them and the trouble clears.
const STALL_AFTER: u64 = 3;

/// A snapshot is written after this many stream messages were folded...
const SNAPSHOT_EVERY_EVENTS: u64 = 100_000;
/// ...or this long after the last one if anything was folded since, and on
/// stop.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(30);
/// How long a restoring member tries to check a snapshot's positions
/// against streams that are still coming up (a pair's R3 streams need a
/// leader) before it folds those origins again from the start.
const CHECK_PATIENCE: Duration = Duration::from_secs(10);

/// The snapshot file in a member's data directory.
pub fn snapshot_path(data: &Path) -> PathBuf {
    data.join("state.snapshot")
}

enum Feed {
    /// A valid event at its stream sequence, with the hash of its bytes.
    Event(Box<Event>, Hash),
    /// A foreign message occupies `seq` of `origin`'s stream; why it is
    /// not the next event of the chain.
    Foreign {
        origin: String,
        seq: u64,
        why: String,
    },
    /// The event at `seq` of `origin` is held: its epoch is not opened yet
    /// ([`EpochGate`]).
    Held { origin: String, seq: u64 },
}

/// What the fold needs to know.
#[derive(Debug)]
pub struct Fold {
    /// Connection to the member's own server (state requests).
    pub client: Client,
    /// Its JetStream (the node's domain).
    pub js: Context,
    /// The node.
    pub node: String,
    /// The member (named in state replies).
    pub member: String,
    /// The node's own origin and every descendant's: one local stream each.
    pub origins: Vec<String>,
    /// Where to keep the state snapshot; `None`: none (fold from the start).
    pub snapshot: Option<PathBuf>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The last valid event of the node's own origin folded so far: where
    /// an activation's publisher starts its walk to the chain head.
    pub own_mark: watch::Sender<Option<Mark>>,
    /// Told the nonce of every signed command of the node's own origin
    /// folded, so a member that takes over knows what was served before.
    pub authority: Option<Arc<super::authority::Authority>>,
}

/// Restores from the snapshot where the streams confirm it, starts the
/// feeders and the owner; returns when the owner stops (after writing a
/// last snapshot).
pub async fn run(f: Fold, cancel: CancellationToken) -> anyhow::Result<()> {
    let started = Instant::now();
    let (mut state, mut positions) = restore(&f).await;
    let restored = positions.len();
    f.own_mark
        .send_replace(positions.get(&f.node).and_then(|p| p.mark));
    let (tx, mut rx) = mpsc::channel(QUEUE);
    for origin in &f.origins {
        let pos = positions.get(origin).copied().unwrap_or_default();
        let gate = EpochGate::after(
            origin,
            pos.mark,
            super::authority::opener(f.authority.as_ref(), origin),
        );
        tokio::spawn(feeder(
            f.js.clone(),
            origin.clone(),
            pos,
            gate,
            tx.clone(),
            f.metrics.clone(),
            cancel.clone(),
        ));
    }
    drop(tx);
    let requests = f
        .client
        .queue_subscribe(
            events::subjects::state_subject(&f.node),
            "canopy-state".to_owned(),
        )
        .await
        .context("subscribing to state requests")?;
    let (view_tx, view_rx) = watch::channel(View::default());
    let responder = tokio::spawn(respond(
        f.client.clone(),
        requests,
        view_rx,
        f.node.clone(),
        f.member.clone(),
        f.metrics.clone(),
        cancel.clone(),
    ));
    let mut writer = SnapshotWriter::new(&f);
    // Origins whose fold stalled, with why.
    let mut stalled: BTreeMap<String, String> = BTreeMap::new();
    if restored > 0 {
        tracing::info!(
            "state restored from {} for {restored} of {} origins in {:?}",
            f.snapshot
                .as_deref()
                .map(Path::display)
                .map(|d| d.to_string())
                .unwrap_or_default(),
            f.origins.len(),
            started.elapsed()
        );
    }
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    tick.tick().await;
    let mut publish = tokio::time::interval(PUBLISH_EVERY);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = true;
    loop {
        tokio::select! {
            feed = rx.recv() => {
                match feed {
                    Some(Feed::Event(ev, hash)) => {
                        if let Applied::Gap { .. } = state.apply(&ev) {
                            f.metrics.gaps.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(origin = %ev.origin, seq = ev.seq, "gap in the fold");
                        }
                        let pos = positions.entry(ev.origin.clone()).or_default();
                        pos.read = ev.seq;
                        pos.mark = Some(Mark { seq: ev.seq, epoch: ev.epoch, hash });
                        if ev.origin == f.node {
                            if let (Some(a), events::Body::Command(b)) = (&f.authority, &ev.body) {
                                a.observe(b);
                            }
                            f.own_mark.send_replace(pos.mark);
                        }
                        if stalled.remove(&ev.origin).is_some() {
                            f.metrics.troubles.clear(&ev.origin, TroubleKind::FoldStalled);
                            tracing::info!(origin = %ev.origin, seq = ev.seq, "folding again");
                        }
                    }
                    Some(Feed::Held { origin, seq }) => {
                        // Not folded, not stepped over: the position stays
                        // before it (a restart reads it again).
                        let after = positions.get(&origin).and_then(|p| p.mark).map(|m| m.seq).unwrap_or(0);
                        if seq.saturating_sub(after) >= STALL_AFTER && !stalled.contains_key(&origin) {
                            let reason = format!(
                                "held back since seq {}: its epoch is not opened by a checkpoint signed with a manifest key of {origin}",
                                after + 1
                            );
                            tracing::error!(%origin, "{reason}");
                            f.metrics.troubles.set(&origin, TroubleKind::FoldStalled, after + 1, reason.clone());
                            stalled.insert(origin, reason);
                        }
                        continue;
                    }
                    Some(Feed::Foreign { origin, seq, why }) => {
                        state.skip(&origin, seq);
                        let pos = positions.entry(origin.clone()).or_default();
                        pos.read = seq;
                        let after = pos.mark.map(|m| m.seq).unwrap_or(0);
                        if seq.saturating_sub(after) >= STALL_AFTER && !stalled.contains_key(&origin) {
                            let reason = format!("not folded since seq {}: {why}", after + 1);
                            tracing::error!(%origin, "{reason}");
                            f.metrics.troubles.set(&origin, TroubleKind::FoldStalled, after + 1, reason.clone());
                            stalled.insert(origin, reason);
                        }
                    }
                    None => break,
                }
                dirty = true;
                f.metrics.folded.fetch_add(1, Ordering::Relaxed);
                writer.folded += 1;
                if writer.folded >= SNAPSHOT_EVERY_EVENTS {
                    writer.write(&state, &positions, &f.metrics);
                }
            }
            _ = publish.tick(), if dirty => {
                dirty = false;
                view_tx.send_replace(View {
                    state: Arc::new(state.clone()),
                    stalled: Arc::new(stalled.clone()),
                });
            }
            _ = tick.tick() => {
                if writer.folded > 0 {
                    writer.write(&state, &positions, &f.metrics);
                }
            }
            _ = cancel.cancelled() => break,
        }
    }
    responder.abort();
    if writer.folded > 0 {
        writer.write(&state, &positions, &f.metrics);
    }
    writer.finish().await;
    Ok(())
}

/// The state and positions a snapshot gives, for the origins whose streams
/// still hold the snapshot's marks; everything else is left to fold again.
async fn restore(f: &Fold) -> (State, BTreeMap<String, Position>) {
    let empty = (State::default(), BTreeMap::new());
    let Some(path) = &f.snapshot else {
        return empty;
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return empty,
        Err(e) => {
            f.metrics.snapshots_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "cannot read {}: {e}; folding every stream from the start",
                path.display()
            );
            return empty;
        }
    };
    let snap = match Snapshot::decode(&bytes) {
        Ok(s) if s.node == f.node => s,
        Ok(s) => {
            f.metrics.snapshots_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "{} is a snapshot of node {:?}, not {:?}; ignored",
                path.display(),
                s.node,
                f.node
            );
            return empty;
        }
        Err(e) => {
            f.metrics.snapshots_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "{}: {e}; ignored, folding every stream from the start",
                path.display()
            );
            return empty;
        }
    };
    let Snapshot {
        mut state,
        positions: saved,
        ..
    } = snap;
    let mut positions = BTreeMap::new();
    let deadline = Instant::now() + CHECK_PATIENCE;
    for origin in &f.origins {
        let Some(pos) = saved.get(origin) else {
            continue;
        };
        match holds(&f.js, origin, pos, deadline).await {
            Ok(()) => {
                positions.insert(origin.clone(), *pos);
            }
            Err(why) => {
                f.metrics.snapshots_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%origin, "snapshot position (read {}) not confirmed by the stream: {why}; folding it from the start", pos.read);
            }
        }
    }
    let stale: std::collections::BTreeSet<String> = state
        .origins
        .keys()
        .chain(state.points.values().map(|p| &p.origin))
        .filter(|o| !positions.contains_key(*o))
        .cloned()
        .collect();
    for origin in stale {
        state.forget_origin(&origin);
    }
    f.metrics
        .origins_restored
        .fetch_add(positions.len() as u64, Ordering::Relaxed);
    (state, positions)
}

/// Whether `origin`'s local stream still holds what the snapshot folded:
/// the event at the mark, byte for byte (or the mark's seq expired by
/// retention with the stream past it), and at least `read` messages.
async fn holds(
    js: &Context,
    origin: &str,
    pos: &Position,
    deadline: Instant,
) -> Result<(), String> {
    let name = events::subjects::stream_name(origin);
    let mut last_err = String::new();
    while Instant::now() < deadline {
        match check_once(js, &name, pos).await {
            Ok(Some(why)) => return Err(why),
            Ok(None) => return Ok(()),
            Err(e) => last_err = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("stream {name} not readable: {last_err}"))
}

/// `Ok(None)`: confirmed; `Ok(Some(why))`: refuted; `Err`: ask again.
async fn check_once(js: &Context, name: &str, pos: &Position) -> anyhow::Result<Option<String>> {
    let mut stream = js.get_stream(name).await?;
    let info = stream.info().await?.state.clone();
    if info.last_sequence < pos.read {
        return Ok(Some(format!(
            "the stream ends at {} (history replaced or lost)",
            info.last_sequence
        )));
    }
    let Some(mark) = pos.mark else {
        return Ok(None);
    };
    if mark.seq < info.first_sequence {
        // Expired by retention; the stream went on past it.
        return Ok(None);
    }
    match stream.get_raw_message(mark.seq).await {
        Ok(m) if events::hash(&m.payload) == mark.hash => Ok(None),
        Ok(_) => Ok(Some(format!("seq {} holds other bytes", mark.seq))),
        Err(e) => Err(anyhow::anyhow!("reading seq {}: {e}", mark.seq)),
    }
}

/// Writes snapshots off the owner's task, one at a time, atomically
/// (temporary file, fsync, rename, fsync of the directory).
struct SnapshotWriter {
    path: Option<PathBuf>,
    node: String,
    /// Messages folded since the last snapshot started.
    folded: u64,
    pending: Option<tokio::task::JoinHandle<()>>,
}

impl SnapshotWriter {
    fn new(f: &Fold) -> Self {
        Self {
            path: f.snapshot.clone(),
            node: f.node.clone(),
            folded: 0,
            pending: None,
        }
    }

    fn write(
        &mut self,
        state: &State,
        positions: &BTreeMap<String, Position>,
        metrics: &Arc<Metrics>,
    ) {
        let Some(path) = self.path.clone() else {
            return;
        };
        if self.pending.as_ref().is_some_and(|p| !p.is_finished()) {
            return; // the next trigger takes it
        }
        self.folded = 0;
        let snap = Snapshot {
            node: self.node.clone(),
            taken_ms: crate::member::publisher::now_us() / 1000,
            state: state.clone(),
            positions: positions.clone(),
        };
        let metrics = metrics.clone();
        self.pending = Some(tokio::task::spawn_blocking(move || {
            match write_atomic(&path, &snap.encode()) {
                Ok(()) => {
                    metrics.snapshots_written.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    metrics.snapshot_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("writing the state snapshot {}: {e:#}", path.display());
                }
            }
        }));
    }

    async fn finish(self) {
        if let Some(p) = self.pending {
            let _ = p.await;
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("snapshot.tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// What the responder answers from: the state as of the last hand-over,
/// and the origins whose fold stalled (why).
#[derive(Debug, Clone, Default)]
struct View {
    state: Arc<State>,
    stalled: Arc<BTreeMap<String, String>>,
}

/// Answers state requests from the latest [`View`], one at a time, through
/// a bounded queue: a flood fills the queue, the excess is dropped and
/// counted, and the fold's owner never waits for a reply to be written.
async fn respond(
    client: Client,
    mut requests: async_nats::Subscriber,
    view: watch::Receiver<View>,
    node: String,
    member: String,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel::<async_nats::Message>(REQUESTS);
    let reader = async {
        while let Some(req) = requests.next().await {
            if tx.try_send(req).is_err() {
                let n = metrics
                    .state_requests_dropped
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                if super::metrics::worth_logging(n) {
                    tracing::warn!(
                        "state requests come faster than they are answered: {n} dropped so far"
                    );
                }
            }
        }
    };
    let writer = async {
        while let Some(req) = rx.recv().await {
            let Some(reply) = req.reply.clone() else {
                continue;
            };
            let mut v = view.borrow().clone();
            // The values of an origin whose replica cannot be brought up to
            // date (diverged, stalled) may be stale too.
            let replica_troubles: Vec<_> = metrics
                .troubles
                .list()
                .into_iter()
                .filter(|t| {
                    matches!(
                        t.kind,
                        TroubleKind::ReplicaDiverged | TroubleKind::ReplicaStalled
                    )
                })
                .collect();
            if !replica_troubles.is_empty() {
                let mut shown = (*v.stalled).clone();
                for t in replica_troubles {
                    shown.entry(t.origin).or_insert(t.reason);
                }
                v.stalled = Arc::new(shown);
            }
            let body = answer(&v, &node, &member, &req.payload);
            let _ = client.publish(reply, body.into()).await;
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
        _ = cancel.cancelled() => {}
    }
}

/// The reply to one state request, as JSON bytes.
fn answer(view: &View, node: &str, member: &str, payload: &[u8]) -> Vec<u8> {
    let reply = match StateRequest::parse(payload) {
        Ok(req) => StateReply::answer(node, member, &view.state, &req).mark_stalled(&view.stalled),
        Err(e) => StateReply::error(format!("bad state request: {e}")),
    };
    serde_json::to_vec(&reply).unwrap_or_default()
}

/// Reads one local stream in order from `pos`, forever, feeding the owner.
async fn feeder(
    js: Context,
    origin: String,
    pos: Position,
    mut cursor: EpochGate,
    tx: mpsc::Sender<Feed>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut next = pos.read + 1;
    let mut backoff = Duration::from_millis(100);
    loop {
        let res = tokio::select! {
            r = feed_once(&js, &origin, &mut next, &mut cursor, &tx, &metrics) => r,
            _ = cancel.cancelled() => return,
        };
        if let Err(e) = res {
            tracing::debug!(%origin, "feeder interrupted: {e:#}");
        }
        if tx.is_closed() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

async fn feed_once(
    js: &Context,
    origin: &str,
    next: &mut u64,
    cursor: &mut EpochGate,
    tx: &mpsc::Sender<Feed>,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let mut messages =
        crate::pull::follow(js, &events::subjects::stream_name(origin), *next).await?;
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| anyhow::anyhow!("{e}"))?;
        let seq = msg
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        for gated in cursor.judge(seq, &msg.payload) {
            let feed = match gated {
                Gated::Fold(event, hash) => Feed::Event(event, hash),
                Gated::Foreign(seq, why) => {
                    let n = metrics.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                    if super::metrics::worth_logging(n) {
                        tracing::warn!(%origin, seq, "not folded ({n} so far): {why}");
                    }
                    Feed::Foreign {
                        origin: origin.to_owned(),
                        seq,
                        why,
                    }
                }
                Gated::Held(seq) => {
                    let n = metrics.held_back.fetch_add(1, Ordering::Relaxed) + 1;
                    if super::metrics::worth_logging(n) {
                        tracing::info!(%origin, seq, "held back until a checkpoint of its origin opens its epoch ({n} so far)");
                    }
                    Feed::Held {
                        origin: origin.to_owned(),
                        seq,
                    }
                }
            };
            if tx.send(feed).await.is_err() {
                return Ok(());
            }
        }
        *next = seq + 1;
    }
    anyhow::bail!("stream read ended")
}
