//! [`DecodeError`]: why bytes are not a valid event.

use crate::cbor::Malformed;
use crate::wire::InvalidEvent;

/// Why bytes are not a valid event. Field paths read like
/// `body.birth.points[2].name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Longer than [`MAX_EVENT_BYTES`](crate::MAX_EVENT_BYTES); refused before parsing.
    #[error("event is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not one well-formed CBOR item (truncated, bad syntax, nesting too
    /// deep, invalid UTF-8...).
    #[error("malformed CBOR: {reason}")]
    Malformed {
        /// What the CBOR reader reported.
        reason: String,
    },
    /// Bytes left after the one CBOR item an event is.
    #[error("{count} trailing bytes after the event")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A required field is absent.
    #[error("missing field `{field}`")]
    MissingField {
        /// Path of the field.
        field: String,
    },
    /// A key appears twice in one map: readers would disagree on which
    /// to take, so neither is taken.
    #[error("duplicate key `{field}`")]
    DuplicateKey {
        /// Path of the field.
        field: String,
    },
    /// A field (or map key) of the wrong CBOR type.
    #[error("`{field}`: expected {expected}")]
    WrongType {
        /// Path of the field.
        field: String,
        /// What the format requires there.
        expected: &'static str,
    },
    /// An integer outside the field's range (negative seq, int beyond i64).
    #[error("`{field}`: integer out of range")]
    OutOfRange {
        /// Path of the field.
        field: String,
    },
    /// `prev` is not 32 bytes.
    #[error("`prev`: expected 32 bytes, got {len}")]
    BadHashLength {
        /// Length received.
        len: usize,
    },
    /// A byte string of a fixed size (a checkpoint's `head`, 32 bytes, or
    /// `sig`, 64 bytes) has another length.
    #[error("`{field}`: expected {expected} bytes, got {len}")]
    BadLength {
        /// Path of the field.
        field: String,
        /// The length the format requires.
        expected: usize,
        /// Length received.
        len: usize,
    },
    /// `body` is not a one-entry map.
    #[error("`body`: expected a map with exactly one entry, got {entries}")]
    BadBody {
        /// Number of entries received.
        entries: usize,
    },
    /// A body tag this version does not know.
    #[error("unknown body tag `{tag}`")]
    UnknownBodyTag {
        /// The tag received.
        tag: String,
    },
    /// A text enum (quality, role, resource state) with an unknown name.
    #[error("`{field}`: unknown variant `{got}`")]
    UnknownVariant {
        /// Path of the field.
        field: String,
        /// The name received.
        got: String,
    },
    /// Structurally fine, semantically not (version, names, seq).
    #[error(transparent)]
    Invalid(#[from] InvalidEvent),
}

impl From<Malformed> for DecodeError {
    fn from(m: Malformed) -> Self {
        DecodeError::Malformed {
            reason: m.to_string(),
        }
    }
}
