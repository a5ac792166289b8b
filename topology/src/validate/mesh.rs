//! The `[mesh]` table: retention, sync policy, checkpoint cadence, an HA
//! pair's publish timeout, and
//! the byte sizes and durations they are written in.

use std::time::Duration;

use serde_spanned::Spanned;

use crate::error::Sink;
use crate::model::{Checkpoint, Mesh, Retention, Security, SyncPolicy, PUBLISH_TIMEOUT};
use crate::raw::{ByteSize, RawMesh};

use super::at_least_one;

pub(super) fn mesh(s: &mut Sink, raw: RawMesh) -> Mesh {
    let mut retention = Retention::default();
    if let Some(r) = &raw.retention {
        if let Some(age) = &r.max_age {
            if let Some(d) = duration(s, age, "max_age") {
                retention.max_age = d;
            }
        }
        if let Some(bytes) = &r.max_bytes {
            let parsed = match bytes.get_ref() {
                ByteSize::Int(n) => u64::try_from(*n).ok(),
                ByteSize::Text(t) => parse_bytes(t),
            };
            match parsed {
                Some(n) => retention.max_bytes = n,
                None => s.error(
                    bytes.span(),
                    "max_bytes: expected a byte size such as \"1GiB\", \"512MiB\", \"10MB\" or \"1000\"",
                ),
            }
        }
    }

    let sync = match &raw.sync {
        None => SyncPolicy::Always,
        Some(v) if v.get_ref() == "always" => SyncPolicy::Always,
        Some(v) => match humantime::parse_duration(v.get_ref()) {
            Ok(d) if !d.is_zero() => SyncPolicy::Interval(d),
            _ => {
                s.error(
                    v.span(),
                    format!(
                        "sync = {:?}: expected \"always\" or a duration > 0 such as \"2m\" or \"500ms\"",
                        v.get_ref()
                    ),
                );
                SyncPolicy::Always
            }
        },
    };

    let defaults = Checkpoint::default();
    let checkpoint = match &raw.checkpoint {
        None => defaults,
        Some(c) => Checkpoint {
            every_events: at_least_one(s, &c.every_events, "every_events", defaults.every_events),
            every_ms: at_least_one(s, &c.every_ms, "every_ms", defaults.every_ms),
        },
    };

    let publish_timeout = match &raw.publish_timeout {
        None => PUBLISH_TIMEOUT,
        Some(v) => match duration(s, v, "publish_timeout") {
            Some(d) if !d.is_zero() && d <= Duration::from_secs(10) => d,
            Some(_) => {
                s.error(
                    v.span(),
                    format!(
                        "publish_timeout = {:?}: expected a duration above 0 and at most \"10s\" (an active that cannot publish for longer holds the role while its node falls silent)",
                        v.get_ref()
                    ),
                );
                PUBLISH_TIMEOUT
            }
            None => PUBLISH_TIMEOUT,
        },
    };

    let security = match &raw.security {
        None => Security::Secured,
        Some(v) => match v.get_ref().as_str() {
            "secured" => Security::Secured,
            "none" => Security::None,
            other => {
                s.error(
                    v.span(),
                    format!(
                        "security = {other:?}: expected \"none\" (the plaintext tree, for development) or leave it out for the secured tree"
                    ),
                );
                Security::Secured
            }
        },
    };

    Mesh {
        name: raw.name,
        security,
        retention,
        sync,
        checkpoint,
        publish_timeout,
    }
}

fn duration(s: &mut Sink, v: &Spanned<String>, key: &str) -> Option<Duration> {
    match humantime::parse_duration(v.get_ref()) {
        Ok(d) => Some(d),
        Err(_) => {
            s.error(
                v.span(),
                format!(
                    "{key} = {:?}: expected a duration such as \"30d\", \"1h\", \"2m\" or \"500ms\"",
                    v.get_ref()
                ),
            );
            None
        }
    }
}

/// `"1GiB"`, `"512MiB"`, `"10MB"`, `"1000"` (bytes); units are
/// case-insensitive and may follow a space. `None` if malformed or > u64.
pub(super) fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return None;
    }
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(factor)
}
