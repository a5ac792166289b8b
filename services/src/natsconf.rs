//! nats-server configuration generated from the topology.
//!
//! Each member (and later each witness) runs its own nats-server: its own
//! JetStream domain named after the node, a leafnode listener when the node
//! has children, and a leafnode remote to every server of its parent. The
//! output is deterministic so that a restarted member writes the same file.
//!
//! On the secured tree (every tree but `[mesh] security = "none"`) every
//! listener and every leaf remote speaks TLS 1.3 only, with the mesh CA as
//! the only trust anchor and a certificate required of every peer: the
//! client and leafnode listeners and the remotes handshake TLS first
//! (nothing, not even the server's INFO, crosses in plaintext), routes
//! verify both ways. Monitoring is bound to loopback on every tree.

use std::fmt::Write as _;
use std::path::Path;

use events::audit::Manifest;
use topology::{Endpoint, Node, Security, SyncPolicy, Topology};

use crate::certs::TlsFiles;
use crate::rights;

/// Which process of a node the server belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role<'a> {
    /// A member, by name.
    Member(&'a str),
    /// The witness of an HA pair.
    Witness,
}

impl Role<'_> {
    /// The name used in server names and data directories.
    pub fn name(&self) -> &str {
        match self {
            Role::Member(m) => m,
            Role::Witness => "witness",
        }
    }
}

/// The endpoint of `role` in `node`, if the topology has it.
pub fn endpoint<'t>(node: &'t Node, role: Role<'_>) -> Option<&'t Endpoint> {
    match role {
        Role::Member(name) => node.member(name).map(|m| &m.endpoint),
        Role::Witness => node.witness.as_ref(),
    }
}

/// Every server of a node: its members, then its witness.
pub fn servers(node: &Node) -> Vec<&Endpoint> {
    node.members
        .iter()
        .map(|m| &m.endpoint)
        .chain(node.witness.iter())
        .collect()
}

/// The client URL of an endpoint: `tls://` on the secured tree.
pub fn client_url(topo: &Topology, ep: &Endpoint) -> String {
    let scheme = match topo.mesh.security {
        Security::Secured => "tls",
        Security::None => "nats",
    };
    format!("{scheme}://{}:{}", ep.host, ep.ports.nats)
}

/// How long a TLS handshake may take, in seconds (nats-server's default,
/// half a second, is short for a loaded two-core machine).
const TLS_TIMEOUT_S: u32 = 3;

/// What a `tls { }` block asks of the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// Nothing (a leaf remote: the hub asks for our certificate).
    No,
    /// A certificate of the mesh CA (routes).
    Ca,
    /// A certificate of the mesh CA that names a user of this server
    /// (`verify_and_map`: client and leafnode listeners).
    User,
}

/// A `tls { }` block: this server's certificate, the mesh CA, TLS 1.3;
/// `verify` is what the peer must present, `first` handshakes before the
/// INFO.
fn tls_block(c: &mut String, indent: &str, tls: &TlsFiles, verify: Verify, first: bool) {
    tls_block_pinned(c, indent, tls, verify, first, &[]);
}

/// [`tls_block`] that also takes only the certificates whose keys are
/// `pins` (none: any of the CA).
fn tls_block_pinned(
    c: &mut String,
    indent: &str,
    tls: &TlsFiles,
    verify: Verify,
    first: bool,
    pins: &[String],
) {
    let path = |p: &Path| quote(&p.display().to_string());
    let _ = writeln!(c, "{indent}tls {{");
    let _ = writeln!(c, "{indent}  cert_file: {}", path(&tls.cert));
    let _ = writeln!(c, "{indent}  key_file: {}", path(&tls.key));
    let _ = writeln!(c, "{indent}  ca_file: {}", path(&tls.ca));
    let _ = writeln!(c, "{indent}  min_version: \"1.3\"");
    let _ = writeln!(c, "{indent}  timeout: {TLS_TIMEOUT_S}");
    match verify {
        Verify::No => {}
        Verify::Ca => {
            let _ = writeln!(c, "{indent}  verify: true");
        }
        Verify::User => {
            let _ = writeln!(c, "{indent}  verify_and_map: true");
        }
    }
    if first {
        let _ = writeln!(c, "{indent}  handshake_first: true");
    }
    if !pins.is_empty() {
        let list: Vec<String> = pins.iter().map(|p| quote(p)).collect();
        let _ = writeln!(c, "{indent}  pinned_certs: [{}]", list.join(", "));
    }
    let _ = writeln!(c, "{indent}}}");
}

fn quote(s: &str) -> String {
    // nats-server config strings accept JSON-style escapes.
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The pins of a pair's three servers from the manifest, or None when it
/// lacks one (a manifest of an older `keys gen`: run it again).
pub fn route_pins(node: &Node, manifest: &Manifest) -> Option<Vec<String>> {
    node.processes()
        .iter()
        .map(|(name, _)| manifest.pins.get(&format!("{}/{name}", node.id)).cloned())
        .collect()
}

/// The `authorization { users }` block of the secured tree: every
/// principal of [`rights::users`], mapped from its certificate.
fn users_block(c: &mut String, users: &[rights::User]) {
    let list = |v: &[String]| v.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ");
    let _ = writeln!(c, "authorization {{");
    let _ = writeln!(c, "  users: [");
    for u in users {
        let kind = if u.leaf { "LEAFNODE" } else { "STANDARD" };
        let _ = writeln!(c, "    {{");
        let _ = writeln!(c, "      user: {}", quote(&u.name));
        let _ = writeln!(c, "      allowed_connection_types: [\"{kind}\"]");
        let _ = writeln!(c, "      permissions: {{");
        let _ = writeln!(c, "        publish: {{ allow: [{}] }}", list(&u.publish));
        let _ = writeln!(
            c,
            "        subscribe: {{ allow: [{}] }}",
            list(&u.subscribe)
        );
        let _ = writeln!(c, "      }}");
        let _ = writeln!(c, "    }}");
    }
    let _ = writeln!(c, "  ]");
    let _ = writeln!(c, "}}");
}

/// Renders the nats-server config of `role` in `node`, storing JetStream
/// data under `store_dir`; `tls` is the process's certificate, required on
/// the secured tree and ignored on the plaintext one, as is `manifest`
/// (the public one: its clients may connect to the client port, its pins
/// name the only certificates a pair's routes take).
pub fn render(
    topo: &Topology,
    node: &Node,
    role: Role<'_>,
    store_dir: &Path,
    tls: Option<&TlsFiles>,
    manifest: &Manifest,
) -> Result<String, String> {
    let ep = endpoint(node, role)
        .ok_or_else(|| format!("node {} has no member {:?}", node.id, role.name()))?;
    let tls = match topo.mesh.security {
        Security::None => None,
        Security::Secured => Some(tls.ok_or_else(|| {
            format!(
                "this tree is secured: the nats-server of {}/{} needs its certificate (give --key: canopy keys gen writes <node>/<member>.nk with .crt and .key beside it)",
                node.id,
                role.name()
            )
        })?),
    };
    let domain = events::subjects::domain(&node.id);
    let mut c = String::new();
    let _ = writeln!(c, "# generated by canopy from {}; do not edit", topo.file);
    let _ = writeln!(
        c,
        "server_name: {}",
        quote(&format!("{domain}-{}", role.name()))
    );
    let _ = writeln!(
        c,
        "listen: {}",
        quote(&format!("{}:{}", ep.host, ep.ports.nats))
    );
    let _ = writeln!(
        c,
        "http: {}",
        quote(&format!("127.0.0.1:{}", ep.ports.monitor))
    );
    if let Some(tls) = tls {
        tls_block(&mut c, "", tls, Verify::User, true);
        users_block(&mut c, &rights::users(topo, node, &manifest.clients));
    }
    // A silent link (cable cut, frozen peer) must be noticed in seconds, not
    // the default two minutes.
    let _ = writeln!(c, "ping_interval: \"2s\"");
    let _ = writeln!(c, "ping_max: 3");
    let _ = writeln!(c, "jetstream {{");
    let _ = writeln!(
        c,
        "  store_dir: {}",
        quote(&store_dir.display().to_string())
    );
    let _ = writeln!(c, "  domain: {}", quote(&domain));
    match topo.mesh.sync {
        SyncPolicy::Always => {
            let _ = writeln!(c, "  sync_interval: \"always\"");
        }
        SyncPolicy::Interval(d) => {
            let _ = writeln!(c, "  sync_interval: \"{}ms\"", d.as_millis().max(1));
        }
    }
    let _ = writeln!(c, "}}");

    if node.is_pair() {
        // The pair's two members and its witness form one 3-server cluster
        // with one JetStream domain: the node's streams are R3 and survive
        // the loss of any one of the three.
        let routes: Vec<String> = servers(node)
            .iter()
            .filter(|s| !std::ptr::eq(**s, ep))
            .map(|s| quote(&format!("nats-route://{}:{}", s.host, s.ports.cluster)))
            .collect();
        let _ = writeln!(c, "cluster {{");
        let _ = writeln!(c, "  name: {}", quote(&domain));
        let _ = writeln!(
            c,
            "  listen: {}",
            quote(&format!("{}:{}", ep.host, ep.ports.cluster))
        );
        let _ = writeln!(c, "  routes: [{}]", routes.join(", "));
        if let Some(tls) = tls {
            // Routes have no TLS-first handshake in nats-server. Any
            // certificate of the CA would pass `verify`: pin the pair's
            // three (when the manifest has them all).
            let pins = route_pins(node, manifest).unwrap_or_default();
            tls_block_pinned(&mut c, "  ", tls, Verify::Ca, false, &pins);
        }
        let _ = writeln!(c, "}}");
    }

    let children = topo.children(&node.id);
    let parent = topo.parent(&node.id);
    if !children.is_empty() || parent.is_some() {
        let _ = writeln!(c, "leafnodes {{");
        if !children.is_empty() {
            let _ = writeln!(
                c,
                "  listen: {}",
                quote(&format!("{}:{}", ep.host, ep.ports.leafnode))
            );
            if let Some(tls) = tls {
                tls_block(&mut c, "  ", tls, Verify::User, true);
            }
        }
        if let Some(parent) = parent {
            let urls: Vec<String> = servers(parent)
                .iter()
                .map(|p| quote(&format!("nats-leaf://{}:{}", p.host, p.ports.leafnode)))
                .collect();
            let _ = writeln!(c, "  reconnect: \"1s\"");
            match tls {
                None => {
                    let _ = writeln!(c, "  remotes: [ {{ urls: [{}] }} ]", urls.join(", "));
                }
                Some(tls) => {
                    let denied: Vec<String> = rights::denied_from_parent(node)
                        .iter()
                        .map(|s| quote(s))
                        .collect();
                    let _ = writeln!(c, "  remotes: [ {{");
                    let _ = writeln!(c, "    urls: [{}]", urls.join(", "));
                    let _ = writeln!(c, "    deny_imports: [{}]", denied.join(", "));
                    tls_block(&mut c, "    ", tls, Verify::No, true);
                    let _ = writeln!(c, "  }} ]");
                }
            }
        }
        let _ = writeln!(c, "}}");
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> TlsFiles {
        TlsFiles {
            ca: "/k/ca.crt".into(),
            cert: "/k/root/a.crt".into(),
            key: "/k/root/a.key".into(),
        }
    }

    /// The secured config of `role` in `node`, with [`files`].
    fn secured(t: &Topology, node: &Node, role: Role<'_>) -> String {
        render(
            t,
            node,
            role,
            Path::new("/d"),
            Some(&files()),
            &Manifest::default(),
        )
        .expect("render")
    }

    fn topo() -> Topology {
        Topology::parse("t.toml", topology::DEFAULT_TOPOLOGY).expect("default topology")
    }

    #[test]
    fn root_listens_for_leafnodes_and_has_no_remote() {
        let t = topo();
        let conf = secured(&t, t.root(), Role::Member("a"));
        assert!(conf.contains("domain: \"root\""), "{conf}");
        assert!(conf.contains("listen: \"127.0.0.1:"), "{conf}");
        assert!(!conf.contains("remotes"), "{conf}");
    }

    #[test]
    fn child_points_at_every_parent_server() {
        let t = topo();
        let south = t.node("root.south").expect("south");
        let conf = secured(&t, south, Role::Member("a"));
        let root_leaf = t.root().members[0].endpoint.ports.leafnode;
        assert!(
            conf.contains(&format!("nats-leaf://127.0.0.1:{root_leaf}")),
            "{conf}"
        );
        assert!(conf.contains("domain: \"root-south\""), "{conf}");
    }

    #[test]
    fn pair_servers_form_a_cluster_routed_to_the_other_two() {
        let t = Topology::parse("x.toml", topology::EXAMPLE_TOPOLOGY).expect("example");
        let south = t.node("root.south").expect("south");
        let conf = secured(&t, south, Role::Witness);
        assert!(conf.contains("cluster {"), "{conf}");
        assert!(conf.contains("nats-route://127.0.0.1:14202"), "{conf}");
        assert!(conf.contains("nats-route://127.0.0.1:14212"), "{conf}");
        assert!(
            !conf.contains("nats-route://127.0.0.1:14222"),
            "routes to itself: {conf}"
        );
        // A child of a pair lists all three of its servers.
        let root = secured(&t, t.root(), Role::Member("a"));
        assert!(!root.contains("remotes"), "{root}");
    }

    #[test]
    fn unknown_member_is_an_error() {
        let t = topo();
        assert!(render(
            &t,
            t.root(),
            Role::Member("zz"),
            Path::new("/d"),
            Some(&files()),
            &Manifest::default()
        )
        .is_err());
    }

    #[test]
    fn the_secured_tree_speaks_tls_first_everywhere_and_needs_a_certificate() {
        let t = Topology::parse("x.toml", topology::EXAMPLE_TOPOLOGY).expect("example");
        let south = t.node("root.south").expect("south");
        let conf = secured(&t, south, Role::Member("a"));
        // At least the client listener, the route and the remote to the root.
        let blocks = conf.matches("tls {").count();
        assert!(blocks >= 3, "{conf}");
        assert!(conf.contains("min_version: \"1.3\""), "{conf}");
        assert!(conf.contains("handshake_first: true"), "{conf}");
        assert!(conf.contains("ca_file: \"/k/ca.crt\""), "{conf}");
        assert!(conf.contains("http: \"127.0.0.1:"), "{conf}");
        assert!(conf.contains("verify_and_map: true"), "{conf}");
        assert!(conf.contains("user: \"a.root.south.canopy\""), "{conf}");
        assert!(
            conf.contains("deny_imports: [\"canopy.rp.root-south.>\""),
            "{conf}"
        );
        assert_eq!(
            client_url(&t, &south.members[0].endpoint).split(':').next(),
            Some("tls")
        );
        let err = render(
            &t,
            south,
            Role::Member("a"),
            Path::new("/d"),
            None,
            &Manifest::default(),
        )
        .expect_err("no certificate");
        assert!(err.contains("--key"), "{err}");
    }

    #[test]
    fn the_plaintext_tree_has_no_tls() {
        let text = topology::DEFAULT_TOPOLOGY.replacen("[mesh]", "[mesh]\nsecurity = \"none\"", 1);
        let t = Topology::parse("t.toml", &text).expect("plaintext");
        let conf = render(
            &t,
            t.root(),
            Role::Member("a"),
            Path::new("/d"),
            None,
            &Manifest::default(),
        )
        .expect("render");
        assert!(!conf.contains("tls"), "{conf}");
        assert!(client_url(&t, &t.root().members[0].endpoint).starts_with("nats://"));
    }
}
