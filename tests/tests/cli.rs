//! The command line on bad and good input (no servers needed).

use tests::cli;

fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("topology.toml");
    std::fs::write(&path, text).expect("write");
    let path = path.display().to_string();
    let (code, out, err) = cli(&["topology", "check", &path]).expect("run canopy");
    (code, out, err.replace(&path, "topology.toml"))
}

const HEAD: &str = "[mesh]\nname = \"t\"\n";

#[test]
fn a_valid_topology_prints_its_tree() {
    let (code, out, err) = check(topology::EXAMPLE_TOPOLOGY);
    assert_eq!(code, 0, "{err}");
    for needle in ["root.north", "root.south", "fan1_speed", "temp1"] {
        assert!(out.contains(needle), "{needle} missing from {out}");
    }
}

#[test]
fn every_bad_topology_names_file_line_and_column() {
    let node = |id: &str, base: u16| {
        format!("[[node]]\nid = \"{id}\"\nmembers = [{{ name = \"a\", host = \"127.0.0.1\", port_base = {base} }}]\n")
    };
    let cases: Vec<(String, &str)> = vec![
        (format!("{HEAD}{}{}", node("root", 20000), node("root.sooth.plc", 20100)), "has no parent \"root.sooth\""),
        (
            format!(
                "{HEAD}{}[[node.point]]\nname = \"p\"\nsource = \"sim\"\nsim = {{ kind = \"sine\" }}\n[[node.point]]\nname = \"p\"\nsource = \"sim\"\nsim = {{ kind = \"sine\" }}\n",
                node("root", 20000)
            ),
            "p",
        ),
        (
            format!(
                "{HEAD}{}[[node.point]]\nname = \"kid\"\nsource = \"sim\"\nsim = {{ kind = \"sine\" }}\n{}",
                node("root", 20000),
                node("root.kid", 20100)
            ),
            "kid",
        ),
        (
            format!(
                "{HEAD}{}modbus = {{ address = \"127.0.0.1:502\" }}\n[[node.point]]\nname = \"p\"\nsource = \"modbus\"\nregister = \"holdin:1\"\n",
                node("root", 20000)
            ),
            "holding",
        ),
        (format!("{HEAD}{}{}", node("root", 20000), node("root.b", 20003)), "clashes"),
        (format!("{HEAD}{}colour = \"red\"\n", node("root", 20000)), "colour"),
    ];
    for (text, fragment) in cases {
        let (code, _, err) = check(&text);
        assert_eq!(code, 1, "accepted:\n{text}");
        let line = err.lines().next().unwrap_or("");
        let mut parts = line.splitn(4, ':');
        assert_eq!(parts.next(), Some("topology.toml"), "{err}");
        let l: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let c: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        assert!(l > 0 && c > 0, "no line:col in {err:?}");
        assert!(err.contains(fragment), "expected {fragment:?} in {err:?}");
    }
}

#[test]
fn node_refuses_a_bad_topology_before_binding_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.toml");
    std::fs::write(&path, "[mesh]\nname = 3\n").expect("write");
    let p = path.display().to_string();
    let data = dir.path().join("d").display().to_string();
    let (code, _, err) =
        cli(&["node", "--topology", &p, "--node", "root", "--data", &data]).expect("run");
    assert_ne!(code, 0);
    assert!(err.contains("t.toml:2:"), "{err}");
    let (code, _, err) = cli(&[
        "node",
        "--topology",
        "/nonexistent.toml",
        "--node",
        "root",
        "--data",
        &data,
    ])
    .expect("run");
    assert_ne!(code, 0);
    assert!(err.contains("nonexistent.toml"), "{err}");
}

#[test]
fn nats_config_for_a_child_points_at_its_parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.toml");
    std::fs::write(&path, topology::DEFAULT_TOPOLOGY).expect("write");
    let p = path.display().to_string();
    let args = [
        "nats-config",
        "--topology",
        &p,
        "--node",
        "root.south",
        "--member",
        "b",
    ];
    // The secured tree's config names the member's certificate: without
    // --key it is refused, saying so.
    let (code, _, err) = cli(&args).expect("run");
    assert_ne!(code, 0);
    assert!(err.contains("--key"), "{err}");
    let keys = dir.path().join("keys");
    let k = keys.display().to_string();
    let (code, _, err) = cli(&["keys", "gen", "--topology", &p, "--out", &k]).expect("keys");
    assert_eq!(code, 0, "{err}");
    let seed = keys.join("root.south/b.nk").display().to_string();
    let mut with_key = args.to_vec();
    with_key.extend(["--key", &seed]);
    let (code, out, err) = cli(&with_key).expect("run");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("domain: \"root-south\""), "{out}");
    assert!(out.contains("handshake_first: true"), "{out}");
    // A child of a pair lists all three of the pair's servers.
    for port in [14001, 14011, 14021] {
        assert!(
            out.contains(&format!("nats-leaf://127.0.0.1:{port}")),
            "{out}"
        );
    }
    assert!(out.contains("cluster {"), "{out}");
}

#[test]
fn a_node_whose_retention_no_disk_can_reserve_stops_at_once_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.toml");
    // Every stream reserves max_bytes when it is made: 1000 TiB fits no disk.
    let text = format!(
        "[mesh]\nname = \"t\"\nsecurity = \"none\"\nretention = {{ max_age = \"1d\", max_bytes = \"1000TiB\" }}\n\n\
         [[node]]\nid = \"root\"\nmembers = [{{ name = \"a\", host = \"127.0.0.1\", port_base = {} }}]\n",
        tests::free_ports(7)
    );
    std::fs::write(&path, text).expect("write");
    let p = path.display().to_string();
    let data = dir.path().join("d").display().to_string();
    let nats = tests::nats_server_bin().display().to_string();
    let (code, _, err) = cli(&[
        "node",
        "--topology",
        &p,
        "--node",
        "root",
        "--data",
        &data,
        "--nats-server",
        &nats,
    ])
    .expect("run");
    assert_ne!(code, 0);
    assert!(err.contains("retention.max_bytes"), "{err}");
    assert!(err.contains("EV_root"), "{err}");
}
