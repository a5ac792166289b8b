//! The CBOR codec of the envelope: [`encode`] and [`decode`].
//!
//! The encoder writes through [`crate::cbor::Writer`] so the bytes are fixed
//! by this crate alone. The decoder reads with ciborium into a generic CBOR
//! value, then takes every field out by hand, so a bad message gets an error
//! naming the field and what was expected.

use std::collections::BTreeMap;

use crate::cbor::Writer;
use crate::wire::{
    BirthBody, Body, Event, ForcedBody, Hash, InvalidEvent, PointInfo, Quality, Role, RoleBody,
    UnforcedBody, Value, ValueBody, MAX_EVENT_BYTES, WIRE_VERSION,
};

/// Encode an event to its wire bytes (see `docs/wire-format.md`).
///
/// Infallible: it writes whatever the event holds. Only a valid event
/// ([`Event::validate`]) decodes again, which is why origins seal events
/// through [`crate::Chain`], which validates first.
pub fn encode(event: &Event) -> Vec<u8> {
    let mut w = Writer::with_capacity(128);
    w.map(8);
    w.text("v");
    w.uint(u64::from(event.v));
    w.text("origin");
    w.text(&event.origin);
    w.text("member");
    w.text(&event.member);
    w.text("epoch");
    w.uint(event.epoch);
    w.text("seq");
    w.uint(event.seq);
    w.text("ts");
    w.uint(event.ts);
    w.text("prev");
    w.bytes(&event.prev);
    w.text("body");
    encode_body(&mut w, &event.body);
    w.finish()
}

fn encode_body(w: &mut Writer, body: &Body) {
    w.map(1);
    w.text(body.tag());
    match body {
        Body::Value(b) => {
            w.map(3);
            w.text("point");
            w.text(&b.point);
            w.text("value");
            encode_value(w, &b.value);
            w.text("quality");
            w.text(b.quality.as_str());
        }
        Body::Forced(b) => {
            w.map(3);
            w.text("point");
            w.text(&b.point);
            w.text("value");
            encode_value(w, &b.value);
            w.text("by");
            w.text(&b.by);
        }
        Body::Unforced(b) => {
            w.map(2);
            w.text("point");
            w.text(&b.point);
            w.text("by");
            w.text(&b.by);
        }
        Body::Role(b) => {
            w.map(3);
            w.text("member");
            w.text(&b.member);
            w.text("role");
            w.text(b.role.as_str());
            w.text("reason");
            w.text(&b.reason);
        }
        Body::Birth(b) => {
            w.map(2);
            w.text("member");
            w.text(&b.member);
            w.text("points");
            w.array(b.points.len());
            for p in &b.points {
                w.map(3);
                w.text("name");
                w.text(&p.name);
                w.text("unit");
                match &p.unit {
                    Some(u) => w.text(u),
                    None => w.null(),
                }
                w.text("writable");
                w.bool(p.writable);
            }
        }
    }
}

fn encode_value(w: &mut Writer, value: &Value) {
    match value {
        Value::Null => w.null(),
        Value::Bool(b) => w.bool(*b),
        Value::Int(i) => w.int(*i),
        Value::Float(f) => w.float(*f),
    }
}

// ---------------------------------------------------------------- decoding

/// Why bytes are not a valid event. Field paths read like
/// `body.birth.points[2].name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Longer than [`MAX_EVENT_BYTES`]; refused before parsing.
    #[error("event is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not one well-formed CBOR item (truncated, bad syntax, nesting too
    /// deep, invalid UTF-8...).
    #[error("malformed CBOR: {reason}")]
    Malformed {
        /// What the CBOR reader reported.
        reason: String,
    },
    /// Bytes left after the one CBOR item an event is.
    #[error("{count} trailing bytes after the event")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A required field is absent.
    #[error("missing field `{field}`")]
    MissingField {
        /// Path of the field.
        field: String,
    },
    /// A key appears twice in one map: readers would disagree on which
    /// to take, so neither is taken.
    #[error("duplicate key `{field}`")]
    DuplicateKey {
        /// Path of the field.
        field: String,
    },
    /// A field (or map key) of the wrong CBOR type.
    #[error("`{field}`: expected {expected}")]
    WrongType {
        /// Path of the field.
        field: String,
        /// What the format requires there.
        expected: &'static str,
    },
    /// An integer outside the field's range (negative seq, int beyond i64).
    #[error("`{field}`: integer out of range")]
    OutOfRange {
        /// Path of the field.
        field: String,
    },
    /// `prev` is not 32 bytes.
    #[error("`prev`: expected 32 bytes, got {len}")]
    BadHashLength {
        /// Length received.
        len: usize,
    },
    /// `body` is not a one-entry map.
    #[error("`body`: expected a map with exactly one entry, got {entries}")]
    BadBody {
        /// Number of entries received.
        entries: usize,
    },
    /// A body tag this version does not know.
    #[error("unknown body tag `{tag}`")]
    UnknownBodyTag {
        /// The tag received.
        tag: String,
    },
    /// A text enum (quality, role) with an unknown name.
    #[error("`{field}`: unknown variant `{got}`")]
    UnknownVariant {
        /// Path of the field.
        field: String,
        /// The name received.
        got: String,
    },
    /// Structurally fine, semantically not (version, names, seq).
    #[error(transparent)]
    Invalid(#[from] InvalidEvent),
}

type Cbor = ciborium::Value;

/// Decode and validate one event from its exact message bytes.
///
/// Unknown keys in any map are skipped (forward compatibility: a later
/// minor addition does not break older readers); everything the format
/// defines is checked. Never panics.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
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
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.into()
    } else {
        format!("{path}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{hash, ZERO_HASH};

    /// The golden event of `docs/wire-format.md`.
    fn golden() -> Event {
        let mut prev = ZERO_HASH;
        for (i, b) in prev.iter_mut().enumerate() {
            *b = i as u8;
        }
        Event {
            v: WIRE_VERSION,
            origin: "root.south".into(),
            member: "a".into(),
            epoch: 3,
            seq: 42,
            ts: 1_700_000_000_123_456,
            prev,
            body: Body::Value(ValueBody {
                point: "temp1".into(),
                value: Value::Float(21.5),
                quality: Quality::Good,
            }),
        }
    }

    const GOLDEN_HEX: &str = concat!(
        "a8617601666f726967696e6a726f6f742e736f757468666d656d626572616165",
        "65706f63680363736571182a6274731b00060a24182022406470726576582000",
        "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f64",
        "626f6479a16576616c7565a365706f696e746574656d70316576616c7565fb40",
        "35800000000000677175616c69747964676f6f64",
    );

    #[test]
    fn golden_bytes_never_change() {
        let bytes = encode(&golden());
        assert_eq!(hex::encode(&bytes), GOLDEN_HEX);
        assert_eq!(decode(&bytes).unwrap(), golden());
        assert_eq!(
            hex::encode(hash(&bytes)),
            "60d86b393c90d4b6af6d1da674ecadfe9c9fdd5c42a8ba048731af1bc0f014b9",
            "the hash the next event's prev would carry"
        );
    }

    /// A second golden pinning arrays, null, negative ints and booleans.
    #[test]
    fn golden_birth_and_forced() {
        let birth = Event {
            body: Body::Birth(BirthBody {
                member: "b".into(),
                points: vec![
                    PointInfo {
                        name: "temp1".into(),
                        unit: Some("C".into()),
                        writable: false,
                    },
                    PointInfo {
                        name: "pump".into(),
                        unit: None,
                        writable: true,
                    },
                ],
            }),
            ..golden()
        };
        let body_hex = |e: &Event| {
            let h = hex::encode(encode(e));
            let at = h.find("64626f6479").unwrap(); // "body"
            h[at..].to_owned()
        };
        assert_eq!(
            body_hex(&birth),
            concat!(
                "64626f6479a1656269727468a2666d656d626572616266706f696e747382a364",
                "6e616d656574656d703164756e69746143687772697461626c65f4a3646e616d",
                "656470756d7064756e6974f6687772697461626c65f5",
            )
        );
        let forced = Event {
            body: Body::Forced(ForcedBody {
                point: "pump".into(),
                value: Value::Int(-300),
                by: "".into(),
            }),
            ..golden()
        };
        assert_eq!(
            body_hex(&forced),
            "64626f6479a166666f72636564a365706f696e746470756d706576616c756539012b62627960"
        );
    }

    fn every_body() -> Vec<Body> {
        let mut bodies = Vec::new();
        for value in [
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::Int(0),
            Value::Int(-1),
            Value::Int(i64::MIN),
            Value::Int(i64::MAX),
            Value::Float(0.0),
            Value::Float(-0.5),
            Value::Float(3.0),
            Value::Float(f64::MAX),
            Value::Float(f64::INFINITY),
        ] {
            for quality in [Quality::Good, Quality::Bad, Quality::Uncertain] {
                bodies.push(Body::Value(ValueBody {
                    point: "p1".into(),
                    value: value.clone(),
                    quality,
                }));
            }
            bodies.push(Body::Forced(ForcedBody {
                point: "p1".into(),
                value,
                by: "operator jo".into(),
            }));
        }
        bodies.push(Body::Unforced(UnforcedBody {
            point: "p1".into(),
            by: String::new(),
        }));
        for role in [Role::Active, Role::Standby] {
            bodies.push(Body::Role(RoleBody {
                member: "b".into(),
                role,
                reason: "field health: plc link down".into(),
            }));
        }
        bodies.push(Body::Birth(BirthBody {
            member: "a".into(),
            points: vec![],
        }));
        bodies.push(Body::Birth(BirthBody {
            member: "a".into(),
            points: vec![
                PointInfo {
                    name: "t".into(),
                    unit: Some("°C".into()),
                    writable: false,
                },
                PointInfo {
                    name: "u".into(),
                    unit: None,
                    writable: true,
                },
            ],
        }));
        bodies
    }

    #[test]
    fn round_trip_every_body_and_value() {
        for body in every_body() {
            let event = Event {
                body,
                epoch: u64::MAX,
                ts: 0,
                seq: 1,
                ..golden()
            };
            let bytes = encode(&event);
            assert_eq!(decode(&bytes).unwrap(), event, "{event:?}");
        }
        // NaN is not equal to itself: check it separately.
        let nan = Event {
            body: Body::Value(ValueBody {
                point: "p".into(),
                value: Value::Float(f64::NAN),
                quality: Quality::Bad,
            }),
            ..golden()
        };
        let back = decode(&encode(&nan)).unwrap();
        assert!(matches!(
            back.body,
            Body::Value(ValueBody { value: Value::Float(f), .. }) if f.is_nan()
        ));
    }

    #[test]
    fn ints_and_floats_stay_apart() {
        for (value, kind) in [(Value::Int(3), 0x03u8), (Value::Float(3.0), 0xfb)] {
            let e = Event {
                body: Body::Value(ValueBody {
                    point: "p".into(),
                    value: value.clone(),
                    quality: Quality::Good,
                }),
                ..golden()
            };
            let bytes = encode(&e);
            assert!(bytes.contains(&kind));
            assert_eq!(decode(&bytes).unwrap(), e);
        }
    }

    // ------------------------------------------------ malformed input

    /// The golden event as a generic CBOR value, to break on purpose.
    fn generic() -> Cbor {
        ciborium::de::from_reader(encode(&golden()).as_slice()).unwrap()
    }

    fn to_bytes(item: &Cbor) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(item, &mut out).unwrap();
        out
    }

    fn entries(item: &mut Cbor) -> &mut Vec<(Cbor, Cbor)> {
        match item {
            Cbor::Map(m) => m,
            _ => panic!("not a map"),
        }
    }

    fn get<'a>(item: &'a mut Cbor, key: &str) -> &'a mut Cbor {
        entries(item)
            .iter_mut()
            .find(|(k, _)| k.as_text() == Some(key))
            .map(|(_, v)| v)
            .unwrap()
    }

    /// Decode the golden event after `f` broke it.
    fn broken(f: impl FnOnce(&mut Cbor)) -> DecodeError {
        let mut item = generic();
        f(&mut item);
        decode(&to_bytes(&item)).unwrap_err()
    }

    fn payload(item: &mut Cbor) -> &mut Cbor {
        get(get(item, "body"), "value")
    }

    #[test]
    fn rejects_wrong_version() {
        for v in [0u8, 2, 255] {
            let mut e = golden();
            e.v = v;
            assert_eq!(
                decode(&encode(&e)),
                Err(DecodeError::Invalid(InvalidEvent::UnsupportedVersion {
                    got: u64::from(v)
                }))
            );
        }
        // A future layout with other fields still says "version".
        let e = broken(|m| {
            *get(m, "v") = Cbor::Integer(2.into());
            entries(m).retain(|(k, _)| k.as_text() == Some("v"));
        });
        assert_eq!(
            e,
            DecodeError::Invalid(InvalidEvent::UnsupportedVersion { got: 2 })
        );
        assert_eq!(
            broken(|m| *get(m, "v") = Cbor::Integer(1000.into())),
            DecodeError::Invalid(InvalidEvent::UnsupportedVersion { got: 1000 })
        );
        assert!(matches!(
            broken(|m| *get(m, "v") = Cbor::Text("1".into())),
            DecodeError::WrongType { field, .. } if field == "v"
        ));
    }

    #[test]
    fn rejects_missing_fields() {
        for field in [
            "v", "origin", "member", "epoch", "seq", "ts", "prev", "body",
        ] {
            let e = broken(|m| entries(m).retain(|(k, _)| k.as_text() != Some(field)));
            assert_eq!(
                e,
                DecodeError::MissingField {
                    field: field.into()
                }
            );
        }
        for field in ["point", "value", "quality"] {
            let e = broken(|m| entries(payload(m)).retain(|(k, _)| k.as_text() != Some(field)));
            assert_eq!(
                e,
                DecodeError::MissingField {
                    field: format!("body.value.{field}")
                }
            );
        }
    }

    #[test]
    fn rejects_wrong_types() {
        type Breaker = Box<dyn FnOnce(&mut Cbor)>;
        let cases: Vec<(&str, Breaker)> = vec![
            (
                "origin",
                Box::new(|m| *get(m, "origin") = Cbor::Integer(1.into())),
            ),
            ("member", Box::new(|m| *get(m, "member") = Cbor::Null)),
            ("epoch", Box::new(|m| *get(m, "epoch") = Cbor::Float(3.0))),
            (
                "seq",
                Box::new(|m| *get(m, "seq") = Cbor::Text("42".into())),
            ),
            ("ts", Box::new(|m| *get(m, "ts") = Cbor::Bool(true))),
            (
                "prev",
                Box::new(|m| *get(m, "prev") = Cbor::Text("00".into())),
            ),
            (
                "body",
                Box::new(|m| *get(m, "body") = Cbor::Text("value".into())),
            ),
            (
                "body.value",
                Box::new(|m| *get(get(m, "body"), "value") = Cbor::Array(vec![])),
            ),
            (
                "body.value.value",
                Box::new(|m| *get(payload(m), "value") = Cbor::Text("21.5".into())),
            ),
            (
                "body.value.value",
                Box::new(|m| {
                    *get(payload(m), "value") = Cbor::Tag(1, Box::new(Cbor::Integer(0.into())))
                }),
            ),
            (
                "body.value.quality",
                Box::new(|m| *get(payload(m), "quality") = Cbor::Integer(0.into())),
            ),
            ("event", Box::new(|m| *m = Cbor::Integer(1.into()))),
            (
                "event",
                Box::new(|m| entries(m).push((Cbor::Integer(9.into()), Cbor::Null))),
            ),
        ];
        for (want, f) in cases {
            match broken(f) {
                DecodeError::WrongType { field, .. } => assert_eq!(field, want),
                other => panic!("{want}: {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_out_of_range_integers() {
        assert_eq!(
            broken(|m| *get(m, "seq") = Cbor::Integer((-1).into())),
            DecodeError::OutOfRange {
                field: "seq".into()
            }
        );
        assert_eq!(
            broken(|m| *get(payload(m), "value") = Cbor::Integer(u64::MAX.into())),
            DecodeError::OutOfRange {
                field: "body.value.value".into()
            }
        );
        assert_eq!(
            broken(|m| *get(m, "seq") = Cbor::Integer(0.into())),
            DecodeError::Invalid(InvalidEvent::SeqZero)
        );
    }

    #[test]
    fn rejects_bad_prev_length() {
        for len in [0usize, 31, 33] {
            assert_eq!(
                broken(|m| *get(m, "prev") = Cbor::Bytes(vec![0; len])),
                DecodeError::BadHashLength { len }
            );
        }
    }

    #[test]
    fn rejects_trailing_garbage_truncation_and_junk() {
        let mut bytes = encode(&golden());
        bytes.push(0x00);
        assert_eq!(decode(&bytes), Err(DecodeError::TrailingBytes { count: 1 }));
        let bytes = encode(&golden());
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                matches!(decode(&bytes[..cut]), Err(DecodeError::Malformed { .. })),
                "cut at {cut}"
            );
        }
        assert!(matches!(
            decode(&[0xff]),
            Err(DecodeError::Malformed { .. })
        ));
        // Deep nesting is refused, not a stack overflow.
        let deep = [vec![0x81; 10_000], vec![0x00]].concat();
        assert!(matches!(decode(&deep), Err(DecodeError::Malformed { .. })));
        // A length claim far beyond the input allocates nothing and fails.
        assert!(matches!(
            decode(&[0x5b, 0x7f, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn rejects_oversized_input() {
        let bytes = vec![0u8; MAX_EVENT_BYTES + 1];
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::TooLarge {
                len: MAX_EVENT_BYTES + 1,
                max: MAX_EVENT_BYTES
            })
        );
    }

    #[test]
    fn rejects_bad_bodies() {
        assert_eq!(
            broken(|m| {
                let body = get(m, "body");
                let inner = get(body, "value").clone();
                *body = Cbor::Map(vec![(Cbor::Text("setpoint".into()), inner)]);
            }),
            DecodeError::UnknownBodyTag {
                tag: "setpoint".into()
            }
        );
        assert_eq!(
            broken(|m| {
                let body = get(m, "body");
                let inner = get(body, "value").clone();
                entries(body).push((Cbor::Text("forced".into()), inner));
            }),
            DecodeError::BadBody { entries: 2 }
        );
        assert_eq!(
            broken(|m| *get(m, "body") = Cbor::Map(vec![])),
            DecodeError::BadBody { entries: 0 }
        );
        assert_eq!(
            broken(|m| *get(payload(m), "quality") = Cbor::Text("Good".into())),
            DecodeError::UnknownVariant {
                field: "body.value.quality".into(),
                got: "Good".into()
            }
        );
    }

    #[test]
    fn rejects_empty_and_bad_names() {
        assert_eq!(
            broken(|m| *get(m, "origin") = Cbor::Text(String::new())),
            DecodeError::Invalid(InvalidEvent::EmptyName {
                field: "origin".into()
            })
        );
        assert_eq!(
            broken(|m| *get(payload(m), "point") = Cbor::Text(String::new())),
            DecodeError::Invalid(InvalidEvent::EmptyName {
                field: "body.value.point".into()
            })
        );
        for (field, bad) in [
            ("origin", "root..south"),
            ("origin", "root.*"),
            ("member", "A"),
        ] {
            assert!(matches!(
                broken(|m| *get(m, field) = Cbor::Text(bad.into())),
                DecodeError::Invalid(InvalidEvent::BadName { .. })
            ));
        }
        for bad in ["_role", "temp.1", "temp>", "Temp"] {
            assert!(matches!(
                broken(|m| *get(payload(m), "point") = Cbor::Text(bad.into())),
                DecodeError::Invalid(InvalidEvent::BadName { .. })
            ));
        }
        let mut dup = golden();
        dup.body = Body::Birth(BirthBody {
            member: "a".into(),
            points: vec![
                PointInfo {
                    name: "x".into(),
                    unit: None,
                    writable: false,
                };
                2
            ],
        });
        assert_eq!(
            decode(&encode(&dup)),
            Err(DecodeError::Invalid(InvalidEvent::DuplicatePoint {
                name: "x".into()
            }))
        );
    }

    #[test]
    fn rejects_duplicate_keys() {
        assert_eq!(
            broken(|m| entries(m).push((Cbor::Text("seq".into()), Cbor::Integer(43.into())))),
            DecodeError::DuplicateKey {
                field: "seq".into()
            }
        );
        assert_eq!(
            broken(
                |m| entries(payload(m)).push((Cbor::Text("value".into()), Cbor::Integer(1.into())))
            ),
            DecodeError::DuplicateKey {
                field: "body.value.value".into()
            }
        );
    }

    #[test]
    fn tolerates_unknown_keys_and_other_float_widths() {
        let mut item = generic();
        entries(&mut item).push((Cbor::Text("sig".into()), Cbor::Bytes(vec![1; 64])));
        entries(payload(&mut item)).push((Cbor::Text("raw".into()), Cbor::Integer(7.into())));
        assert_eq!(decode(&to_bytes(&item)).unwrap(), golden());
        // Other encoders may write 21.5 as a half (f9 4d60) or single float.
        let bytes = encode(&golden());
        let double = [0xfb, 0x40, 0x35, 0x80, 0, 0, 0, 0, 0];
        let at = bytes.windows(9).position(|w| w == double).unwrap();
        for short in [&[0xf9, 0x4d, 0x60][..], &[0xfa, 0x41, 0xac, 0, 0]] {
            let other = [&bytes[..at], short, &bytes[at + 9..]].concat();
            assert_eq!(decode(&other).unwrap(), golden());
        }
    }

    #[test]
    fn body_accessors_and_json() {
        let e = golden();
        assert_eq!(e.body.point(), Some("temp1"));
        assert_eq!(e.body.subject_token(), "temp1");
        assert_eq!(e.subject(), "canopy.ev.root.south.temp1");
        let role = Body::Role(RoleBody {
            member: "a".into(),
            role: Role::Active,
            reason: String::new(),
        });
        assert_eq!(role.point(), None);
        assert_eq!(role.subject_token(), "_role");
        let birth = Body::Birth(BirthBody {
            member: "a".into(),
            points: vec![],
        });
        assert_eq!(birth.subject_token(), "_birth");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["prev"], hex::encode(e.prev));
        assert_eq!(json["body"]["value"]["value"], 21.5);
        assert_eq!(json["body"]["value"]["quality"], "good");
    }
}
