//! State snapshots: the fold of a node's local streams up to known
//! positions, so a restarted member folds only what came after instead of
//! its whole history.
//!
//! A snapshot is a cache, never a source of truth: it is written by the
//! member from its own fold, and on load every origin's position is checked
//! against the stream (the event at the snapshot's mark must still be there
//! with the same hash) before it is trusted; anything that does not check
//! out is folded again from the stream. A torn or edited file fails its
//! checksum and is ignored as a whole.
//!
//! File format (UTF-8): a header line `canopy-snapshot 1 <sha256 hex of the
//! rest>\n`, then one JSON document (see [`Snapshot`]). Floats are stored as
//! their IEEE 754 bits so every value, NaN included, comes back exactly and
//! the state digest after a restart equals the one before.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::state::{OriginState, PointState, State};
use crate::verify::Mark;
use crate::wire::{Hash, Quality, Value};

const MAGIC: &str = "canopy-snapshot";
const VERSION: u32 = 1;

/// The fold of a node's streams, up to a position in each.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The node whose streams were folded.
    pub node: String,
    /// Milliseconds since the Unix epoch when it was taken (informative).
    pub taken_ms: u64,
    /// The folded state.
    pub state: State,
    /// Origin → how far its stream was read.
    pub positions: BTreeMap<String, Position>,
}

/// How far one origin's stream was folded (default: nothing read yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// The last stream sequence read (valid or foreign): reading resumes at
    /// `read + 1`.
    pub read: u64,
    /// The last valid event folded: its chain continues from here, and the
    /// stream must still hold it for the position to be trusted.
    pub mark: Option<Mark>,
}

/// Why a snapshot file was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The first line is not a snapshot header of a known version.
    #[error("not a canopy snapshot (header {0:?})")]
    Header(String),
    /// The content does not hash to the header's checksum: torn or edited.
    #[error("checksum mismatch: the file is torn or was edited")]
    Checksum,
    /// The document does not parse.
    #[error("malformed document: {0}")]
    Malformed(String),
}

impl Snapshot {
    /// The file bytes.
    pub fn encode(&self) -> Vec<u8> {
        let doc = Doc {
            node: self.node.clone(),
            taken_ms: self.taken_ms,
            origins: self
                .state
                .origins
                .iter()
                .map(|(o, s)| (o.clone(), OriginDoc::from(s)))
                .collect(),
            points: self
                .state
                .points
                .iter()
                .map(|(n, p)| (n.clone(), PointDoc::from(p)))
                .collect(),
            positions: self
                .positions
                .iter()
                .map(|(o, p)| {
                    (
                        o.clone(),
                        PositionDoc {
                            read: p.read,
                            mark: p.mark.map(|m| (m.seq, m.epoch, hex::encode(m.hash))),
                        },
                    )
                })
                .collect(),
        };
        // Serializing plain maps, strings and integers cannot fail.
        let body = serde_json::to_vec(&doc).unwrap_or_default();
        let mut out =
            format!("{MAGIC} {VERSION} {}\n", hex::encode(Sha256::digest(&body))).into_bytes();
        out.extend_from_slice(&body);
        out
    }

    /// Parses and checks file bytes.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| SnapshotError::Header(preview(bytes)))?;
        let header = std::str::from_utf8(&bytes[..nl])
            .map_err(|_| SnapshotError::Header(preview(&bytes[..nl])))?;
        let body = &bytes[nl + 1..];
        let mut parts = header.split(' ');
        let (Some(MAGIC), Some(v), Some(sum), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SnapshotError::Header(preview(header.as_bytes())));
        };
        if v != VERSION.to_string() {
            return Err(SnapshotError::Header(preview(header.as_bytes())));
        }
        if hex::encode(Sha256::digest(body)) != sum {
            return Err(SnapshotError::Checksum);
        }
        let doc: Doc =
            serde_json::from_slice(body).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        let mut positions = BTreeMap::new();
        for (origin, p) in doc.positions {
            let mark = match p.mark {
                None => None,
                Some((seq, epoch, hash)) => Some(Mark {
                    seq,
                    epoch,
                    hash: parse_hash(&hash).ok_or_else(|| {
                        SnapshotError::Malformed(format!("origin {origin}: bad hash {hash:?}"))
                    })?,
                }),
            };
            positions.insert(origin, Position { read: p.read, mark });
        }
        let mut state = State::default();
        for (name, p) in doc.points {
            state.points.insert(name, p.into());
        }
        for (origin, o) in doc.origins {
            state.origins.insert(origin, o.into());
        }
        Ok(Snapshot {
            node: doc.node,
            taken_ms: doc.taken_ms,
            state,
            positions,
        })
    }
}

fn preview(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).into_owned()
}

fn parse_hash(s: &str) -> Option<Hash> {
    hex::decode(s).ok()?.try_into().ok()
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    node: String,
    taken_ms: u64,
    origins: BTreeMap<String, OriginDoc>,
    points: BTreeMap<String, PointDoc>,
    positions: BTreeMap<String, PositionDoc>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PositionDoc {
    read: u64,
    /// (seq, epoch, hex hash)
    mark: Option<(u64, u64, String)>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OriginDoc {
    seq: u64,
    epoch: u64,
    active_member: Option<String>,
    ts: u64,
}

impl From<&OriginState> for OriginDoc {
    fn from(o: &OriginState) -> Self {
        Self {
            seq: o.seq,
            epoch: o.epoch,
            active_member: o.active_member.clone(),
            ts: o.ts,
        }
    }
}

impl From<OriginDoc> for OriginState {
    fn from(o: OriginDoc) -> Self {
        Self {
            seq: o.seq,
            epoch: o.epoch,
            active_member: o.active_member,
            ts: o.ts,
        }
    }
}

/// A value with floats as their bits: exact, and NaN survives.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum ValueDoc {
    Null,
    Bool(bool),
    Int(i64),
    F64Bits(u64),
}

impl From<&Value> for ValueDoc {
    fn from(v: &Value) -> Self {
        match v {
            Value::Null => ValueDoc::Null,
            Value::Bool(b) => ValueDoc::Bool(*b),
            Value::Int(i) => ValueDoc::Int(*i),
            Value::Float(f) => ValueDoc::F64Bits(f.to_bits()),
        }
    }
}

impl From<ValueDoc> for Value {
    fn from(v: ValueDoc) -> Self {
        match v {
            ValueDoc::Null => Value::Null,
            ValueDoc::Bool(b) => Value::Bool(b),
            ValueDoc::Int(i) => Value::Int(i),
            ValueDoc::F64Bits(bits) => Value::Float(f64::from_bits(bits)),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PointDoc {
    value: ValueDoc,
    quality: Quality,
    ts: u64,
    origin: String,
    seq: u64,
    epoch: u64,
    forced: bool,
    field: Option<(ValueDoc, Quality, u64)>,
}

impl From<&PointState> for PointDoc {
    fn from(p: &PointState) -> Self {
        Self {
            value: (&p.value).into(),
            quality: p.quality,
            ts: p.ts,
            origin: p.origin.clone(),
            seq: p.seq,
            epoch: p.epoch,
            forced: p.forced,
            field: p.field.as_ref().map(|(v, q, ts)| (v.into(), *q, *ts)),
        }
    }
}

impl From<PointDoc> for PointState {
    fn from(p: PointDoc) -> Self {
        Self {
            value: p.value.into(),
            quality: p.quality,
            ts: p.ts,
            origin: p.origin,
            seq: p.seq,
            epoch: p.epoch,
            forced: p.forced,
            field: p.field.map(|(v, q, ts)| (v.into(), q, ts)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Body, Chain, ForcedBody, StreamCursor, ValueBody, Verdict};

    /// A fold of a small history with every kind of value, a forced point
    /// and two origins, and the positions a reader reached.
    fn sample() -> Snapshot {
        let mut state = State::default();
        let mut positions = BTreeMap::new();
        for origin in ["root", "root.south"] {
            let mut chain = Chain::new(origin, "a", 3);
            let mut cursor = StreamCursor::new(origin);
            let values = [
                Value::Null,
                Value::Bool(true),
                Value::Int(-7),
                Value::Float(21.5),
                Value::Float(f64::NAN),
                Value::Float(-0.0),
                Value::Float(f64::INFINITY),
            ];
            let mut seq = 0;
            for (i, v) in values.iter().enumerate() {
                seq += 1;
                let s = chain
                    .seal(
                        seq * 10,
                        Body::Value(ValueBody {
                            point: format!("p{i}"),
                            value: v.clone(),
                            quality: Quality::Good,
                        }),
                    )
                    .unwrap();
                let Verdict::Valid { event, .. } = cursor.judge(seq, &s.bytes) else {
                    panic!("valid");
                };
                state.apply(&event);
            }
            seq += 1;
            let s = chain
                .seal(
                    999,
                    Body::Forced(ForcedBody {
                        point: "p3".into(),
                        value: Value::Float(1.25),
                        by: "op".into(),
                    }),
                )
                .unwrap();
            let Verdict::Valid { event, .. } = cursor.judge(seq, &s.bytes) else {
                panic!("valid");
            };
            state.apply(&event);
            positions.insert(
                origin.to_owned(),
                Position {
                    read: seq + 2,
                    mark: cursor.mark(),
                },
            );
        }
        positions.insert(
            "root.empty".to_owned(),
            Position {
                read: 0,
                mark: None,
            },
        );
        Snapshot {
            node: "root".into(),
            taken_ms: 1_700_000_000_000,
            state,
            positions,
        }
    }

    #[test]
    fn round_trips_exactly_with_the_same_digest() {
        let snap = sample();
        let back = Snapshot::decode(&snap.encode()).unwrap();
        assert_eq!(back.state.digest(), snap.state.digest());
        assert_eq!(back.positions, snap.positions);
        assert_eq!(back.node, snap.node);
        // NaN != NaN, so compare the points by their bits via the digest
        // above and everything else field by field.
        assert_eq!(back.state.origins, snap.state.origins);
        assert_eq!(back.state.points.len(), snap.state.points.len());
        let p3 = &back.state.points["root.p3"];
        assert!(p3.forced);
        assert_eq!(
            p3.field.as_ref().map(|f| f.0.clone()),
            Some(Value::Float(21.5))
        );
    }

    #[test]
    fn any_flipped_byte_is_refused() {
        let bytes = sample().encode();
        for i in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert!(Snapshot::decode(&bad).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn truncation_and_foreign_files_name_the_problem() {
        let bytes = sample().encode();
        let torn = &bytes[..bytes.len() - 10];
        assert_eq!(Snapshot::decode(torn), Err(SnapshotError::Checksum));
        assert!(matches!(
            Snapshot::decode(b"hello world\n{}"),
            Err(SnapshotError::Header(_))
        ));
        assert!(matches!(
            Snapshot::decode(b""),
            Err(SnapshotError::Header(_))
        ));
        let other_version = String::from_utf8(bytes.clone()).unwrap().replacen(
            "canopy-snapshot 1 ",
            "canopy-snapshot 2 ",
            1,
        );
        assert!(matches!(
            Snapshot::decode(other_version.as_bytes()),
            Err(SnapshotError::Header(_))
        ));
        // A well-formed checksum over a document of the wrong shape.
        let body = b"{\"node\":1}";
        let mut doc =
            format!("canopy-snapshot 1 {}\n", hex::encode(Sha256::digest(body))).into_bytes();
        doc.extend_from_slice(body);
        assert!(matches!(
            Snapshot::decode(&doc),
            Err(SnapshotError::Malformed(_))
        ));
    }
}
