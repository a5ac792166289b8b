//! Stream writers against real nats-servers (one, or a 3-server cluster
//! whose streams are R3 as an HA pair's are): the appender's sparse acks
//! confirm what came before them and a refused unacknowledged append
//! surfaces at the next acknowledged one; a duplicate ack is never a
//! confirmation; a publisher re-seals onto the event another member wrote,
//! and steps over a deposed member's late append instead of chaining onto
//! it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use std::sync::Arc;

use async_nats::jetstream::{self, stream};
use services::append::{AppendError, Appender};
use services::child::{self, Output};
use services::member::{metrics::Metrics, publisher};
use tokio_util::sync::CancellationToken;

/// Throwaway JetStream servers on reserved loopback ports, killed on drop:
/// one, or three in a cluster (streams created with `num_replicas: 3` are
/// then clustered like an HA pair's, where JetStream checks message ids
/// *before* the expected last sequence).
struct Server {
    children: Vec<tokio::process::Child>,
    url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        Self::start_n(1)
    }

    fn cluster() -> Server {
        Self::start_n(3)
    }

    fn start_n(n: u16) -> Server {
        let bin = services::supervisor::find_nats_server(None)
            .expect("nats-server (set CANOPY_NATS_SERVER or run scripts/test)");
        let dir = tempfile::tempdir().unwrap();
        let client = services::ports::reserve(n).unwrap();
        let route = services::ports::reserve(n).unwrap();
        let mut children = Vec::new();
        for i in 0..n {
            let store = dir.path().join(format!("s{i}"));
            let mut conf = format!(
                "server_name: s{i}\nlisten: \"127.0.0.1:{}\"\njetstream {{ store_dir: {:?} }}\n",
                client + i,
                store.display().to_string()
            );
            if n > 1 {
                let routes: Vec<String> = (0..n)
                    .filter(|j| *j != i)
                    .map(|j| format!("\"nats-route://127.0.0.1:{}\"", route + j))
                    .collect();
                conf.push_str(&format!(
                    "cluster {{ name: c, listen: \"127.0.0.1:{}\", routes: [{}] }}\n",
                    route + i,
                    routes.join(", ")
                ));
            }
            let path = dir.path().join(format!("s{i}.conf"));
            std::fs::write(&path, conf).unwrap();
            let args = vec!["-c".to_owned(), path.display().to_string()];
            let log = dir.path().join(format!("s{i}.log"));
            children.push(child::spawn(&bin, &args, Output::File(log)).unwrap());
        }
        Server {
            children,
            url: format!("nats://127.0.0.1:{client}"),
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.start_kill();
        }
    }
}

/// Creates `config`, asking again while a cluster forms (its meta leader
/// is elected a few seconds after the servers start).
async fn create(js: &jetstream::Context, config: stream::Config) -> stream::Stream {
    let name = config.name.clone();
    services::wait::wait_for(&format!("stream {name}"), Duration::from_secs(60), || {
        let config = config.clone();
        async move { Ok(Some(js.create_stream(config).await?)) }
    })
    .await
    .unwrap()
}

async fn context(url: &str) -> jetstream::Context {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match async_nats::connect(url).await {
            Ok(c) => return jetstream::new(c),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{url}: {e}"),
        }
    }
}

#[tokio::test]
async fn sparse_acks_confirm_the_run_and_surface_a_refused_append() {
    let server = Server::start();
    let js = context(&server.url).await;
    let mut s = js
        .create_stream(stream::Config {
            name: "T".into(),
            subjects: vec!["t.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut app = Appender::new(js.clone(), 8);
    // Seven without a reply, the eighth with one: the window is then full
    // until its ack, which confirms all eight.
    for seq in 1..=8u64 {
        assert!(!app.is_full());
        app.send(format!("t.{seq}"), None, seq, "x".into(), seq == 8)
            .await
            .unwrap();
    }
    assert!(app.is_full());
    assert_eq!(app.next_ack().await.unwrap(), 8);
    assert!(app.is_empty() && !app.is_full());
    assert_eq!(s.info().await.unwrap().state.last_sequence, 8);

    // An append the stream refuses (here: seq 10 while the stream is at 8,
    // as if 9 had been lost on the way) fails silently, and so does every
    // later one; the next acknowledged one reports it.
    app.send("t.10".into(), None, 10, "x".into(), false)
        .await
        .unwrap();
    app.send("t.11".into(), None, 11, "x".into(), false)
        .await
        .unwrap();
    app.send("t.12".into(), None, 12, "x".into(), true)
        .await
        .unwrap();
    let err = app.next_ack().await.unwrap_err();
    assert!(matches!(err, AppendError::Refused { seq: 12, .. }), "{err}");
    assert_eq!(s.info().await.unwrap().state.last_sequence, 8);
    drop(server);
}

/// Two publishers of one origin, as around a failover: b (epoch 2) resumed
/// at the tail, then a (epoch 1, not yet fenced off) appends once more. b's
/// next append is refused, and b must re-seal onto a's event, the one the
/// stream holds, not onto the last event b had seen: the chain stays
/// unbroken across both members.
#[tokio::test]
async fn a_publisher_reseals_onto_the_event_another_member_wrote() {
    reseals_onto_the_event_another_member_wrote(Server::start(), 1).await;
}

/// The same on an R3 stream, where JetStream answers a message id it has
/// seen with "duplicate" before it checks the expected last sequence: with
/// ids of `<origin>:<seq>`, b's own event 4 was taken for a's (same id),
/// "confirmed", and b's chain forked behind it (the chain broken at the
/// root after losing the witness and the standby).
#[tokio::test]
async fn on_a_clustered_stream_another_members_event_is_not_taken_for_ours() {
    reseals_onto_the_event_another_member_wrote(Server::cluster(), 3).await;
}

async fn reseals_onto_the_event_another_member_wrote(server: Server, replicas: usize) {
    let js = context(&server.url).await;
    let origin = "root.south";
    let mut s = create(
        &js,
        stream::Config {
            name: events::subjects::stream_name(origin),
            subjects: vec![format!("canopy.ev.{origin}.>")],
            num_replicas: replicas,
            allow_atomic_publish: true,
            ..Default::default()
        },
    )
    .await;
    let body = |i: i64| {
        events::Body::Value(events::ValueBody {
            point: "p".into(),
            value: events::Value::Int(i),
            quality: events::Quality::Good,
        })
    };
    let cancel = CancellationToken::new();
    let start = |member: &str, epoch: u64| {
        publisher::start(
            js.clone(),
            origin.into(),
            member.into(),
            publisher::Epoch::Granted(epoch),
            None,
            Arc::new(|| true),
            None,
            None,
            Arc::new(Metrics::default()),
            cancel.clone(),
        )
    };
    let (a, a_task) = start("a", 1).await.unwrap();
    for i in 1..=3 {
        a.publish(body(i)).await.unwrap();
    }
    // A publisher's start reads the stream; a failed read is an error the
    // caller retries (as a member's activation does): on a fresh R3
    // stream under load, the read consumer may not answer yet ("no
    // responders", measured in CI).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (b, b_task) = loop {
        match start("b", 2).await {
            Ok(started) => break started,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("b's publisher not started yet: {e:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("b's publisher never started: {e:#}"),
        }
    };
    assert_eq!(a.publish(body(4)).await.unwrap().seq, 4);
    let c = tokio::time::timeout(Duration::from_secs(30), b.publish(body(5)))
        .await
        .expect("b publishes after re-sealing")
        .unwrap();
    assert_eq!(
        c.seq, 5,
        "b's event must land after a's, not be taken for it"
    );
    let mut chain = events::ChainVerifier::strict(origin);
    for seq in 1..=5u64 {
        let m = s.get_raw_message(seq).await.unwrap();
        let ev = chain
            .advance(seq, &m.payload)
            .unwrap_or_else(|b| panic!("seq {seq}: {b}"))
            .event;
        assert_eq!(ev.member, if seq == 5 { "b" } else { "a" });
    }
    assert_eq!(s.info().await.unwrap().state.last_sequence, 5);
    cancel.cancel();
    drop((a, b));
    let _ = a_task.await;
    let _ = b_task.await;
    drop(server);
}

/// An append whose message id the stream has seen answers "duplicate"
/// with the *stored* message's sequence (on a clustered stream even when
/// its expected last sequence is wrong): the appender reports it as such,
/// never as a confirmation, so the publisher compares bytes.
#[tokio::test]
async fn a_duplicate_ack_is_never_a_confirmation() {
    let server = Server::cluster();
    let js = context(&server.url).await;
    create(
        &js,
        stream::Config {
            name: "T".into(),
            subjects: vec!["t.*".into()],
            num_replicas: 3,
            ..Default::default()
        },
    )
    .await;
    let mut app = Appender::new(js.clone(), 8);
    app.send("t.1".into(), Some("id-1".into()), 1, "first".into(), true)
        .await
        .unwrap();
    assert_eq!(app.next_ack().await.unwrap(), 1);
    // Other bytes under the same id, meant for seq 2.
    app.send("t.2".into(), Some("id-1".into()), 2, "other".into(), true)
        .await
        .unwrap();
    let err = app.next_ack().await.unwrap_err();
    assert!(
        matches!(err, AppendError::Duplicate { seq: 2, stored: 1 }),
        "{err}"
    );
}

/// Around a failover a deposed member's appends can arrive late (its own
/// nats-server was frozen with them). Its first one is refused (the new
/// active took that seq) but the next, expecting exactly the new tail,
/// lands: it chains onto an event of the deposed member that never
/// landed. The new active must step over it and continue its own chain;
/// linking onto "the last message that decodes" made its every later event
/// foreign for every reader.
#[tokio::test]
async fn a_late_append_of_a_deposed_member_is_stepped_over_not_chained_onto() {
    let server = Server::start();
    let js = context(&server.url).await;
    let origin = "root.south";
    let s = create(
        &js,
        stream::Config {
            name: events::subjects::stream_name(origin),
            subjects: vec![format!("canopy.ev.{origin}.>")],
            allow_atomic_publish: true,
            ..Default::default()
        },
    )
    .await;
    let body = |i: i64| {
        events::Body::Value(events::ValueBody {
            point: "p".into(),
            value: events::Value::Int(i),
            quality: events::Quality::Good,
        })
    };
    let cancel = CancellationToken::new();
    let start = |member: &str, epoch: u64| {
        publisher::start(
            js.clone(),
            origin.into(),
            member.into(),
            publisher::Epoch::Granted(epoch),
            None,
            Arc::new(|| true),
            None,
            None,
            Arc::new(Metrics::default()),
            cancel.clone(),
        )
    };
    let (a, a_task) = start("a", 1).await.unwrap();
    for i in 1..=3 {
        a.publish(body(i)).await.unwrap();
    }
    drop(a);
    cancel.cancel();
    let _ = a_task.await;
    // a's last event, as a's publisher had it.
    let third = s.get_raw_message(3).await.unwrap().payload;
    let mut a_chain = events::Chain::resume(origin, "a", 1, 3, events::hash(&third));

    let cancel = CancellationToken::new();
    let (b, b_task) = publisher::start(
        js.clone(),
        origin.into(),
        "b".into(),
        publisher::Epoch::Granted(2),
        None,
        Arc::new(|| true),
        None,
        None,
        Arc::new(Metrics::default()),
        cancel.clone(),
    )
    .await
    .unwrap();
    assert_eq!(b.publish(body(40)).await.unwrap().seq, 4);
    // a's pipelined appends arrive now: 4' (expects 3: refused), 5'
    // (expects 4: lands, chained onto 4', which is not in the stream).
    let late4 = a_chain.seal(4, body(4)).unwrap();
    let late5 = a_chain.seal(5, body(5)).unwrap();
    for (seq, ev) in [(4u64, &late4), (5, &late5)] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
            (seq - 1).to_string().as_str(),
        );
        let ack = js
            .publish_with_headers(
                format!("canopy.ev.{origin}.p"),
                headers,
                ev.bytes.clone().into(),
            )
            .await
            .unwrap()
            .await;
        assert_eq!(ack.is_ok(), seq == 5, "late append of seq {seq}: {ack:?}");
    }
    let c = tokio::time::timeout(Duration::from_secs(30), b.publish(body(60)))
        .await
        .expect("b publishes after stepping over the late append")
        .unwrap();
    assert_eq!(c.seq, 6);
    // Every reader's verifier: 5 is not in the chain, 6 continues it.
    let mut chain = events::ChainVerifier::new(origin);
    for seq in 1..=6u64 {
        let m = s.get_raw_message(seq).await.unwrap();
        let verdict = chain.advance(seq, &m.payload);
        match seq {
            5 => assert!(verdict.is_err(), "the late append verified"),
            6 => assert_eq!(
                verdict
                    .unwrap_or_else(|b| panic!("b's next event is foreign: {b}"))
                    .link,
                events::Link::Over { after: 4 }
            ),
            _ => {
                verdict.unwrap_or_else(|b| panic!("seq {seq}: {b}"));
            }
        }
    }
    cancel.cancel();
    drop(b);
    let _ = b_task.await;
}

/// A publisher whose view of the tail is stale (another member's events
/// landed after it resumed; or a just-elected stream leader answered from
/// behind) sends many events at once. With pipelined appends its first was
/// refused but a later one, expecting exactly the real tail, landed: an
/// event chained onto one that was refused, a fragment in the middle of
/// the stream (found by the fault campaign). Atomic batches land whole or
/// not at all: the stream stays one chain.
#[tokio::test]
async fn a_stale_tail_never_lands_a_fragment_of_the_publishers_own_chain() {
    let server = Server::start();
    let js = context(&server.url).await;
    let origin = "root.south";
    let mut s = create(
        &js,
        stream::Config {
            name: events::subjects::stream_name(origin),
            subjects: vec![format!("canopy.ev.{origin}.>")],
            allow_atomic_publish: true,
            ..Default::default()
        },
    )
    .await;
    let body = |i: i64| {
        events::Body::Value(events::ValueBody {
            point: "p".into(),
            value: events::Value::Int(i),
            quality: events::Quality::Good,
        })
    };
    let cancel = CancellationToken::new();
    let start = |member: &str, epoch: u64| {
        publisher::start(
            js.clone(),
            origin.into(),
            member.into(),
            publisher::Epoch::Granted(epoch),
            None,
            Arc::new(|| true),
            None,
            None,
            Arc::new(Metrics::default()),
            cancel.clone(),
        )
    };
    let (a, a_task) = start("a", 1).await.unwrap();
    for i in 1..=3 {
        a.publish(body(i)).await.unwrap();
    }
    let (b, b_task) = start("b", 2).await.unwrap();
    // a, not yet fenced off, lands three more: b's tail (3) is stale by 3.
    for i in 4..=6 {
        a.publish(body(i)).await.unwrap();
    }
    for i in 0..40 {
        b.submit(body(100 + i)).await.unwrap();
    }
    let last = tokio::time::timeout(Duration::from_secs(30), b.publish(body(999)))
        .await
        .expect("b publishes after re-sealing")
        .unwrap();
    assert_eq!(last.seq, 6 + 41);
    let mut chain = events::ChainVerifier::strict(origin);
    for seq in 1..=last.seq {
        let m = s.get_raw_message(seq).await.unwrap();
        let ev = chain
            .advance(seq, &m.payload)
            .unwrap_or_else(|b| panic!("seq {seq} is not in the chain: {b}"))
            .event;
        assert_eq!(ev.member, if seq <= 6 { "a" } else { "b" }, "seq {seq}");
    }
    assert_eq!(s.info().await.unwrap().state.last_sequence, last.seq);
    cancel.cancel();
    drop((a, b));
    let _ = a_task.await;
    let _ = b_task.await;
    drop(server);
}
