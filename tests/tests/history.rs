//! A node's history is never forked and never silently left behind: a
//! leaf that lost its disk takes its history back from its parent before it
//! publishes; an operator's explicit new history makes the parent report a
//! diverged replica instead of mixing two histories; a fold that meets
//! messages outside an origin's chain says so and shows the origin's
//! points `uncertain` until the chain goes on.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use serde_json::Value as Json;
use tests::{
    check_contiguous_chain, connect, member_info, read_stream, request, sim_point, state, wait_for,
    Lab, TopologyBuilder,
};

const WAIT: Duration = Duration::from_secs(60);
const LEAF: &str = "root.leaf";

fn tree() -> String {
    TopologyBuilder::new("history")
        .node("root", "", "")
        .node(LEAF, "", &sim_point("t", 20))
        .build()
}

/// Kills the leaf's member (SIGKILL) and waits until it is gone; returns
/// its data directory and argv.
async fn kill_leaf(lab: &Lab) -> anyhow::Result<(PathBuf, Json)> {
    let m = lab.member(LEAF, "a")?;
    let pid = m["pid"].as_u64().context("pid")? as u32;
    assert!(tests::kill(pid, Signal::SIGKILL));
    wait_for("the leaf member to be gone", WAIT, || async {
        Ok((!tests::kill(pid, Signal::SIGCONT)).then_some(()))
    })
    .await?;
    let data = PathBuf::from(m["data"].as_str().context("data")?);
    Ok((data, m["argv"].clone()))
}

/// Waits until the root holds `seq` of the leaf in its state.
async fn root_at(root: &async_nats::Client, seq: u64) -> anyhow::Result<()> {
    wait_for(
        &format!("the root at seq {seq} of the leaf"),
        WAIT,
        || async {
            let s = state(root, "root").await?;
            Ok((s["origins"][LEAF]["seq"].as_u64().unwrap_or(0) >= seq).then_some(()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leaf_that_lost_its_disk_restores_its_history_from_the_parent_and_continues_it(
) -> anyhow::Result<()> {
    let lab = Lab::start(&tree(), &[])?;
    let root = connect(&lab.url("root", "a")?).await?;
    root_at(&root, 50).await?;
    let (data, argv) = kill_leaf(&lab).await?;
    let before = read_stream(&root, "root", LEAF).await?;
    let n = check_contiguous_chain(LEAF, &before)?;
    // The whole data directory: JetStream store, snapshot, logs.
    std::fs::remove_dir_all(&data)?;
    std::fs::create_dir_all(&data)?;
    let _leaf = tests::Respawned::start(&argv)?;
    // It goes on where it was, and the root follows without a trouble.
    root_at(&root, n + 50).await?;
    let leaf = connect(&lab.url(LEAF, "a")?).await?;
    // The root's copy first: the leaf keeps publishing, so its own stream
    // read afterwards holds at least what the root had copied (read the
    // other way round, an event appended in between made the root's copy
    // the longer one, as a CI run saw).
    let at_root = read_stream(&root, "root", LEAF).await?;
    let own = read_stream(&leaf, "root-leaf", LEAF).await?;
    assert_eq!(
        &own[..n as usize],
        &before[..],
        "the restored history is not the old one, byte for byte"
    );
    check_contiguous_chain(LEAF, &own)?;
    let m = check_contiguous_chain(LEAF, &at_root)?;
    assert!(m > n, "the root did not get the events after the restore");
    assert_eq!(&own[..m as usize], &at_root[..]);
    let info = member_info(&root, "root", "a").await?;
    assert!(info["troubles"].is_null(), "{info}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_history_by_the_operator_makes_the_parent_report_divergence_not_mix_histories(
) -> anyhow::Result<()> {
    let lab = Lab::start(&tree(), &[])?;
    let url = lab.url("root", "a")?;
    let root = connect(&url).await?;
    root_at(&root, 50).await?;
    let (data, argv) = kill_leaf(&lab).await?;
    let before = read_stream(&root, "root", LEAF).await?;
    std::fs::remove_dir_all(&data)?;
    std::fs::create_dir_all(&data)?;
    let mut argv = argv;
    argv.as_array_mut()
        .context("argv")?
        .push(Json::from("--new-history"));
    let _leaf = tests::Respawned::start(&argv)?;
    let trouble = wait_for("the root to report the diverged replica", WAIT, || async {
        let info = member_info(&root, "root", "a").await?;
        let found = info["troubles"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["origin"] == LEAF && t["kind"] == "replica_diverged")
            .cloned();
        Ok(found)
    })
    .await?;
    assert!(
        trouble["reason"].as_str().unwrap_or("").contains("seq"),
        "{trouble}"
    );
    // The root's copy is the old history, untouched, and its points are
    // no longer shown as good.
    let at_root = read_stream(&root, "root", LEAF).await?;
    assert_eq!(&at_root[..before.len()], &before[..]);
    check_contiguous_chain(LEAF, &at_root)?;
    let s = state(&root, "root").await?;
    assert_eq!(
        s["points"][format!("{LEAF}.t")]["quality"],
        "uncertain",
        "{s}"
    );
    assert!(s["origins"][LEAF]["stalled"].is_string(), "{s}");
    // And `canopy status` says so.
    let (code, out, err) = lab.cli(&["status", "--server", &url])?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("REPLICA_DIVERGED"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_outside_an_origins_chain_stall_its_fold_visibly_until_the_chain_goes_on(
) -> anyhow::Result<()> {
    // No simulated points: the leaf publishes only on command, so the
    // garbage stays at the tail until the test asks for a real event.
    let topo = TopologyBuilder::new("stall")
        .node("root", "", "")
        .node(LEAF, "", "[[node.point]]\nname = \"p\"\nsource = \"sim\"\nsim = { kind = \"sine\", period_s = 5, min = 0.0, max = 1.0, every_ms = 3600000 }\n")
        .build();
    let lab = Lab::start(&topo, &[])?;
    let root = connect(&lab.url("root", "a")?).await?;
    // The garbage comes from the leaf's own member (a buggy or
    // compromised one): the broker lets nobody else publish there.
    let (leaf, _) = tests::connect_as(&lab.url(LEAF, "a")?, &lab.process_tls(LEAF, "a")?).await?;
    let tail = wait_for("the leaf's first events at the root", WAIT, || async {
        let s = state(&root, "root").await?;
        Ok(s["origins"][LEAF]["seq"].as_u64().filter(|s| *s > 0))
    })
    .await?;
    for i in 0..3 {
        leaf.publish(format!("canopy.ev.{LEAF}.p"), format!("garbage {i}").into())
            .await?;
    }
    leaf.flush().await?;
    wait_for("the stalled fold to show", WAIT, || async {
        let s = state(&root, "root").await?;
        let stalled = s["origins"][LEAF]["stalled"].is_string()
            && s["points"][format!("{LEAF}.p")]["quality"] == "uncertain";
        let info = member_info(&root, "root", "a").await?;
        let listed = info["troubles"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["origin"] == LEAF && t["kind"] == "fold_stalled");
        Ok((stalled && listed).then_some(()))
    })
    .await?;
    // A real event chains over the garbage: folding resumes, the trouble
    // clears, the point is good again.
    let force = lab.signed(
        "operator",
        LEAF,
        events::CommandOp::Force,
        "p",
        Some(serde_json::json!(1.5)),
    )?;
    let r = request(&root, &format!("canopy.cmd.{LEAF}"), &force).await?;
    assert_eq!(r["ok"], true, "{r}");
    let seq = r["seq"].as_u64().context("seq")?;
    assert!(
        seq > tail + 3,
        "the force landed at {seq}, inside the garbage"
    );
    wait_for("folding again", WAIT, || async {
        let s = state(&root, "root").await?;
        let ok = s["origins"][LEAF]["seq"].as_u64() == Some(seq)
            && s["origins"][LEAF]["stalled"].is_null()
            && s["points"][format!("{LEAF}.p")]["quality"] == "good";
        let info = member_info(&root, "root", "a").await?;
        Ok((ok && info["troubles"].is_null()).then_some(()))
    })
    .await?;
    Ok(())
}
