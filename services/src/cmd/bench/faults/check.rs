//! The campaign's invariants, checked from outside the processes once a
//! schedule has been healed and the tree has converged.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;

use super::proxy::Write;
use super::Acked;

/// Writes that interleave: a connection that writes again after another
/// connection wrote (each activation writes over a connection of its own,
/// so two connections alternating is two activations writing at once).
/// Empty when every connection's writes form one unbroken run.
pub fn interleavings(writes: &[Write]) -> Vec<String> {
    let mut runs: Vec<(u64, Option<u32>)> = Vec::new();
    let mut out = Vec::new();
    for w in writes {
        if runs.last().map(|r| r.0) == Some(w.conn) {
            continue;
        }
        if let Some(earlier) = runs.iter().find(|r| r.0 == w.conn) {
            let last = runs.last().copied().unwrap_or((0, None));
            out.push(format!(
                "plc: connection {} (pid {:?}) wrote again at {} µs after connection {} (pid {:?}) had written: two writers",
                w.conn, earlier.1, w.ts_us, last.0, last.1
            ));
        }
        runs.push((w.conn, w.pid));
    }
    out
}

/// Every message of `origin`'s stream in `js`, in order: (seq, bytes).
pub async fn read_stream(
    js: &jetstream::Context,
    origin: &str,
) -> anyhow::Result<Vec<(u64, bytes::Bytes)>> {
    let mut stream = js
        .get_stream(events::subjects::stream_name(origin))
        .await
        .with_context(|| format!("stream of {origin}"))?;
    let state = stream.info().await?.state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return Ok(out);
    }
    crate::pull::read_range(
        &stream,
        state.first_sequence,
        state.last_sequence,
        Duration::from_secs(30),
        |seq, m| out.push((seq, m.payload.clone())),
    )
    .await
    .with_context(|| format!("reading {origin}"))?;
    Ok(out)
}

/// Compares what the root holds with what the origins hold, checks that
/// every acknowledged command's event is there, and audits the root.
pub async fn histories(
    root: &async_nats::Client,
    topo: &topology::Topology,
    acked: &[Acked],
    manifest: &events::audit::Manifest,
    audit: events::audit::AuditConfig,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let at_root = jetstream::with_domain(root.clone(), "root");
    let mut copies: BTreeMap<String, BTreeMap<u64, bytes::Bytes>> = BTreeMap::new();
    for n in &topo.nodes {
        let theirs = jetstream::with_domain(root.clone(), events::subjects::domain(&n.id));
        let copy = read_stream(&at_root, &n.id).await?;
        // The origin keeps publishing: compare the root's copy with the
        // same stretch of the origin's own stream, which must be at least
        // as long (it converged before this read).
        let own = read_stream(&theirs, &n.id).await?;
        if own.len() < copy.len() {
            out.push(format!(
                "{}: the root holds {} messages, the origin only {}",
                n.id,
                copy.len(),
                own.len()
            ));
        }
        if let Some(i) = own.iter().zip(copy.iter()).position(|(a, b)| a != b) {
            out.push(format!(
                "{}: the root's copy differs from the origin's stream at seq {} (origin seq {})",
                n.id, copy[i].0, own[i].0
            ));
        }
        if let Some(w) = copy.windows(2).find(|w| w[1].0 != w[0].0 + 1) {
            out.push(format!(
                "{}: the root's copy jumps from {} to {}",
                n.id, w[0].0, w[1].0
            ));
        }
        copies.insert(n.id.clone(), copy.into_iter().collect());
    }
    for a in acked {
        let held = copies.get(&a.origin).and_then(|c| c.get(&a.seq));
        let ok = held
            .and_then(|b| events::decode(b).ok())
            .is_some_and(|ev| match ev.body {
                events::Body::Forced(f) => f.point == a.point && f.value.as_f64() == Some(a.value),
                _ => false,
            });
        if !ok {
            out.push(format!(
                "{}: the acknowledged force of {} = {} (seq {}) is not at the root",
                a.origin, a.point, a.value, a.seq
            ));
        }
    }
    for n in &topo.nodes {
        let (report, _) =
            crate::cmd::audit::audit_origin(&at_root, &n.id, manifest, audit, false).await?;
        for v in report.violations {
            out.push(format!(
                "audit {} {} seq {}: {}",
                v.kind, v.origin, v.seq, v.detail
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(conn: u64, ts_us: u64) -> Write {
        Write {
            ts_us,
            conn,
            pid: Some(conn as u32 + 100),
            fc: 6,
            address: 900,
        }
    }

    #[test]
    fn one_run_per_connection_is_clean_and_alternation_is_found() {
        assert!(interleavings(&[w(1, 1), w(1, 2), w(2, 3), w(2, 4), w(3, 5)]).is_empty());
        let v = interleavings(&[w(1, 1), w(2, 2), w(1, 3)]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("connection 1"), "{v:?}");
    }
}
