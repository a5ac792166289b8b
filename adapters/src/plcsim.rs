//! A Modbus TCP PLC simulator for tests and the lab.
//!
//! It holds 65536 holding registers, input registers, coils and discrete
//! inputs, serves function codes 1, 2, 3, 4, 5, 6, 15 and 16 to any number
//! of clients at once (any unit id), answers out-of-range requests with a
//! Modbus exception, moves "driven" registers along simulated signals every
//! 100 ms, and appends every client write to a JSON-lines write log: the
//! ground truth HA tests use to tell which client wrote what, and when.
//!
//! The register state is one `Arc<Mutex<..>>`: it is small, local to this
//! simulator, and never held across an await. The write log line is written
//! under the same lock as the state change, so the log's order is the order
//! in which writes took effect.

use std::{
    fmt,
    fs::{File, OpenOptions},
    future::{ready, Ready},
    io::{self, BufRead, BufReader, Write},
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
    str::FromStr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use events::Value;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::{net::TcpListener, time::MissedTickBehavior};
use tokio_modbus::{
    server::{
        tcp::{accept_tcp_connection, Server},
        Service,
    },
    ExceptionCode, Request, Response,
};
use tokio_util::sync::CancellationToken;
use topology::{DataType, ModbusPoint, Register, RegisterKind, SimKind, SimSpec};

use crate::{
    codec::{self, Encoded},
    sim::SimGenerator,
};

/// How often driven registers move.
pub const DRIVE_PERIOD: Duration = Duration::from_millis(100);

/// Registers per table: the whole Modbus address space.
const TABLE: usize = 1 << 16;

/// A value to put in a register or a bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterValue {
    /// For holding and input registers (a bit stores `word != 0`).
    Word(u16),
    /// For coils and discrete inputs (a register stores 0 or 1).
    Bit(bool),
}

/// What the simulator starts with.
#[derive(Debug, Default)]
pub struct PlcSimConfig {
    /// Registers that move on their own.
    pub drives: Vec<Drive>,
    /// Where to append the write log; `None` keeps no log.
    pub write_log: Option<PathBuf>,
    /// Values set before the first client connects (drives are applied
    /// after these, so a driven register's initial value is overwritten).
    pub initial: Vec<(Register, RegisterValue)>,
}

/// A bad drive or initial-value string.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{input:?}: {reason}")]
pub struct ParseError {
    /// The string as given, so a CLI error shows what was typed.
    pub input: String,
    /// What was expected.
    pub reason: String,
}

/// How a driven register moves.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Along a simulated signal.
    Sim {
        /// The signal; `every_ms` is ignored (drives move every
        /// [`DRIVE_PERIOD`]).
        spec: SimSpec,
        /// Seed of the random walk; defaults to the register address, so two
        /// walks on one simulator differ.
        seed: u64,
    },
    /// Fixed at one value.
    Const(f64),
}

/// A register that moves on its own, parsed from
/// `"holding:100=sine,period_s=30,min=0,max=1000"`.
///
/// Kinds: `sine`, `ramp`, `square`, `random_walk` (parameters `period_s`,
/// default 10; `min`, default 0; `max`, default 100; `seed` for the walk)
/// and `const` (parameter `value`, required). Any kind also takes `type`
/// (`u16` default, `bool`, `i16`, `u32`, `i32`, `f32`) saying how the value is
/// stored in holding or input registers: rounded and saturated to the type,
/// two registers high word first for 32-bit types. On a coil or discrete
/// input the value rounds to a bit: non-zero is true.
#[derive(Debug, Clone, PartialEq)]
pub struct Drive {
    /// The (first) register written.
    pub register: Register,
    /// How the value is stored in registers.
    pub data_type: DataType,
    /// How the value moves.
    pub shape: Shape,
}

impl FromStr for Drive {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let fail = |reason: String| ParseError {
            input: s.to_owned(),
            reason,
        };
        let (register, rest) = s
            .split_once('=')
            .ok_or_else(|| fail("expected <register>=<kind>[,key=value...]".to_owned()))?;
        let register = parse_register(register.trim()).map_err(fail)?;
        let mut parts = rest.split(',').map(str::trim);
        let kind = parts.next().unwrap_or_default();
        let sim_kind = match kind {
            "sine" => Some(SimKind::Sine),
            "ramp" => Some(SimKind::Ramp),
            "square" => Some(SimKind::Square),
            "random_walk" => Some(SimKind::RandomWalk),
            "const" => None,
            other => {
                return Err(fail(format!(
                    "unknown kind {other:?} (expected sine, ramp, square, random_walk or const)"
                )))
            }
        };
        let (mut period_s, mut min, mut max) = (10.0, 0.0, 100.0);
        let mut seed = u64::from(register.address);
        let mut value = None;
        let mut data_type = DataType::U16;
        for part in parts {
            let (key, raw) = part
                .split_once('=')
                .ok_or_else(|| fail(format!("expected key=value, got {part:?}")))?;
            let number = || {
                raw.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| fail(format!("{key}: expected a number, got {raw:?}")))
            };
            match (key, sim_kind.is_some()) {
                ("period_s", true) => period_s = number()?,
                ("min", true) => min = number()?,
                ("max", true) => max = number()?,
                ("seed", true) => {
                    seed = raw
                        .parse()
                        .map_err(|_| fail(format!("seed: expected an integer, got {raw:?}")))?
                }
                ("value", false) => value = Some(number()?),
                ("type", _) => {
                    data_type = raw
                        .parse()
                        .map_err(|e: topology::InvalidValue| fail(e.to_string()))?
                }
                _ => {
                    let expected = if sim_kind.is_some() {
                        "period_s, min, max, seed, type"
                    } else {
                        "value, type"
                    };
                    return Err(fail(format!(
                        "unknown parameter {key:?} for {kind} (expected {expected})"
                    )));
                }
            }
        }
        let shape = match sim_kind {
            Some(kind) => {
                if period_s <= 0.0 {
                    return Err(fail(format!("period_s must be > 0, got {period_s}")));
                }
                Shape::Sim {
                    spec: SimSpec {
                        kind,
                        period_s,
                        min,
                        max,
                        every_ms: DRIVE_PERIOD.as_millis() as u64,
                    },
                    seed,
                }
            }
            None => Shape::Const(value.ok_or_else(|| fail("const needs value=N".to_owned()))?),
        };
        let width = if register.kind.is_bit() {
            1
        } else {
            data_type.registers().max(1)
        };
        if usize::from(register.address) + usize::from(width) > TABLE {
            return Err(fail(format!(
                "{} registers from {register} run past 65535",
                width
            )));
        }
        Ok(Drive {
            register,
            data_type,
            shape,
        })
    }
}

/// Parses an initial value, `"holding:5=17"` or `"coil:3=true"`.
pub fn parse_initial(s: &str) -> Result<(Register, RegisterValue), ParseError> {
    let fail = |reason: String| ParseError {
        input: s.to_owned(),
        reason,
    };
    let (register, raw) = s
        .split_once('=')
        .ok_or_else(|| fail("expected <register>=<value>".to_owned()))?;
    let register = parse_register(register.trim()).map_err(fail)?;
    let raw = raw.trim();
    let value = if register.kind.is_bit() {
        match raw {
            "true" | "1" => RegisterValue::Bit(true),
            "false" | "0" => RegisterValue::Bit(false),
            _ => return Err(fail(format!("expected true or false, got {raw:?}"))),
        }
    } else {
        RegisterValue::Word(
            raw.parse()
                .map_err(|_| fail(format!("expected an integer 0..=65535, got {raw:?}")))?,
        )
    };
    Ok((register, value))
}

fn parse_register(s: &str) -> Result<Register, String> {
    s.parse::<Register>().map_err(|e| e.to_string())
}

/// One line of the write log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteLogEntry {
    /// When the write took effect, microseconds since the Unix epoch.
    pub ts_us: u64,
    /// The writing client's address as the simulator saw it
    /// (`127.0.0.1:54321`): tells HA members apart.
    pub peer: String,
    /// The Modbus function code: 5, 6, 15 or 16.
    pub fc: u8,
    /// `holding` or `coil`.
    pub kind: String,
    /// The first address written.
    pub address: u16,
    /// The values written, in address order; coils as 0 or 1 so every line
    /// has the same shape.
    pub values: Vec<u16>,
}

/// Reads a write log. An unterminated last line (a write in progress) is
/// skipped; any other malformed line is an `InvalidData` error naming it.
pub fn write_log_entries(path: impl AsRef<Path>) -> io::Result<Vec<WriteLogEntry>> {
    let path = path.as_ref();
    let mut reader = BufReader::new(File::open(path)?);
    let mut entries = Vec::new();
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || !line.ends_with('\n') {
            return Ok(entries);
        }
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let entry = serde_json::from_str(&line).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}:{number}: {e}", path.display()),
            )
        })?;
        entries.push(entry);
    }
}

/// The simulated PLC's memory and its write log.
struct Plc {
    holding: Vec<u16>,
    input: Vec<u16>,
    coils: Vec<bool>,
    discrete: Vec<bool>,
    /// Appended to under the state lock; see the module docs.
    log: Option<File>,
}

impl fmt::Debug for Plc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plc")
            .field("log", &self.log.is_some())
            .finish_non_exhaustive()
    }
}

impl Plc {
    fn new(log: Option<File>) -> Self {
        Plc {
            holding: vec![0; TABLE],
            input: vec![0; TABLE],
            coils: vec![false; TABLE],
            discrete: vec![false; TABLE],
            log,
        }
    }

    /// Sets one register or bit (not a client write: not logged).
    fn set(&mut self, register: &Register, value: RegisterValue) {
        let (word, bit) = match value {
            RegisterValue::Word(w) => (w, w != 0),
            RegisterValue::Bit(b) => (u16::from(b), b),
        };
        let i = usize::from(register.address);
        match register.kind {
            RegisterKind::Holding => self.holding[i] = word,
            RegisterKind::Input => self.input[i] = word,
            RegisterKind::Coil => self.coils[i] = bit,
            RegisterKind::Discrete => self.discrete[i] = bit,
        }
    }

    /// Moves one driven register to `value`.
    fn drive(&mut self, drive: &Drive, value: f64) {
        let register = &drive.register;
        if register.kind.is_bit() {
            self.set(register, RegisterValue::Bit(value.round() != 0.0));
            return;
        }
        let words = drive_words(&drive.data_type, value);
        let start = usize::from(register.address);
        let table = match register.kind {
            RegisterKind::Input => &mut self.input,
            _ => &mut self.holding,
        };
        for (i, w) in words.into_iter().enumerate() {
            if let Some(slot) = table.get_mut(start + i) {
                *slot = w;
            }
        }
    }

    /// Appends one line to the write log, if there is one.
    fn log(
        &mut self,
        peer: SocketAddr,
        fc: u8,
        kind: &str,
        address: u16,
        values: Vec<u16>,
    ) -> Result<(), ExceptionCode> {
        let Some(file) = self.log.as_mut() else {
            return Ok(());
        };
        let ts_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let entry = WriteLogEntry {
            ts_us,
            peer: peer.to_string(),
            fc,
            kind: kind.to_owned(),
            address,
            values,
        };
        let written = serde_json::to_string(&entry)
            .map_err(io::Error::from)
            .and_then(|mut line| {
                line.push('\n');
                file.write_all(line.as_bytes())?;
                file.flush()
            });
        // Without its log line a write must not take effect: the log is the
        // tests' ground truth.
        written.map_err(|e| {
            tracing::error!(error = %e, "plcsim: cannot append to the write log; refusing the write");
            ExceptionCode::ServerDeviceFailure
        })
    }
}

/// The words a drive stores: the value rounded and saturated to the type
/// (f32 stored as is, bool as 0 or 1), encoded like any point of that type.
fn drive_words(data_type: &DataType, value: f64) -> Vec<u16> {
    let (lo, hi) = match data_type {
        DataType::Bool => return vec![u16::from(value.round() != 0.0)],
        DataType::U16 => (0.0, f64::from(u16::MAX)),
        DataType::I16 => (f64::from(i16::MIN), f64::from(i16::MAX)),
        DataType::U32 => (0.0, f64::from(u32::MAX)),
        DataType::I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
        DataType::F32 => (f64::from(f32::MIN), f64::from(f32::MAX)),
    };
    let value = if let DataType::F32 = data_type {
        value.clamp(lo, hi)
    } else {
        value.round().clamp(lo, hi)
    };
    let point = ModbusPoint {
        register: Register {
            kind: RegisterKind::Holding,
            address: 0,
        },
        data_type: *data_type,
        scale: 1.0,
    };
    match codec::encode(&point, &Value::Float(value)) {
        Ok(Encoded::Words(words)) => words,
        // Unreachable after the clamp; leave the register alone if it is.
        _ => Vec::new(),
    }
}

/// The per-connection Modbus service: the shared PLC plus who is talking.
#[derive(Debug)]
struct PlcService {
    plc: Arc<Mutex<Plc>>,
    peer: SocketAddr,
}

/// Checks a request's span: quantity within the function's limit (else
/// IllegalDataValue), addresses within the table (else IllegalDataAddress).
fn span(address: u16, count: usize, max: usize) -> Result<Range<usize>, ExceptionCode> {
    if count == 0 || count > max {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let start = usize::from(address);
    if start + count > TABLE {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    Ok(start..start + count)
}

impl PlcService {
    fn apply(&self, request: Request<'static>) -> Result<Response, ExceptionCode> {
        let mut plc = self.plc.lock().unwrap_or_else(PoisonError::into_inner);
        let plc = &mut *plc;
        let bad = ExceptionCode::IllegalDataAddress;
        match request {
            Request::ReadCoils(a, n) => {
                let r = span(a, n.into(), 2000)?;
                Ok(Response::ReadCoils(plc.coils.get(r).ok_or(bad)?.to_vec()))
            }
            Request::ReadDiscreteInputs(a, n) => {
                let r = span(a, n.into(), 2000)?;
                Ok(Response::ReadDiscreteInputs(
                    plc.discrete.get(r).ok_or(bad)?.to_vec(),
                ))
            }
            Request::ReadHoldingRegisters(a, n) => {
                let r = span(a, n.into(), 125)?;
                Ok(Response::ReadHoldingRegisters(
                    plc.holding.get(r).ok_or(bad)?.to_vec(),
                ))
            }
            Request::ReadInputRegisters(a, n) => {
                let r = span(a, n.into(), 125)?;
                Ok(Response::ReadInputRegisters(
                    plc.input.get(r).ok_or(bad)?.to_vec(),
                ))
            }
            Request::WriteSingleCoil(a, v) => {
                let r = span(a, 1, 1)?;
                plc.log(self.peer, 5, "coil", a, vec![u16::from(v)])?;
                plc.coils.get_mut(r).ok_or(bad)?.fill(v);
                Ok(Response::WriteSingleCoil(a, v))
            }
            Request::WriteSingleRegister(a, w) => {
                let r = span(a, 1, 1)?;
                plc.log(self.peer, 6, "holding", a, vec![w])?;
                plc.holding.get_mut(r).ok_or(bad)?.fill(w);
                Ok(Response::WriteSingleRegister(a, w))
            }
            Request::WriteMultipleCoils(a, coils) => {
                let r = span(a, coils.len(), 1968)?;
                let n = u16::try_from(coils.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
                plc.log(
                    self.peer,
                    15,
                    "coil",
                    a,
                    coils.iter().map(|&c| u16::from(c)).collect(),
                )?;
                plc.coils.get_mut(r).ok_or(bad)?.copy_from_slice(&coils);
                Ok(Response::WriteMultipleCoils(a, n))
            }
            Request::WriteMultipleRegisters(a, words) => {
                let r = span(a, words.len(), 123)?;
                let n = u16::try_from(words.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
                plc.log(self.peer, 16, "holding", a, words.to_vec())?;
                plc.holding.get_mut(r).ok_or(bad)?.copy_from_slice(&words);
                Ok(Response::WriteMultipleRegisters(a, n))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

impl Service for PlcService {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Response, ExceptionCode>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        ready(self.apply(request))
    }
}

/// A drive with its generator.
struct Driven {
    drive: Drive,
    generator: Option<SimGenerator>,
}

impl Driven {
    fn value(&mut self, t: Duration) -> f64 {
        match (&self.drive.shape, self.generator.as_mut()) {
            (Shape::Const(v), _) => *v,
            (Shape::Sim { .. }, Some(g)) => g.sample(t),
            (Shape::Sim { spec, .. }, None) => spec.min,
        }
    }
}

fn apply_drives(plc: &Mutex<Plc>, driven: &mut [Driven], t: Duration) {
    let mut plc = plc.lock().unwrap_or_else(PoisonError::into_inner);
    for d in driven.iter_mut() {
        let v = d.value(t);
        plc.drive(&d.drive, v);
    }
}

/// Serves the simulated PLC on `listener` until `cancel` fires; then the
/// listener and every client connection are closed (so the port can be
/// bound again). Fails only if the write log cannot be opened or accepting
/// connections fails.
pub async fn serve(
    listener: TcpListener,
    config: PlcSimConfig,
    cancel: CancellationToken,
) -> io::Result<()> {
    let log = match &config.write_log {
        Some(path) => Some(OpenOptions::new().create(true).append(true).open(path)?),
        None => None,
    };
    let mut plc = Plc::new(log);
    for (register, value) in &config.initial {
        plc.set(register, *value);
    }
    let plc = Arc::new(Mutex::new(plc));
    let mut driven: Vec<Driven> = config
        .drives
        .into_iter()
        .map(|drive| {
            let generator = match &drive.shape {
                Shape::Sim { spec, seed } => Some(SimGenerator::new(spec, *seed)),
                Shape::Const(_) => None,
            };
            Driven { drive, generator }
        })
        .collect();
    let start = tokio::time::Instant::now();
    // The first client must already see driven values.
    apply_drives(&plc, &mut driven, Duration::ZERO);

    let local = listener.local_addr()?;
    tracing::info!(%local, drives = driven.len(), "plcsim listening");
    let server = Server::new(listener);
    let on_connected = |stream, peer: SocketAddr| {
        let plc = Arc::clone(&plc);
        async move {
            tracing::debug!(%peer, "plcsim: client connected");
            accept_tcp_connection(stream, peer, move |peer| {
                Ok(Some(PlcService {
                    plc: Arc::clone(&plc),
                    peer,
                }))
            })
        }
    };
    let on_process_error = |e: io::Error| tracing::debug!(error = %e, "plcsim: connection ended");
    let drives = async {
        if driven.is_empty() {
            return std::future::pending::<()>().await;
        }
        let mut ticks = tokio::time::interval(DRIVE_PERIOD);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            apply_drives(&plc, &mut driven, start.elapsed());
        }
    };
    // Dropping `serve` (on cancel) drops the listener and cancels every
    // connection task tokio-modbus spawned for it.
    let outcome = tokio::select! {
        served = server.serve(&on_connected, on_process_error) => served,
        () = drives => Ok(()),
        () = cancel.cancelled() => Ok(()),
    };
    tracing::info!(%local, "plcsim stopped");
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(s: &str) -> Register {
        s.parse().expect("register")
    }

    #[test]
    fn parses_drives() {
        let d: Drive = "holding:100=sine,period_s=30,min=0,max=1000"
            .parse()
            .expect("drive");
        assert_eq!(d.register, reg("holding:100"));
        assert_eq!(d.data_type, DataType::U16);
        let Shape::Sim { spec, seed } = &d.shape else {
            panic!("expected a sim shape");
        };
        assert_eq!(spec.kind, SimKind::Sine);
        assert_eq!((spec.period_s, spec.min, spec.max), (30.0, 0.0, 1000.0));
        assert_eq!(*seed, 100);

        let d: Drive = "input:7=const,value=-5,type=i16".parse().expect("const");
        assert_eq!(d.shape, Shape::Const(-5.0));
        assert_eq!(d.data_type, DataType::I16);

        let d: Drive = "coil:1=square,period_s=2".parse().expect("square");
        assert!(matches!(d.shape, Shape::Sim { .. }));
        let d: Drive = "holding:1=random_walk,seed=9,type=f32"
            .parse()
            .expect("walk");
        assert!(matches!(d.shape, Shape::Sim { seed: 9, .. }));
    }

    #[test]
    fn drive_errors_say_what_was_expected() {
        let err = |s: &str| s.parse::<Drive>().expect_err(s).to_string();
        assert!(err("holding:1").contains("expected <register>=<kind>"));
        assert!(err("holding:1=zigzag").contains("unknown kind \"zigzag\""));
        assert!(err("holding:1=sine,period=3").contains("unknown parameter \"period\""));
        assert!(err("holding:1=sine,min=low").contains("min: expected a number"));
        assert!(err("holding:1=const").contains("const needs value=N"));
        assert!(err("holding:1=const,value=1,min=0").contains("expected value, type"));
        assert!(err("holding:1=sine,period_s=0").contains("period_s must be > 0"));
        assert!(err("holding:1=sine,type=u64").contains("type \"u64\": expected one of"));
        assert!(err("holding:65535=const,value=1,type=u32").contains("run past 65535"));
        assert!(err("tank:1=sine").contains("register \"tank:1\": expected holding:N"));
    }

    #[test]
    fn parses_initial_values() {
        assert_eq!(
            parse_initial("holding:5=17"),
            Ok((reg("holding:5"), RegisterValue::Word(17)))
        );
        assert_eq!(
            parse_initial("coil:3=true"),
            Ok((reg("coil:3"), RegisterValue::Bit(true)))
        );
        assert!(parse_initial("holding:5=x").is_err());
        assert!(parse_initial("discrete:5=maybe").is_err());
    }

    #[test]
    fn drives_saturate_and_encode_like_points() {
        assert_eq!(drive_words(&DataType::U16, -3.0), vec![0]);
        assert_eq!(drive_words(&DataType::U16, 1e9), vec![65535]);
        assert_eq!(drive_words(&DataType::I16, -1.2), vec![0xFFFF]);
        assert_eq!(drive_words(&DataType::U32, 65536.0), vec![1, 0]);
        assert_eq!(drive_words(&DataType::Bool, 0.7), vec![1]);
        let bits = 1.5f32.to_bits();
        assert_eq!(
            drive_words(&DataType::F32, 1.5),
            vec![(bits >> 16) as u16, bits as u16]
        );
    }

    #[test]
    fn service_serves_and_refuses_out_of_range() {
        let plc = Arc::new(Mutex::new(Plc::new(None)));
        let svc = PlcService {
            plc,
            peer: "127.0.0.1:1".parse().expect("addr"),
        };
        assert_eq!(
            svc.apply(Request::WriteSingleRegister(65535, 9)),
            Ok(Response::WriteSingleRegister(65535, 9))
        );
        assert_eq!(
            svc.apply(Request::ReadHoldingRegisters(65535, 1)),
            Ok(Response::ReadHoldingRegisters(vec![9]))
        );
        assert_eq!(
            svc.apply(Request::ReadHoldingRegisters(65535, 2)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            svc.apply(Request::ReadInputRegisters(0, 126)),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            svc.apply(Request::WriteMultipleCoils(65535, vec![true, true].into())),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            svc.apply(Request::MaskWriteRegister(0, 1, 1)),
            Err(ExceptionCode::IllegalFunction)
        );
    }
}
