//! The campaign's load: commands sent while a schedule runs (forces,
//! recorded when acknowledged so their events can be checked at the root,
//! and PLC writes).

use std::time::Duration;

use serde_json::{json, Value as Json};

use super::{Acked, LEAF};

/// Commands sent while a schedule runs: forces (recorded when
/// acknowledged, their events are checked at the root) and PLC writes.
pub(super) struct Load {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Vec<Acked>>,
}

impl Load {
    pub(super) fn start(client: async_nats::Client) -> Load {
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
                let body = json!({ "op": "force", "point": point, "value": value, "by": "faults" });
                if let Some(r) = command(&client, node, &body).await {
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
                let write = json!({ "op": "write", "point": "speed", "value": i % 500 });
                let _ = command(&client, "root.plc", &write).await;
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

async fn command(
    client: &async_nats::Client,
    node: &str,
    body: &Json,
) -> Option<crate::wire::Reply> {
    let msg = tokio::time::timeout(
        Duration::from_secs(2),
        client.request(events::subjects::cmd_subject(node), body.to_string().into()),
    )
    .await
    .ok()?
    .ok()?;
    serde_json::from_slice(&msg.payload).ok()
}
