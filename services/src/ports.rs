//! Free loopback port blocks for test trees and benchmarks, reserved across
//! processes.
//!
//! Every cluster test and every benchmark builds a topology on loopback and
//! needs blocks of consecutive free ports (a member takes `port_base` + 0..6).
//! Two rules keep a handed-out port from being taken before its process
//! binds it:
//!
//! - **Below the kernel's ephemeral range.** A port picked by binding port 0
//!   lies in the ephemeral range, where the source port of any outgoing
//!   connection on the machine can take it before the member binds it
//!   ("cannot bind raft listener ... Address already in use" was a lab
//!   start-up flake). Blocks come from [`LOW`] up to the start of the
//!   ephemeral range, at a random start.
//! - **Reserved across processes.** nextest runs every test in its own
//!   process, so an in-process set of handed-out ports is not enough: each
//!   port of a block is locked with `flock` on a file of its own under
//!   `$TMPDIR/canopy-ports/`, held until the process exits (the kernel
//!   releases the lock then, even after SIGKILL, so a crashed test never
//!   leaks a reservation). `flock` locks belong to open files, not to
//!   processes, so the same lock also keeps one process from handing a
//!   port out twice. A port that some other program holds is skipped by a
//!   bind check.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{bail, Context as _};
use nix::fcntl::{Flock, FlockArg};

/// The lowest port handed out (well above the well-known and registered
/// services most machines run).
pub const LOW: u16 = 10_000;

/// Locks held by this process: one per reserved port, released at exit.
static HELD: Mutex<Vec<Flock<File>>> = Mutex::new(Vec::new());

/// The first port of the kernel's ephemeral range (32768 if unknown).
pub fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768)
}

fn lock_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join("canopy-ports");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Tries to lock `port` for this process; `None` if another process holds it.
fn try_lock(dir: &std::path::Path, port: u16) -> anyhow::Result<Option<Flock<File>>> {
    let path = dir.join(format!("{port}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(anyhow::anyhow!("locking {}: {e}", path.display())),
    }
}

/// A pseudo-random number for the block's start (no `rand` needed).
fn random(attempt: u32) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    h.write_u32(std::process::id());
    h.finish()
}

/// Reserves a block of `n` consecutive free loopback ports for the rest of
/// this process's life and returns its first port.
pub fn reserve(n: u16) -> anyhow::Result<u16> {
    let n = n.max(1);
    let high = ephemeral_low().saturating_sub(n);
    if high <= LOW + n {
        bail!("no room for {n} ports between {LOW} and the ephemeral range");
    }
    let dir = lock_dir()?;
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    for attempt in 0..2000u32 {
        let base = LOW + (random(attempt) % u64::from(high - LOW)) as u16;
        let mut locks = Vec::with_capacity(usize::from(n));
        for port in base..base + n {
            match try_lock(&dir, port)? {
                Some(l) => locks.push(l),
                None => break,
            }
        }
        if locks.len() < usize::from(n) {
            continue; // dropping `locks` releases the partial block
        }
        if (base..base + n).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            held.extend(locks);
            return Ok(base);
        }
    }
    bail!("no block of {n} free ports found below {high}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_below_the_ephemeral_range_and_never_overlap() {
        let eph = ephemeral_low();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let base = reserve(7).expect("a block");
            assert!(
                base >= LOW && base + 7 <= eph,
                "{base} outside {LOW}..{eph}"
            );
            for p in base..base + 7 {
                assert!(seen.insert(p), "port {p} handed out twice");
            }
        }
    }

    #[test]
    fn a_port_locked_by_another_open_file_is_not_handed_out() {
        // flock locks belong to open files: a second open of the same lock
        // file (as another process would do) cannot lock it while we hold it.
        let base = reserve(1).expect("a port");
        let dir = lock_dir().expect("dir");
        assert!(
            try_lock(&dir, base).expect("lock attempt").is_none(),
            "a reserved port could be locked again"
        );
    }
}
