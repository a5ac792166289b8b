//! The command service on `canopy.cmd.<node>`: write, force, unforce.
//!
//! Requests come from anywhere in the tree: NATS interest routing across
//! leafnodes delivers them to the owning node. Every request gets a reply,
//! and a malformed one is counted, never fatal.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use adapters::poller::{PollerHandle, WriteError};
use anyhow::Context as _;
use async_nats::Client;
use events::{Body, ForcedBody, UnforcedBody, Value};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use topology::{DataType, Node, Source};

use super::metrics::Metrics;
use super::publisher::Publisher;
use crate::wire::{Command, Op, Reply};

/// What the command handler needs.
#[derive(Debug)]
pub struct Handler {
    /// The node served.
    pub node: Node,
    /// The origin's publisher.
    pub publisher: Publisher,
    /// The PLC poller, when the node has Modbus points.
    pub poller: Option<PollerHandle>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// Serves commands until `cancel`.
pub async fn serve(
    client: Client,
    handler: Handler,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let subject = events::subjects::cmd_subject(&handler.node.id);
    let mut sub = client
        .queue_subscribe(subject.clone(), "canopy-cmd".to_owned())
        .await
        .with_context(|| format!("subscribing to {subject}"))?;
    loop {
        let msg = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => return Ok(()) },
            _ = cancel.cancelled() => return Ok(()),
        };
        let Some(reply_to) = msg.reply.clone() else {
            handler.metrics.bad_commands.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let started = Instant::now();
        let mut reply = handler.handle(&msg.payload).await;
        reply.handler_us = Some(started.elapsed().as_micros() as u64);
        handler.metrics.commands.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&reply).unwrap_or_default();
        let _ = client.publish(reply_to, body.into()).await;
    }
}

impl Handler {
    async fn handle(&self, payload: &[u8]) -> Reply {
        let cmd: Command = match serde_json::from_slice(payload) {
            Ok(c) => c,
            Err(e) => {
                self.metrics.bad_commands.fetch_add(1, Ordering::Relaxed);
                return Reply::error(format!(
                    "bad command: {e} (expected {{\"op\": \"write\"|\"force\"|\"unforce\", \"point\": NAME, \"value\": V}})"
                ));
            }
        };
        match self.execute(cmd).await {
            Ok(reply) => reply,
            Err(msg) => {
                let mut r = Reply::error(msg);
                r.origin = Some(self.node.id.clone());
                r.epoch = Some(self.publisher.last().epoch);
                r
            }
        }
    }

    async fn execute(&self, cmd: Command) -> Result<Reply, String> {
        let node = &self.node;
        let point = node.point(&cmd.point).ok_or_else(|| {
            let names: Vec<&str> = node.points.iter().map(|p| p.name.as_str()).collect();
            format!(
                "unknown point {:?} on {} (points: {})",
                cmd.point,
                node.id,
                names.join(", ")
            )
        })?;
        let by = cmd.by.clone().unwrap_or_default();
        let confirmed = match cmd.op {
            Op::Write => {
                if !point.writable {
                    return Err(format!("point {}.{} is not writable", node.id, point.name));
                }
                let value = typed_value(point.name.as_str(), &point.source, cmd.value.as_ref())?;
                let poller = self
                    .poller
                    .as_ref()
                    .ok_or_else(|| format!("{} has no PLC connection", node.id))?;
                poller
                    .write(&point.name, value)
                    .await
                    .map_err(|e| match e {
                        WriteError::Plc(e) => format!("PLC unreachable or refused the write: {e}"),
                        other => other.to_string(),
                    })?;
                self.publisher.last()
            }
            Op::Force => {
                let value = typed_value(point.name.as_str(), &point.source, cmd.value.as_ref())?;
                let body = Body::Forced(ForcedBody {
                    point: point.name.clone(),
                    value,
                    by,
                });
                self.publisher
                    .publish(body)
                    .await
                    .map_err(|e| e.to_string())?
            }
            Op::Unforce => {
                if cmd.value.is_some() {
                    return Err("unforce takes no value".to_owned());
                }
                let body = Body::Unforced(UnforcedBody {
                    point: point.name.clone(),
                    by,
                });
                self.publisher
                    .publish(body)
                    .await
                    .map_err(|e| e.to_string())?
            }
        };
        Ok(Reply {
            ok: true,
            origin: Some(node.id.clone()),
            epoch: Some(confirmed.epoch),
            seq: Some(confirmed.seq),
            handler_us: None,
            error: None,
        })
    }
}

/// Converts a JSON value to the point's type, or says what was expected.
pub fn typed_value(
    point: &str,
    source: &Source,
    value: Option<&serde_json::Value>,
) -> Result<Value, String> {
    let v = value.ok_or_else(|| format!("a value is required for {point}"))?;
    let wants_bool = matches!(source, Source::Modbus(m) if m.data_type == DataType::Bool);
    match v {
        serde_json::Value::Bool(b) if wants_bool => Ok(Value::Bool(*b)),
        serde_json::Value::Number(n) if !wants_bool => {
            if let Some(i) = n.as_i64() {
                Ok(Value::Int(i))
            } else {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(Value::Float)
                    .ok_or_else(|| format!("{n} is not a finite number"))
            }
        }
        other if wants_bool => Err(format!(
            "wrong type for {point}: expected true or false, got {other}"
        )),
        other => Err(format!(
            "wrong type for {point}: expected a number, got {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use topology::{ModbusPoint, Register, RegisterKind, SimKind, SimSpec};

    fn modbus(t: DataType) -> Source {
        Source::Modbus(ModbusPoint {
            register: Register {
                kind: RegisterKind::Holding,
                address: 1,
            },
            data_type: t,
            scale: 1.0,
        })
    }

    #[test]
    fn values_are_checked_against_the_point_type() {
        let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).expect("json");
        assert_eq!(
            typed_value("p", &modbus(DataType::U16), Some(&json("12"))),
            Ok(Value::Int(12))
        );
        assert_eq!(
            typed_value("p", &modbus(DataType::F32), Some(&json("1.5"))),
            Ok(Value::Float(1.5))
        );
        assert_eq!(
            typed_value("p", &modbus(DataType::Bool), Some(&json("true"))),
            Ok(Value::Bool(true))
        );
        assert!(typed_value("p", &modbus(DataType::Bool), Some(&json("1"))).is_err());
        assert!(typed_value("p", &modbus(DataType::U16), Some(&json("\"x\""))).is_err());
        assert!(typed_value("p", &modbus(DataType::U16), None).is_err());
        let sim = Source::Sim(SimSpec {
            kind: SimKind::Sine,
            period_s: 1.0,
            min: 0.0,
            max: 1.0,
            every_ms: 100,
        });
        assert_eq!(typed_value("p", &sim, Some(&json("3"))), Ok(Value::Int(3)));
    }
}
