//! Turning the raw file into a [`Topology`], collecting every problem.
//!
//! Serde only checks shapes (and stops at the first problem); every rule of
//! the contract (shared/TOPOLOGY.md) is checked here so that one run reports
//! all of them. Checks run in three passes: per value (while converting each
//! node), across the tree (ids, parents, names), and across hosts (ports).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde_spanned::Spanned;

use crate::error::{Diagnostic, Sink, TopologyError};
use crate::model::{
    Checkpoint, DataType, Endpoint, Hooks, Member, Mesh, ModbusDevice, ModbusPoint, Node, Point,
    Ports, Register, RegisterKind, Retention, SimKind, SimSpec, Source, SyncPolicy, Topology, View,
};
use crate::raw::{ByteSize, RawEndpoint, RawFile, RawMesh, RawModbus, RawNode, RawPoint, RawSim};

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is the failure report in tests
mod tests;

pub(crate) fn load(path: &Path) -> Result<Topology, TopologyError> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&file, &text),
        Err(err) => Err(TopologyError {
            errors: vec![Diagnostic {
                file,
                line: 0,
                col: 0,
                message: format!("cannot read the topology file: {err}"),
            }],
        }),
    }
}

pub(crate) fn parse(file: &str, text: &str) -> Result<Topology, TopologyError> {
    let mut sink = Sink::new(file, text);
    let raw: RawFile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(err) => {
            // toml's message may span lines; a diagnostic is one line. The
            // raw shapes read numbers as i64/f64, which means nothing to an
            // operator.
            let message = err
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ")
                .replace("expected i64", "expected an integer")
                .replace("expected f64", "expected a number");
            sink.error(err.span().unwrap_or(0..0), message);
            return Err(sink.into_error());
        }
    };

    let mesh = mesh(&mut sink, raw.mesh);
    let mut nodes = Vec::with_capacity(raw.node.len());
    let mut metas = Vec::with_capacity(raw.node.len());
    for raw_node in &raw.node {
        let (node, meta) = node(&mut sink, raw_node);
        nodes.push(node);
        metas.push(meta);
    }
    tree(&mut sink, &nodes, &metas);
    port_clashes(&mut sink, &metas);
    sink.finish()?;
    Ok(Topology {
        file: file.to_owned(),
        mesh,
        nodes,
    })
}

/// What the cross-node passes need to know about a node beyond [`Node`]:
/// where things are written, and which parts passed their own checks.
struct NodeMeta {
    id_span: Range<usize>,
    /// The id passed its syntax check; tree rules only look at these.
    id_ok: bool,
    /// Point names that passed their own checks, with their spans.
    points: Vec<(String, Range<usize>)>,
    /// Endpoints (members, witness) whose ports resolved.
    endpoints: Vec<EndpointMeta>,
}

struct EndpointMeta {
    /// `node/member` or `node/witness`, as named in clash messages.
    label: String,
    host: String,
    ports: Ports,
    /// Where each port (in [`Ports::all`] order) was set: its own key, the
    /// `port_base`, or the whole endpoint when defaults apply.
    spans: [Range<usize>; 7],
}

// ---------------------------------------------------------------- mesh

fn mesh(s: &mut Sink, raw: RawMesh) -> Mesh {
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

    Mesh {
        name: raw.name,
        retention,
        sync,
        checkpoint,
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
pub(crate) fn parse_bytes(text: &str) -> Option<u64> {
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

/// A count or interval that must be >= 1; `default` when absent.
fn at_least_one(s: &mut Sink, v: &Option<Spanned<i64>>, key: &str, default: u64) -> u64 {
    match v {
        None => default,
        Some(v) => match u64::try_from(*v.get_ref()) {
            Ok(n) if n >= 1 => n,
            _ => {
                s.error(
                    v.span(),
                    format!("{key} = {}: expected an integer >= 1", v.get_ref()),
                );
                default
            }
        },
    }
}

// ---------------------------------------------------------------- one node

/// One NATS subject token as the contract allows it: `[a-z0-9_]+`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn is_id(s: &str) -> bool {
    s.split('.').all(is_token)
}

fn node(s: &mut Sink, raw: &RawNode) -> (Node, NodeMeta) {
    let id = raw.id.get_ref().clone();
    let id_ok = is_id(&id);
    if !id_ok {
        s.error(
            raw.id.span(),
            format!(
                "node id {id:?}: expected segments of lowercase letters, digits and \"_\" joined by \".\", e.g. \"root.tunnel_a\""
            ),
        );
    }
    let mut meta = NodeMeta {
        id_span: raw.id.span(),
        id_ok,
        points: Vec::new(),
        endpoints: Vec::new(),
    };

    let view = match &raw.view {
        None => View::Subtree,
        Some(v) => match v.get_ref().as_str() {
            "subtree" => View::Subtree,
            "tree" => View::Tree,
            other => {
                s.error(
                    v.span(),
                    format!("view = {other:?}: expected \"subtree\" or \"tree\""),
                );
                View::Subtree
            }
        },
    };

    let (members, member_names, count) = members(s, &id, raw, &mut meta.endpoints);

    let witness = raw.witness.as_ref().and_then(|w| {
        if let Some(name) = &w.get_ref().name {
            s.error(name.span(), "a witness has no name: remove `name`");
        }
        endpoint(s, w, format!("{id}/witness"), &mut meta.endpoints)
    });
    match (count, &raw.witness, &raw.members) {
        (2, None, Some(list)) => s.error(
            list.span(),
            format!(
                "node \"{id}\" has 2 members (an HA pair) and needs a witness: witness = {{ host = \"...\", port_base = N }}"
            ),
        ),
        (1, Some(w), _) => s.error(
            w.span(),
            format!("node \"{id}\" has a single member: a witness only goes with 2 members (an HA pair)"),
        ),
        _ => {}
    }

    let prefer = raw.prefer.as_ref().map(|p| {
        let name = p.get_ref();
        if count != 2 {
            s.error(
                p.span(),
                format!(
                    "prefer = {name:?} needs an HA pair (2 members); node \"{id}\" has {count}"
                ),
            );
        } else if !member_names.contains(name) {
            s.error(
                p.span(),
                format!(
                    "prefer = {name:?} names no member of node \"{id}\": expected one of {}",
                    member_names.join(", ")
                ),
            );
        }
        name.clone()
    });

    let hooks = raw.hooks.as_ref().map(|h| Hooks {
        on_activate: h.on_activate.clone(),
        on_deactivate: h.on_deactivate.clone(),
        timeout_ms: at_least_one(s, &h.timeout_ms, "timeout_ms", 5000),
    });

    let modbus = raw.modbus.as_ref().map(|m| modbus_device(s, m));

    let mut points = Vec::with_capacity(raw.point.len());
    let mut first_line: HashMap<&str, usize> = HashMap::new();
    let mut modbus_missing_reported = false;
    for p in &raw.point {
        let rp = p.get_ref();
        let name = rp.name.get_ref();
        if name.starts_with('_') {
            s.error(
                rp.name.span(),
                format!(
                    "point name {name:?} starts with \"_\", which is reserved for system events"
                ),
            );
        } else if !is_token(name) {
            s.error(
                rp.name.span(),
                format!(
                    "point name {name:?}: expected one segment of lowercase letters, digits and \"_\""
                ),
            );
        } else if let Some(line) = first_line.get(name.as_str()) {
            s.error(
                rp.name.span(),
                format!("duplicate point \"{name}\" in node \"{id}\" (first at line {line})"),
            );
        } else {
            first_line.insert(name, s.position(rp.name.span().start).0);
            meta.points.push((name.clone(), rp.name.span()));
        }
        let has_table = raw.modbus.is_some();
        if let Some(point) = point(s, rp, has_table, &mut modbus_missing_reported) {
            points.push(point);
        }
    }

    let line = s.position(raw.id.span().start).0;
    let node = Node {
        id,
        view,
        members,
        witness,
        prefer,
        hooks,
        modbus,
        points,
        line,
    };
    (node, meta)
}

/// The node's members, the names that passed their checks, and how many
/// members were written (the pair rules count what was written).
fn members(
    s: &mut Sink,
    id: &str,
    raw: &RawNode,
    endpoints: &mut Vec<EndpointMeta>,
) -> (Vec<Member>, Vec<String>, usize) {
    let Some(list) = &raw.members else {
        s.error(
            raw.id.span(),
            format!(
                "node \"{id}\" has no members: expected members = [{{ name = \"a\", host = \"...\", port_base = N }}] (1 member, or 2 with a witness)"
            ),
        );
        return (Vec::new(), Vec::new(), 0);
    };
    let count = list.get_ref().len();
    if count == 0 || count > 2 {
        s.error(
            list.span(),
            format!(
                "node \"{id}\" has {count} members: expected 1 (single) or 2 (HA pair, with a witness)"
            ),
        );
    }
    let mut members = Vec::with_capacity(count);
    let mut names: Vec<String> = Vec::with_capacity(count);
    for (i, m) in list.get_ref().iter().enumerate() {
        let name = match &m.get_ref().name {
            None => {
                s.error(
                    m.span(),
                    format!(
                        "member {} of node \"{id}\" has no name: expected name = \"a\"",
                        i + 1
                    ),
                );
                None
            }
            Some(n) => {
                let v = n.get_ref();
                if !is_token(v) {
                    s.error(
                        n.span(),
                        format!("member name {v:?}: expected lowercase letters, digits and \"_\""),
                    );
                    None
                } else if names.contains(v) {
                    s.error(
                        n.span(),
                        format!("duplicate member \"{v}\" in node \"{id}\""),
                    );
                    None
                } else {
                    names.push(v.clone());
                    Some(v.clone())
                }
            }
        };
        let label = format!("{id}/{}", name.as_deref().unwrap_or("?"));
        let endpoint = endpoint(s, m, label, endpoints);
        if let (Some(name), Some(endpoint)) = (name, endpoint) {
            members.push(Member { name, endpoint });
        }
    }
    (members, names, count)
}

/// Resolves ports: defaults, then `port_base`, then per-port keys.
fn endpoint(
    s: &mut Sink,
    raw: &Spanned<RawEndpoint>,
    label: String,
    metas: &mut Vec<EndpointMeta>,
) -> Option<Endpoint> {
    let ep = raw.get_ref();
    let host = ep.host.get_ref();
    let mut ok = true;
    if host.is_empty() || host.contains(char::is_whitespace) {
        s.error(
            ep.host.span(),
            format!("host {host:?}: expected a host name or address"),
        );
        ok = false;
    }

    let mut ports = Ports::DEFAULT;
    let mut spans: [Range<usize>; 7] = std::array::from_fn(|_| raw.span());
    if let Some(base) = &ep.port_base {
        match u16::try_from(*base.get_ref())
            .ok()
            .filter(|b| *b >= 1)
            .and_then(Ports::from_base)
        {
            Some(p) => {
                ports = p;
                spans = std::array::from_fn(|_| base.span());
            }
            None => {
                s.error(
                    base.span(),
                    format!(
                        "port_base = {}: expected 1..={} so that port_base + 6 fits in a port",
                        base.get_ref(),
                        u16::MAX - 6
                    ),
                );
                ok = false;
            }
        }
    }
    for (i, key) in ep.explicit_ports().into_iter().enumerate() {
        let Some(v) = key else { continue };
        match u16::try_from(*v.get_ref()) {
            Ok(port) if port >= 1 => {
                ports.set(i, port);
                spans[i] = v.span();
            }
            _ => {
                s.error(
                    v.span(),
                    format!(
                        "{} = {}: expected a port in 1..=65535",
                        Ports::KEYS[i],
                        v.get_ref()
                    ),
                );
                ok = false;
            }
        }
    }
    let all = ports.all();
    for i in 1..all.len() {
        if let Some(j) = (0..i).find(|&j| all[j] == all[i]) {
            s.error(
                spans[i].clone(),
                format!(
                    "port {} of {label} is used twice ({} and {})",
                    all[i],
                    Ports::KEYS[j],
                    Ports::KEYS[i]
                ),
            );
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    metas.push(EndpointMeta {
        label,
        host: host.clone(),
        ports,
        spans,
    });
    Some(Endpoint {
        host: host.clone(),
        ports,
    })
}

/// Always returns a device when the table is present (with defaults in
/// place of bad values) so that its points are not also reported as lacking
/// a `modbus` table.
fn modbus_device(s: &mut Sink, raw: &Spanned<RawModbus>) -> ModbusDevice {
    let m = raw.get_ref();
    let address = m.address.get_ref();
    let valid_address = address.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p >= 1)
    });
    if !valid_address {
        s.error(
            m.address.span(),
            format!("modbus address {address:?}: expected host:port, e.g. \"192.168.1.10:502\""),
        );
    }
    let unit = match &m.unit {
        None => 1,
        Some(v) => u8::try_from(*v.get_ref()).unwrap_or_else(|_| {
            s.error(
                v.span(),
                format!(
                    "unit = {}: expected a Modbus unit id in 0..=255",
                    v.get_ref()
                ),
            );
            1
        }),
    };
    let life_sign = m.life_sign.as_ref().and_then(|v| {
        match v.get_ref().parse::<Register>() {
            Ok(reg) if reg.kind == RegisterKind::Holding => Some(reg),
            Ok(reg) => {
                s.error(
                    v.span(),
                    format!(
                        "life_sign = \"{reg}\": expected a holding register (holding:N), the counter the active member writes"
                    ),
                );
                None
            }
            Err(err) => {
                s.error(v.span(), format!("life_sign: {err}"));
                None
            }
        }
    });
    ModbusDevice {
        address: address.clone(),
        unit,
        poll_ms: at_least_one(s, &m.poll_ms, "poll_ms", 200),
        timeout_ms: at_least_one(s, &m.timeout_ms, "timeout_ms", 500),
        life_sign,
    }
}

// ---------------------------------------------------------------- points

fn point(
    s: &mut Sink,
    raw: &RawPoint,
    has_modbus_table: bool,
    modbus_missing_reported: &mut bool,
) -> Option<Point> {
    let name = raw.name.get_ref();
    let deadband = raw.deadband.as_ref().and_then(|d| {
        let v = *d.get_ref();
        if v >= 0.0 && v.is_finite() {
            Some(v)
        } else {
            s.error(d.span(), format!("deadband = {v}: expected a number >= 0"));
            None
        }
    });
    let Some(source) = &raw.source else {
        s.error(
            raw.name.span(),
            format!(
                "point \"{name}\" has no source: expected source = \"sim\" or source = \"modbus\""
            ),
        );
        return None;
    };
    let source = match source.get_ref().as_str() {
        "sim" => sim_source(s, raw, source.span()),
        "modbus" => modbus_source(
            s,
            raw,
            source.span(),
            has_modbus_table,
            modbus_missing_reported,
        ),
        other => {
            s.error(
                source.span(),
                format!("source = {other:?}: expected \"sim\" or \"modbus\""),
            );
            None
        }
    }?;
    Some(Point {
        name: name.clone(),
        source,
        unit: raw.unit.clone(),
        writable: raw.writable.as_ref().is_some_and(|w| *w.get_ref()),
        deadband,
    })
}

fn sim_source(s: &mut Sink, raw: &RawPoint, source_span: Range<usize>) -> Option<Source> {
    let name = raw.name.get_ref();
    let modbus_only = [
        ("register", raw.register.as_ref().map(Spanned::span)),
        ("type", raw.data_type.as_ref().map(Spanned::span)),
        ("scale", raw.scale.as_ref().map(Spanned::span)),
    ];
    for (key, span) in modbus_only {
        if let Some(span) = span {
            s.error(
                span,
                format!("{key} only applies to modbus points; point \"{name}\" is a sim point"),
            );
        }
    }
    if let Some(w) = &raw.writable {
        if *w.get_ref() {
            s.error(
                w.span(),
                format!(
                    "sim point \"{name}\" cannot be writable: only modbus holding registers and coils accept writes"
                ),
            );
        }
    }
    let Some(sim) = &raw.sim else {
        s.error(
            source_span,
            format!("sim point \"{name}\" needs a sim table: expected sim = {{ kind = \"sine\" }}"),
        );
        return None;
    };
    sim_spec(s, name, sim).map(Source::Sim)
}

fn sim_spec(s: &mut Sink, name: &str, sim: &Spanned<RawSim>) -> Option<SimSpec> {
    let spec = sim.get_ref();
    let kind = match &spec.kind {
        None => {
            s.error(
                sim.span(),
                format!(
                    "sim table of point \"{name}\" needs kind: expected one of sine, ramp, random_walk, square"
                ),
            );
            None
        }
        Some(k) => match k.get_ref().parse::<SimKind>() {
            Ok(kind) => Some(kind),
            Err(err) => {
                s.error(k.span(), err.to_string());
                None
            }
        },
    };
    let period_s = match &spec.period_s {
        None => 30.0,
        Some(v) => {
            let p = *v.get_ref();
            if !(p > 0.0 && p.is_finite()) {
                s.error(
                    v.span(),
                    format!("period_s = {p}: expected a number of seconds > 0"),
                );
            }
            p
        }
    };
    let mut finite = |v: &Option<Spanned<f64>>, key: &str, default: f64| match v {
        None => default,
        Some(v) => {
            let x = *v.get_ref();
            if !x.is_finite() {
                s.error(v.span(), format!("{key} = {x}: expected a finite number"));
            }
            x
        }
    };
    let min = finite(&spec.min, "min", 0.0);
    let max = finite(&spec.max, "max", 100.0);
    if min > max {
        let span = spec
            .max
            .as_ref()
            .or(spec.min.as_ref())
            .map_or_else(|| sim.span(), Spanned::span);
        s.error(
            span,
            format!("max = {max} is below min = {min}: expected min <= max"),
        );
    }
    let every_ms = at_least_one(s, &spec.every_ms, "every_ms", 1000);
    Some(SimSpec {
        kind: kind?,
        period_s,
        min,
        max,
        every_ms,
    })
}

fn modbus_source(
    s: &mut Sink,
    raw: &RawPoint,
    source_span: Range<usize>,
    has_modbus_table: bool,
    missing_reported: &mut bool,
) -> Option<Source> {
    let name = raw.name.get_ref();
    if let Some(sim) = &raw.sim {
        s.error(
            sim.span(),
            format!("sim only applies to sim points; point \"{name}\" is a modbus point"),
        );
    }
    if !has_modbus_table && !*missing_reported {
        s.error(
            source_span.clone(),
            format!(
                "modbus point \"{name}\" needs the node's modbus table: expected modbus = {{ address = \"host:port\" }} on the node"
            ),
        );
        *missing_reported = true;
    }
    let register = match &raw.register {
        None => {
            s.error(
                source_span,
                format!(
                    "modbus point \"{name}\" needs register = \"holding:N\" (or input:N, coil:N, discrete:N)"
                ),
            );
            None
        }
        Some(r) => match r.get_ref().parse::<Register>() {
            Ok(reg) => Some((reg, r.span())),
            Err(err) => {
                s.error(r.span(), err.to_string());
                None
            }
        },
    };
    let explicit_type = match &raw.data_type {
        None => None,
        Some(t) => match t.get_ref().parse::<DataType>() {
            Ok(dt) => Some((dt, t.span())),
            Err(err) => {
                s.error(t.span(), err.to_string());
                return None;
            }
        },
    };
    let scale = match &raw.scale {
        None => 1.0,
        Some(v) => {
            let x = *v.get_ref();
            if !(x.is_finite() && x != 0.0) {
                s.error(
                    v.span(),
                    format!("scale = {x}: expected a finite non-zero number"),
                );
            }
            x
        }
    };
    let (register, register_span) = register?;
    let data_type = explicit_type
        .as_ref()
        .map_or_else(|| register.kind.default_data_type(), |(dt, _)| *dt);

    if register.kind.is_bit() && data_type != DataType::Bool {
        let span = explicit_type.map_or(register_span.clone(), |(_, span)| span);
        s.error(
            span,
            format!(
                "type = \"{data_type}\" does not fit {register}: coil and discrete registers hold type \"bool\""
            ),
        );
    }
    if data_type.registers() == 2 && register.address == u16::MAX {
        s.error(
            register_span,
            format!(
                "type \"{data_type}\" takes 2 registers but {register} is the last address: expected an address <= 65534"
            ),
        );
    }
    if let Some(w) = &raw.writable {
        if *w.get_ref() && !register.kind.is_writable() {
            s.error(
                w.span(),
                format!(
                    "point \"{name}\" on {register} cannot be writable: only holding registers and coils accept writes"
                ),
            );
        }
    }
    if let Some(v) = &raw.scale {
        if data_type == DataType::Bool && *v.get_ref() != 1.0 {
            s.error(
                v.span(),
                format!("scale does not apply to bool point \"{name}\""),
            );
        }
    }
    Some(Source::Modbus(ModbusPoint {
        register,
        data_type,
        scale,
    }))
}

// ---------------------------------------------------------------- the tree

fn tree(s: &mut Sink, nodes: &[Node], metas: &[NodeMeta]) {
    if nodes.is_empty() {
        s.error(
            0..0,
            "no [[node]] tables: expected at least the root node, e.g. [[node]] id = \"root\"",
        );
        return;
    }

    // id -> line of its first occurrence; roots in file order.
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut roots: Vec<(&Node, &NodeMeta)> = Vec::new();
    for (n, m) in nodes.iter().zip(metas) {
        if !m.id_ok {
            continue;
        }
        if let Some(line) = first.get(n.id.as_str()) {
            s.error(
                m.id_span.clone(),
                format!("duplicate node id \"{}\" (first at line {line})", n.id),
            );
            continue;
        }
        first.insert(&n.id, n.line);
        if n.depth() == 0 {
            roots.push((n, m));
        }
    }

    let root = roots.first().map(|(n, _)| *n);
    match root {
        Some(root) => {
            for (extra, m) in roots.iter().skip(1) {
                s.error(
                    m.id_span.clone(),
                    format!(
                        "second root node \"{}\": the root is \"{}\" (line {}), so every other id starts with \"{}.\"",
                        extra.id, root.id, root.line, root.id
                    ),
                );
            }
        }
        None => {
            let span = metas
                .iter()
                .find(|m| m.id_ok)
                .unwrap_or(&metas[0])
                .id_span
                .clone();
            s.error(
                span,
                "no root node: expected exactly one node whose id has a single segment, e.g. \"root\"",
            );
        }
    }

    let mut reported: HashSet<&str> = HashSet::new();
    for (n, m) in nodes.iter().zip(metas) {
        let Some(parent) = n.parent_id() else {
            continue;
        };
        if !m.id_ok {
            continue;
        }
        let top = n.id.split('.').next().unwrap_or_default();
        match root {
            Some(root) if top != root.id => {
                // Once per id, so a duplicated stray node is one problem.
                if reported.insert(&n.id) {
                    s.error(
                        m.id_span.clone(),
                        format!(
                            "node \"{}\" is not under the root \"{}\": every id starts with \"{}.\"",
                            n.id, root.id, root.id
                        ),
                    );
                }
            }
            // Without a root, "has no parent" for its children would only
            // repeat "no root node".
            None if n.depth() == 1 => {}
            _ => {
                if !first.contains_key(parent) && reported.insert(&n.id) {
                    s.error(
                        m.id_span.clone(),
                        format!("node \"{}\" has no parent \"{parent}\"", n.id),
                    );
                }
            }
        }
    }

    // A point named like a child node would share its subject prefix
    // (canopy.ev.<node>.<name>), so consumers could not tell them apart.
    for (n, m) in nodes.iter().zip(metas) {
        if !m.id_ok {
            continue;
        }
        for (point, span) in &m.points {
            let child = format!("{}.{point}", n.id);
            if first.contains_key(child.as_str()) {
                s.error(
                    span.clone(),
                    format!(
                        "point \"{point}\" of node \"{}\" has the same name as child node \"{child}\": expected distinct names",
                        n.id
                    ),
                );
            }
        }
    }
}

/// Two endpoints on the same host string never share a port, or the second
/// process to start would fail to bind (or worse, talk to the wrong server).
fn port_clashes(s: &mut Sink, metas: &[NodeMeta]) {
    let endpoints: Vec<&EndpointMeta> = metas.iter().flat_map(|m| &m.endpoints).collect();
    for (j, later) in endpoints.iter().enumerate() {
        let later_ports = later.ports.all();
        for earlier in &endpoints[..j] {
            if earlier.host != later.host {
                continue;
            }
            let earlier_ports = earlier.ports.all();
            if let Some(i) = later_ports.iter().position(|p| earlier_ports.contains(p)) {
                s.error(
                    later.spans[i].clone(),
                    format!(
                        "port {} of {} clashes with {} on {}",
                        later_ports[i], later.label, earlier.label, later.host
                    ),
                );
            }
        }
    }
}
