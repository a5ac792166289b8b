//! The event pipeline through a real node tree: every test starts a real
//! `canopy lab` (real nats-servers, members, PLC simulators) on free ports
//! and checks invariants, never timings.

use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use serde_json::Value as Json;
use tests::{
    check_contiguous_chain, connect, free_ports, member_info, read_stream, request, sim_point,
    state, wait_for, Lab, TopologyBuilder,
};

const WAIT: Duration = Duration::from_secs(60);

fn three_level() -> String {
    TopologyBuilder::new("pipeline")
        .node("root", "", &sim_point("uptime", 50))
        .node("root.mid", "", &sim_point("x", 20))
        .node(
            "root.mid.leaf",
            "",
            &(sim_point("a", 10) + &sim_point("b", 10)),
        )
        .build()
}

async fn origin_seq(client: &async_nats::Client, node: &str, origin: &str) -> anyhow::Result<u64> {
    let s = state(client, node).await?;
    Ok(s["origins"][origin]["seq"].as_u64().unwrap_or(0))
}

fn pid_of(v: &Json) -> anyhow::Result<u32> {
    v.as_u64().map(|p| p as u32).context("pid missing")
}

#[tokio::test(flavor = "multi_thread")]
async fn three_level_tree_delivers_every_event_to_the_root_in_order() -> anyhow::Result<()> {
    let lab = Lab::start(&three_level(), &[])?;
    let root = connect(&lab.url("root", "a")?).await?;
    let target = 300;
    wait_for("300 leaf events at the root", WAIT, || async {
        Ok((origin_seq(&root, "root", "root.mid.leaf").await? >= target).then_some(()))
    })
    .await?;
    // The root's replica of the leaf: seq == stream sequence, chain intact,
    // byte-identical to the leaf's own stream.
    let at_root = read_stream(&root, "root", "root.mid.leaf").await?;
    let n = check_contiguous_chain("root.mid.leaf", &at_root)?;
    assert!(n >= target);
    let leaf = connect(&lab.url("root.mid.leaf", "a")?).await?;
    let own = read_stream(&leaf, "root-mid-leaf", "root.mid.leaf").await?;
    assert!(own.len() as u64 >= n);
    assert_eq!(
        &own[..n as usize],
        &at_root[..],
        "the root's copy differs from the origin's stream"
    );
    // The middle node's own events too.
    check_contiguous_chain("root.mid", &read_stream(&root, "root", "root.mid").await?)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_a_middle_nats_server_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let lab = Lab::start(&three_level(), &[])?;
    let root = connect(&lab.url("root", "a")?).await?;
    wait_for("leaf events at the root", WAIT, || async {
        Ok((origin_seq(&root, "root", "root.mid.leaf").await? >= 50).then_some(()))
    })
    .await?;
    let old = pid_of(&lab.member("root.mid", "a")?["nats_pid"])?;
    assert!(
        tests::kill(old, Signal::SIGKILL),
        "could not kill nats-server {old}"
    );
    // The member restarts its server; the link heals; the root catches up.
    let new = wait_for("a new nats-server for root.mid", WAIT, || async {
        let info = member_info(&root, "root.mid", "a").await?;
        Ok(info["nats_pid"].as_u64().filter(|p| *p as u32 != old))
    })
    .await?;
    assert_ne!(new as u32, old);
    let leaf = connect(&lab.url("root.mid.leaf", "a")?).await?;
    let js = async_nats::jetstream::with_domain(leaf.clone(), "root-mid-leaf");
    let mut s = js.get_stream("EV_root-mid-leaf").await?;
    let leaf_tail = s.info().await?.state.last_sequence;
    wait_for("the root to catch up with the leaf", WAIT, || async {
        Ok((origin_seq(&root, "root", "root.mid.leaf").await? >= leaf_tail).then_some(()))
    })
    .await?;
    let at_root = read_stream(&root, "root", "root.mid.leaf").await?;
    let n = check_contiguous_chain("root.mid.leaf", &at_root)?;
    assert!(n >= leaf_tail);
    let own = read_stream(&leaf, "root-mid-leaf", "root.mid.leaf").await?;
    assert_eq!(&own[..n as usize], &at_root[..]);
    check_contiguous_chain("root.mid", &read_stream(&root, "root", "root.mid").await?)?;
    Ok(())
}

fn modbus_tree(plc_port: u16) -> String {
    let modbus = format!(
        "modbus = {{ address = \"127.0.0.1:{plc_port}\", unit = 1, poll_ms = 100, timeout_ms = 300 }}"
    );
    let points = "[[node.point]]\nname = \"speed\"\nsource = \"modbus\"\nregister = \"holding:100\"\nscale = 0.1\nwritable = true\n\
                  [[node.point]]\nname = \"run\"\nsource = \"modbus\"\nregister = \"coil:3\"\ntype = \"bool\"\nwritable = true\n\
                  [[node.point]]\nname = \"co\"\nsource = \"modbus\"\nregister = \"input:7\"\n";
    TopologyBuilder::new("modbus")
        .node("root", "", &sim_point("uptime", 200))
        .node("root.mid", "", &sim_point("x", 200))
        .node("root.mid.plc", &modbus, points)
        .build()
}

async fn point(client: &async_nats::Client, node: &str, name: &str) -> anyhow::Result<Json> {
    Ok(state(client, node).await?["points"][name].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_at_the_root_reaches_a_leaf_plc_and_comes_back_as_an_event() -> anyhow::Result<()>
{
    let lab = Lab::start(&modbus_tree(free_ports(1)), &[])?;
    let url = lab.url("root", "a")?;
    let root = connect(&url).await?;
    let (code, out, err) = lab.cli(&[
        "write",
        "--server",
        &url,
        "root.mid.plc.speed",
        "42.5",
        "--json",
    ])?;
    assert_eq!(code, 0, "write failed: {out} {err}");
    let reply: Json = serde_json::from_str(out.trim())?;
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["origin"], "root.mid.plc");
    wait_for("the written value at the root", WAIT, || async {
        let p = point(&root, "root", "root.mid.plc.speed").await?;
        Ok((p["value"].as_f64() == Some(42.5)).then_some(()))
    })
    .await?;
    // The PLC saw exactly that write.
    let log = lab.ready["plcs"][0]["write_log"]
        .as_str()
        .context("write log")?;
    let entries = std::fs::read_to_string(log)?;
    assert!(
        entries.contains("\"address\":100") && entries.contains("425"),
        "{entries}"
    );

    // Force and unforce are events too.
    let (code, out, _) = lab.cli(&[
        "force",
        "--server",
        &url,
        "root.mid.plc.speed",
        "7",
        "--json",
    ])?;
    assert_eq!(code, 0, "{out}");
    wait_for("the forced value at the root", WAIT, || async {
        let p = point(&root, "root", "root.mid.plc.speed").await?;
        Ok((p["forced"] == true && p["value"].as_f64() == Some(7.0)).then_some(()))
    })
    .await?;
    let (code, out, _) = lab.cli(&["unforce", "--server", &url, "root.mid.plc.speed", "--json"])?;
    assert_eq!(code, 0, "{out}");
    wait_for("the field value back at the root", WAIT, || async {
        let p = point(&root, "root", "root.mid.plc.speed").await?;
        Ok((p["forced"] == false && p["value"].as_f64() == Some(42.5)).then_some(()))
    })
    .await?;

    // Refusals name the reason, and nothing dies.
    for (args, why) in [
        (
            vec!["write", "--server", &url, "root.mid.plc.co", "3"],
            "not writable",
        ),
        (
            vec!["write", "--server", &url, "root.mid.plc.nope", "3"],
            "unknown point",
        ),
        (
            vec!["write", "--server", &url, "root.mid.plc.run", "3"],
            "expected true or false",
        ),
        (
            vec!["write", "--server", &url, "root.mid.plc.speed", "99999"],
            "does not fit",
        ),
    ] {
        let (code, out, err) = lab.cli(&args)?;
        assert_eq!(code, 1, "{args:?}: {out} {err}");
        assert!(err.contains(why), "{args:?}: expected {why:?} in {err:?}");
    }
    member_info(&root, "root.mid.plc", "a").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_event_and_command_subjects_is_counted_and_kept_out_of_state(
) -> anyhow::Result<()> {
    let lab = Lab::start(&three_level(), &[])?;
    let root = connect(&lab.url("root", "a")?).await?;
    wait_for("mid events at the root", WAIT, || async {
        Ok((origin_seq(&root, "root", "root.mid").await? >= 20).then_some(()))
    })
    .await?;
    // Garbage onto the middle node's event subjects, from its own member
    // (a buggy or compromised one: the broker lets nobody else publish
    // there): it lands in root.mid's own stream.
    let (mid, _) = tests::connect_as(
        &lab.url("root.mid", "a")?,
        &lab.process_tls("root.mid", "a")?,
    )
    .await?;
    mid.publish("canopy.ev.root.mid.x", "\u{0}not cbor at all".into())
        .await?;
    mid.publish(
        "canopy.ev.root.mid.ghost",
        vec![0xa1, 0x61, 0x76, 0x02].into(),
    )
    .await?;
    mid.flush().await?;
    wait_for("the garbage to be counted at the root", WAIT, || async {
        let info = member_info(&root, "root", "a").await?;
        let rejected = info["counters"]["rejected"].as_u64().unwrap_or(0);
        Ok((rejected >= 2).then_some(()))
    })
    .await?;
    // The middle node keeps publishing past the foreign messages.
    let before = origin_seq(&root, "root", "root.mid").await?;
    wait_for("root.mid to keep publishing", WAIT, || async {
        Ok((origin_seq(&root, "root", "root.mid").await? > before + 10).then_some(()))
    })
    .await?;
    let s = state(&root, "root").await?;
    assert!(
        s["points"].get("root.mid.ghost").is_none(),
        "garbage became a point"
    );
    assert_eq!(s["points"]["root.mid.x"]["quality"], "good");

    // A malformed command gets an error reply and is counted.
    let reply = request(&root, "canopy.cmd.root.mid", "{not json").await?;
    assert_eq!(reply["ok"], false);
    assert!(reply["error"]
        .as_str()
        .unwrap_or("")
        .contains("bad command"));
    let reply = request(&root, "canopy.state.root", "{\"bogus\": 1}").await?;
    assert!(reply["error"].as_str().is_some(), "{reply}");
    let info = member_info(&root, "root.mid", "a").await?;
    assert!(info["counters"]["bad_commands"].as_u64().unwrap_or(0) >= 1);
    for node in ["root", "root.mid", "root.mid.leaf"] {
        member_info(&root, node, "a").await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plc_that_goes_away_turns_quality_bad_and_nothing_crashes() -> anyhow::Result<()> {
    let lab = Lab::start(&modbus_tree(free_ports(1)), &[])?;
    let root = connect(&lab.url("root", "a")?).await?;
    wait_for("good quality first", WAIT, || async {
        Ok((point(&root, "root", "root.mid.plc.co").await?["quality"] == "good").then_some(()))
    })
    .await?;
    let plc = pid_of(&lab.ready["plcs"][0]["pid"])?;
    assert!(tests::kill(plc, Signal::SIGKILL));
    wait_for("bad quality at the root", WAIT, || async {
        let p = point(&root, "root", "root.mid.plc.co").await?;
        Ok((p["quality"] == "bad").then_some(()))
    })
    .await?;
    let (code, _, err) = lab.cli(&[
        "write",
        "--server",
        &lab.url("root", "a")?,
        "root.mid.plc.speed",
        "1",
    ])?;
    assert_eq!(code, 1);
    assert!(err.contains("PLC"), "{err}");
    member_info(&root, "root.mid.plc", "a").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standard_modbus_server_that_is_not_plc_sim_feeds_the_root() -> anyhow::Result<()> {
    let port = free_ports(1);
    let _plc = tests::PyModbus::start(port, &["--holding", "100=1234", "--input", "7=77"])?;
    let lab = Lab::start(&modbus_tree(port), &["--no-plc-sim"])?;
    let root = connect(&lab.url("root", "a")?).await?;
    wait_for("pymodbus values at the root", WAIT, || async {
        let s = point(&root, "root", "root.mid.plc.speed").await?;
        let c = point(&root, "root", "root.mid.plc.co").await?;
        Ok((s["value"].as_f64() == Some(123.4) && c["value"].as_i64() == Some(77)).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn python_decodes_the_same_events_and_they_match_the_state() -> anyhow::Result<()> {
    let lab = Lab::start(&three_level(), &[])?;
    let url = lab.url("root", "a")?;
    let identity = lab.identity("operator")?;
    let out = tokio::process::Command::new(tests::python_bin())
        .arg(tests::workspace_root().join("examples/python/watch.py"))
        .arg("--identity")
        .arg(&identity)
        .args([
            url.as_str(),
            "root.mid.leaf.>",
            "--count",
            "40",
            "--timeout",
            "60",
        ])
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed: {stderr}");
    assert!(!stderr.contains("chain broken"), "{stderr}");
    let lines: Vec<Json> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 40);
    let root = connect(&url).await?;
    let last = lines
        .iter()
        .filter_map(|l| l["seq"].as_u64())
        .max()
        .context("no seq")?;
    wait_for("the root to hold what python saw", WAIT, || async {
        Ok((origin_seq(&root, "root", "root.mid.leaf").await? >= last).then_some(()))
    })
    .await?;
    // Every event python decoded is byte-for-byte the one the root stores.
    let stored = read_stream(&root, "root", "root.mid.leaf").await?;
    for l in &lines {
        let seq = l["seq"].as_u64().context("seq")?;
        let ev = events::decode(&stored[(seq - 1) as usize].1)?;
        let rust = serde_json::to_value(ev.body.point().map(|_| &ev.body))?;
        let value = match &ev.body {
            events::Body::Value(b) => serde_json::to_value(&b.value)?,
            _ => Json::Null,
        };
        assert_eq!(l["value"], value, "seq {seq}: python {l} vs rust {rust}");
        assert_eq!(l["epoch"].as_u64(), Some(ev.epoch));
    }
    // And the state agrees with the last event python saw of a point, when
    // nothing newer reached the state.
    let s = state(&root, "root").await?;
    for l in lines.iter().rev() {
        let key = format!("root.mid.leaf.{}", l["point"].as_str().unwrap_or(""));
        if s["points"][&key]["seq"] == l["seq"] {
            assert_eq!(s["points"][&key]["value"], l["value"]);
        }
    }
    Ok(())
}

/// With the product's default durability (`sync = "always"`: every write
/// fsynced), a leaf that bursts (ten points changing every millisecond,
/// more than the disk takes) is carried to the root completely: the root's
/// replica reaches every tail the leaf had, hop by hop, and stays a
/// byte-identical, unbroken copy.
#[tokio::test(flavor = "multi_thread")]
async fn a_bursting_leaf_with_sync_always_reaches_the_root_completely() -> anyhow::Result<()> {
    let burst: String = (0..10).map(|i| sim_point(&format!("p{i}"), 1)).collect();
    let topo = TopologyBuilder::with_sync("burst", "always")
        .node("root", "", "")
        .node("root.mid", "", "")
        .node("root.mid.leaf", "", &burst)
        .build();
    let lab = Lab::start(&topo, &[])?;
    let root = connect(&lab.url("root", "a")?).await?;
    let leaf = connect(&lab.url("root.mid.leaf", "a")?).await?;
    let js = async_nats::jetstream::with_domain(leaf.clone(), "root-mid-leaf");
    let own = js.get_stream("EV_root-mid-leaf").await?;
    // Let the burst build a backlog, then take the leaf's tail: the root
    // must get there although the leaf keeps bursting.
    let tail = wait_for("a burst of 3000 events at the leaf", WAIT, || {
        let mut own = own.clone();
        async move {
            let last = own.info().await?.state.last_sequence;
            Ok((last >= 3000).then_some(last))
        }
    })
    .await?;
    wait_for(
        &format!("the root's replica at seq {tail}"),
        WAIT * 2,
        || async {
            let js = async_nats::jetstream::with_domain(root.clone(), "root");
            let mut replica = js.get_stream("EV_root-mid-leaf").await?;
            Ok((replica.info().await?.state.last_sequence >= tail).then_some(()))
        },
    )
    .await?;
    let at_root = read_stream(&root, "root", "root.mid.leaf").await?;
    let n = check_contiguous_chain("root.mid.leaf", &at_root)?;
    assert!(n >= tail);
    let copy = read_stream(&leaf, "root-mid-leaf", "root.mid.leaf").await?;
    assert_eq!(&copy[..n as usize], &at_root[..]);
    Ok(())
}

/// A flood of state requests does not hold the fold back: requests wait in
/// a bounded queue (the excess is dropped and counted), while the fold goes
/// on folding the events that keep arriving.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_state_requests_is_bounded_and_does_not_stop_the_fold() -> anyhow::Result<()> {
    let lab = Lab::start(&three_level(), &[])?;
    let root = connect(&lab.url("root", "a")?).await?;
    wait_for("events at the root", WAIT, || async {
        Ok((origin_seq(&root, "root", "root.mid.leaf").await? > 0).then_some(()))
    })
    .await?;
    let folded = |info: Json| info["counters"]["folded"].as_u64().unwrap_or(0);
    let before = folded(member_info(&root, "root", "a").await?);
    // Fire-and-forget requests, as fast as the client sends them.
    let flood = connect(&lab.url("root", "a")?).await?;
    let inbox = flood.new_inbox();
    let _replies = flood.subscribe(inbox.clone()).await?;
    for _ in 0..20_000 {
        flood
            .publish_with_reply("canopy.state.root", inbox.clone(), "".into())
            .await?;
    }
    flood.flush().await?;
    // Member info is served by the member's own loop, not by the fold or
    // its responder: it answers during the flood.
    let info = wait_for("requests dropped and folding going on", WAIT, || async {
        let info = member_info(&root, "root", "a").await?;
        let dropped = info["counters"]["state_requests_dropped"]
            .as_u64()
            .unwrap_or(0);
        Ok((dropped > 0 && folded(info.clone()) > before + 100).then_some(info))
    })
    .await?;
    assert!(folded(info) > before);
    // And a state request gets an answer again once the flood is over.
    wait_for("a state reply after the flood", WAIT, || async {
        Ok(state(&root, "root").await.ok().map(|_| ()))
    })
    .await?;
    Ok(())
}

/// A node with `view = "tree"` keeps copies of the rest of the plant too,
/// taken from its parent: its state shows a sibling's values (marked as
/// outside its subtree), keeps them while the node is cut off from its
/// parent (both ends count the lost link), and catches up on what it
/// missed once the link heals.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_a_tree_view_shows_its_sibling_keeps_it_while_cut_off_and_catches_up(
) -> anyhow::Result<()> {
    let text = TopologyBuilder::new("view")
        .node("root", "", &sim_point("uptime", 50))
        .node("root.a", "view = \"tree\"", &sim_point("t", 50))
        .node("root.b", "", &sim_point("t", 20))
        .build();
    let lab = Lab::start(&text, &[])?;
    let topo = topology::Topology::parse("view.toml", &text)?;
    let a = connect(&lab.url("root.a", "a")?).await?;
    let root = connect(&lab.url("root", "a")?).await?;
    wait_for("root.b's and the root's values at root.a", WAIT, || async {
        let s = state(&a, "root.a").await?;
        let b = &s["points"]["root.b.t"];
        let shown = b["value"].is_number()
            && b["outside"] == true
            && s["points"]["root.uptime"]["outside"] == true
            && s["points"]["root.a.t"]["outside"].is_null()
            && s["origins"]["root.b"]["outside"] == true;
        Ok(shown.then_some(()))
    })
    .await?;

    // root.a's server loses its link to the root.
    let nats_pid = pid_of(&lab.member("root.a", "a")?["nats_pid"])?;
    let root_leafnode = topo.root().members[0].endpoint.ports.leafnode;
    let mut cut = tests::NetFault::new(&[nats_pid])?;
    cut.drop_to(&[root_leafnode])?;
    // root.b goes on at the root; root.a falls behind but keeps what it had.
    wait_for("root.b to get ahead of root.a's copy", WAIT, || async {
        let at_a = origin_seq(&a, "root.a", "root.b").await?;
        let at_root = origin_seq(&root, "root", "root.b").await?;
        Ok((at_root > at_a + 40).then_some(()))
    })
    .await?;
    let s = state(&a, "root.a").await?;
    assert!(s["points"]["root.b.t"]["value"].is_number(), "{s}");
    // Both ends count the link as lost once its pings go unanswered.
    wait_for("the lost leaf link counted at both ends", WAIT, || async {
        let lost = |info: Json| info["counters"]["leaf_links_lost"].as_u64().unwrap_or(0);
        let at_a = lost(member_info(&a, "root.a", "a").await?);
        let at_root = lost(member_info(&root, "root", "a").await?);
        Ok((at_a >= 1 && at_root >= 1).then_some(()))
    })
    .await?;
    let behind = origin_seq(&root, "root", "root.b").await?;

    cut.heal();
    wait_for("root.a to catch up on root.b", WAIT, || async {
        Ok((origin_seq(&a, "root.a", "root.b").await? >= behind).then_some(()))
    })
    .await?;
    // Seq for seq: root.a's copy is the root's.
    let domain = events::subjects::domain;
    let at_a = tests::read_stream(&a, &domain("root.a"), "root.b").await?;
    let at_root = tests::read_stream(&root, &domain("root"), "root.b").await?;
    let n = at_a.len().min(at_root.len());
    assert!(n as u64 >= behind);
    assert_eq!(at_a[..n], at_root[..n]);
    Ok(())
}

/// A reader that falls behind loses deliveries at the client (async-nats
/// keeps a bounded number of messages per subscription and drops the rest:
/// "slow consumer"). It must end its read at the first message it did not
/// get and never hand on a hole: the fold and the pullers take each
/// message for the next one of the stream. Read again from there, the
/// stream comes whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_reader_that_falls_behind_ends_its_read_at_the_first_lost_message_and_never_skips_one(
) -> anyhow::Result<()> {
    use futures::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let topology = TopologyBuilder::new("slow")
        .node("root", "", &sim_point("uptime", 10))
        .build();
    let lab = Lab::start(&topology, &[])?;
    let url = lab.url("root", "a")?;
    let name = events::subjects::stream_name("root");
    let js = async_nats::jetstream::with_domain(connect(&url).await?, "root");
    let n = wait_for("60 messages in the root's stream", WAIT, || async {
        let mut s = js.get_stream(&name).await?;
        let last = s.info().await?.state.last_sequence;
        Ok((last >= 60).then_some(last))
    })
    .await?;
    // A client that keeps 4 messages per subscription.
    let dropped = std::sync::Arc::new(AtomicBool::new(false));
    let seen = dropped.clone();
    let tls = services::certs::TlsFiles::of(&lab.identity("operator")?)?;
    let slow = services::nats::options(Some(&tls))
        .subscription_capacity(4)
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if matches!(event, async_nats::Event::SlowConsumer(_)) {
                    seen.store(true, Ordering::SeqCst);
                }
            }
        })
        .connect(&url)
        .await?;
    let slow_js = async_nats::jetstream::with_domain(slow, "root");
    let mut msgs = services::pull::from_seq(&slow_js, &name, 1).await?;
    wait_for("the client dropping deliveries", WAIT, || async {
        Ok(dropped.load(Ordering::SeqCst).then_some(()))
    })
    .await?;
    let mut next = 1;
    let ended = loop {
        let m = tokio::time::timeout(WAIT, msgs.next())
            .await
            .context("the read neither went on nor ended")?
            .context("the read ended without an error")?;
        match m {
            Ok(m) => {
                let seq = m
                    .info()
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .stream_sequence;
                assert_eq!(seq, next, "the read handed on a hole");
                next += 1;
                anyhow::ensure!(next <= n, "the read went on past {n} with nothing dropped");
            }
            Err(e) => break e.to_string(),
        }
    };
    assert!(ended.contains("dropped"), "{ended}");
    let mut all = Vec::new();
    services::pull::read_range(&slow_js, &name, 1, n, WAIT / 3, |seq, m| {
        all.push((seq, m.payload.to_vec()))
    })
    .await?;
    assert_eq!(check_contiguous_chain("root", &all)?, n);
    Ok(())
}
