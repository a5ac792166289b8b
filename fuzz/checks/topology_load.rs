//! The checks of the `topology_load` target, shared with the corpus
//! replay in `topology/tests/fuzz_corpus.rs` (both include this file by
//! path).
//!
//! What `Topology::parse` guarantees, and so what is asserted:
//!
//! - it never panics, on any text (bytes that are not UTF-8 are converted
//!   lossily first, as a file read with replacement would be);
//! - an error holds at least one diagnostic, each naming the file and a
//!   1-based line and column inside the text, and the whole error renders;
//! - a topology that loads is a tree (one root, every other node's parent
//!   present, ids unique, every node below the root) and renders it, with
//!   every node in the rendering.

use std::collections::HashSet;

use topology::Topology;

/// The file name diagnostics must carry.
pub const FILE: &str = "fuzz.toml";

/// Every check on one input; panics on a broken guarantee.
pub fn check(data: &[u8]) {
    check_text(&String::from_utf8_lossy(data));
}

/// Every check on one text.
pub fn check_text(text: &str) {
    match Topology::parse(FILE, text) {
        Err(err) => {
            assert!(!err.errors.is_empty(), "an error with no diagnostic");
            let lines = text.matches('\n').count() + 1;
            for d in &err.errors {
                assert_eq!(d.file, FILE);
                assert!(
                    d.line >= 1 && d.line <= lines,
                    "line {} of {lines}: {d}",
                    d.line
                );
                assert!(d.col >= 1, "column {}: {d}", d.col);
                assert!(!d.message.is_empty(), "a diagnostic says nothing: {d}");
            }
            assert!(!err.to_string().is_empty());
        }
        Ok(t) => {
            assert!(!t.nodes.is_empty(), "a topology with no node");
            let roots = t.nodes.iter().filter(|n| n.depth() == 0).count();
            assert_eq!(roots, 1, "one root");
            let mut ids = HashSet::new();
            for n in &t.nodes {
                assert!(ids.insert(n.id.as_str()), "duplicate id {}", n.id);
                if n.depth() > 0 {
                    assert!(t.parent(&n.id).is_some(), "{} has no parent", n.id);
                }
            }
            let root = t.root();
            assert_eq!(t.descendants(&root.id).len() + 1, t.nodes.len());
            let tree = t.render_tree();
            for n in &t.nodes {
                assert!(tree.contains(n.id.as_str()), "{} not in\n{tree}", n.id);
            }
        }
    }
}
