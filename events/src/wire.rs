//! The event envelope's types, their validation, and the hash.
//!
//! These are wire types: every field is on the wire, in this order, and
//! `docs/wire-format.md` is their contract with non-Rust readers. The codec
//! is in `codec.rs`. The serde impls here are for JSON views (tools, HTTP),
//! never the wire.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::subjects::{
    self, BIRTH_TOKEN, CHECKPOINT_TOKEN, COMMAND_TOKEN, RESOURCE_TOKEN, ROLE_TOKEN,
};

/// The envelope version this crate writes and the only one it reads.
pub const WIRE_VERSION: u8 = 1;

/// A SHA-256 digest: what links an event to the one before it.
pub type Hash = [u8; 32];

/// An ed25519 signature, as in a [`CheckpointBody`].
pub type Signature = [u8; 64];

/// The `prev` of an origin's first event (seq 1): nothing comes before it.
pub const ZERO_HASH: Hash = [0; 32];

/// The largest message [`crate::decode`] accepts and [`crate::Chain::seal`]
/// produces (64 KiB). A bound on input keeps a hostile or broken peer from
/// making a consumer allocate without limit; the same bound on the origin
/// side keeps an origin from sealing an event every consumer would refuse.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// One immutable, ordered fact about an origin, exactly as on the wire.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Envelope version ([`WIRE_VERSION`]): lets a reader refuse a layout it
    /// does not know instead of misreading it.
    pub v: u8,
    /// Path of the node that owns the facts (`root.south`): events are
    /// ordered, chained and stored per origin.
    pub origin: String,
    /// The member (`a`, `b`) that wrote the event, active in `epoch`: the
    /// audit checks that one epoch has one writer.
    pub member: String,
    /// Fencing token of the origin (1 on a single node): it grows with every
    /// change of active member, so a deposed member's events can be told
    /// apart and refused.
    pub epoch: u64,
    /// Per-origin sequence number, from 1, contiguous, equal to the JetStream
    /// stream sequence: (origin, seq) names the event everywhere and a gap
    /// is visible.
    pub seq: u64,
    /// When the origin sealed it, in unix microseconds: microseconds rather
    /// than nanoseconds so JSON and JavaScript readers stay exact (< 2^53).
    pub ts: u64,
    /// SHA-256 of the previous event's exact bytes ([`ZERO_HASH`] for seq 1):
    /// history cannot be edited, dropped or reordered unseen.
    #[serde(serialize_with = "hex_hash")]
    pub prev: Hash,
    /// What happened.
    pub body: Body,
}

fn hex_hash<S: serde::Serializer>(hash: &Hash, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(hash))
}

impl Event {
    /// The subject this event is published on: `canopy.ev.<origin>.<token>`.
    pub fn subject(&self) -> String {
        subjects::event_subject(&self.origin, self.body.subject_token())
    }

    /// Check everything [`crate::decode`] checks beyond CBOR structure: version,
    /// names, seq. [`crate::Chain::seal`] runs it so an origin never
    /// publishes an event its consumers would refuse.
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        if self.v != WIRE_VERSION {
            return Err(InvalidEvent::UnsupportedVersion {
                got: u64::from(self.v),
            });
        }
        check_path("origin", &self.origin)?;
        check_token("member", &self.member)?;
        if self.seq == 0 {
            return Err(InvalidEvent::SeqZero);
        }
        self.body.validate()
    }
}

/// The payload of an event. Externally tagged on the wire: a one-entry map
/// from the lowercase tag to the payload map.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Body {
    /// A field reading (tag `value`).
    Value(ValueBody),
    /// An operator override (tag `forced`).
    Forced(ForcedBody),
    /// End of an override (tag `unforced`).
    Unforced(UnforcedBody),
    /// An HA role change (tag `role`).
    Role(RoleBody),
    /// A member's activation announcing its points (tag `birth`).
    Birth(BirthBody),
    /// A resource of the active member going into or out of service (tag
    /// `resource`).
    Resource(ResourceBody),
    /// The active member's signature over the origin's chain head (tag
    /// `checkpoint`).
    Checkpoint(CheckpointBody),
    /// A command the origin was asked to carry out, as its client signed it,
    /// and what came of it (tag `command`).
    Command(CommandBody),
}

impl Body {
    /// The wire tag of this body.
    pub fn tag(&self) -> &'static str {
        match self {
            Body::Value(_) => "value",
            Body::Forced(_) => "forced",
            Body::Unforced(_) => "unforced",
            Body::Role(_) => "role",
            Body::Birth(_) => "birth",
            Body::Resource(_) => "resource",
            Body::Checkpoint(_) => "checkpoint",
            Body::Command(_) => "command",
        }
    }

    /// The point this body is about, if it is about one.
    pub fn point(&self) -> Option<&str> {
        match self {
            Body::Value(b) => Some(&b.point),
            Body::Forced(b) => Some(&b.point),
            Body::Unforced(b) => Some(&b.point),
            Body::Command(b) => Some(&b.point),
            Body::Role(_) | Body::Birth(_) | Body::Resource(_) | Body::Checkpoint(_) => None,
        }
    }

    /// The last subject token: the point name, or `_role` / `_birth` /
    /// `_resource` / `_checkpoint` / `_command` for system bodies (reserved:
    /// point names never start with `_`). A command is about a point but
    /// has its own subject, so a reader of a point's values never sees one
    /// and a takeover reads the recent commands alone.
    pub fn subject_token(&self) -> &str {
        match self {
            Body::Role(_) => ROLE_TOKEN,
            Body::Birth(_) => BIRTH_TOKEN,
            Body::Resource(_) => RESOURCE_TOKEN,
            Body::Checkpoint(_) => CHECKPOINT_TOKEN,
            Body::Command(_) => COMMAND_TOKEN,
            _ => self.point().unwrap_or_default(),
        }
    }

    fn validate(&self) -> Result<(), InvalidEvent> {
        match self {
            Body::Value(b) => check_point("body.value.point", &b.point),
            Body::Forced(b) => check_point("body.forced.point", &b.point),
            Body::Unforced(b) => check_point("body.unforced.point", &b.point),
            Body::Role(b) => check_token("body.role.member", &b.member),
            Body::Birth(b) => {
                check_token("body.birth.member", &b.member)?;
                let mut seen = std::collections::BTreeSet::new();
                for (i, p) in b.points.iter().enumerate() {
                    check_point(&format!("body.birth.points[{i}].name"), &p.name)?;
                    if !seen.insert(p.name.as_str()) {
                        return Err(InvalidEvent::DuplicatePoint {
                            name: p.name.clone(),
                        });
                    }
                }
                Ok(())
            }
            Body::Resource(b) => {
                check_token("body.resource.member", &b.member)?;
                check_token("body.resource.resource", &b.resource)
            }
            Body::Checkpoint(b) => {
                check_token("body.checkpoint.member", &b.member)?;
                check_user_key("body.checkpoint.key", &b.key)
            }
            Body::Command(b) => b.validate(),
        }
    }
}

/// A field reading of one point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueBody {
    /// Point name, one token, unique within the origin.
    pub point: String,
    /// The reading.
    pub value: Value,
    /// Whether the reading can be trusted (the adapter's verdict).
    pub quality: Quality,
}

/// An operator's override of a point's shown value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForcedBody {
    /// Point name.
    pub point: String,
    /// The value shown while forced.
    pub value: Value,
    /// Who forced it, free text (may be empty): the audit answers "who".
    pub by: String,
}

/// The end of an override: the point shows its field value again.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnforcedBody {
    /// Point name.
    pub point: String,
    /// Who released it, free text (may be empty).
    pub by: String,
}

/// What a command asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandOp {
    /// A value sent to the PLC.
    Write,
    /// An override of the shown value.
    Force,
    /// The end of an override.
    Unforce,
}

impl CommandOp {
    /// The lowercase wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            CommandOp::Write => "write",
            CommandOp::Force => "force",
            CommandOp::Unforce => "unforce",
        }
    }
}

impl fmt::Display for CommandOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command the origin was asked to carry out. On a secured tree it holds
/// the client's request exactly as signed (`signed`), the client's public
/// key and its ed25519 signature over those bytes, so an auditor re-verifies
/// who asked without trusting the broker or the node; `op`, `point`,
/// `value` and `by` repeat what the request says (and what the node checked)
/// for readers that do not parse it. A force or unforce is recorded with
/// `outcome` `"accepted"` just before the forced / unforced event it causes;
/// a write after the PLC answered, with `"ok"` or `"failed: <why>"`. On the
/// plaintext tree (`security = "none"`) `key`, `sig` and `signed` are empty
/// and `by` is whatever the sender claimed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandBody {
    /// What was asked.
    pub op: CommandOp,
    /// Point name.
    pub point: String,
    /// The value to write or force; null for an unforce.
    pub value: Value,
    /// Who asked: the client's name in the key manifest (or free text on a
    /// plaintext tree).
    pub by: String,
    /// The client's public user nkey (`U...`), or empty when unsigned.
    pub key: String,
    /// The ed25519 signature over `signed` (64 bytes), or empty.
    #[serde(serialize_with = "hex_bytes")]
    pub sig: Vec<u8>,
    /// The request exactly as the client signed it (UTF-8 JSON), or empty.
    #[serde(serialize_with = "utf8_lossy")]
    pub signed: Vec<u8>,
    /// `"accepted"`, `"ok"`, or `"failed: <why>"`.
    pub outcome: String,
}

impl CommandBody {
    /// Whether the client's signature came with it.
    pub fn is_signed(&self) -> bool {
        !self.key.is_empty()
    }

    fn validate(&self) -> Result<(), InvalidEvent> {
        check_point("body.command.point", &self.point)?;
        if self.key.is_empty() {
            if !self.sig.is_empty() || !self.signed.is_empty() {
                return Err(InvalidEvent::BadSignature {
                    field: "body.command.sig".into(),
                    why: "a signature or signed request without a key",
                });
            }
            return Ok(());
        }
        check_user_key("body.command.key", &self.key)?;
        if self.sig.len() != 64 {
            return Err(InvalidEvent::BadSignature {
                field: "body.command.sig".into(),
                why: "not 64 bytes",
            });
        }
        if self.signed.is_empty() {
            return Err(InvalidEvent::BadSignature {
                field: "body.command.signed".into(),
                why: "a signature over nothing",
            });
        }
        Ok(())
    }
}

/// An HA role change of one member of the origin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoleBody {
    /// The member whose role changed.
    pub member: String,
    /// Its new role.
    pub role: Role,
    /// Why (failover, field health, operator...), free text: for people.
    pub reason: String,
}

/// The first event of a member's activation: the points it will publish.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BirthBody {
    /// The member that became active.
    pub member: String,
    /// Every point of the origin, so a consumer knows them before their
    /// first value.
    pub points: Vec<PointInfo>,
}

/// A resource of an HA member changing state. The active member brings its
/// resources (PLC poller, publisher, pullers, command handler, hook
/// scripts...) into service in dependency order and takes them out in
/// reverse; each step is one of these, so applications can follow it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceBody {
    /// The member whose resource it is.
    pub member: String,
    /// The resource, one token (`plc_poller`, `publisher`...).
    pub resource: String,
    /// Its new state.
    pub state: ResourceState,
    /// Why (activation, failover, a dependency went out of service...),
    /// free text: for people.
    pub reason: String,
}

/// The active member's ed25519 signature over the origin's chain head: the
/// event at `head_seq`, whose bytes hash to `head`, and through the chain
/// every event before it. A broker (or anyone with write access to a
/// stream) can forge an event's bytes, but not this signature; the audit
/// checks it against the key of the member active in the checkpoint's
/// epoch. The message signed is [`crate::checkpoint_message`]; see
/// `docs/wire-format.md`.
///
/// The checkpoint is itself an ordinary chained event (its own seq, `prev`
/// the hash of the event before it); `head_seq` is below its seq, usually
/// just below (the audit checks that, and the head; the decoder checks the
/// types, the lengths and that `key` is a user nkey). It changes no point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointBody {
    /// The signing member: the one active in the event's epoch.
    pub member: String,
    /// Seq of the chain head signed.
    pub head_seq: u64,
    /// Hash of the exact bytes of the event at `head_seq`.
    #[serde(serialize_with = "hex_hash")]
    pub head: Hash,
    /// The signer's public nkey (a user key, `U` + 55 base32 characters).
    pub key: String,
    /// The ed25519 signature of [`crate::checkpoint_message`] by `key`.
    #[serde(serialize_with = "hex_sig")]
    pub sig: Signature,
}

fn hex_sig<S: serde::Serializer>(sig: &Signature, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(sig))
}

fn hex_bytes<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}

fn utf8_lossy<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// One point announced by a birth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointInfo {
    /// Point name.
    pub name: String,
    /// Engineering unit, if any (`"°C"`): for display.
    pub unit: Option<String>,
    /// Whether the point accepts writes (commands), for user interfaces.
    pub writable: bool,
}

/// A point's value: native CBOR (and JSON) types, no tags.
///
/// Integers and floats stay apart end to end: an `Int` is never written as a
/// float nor a `Float` as an integer, so `3` and `3.0` are different values.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// No value (yet): a point announced by a birth but never read.
    #[default]
    Null,
    /// A digital signal.
    Bool(bool),
    /// A counter or register.
    Int(i64),
    /// A measurement.
    Float(f64),
}

impl Value {
    /// The value as a number for trends and thresholds: `Bool` reads as 0/1
    /// (digital signals are plotted that way); `Null` has none. An `Int`
    /// beyond ±2^53 loses precision.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Null => None,
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
        }
    }
}

impl fmt::Display for Value {
    /// `null`, `true`, `42`, `42.0`: floats always show a fraction or an
    /// exponent (Rust's `{:?}`), so an `Int` and a `Float` never print alike.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
        }
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Value::Int(i64::from(i))
    }
}

impl From<u32> for Value {
    fn from(i: u32) -> Self {
        Value::Int(i64::from(i))
    }
}

impl From<u16> for Value {
    fn from(i: u16) -> Self {
        Value::Int(i64::from(i))
    }
}

impl From<i16> for Value {
    fn from(i: i16) -> Self {
        Value::Int(i64::from(i))
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl From<f32> for Value {
    fn from(f: f32) -> Self {
        Value::Float(f64::from(f))
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Untagged: `null`, `true`, `42`, `21.5` in JSON (non-finite floats become
/// `null` there, as serde_json does for any f64).
impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_none(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
        }
    }
}

/// Untagged, the inverse of `Serialize`: lets a JSON command carry a value.
/// An unsigned integer above `i64::MAX` is refused rather than rounded.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("null, a boolean, an integer or a float")
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                Value::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
                Ok(Value::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
                Ok(Value::Int(i))
            }
            fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<Value, E> {
                i64::try_from(u)
                    .map(Value::Int)
                    .map_err(|_| E::custom("integer above i64::MAX"))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
                Ok(Value::Float(f))
            }
        }
        d.deserialize_any(V)
    }
}

/// Whether a reading can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    /// A fresh, valid reading.
    Good,
    /// The source failed (link down, sensor fault): the value is not usable.
    Bad,
    /// Possibly stale or unverified, e.g. a point never read yet.
    Uncertain,
}

impl Quality {
    /// The lowercase wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Bad => "bad",
            Quality::Uncertain => "uncertain",
        }
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An HA member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Does the I/O and writes the origin's events.
    Active,
    /// Ready to take over; writes nothing.
    Standby,
}

impl Role {
    /// The lowercase wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a resource of an HA member stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceState {
    /// Running and serving.
    InService,
    /// Being taken out of service (draining, waiting for what depends on
    /// it to stop first).
    PendingOos,
    /// Out of service.
    Oos,
}

impl ResourceState {
    /// The snake_case wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ResourceState::InService => "in_service",
            ResourceState::PendingOos => "pending_oos",
            ResourceState::Oos => "oos",
        }
    }
}

impl fmt::Display for ResourceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SHA-256 of `bytes`: the chain links on the hash of an event's exact bytes.
pub fn hash(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// An event whose fields are well typed but not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    /// `v` is not [`WIRE_VERSION`].
    #[error("unsupported envelope version {got} (this reader knows {WIRE_VERSION})")]
    UnsupportedVersion {
        /// The version received.
        got: u64,
    },
    /// A name that must not be empty is.
    #[error("`{field}` is empty")]
    EmptyName {
        /// Path of the field.
        field: String,
    },
    /// A name that is not a valid token (`[a-z0-9_]+`; points may not start
    /// with `_`) or path (tokens joined by `.`).
    #[error("`{field}`: invalid name {value:?}")]
    BadName {
        /// Path of the field.
        field: String,
        /// The name received.
        value: String,
    },
    /// `seq` is 0; sequences start at 1.
    #[error("`seq` is 0; sequences start at 1")]
    SeqZero,
    /// A checkpoint's `key` is not a public nkey of a user (`U...`: 56
    /// base32 characters holding the prefix byte, 32 key bytes and a
    /// CRC-16).
    #[error("`{field}`: not a public user nkey: {value:?}")]
    BadKey {
        /// Path of the field.
        field: String,
        /// The key received.
        value: String,
    },
    /// A command's signature fields do not fit together.
    #[error("`{field}`: {why}")]
    BadSignature {
        /// Path of the field.
        field: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A birth announces the same point twice.
    #[error("birth announces point `{name}` twice")]
    DuplicatePoint {
        /// The point name.
        name: String,
    },
}

fn check_token(field: &str, value: &str) -> Result<(), InvalidEvent> {
    if value.is_empty() {
        Err(InvalidEvent::EmptyName {
            field: field.into(),
        })
    } else if !subjects::valid_token(value) {
        Err(InvalidEvent::BadName {
            field: field.into(),
            value: value.into(),
        })
    } else {
        Ok(())
    }
}

fn check_point(field: &str, value: &str) -> Result<(), InvalidEvent> {
    check_token(field, value)?;
    if subjects::valid_point_name(value) {
        Ok(())
    } else {
        Err(InvalidEvent::BadName {
            field: field.into(),
            value: value.into(),
        })
    }
}

/// The prefix byte of a public user nkey (`U`): 20 << 3.
pub(crate) const NKEY_USER_PREFIX: u8 = 20 << 3;

/// The 32 raw ed25519 key bytes of a public user nkey, if `key` is one:
/// exactly 56 characters of RFC 4648 base32 (upper case, no padding) of the
/// prefix byte [`NKEY_USER_PREFIX`], the key, and the CRC-16/XMODEM of
/// those 33 bytes (little endian). Whether the bytes are a valid curve
/// point is left to the signature check.
pub(crate) fn user_key_bytes(key: &str) -> Option<[u8; 32]> {
    match nkeys::from_public_key(key) {
        Ok((NKEY_USER_PREFIX, raw)) => Some(raw),
        _ => None,
    }
}

fn check_user_key(field: &str, value: &str) -> Result<(), InvalidEvent> {
    match user_key_bytes(value) {
        Some(_) => Ok(()),
        None => Err(InvalidEvent::BadKey {
            field: field.into(),
            value: value.into(),
        }),
    }
}

fn check_path(field: &str, value: &str) -> Result<(), InvalidEvent> {
    if value.is_empty() {
        Err(InvalidEvent::EmptyName {
            field: field.into(),
        })
    } else if !subjects::valid_path(value) {
        Err(InvalidEvent::BadName {
            field: field.into(),
            value: value.into(),
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_helpers() {
        assert_eq!(Value::from(3i64), Value::Int(3));
        assert_eq!(Value::from(3i32), Value::Int(3));
        assert_eq!(Value::from(2.5f64), Value::Float(2.5));
        assert_eq!(Value::from(true), Value::Bool(true));
        assert_eq!(Value::from(None::<i64>), Value::Null);
        assert_eq!(Value::Int(3).to_string(), "3");
        assert_eq!(Value::Float(3.0).to_string(), "3.0");
        assert_eq!(Value::Null.to_string(), "null");
        assert_eq!(Value::Bool(false).to_string(), "false");
        assert_eq!(Value::Int(-2).as_f64(), Some(-2.0));
        assert_eq!(Value::Bool(true).as_f64(), Some(1.0));
        assert_eq!(Value::Null.as_f64(), None);
        let json = serde_json::to_string(&[
            Value::Null,
            Value::Bool(true),
            Value::Int(-7),
            Value::Float(2.5),
        ])
        .unwrap();
        assert_eq!(json, "[null,true,-7,2.5]");
        let back: Vec<Value> = serde_json::from_str("[null,true,-7,2.5,3.0]").unwrap();
        assert_eq!(
            back,
            [
                Value::Null,
                Value::Bool(true),
                Value::Int(-7),
                Value::Float(2.5),
                Value::Float(3.0)
            ]
        );
        assert!(serde_json::from_str::<Value>("18446744073709551615").is_err());
        assert_eq!(
            serde_json::to_string(&Quality::Uncertain).unwrap(),
            "\"uncertain\""
        );
        assert_eq!(
            serde_json::to_string(&Role::Standby).unwrap(),
            "\"standby\""
        );
        for state in [
            ResourceState::InService,
            ResourceState::PendingOos,
            ResourceState::Oos,
        ] {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(state.to_string(), state.as_str());
            assert_eq!(serde_json::from_str::<ResourceState>(&json).unwrap(), state);
        }
        assert_eq!(ResourceState::PendingOos.as_str(), "pending_oos");
        assert!(serde_json::from_str::<ResourceState>("\"PendingOos\"").is_err());
    }
}
