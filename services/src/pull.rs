//! Reading a stream in order from a given sequence, failing fast, with no
//! dependency on the JetStream meta leader.
//!
//! Every reader of canopy (a parent's replica puller, the fold, an
//! activation's walk to its chain head, restores, audits, queries) reads a
//! stream from some sequence on, in order. It does so through a *direct*
//! push consumer: created by the stream's leader alone (the request is
//! answered by the leader; the meta leader is never asked), with no store
//! and no raft group, delivering from that server's copy. nats-server
//! builds its own mirrors and sources on the same kind of consumer.
//!
//! Why not the ordinary ephemeral consumer it used before: its creation is
//! a proposal to the JetStream meta leader, which places it on any of the
//! stream's servers. When a pair member's server died holding the meta
//! leader, or holding the reader's consumer, a new one could not be created
//! until JetStream had elected again (a hard-coded 4-9 s in nats-server),
//! and the new active's walk to its chain head, the root's replica and the
//! fold all waited that long (measured: `canopy bench failover`, 2 of 20
//! SIGKILLs at 3.5 and 6.8 s). A direct consumer lives where the stream's
//! leader was when it was created: on a pair, the witness (which keeps the
//! leaders, `ha::keep_leaders`), so killing either member never touches it,
//! and recreating one needs only a live stream leader.
//!
//! async-nats' ordered consumer recovers by itself, but on its own clock (it
//! notices a dead upstream after two missed 30 s-scale heartbeats), which
//! left a replica stalled for over 20 s after a nats-server restart
//! (measured here). This reader instead surfaces every error at once (two
//! missed 250 ms heartbeats: the consumer's server is gone) and the caller
//! restarts from its own last sequence, so recovery time is under canopy's
//! control. Flow control paces the server to what the caller has taken,
//! in bytes (up to 32 MiB in flight), which may still be more messages
//! than the client keeps for one subscription (async-nats drops the rest
//! and says "slow consumer"): the reader checks every delivery's stream
//! sequence, and the idle heartbeat's last delivered one, and ends the
//! read at the first message it did not get, so no caller ever sees a hole
//! in a stream that has none.

use std::time::Duration;

use async_nats::jetstream::{self, Context};
use async_nats::{Client, StatusCode, Subscriber};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

/// Idle heartbeat: two missed ones end the read (so ~0.5 s to notice that
/// the consumer is gone, e.g. with the server of a pair member that was
/// killed).
const HEARTBEAT: Duration = Duration::from_millis(250);
/// An ephemeral consumer whose reader went away is removed after this.
const INACTIVE: Duration = Duration::from_secs(10);
/// How soon a [`follow`] read first asks where the stream's leader is; it
/// asks twice as late each time the answer is its own server, up to
/// [`LEADER_CHECK_MAX`] (a root pair holds hundreds of streams, each read
/// by a feeder of its fold: at steady state they ask once a minute).
const LEADER_CHECK: Duration = Duration::from_secs(2);
const LEADER_CHECK_MAX: Duration = Duration::from_secs(60);
/// Patience for that question (a stream electing a leader does not answer;
/// the read goes on meanwhile).
const LEADER_PATIENCE: Duration = Duration::from_millis(300);

/// The messages of a read, in stream order; an error ends it (the caller
/// starts a new read from its next sequence).
pub type Messages = BoxStream<'static, anyhow::Result<jetstream::Message>>;

/// Reads stream `name` of `js`'s domain from `start` on, in order, without
/// acks. The consumer is ephemeral and removed by the server shortly after
/// the reader goes away.
pub async fn from_seq(js: &Context, name: &str, start: u64) -> anyhow::Result<Messages> {
    read(js, name, start, false).await
}

/// [`from_seq`] for a reader that lives on (a puller, a feeder of the
/// fold): the read also ends when the stream's leader is no longer the
/// server its consumer lives on, so the caller reads again from the
/// leader. A direct consumer stays on the server that led the stream when
/// it was created; on a pair that may be a member's, in a young pair or
/// while the witness was away, and a read that stays there dies with that
/// member (measured: 600 ms more to the root's copy of a failover, two
/// missed heartbeats and a new read). Following the leader puts every such
/// read on the witness once it leads again.
pub async fn follow(js: &Context, name: &str, start: u64) -> anyhow::Result<Messages> {
    read(js, name, start, true).await
}

async fn read(js: &Context, name: &str, start: u64, follow: bool) -> anyhow::Result<Messages> {
    let client = js.client();
    let inbox = client.new_inbox();
    // Subscribed before the consumer exists, so its first delivery has a
    // subscriber (the server also waits for the interest to arrive across
    // a leaf link before it delivers).
    let sub = client.subscribe(inbox.clone()).await?;
    let request = serde_json::json!({
        "stream_name": name,
        "config": {
            "direct": true,
            "deliver_subject": inbox,
            "deliver_policy": "by_start_sequence",
            "opt_start_seq": start.max(1),
            "ack_policy": "none",
            "replay_policy": "instant",
            "flow_control": true,
            "idle_heartbeat": HEARTBEAT.as_nanos() as u64,
            "inactive_threshold": INACTIVE.as_nanos() as u64,
            "mem_storage": true,
        }
    });
    let reply: serde_json::Value = js
        .request(format!("CONSUMER.CREATE.{name}"), &request)
        .await
        .map_err(|e| anyhow::anyhow!("creating a reader of {name} at {start}: {e}"))?;
    if let Some(err) = reply.get("error") {
        anyhow::bail!(
            "creating a reader of {name} at {start}: {}",
            err.get("description")
                .and_then(|d| d.as_str())
                .unwrap_or("refused")
        );
    }
    let host = reply
        .pointer("/cluster/leader")
        .and_then(|l| l.as_str())
        .map(str::to_owned);
    let read = Read {
        sub,
        client,
        js: js.clone(),
        name: name.to_owned(),
        host: host.filter(|_| follow),
        next_check: tokio::time::Instant::now() + LEADER_CHECK,
        check_every: LEADER_CHECK,
        last: None,
        ended: false,
    };
    Ok(futures::stream::unfold(read, Read::step).boxed())
}

struct Read {
    sub: Subscriber,
    client: Client,
    js: Context,
    name: String,
    /// The server the consumer lives on, for a read that follows the
    /// stream's leader (`None`: it does not, or the stream is on one server).
    host: Option<String>,
    next_check: tokio::time::Instant,
    check_every: Duration,
    /// The stream sequence of the last message handed to the caller.
    last: Option<u64>,
    ended: bool,
}

impl Read {
    async fn step(mut self) -> Option<(anyhow::Result<jetstream::Message>, Read)> {
        if self.ended {
            return None;
        }
        loop {
            if let Some(moved) = self.leader_moved().await {
                return self.end(anyhow::anyhow!(
                    "the stream's leader moved to {moved}: reading again from it"
                ));
            }
            let message = match tokio::time::timeout(2 * HEARTBEAT, self.sub.next()).await {
                Ok(Some(m)) => m,
                Ok(None) => return self.end(anyhow::anyhow!("the read's subscription ended")),
                Err(_) => {
                    return self.end(anyhow::anyhow!(
                        "no message and no heartbeat for {:?}: the reader's consumer is gone",
                        2 * HEARTBEAT
                    ))
                }
            };
            match message.status {
                None => {
                    let js = self.js.clone();
                    let msg = jetstream::Message {
                        message,
                        context: js,
                    };
                    let seq = match msg.info() {
                        Ok(i) => i.stream_sequence,
                        Err(e) => {
                            return self.end(anyhow::anyhow!(
                                "a delivery without its stream sequence: {e}"
                            ))
                        }
                    };
                    if let Some(last) = self.last {
                        if seq != last + 1 {
                            return self.end(anyhow::anyhow!(
                                "delivery went from seq {last} to {seq}: the reader fell behind and the client dropped messages; reading again from {}",
                                last + 1
                            ));
                        }
                    }
                    self.last = Some(seq);
                    return Some((Ok(msg), self));
                }
                Some(StatusCode::IDLE_HEARTBEAT) => {
                    // The last stream sequence the consumer delivered: one
                    // this reader never got was dropped on the way.
                    let delivered = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Last-Stream"))
                        .and_then(|v| v.as_str().parse::<u64>().ok());
                    if let (Some(last), Some(d)) = (self.last, delivered) {
                        if d > last {
                            return self.end(anyhow::anyhow!(
                                "the consumer delivered up to seq {d}, this reader got up to {last}: the client dropped messages; reading again from {}",
                                last + 1
                            ));
                        }
                    }
                    // A flow-control request carries its reply subject; a
                    // heartbeat names one when the server waits for an
                    // answer it missed. Both are answered only now, after
                    // the caller took every message before them.
                    let stalled = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Consumer-Stalled"))
                        .map(|v| v.to_string());
                    let to = message.reply.map(|r| r.to_string()).or(stalled);
                    if let Some(to) = to {
                        if let Err(e) = self.client.publish(to, Bytes::new()).await {
                            return self.end(anyhow::anyhow!("answering flow control: {e}"));
                        }
                    }
                }
                Some(status) => {
                    let why = message.description.unwrap_or_default();
                    return self.end(anyhow::anyhow!("the read ended: status {status} {why}"));
                }
            }
        }
    }

    /// Now and then (see [`LEADER_CHECK`]), for a read that follows the
    /// leader: the stream's leader if it is another server than the
    /// consumer's. A stream on one server (no replicas) stops the checks.
    async fn leader_moved(&mut self) -> Option<String> {
        let host = self.host.as_ref()?;
        let now = tokio::time::Instant::now();
        if now < self.next_check {
            return None;
        }
        self.next_check = now + self.check_every;
        let info = tokio::time::timeout(
            LEADER_PATIENCE,
            self.js.request::<_, _, serde_json::Value>(
                format!("STREAM.INFO.{}", self.name),
                &serde_json::json!({}),
            ),
        )
        .await
        .ok()?
        .ok()?;
        let cluster = info.get("cluster")?;
        if cluster
            .get("replicas")
            .and_then(|r| r.as_array())
            .is_none_or(|r| r.is_empty())
        {
            self.host = None;
            return None;
        }
        let leader = cluster.get("leader")?.as_str()?;
        if leader == host {
            self.check_every = (self.check_every * 2).min(LEADER_CHECK_MAX);
            return None;
        }
        (!leader.is_empty()).then(|| leader.to_owned())
    }

    fn end(mut self, e: anyhow::Error) -> Option<(anyhow::Result<jetstream::Message>, Read)> {
        self.ended = true;
        Some((Err(e), self))
    }
}

/// Reads `stream`'s messages `from..=to` in order, calling `each` with the
/// stream sequence and the message; a read interrupted by an error (a
/// missed heartbeat on a busy server, a leader change) resumes at the next
/// sequence not yet seen, until `patience` passes without progress. For
/// readers that must see every message once (audits, comparisons), unlike
/// a live reader that simply starts over.
pub async fn read_range(
    js: &Context,
    name: &str,
    from: u64,
    to: u64,
    patience: Duration,
    mut each: impl FnMut(u64, &async_nats::jetstream::Message),
) -> anyhow::Result<()> {
    let mut next = from.max(1);
    let mut last_progress = tokio::time::Instant::now();
    while next <= to {
        let err;
        match from_seq(js, name, next).await {
            Ok(mut msgs) => loop {
                match tokio::time::timeout(patience, msgs.next()).await {
                    Ok(Some(Ok(m))) => {
                        let seq = m
                            .info()
                            .map_err(|e| anyhow::anyhow!("message info: {e}"))?
                            .stream_sequence;
                        if seq < next {
                            continue;
                        }
                        each(seq, &m);
                        next = seq + 1;
                        last_progress = tokio::time::Instant::now();
                        if next > to {
                            return Ok(());
                        }
                    }
                    Ok(Some(Err(e))) => {
                        err = anyhow::anyhow!("{e}");
                        break;
                    }
                    Ok(None) => {
                        err = anyhow::anyhow!("the read ended");
                        break;
                    }
                    Err(_) => {
                        err = anyhow::anyhow!("no message for {patience:?}");
                        break;
                    }
                }
            },
            Err(e) => err = e,
        }
        if last_progress.elapsed() > patience {
            anyhow::bail!("reading seq {next} of {to}: {err:#}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
