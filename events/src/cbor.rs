//! The CBOR of the envelope, by hand: the writer behind [`crate::encode`]
//! and the reader behind [`crate::decode`], for the handful of RFC 8949
//! items the envelope uses.
//!
//! Why not ciborium's serializer: the hash chain covers exact bytes, so the
//! bytes an origin writes must never change because a codec was upgraded
//! (ciborium, for one, picks the shortest float width on its own). Every
//! choice is fixed here and written down in `docs/wire-format.md`:
//! definite lengths only, the shortest head for every length and integer,
//! every float as a 64-bit double, no tags.
//!
//! Why not a generic decoder: decoding runs on every event at every node,
//! and building a generic value tree (a heap node per item, a `String` per
//! key) cost five times the encode and hash together. [`Reader`] walks the
//! bytes in place; `codec.rs` reads the envelope's schema with it.

use std::borrow::Cow;
use std::fmt;

/// Major types of RFC 8949 §3.1, already shifted into the top three bits.
const UNSIGNED: u8 = 0 << 5;
const NEGATIVE: u8 = 1 << 5;
const BYTES: u8 = 2 << 5;
const TEXT: u8 = 3 << 5;
const ARRAY: u8 = 4 << 5;
const MAP: u8 = 5 << 5;
const SIMPLE: u8 = 7 << 5;

/// Simple values and the double-float head (RFC 8949 §3.3).
const FALSE: u8 = SIMPLE | 20;
const TRUE: u8 = SIMPLE | 21;
const NULL: u8 = SIMPLE | 22;
const FLOAT64: u8 = SIMPLE | 27;

/// An append-only CBOR writer over a `Vec<u8>`; writing cannot fail.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    /// The bytes written so far: the finished message once the caller has
    /// written one complete item.
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// A head: major type plus argument in its shortest form (§4.2.1,
    /// "preferred serialization"), so one value has one encoding.
    fn head(&mut self, major: u8, arg: u64) {
        if arg < 24 {
            // Lossless: arg < 24 fits the 5 low bits.
            self.buf.push(major | arg as u8);
        } else if let Ok(a) = u8::try_from(arg) {
            self.buf.push(major | 24);
            self.buf.push(a);
        } else if let Ok(a) = u16::try_from(arg) {
            self.buf.push(major | 25);
            self.buf.extend_from_slice(&a.to_be_bytes());
        } else if let Ok(a) = u32::try_from(arg) {
            self.buf.push(major | 26);
            self.buf.extend_from_slice(&a.to_be_bytes());
        } else {
            self.buf.push(major | 27);
            self.buf.extend_from_slice(&arg.to_be_bytes());
        }
    }

    fn len(&mut self, major: u8, len: usize) {
        // usize is at most 64 bits on every target Rust supports.
        self.head(major, len as u64);
    }

    pub(crate) fn uint(&mut self, n: u64) {
        self.head(UNSIGNED, n);
    }

    pub(crate) fn int(&mut self, n: i64) {
        match u64::try_from(n) {
            Ok(u) => self.head(UNSIGNED, u),
            // CBOR stores a negative n as -1 - n; `!n` is exactly that for
            // two's complement and cannot overflow, unlike `-1 - n`.
            Err(_) => self.head(NEGATIVE, !n as u64),
        }
    }

    pub(crate) fn float(&mut self, f: f64) {
        self.buf.push(FLOAT64);
        self.buf.extend_from_slice(&f.to_bits().to_be_bytes());
    }

    pub(crate) fn bool(&mut self, b: bool) {
        self.buf.push(if b { TRUE } else { FALSE });
    }

    pub(crate) fn null(&mut self) {
        self.buf.push(NULL);
    }

    pub(crate) fn text(&mut self, s: &str) {
        self.len(TEXT, s.len());
        self.buf.extend_from_slice(s.as_bytes());
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.len(BYTES, b.len());
        self.buf.extend_from_slice(b);
    }

    pub(crate) fn array(&mut self, len: usize) {
        self.len(ARRAY, len);
    }

    pub(crate) fn map(&mut self, len: usize) {
        self.len(MAP, len);
    }
}

// ---------------------------------------------------------------- reading

/// Simple values (RFC 8949 §3.3) a [`Head::Simple`] can hold; every other
/// simple value is refused when its head is read.
pub(crate) const SIMPLE_FALSE: u8 = 20;
pub(crate) const SIMPLE_TRUE: u8 = 21;
pub(crate) const SIMPLE_NULL: u8 = 22;
pub(crate) const SIMPLE_UNDEFINED: u8 = 23;

/// How deep arrays, maps and tags may nest, counting the outermost: the
/// bound ciborium applied before, far deeper than any event, and shallow
/// enough that the recursive walk over hostile input cannot exhaust a
/// thread's stack.
pub(crate) const MAX_DEPTH: usize = 256;

/// What is wrong with bytes that are not one well-formed CBOR item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Problem {
    /// The input ends inside an item.
    Truncated,
    /// Additional information 28, 29 or 30.
    Reserved,
    /// Additional information 31 on an integer or a tag.
    IndefiniteHead,
    /// A simple value other than false, true, null, undefined.
    UnknownSimple,
    /// A two-byte simple value below 32 (RFC 8949 §3.3: not well formed).
    ShortSimple,
    /// A chunk of an indefinite-length string that is itself indefinite.
    NestedChunk,
    /// A chunk of an indefinite-length string that is not a string of the
    /// same major type.
    BadChunk,
    /// A text (or a chunk of one) that is not UTF-8.
    InvalidUtf8,
    /// More than [`MAX_DEPTH`] nested arrays, maps and tags.
    TooDeep,
    /// A break where an item must be.
    UnexpectedBreak,
}

impl Problem {
    fn describe(self) -> &'static str {
        match self {
            Problem::Truncated => "truncated input",
            Problem::Reserved => "reserved additional information",
            Problem::IndefiniteHead => "indefinite length on an integer or a tag",
            Problem::UnknownSimple => "unknown simple value",
            Problem::ShortSimple => "two-byte simple value below 32",
            Problem::NestedChunk => "nested indefinite-length chunk",
            Problem::BadChunk => "bad chunk in an indefinite-length string",
            Problem::InvalidUtf8 => "invalid UTF-8 in a text string",
            Problem::TooDeep => "nesting too deep",
            Problem::UnexpectedBreak => "unexpected break",
        }
    }
}

/// Bytes that are not one well-formed CBOR item: what is wrong, and where.
/// Small (it travels in every `Result` of the reader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed {
    pub(crate) what: Problem,
    /// Offset of the head (or byte) at fault, saturated at `u32::MAX`.
    pub(crate) at: u32,
}

impl Malformed {
    fn new(what: Problem, at: usize) -> Self {
        Self {
            what,
            at: u32::try_from(at).unwrap_or(u32::MAX),
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.what {
            Problem::Truncated => f.write_str(self.what.describe()),
            what => write!(f, "{} at byte {}", what.describe(), self.at),
        }
    }
}

/// The head of one item (RFC 8949 §3): major type and argument, the
/// argument already widened to `u64` whatever its width on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Head {
    /// Major 0: an unsigned integer.
    Uint(u64),
    /// Major 1: the negative integer `-1 - n`.
    Nint(u64),
    /// Major 2 with its length (an indefinite one: chunks, then a break).
    Bytes(Len),
    /// Major 3, like `Bytes`; the content is UTF-8.
    Text(Len),
    /// Major 4 with its item count (indefinite: items, then a break).
    Array(Len),
    /// Major 5 with its entry count (indefinite: entries, then a break).
    Map(Len),
    /// Major 6: a tag number; one item follows.
    Tag(u64),
    /// false, true, null or undefined (`SIMPLE_*`).
    Simple(u8),
    /// A half, single or double float, widened exactly to `f64`.
    Float(f64),
    /// The break (0xff) ending an indefinite-length item.
    Break,
}

/// The length of a string, array or map: a count, or indefinite. A plain
/// pair rather than an `Option<u64>`, which the compiler stored in pieces
/// and loaded whole (a store-forwarding stall on every item).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Len {
    /// Bytes (strings), items (arrays) or entries (maps); 0 if indefinite.
    count: u64,
    indefinite: bool,
}

impl Len {
    /// The count, or `None` if indefinite.
    pub(crate) fn definite(self) -> Option<u64> {
        if self.indefinite {
            None
        } else {
            Some(self.count)
        }
    }
}

/// A cursor over one message. Every read is bounds-checked and fails with
/// [`Malformed`] (never a panic) on input that ends early or breaks a rule
/// of RFC 8949; nothing is allocated except to join the chunks of an
/// indefinite-length string.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Offset of the next byte to read.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The next `n` bytes, or `Malformed` if fewer are left. A claimed
    /// length is only compared with what is there: nothing is allocated
    /// for it.
    #[inline]
    fn take(&mut self, n: u64) -> Result<&'a [u8], Malformed> {
        let bytes = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .and_then(|end| self.buf.get(self.pos..end))
            .ok_or_else(|| Malformed::new(Problem::Truncated, self.buf.len()))?;
        self.pos += bytes.len();
        Ok(bytes)
    }

    #[inline]
    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let at = self.pos;
        // `take` returned exactly N bytes, so the conversion cannot fail;
        // it is checked anyway rather than unwrapped.
        <[u8; N]>::try_from(self.take(N as u64)?)
            .map_err(|_| Malformed::new(Problem::Truncated, at))
    }

    /// Reads one head. Refused here, wherever they appear: reserved
    /// additional information (28..30), an indefinite length on an integer
    /// or a tag, a two-byte simple value below 32 (not well formed, RFC
    /// 8949 §3.3), and any simple value but false, true, null and
    /// undefined (which the envelope has no use for; refused before too).
    // Always inlined: it runs for every item, and its result returned
    // through memory (24 bytes) cost more than the parse itself.
    #[inline(always)]
    pub(crate) fn head(&mut self) -> Result<Head, Malformed> {
        let at = self.pos;
        let bad = |what| Err(Malformed::new(what, at));
        let [initial] = self.fixed::<1>()?;
        let major = initial >> 5;
        let info = initial & 0x1f;
        if major == 7 {
            return match info {
                SIMPLE_FALSE..=SIMPLE_UNDEFINED => Ok(Head::Simple(info)),
                0..=19 => bad(Problem::UnknownSimple),
                24 => match self.fixed::<1>()? {
                    [0..=31] => bad(Problem::ShortSimple),
                    _ => bad(Problem::UnknownSimple),
                },
                25 => Ok(Head::Float(f16_to_f64(u16::from_be_bytes(self.fixed()?)))),
                26 => Ok(Head::Float(f64::from(f32::from_be_bytes(self.fixed()?)))),
                27 => Ok(Head::Float(f64::from_be_bytes(self.fixed()?))),
                28..=30 => bad(Problem::Reserved),
                _ => Ok(Head::Break),
            };
        }
        let arg = match info {
            0..=23 => u64::from(info),
            24 => u64::from(u8::from_be_bytes(self.fixed()?)),
            25 => u64::from(u16::from_be_bytes(self.fixed()?)),
            26 => u64::from(u32::from_be_bytes(self.fixed()?)),
            27 => u64::from_be_bytes(self.fixed()?),
            28..=30 => return bad(Problem::Reserved),
            _ => 0,
        };
        let len = Len {
            count: arg,
            indefinite: info == 31,
        };
        match major {
            0 | 1 | 6 if len.indefinite => bad(Problem::IndefiniteHead),
            0 => Ok(Head::Uint(arg)),
            1 => Ok(Head::Nint(arg)),
            2 => Ok(Head::Bytes(len)),
            3 => Ok(Head::Text(len)),
            4 => Ok(Head::Array(len)),
            5 => Ok(Head::Map(len)),
            _ => Ok(Head::Tag(arg)),
        }
    }

    /// True, and past it, if the next byte is a break; false, and nothing
    /// read, if it is something else.
    #[inline]
    pub(crate) fn at_break(&mut self) -> Result<bool, Malformed> {
        match self.buf.get(self.pos) {
            Some(0xff) => {
                self.pos += 1;
                Ok(true)
            }
            Some(_) => Ok(false),
            None => Err(Malformed::new(Problem::Truncated, self.pos)),
        }
    }

    /// Reads the content of a string whose head, `Bytes(len)` or
    /// `Text(len)` as `text` says, was just read, and hands each chunk to
    /// `each`. An indefinite-length string is definite-length chunks of its
    /// own major type, then a break (RFC 8949 §3.2.3: a chunk may not be
    /// indefinite itself). Every chunk of a text must be UTF-8 on its own.
    fn chunks(
        &mut self,
        len: Len,
        text: bool,
        mut each: impl FnMut(&'a [u8]),
    ) -> Result<(), Malformed> {
        let mut chunk = |r: &mut Self, n: u64| {
            let at = r.pos;
            let bytes = r.take(n)?;
            if text && std::str::from_utf8(bytes).is_err() {
                return Err(Malformed::new(Problem::InvalidUtf8, at));
            }
            each(bytes);
            Ok(())
        };
        let Some(len) = len.definite() else {
            loop {
                let at = self.pos;
                match self.head()? {
                    Head::Break => return Ok(()),
                    Head::Bytes(n) if !text && !n.indefinite => chunk(self, n.count)?,
                    Head::Text(n) if text && !n.indefinite => chunk(self, n.count)?,
                    Head::Bytes(Len {
                        indefinite: true, ..
                    })
                    | Head::Text(Len {
                        indefinite: true, ..
                    }) => return Err(Malformed::new(Problem::NestedChunk, at)),
                    _ => return Err(Malformed::new(Problem::BadChunk, at)),
                }
            }
        };
        chunk(self, len)
    }

    /// Skips one whole item, checking that it is well formed (RFC 8949
    /// Appendix C) and valid the way the decoder needs: UTF-8 text, known
    /// simple values, at most [`MAX_DEPTH`] levels of arrays, maps and tags
    /// (`depth` is how many enclose this item). Allocates nothing.
    pub(crate) fn skip(&mut self, depth: usize) -> Result<(), Malformed> {
        let at = self.pos;
        let head = self.head()?;
        self.skip_rest(head, at, depth)
    }

    /// [`Reader::skip`] for an item whose head, read at `at`, was just read.
    pub(crate) fn skip_rest(
        &mut self,
        head: Head,
        at: usize,
        depth: usize,
    ) -> Result<(), Malformed> {
        let nest = || {
            if depth < MAX_DEPTH {
                Ok(depth + 1)
            } else {
                Err(Malformed::new(Problem::TooDeep, at))
            }
        };
        match head {
            Head::Uint(_) | Head::Nint(_) | Head::Simple(_) | Head::Float(_) => Ok(()),
            Head::Bytes(len) => self.chunks(len, false, |_| ()),
            Head::Text(len) => self.chunks(len, true, |_| ()),
            Head::Array(len) => self.items(len, 1, nest()?),
            Head::Map(len) => self.items(len, 2, nest()?),
            Head::Tag(_) => self.skip(nest()?),
            Head::Break => Err(Malformed::new(Problem::UnexpectedBreak, at)),
        }
    }

    /// Skips the content of an array (`per` = 1) or map (`per` = 2).
    fn items(&mut self, len: Len, per: usize, depth: usize) -> Result<(), Malformed> {
        let mut left = len;
        // Every item is at least one byte, so a huge claimed count fails
        // at the end of the input rather than looping on.
        while self.more(&mut left)? {
            for _ in 0..per {
                self.skip(depth)?;
            }
        }
        Ok(())
    }

    /// Whether an array or map has another item (entry): counts `left`
    /// down, or for an indefinite length looks for the break.
    #[inline]
    pub(crate) fn more(&mut self, left: &mut Len) -> Result<bool, Malformed> {
        if left.indefinite {
            Ok(!self.at_break()?)
        } else if left.count == 0 {
            Ok(false)
        } else {
            left.count -= 1;
            Ok(true)
        }
    }

    /// The content of a byte string whose head was just read: borrowed
    /// unless it came in chunks.
    pub(crate) fn bytes(&mut self, len: Len) -> Result<Cow<'a, [u8]>, Malformed> {
        if let Some(n) = len.definite() {
            return self.take(n).map(Cow::Borrowed);
        }
        let mut joined = Vec::new();
        self.chunks(len, false, |c| joined.extend_from_slice(c))?;
        Ok(Cow::Owned(joined))
    }

    /// The content of a text string whose head was just read, as bytes:
    /// an indefinite-length text's chunks are checked for UTF-8 (each on
    /// its own, as they must be), a definite-length text is not, so that
    /// map keys can be compared with known (ASCII) names first; the caller
    /// checks any other with [`check_utf8`].
    pub(crate) fn raw_text(&mut self, len: Len) -> Result<Cow<'a, [u8]>, Malformed> {
        let Some(n) = len.definite() else {
            let mut joined = Vec::new();
            self.chunks(len, true, |c| joined.extend_from_slice(c))?;
            return Ok(Cow::Owned(joined));
        };
        self.take(n).map(Cow::Borrowed)
    }

    /// The content of a text string whose head was just read.
    pub(crate) fn text(&mut self, len: Len) -> Result<Cow<'a, str>, Malformed> {
        let at = self.pos;
        let invalid = Malformed::new(Problem::InvalidUtf8, at);
        match self.raw_text(len)? {
            Cow::Borrowed(b) => std::str::from_utf8(b)
                .map(Cow::Borrowed)
                .map_err(|_| invalid),
            // Every chunk was checked: joined, they are UTF-8 too.
            Cow::Owned(v) => String::from_utf8(v).map(Cow::Owned).map_err(|_| invalid),
        }
    }
}

/// Checks text read with [`Reader::raw_text`] from offset `at`.
pub(crate) fn check_utf8(text: &[u8], at: usize) -> Result<(), Malformed> {
    match std::str::from_utf8(text) {
        Ok(_) => Ok(()),
        Err(_) => Err(Malformed::new(Problem::InvalidUtf8, at)),
    }
}

/// An IEEE 754 half (binary16) widened to a double, exactly. A NaN keeps
/// its sign and payload and becomes quiet, as the `half` crate (what
/// ciborium used) and x86's F16C do.
pub(crate) fn f16_to_f64(half: u16) -> f64 {
    let sign = u64::from(half & 0x8000) << 48;
    let exponent = (half >> 10) & 0x1f;
    let mantissa = u64::from(half & 0x03ff);
    match exponent {
        // Zero or subnormal: mantissa * 2^-24, exact in a double.
        0 => {
            let magnitude = f64::from(half & 0x03ff) / 16_777_216.0;
            if sign == 0 {
                magnitude
            } else {
                -magnitude
            }
        }
        0x1f if mantissa == 0 => f64::from_bits(sign | 0x7ff0_0000_0000_0000),
        0x1f => f64::from_bits(sign | 0x7ff8_0000_0000_0000 | mantissa << 42),
        // Normal: rebias the exponent (15 -> 1023), widen the mantissa.
        _ => f64::from_bits(sign | (u64::from(exponent) + 1008) << 52 | mantissa << 42),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_of(f: impl FnOnce(&mut Writer)) -> String {
        let mut w = Writer::default();
        f(&mut w);
        hex::encode(w.finish())
    }

    fn read(hex: &str) -> Result<Head, Malformed> {
        Reader::new(&hex::decode(hex).unwrap()).head()
    }

    /// The whole of `hex` is one item the reader accepts.
    fn well_formed(hex: &str) -> bool {
        let bytes = hex::decode(hex).unwrap();
        let mut r = Reader::new(&bytes);
        r.skip(0).is_ok() && r.pos() == bytes.len()
    }

    /// Heads of RFC 8949 Appendix A.
    #[test]
    fn reads_rfc_8949_heads() {
        assert_eq!(read("00"), Ok(Head::Uint(0)));
        assert_eq!(read("17"), Ok(Head::Uint(23)));
        assert_eq!(read("1818"), Ok(Head::Uint(24)));
        assert_eq!(read("1903e8"), Ok(Head::Uint(1000)));
        assert_eq!(read("1a000f4240"), Ok(Head::Uint(1_000_000)));
        assert_eq!(read("1bffffffffffffffff"), Ok(Head::Uint(u64::MAX)));
        assert_eq!(read("20"), Ok(Head::Nint(0)));
        assert_eq!(read("3863"), Ok(Head::Nint(99)));
        assert_eq!(read("3bffffffffffffffff"), Ok(Head::Nint(u64::MAX)));
        assert_eq!(read("c11a514b67b0"), Ok(Head::Tag(1)));
        assert_eq!(read("d9d9f7"), Ok(Head::Tag(55799)));
        assert_eq!(read("f4"), Ok(Head::Simple(SIMPLE_FALSE)));
        assert_eq!(read("f5"), Ok(Head::Simple(SIMPLE_TRUE)));
        assert_eq!(read("f6"), Ok(Head::Simple(SIMPLE_NULL)));
        assert_eq!(read("f7"), Ok(Head::Simple(SIMPLE_UNDEFINED)));
        assert_eq!(read("ff"), Ok(Head::Break));
        let len = |count| Len {
            count,
            indefinite: false,
        };
        let indefinite = Len {
            count: 0,
            indefinite: true,
        };
        assert_eq!(read("4401020304"), Ok(Head::Bytes(len(4))));
        assert_eq!(read("6449455446"), Ok(Head::Text(len(4))));
        assert_eq!(read("5f"), Ok(Head::Bytes(indefinite)));
        assert_eq!(read("7f"), Ok(Head::Text(indefinite)));
        assert_eq!(read("83010203"), Ok(Head::Array(len(3))));
        assert_eq!(read("9f"), Ok(Head::Array(indefinite)));
        assert_eq!(read("a201020304"), Ok(Head::Map(len(2))));
        assert_eq!(read("bf"), Ok(Head::Map(indefinite)));
        for (hex, want) in [
            ("f90000", 0.0f64),
            ("f98000", -0.0),
            ("f93c00", 1.0),
            ("fb3ff199999999999a", 1.1),
            ("f93e00", 1.5),
            ("f97bff", 65504.0),
            ("fa47c35000", 100_000.0),
            ("fa7f7fffff", 3.402_823_466_385_288_6e38),
            ("fb7e37e43c8800759c", 1.0e300),
            ("f90001", 5.960_464_477_539_063e-8),
            ("f90400", 6.103_515_625e-5),
            ("f9c400", -4.0),
            ("fbc010666666666666", -4.1),
            ("f97c00", f64::INFINITY),
            ("f9fc00", f64::NEG_INFINITY),
            ("fa7f800000", f64::INFINITY),
            ("fbfff0000000000000", f64::NEG_INFINITY),
        ] {
            match read(hex) {
                Ok(Head::Float(f)) => assert_eq!(f.to_bits(), want.to_bits(), "{hex}"),
                other => panic!("{hex}: {other:?}"),
            }
        }
        for hex in ["f97e00", "fa7fc00000", "fb7ff8000000000000"] {
            assert!(
                matches!(read(hex), Ok(Head::Float(f)) if f.is_nan()),
                "{hex}"
            );
        }
    }

    /// Items of RFC 8949 Appendix A, whole.
    #[test]
    fn skips_rfc_8949_items() {
        for hex in [
            "c074323031332d30332d32315432303a30343a30305a",
            "c249010000000000000000",
            "c349010000000000000000",
            "d74401020304",
            "d818456449455446",
            "d82076687474703a2f2f7777772e6578616d706c652e636f6d",
            "40",
            "60",
            "62225c",
            "62c3bc",
            "63e6b0b4",
            "64f0908591",
            "8301820203820405",
            "98190102030405060708090a0b0c0d0e0f101112131415161718181819",
            "a0",
            "a26161016162820203",
            "826161a161626163",
            "5f42010243030405ff",
            "7f657374726561646d696e67ff",
            "9fff",
            "9f018202039f0405ffff",
            "9f01820203820405ff",
            "83018202039f0405ff",
            "bf61610161629f0203ffff",
            "826161bf61626163ff",
            "bf6346756ef563416d7421ff",
        ] {
            assert!(well_formed(hex), "{hex}");
        }
    }

    /// Every example of RFC 8949 Appendix F.1 (not well formed), and the
    /// simple values the decoder has no use for.
    #[test]
    fn refuses_what_is_not_well_formed() {
        for hex in [
            // End of input in a head.
            "18",
            "19",
            "1a",
            "1b",
            "1901",
            "1a0102",
            "1b01020304050607",
            "38",
            "58",
            "78",
            "98",
            "9a01ff00",
            "b8",
            "d8",
            "f8",
            "f900",
            "fa0000",
            "fb000000",
            // Definite-length strings with short data.
            "41",
            "61",
            "5affffffff00",
            "5bffffffffffffffff010203",
            "7affffffff00",
            "7b7fffffffffffffff010203",
            // Definite-length maps and arrays not closed with enough items.
            "81",
            "818181818181818181",
            "8200",
            "a1",
            "a20102",
            "a100",
            "a2000000",
            // Tag number not followed by tag content.
            "c0",
            // Indefinite-length strings, maps and arrays not closed by a break.
            "5f4100",
            "7f6100",
            "9f",
            "9f0102",
            "bf",
            "bf01020102",
            "819f",
            "9f8000",
            "9f9f9f9f9fffffffff",
            "9f819f819f9fffffff",
            // Reserved additional information.
            "1c",
            "1d",
            "1e",
            "3c",
            "3d",
            "3e",
            "5c",
            "5d",
            "5e",
            "7c",
            "7d",
            "7e",
            "9c",
            "9d",
            "9e",
            "bc",
            "bd",
            "be",
            "dc",
            "dd",
            "de",
            "fc",
            "fd",
            "fe",
            // Reserved two-byte encodings of simple values.
            "f800",
            "f801",
            "f818",
            "f81f",
            // Indefinite-length string chunks not of the correct type.
            "5f00ff",
            "5f21ff",
            "5f6100ff",
            "5f80ff",
            "5fa0ff",
            "5fc000ff",
            "5fe0ff",
            "7f4100ff",
            // Indefinite-length string chunks not definite length.
            "5f5f4100ffff",
            "7f7f6100ffff",
            // Break on its own, in a definite-length array, map or tag, or
            // in the value position of an indefinite-length map.
            "ff",
            "81ff",
            "8200ff",
            "a1ff",
            "a1ff00",
            "a100ff",
            "a20000ff",
            "9f81ff",
            "9f829f819f9fffffffff",
            "bf00ff",
            "bf000000ff",
            // Additional information 31 on an integer or a tag.
            "1f",
            "3f",
            "df",
            // Not UTF-8.
            "62c328",
            "7f61c3ff",
            "7f61c361bcff",
            // Simple values other than false, true, null, undefined.
            "e0",
            "f3",
            "f820",
            "f8ff",
        ] {
            assert!(!well_formed(hex), "{hex}");
        }
    }

    /// Vectors from RFC 8949 Appendix A.
    #[test]
    fn rfc_8949_vectors() {
        assert_eq!(hex_of(|w| w.uint(0)), "00");
        assert_eq!(hex_of(|w| w.uint(23)), "17");
        assert_eq!(hex_of(|w| w.uint(24)), "1818");
        assert_eq!(hex_of(|w| w.uint(1000)), "1903e8");
        assert_eq!(hex_of(|w| w.uint(1_000_000)), "1a000f4240");
        assert_eq!(hex_of(|w| w.uint(1_000_000_000_000)), "1b000000e8d4a51000");
        assert_eq!(hex_of(|w| w.uint(u64::MAX)), "1bffffffffffffffff");
        assert_eq!(hex_of(|w| w.int(-1)), "20");
        assert_eq!(hex_of(|w| w.int(-100)), "3863");
        assert_eq!(hex_of(|w| w.int(-1000)), "3903e7");
        assert_eq!(hex_of(|w| w.int(i64::MIN)), "3b7fffffffffffffff");
        assert_eq!(hex_of(|w| w.float(1.1)), "fb3ff199999999999a");
        assert_eq!(hex_of(|w| w.bool(false)), "f4");
        assert_eq!(hex_of(|w| w.bool(true)), "f5");
        assert_eq!(hex_of(|w| w.null()), "f6");
        assert_eq!(hex_of(|w| w.text("IETF")), "6449455446");
        assert_eq!(hex_of(|w| w.bytes(&[1, 2, 3, 4])), "4401020304");
        assert_eq!(hex_of(|w| w.array(0)), "80");
        assert_eq!(hex_of(|w| w.map(1)), "a1");
    }
}
