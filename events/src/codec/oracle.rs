//! The decoder as it was before the hand-written reader: ciborium into a
//! generic CBOR value, then every field taken out by hand. Kept, for tests
//! only, as the oracle the new decoder is checked against (the
//! differential tests in `differential.rs`); where the two disagree on
//! purpose, those tests say so.

use std::collections::BTreeMap;

use super::DecodeError;
use crate::wire::{
    BirthBody, Body, CheckpointBody, CommandBody, CommandOp, Event, ForcedBody, Hash, InvalidEvent,
    PointInfo, Quality, ResourceBody, ResourceState, Role, RoleBody, UnforcedBody, Value,
    ValueBody, MAX_EVENT_BYTES, WIRE_VERSION,
};

type Cbor = ciborium::Value;

/// Decode and validate one event from its exact message bytes.
///
/// Unknown keys in any map are skipped (forward compatibility: a later
/// minor addition does not break older readers); everything the format
/// defines is checked. Never panics.
pub(super) fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: MAX_EVENT_BYTES,
        });
    }
    let mut rest = bytes;
    // ciborium bounds nesting (256) and grows containers as items arrive
    // (no allocation from a claimed length), so hostile input is safe here.
    let item: Cbor = ciborium::de::from_reader(&mut rest).map_err(malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { count: rest.len() });
    }
    let mut env = Fields::new(item, "")?;

    // The version first: a newer layout gets "unsupported version", not a
    // confusing complaint about some field.
    let v = env.uint("v")?;
    let v = u8::try_from(v)
        .ok()
        .filter(|v| *v == WIRE_VERSION)
        .ok_or(InvalidEvent::UnsupportedVersion { got: v })?;

    let event = Event {
        v,
        origin: env.text("origin")?,
        member: env.text("member")?,
        epoch: env.uint("epoch")?,
        seq: env.uint("seq")?,
        ts: env.uint("ts")?,
        prev: env.hash("prev")?,
        body: decode_body(env.take("body")?)?,
    };
    event.validate()?;
    Ok(event)
}

fn malformed(e: ciborium::de::Error<std::io::Error>) -> DecodeError {
    use ciborium::de::Error;
    let reason = match e {
        Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => "truncated input".into(),
        Error::Io(io) => io.to_string(),
        Error::Syntax(offset) => format!("invalid CBOR at byte {offset}"),
        Error::Semantic(_, msg) => msg,
        Error::RecursionLimitExceeded => "nesting too deep".into(),
    };
    DecodeError::Malformed { reason }
}

fn decode_body(item: Cbor) -> Result<Body, DecodeError> {
    let Cbor::Map(entries) = item else {
        return Err(wrong("body", "a map"));
    };
    let entries_len = entries.len();
    let Ok([(tag, payload)]) = <[(Cbor, Cbor); 1]>::try_from(entries) else {
        return Err(DecodeError::BadBody {
            entries: entries_len,
        });
    };
    let Cbor::Text(tag) = tag else {
        return Err(wrong("body", "a text tag"));
    };
    let path = format!("body.{tag}");
    let body = match tag.as_str() {
        "value" => {
            let mut f = Fields::new(payload, &path)?;
            Body::Value(ValueBody {
                point: f.text("point")?,
                value: f.value("value")?,
                quality: f.quality("quality")?,
            })
        }
        "forced" => {
            let mut f = Fields::new(payload, &path)?;
            Body::Forced(ForcedBody {
                point: f.text("point")?,
                value: f.value("value")?,
                by: f.text("by")?,
            })
        }
        "unforced" => {
            let mut f = Fields::new(payload, &path)?;
            Body::Unforced(UnforcedBody {
                point: f.text("point")?,
                by: f.text("by")?,
            })
        }
        "role" => {
            let mut f = Fields::new(payload, &path)?;
            Body::Role(RoleBody {
                member: f.text("member")?,
                role: f.role("role")?,
                reason: f.text("reason")?,
            })
        }
        "birth" => {
            let mut f = Fields::new(payload, &path)?;
            let member = f.text("member")?;
            let Cbor::Array(items) = f.take("points")? else {
                return Err(wrong(format!("{path}.points"), "an array"));
            };
            let mut points = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let mut p = Fields::new(item, &format!("{path}.points[{i}]"))?;
                points.push(PointInfo {
                    name: p.text("name")?,
                    unit: p.opt_text("unit")?,
                    writable: p.bool("writable")?,
                });
            }
            Body::Birth(BirthBody { member, points })
        }
        "resource" => {
            let mut f = Fields::new(payload, &path)?;
            Body::Resource(ResourceBody {
                member: f.text("member")?,
                resource: f.text("resource")?,
                state: f.resource_state("state")?,
                reason: f.text("reason")?,
            })
        }
        "checkpoint" => {
            let mut f = Fields::new(payload, &path)?;
            Body::Checkpoint(CheckpointBody {
                member: f.text("member")?,
                head_seq: f.uint("head_seq")?,
                head: f.fixed("head")?,
                key: f.text("key")?,
                sig: f.fixed("sig")?,
            })
        }
        "command" => {
            let mut f = Fields::new(payload, &path)?;
            Body::Command(CommandBody {
                op: f.command_op("op")?,
                point: f.text("point")?,
                value: f.value("value")?,
                by: f.text("by")?,
                key: f.text("key")?,
                sig: f.byte_vec("sig")?,
                signed: f.byte_vec("signed")?,
                outcome: f.text("outcome")?,
            })
        }
        _ => return Err(DecodeError::UnknownBodyTag { tag }),
    };
    Ok(body)
}

fn wrong(field: impl Into<String>, expected: &'static str) -> DecodeError {
    DecodeError::WrongType {
        field: field.into(),
        expected,
    }
}

/// The entries of one CBOR map with text keys, taken out by name.
struct Fields {
    /// Path of the map itself ("" for the envelope), prefixed to field names
    /// in errors.
    path: String,
    /// Entries not taken yet; whatever is left at the end is an unknown
    /// (tolerated) key.
    entries: BTreeMap<String, Cbor>,
}

impl Fields {
    fn new(item: Cbor, path: &str) -> Result<Self, DecodeError> {
        let Cbor::Map(raw) = item else {
            let what = if path.is_empty() { "event" } else { path };
            return Err(wrong(what, "a map"));
        };
        let mut entries = BTreeMap::new();
        for (k, v) in raw {
            let Cbor::Text(k) = k else {
                let what = if path.is_empty() { "event" } else { path };
                return Err(wrong(what, "text map keys"));
            };
            if entries.contains_key(&k) {
                return Err(DecodeError::DuplicateKey {
                    field: join(path, &k),
                });
            }
            entries.insert(k, v);
        }
        Ok(Self {
            path: path.into(),
            entries,
        })
    }

    fn field(&self, name: &str) -> String {
        join(&self.path, name)
    }

    fn take(&mut self, name: &str) -> Result<Cbor, DecodeError> {
        self.entries
            .remove(name)
            .ok_or_else(|| DecodeError::MissingField {
                field: self.field(name),
            })
    }

    fn uint(&mut self, name: &str) -> Result<u64, DecodeError> {
        match self.take(name)? {
            Cbor::Integer(i) => u64::try_from(i).map_err(|_| DecodeError::OutOfRange {
                field: self.field(name),
            }),
            _ => Err(wrong(self.field(name), "an unsigned integer")),
        }
    }

    fn text(&mut self, name: &str) -> Result<String, DecodeError> {
        match self.take(name)? {
            Cbor::Text(s) => Ok(s),
            _ => Err(wrong(self.field(name), "a text string")),
        }
    }

    fn opt_text(&mut self, name: &str) -> Result<Option<String>, DecodeError> {
        match self.take(name)? {
            Cbor::Text(s) => Ok(Some(s)),
            Cbor::Null => Ok(None),
            _ => Err(wrong(self.field(name), "a text string or null")),
        }
    }

    fn bool(&mut self, name: &str) -> Result<bool, DecodeError> {
        match self.take(name)? {
            Cbor::Bool(b) => Ok(b),
            _ => Err(wrong(self.field(name), "a boolean")),
        }
    }

    fn hash(&mut self, name: &str) -> Result<Hash, DecodeError> {
        match self.take(name)? {
            Cbor::Bytes(b) => Hash::try_from(b.as_slice())
                .map_err(|_| DecodeError::BadHashLength { len: b.len() }),
            _ => Err(wrong(self.field(name), "a byte string")),
        }
    }

    fn fixed<const N: usize>(&mut self, name: &str) -> Result<[u8; N], DecodeError> {
        match self.take(name)? {
            Cbor::Bytes(b) => {
                <[u8; N]>::try_from(b.as_slice()).map_err(|_| DecodeError::BadLength {
                    field: self.field(name),
                    expected: N,
                    len: b.len(),
                })
            }
            _ => Err(wrong(self.field(name), "a byte string")),
        }
    }

    fn byte_vec(&mut self, name: &str) -> Result<Vec<u8>, DecodeError> {
        match self.take(name)? {
            Cbor::Bytes(b) => Ok(b),
            _ => Err(wrong(self.field(name), "a byte string")),
        }
    }

    fn command_op(&mut self, name: &str) -> Result<CommandOp, DecodeError> {
        match self.text(name)?.as_str() {
            "write" => Ok(CommandOp::Write),
            "force" => Ok(CommandOp::Force),
            "unforce" => Ok(CommandOp::Unforce),
            other => Err(DecodeError::UnknownVariant {
                field: self.field(name),
                got: other.into(),
            }),
        }
    }

    fn value(&mut self, name: &str) -> Result<Value, DecodeError> {
        match self.take(name)? {
            Cbor::Null => Ok(Value::Null),
            Cbor::Bool(b) => Ok(Value::Bool(b)),
            Cbor::Integer(i) => {
                i64::try_from(i)
                    .map(Value::Int)
                    .map_err(|_| DecodeError::OutOfRange {
                        field: self.field(name),
                    })
            }
            Cbor::Float(f) => Ok(Value::Float(f)),
            _ => Err(wrong(
                self.field(name),
                "null, a boolean, an integer or a float",
            )),
        }
    }

    fn quality(&mut self, name: &str) -> Result<Quality, DecodeError> {
        match self.text(name)?.as_str() {
            "good" => Ok(Quality::Good),
            "bad" => Ok(Quality::Bad),
            "uncertain" => Ok(Quality::Uncertain),
            other => Err(DecodeError::UnknownVariant {
                field: self.field(name),
                got: other.into(),
            }),
        }
    }

    fn role(&mut self, name: &str) -> Result<Role, DecodeError> {
        match self.text(name)?.as_str() {
            "active" => Ok(Role::Active),
            "standby" => Ok(Role::Standby),
            other => Err(DecodeError::UnknownVariant {
                field: self.field(name),
                got: other.into(),
            }),
        }
    }

    fn resource_state(&mut self, name: &str) -> Result<ResourceState, DecodeError> {
        match self.text(name)?.as_str() {
            "in_service" => Ok(ResourceState::InService),
            "pending_oos" => Ok(ResourceState::PendingOos),
            "oos" => Ok(ResourceState::Oos),
            other => Err(DecodeError::UnknownVariant {
                field: self.field(name),
                got: other.into(),
            }),
        }
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.into()
    } else {
        format!("{path}.{name}")
    }
}
