//! The checks of the `event_decode` target, shared with the corpus replay
//! in `events/tests/fuzz_corpus.rs` (both include this file by path, so
//! the fuzzer and the test suite assert the same things).
//!
//! What the codec guarantees, and so what is asserted:
//!
//! - `decode` never panics, on any bytes;
//! - it returns only valid events (`Event::validate`);
//! - the canonical bytes of a decoded event decode again to the same event
//!   (`decode(encode(ev)) == ev`), and are a fixed point
//!   (`encode(decode(encode(ev))) == encode(ev)`). Not that
//!   `encode(decode(x)) == x`: the decoder accepts other encodings (unknown
//!   keys, short floats, indefinite lengths) and the encoder writes one;
//! - except when the canonical bytes are over `MAX_EVENT_BYTES` (an input
//!   just under the limit whose floats were half or single width grows by
//!   re-encoding): then decoding them is refused as too large, as
//!   `Chain::seal` refuses to seal such an event;
//! - the chain verifier's first rule is the decoder: a fresh verifier of
//!   `root.a` at stream sequence 1 refuses what `decode` refuses, with the
//!   same error, and accepts a decoded event exactly when it is `root.a`'s
//!   seq 1 with a zero `prev` (a genesis), hashing the exact input bytes;
//! - every error renders, and an event renders as JSON.

use events::{
    decode, encode, hash, Body, Break, ChainVerifier, DecodeError, Event, ForcedBody, Link, Value,
    ValueBody, MAX_EVENT_BYTES, ZERO_HASH,
};

/// The origin the verifier checks against; the seeds are events of it.
pub const ORIGIN: &str = "root.a";

/// Every check on one input; panics on a broken guarantee.
pub fn check(data: &[u8]) {
    let decoded = decode(data);
    let verdict = ChainVerifier::new(ORIGIN).check(1, data);
    match &decoded {
        Err(err) => {
            assert!(!err.to_string().is_empty());
            match &verdict {
                Err(Break::Undecodable(e)) => assert_eq!(e, err, "the verifier decodes alike"),
                other => panic!("decode refused ({err}) but the verifier said {other:?}"),
            }
        }
        Ok(event) => {
            event.validate().expect("decode returns only valid events");
            round_trip(event);
            genesis_verdict(data, event, &verdict);
            serde_json::to_string(event).expect("an event renders as JSON");
        }
    }
}

/// `decode(encode(ev)) == ev`, compared by the canonical bytes (a NaN is
/// not equal to itself) and, NaN aside, as events.
fn round_trip(event: &Event) {
    let bytes = encode(event);
    if bytes.len() > MAX_EVENT_BYTES {
        assert!(
            matches!(decode(&bytes), Err(DecodeError::TooLarge { .. })),
            "canonical bytes over the limit are refused as too large"
        );
        return;
    }
    let again = decode(&bytes).expect("the canonical bytes of a decoded event decode");
    assert_eq!(encode(&again), bytes, "canonical bytes are a fixed point");
    if !has_nan(event) {
        assert_eq!(&again, event, "decode(encode(ev)) == ev");
    }
}

/// A fresh verifier accepts a decoded event iff it is the origin's genesis.
fn genesis_verdict(data: &[u8], event: &Event, verdict: &Result<events::Verified, Break>) {
    let genesis = event.origin == ORIGIN && event.seq == 1 && event.prev == ZERO_HASH;
    match verdict {
        Ok(v) => {
            assert!(genesis, "accepted a non-genesis: {event:?}");
            assert_eq!(v.link, Link::Genesis);
            assert_eq!(v.hash, hash(data), "the hash is of the exact input bytes");
            assert_eq!(
                encode(&v.event),
                encode(event),
                "the verifier's event is decode's"
            );
        }
        Err(b) => {
            assert!(!genesis, "refused a genesis: {b}");
            assert!(!matches!(b, Break::Undecodable(_)), "decode accepted it");
            assert!(!b.to_string().is_empty());
        }
    }
}

fn has_nan(event: &Event) -> bool {
    match &event.body {
        Body::Value(ValueBody { value, .. })
        | Body::Forced(ForcedBody { value, .. })
        | Body::Command(events::CommandBody { value, .. }) => {
            matches!(value, Value::Float(f) if f.is_nan())
        }
        _ => false,
    }
}
