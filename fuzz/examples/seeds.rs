//! Writes the seed inputs of every target into `corpus/<target>/`, named
//! `seed-<what>` (run by `scripts/fuzz seed`; the fuzzer and `cargo fuzz
//! cmin` take it from there, so the corpus in the repository holds what
//! survived minimisation, seeds or not).
//!
//! - `event_decode`: an event of every body kind and value, sealed by a
//!   real `events::Chain` of `root.a` (so the first is a genesis the
//!   target's verifier accepts), and one of another origin;
//! - `topology_load`: the default and example topologies and the
//!   fixtures of `topology/src/validate/tests.rs` and `tests/tests/cli.rs`
//!   (their string literals, read from the source at run time: a fragment
//!   also goes in after the tests' valid root);
//! - `wire_json`: requests and replies as the services write them;
//! - `raft_frame`: a hello, every RPC and reply, as a voter writes them,
//!   bodies and whole frames.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use events::{
    nkeys::KeyPair, BirthBody, Body, Chain, ForcedBody, PointInfo, Quality, ResourceBody,
    ResourceState, Role, RoleBody, State, UnforcedBody, Value, ValueBody,
};
use services::wire::{
    Command, Counters, MemberInfo, Op, OriginTrouble, Reply, ResourceInfo, StateReply,
    StateRequest, TroubleKind,
};

type Seeds = Vec<(String, Vec<u8>)>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (events, state) = event_seeds()?;
    for (target, seeds) in [
        ("event_decode", events),
        (
            "topology_load",
            topology_seeds(root.parent().unwrap_or(root)),
        ),
        ("wire_json", wire_seeds(&state)?),
        ("raft_frame", raft_seeds()?),
    ] {
        // Arguments name the targets to seed; none: all.
        let wanted: Vec<String> = std::env::args().skip(1).collect();
        if !wanted.is_empty() && !wanted.iter().any(|w| w == target) {
            continue;
        }
        let dir = root.join("corpus").join(target);
        fs::create_dir_all(&dir)?;
        for (name, bytes) in &seeds {
            fs::write(dir.join(format!("seed-{name}")), bytes)?;
        }
        println!("{target}: {} seeds in {}", seeds.len(), dir.display());
    }
    Ok(())
}

/// The bodies of every kind and value; the events sealed of them and the
/// state they fold to (for the state replies).
fn event_seeds() -> Result<(Seeds, State), Box<dyn std::error::Error>> {
    let point = |name: &str, unit: Option<&str>, writable| PointInfo {
        name: name.into(),
        unit: unit.map(Into::into),
        writable,
    };
    let mut bodies = vec![(
        "birth".to_owned(),
        Body::Birth(BirthBody {
            member: "a".into(),
            points: vec![point("temp1", Some("°C"), false), point("pump", None, true)],
        }),
    )];
    let values = [
        ("null", Value::Null),
        ("true", Value::Bool(true)),
        ("int", Value::Int(-300)),
        ("max", Value::Int(i64::MAX)),
        ("float", Value::Float(21.5)),
        ("nan", Value::Float(f64::NAN)),
        ("inf", Value::Float(f64::NEG_INFINITY)),
    ];
    for (q, quality) in [
        ("good", Quality::Good),
        ("bad", Quality::Bad),
        ("uncertain", Quality::Uncertain),
    ] {
        for (v, value) in &values {
            bodies.push((
                format!("value-{v}-{q}"),
                Body::Value(ValueBody {
                    point: "temp1".into(),
                    value: value.clone(),
                    quality,
                }),
            ));
        }
    }
    bodies.push((
        "forced".into(),
        Body::Forced(ForcedBody {
            point: "pump".into(),
            value: Value::Bool(true),
            by: "operator jo".into(),
        }),
    ));
    bodies.push((
        "unforced".into(),
        Body::Unforced(UnforcedBody {
            point: "pump".into(),
            by: String::new(),
        }),
    ));
    for (name, role) in [
        ("role-active", Role::Active),
        ("role-standby", Role::Standby),
    ] {
        bodies.push((
            name.into(),
            Body::Role(RoleBody {
                member: "b".into(),
                role,
                reason: "field health: plc link down".into(),
            }),
        ));
    }
    for (name, state) in [
        ("resource-in", ResourceState::InService),
        ("resource-pending", ResourceState::PendingOos),
        ("resource-oos", ResourceState::Oos),
    ] {
        bodies.push((
            name.into(),
            Body::Resource(ResourceBody {
                member: "a".into(),
                resource: "plc_poller".into(),
                state,
                reason: "dépendance: plc_poller".into(),
            }),
        ));
    }

    let mut chain = Chain::new("root.a", "a", 1);
    let mut state = State::new();
    let mut seeds = Seeds::new();
    let mut ts = 1_700_000_000_000_000;
    for (name, body) in bodies {
        ts += 1_000;
        let sealed = chain.seal(ts, body)?;
        state.apply(&sealed.event);
        seeds.push((name, sealed.bytes));
    }
    // A checkpoint of the head so far, signed by a fixed key.
    let kp = KeyPair::new_from_raw(events::nkeys::KeyPairType::User, [1; 32])?;
    let body = events::sign_checkpoint(
        &kp,
        chain.origin(),
        chain.member(),
        chain.epoch(),
        chain.last_seq(),
        chain.last_hash(),
    )?;
    chain.set_epoch(2)?;
    seeds.push((
        "checkpoint".into(),
        chain.seal(ts + 1_000, Body::Checkpoint(body))?.bytes,
    ));
    // Another origin's genesis: the verifier refuses it.
    let mut other = Chain::new("root.south.plc_1", "b", u64::MAX);
    let body = Body::Unforced(UnforcedBody {
        point: "p".into(),
        by: "x".into(),
    });
    seeds.push(("other-origin".into(), other.seal(0, body)?.bytes));
    Ok((seeds, state))
}

/// The tests' valid root (`topology/src/validate/tests.rs`), which the
/// fixtures there are appended to.
const ROOT: &str = "[mesh]\nname = \"t\"\n[[node]]\nid = \"root\"\n\
    members = [{ name = \"a\", host = \"h\", port_base = 1000 }]\n";

fn topology_seeds(repo: &Path) -> Seeds {
    let mut seeds: Seeds = vec![
        ("default".into(), topology::DEFAULT_TOPOLOGY.into()),
        ("example".into(), topology::EXAMPLE_TOPOLOGY.into()),
        ("root".into(), ROOT.into()),
    ];
    let sources: [(&str, PathBuf); 2] = [
        ("validate", repo.join("topology/src/validate/tests.rs")),
        ("cli", repo.join("tests/tests/cli.rs")),
    ];
    for (what, path) in sources {
        let Ok(source) = fs::read_to_string(&path) else {
            eprintln!("warning: no fixtures from {} (unreadable)", path.display());
            continue;
        };
        let node = "[[node]]\nid = \"root\"\n\
            members = [{ name = \"a\", host = \"127.0.0.1\", port_base = 20000 }]\n";
        for (i, lit) in string_literals(&source).into_iter().enumerate() {
            // Fixtures are TOML; the other literals (messages) are not.
            if !(lit.contains('=') || lit.contains("[[")) {
                continue;
            }
            // cli.rs builds its cases with format!: fill in the pieces.
            let text = lit
                .replace("{HEAD}", "[mesh]\nname = \"t\"\n")
                .replace("{}", node)
                .replace("{{", "{")
                .replace("}}", "}");
            seeds.push((format!("{what}-{i}"), text.clone().into_bytes()));
            if !text.contains("[mesh]") {
                seeds.push((
                    format!("{what}-{i}-after-root"),
                    format!("{ROOT}{text}").into(),
                ));
            }
        }
    }
    seeds
}

/// The string literals of Rust source, unescaped: `"..."` (with `\n`,
/// `\t`, `\"`, `\\`, `\u{..}` and line continuations) and `r#"..."#`.
/// Enough for test files; a char literal `'"'` is stepped over.
fn string_literals(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = src.chars().peekable();
    let mut prev = ' ';
    while let Some(c) = chars.next() {
        match c {
            '\'' if chars.peek() == Some(&'"') => {
                chars.next();
            }
            'r' if chars.peek() == Some(&'#') && !prev.is_alphanumeric() => {
                chars.next();
                if chars.next_if_eq(&'"').is_none() {
                    continue;
                }
                let mut lit = String::new();
                while let Some(c) = chars.next() {
                    if c == '"' && chars.next_if_eq(&'#').is_some() {
                        break;
                    }
                    lit.push(c);
                }
                out.push(lit);
            }
            '"' => {
                let mut lit = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some('n') => lit.push('\n'),
                            Some('t') => lit.push('\t'),
                            Some('\n') => while chars.next_if(|c| c.is_whitespace()).is_some() {},
                            Some('u') => {
                                let hex: String =
                                    chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                                let ch = u32::from_str_radix(&hex, 16).ok();
                                lit.extend(ch.and_then(char::from_u32));
                            }
                            Some(other) => lit.push(other),
                            None => break,
                        },
                        c => lit.push(c),
                    }
                }
                out.push(lit);
            }
            _ => {}
        }
        prev = c;
    }
    out
}

fn wire_seeds(state: &State) -> Result<Seeds, serde_json::Error> {
    let mut seeds: Seeds = vec![
        ("request-empty".into(), Vec::new()),
        ("request-blank".into(), b" \n".to_vec()),
    ];
    let mut json = |name: &str, v: &dyn erased::Json| -> Result<(), serde_json::Error> {
        seeds.push((name.into(), v.json()?));
        Ok(())
    };
    let requests = [
        ("request-all", StateRequest::default()),
        (
            "request-pattern",
            StateRequest {
                pattern: Some("root.a.>".into()),
                digest: false,
            },
        ),
        (
            "request-digest",
            StateRequest {
                pattern: Some("root.*.temp1".into()),
                digest: true,
            },
        ),
    ];
    for (name, req) in &requests {
        json(name, req)?;
        json(
            &name.replace("request", "state"),
            &StateReply::answer("root.a", "a", state, req),
        )?;
    }
    json("state-error", &StateReply::error("bad request"))?;
    for (name, op, value, by) in [
        ("cmd-write", Op::Write, Some(serde_json::json!(true)), None),
        (
            "cmd-force",
            Op::Force,
            Some(serde_json::json!(21.5)),
            Some("jo"),
        ),
        (
            "cmd-force-int",
            Op::Force,
            Some(serde_json::json!(-3)),
            None,
        ),
        ("cmd-unforce", Op::Unforce, None, Some("")),
    ] {
        let cmd = Command {
            op,
            point: "pump".into(),
            value,
            by: by.map(Into::into),
        };
        json(name, &cmd)?;
    }
    json("reply-error", &Reply::error("point pump is not writable"))?;
    let ok = Reply {
        ok: true,
        origin: Some("root.a".into()),
        epoch: Some(3),
        seq: Some(42),
        handler_us: Some(180),
        error: None,
    };
    json("reply-ok", &ok)?;
    let info = MemberInfo {
        node: "root.a".into(),
        member: "a".into(),
        pid: 4242,
        nats_pid: Some(4243),
        role: "active".into(),
        epoch: 3,
        active: Some("a".into()),
        leader: Some("2".into()),
        healthy: true,
        plc_ok: Some(false),
        since_role_change_ms: 1_500,
        counters: Counters {
            published: 10,
            ..Counters::default()
        },
        resources: vec![ResourceInfo {
            name: "plc_poller".into(),
            state: "in_service".into(),
            healthy: true,
            failures: 0,
        }],
        troubles: vec![OriginTrouble {
            origin: "root.a.plc".into(),
            kind: TroubleKind::ReplicaStalled,
            seq: 7,
            reason: "source lost events".into(),
            since_ms: 20,
        }],
    };
    json("member-info", &info)?;
    seeds.push((
        "state-map".into(),
        serde_json::to_vec(&BTreeMap::from([("node", "root"), ("digest", "00")]))?,
    ));
    Ok(seeds)
}

/// `&dyn Serialize` for the seed list (serde's trait is not object safe).
mod erased {
    pub trait Json {
        fn json(&self) -> Result<Vec<u8>, serde_json::Error>;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> Result<Vec<u8>, serde_json::Error> {
            serde_json::to_vec_pretty(self)
        }
    }
}

fn raft_seeds() -> Result<Seeds, serde_json::Error> {
    use openraft::raft::{
        AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
    };
    use openraft::{
        CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership,
        Vote,
    };
    use raft::network::{Reply as RaftReply, Rpc};
    use raft::{Health, Hello, PairState, Request, Response, TypeConfig, MEMBER_A, VOTERS};

    let log_id = |term, index| LogId::new(CommittedLeaderId::new(term, MEMBER_A), index);
    let entry = |index, payload| Entry::<TypeConfig> {
        log_id: log_id(2, index),
        payload,
    };
    let voters = std::collections::BTreeSet::from(VOTERS);
    let membership = Membership::new(vec![voters.clone()], voters);
    let requests = [
        Request::Renew {
            member: 1,
            incarnation: 77,
            epoch: 3,
        },
        Request::Acquire {
            member: 2,
            incarnation: 78,
            expect_epoch: 3,
            expect_renew_index: 41,
        },
        Request::Release {
            member: 1,
            incarnation: 77,
            epoch: 3,
            lapsed: true,
        },
        Request::Health {
            member: 2,
            incarnation: 78,
            report: Health {
                plc_ok: Some(true),
                life_sign: Some(513),
                ready: true,
            },
            stream_ok: Some(true),
        },
        Request::Probe,
        Request::Maintenance {
            member: 1,
            incarnation: 77,
            on: true,
        },
    ];
    let mut entries = vec![
        entry(1, EntryPayload::Blank),
        entry(2, EntryPayload::Membership(membership.clone())),
    ];
    for (i, r) in requests.iter().enumerate() {
        entries.push(entry(3 + i as u64, EntryPayload::Normal(r.clone())));
    }
    let vote = Vote::new_committed(2, MEMBER_A);
    let mut seeds = Seeds::new();
    let mut json = |name: &str, v: &dyn erased::Json| -> Result<(), serde_json::Error> {
        seeds.push((name.into(), v.json()?));
        Ok(())
    };
    json(
        "hello",
        &Hello {
            mesh: "lab".into(),
            node: "root.south".into(),
            from_id: 3,
        },
    )?;
    json(
        "rpc-vote",
        &Rpc::Vote(VoteRequest::new(Vote::new(3, 2), Some(log_id(2, 7)))),
    )?;
    json(
        "rpc-heartbeat",
        &Rpc::Append(AppendEntriesRequest {
            vote,
            prev_log_id: Some(log_id(2, 7)),
            entries: vec![],
            leader_commit: Some(log_id(2, 7)),
        }),
    )?;
    json(
        "rpc-append",
        &Rpc::Append(AppendEntriesRequest {
            vote,
            prev_log_id: None,
            entries,
            leader_commit: Some(log_id(2, 2)),
        }),
    )?;
    json(
        "rpc-snapshot",
        &Rpc::Snapshot {
            vote,
            meta: SnapshotMeta {
                last_log_id: Some(log_id(2, 7)),
                last_membership: StoredMembership::new(Some(log_id(2, 2)), membership),
                snapshot_id: "2-7-1".into(),
            },
            data: serde_json::to_vec(&PairState::default())?,
        },
    )?;
    json(
        "rpc-prevote",
        &Rpc::PreVote {
            term: 3,
            last_log_id: Some(log_id(2, 7)),
        },
    )?;
    for (i, r) in requests.into_iter().enumerate() {
        json(&format!("rpc-forward-{i}"), &Rpc::Forward(r))?;
    }
    json(
        "reply-vote",
        &RaftReply::Vote(VoteResponse::new(Vote::new(3, 2), Some(log_id(2, 7)), true)),
    )?;
    json(
        "reply-append",
        &RaftReply::Append(AppendEntriesResponse::Success),
    )?;
    json(
        "reply-append-higher",
        &RaftReply::Append(AppendEntriesResponse::HigherVote(Vote::new(4, 2))),
    )?;
    json(
        "reply-snapshot",
        &RaftReply::Snapshot(SnapshotResponse::new(vote)),
    )?;
    for (i, r) in [
        Response::Ok,
        Response::Fenced,
        Response::Granted { epoch: 4 },
        Response::Conflict,
        Response::Invalid,
    ]
    .into_iter()
    .enumerate()
    {
        json(&format!("reply-forward-{i}"), &RaftReply::Forward(r))?;
    }
    json(
        "reply-not-leader",
        &RaftReply::NotLeader { leader: Some(1) },
    )?;
    json(
        "reply-prevote",
        &RaftReply::PreVote {
            granted: false,
            why: Some("heard a leader 120 ms ago".into()),
        },
    )?;
    json("reply-failed", &RaftReply::Failed("refused".into()))?;
    // The same as whole frames (the target also reads each input as one).
    let framed: Seeds = seeds
        .iter()
        .map(|(name, body)| {
            let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
            (
                format!("frame-{name}"),
                [&len.to_be_bytes()[..], body].concat(),
            )
        })
        .collect();
    seeds.extend(framed);
    Ok(seeds)
}
