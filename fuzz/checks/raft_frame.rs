//! The checks of the `raft_frame` target, shared with the corpus replay in
//! `raft/tests/fuzz_corpus.rs` (both include this file by path).
//!
//! A raft TCP frame is a big-endian `u32` length and that many bytes of
//! serde_json; `raft::network::tcp` decodes it with pure functions, the
//! ones the listener uses: [`decode_hello`] for the first frame of a
//! connection not yet authenticated (limit 4 KiB), [`decode_frame`] for
//! each `Rpc` after it (limit [`MAX_FRAME`]), and
//! [`decode_frame_as`] for the [`Reply`] a caller reads back.
//!
//! Each input goes in twice: as a whole frame (so the length prefix is
//! fuzzed: short, too large, not the body's length) and as the body of a
//! well-formed frame (so the fuzzer need not guess a matching prefix to
//! reach the JSON). Asserted: nothing panics; a frame is refused exactly
//! for what is wrong with its framing, and otherwise decodes exactly when
//! its body is the JSON of the type; every error renders; what decodes
//! encodes ([`encode_frame`]) to a frame that decodes to the same value
//! (compared by its JSON for the types without `PartialEq`: they hold no
//! floats), unless that frame is over the limit, which it then exceeds
//! by name.

use raft::network::tcp::{
    decode_frame, decode_frame_as, decode_hello, encode_frame, FrameError, MAX_FRAME,
};
use raft::network::Reply;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The hello's limit (private in `tcp.rs`: "limit 4 KiB").
const MAX_HELLO: usize = 4096;

/// Every check on one input; panics on a broken guarantee.
pub fn check(data: &[u8]) {
    let mut framed = Vec::with_capacity(4 + data.len());
    framed.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    framed.extend_from_slice(data);
    for frame in [data, &framed[..]] {
        let hello = decode_hello(frame);
        framing(frame, MAX_HELLO, &hello);
        if let Some((first, again)) = same_again(hello.ok(), MAX_HELLO, decode_hello) {
            assert_eq!(first, again, "a hello survives a round trip");
        }
        let rpc = decode_frame(frame);
        framing(frame, MAX_FRAME, &rpc);
        same_again(rpc.ok(), MAX_FRAME, decode_frame);
        let reply = decode_frame_as::<Reply>(frame, MAX_FRAME);
        framing(frame, MAX_FRAME, &reply);
        same_again(reply.ok(), MAX_FRAME, |f| {
            decode_frame_as::<Reply>(f, MAX_FRAME)
        });
    }
}

/// The verdict on `frame` is the one its framing calls for: the prefix
/// missing, over `max`, or not the body's length are refused as such, and
/// a well-framed body decodes iff it is the JSON of `T`.
fn framing<T: DeserializeOwned>(frame: &[u8], max: usize, got: &Result<T, FrameError>) {
    if let Err(e) = got {
        assert!(!e.to_string().is_empty());
    }
    let Some((prefix, body)) = frame.split_first_chunk::<4>() else {
        assert!(matches!(got, Err(FrameError::NoLength)), "{:?}", err(got));
        return;
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > max {
        assert!(
            matches!(got, Err(FrameError::TooLarge { len: l, max: m }) if *l == len && *m == max),
            "{:?}",
            err(got)
        );
    } else if len != body.len() {
        assert!(
            matches!(got, Err(FrameError::Length { announced, got: g })
                if *announced == len && *g == body.len()),
            "{:?}",
            err(got)
        );
    } else {
        let json = serde_json::from_slice::<T>(body);
        assert_eq!(json.is_ok(), got.is_ok(), "{:?}", err(got));
        assert!(got.is_ok() || matches!(got, Err(FrameError::Json(_))));
    }
}

fn err<T>(r: &Result<T, FrameError>) -> Option<String> {
    r.as_ref().err().map(ToString::to_string)
}

/// What decoded encodes to a frame that decodes to the same JSON; the two
/// values, for a closer comparison. Unless the frame is over `max` (the
/// encoder writes defaulted fields a sender may leave out, so a frame near
/// the limit can grow): then it is refused as too large.
fn same_again<T: Serialize>(
    value: Option<T>,
    max: usize,
    decode: impl Fn(&[u8]) -> Result<T, FrameError>,
) -> Option<(T, T)> {
    let value = value?;
    let frame = encode_frame(&value).expect("what decoded encodes");
    let again = match decode(&frame) {
        Ok(again) => again,
        Err(FrameError::TooLarge { .. }) if frame.len() - 4 > max => return None,
        Err(e) => panic!(
            "{} does not decode its own frame {:?}: {e}",
            std::any::type_name::<T>(),
            String::from_utf8_lossy(&frame)
        ),
    };
    let a = serde_json::to_string(&value).expect("serialises");
    let b = serde_json::to_string(&again).expect("serialises");
    assert_eq!(a, b, "a round trip changes nothing");
    Some((value, again))
}
