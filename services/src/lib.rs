//! services (placeholder)
