//! The client commands: `state`, `watch`, `write`, `force`, `unforce`.
//!
//! They connect to any server of the tree; NATS interest routing across the
//! leafnodes carries their requests to the node that serves them.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context as _};
use async_nats::Client;
use events::{Body, Event, GapTracker, Observation};
use futures::StreamExt;
use serde_json::{json, Value as Json};

use crate::cli::{CommandArgs, ServerArg, StateArgs, StatusArgs, UnforceArgs, WatchArgs};
use crate::wire::{Command, Op, Reply};

async fn connect(s: &ServerArg) -> anyhow::Result<Client> {
    async_nats::ConnectOptions::new()
        .name("canopy cli")
        .connection_timeout(Duration::from_secs_f64(s.timeout.max(0.1)))
        .request_timeout(Some(Duration::from_secs_f64(s.timeout.max(0.1))))
        .connect(&s.server)
        .await
        .with_context(|| format!("cannot reach NATS at {}", s.server))
}

async fn request(client: &Client, subject: String, body: Vec<u8>) -> anyhow::Result<Json> {
    let msg = client
        .request(subject.clone(), body.into())
        .await
        .map_err(|e| {
            use async_nats::client::RequestErrorKind as K;
            match e.kind() {
                K::NoResponders => anyhow::anyhow!(
                    "nobody serves {subject}: is that node running and linked to this server?"
                ),
                K::TimedOut => anyhow::anyhow!("no reply on {subject} in time"),
                _ => anyhow::anyhow!("request on {subject}: {e}"),
            }
        })?;
    serde_json::from_slice(&msg.payload).with_context(|| format!("reply on {subject} is not JSON"))
}

/// `canopy state`.
pub async fn state(a: StateArgs) -> anyhow::Result<u8> {
    let client = connect(&a.server).await?;
    let body = json!({ "pattern": a.pattern, "digest": a.digest })
        .to_string()
        .into_bytes();
    let reply = request(&client, events::subjects::state_subject(&a.node), body).await?;
    if let Some(err) = reply.get("error").and_then(Json::as_str) {
        bail!("{err}");
    }
    if a.json {
        println!("{reply}");
    } else if a.digest {
        println!(
            "{}",
            reply.get("digest").and_then(Json::as_str).unwrap_or("?")
        );
    } else {
        print_state_table(&reply);
    }
    Ok(0)
}

fn print_state_table(reply: &Json) {
    let now = crate::member::publisher::now_us();
    println!(
        "state of {} (member {})",
        reply.get("node").and_then(Json::as_str).unwrap_or("?"),
        reply.get("member").and_then(Json::as_str).unwrap_or("?")
    );
    println!(
        "{:<40} {:>14} {:<9} {:<6} {:>8} {:>6} {:>9}",
        "point", "value", "quality", "forced", "seq", "epoch", "age"
    );
    if let Some(points) = reply.get("points").and_then(Json::as_object) {
        for (name, p) in points {
            let ts = p.get("ts").and_then(Json::as_u64).unwrap_or(0);
            let age = if ts == 0 {
                "-".to_owned()
            } else {
                format!("{:.1}s", now.saturating_sub(ts) as f64 / 1e6)
            };
            println!(
                "{:<40} {:>14} {:<9} {:<6} {:>8} {:>6} {:>9}",
                name,
                p.get("value").map(Json::to_string).unwrap_or_default(),
                p.get("quality").and_then(Json::as_str).unwrap_or("?"),
                if p.get("forced").and_then(Json::as_bool).unwrap_or(false) {
                    "yes"
                } else {
                    ""
                },
                p.get("seq").map(Json::to_string).unwrap_or_default(),
                p.get("epoch").map(Json::to_string).unwrap_or_default(),
                age
            );
        }
    }
}

/// Splits `root.south.fan1_speed` into (`root.south`, `fan1_speed`).
fn split_point(point: &str) -> anyhow::Result<(&str, &str)> {
    match point.rsplit_once('.') {
        Some((node, p)) if !node.is_empty() && !p.is_empty() => Ok((node, p)),
        _ => bail!("{point:?} is not a full point name like root.south.fan1_speed"),
    }
}

/// Parses a CLI value: `true`/`false`, an integer, or a float.
fn parse_value(s: &str) -> anyhow::Result<Json> {
    match s {
        "true" => return Ok(Json::Bool(true)),
        "false" => return Ok(Json::Bool(false)),
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        return Ok(json!(i));
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(json!(f)),
        _ => bail!("{s:?} is not a value: give a number, true or false"),
    }
}

async fn send_command(
    server: &ServerArg,
    point: &str,
    cmd: Command,
    as_json: bool,
) -> anyhow::Result<u8> {
    let (node, _) = split_point(point)?;
    let client = connect(server).await?;
    let body = serde_json::to_vec(&cmd)?;
    let reply = request(&client, events::subjects::cmd_subject(node), body).await?;
    let parsed: Reply = serde_json::from_value(reply.clone()).context("unexpected reply")?;
    if as_json {
        println!("{reply}");
    } else if parsed.ok {
        println!(
            "ok: {} epoch {} seq {} ({} µs)",
            parsed.origin.unwrap_or_default(),
            parsed.epoch.unwrap_or(0),
            parsed.seq.unwrap_or(0),
            parsed.handler_us.unwrap_or(0)
        );
    } else {
        eprintln!("refused: {}", parsed.error.unwrap_or_default());
    }
    Ok(if parsed.ok { 0 } else { 1 })
}

/// `canopy write` / `canopy force`.
pub async fn command(op: Op, a: CommandArgs) -> anyhow::Result<u8> {
    let (_, name) = split_point(&a.point)?;
    let cmd = Command {
        op,
        point: name.to_owned(),
        value: Some(parse_value(&a.value)?),
        by: Some(a.by.clone()),
    };
    send_command(&a.server, &a.point, cmd, a.json).await
}

/// `canopy unforce`.
pub async fn unforce(a: UnforceArgs) -> anyhow::Result<u8> {
    let (_, name) = split_point(&a.point)?;
    let cmd = Command {
        op: Op::Unforce,
        point: name.to_owned(),
        value: None,
        by: Some(a.by.clone()),
    };
    send_command(&a.server, &a.point, cmd, a.json).await
}

/// Finds the node that serves the snapshot: the longest literal prefix of
/// the pattern that answers a state request.
async fn snapshot(client: &Client, pattern: &str) -> anyhow::Result<(String, Json)> {
    let literal: Vec<&str> = pattern
        .split('.')
        .take_while(|t| *t != "*" && *t != ">")
        .collect();
    for n in (1..=literal.len()).rev() {
        let node = literal[..n].join(".");
        let body = json!({ "pattern": pattern }).to_string().into_bytes();
        match client
            .request(events::subjects::state_subject(&node), body.into())
            .await
        {
            Ok(msg) => {
                let v: Json =
                    serde_json::from_slice(&msg.payload).context("state reply is not JSON")?;
                return Ok((node, v));
            }
            Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => continue,
            Err(e) => bail!("state request to {node}: {e}"),
        }
    }
    bail!("no node serves a prefix of {pattern:?}: start the pattern with a node path, like root.> or root.south.>")
}

fn event_json(ev: &Event) -> Json {
    let (kind, point, value, quality) = match &ev.body {
        Body::Value(b) => (
            "value",
            Some(b.point.as_str()),
            serde_json::to_value(&b.value).ok(),
            Some(b.quality),
        ),
        Body::Forced(b) => (
            "forced",
            Some(b.point.as_str()),
            serde_json::to_value(&b.value).ok(),
            None,
        ),
        Body::Unforced(b) => ("unforced", Some(b.point.as_str()), None, None),
        Body::Role(_) => ("role", None, None, None),
        Body::Birth(_) => ("birth", None, None, None),
        Body::Resource(_) => ("resource", None, None, None),
        Body::Checkpoint(_) => ("checkpoint", None, None, None),
    };
    json!({
        "kind": kind,
        "point": point.map(|p| format!("{}.{p}", ev.origin)),
        "value": value,
        "quality": quality.map(|q| serde_json::to_value(q).unwrap_or_default()),
        "origin": ev.origin, "seq": ev.seq, "epoch": ev.epoch, "ts": ev.ts, "member": ev.member,
    })
}

fn print_event(ev: &Event, as_json: bool) {
    if as_json {
        println!("{}", event_json(ev));
        return;
    }
    match &ev.body {
        Body::Value(b) => println!(
            "{}.{} = {} {} (seq {})",
            ev.origin,
            b.point,
            b.value,
            b.quality.as_str(),
            ev.seq
        ),
        Body::Forced(b) => println!(
            "{}.{} FORCED = {} by {} (seq {})",
            ev.origin, b.point, b.value, b.by, ev.seq
        ),
        Body::Unforced(b) => println!(
            "{}.{} unforced by {} (seq {})",
            ev.origin, b.point, b.by, ev.seq
        ),
        Body::Role(b) => println!(
            "{} role: {} is {} (seq {})",
            ev.origin,
            b.member,
            b.role.as_str(),
            ev.seq
        ),
        Body::Birth(b) => println!(
            "{} birth: member {} with {} points (seq {})",
            ev.origin,
            b.member,
            b.points.len(),
            ev.seq
        ),
        Body::Resource(b) => println!(
            "{} resource: {}/{} is {} (seq {})",
            ev.origin,
            b.member,
            b.resource,
            b.state.as_str(),
            ev.seq
        ),
        Body::Checkpoint(b) => println!(
            "{} checkpoint by {} over seq {} (seq {})",
            ev.origin, b.member, b.head_seq, ev.seq
        ),
    }
}

/// `canopy watch`: snapshot, then live events with per-origin gap filling.
pub async fn watch(a: WatchArgs) -> anyhow::Result<u8> {
    let client = connect(&a.server).await?;
    // Subscribe before the snapshot so nothing falls between the two.
    let mut live = client
        .subscribe(format!("canopy.ev.{}", a.pattern))
        .await
        .context("subscribing to live events")?;
    let (node, snap) = snapshot(&client, &a.pattern).await?;
    let mut gaps = GapTracker::default();
    if let Some(origins) = snap.get("origins").and_then(Json::as_object) {
        for (o, st) in origins {
            gaps.set(o, st.get("seq").and_then(Json::as_u64).unwrap_or(0));
        }
    }
    if let Some(points) = snap.get("points").and_then(Json::as_object) {
        for (name, p) in points {
            if a.json {
                let mut line = p.clone();
                if let Some(o) = line.as_object_mut() {
                    o.insert("kind".into(), "snapshot".into());
                    o.insert("point".into(), name.clone().into());
                }
                println!("{line}");
            } else {
                println!(
                    "{name} = {} {} (snapshot, seq {})",
                    p.get("value").map(Json::to_string).unwrap_or_default(),
                    p.get("quality").and_then(Json::as_str).unwrap_or("?"),
                    p.get("seq").map(Json::to_string).unwrap_or_default()
                );
            }
        }
    }
    let js = async_nats::jetstream::with_domain(client.clone(), events::subjects::domain(&node));
    let mut streams: HashMap<String, async_nats::jetstream::stream::Stream> = HashMap::new();
    let mut seen = 0u64;
    let cancel = super::shutdown_token()?;
    loop {
        let msg = tokio::select! {
            m = live.next() => match m { Some(m) => m, None => break },
            _ = cancel.cancelled() => break,
        };
        let ev = match events::decode(&msg.payload) {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!("skipping undecodable message on {}: {e}", msg.subject);
                continue;
            }
        };
        match gaps.observe(&ev.origin, ev.seq) {
            Observation::Duplicate => continue,
            Observation::InOrder => print_event(&ev, a.json),
            Observation::Gap { from, to } => {
                // Fill exactly the missing range from the node's replica.
                let name = events::subjects::stream_name(&ev.origin);
                if !streams.contains_key(&name) {
                    let s = js
                        .get_stream(&name)
                        .await
                        .with_context(|| format!("stream {name} at {node}"))?;
                    streams.insert(name.clone(), s);
                }
                if let Some(stream) = streams.get(&name) {
                    for seq in from..=to {
                        match fetch(stream, seq).await {
                            Some(missing) => print_event(&missing, a.json),
                            None => tracing::warn!("{} seq {seq} could not be fetched", ev.origin),
                        }
                    }
                }
                print_event(&ev, a.json);
            }
        }
        seen += 1;
        if a.count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    Ok(0)
}

/// Gets one event by seq, waiting briefly for a replica that lags the live path.
async fn fetch(stream: &async_nats::jetstream::stream::Stream, seq: u64) -> Option<Event> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(m) = stream.direct_get(seq).await {
            return events::decode(&m.payload).ok();
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `canopy status`: asks every member and witness of the tree at once
/// (scatter-gather on `canopy.hello`) and groups the answers by node.
pub async fn status(a: StatusArgs) -> anyhow::Result<u8> {
    let client = connect(&a.server).await?;
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply(crate::member::HELLO, inbox, "".into())
        .await?;
    client.flush().await?;
    let mut answers: Vec<Json> = Vec::new();
    let overall = tokio::time::Instant::now() + Duration::from_secs_f64(a.server.timeout.max(0.1));
    loop {
        let settle = tokio::time::Instant::now() + Duration::from_millis(a.settle_ms);
        match tokio::time::timeout_at(settle.min(overall), sub.next()).await {
            Ok(Some(m)) => {
                if let Ok(v) = serde_json::from_slice::<Json>(&m.payload) {
                    answers.push(v);
                }
            }
            _ => break,
        }
    }
    let topo = match &a.topology {
        Some(p) => Some(super::load_topology(p)?),
        None => None,
    };
    let report = status_report(&answers, topo.as_ref());
    if a.json {
        println!("{report}");
    } else {
        print_status(&report);
    }
    Ok(0)
}

/// Groups hello answers into `{"nodes": [{"node", "epoch", "members":
/// [{"name", "role", "healthy", ...}], "witness": {"up"}}]}`; with a
/// topology, members that did not answer are listed as `down`.
pub fn status_report(answers: &[Json], topo: Option<&topology::Topology>) -> Json {
    let mut nodes: std::collections::BTreeMap<String, (Vec<Json>, Option<bool>, u64)> =
        Default::default();
    if let Some(t) = topo {
        for n in &t.nodes {
            let entry = nodes.entry(n.id.clone()).or_default();
            for m in &n.members {
                entry
                    .0
                    .push(json!({"name": m.name, "role": "down", "healthy": false}));
            }
            if n.witness.is_some() {
                entry.1 = Some(false);
            }
        }
    }
    for ans in answers {
        let Some(node) = ans.get("node").and_then(Json::as_str) else {
            continue;
        };
        let member = ans.get("member").and_then(Json::as_str).unwrap_or("?");
        let entry = nodes.entry(node.to_owned()).or_default();
        if member == "witness" {
            entry.1 = Some(true);
            continue;
        }
        let m = json!({
            "name": member,
            "role": ans.get("role").cloned().unwrap_or(Json::Null),
            "healthy": ans.get("healthy").cloned().unwrap_or(Json::Bool(false)),
            "plc_ok": ans.get("plc_ok").cloned().unwrap_or(Json::Null),
            "epoch": ans.get("epoch").cloned().unwrap_or(Json::Null),
            "since_role_change_ms": ans.get("since_role_change_ms").cloned().unwrap_or(Json::Null),
        });
        if ans.get("role").and_then(Json::as_str) == Some("active") {
            entry.2 = entry
                .2
                .max(ans.get("epoch").and_then(Json::as_u64).unwrap_or(0));
        }
        match entry.0.iter_mut().find(|x| x["name"] == member) {
            Some(slot) => *slot = m,
            None => entry.0.push(m),
        }
    }
    let list: Vec<Json> = nodes
        .into_iter()
        .map(|(node, (members, witness, epoch))| {
            let mut v = json!({ "node": node, "epoch": epoch, "members": members });
            if let Some(up) = witness {
                v["witness"] = json!({ "up": up });
            }
            v
        })
        .collect();
    json!({ "nodes": list })
}

fn print_status(report: &Json) {
    println!("{:<28} {:>6}  members", "node", "epoch");
    for n in report["nodes"].as_array().into_iter().flatten() {
        let members: Vec<String> = n["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let since = m["since_role_change_ms"]
                    .as_u64()
                    .map(|ms| format!(" {:.1}s", ms as f64 / 1000.0))
                    .unwrap_or_default();
                let health = if m["healthy"] == true {
                    ""
                } else {
                    " UNHEALTHY"
                };
                format!(
                    "{}={}{}{}",
                    m["name"].as_str().unwrap_or("?"),
                    m["role"].as_str().unwrap_or("?"),
                    since,
                    health
                )
            })
            .collect();
        let witness = match n.get("witness") {
            Some(w) if w["up"] == true => "  witness=up",
            Some(_) => "  witness=DOWN",
            None => "",
        };
        println!(
            "{:<28} {:>6}  {}{}",
            n["node"].as_str().unwrap_or("?"),
            n["epoch"],
            members.join("  "),
            witness
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_the_cli_promises() {
        assert_eq!(parse_value("true").ok(), Some(Json::Bool(true)));
        assert_eq!(parse_value("12").ok(), Some(json!(12)));
        assert_eq!(parse_value("1.5").ok(), Some(json!(1.5)));
        assert!(parse_value("abc").is_err());
        assert!(parse_value("NaN").is_err());
    }

    #[test]
    fn status_groups_answers_and_marks_the_silent_down() {
        let t = topology::Topology::parse("x.toml", topology::EXAMPLE_TOPOLOGY).expect("example");
        let answers = vec![
            json!({"node": "root.south", "member": "a", "role": "active", "epoch": 4, "healthy": true}),
            json!({"node": "root.south", "member": "witness", "role": "witness"}),
        ];
        let r = status_report(&answers, Some(&t));
        let south = r["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["node"] == "root.south")
            .expect("south");
        assert_eq!(south["epoch"], 4);
        assert_eq!(south["witness"]["up"], true);
        let b = south["members"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["name"] == "b")
            .expect("b");
        assert_eq!(b["role"], "down");
        let root = r["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["node"] == "root")
            .expect("root");
        assert_eq!(root["witness"]["up"], false);
    }

    #[test]
    fn point_names_split_at_the_last_dot() {
        assert_eq!(
            split_point("root.south.fan1").ok(),
            Some(("root.south", "fan1"))
        );
        assert!(split_point("fan1").is_err());
    }
}
