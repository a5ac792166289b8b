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
