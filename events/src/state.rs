//! The state fold: events in, the current picture of the plant out.
//!
//! Pure and deterministic: folding the same events in the same per-origin
//! order gives the same [`State`] (and [`State::digest`]) on every node,
//! which is what `rebuild` and the audit compare.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::subjects;
use crate::wire::{Body, Event, Quality, Role, Value};

/// The fold of every origin's events seen so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    /// Full point name (`<origin>.<point>`) → its state. A BTreeMap so
    /// iteration, JSON and the digest come out sorted.
    pub points: BTreeMap<String, PointState>,
    /// Origin path → where its history stands.
    pub origins: BTreeMap<String, OriginState>,
}

/// The shown state of one point.
#[derive(Debug, Clone, PartialEq)]
pub struct PointState {
    /// The value shown: the forced value while forced, else the field value.
    pub value: Value,
    /// Quality of the shown value (`good` while forced: an operator vouches
    /// for it).
    pub quality: Quality,
    /// `ts` of the last event that touched the point.
    pub ts: u64,
    /// The origin owning the point (also the prefix of its full name),
    /// kept so a consumer need not split names.
    pub origin: String,
    /// Seq of the last event that touched the point: where to resume.
    pub seq: u64,
    /// Epoch of that event.
    pub epoch: u64,
    /// Whether an operator override is in force.
    pub forced: bool,
    /// While forced: the last field reading (value, quality, ts), shown
    /// again on unforce; readings that arrive while forced land here.
    /// `None` when not forced.
    pub field: Option<(Value, Quality, u64)>,
}

/// Where one origin's history stands in this fold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginState {
    /// Seq of the last applied event: the next one must be seq + 1.
    pub seq: u64,
    /// Highest epoch applied: older ones are refused.
    pub epoch: u64,
    /// The member known to be active: set by the writer of each applied
    /// event (only the active member writes) and by `role` events.
    pub active_member: Option<String>,
    /// `ts` of the last applied event: how fresh the origin is.
    pub ts: u64,
}

/// What [`State::apply`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Folded in.
    Applied,
    /// At or below the origin's seq: already folded, ignored.
    Duplicate,
    /// Events are missing: nothing applied. Fetch `expected..got` (exclusive
    /// of `got`) and apply those first, then this one again.
    Gap {
        /// The seq the origin needs next.
        expected: u64,
        /// The seq that came.
        got: u64,
    },
    /// Older epoch than the origin's: written by a deposed member; not
    /// applied, and the origin's seq does not move (the stream's real
    /// event with this seq must still be able to apply).
    StaleEpoch,
}

impl State {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fold one event in, if it is the next one of its origin (or the first
    /// seen of that origin: history may start after retention cut it).
    pub fn apply(&mut self, event: &Event) -> Applied {
        if let Some(o) = self.origins.get(&event.origin) {
            if event.seq <= o.seq {
                return Applied::Duplicate;
            }
            let expected = o.seq.saturating_add(1);
            if event.seq > expected {
                return Applied::Gap {
                    expected,
                    got: event.seq,
                };
            }
            if event.epoch < o.epoch {
                return Applied::StaleEpoch;
            }
        }
        let origin = self.origins.entry(event.origin.clone()).or_default();
        origin.seq = event.seq;
        origin.epoch = origin.epoch.max(event.epoch);
        origin.ts = event.ts;
        origin.active_member = Some(event.member.clone());
        match &event.body {
            Body::Value(b) => {
                let p = self.point_mut(event, &b.point);
                stamp(p, event);
                if p.forced {
                    p.field = Some((b.value.clone(), b.quality, event.ts));
                } else {
                    p.value = b.value.clone();
                    p.quality = b.quality;
                }
            }
            Body::Forced(b) => {
                let p = self.point_mut(event, &b.point);
                if !p.forced {
                    // Report by exception: the reading shown before the
                    // override stays the latest field knowledge until a new
                    // one comes, so unforce must be able to show it again.
                    p.field = Some((p.value.clone(), p.quality, p.ts));
                }
                stamp(p, event);
                p.forced = true;
                p.value = b.value.clone();
                p.quality = Quality::Good;
            }
            Body::Unforced(b) => {
                let key = point_key(&event.origin, &b.point);
                if let Some(p) = self.points.get_mut(&key) {
                    stamp(p, event);
                    if p.forced {
                        let (value, quality, _) =
                            p.field
                                .take()
                                .unwrap_or((Value::Null, Quality::Uncertain, 0));
                        p.value = value;
                        p.quality = quality;
                        p.forced = false;
                    }
                }
            }
            Body::Role(b) => {
                let origin = self.origins.entry(event.origin.clone()).or_default();
                match b.role {
                    Role::Active => origin.active_member = Some(b.member.clone()),
                    Role::Standby => {
                        if origin.active_member.as_deref() == Some(b.member.as_str()) {
                            origin.active_member = None;
                        }
                    }
                }
            }
            // A resource transition is history, not plant state: like a
            // role event it only advances the origin (seq, epoch, ts and
            // active member, above) and touches no point.
            Body::Resource(_) => {}
            // A checkpoint signs history; it is not plant state either.
            Body::Checkpoint(_) => {}
            // Who asked for what: history; a force's effect is its forced
            // event.
            Body::Command(_) => {}
            Body::Birth(b) => {
                for info in &b.points {
                    self.points
                        .entry(point_key(&event.origin, &info.name))
                        .or_insert_with(|| PointState::announced(event));
                }
            }
        }
        Applied::Applied
    }

    /// The point named by `event` and `point`, created (Null/Uncertain) if
    /// new.
    fn point_mut(&mut self, event: &Event, point: &str) -> &mut PointState {
        self.points
            .entry(point_key(&event.origin, point))
            .or_insert_with(|| PointState::announced(event))
    }

    /// Record that `seq` of `origin` is taken by a message that is not
    /// folded (undecodable, a stale epoch, a broken link: the reader judged
    /// it), so the fold can go on at `seq + 1` instead of waiting forever
    /// for an event the stream will never hold. Like [`apply`](Self::apply),
    /// it only takes the next seq (or the first seen of an origin): at or
    /// below the origin's seq it does nothing, and past a gap it does
    /// nothing either, so the gap is still reported by the next `apply`.
    pub fn skip(&mut self, origin: &str, seq: u64) {
        match self.origins.get_mut(origin) {
            Some(o) if o.seq.checked_add(1) == Some(seq) => o.seq = seq,
            Some(_) => {}
            None => {
                self.origins.insert(
                    origin.to_owned(),
                    OriginState {
                        seq,
                        ..OriginState::default()
                    },
                );
            }
        }
    }

    /// Drop everything folded from `origin` (its points and its position),
    /// so its stream can be folded again from the start.
    pub fn forget_origin(&mut self, origin: &str) {
        self.origins.remove(origin);
        self.points.retain(|_, p| p.origin != origin);
    }

    /// Hex SHA-256 of a canonical rendering of every point, so two nodes
    /// (or a node before and after `rebuild`) can compare states cheaply.
    ///
    /// The rendering is one line per point, in byte order of full names,
    /// each `name|value|quality|origin|seq|epoch|forced\n`, where value is
    /// `null`, `true`, `false`, `i:<decimal>` or `f:<16 hex digits of the
    /// IEEE 754 bits>` (exact, no float formatting), quality is its wire
    /// name and forced is `0` or `1`. Timestamps are left out; origins'
    /// positions too (they are implied by the points' seqs). Names are
    /// tokens, so `|` and newlines cannot appear in them.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (name, p) in &self.points {
            let value = match &p.value {
                Value::Null => "null".to_owned(),
                Value::Bool(b) => b.to_string(),
                Value::Int(i) => format!("i:{i}"),
                Value::Float(f) => format!("f:{:016x}", f.to_bits()),
            };
            let line = format!(
                "{name}|{value}|{}|{}|{}|{}|{}\n",
                p.quality,
                p.origin,
                p.seq,
                p.epoch,
                u8::from(p.forced)
            );
            h.update(line.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// The part of the state whose full point names match a NATS-style
    /// `pattern` (`root.south.>`, `root.*.temp1`), with the origins of the
    /// matching points: what a subscriber to that subtree gets as snapshot.
    pub fn filter(&self, pattern: &str) -> State {
        let points: BTreeMap<String, PointState> = self
            .points
            .iter()
            .filter(|(name, _)| subjects::matches(pattern, name))
            .map(|(name, p)| (name.clone(), p.clone()))
            .collect();
        let wanted: BTreeSet<&str> = points.values().map(|p| p.origin.as_str()).collect();
        let origins = self
            .origins
            .iter()
            .filter(|(o, _)| wanted.contains(o.as_str()))
            .map(|(o, s)| (o.clone(), s.clone()))
            .collect();
        State { points, origins }
    }
}

/// `<origin>.<point>`: the full name of a point.
pub fn point_key(origin: &str, point: &str) -> String {
    format!("{origin}.{point}")
}

fn stamp(p: &mut PointState, event: &Event) {
    p.ts = event.ts;
    p.seq = event.seq;
    p.epoch = event.epoch;
}

impl PointState {
    /// A point known by name only: Null, Uncertain, not forced.
    fn announced(event: &Event) -> Self {
        Self {
            value: Value::Null,
            quality: Quality::Uncertain,
            ts: event.ts,
            origin: event.origin.clone(),
            seq: event.seq,
            epoch: event.epoch,
            forced: false,
            field: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{
        BirthBody, ForcedBody, PointInfo, ResourceBody, ResourceState, RoleBody, UnforcedBody,
        ValueBody, ZERO_HASH,
    };

    /// Builds events of one origin with consecutive seqs (no hashing: the
    /// fold trusts its input's chain, the cursor checks it).
    struct Origin {
        name: String,
        member: &'static str,
        epoch: u64,
        seq: u64,
    }

    impl Origin {
        fn new(name: &str) -> Self {
            Self {
                name: name.into(),
                member: "a",
                epoch: 1,
                seq: 0,
            }
        }

        fn next(&mut self, body: Body) -> Event {
            self.seq += 1;
            Event {
                v: crate::WIRE_VERSION,
                origin: self.name.clone(),
                member: self.member.into(),
                epoch: self.epoch,
                seq: self.seq,
                ts: self.seq * 1000,
                prev: ZERO_HASH,
                body,
            }
        }

        fn value(&mut self, point: &str, value: impl Into<Value>, quality: Quality) -> Event {
            self.next(Body::Value(ValueBody {
                point: point.into(),
                value: value.into(),
                quality,
            }))
        }

        fn force(&mut self, point: &str, value: impl Into<Value>) -> Event {
            self.next(Body::Forced(ForcedBody {
                point: point.into(),
                value: value.into(),
                by: "jo".into(),
            }))
        }

        fn unforce(&mut self, point: &str) -> Event {
            self.next(Body::Unforced(UnforcedBody {
                point: point.into(),
                by: "jo".into(),
            }))
        }
    }

    fn shown(s: &State, name: &str) -> (Value, Quality, bool) {
        let p = &s.points[name];
        (p.value.clone(), p.quality, p.forced)
    }

    #[test]
    fn value_events_fold() {
        let mut o = Origin::new("root.south");
        let mut s = State::new();
        assert_eq!(
            s.apply(&o.value("temp1", 20.5, Quality::Good)),
            Applied::Applied
        );
        assert_eq!(
            s.apply(&o.value("temp1", 21, Quality::Bad)),
            Applied::Applied
        );
        let p = &s.points["root.south.temp1"];
        assert_eq!(p.value, Value::Int(21));
        assert_eq!(p.quality, Quality::Bad);
        assert_eq!((p.seq, p.epoch, p.ts), (2, 1, 2000));
        assert_eq!(p.origin, "root.south");
        let origin = &s.origins["root.south"];
        assert_eq!((origin.seq, origin.epoch, origin.ts), (2, 1, 2000));
        assert_eq!(origin.active_member.as_deref(), Some("a"));
    }

    #[test]
    fn force_and_unforce_sequencing() {
        let mut o = Origin::new("root");
        let mut s = State::new();
        s.apply(&o.value("pump", 1, Quality::Good));
        s.apply(&o.force("pump", 0));
        assert_eq!(shown(&s, "root.pump"), (Value::Int(0), Quality::Good, true));
        assert_eq!(s.points["root.pump"].seq, 2);
        // A field reading while forced is remembered, not shown.
        s.apply(&o.value("pump", 5, Quality::Bad));
        assert_eq!(shown(&s, "root.pump"), (Value::Int(0), Quality::Good, true));
        assert_eq!(s.points["root.pump"].seq, 3);
        assert_eq!(
            s.points["root.pump"].field,
            Some((Value::Int(5), Quality::Bad, 3000))
        );
        // Forcing again changes the shown value, keeps the field reading.
        s.apply(&o.force("pump", 7));
        assert_eq!(shown(&s, "root.pump"), (Value::Int(7), Quality::Good, true));
        s.apply(&o.unforce("pump"));
        assert_eq!(shown(&s, "root.pump"), (Value::Int(5), Quality::Bad, false));
        assert_eq!(s.points["root.pump"].field, None);
        assert_eq!(s.points["root.pump"].seq, 5);

        // Unforce with no reading during the force shows the one before it.
        s.apply(&o.value("fan", true, Quality::Good));
        s.apply(&o.force("fan", false));
        s.apply(&o.unforce("fan"));
        assert_eq!(
            shown(&s, "root.fan"),
            (Value::Bool(true), Quality::Good, false)
        );
        assert_eq!(s.points["root.fan"].ts, 8000);

        // Forced before any reading: unforce shows Null/Uncertain.
        s.apply(&o.force("valve", 1.5));
        assert_eq!(
            shown(&s, "root.valve"),
            (Value::Float(1.5), Quality::Good, true)
        );
        s.apply(&o.unforce("valve"));
        assert_eq!(
            shown(&s, "root.valve"),
            (Value::Null, Quality::Uncertain, false)
        );

        // Unforce of an unknown point is applied (seq moves) but creates
        // nothing; of an unforced point changes nothing but its stamp.
        assert_eq!(s.apply(&o.unforce("ghost")), Applied::Applied);
        assert!(!s.points.contains_key("root.ghost"));
        s.apply(&o.unforce("pump"));
        assert_eq!(shown(&s, "root.pump"), (Value::Int(5), Quality::Bad, false));
        assert_eq!(s.origins["root"].seq, o.seq);
    }

    #[test]
    fn birth_announces_points_without_overwriting() {
        let mut o = Origin::new("root.south");
        let mut s = State::new();
        s.apply(&o.value("temp1", 20, Quality::Good));
        let point = |name: &str| PointInfo {
            name: name.into(),
            unit: None,
            writable: false,
        };
        s.apply(&o.next(Body::Birth(BirthBody {
            member: "a".into(),
            points: vec![point("temp1"), point("temp2")],
        })));
        assert_eq!(
            shown(&s, "root.south.temp1"),
            (Value::Int(20), Quality::Good, false)
        );
        assert_eq!(s.points["root.south.temp1"].seq, 1);
        assert_eq!(
            shown(&s, "root.south.temp2"),
            (Value::Null, Quality::Uncertain, false)
        );
        assert_eq!(s.points["root.south.temp2"].seq, 2);
    }

    #[test]
    fn role_sets_active_member() {
        let mut o = Origin::new("root.south");
        let mut s = State::new();
        let role = |member: &str, role| {
            Body::Role(RoleBody {
                member: member.into(),
                role,
                reason: "test".into(),
            })
        };
        s.apply(&o.next(role("a", Role::Standby)));
        assert_eq!(s.origins["root.south"].active_member, None);
        o.member = "b";
        o.epoch = 2;
        s.apply(&o.next(role("b", Role::Active)));
        assert_eq!(s.origins["root.south"].active_member.as_deref(), Some("b"));
        assert_eq!(s.origins["root.south"].epoch, 2);
    }

    #[test]
    fn resource_events_advance_the_origin_only() {
        let mut o = Origin::new("root.south");
        let mut s = State::new();
        let resource = |name: &str, state| {
            Body::Resource(ResourceBody {
                member: "b".into(),
                resource: name.into(),
                state,
                reason: "activation".into(),
            })
        };
        s.apply(&o.value("temp1", 20, Quality::Good));
        let before = s.clone();
        o.member = "b";
        o.epoch = 2;
        for (name, state) in [
            ("plc_poller", ResourceState::InService),
            ("publisher", ResourceState::PendingOos),
            ("publisher", ResourceState::Oos),
        ] {
            assert_eq!(s.apply(&o.next(resource(name, state))), Applied::Applied);
        }
        // No point is created or touched: the digest does not move.
        assert_eq!(s.points, before.points);
        assert_eq!(s.digest(), before.digest());
        let origin = &s.origins["root.south"];
        assert_eq!((origin.seq, origin.epoch, origin.ts), (4, 2, 4000));
        assert_eq!(origin.active_member.as_deref(), Some("b"));
        // Sequencing rules as for any event.
        let dup = Event {
            seq: 3,
            ..o.next(resource("plc_poller", ResourceState::Oos))
        };
        assert_eq!(s.apply(&dup), Applied::Duplicate);
        o.seq += 1;
        let after_gap = o.next(resource("plc_poller", ResourceState::Oos));
        assert_eq!(
            s.apply(&after_gap),
            Applied::Gap {
                expected: 5,
                got: 7
            }
        );
        o.epoch = 1;
        o.seq = 4;
        let stale = o.next(resource("plc_poller", ResourceState::Oos));
        assert_eq!(s.apply(&stale), Applied::StaleEpoch);
        assert_eq!(s.origins["root.south"].seq, 4);
    }

    #[test]
    fn gaps_are_not_applied_and_duplicates_ignored() {
        let mut o = Origin::new("root");
        let mut s = State::new();
        let e1 = o.value("x", 1, Quality::Good);
        let e2 = o.value("x", 2, Quality::Good);
        let e3 = o.value("x", 3, Quality::Good);
        assert_eq!(s.apply(&e1), Applied::Applied);
        assert_eq!(
            s.apply(&e3),
            Applied::Gap {
                expected: 2,
                got: 3
            }
        );
        assert_eq!(s.points["root.x"].value, Value::Int(1));
        assert_eq!(s.origins["root"].seq, 1);
        assert_eq!(s.apply(&e2), Applied::Applied);
        assert_eq!(s.apply(&e3), Applied::Applied);
        assert_eq!(s.apply(&e2), Applied::Duplicate);
        assert_eq!(s.apply(&e3), Applied::Duplicate);
        assert_eq!(s.points["root.x"].value, Value::Int(3));
    }

    #[test]
    fn first_event_of_an_origin_may_start_late() {
        let mut o = Origin::new("root");
        o.seq = 99;
        let mut s = State::new();
        assert_eq!(s.apply(&o.value("x", 1, Quality::Good)), Applied::Applied);
        assert_eq!(s.origins["root"].seq, 100);
    }

    #[test]
    fn stale_epoch_is_refused_without_moving_seq() {
        let mut o = Origin::new("root");
        o.epoch = 5;
        let mut s = State::new();
        s.apply(&o.value("x", 1, Quality::Good));
        o.epoch = 4;
        let late = o.value("x", 666, Quality::Good);
        assert_eq!(s.apply(&late), Applied::StaleEpoch);
        assert_eq!(s.origins["root"].seq, 1);
        assert_eq!(s.points["root.x"].value, Value::Int(1));
        o.epoch = 5;
        o.seq = 1;
        assert_eq!(s.apply(&o.value("x", 2, Quality::Good)), Applied::Applied);
    }

    #[test]
    fn skip_takes_a_seq_without_folding() {
        let mut o = Origin::new("root");
        let mut s = State::new();
        s.apply(&o.value("x", 1, Quality::Good));
        let _unreadable = o.value("x", 2, Quality::Good);
        let e3 = o.value("x", 3, Quality::Good);
        assert_eq!(
            s.apply(&e3),
            Applied::Gap {
                expected: 2,
                got: 3
            }
        );
        s.skip("root", 2);
        assert_eq!(s.points["root.x"].value, Value::Int(1));
        assert_eq!(s.apply(&e3), Applied::Applied);
        // Below, at, or past a gap: nothing moves.
        s.skip("root", 2);
        s.skip("root", 5);
        assert_eq!(s.origins["root"].seq, 3);
        // The first message of an origin may be skipped too.
        s.skip("root.b", 7);
        assert_eq!(s.origins["root.b"].seq, 7);
        assert!(s.points.keys().all(|k| !k.starts_with("root.b.")));
    }

    #[test]
    fn digest_is_order_independent_and_value_sensitive() {
        let mut a = Origin::new("root.a");
        let mut b = Origin::new("root.b");
        let ea: Vec<Event> = (0..3)
            .map(|i| a.value(&format!("p{i}"), i, Quality::Good))
            .collect();
        let eb: Vec<Event> = (0..3)
            .map(|i| b.value(&format!("q{i}"), i as f64, Quality::Good))
            .collect();
        let mut s1 = State::new();
        for e in ea.iter().chain(&eb) {
            s1.apply(e);
        }
        let mut s2 = State::new();
        for (x, y) in eb.iter().zip(&ea) {
            s2.apply(x);
            s2.apply(y);
        }
        assert_eq!(s1, s2);
        assert_eq!(s1.digest(), s2.digest());
        assert_eq!(s1.digest().len(), 64);

        // Timestamps are not part of the digest.
        let mut s3 = s1.clone();
        s3.points.get_mut("root.a.p0").unwrap().ts += 1;
        assert_eq!(s3.digest(), s1.digest());

        // Values are, and Int(1) differs from Float(1.0).
        let mut s4 = s1.clone();
        s4.points.get_mut("root.a.p1").unwrap().value = Value::Float(1.0);
        assert_ne!(s4.digest(), s1.digest());
        let mut s5 = s1.clone();
        s5.apply(&a.value("p2", 3, Quality::Good));
        assert_ne!(s5.digest(), s1.digest());
        let mut s6 = s1.clone();
        s6.points.get_mut("root.b.q0").unwrap().forced = true;
        assert_ne!(s6.digest(), s1.digest());
    }

    #[test]
    fn digest_of_known_state() {
        let mut o = Origin::new("root");
        let mut s = State::new();
        assert_eq!(
            s.digest(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        s.apply(&o.value("x", 2.5, Quality::Good));
        // sha256("root.x|f:4004000000000000|good|root|1|1|0\n")
        let line = "root.x|f:4004000000000000|good|root|1|1|0\n";
        assert_eq!(s.digest(), hex::encode(crate::hash(line.as_bytes())));
    }

    #[test]
    fn filter_with_wildcards() {
        let mut s = State::new();
        for origin in ["root.south", "root.north", "root.south.plc1"] {
            let mut o = Origin::new(origin);
            s.apply(&o.value("temp1", 1, Quality::Good));
            s.apply(&o.value("temp2", 2, Quality::Good));
        }
        let names = |st: State| st.points.into_keys().collect::<Vec<_>>();
        assert_eq!(
            names(s.filter("root.south.>")),
            [
                "root.south.plc1.temp1",
                "root.south.plc1.temp2",
                "root.south.temp1",
                "root.south.temp2"
            ]
        );
        assert_eq!(
            names(s.filter("root.*.temp1")),
            ["root.north.temp1", "root.south.temp1"]
        );
        let f = s.filter("root.north.*");
        assert_eq!(f.origins.keys().collect::<Vec<_>>(), ["root.north"]);
        assert!(s.filter("nothing.>").points.is_empty());
    }
}
