//! The polling task of one Modbus device.
//!
//! One task owns the device's [`ModbusLink`]; it polls every point each
//! `poll_ms` and serves [`Command`]s (writes, life-sign switches) between
//! polls, so reads and writes never interleave on the socket. Callers hold a
//! cheap [`PollerHandle`].
//!
//! The task never exits on a field error: an unreachable device or a failed
//! read turns into [`Quality::Bad`] readings, and the next poll tries again.
//! It exits only when its cancellation token fires.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use events::{Quality, Value};
use thiserror::Error;
use tokio::{
    sync::{mpsc, oneshot},
    time::MissedTickBehavior,
};
use tokio_util::sync::CancellationToken;
use topology::{ModbusDevice, ModbusPoint, Point, Register, RegisterKind, Source};
use tracing::Instrument;

use crate::{
    codec,
    modbus::{ModbusError, ModbusLink},
};

/// Bound of the command queue. A full queue means the PLC answers more
/// slowly than commands arrive: the caller gets [`WriteError::Busy`] at once
/// (via `try_send`) rather than a write that lands seconds late.
pub const COMMAND_QUEUE: usize = 64;

/// One polled value of one point. Sent every poll, changed or not: change
/// filtering (and deadbands) are the caller's job.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The point's name within its node (`fan1_speed`).
    pub point: String,
    /// The decoded, scaled value; [`Value::Null`] when the read failed.
    pub value: Value,
    /// Good when read now; Bad when the device or the register failed.
    pub quality: Quality,
}

/// Why a write (or a life-sign switch) was not carried out.
#[derive(Debug, Error)]
pub enum WriteError {
    /// No Modbus point of this device has that name.
    #[error("no modbus point named {0:?} on this device")]
    UnknownPoint(String),
    /// The point exists but the topology does not mark it `writable`.
    #[error("point {0:?} is not writable")]
    NotWritable(String),
    /// The value does not fit the point; nothing was sent.
    #[error("{0}")]
    Encode(String),
    /// The PLC refused the write or could not be reached.
    #[error(transparent)]
    Plc(ModbusError),
    /// The command queue is full ([`COMMAND_QUEUE`]): the PLC is too slow.
    #[error("the poller's command queue is full; the PLC is not keeping up")]
    Busy,
    /// The poller task has stopped (cancelled). If the write was already on
    /// the wire when the task was cancelled, the PLC may have applied it.
    #[error("the poller has stopped")]
    Stopped,
    /// The write guard refused: this process may not write to the PLC now
    /// (an HA member whose lease is not valid). Nothing was sent.
    #[error("this member is not active: PLC writes are fenced")]
    Fenced,
}

/// Decides, right before each write to the PLC (commands and the life
/// sign), whether this process may write at all. An HA member passes its
/// lease check here, so a member that lost its lease (frozen, cut off)
/// writes nothing even if the role change has not reached its tasks yet.
pub type WriteGuard = Arc<dyn Fn() -> bool + Send + Sync>;

/// When the permission to write ends, if it is bounded (an HA member's
/// lease: its current deadline; `None` while not held).
pub type WriteUntil = Arc<dyn Fn() -> Option<tokio::time::Instant> + Send + Sync>;

/// Everything that fences the poller's PLC writes.
///
/// A write is sent only while `allowed` says so, and only if it can be
/// given up before `until − margin`: its deadline is the lease's end minus
/// the margin, not the device timeout, so a write cut short (a slow PLC, a
/// frozen process) is aborted (connection reset, nothing more sent) before
/// the lease ends; and when the lease ends the connection a write went over
/// is reset at once, so the next activation talks to the PLC over a new
/// connection. Only the abort latency counts against the margin.
#[derive(Clone)]
pub struct Fencing {
    /// Whether this process may write now.
    pub allowed: WriteGuard,
    /// When that permission ends (None: unbounded, a single node).
    pub until: Option<WriteUntil>,
    /// Taken off `until` for every write's deadline (`raft::Timing::margin`).
    pub margin: Duration,
}

impl std::fmt::Debug for Fencing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fencing")
            .field("allowed", &(self.allowed)())
            .field("until", &self.until.as_ref().map(|u| u()))
            .field("margin", &self.margin)
            .finish()
    }
}

impl From<WriteGuard> for Fencing {
    /// A guard without a deadline.
    fn from(allowed: WriteGuard) -> Self {
        Fencing {
            allowed,
            until: None,
            margin: Duration::ZERO,
        }
    }
}

impl Fencing {
    /// The deadline of a write starting now: `Err` when writing is not
    /// allowed or the deadline has already passed, `Ok(None)` when
    /// unbounded.
    fn write_deadline(&self) -> Result<Option<tokio::time::Instant>, WriteError> {
        if !(self.allowed)() {
            return Err(WriteError::Fenced);
        }
        let Some(until) = &self.until else {
            return Ok(None);
        };
        match until() {
            Some(end) => {
                let deadline = end.checked_sub(self.margin).unwrap_or(end);
                if tokio::time::Instant::now() >= deadline {
                    Err(WriteError::Fenced)
                } else {
                    Ok(Some(deadline))
                }
            }
            None => Err(WriteError::Fenced),
        }
    }
}

/// A request to the poller task. Closed on purpose: the task owns the link,
/// and these are the only things one may ask of it. Private: callers use
/// [`PollerHandle`]'s methods.
#[derive(Debug)]
pub(crate) enum Command {
    /// Write `value` to `point`.
    Write {
        /// The point's name.
        point: String,
        /// The engineering value; encoded with the point's type and scale.
        value: Value,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    /// A barrier after the life-sign flag changed: answered once the task has
    /// finished whatever Modbus call was in flight, so after the reply no
    /// life-sign write made under the old setting can still happen.
    LifeSign {
        /// The new setting, for the log.
        enabled: bool,
        /// Answered when the barrier is passed.
        reply: oneshot::Sender<()>,
    },
}

/// A snapshot of the poller's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PollerStats {
    /// Completed poll cycles, successful or not.
    pub polls: u64,
    /// Failed Modbus calls (reads, writes, life sign).
    pub errors: u64,
    /// Connections opened after the first one: how often the link broke and
    /// came back.
    pub reconnects: u64,
    /// Point writes the PLC accepted (life-sign writes not included).
    pub writes: u64,
    /// Readings dropped because the consumer's channel was full; non-zero
    /// means the consumer is too slow (see [`Poller::spawn`]).
    pub dropped: u64,
    /// The last life-sign value read while not writing it: what the other
    /// member of an HA pair wrote. `None` until one was read.
    pub life_sign_seen: Option<u16>,
    /// The last life-sign value this poller wrote. `None` until one was.
    pub life_sign_written: Option<u16>,
}

/// `AtomicU32` encoding of `Option<u16>`: values above `u16::MAX` mean none.
const NONE_U16: u32 = u32::MAX;

fn load_u16(a: &AtomicU32) -> Option<u16> {
    u16::try_from(a.load(Ordering::Relaxed)).ok()
}

/// Counters and switches shared between the task and its handles; atomics,
/// so reading stats never waits for a slow PLC.
#[derive(Debug)]
struct Shared {
    polls: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
    writes: AtomicU64,
    dropped: AtomicU64,
    life_sign_seen: AtomicU32,
    life_sign_written: AtomicU32,
    /// Whether this poller writes the life sign (active member) or only
    /// reads it (standby). Checked by the task right before each life-sign
    /// write, so switching off takes effect without waiting in the queue.
    life_sign_enabled: AtomicBool,
}

/// A point this poller reads.
#[derive(Debug)]
struct Polled {
    name: String,
    modbus: ModbusPoint,
    writable: bool,
}

/// Cheap, cloneable handle to a poller task.
#[derive(Debug, Clone)]
pub struct PollerHandle {
    /// The command queue, bounded by [`COMMAND_QUEUE`].
    commands: mpsc::Sender<Command>,
    /// Counters and the life-sign switch.
    shared: Arc<Shared>,
    /// The points by name, immutable, so obviously bad writes fail without
    /// queueing behind a slow PLC.
    points: Arc<HashMap<String, Arc<Polled>>>,
}

/// Spawns poller tasks.
#[derive(Debug)]
pub struct Poller;

impl Poller {
    /// Starts polling `device`: the points with a Modbus source are read
    /// every `poll_ms`, the others are ignored. Readings go to `readings`;
    /// the poller never waits for that channel: when it is full, readings
    /// are dropped and counted in [`PollerStats::dropped`] (the next poll
    /// sends every point again). Size it for a few polls' worth of points.
    /// The task runs until `cancel` fires. Must be called within a tokio
    /// runtime.
    pub fn spawn(
        device: ModbusDevice,
        points: Vec<Point>,
        readings: mpsc::Sender<Reading>,
        cancel: CancellationToken,
    ) -> PollerHandle {
        let always: WriteGuard = Arc::new(|| true);
        Self::spawn_guarded(device, points, readings, always.into(), cancel)
    }

    /// [`Poller::spawn`], with every PLC write fenced by `fencing`.
    pub fn spawn_guarded(
        device: ModbusDevice,
        points: Vec<Point>,
        readings: mpsc::Sender<Reading>,
        fencing: Fencing,
        cancel: CancellationToken,
    ) -> PollerHandle {
        let mut ordered = Vec::new();
        let mut by_name = HashMap::new();
        for point in points {
            if let Source::Modbus(modbus) = point.source {
                let polled = Arc::new(Polled {
                    name: point.name,
                    modbus,
                    writable: point.writable,
                });
                by_name.insert(polled.name.clone(), Arc::clone(&polled));
                ordered.push(polled);
            }
        }
        let shared = Arc::new(Shared {
            polls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            life_sign_seen: AtomicU32::new(NONE_U16),
            life_sign_written: AtomicU32::new(NONE_U16),
            life_sign_enabled: AtomicBool::new(false),
        });
        // The topology only accepts a holding register; a device built by
        // hand with another kind gets no life sign rather than a wrong one.
        let life_sign = match device.life_sign {
            Some(Register {
                kind: RegisterKind::Holding,
                address,
            }) => Some(address),
            Some(other) => {
                tracing::error!(register = %other, "life sign must be a holding register; ignoring it");
                None
            }
            None => None,
        };
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let points = Arc::new(by_name);
        let task = Task {
            link: ModbusLink::new(
                device.address,
                device.unit,
                Duration::from_millis(device.timeout_ms.max(1)),
            ),
            // tokio's interval panics on a zero period.
            period: Duration::from_millis(device.poll_ms.max(1)),
            ordered,
            points: Arc::clone(&points),
            life_sign,
            life_sign_last: None,
            readings,
            shared: Arc::clone(&shared),
            fencing,
            written_until: None,
        };
        let span = tracing::info_span!("poller", device = %task.link.address());
        tokio::spawn(task.run(rx, cancel).instrument(span));
        PollerHandle {
            commands: tx,
            shared,
            points,
        }
    }
}

impl PollerHandle {
    /// Writes `value` to `point` between two polls and waits for the PLC's
    /// answer (bounded by the device timeout once the command is taken).
    pub async fn write(&self, point: &str, value: Value) -> Result<(), WriteError> {
        let polled = self
            .points
            .get(point)
            .ok_or_else(|| WriteError::UnknownPoint(point.to_owned()))?;
        if !polled.writable {
            return Err(WriteError::NotWritable(point.to_owned()));
        }
        codec::encode(&polled.modbus, &value).map_err(|e| WriteError::Encode(e.to_string()))?;
        let (reply, answer) = oneshot::channel();
        self.enqueue(Command::Write {
            point: point.to_owned(),
            value,
            reply,
        })?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }

    /// Switches life-sign writing on (active member) or off (standby: read
    /// only). Takes effect for the next life-sign write at once; the returned
    /// future completes when the task has passed a barrier, after which no
    /// write under the old setting is in flight. Without a life-sign register
    /// on the device this only records the setting.
    pub async fn set_life_sign(&self, enabled: bool) -> Result<(), WriteError> {
        self.shared
            .life_sign_enabled
            .store(enabled, Ordering::SeqCst);
        let (reply, answer) = oneshot::channel();
        self.enqueue(Command::LifeSign { enabled, reply })?;
        answer.await.map_err(|_| WriteError::Stopped)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PollerStats {
        let s = &self.shared;
        PollerStats {
            polls: s.polls.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
            writes: s.writes.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            life_sign_seen: load_u16(&s.life_sign_seen),
            life_sign_written: load_u16(&s.life_sign_written),
        }
    }

    /// Completes when the poller task has stopped.
    pub async fn stopped(&self) {
        self.commands.closed().await;
    }

    fn enqueue(&self, command: Command) -> Result<(), WriteError> {
        self.commands.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => WriteError::Busy,
            mpsc::error::TrySendError::Closed(_) => WriteError::Stopped,
        })
    }
}

/// The state owned by the polling task.
struct Task {
    link: ModbusLink,
    period: Duration,
    /// Points in topology order, polled in that order.
    ordered: Vec<Arc<Polled>>,
    points: Arc<HashMap<String, Arc<Polled>>>,
    /// The life-sign holding register's address.
    life_sign: Option<u16>,
    /// The last life-sign value read or written, so a member that takes over
    /// continues the counter rather than restarting it.
    life_sign_last: Option<u16>,
    readings: mpsc::Sender<Reading>,
    shared: Arc<Shared>,
    /// Checked right before every write; bounds every write.
    fencing: Fencing,
    /// The end of the lease the last write went out under: when it passes,
    /// the connection is reset, so nothing of this activation can still be
    /// on its way and the next one starts on a new connection.
    written_until: Option<tokio::time::Instant>,
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, cancel: CancellationToken) {
        let mut ticks = tokio::time::interval(self.period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut handles_alive = true;
        loop {
            let lease_end = self.written_until;
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = sleep_until_opt(lease_end) => self.on_lease_end(),
                _ = ticks.tick() => {
                    if cancel.run_until_cancelled(self.poll()).await.is_none() {
                        break;
                    }
                }
                command = commands.recv(), if handles_alive => match command {
                    Some(command) => {
                        if cancel.run_until_cancelled(self.handle(command)).await.is_none() {
                            break;
                        }
                    }
                    // Every handle is gone: nobody can write any more, but
                    // polling goes on until cancelled.
                    None => handles_alive = false,
                },
            }
        }
        tracing::debug!("poller stopped");
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Write {
                point,
                value,
                reply,
            } => {
                let outcome = self.write(&point, &value).await;
                if let Err(e) = &outcome {
                    tracing::warn!(%point, error = %e, "write failed");
                }
                // The caller may have given up waiting; that is fine.
                let _ = reply.send(outcome);
            }
            Command::LifeSign { enabled, reply } => {
                tracing::info!(enabled, "life sign writing switched");
                let _ = reply.send(());
            }
        }
    }

    /// The lease a write went out under has ended (or moved on): reset the
    /// connection unless the lease was renewed meanwhile.
    fn on_lease_end(&mut self) {
        let renewed = self.fencing.until.as_ref().and_then(|u| u());
        match renewed {
            Some(end) if (self.fencing.allowed)() && end > tokio::time::Instant::now() => {
                self.written_until = Some(end);
            }
            _ => {
                self.written_until = None;
                if self.link.is_connected() {
                    tracing::info!("lease ended: resetting the PLC connection");
                    self.link.disconnect();
                }
            }
        }
    }

    /// The deadline for a write starting now, noting the lease it goes out
    /// under (see `written_until`).
    fn write_deadline(&mut self) -> Result<Option<tokio::time::Instant>, WriteError> {
        let deadline = self.fencing.write_deadline()?;
        if let Some(end) = self.fencing.until.as_ref().and_then(|u| u()) {
            self.written_until = Some(self.written_until.map_or(end, |w| w.max(end)));
        }
        Ok(deadline)
    }

    async fn write(&mut self, point: &str, value: &Value) -> Result<(), WriteError> {
        let polled = self
            .points
            .get(point)
            .cloned()
            .ok_or_else(|| WriteError::UnknownPoint(point.to_owned()))?;
        if !polled.writable {
            return Err(WriteError::NotWritable(point.to_owned()));
        }
        let until = self.write_deadline()?;
        let outcome = self.link.write_before(&polled.modbus, value, until).await;
        self.note_connects();
        match outcome {
            Ok(()) => {
                self.shared.writes.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(ModbusError::Encode { source, .. }) => Err(WriteError::Encode(source.to_string())),
            Err(e) if e.is_deadline() => {
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                Err(WriteError::Fenced)
            }
            Err(e) => {
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                Err(WriteError::Plc(e))
            }
        }
    }

    /// One poll cycle: the life sign, then every point in order.
    async fn poll(&mut self) {
        let mut link_down = self.life_sign().await;
        for i in 0..self.ordered.len() {
            let polled = Arc::clone(&self.ordered[i]);
            let reading = if link_down {
                bad(&polled.name)
            } else {
                let outcome = self.link.read(&polled.modbus).await;
                self.note_connects();
                match outcome {
                    Ok(value) => Reading {
                        point: polled.name.clone(),
                        value,
                        quality: Quality::Good,
                    },
                    Err(e) => {
                        self.shared.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(point = %polled.name, error = %e, "read failed");
                        // Do not wait a timeout per point for a device that
                        // is gone: the rest of this poll is Bad too.
                        link_down = e.is_link_down();
                        bad(&polled.name)
                    }
                }
            };
            self.deliver(reading);
        }
        self.shared.polls.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes or reads the life sign, if the device has one. Returns true
    /// when the device looks unreachable.
    async fn life_sign(&mut self) -> bool {
        let Some(address) = self.life_sign else {
            return false;
        };
        let writing = self.shared.life_sign_enabled.load(Ordering::SeqCst);
        let until = if writing {
            self.write_deadline()
        } else {
            Err(WriteError::Fenced)
        };
        let outcome = if let Ok(until) = until {
            let next = self.life_sign_last.map_or(1, |v| v.wrapping_add(1));
            let written = self.link.write_register(address, next, until).await;
            if written.is_ok() {
                self.life_sign_last = Some(next);
                self.shared
                    .life_sign_written
                    .store(u32::from(next), Ordering::Relaxed);
            }
            written
        } else {
            self.link.read_register(address).await.map(|v| {
                self.life_sign_last = Some(v);
                self.shared
                    .life_sign_seen
                    .store(u32::from(v), Ordering::Relaxed);
            })
        };
        self.note_connects();
        match outcome {
            Ok(()) => false,
            Err(e) => {
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "life sign failed");
                e.is_link_down()
            }
        }
    }

    /// Hands a reading to the consumer without waiting: readings are
    /// levels, not edges (every poll sends every point), so a reading dropped
    /// on a full channel is replaced by the next poll, while waiting for a
    /// slow consumer would delay writes and the life sign, which must stay on
    /// time. Dropped readings are counted. A closed channel (nobody listens
    /// any more) is not an error: polling and writes go on until cancelled.
    fn deliver(&self, reading: Reading) {
        if let Err(mpsc::error::TrySendError::Full(reading)) = self.readings.try_send(reading) {
            let dropped = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(point = %reading.point, dropped, "readings channel full; dropping readings");
            }
        }
    }

    fn note_connects(&self) {
        self.shared
            .reconnects
            .store(self.link.connects().saturating_sub(1), Ordering::Relaxed);
    }
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn bad(point: &str) -> Reading {
    Reading {
        point: point.to_owned(),
        value: Value::Null,
        quality: Quality::Bad,
    }
}
