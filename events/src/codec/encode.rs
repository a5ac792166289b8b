//! The encoder: an event to its canonical bytes, field by field in the
//! order of `docs/wire-format.md`.

use crate::cbor::Writer;
use crate::wire::{Body, Event, Value};

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
        Body::Command(b) => {
            w.map(8);
            w.text("op");
            w.text(b.op.as_str());
            w.text("point");
            w.text(&b.point);
            w.text("value");
            encode_value(w, &b.value);
            w.text("by");
            w.text(&b.by);
            w.text("key");
            w.text(&b.key);
            w.text("sig");
            w.bytes(&b.sig);
            w.text("signed");
            w.bytes(&b.signed);
            w.text("outcome");
            w.text(&b.outcome);
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
