//! Signed commands on the secured tree (the default): a command is served
//! only when a client of the key manifest signed it for this node, now,
//! once, with a role and scope that allow it; each refusal names the check
//! and changes nothing; an accepted force is recorded with its signature,
//! and `canopy audit` verifies who asked. A replay is refused across a
//! failover too. `security = "none"` serves the old unsigned commands.

use std::time::Duration;

use anyhow::Context as _;
use events::CommandOp;
use nix::sys::signal::Signal;
use serde_json::{json, Value as Json};
use tests::{
    connect, connect_as, member_info, read_stream, request, sim_point, state, wait_for, Lab,
};

const WAIT: Duration = Duration::from_secs(60);

/// A root with one leaf (`root.south`) and a sibling (`root.north`), and
/// three clients: an engineer of the whole tree, a viewer, and an engineer
/// of `root.north` only.
fn tree(pair: bool) -> String {
    let b = tests::TopologyBuilder::new("sec").node("root", "", "");
    let b = if pair {
        b.pair("root.south", "", &sim_point("t", 200))
    } else {
        b.node("root.south", "", &sim_point("t", 200))
    };
    let mut text = b.node("root.north", "", &sim_point("t", 200)).build();
    text.push_str(
        "\n[[client]]\nname = \"eng\"\nrole = \"engineer\"\nscope = \"root\"\n\
         [[client]]\nname = \"view\"\nrole = \"viewer\"\nscope = \"root\"\n\
         [[client]]\nname = \"north\"\nrole = \"engineer\"\nscope = \"root.north\"\n",
    );
    text
}

/// Sends a command to `node` and returns its reply.
async fn send(client: &async_nats::Client, node: &str, body: &str) -> anyhow::Result<Json> {
    request(client, &format!("canopy.cmd.{node}"), body).await
}

fn refused_by(reply: &Json, check: &str) -> bool {
    reply["ok"] == false
        && reply["error"]
            .as_str()
            .is_some_and(|e| e.starts_with(&format!("refused ({check})")))
}

/// How many forced / command events the stream of `origin` holds.
async fn commands_in(client: &async_nats::Client, origin: &str) -> anyhow::Result<(usize, usize)> {
    let domain = events::subjects::domain(origin);
    let msgs = read_stream(client, &domain, origin).await?;
    let mut counts = (0, 0);
    for (_, bytes) in &msgs {
        match events::decode(bytes)?.body {
            events::Body::Forced(_) => counts.0 += 1,
            events::Body::Command(_) => counts.1 += 1,
            _ => {}
        }
    }
    Ok(counts)
}

#[tokio::test(flavor = "multi_thread")]
async fn only_a_signed_command_within_role_and_scope_is_served_and_the_audit_verifies_who_asked(
) -> anyhow::Result<()> {
    let lab = Lab::start(&tree(false), &[])?;
    let south = "root.south";
    let root = connect(&lab.url("root", "a")?).await?;
    let value = Some(json!(42.5));
    let sign = |client: &str, node: &str, op| lab.signed(client, node, op, "t", value.clone());

    // Every refusal names its check and leaves the stream without a
    // forced or command event.
    let unsigned = r#"{"op":"force","point":"t","value":42.5}"#;
    let r = send(&root, south, unsigned).await?;
    assert!(refused_by(&r, "signature"), "{r}");
    let r = send(&root, south, &sign("view", south, CommandOp::Force)?).await?;
    assert!(refused_by(&r, "role"), "{r}");
    let r = send(&root, south, &sign("north", south, CommandOp::Force)?).await?;
    assert!(refused_by(&r, "scope"), "{r}");
    // Signed for another node, sent to this one.
    let r = send(&root, south, &sign("eng", "root.north", CommandOp::Force)?).await?;
    assert!(refused_by(&r, "node"), "{r}");
    // The signed bytes changed on the way.
    let tampered = sign("eng", south, CommandOp::Force)?.replace("42.5", "99.5");
    let r = send(&root, south, &tampered).await?;
    assert!(refused_by(&r, "signature"), "{r}");
    // Signed a minute ago.
    let id = services::keys::ClientIdentity::load(&lab.identity("eng")?)?;
    let minute_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64
        - 60_000;
    let stale = services::wire::SignedCommand::sign(
        &id.key,
        south,
        CommandOp::Force,
        "t",
        value.clone(),
        minute_ago,
    )?;
    let r = send(&root, south, &serde_json::to_string(&stale)?).await?;
    assert!(refused_by(&r, "time"), "{r}");
    // A key the manifest does not know.
    let stranger = events::nkeys::KeyPair::new_user();
    let now_ms = minute_ago + 60_000;
    let unknown = services::wire::SignedCommand::sign(
        &stranger,
        south,
        CommandOp::Force,
        "t",
        value.clone(),
        now_ms,
    )?;
    let r = send(&root, south, &serde_json::to_string(&unknown)?).await?;
    assert!(refused_by(&r, "key"), "{r}");
    assert_eq!(
        commands_in(&root, south).await?,
        (0, 0),
        "a refusal left a trace"
    );
    let info = member_info(&root, south, "a").await?;
    assert_eq!(info["counters"]["refused_commands"], 7, "{info}");

    // The engineer's force is served once; the same message again is a replay.
    let force = sign("eng", south, CommandOp::Force)?;
    let r = send(&root, south, &force).await?;
    assert_eq!(r["ok"], true, "{r}");
    let r = send(&root, south, &force).await?;
    assert!(refused_by(&r, "replay"), "{r}");
    wait_for("the forced value at the root", WAIT, || async {
        let s = state(&root, "root").await?;
        let p = &s["points"]["root.south.t"];
        Ok((p["forced"] == true && p["value"] == 42.5).then_some(()))
    })
    .await?;
    assert_eq!(commands_in(&root, south).await?, (1, 1));

    // The audit of the root's copy verifies the signature and the client.
    let manifest = lab.ready["manifest"]
        .as_str()
        .context("manifest")?
        .to_owned();
    let url = lab.url("root", "a")?;
    let viewer = lab.identity("view")?.display().to_string();
    let audit = |origin: &'static str| {
        let (manifest, url, viewer) = (manifest.clone(), url.clone(), viewer.clone());
        tokio::task::spawn_blocking(move || {
            tests::cli(&[
                "audit",
                "--identity",
                &viewer,
                "--server",
                &url,
                "--node",
                "root",
                "--origin",
                origin,
                "--manifest",
                &manifest,
                "--json",
            ])
        })
    };
    let (code, out, err) = audit(south).await??;
    assert_eq!(code, 0, "{out}\n{err}");
    // The forced event says who asked, by the manifest's name.
    let domain = events::subjects::domain("root");
    let copy = read_stream(&root, &domain, south).await?;
    let by: Vec<String> = copy
        .iter()
        .filter_map(|(_, b)| match events::decode(b).ok()?.body {
            events::Body::Forced(f) => Some(f.by),
            _ => None,
        })
        .collect();
    assert_eq!(by, ["eng"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_replayed_after_a_failover_is_refused_by_the_new_active() -> anyhow::Result<()> {
    let lab = Lab::start(&tree(true), &[])?;
    let south = "root.south";
    let root = connect(&lab.url("root", "a")?).await?;
    let force = lab.signed("eng", south, CommandOp::Force, "t", Some(json!(7)))?;
    let r = send(&root, south, &force).await?;
    assert_eq!(r["ok"], true, "{r}");
    let (epoch, active) = (r["epoch"].as_u64().context("epoch")?, {
        let mut found = None;
        for m in ["a", "b"] {
            let info = member_info(&root, south, m).await?;
            if info["role"] == "active" {
                found = Some(m);
            }
        }
        found.context("no active member")?
    });
    let pid = lab.member(south, active)?["pid"].as_u64().context("pid")? as u32;
    assert!(tests::kill(pid, Signal::SIGKILL));
    let other = if active == "a" { "b" } else { "a" };
    wait_for("the other member active in a newer epoch", WAIT, || async {
        let info = member_info(&root, south, other).await?;
        Ok((info["role"] == "active" && info["epoch"].as_u64() > Some(epoch)).then_some(()))
    })
    .await?;
    // Served by the new active (the only one): refused as a replay. It
    // answers only once it knows every nonce served before (its fold has
    // reached the stream's head), which waits for the stream after losing
    // a member: a request that times out meanwhile is asked again (the
    // same replay, refused when served).
    let r = wait_for("the new active's answer", WAIT, || async {
        Ok(send(&root, south, &force).await.ok())
    })
    .await?;
    assert!(refused_by(&r, "replay"), "{r}");
    let info = member_info(&root, south, other).await?;
    assert!(
        info["counters"]["refused_commands"].as_u64() >= Some(1),
        "{info}"
    );
    // Nothing recorded: once a fresh unforce has reached the root, the
    // root's copy holds one force, one unforce and their two commands.
    let unforce = lab.signed("eng", south, CommandOp::Unforce, "t", None)?;
    let r = send(&root, south, &unforce).await?;
    assert_eq!(r["ok"], true, "{r}");
    wait_for("the unforce at the root", WAIT, || async {
        let s = state(&root, "root").await?;
        Ok((s["points"]["root.south.t"]["forced"] == false).then_some(()))
    })
    .await?;
    let copy = read_stream(&root, &events::subjects::domain("root"), south).await?;
    let mut kinds = std::collections::BTreeMap::new();
    for (_, bytes) in &copy {
        *kinds.entry(events::decode(bytes)?.body.tag()).or_insert(0) += 1;
    }
    assert_eq!(
        (
            kinds.get("forced"),
            kinds.get("unforced"),
            kinds.get("command")
        ),
        (Some(&1), Some(&1), Some(&2)),
        "{kinds:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plaintext_tree_serves_unsigned_commands() -> anyhow::Result<()> {
    let text = tests::TopologyBuilder::new("plain")
        .node("root", "", &sim_point("t", 200))
        .build()
        .replace("[mesh]\n", "[mesh]\nsecurity = \"none\"\n");
    let lab = Lab::start(&text, &[])?;
    let root = connect(&lab.url("root", "a")?).await?;
    let r = send(
        &root,
        "root",
        r#"{"op":"force","point":"t","value":3,"by":"dev"}"#,
    )
    .await?;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(commands_in(&root, "root").await?, (1, 1));
    Ok(())
}

/// The attack measured before the broker had rights and the fold held
/// epochs back: an outsider reads an origin's stream tail and appends a
/// well-formed event chained onto it with a huge epoch. Now an outsider (a
/// client of the tree, even its engineer) cannot publish on an origin's
/// event subject at all: the broker refuses it and the stream never holds
/// it. A compromised member of the origin still can (the broker lets a
/// member write its own node's events): no node folds the forged value,
/// the origin's own events go on being folded everywhere (its publisher
/// re-seals after the foreign message, onto its own head), and the fold
/// counts what it held back.
#[tokio::test(flavor = "multi_thread")]
async fn an_outsider_cannot_publish_events_and_a_members_forged_epoch_is_never_folded(
) -> anyhow::Result<()> {
    let lab = Lab::start(&tree(false), &[])?;
    let south = "root.south";
    let domain = events::subjects::domain(south);
    let root = connect(&lab.url("root", "a")?).await?;
    wait_for("the value of root.south.t at the root", WAIT, || async {
        let s = state(&root, "root").await?;
        Ok(s["points"]["root.south.t"]["value"]
            .is_number()
            .then_some(()))
    })
    .await?;

    let engineer = services::certs::TlsFiles::of(&lab.identity("eng")?)?;
    let (outsider, refused) = connect_as(&lab.url(south, "a")?, &engineer).await?;
    let garbage = b"an outsider's event".to_vec();
    outsider
        .publish(
            events::subjects::event_subject(south, "t"),
            garbage.clone().into(),
        )
        .await?;
    outsider.flush().await?;
    let why = refused.wait("permissions violation for publish").await?;
    assert!(why.contains("canopy.ev.root.south.t"), "{why}");
    assert!(
        read_stream(&root, &domain, south)
            .await?
            .iter()
            .all(|(_, m)| *m != garbage),
        "the outsider's message is in the stream"
    );

    let (insider, _) = connect_as(&lab.url(south, "a")?, &lab.process_tls(south, "a")?).await?;
    let js = async_nats::jetstream::with_domain(insider.clone(), &domain);
    let forged = wait_for("the forged event on the tail", WAIT, || async {
        let mut stream = js.get_stream(events::subjects::stream_name(south)).await?;
        let last = stream.info().await?.state.last_sequence;
        let tail = stream.get_raw_message(last).await?;
        let member = events::decode(&tail.payload)?.member;
        let mut chain =
            events::Chain::resume(south, &member, 1_000_000, last, events::hash(&tail.payload));
        let sealed = chain.seal(
            services::member::publisher::now_us(),
            events::Body::Value(events::ValueBody {
                point: "t".into(),
                value: events::Value::Float(-666.0),
                quality: events::Quality::Good,
            }),
        )?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
            last.to_string().as_str(),
        );
        let ack = js
            .publish_with_headers(
                events::subjects::event_subject(south, "t"),
                headers,
                sealed.bytes.into(),
            )
            .await?
            .await;
        // Another append landed first: chain onto the new tail.
        Ok(ack.ok().map(|a| a.sequence))
    })
    .await?;

    // The origin's own events after it reach the root's state, and no node
    // ever shows the forged value.
    let shown = |s: &Json| s["points"]["root.south.t"]["value"] == json!(-666.0);
    wait_for(
        "the origin's events after the forged one at the root",
        WAIT,
        || async {
            let (at_root, at_south) = (state(&root, "root").await?, state(&root, south).await?);
            assert!(
                !shown(&at_root) && !shown(&at_south),
                "{at_root} {at_south}"
            );
            let p = &at_root["points"]["root.south.t"];
            Ok((p["seq"].as_u64().is_some_and(|s| s > forged + 2)).then_some(()))
        },
    )
    .await?;
    for (node, member) in [(south, "a"), ("root", "a")] {
        let info = member_info(&root, node, member).await?;
        let c = &info["counters"];
        assert!(c["held_back"].as_u64() >= Some(1), "{node}: {info}");
        assert!(c["rejected"].as_u64() >= Some(1), "{node}: {info}");
        let s = state(&root, node).await?;
        assert!(s["origins"][south]["stalled"].is_null(), "{node}: {s}");
        assert!(
            s["origins"][south]["epoch"].as_u64() < Some(1_000_000),
            "{s}"
        );
    }
    // The forged message stays in both copies (replicas are faithful), the
    // origin's chain steps over it, and the audit names it.
    let held = read_stream(&root, &domain, south).await?;
    assert!(held.iter().any(|(seq, _)| *seq == forged));
    // A history query walks the same gate: the forged value is not in it.
    let identity = lab.process_tls(south, "query")?;
    let _worker = tests::Respawned::start(&json!([
        tests::canopy_bin(),
        "query",
        "--node",
        south,
        "--server",
        lab.url(south, "a")?,
        "--identity",
        identity.cert.with_extension("").display().to_string(),
    ]))?;
    let now_ms = services::member::publisher::now_us() / 1000;
    let q = json!({"kind": "history", "origin": south, "point": "t",
        "from_ms": now_ms - 3_600_000, "to_ms": now_ms, "limit": 10_000});
    let r = wait_for("a query worker's answer", WAIT, || async {
        Ok(
            request(&root, &format!("canopy.query.{south}"), &q.to_string())
                .await
                .ok(),
        )
    })
    .await?;
    let samples = r["samples"].as_array().context("samples")?;
    assert!(
        samples.iter().any(|s| s["seq"].as_u64() > Some(forged)),
        "{r}"
    );
    assert!(
        samples
            .iter()
            .all(|s| s["seq"].as_u64() != Some(forged) && s["value"] != json!(-666.0)),
        "{r}"
    );
    assert!(r["foreign"].as_u64() >= Some(1), "{r}");
    Ok(())
}

/// A switchover or maintenance change is served only when an engineer of
/// the node signed it for this member and, for a switchover, for the
/// epoch it hands over: so the same message replayed once the role has
/// moved is refused, at either member.
#[tokio::test(flavor = "multi_thread")]
async fn a_switchover_is_served_only_signed_by_an_engineer_and_never_twice() -> anyhow::Result<()> {
    use services::wire::Control;
    let lab = Lab::start(&tree(true), &[])?;
    let south = "root.south";
    let root = connect(&lab.url("root", "a")?).await?;
    let ctl = |member: &str| format!("canopy.ctl.{south}.{member}");
    // The active member, its epoch, and the standby heard from (a
    // switchover is refused while the other member is not).
    let (active, epoch) = wait_for(
        "an active member and a standby heard from",
        WAIT,
        || async {
            for (m, other) in [("a", "b"), ("b", "a")] {
                let info = member_info(&root, south, m).await?;
                let peer = member_info(&root, south, other).await?;
                if info["role"] == "active" && peer["role"] == "standby" && peer["healthy"] == true
                {
                    return Ok(info["epoch"].as_u64().map(|e| (m.to_owned(), e)));
                }
            }
            Ok(None)
        },
    )
    .await?;
    let other = if active == "a" { "b" } else { "a" };

    let r = request(&root, &ctl(&active), r#"{"op":"switchover"}"#).await?;
    assert!(refused_by(&r, "signature"), "{r}");
    let as_viewer = lab.signed_control("view", south, &active, Control::Switchover, Some(epoch))?;
    let r = request(&root, &ctl(&active), &as_viewer).await?;
    assert!(refused_by(&r, "role"), "{r}");
    let stale = lab.signed_control("eng", south, &active, Control::Switchover, Some(epoch + 7))?;
    let r = request(&root, &ctl(&active), &stale).await?;
    assert!(refused_by(&r, "epoch"), "{r}");
    let info = member_info(&root, south, &active).await?;
    assert_eq!(
        (info["role"].as_str(), info["epoch"].as_u64()),
        (Some("active"), Some(epoch))
    );
    assert_eq!(info["counters"]["refused_commands"], 3, "{info}");

    // Signed by the engineer for this epoch: the role moves.
    let (r, signed) = wait_for("the switchover carried out", WAIT, || async {
        // A fresh message each time: a checked one is used up even when
        // the handover is then refused (the standby not yet heard from).
        let signed = lab.signed_control("eng", south, &active, Control::Switchover, Some(epoch))?;
        let r = request(&root, &ctl(&active), &signed).await?;
        let heard = !r["error"].as_str().unwrap_or("").contains("heard");
        Ok((r["ok"] == true || heard).then_some((r, signed)))
    })
    .await?;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["active"], other, "{r}");
    // The reply comes once the pair granted the other member the role;
    // that member is active once it has taken over (fenced the old epoch,
    // opened its own), which under load can be a moment later.
    wait_for("the other member active in a later epoch", WAIT, || async {
        let now = member_info(&root, south, other).await?;
        Ok((now["role"] == "active" && now["epoch"].as_u64() > Some(epoch)).then_some(()))
    })
    .await?;
    // The same message again: the member asked no longer holds the epoch
    // it hands over, and the new active is not the member it names.
    for (m, check) in [(active.as_str(), "epoch"), (other, "node")] {
        let again = request(&root, &ctl(m), &signed).await?;
        assert!(refused_by(&again, check), "{m}: {again}");
    }
    let now = member_info(&root, south, other).await?;
    assert_eq!(now["role"], "active", "{now}");
    Ok(())
}

/// Every NATS listener of the secured tree (client, leafnode, route)
/// refuses a peer with no certificate, with a certificate of another mesh
/// CA, and in plaintext, and speaks to a certificate of its own CA; the
/// tree runs on, untouched. (The raft port's refusals are in
/// `raft/tests/tcp.rs`.)
#[tokio::test(flavor = "multi_thread")]
async fn every_listener_refuses_no_certificate_another_cas_certificate_and_plaintext(
) -> anyhow::Result<()> {
    use tests::probe;
    let text = tree(true);
    let lab = Lab::start(&text, &[])?;
    let topo = topology::Topology::parse("sec.toml", &text)?;
    let keys = lab.dir.path().join("work").join("keys");
    let client = services::certs::TlsFiles::of(&lab.identity("eng")?)?;
    let member = services::certs::TlsFiles::of(&keys.join("root.south").join("a"))?;
    // The same topology's keys from another CA.
    let other = tempfile::tempdir()?;
    services::cmd::keys::gen_for(&topo, other.path(), false, true)?;
    let stranger = services::certs::TlsFiles::of(&other.path().join("clients").join("eng"))?;
    assert_ne!(std::fs::read(&stranger.ca)?, std::fs::read(&client.ca)?);

    let endpoint = |node: &str, i: usize| -> anyhow::Result<topology::Endpoint> {
        Ok(topo.node(node).context("node")?.members[i].endpoint.clone())
    };
    let (root, south_a, south_b) = (
        endpoint("root", 0)?,
        endpoint("root.south", 0)?,
        endpoint("root.south", 1)?,
    );
    let addr = |e: &topology::Endpoint, port: u16| -> anyhow::Result<std::net::SocketAddr> {
        Ok(format!("{}:{port}", e.host).parse()?)
    };
    // (what, address, a certificate that passes)
    let listeners = [
        ("root client", addr(&root, root.ports.nats)?, &client),
        ("root leafnode", addr(&root, root.ports.leafnode)?, &member),
        (
            "pair member client",
            addr(&south_b, south_b.ports.nats)?,
            &client,
        ),
        (
            "pair route",
            addr(&south_a, south_a.ports.cluster)?,
            &member,
        ),
    ];
    for (what, at, good) in listeners {
        let ok = probe::tls(at, &client.ca, Some((&good.cert, &good.key)))
            .await
            .with_context(|| format!("{what} {at}"))?;
        assert!(
            ok.accepted(),
            "{what} {at}: refused its own CA's certificate: {ok:?}"
        );
        let bare = probe::tls(at, &client.ca, None)
            .await
            .with_context(|| format!("{what} {at}"))?;
        assert!(
            matches!(bare, probe::Met::Refused(_)),
            "{what} {at}: spoke to a peer with no certificate: {bare:?}"
        );
        let foreign = probe::tls(at, &client.ca, Some((&stranger.cert, &stranger.key)))
            .await
            .with_context(|| format!("{what} {at}"))?;
        assert!(
            matches!(foreign, probe::Met::Refused(_)),
            "{what} {at}: spoke to another CA's certificate: {foreign:?}"
        );
        let plain = probe::plaintext(at)
            .await
            .with_context(|| format!("{what} {at}"))?;
        assert!(
            !plain.contains("PONG"),
            "{what} {at}: answered plaintext: {plain:?}"
        );
        assert!(
            !plain.contains("INFO"),
            "{what} {at}: spoke plaintext first: {plain:?}"
        );
    }

    // A pair's routes take only its three servers' certificates (pinned):
    // not a client's of the same CA, nor another node's member's.
    let route = addr(&south_a, south_a.ports.cluster)?;
    let root_member = services::certs::TlsFiles::of(&keys.join("root").join("a"))?;
    for (who, tls) in [("a client", &client), ("the root's member", &root_member)] {
        let met = probe::tls(route, &client.ca, Some((&tls.cert, &tls.key))).await?;
        assert!(
            !met.accepted(),
            "the pair's route spoke to {who}'s certificate: {met:?}"
        );
    }

    // The CLI without an identity, or in plaintext, says what to give.
    let url = lab.url("root", "a")?;
    let (code, _, err) = tests::cli(&["status", "--server", &url, "--timeout", "5"])?;
    assert!(code != 0 && err.contains("give --identity"), "{code} {err}");
    let plain_url = url.replacen("tls://", "nats://", 1);
    let identity = lab.identity("view")?.display().to_string();
    let (code, _, err) = tests::cli(&[
        "status",
        "--server",
        &plain_url,
        "--identity",
        &identity,
        "--timeout",
        "5",
    ])?;
    assert!(
        code != 0 && err.contains("speak TLS first; use its tls:// URL"),
        "{code} {err}"
    );

    // Nothing changed: the pair still publishes and the root still folds.
    let nc = connect(&lab.url("root", "a")?).await?;
    let seq = |s: &Json| s["points"]["root.south.t"]["seq"].as_u64();
    let before = wait_for("root.south.t at the root", WAIT, || async {
        Ok(seq(&state(&nc, "root").await?))
    })
    .await?;
    wait_for("a newer root.south.t at the root", WAIT, || async {
        Ok(seq(&state(&nc, "root").await?).filter(|s| *s > before))
    })
    .await?;
    Ok(())
}

/// Rotating a member's certificate: stop it, delete its `.crt` and `.key`
/// (not its seed), run `keys gen` again, start it. The new certificate
/// (a new fingerprint in the manifest, the same checkpoint key) is
/// accepted by its parent's leafnode listener and by clients without
/// touching either: its history goes on from where it stopped.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_restarted_with_a_rotated_certificate_rejoins_the_tree() -> anyhow::Result<()> {
    let text = tree(false);
    let lab = Lab::start(&text, &[])?;
    let topo = topology::Topology::parse("sec.toml", &text)?;
    let south = "root.south";
    let keys = lab.dir.path().join("work").join("keys");
    let prefix = keys.join(south).join("a");
    let (crt, key) = (
        services::certs::with_ext(&prefix, "crt"),
        services::certs::with_ext(&prefix, "key"),
    );
    let seed_before = std::fs::read(services::certs::with_ext(&prefix, "nk"))?;
    let fp_before = services::certs::fingerprint_pem(&std::fs::read_to_string(&crt)?)?;
    let root = connect(&lab.url("root", "a")?).await?;
    let seq = |s: &Json| s["points"]["root.south.t"]["seq"].as_u64();
    wait_for("root.south.t at the root", WAIT, || async {
        Ok(seq(&state(&root, "root").await?))
    })
    .await?;

    let member = lab.member(south, "a")?.clone();
    let pid = member["pid"].as_u64().context("pid")? as u32;
    assert!(tests::kill(pid, Signal::SIGTERM));
    wait_for("root.south/a to stop", WAIT, || async {
        Ok(member_info(&root, south, "a").await.is_err().then_some(()))
    })
    .await?;
    let stopped_at = seq(&state(&root, "root").await?).context("seq")?;
    std::fs::remove_file(&crt)?;
    std::fs::remove_file(&key)?;
    services::cmd::keys::gen_for(&topo, &keys, false, true)?;
    let fp_after = services::certs::fingerprint_pem(&std::fs::read_to_string(&crt)?)?;
    assert_ne!(fp_after, fp_before, "keys gen kept the deleted certificate");
    assert_eq!(
        std::fs::read(services::certs::with_ext(&prefix, "nk"))?,
        seed_before,
        "keys gen replaced the checkpoint key"
    );
    let manifest = std::fs::read_to_string(keys.join("manifest.json"))?;
    assert!(manifest.contains(&fp_after), "{manifest}");

    let _restarted = tests::Respawned::start(&member["argv"])?;
    // Its nats-server presents the new certificate to its clients and to
    // the root's leafnode listener; the values go on reaching the root.
    let own = wait_for("a client of root.south/a's server", WAIT, || async {
        Ok(connect(&lab.url(south, "a")?).await.ok())
    })
    .await?;
    wait_for(
        "values of root.south after the restart at the root",
        WAIT,
        || async { Ok(seq(&state(&root, "root").await?).filter(|s| *s > stopped_at + 2)) },
    )
    .await?;
    wait_for("root.south/a's own state", WAIT, || async {
        Ok(seq(&state(&own, south).await?).filter(|s| *s > stopped_at))
    })
    .await?;
    Ok(())
}

/// The broker gives every principal its own rights and no more, and what
/// it refuses leaves every stream as it was: a member publishing on a
/// sibling's or a descendant's event subject, a member's certificate on a
/// server of another node, a viewer's command and destructive JetStream
/// call, a client subscribing outside its scope, and a raw leafnode session
/// with one child's certificate injecting another child's event or asking
/// for the requests about it (the hub closes that link; the child's real
/// link runs on). What they may do still works: the viewer reads state
/// and a whole stream.
#[tokio::test(flavor = "multi_thread")]
async fn the_broker_refuses_what_a_principal_has_no_right_to_and_nothing_changes(
) -> anyhow::Result<()> {
    let text = tree(false);
    let lab = Lab::start(&text, &[])?;
    let topo = topology::Topology::parse("sec.toml", &text)?;
    let (south, north) = ("root.south", "root.north");
    let domain = events::subjects::domain;
    let root_url = lab.url("root", "a")?;
    let root = connect(&root_url).await?;
    let seq_at_root = |s: Json, origin: &str| s["origins"][origin]["seq"].as_u64().unwrap_or(0);
    wait_for("both children's events at the root", WAIT, || async {
        let s = state(&root, "root").await?;
        Ok((seq_at_root(s.clone(), south) > 0 && seq_at_root(s, north) > 0).then_some(()))
    })
    .await?;
    let garbage = b"not this principal's to publish".to_vec();
    let untouched = |origin: &'static str| {
        let (root, garbage) = (root.clone(), garbage.clone());
        async move {
            let msgs = read_stream(&root, &domain(origin), origin).await?;
            anyhow::ensure!(
                msgs.iter().all(|(_, m)| *m != garbage),
                "{origin}'s stream holds a refused message"
            );
            anyhow::Ok(())
        }
    };

    // A member of south, at its own server: its own events only.
    let (member, refused) =
        connect_as(&lab.url(south, "a")?, &lab.process_tls(south, "a")?).await?;
    for subject in ["canopy.ev.root.north.t", "canopy.ev.root.south.cell.t"] {
        member.publish(subject, garbage.clone().into()).await?;
        member.flush().await?;
        refused
            .wait(&format!(
                "permissions violation for publish to \"{subject}\""
            ))
            .await?;
    }
    // A member's certificate maps to no user on another node's server.
    let elsewhere = connect_as(&lab.url(north, "a")?, &lab.process_tls(south, "a")?).await;
    let err = elsewhere
        .err()
        .context("south's member connected to north's server")?;
    assert!(
        format!("{err:#}").to_lowercase().contains("authorization"),
        "{err:#}"
    );

    // The viewer: reads, but no command and no destructive JetStream call.
    let viewer_tls = services::certs::TlsFiles::of(&lab.identity("view")?)?;
    let (viewer, refused) = connect_as(&root_url, &viewer_tls).await?;
    assert!(state(&viewer, "root").await?["points"].is_object());
    assert!(!read_stream(&viewer, &domain(south), south)
        .await?
        .is_empty());
    let command = lab.signed("view", "root", CommandOp::Force, "t", Some(json!(1)))?;
    viewer
        .publish(events::subjects::cmd_subject("root"), command.into())
        .await?;
    let delete = format!("$JS.{}.API.STREAM.DELETE.EV_root-south", domain(south));
    viewer.publish(delete.clone(), "".into()).await?;
    viewer.flush().await?;
    refused
        .wait("permissions violation for publish to \"canopy.cmd.root\"")
        .await?;
    refused
        .wait(&format!(
            "permissions violation for publish to \"{delete}\""
        ))
        .await?;
    assert_eq!(commands_in(&root, "root").await?, (0, 0));
    let js = async_nats::jetstream::with_domain(root.clone(), domain(south));
    js.get_stream(events::subjects::stream_name(south)).await?;

    // An engineer of north subscribing to south's events.
    let north_tls = services::certs::TlsFiles::of(&lab.identity("north")?)?;
    let (engineer, refused) = connect_as(&root_url, &north_tls).await?;
    let _outside = engineer.subscribe("canopy.ev.root.south.>").await?;
    engineer.flush().await?;
    refused
        .wait("permissions violation for subscription to \"canopy.ev.root.south.>\"")
        .await?;

    // A raw leaf session with south's certificate at the root's leafnode
    // port, injecting north's event: the hub closes the link.
    let root_ep = &topo.root().members[0].endpoint;
    let leafnode: std::net::SocketAddr =
        format!("{}:{}", root_ep.host, root_ep.ports.leafnode).parse()?;
    let said = tests::probe::leaf_inject(
        leafnode,
        &lab.process_tls(south, "a")?,
        "canopy.ev.root.north.t",
        &garbage,
    )
    .await?;
    assert!(
        said.contains("Permissions Violation for Publish to \"canopy.ev.root.north.t\""),
        "{said}"
    );
    // Nor may it ask for the requests about its sibling (to read or
    // answer them).
    for subject in ["canopy.state.root.north", "canopy.cmd.root.north"] {
        let said =
            tests::probe::leaf_subscribe(leafnode, &lab.process_tls(south, "a")?, subject).await?;
        assert!(
            said.contains(&format!(
                "Permissions Violation for Subscription to \"{subject}\""
            )),
            "{said}"
        );
    }
    // South's real link runs on, and no stream took any of it.
    let before = seq_at_root(state(&root, "root").await?, south);
    wait_for(
        "south's events to go on reaching the root",
        WAIT,
        || async {
            Ok((seq_at_root(state(&root, "root").await?, south) > before + 2).then_some(()))
        },
    )
    .await?;
    for origin in [south, north, "root"] {
        untouched(origin).await?;
    }
    Ok(())
}

/// A client added to the topology and keyed with `canopy keys gen` can
/// connect and command as soon as the servers have read the manifest; a
/// client taken out is disconnected then (each server renders its users
/// again and reloads), and cannot connect again.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_added_with_keys_gen_connects_and_a_removed_one_is_disconnected(
) -> anyhow::Result<()> {
    let text = tree(false);
    let lab = Lab::start(&text, &[])?;
    let root_url = lab.url("root", "a")?;
    let north_tls = services::certs::TlsFiles::of(&lab.identity("north")?)?;
    let (north, refused) = connect_as(&root_url, &north_tls).await?;
    assert!(state(&north, "root.north").await?["points"].is_object());

    // The topology without `north`, with a new engineer `night`.
    let changed = text.replace(
        "[[client]]\nname = \"north\"\nrole = \"engineer\"\nscope = \"root.north\"\n",
        "[[client]]\nname = \"night\"\nrole = \"engineer\"\nscope = \"root.north\"\n",
    );
    assert_ne!(changed, text);
    let topo = topology::Topology::parse("sec.toml", &changed)?;
    let keys = lab.dir.path().join("work").join("keys");
    services::cmd::keys::gen_for(&topo, &keys, false, true)?;

    refused.wait("disconnected").await?;
    let again = connect_as(&root_url, &north_tls).await;
    let err = again.err().context("the removed client connected again")?;
    assert!(
        format!("{err:#}").to_lowercase().contains("authorization"),
        "{err:#}"
    );
    let night_tls = services::certs::TlsFiles::of(&keys.join("clients").join("night"))?;
    // The servers and the member read the manifest every few seconds.
    let night = wait_for("the new client let in", WAIT, || async {
        Ok(connect_as(&root_url, &night_tls).await.ok().map(|(c, _)| c))
    })
    .await?;
    let reply = wait_for("the new client's command served", WAIT, || async {
        let body = signed_as(&keys.join("clients").join("night"), "root.north")?;
        let r = send(&night, "root.north", &body).await?;
        Ok((r["ok"] == true).then_some(r))
    })
    .await?;
    assert_eq!(reply["ok"], true, "{reply}");
    Ok(())
}

/// A force of `root.north.t` to 5 signed by the identity at `prefix`.
fn signed_as(prefix: &std::path::Path, node: &str) -> anyhow::Result<String> {
    let id = services::keys::ClientIdentity::load(prefix)?;
    let now_ms = services::member::publisher::now_us() / 1000;
    let cmd = services::wire::SignedCommand::sign(
        &id.key,
        node,
        CommandOp::Force,
        "t",
        Some(json!(5)),
        now_ms,
    )?;
    Ok(serde_json::to_string(&cmd)?)
}

/// A compromised parent server (here: a nats-server of an attacker's
/// configuration in the root's place, with the root's stolen certificate,
/// so the child's leaf remote connects to it) injects into its child's
/// event subject and asks the child's JetStream to delete and purge the
/// child's stream: the child carries out none of the calls, still answers
/// what ancestors legitimately ask (stream info), and its fold steps over
/// the injected event.
#[tokio::test(flavor = "multi_thread")]
async fn a_fake_parent_cannot_delete_a_childs_history_or_get_an_event_folded() -> anyhow::Result<()>
{
    let text = tree(false);
    let lab = Lab::start(&text, &[])?;
    let topo = topology::Topology::parse("sec.toml", &text)?;
    let south = "root.south";
    let domain = events::subjects::domain(south);
    let stream = events::subjects::stream_name(south);
    let child = connect(&lab.url(south, "a")?).await?;
    wait_for("south's first events", WAIT, || async {
        let s = state(&child, south).await?;
        Ok(s["origins"][south]["seq"].as_u64().filter(|s| *s > 0))
    })
    .await?;

    // The root goes; the attacker's server takes its leafnode address.
    let root = lab.member("root", "a")?;
    tests::kill(root["pid"].as_u64().context("pid")? as u32, Signal::SIGKILL);
    let ep = &topo.root().members[0].endpoint;
    let leafnode = format!("{}:{}", ep.host, ep.ports.leafnode);
    // Its nats-server follows it (PDEATHSIG); the address is free then.
    wait_for("the root's leafnode address free", WAIT, || async {
        Ok(std::net::TcpListener::bind(&leafnode).ok().map(drop))
    })
    .await?;
    let tls = lab.process_tls("root", "a")?;
    let port = tests::free_ports(1);
    let conf = lab.dir.path().join("rogue.conf");
    let path = |p: &std::path::Path| json!(p.display().to_string());
    std::fs::write(
        &conf,
        format!(
            "listen: \"127.0.0.1:{port}\"\nleafnodes {{\n  listen: \"{leafnode}\"\n  tls {{ cert_file: {}, key_file: {}, ca_file: {}, handshake_first: true }}\n}}\n",
            path(&tls.cert),
            path(&tls.key),
            path(&tls.ca)
        ),
    )?;
    let _rogue = tests::Respawned::start(&json!([
        tests::nats_server_bin().display().to_string(),
        "-c",
        conf.display().to_string()
    ]))?;
    let attacker = wait_for("the attacker's server up", WAIT, || async {
        Ok(async_nats::connect(format!("nats://127.0.0.1:{port}"))
            .await
            .ok())
    })
    .await?;
    // Up once the child's JetStream answers through the attacker's server.
    let info = format!("$JS.{domain}.API.STREAM.INFO.{stream}");
    let before: Json = wait_for("the child linked to the fake parent", WAIT, || async {
        let asked = attacker.request(info.clone(), "".into());
        Ok(
            match tokio::time::timeout(Duration::from_secs(2), asked).await {
                Ok(Ok(m)) => serde_json::from_slice::<Json>(&m.payload)
                    .ok()
                    .filter(|j| j["state"].is_object()),
                _ => None,
            },
        )
    })
    .await?;

    let garbage = b"a fake parent's event".to_vec();
    attacker
        .publish(
            events::subjects::event_subject(south, "t"),
            garbage.clone().into(),
        )
        .await?;
    attacker.flush().await?;
    // Each call as its stream would take it. A child that carried one out
    // answers it at once; the child that drops it never answers.
    for (call, body) in [
        ("STREAM.MSG.DELETE", r#"{"seq":1}"#),
        ("STREAM.PURGE", ""),
        ("STREAM.DELETE", ""),
    ] {
        let subject = format!("$JS.{domain}.API.{call}.{stream}");
        let asked = attacker.request(subject, body.into());
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(3), asked).await {
            let reply: Json = serde_json::from_slice(&m.payload).unwrap_or_default();
            assert!(reply["success"] != true, "{call} carried out: {reply}");
        }
    }
    // One leaf link delivers in order: once this is answered, the child
    // has had everything sent before it.
    let after: Json = serde_json::from_slice(
        &tokio::time::timeout(WAIT, attacker.request(info.clone(), "".into()))
            .await
            .context("stream info through the fake parent")??
            .payload,
    )?;
    let first = |j: &Json| j["state"]["first_seq"].as_u64();
    assert_eq!(first(&after), first(&before), "{before} {after}");
    assert!(
        after["state"]["messages"].as_u64() >= before["state"]["messages"].as_u64(),
        "{before} {after}"
    );
    let held = read_stream(&child, &domain, south).await?;
    assert!(
        held.iter().any(|(seq, _)| *seq == 1),
        "the child's first event is gone"
    );
    // The injected event: nats-server cannot keep a child's own event
    // subjects from coming down from its parent without also stopping them
    // going up (`rights::denied_from_parent`), so the stream may hold it;
    // the fold counts it and steps over it, and the chain goes on past it.
    if let Some((at, _)) = held.iter().find(|(_, m)| *m == garbage) {
        wait_for(
            "the injection stepped over by south's fold",
            WAIT,
            || async {
                let info = member_info(&child, south, "a").await?;
                let s = state(&child, south).await?;
                let past = s["origins"][south]["seq"].as_u64() > Some(*at);
                let counted = info["counters"]["rejected"].as_u64() >= Some(1);
                Ok((past && counted && s["origins"][south]["stalled"].is_null()).then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}

/// Rotating the certificate of a pair member, whose routes are pinned:
/// stop it, delete its `.crt` and `.key`, run `keys gen` again (a new key,
/// so a new pin in the manifest), and the other two servers of the pair
/// take the new pin from the manifest before the member comes back; once
/// it is started again its server routes to them and its copy of the
/// node's stream is current.
#[tokio::test(flavor = "multi_thread")]
async fn a_pair_member_with_a_rotated_certificate_routes_again_under_its_new_pin(
) -> anyhow::Result<()> {
    let text = tree(true);
    let lab = Lab::start(&text, &[])?;
    let topo = topology::Topology::parse("sec.toml", &text)?;
    let south = "root.south";
    let keys = lab.dir.path().join("work").join("keys");
    let prefix = keys.join(south).join("b");
    let root = connect(&lab.url("root", "a")?).await?;
    let js = async_nats::jetstream::with_domain(root.clone(), events::subjects::domain(south));
    let stream_name = events::subjects::stream_name(south);
    // b's copy of the stream, as the stream's cluster sees it.
    let b_current = || async {
        let mut stream = js.get_stream(&stream_name).await?;
        let info = stream.info().await?;
        let cluster = info.cluster.clone().unwrap_or_default();
        anyhow::Ok(
            cluster.leader.as_deref() == Some("root-south-b")
                || cluster
                    .replicas
                    .iter()
                    .any(|p| p.name == "root-south-b" && p.current),
        )
    };
    wait_for("b's copy of south's stream current", WAIT, || async {
        Ok(b_current().await.unwrap_or(false).then_some(()))
    })
    .await?;

    let member = lab.member(south, "b")?.clone();
    assert!(tests::kill(
        member["pid"].as_u64().context("pid")? as u32,
        Signal::SIGTERM
    ));
    wait_for("root.south/b to stop", WAIT, || async {
        Ok(member_info(&root, south, "b").await.is_err().then_some(()))
    })
    .await?;
    let pin_before = services::certs::pin_of_file(&services::certs::with_ext(&prefix, "crt"))?;
    std::fs::remove_file(services::certs::with_ext(&prefix, "crt"))?;
    std::fs::remove_file(services::certs::with_ext(&prefix, "key"))?;
    services::cmd::keys::gen_for(&topo, &keys, false, true)?;
    let pin_after = services::certs::pin_of_file(&services::certs::with_ext(&prefix, "crt"))?;
    assert_ne!(pin_after, pin_before);
    // The new pin reaches the other two servers first.
    for other in ["a", "witness"] {
        let conf = lab
            .dir
            .path()
            .join("work")
            .join(south)
            .join(other)
            .join("nats.conf");
        wait_for(
            &format!("{other}'s server to pin b's new key"),
            WAIT,
            || async {
                let text = std::fs::read_to_string(&conf)?;
                Ok((text.contains(&pin_after) && !text.contains(&pin_before)).then_some(()))
            },
        )
        .await?;
    }

    let _restarted = tests::Respawned::start(&member["argv"])?;
    wait_for(
        "b's copy current again under its new certificate",
        WAIT,
        || async { Ok(b_current().await.unwrap_or(false).then_some(())) },
    )
    .await?;
    Ok(())
}
