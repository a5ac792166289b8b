//! Ports: one endpoint's (defaults, `port_base`, per-port keys, no port
//! twice), and across the file (no two endpoints on one host share a port).

use std::ops::Range;

use serde_spanned::Spanned;

use crate::error::Sink;
use crate::model::{Endpoint, Ports};
use crate::raw::RawEndpoint;

use super::{EndpointMeta, NodeMeta};

/// Resolves ports: defaults, then `port_base`, then per-port keys.
pub(super) fn endpoint(
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

/// Two endpoints on the same host string never share a port, or the second
/// process to start would fail to bind (or worse, talk to the wrong server).
pub(super) fn port_clashes(s: &mut Sink, metas: &[NodeMeta]) {
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
