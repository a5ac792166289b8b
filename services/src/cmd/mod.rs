//! One module per subcommand; [`run`] dispatches.

pub mod audit;
pub mod autoscale;
pub mod bench;
pub mod client;
pub mod compose;
pub mod keys;
pub mod lab;
pub mod node;
pub mod plcsim;
pub mod query;
pub mod topo;
pub mod witness;

use std::path::Path;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Cmd, KeysCmd, TopologyCmd};

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Cmd::Node(a) => node::run(a).await,
        Cmd::Lab(a) => lab::run(a).await,
        Cmd::Witness(a) => witness::run(a).await,
        Cmd::PlcSim(a) => plcsim::run(a).await,
        Cmd::Topology(TopologyCmd::Check { file }) => topo::check(&file),
        Cmd::Topology(TopologyCmd::Compose { file, image }) => {
            let t = load_topology(&file)?;
            print!(
                "{}",
                compose::render(&t, &file.display().to_string(), &image)?
            );
            Ok(0)
        }
        Cmd::Topology(TopologyCmd::Default) => {
            print!("{}", topology::DEFAULT_TOPOLOGY);
            Ok(0)
        }
        Cmd::NatsConfig(a) => topo::nats_config(a),
        Cmd::Keys(KeysCmd::Gen {
            topology,
            out,
            force,
            lab_clients,
            bundles,
            also_host,
        }) => keys::gen(
            &topology,
            &out,
            force,
            lab_clients,
            bundles.as_deref(),
            &also_host,
        ),
        Cmd::State(a) => client::state(a).await,
        Cmd::Watch(a) => client::watch(a).await,
        Cmd::Status(a) => client::status(a).await,
        Cmd::Audit(a) => audit::run(a).await,
        Cmd::Query(a) => query::run(a).await,
        Cmd::History(a) => client::history(a).await,
        Cmd::Autoscale(a) => autoscale::run(a).await,
        Cmd::Switchover(a) => client::switchover(a).await,
        Cmd::Maintenance(a) => client::maintenance(a).await,
        Cmd::Write(a) => client::command(crate::wire::Op::Write, a).await,
        Cmd::Force(a) => client::command(crate::wire::Op::Force, a).await,
        Cmd::Unforce(a) => client::unforce(a).await,
        Cmd::Bench(b) => bench::run(b).await,
    }
}

/// Loads a topology or explains why not (every error names file:line:col).
pub fn load_topology(path: &Path) -> anyhow::Result<topology::Topology> {
    topology::Topology::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A token cancelled on SIGINT or SIGTERM.
pub fn shutdown_token() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("signal received; shutting down");
        t.cancel();
    });
    Ok(token)
}
