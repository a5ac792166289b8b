//! What is wrong with each origin's history at this member, as far as the
//! member can tell: a replica puller that cannot go on (stalled) or found
//! the source holding other bytes than its own copy (diverged), and a fold
//! that stopped folding an origin because its stream continues with
//! messages that are not the next event of its chain. Written by the
//! pullers and the fold, read by member info and the state reply: a fold
//! or a replica never stops silently.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::wire::{OriginTrouble, TroubleKind};

/// (origin, kind) → (reason, seq, since).
type Registry = BTreeMap<(String, TroubleKind), (String, u64, Instant)>;

/// The registry of one member.
#[derive(Debug, Default)]
pub struct Troubles {
    inner: Mutex<Registry>,
}

impl Troubles {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records (or keeps, with its first `since`) a trouble of `origin`.
    pub fn set(&self, origin: &str, kind: TroubleKind, seq: u64, reason: String) {
        let mut map = self.lock();
        let entry = map
            .entry((origin.to_owned(), kind))
            .or_insert_with(|| (reason.clone(), seq, Instant::now()));
        entry.0 = reason;
        entry.1 = seq;
    }

    /// The trouble of `kind` of `origin` is over.
    pub fn clear(&self, origin: &str, kind: TroubleKind) {
        self.lock().remove(&(origin.to_owned(), kind));
    }

    /// Whether `origin` has a trouble of `kind`.
    pub fn has(&self, origin: &str, kind: TroubleKind) -> bool {
        self.lock().contains_key(&(origin.to_owned(), kind))
    }

    /// Every current trouble, by origin.
    pub fn list(&self) -> Vec<OriginTrouble> {
        self.lock()
            .iter()
            .map(|((origin, kind), (reason, seq, since))| OriginTrouble {
                origin: origin.clone(),
                kind: *kind,
                seq: *seq,
                reason: reason.clone(),
                since_ms: since.elapsed().as_millis() as u64,
            })
            .collect()
    }
}
