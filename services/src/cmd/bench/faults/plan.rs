//! Fault schedules, pure: a seed in, the same list of overlapping faults
//! out, every time (`canopy bench faults --seed S` replays a schedule).

/// A small, fast, seedable generator (SplitMix64): the same seed gives the
/// same schedule on every machine, without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi` (`lo` when empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as u64) as usize]
    }
}

/// Which process of an HA pair a fault hits, decided when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The member active at that moment.
    Active,
    /// The other member.
    Standby,
    /// The witness.
    Witness,
}

/// Which links of a process are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Raft only (to and from the other two voters).
    Raft,
    /// NATS only (its nats-server's routes to the other two servers).
    Nats,
    /// Both.
    Both,
}

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// kill -9 a pair process; it is started again when the fault ends.
    Kill(Role),
    /// SIGSTOP a pair process; SIGCONT when the fault ends.
    Freeze(Role),
    /// kill -9 a pair member's nats-server (its supervisor restarts it).
    KillNats(Role),
    /// SIGSTOP a pair member's nats-server; SIGCONT when the fault ends.
    FreezeNats(Role),
    /// Cut a pair member's links to the other two processes of its pair.
    Cut(Role, Links),
    /// Every request to the PLC waits this long before it is forwarded.
    SlowPlc,
    /// The leaf's member is killed, its data directory wiped, and it is
    /// started again when the fault ends.
    WipeLeaf,
}

/// A fault of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// When it starts, in ms after the schedule starts.
    pub at_ms: u64,
    /// How long it lasts, in ms.
    pub for_ms: u64,
    /// What it is.
    pub kind: Kind,
    /// Which pair it hits (an index into the campaign's pairs); ignored by
    /// `SlowPlc` and `WipeLeaf`.
    pub pair: usize,
}

impl Fault {
    /// When it ends, in ms after the schedule starts.
    pub fn end_ms(&self) -> u64 {
        self.at_ms + self.for_ms
    }
}

/// The fault kinds a schedule draws from, each equally likely.
pub const KINDS: [Kind; 18] = [
    Kind::Kill(Role::Active),
    Kind::Kill(Role::Standby),
    Kind::Kill(Role::Witness),
    Kind::Freeze(Role::Active),
    Kind::Freeze(Role::Standby),
    Kind::Freeze(Role::Witness),
    Kind::KillNats(Role::Active),
    Kind::KillNats(Role::Standby),
    Kind::FreezeNats(Role::Active),
    Kind::FreezeNats(Role::Standby),
    Kind::Cut(Role::Active, Links::Raft),
    Kind::Cut(Role::Active, Links::Nats),
    Kind::Cut(Role::Active, Links::Both),
    Kind::Cut(Role::Standby, Links::Both),
    Kind::SlowPlc,
    Kind::WipeLeaf,
    Kind::Freeze(Role::Active),
    Kind::Kill(Role::Active),
];

/// The shape of the schedules.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Faults per schedule.
    pub faults: usize,
    /// The window the faults start in, in ms.
    pub window_ms: u64,
    /// Shortest and longest fault, in ms.
    pub min_ms: u64,
    /// See `min_ms`.
    pub max_ms: u64,
    /// HA pairs in the campaign's tree.
    pub pairs: usize,
}

/// The faults of schedule `index` of a campaign seeded with `seed`, sorted
/// by start. Faults overlap freely; two faults on the same pair that would
/// hit the same role at the same time are still drawn (the campaign skips
/// one whose process is already down, and says so).
pub fn schedule(seed: u64, index: u64, shape: &Shape) -> Vec<Fault> {
    let mut rng = Rng::new(seed ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93));
    let mut faults: Vec<Fault> = (0..shape.faults)
        .map(|_| {
            let kind = *rng.pick(&KINDS);
            Fault {
                at_ms: rng.range(0, shape.window_ms),
                for_ms: rng.range(shape.min_ms, shape.max_ms + 1),
                kind,
                pair: rng.range(0, shape.pairs.max(1) as u64) as usize,
            }
        })
        .collect();
    faults.sort_by_key(|f| (f.at_ms, f.end_ms()));
    faults
}

/// A line for people.
pub fn describe(f: &Fault, pair: &str) -> String {
    let role = |r: Role| match r {
        Role::Active => "active",
        Role::Standby => "standby",
        Role::Witness => "witness",
    };
    let what = match f.kind {
        Kind::Kill(r) => format!("kill -9 the {} of {pair}", role(r)),
        Kind::Freeze(r) => format!("SIGSTOP the {} of {pair}", role(r)),
        Kind::KillNats(r) => format!("kill -9 the nats-server of the {} of {pair}", role(r)),
        Kind::FreezeNats(r) => format!("SIGSTOP the nats-server of the {} of {pair}", role(r)),
        Kind::Cut(r, l) => format!(
            "cut the {} links of the {} of {pair}",
            match l {
                Links::Raft => "raft",
                Links::Nats => "NATS",
                Links::Both => "raft and NATS",
            },
            role(r)
        ),
        Kind::SlowPlc => "slow the PLC link".to_owned(),
        Kind::WipeLeaf => "kill the leaf and wipe its data".to_owned(),
    };
    format!("{:>6} ms +{:>5} ms  {what}", f.at_ms, f.for_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape = Shape {
        faults: 8,
        window_ms: 20_000,
        min_ms: 300,
        max_ms: 4000,
        pairs: 2,
    };

    #[test]
    fn a_seed_gives_the_same_schedule_every_time_and_schedules_differ() {
        assert_eq!(schedule(7, 0, &SHAPE), schedule(7, 0, &SHAPE));
        assert_ne!(schedule(7, 0, &SHAPE), schedule(7, 1, &SHAPE));
        assert_ne!(schedule(7, 0, &SHAPE), schedule(8, 0, &SHAPE));
    }

    #[test]
    fn faults_are_sorted_within_the_window_and_their_bounds() {
        for i in 0..50 {
            let s = schedule(42, i, &SHAPE);
            assert_eq!(s.len(), SHAPE.faults);
            assert!(s.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
            for f in &s {
                assert!(f.at_ms < SHAPE.window_ms);
                assert!((SHAPE.min_ms..=SHAPE.max_ms).contains(&f.for_ms), "{f:?}");
                assert!(f.pair < SHAPE.pairs);
            }
        }
    }

    #[test]
    fn over_many_schedules_every_kind_is_drawn() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            for f in schedule(1, i, &SHAPE) {
                seen.insert(format!("{:?}", f.kind));
            }
        }
        for k in KINDS {
            assert!(seen.contains(&format!("{k:?}")), "{k:?} never drawn");
        }
    }
}
