//! A Modbus TCP client link that survives broken connections.
//!
//! tokio-modbus neither times out a request nor reconnects. [`ModbusLink`]
//! adds both: it connects lazily, bounds every call (connect and request
//! together) by one deadline, and drops the connection after any transport
//! error or timeout, so the next call starts on a fresh socket instead of
//! reading a late answer to an old request.
//!
//! An exception response (the PLC answered "illegal data address" and the
//! like) and an encode error (nothing was sent) leave the stream in step, so
//! they keep the connection: a single misconfigured point must not make the
//! link reconnect on every poll.
//!
//! A write may carry a hard deadline of its own (an HA member's lease end
//! minus the margin, see [`ModbusLink::write_before`]). Unlike tokio's
//! `timeout_at`, which polls the inner future first, [`before`] checks the
//! deadline *before* every poll: a task that wakes up after its deadline
//! (a frozen process thawed) gives up without sending a byte. Sockets are
//! closed with zero linger (RST: what is still queued in the kernel is
//! discarded, never sent late) and `TCP_USER_TIMEOUT` bounds how long sent
//! data may wait for an acknowledgement, so no old write is retransmitted
//! to the PLC long after it was sent.

use std::{
    fmt,
    future::{poll_fn, Future},
    io,
    net::SocketAddr,
    pin::pin,
    task::Poll,
    time::{Duration, Instant},
};

use events::Value;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_modbus::{
    client::{tcp::attach_slave, Context, Reader, Writer},
    Slave,
};
use topology::{ModbusPoint, Register, RegisterKind};

use crate::codec::{self, EncodeError, Encoded};

/// Why a Modbus call failed. Every variant names the device address and,
/// where there is one, the register, so a log line stands on its own.
#[derive(Debug, Error)]
pub enum ModbusError {
    /// No connection could be opened (refused, unresolvable, or not within
    /// the timeout).
    #[error("{address}: cannot connect: {source}")]
    Connect {
        /// The device, `host:port`.
        address: String,
        /// What the operating system (or the deadline) said.
        source: io::Error,
    },
    /// A write's own deadline (the lease's end minus the margin) came
    /// before its answer, or before it could be sent: the connection was
    /// reset (zero linger), so nothing still queued reaches the PLC.
    #[error("{address} {target}: the write's deadline passed (the lease ended): aborted, connection reset")]
    Deadline {
        /// The device, `host:port`.
        address: String,
        /// The register the write was for.
        target: String,
    },
    /// The device did not answer within the timeout; the connection was
    /// dropped.
    #[error("{address} {target}: timed out after {} ms", .after.as_millis())]
    Timeout {
        /// The device, `host:port`.
        address: String,
        /// The register the call was about, `holding:100` style.
        target: String,
        /// The configured timeout.
        after: Duration,
    },
    /// The device answered with a Modbus exception; the connection is kept.
    #[error("{address} {target}: exception {code} ({})", exception_name(*.code))]
    Exception {
        /// The device, `host:port`.
        address: String,
        /// The register the call was about.
        target: String,
        /// The Modbus exception code (2 = illegal data address, ...), as a
        /// number so callers need no tokio-modbus types.
        code: u8,
    },
    /// The connection broke or the answer made no sense; the connection was
    /// dropped.
    #[error("{address} {target}: {source}")]
    Io {
        /// The device, `host:port`.
        address: String,
        /// The register the call was about.
        target: String,
        /// The transport or protocol error.
        source: io::Error,
    },
    /// The value cannot be written to the point; nothing was sent.
    #[error("{address} {target}: {source}")]
    Encode {
        /// The device, `host:port`.
        address: String,
        /// The register the write was for.
        target: String,
        /// Why the value does not fit.
        source: EncodeError,
    },
}

impl ModbusError {
    /// True when the device could not be talked to at all (connect, timeout,
    /// transport): other points on the same device will fail the same way
    /// right now, so a poller need not try them.
    pub fn is_link_down(&self) -> bool {
        matches!(
            self,
            ModbusError::Connect { .. } | ModbusError::Timeout { .. } | ModbusError::Io { .. }
        )
    }

    /// True when the call was cut short by its own deadline, not by the
    /// device.
    pub fn is_deadline(&self) -> bool {
        matches!(self, ModbusError::Deadline { .. })
    }
}

/// The standard name of a Modbus exception code.
pub fn exception_name(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address",
        3 => "illegal data value",
        4 => "server device failure",
        5 => "acknowledge",
        6 => "server device busy",
        8 => "memory parity error",
        10 => "gateway path unavailable",
        11 => "gateway target device failed to respond",
        _ => "non-standard exception",
    }
}

/// An open connection and what we know about it.
struct Connection {
    /// The tokio-modbus client context.
    ctx: Context,
    /// Our end of the socket, so a write log on the PLC side can be matched
    /// to this client.
    local: SocketAddr,
}

/// One client connection to one Modbus device (a TCP address and unit id).
///
/// Not shareable on purpose: one owner issues one request at a time (see
/// [`crate::poller`]).
pub struct ModbusLink {
    /// `host:port` of the device; resolved at every connect, so a DNS change
    /// is picked up after a reconnect.
    address: String,
    /// The Modbus unit (slave) id put in every request.
    unit: u8,
    /// Bound for each call, connect included.
    timeout: Duration,
    /// `None` until the first call and after any transport error.
    conn: Option<Connection>,
    /// Successful connects so far; a poller reports `connects - 1` as
    /// reconnects.
    connects: u64,
}

impl fmt::Debug for ModbusLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModbusLink")
            .field("address", &self.address)
            .field("unit", &self.unit)
            .field("timeout", &self.timeout)
            .field("local", &self.local_addr())
            .field("connects", &self.connects)
            .finish()
    }
}

/// What a request returned, before it is decoded.
enum Answer {
    Words(Vec<u16>),
    Bits(Vec<bool>),
    Done,
}

impl ModbusLink {
    /// A link to `address` (`host:port`) for `unit`; nothing is opened yet.
    pub fn new(address: String, unit: u8, timeout: Duration) -> Self {
        ModbusLink {
            address,
            unit,
            timeout,
            conn: None,
            connects: 0,
        }
    }

    /// The device address this link talks to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether a connection is open right now.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Our side of the open connection, if any: this is the `peer` the
    /// device (or [`crate::plcsim`]'s write log) sees.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.conn.as_ref().map(|c| c.local)
    }

    /// How many connections were opened so far.
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// Drops the connection, if any; the next call reconnects.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Reads and decodes one point.
    pub async fn read(&mut self, p: &ModbusPoint) -> Result<Value, ModbusError> {
        let count = codec::read_count(p);
        let words = self.read_words(&p.register, count).await?;
        Ok(codec::decode(p, &words))
    }

    /// Reads `count` raw words from `register` onwards; coils and discrete
    /// inputs come back as 0 or 1 per bit.
    pub async fn read_words(
        &mut self,
        register: &Register,
        count: u16,
    ) -> Result<Vec<u16>, ModbusError> {
        let address = register.address;
        let answer = match register.kind {
            RegisterKind::Holding => {
                self.call(register.to_string(), Op::ReadHolding(address, count), None)
                    .await?
            }
            RegisterKind::Input => {
                self.call(register.to_string(), Op::ReadInput(address, count), None)
                    .await?
            }
            RegisterKind::Coil => {
                self.call(register.to_string(), Op::ReadCoils(address, count), None)
                    .await?
            }
            RegisterKind::Discrete => {
                self.call(register.to_string(), Op::ReadDiscrete(address, count), None)
                    .await?
            }
        };
        Ok(match answer {
            Answer::Words(words) => words,
            Answer::Bits(bits) => bits.into_iter().map(u16::from).collect(),
            Answer::Done => Vec::new(),
        })
    }

    /// Encodes and writes one point (function code 5, 6 or 16).
    pub async fn write(&mut self, p: &ModbusPoint, v: &Value) -> Result<(), ModbusError> {
        self.write_before(p, v, None).await
    }

    /// [`ModbusLink::write`], given up (connection reset, nothing more sent)
    /// at `until` if it has not completed by then; not even started when
    /// `until` has already passed.
    pub async fn write_before(
        &mut self,
        p: &ModbusPoint,
        v: &Value,
        until: Option<tokio::time::Instant>,
    ) -> Result<(), ModbusError> {
        let target = p.register.to_string();
        let encoded = codec::encode(p, v).map_err(|source| ModbusError::Encode {
            address: self.address.clone(),
            target: target.clone(),
            source,
        })?;
        let address = p.register.address;
        let op = match encoded {
            Encoded::Bits(b) => Op::WriteCoil(address, b),
            Encoded::Words(words) if words.len() == 1 => Op::WriteRegister(address, words[0]),
            Encoded::Words(words) => Op::WriteRegisters(address, words),
        };
        self.call(target, op, until).await.map(|_| ())
    }

    /// Writes one holding register (function code 6); used for the life
    /// sign. `until`: as [`ModbusLink::write_before`].
    pub async fn write_register(
        &mut self,
        address: u16,
        value: u16,
        until: Option<tokio::time::Instant>,
    ) -> Result<(), ModbusError> {
        self.call(
            format!("holding:{address}"),
            Op::WriteRegister(address, value),
            until,
        )
        .await
        .map(|_| ())
    }

    /// Reads one holding register (function code 3).
    pub async fn read_register(&mut self, address: u16) -> Result<u16, ModbusError> {
        let target = format!("holding:{address}");
        match self
            .call(target.clone(), Op::ReadHolding(address, 1), None)
            .await?
        {
            Answer::Words(words) if !words.is_empty() => Ok(words[0]),
            _ => Err(ModbusError::Io {
                address: self.address.clone(),
                target,
                source: io::Error::new(io::ErrorKind::InvalidData, "empty answer"),
            }),
        }
    }

    /// Runs one request under the deadline (the timeout, or `until` if
    /// earlier), connecting first if needed, and drops the connection on
    /// any transport failure and whenever the deadline cuts it short.
    async fn call(
        &mut self,
        target: String,
        op: Op,
        until: Option<tokio::time::Instant>,
    ) -> Result<Answer, ModbusError> {
        let timeout_at = tokio::time::Instant::now() + self.timeout;
        let deadline = until.map_or(timeout_at, |u| u.min(timeout_at));
        let by_until = until.is_some_and(|u| u <= timeout_at);
        let cut = |this: &mut Self, target: String| {
            this.conn = None;
            if by_until {
                ModbusError::Deadline {
                    address: this.address.clone(),
                    target,
                }
            } else {
                ModbusError::Timeout {
                    address: this.address.clone(),
                    target,
                    after: this.timeout,
                }
            }
        };
        if self.conn.is_none() {
            let conn = match before(deadline, connect(&self.address, self.unit, self.timeout)).await
            {
                Some(Ok(conn)) => conn,
                Some(Err(source)) => return Err(self.connect_error(source)),
                None if by_until => return Err(cut(self, target)),
                None => {
                    let source = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("timed out after {} ms", self.timeout.as_millis()),
                    );
                    return Err(self.connect_error(source));
                }
            };
            self.connects += 1;
            self.conn = Some(conn);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(
                self.connect_error(io::Error::new(io::ErrorKind::NotConnected, "no connection"))
            );
        };
        let started = Instant::now();
        let outcome = before(deadline, op.run(&mut conn.ctx)).await;
        match outcome {
            Some(Ok(Ok(answer))) => Ok(answer),
            Some(Ok(Err(code))) => Err(ModbusError::Exception {
                address: self.address.clone(),
                target,
                code: u8::from(code),
            }),
            Some(Err(err)) => {
                self.conn = None;
                let source = match err {
                    tokio_modbus::Error::Transport(e) => e,
                    tokio_modbus::Error::Protocol(e) => {
                        io::Error::new(io::ErrorKind::InvalidData, e.to_string())
                    }
                };
                tracing::debug!(address = %self.address, %target, error = %source, "modbus transport error; dropping the connection");
                Err(ModbusError::Io {
                    address: self.address.clone(),
                    target,
                    source,
                })
            }
            None => {
                tracing::debug!(address = %self.address, %target, waited_ms = started.elapsed().as_millis() as u64, by_lease = by_until, "modbus request cut short by its deadline; dropping the connection");
                Err(cut(self, target))
            }
        }
    }

    fn connect_error(&self, source: io::Error) -> ModbusError {
        ModbusError::Connect {
            address: self.address.clone(),
            source,
        }
    }
}

/// Runs `fut` until it completes or `deadline` passes, checking the deadline
/// *before* every poll of `fut` (tokio's `timeout_at` polls the inner
/// future first, so a task woken after its deadline would still send).
/// `None`: the deadline passed; `fut` is dropped.
pub async fn before<F: Future>(deadline: tokio::time::Instant, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut sleep = pin!(tokio::time::sleep_until(deadline));
    poll_fn(|cx| {
        if tokio::time::Instant::now() >= deadline {
            return Poll::Ready(None);
        }
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Resolves `address` and connects to the first address that answers.
///
/// A free function: `ModbusLink` is not `Sync`, so borrowing it across an
/// await would make the poller's future not `Send`.
async fn connect(address: &str, unit: u8, timeout: Duration) -> io::Result<Connection> {
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{address} resolves to no address"),
    );
    for addr in tokio::net::lookup_host(address).await? {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // Requests are small and latency matters more than
                // throughput.
                stream.set_nodelay(true)?;
                // Abort, never linger: when a call times out the link is
                // dropped, and a write still queued in the kernel must die
                // with it (RST) rather than reach the PLC late, after this
                // member lost its lease and another one took over.
                stream.set_zero_linger()?;
                // Sent but unacknowledged data dies with the connection
                // after the device timeout instead of being retransmitted
                // for minutes: a write that did not get through in time
                // never arrives late.
                socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(timeout))?;
                let local = stream.local_addr()?;
                let ctx = attach_slave(stream, Slave(unit));
                return Ok(Connection { ctx, local });
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// One request, by function code.
enum Op {
    ReadCoils(u16, u16),
    ReadDiscrete(u16, u16),
    ReadHolding(u16, u16),
    ReadInput(u16, u16),
    WriteCoil(u16, bool),
    WriteRegister(u16, u16),
    WriteRegisters(u16, Vec<u16>),
}

impl Op {
    async fn run(self, ctx: &mut Context) -> tokio_modbus::Result<Answer> {
        Ok(match self {
            Op::ReadCoils(a, n) => ctx.read_coils(a, n).await?.map(Answer::Bits),
            Op::ReadDiscrete(a, n) => ctx.read_discrete_inputs(a, n).await?.map(Answer::Bits),
            Op::ReadHolding(a, n) => ctx.read_holding_registers(a, n).await?.map(Answer::Words),
            Op::ReadInput(a, n) => ctx.read_input_registers(a, n).await?.map(Answer::Words),
            Op::WriteCoil(a, b) => ctx.write_single_coil(a, b).await?.map(|()| Answer::Done),
            Op::WriteRegister(a, w) => ctx
                .write_single_register(a, w)
                .await?
                .map(|()| Answer::Done),
            Op::WriteRegisters(a, words) => ctx
                .write_multiple_registers(a, &words)
                .await?
                .map(|()| Answer::Done),
        })
    }
}
