//! One test per rule: each asserts the exact `line:col` and a fragment of
//! the message, so a diagnostic that drifts to the wrong place fails.

use std::time::Duration;

use crate::{
    DataType, Ports, Register, RegisterKind, SimKind, Source, SyncPolicy, Topology, View,
    DEFAULT_TOPOLOGY, EXAMPLE_TOPOLOGY,
};

/// Lines 1-5: a valid mesh and root; tests append from line 6.
const ROOT: &str = r#"[mesh]
name = "t"
[[node]]
id = "root"
members = [{ name = "a", host = "h", port_base = 1000 }]
"#;

fn with_root(rest: &str) -> String {
    format!("{ROOT}{rest}")
}

/// Every diagnostic as `line:col: message`.
fn errors(text: &str) -> Vec<String> {
    match Topology::parse("t.toml", text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(err) => err
            .errors
            .iter()
            .map(|d| format!("{}:{}: {}", d.line, d.col, d.message))
            .collect(),
    }
}

#[track_caller]
fn assert_error(text: &str, at: &str, fragment: &str) {
    let errs = errors(text);
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&format!("{at}: ")) && e.contains(fragment)),
        "expected `{at}: ...{fragment}...` in {errs:#?}"
    );
}

#[track_caller]
fn parse_ok(text: &str) -> Topology {
    match Topology::parse("t.toml", text) {
        Ok(t) => t,
        Err(err) => panic!("{err}"),
    }
}

// ---------------------------------------------------------------- loading

#[test]
fn contract_example_loads() {
    let t = parse_ok(EXAMPLE_TOPOLOGY);
    assert_eq!(t.mesh.name, "lab");
    let ids: Vec<_> = t.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["root", "root.north", "root.south"]);

    let root = t.root();
    assert_eq!(root.view, View::Subtree);
    assert!(root.is_pair());
    assert_eq!(root.line, 10);
    assert_eq!(root.member("b").unwrap().endpoint.ports.nats, 14010);
    assert_eq!(root.witness.as_ref().unwrap().ports.monitor, 14026);

    let north = t.node("root.north").unwrap();
    assert!(!north.is_pair());
    assert_eq!(north.view, View::Tree);
    let Source::Sim(sim) = &north.point("temp1").unwrap().source else {
        panic!("temp1 is a sim point")
    };
    assert_eq!(sim.kind, SimKind::Sine);
    assert_eq!(
        (sim.period_s, sim.min, sim.max, sim.every_ms),
        (30.0, 10.0, 30.0, 200)
    );

    let south = t.node("root.south").unwrap();
    let modbus = south.modbus.as_ref().unwrap();
    assert_eq!(modbus.address, "127.0.0.1:15020");
    assert_eq!(modbus.life_sign, Some("holding:900".parse().unwrap()));
    let fan = south.point("fan1_speed").unwrap();
    assert!(fan.writable);
    assert_eq!(fan.deadband, Some(0.5));
    assert_eq!(fan.unit.as_deref(), Some("rpm"));
    let Source::Modbus(m) = &fan.source else {
        panic!("fan1_speed is a modbus point")
    };
    assert_eq!(m.register.to_string(), "holding:100");
    assert_eq!((m.data_type, m.scale), (DataType::U16, 0.1));
}

#[test]
fn default_topology_loads() {
    let t = parse_ok(DEFAULT_TOPOLOGY);
    let ids: Vec<_> = t.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(
        ids,
        ["root", "root.north", "root.south", "root.south.cell1"]
    );
    // The tree view below the root, where it changes something.
    assert_eq!(t.root().view, View::Subtree);
    assert_eq!(t.node("root.north").unwrap().view, View::Tree);
    let pairs: Vec<_> = t
        .nodes
        .iter()
        .filter(|n| n.is_pair())
        .map(|n| n.id.as_str())
        .collect();
    assert_eq!(pairs, ["root", "root.south"]);
    assert!(t
        .node("root.south")
        .unwrap()
        .modbus
        .as_ref()
        .unwrap()
        .life_sign
        .is_some());
    for node in &t.nodes {
        for ep in node
            .members
            .iter()
            .map(|m| &m.endpoint)
            .chain(node.witness.iter())
        {
            assert_eq!(ep.host, "127.0.0.1");
            assert!(ep.ports.all().iter().all(|p| (14000..15000).contains(p)));
        }
    }
    let kinds = |id: &str| -> Vec<SimKind> {
        t.node(id)
            .unwrap()
            .points
            .iter()
            .filter_map(|p| match &p.source {
                Source::Sim(s) => Some(s.kind),
                Source::Modbus(_) => None,
            })
            .collect()
    };
    assert_eq!(kinds("root"), [SimKind::Ramp]);
    assert_eq!(
        kinds("root.north"),
        [SimKind::Sine, SimKind::RandomWalk, SimKind::Square]
    );
    assert_eq!(kinds("root.south.cell1"), [SimKind::Sine, SimKind::Square]);

    let south = t.node("root.south").unwrap();
    let m = south.modbus.as_ref().unwrap();
    assert_eq!(
        (m.address.as_str(), m.unit, m.poll_ms, m.timeout_ms),
        ("127.0.0.1:15020", 1, 200, 500)
    );
    let modbus = |name: &str| match &south.point(name).unwrap().source {
        Source::Modbus(m) => m.clone(),
        Source::Sim(_) => panic!("{name} is a modbus point"),
    };
    assert_eq!(modbus("fan1_speed").register.to_string(), "holding:100");
    assert_eq!(modbus("fan1_run").register.to_string(), "coil:10");
    assert_eq!(modbus("fan1_run").data_type, DataType::Bool);
    assert_eq!(modbus("co_ppm").register.to_string(), "input:200");
    assert_eq!(modbus("flow").data_type.registers(), 2);
    assert!(south.point("fan1_speed").unwrap().writable);
    assert!(south.point("fan1_run").unwrap().writable);
}

#[test]
fn load_names_the_path_as_given() {
    let path = std::env::temp_dir().join(format!("topology-load-{}.toml", std::process::id()));
    std::fs::write(&path, "[mesh]\nname = 1\n").unwrap();
    let err = Topology::load(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("{}:2:8: ", path.display())),
        "{shown}"
    );

    let missing = std::env::temp_dir().join("topology-no-such-file.toml");
    let err = Topology::load(&missing).unwrap_err();
    assert_eq!(err.errors[0].line, 0);
    assert!(err
        .to_string()
        .starts_with(&format!("{}: cannot read", missing.display())));
}

#[test]
fn load_reads_a_valid_file() {
    let path = std::env::temp_dir().join(format!("topology-ok-{}.toml", std::process::id()));
    std::fs::write(&path, DEFAULT_TOPOLOGY).unwrap();
    let t = Topology::load(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(t.unwrap().file, path.display().to_string());
}

// ---------------------------------------------------------------- mesh

#[test]
fn mesh_defaults() {
    let t = parse_ok(ROOT);
    assert_eq!(t.mesh.retention.max_age, Duration::from_secs(30 * 86400));
    assert_eq!(t.mesh.retention.max_bytes, 1 << 30);
    assert_eq!(t.mesh.sync, SyncPolicy::Always);
    assert_eq!(t.mesh.checkpoint.every_events, 1000);
    assert_eq!(t.mesh.checkpoint.every_ms, 1000);
    assert_eq!(t.mesh.publish_timeout, Duration::from_millis(500));
}

#[test]
fn mesh_explicit_values() {
    let text = r#"[mesh]
name = "t"
retention = { max_age = "1h", max_bytes = "512MiB" }
sync = "500ms"
checkpoint = { every_events = 10, every_ms = 20 }
publish_timeout = "2s"
[[node]]
id = "root"
members = [{ name = "a", host = "h" }]
"#;
    let t = parse_ok(text);
    assert_eq!(t.mesh.publish_timeout, Duration::from_secs(2));
    assert_eq!(t.mesh.retention.max_age, Duration::from_secs(3600));
    assert_eq!(t.mesh.retention.max_bytes, 512 << 20);
    assert_eq!(
        t.mesh.sync,
        SyncPolicy::Interval(Duration::from_millis(500))
    );
    assert_eq!(
        (t.mesh.checkpoint.every_events, t.mesh.checkpoint.every_ms),
        (10, 20)
    );

    let int_bytes = text.replace("\"512MiB\"", "1000");
    assert_eq!(parse_ok(&int_bytes).mesh.retention.max_bytes, 1000);
}

#[test]
fn byte_sizes() {
    use super::mesh::parse_bytes;
    assert_eq!(parse_bytes("1GiB"), Some(1 << 30));
    assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
    assert_eq!(parse_bytes("10MB"), Some(10_000_000));
    assert_eq!(parse_bytes("1000"), Some(1000));
    assert_eq!(parse_bytes("4 kib"), Some(4096));
    assert_eq!(parse_bytes("1.5GiB"), None);
    assert_eq!(parse_bytes("GiB"), None);
    assert_eq!(parse_bytes("1 PB"), None);
    assert_eq!(parse_bytes("99999999999TiB"), None);
}

#[test]
fn bad_durations_bytes_sync_and_checkpoint() {
    let text = r#"[mesh]
name = "t"
retention = { max_age = "forever", max_bytes = "lots" }
sync = "sometimes"
checkpoint = { every_events = 0, every_ms = 20 }
[[node]]
id = "root"
members = [{ name = "a", host = "h" }]
"#;
    assert_error(
        text,
        "3:25",
        "max_age = \"forever\": expected a duration such as \"30d\"",
    );
    assert_error(text, "3:48", "max_bytes: expected a byte size");
    assert_error(
        text,
        "4:8",
        "sync = \"sometimes\": expected \"always\" or a duration",
    );
    assert_error(text, "5:31", "every_events = 0: expected an integer >= 1");
    for (bad, why) in [
        ("0s", "expected a duration above 0 and at most \"10s\""),
        ("1m", "expected a duration above 0 and at most \"10s\""),
        ("soon", "expected a duration such as"),
    ] {
        let t = format!(
            "[mesh]\nname = \"t\"\npublish_timeout = \"{bad}\"\n[[node]]\nid = \"root\"\nmembers = [{{ name = \"a\", host = \"h\" }}]\n"
        );
        assert_error(&t, "3:19", &format!("publish_timeout = \"{bad}\": {why}"));
    }
}

// ---------------------------------------------------------------- serde errors

#[test]
fn toml_syntax_error_has_position() {
    let text = "[mesh]\nname = \"t\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("2:"), "{errs:?}");
}

#[test]
fn unknown_field_names_it_and_the_allowed_ones() {
    let text = with_root(
        "[[node.point]]\nname = \"x\"\nsource = \"sim\"\nsim = { kind = \"sine\", perod_s = 3 }\n",
    );
    assert_error(
        &text,
        "9:24",
        "unknown field `perod_s`, expected one of `kind`, `period_s`",
    );

    let text = with_root("colour = \"red\"\n");
    assert_error(&text, "6:1", "unknown field `colour`");

    let text = ROOT.replace("port_base = 1000", "port_bse = 1000");
    assert_error(
        &text,
        "5:38",
        "unknown field `port_bse`, expected one of `name`, `host`, `port_base`",
    );

    let text = ROOT.replace("name = \"t\"", "name = \"t\"\nsize = 3");
    assert_error(
        &text,
        "3:1",
        "unknown field `size`, expected one of `name`, `retention`",
    );
}

// ---------------------------------------------------------------- node ids

#[test]
fn node_id_syntax() {
    let text = ROOT.replace("id = \"root\"", "id = \"Root\"");
    assert_error(
        &text,
        "4:6",
        "node id \"Root\": expected segments of lowercase letters",
    );
    let text = with_root("[[node]]\nid = \"root..x\"\nmembers = [{ name = \"a\", host = \"h\", port_base = 1010 }]\n");
    assert_error(&text, "7:6", "node id \"root..x\"");
}

#[test]
fn node_ids_share_one_root() {
    let text = with_root("[[node]]\nid = \"other.x\"\nmembers = [{ name = \"a\", host = \"h\", port_base = 1010 }]\n");
    assert_error(
        &text,
        "7:6",
        "node \"other.x\" is not under the root \"root\"",
    );
}

#[test]
fn exactly_one_root() {
    let text = with_root(
        "[[node]]\nid = \"second\"\nmembers = [{ name = \"a\", host = \"h\", port_base = 1010 }]\n",
    );
    assert_error(
        &text,
        "7:6",
        "second root node \"second\": the root is \"root\" (line 4)",
    );

    let text = ROOT.replace("id = \"root\"", "id = \"root.a\"");
    assert_error(&text, "4:6", "no root node");

    assert_error("[mesh]\nname = \"t\"\n", "1:1", "no [[node]] tables");
}

#[test]
fn parent_must_exist() {
    let text = with_root("[[node]]\nid = \"root.sooth.plc\"\nmembers = [{ name = \"a\", host = \"h\", port_base = 1010 }]\n");
    let errs = errors(&text);
    assert_eq!(
        errs,
        [r#"7:6: node "root.sooth.plc" has no parent "root.sooth""#]
    );
    let shown = Topology::parse("topology.toml", &text)
        .unwrap_err()
        .to_string();
    assert_eq!(
        shown,
        r#"topology.toml:7:6: node "root.sooth.plc" has no parent "root.sooth""#
    );
}

#[test]
fn node_ids_are_unique() {
    let text = with_root(
        "[[node]]\nid = \"root\"\nmembers = [{ name = \"a\", host = \"h\", port_base = 1010 }]\n",
    );
    assert_error(&text, "7:6", "duplicate node id \"root\" (first at line 4)");
}

#[test]
fn view_values() {
    let text = ROOT.replace("id = \"root\"", "id = \"root\"\nview = \"forest\"");
    assert_error(
        &text,
        "5:8",
        "view = \"forest\": expected \"subtree\" or \"tree\"",
    );
}

#[test]
fn a_tree_view_needs_a_parent_that_holds_the_plant() {
    let node = |id: &str, view: &str, base: u32| {
        format!(
            "[[node]]\nid = \"{id}\"\n{view}members = [{{ name = \"a\", host = \"h\", port_base = {base} }}]\n"
        )
    };
    // Under the root, or under a tree view: fine; the root keeps its
    // subtree, which is everything, so `outside` is empty there.
    let ok = with_root(&format!(
        "{}{}",
        node("root.a", "view = \"tree\"\n", 1100),
        node("root.a.x", "view = \"tree\"\n", 1200)
    ));
    let t = Topology::parse("t.toml", &ok).expect("valid");
    let ids = |v: Vec<&crate::model::Node>| v.iter().map(|n| n.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(t.outside("root.a.x")), vec!["root", "root.a"]);
    assert_eq!(ids(t.outside("root.a")), vec!["root"]);
    assert!(t.outside("root").is_empty());
    // Under a node that keeps only its subtree: refused, at the node.
    let bad = with_root(&format!(
        "{}{}",
        node("root.a", "", 1100),
        node("root.a.x", "view = \"tree\"\n", 1200)
    ));
    assert_error(
        &bad,
        "10:6",
        "its parent \"root.a\" is neither the root nor view = \"tree\"",
    );
}

// ---------------------------------------------------------------- points

const SIM: &str = "source = \"sim\"\nsim = { kind = \"sine\" }\n";

#[test]
fn point_name_syntax() {
    let text = with_root(&format!("[[node.point]]\nname = \"Temp\"\n{SIM}"));
    assert_error(&text, "7:8", "point name \"Temp\": expected one segment");
    let text = with_root(&format!("[[node.point]]\nname = \"a.b\"\n{SIM}"));
    assert_error(&text, "7:8", "point name \"a.b\"");
}

#[test]
fn point_name_underscore_is_reserved() {
    let text = with_root(&format!("[[node.point]]\nname = \"_role\"\n{SIM}"));
    assert_error(&text, "7:8", "reserved for system events");
}

#[test]
fn point_names_are_unique_in_a_node() {
    let text = with_root(&format!(
        "[[node.point]]\nname = \"x\"\n{SIM}[[node.point]]\nname = \"x\"\n{SIM}"
    ));
    assert_error(
        &text,
        "11:8",
        "duplicate point \"x\" in node \"root\" (first at line 7)",
    );
}

#[test]
fn point_name_differs_from_child_nodes() {
    let text = with_root(&format!(
        "[[node.point]]\nname = \"north\"\n{SIM}[[node]]\nid = \"root.north\"\nmembers = [{{ name = \"a\", host = \"h\", port_base = 1010 }}]\n"
    ));
    assert_error(
        &text,
        "7:8",
        "point \"north\" of node \"root\" has the same name as child node \"root.north\"",
    );
}

// ---------------------------------------------------------------- members

fn node_with(members: &str, extra: &str) -> String {
    format!("[mesh]\nname = \"t\"\n[[node]]\nid = \"root\"\nmembers = {members}\n{extra}")
}

#[test]
fn one_or_two_members() {
    assert_error(
        &node_with("[]", ""),
        "5:11",
        "has 0 members: expected 1 (single) or 2",
    );
    let three = r#"[{ name = "a", host = "h", port_base = 1000 }, { name = "b", host = "h", port_base = 1010 }, { name = "c", host = "h", port_base = 1020 }]"#;
    assert_error(&node_with(three, ""), "5:11", "has 3 members");
    let text = "[mesh]\nname = \"t\"\n[[node]]\nid = \"root\"\n";
    assert_error(text, "4:6", "node \"root\" has no members");
}

#[test]
fn member_names() {
    let bad = r#"[{ name = "A", host = "h", port_base = 1000 }]"#;
    assert_error(
        &node_with(bad, ""),
        "5:21",
        "member name \"A\": expected lowercase",
    );
    let dup = r#"[{ name = "a", host = "h", port_base = 1000 }, { name = "a", host = "h", port_base = 1010 }]"#;
    assert_error(
        &node_with(dup, "witness = { host = \"h\", port_base = 1020 }\n"),
        "5:67",
        "duplicate member \"a\" in node \"root\"",
    );
    let nameless = r#"[{ host = "h", port_base = 1000 }]"#;
    assert_error(
        &node_with(nameless, ""),
        "5:12",
        "member 1 of node \"root\" has no name",
    );
}

const PAIR: &str = r#"[{ name = "a", host = "h", port_base = 1000 }, { name = "b", host = "h", port_base = 1010 }]"#;
const ONE: &str = r#"[{ name = "a", host = "h", port_base = 1000 }]"#;

#[test]
fn pair_needs_witness() {
    assert_error(
        &node_with(PAIR, ""),
        "5:11",
        "has 2 members (an HA pair) and needs a witness",
    );
    let t = parse_ok(&node_with(
        PAIR,
        "witness = { host = \"h\", port_base = 1020 }\n",
    ));
    assert!(t.root().is_pair());
}

#[test]
fn single_member_takes_no_witness() {
    let text = node_with(ONE, "witness = { host = \"h\", port_base = 1020 }\n");
    assert_error(
        &text,
        "6:11",
        "has a single member: a witness only goes with 2 members",
    );
}

#[test]
fn witness_has_no_name() {
    let text = node_with(
        PAIR,
        "witness = { name = \"w\", host = \"h\", port_base = 1020 }\n",
    );
    assert_error(&text, "6:20", "a witness has no name");
}

#[test]
fn prefer_names_a_member_of_a_pair() {
    let witness = "witness = { host = \"h\", port_base = 1020 }\n";
    let text = node_with(PAIR, &format!("{witness}prefer = \"c\"\n"));
    assert_error(
        &text,
        "7:10",
        "prefer = \"c\" names no member of node \"root\": expected one of a, b",
    );
    let t = parse_ok(&node_with(PAIR, &format!("{witness}prefer = \"b\"\n")));
    assert_eq!(t.root().prefer.as_deref(), Some("b"));

    let text = node_with(ONE, "prefer = \"a\"\n");
    assert_error(&text, "6:10", "prefer = \"a\" needs an HA pair (2 members)");
}

#[test]
fn host_must_not_be_empty() {
    let text = node_with(r#"[{ name = "a", host = "", port_base = 1000 }]"#, "");
    assert_error(&text, "5:33", "host \"\": expected a host name or address");
}

#[test]
fn hooks_default_timeout_and_bounds() {
    let hooks = "hooks = { on_activate = \"/bin/up\" }\n";
    let t = parse_ok(&node_with(ONE, hooks));
    let h = t.root().hooks.as_ref().unwrap();
    assert_eq!(h.on_activate.as_deref(), Some("/bin/up"));
    assert_eq!((h.on_deactivate.as_deref(), h.timeout_ms), (None, 5000));
    let text = node_with(
        ONE,
        "hooks = { on_deactivate = \"/bin/down\", timeout_ms = 0 }\n",
    );
    assert_error(&text, "6:53", "timeout_ms = 0: expected an integer >= 1");
}

// ---------------------------------------------------------------- ports

#[test]
fn port_resolution() {
    let members = r#"[
  { name = "a", host = "h" },
  { name = "b", host = "i", port_base = 20000, http_port = 9999 },
]"#;
    let t = parse_ok(&node_with(
        members,
        "witness = { host = \"j\", nats_port = 5000 }\n",
    ));
    let root = t.root();
    assert_eq!(root.member("a").unwrap().endpoint.ports, Ports::DEFAULT);
    assert_eq!(
        root.member("a").unwrap().endpoint.ports.all(),
        [4222, 7422, 6222, 7600, 8080, 4840, 8222]
    );
    let b = root.member("b").unwrap().endpoint.ports;
    assert_eq!(b.all(), [20000, 20001, 20002, 20003, 9999, 20005, 20006]);
    let w = root.witness.as_ref().unwrap();
    assert_eq!(w.ports.nats, 5000);
    assert_eq!(w.ports.leafnode, 7422);
    assert_eq!(w.nats_url(), "nats://j:5000");
}

#[test]
fn port_base_must_fit() {
    let text = node_with(r#"[{ name = "a", host = "h", port_base = 65530 }]"#, "");
    assert_error(
        &text,
        "5:50",
        "port_base = 65530: expected 1..=65529 so that port_base + 6 fits",
    );
    let text = node_with(r#"[{ name = "a", host = "h", port_base = 65529 }]"#, "");
    assert_eq!(
        parse_ok(&text).root().members[0].endpoint.ports.monitor,
        65535
    );
    let text = node_with(r#"[{ name = "a", host = "h", port_base = "x" }]"#, "");
    assert_error(
        &text,
        "5:50",
        "invalid type: string \"x\", expected an integer",
    );
    let text = node_with(r#"[{ name = "a", host = "h", nats_port = 70000 }]"#, "");
    assert_error(
        &text,
        "5:50",
        "nats_port = 70000: expected a port in 1..=65535",
    );
}

#[test]
fn ports_clash_across_nodes_on_one_host() {
    let text = with_root("[[node]]\nid = \"root.north\"\nmembers = [{ name = \"a\", host = \"h\", port_base = 1001 }]\n");
    let errs = errors(&text);
    assert_eq!(
        errs,
        ["8:50: port 1001 of root.north/a clashes with root/a on h"]
    );

    // Same ports on another host string are fine.
    let text = with_root("[[node]]\nid = \"root.north\"\nmembers = [{ name = \"a\", host = \"g\", port_base = 1001 }]\n");
    parse_ok(&text);
}

#[test]
fn witness_ports_clash_too() {
    let text = node_with(PAIR, "witness = { host = \"h\", port_base = 1015 }\n");
    assert_error(
        &text,
        "6:37",
        "port 1015 of root/witness clashes with root/b on h",
    );
}

#[test]
fn explicit_port_clash_points_at_its_key() {
    let text = with_root("[[node]]\nid = \"root.north\"\nmembers = [{ name = \"a\", host = \"h\", port_base = 2000, http_port = 1004 }]\n");
    assert_error(
        &text,
        "8:68",
        "port 1004 of root.north/a clashes with root/a on h",
    );
}

#[test]
fn ports_within_one_endpoint_are_distinct() {
    let text = node_with(
        r#"[{ name = "a", host = "h", port_base = 1000, raft_port = 1000 }]"#,
        "",
    );
    assert_error(
        &text,
        "5:68",
        "port 1000 of root/a is used twice (nats_port and raft_port)",
    );
}

// ---------------------------------------------------------------- sim points

fn point(body: &str) -> String {
    with_root(&format!("[[node.point]]\nname = \"p\"\n{body}"))
}

#[test]
fn sim_point_needs_sim_table_with_kind() {
    assert_error(
        &point("source = \"sim\"\n"),
        "8:10",
        "sim point \"p\" needs a sim table",
    );
    assert_error(
        &point("source = \"sim\"\nsim = { period_s = 3 }\n"),
        "9:7",
        "needs kind",
    );
    assert_error(
        &point("source = \"sim\"\nsim = { kind = \"triangle\" }\n"),
        "9:16",
        "sim kind \"triangle\": expected one of sine, ramp, random_walk, square",
    );
}

#[test]
fn sim_defaults() {
    let t = parse_ok(&point(SIM));
    let Source::Sim(sim) = &t.root().points[0].source else {
        panic!("sim point")
    };
    assert_eq!(
        (sim.period_s, sim.min, sim.max, sim.every_ms),
        (30.0, 0.0, 100.0, 1000)
    );
    let t = parse_ok(&point(
        "source = \"sim\"\nsim = { kind = \"random_walk\" }\n",
    ));
    let Source::Sim(sim) = &t.root().points[0].source else {
        panic!("sim point")
    };
    assert_eq!(sim.kind, SimKind::RandomWalk);
}

#[test]
fn sim_period_must_be_positive() {
    let text = point("source = \"sim\"\nsim = { kind = \"sine\", period_s = 0 }\n");
    assert_error(
        &text,
        "9:35",
        "period_s = 0: expected a number of seconds > 0",
    );
}

#[test]
fn sim_every_ms_at_least_one() {
    let text = point("source = \"sim\"\nsim = { kind = \"sine\", every_ms = 0 }\n");
    assert_error(&text, "9:35", "every_ms = 0: expected an integer >= 1");
}

#[test]
fn sim_min_not_above_max() {
    let text = point("source = \"sim\"\nsim = { kind = \"sine\", min = 50, max = 10 }\n");
    assert_error(&text, "9:40", "max = 10 is below min = 50");
    let text = point("source = \"sim\"\nsim = { kind = \"sine\", min = 500 }\n");
    assert_error(&text, "9:30", "max = 100 is below min = 500");
}

#[test]
fn sim_points_are_not_writable() {
    let text = point(&format!("{SIM}writable = true\n"));
    assert_error(&text, "10:12", "sim point \"p\" cannot be writable");
}

#[test]
fn modbus_keys_on_sim_points() {
    let text = point(&format!("{SIM}register = \"holding:1\"\n"));
    assert_error(&text, "10:12", "register only applies to modbus points");
}

#[test]
fn source_must_be_sim_or_modbus() {
    assert_error(
        &point("source = \"opcua\"\n"),
        "8:10",
        "source = \"opcua\": expected \"sim\" or \"modbus\"",
    );
    assert_error(&point(""), "7:8", "point \"p\" has no source");
}

#[test]
fn deadband_not_negative() {
    let text = point(&format!("{SIM}deadband = -1.0\n"));
    assert_error(&text, "10:12", "deadband = -1: expected a number >= 0");
}

// ---------------------------------------------------------------- modbus points

/// Lines 1-6: a root with a modbus device; point keys start at line 9.
fn modbus_point(body: &str) -> String {
    format!(
        "{ROOT}modbus = {{ address = \"10.0.0.1:502\" }}\n[[node.point]]\nname = \"p\"\nsource = \"modbus\"\n{body}"
    )
}

#[test]
fn modbus_data_type_defaults() {
    for (register, data_type) in [
        ("holding:1", DataType::U16),
        ("input:1", DataType::U16),
        ("coil:1", DataType::Bool),
        ("discrete:1", DataType::Bool),
    ] {
        let t = parse_ok(&modbus_point(&format!("register = \"{register}\"\n")));
        let Source::Modbus(m) = &t.root().points[0].source else {
            panic!("modbus point")
        };
        assert_eq!(m.data_type, data_type, "{register}");
        assert_eq!(m.scale, 1.0);
    }
    let t = parse_ok(&modbus_point("register = \"holding:7\"\ntype = \"i32\"\n"));
    let Source::Modbus(m) = &t.root().points[0].source else {
        panic!("modbus point")
    };
    assert_eq!(
        m.register,
        Register {
            kind: RegisterKind::Holding,
            address: 7
        }
    );
    assert_eq!(m.data_type, DataType::I32);
    let device = t.root().modbus.as_ref().unwrap();
    assert_eq!(
        (device.unit, device.poll_ms, device.timeout_ms),
        (1, 200, 500)
    );
}

#[test]
fn modbus_point_needs_register() {
    assert_error(
        &modbus_point(""),
        "9:10",
        "modbus point \"p\" needs register = \"holding:N\"",
    );
}

#[test]
fn modbus_point_needs_node_modbus_table() {
    let text = point("source = \"modbus\"\nregister = \"holding:1\"\n");
    assert_error(&text, "8:10", "needs the node's modbus table");
}

#[test]
fn register_spec_lists_the_forms() {
    let text = modbus_point("register = \"holdng:1\"\n");
    assert_error(
        &text,
        "10:12",
        "expected holding:N, input:N, coil:N or discrete:N",
    );
    let text = modbus_point("register = \"holding:70000\"\n");
    assert_error(&text, "10:12", "register \"holding:70000\"");
}

#[test]
fn bad_data_type() {
    let text = modbus_point("register = \"holding:1\"\ntype = \"u64\"\n");
    assert_error(
        &text,
        "11:8",
        "type \"u64\": expected one of bool, u16, i16, u32, i32, f32",
    );
}

#[test]
fn bit_registers_are_bool() {
    let text = modbus_point("register = \"coil:1\"\ntype = \"u16\"\n");
    assert_error(&text, "11:8", "type = \"u16\" does not fit coil:1");
    let text = modbus_point("register = \"discrete:1\"\ntype = \"f32\"\n");
    assert_error(&text, "11:8", "does not fit discrete:1");
}

#[test]
fn two_register_types_need_room() {
    let text = modbus_point("register = \"input:65535\"\ntype = \"f32\"\n");
    assert_error(
        &text,
        "10:12",
        "type \"f32\" takes 2 registers but input:65535 is the last address",
    );
    parse_ok(&modbus_point(
        "register = \"input:65534\"\ntype = \"u32\"\n",
    ));
    parse_ok(&modbus_point(
        "register = \"input:65535\"\ntype = \"i16\"\n",
    ));
}

#[test]
fn writable_only_on_holding_and_coil() {
    let text = modbus_point("register = \"input:1\"\nwritable = true\n");
    assert_error(
        &text,
        "11:12",
        "cannot be writable: only holding registers and coils",
    );
    let text = modbus_point("register = \"discrete:1\"\nwritable = true\n");
    assert_error(&text, "11:12", "cannot be writable");
    parse_ok(&modbus_point("register = \"coil:1\"\nwritable = true\n"));
}

#[test]
fn scale_is_non_zero() {
    let text = modbus_point("register = \"holding:1\"\nscale = 0.0\n");
    assert_error(
        &text,
        "11:9",
        "scale = 0: expected a finite non-zero number",
    );
}

#[test]
fn modbus_device_rules() {
    let device = |table: &str| {
        format!("{ROOT}modbus = {table}\n[[node.point]]\nname = \"p\"\nsource = \"modbus\"\nregister = \"holding:1\"\n")
    };
    assert_error(
        &device(r#"{ address = "10.0.0.1" }"#),
        "6:22",
        "modbus address \"10.0.0.1\": expected host:port",
    );
    assert_error(
        &device(r#"{ address = ":502" }"#),
        "6:22",
        "expected host:port",
    );
    assert_error(
        &device(r#"{ address = "h:502", unit = 300 }"#),
        "6:38",
        "unit = 300: expected a Modbus unit id in 0..=255",
    );
    assert_error(
        &device(r#"{ address = "h:502", life_sign = "coil:9" }"#),
        "6:43",
        "life_sign = \"coil:9\": expected a holding register",
    );
    assert_error(
        &device(r#"{ address = "h:502", life_sign = "holding" }"#),
        "6:43",
        "life_sign: register \"holding\"",
    );
    assert_error(
        &device(r#"{ address = "h:502", poll_ms = 0 }"#),
        "6:41",
        "poll_ms = 0",
    );
    let t = parse_ok(&device(
        r#"{ address = "h:502", unit = 3, life_sign = "holding:900" }"#,
    ));
    let m = t.root().modbus.as_ref().unwrap();
    assert_eq!(m.unit, 3);
    assert_eq!(m.life_sign.unwrap().to_string(), "holding:900");
}

// ---------------------------------------------------------------- collecting

#[test]
fn collects_every_problem_sorted_by_line() {
    let text = r#"[mesh]
name = "t"
[[node]]
id = "root.a.b"
members = [{ name = "a", host = "h", port_base = 1000 }]
[[node.point]]
name = "_x"
source = "sim"
sim = { kind = "sine", min = 5, max = 1 }
[[node]]
id = "root"
view = "up"
members = [{ name = "a", host = "h", port_base = 1000 }]
"#;
    let errs = errors(text);
    let at: Vec<&str> = errs
        .iter()
        .map(|e| e.split(": ").next().unwrap_or(""))
        .collect();
    assert_eq!(at, ["4:6", "7:8", "9:39", "12:8", "13:50"], "{errs:#?}");
    assert!(errs[0].contains("has no parent \"root.a\""));
    assert!(errs[4].contains("port 1000 of root/a clashes with root.a.b/a on h"));
}

// ---------------------------------------------------------------- clients

#[test]
fn security_is_secured_unless_none_is_written() {
    assert_eq!(parse_ok(ROOT).mesh.security, crate::Security::Secured);
    let plain = ROOT.replace("name = \"t\"\n", "name = \"t\"\nsecurity = \"none\"\n");
    assert_eq!(parse_ok(&plain).mesh.security, crate::Security::None);
    let bad = ROOT.replace("name = \"t\"\n", "name = \"t\"\nsecurity = \"off\"\n");
    assert_error(&bad, "3:12", "security = \"off\": expected \"none\"");
}

#[test]
fn the_contracts_client_example_loads() {
    // shared/TOPOLOGY.md, "Security and client principals".
    let t = parse_ok(&with_root(
        r#"[[node]]
id = "root.south"
members = [{ name = "a", host = "h", port_base = 1100 }]
[[client]]
name = "ops_south"
role = "operator"
scope = "root.south"
# password_hash = "$argon2id$..."
"#,
    ));
    let c = &t.clients[0];
    assert_eq!(
        (c.name.as_str(), c.role, c.scope.as_str(), c.line),
        ("ops_south", crate::ClientRole::Operator, "root.south", 10)
    );
    assert!(c.covers("root.south") && c.covers("root.south.cell1"));
    assert!(!c.covers("root") && !c.covers("root.southwest"));
}

#[test]
fn client_rules() {
    let text = with_root(
        r#"[[client]]
name = "Ops"
role = "operator"
scope = "root"
[[client]]
name = "v"
role = "admin"
scope = "root.nowhere"
[[client]]
name = "v"
role = "viewer"
scope = "root"
"#,
    );
    assert_error(&text, "7:8", "client name \"Ops\": expected one token");
    assert_error(
        &text,
        "12:8",
        "role = \"admin\": expected \"viewer\", \"operator\" or \"engineer\"",
    );
    assert_error(
        &text,
        "13:9",
        "scope \"root.nowhere\" is not a node of the tree",
    );
    assert_error(&text, "15:8", "duplicate client \"v\" (first at line 11)");
}
