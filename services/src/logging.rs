//! Logging: human-readable lines on stderr, filtered by `RUST_LOG`
//! (default `info`). stdout is kept for command output (JSON, tables).

/// Installs the stderr subscriber once.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,async_nats=warn,openraft=error,openraft::replication=off,openraft::core::raft_core=off",
        )
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
