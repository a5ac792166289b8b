//! Key files on disk: the nkey seeds `canopy keys gen` writes and the
//! processes load at start.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::Context as _;
use events::audit::Manifest;

/// A key manifest on disk, re-read whenever its file changes (a client
/// added or retired, a key rotated); a file that no longer parses keeps
/// the last good one. What the members' command checks, the fold's and
/// the query workers' epoch gates read.
#[derive(Debug)]
pub struct ManifestFile {
    path: PathBuf,
    /// The file's mtime when last read, and what it held.
    loaded: Mutex<(Option<SystemTime>, Arc<Manifest>)>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read_manifest(path: &Path) -> anyhow::Result<Manifest> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not a canopy key manifest", path.display()))
}

impl ManifestFile {
    /// Loads the manifest at `path` (an error names it).
    pub fn load(path: &Path) -> anyhow::Result<ManifestFile> {
        let manifest = read_manifest(path)?;
        Ok(ManifestFile {
            path: path.to_owned(),
            loaded: Mutex::new((modified(path), Arc::new(manifest))),
        })
    }

    /// The manifest now.
    pub fn current(&self) -> Arc<Manifest> {
        let now = modified(&self.path);
        let mut l = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if now != l.0 {
            match read_manifest(&self.path) {
                Ok(m) => {
                    tracing::info!("key manifest {} re-read", self.path.display());
                    l.1 = Arc::new(m);
                }
                Err(e) => tracing::warn!("keeping the last key manifest: {e:#}"),
            }
            l.0 = now;
        }
        l.1.clone()
    }

    /// Which keys open an epoch of `origin`: the manifest's keys of its
    /// members, on a secured tree whose manifest has any (checked against
    /// the manifest of the moment, so a rotated key opens once the new
    /// manifest is there). `None` (every epoch open): the plaintext tree,
    /// or no key for `origin`.
    pub fn opener(self: &Arc<Self>, origin: &str) -> Option<events::Opener> {
        let manifest = self.current();
        let prefix = format!("{origin}/");
        let keyed = manifest.keys.keys().any(|k| k.starts_with(&prefix));
        if !manifest.secured() || !keyed {
            if manifest.secured() {
                tracing::warn!(%origin, "the key manifest has no key of this origin: its epochs are folded unchecked");
            }
            return None;
        }
        let (file, origin) = (self.clone(), origin.to_owned());
        Some(Arc::new(move |member: &str, key: &str| {
            file.current().key(&origin, member) == Some(key)
        }))
    }
}

/// Where the manifest beside a process's certificate is:
/// `<out>/manifest.json` next to `<out>/ca.crt`.
pub fn manifest_path(tls: &crate::certs::TlsFiles) -> PathBuf {
    tls.ca.with_file_name("manifest.json")
}

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
    let path = manifest_path(tls);
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
