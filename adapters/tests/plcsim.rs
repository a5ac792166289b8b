//! plcsim as a client sees it: drives, exceptions, the write log file.
#![allow(clippy::unwrap_used)]

mod common;

use std::{io::Write, time::Duration};

use adapters::{
    modbus::{ModbusError, ModbusLink},
    plcsim::{self, Drive, PlcSimConfig},
};
use common::*;
use events::Value;
use topology::DataType;

#[tokio::test]
async fn driven_registers_move_and_consts_hold() {
    let drives: Vec<Drive> = [
        "holding:10=ramp,period_s=1,min=0,max=1000",
        "input:20=const,value=-5,type=i16",
        "holding:30=const,value=2.5,type=f32",
        "coil:40=square,period_s=0.4,min=0,max=1",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let sim = start_sim(PlcSimConfig {
        drives,
        ..PlcSimConfig::default()
    })
    .await;
    let mut l = ModbusLink::new(sim.addr.to_string(), 1, Duration::from_secs(2));
    assert_eq!(
        l.read(&point("input:20", DataType::I16, 1.0))
            .await
            .unwrap(),
        Value::Int(-5)
    );
    assert_eq!(
        l.read(&point("holding:30", DataType::F32, 1.0))
            .await
            .unwrap(),
        Value::Float(2.5)
    );
    let ramp = point("holding:10", DataType::U16, 1.0);
    let first = l.read(&ramp).await.unwrap();
    within("the ramp to move", async {
        while l.read(&ramp).await.unwrap() == first {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let coil = point("coil:40", DataType::Bool, 1.0);
    let first = l.read(&coil).await.unwrap();
    within("the square wave to flip", async {
        while l.read(&coil).await.unwrap() == first {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    sim.stop().await;
}

#[tokio::test]
async fn out_of_range_is_an_exception_not_a_crash() {
    let sim = start_sim(config(&[], None)).await;
    let mut l = ModbusLink::new(sim.addr.to_string(), 1, Duration::from_secs(2));
    for p in [
        point("holding:65535", DataType::F32, 1.0),
        point("input:65535", DataType::I32, 1.0),
    ] {
        let err = l.read(&p).await.unwrap_err();
        assert!(
            matches!(err, ModbusError::Exception { code: 2, .. }),
            "{err:?}"
        );
    }
    let err = l
        .write(&point("holding:65535", DataType::U32, 1.0), &Value::Int(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ModbusError::Exception { code: 2, .. }),
        "{err:?}"
    );
    // Still serving, on the same connection.
    l.write_register(65535, 3, None).await.unwrap();
    assert_eq!(l.read_register(65535).await.unwrap(), 3);
    assert_eq!(l.connects(), 1);
    sim.stop().await;
}

#[test]
fn the_write_log_parser_skips_a_torn_last_line_and_names_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(
        f,
        r#"{{"ts_us":1,"peer":"127.0.0.1:5","fc":6,"kind":"holding","address":900,"values":[17]}}"#
    )
    .unwrap();
    write!(f, r#"{{"ts_us":2,"peer":"#).unwrap();
    f.flush().unwrap();
    let entries = plcsim::write_log_entries(&path).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].values, vec![17]);
    assert_eq!(entries[0].peer, "127.0.0.1:5");

    writeln!(f).unwrap();
    let err = plcsim::write_log_entries(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("log.jsonl:2:"), "{err}");
}

#[tokio::test]
async fn an_unwritable_log_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = PlcSimConfig {
        write_log: Some(dir.path().join("no/such/dir/log.jsonl")),
        ..PlcSimConfig::default()
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let outcome = within("serve to fail", plcsim::serve(listener, config, cancel)).await;
    assert!(outcome.is_err());
}
