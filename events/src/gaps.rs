//! Cheap gap detection for consumers that take events live and may miss
//! some ([`GapTracker`]): next expected seq per origin, nothing checked but
//! the order.

use std::collections::BTreeMap;

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
/// may miss some. Cheaper than [`crate::ChainVerifier`]: no hashing, no
/// chain.
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
