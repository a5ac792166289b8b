//! The client commands: `state`, `watch`, `status`, `write`, `force`,
//! `unforce`, `switchover`, `maintenance`, `history`.
//!
//! They connect to any server of the tree; NATS interest routing across the
//! leafnodes carries their requests to the node that serves them. Replies
//! are the typed ones of [`crate::wire`].

mod command;
mod control;
mod history;
mod state;
mod status;
mod watch;

use std::time::Duration;

use anyhow::{bail, Context as _};
use async_nats::Client;
use serde::de::DeserializeOwned;

pub use command::{command, unforce};
pub use control::{maintenance, switchover};
pub use history::history;
pub use state::state;
pub use status::{status, status_report};
pub use watch::watch;

use crate::cli::ServerArg;

/// Connects to the server the user named, as `name`: over TLS with the
/// identity's certificate when the URL is `tls://`.
pub(crate) async fn connect_as(s: &ServerArg, name: &str) -> anyhow::Result<Client> {
    let tls = if s.server.starts_with("tls://") {
        let Some(prefix) = &s.identity else {
            bail!(
                "{} is a TLS server of a secured tree: give --identity PATH (or CANOPY_IDENTITY), the prefix of a client's files from canopy keys gen",
                s.server
            );
        };
        Some(
            crate::certs::TlsFiles::of(prefix)
                .with_context(|| format!("the TLS files of the identity {}", prefix.display()))?,
        )
    } else {
        None
    };
    let plaintext = tls.is_none();
    crate::nats::options(tls.as_ref())
        .name(name)
        .connection_timeout(Duration::from_secs_f64(s.timeout.max(0.1)))
        .request_timeout(Some(Duration::from_secs_f64(s.timeout.max(0.1))))
        .connect(&s.server)
        .await
        .map_err(|e| {
            // A TLS-first server waits for a TLS hello and says nothing.
            let hint = if plaintext && e.to_string().contains("expected INFO") {
                " (it said nothing to a plaintext client: the servers of a secured tree speak TLS first; use its tls:// URL with --identity)"
            } else {
                ""
            };
            anyhow::anyhow!("cannot reach NATS at {}: {e}{hint}", s.server)
        })
}

/// [`connect_as`] the CLI.
pub(crate) async fn connect(s: &ServerArg) -> anyhow::Result<Client> {
    connect_as(s, "canopy cli").await
}

/// A request whose reply is a JSON `T`; the error says who does not answer.
pub(crate) async fn request<T: DeserializeOwned>(
    client: &Client,
    subject: String,
    body: Vec<u8>,
) -> anyhow::Result<T> {
    let msg = client
        .request(subject.clone(), body.into())
        .await
        .map_err(|e| {
            use async_nats::client::RequestErrorKind as K;
            match e.kind() {
                K::NoResponders => anyhow::anyhow!(
                    "nobody serves {subject}: is that node running and linked to this server?"
                ),
                K::TimedOut => anyhow::anyhow!("no reply on {subject} in time"),
                _ => anyhow::anyhow!("request on {subject}: {e}"),
            }
        })?;
    serde_json::from_slice(&msg.payload)
        .with_context(|| format!("reply on {subject} is not what canopy answers"))
}
