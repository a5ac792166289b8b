//! The checks of the `wire_json` target, shared with the corpus replay in
//! `services/tests/fuzz_corpus.rs` (both include this file by path).
//!
//! The same bytes go to every JSON type of `services::wire`: the requests
//! a node parses from the network (`StateRequest::parse`, `Command`) and
//! the replies a client parses (`StateReply`, `MemberInfo`, `Reply`).
//! Asserted: no parser panics; whatever parses serialises, and what it
//! serialises parses again (a reply a node writes is one a client reads);
//! for the types without floats, the second parse is the first (compared
//! by their JSON: these types have no `PartialEq`). Floats are left out of
//! that comparison: serde_json's default float parsing may differ from
//! its printing in the last bit, which is no guarantee of this crate.

use serde::de::DeserializeOwned;
use serde::Serialize;
use services::wire::{Command, MemberInfo, Reply, StateReply, StateRequest};

/// Every check on one input; panics on a broken guarantee.
pub fn check(data: &[u8]) {
    state_request(data);
    if let Some((first, again)) = round_trip::<Command>(data) {
        assert_eq!(first.op, again.op);
        assert_eq!(first.point, again.point);
        assert_eq!(first.by, again.by);
        assert_eq!(first.value.is_some(), again.value.is_some());
    }
    round_trip::<StateReply>(data);
    same_json(round_trip::<MemberInfo>(data));
    same_json(round_trip::<Reply>(data));
}

/// A blank body is the default request; anything else parses as JSON, and
/// a parsed request survives a round trip unchanged.
fn state_request(data: &[u8]) {
    let Ok(req) = StateRequest::parse(data) else {
        return;
    };
    if data.iter().all(u8::is_ascii_whitespace) {
        assert!(req.pattern.is_none() && !req.digest, "blank is the default");
    }
    let json = serde_json::to_vec(&req).expect("a request serialises");
    let again = StateRequest::parse(&json).expect("a serialised request parses");
    assert_eq!(again.pattern, req.pattern);
    assert_eq!(again.digest, req.digest);
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
