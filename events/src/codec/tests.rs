//! The codec's tests: golden bytes (the contract of
//! `docs/wire-format.md`), round trips, and every way a message can be
//! wrong.

use super::{decode, encode, Cbor, DecodeError};
use crate::wire::{
    hash, BirthBody, Body, CheckpointBody, Event, ForcedBody, InvalidEvent, PointInfo, Quality,
    ResourceBody, ResourceState, Role, RoleBody, UnforcedBody, Value, ValueBody, MAX_EVENT_BYTES,
    WIRE_VERSION, ZERO_HASH,
};

/// The golden event of `docs/wire-format.md`.
pub(super) fn golden() -> Event {
    let mut prev = ZERO_HASH;
    for (i, b) in prev.iter_mut().enumerate() {
        *b = i as u8;
    }
    Event {
        v: WIRE_VERSION,
        origin: "root.south".into(),
        member: "a".into(),
        epoch: 3,
        seq: 42,
        ts: 1_700_000_000_123_456,
        prev,
        body: Body::Value(ValueBody {
            point: "temp1".into(),
            value: Value::Float(21.5),
            quality: Quality::Good,
        }),
    }
}

const GOLDEN_HEX: &str = concat!(
    "a8617601666f726967696e6a726f6f742e736f757468666d656d626572616165",
    "65706f63680363736571182a6274731b00060a24182022406470726576582000",
    "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f64",
    "626f6479a16576616c7565a365706f696e746574656d70316576616c7565fb40",
    "35800000000000677175616c69747964676f6f64",
);

#[test]
fn golden_bytes_never_change() {
    let bytes = encode(&golden());
    assert_eq!(hex::encode(&bytes), GOLDEN_HEX);
    assert_eq!(decode(&bytes).unwrap(), golden());
    assert_eq!(
        hex::encode(hash(&bytes)),
        "60d86b393c90d4b6af6d1da674ecadfe9c9fdd5c42a8ba048731af1bc0f014b9",
        "the hash the next event's prev would carry"
    );
}

/// A second golden pinning arrays, null, negative ints and booleans.
#[test]
fn golden_birth_and_forced() {
    let birth = Event {
        body: Body::Birth(BirthBody {
            member: "b".into(),
            points: vec![
                PointInfo {
                    name: "temp1".into(),
                    unit: Some("C".into()),
                    writable: false,
                },
                PointInfo {
                    name: "pump".into(),
                    unit: None,
                    writable: true,
                },
            ],
        }),
        ..golden()
    };
    let body_hex = |e: &Event| {
        let h = hex::encode(encode(e));
        let at = h.find("64626f6479").unwrap(); // "body"
        h[at..].to_owned()
    };
    assert_eq!(
        body_hex(&birth),
        concat!(
            "64626f6479a1656269727468a2666d656d626572616266706f696e747382a364",
            "6e616d656574656d703164756e69746143687772697461626c65f4a3646e616d",
            "656470756d7064756e6974f6687772697461626c65f5",
        )
    );
    let forced = Event {
        body: Body::Forced(ForcedBody {
            point: "pump".into(),
            value: Value::Int(-300),
            by: "".into(),
        }),
        ..golden()
    };
    assert_eq!(
        body_hex(&forced),
        "64626f6479a166666f72636564a365706f696e746470756d706576616c756539012b62627960"
    );
}

/// The event after the golden one: a resource coming into service,
/// chained to it (the resource example of `docs/wire-format.md`).
pub(super) fn golden_resource() -> Event {
    Event {
        seq: 43,
        ts: 1_700_000_000_223_456,
        prev: hash(&encode(&golden())),
        body: Body::Resource(ResourceBody {
            member: "a".into(),
            resource: "plc_poller".into(),
            state: ResourceState::InService,
            reason: "activation".into(),
        }),
        ..golden()
    }
}

const GOLDEN_RESOURCE_HEX: &str = concat!(
    "a8617601666f726967696e6a726f6f742e736f757468666d656d626572616165",
    "65706f63680363736571182b6274731b00060a241821a8e06470726576582060",
    "d86b393c90d4b6af6d1da674ecadfe9c9fdd5c42a8ba048731af1bc0f014b964",
    "626f6479a1687265736f75726365a4666d656d6265726161687265736f757263",
    "656a706c635f706f6c6c65726573746174656a696e5f73657276696365667265",
    "61736f6e6a61637469766174696f6e",
);

#[test]
fn golden_resource_bytes_never_change() {
    let event = golden_resource();
    let bytes = encode(&event);
    assert_eq!(bytes.len(), 175);
    assert_eq!(hex::encode(&bytes), GOLDEN_RESOURCE_HEX);
    assert_eq!(decode(&bytes).unwrap(), event);
    assert_eq!(
        hex::encode(hash(&bytes)),
        "7f6e2d3cfd320b58f3b04f8a8c31b20e0579e673b597917f7f51376c05aac260",
        "the hash the next event's prev would carry"
    );
    assert_eq!(event.subject(), "canopy.ev.root.south._resource");
    // The other two states, body only.
    for (state, hex_state) in [
        (ResourceState::PendingOos, "6b70656e64696e675f6f6f73"),
        (ResourceState::Oos, "636f6f73"),
    ] {
        let e = Event {
            body: Body::Resource(ResourceBody {
                state,
                ..match golden_resource().body {
                    Body::Resource(b) => b,
                    _ => unreachable!(),
                }
            }),
            ..golden_resource()
        };
        let want = GOLDEN_RESOURCE_HEX.replace("6a696e5f73657276696365", hex_state);
        assert_eq!(hex::encode(encode(&e)), want, "{state}");
        assert_eq!(decode(&hex::decode(&want).unwrap()).unwrap(), e);
    }
}

/// The event after the resource one: member `a` signs it (seq 43) as
/// the chain head. The checkpoint example of `docs/wire-format.md`; the
/// key is `fixed_user(1)`'s (seed 32 × 0x01).
pub(super) fn golden_checkpoint() -> Event {
    let head = hash(&encode(&golden_resource()));
    let kp = crate::checkpoint::tests::fixed_user(1);
    let body = crate::sign_checkpoint(&kp, "root.south", "a", 3, 43, head).unwrap();
    Event {
        seq: 44,
        ts: 1_700_000_000_323_456,
        prev: head,
        body: Body::Checkpoint(body),
        ..golden()
    }
}

const GOLDEN_CHECKPOINT_HEX: &str = concat!(
    "a8617601666f726967696e6a726f6f742e736f757468666d656d626572616165",
    "65706f63680363736571182c6274731b00060a2418232f80647072657658207f",
    "6e2d3cfd320b58f3b04f8a8c31b20e0579e673b597917f7f51376c05aac26064",
    "626f6479a16a636865636b706f696e74a5666d656d626572616168686561645f",
    "736571182b646865616458207f6e2d3cfd320b58f3b04f8a8c31b20e0579e673",
    "b597917f7f51376c05aac260636b6579783855434649525936354f5145374446",
    "50354b4c4e53325046324c565a4d555a594a58344f5a49455133364e32495141",
    "4e55423558565a34354c63736967584074150c83a13d7e7a39fb8a86757865e1",
    "d836422975ef911403ca2dfe9a46d9658dd9e22e5cd1348fa61d55ecf291922a",
    "71f79b754b5e2e95f0c49dbd16d40e00",
);

/// The key of `fixed_user(1)`, and its signature in the golden
/// checkpoint.
const GOLDEN_KEY: &str = "UCFIRY65OQE7DFP5KLNS2PF2LVZMUZYJX4OZIEQ36N2IQANUB5XVZ45L";
const GOLDEN_SIG: &str = concat!(
    "74150c83a13d7e7a39fb8a86757865e1d836422975ef911403ca2dfe9a46d965",
    "8dd9e22e5cd1348fa61d55ecf291922a71f79b754b5e2e95f0c49dbd16d40e00",
);

#[test]
fn golden_checkpoint_bytes_never_change() {
    let event = golden_checkpoint();
    let bytes = encode(&event);
    assert_eq!(bytes.len(), 304);
    assert_eq!(hex::encode(&bytes), GOLDEN_CHECKPOINT_HEX);
    assert_eq!(decode(&bytes).unwrap(), event);
    assert_eq!(
        hex::encode(hash(&bytes)),
        "0071cbb4fa057eb1abed03325d926a1ad9ac840bd573ff2b69110eab1db24e82",
        "the hash the next event's prev would carry"
    );
    assert_eq!(event.subject(), "canopy.ev.root.south._checkpoint");
    assert_eq!(event.body.tag(), "checkpoint");
    assert_eq!(event.body.point(), None);
    let Body::Checkpoint(b) = &event.body else {
        unreachable!()
    };
    assert_eq!(b.key, GOLDEN_KEY);
    assert_eq!(hex::encode(b.sig), GOLDEN_SIG);
    crate::verify_checkpoint("root.south", 3, b).unwrap();
    // The message signed, as the doc spells it.
    let msg = crate::checkpoint_message("root.south", "a", 3, 43, &b.head);
    assert_eq!(
        hex::encode(&msg),
        concat!(
            "63616e6f70792d636865636b706f696e742d763100",
            "726f6f742e736f75746800",
            "6100",
            "0000000000000003",
            "000000000000002b",
            "7f6e2d3cfd320b58f3b04f8a8c31b20e0579e673b597917f7f51376c05aac260",
        )
    );
    let json = serde_json::to_value(&event.body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"checkpoint": {
            "member": "a", "head_seq": 43,
            "head": "7f6e2d3cfd320b58f3b04f8a8c31b20e0579e673b597917f7f51376c05aac260",
            "key": GOLDEN_KEY, "sig": GOLDEN_SIG,
        }})
    );
}

/// The checkpoint body, held to the same rules as the others.
#[test]
fn checkpoint_body_strictness() {
    fn cp(item: &mut Cbor) -> &mut Cbor {
        get(get(item, "body"), "checkpoint")
    }
    let broken = |f: &dyn Fn(&mut Cbor)| {
        let mut item: Cbor =
            ciborium::de::from_reader(encode(&golden_checkpoint()).as_slice()).unwrap();
        f(&mut item);
        let bytes = to_bytes(&item);
        let new = decode(&bytes);
        // The old decoder (the oracle) agrees on every case here.
        assert_eq!(super::oracle::decode(&bytes), new);
        new
    };
    assert_eq!(broken(&|_| ()).unwrap(), golden_checkpoint());
    for field in ["member", "head_seq", "head", "key", "sig"] {
        assert_eq!(
            broken(&|m| entries(cp(m)).retain(|(k, _)| k.as_text() != Some(field))),
            Err(DecodeError::MissingField {
                field: format!("body.checkpoint.{field}")
            })
        );
        assert!(matches!(
            broken(&|m| *get(cp(m), field) = Cbor::Array(vec![])),
            Err(DecodeError::WrongType { field: f, .. }) if f == format!("body.checkpoint.{field}")
        ));
        assert_eq!(
            broken(&|m| entries(cp(m)).push((Cbor::Text(field.into()), Cbor::Null))),
            Err(DecodeError::DuplicateKey {
                field: format!("body.checkpoint.{field}")
            })
        );
    }
    // Bytes are bytes: a hex text is no head, no signature.
    for field in ["head", "sig"] {
        assert!(matches!(
            broken(&|m| *get(cp(m), field) = Cbor::Text("00".into())),
            Err(DecodeError::WrongType { field: f, expected: "a byte string" })
                if f == format!("body.checkpoint.{field}")
        ));
    }
    for (field, expected) in [("head", 32usize), ("sig", 64)] {
        for len in [0, expected - 1, expected + 1, 2 * expected] {
            assert_eq!(
                broken(&|m| *get(cp(m), field) = Cbor::Bytes(vec![7; len])),
                Err(DecodeError::BadLength {
                    field: format!("body.checkpoint.{field}"),
                    expected,
                    len
                })
            );
        }
    }
    assert_eq!(
        broken(&|m| *get(cp(m), "head_seq") = Cbor::Integer((-1).into())),
        Err(DecodeError::OutOfRange {
            field: "body.checkpoint.head_seq".into()
        })
    );
    // Names and keys.
    assert_eq!(
        broken(&|m| *get(cp(m), "member") = Cbor::Text("A".into())),
        Err(DecodeError::Invalid(InvalidEvent::BadName {
            field: "body.checkpoint.member".into(),
            value: "A".into()
        }))
    );
    let account = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::Account, [1; 32])
        .unwrap()
        .public_key();
    let server = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::Server, [1; 32])
        .unwrap()
        .public_key();
    let seed = crate::checkpoint::tests::fixed_user(1).seed().unwrap();
    let mut bad_crc = GOLDEN_KEY.to_owned();
    bad_crc.replace_range(55.., "A");
    let mut flipped = GOLDEN_KEY.to_owned();
    flipped.replace_range(10..11, "B");
    for bad in [
        String::new(),
        "U".into(),
        GOLDEN_KEY.to_lowercase(),
        format!("{GOLDEN_KEY}A"),
        GOLDEN_KEY[..55].to_owned(),
        format!(" {}", &GOLDEN_KEY[1..]),
        bad_crc,
        flipped,
        account,
        server,
        seed,
    ] {
        assert_eq!(
            broken(&|m| *get(cp(m), "key") = Cbor::Text(bad.clone())),
            Err(DecodeError::Invalid(InvalidEvent::BadKey {
                field: "body.checkpoint.key".into(),
                value: bad.clone()
            })),
            "{bad}"
        );
    }
    // Another valid user key decodes (the signature is the audit's
    // business, not the decoder's).
    let other = crate::checkpoint::tests::fixed_user(2).public_key();
    assert!(matches!(
        broken(&|m| *get(cp(m), "key") = Cbor::Text(other.clone())),
        Ok(Event { body: Body::Checkpoint(CheckpointBody { key, .. }), .. }) if key == other
    ));
    // Unknown keys are ignored, keys come in any order.
    assert_eq!(
        broken(&|m| {
            entries(cp(m)).push((Cbor::Text("alg".into()), Cbor::Text("ed25519".into())));
            entries(cp(m)).reverse();
        })
        .unwrap(),
        golden_checkpoint()
    );
    // Only as the sole entry of a body, under its exact tag.
    assert_eq!(
        broken(&|m| {
            let body = get(m, "body");
            let inner = get(body, "checkpoint").clone();
            entries(body).push((Cbor::Text("role".into()), inner));
        }),
        Err(DecodeError::BadBody { entries: 2 })
    );
    assert_eq!(
        broken(&|m| {
            let body = get(m, "body");
            let inner = get(body, "checkpoint").clone();
            *body = Cbor::Map(vec![(Cbor::Text("Checkpoint".into()), inner)]);
        }),
        Err(DecodeError::UnknownBodyTag {
            tag: "Checkpoint".into()
        })
    );
    // The writer's own check is the reader's.
    let mut bad = golden_checkpoint();
    if let Body::Checkpoint(b) = &mut bad.body {
        b.key = "UABC".into();
    }
    assert!(matches!(bad.validate(), Err(InvalidEvent::BadKey { .. })));
    assert!(matches!(
        crate::Chain::new("root.south", "a", 1).seal(0, bad.body),
        Err(crate::SealError::Invalid(InvalidEvent::BadKey { .. }))
    ));
}

pub(super) fn every_body() -> Vec<Body> {
    let mut bodies = Vec::new();
    for value in [
        Value::Null,
        Value::Bool(true),
        Value::Bool(false),
        Value::Int(0),
        Value::Int(-1),
        Value::Int(i64::MIN),
        Value::Int(i64::MAX),
        Value::Float(0.0),
        Value::Float(-0.5),
        Value::Float(3.0),
        Value::Float(f64::MAX),
        Value::Float(f64::INFINITY),
    ] {
        for quality in [Quality::Good, Quality::Bad, Quality::Uncertain] {
            bodies.push(Body::Value(ValueBody {
                point: "p1".into(),
                value: value.clone(),
                quality,
            }));
        }
        bodies.push(Body::Forced(ForcedBody {
            point: "p1".into(),
            value,
            by: "operator jo".into(),
        }));
    }
    bodies.push(Body::Unforced(UnforcedBody {
        point: "p1".into(),
        by: String::new(),
    }));
    bodies.push(golden_command().body);
    bodies.push(Body::Command(crate::CommandBody {
        op: crate::CommandOp::Write,
        point: "p1".into(),
        value: Value::Int(3),
        by: "claimed".into(),
        key: String::new(),
        sig: vec![],
        signed: vec![],
        outcome: "failed: PLC unreachable".into(),
    }));
    for role in [Role::Active, Role::Standby] {
        bodies.push(Body::Role(RoleBody {
            member: "b".into(),
            role,
            reason: "field health: plc link down".into(),
        }));
    }
    bodies.push(Body::Birth(BirthBody {
        member: "a".into(),
        points: vec![],
    }));
    bodies.push(Body::Birth(BirthBody {
        member: "a".into(),
        points: vec![
            PointInfo {
                name: "t".into(),
                unit: Some("°C".into()),
                writable: false,
            },
            PointInfo {
                name: "u".into(),
                unit: None,
                writable: true,
            },
        ],
    }));
    for (state, resource, reason) in [
        (ResourceState::InService, "plc_poller", "activation"),
        (ResourceState::PendingOos, "publisher", ""),
        (
            ResourceState::Oos,
            "hook_2",
            "dépendance: plc_poller hors service",
        ),
    ] {
        bodies.push(Body::Resource(ResourceBody {
            member: "b".into(),
            resource: resource.into(),
            state,
            reason: reason.into(),
        }));
    }
    for (seed, member, head_seq) in [(1u8, "a", 1u64), (2, "b_2", u64::MAX)] {
        let kp = crate::checkpoint::tests::fixed_user(seed);
        let head = [seed.wrapping_mul(37); 32];
        let body = crate::sign_checkpoint(&kp, "root.south", member, 9, head_seq, head);
        bodies.push(Body::Checkpoint(body.unwrap()));
    }
    bodies
}

#[test]
fn round_trip_every_body_and_value() {
    for body in every_body() {
        let event = Event {
            body,
            epoch: u64::MAX,
            ts: 0,
            seq: 1,
            ..golden()
        };
        let bytes = encode(&event);
        assert_eq!(decode(&bytes).unwrap(), event, "{event:?}");
    }
    // NaN is not equal to itself: check it separately.
    let nan = Event {
        body: Body::Value(ValueBody {
            point: "p".into(),
            value: Value::Float(f64::NAN),
            quality: Quality::Bad,
        }),
        ..golden()
    };
    let back = decode(&encode(&nan)).unwrap();
    assert!(matches!(
        back.body,
        Body::Value(ValueBody { value: Value::Float(f), .. }) if f.is_nan()
    ));
}

#[test]
fn ints_and_floats_stay_apart() {
    for (value, kind) in [(Value::Int(3), 0x03u8), (Value::Float(3.0), 0xfb)] {
        let e = Event {
            body: Body::Value(ValueBody {
                point: "p".into(),
                value: value.clone(),
                quality: Quality::Good,
            }),
            ..golden()
        };
        let bytes = encode(&e);
        assert!(bytes.contains(&kind));
        assert_eq!(decode(&bytes).unwrap(), e);
    }
}

// ------------------------------------------------ malformed input

/// The golden event as a generic CBOR value, to break on purpose.
fn generic() -> Cbor {
    ciborium::de::from_reader(encode(&golden()).as_slice()).unwrap()
}

fn to_bytes(item: &Cbor) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(item, &mut out).unwrap();
    out
}

fn entries(item: &mut Cbor) -> &mut Vec<(Cbor, Cbor)> {
    match item {
        Cbor::Map(m) => m,
        _ => panic!("not a map"),
    }
}

fn get<'a>(item: &'a mut Cbor, key: &str) -> &'a mut Cbor {
    entries(item)
        .iter_mut()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
        .unwrap()
}

/// Decode the golden event after `f` broke it.
fn broken(f: impl FnOnce(&mut Cbor)) -> DecodeError {
    let mut item = generic();
    f(&mut item);
    decode(&to_bytes(&item)).unwrap_err()
}

fn payload(item: &mut Cbor) -> &mut Cbor {
    get(get(item, "body"), "value")
}

#[test]
fn rejects_wrong_version() {
    for v in [0u8, 2, 255] {
        let mut e = golden();
        e.v = v;
        assert_eq!(
            decode(&encode(&e)),
            Err(DecodeError::Invalid(InvalidEvent::UnsupportedVersion {
                got: u64::from(v)
            }))
        );
    }
    // A future layout with other fields still says "version".
    let e = broken(|m| {
        *get(m, "v") = Cbor::Integer(2.into());
        entries(m).retain(|(k, _)| k.as_text() == Some("v"));
    });
    assert_eq!(
        e,
        DecodeError::Invalid(InvalidEvent::UnsupportedVersion { got: 2 })
    );
    assert_eq!(
        broken(|m| *get(m, "v") = Cbor::Integer(1000.into())),
        DecodeError::Invalid(InvalidEvent::UnsupportedVersion { got: 1000 })
    );
    assert!(matches!(
        broken(|m| *get(m, "v") = Cbor::Text("1".into())),
        DecodeError::WrongType { field, .. } if field == "v"
    ));
}

#[test]
fn rejects_missing_fields() {
    for field in [
        "v", "origin", "member", "epoch", "seq", "ts", "prev", "body",
    ] {
        let e = broken(|m| entries(m).retain(|(k, _)| k.as_text() != Some(field)));
        assert_eq!(
            e,
            DecodeError::MissingField {
                field: field.into()
            }
        );
    }
    for field in ["point", "value", "quality"] {
        let e = broken(|m| entries(payload(m)).retain(|(k, _)| k.as_text() != Some(field)));
        assert_eq!(
            e,
            DecodeError::MissingField {
                field: format!("body.value.{field}")
            }
        );
    }
}

#[test]
fn rejects_wrong_types() {
    type Breaker = Box<dyn FnOnce(&mut Cbor)>;
    let cases: Vec<(&str, Breaker)> = vec![
        (
            "origin",
            Box::new(|m| *get(m, "origin") = Cbor::Integer(1.into())),
        ),
        ("member", Box::new(|m| *get(m, "member") = Cbor::Null)),
        ("epoch", Box::new(|m| *get(m, "epoch") = Cbor::Float(3.0))),
        (
            "seq",
            Box::new(|m| *get(m, "seq") = Cbor::Text("42".into())),
        ),
        ("ts", Box::new(|m| *get(m, "ts") = Cbor::Bool(true))),
        (
            "prev",
            Box::new(|m| *get(m, "prev") = Cbor::Text("00".into())),
        ),
        (
            "body",
            Box::new(|m| *get(m, "body") = Cbor::Text("value".into())),
        ),
        (
            "body.value",
            Box::new(|m| *get(get(m, "body"), "value") = Cbor::Array(vec![])),
        ),
        (
            "body.value.value",
            Box::new(|m| *get(payload(m), "value") = Cbor::Text("21.5".into())),
        ),
        (
            "body.value.value",
            Box::new(|m| {
                *get(payload(m), "value") = Cbor::Tag(1, Box::new(Cbor::Integer(0.into())))
            }),
        ),
        (
            "body.value.quality",
            Box::new(|m| *get(payload(m), "quality") = Cbor::Integer(0.into())),
        ),
        ("event", Box::new(|m| *m = Cbor::Integer(1.into()))),
        (
            "event",
            Box::new(|m| entries(m).push((Cbor::Integer(9.into()), Cbor::Null))),
        ),
    ];
    for (want, f) in cases {
        match broken(f) {
            DecodeError::WrongType { field, .. } => assert_eq!(field, want),
            other => panic!("{want}: {other:?}"),
        }
    }
}

#[test]
fn rejects_out_of_range_integers() {
    assert_eq!(
        broken(|m| *get(m, "seq") = Cbor::Integer((-1).into())),
        DecodeError::OutOfRange {
            field: "seq".into()
        }
    );
    assert_eq!(
        broken(|m| *get(payload(m), "value") = Cbor::Integer(u64::MAX.into())),
        DecodeError::OutOfRange {
            field: "body.value.value".into()
        }
    );
    assert_eq!(
        broken(|m| *get(m, "seq") = Cbor::Integer(0.into())),
        DecodeError::Invalid(InvalidEvent::SeqZero)
    );
}

#[test]
fn rejects_bad_prev_length() {
    for len in [0usize, 31, 33] {
        assert_eq!(
            broken(|m| *get(m, "prev") = Cbor::Bytes(vec![0; len])),
            DecodeError::BadHashLength { len }
        );
    }
}

#[test]
fn rejects_trailing_garbage_truncation_and_junk() {
    let mut bytes = encode(&golden());
    bytes.push(0x00);
    assert_eq!(decode(&bytes), Err(DecodeError::TrailingBytes { count: 1 }));
    let bytes = encode(&golden());
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            matches!(decode(&bytes[..cut]), Err(DecodeError::Malformed { .. })),
            "cut at {cut}"
        );
    }
    assert!(matches!(
        decode(&[0xff]),
        Err(DecodeError::Malformed { .. })
    ));
    // Deep nesting is refused, not a stack overflow.
    let deep = [vec![0x81; 10_000], vec![0x00]].concat();
    assert!(matches!(decode(&deep), Err(DecodeError::Malformed { .. })));
    // A length claim far beyond the input allocates nothing and fails.
    assert!(matches!(
        decode(&[0x5b, 0x7f, 0, 0, 0, 0, 0, 0, 0]),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn rejects_oversized_input() {
    let bytes = vec![0u8; MAX_EVENT_BYTES + 1];
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::TooLarge {
            len: MAX_EVENT_BYTES + 1,
            max: MAX_EVENT_BYTES
        })
    );
}

#[test]
fn rejects_bad_bodies() {
    assert_eq!(
        broken(|m| {
            let body = get(m, "body");
            let inner = get(body, "value").clone();
            *body = Cbor::Map(vec![(Cbor::Text("setpoint".into()), inner)]);
        }),
        DecodeError::UnknownBodyTag {
            tag: "setpoint".into()
        }
    );
    assert_eq!(
        broken(|m| {
            let body = get(m, "body");
            let inner = get(body, "value").clone();
            entries(body).push((Cbor::Text("forced".into()), inner));
        }),
        DecodeError::BadBody { entries: 2 }
    );
    assert_eq!(
        broken(|m| *get(m, "body") = Cbor::Map(vec![])),
        DecodeError::BadBody { entries: 0 }
    );
    assert_eq!(
        broken(|m| *get(payload(m), "quality") = Cbor::Text("Good".into())),
        DecodeError::UnknownVariant {
            field: "body.value.quality".into(),
            got: "Good".into()
        }
    );
}

#[test]
fn rejects_empty_and_bad_names() {
    assert_eq!(
        broken(|m| *get(m, "origin") = Cbor::Text(String::new())),
        DecodeError::Invalid(InvalidEvent::EmptyName {
            field: "origin".into()
        })
    );
    assert_eq!(
        broken(|m| *get(payload(m), "point") = Cbor::Text(String::new())),
        DecodeError::Invalid(InvalidEvent::EmptyName {
            field: "body.value.point".into()
        })
    );
    for (field, bad) in [
        ("origin", "root..south"),
        ("origin", "root.*"),
        ("member", "A"),
    ] {
        assert!(matches!(
            broken(|m| *get(m, field) = Cbor::Text(bad.into())),
            DecodeError::Invalid(InvalidEvent::BadName { .. })
        ));
    }
    for bad in ["_role", "temp.1", "temp>", "Temp"] {
        assert!(matches!(
            broken(|m| *get(payload(m), "point") = Cbor::Text(bad.into())),
            DecodeError::Invalid(InvalidEvent::BadName { .. })
        ));
    }
    let mut dup = golden();
    dup.body = Body::Birth(BirthBody {
        member: "a".into(),
        points: vec![
            PointInfo {
                name: "x".into(),
                unit: None,
                writable: false,
            };
            2
        ],
    });
    assert_eq!(
        decode(&encode(&dup)),
        Err(DecodeError::Invalid(InvalidEvent::DuplicatePoint {
            name: "x".into()
        }))
    );
}

#[test]
fn rejects_duplicate_keys() {
    assert_eq!(
        broken(|m| entries(m).push((Cbor::Text("seq".into()), Cbor::Integer(43.into())))),
        DecodeError::DuplicateKey {
            field: "seq".into()
        }
    );
    assert_eq!(
        broken(|m| entries(payload(m)).push((Cbor::Text("value".into()), Cbor::Integer(1.into())))),
        DecodeError::DuplicateKey {
            field: "body.value.value".into()
        }
    );
}

#[test]
fn tolerates_unknown_keys_and_other_float_widths() {
    let mut item = generic();
    entries(&mut item).push((Cbor::Text("sig".into()), Cbor::Bytes(vec![1; 64])));
    entries(payload(&mut item)).push((Cbor::Text("raw".into()), Cbor::Integer(7.into())));
    assert_eq!(decode(&to_bytes(&item)).unwrap(), golden());
    // Other encoders may write 21.5 as a half (f9 4d60) or single float.
    let bytes = encode(&golden());
    let double = [0xfb, 0x40, 0x35, 0x80, 0, 0, 0, 0, 0];
    let at = bytes.windows(9).position(|w| w == double).unwrap();
    for short in [&[0xf9, 0x4d, 0x60][..], &[0xfa, 0x41, 0xac, 0, 0]] {
        let other = [&bytes[..at], short, &bytes[at + 9..]].concat();
        assert_eq!(decode(&other).unwrap(), golden());
    }
}

/// The resource body, held to the same rules as the others.
#[test]
fn resource_body_strictness() {
    fn resource(item: &mut Cbor) -> &mut Cbor {
        get(get(item, "body"), "resource")
    }
    let broken = |f: &dyn Fn(&mut Cbor)| {
        let mut item: Cbor =
            ciborium::de::from_reader(encode(&golden_resource()).as_slice()).unwrap();
        f(&mut item);
        decode(&to_bytes(&item))
    };
    assert_eq!(broken(&|_| ()).unwrap(), golden_resource());
    for field in ["member", "resource", "state", "reason"] {
        assert_eq!(
            broken(&|m| entries(resource(m)).retain(|(k, _)| k.as_text() != Some(field))),
            Err(DecodeError::MissingField {
                field: format!("body.resource.{field}")
            })
        );
        assert!(matches!(
            broken(&|m| *get(resource(m), field) = Cbor::Integer(1.into())),
            Err(DecodeError::WrongType { field: f, .. }) if f == format!("body.resource.{field}")
        ));
    }
    for bad in [
        "InService",
        "in-service",
        "in service",
        "",
        "out_of_service",
    ] {
        assert_eq!(
            broken(&|m| *get(resource(m), "state") = Cbor::Text(bad.into())),
            Err(DecodeError::UnknownVariant {
                field: "body.resource.state".into(),
                got: bad.into()
            })
        );
    }
    for field in ["member", "resource"] {
        assert_eq!(
            broken(&|m| *get(resource(m), field) = Cbor::Text(String::new())),
            Err(DecodeError::Invalid(InvalidEvent::EmptyName {
                field: format!("body.resource.{field}")
            }))
        );
        for bad in ["Plc", "plc.poller", "plc-poller", "plc poller", "*", ">"] {
            assert_eq!(
                broken(&|m| *get(resource(m), field) = Cbor::Text(bad.into())),
                Err(DecodeError::Invalid(InvalidEvent::BadName {
                    field: format!("body.resource.{field}"),
                    value: bad.into()
                }))
            );
        }
    }
    // A resource is a token, not a point name: a leading `_` is fine.
    let mut e = golden_resource();
    if let Body::Resource(b) = &mut e.body {
        b.resource = "_hooks".into();
    }
    assert_eq!(decode(&encode(&e)).unwrap(), e);
    // The writer's own check is the reader's.
    let mut bad = golden_resource();
    if let Body::Resource(b) = &mut bad.body {
        b.resource = "PLC".into();
    }
    assert!(matches!(
        bad.validate(),
        Err(InvalidEvent::BadName { field, .. }) if field == "body.resource.resource"
    ));
    assert_eq!(
        broken(
            &|m| entries(resource(m)).push((Cbor::Text("state".into()), Cbor::Text("oos".into())))
        ),
        Err(DecodeError::DuplicateKey {
            field: "body.resource.state".into()
        })
    );
    // Unknown extra keys are ignored, in the payload and the envelope.
    assert_eq!(
        broken(&|m| {
            entries(resource(m)).push((Cbor::Text("since".into()), Cbor::Integer(7.into())));
            entries(resource(m)).push((Cbor::Text("deps".into()), Cbor::Array(vec![])));
            entries(m).push((Cbor::Text("sig".into()), Cbor::Bytes(vec![0; 8])));
        })
        .unwrap(),
        golden_resource()
    );
    // Keys in any order.
    assert_eq!(
        broken(&|m| entries(resource(m)).reverse()).unwrap(),
        golden_resource()
    );
    // And only as the sole entry of a body.
    assert_eq!(
        broken(&|m| {
            let body = get(m, "body");
            let inner = get(body, "resource").clone();
            entries(body).push((Cbor::Text("role".into()), inner));
        }),
        Err(DecodeError::BadBody { entries: 2 })
    );
    assert_eq!(
        broken(&|m| {
            let body = get(m, "body");
            let inner = get(body, "resource").clone();
            *body = Cbor::Map(vec![(Cbor::Text("resources".into()), inner)]);
        }),
        Err(DecodeError::UnknownBodyTag {
            tag: "resources".into()
        })
    );
}

#[test]
fn body_accessors_and_json() {
    let e = golden();
    assert_eq!(e.body.point(), Some("temp1"));
    assert_eq!(e.body.subject_token(), "temp1");
    assert_eq!(e.subject(), "canopy.ev.root.south.temp1");
    let role = Body::Role(RoleBody {
        member: "a".into(),
        role: Role::Active,
        reason: String::new(),
    });
    assert_eq!(role.point(), None);
    assert_eq!(role.subject_token(), "_role");
    let birth = Body::Birth(BirthBody {
        member: "a".into(),
        points: vec![],
    });
    assert_eq!(birth.subject_token(), "_birth");
    let resource = golden_resource();
    assert_eq!(resource.body.tag(), "resource");
    assert_eq!(resource.body.point(), None);
    assert_eq!(resource.body.subject_token(), "_resource");
    assert_eq!(
        resource.body.subject_token(),
        crate::subjects::RESOURCE_TOKEN
    );
    assert_eq!(
        serde_json::to_value(&resource.body).unwrap(),
        serde_json::json!({"resource": {
            "member": "a", "resource": "plc_poller",
            "state": "in_service", "reason": "activation"
        }})
    );
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["prev"], hex::encode(e.prev));
    assert_eq!(json["body"]["value"]["value"], 21.5);
    assert_eq!(json["body"]["value"]["quality"], "good");
}

/// A signed force as the serving node records it (seq 45, after the golden
/// checkpoint); the client key is `fixed_user(3)`'s.
pub(super) fn golden_command() -> Event {
    let kp = crate::checkpoint::tests::fixed_user(3);
    let signed = br#"{"node":"root.south","op":"force","point":"temp1","value":21.5,"ts":1700000000400,"nonce":"000102030405060708090a0b0c0d0e0f"}"#.to_vec();
    let sig = crate::sign_command(&kp, &signed).unwrap().to_vec();
    Event {
        seq: 45,
        ts: 1_700_000_000_423_456,
        prev: hash(&encode(&golden_checkpoint())),
        body: Body::Command(crate::CommandBody {
            op: crate::CommandOp::Force,
            point: "temp1".into(),
            value: Value::Float(21.5),
            by: "ops_south".into(),
            key: kp.public_key(),
            sig,
            signed,
            outcome: "accepted".into(),
        }),
        ..golden()
    }
}

#[test]
fn golden_command_bytes_never_change() {
    let event = golden_command();
    let bytes = encode(&event);
    assert_eq!(hex::encode(&bytes), GOLDEN_COMMAND_HEX);
    assert_eq!(decode(&bytes).unwrap(), event);
    assert_eq!(event.subject(), "canopy.ev.root.south._command");
    assert_eq!(event.body.point(), Some("temp1"));
    let Body::Command(b) = &event.body else {
        unreachable!()
    };
    crate::verify_recorded("root.south", b).unwrap();
    // A key without a signature, or a signature without a key, is no event.
    for broken in [
        crate::CommandBody {
            sig: vec![],
            ..b.clone()
        },
        crate::CommandBody {
            key: String::new(),
            ..b.clone()
        },
        crate::CommandBody {
            sig: vec![0; 63],
            ..b.clone()
        },
    ] {
        let e = Event {
            body: Body::Command(broken),
            ..event.clone()
        };
        assert!(
            matches!(
                decode(&encode(&e)),
                Err(DecodeError::Invalid(InvalidEvent::BadSignature { .. }))
            ),
            "{e:?}"
        );
    }
}

const GOLDEN_COMMAND_HEX: &str = concat!(
    "a8617601666f726967696e6a726f6f742e736f757468666d656d626572616165",
    "65706f63680363736571182d6274731b00060a241824b6206470726576582000",
    "71cbb4fa057eb1abed03325d926a1ad9ac840bd573ff2b69110eab1db24e8264",
    "626f6479a167636f6d6d616e64a8626f7065666f72636565706f696e74657465",
    "6d70316576616c7565fb4035800000000000626279696f70735f736f75746863",
    "6b6579783855445755534b4747464449344652584b354542545245435a535651",
    "5353574a48484a4f4748364a57473341554d46464d5134333543325534637369",
    "6758400af30a22680d6f516cb2493a587af58fc9bc3ebc81e3a07fa73f13d07b",
    "f94b382b4a4c0168c33148fceb95b110bb43f264f28754341b518f43053a04fd",
    "ccae03667369676e6564587d7b226e6f6465223a22726f6f742e736f75746822",
    "2c226f70223a22666f726365222c22706f696e74223a2274656d7031222c2276",
    "616c7565223a32312e352c227473223a313730303030303030303430302c226e",
    "6f6e6365223a2230303031303230333034303530363037303830393061306230",
    "63306430653066227d676f7574636f6d65686163636570746564",
);
