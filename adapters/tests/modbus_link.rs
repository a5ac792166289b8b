//! ModbusLink against plcsim (and against sockets that misbehave).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use adapters::{modbus::ModbusError, modbus::ModbusLink, plcsim};
use common::*;
use events::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use topology::DataType;

const TIMEOUT: Duration = Duration::from_millis(2000);

fn link(addr: std::net::SocketAddr) -> ModbusLink {
    ModbusLink::new(addr.to_string(), 1, TIMEOUT)
}

#[tokio::test]
async fn reads_each_type() {
    let f = 1.5f32.to_bits();
    let (f_hi, f_lo) = ((f >> 16).to_string(), (f & 0xFFFF).to_string());
    let initial = [
        "holding:0=65535",
        "holding:1=65535",
        "holding:2=1",
        "holding:3=2",
        "holding:4=65535",
        "holding:5=65534",
        &format!("holding:6={f_hi}"),
        &format!("holding:7={f_lo}"),
        "input:10=1234",
        "holding:11=3",
        "coil:5=true",
        "discrete:6=true",
    ];
    let sim = start_sim(config(&initial, None)).await;
    let mut l = link(sim.addr);
    let cases = [
        (point("holding:0", DataType::U16, 1.0), Value::Int(65535)),
        (point("holding:1", DataType::I16, 1.0), Value::Int(-1)),
        (
            point("holding:2", DataType::U32, 1.0),
            Value::Int(0x0001_0002),
        ),
        (point("holding:4", DataType::I32, 1.0), Value::Int(-2)),
        (point("holding:6", DataType::F32, 1.0), Value::Float(1.5)),
        (point("input:10", DataType::U16, 0.5), Value::Float(617.0)),
        (point("holding:11", DataType::Bool, 1.0), Value::Bool(true)),
        (point("coil:5", DataType::Bool, 1.0), Value::Bool(true)),
        (point("coil:4", DataType::Bool, 1.0), Value::Bool(false)),
        (point("discrete:6", DataType::Bool, 1.0), Value::Bool(true)),
    ];
    for (p, want) in cases {
        let got = within("a read", l.read(&p)).await.unwrap();
        assert_eq!(got, want, "{}", p.register);
    }
    assert_eq!(l.connects(), 1, "one connection serves every read");
    sim.stop().await;
}

#[tokio::test]
async fn writes_then_reads_back_and_the_log_names_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("writes.jsonl");
    let sim = start_sim(config(&[], Some(&log))).await;
    let mut a = link(sim.addr);
    let mut b = link(sim.addr);
    let cases = [
        (
            point("holding:100", DataType::U16, 0.1),
            Value::Float(123.4),
        ),
        (point("holding:102", DataType::I16, 1.0), Value::Int(-7)),
        (point("holding:104", DataType::I32, 1.0), Value::Int(-70000)),
        (point("holding:106", DataType::F32, 1.0), Value::Float(-2.5)),
        (point("holding:108", DataType::Bool, 1.0), Value::Bool(true)),
        (point("coil:7", DataType::Bool, 1.0), Value::Bool(true)),
    ];
    for (p, v) in &cases {
        within("a write", a.write(p, v)).await.unwrap();
        let back = within("a read", b.read(p)).await.unwrap();
        match (v, &back) {
            (Value::Float(want), Value::Float(got)) => {
                assert!((want - got).abs() < 1e-6, "{}: {want} != {got}", p.register)
            }
            _ => assert_eq!(&back, v, "{}", p.register),
        }
    }
    within("a write", b.write_register(900, 17, None))
        .await
        .unwrap();
    assert_eq!(within("a read", a.read_register(900)).await.unwrap(), 17);

    let entries = plcsim::write_log_entries(&log).unwrap();
    let a_peer = a.local_addr().unwrap().to_string();
    let b_peer = b.local_addr().unwrap().to_string();
    let summary: Vec<(String, u8, &str, u16, Vec<u16>)> = entries
        .iter()
        .map(|e| {
            let who = if e.peer == a_peer {
                "a"
            } else if e.peer == b_peer {
                "b"
            } else {
                "?"
            };
            (
                who.to_owned(),
                e.fc,
                e.kind.as_str(),
                e.address,
                e.values.clone(),
            )
        })
        .collect();
    let f = (-2.5f32).to_bits();
    let want: Vec<(String, u8, &str, u16, Vec<u16>)> = vec![
        ("a".into(), 6, "holding", 100, vec![1234]),
        ("a".into(), 6, "holding", 102, vec![0xFFF9]),
        ("a".into(), 16, "holding", 104, vec![0xFFFE, 0xEE90]),
        (
            "a".into(),
            16,
            "holding",
            106,
            vec![(f >> 16) as u16, (f & 0xFFFF) as u16],
        ),
        ("a".into(), 6, "holding", 108, vec![1]),
        ("a".into(), 5, "coil", 7, vec![1]),
        ("b".into(), 6, "holding", 900, vec![17]),
    ];
    assert_eq!(summary, want);
    assert!(entries.windows(2).all(|w| w[0].ts_us <= w[1].ts_us));
    sim.stop().await;
}

#[tokio::test]
async fn an_encode_error_sends_nothing() {
    let sim = start_sim(config(&[], None)).await;
    let mut l = link(sim.addr);
    let err = l
        .write(&point("holding:1", DataType::U16, 1.0), &Value::Int(70000))
        .await
        .unwrap_err();
    assert!(matches!(err, ModbusError::Encode { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{} holding:1: value 70000 does not fit u16 (0..=65535) at scale 1",
            sim.addr
        )
    );
    assert_eq!(l.connects(), 0, "nothing was sent, not even a connect");
    sim.stop().await;
}

#[tokio::test]
async fn an_exception_names_the_register_and_keeps_the_connection() {
    let sim = start_sim(config(&["holding:0=5"], None)).await;
    let mut l = link(sim.addr);
    let err = within(
        "a read",
        l.read(&point("holding:65535", DataType::U32, 1.0)),
    )
    .await
    .unwrap_err();
    let ModbusError::Exception { code, .. } = &err else {
        panic!("expected an exception, got {err:?}");
    };
    assert_eq!(*code, 2);
    assert_eq!(
        err.to_string(),
        format!(
            "{} holding:65535: exception 2 (illegal data address)",
            sim.addr
        )
    );
    assert!(!err.is_link_down());
    assert!(l.is_connected());
    let v = within("a read", l.read(&point("holding:0", DataType::U16, 1.0)))
        .await
        .unwrap();
    assert_eq!(v, Value::Int(5));
    assert_eq!(l.connects(), 1);
    sim.stop().await;
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let addr = closed_port().await;
    let mut l = link(addr);
    let err = within("a read", l.read_register(1)).await.unwrap_err();
    assert!(matches!(err, ModbusError::Connect { .. }), "{err:?}");
    assert!(err.is_link_down());
    assert!(
        err.to_string()
            .starts_with(&format!("{addr}: cannot connect: ")),
        "{err}"
    );
}

#[tokio::test]
async fn a_silent_device_times_out_and_the_link_reconnects() {
    let cancel = CancellationToken::new();
    let addr = silent_listener(cancel.clone()).await;
    let mut l = ModbusLink::new(addr.to_string(), 1, Duration::from_millis(300));
    let p = point("holding:100", DataType::U16, 1.0);
    // The outer bound only stops a broken test from hanging; the link must
    // give up by itself.
    let err = within("the link's own timeout", l.read(&p))
        .await
        .unwrap_err();
    assert!(matches!(err, ModbusError::Timeout { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{addr} holding:100: timed out after 300 ms")
    );
    assert!(!l.is_connected(), "a timed-out connection is dropped");
    let err = within("the link's own timeout", l.write_register(1, 1, None))
        .await
        .unwrap_err();
    assert!(matches!(err, ModbusError::Timeout { .. }), "{err:?}");
    assert_eq!(l.connects(), 2, "each call after a timeout reconnects");
    cancel.cancel();
}

#[tokio::test]
async fn the_link_comes_back_after_the_plc_restarts() {
    let sim = start_sim(config(&["holding:3=33"], None)).await;
    let addr = sim.addr;
    let mut l = link(addr);
    let p = point("holding:3", DataType::U16, 1.0);
    assert_eq!(within("a read", l.read(&p)).await.unwrap(), Value::Int(33));
    sim.stop().await;

    let err = within("a read", l.read(&p)).await.unwrap_err();
    assert!(err.is_link_down(), "{err:?}");

    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            // Another process took the port in between: nothing to test.
            eprintln!("skipping the restart half: cannot rebind {addr}: {e}");
            return;
        }
    };
    let sim = serve_on(listener, config(&["holding:3=44"], None));
    let v = within("the link to reconnect", async {
        loop {
            if let Ok(v) = l.read(&p).await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(v, Value::Int(44));
    assert_eq!(l.connects(), 2);
    sim.stop().await;
}

#[tokio::test]
async fn many_clients_at_once() {
    let sim = start_sim(config(&[], None)).await;
    let mut tasks = Vec::new();
    for i in 0..16u16 {
        let addr = sim.addr;
        tasks.push(tokio::spawn(async move {
            let mut l = link(addr);
            let p = point(&format!("holding:{}", 200 + i), DataType::U16, 1.0);
            for n in 0..20i64 {
                let v = Value::Int(i64::from(i) * 100 + n);
                l.write(&p, &v).await.unwrap();
                assert_eq!(l.read(&p).await.unwrap(), v);
            }
        }));
    }
    for t in tasks {
        within("a client", t).await.unwrap();
    }
    sim.stop().await;
}
