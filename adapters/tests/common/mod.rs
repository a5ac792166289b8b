//! Helpers shared by the integration tests: simulators on dynamic ports,
//! silent listeners, and waiting for conditions under a deadline.
#![allow(dead_code, clippy::unwrap_used)]

use std::{future::Future, net::SocketAddr, path::Path, time::Duration};

use adapters::plcsim::{self, PlcSimConfig, RegisterValue};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use topology::{DataType, ModbusPoint, Register};

/// Generous: waits end as soon as the condition holds; this only bounds a
/// broken test.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A running plcsim; cancelled (and its port closed) on drop.
pub struct Sim {
    pub addr: SocketAddr,
    pub cancel: CancellationToken,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Sim {
    /// Stops the server and waits until its listener and connections are
    /// closed.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts plcsim on a fresh port of 127.0.0.1.
pub async fn start_sim(config: PlcSimConfig) -> Sim {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_on(listener, config)
}

/// Starts plcsim on an already bound listener.
pub fn serve_on(listener: TcpListener, config: PlcSimConfig) -> Sim {
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(plcsim::serve(listener, config, cancel.clone()));
    Sim {
        addr,
        cancel,
        task: Some(task),
    }
}

/// A config with initial values given as `"holding:5=17"` strings and an
/// optional write log.
pub fn config(initial: &[&str], write_log: Option<&Path>) -> PlcSimConfig {
    PlcSimConfig {
        drives: Vec::new(),
        write_log: write_log.map(Path::to_path_buf),
        initial: initial
            .iter()
            .map(|s| plcsim::parse_initial(s).unwrap())
            .collect::<Vec<(Register, RegisterValue)>>(),
    }
}

/// An address where nothing listens: bind a port, then release it.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// A listener that accepts connections and never answers; runs until
/// `cancel` fires.
pub async fn silent_listener(cancel: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => held.push(socket),
                    Err(_) => return,
                },
            }
        }
    });
    addr
}

pub fn point(register: &str, data_type: DataType, scale: f64) -> ModbusPoint {
    ModbusPoint {
        register: register.parse().unwrap(),
        data_type,
        scale,
    }
}

/// Runs `f` until it yields `Some`, checking again every few milliseconds,
/// and panics naming `what` if that does not happen before [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let wait = async {
        loop {
            if let Some(v) = f().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    match tokio::time::timeout(DEADLINE, wait).await {
        Ok(v) => v,
        Err(_) => panic!("gave up waiting for {what}"),
    }
}

/// Bounds a future that must finish, so a broken test fails instead of
/// hanging.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(v) => v,
        Err(_) => panic!("gave up waiting for {what}"),
    }
}
