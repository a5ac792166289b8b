//! Child processes that never outlive their parent.
//!
//! Every process canopy starts (a member's nats-server, the lab's members and
//! PLC simulators) goes through [`spawn`]: the child gets `PR_SET_PDEATHSIG`
//! so the kernel kills it when its parent dies, even by SIGKILL, and
//! [`stop`] asks it to leave (SIGTERM) before forcing it (SIGKILL).

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Where a child's stdout/stderr go.
#[derive(Debug)]
pub enum Output {
    /// Inherit the parent's (the lab: members log to the lab's stderr).
    Inherit,
    /// Append to a file (a member's nats-server log).
    File(std::path::PathBuf),
    /// stdout piped to the parent, stderr inherited (reading a ready line).
    PipedStdout,
}

/// Starts `program args` as a child that dies with this process.
///
/// Must be called from a runtime worker thread (not `spawn_blocking`): the
/// parent-death signal fires when the *thread* that forked exits, and tokio's
/// worker threads live as long as the runtime.
pub fn spawn(program: &std::path::Path, args: &[String], output: Output) -> anyhow::Result<Child> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    match output {
        Output::Inherit => {}
        Output::File(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening log file {}", path.display()))?;
            let err = file.try_clone()?;
            cmd.stdout(file).stderr(err);
        }
        Output::PipedStdout => {
            cmd.stdout(Stdio::piped());
        }
    }
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (prctl, getppid, kill); it allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The parent may have died between fork and prctl: then nobody
            // would ever deliver the signal.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                let _ = signal::kill(nix::unistd::getpid(), Signal::SIGKILL);
            }
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("starting {}", program.display()))
}

/// Asks a child to stop with SIGTERM, waits up to `grace`, then kills it.
pub async fn stop(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

/// Sends `sig` to a process by pid; false when it does not exist.
pub fn signal_pid(pid: u32, sig: Signal) -> bool {
    signal::kill(Pid::from_raw(pid as i32), sig).is_ok()
}

/// Processes stopped with SIGSTOP, continued (SIGCONT) when this is
/// dropped: a benchmark or test that fails while they are frozen never
/// leaves them stopped.
#[derive(Debug)]
pub struct Frozen(Vec<u32>);

impl Frozen {
    /// Stops every process in `pids` (in order).
    pub fn new(pids: &[u32]) -> Frozen {
        for &pid in pids {
            signal_pid(pid, Signal::SIGSTOP);
        }
        Frozen(pids.to_vec())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in self.0.iter().rev() {
            signal_pid(pid, Signal::SIGCONT);
        }
    }
}

/// One process as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Its state letter (`R`, `S`, `Z` for a zombie...).
    pub state: char,
    /// Its parent's pid.
    pub ppid: u32,
    /// User + system CPU time so far, in [`USER_HZ`] ticks.
    pub cpu_ticks: u64,
}

/// The clock ticks of `/proc` CPU times: 100 on every Linux ABI canopy
/// runs on.
pub const USER_HZ: f64 = 100.0;

/// `/proc/<pid>/stat` of a live (or zombie) process; `None` if gone.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        ppid: num(1) as u32,
        cpu_ticks: num(11) + num(12),
    })
}
