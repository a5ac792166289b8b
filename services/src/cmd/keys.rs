//! `canopy keys gen`: an nkey per member and witness, one per client
//! principal, the mesh CA with a TLS certificate for each of them
//! ([`crate::certs`]), and the manifest.
//!
//! Seeds stay on the host of their process (`<out>/<node>/<member>.nk`,
//! `<out>/clients/<name>.nk`, mode 0600); `manifest.json` holds only public
//! keys (and each client's role and scope) and goes to every node and
//! auditor. Existing seeds are kept unless `--force`: regenerating a key
//! would make the old checkpoints unverifiable against the new manifest.
//! A client that leaves the topology, or whose key is replaced, moves to
//! `retired_clients` with the time it was retired, so what it signed
//! before still verifies and nothing it signs later is accepted.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use events::audit::{ClientKey, Manifest, RetiredClient};
use topology::{Client, ClientRole, Security, Topology};

/// A client `canopy lab` adds when the topology lists none: (name, role).
pub const LAB_CLIENTS: [(&str, ClientRole); 2] = [
    ("operator", ClientRole::Engineer),
    ("viewer", ClientRole::Viewer),
];

/// What was generated: the manifest's path and each client's identity
/// prefix (`--identity`).
#[derive(Debug)]
pub struct Generated {
    /// `<out>/manifest.json`.
    pub manifest: PathBuf,
    /// Every client: its entry and its identity prefix.
    pub clients: Vec<(Client, PathBuf)>,
    /// Seeds and certificates made now.
    pub created: usize,
    /// Seeds and certificates kept from before.
    pub kept: usize,
}

/// Generates missing keys and (re)writes the manifest; with `bundles`,
/// also one directory per host ([`write_bundles`]).
pub fn gen(
    topology: &Path,
    out: &Path,
    force: bool,
    lab_clients: bool,
    bundles: Option<&Path>,
    also_hosts: &[String],
) -> anyhow::Result<u8> {
    let topo = super::load_topology(topology)?;
    let g = gen_with_hosts(&topo, out, force, lab_clients, also_hosts)?;
    if let Some(dir) = bundles {
        for (host, files) in write_bundles(&topo, out, dir)? {
            eprintln!(
                "keys: bundle for {host}: {} ({files} files)",
                dir.join(&host).display()
            );
        }
    }
    eprintln!(
        "keys: {} created, {} kept; manifest at {}; client identities: {}",
        g.created,
        g.kept,
        g.manifest.display(),
        g.clients
            .iter()
            .map(|(c, p)| format!(
                "{} ({} of {}) {}",
                c.name,
                c.role.as_str(),
                c.scope,
                p.display()
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(0)
}

/// Copies, per host of the topology, what its processes need from `out`
/// into `dir/<host>/` in the same layout: each process's seed, certificate
/// and TLS key (0600 kept), `ca.crt` and `manifest.json`. The CA key and
/// the clients' secrets go to no host. Returns (host, files copied).
pub fn write_bundles(
    topo: &Topology,
    out: &Path,
    dir: &Path,
) -> anyhow::Result<Vec<(String, usize)>> {
    let mut hosts: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
    for node in &topo.nodes {
        for (name, ep) in node.processes() {
            let files = hosts.entry(ep.host.clone()).or_default();
            for ext in ["nk", "crt", "key"] {
                files.push(Path::new(&node.id).join(format!("{name}.{ext}")));
            }
            // Query workers run beside the node's members.
            if name != "witness" {
                for ext in ["crt", "key"] {
                    let f =
                        Path::new(&node.id).join(format!("{}.{ext}", crate::certs::QUERY_IDENTITY));
                    if !files.contains(&f) {
                        files.push(f);
                    }
                }
            }
        }
    }
    let mut made = Vec::new();
    for (host, mut files) in hosts {
        files.push(PathBuf::from("ca.crt"));
        files.push(PathBuf::from("manifest.json"));
        let root = dir.join(&host);
        for f in &files {
            let (from, to) = (out.join(f), root.join(f));
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
        made.push((host, files.len()));
    }
    Ok(made)
}

fn write_seed(path: &Path, kp: &nkeys::KeyPair) -> anyhow::Result<()> {
    let seed = kp
        .seed()
        .map_err(|e| anyhow::anyhow!("encoding a seed: {e}"))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(seed.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}

/// The seed at `path`, made if missing (or if `force`); true if made.
fn seed(path: &Path, force: bool) -> anyhow::Result<(nkeys::KeyPair, bool)> {
    if path.exists() && !force {
        return Ok((crate::keys::load_seed(path)?, false));
    }
    let kp = nkeys::KeyPair::new_user();
    write_seed(path, &kp)?;
    Ok((kp, true))
}

/// [`gen`] on a loaded topology; `lab_defaults` adds [`LAB_CLIENTS`]
/// (scoped to the root) when the topology lists no client.
pub fn gen_for(
    topo: &Topology,
    out: &Path,
    force: bool,
    lab_defaults: bool,
) -> anyhow::Result<Generated> {
    gen_with_hosts(topo, out, force, lab_defaults, &[])
}

/// [`gen_for`], every server certificate also valid for `also_hosts`.
pub fn gen_with_hosts(
    topo: &Topology,
    out: &Path,
    force: bool,
    lab_defaults: bool,
    also_hosts: &[String],
) -> anyhow::Result<Generated> {
    let manifest_path = out.join("manifest.json");
    let old: Option<Manifest> = std::fs::read_to_string(&manifest_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let mut manifest = Manifest {
        security: (topo.mesh.security == Security::None).then(|| "none".to_owned()),
        retired_clients: old
            .as_ref()
            .map(|m| m.retired_clients.clone())
            .unwrap_or_default(),
        ..Manifest::default()
    };
    let (mut created, mut kept) = (0, 0);
    let mut count = |made: bool| {
        if made {
            created += 1;
        } else {
            kept += 1;
        }
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (ca, new_ca) = crate::certs::ca(out, &topo.mesh.name, force)?;
    count(new_ca);
    manifest
        .certs
        .insert("ca".into(), crate::certs::fingerprint_pem(&ca.pem)?);
    let remake = force || new_ca;
    for node in &topo.nodes {
        let mut procs: Vec<(String, &topology::Endpoint)> = node
            .members
            .iter()
            .map(|m| (m.name.clone(), &m.endpoint))
            .collect();
        if let Some(w) = &node.witness {
            procs.push(("witness".to_owned(), w));
        }
        let dir = out.join(&node.id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, ep) in procs {
            let (kp, made) = seed(&dir.join(format!("{name}.nk")), force)?;
            count(made);
            manifest.insert(&node.id, &name, kp.public_key());
            let subject = crate::certs::Subject {
                name: crate::certs::member_name(&node.id, &name),
                hosts: std::iter::once(&ep.host)
                    .chain(also_hosts.iter().filter(|h| **h != ep.host))
                    .cloned()
                    .collect(),
                server: true,
            };
            let (fp, made) = crate::certs::leaf(&ca, &dir.join(&name), &subject, remake)?;
            count(made);
            manifest.certs.insert(format!("{}/{name}", node.id), fp);
            let pin = crate::certs::pin_of_file(&crate::certs::with_ext(&dir.join(&name), "crt"))?;
            manifest.pins.insert(format!("{}/{name}", node.id), pin);
        }
        // The node's query workers: a client certificate (no nkey: they
        // sign nothing).
        let q = crate::certs::QUERY_IDENTITY;
        let subject = crate::certs::Subject {
            name: crate::certs::query_worker_name(&node.id),
            hosts: Vec::new(),
            server: false,
        };
        let (fp, made) = crate::certs::leaf(&ca, &dir.join(q), &subject, remake)?;
        count(made);
        manifest.certs.insert(format!("{}/{q}", node.id), fp);
    }

    let mut clients = topo.clients.clone();
    if clients.is_empty() && lab_defaults {
        clients = LAB_CLIENTS
            .iter()
            .map(|(name, role)| Client {
                name: (*name).to_owned(),
                role: *role,
                scope: topo.root().id.clone(),
                password_hash: None,
                line: 0,
            })
            .collect();
    }
    let dir = out.join("clients");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut identities = Vec::new();
    for c in clients {
        let prefix = dir.join(&c.name);
        let (kp, made) = seed(&dir.join(format!("{}.nk", c.name)), force)?;
        count(made);
        let subject = crate::certs::Subject {
            name: crate::certs::client_name(&c.name),
            hosts: Vec::new(),
            server: false,
        };
        let (fp, made) = crate::certs::leaf(&ca, &prefix, &subject, remake)?;
        count(made);
        manifest.certs.insert(format!("clients/{}", c.name), fp);
        manifest.clients.insert(
            c.name.clone(),
            ClientKey {
                key: kp.public_key(),
                role: c.role.as_str().to_owned(),
                scope: c.scope.clone(),
            },
        );
        identities.push((c, prefix));
    }
    // A client gone from the topology, or holding a new key, is retired.
    let now_ms = crate::member::publisher::now_us() / 1000;
    for (name, held) in old.map(|m| m.clients).unwrap_or_default() {
        if manifest.clients.get(&name) != Some(&held) {
            manifest.retired_clients.push(RetiredClient {
                name,
                held,
                retired_ms: now_ms,
            });
        }
    }

    let mut body = serde_json::to_value(&manifest)?;
    if let Some(map) = body.as_object_mut() {
        map.insert("mesh".into(), topo.mesh.name.clone().into());
    }
    std::fs::write(&manifest_path, serde_json::to_string_pretty(&body)? + "\n")
        .with_context(|| format!("writing {}", manifest_path.display()))?;
    Ok(Generated {
        manifest: manifest_path,
        clients: identities,
        created,
        kept,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is the failure report in tests
mod tests {
    use super::*;

    fn topo(clients: &str) -> Topology {
        let text = format!("{}\n{clients}", topology::DEFAULT_TOPOLOGY);
        Topology::parse("t.toml", &text).unwrap()
    }

    #[test]
    fn clients_get_keys_and_a_removed_one_is_retired() {
        let dir = tempfile::tempdir().unwrap();
        let two = topo(
            "[[client]]\nname = \"ops\"\nrole = \"operator\"\nscope = \"root.south\"\n\
             [[client]]\nname = \"old\"\nrole = \"viewer\"\nscope = \"root\"\n",
        );
        let g = gen_for(&two, dir.path(), false, false).unwrap();
        let m: Manifest =
            serde_json::from_str(&std::fs::read_to_string(&g.manifest).unwrap()).unwrap();
        assert_eq!(m.clients["ops"].scope, "root.south");
        assert_eq!(m.clients["ops"].role, "operator");
        let old_key = m.clients["old"].key.clone();
        let seed = dir.path().join("clients/ops.nk");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&seed).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let id = crate::keys::ClientIdentity::load(&g.clients[0].1).unwrap();
        assert_eq!(
            (id.name.as_str(), id.key.public_key()),
            ("ops", m.clients["ops"].key.clone())
        );

        // "old" leaves the topology: retired, its key kept for the audit;
        // "ops" keeps its key.
        let one = topo("[[client]]\nname = \"ops\"\nrole = \"operator\"\nscope = \"root.south\"\n");
        gen_for(&one, dir.path(), false, false).unwrap();
        let m2: Manifest =
            serde_json::from_str(&std::fs::read_to_string(&g.manifest).unwrap()).unwrap();
        assert_eq!(m2.clients["ops"], m.clients["ops"]);
        assert!(!m2.clients.contains_key("old"));
        assert_eq!(m2.retired_clients.len(), 1);
        assert_eq!(m2.retired_clients[0].held.key, old_key);
        assert!(m2.client(&old_key).is_none());
    }

    #[test]
    fn a_host_bundle_holds_only_that_hosts_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let text = topology::EXAMPLE_TOPOLOGY.replace(
            "witness = { host = \"127.0.0.1\"",
            "witness = { host = \"127.0.0.9\"",
        );
        let t = Topology::parse("t.toml", &text).unwrap();
        let out = dir.path().join("keys");
        gen_for(&t, &out, false, true).unwrap();
        let bundles = dir.path().join("bundles");
        let made = write_bundles(&t, &out, &bundles).unwrap();
        let hosts: Vec<&str> = made.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(hosts, ["127.0.0.1", "127.0.0.9"], "{made:?}");
        let witness_host = bundles.join("127.0.0.9");
        let mut files: Vec<String> = Vec::new();
        let mut stack = vec![witness_host.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    let rel = e.path().strip_prefix(&witness_host).unwrap().to_owned();
                    files.push(rel.display().to_string());
                }
            }
        }
        files.sort();
        let witnesses: Vec<&topology::Node> =
            t.nodes.iter().filter(|n| n.witness.is_some()).collect();
        let mut want = vec!["ca.crt".to_owned(), "manifest.json".to_owned()];
        for n in witnesses {
            for ext in ["crt", "key", "nk"] {
                want.push(format!("{}/witness.{ext}", n.id));
            }
        }
        want.sort();
        assert_eq!(files, want);
        use std::os::unix::fs::PermissionsExt;
        let key = witness_host.join(want.iter().find(|f| f.ends_with(".key")).unwrap());
        assert_eq!(
            std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn every_process_and_client_gets_a_certificate_of_the_mesh_ca_kept_across_runs() {
        let dir = tempfile::tempdir().unwrap();
        let t = topo("[[client]]\nname = \"ops\"\nrole = \"operator\"\nscope = \"root\"\n");
        let g = gen_for(&t, dir.path(), false, false).unwrap();
        let m: Manifest =
            serde_json::from_str(&std::fs::read_to_string(&g.manifest).unwrap()).unwrap();
        let processes: usize = t
            .nodes
            .iter()
            .map(|n| n.members.len() + usize::from(n.witness.is_some()))
            .sum();
        // The CA, every process, every node's query workers, the client.
        assert_eq!(
            m.certs.len(),
            1 + processes + t.nodes.len() + 1,
            "{:?}",
            m.certs
        );
        for (name, fp) in &m.certs {
            let path = match name.as_str() {
                "ca" => dir.path().join("ca.crt"),
                other => dir.path().join(format!("{other}.crt")),
            };
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(&crate::certs::fingerprint_pem(&text).unwrap(), fp, "{name}");
        }
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "root/a.key", "root/query.key", "clients/ops.key"] {
            let mode = std::fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        // A second run keeps every certificate; --force makes new ones.
        gen_for(&t, dir.path(), false, false).unwrap();
        let again: Manifest =
            serde_json::from_str(&std::fs::read_to_string(&g.manifest).unwrap()).unwrap();
        assert_eq!(again.certs, m.certs);
        gen_for(&t, dir.path(), true, false).unwrap();
        let forced: Manifest =
            serde_json::from_str(&std::fs::read_to_string(&g.manifest).unwrap()).unwrap();
        assert!(forced.certs.iter().all(|(k, v)| m.certs[k] != *v));
    }

    #[test]
    fn a_lab_without_clients_gets_an_operator_and_a_viewer() {
        let dir = tempfile::tempdir().unwrap();
        let g = gen_for(&topo(""), dir.path(), false, true).unwrap();
        let names: Vec<_> = g
            .clients
            .iter()
            .map(|(c, _)| (c.name.as_str(), c.role, c.scope.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("operator", ClientRole::Engineer, "root"),
                ("viewer", ClientRole::Viewer, "root")
            ]
        );
        let m: Manifest =
            serde_json::from_str(&std::fs::read_to_string(&g.manifest).unwrap()).unwrap();
        assert!(m.secured());
    }
}
