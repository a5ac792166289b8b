//! Stream writers against a real nats-server: the appender's sparse acks
//! confirm what came before them and a refused unacknowledged append
//! surfaces at the next acknowledged one; a publisher re-seals onto the
//! event another member wrote.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use std::sync::Arc;

use async_nats::jetstream::{self, stream};
use services::append::{AppendError, Appender};
use services::child::{self, Output};
use services::member::{metrics::Metrics, publisher};
use tokio_util::sync::CancellationToken;

/// A throwaway JetStream server on a free loopback port, killed on drop.
struct Server {
    child: tokio::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let bin = services::supervisor::find_nats_server(None)
            .expect("nats-server (set CANOPY_NATS_SERVER or run scripts/test)");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args: Vec<String> = [
            "-js".to_owned(),
            "-a".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            port.to_string(),
            "-sd".to_owned(),
            dir.path().display().to_string(),
        ]
        .to_vec();
        let child = child::spawn(&bin, &args, Output::File(dir.path().join("nats.log"))).unwrap();
        Server {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
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
    let server = Server::start();
    let js = context(&server.url).await;
    let origin = "root.south";
    let mut s = js
        .create_stream(stream::Config {
            name: events::subjects::stream_name(origin),
            subjects: vec![format!("canopy.ev.{origin}.>")],
            ..Default::default()
        })
        .await
        .unwrap();
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
            epoch,
            Arc::new(|| true),
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
    assert_eq!(a.publish(body(4)).await.unwrap().seq, 4);
    let c = tokio::time::timeout(Duration::from_secs(30), b.publish(body(5)))
        .await
        .expect("b publishes after re-sealing")
        .unwrap();
    assert_eq!(c.seq, 5);
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
