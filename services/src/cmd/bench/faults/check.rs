//! The campaign's invariants, checked from outside the processes once a
//! schedule has been healed and the tree has converged.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;

use super::proxy::Write;
use super::Acked;

/// When each epoch of an origin began: (epoch, member, `ts` of its first
/// event), from the origin's history.
pub fn epoch_starts(history: &[(u64, bytes::Bytes)]) -> Vec<(u64, String, u64)> {
    let mut out: Vec<(u64, String, u64)> = Vec::new();
    for (_, bytes) in history {
        let Ok(ev) = events::decode(bytes) else {
            continue;
        };
        if out.last().is_none_or(|(e, _, _)| ev.epoch > *e) {
            out.push((ev.epoch, ev.member.clone(), ev.ts));
        }
    }
    out
}

/// Writes of two members that interleave at the PLC. The writes, in the
/// order the PLC got them, are grouped into runs of one member (the
/// writing process, by `writers`: pid → member); each time the writer
/// changes, the new writer must have been granted the role (an epoch of
/// it begins) after the previous writer's last write and no later than its
/// own first write. Otherwise the two wrote at once: the new one before
/// its grant, or the old one after it (a write of a lease that had ended).
pub fn interleavings(
    writes: &[Write],
    writers: &BTreeMap<u32, String>,
    epochs: &[(u64, String, u64)],
) -> Vec<String> {
    let who = |w: &Write| {
        w.pid
            .and_then(|p| writers.get(&p).cloned())
            .unwrap_or_else(|| match w.pid {
                Some(p) => format!("pid {p} (not a member of the pair)"),
                None => format!(
                    "connection {} (its process had exited when the proxy looked)",
                    w.conn
                ),
            })
    };
    // (member, first ts, last ts)
    let mut runs: Vec<(String, u64, u64)> = Vec::new();
    for w in writes {
        let m = who(w);
        match runs.last_mut() {
            Some(r) if r.0 == m => r.2 = w.ts_us,
            _ => runs.push((m, w.ts_us, w.ts_us)),
        }
    }
    let mut out = Vec::new();
    for pair in runs.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        let granted = epochs
            .iter()
            .any(|(_, m, ts)| *m == next.0 && *ts > prev.2 && *ts <= next.1);
        if !granted {
            out.push(format!(
                "plc: {} wrote from {} µs while {} had written until {} µs, with no grant of {} in between: two writers",
                next.0, next.1, prev.0, prev.2, next.0
            ));
        }
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
        js,
        &events::subjects::stream_name(origin),
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

    fn writers() -> BTreeMap<u32, String> {
        BTreeMap::from([
            (101, "a".to_owned()),
            (102, "b".to_owned()),
            (103, "a".to_owned()),
        ])
    }

    #[test]
    fn a_writer_change_needs_a_grant_in_between() {
        // a writes (pid 101), b granted at 25 writes, a (restarted as pid
        // 103) granted at 45 writes again: clean. Connections of one
        // member (a reset mid-activation) are one writer.
        let epochs = vec![
            (1, "a".to_owned(), 0),
            (2, "b".to_owned(), 25),
            (3, "a".to_owned(), 45),
        ];
        let clean = [w(1, 10), w(1, 20), w(2, 30), w(2, 40), w(3, 50)];
        assert!(interleavings(&clean, &writers(), &epochs).is_empty());
        // a's write arrives after b was granted and wrote: two writers.
        let late = [w(1, 10), w(2, 30), w(1, 35)];
        let v = interleavings(&late, &writers(), &epochs);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].starts_with("plc: a wrote from 35"), "{v:?}");
        // b writes before its grant.
        let early = [w(1, 10), w(2, 20)];
        assert_eq!(interleavings(&early, &writers(), &epochs).len(), 1);
    }
}
