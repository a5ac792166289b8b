//! `canopy bench codec`: CPU per event of the codec, the chain, the fold and
//! the checkpoint signature, on this machine, single-threaded, no I/O.

use std::time::Instant;

use serde_json::json;

use super::tree::{sample_body, LEAF};
use crate::cli::BenchCodecArgs;

/// Nanoseconds per event for seal (encode + hash),
/// decode, and verify + fold, on this machine, single-threaded.
pub fn run(a: BenchCodecArgs) -> anyhow::Result<u8> {
    let n = a.events.max(1);
    let mut chain = events::Chain::new(LEAF, "a", 1);
    let t = Instant::now();
    let mut sealed = Vec::with_capacity(n as usize);
    for i in 0..n {
        sealed.push(chain.seal(1_700_000_000_000_000 + i, sample_body(i))?.bytes);
    }
    let seal_ns = t.elapsed().as_nanos() as f64 / n as f64;
    let t = Instant::now();
    let mut decoded = Vec::with_capacity(n as usize);
    for b in &sealed {
        decoded.push(events::decode(b)?);
    }
    let decode_ns = t.elapsed().as_nanos() as f64 / n as f64;
    let t = Instant::now();
    for b in &sealed {
        std::hint::black_box(events::hash(b));
    }
    let hash_ns = t.elapsed().as_nanos() as f64 / n as f64;
    let t = Instant::now();
    let mut cursor = events::StreamCursor::new(LEAF);
    let mut state = events::State::default();
    for (i, b) in sealed.iter().enumerate() {
        if let events::Verdict::Valid { event, .. } = cursor.judge(i as u64 + 1, b) {
            state.apply(&event);
        }
    }
    let verify_fold_ns = t.elapsed().as_nanos() as f64 / n as f64;
    // A checkpoint: one ed25519 signature over the chain head, then sealed
    // like any event; spread over the default 1000 events per checkpoint.
    let key = events::nkeys::KeyPair::new_user();
    let signs = (n / 100).clamp(100, 2000);
    let t = Instant::now();
    for i in 0..signs {
        std::hint::black_box(events::sign_checkpoint(&key, LEAF, "a", 1, i, [7; 32])?);
    }
    let sign_ns = t.elapsed().as_nanos() as f64 / signs as f64;
    let per_event_ns = (sign_ns + seal_ns) / 1000.0;
    let size = sealed.first().map(Vec::len).unwrap_or(0);
    let out = json!({"events": n, "bytes": size, "seal_ns": seal_ns, "decode_ns": decode_ns,
                     "hash_ns": hash_ns, "decode_verify_fold_ns": verify_fold_ns,
                     "checkpoint_sign_ns": sign_ns, "checkpoint_ns_per_event_at_1000": per_event_ns});
    if a.json {
        println!("{out}");
    } else {
        println!("{n} value events of {size} bytes, one thread:");
        println!("  seal (CBOR encode + SHA-256 chain)  {seal_ns:>8.0} ns/event");
        println!("  decode (hand-written CBOR reader)  {decode_ns:>8.0} ns/event");
        println!("  SHA-256 of the bytes                {hash_ns:>8.0} ns/event");
        println!(
            "  decode + verify chain + fold        {verify_fold_ns:>8.0} ns/event ({:.0} events/s)",
            1e9 / verify_fold_ns
        );
        println!("  checkpoint signature (ed25519)      {sign_ns:>8.0} ns/checkpoint");
        println!("  checkpoints every 1000 events       {per_event_ns:>8.1} ns/event (signature + one more sealed event)");
    }
    Ok(0)
}
