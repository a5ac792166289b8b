//! The poller task against plcsim, a closed port and a silent device.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use adapters::{
    modbus::ModbusLink,
    plcsim,
    poller::{Poller, PollerHandle, Reading, WriteError},
};
use common::*;
use events::{Quality, Value};
use futures::FutureExt;
use tokio::{net::TcpListener, sync::mpsc};
use tokio_util::sync::CancellationToken;
use topology::{DataType, ModbusDevice, Point, SimKind, SimSpec, Source};

fn device(addr: SocketAddr, timeout_ms: u64, life_sign: Option<&str>) -> ModbusDevice {
    ModbusDevice {
        address: addr.to_string(),
        unit: 1,
        poll_ms: 20,
        timeout_ms,
        life_sign: life_sign.map(|s| s.parse().unwrap()),
    }
}

fn modbus_point(name: &str, register: &str, data_type: DataType, writable: bool) -> Point {
    Point {
        name: name.to_owned(),
        source: Source::Modbus(point(register, data_type, 1.0)),
        unit: None,
        writable,
        deadband: None,
    }
}

fn points() -> Vec<Point> {
    vec![
        modbus_point("speed", "holding:100", DataType::U16, true),
        modbus_point("alarm", "coil:3", DataType::Bool, false),
        // Not polled: only Modbus sources are.
        Point {
            name: "temp".to_owned(),
            source: Source::Sim(SimSpec {
                kind: SimKind::Sine,
                period_s: 10.0,
                min: 0.0,
                max: 1.0,
                every_ms: 100,
            }),
            unit: None,
            writable: false,
            deadband: None,
        },
    ]
}

struct Running {
    handle: PollerHandle,
    readings: mpsc::Receiver<Reading>,
    cancel: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn spawn(device: ModbusDevice, points: Vec<Point>) -> Running {
    let (tx, readings) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let handle = Poller::spawn(device, points, tx, cancel.clone());
    Running {
        handle,
        readings,
        cancel,
    }
}

/// Receives readings until `point` has one of `quality`, and returns it.
async fn reading(r: &mut Running, point: &str, quality: Quality) -> Reading {
    within(&format!("{point} to be {quality:?}"), async {
        loop {
            let reading = r.readings.recv().await.unwrap();
            assert_ne!(reading.point, "temp", "sim points are not polled");
            if reading.point == point && reading.quality == quality {
                return reading;
            }
        }
    })
    .await
}

#[tokio::test]
async fn an_unreachable_device_gives_bad_readings_for_every_point() {
    let mut r = spawn(device(closed_port().await, 500, None), points());
    for name in ["speed", "alarm"] {
        let bad = reading(&mut r, name, Quality::Bad).await;
        assert_eq!(bad.value, Value::Null);
    }
    let polls = eventually("a few more polls", || async {
        let s = r.handle.stats();
        (s.polls >= 3).then_some(s)
    })
    .await;
    assert!(polls.errors >= 1);
    assert_eq!(polls.reconnects, 0, "it never connected");
}

#[tokio::test]
async fn a_silent_device_times_out_into_bad_readings() {
    let silent = CancellationToken::new();
    let addr = silent_listener(silent.clone()).await;
    let mut r = spawn(device(addr, 200, None), points());
    for name in ["speed", "alarm"] {
        assert_eq!(reading(&mut r, name, Quality::Bad).await.value, Value::Null);
    }
    let stats = eventually("a reconnect after the timeout", || async {
        let s = r.handle.stats();
        (s.reconnects >= 1).then_some(s)
    })
    .await;
    assert!(stats.errors >= 2);
    silent.cancel();
}

#[tokio::test]
async fn good_then_bad_when_the_plc_goes_then_good_when_it_returns() {
    let sim = start_sim(config(&["holding:100=1200", "coil:3=true"], None)).await;
    let addr = sim.addr;
    let mut r = spawn(device(addr, 500, None), points());
    assert_eq!(
        reading(&mut r, "speed", Quality::Good).await.value,
        Value::Int(1200)
    );
    assert_eq!(
        reading(&mut r, "alarm", Quality::Good).await.value,
        Value::Bool(true)
    );

    sim.stop().await;
    reading(&mut r, "speed", Quality::Bad).await;
    reading(&mut r, "alarm", Quality::Bad).await;

    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("skipping the restart half: cannot rebind {addr}: {e}");
            return;
        }
    };
    let sim = serve_on(listener, config(&["holding:100=7"], None));
    assert_eq!(
        reading(&mut r, "speed", Quality::Good).await.value,
        Value::Int(7)
    );
    let stats = eventually("a reconnect to be counted", || async {
        let s = r.handle.stats();
        (s.reconnects >= 1).then_some(s)
    })
    .await;
    assert!(stats.errors >= 1);
    sim.stop().await;
}

#[tokio::test]
async fn writes_go_through_the_task_and_bad_writes_are_refused() {
    let sim = start_sim(config(&[], None)).await;
    let mut r = spawn(device(sim.addr, 2000, None), points());
    within("a write", r.handle.write("speed", Value::Int(321)))
        .await
        .unwrap();
    within("the written value to be polled", async {
        loop {
            let x = r.readings.recv().await.unwrap();
            if x.point == "speed" && x.value == Value::Int(321) {
                assert_eq!(x.quality, Quality::Good);
                return;
            }
        }
    })
    .await;
    assert_eq!(r.handle.stats().writes, 1);

    let h = &r.handle;
    assert!(matches!(
        h.write("nope", Value::Int(1)).await,
        Err(WriteError::UnknownPoint(p)) if p == "nope"
    ));
    assert!(matches!(
        h.write("temp", Value::Int(1)).await,
        Err(WriteError::UnknownPoint(_))
    ));
    assert!(matches!(
        h.write("alarm", Value::Bool(true)).await,
        Err(WriteError::NotWritable(_))
    ));
    let err = h.write("speed", Value::Int(70000)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "value 70000 does not fit u16 (0..=65535) at scale 1"
    );
    let err = h.write("speed", Value::Bool(true)).await.unwrap_err();
    assert_eq!(err.to_string(), "expected a number, got true");
    assert_eq!(h.stats().writes, 1);
    sim.stop().await;
}

#[tokio::test]
async fn a_write_to_an_unreachable_plc_reports_the_plc_error() {
    let mut r = spawn(device(closed_port().await, 500, None), points());
    let err = within("a write", r.handle.write("speed", Value::Int(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Plc(_)), "{err:?}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    r.readings.close();
}

#[tokio::test]
async fn a_full_queue_is_busy_at_once() {
    let silent = CancellationToken::new();
    let addr = silent_listener(silent.clone()).await;
    // The device never answers and the timeout is long: the task is stuck in
    // its first call, so the queue fills.
    let r = spawn(device(addr, 60_000, None), points());
    let mut busy_after = None;
    for i in 0..=adapters::poller::COMMAND_QUEUE + 2 {
        // Polling once enqueues the command; the reply is not awaited.
        match r.handle.write("speed", Value::Int(1)).now_or_never() {
            None => {}
            Some(Err(WriteError::Busy)) => {
                busy_after = Some(i);
                break;
            }
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    let n = busy_after.expect("the queue never filled");
    // The task may have taken one command off the queue before it got stuck.
    assert!(
        (adapters::poller::COMMAND_QUEUE..=adapters::poller::COMMAND_QUEUE + 1).contains(&n),
        "{n}"
    );
    silent.cancel();
}

#[tokio::test]
async fn a_cancelled_poller_stops_and_says_so() {
    let mut r = spawn(device(closed_port().await, 500, None), points());
    r.cancel.cancel();
    within("the poller to stop", r.handle.stopped()).await;
    assert!(matches!(
        r.handle.write("speed", Value::Int(1)).await,
        Err(WriteError::Stopped)
    ));
    assert!(matches!(
        r.handle.set_life_sign(true).await,
        Err(WriteError::Stopped)
    ));
    // The readings channel is closed once the task is gone.
    while r.readings.recv().await.is_some() {}
}

#[tokio::test]
async fn the_life_sign_is_read_when_standby_and_written_when_active() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("writes.jsonl");
    let sim = start_sim(config(&[], Some(&log))).await;
    // The "other member" writes 41.
    let mut other = ModbusLink::new(sim.addr.to_string(), 1, std::time::Duration::from_secs(2));
    within("a write", other.write_register(900, 41, None))
        .await
        .unwrap();
    let other_peer = other.local_addr().unwrap().to_string();

    let r = spawn(device(sim.addr, 2000, Some("holding:900")), Vec::new());
    eventually("the standby to read the life sign", || async {
        (r.handle.stats().life_sign_seen == Some(41)).then_some(())
    })
    .await;
    let by_poller = |entries: &[plcsim::WriteLogEntry]| {
        entries
            .iter()
            .filter(|e| e.peer != other_peer)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        by_poller(&plcsim::write_log_entries(&log).unwrap()).is_empty(),
        "a standby never writes the life sign"
    );
    assert_eq!(r.handle.stats().life_sign_written, None);

    within("the switch", r.handle.set_life_sign(true))
        .await
        .unwrap();
    let written = eventually("three life-sign writes", || async {
        let mine = by_poller(&plcsim::write_log_entries(&log).unwrap());
        (mine.len() >= 3).then_some(mine)
    })
    .await;
    let values: Vec<u16> = written.iter().map(|e| e.values[0]).collect();
    assert_eq!(values[..3], [42, 43, 44], "the counter continues");
    assert!(written
        .iter()
        .all(|e| e.fc == 6 && e.kind == "holding" && e.address == 900));
    assert!(written.windows(2).all(|w| w[0].peer == w[1].peer));

    within("the switch", r.handle.set_life_sign(false))
        .await
        .unwrap();
    let after_switch = by_poller(&plcsim::write_log_entries(&log).unwrap()).len();
    let last_written = r.handle.stats().life_sign_written.unwrap();
    let polls = r.handle.stats().polls;
    eventually("three more polls", || async {
        (r.handle.stats().polls >= polls + 3).then_some(())
    })
    .await;
    assert_eq!(
        by_poller(&plcsim::write_log_entries(&log).unwrap()).len(),
        after_switch,
        "no life-sign write after the switch-off barrier"
    );
    assert_eq!(r.handle.stats().life_sign_seen, Some(last_written));
    sim.stop().await;
}

#[tokio::test]
async fn a_closed_write_guard_fences_commands_and_the_life_sign() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("writes.jsonl");
    let sim = start_sim(config(&[], Some(&log))).await;
    let open = Arc::new(AtomicBool::new(false));
    let guard_open = Arc::clone(&open);
    let (tx, _readings) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let handle = Poller::spawn_guarded(
        device(sim.addr, 2000, Some("holding:900")),
        points(),
        tx,
        adapters::poller::Fencing::from(
            Arc::new(move || guard_open.load(Ordering::SeqCst)) as adapters::poller::WriteGuard
        ),
        cancel.clone(),
    );
    within("the switch", handle.set_life_sign(true))
        .await
        .unwrap();
    assert!(matches!(
        handle.write("speed", Value::Int(5)).await,
        Err(WriteError::Fenced)
    ));
    let polls = handle.stats().polls;
    eventually("three polls", || async {
        (handle.stats().polls >= polls + 3).then_some(())
    })
    .await;
    assert!(
        plcsim::write_log_entries(&log).unwrap().is_empty(),
        "nothing may reach the PLC while fenced"
    );
    open.store(true, Ordering::SeqCst);
    within("a write", handle.write("speed", Value::Int(5)))
        .await
        .unwrap();
    eventually("a life-sign write", || async {
        handle.stats().life_sign_written.map(|_| ())
    })
    .await;
    cancel.cancel();
    sim.stop().await;
}

/// A lease the test controls: valid until `end`, as an HA member's is.
fn lease_fencing(
    end: &std::sync::Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
    margin: std::time::Duration,
) -> adapters::poller::Fencing {
    use std::sync::Arc;
    let (a, b) = (Arc::clone(end), Arc::clone(end));
    adapters::poller::Fencing {
        allowed: Arc::new(move || {
            a.lock()
                .unwrap()
                .is_some_and(|e| tokio::time::Instant::now() < e)
        }),
        until: Some(Arc::new(move || *b.lock().unwrap())),
        margin,
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Each activation writes over a connection of its own, and nothing after
/// its lease ended: the poller resets the connection when the lease it
/// wrote under ends. (One process can be active twice; before, both
/// activations wrote over one connection, so a PLC-side log could not tell
/// them apart, and whatever a reused connection still carried belonged to
/// no lease.)
#[tokio::test]
async fn every_activation_writes_over_its_own_connection_and_nothing_after_its_lease() {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("writes.jsonl");
    let sim = start_sim(config(&[], Some(&log))).await;
    let end = Arc::new(Mutex::new(None));
    let (tx, _readings) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let handle = Poller::spawn_guarded(
        device(sim.addr, 2000, Some("holding:900")),
        points(),
        tx,
        lease_fencing(&end, Duration::from_millis(20)),
        cancel.clone(),
    );
    within("the switch", handle.set_life_sign(true))
        .await
        .unwrap();
    let mut lease_ends = Vec::new();
    for _activation in 0..2 {
        let before = handle.stats().life_sign_written;
        *end.lock().unwrap() = Some(tokio::time::Instant::now() + Duration::from_millis(400));
        eventually("a life-sign write in this lease", || async {
            (handle.stats().life_sign_written != before).then_some(())
        })
        .await;
        // The lease ends (not renewed): wait until the poller noticed.
        let reconnects = handle.stats().reconnects;
        *end.lock().unwrap() = Some(tokio::time::Instant::now());
        lease_ends.push(now_us());
        eventually("some polls after the lease", || async {
            let polls = handle.stats().polls;
            tokio::time::sleep(Duration::from_millis(100)).await;
            (handle.stats().polls > polls + 2).then_some(())
        })
        .await;
        eventually("the standby's reads on a new connection", || async {
            (handle.stats().reconnects > reconnects).then_some(())
        })
        .await;
    }
    let entries = plcsim::write_log_entries(&log).unwrap();
    let peers: Vec<&str> = entries.iter().map(|e| e.peer.as_str()).collect();
    let first = entries.iter().filter(|e| e.ts_us < lease_ends[0]);
    let second = entries.iter().filter(|e| e.ts_us > lease_ends[0]);
    let first_peers: std::collections::BTreeSet<&str> = first.map(|e| e.peer.as_str()).collect();
    let second_peers: std::collections::BTreeSet<&str> = second.map(|e| e.peer.as_str()).collect();
    assert!(
        !first_peers.is_empty() && !second_peers.is_empty(),
        "{peers:?}"
    );
    assert!(
        first_peers.is_disjoint(&second_peers),
        "two activations wrote over one connection: {peers:?}"
    );
    assert!(
        entries.iter().all(|e| e.ts_us < lease_ends[1]),
        "a write after the last lease ended: {peers:?}"
    );
    cancel.cancel();
    sim.stop().await;
}

/// A write is given up at the lease's end minus the margin, not at the
/// device timeout: one that cannot finish in time is not even started, and
/// one the PLC does not answer in time is cut short (connection reset).
#[tokio::test]
async fn a_write_never_outlives_its_lease_minus_the_margin() {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("writes.jsonl");
    let sim = start_sim(config(&[], Some(&log))).await;
    let end = Arc::new(Mutex::new(None));
    let (tx, _readings) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let handle = Poller::spawn_guarded(
        device(sim.addr, 2000, None),
        points(),
        tx,
        lease_fencing(&end, Duration::from_millis(100)),
        cancel.clone(),
    );
    // Valid for 50 ms more, inside the 100 ms margin: fenced, nothing sent.
    *end.lock().unwrap() = Some(tokio::time::Instant::now() + Duration::from_millis(50));
    assert!(matches!(
        handle.write("speed", Value::Int(5)).await,
        Err(WriteError::Fenced)
    ));
    assert!(plcsim::write_log_entries(&log).unwrap().is_empty());

    // A device that accepts and never answers: the write's deadline is the
    // lease's (300 - 100 ms), not the 2 s device timeout.
    let silent_cancel = CancellationToken::new();
    let silent = silent_listener(silent_cancel.clone()).await;
    let mut link = ModbusLink::new(silent.to_string(), 1, Duration::from_secs(2));
    let until = tokio::time::Instant::now() + Duration::from_millis(200);
    let err = within("the write's own deadline", async {
        link.write_register(900, 1, Some(until)).await
    })
    .await
    .unwrap_err();
    assert!(err.is_deadline(), "{err}");
    assert!(!link.is_connected(), "the connection must be reset");
    // Already past: not even a connect.
    let err = link
        .write_register(900, 1, Some(tokio::time::Instant::now()))
        .await
        .unwrap_err();
    assert!(err.is_deadline(), "{err}");
    assert_eq!(link.connects(), 1);
    silent_cancel.cancel();
    cancel.cancel();
    sim.stop().await;
}
