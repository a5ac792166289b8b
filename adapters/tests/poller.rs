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
    within("a write", other.write_register(900, 41))
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
        Arc::new(move || guard_open.load(Ordering::SeqCst)),
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
