//! The checks of the `raft_frame` target, shared with the corpus replay in
//! `raft/tests/fuzz_corpus.rs` (both include this file by path).
//!
//! A raft TCP frame is a big-endian `u32` length and that many bytes of
//! serde_json (`raft/src/network/tcp.rs`); the frame reader is private to
//! the async transport, so this target fuzzes what it parses a frame's
//! body into: the [`Hello`] of a connection not yet authenticated, then
//! [`Rpc`] requests and their [`Reply`]s. Asserted: no parse panics; what
//! parses serialises, parses again, and is then the same (compared by
//! its JSON for the types without `PartialEq`: there are no floats in
//! them).

use raft::network::{Reply, Rpc};
use raft::Hello;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Every check on one input; panics on a broken guarantee.
pub fn check(data: &[u8]) {
    if let Some((first, again)) = round_trip::<Hello>(data) {
        assert_eq!(first, again, "a hello survives a round trip");
    }
    same_json(round_trip::<Rpc>(data));
    same_json(round_trip::<Reply>(data));
}

/// Parse as `T`; if that succeeds, serialise and parse again.
fn round_trip<T: Serialize + DeserializeOwned>(data: &[u8]) -> Option<(T, T)> {
    let first: T = serde_json::from_slice(data).ok()?;
    let json = serde_json::to_vec(&first).expect("what parsed serialises");
    let again: T = match serde_json::from_slice(&json) {
        Ok(again) => again,
        Err(e) => panic!(
            "{} does not parse its own JSON {:?}: {e}",
            std::any::type_name::<T>(),
            String::from_utf8_lossy(&json)
        ),
    };
    Some((first, again))
}

fn same_json<T: Serialize>(pair: Option<(T, T)>) {
    if let Some((first, again)) = pair {
        let a = serde_json::to_string(&first).expect("serialises");
        let b = serde_json::to_string(&again).expect("serialises");
        assert_eq!(a, b, "a round trip changes nothing");
    }
}
