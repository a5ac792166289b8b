//! The fault campaign, bounded and seeded, as the test suite runs it: two
//! schedules of overlapping faults (kills, freezes, link cuts of actives,
//! standbys, witnesses and nats-servers, a slow PLC link, a wiped leaf) on
//! a real tree whose Modbus pair talks to a standard Modbus server
//! (pymodbus) behind the campaign's proxy. Every invariant is checked from
//! outside the processes after each schedule (`canopy bench faults
//! --help`); the long runs (100 schedules) are in BENCHMARKS.md. Cutting
//! one process's links needs root (cgroup v2 and iptables), as CI has.

use tests::{free_ports, PyModbus};

#[test]
fn two_seeded_schedules_of_faults_leave_a_sound_history() -> anyhow::Result<()> {
    let plc = free_ports(1);
    let _plc = PyModbus::start(plc, &["--holding", "100=5", "--holding", "101=7"])?;
    let work = tempfile::tempdir()?;
    let plc_addr = format!("127.0.0.1:{plc}");
    let (code, out, err) = tests::cli(&[
        "bench",
        "faults",
        "--schedules",
        "2",
        "--seed",
        "20261201",
        "--faults",
        "6",
        "--window-s",
        "12",
        "--plc",
        &plc_addr,
        "--workdir",
        &work.path().display().to_string(),
        "--json",
    ])?;
    let report: serde_json::Value = serde_json::from_str(out.trim())
        .map_err(|e| anyhow::anyhow!("no JSON report ({e}); stderr:\n{err}"))?;
    assert_eq!(
        report["violations"], 0,
        "the campaign found violations:\n{err}"
    );
    assert!(report["failed"].is_null(), "the campaign stopped:\n{err}");
    assert_eq!(report["schedules"], 2, "{report}");
    assert!(report["faults"].as_u64().unwrap_or(0) >= 6, "{report}");
    assert_eq!(code, 0, "{err}");
    Ok(())
}
