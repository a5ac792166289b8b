//! The CBOR writer behind [`crate::encode`]: the handful of RFC 8949 items
//! the envelope uses, written by hand.
//!
//! Why not ciborium's serializer: the hash chain covers exact bytes, so the
//! bytes an origin writes must never change because a codec was upgraded
//! (ciborium, for one, picks the shortest float width on its own). Every
//! choice is fixed here and written down in `docs/wire-format.md`:
//! definite lengths only, the shortest head for every length and integer,
//! every float as a 64-bit double, no tags.

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

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_of(f: impl FnOnce(&mut Writer)) -> String {
        let mut w = Writer::default();
        f(&mut w);
        hex::encode(w.finish())
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
