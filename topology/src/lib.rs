//! topology (placeholder)
