//! Checking an origin's history as it is read: contiguity, epochs, the hash
//! chain ([`OriginCursor`]), and cheap gap detection for live consumers
//! ([`GapTracker`]).

use std::collections::BTreeMap;

use crate::wire::{self, Event, Hash, ZERO_HASH};

/// A broken rule in an origin's history. [`Violation::kind`] gives a stable
/// name for logs, metrics and the audit's output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// Events are missing between the last one and this one.
    #[error("gap: expected seq {expected}, got {got}")]
    Gap {
        /// The seq that should have come.
        expected: u64,
        /// The seq that came.
        got: u64,
    },
    /// A seq at or below the last one seen: a redelivery, or a second event
    /// with a used seq.
    #[error("duplicate seq {seq}")]
    Duplicate {
        /// The seq seen again.
        seq: u64,
    },
    /// The event's epoch is older than the origin's current one: written by
    /// a deposed member.
    #[error("stale epoch {got} (current {current})")]
    StaleEpoch {
        /// The origin's epoch so far.
        current: u64,
        /// The event's epoch.
        got: u64,
    },
    /// `prev` is not the hash of the previous event's bytes: history was
    /// altered, or this event was built on another history (a fork).
    #[error(
        "broken chain at seq {seq}: prev {} but previous event hashes to {}",
        hex::encode(got),
        hex::encode(expected)
    )]
    BrokenChain {
        /// The event whose `prev` is wrong.
        seq: u64,
        /// The hash of the previous event's bytes.
        expected: Hash,
        /// The event's `prev`.
        got: Hash,
    },
    /// The event belongs to another origin than the cursor's.
    #[error("event of origin {got} checked against origin {expected}")]
    OriginMismatch {
        /// The cursor's origin.
        expected: String,
        /// The event's origin.
        got: String,
    },
}

impl Violation {
    /// Stable lowercase name: `gap`, `duplicate`, `stale_epoch`,
    /// `broken_chain`, `origin_mismatch`.
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::Gap { .. } => "gap",
            Violation::Duplicate { .. } => "duplicate",
            Violation::StaleEpoch { .. } => "stale_epoch",
            Violation::BrokenChain { .. } => "broken_chain",
            Violation::OriginMismatch { .. } => "origin_mismatch",
        }
    }
}

/// Verifies one origin's events in seq order: the audit's and a replica
/// reader's view of "is this history intact".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginCursor {
    /// The origin whose events this cursor accepts.
    origin: String,
    /// Seq of the last accepted event; 0 while fresh.
    last_seq: u64,
    /// Epoch of the last accepted event; epochs may not go back.
    last_epoch: u64,
    /// Hash of the last accepted event's bytes: the next `prev`.
    last_hash: Hash,
    /// Set when the cursor started (or restarted) at an event whose `prev`
    /// could not be checked: history before it was truncated by retention
    /// or skipped after a gap. The audit reports it; it is not a violation.
    unverified_start: Option<u64>,
}

impl OriginCursor {
    /// A cursor that has seen nothing of `origin`. A first event with seq 1
    /// must have `prev` = [`ZERO_HASH`]; a first event with a larger seq is
    /// accepted as the start of what retention kept.
    pub fn new(origin: impl Into<String>) -> Self {
        Self {
            origin: origin.into(),
            last_seq: 0,
            last_epoch: 0,
            last_hash: ZERO_HASH,
            unverified_start: None,
        }
    }

    /// A cursor continuing from a known position (a snapshot, a checkpoint).
    pub fn resume(
        origin: impl Into<String>,
        last_seq: u64,
        last_epoch: u64,
        last_hash: Hash,
    ) -> Self {
        Self {
            origin: origin.into(),
            last_seq,
            last_epoch,
            last_hash,
            unverified_start: None,
        }
    }

    /// Whether `event` may follow what the cursor has accepted. Checks, in
    /// order: origin, seq (duplicate, gap), epoch, chain.
    pub fn check(&self, event: &Event) -> Result<(), Violation> {
        if event.origin != self.origin {
            return Err(Violation::OriginMismatch {
                expected: self.origin.clone(),
                got: event.origin.clone(),
            });
        }
        if self.is_fresh() && event.seq > 1 {
            // Truncated history: nothing to check `prev` against.
            return Ok(());
        }
        let expected = self.last_seq.saturating_add(1);
        if event.seq < expected {
            return Err(Violation::Duplicate { seq: event.seq });
        }
        if event.seq > expected {
            return Err(Violation::Gap {
                expected,
                got: event.seq,
            });
        }
        if event.epoch < self.last_epoch {
            return Err(Violation::StaleEpoch {
                current: self.last_epoch,
                got: event.epoch,
            });
        }
        if event.prev != self.last_hash {
            return Err(Violation::BrokenChain {
                seq: event.seq,
                expected: self.last_hash,
                got: event.prev,
            });
        }
        Ok(())
    }

    /// [`check`](Self::check), then accept `event`, whose exact wire bytes
    /// are `bytes`. On a violation the cursor does not move.
    pub fn advance(&mut self, event: &Event, bytes: &[u8]) -> Result<(), Violation> {
        self.check(event)?;
        if self.is_fresh() && event.seq > 1 {
            self.unverified_start = Some(event.seq);
        }
        self.accept(event, bytes);
        Ok(())
    }

    /// Accept `event` as a new, unverified starting point, whatever came
    /// before: lets an auditor report a violation and keep checking the
    /// rest of the history. Only the origin must match.
    pub fn restart(&mut self, event: &Event, bytes: &[u8]) -> Result<(), Violation> {
        if event.origin != self.origin {
            return Err(Violation::OriginMismatch {
                expected: self.origin.clone(),
                got: event.origin.clone(),
            });
        }
        self.unverified_start = Some(event.seq);
        self.accept(event, bytes);
        Ok(())
    }

    fn accept(&mut self, event: &Event, bytes: &[u8]) {
        self.last_seq = event.seq;
        self.last_epoch = self.last_epoch.max(event.epoch);
        self.last_hash = wire::hash(bytes);
    }

    /// Whether no event has been accepted yet.
    pub fn is_fresh(&self) -> bool {
        self.last_seq == 0
    }

    /// The origin this cursor checks.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Seq of the last accepted event (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Epoch of the last accepted event (0 if none).
    pub fn last_epoch(&self) -> u64 {
        self.last_epoch
    }

    /// Hash of the last accepted event's bytes.
    pub fn last_hash(&self) -> Hash {
        self.last_hash
    }

    /// The seq at which verification last (re)started without checking
    /// `prev`, if it did: history before it was not verified.
    pub fn unverified_start(&self) -> Option<u64> {
        self.unverified_start
    }
}

/// What [`GapTracker::observe`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The expected next seq (or the first seen of an origin).
    InOrder,
    /// At or below a seq already seen: drop it.
    Duplicate,
    /// Events `from..=to` were skipped; fetch exactly that range by seq.
    Gap {
        /// First missing seq.
        from: u64,
        /// Last missing seq.
        to: u64,
    },
}

/// Next expected seq per origin, for consumers that take events live and
/// may miss some. Cheaper than [`OriginCursor`]: no hashing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GapTracker {
    /// origin → the seq expected next.
    next: BTreeMap<String, u64>,
}

impl GapTracker {
    /// An empty tracker: the first event of each origin sets its start.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record that `seq` of `origin` arrived. A gap is reported once: the
    /// tracker moves past `seq`, and the caller fetches `from..=to` (and
    /// hands those events to its fold, not back to this tracker).
    pub fn observe(&mut self, origin: &str, seq: u64) -> Observation {
        let after = seq.saturating_add(1);
        let Some(next) = self.next.get_mut(origin) else {
            self.next.insert(origin.to_owned(), after);
            return Observation::InOrder;
        };
        if seq < *next {
            return Observation::Duplicate;
        }
        let expected = *next;
        *next = after;
        if seq == expected {
            Observation::InOrder
        } else {
            Observation::Gap {
                from: expected,
                to: seq - 1,
            }
        }
    }

    /// Declare `last_seq` as the last event of `origin` already held (from
    /// a snapshot), so the next expected is `last_seq + 1`.
    pub fn set(&mut self, origin: &str, last_seq: u64) {
        self.next
            .insert(origin.to_owned(), last_seq.saturating_add(1));
    }

    /// The seq expected next from `origin`, if it has been seen or set.
    pub fn next_expected(&self, origin: &str) -> Option<u64> {
        self.next.get(origin).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{Chain, Sealed};
    use crate::wire::{Body, Quality, Value, ValueBody};

    fn history(n: u64) -> Vec<Sealed> {
        let mut c = Chain::new("root.south", "a", 1);
        (1..=n)
            .map(|i| {
                if i == 4 {
                    c.set_epoch(2).unwrap();
                }
                c.seal(
                    i * 10,
                    Body::Value(ValueBody {
                        point: "temp1".into(),
                        value: Value::Int(i as i64),
                        quality: Quality::Good,
                    }),
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn intact_history_verifies() {
        let h = history(5);
        let mut cur = OriginCursor::new("root.south");
        for s in &h {
            cur.advance(&s.event, &s.bytes).unwrap();
        }
        assert_eq!(cur.last_seq(), 5);
        assert_eq!(cur.last_epoch(), 2);
        assert_eq!(cur.last_hash(), h[4].hash);
        assert_eq!(cur.unverified_start(), None);
    }

    #[test]
    fn gap_and_duplicate() {
        let h = history(4);
        let mut cur = OriginCursor::new("root.south");
        cur.advance(&h[0].event, &h[0].bytes).unwrap();
        let v = cur.advance(&h[2].event, &h[2].bytes).unwrap_err();
        assert_eq!(
            v,
            Violation::Gap {
                expected: 2,
                got: 3
            }
        );
        assert_eq!(v.kind(), "gap");
        cur.advance(&h[1].event, &h[1].bytes).unwrap();
        let v = cur.check(&h[1].event).unwrap_err();
        assert_eq!(v, Violation::Duplicate { seq: 2 });
        assert_eq!(v.kind(), "duplicate");
        assert_eq!(cur.check(&h[0].event), Err(Violation::Duplicate { seq: 1 }));
        assert_eq!(cur.last_seq(), 2);
    }

    #[test]
    fn stale_epoch() {
        let h = history(4); // event 4 is in epoch 2
        let mut cur = OriginCursor::new("root.south");
        for s in &h {
            cur.advance(&s.event, &s.bytes).unwrap();
        }
        // A deposed member of epoch 1 built event 5 on the same history.
        let mut old = Chain::resume("root.south", "b", 1, 4, h[3].hash);
        let late = old
            .seal(
                50,
                Body::Value(ValueBody {
                    point: "temp1".into(),
                    value: Value::Int(99),
                    quality: Quality::Good,
                }),
            )
            .unwrap();
        let v = cur.advance(&late.event, &late.bytes).unwrap_err();
        assert_eq!(v, Violation::StaleEpoch { current: 2, got: 1 });
        assert_eq!(v.kind(), "stale_epoch");
    }

    #[test]
    fn broken_chain() {
        let h = history(3);
        let mut cur = OriginCursor::new("root.south");
        cur.advance(&h[0].event, &h[0].bytes).unwrap();
        let mut forged = h[1].event.clone();
        forged.prev = [7; 32];
        let v = cur.check(&forged).unwrap_err();
        assert_eq!(v.kind(), "broken_chain");
        assert!(matches!(v, Violation::BrokenChain { seq: 2, .. }));
        // Tampered bytes of event 1 break the link to event 2.
        let mut cur = OriginCursor::new("root.south");
        let mut tampered = h[0].bytes.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        cur.advance(&h[0].event, &tampered).unwrap();
        assert_eq!(cur.check(&h[1].event).unwrap_err().kind(), "broken_chain");
        // A fresh cursor still checks seq 1 against the zero hash.
        let mut first = h[0].event.clone();
        first.prev = [1; 32];
        assert_eq!(
            OriginCursor::new("root.south")
                .check(&first)
                .unwrap_err()
                .kind(),
            "broken_chain"
        );
    }

    #[test]
    fn truncated_start_is_accepted_but_recorded() {
        let h = history(5);
        let mut cur = OriginCursor::new("root.south");
        for s in &h[2..] {
            cur.advance(&s.event, &s.bytes).unwrap();
        }
        assert_eq!(cur.unverified_start(), Some(3));
        assert_eq!(cur.last_seq(), 5);
    }

    #[test]
    fn origin_mismatch_and_restart() {
        let h = history(4);
        let cur = OriginCursor::new("root.north");
        let v = cur.check(&h[0].event).unwrap_err();
        assert_eq!(v.kind(), "origin_mismatch");
        let mut cur = OriginCursor::new("root.south");
        cur.advance(&h[0].event, &h[0].bytes).unwrap();
        assert!(cur.advance(&h[2].event, &h[2].bytes).is_err());
        cur.restart(&h[2].event, &h[2].bytes).unwrap();
        cur.advance(&h[3].event, &h[3].bytes).unwrap();
        assert_eq!(cur.unverified_start(), Some(3));
    }

    #[test]
    fn gap_tracker() {
        let mut t = GapTracker::new();
        assert_eq!(t.observe("a", 5), Observation::InOrder);
        assert_eq!(t.observe("a", 6), Observation::InOrder);
        assert_eq!(t.observe("a", 6), Observation::Duplicate);
        assert_eq!(t.observe("a", 3), Observation::Duplicate);
        assert_eq!(t.observe("a", 9), Observation::Gap { from: 7, to: 8 });
        assert_eq!(t.observe("a", 10), Observation::InOrder);
        assert_eq!(t.observe("b", 1), Observation::InOrder);
        t.set("c", 10);
        assert_eq!(t.next_expected("c"), Some(11));
        assert_eq!(t.observe("c", 12), Observation::Gap { from: 11, to: 11 });
        assert_eq!(t.next_expected("zz"), None);
    }
}
