//! The node's value sources (simulated points, the Modbus poller) and the
//! change filter between them and the publisher.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use adapters::poller::{Poller, PollerHandle, Reading};
use adapters::sim::SimGenerator;
use events::{Body, Quality, Value, ValueBody};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use topology::{Node, Point, Source};

use super::publisher::Publisher;

/// Decides which readings are changes worth an event.
///
/// A reading is published when it is the point's first, when its quality
/// differs from the last published one, or when its value differs from the
/// last *published* value (by more than the point's deadband, for numbers).
/// Comparing with the last published value, not the last reading, keeps a
/// slow drift from hiding below the deadband forever.
#[derive(Debug, Default)]
pub struct ChangeFilter {
    last: HashMap<String, (Value, Quality)>,
}

impl ChangeFilter {
    /// True when `value`/`quality` of `point` should be published; records it if so.
    pub fn admit(
        &mut self,
        point: &str,
        value: &Value,
        quality: Quality,
        deadband: Option<f64>,
    ) -> bool {
        let changed = match self.last.get(point) {
            None => true,
            Some((_, q)) if *q != quality => true,
            Some((v, _)) => match (v.as_f64(), value.as_f64(), deadband) {
                (Some(a), Some(b), Some(db)) => (a - b).abs() > db,
                _ => v != value,
            },
        };
        if changed {
            self.last.insert(point.to_owned(), (value.clone(), quality));
        }
        changed
    }
}

fn value_body(point: &str, value: Value, quality: Quality) -> Body {
    Body::Value(ValueBody {
        point: point.to_owned(),
        value,
        quality,
    })
}

/// Runs one simulated point until `cancel`.
pub async fn run_sim(point: Point, seed: u64, publisher: Publisher, cancel: CancellationToken) {
    let Source::Sim(spec) = &point.source else {
        return;
    };
    let mut generator = SimGenerator::new(spec, seed);
    let mut filter = ChangeFilter::default();
    let mut tick = tokio::time::interval(Duration::from_millis(spec.every_ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        // Three decimals: a simulated sensor has finite resolution, and
        // shorter numbers keep the events small.
        let v = (generator.sample(start.elapsed()) * 1000.0).round() / 1000.0;
        let value = Value::Float(v);
        if filter.admit(&point.name, &value, Quality::Good, point.deadband)
            && publisher
                .submit(value_body(&point.name, value, Quality::Good))
                .await
                .is_err()
        {
            return;
        }
    }
}

/// Starts the Modbus poller of `node` (if it has Modbus points) and the
/// router that turns its readings into events while this member is active
/// (`current` holds the publisher then; None while standby, when readings
/// only feed the PLC health). Every PLC write is fenced by `fencing`.
/// Returns the poller handle for writes and the PLC health (`Some(true)`
/// while the last reading was good).
pub fn start_modbus(
    node: &Node,
    fencing: adapters::poller::Fencing,
    mut current: watch::Receiver<Option<Publisher>>,
    cancel: CancellationToken,
) -> Option<(PollerHandle, watch::Receiver<Option<bool>>)> {
    let device = node.modbus.clone()?;
    let points: Vec<Point> = node
        .points
        .iter()
        .filter(|p| matches!(p.source, Source::Modbus(_)))
        .cloned()
        .collect();
    if points.is_empty() {
        return None;
    }
    let deadbands: HashMap<String, Option<f64>> = points
        .iter()
        .map(|p| (p.name.clone(), p.deadband))
        .collect();
    // Bound: a few polls' worth of readings; the poller drops (and counts)
    // readings when it is full and sends every point again next poll.
    let (tx, mut rx) = mpsc::channel::<Reading>(points.len() * 4 + 16);
    let handle = Poller::spawn_guarded(device, points, tx, fencing, cancel.clone());
    let (health_tx, health) = watch::channel(None);
    tokio::spawn(async move {
        let mut filter = ChangeFilter::default();
        loop {
            tokio::select! {
                r = rx.recv() => {
                    let Some(r) = r else { return };
                    health_tx.send_if_modified(|h| {
                        let ok = Some(r.quality == Quality::Good);
                        let changed = *h != ok;
                        *h = ok;
                        changed
                    });
                    let publisher = current.borrow().clone();
                    let Some(publisher) = publisher else { continue };
                    let db = deadbands.get(&r.point).copied().flatten();
                    if filter.admit(&r.point, &r.value, r.quality, db) {
                        let _ = publisher.submit(value_body(&r.point, r.value, r.quality)).await;
                    }
                }
                changed = current.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // A new activation announces every point afresh.
                    filter = ChangeFilter::default();
                }
                _ = cancel.cancelled() => return,
            }
        }
    });
    Some((handle, health))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reading_and_quality_changes_pass() {
        let mut f = ChangeFilter::default();
        assert!(f.admit("p", &Value::Int(1), Quality::Good, None));
        assert!(!f.admit("p", &Value::Int(1), Quality::Good, None));
        assert!(f.admit("p", &Value::Null, Quality::Bad, None));
        assert!(f.admit("p", &Value::Int(1), Quality::Good, None));
    }

    #[test]
    fn deadband_is_measured_from_the_last_published_value() {
        let mut f = ChangeFilter::default();
        assert!(f.admit("p", &Value::Float(10.0), Quality::Good, Some(0.5)));
        assert!(!f.admit("p", &Value::Float(10.3), Quality::Good, Some(0.5)));
        assert!(!f.admit("p", &Value::Float(10.5), Quality::Good, Some(0.5)));
        // Drift adds up: 10.6 is 0.6 away from the published 10.0.
        assert!(f.admit("p", &Value::Float(10.6), Quality::Good, Some(0.5)));
    }

    #[test]
    fn without_deadband_any_change_passes() {
        let mut f = ChangeFilter::default();
        assert!(f.admit("p", &Value::Bool(false), Quality::Good, None));
        assert!(f.admit("p", &Value::Bool(true), Quality::Good, None));
        assert!(f.admit("q", &Value::Float(1.0), Quality::Good, None));
        assert!(f.admit("q", &Value::Float(1.001), Quality::Good, None));
    }
}
