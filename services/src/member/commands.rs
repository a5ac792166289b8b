//! The command service on `canopy.cmd.<node>`: write, force, unforce.
//!
//! Requests come from anywhere in the tree: NATS interest routing across
//! leafnodes delivers them to the owning node. Every request gets a reply,
//! and a malformed one is counted, never fatal. On a secured tree a
//! command must be signed by a client of the key manifest whose role and
//! scope allow it ([`super::authority`]); every command carried out is
//! recorded as a `command` event (who asked, the signed request, and for a
//! write what came of it), a force or unforce just before its effect.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use adapters::poller::{PollerHandle, WriteError};
use anyhow::Context as _;
use async_nats::Client;
use events::{Body, CommandBody, ForcedBody, UnforcedBody, Value};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use topology::{DataType, Node, Source};

use super::authority::{Authority, Checked};
use super::metrics::Metrics;
use super::publisher::Publisher;
use crate::wire::{Command, Op, Reply, SignedCommand};

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
    /// The checks on signed commands (None: no key manifest).
    pub authority: Option<Arc<Authority>>,
    /// Whether commands must be signed (every tree but `security = "none"`).
    pub secured: bool,
    /// The fold's last event of the node's own origin: commands wait for
    /// it to reach the activation's first events.
    pub own_mark: tokio::sync::watch::Receiver<Option<events::Mark>>,
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
    // Requests wait in the subscription until every command served before
    // is known (see `authority`): the start read, and the fold up to this
    // activation's own first events.
    if let Some(authority) = &handler.authority {
        let upto = handler.publisher.last().seq;
        let mut mark = handler.own_mark.clone();
        let caught_up = async {
            authority.started().await;
            let _ = mark.wait_for(|m| m.is_some_and(|m| m.seq >= upto)).await;
        };
        tokio::select! {
            _ = caught_up => {}
            _ = cancel.cancelled() => return Ok(()),
        }
    }
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

/// A command to carry out: what, and who asked (with the proof, when
/// signed).
struct Asked {
    op: Op,
    point: String,
    value: Option<serde_json::Value>,
    by: String,
    auth: Option<Checked>,
}

impl Handler {
    async fn handle(&self, payload: &[u8]) -> Reply {
        let asked = match self.admit(payload) {
            Ok(a) => a,
            Err(msg) => return self.refusal(msg),
        };
        match self.execute(asked).await {
            Ok(reply) => reply,
            Err(msg) => self.refusal(msg),
        }
    }

    fn refusal(&self, msg: String) -> Reply {
        let mut r = Reply::error(msg);
        r.origin = Some(self.node.id.clone());
        r.epoch = Some(self.publisher.last().epoch);
        r
    }

    /// Parses a request and, when signed, checks it; counts what it
    /// refuses.
    fn admit(&self, payload: &[u8]) -> Result<Asked, String> {
        let signed = serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .is_some_and(|v| v.get("signed").is_some());
        if signed {
            let cmd: SignedCommand = serde_json::from_slice(payload).map_err(|e| {
                self.metrics.bad_commands.fetch_add(1, Ordering::Relaxed);
                format!("bad command: {e} (expected {{\"signed\": REQUEST, \"key\": \"U...\", \"sig\": HEX}})")
            })?;
            let Some(authority) = &self.authority else {
                self.metrics
                    .refused_commands
                    .fetch_add(1, Ordering::Relaxed);
                return Err("refused (key): this member has no key manifest to check a signed command against".to_owned());
            };
            let checked = authority
                .check(&self.node.id, &cmd, super::publisher::now_us() / 1000)
                .inspect_err(|e| {
                    self.metrics
                        .refused_commands
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("command refused: {e}");
                })?;
            return Ok(Asked {
                op: checked.request.op,
                point: checked.request.point.clone(),
                value: checked.request.value.clone(),
                by: checked.by.clone(),
                auth: Some(checked),
            });
        }
        let cmd: Command = serde_json::from_slice(payload).map_err(|e| {
            self.metrics.bad_commands.fetch_add(1, Ordering::Relaxed);
            format!(
                "bad command: {e} (expected {{\"op\": \"write\"|\"force\"|\"unforce\", \"point\": NAME, \"value\": V}})"
            )
        })?;
        if self.secured {
            self.metrics
                .refused_commands
                .fetch_add(1, Ordering::Relaxed);
            return Err("refused (signature): this tree is secured: a command must be signed by a client of the key manifest (give the CLI --identity, see README \"Security\")".to_owned());
        }
        Ok(Asked {
            op: cmd.op,
            point: cmd.point,
            value: cmd.value,
            by: cmd.by.unwrap_or_default(),
            auth: None,
        })
    }

    /// The `command` event recording `asked` with `outcome`.
    fn record(&self, asked: &Asked, value: Value, outcome: String) -> Body {
        let (key, sig, signed) = match &asked.auth {
            Some(c) => (c.key.clone(), c.sig.clone(), c.signed.clone()),
            None => (String::new(), Vec::new(), Vec::new()),
        };
        Body::Command(CommandBody {
            op: asked.op,
            point: asked.point.clone(),
            value,
            by: asked.by.clone(),
            key,
            sig,
            signed,
            outcome,
        })
    }

    async fn execute(&self, asked: Asked) -> Result<Reply, String> {
        let node = &self.node;
        let point = node.point(&asked.point).ok_or_else(|| {
            let names: Vec<&str> = node.points.iter().map(|p| p.name.as_str()).collect();
            format!(
                "unknown point {:?} on {} (points: {})",
                asked.point,
                node.id,
                names.join(", ")
            )
        })?;
        let by = asked.by.clone();
        let publish = |body| async move {
            self.publisher
                .publish(body)
                .await
                .map_err(|e| e.to_string())
        };
        let confirmed = match asked.op {
            Op::Write => {
                if !point.writable {
                    return Err(format!("point {}.{} is not writable", node.id, point.name));
                }
                let value = typed_value(point.name.as_str(), &point.source, asked.value.as_ref())?;
                let poller = self
                    .poller
                    .as_ref()
                    .ok_or_else(|| format!("{} has no PLC connection", node.id))?;
                let written = poller
                    .write(&point.name, value.clone())
                    .await
                    .map_err(|e| match e {
                        WriteError::Plc(e) => format!("PLC unreachable or refused the write: {e}"),
                        other => other.to_string(),
                    });
                let outcome = match &written {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => format!("failed: {e}"),
                };
                let recorded = publish(self.record(&asked, value, outcome)).await;
                written?;
                recorded?
            }
            Op::Force => {
                let value = typed_value(point.name.as_str(), &point.source, asked.value.as_ref())?;
                publish(self.record(&asked, value.clone(), "accepted".to_owned())).await?;
                publish(Body::Forced(ForcedBody {
                    point: point.name.clone(),
                    value,
                    by,
                }))
                .await?
            }
            Op::Unforce => {
                if asked.value.is_some() {
                    return Err("unforce takes no value".to_owned());
                }
                publish(self.record(&asked, Value::Null, "accepted".to_owned())).await?;
                publish(Body::Unforced(UnforcedBody {
                    point: point.name.clone(),
                    by,
                }))
                .await?
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
