//! Simulated signals for `source = "sim"` points and the PLC simulator.
//!
//! Pure: a [`SimGenerator`] is a function of the time since start (and, for
//! the random walk, of its seed and of how many samples were taken), so tests
//! are deterministic without a clock.

use std::{f64::consts::TAU, time::Duration};

use rand::{rngs::StdRng, Rng, SeedableRng};
use topology::{SimKind, SimSpec};

/// The number of random-walk steps it takes, at most, to cross the whole
/// range: small enough to look alive, large enough to look smooth.
const WALK_STEPS_ACROSS_RANGE: f64 = 50.0;

/// Our own copy of the shape, so a generator does not borrow the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Sine,
    Ramp,
    Square,
    RandomWalk,
}

/// Produces the samples of one simulated signal.
#[derive(Debug, Clone)]
pub struct SimGenerator {
    /// Which waveform to produce.
    shape: Shape,
    /// Period in seconds; a non-positive or non-finite period means "no
    /// periodic movement", see [`SimGenerator::sample`].
    period_s: f64,
    /// Lower bound of the signal (the smaller of the spec's min and max, so a
    /// swapped range cannot make `clamp` panic).
    lo: f64,
    /// Upper bound of the signal.
    hi: f64,
    /// Current position of the random walk; unused by other shapes.
    walk: f64,
    /// Seeded so that the random walk is reproducible in tests and in the lab.
    rng: StdRng,
}

impl SimGenerator {
    /// A generator for `spec`; `seed` only matters for `random_walk`.
    pub fn new(spec: &SimSpec, seed: u64) -> Self {
        let shape = match spec.kind {
            SimKind::Sine => Shape::Sine,
            SimKind::Ramp => Shape::Ramp,
            SimKind::Square => Shape::Square,
            SimKind::RandomWalk => Shape::RandomWalk,
        };
        let lo = spec.min.min(spec.max);
        let hi = spec.min.max(spec.max);
        SimGenerator {
            shape,
            period_s: spec.period_s,
            lo,
            hi,
            walk: lo + (hi - lo) / 2.0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The value at `t` since the start of the simulation.
    ///
    /// - sine: starts at the middle of the range, peaks at `max` a quarter
    ///   period later, reaches `min` at three quarters;
    /// - ramp: a sawtooth from `min` (at the start of each period) towards
    ///   `max`;
    /// - square: `min` for the first half of each period, `max` for the
    ///   second;
    /// - random_walk: ignores `t`; each call moves by a uniform step of at
    ///   most (max - min) / 50, bounded to [min, max].
    ///
    /// With a period that is not a positive finite number, the periodic
    /// shapes stay at `min` rather than divide by zero.
    pub fn sample(&mut self, t: Duration) -> f64 {
        let span = self.hi - self.lo;
        if self.shape == Shape::RandomWalk {
            let step = span / WALK_STEPS_ACROSS_RANGE;
            if step > 0.0 && step.is_finite() {
                let delta = self.rng.random_range(-step..=step);
                self.walk = (self.walk + delta).clamp(self.lo, self.hi);
            }
            return self.walk;
        }
        if !(self.period_s.is_finite() && self.period_s > 0.0) {
            return self.lo;
        }
        let phase = (t.as_secs_f64() / self.period_s).fract();
        match self.shape {
            Shape::Sine => self.lo + span / 2.0 + span / 2.0 * (TAU * phase).sin(),
            Shape::Ramp => self.lo + span * phase,
            Shape::Square if phase < 0.5 => self.lo,
            Shape::Square => self.hi,
            Shape::RandomWalk => self.walk,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: SimKind, min: f64, max: f64) -> SimSpec {
        SimSpec {
            kind,
            period_s: 10.0,
            min,
            max,
            every_ms: 100,
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn sine_spans_min_to_max_over_the_period() {
        let mut g = SimGenerator::new(&spec(SimKind::Sine, 0.0, 100.0), 0);
        assert!(close(g.sample(secs(0.0)), 50.0));
        assert!(close(g.sample(secs(2.5)), 100.0));
        assert!(close(g.sample(secs(5.0)), 50.0));
        assert!(close(g.sample(secs(7.5)), 0.0));
        assert!(close(g.sample(secs(12.5)), 100.0), "periodic");
        for i in 0..1000 {
            let v = g.sample(secs(f64::from(i) * 0.037));
            assert!((0.0..=100.0).contains(&v), "{v}");
        }
    }

    #[test]
    fn ramp_is_a_sawtooth() {
        let mut g = SimGenerator::new(&spec(SimKind::Ramp, 10.0, 20.0), 0);
        assert!(close(g.sample(secs(0.0)), 10.0));
        assert!(close(g.sample(secs(5.0)), 15.0));
        assert!(close(g.sample(secs(9.0)), 19.0));
        assert!(
            close(g.sample(secs(10.0)), 10.0),
            "drops back at each period"
        );
        assert!(close(g.sample(secs(12.5)), 12.5));
    }

    #[test]
    fn square_is_min_then_max() {
        let mut g = SimGenerator::new(&spec(SimKind::Square, -1.0, 1.0), 0);
        assert_eq!(g.sample(secs(0.0)), -1.0);
        assert_eq!(g.sample(secs(4.9)), -1.0);
        assert_eq!(g.sample(secs(5.0)), 1.0);
        assert_eq!(g.sample(secs(9.9)), 1.0);
        assert_eq!(g.sample(secs(10.1)), -1.0);
    }

    #[test]
    fn random_walk_is_bounded_small_stepped_and_seeded() {
        let s = spec(SimKind::RandomWalk, 0.0, 50.0);
        let mut a = SimGenerator::new(&s, 7);
        let mut b = SimGenerator::new(&s, 7);
        let mut c = SimGenerator::new(&s, 8);
        let mut prev = 25.0;
        let mut differs = false;
        let mut moved = false;
        for i in 0..5000 {
            let t = secs(f64::from(i));
            let (va, vb, vc) = (a.sample(t), b.sample(t), c.sample(t));
            assert_eq!(va, vb, "same seed, same walk");
            differs |= va != vc;
            moved |= va != prev;
            assert!((0.0..=50.0).contains(&va), "{va}");
            assert!((va - prev).abs() <= 1.0 + 1e-12, "step {prev} -> {va}");
            prev = va;
        }
        assert!(differs, "another seed gives another walk");
        assert!(moved);
    }

    #[test]
    fn degenerate_specs_do_not_panic() {
        let mut swapped = SimGenerator::new(&spec(SimKind::RandomWalk, 10.0, 0.0), 1);
        for _ in 0..100 {
            let v = swapped.sample(Duration::ZERO);
            assert!((0.0..=10.0).contains(&v));
        }
        let mut flat = SimGenerator::new(&spec(SimKind::RandomWalk, 3.0, 3.0), 1);
        assert_eq!(flat.sample(Duration::ZERO), 3.0);
        let mut no_period = SimGenerator::new(
            &SimSpec {
                period_s: 0.0,
                ..spec(SimKind::Sine, 1.0, 2.0)
            },
            0,
        );
        assert_eq!(no_period.sample(secs(3.0)), 1.0);
    }
}
