//! The one answer to "is this message the next event of origin X's
//! chain": [`ChainVerifier`], a pure type that judges one stream message at
//! a time and names what is wrong with a typed [`Break`].
//!
//! Every reader of an origin's history uses it and adds only its own policy
//! on a break: the lenient reader of a local stream ([`crate::StreamCursor`])
//! steps over the message, the audit ([`crate::audit`]) reports it and,
//! for a broken link or an older epoch, keeps the event in the chain, and
//! [`verify_contiguous`] (strict: seqs 1..=n, no hole) stops at the first.
//!
//! The rules, in the order they are checked:
//!
//! 1. the bytes decode ([`Break::Undecodable`]);
//! 2. the event is the origin's ([`Break::WrongOrigin`]);
//! 3. it sits at its own seq: stream sequence == seq ([`Break::Misplaced`]);
//! 4. it comes after the last accepted event ([`Break::Behind`]); a strict
//!    verifier also refuses any seq but the next ([`Break::Hole`]);
//! 5. its `prev` is the hash of the last accepted event's bytes
//!    ([`Break::BrokenPrev`]), or 32 zero bytes at seq 1
//!    ([`Break::NonZeroGenesis`]); the first event seen above seq 1 is taken
//!    on trust (history before it may have expired);
//! 6. its epoch is not below the last accepted event's
//!    ([`Break::OlderEpoch`]).
//!
//! The verifier moves only when told to ([`ChainVerifier::accept`], or
//! [`ChainVerifier::advance`] on a verified event), so each reader decides
//! what the chain continues from after a break.

use crate::codec::{decode, DecodeError};
use crate::wire::{self, Event, Hash, ZERO_HASH};

/// The last event a verifier accepted: enough to check the next event's
/// link, and to check later that a stream still holds it (a snapshot's
/// anchor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// Its seq (and stream sequence).
    pub seq: u64,
    /// Its epoch.
    pub epoch: u64,
    /// SHA-256 of its exact bytes.
    pub hash: Hash,
}

/// How a verified event links to what came before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Seq 1, `prev` = [`ZERO_HASH`].
    Genesis,
    /// The seq after the last accepted event, chained to it.
    Next,
    /// Chained to the last accepted event (seq `after`) across stream
    /// messages that are not in the chain: the origin re-seals onto its
    /// last valid event when a foreign message took a seq. Never from a
    /// strict verifier.
    Over {
        /// Seq of the last accepted event, which `prev` hashes.
        after: u64,
    },
    /// The first event seen, above seq 1: its `prev` cannot be checked (the
    /// history before it expired, or reading started mid-stream). Never
    /// from a strict verifier.
    Start,
}

/// An event that passed every rule, with the hash its successor's `prev`
/// must carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The decoded event.
    pub event: Event,
    /// SHA-256 of its exact bytes.
    pub hash: Hash,
    /// How it links to the last accepted event.
    pub link: Link,
}

impl Verified {
    /// Where a verifier that accepts this event stands.
    pub fn mark(&self) -> Mark {
        Mark {
            seq: self.event.seq,
            epoch: self.event.epoch,
            hash: self.hash,
        }
    }
}

/// Why a message is not the next event of the verifier's chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    /// The bytes are not a valid event.
    #[error("undecodable: {0}")]
    Undecodable(#[from] DecodeError),
    /// A valid event of another origin.
    #[error("event {seq} of origin {got:?} in the stream of {expected:?}")]
    WrongOrigin {
        /// The event's seq.
        seq: u64,
        /// The verifier's origin.
        expected: String,
        /// The event's origin.
        got: String,
    },
    /// The event's seq is not the stream sequence it is stored at (an
    /// event stored again, or moved).
    #[error("seq {seq} stored at stream sequence {stream_seq}")]
    Misplaced {
        /// The event's seq.
        seq: u64,
        /// Where it is stored.
        stream_seq: u64,
    },
    /// A seq at or below the last accepted one (a replay).
    #[error("seq {seq} is not after the last event (seq {last})")]
    Behind {
        /// The event's seq.
        seq: u64,
        /// Seq of the last accepted event.
        last: u64,
    },
    /// Seqs are missing before this one. Only from a strict verifier.
    #[error("seq {seq} where seq {expected} was expected")]
    Hole {
        /// The event's seq.
        seq: u64,
        /// The seq that should have come.
        expected: u64,
    },
    /// The first event of the chain has a `prev` other than 32 zero bytes.
    #[error("seq 1 with a non-zero prev {}", hex::encode(got))]
    NonZeroGenesis {
        /// The event's `prev`.
        got: Hash,
    },
    /// `prev` is not the hash of the last accepted event's bytes: history
    /// was altered, or the event was built on another history (a fork).
    #[error(
        "prev {} does not chain to the last event (seq {after}, which hashes to {})",
        hex::encode(got),
        hex::encode(expected)
    )]
    BrokenPrev {
        /// The event's seq.
        seq: u64,
        /// Seq of the last accepted event.
        after: u64,
        /// The hash of the last accepted event's bytes.
        expected: Hash,
        /// The event's `prev`.
        got: Hash,
    },
    /// The epoch is below the last accepted event's: written by a deposed
    /// member.
    #[error("epoch {epoch} older than the origin's current {current}")]
    OlderEpoch {
        /// The event's seq.
        seq: u64,
        /// The event's epoch.
        epoch: u64,
        /// The last accepted event's epoch.
        current: u64,
    },
}

/// Checks one origin's stream messages in stream order against the chain
/// of the events it accepted (see the module doc for the rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainVerifier {
    /// The origin whose events it accepts.
    origin: String,
    /// The last accepted event; `None` while fresh.
    last: Option<Mark>,
    /// Refuse a hole: the first event must be seq 1 and each next one the
    /// seq after the last ([`Break::Hole`]). Otherwise a later seq is
    /// accepted if it chains to the last event ([`Link::Over`]), and a
    /// first event above 1 is taken on trust ([`Link::Start`]).
    strict: bool,
}

impl ChainVerifier {
    /// A lenient verifier that has seen nothing of `origin`.
    pub fn new(origin: &str) -> Self {
        Self::after(origin, None)
    }

    /// A lenient verifier positioned after a known event (`None`: after
    /// nothing), e.g. a snapshot's mark.
    pub fn after(origin: &str, last: Option<Mark>) -> Self {
        Self {
            origin: origin.to_owned(),
            last,
            strict: false,
        }
    }

    /// A strict verifier that has seen nothing of `origin`: it accepts only
    /// the whole chain from seq 1, without a hole.
    pub fn strict(origin: &str) -> Self {
        Self {
            strict: true,
            ..Self::new(origin)
        }
    }

    /// The origin it checks.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The last accepted event, if any.
    pub fn last(&self) -> Option<Mark> {
        self.last
    }

    /// Every rule on the message stored at `stream_seq`; the first broken
    /// one is the error. The verifier does not move.
    pub fn check(&self, stream_seq: u64, bytes: &[u8]) -> Result<Verified, Break> {
        let event = self.read(stream_seq, bytes)?;
        let link = self.check_link(&event)?;
        self.check_epoch(&event)?;
        Ok(Verified {
            event,
            hash: wire::hash(bytes),
            link,
        })
    }

    /// [`check`](Self::check), then accept the event. On a break the
    /// verifier does not move.
    pub fn advance(&mut self, stream_seq: u64, bytes: &[u8]) -> Result<Verified, Break> {
        let verified = self.check(stream_seq, bytes)?;
        self.accept(verified.mark());
        Ok(verified)
    }

    /// Continue the chain from `mark`, whatever came before: after
    /// [`advance`](Self::advance) succeeds, or for a reader that keeps an
    /// event despite a break (the audit keeps a broken link or an older
    /// epoch in the chain, so what follows is checked against it).
    pub fn accept(&mut self, mark: Mark) {
        self.last = Some(mark);
    }

    /// Rules 1-3: the bytes are an event of this origin stored at its own
    /// seq.
    pub fn read(&self, stream_seq: u64, bytes: &[u8]) -> Result<Event, Break> {
        let event = decode(bytes)?;
        if event.origin != self.origin {
            return Err(Break::WrongOrigin {
                seq: event.seq,
                expected: self.origin.clone(),
                got: event.origin,
            });
        }
        if event.seq != stream_seq {
            return Err(Break::Misplaced {
                seq: event.seq,
                stream_seq,
            });
        }
        Ok(event)
    }

    /// Rules 4-5: the event's place after the last accepted one, and its
    /// `prev`.
    pub fn check_link(&self, event: &Event) -> Result<Link, Break> {
        let seq = event.seq;
        let Some(last) = self.last else {
            return match seq {
                1 if event.prev != ZERO_HASH => Err(Break::NonZeroGenesis { got: event.prev }),
                1 => Ok(Link::Genesis),
                _ if self.strict => Err(Break::Hole { seq, expected: 1 }),
                _ => Ok(Link::Start),
            };
        };
        if seq <= last.seq {
            return Err(Break::Behind {
                seq,
                last: last.seq,
            });
        }
        let next = last.seq.saturating_add(1);
        if self.strict && seq != next {
            return Err(Break::Hole {
                seq,
                expected: next,
            });
        }
        if event.prev != last.hash {
            return Err(Break::BrokenPrev {
                seq,
                after: last.seq,
                expected: last.hash,
                got: event.prev,
            });
        }
        Ok(if seq == next {
            Link::Next
        } else {
            Link::Over { after: last.seq }
        })
    }

    /// Rule 6: the epoch does not go back.
    pub fn check_epoch(&self, event: &Event) -> Result<(), Break> {
        match self.last {
            Some(last) if event.epoch < last.epoch => Err(Break::OlderEpoch {
                seq: event.seq,
                epoch: event.epoch,
                current: last.epoch,
            }),
            _ => Ok(()),
        }
    }
}

/// Where [`verify_contiguous`] found the chain broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: chain broken at seq {seq}: {cause}")]
pub struct ChainBroken {
    /// The origin verified.
    pub origin: String,
    /// The stream sequence of the first message that is not the next event.
    pub seq: u64,
    /// What is wrong with it.
    pub cause: Break,
}

/// The strict check of a whole stream: `messages` (stream sequence, exact
/// bytes) are `origin`'s events 1..=n in order, each at its own seq, chained
/// from [`ZERO_HASH`], epochs never going back. Returns n.
pub fn verify_contiguous<'a>(
    origin: &str,
    messages: impl IntoIterator<Item = (u64, &'a [u8])>,
) -> Result<u64, ChainBroken> {
    let mut chain = ChainVerifier::strict(origin);
    for (seq, bytes) in messages {
        chain.advance(seq, bytes).map_err(|cause| ChainBroken {
            origin: origin.to_owned(),
            seq,
            cause,
        })?;
    }
    Ok(chain.last().map_or(0, |m| m.seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{Chain, Sealed};
    use crate::codec::encode;
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

    fn at(s: &Sealed) -> (u64, &[u8]) {
        (s.event.seq, &s.bytes)
    }

    #[test]
    fn intact_history_verifies() {
        let h = history(5);
        let mut v = ChainVerifier::strict("root.south");
        for s in &h {
            let (seq, bytes) = at(s);
            let ok = v.advance(seq, bytes).unwrap();
            assert_eq!(ok.link, if seq == 1 { Link::Genesis } else { Link::Next });
            assert_eq!(ok.hash, s.hash);
        }
        let last = v.last().unwrap();
        assert_eq!((last.seq, last.epoch, last.hash), (5, 2, h[4].hash));
        assert_eq!(
            verify_contiguous("root.south", h.iter().map(at)).unwrap(),
            5
        );
        assert_eq!(verify_contiguous("root.south", []).unwrap(), 0);
    }

    #[test]
    fn hole_and_replay() {
        let h = history(4);
        let mut v = ChainVerifier::strict("root.south");
        v.advance(1, &h[0].bytes).unwrap();
        assert_eq!(
            v.advance(3, &h[2].bytes).unwrap_err(),
            Break::Hole {
                seq: 3,
                expected: 2
            }
        );
        v.advance(2, &h[1].bytes).unwrap();
        assert_eq!(
            v.check_link(&h[1].event),
            Err(Break::Behind { seq: 2, last: 2 })
        );
        assert_eq!(
            v.check_link(&h[0].event),
            Err(Break::Behind { seq: 1, last: 2 })
        );
        assert_eq!(v.last().map(|m| m.seq), Some(2));
        // A strict verifier wants the chain from its start.
        assert_eq!(
            ChainVerifier::strict("root.south")
                .check(2, &h[1].bytes)
                .unwrap_err(),
            Break::Hole {
                seq: 2,
                expected: 1
            }
        );
        // The same message twice in a stream.
        let twice = [at(&h[0]), at(&h[0])];
        let err = verify_contiguous("root.south", twice).unwrap_err();
        assert_eq!(err.seq, 1);
        assert_eq!(err.cause, Break::Behind { seq: 1, last: 1 });
    }

    #[test]
    fn older_epoch() {
        let h = history(4); // event 4 is in epoch 2
        let mut v = ChainVerifier::new("root.south");
        for s in &h {
            let (seq, bytes) = at(s);
            v.advance(seq, bytes).unwrap();
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
        assert_eq!(
            v.advance(5, &late.bytes).unwrap_err(),
            Break::OlderEpoch {
                seq: 5,
                epoch: 1,
                current: 2
            }
        );
        assert_eq!(v.last().map(|m| m.seq), Some(4), "a break does not move it");
    }

    #[test]
    fn broken_prev() {
        let h = history(3);
        let mut v = ChainVerifier::new("root.south");
        v.advance(1, &h[0].bytes).unwrap();
        let mut forged = h[1].event.clone();
        forged.prev = [7; 32];
        assert_eq!(
            v.check(2, &encode(&forged)).unwrap_err(),
            Break::BrokenPrev {
                seq: 2,
                after: 1,
                expected: h[0].hash,
                got: [7; 32],
            }
        );
        // Tampered bytes of event 1 break the link to event 2.
        let mut v = ChainVerifier::new("root.south");
        let mut tampered = h[0].bytes.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        v.accept(Mark {
            seq: 1,
            epoch: 1,
            hash: crate::hash(&tampered),
        });
        assert!(matches!(
            v.check_link(&h[1].event),
            Err(Break::BrokenPrev { seq: 2, .. })
        ));
        // A fresh verifier still checks seq 1 against the zero hash.
        let mut first = h[0].event.clone();
        first.prev = [1; 32];
        assert_eq!(
            ChainVerifier::new("root.south").check_link(&first),
            Err(Break::NonZeroGenesis { got: [1; 32] })
        );
        // The strict whole-stream check names where.
        let stream = [at(&h[0]), (2, &tampered[..]), at(&h[2])];
        let err = verify_contiguous("root.south", stream).unwrap_err();
        assert_eq!(err.seq, 2);
        assert!(
            err.to_string()
                .starts_with("root.south: chain broken at seq 2: "),
            "{err}"
        );
    }

    #[test]
    fn truncated_start_is_taken_on_trust_by_a_lenient_verifier() {
        let h = history(5);
        let mut v = ChainVerifier::new("root.south");
        let links: Vec<Link> = h[2..]
            .iter()
            .map(|s| v.advance(s.event.seq, &s.bytes).unwrap().link)
            .collect();
        assert_eq!(links, [Link::Start, Link::Next, Link::Next]);
        assert_eq!(v.last().map(|m| m.seq), Some(5));
    }

    #[test]
    fn a_lenient_verifier_chains_over_messages_not_in_the_chain() {
        let h = history(1);
        let mut v = ChainVerifier::new("root.south");
        v.advance(1, &h[0].bytes).unwrap();
        assert_eq!(
            v.advance(2, b"garbage").unwrap_err().to_string(),
            format!("undecodable: {}", decode(b"garbage").unwrap_err())
        );
        // The origin re-sealed its next event after the foreign one.
        let mut c = Chain::resume("root.south", "a", 1, 2, h[0].hash);
        let e3 = c.seal(30, h[0].event.body.clone()).unwrap();
        assert_eq!(
            v.advance(3, &e3.bytes).unwrap().link,
            Link::Over { after: 1 }
        );
        // Strict: that is a hole.
        let stream = [at(&h[0]), at(&e3)];
        let err = verify_contiguous("root.south", stream).unwrap_err();
        assert_eq!(
            err.to_string(),
            "root.south: chain broken at seq 3: seq 3 where seq 2 was expected"
        );
    }

    #[test]
    fn wrong_origin_and_misplaced_and_accept_after_a_break() {
        let h = history(4);
        assert_eq!(
            ChainVerifier::new("root.north")
                .check(1, &h[0].bytes)
                .unwrap_err(),
            Break::WrongOrigin {
                seq: 1,
                expected: "root.north".into(),
                got: "root.south".into()
            }
        );
        let mut v = ChainVerifier::new("root.south");
        assert_eq!(
            v.check(7, &h[0].bytes).unwrap_err(),
            Break::Misplaced {
                seq: 1,
                stream_seq: 7
            }
        );
        v.advance(1, &h[0].bytes).unwrap();
        assert!(v.advance(3, &h[2].bytes).is_err());
        // A reader that goes on after the break continues from event 3.
        let e3 = v.read(3, &h[2].bytes).unwrap();
        v.accept(Mark {
            seq: e3.seq,
            epoch: e3.epoch,
            hash: h[2].hash,
        });
        assert_eq!(v.advance(4, &h[3].bytes).unwrap().link, Link::Next);
    }
}
