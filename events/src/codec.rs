//! The CBOR codec of the envelope: [`encode`] and [`decode`].
//!
//! The encoder writes through [`crate::cbor::Writer`] so the bytes are fixed
//! by this crate alone. The decoder reads the envelope's schema in place
//! with [`crate::cbor::Reader`], so a bad message gets an error naming the
//! field and what was expected, and a good one costs little more than its
//! own strings.

use std::borrow::Cow;
use std::collections::BTreeSet;

use crate::cbor::{
    check_utf8, Head, Malformed, Reader, Writer, SIMPLE_FALSE, SIMPLE_NULL, SIMPLE_TRUE,
};
use crate::wire::{
    BirthBody, Body, CheckpointBody, Event, ForcedBody, Hash, InvalidEvent, PointInfo, Quality,
    ResourceBody, ResourceState, Role, RoleBody, UnforcedBody, Value, ValueBody, MAX_EVENT_BYTES,
    WIRE_VERSION,
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
        Body::Resource(b) => {
            w.map(4);
            w.text("member");
            w.text(&b.member);
            w.text("resource");
            w.text(&b.resource);
            w.text("state");
            w.text(b.state.as_str());
            w.text("reason");
            w.text(&b.reason);
        }
        Body::Checkpoint(b) => {
            w.map(5);
            w.text("member");
            w.text(&b.member);
            w.text("head_seq");
            w.uint(b.head_seq);
            w.text("head");
            w.bytes(&b.head);
            w.text("key");
            w.text(&b.key);
            w.text("sig");
            w.bytes(&b.sig);
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
    /// A byte string of a fixed size (a checkpoint's `head`, 32 bytes, or
    /// `sig`, 64 bytes) has another length.
    #[error("`{field}`: expected {expected} bytes, got {len}")]
    BadLength {
        /// Path of the field.
        field: String,
        /// The length the format requires.
        expected: usize,
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
    /// A text enum (quality, role, resource state) with an unknown name.
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

impl From<Malformed> for DecodeError {
    fn from(m: Malformed) -> Self {
        DecodeError::Malformed {
            reason: m.to_string(),
        }
    }
}

/// The old decoder's value type, for the tests that build broken events.
#[cfg(test)]
type Cbor = ciborium::Value;

/// Decode and validate one event from its exact message bytes.
///
/// Unknown keys in any map are skipped (forward compatibility: a later
/// minor addition does not break older readers); everything the format
/// defines is checked. Never panics.
///
/// One pass over the bytes, in place: every item is read once, the known
/// fields straight into the event, everything else skipped (and checked).
/// A canonical event allocates only its own strings (and a birth its
/// points); the rest is off the common path: a set of unknown keys if a map
/// has any, the chunks of an indefinite-length string joined, an error.
///
/// Which error a bad message gets does not depend on the order of its
/// keys: `Malformed` if the bytes are not exactly one well-formed CBOR item
/// (wherever the fault), else `TrailingBytes`, else the first problem in
/// reading order: a map's keys (text, none twice) before its fields, the
/// fields in the order of `docs/wire-format.md` (`v` first), and last
/// [`Event::validate`]. So a schema error is noted where it is found and
/// reported once the whole item is read (see [`Fault`]).
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: MAX_EVENT_BYTES,
        });
    }
    let mut r = Reader::new(bytes);
    let event = match read_event(&mut r) {
        Err(Fault::Malformed(m)) => return Err(m.into()),
        Err(Fault::Schema(e)) => Err(*e),
        Ok(event) => Ok(event),
    };
    if let Some(count) = bytes.len().checked_sub(r.pos()).filter(|c| *c > 0) {
        return Err(DecodeError::TrailingBytes { count });
    }
    let event = event?;
    event.validate()?;
    Ok(event)
}

/// Why reading one part of an event failed.
#[derive(Debug)]
enum Fault {
    /// The bytes are not one well-formed item: the decode ends here, and
    /// this is its error, whatever else is wrong.
    Malformed(Malformed),
    /// The part is well formed but not what the schema wants. The reader
    /// is left just after the part all the same, so the caller can note
    /// the error and read on (a `Malformed` further on takes precedence).
    /// Boxed, as errors are rare: the results of the reader stay small.
    Schema(Box<DecodeError>),
}

impl From<Malformed> for Fault {
    fn from(m: Malformed) -> Self {
        Fault::Malformed(m)
    }
}

type Parsed<T> = Result<T, Fault>;

fn schema<T>(error: DecodeError) -> Parsed<T> {
    Err(Fault::Schema(Box::new(error)))
}

/// A field [`read_map`] vouched for; `None` cannot happen, and is reported
/// as missing rather than unwrapped.
fn need<T>(field: Option<T>, path: Path, name: &str) -> Parsed<T> {
    field.map_or_else(
        || {
            schema(DecodeError::MissingField {
                field: path.join(name),
            })
        },
        Ok,
    )
}

/// The envelope: the top-level item.
fn read_event(r: &mut Reader<'_>) -> Parsed<Event> {
    const NAMES: [&str; 8] = [
        "v", "origin", "member", "epoch", "seq", "ts", "prev", "body",
    ];
    let env = Path::Event;
    let (mut v, mut origin, mut member, mut epoch) = (None, None, None, None);
    let (mut seq, mut ts, mut prev, mut body) = (None, None, None, None);
    read_map(r, 0, env, &NAMES, |r, i, depth| {
        let field = Field::of(env, &NAMES, i, depth);
        match i {
            0 => v = Some(field.version(r)?),
            1 => origin = Some(field.text(r)?),
            2 => member = Some(field.text(r)?),
            3 => epoch = Some(field.uint(r)?),
            4 => seq = Some(field.uint(r)?),
            5 => ts = Some(field.uint(r)?),
            6 => prev = Some(field.hash(r)?),
            _ => body = Some(read_body(r, depth)?),
        }
        Ok(())
    })?;
    Ok(Event {
        v: need(v, env, "v")?,
        origin: need(origin, env, "origin")?,
        member: need(member, env, "member")?,
        epoch: need(epoch, env, "epoch")?,
        seq: need(seq, env, "seq")?,
        ts: need(ts, env, "ts")?,
        prev: need(prev, env, "prev")?,
        body: need(body, env, "body")?,
    })
}

/// The body, `depth` containers deep: a one-entry map from the tag to the
/// payload. A body of any other size is `BadBody`, whatever its entries.
fn read_body(r: &mut Reader<'_>, depth: usize) -> Parsed<Body> {
    let at = r.pos();
    let head = r.head()?;
    let Head::Map(len) = head else {
        return mismatch(r, head, at, depth, wrong("body", "a map"));
    };
    let inner = depth + 1;
    let mut left = len;
    if !r.more(&mut left)? {
        return schema(DecodeError::BadBody { entries: 0 });
    }
    let at = r.pos();
    let head = r.head()?;
    let body = if let Head::Text(len) = head {
        let tag = r.raw_text(len)?;
        match &*tag {
            b"value" => read_value(r, inner),
            b"forced" => read_forced(r, inner),
            b"unforced" => read_unforced(r, inner),
            b"role" => read_role(r, inner),
            b"birth" => read_birth(r, inner),
            b"resource" => read_resource(r, inner),
            b"checkpoint" => read_checkpoint(r, inner),
            _ => {
                check_utf8(&tag, at)?;
                r.skip(inner)?;
                schema(DecodeError::UnknownBodyTag {
                    tag: String::from_utf8_lossy(&tag).into_owned(),
                })
            }
        }
    } else {
        r.skip_rest(head, at, inner)?;
        r.skip(inner)?;
        schema(wrong("body", "a text tag"))
    };
    if let Err(Fault::Malformed(m)) = body {
        return Err(Fault::Malformed(m));
    }
    let mut entries = 1usize;
    while r.more(&mut left)? {
        r.skip(inner)?;
        r.skip(inner)?;
        entries = entries.saturating_add(1);
    }
    if entries != 1 {
        return schema(DecodeError::BadBody { entries });
    }
    body
}

fn read_value(r: &mut Reader<'_>, depth: usize) -> Parsed<Body> {
    const NAMES: [&str; 3] = ["point", "value", "quality"];
    let path = Path::Body("value");
    let (mut point, mut value, mut quality) = (None, None, None);
    read_map(r, depth, path, &NAMES, |r, i, depth| {
        let field = Field::of(path, &NAMES, i, depth);
        match i {
            0 => point = Some(field.text(r)?),
            1 => value = Some(field.value(r)?),
            _ => quality = Some(field.quality(r)?),
        }
        Ok(())
    })?;
    Ok(Body::Value(ValueBody {
        point: need(point, path, "point")?,
        value: need(value, path, "value")?,
        quality: need(quality, path, "quality")?,
    }))
}

fn read_forced(r: &mut Reader<'_>, depth: usize) -> Parsed<Body> {
    const NAMES: [&str; 3] = ["point", "value", "by"];
    let path = Path::Body("forced");
    let (mut point, mut value, mut by) = (None, None, None);
    read_map(r, depth, path, &NAMES, |r, i, depth| {
        let field = Field::of(path, &NAMES, i, depth);
        match i {
            0 => point = Some(field.text(r)?),
            1 => value = Some(field.value(r)?),
            _ => by = Some(field.text(r)?),
        }
        Ok(())
    })?;
    Ok(Body::Forced(ForcedBody {
        point: need(point, path, "point")?,
        value: need(value, path, "value")?,
        by: need(by, path, "by")?,
    }))
}

fn read_unforced(r: &mut Reader<'_>, depth: usize) -> Parsed<Body> {
    const NAMES: [&str; 2] = ["point", "by"];
    let path = Path::Body("unforced");
    let (mut point, mut by) = (None, None);
    read_map(r, depth, path, &NAMES, |r, i, depth| {
        let field = Field::of(path, &NAMES, i, depth);
        match i {
            0 => point = Some(field.text(r)?),
            _ => by = Some(field.text(r)?),
        }
        Ok(())
    })?;
    Ok(Body::Unforced(UnforcedBody {
        point: need(point, path, "point")?,
        by: need(by, path, "by")?,
    }))
}

fn read_role(r: &mut Reader<'_>, depth: usize) -> Parsed<Body> {
    const NAMES: [&str; 3] = ["member", "role", "reason"];
    let path = Path::Body("role");
    let (mut member, mut role, mut reason) = (None, None, None);
    read_map(r, depth, path, &NAMES, |r, i, depth| {
        let field = Field::of(path, &NAMES, i, depth);
        match i {
            0 => member = Some(field.text(r)?),
            1 => role = Some(field.role(r)?),
            _ => reason = Some(field.text(r)?),
        }
        Ok(())
    })?;
    Ok(Body::Role(RoleBody {
        member: need(member, path, "member")?,
        role: need(role, path, "role")?,
        reason: need(reason, path, "reason")?,
    }))
}

fn read_resource(r: &mut Reader<'_>, depth: usize) -> Parsed<Body> {
    const NAMES: [&str; 4] = ["member", "resource", "state", "reason"];
    let path = Path::Body("resource");
    let (mut member, mut resource, mut state, mut reason) = (None, None, None, None);
    read_map(r, depth, path, &NAMES, |r, i, depth| {
        let field = Field::of(path, &NAMES, i, depth);
        match i {
            0 => member = Some(field.text(r)?),
            1 => resource = Some(field.text(r)?),
            2 => state = Some(field.resource_state(r)?),
            _ => reason = Some(field.text(r)?),
        }
        Ok(())
    })?;
    Ok(Body::Resource(ResourceBody {
        member: need(member, path, "member")?,
        resource: need(resource, path, "resource")?,
        state: need(state, path, "state")?,
        reason: need(reason, path, "reason")?,
    }))
}

fn read_checkpoint(r: &mut Reader<'_>, depth: usize) -> Parsed<Body> {
    const NAMES: [&str; 5] = ["member", "head_seq", "head", "key", "sig"];
    let path = Path::Body("checkpoint");
    let (mut member, mut head_seq, mut head, mut key, mut sig) = (None, None, None, None, None);
    read_map(r, depth, path, &NAMES, |r, i, depth| {
        let field = Field::of(path, &NAMES, i, depth);
        match i {
            0 => member = Some(field.text(r)?),
            1 => head_seq = Some(field.uint(r)?),
            2 => head = Some(field.fixed_bytes::<32>(r)?),
            3 => key = Some(field.text(r)?),
            _ => sig = Some(field.fixed_bytes::<64>(r)?),
        }
        Ok(())
    })?;
    Ok(Body::Checkpoint(CheckpointBody {
        member: need(member, path, "member")?,
        head_seq: need(head_seq, path, "head_seq")?,
        head: need(head, path, "head")?,
        key: need(key, path, "key")?,
        sig: need(sig, path, "sig")?,
    }))
}

fn read_birth(r: &mut Reader<'_>, depth: usize) -> Parsed<Body> {
    const NAMES: [&str; 2] = ["member", "points"];
    let path = Path::Body("birth");
    let (mut member, mut points) = (None, None);
    read_map(r, depth, path, &NAMES, |r, i, depth| {
        match i {
            0 => member = Some(Field::of(path, &NAMES, i, depth).text(r)?),
            _ => points = Some(read_points(r, depth)?),
        }
        Ok(())
    })?;
    Ok(Body::Birth(BirthBody {
        member: need(member, path, "member")?,
        points: need(points, path, "points")?,
    }))
}

/// A birth's points: the first bad point is the error, but every point is
/// read (to the end of the array, for well-formedness).
fn read_points(r: &mut Reader<'_>, depth: usize) -> Parsed<Vec<PointInfo>> {
    let at = r.pos();
    let head = r.head()?;
    let Head::Array(len) = head else {
        let expected = wrong(Path::Body("birth").join("points"), "an array");
        return mismatch(r, head, at, depth, expected);
    };
    let inner = depth + 1;
    // A claimed count is a hint, and a bounded one: don't reserve room for
    // thousands of points on a length's word.
    let hint = len
        .definite()
        .map_or(0, |n| usize::try_from(n.min(64)).unwrap_or(0));
    let mut points = Vec::with_capacity(hint);
    let mut error = None;
    let mut left = len;
    let mut i = 0usize;
    while r.more(&mut left)? {
        if error.is_some() {
            r.skip(inner)?;
        } else {
            match read_point(r, inner, i) {
                Ok(p) => points.push(p),
                Err(Fault::Schema(e)) => error = Some(e),
                Err(m) => return Err(m),
            }
        }
        i = i.saturating_add(1);
    }
    match error {
        Some(e) => Err(Fault::Schema(e)),
        None => Ok(points),
    }
}

fn read_point(r: &mut Reader<'_>, depth: usize, i: usize) -> Parsed<PointInfo> {
    const NAMES: [&str; 3] = ["name", "unit", "writable"];
    let path = Path::Point("birth", i);
    let (mut name, mut unit, mut writable) = (None, None, None);
    read_map(r, depth, path, &NAMES, |r, i, depth| {
        let field = Field::of(path, &NAMES, i, depth);
        match i {
            0 => name = Some(field.text(r)?),
            1 => unit = Some(field.opt_text(r)?),
            _ => writable = Some(field.bool(r)?),
        }
        Ok(())
    })?;
    Ok(PointInfo {
        name: need(name, path, "name")?,
        unit: need(unit, path, "unit")?,
        writable: need(writable, path, "writable")?,
    })
}

/// Reads a map with text keys, `depth` containers deep, whose head comes
/// next. For the first occurrence of each of `names`, `field(r, i, depth)`
/// reads the value of `names[i]` (`depth` is now the value's); every other
/// value is skipped.
///
/// `Ok` means every name was found and read without error. Otherwise the
/// error is, in this order: the map is no map; the first bad key (not a
/// text, or seen before in this map, known or not); then, name by name,
/// the first that is missing or whose value was in error.
fn read_map<'a, const N: usize>(
    r: &mut Reader<'a>,
    depth: usize,
    path: Path,
    names: &[&str; N],
    mut field: impl FnMut(&mut Reader<'a>, usize, usize) -> Parsed<()>,
) -> Parsed<()> {
    let at = r.pos();
    let head = r.head()?;
    let Head::Map(len) = head else {
        return mismatch(r, head, at, depth, wrong(path.name(), "a map"));
    };
    let depth = depth + 1;
    let mut seen = [false; N];
    // Unknown keys are rare; a set (not a list) keeps a hostile map of
    // thousands of them from costing a quadratic duplicate check.
    let mut unknown: Option<BTreeSet<Cow<'a, [u8]>>> = None;
    let mut key_error = None;
    // The error of the earliest name (in `names`) whose value was bad.
    let mut field_error: Option<(usize, Box<DecodeError>)> = None;
    // Keys usually come in the order of `names`: try the next one first.
    let mut next = 0;
    let mut left = len;
    while r.more(&mut left)? {
        let at = r.pos();
        let head = r.head()?;
        let Head::Text(len) = head else {
            r.skip_rest(head, at, depth)?;
            r.skip(depth)?;
            key_error.get_or_insert_with(|| wrong(path.name(), "text map keys"));
            continue;
        };
        let key = r.raw_text(len)?;
        let known = names
            .get(next)
            .filter(|n| n.as_bytes() == &*key)
            .map(|_| next)
            .or_else(|| names.iter().position(|n| n.as_bytes() == &*key));
        let first = match known.and_then(|i| seen.get_mut(i).map(|s| (i, s))) {
            Some((i, seen)) if !*seen => {
                *seen = true;
                next = i + 1;
                match field(r, i, depth) {
                    Ok(()) => {}
                    Err(Fault::Schema(e)) => {
                        if field_error.as_ref().is_none_or(|(j, _)| i < *j) {
                            field_error = Some((i, e));
                        }
                    }
                    Err(m) => return Err(m),
                }
                continue;
            }
            Some(_) => false,
            None => {
                check_utf8(&key, at)?;
                unknown
                    .get_or_insert_with(BTreeSet::new)
                    .insert(key.clone())
            }
        };
        if !first {
            key_error.get_or_insert_with(|| DecodeError::DuplicateKey {
                field: path.join(&String::from_utf8_lossy(&key)),
            });
        }
        r.skip(depth)?;
    }
    if let Some(e) = key_error {
        return schema(e);
    }
    for (i, (name, seen)) in names.iter().zip(seen).enumerate() {
        if let Some((_, e)) = field_error.take_if(|(j, _)| *j == i) {
            return Err(Fault::Schema(e));
        }
        if !seen {
            return schema(DecodeError::MissingField {
                field: path.join(name),
            });
        }
    }
    Ok(())
}

/// A part of the wrong type, whose head (read at `at`) was just read: skip
/// the rest of it and report `error`.
fn mismatch<T>(
    r: &mut Reader<'_>,
    head: Head,
    at: usize,
    depth: usize,
    error: DecodeError,
) -> Parsed<T> {
    r.skip_rest(head, at, depth)?;
    schema(error)
}

fn wrong(field: impl Into<String>, expected: &'static str) -> DecodeError {
    DecodeError::WrongType {
        field: field.into(),
        expected,
    }
}

/// Where a map is in the event, to name it and its fields in errors. Kept
/// as parts and only turned into a string for an error.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// The envelope.
    Event,
    /// A body payload, `body.<tag>`.
    Body(&'static str),
    /// A birth point, `body.<tag>.points[<i>]`.
    Point(&'static str, usize),
}

impl Path {
    /// The map itself.
    fn name(self) -> String {
        match self {
            Path::Event => "event".into(),
            Path::Body(tag) => format!("body.{tag}"),
            Path::Point(tag, i) => format!("body.{tag}.points[{i}]"),
        }
    }

    /// A field of the map.
    fn join(self, field: &str) -> String {
        match self {
            Path::Event => field.into(),
            _ => format!("{}.{field}", self.name()),
        }
    }
}

/// One known field, about to be read: where it is, to skip a value of the
/// wrong type and to name the field in errors.
#[derive(Debug, Clone, Copy)]
struct Field {
    /// How many containers enclose the value.
    depth: usize,
    path: Path,
    name: &'static str,
}

impl Field {
    fn of<const N: usize>(path: Path, names: &[&'static str; N], i: usize, depth: usize) -> Self {
        Self {
            depth,
            path,
            name: names.get(i).copied().unwrap_or_default(),
        }
    }

    fn path(self) -> String {
        self.path.join(self.name)
    }

    fn wrong<T>(
        self,
        r: &mut Reader<'_>,
        head: Head,
        at: usize,
        expected: &'static str,
    ) -> Parsed<T> {
        mismatch(r, head, at, self.depth, wrong(self.path(), expected))
    }

    fn out_of_range<T>(self) -> Parsed<T> {
        schema(DecodeError::OutOfRange { field: self.path() })
    }

    fn uint(self, r: &mut Reader<'_>) -> Parsed<u64> {
        let at = r.pos();
        match r.head()? {
            Head::Uint(n) => Ok(n),
            Head::Nint(_) => self.out_of_range(),
            head => self.wrong(r, head, at, "an unsigned integer"),
        }
    }

    /// `v`: checked here, so that it is the first error when it is wrong
    /// (a later version may change other fields: "unsupported version" is
    /// the useful error, not a complaint about some field).
    fn version(self, r: &mut Reader<'_>) -> Parsed<u8> {
        let v = self.uint(r)?;
        match u8::try_from(v) {
            Ok(v) if v == WIRE_VERSION => Ok(v),
            _ => schema(InvalidEvent::UnsupportedVersion { got: v }.into()),
        }
    }

    fn str<'a>(self, r: &mut Reader<'a>) -> Parsed<Cow<'a, str>> {
        let at = r.pos();
        match r.head()? {
            Head::Text(len) => Ok(r.text(len)?),
            head => self.wrong(r, head, at, "a text string"),
        }
    }

    fn text(self, r: &mut Reader<'_>) -> Parsed<String> {
        Ok(self.str(r)?.into_owned())
    }

    fn opt_text(self, r: &mut Reader<'_>) -> Parsed<Option<String>> {
        let at = r.pos();
        match r.head()? {
            Head::Text(len) => Ok(Some(r.text(len)?.into_owned())),
            Head::Simple(SIMPLE_NULL) => Ok(None),
            head => self.wrong(r, head, at, "a text string or null"),
        }
    }

    fn bool(self, r: &mut Reader<'_>) -> Parsed<bool> {
        let at = r.pos();
        match r.head()? {
            Head::Simple(SIMPLE_FALSE) => Ok(false),
            Head::Simple(SIMPLE_TRUE) => Ok(true),
            head => self.wrong(r, head, at, "a boolean"),
        }
    }

    fn hash(self, r: &mut Reader<'_>) -> Parsed<Hash> {
        let at = r.pos();
        match r.head()? {
            Head::Bytes(len) => {
                let b = r.bytes(len)?;
                Hash::try_from(&*b).or_else(|_| schema(DecodeError::BadHashLength { len: b.len() }))
            }
            head => self.wrong(r, head, at, "a byte string"),
        }
    }

    /// A byte string of exactly `N` bytes (a checkpoint's `head`, `sig`).
    fn fixed_bytes<const N: usize>(self, r: &mut Reader<'_>) -> Parsed<[u8; N]> {
        let at = r.pos();
        match r.head()? {
            Head::Bytes(len) => {
                let b = r.bytes(len)?;
                <[u8; N]>::try_from(&*b).or_else(|_| {
                    schema(DecodeError::BadLength {
                        field: self.path(),
                        expected: N,
                        len: b.len(),
                    })
                })
            }
            head => self.wrong(r, head, at, "a byte string"),
        }
    }

    fn value(self, r: &mut Reader<'_>) -> Parsed<Value> {
        let at = r.pos();
        match r.head()? {
            Head::Simple(SIMPLE_NULL) => Ok(Value::Null),
            Head::Simple(SIMPLE_FALSE) => Ok(Value::Bool(false)),
            Head::Simple(SIMPLE_TRUE) => Ok(Value::Bool(true)),
            Head::Uint(n) => match i64::try_from(n) {
                Ok(n) => Ok(Value::Int(n)),
                Err(_) => self.out_of_range(),
            },
            // -1 - n, which is !n in two's complement (and cannot overflow).
            Head::Nint(n) => match i64::try_from(n) {
                Ok(n) => Ok(Value::Int(!n)),
                Err(_) => self.out_of_range(),
            },
            Head::Float(f) => Ok(Value::Float(f)),
            head => self.wrong(r, head, at, "null, a boolean, an integer or a float"),
        }
    }

    /// A text enum (quality, role, resource state): a text first, then a
    /// known name.
    fn name_of<T>(self, r: &mut Reader<'_>, known: impl Fn(&str) -> Option<T>) -> Parsed<T> {
        let s = self.str(r)?;
        known(&s).map_or_else(
            || {
                schema(DecodeError::UnknownVariant {
                    field: self.path(),
                    got: s.into_owned(),
                })
            },
            Ok,
        )
    }

    fn quality(self, r: &mut Reader<'_>) -> Parsed<Quality> {
        self.name_of(r, |s| match s {
            "good" => Some(Quality::Good),
            "bad" => Some(Quality::Bad),
            "uncertain" => Some(Quality::Uncertain),
            _ => None,
        })
    }

    fn role(self, r: &mut Reader<'_>) -> Parsed<Role> {
        self.name_of(r, |s| match s {
            "active" => Some(Role::Active),
            "standby" => Some(Role::Standby),
            _ => None,
        })
    }

    fn resource_state(self, r: &mut Reader<'_>) -> Parsed<ResourceState> {
        self.name_of(r, |s| match s {
            "in_service" => Some(ResourceState::InService),
            "pending_oos" => Some(ResourceState::PendingOos),
            "oos" => Some(ResourceState::Oos),
            _ => None,
        })
    }
}

#[cfg(test)]
mod oracle;

#[cfg(test)]
mod differential;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{hash, CheckpointBody, ZERO_HASH};

    /// The golden event of `docs/wire-format.md`.
    pub(super) fn golden() -> Event {
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

    /// The event after the golden one: a resource coming into service,
    /// chained to it (the resource example of `docs/wire-format.md`).
    pub(super) fn golden_resource() -> Event {
        Event {
            seq: 43,
            ts: 1_700_000_000_223_456,
            prev: hash(&encode(&golden())),
            body: Body::Resource(ResourceBody {
                member: "a".into(),
                resource: "plc_poller".into(),
                state: ResourceState::InService,
                reason: "activation".into(),
            }),
            ..golden()
        }
    }

    const GOLDEN_RESOURCE_HEX: &str = concat!(
        "a8617601666f726967696e6a726f6f742e736f757468666d656d626572616165",
        "65706f63680363736571182b6274731b00060a241821a8e06470726576582060",
        "d86b393c90d4b6af6d1da674ecadfe9c9fdd5c42a8ba048731af1bc0f014b964",
        "626f6479a1687265736f75726365a4666d656d6265726161687265736f757263",
        "656a706c635f706f6c6c65726573746174656a696e5f73657276696365667265",
        "61736f6e6a61637469766174696f6e",
    );

    #[test]
    fn golden_resource_bytes_never_change() {
        let event = golden_resource();
        let bytes = encode(&event);
        assert_eq!(bytes.len(), 175);
        assert_eq!(hex::encode(&bytes), GOLDEN_RESOURCE_HEX);
        assert_eq!(decode(&bytes).unwrap(), event);
        assert_eq!(
            hex::encode(hash(&bytes)),
            "7f6e2d3cfd320b58f3b04f8a8c31b20e0579e673b597917f7f51376c05aac260",
            "the hash the next event's prev would carry"
        );
        assert_eq!(event.subject(), "canopy.ev.root.south._resource");
        // The other two states, body only.
        for (state, hex_state) in [
            (ResourceState::PendingOos, "6b70656e64696e675f6f6f73"),
            (ResourceState::Oos, "636f6f73"),
        ] {
            let e = Event {
                body: Body::Resource(ResourceBody {
                    state,
                    ..match golden_resource().body {
                        Body::Resource(b) => b,
                        _ => unreachable!(),
                    }
                }),
                ..golden_resource()
            };
            let want = GOLDEN_RESOURCE_HEX.replace("6a696e5f73657276696365", hex_state);
            assert_eq!(hex::encode(encode(&e)), want, "{state}");
            assert_eq!(decode(&hex::decode(&want).unwrap()).unwrap(), e);
        }
    }

    /// The event after the resource one: member `a` signs it (seq 43) as
    /// the chain head. The checkpoint example of `docs/wire-format.md`; the
    /// key is `fixed_user(1)`'s (seed 32 × 0x01).
    pub(super) fn golden_checkpoint() -> Event {
        let head = hash(&encode(&golden_resource()));
        let kp = crate::checkpoint::tests::fixed_user(1);
        let body = crate::sign_checkpoint(&kp, "root.south", "a", 3, 43, head).unwrap();
        Event {
            seq: 44,
            ts: 1_700_000_000_323_456,
            prev: head,
            body: Body::Checkpoint(body),
            ..golden()
        }
    }

    const GOLDEN_CHECKPOINT_HEX: &str = concat!(
        "a8617601666f726967696e6a726f6f742e736f757468666d656d626572616165",
        "65706f63680363736571182c6274731b00060a2418232f80647072657658207f",
        "6e2d3cfd320b58f3b04f8a8c31b20e0579e673b597917f7f51376c05aac26064",
        "626f6479a16a636865636b706f696e74a5666d656d626572616168686561645f",
        "736571182b646865616458207f6e2d3cfd320b58f3b04f8a8c31b20e0579e673",
        "b597917f7f51376c05aac260636b6579783855434649525936354f5145374446",
        "50354b4c4e53325046324c565a4d555a594a58344f5a49455133364e32495141",
        "4e55423558565a34354c63736967584074150c83a13d7e7a39fb8a86757865e1",
        "d836422975ef911403ca2dfe9a46d9658dd9e22e5cd1348fa61d55ecf291922a",
        "71f79b754b5e2e95f0c49dbd16d40e00",
    );

    /// The key of `fixed_user(1)`, and its signature in the golden
    /// checkpoint.
    const GOLDEN_KEY: &str = "UCFIRY65OQE7DFP5KLNS2PF2LVZMUZYJX4OZIEQ36N2IQANUB5XVZ45L";
    const GOLDEN_SIG: &str = concat!(
        "74150c83a13d7e7a39fb8a86757865e1d836422975ef911403ca2dfe9a46d965",
        "8dd9e22e5cd1348fa61d55ecf291922a71f79b754b5e2e95f0c49dbd16d40e00",
    );

    #[test]
    fn golden_checkpoint_bytes_never_change() {
        let event = golden_checkpoint();
        let bytes = encode(&event);
        assert_eq!(bytes.len(), 304);
        assert_eq!(hex::encode(&bytes), GOLDEN_CHECKPOINT_HEX);
        assert_eq!(decode(&bytes).unwrap(), event);
        assert_eq!(
            hex::encode(hash(&bytes)),
            "0071cbb4fa057eb1abed03325d926a1ad9ac840bd573ff2b69110eab1db24e82",
            "the hash the next event's prev would carry"
        );
        assert_eq!(event.subject(), "canopy.ev.root.south._checkpoint");
        assert_eq!(event.body.tag(), "checkpoint");
        assert_eq!(event.body.point(), None);
        let Body::Checkpoint(b) = &event.body else {
            unreachable!()
        };
        assert_eq!(b.key, GOLDEN_KEY);
        assert_eq!(hex::encode(b.sig), GOLDEN_SIG);
        crate::verify_checkpoint("root.south", 3, b).unwrap();
        // The message signed, as the doc spells it.
        let msg = crate::checkpoint_message("root.south", "a", 3, 43, &b.head);
        assert_eq!(
            hex::encode(&msg),
            concat!(
                "63616e6f70792d636865636b706f696e742d763100",
                "726f6f742e736f75746800",
                "6100",
                "0000000000000003",
                "000000000000002b",
                "7f6e2d3cfd320b58f3b04f8a8c31b20e0579e673b597917f7f51376c05aac260",
            )
        );
        let json = serde_json::to_value(&event.body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"checkpoint": {
                "member": "a", "head_seq": 43,
                "head": "7f6e2d3cfd320b58f3b04f8a8c31b20e0579e673b597917f7f51376c05aac260",
                "key": GOLDEN_KEY, "sig": GOLDEN_SIG,
            }})
        );
    }

    /// The checkpoint body, held to the same rules as the others.
    #[test]
    fn checkpoint_body_strictness() {
        fn cp(item: &mut Cbor) -> &mut Cbor {
            get(get(item, "body"), "checkpoint")
        }
        let broken = |f: &dyn Fn(&mut Cbor)| {
            let mut item: Cbor =
                ciborium::de::from_reader(encode(&golden_checkpoint()).as_slice()).unwrap();
            f(&mut item);
            let bytes = to_bytes(&item);
            let new = decode(&bytes);
            // The old decoder (the oracle) agrees on every case here.
            assert_eq!(super::oracle::decode(&bytes), new);
            new
        };
        assert_eq!(broken(&|_| ()).unwrap(), golden_checkpoint());
        for field in ["member", "head_seq", "head", "key", "sig"] {
            assert_eq!(
                broken(&|m| entries(cp(m)).retain(|(k, _)| k.as_text() != Some(field))),
                Err(DecodeError::MissingField {
                    field: format!("body.checkpoint.{field}")
                })
            );
            assert!(matches!(
                broken(&|m| *get(cp(m), field) = Cbor::Array(vec![])),
                Err(DecodeError::WrongType { field: f, .. }) if f == format!("body.checkpoint.{field}")
            ));
            assert_eq!(
                broken(&|m| entries(cp(m)).push((Cbor::Text(field.into()), Cbor::Null))),
                Err(DecodeError::DuplicateKey {
                    field: format!("body.checkpoint.{field}")
                })
            );
        }
        // Bytes are bytes: a hex text is no head, no signature.
        for field in ["head", "sig"] {
            assert!(matches!(
                broken(&|m| *get(cp(m), field) = Cbor::Text("00".into())),
                Err(DecodeError::WrongType { field: f, expected: "a byte string" })
                    if f == format!("body.checkpoint.{field}")
            ));
        }
        for (field, expected) in [("head", 32usize), ("sig", 64)] {
            for len in [0, expected - 1, expected + 1, 2 * expected] {
                assert_eq!(
                    broken(&|m| *get(cp(m), field) = Cbor::Bytes(vec![7; len])),
                    Err(DecodeError::BadLength {
                        field: format!("body.checkpoint.{field}"),
                        expected,
                        len
                    })
                );
            }
        }
        assert_eq!(
            broken(&|m| *get(cp(m), "head_seq") = Cbor::Integer((-1).into())),
            Err(DecodeError::OutOfRange {
                field: "body.checkpoint.head_seq".into()
            })
        );
        // Names and keys.
        assert_eq!(
            broken(&|m| *get(cp(m), "member") = Cbor::Text("A".into())),
            Err(DecodeError::Invalid(InvalidEvent::BadName {
                field: "body.checkpoint.member".into(),
                value: "A".into()
            }))
        );
        let account = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::Account, [1; 32])
            .unwrap()
            .public_key();
        let server = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::Server, [1; 32])
            .unwrap()
            .public_key();
        let seed = crate::checkpoint::tests::fixed_user(1).seed().unwrap();
        let mut bad_crc = GOLDEN_KEY.to_owned();
        bad_crc.replace_range(55.., "A");
        let mut flipped = GOLDEN_KEY.to_owned();
        flipped.replace_range(10..11, "B");
        for bad in [
            String::new(),
            "U".into(),
            GOLDEN_KEY.to_lowercase(),
            format!("{GOLDEN_KEY}A"),
            GOLDEN_KEY[..55].to_owned(),
            format!(" {}", &GOLDEN_KEY[1..]),
            bad_crc,
            flipped,
            account,
            server,
            seed,
        ] {
            assert_eq!(
                broken(&|m| *get(cp(m), "key") = Cbor::Text(bad.clone())),
                Err(DecodeError::Invalid(InvalidEvent::BadKey {
                    field: "body.checkpoint.key".into(),
                    value: bad.clone()
                })),
                "{bad}"
            );
        }
        // Another valid user key decodes (the signature is the audit's
        // business, not the decoder's).
        let other = crate::checkpoint::tests::fixed_user(2).public_key();
        assert!(matches!(
            broken(&|m| *get(cp(m), "key") = Cbor::Text(other.clone())),
            Ok(Event { body: Body::Checkpoint(CheckpointBody { key, .. }), .. }) if key == other
        ));
        // Unknown keys are ignored, keys come in any order.
        assert_eq!(
            broken(&|m| {
                entries(cp(m)).push((Cbor::Text("alg".into()), Cbor::Text("ed25519".into())));
                entries(cp(m)).reverse();
            })
            .unwrap(),
            golden_checkpoint()
        );
        // Only as the sole entry of a body, under its exact tag.
        assert_eq!(
            broken(&|m| {
                let body = get(m, "body");
                let inner = get(body, "checkpoint").clone();
                entries(body).push((Cbor::Text("role".into()), inner));
            }),
            Err(DecodeError::BadBody { entries: 2 })
        );
        assert_eq!(
            broken(&|m| {
                let body = get(m, "body");
                let inner = get(body, "checkpoint").clone();
                *body = Cbor::Map(vec![(Cbor::Text("Checkpoint".into()), inner)]);
            }),
            Err(DecodeError::UnknownBodyTag {
                tag: "Checkpoint".into()
            })
        );
        // The writer's own check is the reader's.
        let mut bad = golden_checkpoint();
        if let Body::Checkpoint(b) = &mut bad.body {
            b.key = "UABC".into();
        }
        assert!(matches!(bad.validate(), Err(InvalidEvent::BadKey { .. })));
        assert!(matches!(
            crate::Chain::new("root.south", "a", 1).seal(0, bad.body),
            Err(crate::SealError::Invalid(InvalidEvent::BadKey { .. }))
        ));
    }

    pub(super) fn every_body() -> Vec<Body> {
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
        for (state, resource, reason) in [
            (ResourceState::InService, "plc_poller", "activation"),
            (ResourceState::PendingOos, "publisher", ""),
            (
                ResourceState::Oos,
                "hook_2",
                "dépendance: plc_poller hors service",
            ),
        ] {
            bodies.push(Body::Resource(ResourceBody {
                member: "b".into(),
                resource: resource.into(),
                state,
                reason: reason.into(),
            }));
        }
        for (seed, member, head_seq) in [(1u8, "a", 1u64), (2, "b_2", u64::MAX)] {
            let kp = crate::checkpoint::tests::fixed_user(seed);
            let head = [seed.wrapping_mul(37); 32];
            let body = crate::sign_checkpoint(&kp, "root.south", member, 9, head_seq, head);
            bodies.push(Body::Checkpoint(body.unwrap()));
        }
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

    /// The resource body, held to the same rules as the others.
    #[test]
    fn resource_body_strictness() {
        fn resource(item: &mut Cbor) -> &mut Cbor {
            get(get(item, "body"), "resource")
        }
        let broken = |f: &dyn Fn(&mut Cbor)| {
            let mut item: Cbor =
                ciborium::de::from_reader(encode(&golden_resource()).as_slice()).unwrap();
            f(&mut item);
            decode(&to_bytes(&item))
        };
        assert_eq!(broken(&|_| ()).unwrap(), golden_resource());
        for field in ["member", "resource", "state", "reason"] {
            assert_eq!(
                broken(&|m| entries(resource(m)).retain(|(k, _)| k.as_text() != Some(field))),
                Err(DecodeError::MissingField {
                    field: format!("body.resource.{field}")
                })
            );
            assert!(matches!(
                broken(&|m| *get(resource(m), field) = Cbor::Integer(1.into())),
                Err(DecodeError::WrongType { field: f, .. }) if f == format!("body.resource.{field}")
            ));
        }
        for bad in [
            "InService",
            "in-service",
            "in service",
            "",
            "out_of_service",
        ] {
            assert_eq!(
                broken(&|m| *get(resource(m), "state") = Cbor::Text(bad.into())),
                Err(DecodeError::UnknownVariant {
                    field: "body.resource.state".into(),
                    got: bad.into()
                })
            );
        }
        for field in ["member", "resource"] {
            assert_eq!(
                broken(&|m| *get(resource(m), field) = Cbor::Text(String::new())),
                Err(DecodeError::Invalid(InvalidEvent::EmptyName {
                    field: format!("body.resource.{field}")
                }))
            );
            for bad in ["Plc", "plc.poller", "plc-poller", "plc poller", "*", ">"] {
                assert_eq!(
                    broken(&|m| *get(resource(m), field) = Cbor::Text(bad.into())),
                    Err(DecodeError::Invalid(InvalidEvent::BadName {
                        field: format!("body.resource.{field}"),
                        value: bad.into()
                    }))
                );
            }
        }
        // A resource is a token, not a point name: a leading `_` is fine.
        let mut e = golden_resource();
        if let Body::Resource(b) = &mut e.body {
            b.resource = "_hooks".into();
        }
        assert_eq!(decode(&encode(&e)).unwrap(), e);
        // The writer's own check is the reader's.
        let mut bad = golden_resource();
        if let Body::Resource(b) = &mut bad.body {
            b.resource = "PLC".into();
        }
        assert!(matches!(
            bad.validate(),
            Err(InvalidEvent::BadName { field, .. }) if field == "body.resource.resource"
        ));
        assert_eq!(
            broken(&|m| entries(resource(m))
                .push((Cbor::Text("state".into()), Cbor::Text("oos".into())))),
            Err(DecodeError::DuplicateKey {
                field: "body.resource.state".into()
            })
        );
        // Unknown extra keys are ignored, in the payload and the envelope.
        assert_eq!(
            broken(&|m| {
                entries(resource(m)).push((Cbor::Text("since".into()), Cbor::Integer(7.into())));
                entries(resource(m)).push((Cbor::Text("deps".into()), Cbor::Array(vec![])));
                entries(m).push((Cbor::Text("sig".into()), Cbor::Bytes(vec![0; 8])));
            })
            .unwrap(),
            golden_resource()
        );
        // Keys in any order.
        assert_eq!(
            broken(&|m| entries(resource(m)).reverse()).unwrap(),
            golden_resource()
        );
        // And only as the sole entry of a body.
        assert_eq!(
            broken(&|m| {
                let body = get(m, "body");
                let inner = get(body, "resource").clone();
                entries(body).push((Cbor::Text("role".into()), inner));
            }),
            Err(DecodeError::BadBody { entries: 2 })
        );
        assert_eq!(
            broken(&|m| {
                let body = get(m, "body");
                let inner = get(body, "resource").clone();
                *body = Cbor::Map(vec![(Cbor::Text("resources".into()), inner)]);
            }),
            Err(DecodeError::UnknownBodyTag {
                tag: "resources".into()
            })
        );
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
        let resource = golden_resource();
        assert_eq!(resource.body.tag(), "resource");
        assert_eq!(resource.body.point(), None);
        assert_eq!(resource.body.subject_token(), "_resource");
        assert_eq!(
            resource.body.subject_token(),
            crate::subjects::RESOURCE_TOKEN
        );
        assert_eq!(
            serde_json::to_value(&resource.body).unwrap(),
            serde_json::json!({"resource": {
                "member": "a", "resource": "plc_poller",
                "state": "in_service", "reason": "activation"
            }})
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["prev"], hex::encode(e.prev));
        assert_eq!(json["body"]["value"]["value"], 21.5);
        assert_eq!(json["body"]["value"]["quality"], "good");
    }
}
