//! Classifying the messages of one origin's stream, in stream order: the
//! lenient reader of a *local* stream (the fold, the rebuild).
//!
//! A stream `EV_<origin>` should hold only that origin's events, each at the
//! stream sequence equal to its seq, chained by `prev`. Anything else
//! (garbage bytes, another origin's event, a forgery with a broken chain) is
//! *foreign*: it keeps its stream sequence (replicas stay byte-faithful, so
//! an auditor sees it too) but is never folded into state, and the chain of
//! the origin's real events continues over it. Whether a message is the
//! next event is the [`ChainVerifier`]'s to say, as for every reader; this
//! one only adds the policy: where the audit reports a [`Break`], it steps
//! over the message.

use crate::verify::{Break, ChainVerifier, Mark};
use crate::wire::{Event, Hash};

/// The verdict on one stream message.
#[derive(Debug)]
pub enum Verdict {
    /// A valid event of the origin, next in its chain; `hash` is the hash
    /// of its bytes (what the next event's `prev` must be).
    Valid {
        /// The decoded event.
        event: Box<Event>,
        /// SHA-256 of its exact bytes.
        hash: Hash,
    },
    /// Not the next event of the origin's chain; why. The chain goes on
    /// from the last valid event.
    Foreign(Break),
}

/// Per-origin chain cursor over a stream read in order: a lenient
/// [`ChainVerifier`] that steps over every break.
#[derive(Debug, Clone)]
pub struct StreamCursor {
    chain: ChainVerifier,
}

impl StreamCursor {
    /// A cursor that has seen nothing yet: the first valid event is taken on
    /// trust for its `prev` (the history before it may have expired), except
    /// that seq 1 must have a zero `prev`.
    pub fn new(origin: &str) -> Self {
        Self::after(origin, None)
    }

    /// A cursor positioned after a known event (`None`: after nothing).
    pub fn after(origin: &str, last: Option<Mark>) -> Self {
        Self {
            chain: ChainVerifier::after(origin, last),
        }
    }

    /// The last valid event accepted, if any.
    pub fn mark(&self) -> Option<Mark> {
        self.chain.last()
    }

    /// Judges the message stored at `stream_seq`, advancing on a valid event.
    pub fn judge(&mut self, stream_seq: u64, bytes: &[u8]) -> Verdict {
        match self.chain.advance(stream_seq, bytes) {
            Ok(v) => Verdict::Valid {
                event: Box::new(v.event),
                hash: v.hash,
            },
            Err(why) => Verdict::Foreign(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Body, Chain, Quality, Value, ValueBody};

    fn body(v: i64) -> Body {
        Body::Value(ValueBody {
            point: "p".into(),
            value: Value::Int(v),
            quality: Quality::Good,
        })
    }

    fn valid(v: &Verdict) -> bool {
        matches!(v, Verdict::Valid { .. })
    }

    #[test]
    fn valid_chain_passes_and_garbage_is_skipped_without_breaking_it() {
        let mut chain = Chain::new("root.a", "a", 1);
        let e1 = chain.seal(1, body(1)).expect("seal");
        let mut c = StreamCursor::new("root.a");
        assert!(valid(&c.judge(1, &e1.bytes)));
        assert!(!valid(&c.judge(2, b"garbage")));
        // The origin re-seals its next event after the foreign one.
        let mut chain2 = Chain::resume("root.a", "a", 1, 2, crate::hash(&e1.bytes));
        let e3 = chain2.seal(3, body(3)).expect("seal");
        assert!(valid(&c.judge(3, &e3.bytes)));
        assert_eq!(c.mark().map(|m| m.seq), Some(3));
    }

    #[test]
    fn a_cursor_resumed_at_a_mark_continues_the_chain() {
        let mut chain = Chain::new("root.a", "a", 1);
        let e1 = chain.seal(1, body(1)).expect("seal");
        let e2 = chain.seal(2, body(2)).expect("seal");
        let mut first = StreamCursor::new("root.a");
        assert!(valid(&first.judge(1, &e1.bytes)));
        let mut resumed = StreamCursor::after("root.a", first.mark());
        assert!(valid(&resumed.judge(2, &e2.bytes)));
        // A mark from another history refuses the next event.
        let mut wrong = StreamCursor::after(
            "root.a",
            Some(Mark {
                seq: 1,
                epoch: 1,
                hash: [9; 32],
            }),
        );
        assert!(!valid(&wrong.judge(2, &e2.bytes)));
    }

    #[test]
    fn forged_prev_and_wrong_origin_are_foreign() {
        let mut chain = Chain::new("root.a", "a", 1);
        let e1 = chain.seal(1, body(1)).expect("seal");
        let mut c = StreamCursor::new("root.a");
        assert!(valid(&c.judge(1, &e1.bytes)));
        let mut forger = Chain::resume("root.a", "x", 1, 1, [7; 32]);
        let f = forger.seal(2, body(9)).expect("seal");
        assert!(!valid(&c.judge(2, &f.bytes)));
        let mut other = Chain::new("root.b", "a", 1);
        let o = other.seal(1, body(1)).expect("seal");
        assert!(!valid(&StreamCursor::new("root.a").judge(1, &o.bytes)));
    }

    #[test]
    fn older_epoch_is_foreign() {
        let mut chain = Chain::new("root.a", "a", 2);
        let e1 = chain.seal(1, body(1)).expect("seal");
        let mut c = StreamCursor::new("root.a");
        assert!(valid(&c.judge(1, &e1.bytes)));
        let mut stale = Chain::resume("root.a", "b", 1, 1, crate::hash(&e1.bytes));
        let s = stale.seal(2, body(2)).expect("seal");
        assert!(!valid(&c.judge(2, &s.bytes)));
    }
}
