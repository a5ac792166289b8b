//! cluster-level test helpers (placeholder)
