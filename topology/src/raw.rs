//! The file as written: serde shapes with spans, before any validation.
//!
//! Values that need checking are kept as spanned strings or wide integers so
//! that validation, not serde, reports them: serde stops at the first error,
//! validation collects them all.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_spanned::Spanned;

type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub mesh: RawMesh,
    #[serde(default)]
    pub node: Vec<RawNode>,
    #[serde(default)]
    pub client: Vec<S<RawClient>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClient {
    pub name: S<String>,
    pub role: S<String>,
    pub scope: S<String>,
    pub password_hash: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMesh {
    pub name: String,
    pub retention: Option<RawRetention>,
    pub sync: Option<S<String>>,
    pub checkpoint: Option<RawCheckpoint>,
    pub publish_timeout: Option<S<String>>,
    pub security: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetention {
    pub max_age: Option<S<String>>,
    pub max_bytes: Option<S<ByteSize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheckpoint {
    pub every_events: Option<S<i64>>,
    pub every_ms: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub id: S<String>,
    pub view: Option<S<String>>,
    pub members: Option<S<Vec<S<RawEndpoint>>>>,
    pub witness: Option<S<RawEndpoint>>,
    pub prefer: Option<S<String>>,
    pub hooks: Option<RawHooks>,
    pub modbus: Option<S<RawModbus>>,
    #[serde(default)]
    pub point: Vec<S<RawPoint>>,
}

/// A member (with `name`) or a witness (without); one shape so the port keys
/// are written once, and the name rule is checked in validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpoint {
    pub name: Option<S<String>>,
    pub host: S<String>,
    pub port_base: Option<S<i64>>,
    pub nats_port: Option<S<i64>>,
    pub leafnode_port: Option<S<i64>>,
    pub cluster_port: Option<S<i64>>,
    pub raft_port: Option<S<i64>>,
    pub http_port: Option<S<i64>>,
    pub opcua_port: Option<S<i64>>,
    pub monitor_port: Option<S<i64>>,
}

impl RawEndpoint {
    /// The explicit port keys, in [`crate::Ports::all`] order.
    pub fn explicit_ports(&self) -> [&Option<S<i64>>; 7] {
        [
            &self.nats_port,
            &self.leafnode_port,
            &self.cluster_port,
            &self.raft_port,
            &self.http_port,
            &self.opcua_port,
            &self.monitor_port,
        ]
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHooks {
    pub on_activate: Option<String>,
    pub on_deactivate: Option<String>,
    pub timeout_ms: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModbus {
    pub address: S<String>,
    pub unit: Option<S<i64>>,
    pub poll_ms: Option<S<i64>>,
    pub timeout_ms: Option<S<i64>>,
    pub life_sign: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPoint {
    pub name: S<String>,
    pub source: Option<S<String>>,
    pub sim: Option<S<RawSim>>,
    pub register: Option<S<String>>,
    #[serde(rename = "type")]
    pub data_type: Option<S<String>>,
    pub scale: Option<S<f64>>,
    pub unit: Option<String>,
    pub writable: Option<S<bool>>,
    pub deadband: Option<S<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSim {
    pub kind: Option<S<String>>,
    pub period_s: Option<S<f64>>,
    pub min: Option<S<f64>>,
    pub max: Option<S<f64>>,
    pub every_ms: Option<S<i64>>,
}

/// `max_bytes` as written: `"1GiB"` or a plain integer.
#[derive(Debug)]
pub(crate) enum ByteSize {
    Text(String),
    Int(i64),
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ByteSizeVisitor;

        impl Visitor<'_> for ByteSizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte size such as \"1GiB\", \"512MiB\", \"10MB\" or an integer")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                Ok(ByteSize::Int(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                i64::try_from(v)
                    .map(ByteSize::Int)
                    .map_err(|_| E::custom("byte size too large"))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                Ok(ByteSize::Text(v.to_owned()))
            }
        }

        deserializer.deserialize_any(ByteSizeVisitor)
    }
}
