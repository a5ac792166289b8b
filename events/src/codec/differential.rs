//! The hand-written decoder against the one it replaced (`oracle.rs`, ciborium
//! into a generic value): the same event or the same error, on valid events
//! in every encoding the format allows and on thousands of broken ones.
//!
//! Where the two differ on purpose, the old decoder took what ciborium took
//! and `docs/wire-format.md` says otherwise; `doc_overrules_the_old_decoder`
//! pins each such case, and [`excused`] lets exactly those through the
//! differential test.

use super::tests::{every_body, golden};
use super::{decode, encode, oracle, Cbor, DecodeError};
use crate::wire::{BirthBody, Body, Event, PointInfo, Value, ValueBody};

type Decoded = Result<Event, DecodeError>;

/// Both decoders on the same bytes: (old, new).
fn both(bytes: &[u8]) -> (Decoded, Decoded) {
    (oracle::decode(bytes), decode(bytes))
}

/// What must agree: the event, compared by its canonical bytes (so a NaN
/// equals itself, payload included), or the error, except the reason of a
/// `Malformed` (it names the reader's own words).
fn canon(r: &Decoded) -> Result<Vec<u8>, DecodeError> {
    match r {
        Ok(e) => Ok(encode(e)),
        Err(DecodeError::Malformed { .. }) => Err(DecodeError::Malformed {
            reason: String::new(),
        }),
        Err(e) => Err(e.clone()),
    }
}

fn same(a: &Decoded, b: &Decoded) -> bool {
    canon(a) == canon(b)
}

/// Valid events: every body and value, and envelope extremes.
fn events() -> Vec<Event> {
    let mut out = vec![golden()];
    for (i, body) in every_body().into_iter().enumerate() {
        out.push(Event {
            body,
            seq: i as u64 + 1,
            epoch: 1 << (i % 64),
            ts: (i as u64) * 1_000_003,
            ..golden()
        });
    }
    out.push(Event {
        epoch: u64::MAX,
        seq: u64::MAX,
        ts: u64::MAX,
        origin: "r".into(),
        member: "b_2".into(),
        ..golden()
    });
    out
}

// ------------------------------------------------ other valid encodings

/// How to re-encode an event: each flag departs from canonical encoding
/// in a way `docs/wire-format.md` tells readers to accept.
#[derive(Debug, Clone, Copy, Default)]
struct Style {
    /// Indefinite-length arrays and maps; strings in two chunks around an
    /// empty one.
    indefinite: bool,
    /// Every head in its 8-byte form.
    wide: bool,
    /// Map keys in reverse order.
    reverse: bool,
    /// Floats as singles when exact.
    short_floats: bool,
    /// An unknown key in every map but the body, with a value of every
    /// kind of item.
    extra: bool,
}

const STYLES: [Style; 7] = [
    Style {
        indefinite: false,
        wide: false,
        reverse: false,
        short_floats: false,
        extra: false,
    },
    Style {
        indefinite: true,
        wide: false,
        reverse: false,
        short_floats: false,
        extra: false,
    },
    Style {
        indefinite: false,
        wide: true,
        reverse: false,
        short_floats: false,
        extra: false,
    },
    Style {
        indefinite: false,
        wide: false,
        reverse: true,
        short_floats: false,
        extra: false,
    },
    Style {
        indefinite: false,
        wide: false,
        reverse: false,
        short_floats: true,
        extra: false,
    },
    Style {
        indefinite: false,
        wide: false,
        reverse: false,
        short_floats: false,
        extra: true,
    },
    Style {
        indefinite: true,
        wide: true,
        reverse: true,
        short_floats: true,
        extra: true,
    },
];

/// The unknown key `Style::extra` adds...
const EXTRA_KEY: &[u8] = b"\x65x-ext";

/// ...and its value: every kind of item a skipped value may hold.
const EXTRA_VALUE: &str = concat!(
    "bf", // map, indefinite
    "6161",
    "9f", // "a": [_
    "01",
    "20",
    "4100",
    "6178", // 1, -1, h'00', "x",
    "f93e00",
    "fa3fc00000",
    "f6",
    "f7",
    "f4",             // 1.5 (half), 1.5 (single), null, undefined, false,
    "c11a00000001",   // 1(1): a tag
    "c24101",         // 2(h'01'): a bignum
    "a16080",         // {"": []}
    "d9d9f783000102", // 55799([0, 1, 2]): a two-byte tag head
    "ff",             // ]
    "6162",
    "5f",
    "4101",
    "40",
    "ff", // "b": (_ h'01', h'')
    "6163",
    "7f",
    "6161",
    "60",
    "ff", // "c": (_ "a", "")
    "ff",
);

fn head(out: &mut Vec<u8>, major: u8, arg: u64, wide: bool) {
    let m = major << 5;
    if wide {
        out.push(m | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    } else if arg < 24 {
        out.push(m | arg as u8);
    } else if let Ok(a) = u8::try_from(arg) {
        out.extend_from_slice(&[m | 24, a]);
    } else if let Ok(a) = u16::try_from(arg) {
        out.push(m | 25);
        out.extend_from_slice(&a.to_be_bytes());
    } else if let Ok(a) = u32::try_from(arg) {
        out.push(m | 26);
        out.extend_from_slice(&a.to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

fn string(out: &mut Vec<u8>, major: u8, bytes: &[u8], split: usize, s: Style) {
    if s.indefinite {
        let (a, b) = bytes.split_at(split);
        out.push(major << 5 | 31);
        for chunk in [a, &[], b] {
            head(out, major, chunk.len() as u64, s.wide);
            out.extend_from_slice(chunk);
        }
        out.push(0xff);
    } else {
        head(out, major, bytes.len() as u64, s.wide);
        out.extend_from_slice(bytes);
    }
}

fn container(out: &mut Vec<u8>, major: u8, len: usize, s: Style) {
    if s.indefinite {
        out.push(major << 5 | 31);
    } else {
        head(out, major, len as u64, s.wide);
    }
}

fn write(item: &Cbor, s: Style, out: &mut Vec<u8>) {
    match item {
        Cbor::Integer(i) => {
            let i = i128::from(*i);
            match u64::try_from(i) {
                Ok(u) => head(out, 0, u, s.wide),
                Err(_) => head(out, 1, u64::try_from(-1 - i).unwrap(), s.wide),
            }
        }
        Cbor::Bytes(b) => string(out, 2, b, b.len() / 2, s),
        Cbor::Text(t) => {
            let mid = (0..=t.len() / 2)
                .rev()
                .find(|i| t.is_char_boundary(*i))
                .unwrap();
            string(out, 3, t.as_bytes(), mid, s)
        }
        Cbor::Float(f) => {
            let single = *f as f32;
            if s.short_floats && f64::from(single).to_bits() == f.to_bits() {
                out.push(0xfa);
                out.extend_from_slice(&single.to_be_bytes());
            } else {
                out.push(0xfb);
                out.extend_from_slice(&f.to_be_bytes());
            }
        }
        Cbor::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
        Cbor::Null => out.push(0xf6),
        Cbor::Tag(t, v) => {
            head(out, 6, *t, s.wide);
            write(v, s, out);
        }
        Cbor::Array(items) => {
            container(out, 4, items.len(), s);
            for item in items {
                write(item, s, out);
            }
            if s.indefinite {
                out.push(0xff);
            }
        }
        Cbor::Map(entries) => {
            // The body must keep exactly one entry; every other map of an
            // event has more.
            let extra = s.extra && entries.len() != 1;
            container(out, 5, entries.len() + usize::from(extra), s);
            if extra {
                out.extend_from_slice(EXTRA_KEY);
                out.extend_from_slice(&hex::decode(EXTRA_VALUE).unwrap());
            }
            let mut order: Vec<_> = entries.iter().collect();
            if s.reverse {
                order.reverse();
            }
            for (k, v) in order {
                write(k, s, out);
                write(v, s, out);
            }
            if s.indefinite {
                out.push(0xff);
            }
        }
        other => panic!("not in an event: {other:?}"),
    }
}

fn reencode(event: &Event, s: Style) -> Vec<u8> {
    let item: Cbor = ciborium::de::from_reader(encode(event).as_slice()).unwrap();
    let mut out = Vec::new();
    write(&item, s, &mut out);
    out
}

/// Every event in every style.
fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for event in events() {
        for s in STYLES {
            out.push(reencode(&event, s));
        }
    }
    out
}

#[test]
fn round_trip_every_body_and_value_in_every_allowed_encoding() {
    let mut checked = 0;
    for event in events() {
        assert_eq!(decode(&encode(&event)).unwrap(), event);
        for (i, s) in STYLES.into_iter().enumerate() {
            let bytes = reencode(&event, s);
            if i == 0 {
                assert_eq!(
                    bytes,
                    encode(&event),
                    "the re-encoder is canonical by default"
                );
            } else if !s.short_floats || s.extra {
                // (An event without a float has only one single-float form.)
                assert_ne!(bytes, encode(&event), "{s:?}");
            }
            let (old, new) = both(&bytes);
            assert_eq!(
                canon(&new),
                Ok(encode(&event)),
                "{s:?}: {}",
                hex::encode(&bytes)
            );
            assert!(same(&old, &new), "{s:?}: old {old:?}, new {new:?}");
            checked += 1;
        }
    }
    assert!(checked > 150, "{checked}");
}

#[test]
fn nan_payloads_and_signed_zeros_survive() {
    for bits in [
        0x7ff8_0000_0000_0000u64, // quiet NaN
        0x7ff0_0000_0000_0001,    // signalling NaN, payload 1
        0xfff8_dead_beef_0001,    // negative NaN with a payload
        0x8000_0000_0000_0000,    // -0.0
        0x0000_0000_0000_0001,    // smallest subnormal
    ] {
        let event = Event {
            body: Body::Value(ValueBody {
                value: Value::Float(f64::from_bits(bits)),
                ..match golden().body {
                    Body::Value(b) => b,
                    _ => unreachable!(),
                }
            }),
            ..golden()
        };
        let bytes = encode(&event);
        let (old, new) = both(&bytes);
        assert_eq!(canon(&new), Ok(bytes), "{bits:#x}");
        assert!(same(&old, &new), "{bits:#x}");
    }
}

/// The float a decoded golden event carries, as bits.
fn float_bits(r: &Decoded) -> u64 {
    match r {
        Ok(Event {
            body:
                Body::Value(ValueBody {
                    value: Value::Float(f),
                    ..
                }),
            ..
        }) => f.to_bits(),
        other => panic!("no float: {other:?}"),
    }
}

/// The golden event with its value (the 9-byte double 21.5) replaced by
/// the item `raw`.
fn with_value(raw: &[u8]) -> Vec<u8> {
    splice(
        &encode(&golden()),
        &[0xfb, 0x40, 0x35, 0x80, 0, 0, 0, 0, 0],
        raw,
    )
}

/// `bytes` with the first occurrence of `find` replaced by `by`.
fn splice(bytes: &[u8], find: &[u8], by: &[u8]) -> Vec<u8> {
    let at = bytes
        .windows(find.len())
        .position(|w| w == find)
        .unwrap_or_else(|| panic!("{} not in {}", hex::encode(find), hex::encode(bytes)));
    [&bytes[..at], by, &bytes[at + find.len()..]].concat()
}

#[test]
fn every_half_float_and_many_singles_widen_exactly() {
    for half in 0..=u16::MAX {
        let bytes = with_value(&[&[0xf9][..], &half.to_be_bytes()].concat());
        let (old, new) = both(&bytes);
        assert_eq!(float_bits(&new), float_bits(&old), "half {half:#06x}");
    }
    for (half, want) in [
        (0x3c00u16, 1.0f64),
        (0xc400, -4.0),
        (0x7bff, 65504.0),
        (0x0001, 5.960_464_477_539_063e-8),
        (0x0400, 6.103_515_625e-5),
        (0x7c00, f64::INFINITY),
        (0xfc00, f64::NEG_INFINITY),
    ] {
        let bytes = with_value(&[&[0xf9][..], &half.to_be_bytes()].concat());
        assert_eq!(float_bits(&decode(&bytes)), want.to_bits(), "{half:#06x}");
    }
    let neg_zero = with_value(&[0xf9, 0x80, 0x00]);
    assert_eq!(float_bits(&decode(&neg_zero)), (-0.0f64).to_bits());
    let nan = with_value(&[0xf9, 0x7e, 0x00]);
    assert!(f64::from_bits(float_bits(&decode(&nan))).is_nan());

    let mut rng = Lcg(7);
    let specials = [
        0x7f80_0001u32,
        0xffc0_0001,
        0x0000_0001,
        0x8000_0000,
        0x7f7f_ffff,
    ];
    for single in specials
        .into_iter()
        .chain((0..4096).map(|_| rng.next() as u32))
    {
        let bytes = with_value(&[&[0xfa][..], &single.to_be_bytes()].concat());
        let (old, new) = both(&bytes);
        assert_eq!(float_bits(&new), float_bits(&old), "single {single:#010x}");
    }
}

#[test]
fn every_truncation_is_rejected() {
    let mut cuts = 0;
    for bytes in corpus() {
        for cut in 0..bytes.len() {
            let (old, new) = both(&bytes[..cut]);
            assert!(
                matches!(new, Err(DecodeError::Malformed { .. })),
                "{} cut at {cut}: {new:?}",
                hex::encode(&bytes)
            );
            assert!(same(&old, &new));
            cuts += 1;
        }
    }
    assert!(cuts > 50_000, "{cuts}");
}

// ------------------------------------------------ broken events

/// A tiny linear congruential generator (Knuth's MMIX constants): the
/// mutations are the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 16
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes likely to change the structure: heads of every major type with
/// small, 1-byte and indefinite arguments, tags, bignums, simple values,
/// float heads, reserved values, break.
const INTERESTING: [u8; 30] = [
    0x00, 0x17, 0x18, 0x1b, 0x1f, 0x20, 0x3b, 0x40, 0x58, 0x5f, 0x60, 0x78, 0x7f, 0x80, 0x9f, 0xa0,
    0xa1, 0xbf, 0xc1, 0xc2, 0xc3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xff,
];

fn mutate(rng: &mut Lcg, bytes: &mut Vec<u8>) {
    let len = bytes.len();
    let at = rng.below(len);
    match rng.below(8) {
        0 if len > 0 => bytes[at] ^= 1 << rng.below(8),
        1 if len > 0 => bytes[at] = rng.next() as u8,
        2 if len > 0 => bytes[at] = INTERESTING[rng.below(INTERESTING.len())],
        3 => bytes.truncate(rng.below(len + 1)),
        4 => bytes.insert(rng.below(len + 1), rng.next() as u8),
        5 => bytes.insert(
            rng.below(len + 1),
            INTERESTING[rng.below(INTERESTING.len())],
        ),
        6 if len > 0 => {
            bytes.remove(at);
        }
        _ => {
            // Copy a slice of up to 16 bytes elsewhere: repeats keys,
            // items and heads.
            let from = rng.below(len);
            let to = (from + 1 + rng.below(16)).min(len);
            let piece = bytes[from..to].to_vec();
            let into = rng.below(len + 1);
            bytes.splice(into..into, piece);
        }
    }
}

/// Whether a disagreement is one where the doc overrules the old decoder
/// (each pinned in `doc_overrules_the_old_decoder`), recognised narrowly:
/// the new decoder's own verdict says which rule, and the bytes hold the
/// item the rule is about.
fn excused(bytes: &[u8], old: &Decoded, new: &Decoded) -> bool {
    let holds = |b: u8| bytes.contains(&b);
    let bignum = holds(0xc2) || holds(0xc3);
    match new {
        // Bignum tags are not integers, undefined is not null: the old
        // decoder took them for an integer or null and either accepted the
        // event or failed on it later (a seq of 0, a bad version...).
        Err(DecodeError::WrongType { expected, .. }) => match *expected {
            "an unsigned integer" => bignum,
            "null, a boolean, an integer or a float" => bignum || holds(0xf7),
            "a text string or null" => holds(0xf7),
            _ => false,
        },
        // Not well formed (RFC 8949), which ciborium let through: it then
        // accepted the event or failed on something later.
        Err(DecodeError::Malformed { reason }) => {
            !matches!(old, Err(DecodeError::Malformed { .. }))
                && ((reason.starts_with("two-byte simple value below 32") && holds(0xf8))
                    || (reason.starts_with("nested indefinite-length chunk")
                        && (holds(0x5f) || holds(0x7f))))
        }
        // ciborium failed on a negative bignum below -2^127 ("integer too
        // large"), even where it is an unknown key's value, to be ignored.
        _ => matches!(old, Err(DecodeError::Malformed { .. })) && holds(0xc3),
    }
}

#[test]
fn differential_against_the_old_decoder_on_mutated_events() {
    const RUNS: usize = 6000;
    let corpus = corpus();
    let mut rng = Lcg(0x00c0_ffee);
    let (mut accepted, mut rejected, mut excuses) = (0, 0, 0);
    for run in 0..RUNS {
        let mut bytes = corpus[rng.below(corpus.len())].clone();
        for _ in 0..=rng.below(3) {
            mutate(&mut rng, &mut bytes);
        }
        let (old, new) = both(&bytes);
        if same(&old, &new) {
            if new.is_ok() {
                accepted += 1;
            } else {
                rejected += 1;
            }
        } else {
            assert!(
                excused(&bytes, &old, &new),
                "run {run}: decoders disagree on {}\n old: {old:?}\n new: {new:?}",
                hex::encode(&bytes)
            );
            excuses += 1;
        }
    }
    eprintln!("{RUNS} mutants: {accepted} accepted, {rejected} rejected, {excuses} excused");
    // Both outcomes are well represented, and the excuses stay rare.
    assert!(accepted > RUNS / 20, "accepted {accepted}");
    assert!(rejected > RUNS / 2, "rejected {rejected}");
    assert!(excuses < RUNS / 100, "excused {excuses}");
}

/// The mutation test again on checkpoint events only: their byte strings
/// of fixed length (`head`, `sig`) and nkey (`key`, with its CRC) are two
/// events of the general corpus. (A length that stays well formed is rare
/// among mutants: `checkpoint_body_strictness` pins those errors, with the
/// oracle agreeing.)
#[test]
fn differential_against_the_old_decoder_on_mutated_checkpoints() {
    const RUNS: usize = 3000;
    let corpus: Vec<Vec<u8>> = events()
        .into_iter()
        .filter(|e| matches!(e.body, Body::Checkpoint(_)))
        .flat_map(|e| STYLES.map(|s| reencode(&e, s)))
        .collect();
    assert_eq!(corpus.len(), 2 * STYLES.len());
    let mut rng = Lcg(0x0c4e_c4b0);
    let (mut accepted, mut rejected) = (0, 0);
    for run in 0..RUNS {
        let mut bytes = corpus[rng.below(corpus.len())].clone();
        for _ in 0..=rng.below(2) {
            mutate(&mut rng, &mut bytes);
        }
        let (old, new) = both(&bytes);
        assert!(
            same(&old, &new) || excused(&bytes, &old, &new),
            "run {run}: decoders disagree on {}\n old: {old:?}\n new: {new:?}",
            hex::encode(&bytes)
        );
        if new.is_ok() {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    eprintln!("{RUNS} checkpoint mutants: {accepted} accepted, {rejected} rejected");
    assert!(accepted > RUNS / 50, "accepted {accepted}");
    assert!(rejected > RUNS / 2, "rejected {rejected}");
}

#[test]
fn differential_against_the_old_decoder_on_random_bytes() {
    let mut rng = Lcg(42);
    for run in 0..3000 {
        let len = rng.below(64);
        let bytes: Vec<u8> = (0..len)
            .map(|_| match rng.below(2) {
                0 => rng.next() as u8,
                _ => INTERESTING[rng.below(INTERESTING.len())],
            })
            .collect();
        let (old, new) = both(&bytes);
        assert!(
            same(&old, &new) || excused(&bytes, &old, &new),
            "run {run}: {}\n old: {old:?}\n new: {new:?}",
            hex::encode(&bytes)
        );
    }
}

// ------------------------------------------------ deliberate differences

fn birth() -> Vec<u8> {
    encode(&Event {
        body: Body::Birth(BirthBody {
            member: "a".into(),
            points: vec![PointInfo {
                name: "p".into(),
                unit: None,
                writable: true,
            }],
        }),
        ..golden()
    })
}

/// The golden event with one more (unknown) envelope key, `entry` being
/// its key and value.
fn with_extra(entry: &[u8]) -> Vec<u8> {
    let mut bytes = encode(&golden());
    assert_eq!(bytes[0], 0xa8);
    bytes[0] = 0xa9;
    bytes.extend_from_slice(entry);
    bytes
}

/// Every case where the new decoder follows `docs/wire-format.md` (and RFC
/// 8949, which it cites for "well formed") rather than the old one, which
/// took what ciborium took. `excused` allows exactly these.
#[test]
fn doc_overrules_the_old_decoder() {
    let wrong = |r: &Decoded, field: &str| matches!(r, Err(DecodeError::WrongType { field: f, .. }) if f == field);
    let malformed = |r: &Decoded, why: &str| matches!(r, Err(DecodeError::Malformed { reason }) if reason.starts_with(why));

    // A bignum (tag 2) is "another CBOR type" than the unsigned int
    // (major 0) `seq` must be, and a Value is "never tagged". ciborium
    // turned small bignums into plain integers.
    let seq = splice(
        &encode(&golden()),
        b"\x63seq\x18\x2a",
        b"\x63seq\xc2\x41\x2a",
    );
    let (old, new) = both(&seq);
    assert_eq!(old.unwrap().seq, 42);
    assert!(wrong(&new, "seq"), "{new:?}");
    let (old, new) = both(&with_value(&[0xc2, 0x41, 0x05]));
    assert!(matches!(
        old,
        Ok(Event {
            body: Body::Value(ValueBody {
                value: Value::Int(5),
                ..
            }),
            ..
        })
    ));
    assert!(wrong(&new, "body.value.value"), "{new:?}");

    // `undefined` (0xf7) is not `null` (0xf6), the only null the doc
    // lists for a Value or a unit; ciborium read both as null.
    let (old, new) = both(&with_value(&[0xf7]));
    assert!(matches!(
        old,
        Ok(Event {
            body: Body::Value(ValueBody {
                value: Value::Null,
                ..
            }),
            ..
        })
    ));
    assert!(wrong(&new, "body.value.value"), "{new:?}");
    let unit = splice(&birth(), b"\x64unit\xf6", b"\x64unit\xf7");
    let (old, new) = both(&unit);
    assert!(old.is_ok());
    assert!(wrong(&new, "body.birth.points[0].unit"), "{new:?}");

    // Not well formed (RFC 8949 §3.3, §3.2.3), so "not exactly one
    // well-formed CBOR item": a simple value below 32 in the two-byte form
    // (here `true` as f8 15), a chunk of an indefinite-length string that
    // is indefinite itself. ciborium accepted both.
    let writable = splice(&birth(), b"\x68writable\xf5", b"\x68writable\xf8\x15");
    let (old, new) = both(&writable);
    assert!(old.is_ok());
    assert!(malformed(&new, "two-byte simple value below 32"), "{new:?}");
    let point = splice(
        &encode(&golden()),
        b"\x65temp1",
        b"\x7f\x7f\x65temp1\xff\xff",
    );
    let (old, new) = both(&point);
    assert_eq!(old.unwrap(), golden());
    assert!(malformed(&new, "nested indefinite-length chunk"), "{new:?}");

    // An unknown key's value is ignored, whatever it is: ciborium failed on
    // a bignum below -2^127 (tag 3 on 16 bytes), "integer too large".
    let huge = with_extra(&[b"\x61x\xc3\x50".as_slice(), &[0xff; 16]].concat());
    let (old, new) = both(&huge);
    assert!(matches!(old, Err(DecodeError::Malformed { .. })), "{old:?}");
    assert_eq!(new.unwrap(), golden());

    for bytes in [
        seq,
        with_value(&[0xc2, 0x41, 0x05]),
        with_value(&[0xf7]),
        unit,
        writable,
        point,
        huge,
    ] {
        let (old, new) = both(&bytes);
        assert!(!same(&old, &new) && excused(&bytes, &old, &new));
    }
}

// ------------------------------------------------ hostile input

#[test]
fn nesting_limit_is_the_old_one() {
    // The envelope is level 1; an unknown key's value may nest arrays,
    // maps or tags down to level 256, and no deeper.
    for (open, leaf) in [(0x81u8, 0x00u8), (0xa1, 0x00), (0xc1, 0x00)] {
        let nest = |levels: usize| {
            let mut entry = b"\x61x".to_vec();
            for _ in 0..levels {
                entry.push(open);
                if open == 0xa1 {
                    entry.push(0x00); // the key of a one-entry map
                }
            }
            entry.push(leaf);
            with_extra(&entry)
        };
        let (old, new) = both(&nest(255));
        assert_eq!(new.unwrap(), golden(), "{open:#x}");
        assert_eq!(old.unwrap(), golden(), "{open:#x}");
        let (old, new) = both(&nest(256));
        assert!(
            matches!(new, Err(DecodeError::Malformed { ref reason }) if reason.starts_with("nesting too deep"))
        );
        assert!(same(&old, &new), "{open:#x}: {old:?}");
    }
    // Far too deep is refused just as well, without a stack overflow.
    let deep = with_extra(&[b"\x61x".as_slice(), &[0x9f; 10_000], &[0xff; 10_000]].concat());
    assert!(matches!(decode(&deep), Err(DecodeError::Malformed { .. })));
}

#[test]
fn claimed_lengths_allocate_nothing() {
    for head in [0x5bu8, 0x7b, 0x9b, 0xbb] {
        let entry = [&[0x61, b'x', head][..], &[0xff; 8], &[0x00; 4]].concat();
        let bytes = with_extra(&entry);
        let (old, new) = both(&bytes);
        assert!(
            matches!(new, Err(DecodeError::Malformed { .. })),
            "{head:#x}: {new:?}"
        );
        assert!(same(&old, &new));
    }
    // A birth claiming 2^64 - 1 points and holding one.
    let bytes = splice(
        &birth(),
        b"\x66points\x81",
        b"\x66points\x9b\xff\xff\xff\xff\xff\xff\xff\xff",
    );
    assert!(matches!(decode(&bytes), Err(DecodeError::Malformed { .. })));
}

#[test]
fn many_unknown_keys_are_checked_for_duplicates_in_good_time() {
    // 10 000 distinct unknown envelope keys ("0000".."270f"), just under
    // the size limit: a quadratic check would take seconds.
    let mut bytes = encode(&golden());
    bytes.splice(0..1, [0xb9, 0x27, 0x18]); // map of 10 008 entries
    for i in 0..10_000 {
        bytes.push(0x64);
        bytes.extend_from_slice(format!("{i:04x}").as_bytes());
        bytes.push(0x00);
    }
    assert!(bytes.len() <= crate::MAX_EVENT_BYTES);
    let (old, new) = both(&bytes);
    assert_eq!(new.unwrap(), golden());
    assert_eq!(old.unwrap(), golden());
    // The same, the last key twice.
    bytes.splice(0..3, [0xb9, 0x27, 0x19]);
    bytes.extend_from_slice(b"\x64270f\x01");
    let (old, new) = both(&bytes);
    assert_eq!(
        new,
        Err(DecodeError::DuplicateKey {
            field: "270f".into()
        })
    );
    assert!(same(&old, &new));
}
