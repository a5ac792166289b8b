//! One `[[node]]` table on its own: its id, view, members and witness
//! (pair rules, `prefer`), hooks, Modbus device, and the names of its
//! points (each point's own fields are `points.rs`'s).

use std::collections::HashMap;

use serde_spanned::Spanned;

use crate::error::Sink;
use crate::model::{Hooks, Member, ModbusDevice, Node, Register, RegisterKind, View};
use crate::raw::{RawModbus, RawNode};

use super::points::point;
use super::ports::endpoint;
use super::{at_least_one, EndpointMeta, NodeMeta};

/// One NATS subject token as the contract allows it: `[a-z0-9_]+`.
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn is_id(s: &str) -> bool {
    s.split('.').all(is_token)
}

pub(super) fn node(s: &mut Sink, raw: &RawNode) -> (Node, NodeMeta) {
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
