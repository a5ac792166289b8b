//! History and state-at queries (`canopy query` workers) and the
//! autoscaler that runs them, on the secured lab: a query answers exactly
//! what the node's stream holds, paged, across a leaf hop, and refuses a
//! bad request by naming what is wrong; autoscaled workers die with their
//! autoscaler, also on SIGKILL.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Value as Json};
use tests::{canopy_bin, connect_as, read_stream, request, sim_point, wait_for, Lab, Respawned};

const WAIT: Duration = Duration::from_secs(60);

/// The prefix of `node`'s query-worker identity in the lab.
fn query_identity(lab: &Lab, node: &str) -> anyhow::Result<String> {
    let manifest = lab.ready["manifest"].as_str().context("manifest")?;
    let keys = std::path::Path::new(manifest).parent().context("keys")?;
    Ok(keys.join(node).join("query").display().to_string())
}

/// `canopy query` for `node` on the server `url`.
fn worker(lab: &Lab, node: &str, url: &str) -> anyhow::Result<Respawned> {
    Respawned::start(&json!([
        canopy_bin(),
        "query",
        "--node",
        node,
        "--server",
        url,
        "--identity",
        query_identity(lab, node)?,
    ]))
}

/// Every recorded change of `point` in the decoded stream, as the
/// samples a history reply gives: (seq, kind, value).
fn changes(stream: &[(u64, Vec<u8>)], point: &str) -> anyhow::Result<Vec<(u64, String, Json)>> {
    let mut out = Vec::new();
    for (_, bytes) in stream {
        let ev = events::decode(bytes)?;
        let (kind, value) = match &ev.body {
            events::Body::Value(b) if b.point == point => {
                ("value", serde_json::to_value(&b.value)?)
            }
            events::Body::Forced(b) if b.point == point => {
                ("forced", serde_json::to_value(&b.value)?)
            }
            events::Body::Unforced(b) if b.point == point => ("unforced", Json::Null),
            _ => continue,
        };
        out.push((ev.seq, kind.to_owned(), value));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_worker_answers_history_and_state_at_exactly_as_the_stream_holds_and_names_what_is_wrong_with_a_bad_query(
) -> anyhow::Result<()> {
    let text = tests::TopologyBuilder::new("q")
        .node("root", "", "")
        .node("root.south", "", &sim_point("t", 100))
        .build();
    let lab = Lab::start(&text, &[])?;
    let south = lab.url("root.south", "a")?;
    let root_url = lab.url("root", "a")?;
    // One worker at the root (its replica of south), one at south (its
    // own stream), asked from the root: the second answer crosses the
    // leaf link.
    let _root_worker = worker(&lab, "root", &root_url)?;
    let _south_worker = worker(&lab, "root.south", &south)?;
    let viewer = services::certs::TlsFiles::of(&lab.identity("viewer")?)?;
    let (client, _) = connect_as(&root_url, &viewer).await?;
    // A force and an unforce are recorded changes of the point too.
    for args in [
        vec!["force", "--server", &south, "root.south.t", "7.5"],
        vec!["unforce", "--server", &south, "root.south.t"],
    ] {
        let (code, out, err) = lab.cli(&args)?;
        anyhow::ensure!(code == 0, "{args:?}: {out}{err}");
    }
    // Enough history for several pages.
    let from_ms = services::member::publisher::now_us() / 1000 - 3_600_000;
    wait_for("25 changes of root.south.t", WAIT, || async {
        let q = json!({"kind": "history", "origin": "root.south", "point": "t",
            "from_ms": from_ms, "to_ms": from_ms + 7_200_000});
        let r = request(&client, "canopy.query.root", &q.to_string())
            .await
            .ok();
        let n = r
            .as_ref()
            .and_then(|r| r["samples"].as_array())
            .map_or(0, Vec::len);
        Ok((n >= 25).then_some(()))
    })
    .await?;
    let now_ms = services::member::publisher::now_us() / 1000;
    for (subject, domain) in [
        ("canopy.query.root", "root"),
        ("canopy.query.root.south", "root-south"),
    ] {
        // Page through the history, ten samples at a time.
        let mut samples: Vec<Json> = Vec::new();
        let mut after: Option<u64> = None;
        let mut pages = 0;
        loop {
            let mut q = json!({"kind": "history", "origin": "root.south", "point": "t",
                "from_ms": from_ms, "to_ms": now_ms, "limit": 10});
            if let Some(a) = after {
                q["after_seq"] = json!(a);
            }
            let r = wait_for("a query worker's answer", WAIT, || async {
                Ok(request(&client, subject, &q.to_string()).await.ok())
            })
            .await?;
            anyhow::ensure!(r["error"].is_null(), "{subject}: {r}");
            assert!(r["handler_us"].as_u64().is_some(), "{r}");
            samples.extend(r["samples"].as_array().context("samples")?.iter().cloned());
            pages += 1;
            match r["next_after_seq"].as_u64() {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert!(pages > 1, "ten a page should take several pages: {pages}");
        let last = samples
            .last()
            .and_then(|s| s["seq"].as_u64())
            .context("no samples")?;
        let stream = read_stream(&client, domain, "root.south").await?;
        let mut want = changes(&stream, "t")?;
        want.retain(|(seq, ..)| *seq <= last);
        let got: Vec<(u64, String, Json)> = samples
            .iter()
            .map(|s| {
                (
                    s["seq"].as_u64().unwrap_or_default(),
                    s["kind"].as_str().unwrap_or_default().to_owned(),
                    s.get("value").cloned().unwrap_or(Json::Null),
                )
            })
            .collect();
        assert_eq!(got, want, "{subject}: the history is the stream's");
        assert!(got
            .iter()
            .any(|(_, k, v)| k == "forced" && *v == json!(7.5)));
        assert!(got.iter().any(|(_, k, _)| k == "unforced"));

        // The state at an instant is the fold of the events up to it.
        let mid = &stream[stream.len() / 2].1;
        let at_ms = events::decode(mid)?.ts / 1000;
        let q = json!({"kind": "state_at", "origin": "root.south", "at_ms": at_ms});
        let r = request(&client, subject, &q.to_string()).await?;
        anyhow::ensure!(r["error"].is_null(), "{subject}: {r}");
        let mut fold = events::State::new();
        for (_, bytes) in &stream {
            let ev = events::decode(bytes)?;
            if ev.ts <= at_ms * 1000 + 999 {
                fold.apply(&ev);
            }
        }
        let want = &fold.points["root.south.t"];
        let got = &r["points"]["root.south.t"];
        assert_eq!(got["seq"], json!(want.seq), "{r}");
        assert_eq!(got["value"], serde_json::to_value(&want.value)?, "{r}");
        assert_eq!(r["at_seq"], json!(fold.origins["root.south"].seq), "{r}");
    }

    // Bad queries: refused, naming what is wrong; the worker goes on.
    for (body, says) in [
        ("not json".to_owned(), "not a query"),
        (
            json!({"kind": "history", "origin": "root.nowhere", "point": "t", "from_ms": 0, "to_ms": 1})
                .to_string(),
            "keeps no stream of origin root.nowhere",
        ),
        (
            json!({"kind": "history", "origin": "root.south", "point": "t", "from_ms": 0, "to_ms": now_ms})
                .to_string(),
            "31 days",
        ),
        (
            json!({"kind": "history", "origin": "root.south", "point": "t", "from_ms": 2, "to_ms": 1})
                .to_string(),
            "from_ms 2 is after to_ms 1",
        ),
        (
            json!({"kind": "history", "origin": "root.south", "point": "t", "from_ms": 0, "to_ms": 1, "limit": 0})
                .to_string(),
            "limit 0",
        ),
        (
            json!({"kind": "state_at", "origin": "Root..x", "at_ms": 1}).to_string(),
            "not a node path",
        ),
    ] {
        let r = request(&client, "canopy.query.root", &body).await?;
        let e = r["error"].as_str().unwrap_or_default();
        assert!(e.contains(says), "{body}: {r}");
    }
    let q = json!({"kind": "state_at", "origin": "root.south", "at_ms": now_ms});
    let r = request(&client, "canopy.query.root", &q.to_string()).await?;
    assert!(r["error"].is_null(), "{r}");

    // The CLI pages through the same history.
    let to = now_ms.to_string();
    let (code, out, err) = lab.cli(&[
        "history",
        "--server",
        &root_url,
        "--node",
        "root",
        "root.south.t",
        "--to-ms",
        &to,
        "--json",
    ])?;
    anyhow::ensure!(code == 0, "{out}{err}");
    let seqs: Vec<u64> = out
        .lines()
        .map(|l| serde_json::from_str::<Json>(l).map(|s| s["seq"].as_u64().unwrap_or_default()))
        .collect::<Result<_, _>>()?;
    assert!(
        seqs.len() >= 25 && seqs.windows(2).all(|w| w[0] < w[1]),
        "{out}"
    );
    assert!(out.contains("\"forced\""), "{out}");
    let (code, _, err) = lab.cli(&["history", "--server", &root_url, "--node", "root", "nodot"])?;
    assert!(code != 0 && err.contains("not a full point name"), "{err}");
    Ok(())
}

/// The pids of the live children of `parent` (zombies count as gone).
fn children(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&pid| {
            services::child::proc_stat(pid).is_some_and(|s| s.state != 'Z' && s.ppid == parent)
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    services::child::proc_stat(pid).is_some_and(|s| s.state != 'Z')
}

#[tokio::test(flavor = "multi_thread")]
async fn autoscaled_workers_serve_and_never_outlive_the_autoscaler_even_killed(
) -> anyhow::Result<()> {
    let text = tests::TopologyBuilder::new("qa")
        .node("root", "", &sim_point("t", 200))
        .build();
    let lab = Lab::start(&text, &[])?;
    let url = lab.url("root", "a")?;
    let scaler = Respawned::start(&json!([
        canopy_bin(),
        "autoscale",
        "--node",
        "root",
        "--server",
        url,
        "--identity",
        query_identity(&lab, "root")?,
        "--target-ms",
        "1000",
        "--min",
        "2",
        "--max",
        "2",
    ]))?;
    let workers = wait_for("the autoscaler's two workers", WAIT, || async {
        let w = children(scaler.pid());
        Ok((w.len() == 2).then_some(w))
    })
    .await?;
    let viewer = services::certs::TlsFiles::of(&lab.identity("viewer")?)?;
    let (client, _) = connect_as(&url, &viewer).await?;
    let now_ms = services::member::publisher::now_us() / 1000;
    let q = json!({"kind": "state_at", "origin": "root", "at_ms": now_ms});
    let r = wait_for("an autoscaled worker's answer", WAIT, || async {
        Ok(request(&client, "canopy.query.root", &q.to_string())
            .await
            .ok())
    })
    .await?;
    assert!(r["error"].is_null(), "{r}");
    tests::kill(scaler.pid(), nix::sys::signal::Signal::SIGKILL);
    wait_for("the workers to die with the autoscaler", WAIT, || async {
        Ok(workers.iter().all(|&p| !alive(p)).then_some(()))
    })
    .await?;
    Ok(())
}
