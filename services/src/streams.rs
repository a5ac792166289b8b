//! The JetStream streams a node keeps, and how they are configured.
//!
//! Architecture invariant: in every domain, stream `EV_<origin>` holds the
//! events of exactly one origin, and its stream sequence is the origin's
//! seq. The origin's own stream captures `canopy.ev.<origin>.*`; a replica
//! held by an ancestor captures `canopy.rp.<holder domain>.<origin>.*` and
//! is written only by that ancestor's puller, so no stream ever captures a
//! live publish of another origin and no two streams in the tree share a
//! subject (two streams on one subject would both ack a publish).

use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
use async_nats::jetstream::Context;
use topology::Topology;

fn base(topo: &Topology, name: String, subjects: Vec<String>, replicas: usize) -> Config {
    Config {
        name,
        subjects,
        storage: StorageType::File,
        max_age: topo.mesh.retention.max_age,
        max_bytes: i64::try_from(topo.mesh.retention.max_bytes).unwrap_or(i64::MAX),
        discard: DiscardPolicy::Old,
        num_replicas: replicas,
        // Dedup by `<origin>:<seq>` only needs to cover a resend after a
        // lost ack; expected-last-sequence does the real fencing.
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        // History is append-only: no message of an origin's stream (or of a
        // replica) is ever deleted or purged through the API; only
        // retention (age, bytes) removes the oldest. A deleted message
        // would leave a hole no puller can copy across (seq == stream
        // sequence must hold everywhere). An empty replica that must start
        // later is created with `first_sequence` instead of purged.
        deny_delete: true,
        deny_purge: true,
        // The origin's publisher appends atomic batches (crate::append::Batcher).
        allow_atomic_publish: true,
        ..Default::default()
    }
}

/// The origins whose streams the servers of `node` hold: its own, every
/// descendant's and, with `view = "tree"`, every other origin of the tree
/// (one local stream `EV_<origin>` each).
pub fn held_origins(topo: &Topology, node: &str) -> Vec<String> {
    let mut origins = vec![node.to_owned()];
    origins.extend(
        topo.descendants(node)
            .iter()
            .chain(topo.outside(node).iter())
            .map(|n| n.id.clone()),
    );
    origins
}

/// The names of the streams [`held_origins`] gives, the node's own first.
pub fn held_stream_names(topo: &Topology, node: &str) -> Vec<String> {
    held_origins(topo, node)
        .iter()
        .map(|o| events::subjects::stream_name(o))
        .collect()
}

/// The config of `origin`'s own stream.
pub fn own(topo: &Topology, origin: &str, replicas: usize) -> Config {
    base(
        topo,
        events::subjects::stream_name(origin),
        vec![events::subjects::stream_subjects(origin)],
        replicas,
    )
}

/// The config of the replica of `origin` held by `holder`.
pub fn replica(topo: &Topology, holder: &str, origin: &str, replicas: usize) -> Config {
    base(
        topo,
        events::subjects::stream_name(origin),
        vec![events::subjects::replica_subject(holder, origin, "*")],
        replicas,
    )
}

/// Creates the stream, or updates it to `config` when it exists (retention
/// may have changed in the topology).
pub async fn ensure(js: &Context, config: Config) -> anyhow::Result<()> {
    match js.get_stream(&config.name).await {
        Ok(mut s) => {
            let current = s.info().await?.config.clone();
            // deny_delete / deny_purge can be switched on (never off): a
            // stream made by an older canopy gets them here.
            if current.max_age != config.max_age
                || current.max_bytes != config.max_bytes
                || current.subjects != config.subjects
                || current.deny_delete != config.deny_delete
                || current.deny_purge != config.deny_purge
                || current.allow_atomic_publish != config.allow_atomic_publish
            {
                // A replica created at a later first sequence keeps it.
                let config = Config {
                    first_sequence: current.first_sequence,
                    ..config
                };
                js.update_stream(&config).await?;
            }
        }
        Err(_) => {
            let (name, max_bytes, replicas) =
                (config.name.clone(), config.max_bytes, config.num_replicas);
            js.create_stream(config).await.map_err(|e| {
                if e.to_string().contains("insufficient storage") {
                    anyhow::Error::new(NoStorage(format!(
                        "creating stream {name}: {e}: JetStream reserves a stream's max_bytes ({max_bytes} bytes, the topology's [mesh] retention.max_bytes) on each of its {replicas} server(s) when it creates it, and a node keeps one stream per origin of its view: lower retention.max_bytes, or give the server's JetStream store more disk"
                    )))
                } else {
                    anyhow::Error::new(e)
                }
            })?;
        }
    }
    Ok(())
}

/// JetStream refused a stream for want of storage to reserve: waiting
/// does not help, the topology's retention or the disk must change.
#[derive(Debug)]
pub struct NoStorage(pub String);

impl std::fmt::Display for NoStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoStorage {}
