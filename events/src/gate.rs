//! Holding back an epoch until the origin's own member opens it: the
//! fold's defence against a well-formed event from someone who is not the
//! origin.
//!
//! A chain can be extended by anyone who can publish on the origin's
//! subject and read its tail: the hash chain proves order, not authorship.
//! An outsider's event chained onto the tail with a huge epoch would be
//! folded (its value shown) and every real event after it, with a lower
//! epoch, refused as a deposed member's. The signatures that prove
//! authorship are the checkpoints: the active member signs the chain head
//! with its key, and the key manifest says which keys are the origin's.
//!
//! So an [`EpochGate`] folds an event of an epoch only once that epoch is
//! *opened*: by a checkpoint of that epoch, chained like any event, signed
//! by a key the manifest gives the member it names, over the head it
//! follows (its `prev`). Every activation's publisher seals such a
//! checkpoint first when it takes over a history, so a new epoch opens
//! with its first event and nothing waits; only an origin's very first
//! events (a fresh stream) wait for the first checkpoint, sealed right
//! after the first event. Events of an unopened epoch are *held*, in
//! order, as a tentative branch of the chain: a checkpoint on that branch
//! releases them all (it signs a head that covers them), and an event that
//! chains onto the last folded event instead proves the branch was never
//! the origin's: it is stepped over, message by message, as foreign.
//!
//! Which keys open is the caller's ([`Opener`]); a gate without one (the
//! plaintext tree, an origin the manifest has no key for) opens every
//! epoch, as a plain [`StreamCursor`] does.

use crate::checkpoint::verify_checkpoint;
use crate::verify::{ChainVerifier, Mark};
use crate::wire::{Body, CheckpointBody, Event, Hash};

/// Held events beyond which the held branch is given up (stepped over as
/// foreign): far more than the checkpoint interval of any topology, so
/// only a branch no checkpoint will ever open gets there.
pub const MAX_HELD: usize = 65_536;

/// Whether `key` is the manifest key of `member` of the gate's origin.
pub type Opener = std::sync::Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// What became of the messages a [`EpochGate::judge`] call let through, in
/// stream order.
#[derive(Debug)]
pub enum Gated {
    /// A valid event to fold, with the hash of its bytes.
    Fold(Box<Event>, Hash),
    /// The message at this stream seq is not the next event; why.
    Foreign(u64, String),
    /// The message at this stream seq is held: a valid link of an epoch
    /// not opened yet.
    Held(u64),
}

/// A lenient chain cursor (see [`crate::StreamCursor`]) that also holds
/// back the events of every epoch until a checkpoint signed by one of the
/// origin's keys opens it (module doc).
pub struct EpochGate {
    origin: String,
    /// The chain of the events let through.
    folded: ChainVerifier,
    /// The highest epoch opened (or taken on trust from a mark).
    opened: Option<u64>,
    /// The held branch, in order (with the foreign messages among it, so
    /// that what is let through stays in stream order), and the chain
    /// after it.
    held: Vec<Item>,
    branch: ChainVerifier,
    opener: Option<Opener>,
}

/// A message behind the first held event.
enum Item {
    Event(Box<Event>, Hash),
    Foreign(u64, String),
}

impl Item {
    fn epoch(&self) -> Option<u64> {
        match self {
            Item::Event(e, _) => Some(e.epoch),
            Item::Foreign(..) => None,
        }
    }

    fn released(self) -> Gated {
        match self {
            Item::Event(e, h) => Gated::Fold(e, h),
            Item::Foreign(s, why) => Gated::Foreign(s, why),
        }
    }
}

impl std::fmt::Debug for EpochGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochGate")
            .field("origin", &self.origin)
            .field("folded", &self.folded.last())
            .field("opened", &self.opened)
            .field("held", &self.held.len())
            .field("checked", &self.opener.is_some())
            .finish()
    }
}

impl EpochGate {
    /// A gate after `last` (`None`: after nothing), whose epoch counts as
    /// opened (it was folded); `opener: None` opens every epoch.
    pub fn after(origin: &str, last: Option<Mark>, opener: Option<Opener>) -> Self {
        Self {
            origin: origin.to_owned(),
            folded: ChainVerifier::after(origin, last),
            opened: last.map(|m| m.epoch),
            held: Vec::new(),
            branch: ChainVerifier::after(origin, last),
            opener,
        }
    }

    /// Counts every epoch up to `epoch` as opened: a publisher walking its
    /// own stream to the head takes what its own and earlier epochs wrote
    /// as it always did, and only a newer epoch must prove itself.
    pub fn open_up_to(&mut self, epoch: u64) {
        self.opened = Some(self.opened.unwrap_or(0).max(epoch));
    }

    /// The last event let through.
    pub fn mark(&self) -> Option<Mark> {
        self.folded.last()
    }

    /// How many messages are held now.
    pub fn holding(&self) -> usize {
        self.held.len()
    }

    /// The epoch of the first held event.
    fn held_epoch(&self) -> u64 {
        self.held.iter().find_map(Item::epoch).unwrap_or(0)
    }

    /// Judges the message stored at `stream_seq`: what to fold, step over
    /// or count as held, in stream order (held events released by this
    /// message come first).
    pub fn judge(&mut self, stream_seq: u64, bytes: &[u8]) -> Vec<Gated> {
        let mut out = Vec::new();
        if !self.held.is_empty() {
            match self.branch.check(stream_seq, bytes) {
                Ok(v) if v.event.epoch >= self.held_epoch() => {
                    let mark = v.mark();
                    if self.opens(&v.event) {
                        self.opened = Some(v.event.epoch);
                        self.branch.accept(mark);
                        self.folded.accept(mark);
                        out.extend(self.held.drain(..).map(Item::released));
                        out.push(Gated::Fold(Box::new(v.event), v.hash));
                    } else if self.held.len() >= MAX_HELD {
                        self.give_up(&mut out, "no checkpoint of its origin opened it");
                        out.push(Gated::Foreign(
                            stream_seq,
                            "it chains onto a branch given up".to_owned(),
                        ));
                    } else {
                        self.branch.accept(mark);
                        self.held.push(Item::Event(Box::new(v.event), v.hash));
                        out.push(Gated::Held(stream_seq));
                    }
                    return out;
                }
                branch => match self.folded.check(stream_seq, bytes) {
                    // The origin's chain went on without the held branch.
                    Ok(_) => self.give_up(
                        &mut out,
                        "the origin's chain went on from the event before it",
                    ),
                    Err(why) => {
                        // Neither: foreign, let through in its place.
                        let why = match branch {
                            Err(b) => b.to_string(),
                            Ok(_) => why.to_string(),
                        };
                        self.held.push(Item::Foreign(stream_seq, why));
                        return out;
                    }
                },
            }
        }
        match self.folded.check(stream_seq, bytes) {
            Err(why) => out.push(Gated::Foreign(stream_seq, why.to_string())),
            Ok(v) => {
                let mark = v.mark();
                let open = self.opener.is_none()
                    || self.opened.is_some_and(|o| v.event.epoch <= o)
                    || self.opens(&v.event);
                self.branch.accept(mark);
                if open {
                    self.opened = Some(self.opened.unwrap_or(0).max(v.event.epoch));
                    self.folded.accept(mark);
                    out.push(Gated::Fold(Box::new(v.event), v.hash));
                } else {
                    self.held.push(Item::Event(Box::new(v.event), v.hash));
                    out.push(Gated::Held(stream_seq));
                }
            }
        }
        out
    }

    /// Steps over the whole held branch as foreign.
    fn give_up(&mut self, out: &mut Vec<Gated>, why: &str) {
        let epoch = self.held_epoch();
        out.extend(self.held.drain(..).map(|item| match item {
            Item::Event(e, _) => Gated::Foreign(
                e.seq,
                format!(
                    "epoch {epoch} was never opened by a checkpoint of its origin's key: {why}"
                ),
            ),
            Item::Foreign(s, why) => Gated::Foreign(s, why),
        }));
        self.branch = self.folded.clone();
    }

    /// Whether `event` opens its epoch: a checkpoint of that epoch over
    /// the head it follows, signed as the member it names with that
    /// member's key.
    fn opens(&self, event: &Event) -> bool {
        let Some(opener) = &self.opener else {
            return true;
        };
        let Body::Checkpoint(b) = &event.body else {
            return false;
        };
        signs_its_place(event, b)
            && opener(&b.member, &b.key)
            && verify_checkpoint(&self.origin, event.epoch, b).is_ok()
    }
}

/// A checkpoint signs the head it follows, as the event's own member.
fn signs_its_place(event: &Event, b: &CheckpointBody) -> bool {
    b.member == event.member && b.head == event.prev && b.head_seq < event.seq
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is the failure report in tests
mod tests {
    use super::*;
    use crate::checkpoint::tests::fixed_user;
    use crate::{sign_checkpoint, Chain, Quality, Value, ValueBody};

    const O: &str = "root.a";

    fn value(v: i64) -> Body {
        Body::Value(ValueBody {
            point: "p".into(),
            value: Value::Int(v),
            quality: Quality::Good,
        })
    }

    /// Seals a checkpoint of `chain`'s head signed with `seed`.
    fn checkpoint(chain: &mut Chain, seed: u8) -> Vec<u8> {
        let kp = fixed_user(seed);
        let body = sign_checkpoint(
            &kp,
            O,
            "a",
            chain.epoch(),
            chain.next_seq() - 1,
            chain.last_hash(),
        )
        .unwrap();
        chain.seal(0, Body::Checkpoint(body)).unwrap().bytes
    }

    fn gate() -> EpochGate {
        let key = fixed_user(1).public_key();
        EpochGate::after(
            O,
            None,
            Some(std::sync::Arc::new(move |member: &str, k: &str| {
                member == "a" && k == key
            })),
        )
    }

    fn kinds(g: &[Gated]) -> String {
        g.iter()
            .map(|x| match x {
                Gated::Fold(e, _) => format!("fold {}", e.seq),
                Gated::Foreign(s, _) => format!("foreign {s}"),
                Gated::Held(s) => format!("held {s}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    #[test]
    fn the_first_events_wait_for_the_first_checkpoint_and_a_new_epoch_opens_at_once() {
        let mut chain = Chain::new(O, "a", 1);
        let mut g = gate();
        let e1 = chain.seal(0, value(1)).unwrap().bytes;
        assert_eq!(kinds(&g.judge(1, &e1)), "held 1");
        let c2 = checkpoint(&mut chain, 1);
        assert_eq!(kinds(&g.judge(2, &c2)), "fold 1, fold 2");
        let e3 = chain.seal(0, value(3)).unwrap().bytes;
        assert_eq!(kinds(&g.judge(3, &e3)), "fold 3");
        // The next activation opens epoch 2 with its first event.
        let mut next = Chain::resume(O, "a", 2, 3, chain.last_hash());
        let c4 = checkpoint(&mut next, 1);
        assert_eq!(kinds(&g.judge(4, &c4)), "fold 4");
        let e5 = next.seal(0, value(5)).unwrap().bytes;
        assert_eq!(kinds(&g.judge(5, &e5)), "fold 5");
        assert_eq!(g.holding(), 0);
    }

    #[test]
    fn an_outsiders_epoch_is_held_and_stepped_over_when_the_origin_goes_on() {
        let mut chain = Chain::new(O, "a", 3);
        let mut g = EpochGate::after(O, None, gate().opener.take());
        let e1 = chain.seal(0, value(1)).unwrap().bytes;
        g.judge(1, &e1);
        let c2 = checkpoint(&mut chain, 1);
        assert_eq!(kinds(&g.judge(2, &c2)), "fold 1, fold 2");
        // The outsider chains onto the tail with a huge epoch, and even
        // signs a checkpoint with a key of its own.
        let mut forged = Chain::resume(O, "a", 1_000_000, 2, chain.last_hash());
        let f3 = forged.seal(0, value(666)).unwrap().bytes;
        assert_eq!(kinds(&g.judge(3, &f3)), "held 3");
        let f4 = checkpoint(&mut forged, 9);
        assert_eq!(kinds(&g.judge(4, &f4)), "held 4");
        // The origin re-seals after the foreign messages, onto its own head.
        let mut real = Chain::resume(O, "a", 3, 4, chain.last_hash());
        let e5 = real.seal(0, value(5)).unwrap().bytes;
        assert_eq!(kinds(&g.judge(5, &e5)), "foreign 3, foreign 4, fold 5");
        assert_eq!(g.mark().map(|m| (m.seq, m.epoch)), Some((5, 3)));
    }

    #[test]
    fn a_checkpoint_signed_by_another_key_or_member_opens_nothing() {
        let mut chain = Chain::new(O, "a", 1);
        let mut g = gate();
        g.judge(1, &chain.seal(0, value(1)).unwrap().bytes);
        let wrong = checkpoint(&mut chain, 2);
        assert_eq!(kinds(&g.judge(2, &wrong)), "held 2");
        // The right key over the right head releases everything held.
        let right = checkpoint(&mut chain, 1);
        assert_eq!(kinds(&g.judge(3, &right)), "fold 1, fold 2, fold 3");
    }

    #[test]
    fn garbage_among_held_events_is_let_through_in_its_place() {
        let mut chain = Chain::new(O, "a", 1);
        let mut g = gate();
        g.judge(1, &chain.seal(0, value(1)).unwrap().bytes);
        assert_eq!(kinds(&g.judge(2, b"garbage")), "");
        let mut chain = Chain::resume(O, "a", 1, 2, chain.last_hash());
        let c3 = checkpoint(&mut chain, 1);
        assert_eq!(kinds(&g.judge(3, &c3)), "fold 1, foreign 2, fold 3");
    }

    #[test]
    fn without_an_opener_every_epoch_is_open_and_a_mark_counts_as_opened() {
        let mut chain = Chain::new(O, "a", 7);
        let mut open = EpochGate::after(O, None, None);
        let e1 = chain.seal(0, value(1)).unwrap().bytes;
        assert_eq!(kinds(&open.judge(1, &e1)), "fold 1");
        let mut g = gate();
        g = EpochGate::after(O, open.mark(), g.opener.take());
        let e2 = chain.seal(0, value(2)).unwrap().bytes;
        assert_eq!(kinds(&g.judge(2, &e2)), "fold 2");
    }
}
