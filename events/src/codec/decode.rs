//! The decoder: the envelope and each body, read in place.

use super::field::{mismatch, need, read_map, schema, wrong, Fault, Field, Parsed, Path};
use super::DecodeError;
use crate::cbor::{check_utf8, Head, Reader};
use crate::wire::{
    BirthBody, Body, CheckpointBody, CommandBody, Event, ForcedBody, PointInfo, ResourceBody,
    RoleBody, UnforcedBody, ValueBody, MAX_EVENT_BYTES,
};

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
/// reported once the whole item is read (see `Fault` in `field.rs`).
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
            b"command" => read_command(r, inner),
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

fn read_command(r: &mut Reader<'_>, depth: usize) -> Parsed<Body> {
    const NAMES: [&str; 8] = [
        "op", "point", "value", "by", "key", "sig", "signed", "outcome",
    ];
    let path = Path::Body("command");
    let (mut op, mut point, mut value, mut by) = (None, None, None, None);
    let (mut key, mut sig, mut signed, mut outcome) = (None, None, None, None);
    read_map(r, depth, path, &NAMES, |r, i, depth| {
        let field = Field::of(path, &NAMES, i, depth);
        match i {
            0 => op = Some(field.command_op(r)?),
            1 => point = Some(field.text(r)?),
            2 => value = Some(field.value(r)?),
            3 => by = Some(field.text(r)?),
            4 => key = Some(field.text(r)?),
            5 => sig = Some(field.byte_vec(r)?),
            6 => signed = Some(field.byte_vec(r)?),
            _ => outcome = Some(field.text(r)?),
        }
        Ok(())
    })?;
    Ok(Body::Command(CommandBody {
        op: need(op, path, "op")?,
        point: need(point, path, "point")?,
        value: need(value, path, "value")?,
        by: need(by, path, "by")?,
        key: need(key, path, "key")?,
        sig: need(sig, path, "sig")?,
        signed: need(signed, path, "signed")?,
        outcome: need(outcome, path, "outcome")?,
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
