//! adapters (placeholder)
