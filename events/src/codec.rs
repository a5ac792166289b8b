//! The CBOR codec of the envelope: [`encode`] and [`decode`].
//!
//! The encoder writes through [`crate::cbor::Writer`] so the bytes are fixed
//! by this crate alone. The decoder reads the envelope's schema in place
//! with [`crate::cbor::Reader`], so a bad message gets an error naming the
//! field and what was expected, and a good one costs little more than its
//! own strings.
//!
//! - `encode.rs`: the encoder.
//! - `error.rs`: [`DecodeError`], what a bad message gets.
//! - `decode.rs`: the decoder, the envelope and every body by name.
//! - `field.rs`: what the decoder reads every map and field with (the
//!   order of errors, the paths they name).

mod decode;
mod encode;
mod error;
mod field;

pub use decode::decode;
pub use encode::encode;
pub use error::DecodeError;

/// The old decoder's value type, for the tests that build broken events.
#[cfg(test)]
type Cbor = ciborium::Value;

#[cfg(test)]
mod oracle;

#[cfg(test)]
mod differential;

#[cfg(test)]
mod tests;
