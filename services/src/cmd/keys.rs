//! `canopy keys gen`: an nkey per member and witness, and the manifest.
//!
//! Seeds stay on the host of their process (`<out>/<node>/<member>.nk`,
//! mode 0600); `manifest.json` holds only public keys and goes to every
//! auditor. Existing seeds are kept unless `--force`: regenerating a key
//! would make the old checkpoints unverifiable against the new manifest.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context as _;

/// Generates missing keys and (re)writes the manifest.
pub fn gen(topology: &Path, out: &Path, force: bool) -> anyhow::Result<u8> {
    let topo = super::load_topology(topology)?;
    let mut manifest = BTreeMap::new();
    let (mut created, mut kept) = (0, 0);
    for node in &topo.nodes {
        let mut names: Vec<String> = node.members.iter().map(|m| m.name.clone()).collect();
        if node.witness.is_some() {
            names.push("witness".to_owned());
        }
        let dir = out.join(&node.id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for name in names {
            let path = dir.join(format!("{name}.nk"));
            let kp = if path.exists() && !force {
                kept += 1;
                crate::keys::load_seed(&path)?
            } else {
                let kp = nkeys::KeyPair::new_user();
                let seed = kp
                    .seed()
                    .map_err(|e| anyhow::anyhow!("encoding a seed: {e}"))?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("writing {}", path.display()))?;
                f.write_all(seed.as_bytes())?;
                f.write_all(b"\n")?;
                created += 1;
                kp
            };
            manifest.insert(format!("{}/{name}", node.id), kp.public_key());
        }
    }
    let body = serde_json::to_string_pretty(
        &serde_json::json!({ "mesh": topo.mesh.name, "keys": manifest }),
    )?;
    std::fs::write(out.join("manifest.json"), body + "\n")?;
    eprintln!(
        "keys: {created} created, {kept} kept; manifest at {}",
        out.join("manifest.json").display()
    );
    Ok(0)
}
