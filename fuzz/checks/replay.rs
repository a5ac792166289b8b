//! The corpus replay of the test suite: every file of a target's corpus
//! (`fuzz/corpus/<target>/`, kept minimised in the repository) through the
//! target's checks, once. Included by path from each crate's
//! `tests/fuzz_corpus.rs`; `CARGO_MANIFEST_DIR` is that crate's.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

/// Runs `check` on every file of `fuzz/corpus/<target>/`; fails naming the
/// file (and its bytes, if short) whose check panicked, and fails if the
/// corpus is missing or empty, so the test cannot pass on nothing.
pub fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => panic!("corpus {}: {e}", dir.display()),
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    for path in &files {
        let bytes = fs::read(path).expect("a corpus file reads");
        if panic::catch_unwind(|| check(&bytes)).is_err() {
            let shown: String = if bytes.len() <= 512 {
                bytes.iter().map(|b| format!("{b:02x}")).collect()
            } else {
                format!("{} bytes", bytes.len())
            };
            panic!("{} fails the checks: {shown}", path.display());
        }
    }
    eprintln!("{target}: {} corpus inputs replayed", files.len());
}
