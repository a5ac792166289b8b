//! Tamper tests: a clean history of three epochs, written as an origin
//! writes it (chained, checkpointed with the members' keys), then broken in
//! every way the audit must see, each with its exact verdict.

use nkeys::KeyPair;

use super::*;
use crate::checkpoint::tests::fixed_user;
use crate::wire::{BirthBody, PointInfo, Quality, Role, RoleBody, Value, ValueBody};
use crate::{encode, sign_checkpoint, Chain};

const ORIGIN: &str = "root.south";
/// The origin checkpoints after every N values (and at every activation).
const N: u64 = 4;
/// Between two events, in microseconds of `ts`.
const STEP_US: u64 = 100_000;

fn cfg() -> AuditConfig {
    AuditConfig {
        checkpoint_every_events: N,
        checkpoint_every_ms: 60_000,
    }
}

fn key_a() -> KeyPair {
    fixed_user(1)
}

fn key_b() -> KeyPair {
    fixed_user(2)
}

/// Someone else's key: valid, but in no manifest.
fn key_x() -> KeyPair {
    fixed_user(9)
}

fn manifest() -> Manifest {
    let mut m = Manifest::default();
    m.insert(ORIGIN, "a", key_a().public_key());
    m.insert(ORIGIN, "b", key_b().public_key());
    // Another origin's keys are not this one's.
    m.insert("root.north", "a", key_x().public_key());
    m
}

fn value(v: i64) -> Body {
    Body::Value(ValueBody {
        point: "temp1".into(),
        value: Value::Int(v),
        quality: Quality::Good,
    })
}

type Hook = Box<dyn FnMut(u64, &mut CheckpointBody)>;

/// An origin writing its stream: `msgs[i]` is the message at stream
/// sequence `i + 1`.
struct Origin {
    msgs: Vec<Vec<u8>>,
    chain: Chain,
    kp: KeyPair,
    ts: u64,
    values: u64,
    /// Seqs of the checkpoint events written.
    checkpoints: Vec<u64>,
    /// Called on each checkpoint body (with the seq it will get) before it
    /// is sealed: how a test forges one.
    hook: Hook,
}

impl Origin {
    fn new(hook: Hook) -> Self {
        Self {
            msgs: Vec::new(),
            chain: Chain::new(ORIGIN, "a", 1),
            kp: key_a(),
            ts: 1_700_000_000_000_000,
            values: 0,
            checkpoints: Vec::new(),
            hook,
        }
    }

    fn seal(&mut self, body: Body) -> u64 {
        self.ts += STEP_US;
        let sealed = self.chain.seal(self.ts, body).unwrap();
        self.msgs.push(sealed.bytes);
        sealed.event.seq
    }

    /// A reading; a checkpoint after every N of them.
    fn value(&mut self) {
        self.values += 1;
        self.seal(value(self.values as i64));
        if self.values.is_multiple_of(N) {
            self.checkpoint();
        }
    }

    fn checkpoint(&mut self) {
        let c = &self.chain;
        let mut body = sign_checkpoint(
            &self.kp,
            ORIGIN,
            c.member(),
            c.epoch(),
            c.last_seq(),
            c.last_hash(),
        )
        .unwrap();
        (self.hook)(c.next_seq(), &mut body);
        let seq = self.seal(Body::Checkpoint(body));
        self.checkpoints.push(seq);
    }

    /// The first activation: a birth, then a checkpoint of it.
    fn birth(&mut self) {
        self.seal(Body::Birth(BirthBody {
            member: "a".into(),
            points: vec![PointInfo {
                name: "temp1".into(),
                unit: None,
                writable: false,
            }],
        }));
        self.checkpoint();
    }

    /// `member` takes over in the next epoch: a role event, then (if
    /// `sign`) a checkpoint of the history it inherits.
    fn failover(&mut self, member: &str, kp: KeyPair, sign: bool) {
        let c = &self.chain;
        self.chain = Chain::resume(ORIGIN, member, c.epoch() + 1, c.last_seq(), c.last_hash());
        self.kp = kp;
        self.values = 0;
        self.seal(Body::Role(RoleBody {
            member: member.into(),
            role: Role::Active,
            reason: "failover".into(),
        }));
        if sign {
            self.checkpoint();
        }
    }

    fn values(&mut self, n: u64) {
        for _ in 0..n {
            self.value();
        }
    }

    /// Another writer of this origin, on top of the stream as it is: a
    /// deposed member, or a split brain.
    fn intruder(&self, member: &str, epoch: u64) -> Chain {
        let c = &self.chain;
        Chain::resume(ORIGIN, member, epoch, c.last_seq(), c.last_hash())
    }

    fn append(&mut self, chain: &mut Chain, body: Body) {
        self.ts += STEP_US;
        let sealed = chain.seal(self.ts, body).unwrap();
        self.msgs.push(sealed.bytes);
        self.chain = Chain::resume(
            ORIGIN,
            self.chain.member(),
            self.chain.epoch(),
            sealed.event.seq,
            sealed.hash,
        );
    }
}

/// The clean history, with `hook` applied to each checkpoint:
///
/// | seqs | epoch | member | what |
/// | --- | --- | --- | --- |
/// | 1-14 | 1 | a | birth 1, checkpoints 2 (head 1), 7 (head 6), 12 (head 11) |
/// | 15-27 | 2 | b | role 15, checkpoints 16 (head 15), 21, 26 |
/// | 28-37 | 3 | a | role 28, checkpoints 29 (head 28), 34 |
fn history_with(hook: Hook) -> Origin {
    let mut o = Origin::new(hook);
    o.birth();
    o.values(10);
    o.failover("b", key_b(), true);
    o.values(9);
    o.failover("a", key_a(), true);
    o.values(7);
    assert_eq!(o.msgs.len(), 37);
    assert_eq!(o.checkpoints, [2, 7, 12, 16, 21, 26, 29, 34]);
    o
}

fn history() -> Origin {
    history_with(Box::new(|_, _| ()))
}

/// Messages at consecutive stream sequences from 1.
fn stream(msgs: &[Vec<u8>]) -> Vec<(u64, Vec<u8>)> {
    (1..).zip(msgs.iter().cloned()).collect()
}

fn run_with(messages: &[(u64, Vec<u8>)], cfg: AuditConfig) -> OriginReport {
    audit(
        ORIGIN,
        &manifest(),
        cfg,
        messages.iter().map(|(s, b)| (*s, b.as_slice())),
    )
}

fn run(messages: &[(u64, Vec<u8>)]) -> OriginReport {
    run_with(messages, cfg())
}

fn verdict(r: &OriginReport) -> Vec<(&'static str, u64)> {
    r.violations.iter().map(|v| (v.kind, v.seq)).collect()
}

fn audit_of(msgs: &[Vec<u8>]) -> Vec<(&'static str, u64)> {
    verdict(&run(&stream(msgs)))
}

/// The event at seq `seq` of `msgs`, re-encoded after `f` changed it
/// (its `prev` kept: an edit in place).
fn edited(msgs: &[Vec<u8>], seq: u64, f: impl FnOnce(&mut Event)) -> Vec<u8> {
    let mut e = decode(&msgs[seq as usize - 1]).unwrap();
    f(&mut e);
    encode(&e)
}

fn set_value(e: &mut Event) {
    if let Body::Value(b) = &mut e.body {
        b.value = Value::Int(-999);
    } else {
        panic!("not a value: {e:?}");
    }
}

// ------------------------------------------------ clean

#[test]
fn clean_history_has_no_violation() {
    let o = history();
    let r = run(&stream(&o.msgs));
    assert_eq!(r.violations, []);
    assert!(r.is_clean());
    assert_eq!(r.origin, ORIGIN);
    assert_eq!((r.first_seq, r.last_seq, r.events), (1, 37, 37));
    assert_eq!(r.checkpoints, 8);
    assert_eq!(
        r.epochs,
        [
            (1, "a".to_owned(), 1, 14),
            (2, "b".to_owned(), 15, 27),
            (3, "a".to_owned(), 28, 37)
        ]
    );
    // Fed one by one, the same.
    let mut a = Auditor::new(ORIGIN, &manifest(), cfg());
    for (seq, bytes) in stream(&o.msgs) {
        a.feed(seq, &bytes);
    }
    assert_eq!(a.finish(), r);
    // Nothing fed: an empty report.
    let empty = run(&[]);
    assert_eq!((empty.first_seq, empty.last_seq, empty.events), (0, 0, 0));
    assert!(empty.is_clean());
}

#[test]
fn every_prefix_is_clean() {
    // A stream cut anywhere (truncated, or read live while the origin
    // writes): the tail is never judged, so no violation.
    let o = history();
    for len in 0..=o.msgs.len() {
        assert_eq!(audit_of(&o.msgs[..len]), [], "prefix of {len}");
    }
}

#[test]
fn history_may_start_where_retention_cut_it() {
    let o = history();
    let from = |seq: u64| -> Vec<(u64, Vec<u8>)> {
        stream(&o.msgs)
            .into_iter()
            .filter(|(s, _)| *s >= seq)
            .collect()
    };
    for start in 2..=37 {
        let r = run(&from(start));
        assert_eq!(verdict(&r), [], "from {start}");
        assert_eq!(r.first_seq, start);
        assert_eq!(r.events, 38 - start);
    }
    // Mid-epoch 2: its start is not in view, so no checkpoint is asked of
    // it; the checkpoint at 16 signs a head (15) not held: not compared.
    let r = run(&from(16));
    assert_eq!(
        r.epochs,
        [(2, "b".to_owned(), 16, 27), (3, "a".to_owned(), 28, 37)]
    );
    assert_eq!(r.checkpoints, 5);
}

// ------------------------------------------------ edits

#[test]
fn edited_value_breaks_the_next_link() {
    let o = history();
    let mut msgs = o.msgs.clone();
    msgs[3] = edited(&msgs, 4, set_value);
    assert_eq!(audit_of(&msgs), [("broken_chain", 5)]);
}

#[test]
fn edited_head_breaks_the_link_and_the_checkpoint() {
    // Event 6 is the head checkpoint 7 signs.
    let o = history();
    let mut msgs = o.msgs.clone();
    msgs[5] = edited(&msgs, 6, set_value);
    assert_eq!(
        audit_of(&msgs),
        [("broken_chain", 7), ("bad_checkpoint", 7)]
    );
}

#[test]
fn edited_and_rechained_history_fails_every_later_checkpoint() {
    // The forger edits event 4 and recomputes every later prev, so no link
    // is broken; but no checkpoint after it signs what is stored now.
    let o = history();
    let mut msgs = o.msgs.clone();
    msgs[3] = edited(&msgs, 4, set_value);
    for seq in 5..=37u64 {
        let prev = hash(&msgs[seq as usize - 2]);
        msgs[seq as usize - 1] = edited(&msgs, seq, |e| e.prev = prev);
    }
    assert_eq!(
        audit_of(&msgs),
        [
            // Only checkpoint 2 (head 1) still holds: nothing after it is
            // signed. Epoch 1's events are not followed by 3N events of
            // their own epoch, and each later epoch's missing signature is
            // its own role-change violation.
            ("bad_checkpoint", 7),
            ("bad_checkpoint", 12),
            ("no_checkpoint_at_role_change", 15),
            ("bad_checkpoint", 16),
            ("bad_checkpoint", 21),
            ("bad_checkpoint", 26),
            ("no_checkpoint_at_role_change", 28),
            ("bad_checkpoint", 29),
            ("bad_checkpoint", 34),
        ]
    );
}

// ------------------------------------------------ drops, moves, copies

#[test]
fn dropped_event_is_a_gap() {
    let o = history();
    let mut s = stream(&o.msgs);
    s.remove(8); // seq 9
    let r = run(&s);
    assert_eq!(verdict(&r), [("gap", 9)]);
    assert_eq!(r.violations[0].detail, "stream sequences 9..=9 missing");
    // A dropped checkpoint too (the next one covers what it did).
    let mut s = stream(&o.msgs);
    s.remove(20); // seq 21
    assert_eq!(verdict(&run(&s)), [("gap", 21)]);
    // Several in a row: one gap.
    let mut s = stream(&o.msgs);
    s.drain(9..12); // seqs 10..=12
    assert_eq!(verdict(&run(&s)), [("gap", 10)]);
}

#[test]
fn reordered_events() {
    let o = history();
    // Stored swapped (a tampered replica): each is at the other's stream
    // sequence.
    let mut msgs = o.msgs.clone();
    msgs.swap(8, 9); // seqs 9 and 10
    assert_eq!(audit_of(&msgs), [("duplicate", 9), ("duplicate", 10)]);
    // Delivered out of order (each at its own stream sequence): 9 is
    // missing when 10 comes, and comes again after it.
    let mut s = stream(&o.msgs);
    s.swap(8, 9);
    assert_eq!(verdict(&run(&s)), [("gap", 9), ("duplicate", 9)]);
}

#[test]
fn duplicated_events() {
    let o = history();
    // The same message delivered twice.
    let mut s = stream(&o.msgs);
    s.insert(9, s[8].clone());
    let r = run(&s);
    assert_eq!(verdict(&r), [("duplicate", 9)]);
    assert_eq!(r.events, 37);
    // An old event stored again at the end (a replay).
    let mut msgs = o.msgs.clone();
    msgs.push(msgs[8].clone());
    let r = run(&stream(&msgs));
    assert_eq!(verdict(&r), [("duplicate", 38)]);
    assert_eq!(
        r.violations[0].detail,
        "event seq 9 stored at stream sequence 38"
    );
}

// ------------------------------------------------ epochs

#[test]
fn deposed_member_writing_late_is_a_stale_epoch() {
    // b (epoch 2) writes on top of epoch 3's history.
    let mut o = history();
    let mut late = o.intruder("b", 2);
    o.append(&mut late, value(7));
    assert_eq!(audit_of(&o.msgs), [("stale_epoch", 38)]);
    // ...and a, active in epoch 3, goes on after it: epoch 3 had ended
    // (at 38) and comes back: two members in alternation.
    let mut a = o.intruder("a", 3);
    o.append(&mut a, value(8));
    assert_eq!(
        audit_of(&o.msgs),
        [("stale_epoch", 38), ("interleaved_epochs", 39)]
    );
}

/// a (epoch 1) sealed two more events before b took over; only the second
/// reached the stream, late: after b's first event (the first was refused,
/// b had taken its seq) and at its own seq (it expected exactly that tail).
/// It chains onto the event that never landed. b re-seals over it. With
/// `sealed_late`, a sealed it after b's first event instead.
fn late_append(sealed_late: bool) -> (Vec<Vec<u8>>, u64) {
    let mut o = Origin::new(Box::new(|_, _| ()));
    o.birth();
    o.values(3);
    let mut a = o.intruder("a", 1);
    let _lost = a.seal(o.ts + 1, value(100)).unwrap();
    let early_ts = o.ts + 2;
    o.ts += 10;
    o.failover("b", key_b(), false);
    let ts = if sealed_late { o.ts + 1 } else { early_ts };
    let late = a.seal(ts, value(101)).unwrap();
    let (role_seq, role_hash) = (o.chain.last_seq(), o.chain.last_hash());
    assert_eq!(late.event.seq, role_seq + 1);
    o.msgs.push(late.bytes);
    o.chain = Chain::resume(ORIGIN, "b", 2, role_seq + 1, role_hash);
    o.checkpoint();
    o.values(3);
    (o.msgs, role_seq + 1)
}

#[test]
fn a_late_append_sealed_before_the_next_epoch_is_fenced_not_a_violation() {
    let (msgs, late) = late_append(false);
    let r = run(&stream(&msgs));
    assert_eq!(verdict(&r), [], "{:?}", r.violations);
    assert_eq!(r.fenced, [late]);
    // Every reader's verifier steps over it too, and b's events chain.
    let mut v = crate::ChainVerifier::new(ORIGIN);
    let breaks: Vec<u64> = stream(&msgs)
        .iter()
        .filter(|(seq, b)| v.advance(*seq, b).is_err())
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(breaks, [late]);
}

#[test]
fn a_late_append_sealed_after_the_next_epoch_began_is_a_stale_epoch() {
    let (msgs, late) = late_append(true);
    let r = run(&stream(&msgs));
    assert!(r.fenced.is_empty());
    assert!(
        verdict(&r).contains(&("stale_epoch", late)),
        "{:?}",
        r.violations
    );
}

#[test]
fn two_members_in_one_epoch() {
    // b writes in epoch 3, whose member is a.
    let mut o = history();
    let mut b = o.intruder("b", 3);
    o.append(&mut b, value(7));
    let r = run(&stream(&o.msgs));
    assert_eq!(verdict(&r), [("interleaved_epochs", 38)]);
    assert_eq!(
        r.violations[0].detail,
        "written by b in epoch 3, whose member is a"
    );
    assert_eq!(r.epochs.last(), Some(&(3, "b".to_owned(), 38, 38)));
    // Alternating, each write is one.
    let mut a = o.intruder("a", 3);
    o.append(&mut a, value(8));
    let mut b = o.intruder("b", 3);
    o.append(&mut b, value(9));
    assert_eq!(
        audit_of(&o.msgs),
        [("interleaved_epochs", 38), ("interleaved_epochs", 40)]
    );
}

// ------------------------------------------------ checkpoints

#[test]
fn checkpoint_signed_with_a_key_not_in_the_manifest() {
    // Checkpoint 21 (mid-epoch 2, member b) signed by an outsider as b.
    let o = history_with(Box::new(|seq, body| {
        if seq == 21 {
            let b = sign_checkpoint(&key_x(), ORIGIN, "b", 2, body.head_seq, body.head);
            *body = b.unwrap();
        }
    }));
    let r = run(&stream(&o.msgs));
    assert_eq!(verdict(&r), [("wrong_signer", 21)]);
    assert!(r.violations[0]
        .detail
        .contains("not the manifest key of root.south/b"));
    assert_eq!(r.checkpoints, 7);
}

#[test]
fn checkpoint_signed_by_the_other_member() {
    // a's own key, as a, in b's epoch: a is not epoch 2's member.
    let as_a = history_with(Box::new(|seq, body| {
        if seq == 21 {
            *body = sign_checkpoint(&key_a(), ORIGIN, "a", 2, body.head_seq, body.head).unwrap();
        }
    }));
    let r = run(&stream(&as_a.msgs));
    assert_eq!(verdict(&r), [("wrong_signer", 21)]);
    assert_eq!(
        r.violations[0].detail,
        "signed as member a, but epoch 2's member is b"
    );
    // a's key claiming to be b.
    let as_b = history_with(Box::new(|seq, body| {
        if seq == 21 {
            *body = sign_checkpoint(&key_a(), ORIGIN, "b", 2, body.head_seq, body.head).unwrap();
        }
    }));
    assert_eq!(audit_of(&as_b.msgs), [("wrong_signer", 21)]);
}

#[test]
fn member_missing_from_the_manifest() {
    let o = history();
    let mut m = manifest();
    m.keys.remove("root.south/b");
    let r = audit(
        ORIGIN,
        &m,
        cfg(),
        stream(&o.msgs).iter().map(|(s, b)| (*s, b.as_slice())),
    );
    assert_eq!(
        verdict(&r),
        [
            ("no_checkpoint_at_role_change", 15),
            ("wrong_signer", 16),
            ("wrong_signer", 21),
            ("wrong_signer", 26),
        ]
    );
    assert!(r.violations[1].detail.ends_with("(none)"));
}

#[test]
fn corrupt_signature() {
    let o = history_with(Box::new(|seq, body| {
        if seq == 21 {
            body.sig[17] ^= 0x40;
        }
    }));
    let r = run(&stream(&o.msgs));
    assert_eq!(verdict(&r), [("bad_signature", 21)]);
    assert_eq!(r.checkpoints, 7);
    // A signature over another head than the body says.
    let o = history_with(Box::new(|seq, body| {
        if seq == 21 {
            body.head_seq -= 1;
        }
    }));
    assert_eq!(audit_of(&o.msgs), [("bad_signature", 21)]);
}

#[test]
fn forged_role_change_checkpoint_also_misses_the_role_change() {
    // The checkpoint b writes on taking over (16) is forged: epoch 2 then
    // has no valid checkpoint in its first N events (15-18).
    let o = history_with(Box::new(|seq, body| {
        if seq == 16 {
            let b = sign_checkpoint(&key_x(), ORIGIN, "b", 2, body.head_seq, body.head);
            *body = b.unwrap();
        }
    }));
    assert_eq!(
        audit_of(&o.msgs),
        [("no_checkpoint_at_role_change", 15), ("wrong_signer", 16)]
    );
    let o = history_with(Box::new(|seq, body| {
        if seq == 16 {
            body.sig[0] ^= 1;
        }
    }));
    assert_eq!(
        audit_of(&o.msgs),
        [("no_checkpoint_at_role_change", 15), ("bad_signature", 16)]
    );
}

#[test]
fn checkpoint_whose_head_is_not_the_chain() {
    // Rightly signed, but over a head the chain does not hold.
    let wrong_head = history_with(Box::new(|seq, body| {
        if seq == 21 {
            let b = sign_checkpoint(&key_b(), ORIGIN, "b", 2, body.head_seq, [0xee; 32]);
            *body = b.unwrap();
        }
    }));
    let r = run(&stream(&wrong_head.msgs));
    assert_eq!(verdict(&r), [("bad_checkpoint", 21)]);
    assert!(r.violations[0].detail.starts_with("head eeee"));
    // Its own seq as head, a future one, and 0.
    for head_seq in [21, 22, 0] {
        let o = history_with(Box::new(move |seq, body| {
            if seq == 21 {
                let b = sign_checkpoint(&key_b(), ORIGIN, "b", 2, head_seq, body.head);
                *body = b.unwrap();
            }
        }));
        assert_eq!(audit_of(&o.msgs), [("bad_checkpoint", 21)], "{head_seq}");
    }
    // Back before the previous checkpoint's head (15), even rightly.
    let back = history_with(Box::new(|seq, body| {
        if seq == 21 {
            let head = hash(&history().msgs[13]); // event 14
            *body = sign_checkpoint(&key_b(), ORIGIN, "b", 2, 14, head).unwrap();
        }
    }));
    assert_eq!(audit_of(&back.msgs), [("bad_checkpoint", 21)]);
    // An older head than the newest, but not before the previous
    // checkpoint's: valid.
    let older = history_with(Box::new(|seq, body| {
        if seq == 21 {
            let head = hash(&history().msgs[16]); // event 17
            *body = sign_checkpoint(&key_b(), ORIGIN, "b", 2, 17, head).unwrap();
        }
    }));
    let r = run(&stream(&older.msgs));
    assert_eq!(verdict(&r), []);
    assert_eq!(r.checkpoints, 8);
}

#[test]
fn new_epoch_without_its_checkpoint() {
    let mut o = Origin::new(Box::new(|_, _| ()));
    o.birth();
    o.values(10);
    o.failover("b", key_b(), false); // 15: role, then values 16-19, checkpoint 20
    o.values(9);
    assert_eq!(
        o.checkpoints,
        [2, 7, 12, 20, 25],
        "b checkpoints only after N values"
    );
    let r = run(&stream(&o.msgs));
    assert_eq!(verdict(&r), [("no_checkpoint_at_role_change", 15)]);
    assert_eq!(
        r.violations[0].detail,
        "epoch 2 of member b: no valid checkpoint in its first 4 events"
    );
    // Cut before the epoch's N-th event (18): not judged yet.
    assert_eq!(audit_of(&o.msgs[..17]), []);
    assert_eq!(
        audit_of(&o.msgs[..18]),
        [("no_checkpoint_at_role_change", 15)]
    );
    // The first epoch too, from seq 1.
    let mut o = Origin::new(Box::new(|_, _| ()));
    o.values(N);
    assert_eq!(audit_of(&o.msgs), [("no_checkpoint_at_role_change", 1)]);
    // A rule off is off.
    let off = AuditConfig {
        checkpoint_every_events: 0,
        checkpoint_every_ms: 0,
    };
    assert_eq!(verdict(&run_with(&stream(&o.msgs), off)), []);
}

#[test]
fn unsigned_tail_by_count() {
    // After checkpoint 34 (head 33), 35 is the oldest unsigned event (34 is
    // signed itself): more than 3N = 12 events after it is a violation, 12
    // is not.
    let mut o = history();
    o.values(2); // 38, 39: values 7, 8 of the epoch: checkpoint 39 due
    assert_eq!(o.checkpoints.last(), Some(&39), "the origin checkpoints");
    let mut quiet = history();
    quiet.checkpoints.clear();
    for v in 0..13 {
        quiet.seal(value(100 + v));
    }
    assert_eq!(quiet.msgs.len(), 50);
    assert_eq!(audit_of(&quiet.msgs[..47]), []);
    let r = run(&stream(&quiet.msgs[..48]));
    assert_eq!(verdict(&r), [("unsigned_tail", 35)]);
    assert_eq!(
        r.violations[0].detail,
        "event 35 not covered by a checkpoint while 13 events and 1300 ms followed it"
    );
    // Reported once for the stretch.
    assert_eq!(audit_of(&quiet.msgs), [("unsigned_tail", 35)]);
    // One checkpoint lost is within the slack.
    let mut s = stream(&o.msgs);
    s.retain(|(seq, _)| *seq != 34);
    assert_eq!(verdict(&run(&s)), [("gap", 34)]);
}

#[test]
fn unsigned_tail_by_time() {
    let by_time = AuditConfig {
        checkpoint_every_events: N,
        checkpoint_every_ms: 1_000,
    };
    let o = history();
    assert_eq!(verdict(&run_with(&stream(&o.msgs), by_time)), []);
    // 35 is unsigned; an event 3 s after it is within 3 × 1 s...
    let mut late = history();
    late.ts += 3_000_000 - STEP_US * 3;
    late.seal(value(1));
    assert_eq!(verdict(&run_with(&stream(&late.msgs), by_time)), []);
    // ...one a microsecond later is not.
    let mut later = history();
    later.ts += 3_000_000 - STEP_US * 3 + 1;
    later.seal(value(1));
    assert_eq!(
        verdict(&run_with(&stream(&later.msgs), by_time)),
        [("unsigned_tail", 35)]
    );
}

#[test]
fn a_quiet_plant_leaves_its_last_checkpoint_uncovered() {
    // Checkpoint 39 (head 38) is the newest event for a minute (nothing
    // changed), then a value: the checkpoint is signed itself, the value is
    // new. (A campaign's quiet PLC found the audit counting the checkpoint
    // as an unsigned tail.)
    let by_time = AuditConfig {
        checkpoint_every_events: N,
        checkpoint_every_ms: 1_000,
    };
    let mut quiet = history();
    quiet.values(1);
    assert_eq!(quiet.checkpoints.last(), Some(&39));
    quiet.ts += 60_000_000;
    quiet.seal(value(1));
    assert_eq!(verdict(&run_with(&stream(&quiet.msgs), by_time)), []);
}

// ------------------------------------------------ forgeries in the stream

#[test]
fn forged_messages_published_into_the_stream() {
    let o = history();
    // Another origin's event.
    let mut north = Chain::new("root.north", "a", 1);
    let foreign = north.seal(1, value(1)).unwrap();
    let mut msgs = o.msgs.clone();
    msgs.push(foreign.bytes);
    let r = run(&stream(&msgs));
    assert_eq!(verdict(&r), [("foreign", 38)]);
    assert_eq!(
        r.violations[0].detail,
        "event 1 of origin root.north in the stream of root.south"
    );
    // Not an event at all.
    let mut msgs = o.msgs.clone();
    msgs.push(b"{\"value\": 42}".to_vec());
    let r = run(&stream(&msgs));
    assert_eq!(verdict(&r), [("undecodable", 38)]);
    assert_eq!(r.events, 37);
    // This origin's next event, but not on its chain.
    let mut msgs = o.msgs.clone();
    let mut forger = Chain::resume(ORIGIN, "a", 3, 37, [0; 32]);
    msgs.push(forger.seal(o.ts, value(666)).unwrap().bytes);
    assert_eq!(audit_of(&msgs), [("broken_chain", 38)]);
    // A forger who read the stream chains it right, in place of event 20:
    // the link to 21 breaks and checkpoint 21 does not sign it.
    let mut msgs = o.msgs.clone();
    let mut forger = Chain::resume(ORIGIN, "b", 2, 19, hash(&msgs[18]));
    msgs[19] = forger.seal(o.ts, value(666)).unwrap().bytes;
    assert_eq!(
        audit_of(&msgs),
        [("broken_chain", 21), ("bad_checkpoint", 21)]
    );
    // Garbage in place of an event: the chain restarts after it.
    let mut msgs = o.msgs.clone();
    msgs[19] = vec![0xff];
    assert_eq!(audit_of(&msgs), [("undecodable", 20)]);
}

// ------------------------------------------------ state at a past point

#[test]
fn state_at_a_seq_or_an_instant() {
    let o = history();
    let fold = |n: usize| {
        let mut s = State::new();
        for m in &o.msgs[..n] {
            s.apply(&decode(m).unwrap());
        }
        s
    };
    let msgs = || o.msgs.iter().map(Vec::as_slice);
    for n in [0usize, 1, 10, 14, 15, 37] {
        assert_eq!(state_at(msgs(), Until::Seq(n as u64)), fold(n), "seq {n}");
        // ts of event n is the instant just after it was sealed.
        let ts = if n == 0 {
            0
        } else {
            decode(&o.msgs[n - 1]).unwrap().ts
        };
        assert_eq!(state_at(msgs(), Until::Ts(ts)), fold(n), "ts of {n}");
        assert_eq!(state_at(msgs(), Until::Ts(ts + STEP_US - 1)), fold(n));
    }
    let at_10 = state_at(msgs(), Until::Seq(10));
    let p = &at_10.points["root.south.temp1"];
    // Events 3-6 are values 1-4, 7 a checkpoint, 8-10 values 5-7.
    assert_eq!((p.value.clone(), p.seq), (Value::Int(7), 10));
    assert_eq!(at_10.origins[ORIGIN].seq, 10);
    // A message that does not decode is stepped over.
    let mut holed = o.msgs.clone();
    holed[8] = vec![0xff];
    let s = state_at(holed.iter().map(Vec::as_slice), Until::Seq(37));
    assert_eq!(s.origins[ORIGIN].seq, 37);
    assert_eq!(s.digest(), fold(37).digest());
    // Another origin's events are folded alongside.
    let mut north = Chain::new("root.north", "a", 1);
    let n1 = north.seal(1, value(5)).unwrap().bytes;
    let both = state_at(o.msgs.iter().chain([&n1]).map(Vec::as_slice), Until::Seq(1));
    assert_eq!(both.origins.len(), 2);
}

// ------------------------------------------------ serde

#[test]
fn manifest_and_report_as_json() {
    let m = manifest();
    assert_eq!(m.key(ORIGIN, "a"), Some(key_a().public_key().as_str()));
    assert_eq!(m.key(ORIGIN, "c"), None);
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["keys"]["root.south/b"], key_b().public_key());
    let back: Manifest = serde_json::from_value(json).unwrap();
    assert_eq!(back, m);
    let cfg_back: AuditConfig =
        serde_json::from_str(r#"{"checkpoint_every_events": 4, "checkpoint_every_ms": 60000}"#)
            .unwrap();
    assert_eq!(cfg_back, cfg());

    let mut msgs = history().msgs;
    msgs.swap(8, 9);
    let r = run(&stream(&msgs));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["violations"][0]["kind"], "duplicate");
    assert_eq!(json["violations"][0]["origin"], ORIGIN);
    assert_eq!(json["violations"][0]["seq"], 9);
    assert_eq!(json["epochs"][1], serde_json::json!([2, "b", 15, 27]));
}

// ------------------------------------------------ commands

/// The engineer `eng` (scope root.south), the operator `ops` (scope
/// root.north) and a retired key of `old`.
fn client_manifest() -> Manifest {
    let mut m = manifest();
    let entry = |kp: KeyPair, role: &str, scope: &str| ClientKey {
        key: kp.public_key(),
        role: role.into(),
        scope: scope.into(),
    };
    m.clients.insert(
        "eng".into(),
        entry(fixed_user(20), "engineer", "root.south"),
    );
    m.clients.insert(
        "ops".into(),
        entry(fixed_user(21), "operator", "root.north"),
    );
    m.retired_clients.push(RetiredClient {
        name: "old".into(),
        held: entry(fixed_user(22), "engineer", "root"),
        retired_ms: 1_700_000_000_000 + 250,
    });
    m
}

/// A signed force of `temp1` to 5 by the holder of `kp`, named `by`.
fn force_command(kp: &KeyPair, by: &str) -> Body {
    let signed = format!(
        r#"{{"node":"{ORIGIN}","op":"force","point":"temp1","value":5,"ts":1700000000000,"nonce":"{}"}}"#,
        by.len()
    )
    .into_bytes();
    Body::Command(crate::CommandBody {
        op: crate::CommandOp::Force,
        point: "temp1".into(),
        value: Value::Int(5),
        by: by.into(),
        key: kp.public_key(),
        sig: crate::sign_command(kp, &signed).unwrap().to_vec(),
        signed,
        outcome: "accepted".into(),
    })
}

fn forced(by: &str) -> Body {
    Body::Forced(crate::ForcedBody {
        point: "temp1".into(),
        value: Value::Int(5),
        by: by.into(),
    })
}

/// A birth, then `bodies` (seqs 3...), audited with the client manifest.
fn commands_audit(bodies: Vec<Body>) -> Vec<(&'static str, u64)> {
    let mut o = Origin::new(Box::new(|_, _| ()));
    o.birth();
    for b in bodies {
        o.seal(b);
    }
    let r = audit(
        ORIGIN,
        &client_manifest(),
        AuditConfig {
            checkpoint_every_events: 0,
            checkpoint_every_ms: 0,
        },
        stream(&o.msgs).iter().map(|(s, b)| (*s, b.as_slice())),
    );
    verdict(&r)
}

#[test]
fn a_signed_force_and_its_effect_are_clean() {
    let eng = fixed_user(20);
    assert_eq!(
        commands_audit(vec![force_command(&eng, "eng"), value(1), forced("eng")]),
        []
    );
}

#[test]
fn every_command_rule_has_its_verdict() {
    let eng = fixed_user(20);
    // A force no signed command asked for, on a secured tree.
    assert_eq!(
        commands_audit(vec![forced("eng")]),
        [(kind::UNSIGNED_COMMAND, 3)]
    );
    // The effect differs from what was signed (another value).
    let other = Body::Forced(crate::ForcedBody {
        point: "temp1".into(),
        value: Value::Int(6),
        by: "eng".into(),
    });
    assert_eq!(
        commands_audit(vec![force_command(&eng, "eng"), other]),
        [(kind::UNSIGNED_COMMAND, 4)]
    );
    // One command, two effects.
    assert_eq!(
        commands_audit(vec![
            force_command(&eng, "eng"),
            forced("eng"),
            forced("eng")
        ]),
        [(kind::UNSIGNED_COMMAND, 5)]
    );
    // The recorded value is not the signed one.
    let mut edited = force_command(&eng, "eng");
    if let Body::Command(b) = &mut edited {
        b.value = Value::Int(7);
    }
    assert_eq!(commands_audit(vec![edited]), [(kind::BAD_COMMAND, 3)]);
    // Recorded under another client's name.
    assert_eq!(
        commands_audit(vec![force_command(&eng, "ops")]),
        [(kind::BAD_COMMAND, 3)]
    );
    // An operator may not force; its scope is another subtree anyway.
    assert_eq!(
        commands_audit(vec![force_command(&fixed_user(21), "ops")]),
        [(kind::UNAUTHORIZED_COMMAND, 3)]
    );
    // A key in no manifest.
    assert_eq!(
        commands_audit(vec![force_command(&fixed_user(23), "x")]),
        [(kind::UNAUTHORIZED_COMMAND, 3)]
    );
    // A retired key: its signature after retirement is not the client's
    // (the events here are sealed after `retired_ms`).
    assert_eq!(
        commands_audit(vec![force_command(&fixed_user(22), "old")]),
        [(kind::UNAUTHORIZED_COMMAND, 3)]
    );
    // An unsigned command on a secured tree.
    let unsigned = Body::Command(crate::CommandBody {
        op: crate::CommandOp::Write,
        point: "temp1".into(),
        value: Value::Int(1),
        by: "someone".into(),
        key: String::new(),
        sig: vec![],
        signed: vec![],
        outcome: "ok".into(),
    });
    assert_eq!(
        commands_audit(vec![unsigned]),
        [(kind::UNSIGNED_COMMAND, 3)]
    );
}

#[test]
fn a_retired_key_still_verifies_what_it_signed_while_in_service() {
    let mut m = client_manifest();
    // Retired well after the history was written.
    m.retired_clients[0].retired_ms = u64::MAX;
    assert!(m
        .client_at(&fixed_user(22).public_key(), 1_700_000_000_500)
        .is_some());
    assert!(m.client(&fixed_user(22).public_key()).is_none());
}

#[test]
fn a_plaintext_tree_asks_no_signature() {
    let mut m = client_manifest();
    m.security = Some("none".into());
    let mut o = Origin::new(Box::new(|_, _| ()));
    o.birth();
    o.seal(forced("anyone"));
    let r = audit(
        ORIGIN,
        &m,
        AuditConfig {
            checkpoint_every_events: 0,
            checkpoint_every_ms: 0,
        },
        stream(&o.msgs).iter().map(|(s, b)| (*s, b.as_slice())),
    );
    assert!(r.is_clean(), "{:?}", r.violations);
}
