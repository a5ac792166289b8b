//! Persistence: a root whose data is wiped rebuilds the same state from
//! its children's streams; an ordinary restart restores the state snapshot
//! and refuses one that is torn or that the streams do not confirm.

use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use tests::{connect, free_ports, request, wait_for, Lab, PyModbus, TopologyBuilder};

const WAIT: Duration = Duration::from_secs(60);

fn quiet_tree(plc: u16) -> String {
    // Constant PLC values and no simulated points: the state only changes
    // through the commands the test sends, so two digests can be equal.
    let modbus = format!(
        "modbus = {{ address = \"127.0.0.1:{plc}\", unit = 1, poll_ms = 100, timeout_ms = 300 }}"
    );
    let mid = "[[node.point]]\nname = \"flow\"\nsource = \"modbus\"\nregister = \"holding:100\"\nscale = 0.1\nwritable = true\n";
    let leaf = "[[node.point]]\nname = \"co\"\nsource = \"modbus\"\nregister = \"input:7\"\n";
    TopologyBuilder::new("rebuild")
        .node("root", "", "")
        .node("root.mid", &modbus, mid)
        .node("root.mid.leaf", &modbus, leaf)
        .build()
}

async fn digest(client: &async_nats::Client) -> anyhow::Result<String> {
    let r = request(client, "canopy.state.root", "{\"digest\": true}").await?;
    Ok(r["digest"].as_str().context("digest")?.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_root_rebuilds_an_identical_state_from_its_children() -> anyhow::Result<()> {
    let plc = free_ports(1);
    let _plc = PyModbus::start(plc, &["--holding", "100=1234", "--input", "7=77"])?;
    let lab = Lab::start(&quiet_tree(plc), &["--no-plc-sim"])?;
    let url = lab.url("root", "a")?;
    let root = connect(&url).await?;
    use events::CommandOp::{Force, Unforce};
    for (op, value) in [(Force, Some(5)), (Unforce, None), (Force, Some(7))] {
        let body = lab.signed("operator", "root.mid", op, "flow", value.map(|v| v.into()))?;
        let r = request(&root, "canopy.cmd.root.mid", &body).await?;
        assert_eq!(r["ok"], true, "{r}");
    }
    let before = wait_for("a settled state at the root", WAIT, || async {
        let s = request(&root, "canopy.state.root", "").await?;
        // The last command's value: the replies come before the events
        // reach the root, so an earlier forced value is not settled yet.
        let flow = &s["points"]["root.mid.flow"];
        let forced = flow["forced"] == true && flow["value"] == 7;
        let has_leaf = s["points"]["root.mid.leaf.co"]["value"] == 77;
        if !(forced && has_leaf) {
            return Ok(None);
        }
        Ok(Some(digest(&root).await?))
    })
    .await?;
    // Nothing changes by itself in this tree: the digest is stable.
    let before_state = request(&root, "canopy.state.root", "").await?;
    assert_eq!(digest(&root).await?, before);

    let member = lab.member("root", "a")?;
    let pid = member["pid"].as_u64().context("pid")? as u32;
    let data = std::path::PathBuf::from(member["data"].as_str().context("data")?);
    assert!(tests::kill(pid, Signal::SIGKILL));
    wait_for("the root member to be gone", WAIT, || async {
        Ok((!tests::kill(pid, Signal::SIGCONT)).then_some(()))
    })
    .await?;
    std::fs::remove_dir_all(&data)?;
    std::fs::create_dir_all(&data)?;
    let _restarted = tests::Respawned::start(&member["argv"])?;
    let root = wait_for("the restarted root's server", WAIT, || async {
        Ok(Some(connect(&url).await?))
    })
    .await?;
    let after = wait_for("the rebuilt state to match", WAIT, || async {
        let d = digest(&root).await?;
        Ok((d == before).then_some(d))
    })
    .await;
    if after.is_err() {
        let now = request(&root, "canopy.state.root", "").await?;
        eprintln!("state before the wipe: {before_state}\nrebuilt state: {now}");
    }
    assert_eq!(after?, before);
    Ok(())
}

/// The member's counters (`canopy.member.<node>.<member>`).
async fn counters(client: &async_nats::Client) -> anyhow::Result<serde_json::Value> {
    let info = request(client, "canopy.member.root.a", "").await?;
    Ok(info["counters"].clone())
}

/// Waits until the process `pid` is gone.
async fn gone(pid: u32) -> anyhow::Result<()> {
    wait_for("the root member to be gone", WAIT, || async {
        Ok((!tests::kill(pid, Signal::SIGCONT)).then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_restores_the_snapshot_and_refuses_a_torn_or_unconfirmed_one(
) -> anyhow::Result<()> {
    let plc = free_ports(1);
    let _plc = PyModbus::start(plc, &["--holding", "100=1234", "--input", "7=77"])?;
    let lab = Lab::start(&quiet_tree(plc), &["--no-plc-sim"])?;
    let url = lab.url("root", "a")?;
    let root = connect(&url).await?;
    let force = lab.signed(
        "operator",
        "root.mid",
        events::CommandOp::Force,
        "flow",
        Some(5.into()),
    )?;
    let r = request(&root, "canopy.cmd.root.mid", &force).await?;
    assert_eq!(r["ok"], true, "{r}");
    let before = wait_for("a settled state at the root", WAIT, || async {
        let s = request(&root, "canopy.state.root", "").await?;
        let settled = s["points"]["root.mid.flow"]["forced"] == true
            && s["points"]["root.mid.leaf.co"]["value"] == 77;
        Ok(if settled {
            Some(digest(&root).await?)
        } else {
            None
        })
    })
    .await?;

    let member = lab.member("root", "a")?;
    let data = std::path::PathBuf::from(member["data"].as_str().context("data")?);
    let snapshot = data.join("state.snapshot");
    // A clean stop writes the snapshot.
    let pid = member["pid"].as_u64().context("pid")? as u32;
    assert!(tests::kill(pid, Signal::SIGTERM));
    gone(pid).await?;
    assert!(snapshot.exists(), "no snapshot at {}", snapshot.display());

    // Three restarts: with the snapshot as written, with a torn copy, and
    // with the snapshot kept but the JetStream store wiped (the streams no
    // longer hold what it folded). Each must come back to the same digest;
    // the counters tell which path it took.
    for case in ["intact", "torn", "store wiped"] {
        match case {
            "torn" => {
                let mut bytes = std::fs::read(&snapshot)?;
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x01;
                std::fs::write(&snapshot, bytes)?;
            }
            "store wiped" => std::fs::remove_dir_all(data.join("jetstream"))?,
            _ => {}
        }
        let restarted = tests::Respawned::start(&member["argv"])?;
        let root = wait_for("the restarted root's server", WAIT, || async {
            Ok(Some(connect(&url).await?))
        })
        .await?;
        wait_for(
            &format!("the state after a restart ({case})"),
            WAIT,
            || async { Ok((digest(&root).await? == before).then_some(())) },
        )
        .await?;
        let c = counters(&root).await?;
        match case {
            "intact" => {
                assert_eq!(c["origins_restored"], 3, "{c}");
                assert_eq!(c["snapshots_refused"], 0, "{c}");
            }
            "torn" => {
                assert_eq!(c["origins_restored"], 0, "{c}");
                assert_eq!(c["snapshots_refused"], 1, "{c}");
            }
            _ => {
                assert_eq!(c["origins_restored"], 0, "{c}");
                assert_eq!(c["snapshots_refused"], 3, "{c}");
            }
        }
        // Dropping it stops it cleanly, which writes a fresh snapshot.
        drop(restarted);
        assert!(snapshot.exists());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_is_clean_after_failovers_and_reports_a_forged_event() -> anyhow::Result<()> {
    let plc = free_ports(1);
    let modbus = format!(
        "modbus = {{ address = \"127.0.0.1:{plc}\", unit = 1, poll_ms = 50, timeout_ms = 300, life_sign = \"holding:900\" }}"
    );
    let points = "[[node.point]]\nname = \"speed\"\nsource = \"modbus\"\nregister = \"holding:100\"\nwritable = true\n";
    let text = TopologyBuilder::new("audit")
        .node("root", "", &tests::sim_point("uptime", 100))
        .pair("root.plc", &modbus, points)
        .build();
    let lab = Lab::start(&text, &[])?;
    let url = lab.url("root", "a")?;
    let root = connect(&url).await?;
    let manifest = lab.ready["manifest"]
        .as_str()
        .context("manifest")?
        .to_owned();
    let topo = lab.ready["topology"]
        .as_str()
        .context("topology")?
        .to_owned();
    // Two failovers; the killed members come back (stopped on Drop).
    let mut restarted = Vec::new();
    for _ in 0..2 {
        let (act, epoch) = wait_for("an active member", WAIT, || async {
            for m in ["a", "b"] {
                if let Ok(r) = request(&root, &format!("canopy.member.root.plc.{m}"), "").await {
                    if r["role"] == "active" {
                        return Ok(Some((
                            m.to_owned(),
                            r["epoch"].as_u64().unwrap_or(0),
                            r["pid"].as_u64().unwrap_or(0),
                        )));
                    }
                }
            }
            Ok(None)
        })
        .await
        .map(|(m, e, p)| ((m, p), e))?;
        assert!(tests::kill(act.1 as u32, Signal::SIGKILL));
        wait_for("a new epoch", WAIT, || async {
            for m in ["a", "b"] {
                if m == act.0 {
                    continue;
                }
                if let Ok(r) = request(&root, &format!("canopy.member.root.plc.{m}"), "").await {
                    if r["role"] == "active" && r["epoch"].as_u64().unwrap_or(0) > epoch {
                        return Ok(Some(()));
                    }
                }
            }
            Ok(None)
        })
        .await?;
        let argv = lab.member("root.plc", &act.0)?["argv"].clone();
        restarted.push(tests::Respawned::start(&argv)?);
    }
    // Clean once the root holds the new epochs' checkpoints.
    let audit = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        tests::cli(&refs)
    };
    let args = vec![
        "audit".into(),
        "--server".into(),
        url.clone(),
        "--node".into(),
        "root".into(),
        "--manifest".into(),
        manifest.clone(),
        "--topology".into(),
        topo.clone(),
        "--identity".into(),
        lab.identity("viewer")?.display().to_string(),
        "--json".into(),
    ];
    let last = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let clean = wait_for("a clean audit", WAIT, || {
        let args = args.clone();
        let last = last.clone();
        async move {
            let (code, out, _) = audit(args).await?;
            if let Ok(mut l) = last.lock() {
                *l = out.clone();
            }
            let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
            let epochs = v["origins"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|o| o["origin"] == "root.plc")
                .map(|o| o["epochs"].as_array().map(Vec::len).unwrap_or(0))
                .unwrap_or(0);
            Ok((code == 0 && epochs >= 3).then_some(v))
        }
    })
    .await
    .with_context(|| {
        format!(
            "last audit: {}",
            last.lock().map(|l| l.clone()).unwrap_or_default()
        )
    })?;
    assert_eq!(
        clean["violations"].as_array().map(Vec::len),
        Some(0),
        "{clean}"
    );
    // A forged event, straight onto an event subject, by the origin's own
    // member (a compromised one: the broker lets nobody else publish there).
    // A killed member's server may still be coming back: whichever of the
    // pair's servers answers, with that member's certificate.
    let plc = wait_for("a server of root.plc", WAIT, || async {
        for m in ["a", "b"] {
            let tls = lab.process_tls("root.plc", m)?;
            if let Ok((c, _)) = tests::connect_as(&lab.url("root.plc", m)?, &tls).await {
                return Ok(Some(c));
            }
        }
        Ok(None)
    })
    .await?;
    let mut forger = events::Chain::new("root.plc", "a", 1);
    let forged = forger.seal(
        1,
        events::Body::Value(events::ValueBody {
            point: "speed".into(),
            value: events::Value::Int(666),
            quality: events::Quality::Good,
        }),
    )?;
    // Acked by the stream: right after the failovers its R3 group may be
    // electing a leader, and a plain publish then reaches no stream.
    let js = async_nats::jetstream::with_domain(plc, events::subjects::domain("root.plc"));
    let bytes = forged.bytes;
    wait_for(
        "the forged event stored in root.plc's stream",
        WAIT,
        || async {
            let ack = js
                .publish("canopy.ev.root.plc.speed", bytes.clone().into())
                .await?
                .await;
            Ok(ack.ok())
        },
    )
    .await?;
    let found = wait_for("the audit to report the forgery", WAIT, || {
        let args = args.clone();
        async move {
            let (code, out, _) = audit(args).await?;
            Ok((code == 1).then_some(out))
        }
    })
    .await?;
    let v: serde_json::Value = serde_json::from_str(found.trim())?;
    let kinds: Vec<&str> = v["violations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["kind"].as_str())
        .collect();
    assert!(!kinds.is_empty(), "{v}");
    assert!(
        v["violations"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|x| x["origin"] == "root.plc"),
        "{v}"
    );
    Ok(())
}
