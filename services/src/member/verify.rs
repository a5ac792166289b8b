//! Classifying the messages of one origin's stream, in stream order.
//!
//! A stream `EV_<origin>` should hold only that origin's events, each at the
//! stream sequence equal to its seq, chained by `prev`. Anything else
//! (garbage bytes, another origin's event, a forgery with a broken chain) is
//! *foreign*: it keeps its stream sequence (replicas stay byte-faithful, so
//! an auditor sees it too) but is never folded into state, and the chain of
//! the origin's real events continues over it.

use events::{Event, Hash, ZERO_HASH};

/// The verdict on one stream message.
#[derive(Debug)]
pub enum Verdict {
    /// A valid event of the origin, next in its chain.
    Valid(Box<Event>),
    /// Not a valid event at this place; why.
    Foreign(String),
}

/// Per-origin chain cursor over a stream read in order.
#[derive(Debug, Clone)]
pub struct Cursor {
    origin: String,
    /// Hash of the last valid event (what the next one's `prev` must be).
    last_hash: Option<Hash>,
    /// Epoch of the last valid event.
    last_epoch: u64,
}

impl Cursor {
    /// A cursor that has seen nothing yet: the first valid event is taken on
    /// trust for its `prev` (the history before it may have expired).
    pub fn new(origin: &str) -> Self {
        Self {
            origin: origin.to_owned(),
            last_hash: None,
            last_epoch: 0,
        }
    }

    /// A cursor positioned after a known event.
    pub fn after(origin: &str, last_hash: Hash, last_epoch: u64) -> Self {
        Self {
            origin: origin.to_owned(),
            last_hash: Some(last_hash),
            last_epoch,
        }
    }

    /// Judges the message stored at `stream_seq`, advancing on a valid event.
    pub fn judge(&mut self, stream_seq: u64, bytes: &[u8]) -> Verdict {
        let ev = match events::decode(bytes) {
            Ok(ev) => ev,
            Err(e) => return Verdict::Foreign(format!("undecodable: {e}")),
        };
        if ev.origin != self.origin {
            return Verdict::Foreign(format!(
                "origin {:?} in the stream of {:?}",
                ev.origin, self.origin
            ));
        }
        if ev.seq != stream_seq {
            return Verdict::Foreign(format!(
                "seq {} stored at stream sequence {stream_seq}",
                ev.seq
            ));
        }
        match self.last_hash {
            Some(h) if ev.prev != h => {
                return Verdict::Foreign(format!(
                    "seq {}: prev does not chain to the last event",
                    ev.seq
                ));
            }
            None if ev.seq == 1 && ev.prev != ZERO_HASH => {
                return Verdict::Foreign("seq 1 with a non-zero prev".to_owned());
            }
            _ => {}
        }
        if ev.epoch < self.last_epoch {
            return Verdict::Foreign(format!(
                "seq {}: epoch {} older than the origin's current {}",
                ev.seq, ev.epoch, self.last_epoch
            ));
        }
        self.last_hash = Some(events::hash(bytes));
        self.last_epoch = ev.epoch;
        Verdict::Valid(Box::new(ev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::{Body, Chain, Quality, Value, ValueBody};

    fn body(v: i64) -> Body {
        Body::Value(ValueBody {
            point: "p".into(),
            value: Value::Int(v),
            quality: Quality::Good,
        })
    }

    #[test]
    fn valid_chain_passes_and_garbage_is_skipped_without_breaking_it() {
        let mut chain = Chain::new("root.a", "a", 1);
        let e1 = chain.seal(1, body(1)).expect("seal");
        let mut c = Cursor::new("root.a");
        assert!(matches!(c.judge(1, &e1.bytes), Verdict::Valid(_)));
        assert!(matches!(c.judge(2, b"garbage"), Verdict::Foreign(_)));
        // The origin re-seals its next event after the foreign one.
        let mut chain2 = Chain::resume("root.a", "a", 1, 2, events::hash(&e1.bytes));
        let e3 = chain2.seal(3, body(3)).expect("seal");
        assert!(matches!(c.judge(3, &e3.bytes), Verdict::Valid(_)));
    }

    #[test]
    fn forged_prev_and_wrong_origin_are_foreign() {
        let mut chain = Chain::new("root.a", "a", 1);
        let e1 = chain.seal(1, body(1)).expect("seal");
        let mut c = Cursor::new("root.a");
        assert!(matches!(c.judge(1, &e1.bytes), Verdict::Valid(_)));
        let mut forger = Chain::resume("root.a", "x", 1, 1, [7; 32]);
        let f = forger.seal(2, body(9)).expect("seal");
        assert!(matches!(c.judge(2, &f.bytes), Verdict::Foreign(_)));
        let mut other = Chain::new("root.b", "a", 1);
        let o = other.seal(1, body(1)).expect("seal");
        assert!(matches!(
            Cursor::new("root.a").judge(1, &o.bytes),
            Verdict::Foreign(_)
        ));
    }

    #[test]
    fn older_epoch_is_foreign() {
        let mut chain = Chain::new("root.a", "a", 2);
        let e1 = chain.seal(1, body(1)).expect("seal");
        let mut c = Cursor::new("root.a");
        assert!(matches!(c.judge(1, &e1.bytes), Verdict::Valid(_)));
        let mut stale = Chain::resume("root.a", "b", 1, 1, events::hash(&e1.bytes));
        let s = stale.seal(2, body(2)).expect("seal");
        assert!(matches!(c.judge(2, &s.bytes), Verdict::Foreign(_)));
    }
}
