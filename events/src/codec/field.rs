//! What the decoder reads every map and field with: [`Fault`] (a
//! malformed item ends the decode, a schema error is noted and reading
//! goes on), [`read_map`] (the order in which a map's errors are
//! reported), and [`Field`] (one known field of a given type, named by its
//! [`Path`] in errors).

use std::borrow::Cow;
use std::collections::BTreeSet;

use super::DecodeError;
use crate::cbor::{check_utf8, Head, Malformed, Reader, SIMPLE_FALSE, SIMPLE_NULL, SIMPLE_TRUE};
use crate::wire::{
    CommandOp, Hash, InvalidEvent, Quality, ResourceState, Role, Value, WIRE_VERSION,
};

/// Why reading one part of an event failed.
#[derive(Debug)]
pub(super) enum Fault {
    /// The bytes are not one well-formed item: the decode ends here, and
    /// this is its error, whatever else is wrong.
    Malformed(Malformed),
    /// The part is well formed but not what the schema wants. The reader
    /// is left just after the part all the same, so the caller can note
    /// the error and read on (a `Malformed` further on takes precedence).
    /// Boxed, as errors are rare: the results of the reader stay small.
    Schema(Box<DecodeError>),
}

impl From<Malformed> for Fault {
    fn from(m: Malformed) -> Self {
        Fault::Malformed(m)
    }
}

pub(super) type Parsed<T> = Result<T, Fault>;

pub(super) fn schema<T>(error: DecodeError) -> Parsed<T> {
    Err(Fault::Schema(Box::new(error)))
}

/// A field [`read_map`] vouched for; `None` cannot happen, and is reported
/// as missing rather than unwrapped.
#[inline]
pub(super) fn need<T>(field: Option<T>, path: Path, name: &str) -> Parsed<T> {
    field.map_or_else(
        || {
            schema(DecodeError::MissingField {
                field: path.join(name),
            })
        },
        Ok,
    )
}

/// Reads a map with text keys, `depth` containers deep, whose head comes
/// next. For the first occurrence of each of `names`, `field(r, i, depth)`
/// reads the value of `names[i]` (`depth` is now the value's); every other
/// value is skipped.
///
/// `Ok` means every name was found and read without error. Otherwise the
/// error is, in this order: the map is no map; the first bad key (not a
/// text, or seen before in this map, known or not); then, name by name,
/// the first that is missing or whose value was in error.
#[inline]
pub(super) fn read_map<'a, const N: usize>(
    r: &mut Reader<'a>,
    depth: usize,
    path: Path,
    names: &[&str; N],
    mut field: impl FnMut(&mut Reader<'a>, usize, usize) -> Parsed<()>,
) -> Parsed<()> {
    let at = r.pos();
    let head = r.head()?;
    let Head::Map(len) = head else {
        return mismatch(r, head, at, depth, wrong(path.name(), "a map"));
    };
    let depth = depth + 1;
    let mut seen = [false; N];
    // Unknown keys are rare; a set (not a list) keeps a hostile map of
    // thousands of them from costing a quadratic duplicate check.
    let mut unknown: Option<BTreeSet<Cow<'a, [u8]>>> = None;
    let mut key_error = None;
    // The error of the earliest name (in `names`) whose value was bad.
    let mut field_error: Option<(usize, Box<DecodeError>)> = None;
    // Keys usually come in the order of `names`: try the next one first.
    let mut next = 0;
    let mut left = len;
    while r.more(&mut left)? {
        let at = r.pos();
        let head = r.head()?;
        let Head::Text(len) = head else {
            r.skip_rest(head, at, depth)?;
            r.skip(depth)?;
            key_error.get_or_insert_with(|| wrong(path.name(), "text map keys"));
            continue;
        };
        let key = r.raw_text(len)?;
        let known = names
            .get(next)
            .filter(|n| n.as_bytes() == &*key)
            .map(|_| next)
            .or_else(|| names.iter().position(|n| n.as_bytes() == &*key));
        let first = match known.and_then(|i| seen.get_mut(i).map(|s| (i, s))) {
            Some((i, seen)) if !*seen => {
                *seen = true;
                next = i + 1;
                match field(r, i, depth) {
                    Ok(()) => {}
                    Err(Fault::Schema(e)) => {
                        if field_error.as_ref().is_none_or(|(j, _)| i < *j) {
                            field_error = Some((i, e));
                        }
                    }
                    Err(m) => return Err(m),
                }
                continue;
            }
            Some(_) => false,
            None => {
                check_utf8(&key, at)?;
                unknown
                    .get_or_insert_with(BTreeSet::new)
                    .insert(key.clone())
            }
        };
        if !first {
            key_error.get_or_insert_with(|| DecodeError::DuplicateKey {
                field: path.join(&String::from_utf8_lossy(&key)),
            });
        }
        r.skip(depth)?;
    }
    if let Some(e) = key_error {
        return schema(e);
    }
    for (i, (name, seen)) in names.iter().zip(seen).enumerate() {
        if let Some((_, e)) = field_error.take_if(|(j, _)| *j == i) {
            return Err(Fault::Schema(e));
        }
        if !seen {
            return schema(DecodeError::MissingField {
                field: path.join(name),
            });
        }
    }
    Ok(())
}

/// A part of the wrong type, whose head (read at `at`) was just read: skip
/// the rest of it and report `error`.
pub(super) fn mismatch<T>(
    r: &mut Reader<'_>,
    head: Head,
    at: usize,
    depth: usize,
    error: DecodeError,
) -> Parsed<T> {
    r.skip_rest(head, at, depth)?;
    schema(error)
}

pub(super) fn wrong(field: impl Into<String>, expected: &'static str) -> DecodeError {
    DecodeError::WrongType {
        field: field.into(),
        expected,
    }
}

/// Where a map is in the event, to name it and its fields in errors. Kept
/// as parts and only turned into a string for an error.
#[derive(Debug, Clone, Copy)]
pub(super) enum Path {
    /// The envelope.
    Event,
    /// A body payload, `body.<tag>`.
    Body(&'static str),
    /// A birth point, `body.<tag>.points[<i>]`.
    Point(&'static str, usize),
}

impl Path {
    /// The map itself.
    fn name(self) -> String {
        match self {
            Path::Event => "event".into(),
            Path::Body(tag) => format!("body.{tag}"),
            Path::Point(tag, i) => format!("body.{tag}.points[{i}]"),
        }
    }

    /// A field of the map.
    pub(super) fn join(self, field: &str) -> String {
        match self {
            Path::Event => field.into(),
            _ => format!("{}.{field}", self.name()),
        }
    }
}

/// One known field, about to be read: where it is, to skip a value of the
/// wrong type and to name the field in errors.
#[derive(Debug, Clone, Copy)]
pub(super) struct Field {
    /// How many containers enclose the value.
    depth: usize,
    path: Path,
    name: &'static str,
}

impl Field {
    #[inline]
    pub(super) fn of<const N: usize>(
        path: Path,
        names: &[&'static str; N],
        i: usize,
        depth: usize,
    ) -> Self {
        Self {
            depth,
            path,
            name: names.get(i).copied().unwrap_or_default(),
        }
    }

    fn path(self) -> String {
        self.path.join(self.name)
    }

    fn wrong<T>(
        self,
        r: &mut Reader<'_>,
        head: Head,
        at: usize,
        expected: &'static str,
    ) -> Parsed<T> {
        mismatch(r, head, at, self.depth, wrong(self.path(), expected))
    }

    fn out_of_range<T>(self) -> Parsed<T> {
        schema(DecodeError::OutOfRange { field: self.path() })
    }

    #[inline]
    pub(super) fn uint(self, r: &mut Reader<'_>) -> Parsed<u64> {
        let at = r.pos();
        match r.head()? {
            Head::Uint(n) => Ok(n),
            Head::Nint(_) => self.out_of_range(),
            head => self.wrong(r, head, at, "an unsigned integer"),
        }
    }

    /// `v`: checked here, so that it is the first error when it is wrong
    /// (a later version may change other fields: "unsupported version" is
    /// the useful error, not a complaint about some field).
    #[inline]
    pub(super) fn version(self, r: &mut Reader<'_>) -> Parsed<u8> {
        let v = self.uint(r)?;
        match u8::try_from(v) {
            Ok(v) if v == WIRE_VERSION => Ok(v),
            _ => schema(InvalidEvent::UnsupportedVersion { got: v }.into()),
        }
    }

    #[inline]
    fn str<'a>(self, r: &mut Reader<'a>) -> Parsed<Cow<'a, str>> {
        let at = r.pos();
        match r.head()? {
            Head::Text(len) => Ok(r.text(len)?),
            head => self.wrong(r, head, at, "a text string"),
        }
    }

    #[inline]
    pub(super) fn text(self, r: &mut Reader<'_>) -> Parsed<String> {
        Ok(self.str(r)?.into_owned())
    }

    #[inline]
    pub(super) fn opt_text(self, r: &mut Reader<'_>) -> Parsed<Option<String>> {
        let at = r.pos();
        match r.head()? {
            Head::Text(len) => Ok(Some(r.text(len)?.into_owned())),
            Head::Simple(SIMPLE_NULL) => Ok(None),
            head => self.wrong(r, head, at, "a text string or null"),
        }
    }

    #[inline]
    pub(super) fn bool(self, r: &mut Reader<'_>) -> Parsed<bool> {
        let at = r.pos();
        match r.head()? {
            Head::Simple(SIMPLE_FALSE) => Ok(false),
            Head::Simple(SIMPLE_TRUE) => Ok(true),
            head => self.wrong(r, head, at, "a boolean"),
        }
    }

    #[inline]
    pub(super) fn hash(self, r: &mut Reader<'_>) -> Parsed<Hash> {
        let at = r.pos();
        match r.head()? {
            Head::Bytes(len) => {
                let b = r.bytes(len)?;
                Hash::try_from(&*b).or_else(|_| schema(DecodeError::BadHashLength { len: b.len() }))
            }
            head => self.wrong(r, head, at, "a byte string"),
        }
    }

    /// A byte string of exactly `N` bytes (a checkpoint's `head`, `sig`).
    #[inline]
    pub(super) fn fixed_bytes<const N: usize>(self, r: &mut Reader<'_>) -> Parsed<[u8; N]> {
        let at = r.pos();
        match r.head()? {
            Head::Bytes(len) => {
                let b = r.bytes(len)?;
                <[u8; N]>::try_from(&*b).or_else(|_| {
                    schema(DecodeError::BadLength {
                        field: self.path(),
                        expected: N,
                        len: b.len(),
                    })
                })
            }
            head => self.wrong(r, head, at, "a byte string"),
        }
    }

    /// A byte string of any length (a command's `sig`, `signed`).
    #[inline]
    pub(super) fn byte_vec(self, r: &mut Reader<'_>) -> Parsed<Vec<u8>> {
        let at = r.pos();
        match r.head()? {
            Head::Bytes(len) => Ok(r.bytes(len)?.into_owned()),
            head => self.wrong(r, head, at, "a byte string"),
        }
    }

    #[inline]
    pub(super) fn value(self, r: &mut Reader<'_>) -> Parsed<Value> {
        let at = r.pos();
        match r.head()? {
            Head::Simple(SIMPLE_NULL) => Ok(Value::Null),
            Head::Simple(SIMPLE_FALSE) => Ok(Value::Bool(false)),
            Head::Simple(SIMPLE_TRUE) => Ok(Value::Bool(true)),
            Head::Uint(n) => match i64::try_from(n) {
                Ok(n) => Ok(Value::Int(n)),
                Err(_) => self.out_of_range(),
            },
            // -1 - n, which is !n in two's complement (and cannot overflow).
            Head::Nint(n) => match i64::try_from(n) {
                Ok(n) => Ok(Value::Int(!n)),
                Err(_) => self.out_of_range(),
            },
            Head::Float(f) => Ok(Value::Float(f)),
            head => self.wrong(r, head, at, "null, a boolean, an integer or a float"),
        }
    }

    /// A text enum (quality, role, resource state): a text first, then a
    /// known name.
    #[inline]
    fn name_of<T>(self, r: &mut Reader<'_>, known: impl Fn(&str) -> Option<T>) -> Parsed<T> {
        let s = self.str(r)?;
        known(&s).map_or_else(
            || {
                schema(DecodeError::UnknownVariant {
                    field: self.path(),
                    got: s.into_owned(),
                })
            },
            Ok,
        )
    }

    #[inline]
    pub(super) fn quality(self, r: &mut Reader<'_>) -> Parsed<Quality> {
        self.name_of(r, |s| match s {
            "good" => Some(Quality::Good),
            "bad" => Some(Quality::Bad),
            "uncertain" => Some(Quality::Uncertain),
            _ => None,
        })
    }

    #[inline]
    pub(super) fn role(self, r: &mut Reader<'_>) -> Parsed<Role> {
        self.name_of(r, |s| match s {
            "active" => Some(Role::Active),
            "standby" => Some(Role::Standby),
            _ => None,
        })
    }

    #[inline]
    pub(super) fn command_op(self, r: &mut Reader<'_>) -> Parsed<CommandOp> {
        self.name_of(r, |s| match s {
            "write" => Some(CommandOp::Write),
            "force" => Some(CommandOp::Force),
            "unforce" => Some(CommandOp::Unforce),
            _ => None,
        })
    }

    #[inline]
    pub(super) fn resource_state(self, r: &mut Reader<'_>) -> Parsed<ResourceState> {
        self.name_of(r, |s| match s {
            "in_service" => Some(ResourceState::InService),
            "pending_oos" => Some(ResourceState::PendingOos),
            "oos" => Some(ResourceState::Oos),
            _ => None,
        })
    }
}
