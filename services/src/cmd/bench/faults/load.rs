//! The campaign's load: commands sent while a schedule runs (forces,
//! recorded when acknowledged so their events can be checked at the root,
//! and PLC writes).

use std::time::Duration;

use std::sync::Arc;

use events::CommandOp;
use serde_json::json;

use super::{Acked, LEAF};

/// Commands sent while a schedule runs: forces (recorded when
/// acknowledged, their events are checked at the root) and PLC writes.
pub(super) struct Load {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Vec<Acked>>,
}

impl Load {
    pub(super) fn start(client: async_nats::Client, key: Arc<nkeys::KeyPair>) -> Load {
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u64;
            let targets = [
                ("root.plc", "level"),
                ("root.south", "flow"),
                (LEAF, "temp"),
            ];
            while !s.is_cancelled() {
                i += 1;
                let (node, point) = targets[(i % targets.len() as u64) as usize];
                let value = (i % 1000) as f64 + 0.5;
                let force = (CommandOp::Force, point, json!(value));
                if let Some(r) = command(&client, &key, node, force).await {
                    if r.ok {
                        if let Some(seq) = r.seq {
                            acked.push(Acked {
                                origin: node.to_owned(),
                                seq,
                                point: point.to_owned(),
                                value,
                                at_us: crate::member::publisher::now_us(),
                            });
                        }
                    }
                }
                let write = (CommandOp::Write, "speed", json!(i % 500));
                let _ = command(&client, &key, "root.plc", write).await;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(150)) => {}
                    _ = s.cancelled() => {}
                }
            }
            acked
        });
        Load { stop, task }
    }

    pub(super) async fn stop(self) -> Vec<Acked> {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

/// Sends `op` of `point` to `node`, signed with `key`.
async fn command(
    client: &async_nats::Client,
    key: &nkeys::KeyPair,
    node: &str,
    (op, point, value): (CommandOp, &str, serde_json::Value),
) -> Option<crate::wire::Reply> {
    let now_ms = crate::member::publisher::now_us() / 1000;
    let signed =
        crate::wire::SignedCommand::sign(key, node, op, point, Some(value), now_ms).ok()?;
    let body = serde_json::to_vec(&signed).ok()?;
    let msg = tokio::time::timeout(
        Duration::from_secs(2),
        client.request(events::subjects::cmd_subject(node), body.into()),
    )
    .await
    .ok()?
    .ok()?;
    serde_json::from_slice(&msg.payload).ok()
}
