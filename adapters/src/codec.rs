//! Registers to values and back: pure, no I/O.
//!
//! Word order: a 32-bit type (`u32`, `i32`, `f32`) spans two consecutive
//! registers, **high word at the lower address** ("big-endian word order",
//! the Modbus convention and the default of most PLCs). Within a register the
//! bytes are big-endian as Modbus defines them, which tokio-modbus already
//! decodes into `u16`.
//!
//! Scale: the engineering value is `raw * scale`. Decoding an integer type
//! with `scale == 1.0` yields [`Value::Int`], anything else [`Value::Float`].
//! Encoding divides by `scale` and rounds to the nearest integer (half away
//! from zero) for integer types.

use events::Value;
use thiserror::Error;
use topology::{DataType, ModbusPoint, RegisterKind};

/// What to put on the wire for one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// One coil (function code 5).
    Bits(bool),
    /// Holding registers starting at the point's address, in wire order
    /// (function code 6 for one word, 16 for more).
    Words(Vec<u16>),
}

/// Why a value cannot be written to a point.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum EncodeError {
    /// A bool (or null) was given for a numeric point.
    #[error("expected a number, got {got}")]
    ExpectedNumber {
        /// The offending value, rendered for the message.
        got: String,
    },
    /// A number (or null) was given for a bool point.
    #[error("expected a bool, got {got}")]
    ExpectedBool {
        /// The offending value, rendered for the message.
        got: String,
    },
    /// NaN or an infinity cannot become a register value.
    #[error("value {value} is not a finite number")]
    NotFinite {
        /// The offending value.
        value: f64,
    },
    /// The scaled value does not fit the point's type.
    #[error("value {value} does not fit {ty} ({range}) at scale {scale}")]
    OutOfRange {
        /// The engineering value that was asked for.
        value: f64,
        /// The point's data type, as written in the topology.
        ty: &'static str,
        /// The raw range of that type, `0..=65535` style.
        range: &'static str,
        /// The point's scale, so the reader can see why a small value failed.
        scale: f64,
    },
    /// A scale of zero, NaN or infinity makes the raw value undefined.
    #[error("scale {scale} cannot be inverted")]
    BadScale {
        /// The point's scale.
        scale: f64,
    },
    /// Input registers and discrete inputs cannot be written over Modbus.
    #[error("{register} is read-only")]
    ReadOnly {
        /// The point's register, `input:7` style.
        register: String,
    },
    /// A numeric type on a coil: a coil holds a single bit.
    #[error("{register} holds a single bit; only type bool can be written to it")]
    NotABit {
        /// The point's register, `coil:7` style.
        register: String,
    },
}

/// Renders a value for an error message (kept here so the codec does not
/// depend on `events` having a `Display` for values).
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        _ => "null".to_owned(),
    }
}

/// How many registers (or bits) a read of `point` fetches.
pub fn read_count(point: &ModbusPoint) -> u16 {
    if point.register.kind.is_bit() {
        1
    } else {
        point.data_type.registers().max(1)
    }
}

/// Decodes what was read for `point`.
///
/// `regs` holds [`read_count`] words; for coils and discrete inputs it holds
/// one bit as 0 or 1. A bool point reads true from a non-zero register. A
/// numeric point on a bit reads 0 or 1, scaled. A slice shorter than the
/// type needs (a bug in the caller, not a field condition) gives
/// [`Value::Null`].
pub fn decode(point: &ModbusPoint, regs: &[u16]) -> Value {
    let bit = point.register.kind.is_bit();
    let Some(&first) = regs.first() else {
        return Value::Null;
    };
    let raw: i64 = match point.data_type {
        DataType::Bool => return Value::Bool(first != 0),
        _ if bit => i64::from(first != 0),
        DataType::U16 => i64::from(first),
        DataType::I16 => i64::from(first as i16),
        DataType::U32 | DataType::I32 | DataType::F32 => {
            let Some(&second) = regs.get(1) else {
                return Value::Null;
            };
            let word = (u32::from(first) << 16) | u32::from(second);
            match point.data_type {
                DataType::U32 => i64::from(word),
                DataType::I32 => i64::from(word as i32),
                // Through the f32's shortest decimal form: a PLC's 296.34573
                // should not read as 296.3457336425781.
                _ => {
                    let f = f32::from_bits(word);
                    let exact: f64 = f.to_string().parse().unwrap_or(f64::from(f));
                    return Value::Float(tidy(exact * point.scale));
                }
            }
        }
    };
    if point.scale == 1.0 {
        Value::Int(raw)
    } else {
        Value::Float(tidy(raw as f64 * point.scale))
    }
}

/// Rounds a scaled reading to 12 significant digits, so that 3 × 0.1 reads
/// 0.3, not 0.30000000000000004. No field value carries more precision.
fn tidy(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    format!("{x:.11e}").parse().unwrap_or(x)
}

/// Encodes `value` for a write to `point`; see the module docs for scale and
/// word order.
pub fn encode(point: &ModbusPoint, value: &Value) -> Result<Encoded, EncodeError> {
    let register = &point.register;
    if matches!(register.kind, RegisterKind::Input | RegisterKind::Discrete) {
        return Err(EncodeError::ReadOnly {
            register: register.to_string(),
        });
    }
    if let DataType::Bool = point.data_type {
        let Value::Bool(b) = value else {
            return Err(EncodeError::ExpectedBool {
                got: describe(value),
            });
        };
        return Ok(if register.kind.is_bit() {
            Encoded::Bits(*b)
        } else {
            Encoded::Words(vec![u16::from(*b)])
        });
    }
    if register.kind.is_bit() {
        return Err(EncodeError::NotABit {
            register: register.to_string(),
        });
    }
    let wanted = match value {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => {
            return Err(EncodeError::ExpectedNumber {
                got: describe(value),
            })
        }
    };
    if !wanted.is_finite() {
        return Err(EncodeError::NotFinite { value: wanted });
    }
    let scale = point.scale;
    if !(scale.is_finite() && scale != 0.0) {
        return Err(EncodeError::BadScale { scale });
    }
    let scaled = wanted / scale;
    let ty = point.data_type.as_str();
    let out_of_range = |range: &'static str| EncodeError::OutOfRange {
        value: wanted,
        ty,
        range,
        scale,
    };
    let split = |word: u32| Encoded::Words(vec![(word >> 16) as u16, word as u16]);
    match point.data_type {
        DataType::F32 => {
            let narrowed = scaled as f32;
            if !narrowed.is_finite() {
                return Err(out_of_range("about ±3.4e38"));
            }
            Ok(split(narrowed.to_bits()))
        }
        DataType::U16 => {
            let raw = scaled.round();
            if !(0.0..=f64::from(u16::MAX)).contains(&raw) {
                return Err(out_of_range("0..=65535"));
            }
            Ok(Encoded::Words(vec![raw as u16]))
        }
        DataType::I16 => {
            let raw = scaled.round();
            if !(f64::from(i16::MIN)..=f64::from(i16::MAX)).contains(&raw) {
                return Err(out_of_range("-32768..=32767"));
            }
            Ok(Encoded::Words(vec![raw as i16 as u16]))
        }
        DataType::U32 => {
            let raw = scaled.round();
            if !(0.0..=f64::from(u32::MAX)).contains(&raw) {
                return Err(out_of_range("0..=4294967295"));
            }
            Ok(split(raw as u32))
        }
        DataType::I32 => {
            let raw = scaled.round();
            if !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&raw) {
                return Err(out_of_range("-2147483648..=2147483647"));
            }
            Ok(split(raw as i32 as u32))
        }
        // Handled above; kept so the match stays exhaustive without a
        // wildcard that would hide a new data type.
        DataType::Bool => Err(EncodeError::ExpectedBool {
            got: describe(value),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(spec: &str, data_type: DataType, scale: f64) -> ModbusPoint {
        ModbusPoint {
            register: spec.parse().expect("register"),
            data_type,
            scale,
        }
    }

    #[test]
    fn decodes_each_type() {
        let p = |t| point("holding:0", t, 1.0);
        assert_eq!(decode(&p(DataType::U16), &[65535]), Value::Int(65535));
        assert_eq!(decode(&p(DataType::I16), &[65535]), Value::Int(-1));
        assert_eq!(decode(&p(DataType::I16), &[0x8000]), Value::Int(-32768));
        assert_eq!(
            decode(&p(DataType::U32), &[0x0001, 0x0002]),
            Value::Int(0x0001_0002)
        );
        assert_eq!(decode(&p(DataType::I32), &[0xFFFF, 0xFFFE]), Value::Int(-2));
        let bits = 1.5f32.to_bits();
        assert_eq!(
            decode(&p(DataType::F32), &[(bits >> 16) as u16, bits as u16]),
            Value::Float(1.5)
        );
        assert_eq!(decode(&p(DataType::Bool), &[0]), Value::Bool(false));
        assert_eq!(decode(&p(DataType::Bool), &[7]), Value::Bool(true));
    }

    #[test]
    fn word_order_is_high_word_first() {
        let p = point("input:10", DataType::U32, 1.0);
        assert_eq!(decode(&p, &[0x1234, 0x5678]), Value::Int(0x1234_5678));
        assert_eq!(
            encode(
                &point("holding:10", DataType::U32, 1.0),
                &Value::Int(0x1234_5678)
            ),
            Ok(Encoded::Words(vec![0x1234, 0x5678]))
        );
    }

    #[test]
    fn decodes_bits() {
        let coil = point("coil:3", DataType::Bool, 1.0);
        assert_eq!(decode(&coil, &[1]), Value::Bool(true));
        assert_eq!(decode(&coil, &[0]), Value::Bool(false));
        let numeric_bit = point("discrete:3", DataType::U16, 2.0);
        assert_eq!(decode(&numeric_bit, &[1]), Value::Float(2.0));
        assert_eq!(read_count(&coil), 1);
        assert_eq!(read_count(&point("holding:0", DataType::F32, 1.0)), 2);
        assert_eq!(
            decode(&point("holding:0", DataType::U16, 0.1), &[3]),
            Value::Float(0.3)
        );
        let bits = 296.34573_f32.to_bits();
        assert_eq!(
            decode(
                &point("holding:0", DataType::F32, 1.0),
                &[(bits >> 16) as u16, bits as u16]
            ),
            Value::Float(296.34573)
        );
    }

    #[test]
    fn scale_gives_floats() {
        let p = point("holding:0", DataType::U16, 0.1);
        let Value::Float(f) = decode(&p, &[1234]) else {
            panic!("expected a float");
        };
        assert!((f - 123.4).abs() < 1e-9);
        let p = point("holding:0", DataType::I16, 2.0);
        assert_eq!(decode(&p, &[0xFFFF]), Value::Float(-2.0));
        let p = point("holding:0", DataType::F32, 10.0);
        let bits = 0.5f32.to_bits();
        assert_eq!(
            decode(&p, &[(bits >> 16) as u16, bits as u16]),
            Value::Float(5.0)
        );
    }

    #[test]
    fn short_input_is_null() {
        assert_eq!(
            decode(&point("holding:0", DataType::U32, 1.0), &[1]),
            Value::Null
        );
        assert_eq!(
            decode(&point("holding:0", DataType::U16, 1.0), &[]),
            Value::Null
        );
    }

    #[test]
    fn encodes_with_scale_and_rounding() {
        let p = point("holding:100", DataType::U16, 0.1);
        assert_eq!(
            encode(&p, &Value::Float(123.44)),
            Ok(Encoded::Words(vec![1234]))
        );
        assert_eq!(
            encode(&p, &Value::Float(123.45)),
            Ok(Encoded::Words(vec![1235]))
        );
        assert_eq!(encode(&p, &Value::Int(2)), Ok(Encoded::Words(vec![20])));
        let p = point("holding:100", DataType::I16, 1.0);
        assert_eq!(
            encode(&p, &Value::Int(-1)),
            Ok(Encoded::Words(vec![0xFFFF]))
        );
        let p = point("holding:100", DataType::I32, 1.0);
        assert_eq!(
            encode(&p, &Value::Int(-2)),
            Ok(Encoded::Words(vec![0xFFFF, 0xFFFE]))
        );
        let p = point("holding:100", DataType::F32, 1.0);
        let bits = 2.25f32.to_bits();
        assert_eq!(
            encode(&p, &Value::Float(2.25)),
            Ok(Encoded::Words(vec![(bits >> 16) as u16, bits as u16]))
        );
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let cases = [
            (DataType::U16, 0.5, Value::Float(100.5)),
            (DataType::I16, 1.0, Value::Int(-300)),
            (DataType::U32, 1.0, Value::Int(4_000_000_000)),
            (DataType::I32, 1.0, Value::Int(-2_000_000_000)),
            (DataType::F32, 1.0, Value::Float(-0.25)),
        ];
        for (ty, scale, value) in cases {
            let p = point("holding:5", ty, scale);
            let Ok(Encoded::Words(words)) = encode(&p, &value) else {
                panic!("{ty:?} did not encode");
            };
            assert_eq!(decode(&p, &words), value, "{ty:?}");
        }
    }

    #[test]
    fn encodes_bools() {
        assert_eq!(
            encode(&point("coil:1", DataType::Bool, 1.0), &Value::Bool(true)),
            Ok(Encoded::Bits(true))
        );
        assert_eq!(
            encode(&point("holding:1", DataType::Bool, 1.0), &Value::Bool(true)),
            Ok(Encoded::Words(vec![1]))
        );
    }

    #[test]
    fn refuses_wrong_types() {
        let num = point("holding:1", DataType::U16, 1.0);
        let err = encode(&num, &Value::Bool(true)).expect_err("bool for a number");
        assert_eq!(err.to_string(), "expected a number, got true");
        let err = encode(&num, &Value::Null).expect_err("null");
        assert_eq!(err.to_string(), "expected a number, got null");
        let flag = point("coil:1", DataType::Bool, 1.0);
        let err = encode(&flag, &Value::Int(1)).expect_err("number for a bool");
        assert_eq!(err.to_string(), "expected a bool, got 1");
        let err = encode(&point("coil:1", DataType::U16, 1.0), &Value::Int(1))
            .expect_err("number on a coil");
        assert!(
            err.to_string().contains("coil:1 holds a single bit"),
            "{err}"
        );
    }

    #[test]
    fn refuses_read_only_registers() {
        for spec in ["input:3", "discrete:3"] {
            let err = encode(&point(spec, DataType::Bool, 1.0), &Value::Bool(true))
                .expect_err("read-only");
            assert_eq!(err.to_string(), format!("{spec} is read-only"));
        }
    }

    #[test]
    fn refuses_non_finite_and_bad_scale() {
        let p = point("holding:1", DataType::F32, 1.0);
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(matches!(
                encode(&p, &Value::Float(v)),
                Err(EncodeError::NotFinite { .. })
            ));
        }
        let p = point("holding:1", DataType::U16, 0.0);
        assert_eq!(
            encode(&p, &Value::Int(1)).map_err(|e| e.to_string()),
            Err("scale 0 cannot be inverted".to_owned())
        );
    }

    #[test]
    fn range_errors_name_type_range_and_scale() {
        let msg = |ty, scale, v: Value| {
            encode(&point("holding:1", ty, scale), &v)
                .expect_err("out of range")
                .to_string()
        };
        assert_eq!(
            msg(DataType::U16, 1.0, Value::Int(70000)),
            "value 70000 does not fit u16 (0..=65535) at scale 1"
        );
        assert_eq!(
            msg(DataType::U16, 1.0, Value::Int(-1)),
            "value -1 does not fit u16 (0..=65535) at scale 1"
        );
        assert_eq!(
            msg(DataType::U16, 0.1, Value::Float(6553.6)),
            "value 6553.6 does not fit u16 (0..=65535) at scale 0.1"
        );
        assert_eq!(
            msg(DataType::I16, 1.0, Value::Int(32768)),
            "value 32768 does not fit i16 (-32768..=32767) at scale 1"
        );
        assert!(msg(DataType::U32, 1.0, Value::Int(1 << 32)).contains("does not fit u32"));
        assert!(msg(DataType::I32, 1.0, Value::Int(-(1 << 31) - 1)).contains("does not fit i32"));
        assert!(msg(DataType::F32, 1.0, Value::Float(1e39)).contains("does not fit f32"));
        // The edges themselves fit.
        let p = point("holding:1", DataType::I16, 1.0);
        assert!(encode(&p, &Value::Int(-32768)).is_ok());
        assert!(encode(&p, &Value::Float(32767.4)).is_ok());
    }
}
