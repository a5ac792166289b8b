//! The Python peers the tests run against (pymodbus servers, the Modbus
//! tap that attributes every write to its client).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::bin::{python_bin, workspace_root};

/// A Python helper server from `tests/py/` (pymodbus, the Modbus tap),
/// killed on Drop.
#[derive(Debug)]
pub struct PyModbus {
    child: Child,
}

impl PyModbus {
    /// Starts `tests/py/modbus_server.py --port PORT ARGS` and waits until it listens.
    pub fn start(port: u16, args: &[&str]) -> anyhow::Result<PyModbus> {
        let mut all = vec!["--port".to_owned(), port.to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        Self::script("modbus_server.py", &all, port)
    }

    /// Starts `tests/py/modbus_tap.py` on `listen`, forwarding to `upstream`
    /// and logging every write to `log`.
    pub fn tap(listen: u16, upstream: u16, log: &Path) -> anyhow::Result<PyModbus> {
        let args = vec![
            "--listen".to_owned(),
            listen.to_string(),
            "--upstream".to_owned(),
            upstream.to_string(),
            "--log".to_owned(),
            log.display().to_string(),
        ];
        Self::script("modbus_tap.py", &args, listen)
    }

    fn script(name: &str, args: &[String], port: u16) -> anyhow::Result<PyModbus> {
        let mut child = Command::new(python_bin())
            .arg(workspace_root().join("tests/py").join(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut server = PyModbus { child };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if !line.contains("ready") {
            let _ = server.child.kill();
            bail!("{name} did not start: {line:?}");
        }
        // The ready line may come just before the listen call: wait for the port.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("{name} never listened on {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }
}

impl Drop for PyModbus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
