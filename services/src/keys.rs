//! Key files on disk: the nkey seeds `canopy keys gen` writes and the
//! processes load at start.

use std::path::Path;

use anyhow::Context as _;

/// Loads an nkey seed file (one line, `S...`).
pub fn load_seed(path: &Path) -> anyhow::Result<nkeys::KeyPair> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    nkeys::KeyPair::from_seed(text.trim())
        .map_err(|e| anyhow::anyhow!("{}: not an nkey seed: {e}", path.display()))
}

/// The public manifest beside a process's certificate
/// (`<out>/manifest.json` next to `<out>/ca.crt`): its clients are who the
/// process's server lets connect to the client port, its pins who may
/// route to a pair's servers. A missing or unreadable manifest is an
/// error that names it (a secured server with no clients would refuse
/// every operator, silently).
pub fn manifest_beside(tls: &crate::certs::TlsFiles) -> anyhow::Result<events::audit::Manifest> {
    let path = tls.ca.with_file_name("manifest.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (canopy keys gen writes it beside ca.crt; the server lists its clients from it)",
            path.display()
        )
    })?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not a canopy key manifest", path.display()))
}

/// A client's identity given as a path prefix (`--identity PATH`): its
/// command-signing key is `PATH.nk`; its name is the prefix's file name.
#[derive(Debug)]
pub struct ClientIdentity {
    /// The client's name (`clients/<name>`).
    pub name: String,
    /// Its command key pair.
    pub key: nkeys::KeyPair,
}

impl ClientIdentity {
    /// Loads `PATH.nk`.
    pub fn load(prefix: &Path) -> anyhow::Result<ClientIdentity> {
        let mut seed = prefix.as_os_str().to_owned();
        seed.push(".nk");
        let seed = Path::new(&seed);
        let key = load_seed(seed).with_context(|| {
            format!(
                "loading the client identity {} (expected {}: canopy keys gen writes <out>/clients/<name>.nk)",
                prefix.display(),
                seed.display()
            )
        })?;
        let name = prefix
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(ClientIdentity { name, key })
    }
}
