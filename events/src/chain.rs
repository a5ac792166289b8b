//! The origin side of the hash chain: assigns seq and prev, encodes, and
//! remembers the hash of what it sealed.

use crate::codec;
use crate::wire::{
    self, Body, Event, Hash, InvalidEvent, MAX_EVENT_BYTES, WIRE_VERSION, ZERO_HASH,
};

/// An origin's writing position: the last sealed (seq, hash) and the epoch
/// the active member writes in. Owned by the active member alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Path of the origin node, written into every event.
    origin: String,
    /// The member writing (this process), written into every event.
    member: String,
    /// Epoch of the current activation; only grows.
    epoch: u64,
    /// Seq of the last sealed event (0 before the first).
    last_seq: u64,
    /// Hash of the last sealed event's bytes: the next event's `prev`.
    last_hash: Hash,
}

/// An event and its exact wire bytes, ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Sealed {
    /// The event as sealed, for logging and the local fold.
    pub event: Event,
    /// The bytes to publish, unchanged: the next event chains on their hash.
    pub bytes: Vec<u8>,
    /// `hash(bytes)`, the next event's `prev`: kept so a caller's cursor
    /// need not hash again.
    pub hash: Hash,
}

/// Why [`Chain::seal`] refused to seal; the chain did not advance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The event would be refused by every consumer (bad name...). Sealing
    /// it anyway would burn a seq that no one can fold past.
    #[error("invalid event: {0}")]
    Invalid(#[from] InvalidEvent),
    /// The encoded event exceeds [`MAX_EVENT_BYTES`] (a huge birth?).
    #[error("encoded event is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// seq would overflow u64.
    #[error("sequence numbers exhausted")]
    SeqExhausted,
}

/// [`Chain::set_epoch`] was asked to go back in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("epoch can only grow: current {current}, requested {requested}")]
pub struct EpochError {
    /// The chain's epoch.
    pub current: u64,
    /// The smaller epoch requested.
    pub requested: u64,
}

impl Chain {
    /// A new origin history: the first event gets seq 1 and `prev` =
    /// [`ZERO_HASH`].
    pub fn new(origin: impl Into<String>, member: impl Into<String>, epoch: u64) -> Self {
        Self::resume(origin, member, epoch, 0, ZERO_HASH)
    }

    /// Continue an existing history (after a restart or a failover): the
    /// last event in the origin's stream was `last_seq` with bytes hashing
    /// to `last_hash`.
    pub fn resume(
        origin: impl Into<String>,
        member: impl Into<String>,
        epoch: u64,
        last_seq: u64,
        last_hash: Hash,
    ) -> Self {
        Self {
            origin: origin.into(),
            member: member.into(),
            epoch,
            last_seq,
            last_hash,
        }
    }

    /// Seal the next event: seq = last + 1, prev = last hash, current epoch;
    /// encode it and advance. On error nothing changes.
    pub fn seal(&mut self, ts: u64, body: Body) -> Result<Sealed, SealError> {
        let seq = self
            .last_seq
            .checked_add(1)
            .ok_or(SealError::SeqExhausted)?;
        let event = Event {
            v: WIRE_VERSION,
            origin: self.origin.clone(),
            member: self.member.clone(),
            epoch: self.epoch,
            seq,
            ts,
            prev: self.last_hash,
            body,
        };
        event.validate()?;
        let bytes = codec::encode(&event);
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(SealError::TooLarge {
                len: bytes.len(),
                max: MAX_EVENT_BYTES,
            });
        }
        let hash = wire::hash(&bytes);
        self.last_seq = seq;
        self.last_hash = hash;
        Ok(Sealed { event, bytes, hash })
    }

    /// The seq the next sealed event will get (also what the stream's last
    /// sequence must be plus one: `Nats-Expected-Last-Sequence` = this - 1).
    pub fn next_seq(&self) -> u64 {
        self.last_seq.saturating_add(1)
    }

    /// Seq of the last sealed event (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Hash of the last sealed event's bytes ([`ZERO_HASH`] if none).
    pub fn last_hash(&self) -> Hash {
        self.last_hash
    }

    /// The epoch events are sealed in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Move to a new activation's epoch. Epochs only grow (setting the same
    /// one again is a no-op): a smaller one means a confused caller.
    pub fn set_epoch(&mut self, epoch: u64) -> Result<(), EpochError> {
        if epoch < self.epoch {
            return Err(EpochError {
                current: self.epoch,
                requested: epoch,
            });
        }
        self.epoch = epoch;
        Ok(())
    }

    /// The origin's path.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The writing member.
    pub fn member(&self) -> &str {
        &self.member
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode;
    use crate::wire::{hash, Quality, Value, ValueBody};

    fn reading(point: &str, v: i64) -> Body {
        Body::Value(ValueBody {
            point: point.into(),
            value: Value::Int(v),
            quality: Quality::Good,
        })
    }

    #[test]
    fn three_sealed_events_link() {
        let mut chain = Chain::new("root.south", "a", 1);
        assert_eq!(chain.next_seq(), 1);
        let sealed: Vec<Sealed> = (0..3)
            .map(|i| chain.seal(100 + i, reading("temp1", i as i64)))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(sealed[0].event.seq, 1);
        assert_eq!(sealed[0].event.prev, ZERO_HASH);
        for pair in sealed.windows(2) {
            assert_eq!(pair[1].event.seq, pair[0].event.seq + 1);
            assert_eq!(pair[1].event.prev, hash(&pair[0].bytes));
        }
        for s in &sealed {
            assert_eq!(s.hash, hash(&s.bytes));
            assert_eq!(decode(&s.bytes).unwrap(), s.event);
        }
        assert_eq!(chain.next_seq(), 4);
        assert_eq!(chain.last_hash(), hash(&sealed[2].bytes));
    }

    #[test]
    fn resume_continues_the_chain() {
        let mut a = Chain::new("root", "a", 1);
        let first = a.seal(1, reading("x", 1)).unwrap();
        let mut b = Chain::resume("root", "b", 2, 1, first.hash);
        let second = b.seal(2, reading("x", 2)).unwrap();
        assert_eq!(second.event.seq, 2);
        assert_eq!(second.event.epoch, 2);
        assert_eq!(second.event.member, "b");
        assert_eq!(second.event.prev, first.hash);
    }

    #[test]
    fn epochs_only_grow() {
        let mut c = Chain::new("root", "a", 3);
        assert_eq!(
            c.set_epoch(2),
            Err(EpochError {
                current: 3,
                requested: 2
            })
        );
        c.set_epoch(3).unwrap();
        c.set_epoch(5).unwrap();
        assert_eq!(c.seal(0, reading("x", 0)).unwrap().event.epoch, 5);
    }

    #[test]
    fn invalid_events_are_not_sealed_and_do_not_advance() {
        let mut c = Chain::new("root", "a", 1);
        assert!(matches!(
            c.seal(0, reading("", 0)),
            Err(SealError::Invalid(InvalidEvent::EmptyName { .. }))
        ));
        assert!(matches!(
            c.seal(0, reading("_role", 0)),
            Err(SealError::Invalid(InvalidEvent::BadName { .. }))
        ));
        let mut bad_origin = Chain::new("Root", "a", 1);
        assert!(bad_origin.seal(0, reading("x", 0)).is_err());
        let huge = Body::Forced(crate::wire::ForcedBody {
            point: "x".into(),
            value: Value::Null,
            by: "o".repeat(MAX_EVENT_BYTES),
        });
        assert!(matches!(c.seal(0, huge), Err(SealError::TooLarge { .. })));
        assert_eq!(c.next_seq(), 1);
        assert_eq!(c.last_hash(), ZERO_HASH);
        let mut full = Chain::resume("root", "a", 1, u64::MAX, ZERO_HASH);
        assert_eq!(full.seal(0, reading("x", 0)), Err(SealError::SeqExhausted));
    }
}
