//! Who may publish and subscribe what at the broker, on the secured tree.
//!
//! Every connection to a server of the secured tree presents a certificate
//! of the mesh CA, and the server maps it (`verify_and_map`) to a user by
//! the certificate's canopy name, its first SAN: `<member>.<node>.canopy`
//! for a member or witness, `<name>.client.canopy` for a client. The user
//! carries the rights below; a certificate of the CA that maps to no user
//! of this server (a removed client, a member of another node on a client
//! port) is refused. The server of node N lists:
//!
//! - N's members, on the client port: their own node's events
//!   (`canopy.ev.N.*`, not `.>`, which would reach into the descendants'
//!   streams), their replica subjects, requests and replies, their own
//!   JetStream domain in full and read-only JetStream everywhere else;
//! - N's witness (a pair's), on the client port: read-only JetStream, the
//!   stream-leader stepdown it keeps the leaders on itself with, replies;
//!   it subscribes to hello, its member subject and its inbox, and can
//!   neither publish an event nor touch a stream;
//! - the servers of each child C, on the leafnode port only: what a leaf
//!   link may carry up (its publish list: C's subtree's events,
//!   `canopy.ev.C.>`, replies, requests from clients below, reads of this
//!   node's domain) and down (its subscribe list: requests for C's
//!   subtree, hello, replies, read-only JetStream into its subtree's
//!   domains);
//! - every client of the manifest, on the client port only: read requests
//!   (hello, state, member info, queries) and read-only JetStream, commands
//!   within its scope by role (operator: `canopy.cmd`; engineer: also
//!   `canopy.ctl`), and subscriptions to its scope's events and its inbox;
//! - N's query workers (`canopy query`, one shared identity), on the client
//!   port only: read-only JetStream of N's own domain and replies; they
//!   subscribe to N's query subject and their inbox.
//!
//! Downwards, a child's server refuses what no parent has a reason to
//! send it ([`denied_from_parent`]): a compromised parent cannot delete
//! or rewrite the child's streams.
//!
//! The broker's rights are the first fence; signed commands (checked by
//! the member that serves them) and the fold's epoch gate are the second.

use std::collections::BTreeMap;

use events::audit::ClientKey;
use events::subjects::{domain, EVENT_PREFIX, HELLO, REPLICA_PREFIX};
use topology::{Node, Topology};

/// One user of a server's `authorization.users`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The certificate SAN it is mapped from.
    pub name: String,
    /// A leaf link (`LEAFNODE`) rather than a client (`STANDARD`).
    pub leaf: bool,
    /// Subjects it may publish.
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

/// Read-only JetStream API calls (after `$JS.API.` or `$JS.<domain>.API.`):
/// account and stream info, message and direct gets, and pull consumers
/// (created with and without the filter suffix async-nats appends, read
/// with MSG.NEXT). No create, update, delete or purge of a stream or a
/// message, no consumer deletion.
const JS_READ: &[&str] = &[
    "INFO",
    "STREAM.INFO.*",
    "STREAM.NAMES",
    "STREAM.LIST",
    "STREAM.MSG.GET.*",
    "DIRECT.GET.>",
    "CONSUMER.CREATE.*",
    "CONSUMER.CREATE.*.>",
    "CONSUMER.DURABLE.CREATE.*.*",
    "CONSUMER.INFO.*.*",
    "CONSUMER.NAMES.*",
    "CONSUMER.LIST.*",
    "CONSUMER.MSG.NEXT.*.*",
];

/// Acks and flow control of the consumers a principal reads.
const JS_FLOW: &[&str] = &["$JS.ACK.>", "$JS.FC.>"];

/// The read-only calls of [`JS_READ`] after `prefix` (`$JS.API`,
/// `$JS.<domain>.API`).
fn js_read_at(prefix: &str) -> impl Iterator<Item = String> + '_ {
    JS_READ.iter().map(move |c| format!("{prefix}.{c}"))
}

/// Read-only JetStream in the server's own domain and in every other one.
fn js_read(own: &str) -> Vec<String> {
    let mut out = Vec::new();
    for prefix in [
        "$JS.API".to_owned(),
        format!("$JS.{own}.API"),
        "$JS.*.API".to_owned(),
    ] {
        out.extend(js_read_at(&prefix));
    }
    out.extend(JS_FLOW.iter().map(|s| s.to_string()));
    out
}

/// `<prefix>.<node>` and everything below it; on the root, all of
/// `<prefix>`.
fn subtree(topo: &Topology, prefix: &str, node: &str) -> Vec<String> {
    if node == topo.root().id {
        vec![format!("{prefix}.>")]
    } else {
        vec![format!("{prefix}.{node}"), format!("{prefix}.{node}.>")]
    }
}

/// Requests anyone of the tree may send: the hello scatter, state,
/// member info and history queries.
fn read_requests() -> Vec<String> {
    vec![
        HELLO.to_owned(),
        "canopy.state.>".to_owned(),
        "canopy.member.>".to_owned(),
        "canopy.query.>".to_owned(),
    ]
}

/// JetStream API calls that change or remove what a domain holds, or
/// move its streams' leaders (after `$JS.<domain>.API.`).
const JS_DESTRUCTIVE: &[&str] = &[
    "STREAM.CREATE.>",
    "STREAM.UPDATE.>",
    "STREAM.DELETE.>",
    "STREAM.PURGE.>",
    "STREAM.MSG.DELETE.>",
    "STREAM.SNAPSHOT.>",
    "STREAM.RESTORE.>",
    "STREAM.PEER.>",
    "STREAM.LEADER.>",
    "META.>",
    "ACCOUNT.>",
    "SERVER.>",
];

/// What the server of `node` refuses to take from its parent over its
/// leaf remote (`deny_imports`), so that a compromised parent server
/// cannot destroy the history below it: its replica subjects, the
/// unprefixed JetStream API and every destructive call into any domain.
/// Nothing legitimate comes down on these: ancestors read the streams
/// below them (read-only calls), and commands are signed.
///
/// Not the node's own event subjects: nats-server applies `deny_imports`
/// to the remote's subscriptions both ways, so denying them stopped the
/// node's live events going up too (measured: a client at the parent saw
/// none). An event a fake parent injects there is stored, and kept out of
/// every state by the fold (not the next event of the chain), as any
/// foreign message.
pub fn denied_from_parent(node: &Node) -> Vec<String> {
    let own = domain(&node.id);
    let mut out = vec![format!("{REPLICA_PREFIX}.{own}.>"), "$JS.API.>".to_owned()];
    out.extend(JS_DESTRUCTIVE.iter().map(|c| format!("$JS.*.API.{c}")));
    out
}

/// The inbox prefix of a process of `node`: `_INBOX.<node>.@<process>`
/// (`@` is in no canopy token), so replies to it are under its node's
/// path and a leaf link down to a subtree carries only that subtree's.
pub fn process_inbox(node: &str, process: &str) -> String {
    format!("_INBOX.{node}.@{process}")
}

/// The inbox prefix of a client: `_INBOX.<scope>.@<name>`, or
/// `_INBOX.@<name>` when its scope is not known.
pub fn client_inbox(name: &str, scope: Option<&str>) -> String {
    match scope {
        Some(scope) => format!("_INBOX.{scope}.@{name}"),
        None => format!("_INBOX.@{name}"),
    }
}

/// The name a process of `node` is mapped from.
pub fn process_user(node: &str, process: &str) -> String {
    crate::certs::member_name(node, process)
}

/// The witness of pair `node`: reads of its domain, moving its streams'
/// leaders (`ha::keep_leaders`), replies to hello and member-info requests.
fn witness_user(node: &Node) -> User {
    let own = domain(&node.id);
    let mut publish = js_read(&own);
    for prefix in ["$JS.API".to_owned(), format!("$JS.{own}.API")] {
        publish.push(format!("{prefix}.STREAM.LEADER.STEPDOWN.*"));
    }
    publish.push("_INBOX.>".to_owned());
    User {
        name: process_user(&node.id, "witness"),
        leaf: false,
        publish,
        subscribe: vec![
            HELLO.to_owned(),
            events::subjects::member_subject(&node.id, "witness"),
            format!("{}.>", process_inbox(&node.id, "witness")),
        ],
    }
}

/// The users of every server of `node`: its own processes, its children's
/// leaf links and the manifest's clients.
pub fn users(topo: &Topology, node: &Node, clients: &BTreeMap<String, ClientKey>) -> Vec<User> {
    let own = domain(&node.id);
    let mut out = Vec::new();
    if node.witness.is_some() {
        out.push(witness_user(node));
    }
    for member in &node.members {
        let process = member.name.as_str();
        let mut publish = vec![
            format!("{EVENT_PREFIX}.{}.*", node.id),
            format!("{REPLICA_PREFIX}.{own}.>"),
            "canopy.cmd.>".to_owned(),
            "canopy.ctl.>".to_owned(),
            "$JS.API.>".to_owned(),
            format!("$JS.{own}.API.>"),
            "_INBOX.>".to_owned(),
        ];
        publish.extend(read_requests());
        publish.extend(js_read(&own));
        out.push(User {
            name: process_user(&node.id, process),
            leaf: false,
            publish,
            subscribe: vec![">".to_owned()],
        });
    }
    for child in topo.children(&node.id) {
        // What C may send up: its subtree's events, replies, requests from
        // clients below it, reads of this node's domain and of every
        // ancestor's (a restore takes the longest copy any ancestor holds;
        // a tree view copies from its parent).
        let mut publish = subtree(topo, EVENT_PREFIX, &child.id);
        publish.extend(read_requests());
        publish.extend(["canopy.cmd.>".to_owned(), "canopy.ctl.>".to_owned()]);
        publish.push("_INBOX.>".to_owned());
        let mut above = vec!["$JS.API".to_owned()];
        let mut at = Some(node);
        while let Some(n) = at {
            above.push(format!("$JS.{}.API", domain(&n.id)));
            at = topo.parent(&n.id);
        }
        for prefix in above {
            publish.extend(js_read_at(&prefix));
        }
        publish.extend(JS_FLOW.iter().map(|s| s.to_string()));
        // What may come down to it: requests for its subtree, the hello
        // scatter, replies, ancestors' reads of its subtree's domains.
        // Requests about other nodes never reach it, so a compromised
        // child can neither see nor answer them.
        let mut subscribe = Vec::new();
        for kind in [
            "canopy.state",
            "canopy.member",
            "canopy.query",
            "canopy.cmd",
            "canopy.ctl",
        ] {
            subscribe.extend(subtree(topo, kind, &child.id));
        }
        // Replies to C's processes and to clients scoped within it.
        subscribe.extend([HELLO.to_owned(), format!("_INBOX.{}.>", child.id)]);
        let below = std::iter::once(child).chain(topo.descendants(&child.id));
        for d in below {
            let prefix = format!("$JS.{}.API", domain(&d.id));
            subscribe.extend(js_read_at(&prefix));
        }
        subscribe.extend(JS_FLOW.iter().map(|s| s.to_string()));
        for (process, _) in child.processes() {
            out.push(User {
                name: process_user(&child.id, process),
                leaf: true,
                publish: publish.clone(),
                subscribe: subscribe.clone(),
            });
        }
    }
    // The query workers: reads of this node's own domain, replies.
    let mut publish = vec!["_INBOX.>".to_owned()];
    for prefix in ["$JS.API".to_owned(), format!("$JS.{own}.API")] {
        publish.extend(js_read_at(&prefix));
    }
    out.push(User {
        name: crate::certs::query_worker_name(&node.id),
        leaf: false,
        publish,
        subscribe: vec![
            events::subjects::query_subject(&node.id),
            format!(
                "{}.>",
                process_inbox(&node.id, crate::certs::QUERY_IDENTITY)
            ),
        ],
    });
    for (name, c) in clients {
        let mut publish = read_requests();
        publish.extend(js_read(&own));
        if c.role == "operator" || c.role == "engineer" {
            publish.extend(subtree(topo, "canopy.cmd", &c.scope));
        }
        if c.role == "engineer" {
            publish.extend(subtree(topo, "canopy.ctl", &c.scope));
        }
        let mut subscribe = subtree(topo, EVENT_PREFIX, &c.scope);
        subscribe.push(format!("{}.>", client_inbox(name, Some(&c.scope))));
        out.push(User {
            name: crate::certs::client_name(name),
            leaf: false,
            publish,
            subscribe,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> Topology {
        Topology::parse("t.toml", topology::EXAMPLE_TOPOLOGY).expect("example")
    }

    fn client(role: &str, scope: &str) -> ClientKey {
        ClientKey {
            key: "U".into(),
            role: role.into(),
            scope: scope.into(),
        }
    }

    fn allows(list: &[String], subject: &str) -> bool {
        list.iter().any(|p| events::subjects::matches(p, subject))
    }

    #[test]
    fn a_member_publishes_its_own_events_only() {
        let t = topo();
        let south = t.node("root.south").expect("south");
        let users = users(&t, south, &BTreeMap::new());
        let a = users
            .iter()
            .find(|u| u.name == "a.root.south.canopy")
            .expect("member a");
        assert!(!a.leaf);
        assert!(allows(&a.publish, "canopy.ev.root.south.temp1"));
        assert!(!allows(&a.publish, "canopy.ev.root.north.temp1"));
        // Not a descendant's stream either.
        assert!(!allows(&a.publish, "canopy.ev.root.south.x.temp1"));
        assert!(allows(&a.publish, "$JS.API.STREAM.DELETE.EV_root-south"));
        assert!(!allows(&a.publish, "$JS.root.API.STREAM.DELETE.EV_root"));
        assert!(allows(&a.publish, "$JS.root.API.DIRECT.GET.EV_root"));
        assert!(users.iter().any(|u| u.name == "witness.root.south.canopy"));
    }

    #[test]
    fn a_witness_reads_and_moves_leaders_but_writes_nothing() {
        let t = topo();
        let pair = t
            .nodes
            .iter()
            .find(|n| n.witness.is_some())
            .expect("a pair in the example");
        let own = domain(&pair.id);
        let users = users(&t, pair, &BTreeMap::new());
        let w = users
            .iter()
            .find(|u| u.name == format!("witness.{}.canopy", pair.id))
            .expect("the witness");
        assert!(!w.leaf);
        let stream = events::subjects::stream_name(&pair.id);
        assert!(allows(
            &w.publish,
            &format!("$JS.{own}.API.STREAM.INFO.{stream}")
        ));
        assert!(allows(
            &w.publish,
            &format!("$JS.{own}.API.STREAM.LEADER.STEPDOWN.{stream}")
        ));
        assert!(allows(
            &w.publish,
            &format!("$JS.{own}.API.DIRECT.GET.{stream}")
        ));
        assert!(allows(&w.publish, "_INBOX.root.@op.x.1"));
        assert!(!allows(&w.publish, &format!("canopy.ev.{}.temp1", pair.id)));
        assert!(!allows(
            &w.publish,
            &format!("$JS.{own}.API.STREAM.DELETE.{stream}")
        ));
        assert!(!allows(
            &w.publish,
            &format!("$JS.API.STREAM.PURGE.{stream}")
        ));
        assert!(!allows(&w.publish, &format!("canopy.cmd.{}", pair.id)));
        assert!(allows(&w.subscribe, HELLO));
        assert!(allows(
            &w.subscribe,
            &format!("canopy.member.{}.witness", pair.id)
        ));
        assert!(allows(
            &w.subscribe,
            &format!("_INBOX.{}.@witness.x", pair.id)
        ));
        assert!(!allows(&w.subscribe, &format!("canopy.cmd.{}", pair.id)));
        assert!(!allows(
            &w.subscribe,
            &format!("canopy.member.{}.a", pair.id)
        ));
    }

    #[test]
    fn a_leaf_link_carries_its_subtree_and_replies_only() {
        let t = topo();
        let users = users(&t, t.root(), &BTreeMap::new());
        let link = users
            .iter()
            .find(|u| u.name == "b.root.south.canopy")
            .expect("south's b");
        assert!(link.leaf);
        assert!(allows(&link.publish, "canopy.ev.root.south.temp1"));
        assert!(!allows(&link.publish, "canopy.ev.root.north.temp1"));
        assert!(!allows(&link.publish, "canopy.ev.root.temp1"));
        assert!(allows(&link.publish, "_INBOX.abc.1"));
        assert!(!allows(&link.publish, "$JS.API.STREAM.PURGE.EV_root"));
        assert!(!allows(&link.publish, "canopy.rp.root.root-south.temp1"));
        // Down to it: requests for its subtree only, and reads of its own
        // domains, not of a sibling's.
        assert!(allows(&link.subscribe, "canopy.cmd.root.south"));
        assert!(!allows(&link.subscribe, "canopy.cmd.root.north"));
        assert!(!allows(&link.subscribe, "canopy.state.root.north"));
        assert!(allows(&link.subscribe, "canopy.hello"));
        assert!(allows(&link.subscribe, "_INBOX.root.south.@a.abc.1"));
        assert!(allows(&link.subscribe, "_INBOX.root.south.x.@op.abc.1"));
        assert!(!allows(&link.subscribe, "_INBOX.root.north.@a.abc.1"));
        assert!(!allows(&link.subscribe, "_INBOX.abc.1"));
        assert!(allows(
            &link.subscribe,
            "$JS.root-south.API.DIRECT.GET.EV_root-south"
        ));
        assert!(!allows(
            &link.subscribe,
            "$JS.root-north.API.DIRECT.GET.EV_root-north"
        ));
        assert!(!allows(&link.subscribe, "canopy.ev.root.north.temp1"));
        // Up from it: reads of the hub's domain for its restores.
        assert!(allows(&link.publish, "$JS.root.API.STREAM.INFO.EV_root"));
        assert!(!allows(
            &link.publish,
            "$JS.root-north.API.STREAM.INFO.EV_root-north"
        ));
    }

    #[test]
    fn a_grandchild_may_read_every_ancestors_domain_for_its_restore() {
        let t = Topology::parse("t.toml", topology::DEFAULT_TOPOLOGY).expect("default");
        let south = t.node("root.south").expect("south");
        let users = users(&t, south, &BTreeMap::new());
        let cell = users
            .iter()
            .find(|u| u.name == "a.root.south.cell1.canopy")
            .expect("cell1's link");
        for d in ["root-south", "root"] {
            let subject = format!("$JS.{d}.API.STREAM.INFO.EV_root-south-cell1");
            assert!(allows(&cell.publish, &subject), "{subject}");
        }
        assert!(!allows(
            &cell.publish,
            "$JS.root-north.API.STREAM.INFO.EV_root-north"
        ));
    }

    #[test]
    fn a_child_takes_nothing_destructive_from_its_parent() {
        let t = topo();
        let south = t.node("root.south").expect("south");
        let denied = denied_from_parent(south);
        assert!(allows(&denied, "canopy.rp.root-south.root.south.cell.t"));
        // Its own events go up live: denying them would stop that too.
        assert!(!allows(&denied, "canopy.ev.root.south.temp1"));
        assert!(allows(
            &denied,
            "$JS.root-south.API.STREAM.DELETE.EV_root-south"
        ));
        assert!(allows(
            &denied,
            "$JS.root-south.API.STREAM.PURGE.EV_root-south"
        ));
        assert!(allows(&denied, "$JS.API.STREAM.DELETE.EV_root-south"));
        // What its ancestors read, and commands, still come down.
        assert!(!allows(
            &denied,
            "$JS.root-south.API.DIRECT.GET.EV_root-south"
        ));
        assert!(!allows(
            &denied,
            "$JS.root-south.API.CONSUMER.CREATE.EV_root-south"
        ));
        assert!(!allows(&denied, "canopy.cmd.root.south"));
        assert!(!allows(&denied, "canopy.ev.root.north.temp1"));
    }

    #[test]
    fn a_query_worker_reads_its_own_domain_and_answers_its_queries_only() {
        let t = topo();
        let south = t.node("root.south").expect("south");
        let users = users(&t, south, &BTreeMap::new());
        let q = users
            .iter()
            .find(|u| u.name == "query.root.south.worker.canopy")
            .expect("south's query workers");
        assert!(!q.leaf);
        assert!(allows(&q.subscribe, "canopy.query.root.south"));
        assert!(!allows(&q.subscribe, "canopy.query.root"));
        assert!(!allows(&q.subscribe, "canopy.cmd.root.south"));
        assert!(allows(&q.subscribe, "_INBOX.root.south.@query.abc.1"));
        assert!(allows(&q.publish, "_INBOX.root.@op.abc.1"));
        assert!(allows(&q.publish, "$JS.API.DIRECT.GET.EV_root-south"));
        assert!(allows(
            &q.publish,
            "$JS.root-south.API.CONSUMER.CREATE.EV_root-south"
        ));
        assert!(!allows(&q.publish, "$JS.root.API.DIRECT.GET.EV_root"));
        assert!(!allows(&q.publish, "$JS.API.STREAM.DELETE.EV_root-south"));
        assert!(!allows(&q.publish, "canopy.ev.root.south.temp1"));
        // Queries about south reach it from the root over south's link.
        let root_users = super::users(&t, t.root(), &BTreeMap::new());
        let link = root_users
            .iter()
            .find(|u| u.name == "a.root.south.canopy")
            .expect("south's link");
        assert!(allows(&link.subscribe, "canopy.query.root.south"));
        assert!(!allows(&link.subscribe, "canopy.query.root.north"));
    }

    #[test]
    fn clients_act_by_role_within_their_scope() {
        let t = topo();
        let mut clients = BTreeMap::new();
        clients.insert("view".to_owned(), client("viewer", "root.south"));
        clients.insert("op".to_owned(), client("operator", "root.south"));
        clients.insert("eng".to_owned(), client("engineer", "root"));
        let users = users(&t, t.root(), &clients);
        let by = |n: &str| users.iter().find(|u| u.name == n).expect(n);
        let view = by("view.client.canopy");
        assert!(!allows(&view.publish, "canopy.cmd.root.south"));
        assert!(allows(&view.publish, "canopy.state.root"));
        assert!(allows(&view.subscribe, "canopy.ev.root.south.temp1"));
        assert!(!allows(&view.subscribe, "canopy.ev.root.north.temp1"));
        assert!(!allows(&view.publish, "canopy.ev.root.south.temp1"));
        assert!(!allows(&view.publish, "$JS.API.STREAM.DELETE.EV_root"));
        let op = by("op.client.canopy");
        assert!(allows(&op.publish, "canopy.cmd.root.south"));
        assert!(!allows(&op.publish, "canopy.cmd.root"));
        assert!(!allows(&op.publish, "canopy.ctl.root.south.a"));
        // Its own replies only.
        assert!(allows(&view.subscribe, "_INBOX.root.south.@view.x.1"));
        assert!(!allows(&view.subscribe, "_INBOX.root.south.@op.x.1"));
        let eng = by("eng.client.canopy");
        assert!(allows(&eng.publish, "canopy.ctl.root.south.a"));
        assert!(allows(&eng.subscribe, "canopy.ev.root.north.temp1"));
    }
}
