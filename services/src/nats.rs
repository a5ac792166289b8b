//! A canopy process's own nats-server: started as a supervised child from
//! the generated config, or attached to one run elsewhere, and the client
//! connection to it. Shared by node members and witnesses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::natsconf::{self, Role};
use crate::supervisor;

/// How the process gets its NATS server.
#[derive(Debug, Clone)]
pub enum Nats {
    /// Run nats-server as a child from this binary.
    Supervise(PathBuf),
    /// Use a server run elsewhere.
    Attach(String),
}

impl Nats {
    /// `--attach URL` if given, else the nats-server binary found from
    /// `--nats-server`, `$CANOPY_NATS_SERVER` or PATH.
    pub fn from_args(attach: Option<String>, binary: Option<&Path>) -> anyhow::Result<Nats> {
        Ok(match attach {
            Some(url) => Nats::Attach(url),
            None => Nats::Supervise(supervisor::find_nats_server(binary)?),
        })
    }
}

/// Connect options that present `tls` (when given) to a server of the
/// tree: TLS first, the mesh CA as the only root, this identity's
/// certificate, and its own inbox prefix ([`crate::rights::inbox_of`]:
/// the broker delivers it no one else's replies). Without `tls` the
/// connection is plaintext.
pub fn options(tls: Option<&crate::certs::TlsFiles>) -> async_nats::ConnectOptions {
    let o = async_nats::ConnectOptions::new();
    match tls {
        None => o,
        Some(t) => {
            let o = o
                .require_tls(true)
                .tls_first()
                .add_root_certificates(t.ca.clone())
                .add_client_certificate(t.cert.clone(), t.key.clone());
            match inbox_prefix(t) {
                Some(prefix) => o.custom_inbox_prefix(prefix),
                None => o,
            }
        }
    }
}

/// The inbox prefix of the identity whose certificate is `tls`: from its
/// place in a `keys gen` directory (`<out>/<node>/<member>.crt` or
/// `<out>/clients/<name>.crt`, a client's scope from the manifest beside).
/// None when the layout is not one of those (the library's default).
pub fn inbox_prefix(tls: &crate::certs::TlsFiles) -> Option<String> {
    let name = tls.cert.file_stem()?.to_str()?;
    let dir = tls.cert.parent()?.file_name()?.to_str()?;
    if dir == "clients" {
        let scope = crate::keys::manifest_beside(tls)
            .ok()
            .and_then(|m| m.clients.get(name).map(|c| c.scope.clone()));
        Some(crate::rights::client_inbox(name, scope.as_deref()))
    } else {
        Some(crate::rights::process_inbox(dir, name))
    }
}

/// How often a process looks at its server's leaf links.
const LEAFZ_EVERY: Duration = Duration::from_secs(2);

/// Counts the leaf links of the server monitored at `127.0.0.1:monitor`
/// that closed, by their connection ids in `/leafz` (a link that comes
/// back is a new connection with a new id), calling `lost` with each
/// newly gone batch, until `cancel`. A link that lived less than a poll
/// is not seen. An unanswered poll counts nothing.
pub async fn count_lost_leaf_links(
    monitor: u16,
    lost: impl Fn(u64) + Send + 'static,
    cancel: CancellationToken,
) {
    let mut known: Option<std::collections::BTreeSet<u64>> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LEAFZ_EVERY) => {}
            _ = cancel.cancelled() => return,
        }
        let Ok(now) = leaf_ids(monitor).await else {
            continue;
        };
        if let Some(before) = &known {
            let gone = before.difference(&now).count() as u64;
            if gone > 0 {
                tracing::warn!(gone, "leaf links of this server closed");
                lost(gone);
            }
        }
        known = Some(now);
    }
}

/// The connection ids of the leaf links `/leafz` lists.
async fn leaf_ids(monitor: u16) -> anyhow::Result<std::collections::BTreeSet<u64>> {
    let v = monitor_json(monitor, "/leafz", LEAFZ_EVERY).await?;
    Ok(v["leafs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["id"].as_u64())
        .collect())
}

/// The JSON document at `path` of a nats-server's monitoring port on
/// loopback (`/leafz`, `/jsz`), each step bounded by `patience`.
pub async fn monitor_json(
    port: u16,
    path: &str,
    patience: Duration,
) -> anyhow::Result<serde_json::Value> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::time::timeout(
        patience,
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await??;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(patience, s.read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .context("no HTTP body")?;
    Ok(serde_json::from_str(body)?)
}

/// How often a secured server's process looks at the key manifest.
const MANIFEST_EVERY: Duration = Duration::from_secs(2);

/// What a server's config was rendered from.
struct Rendered {
    topo: topology::Topology,
    node: topology::Node,
    role: String,
    store: PathBuf,
    tls: crate::certs::TlsFiles,
    conf_path: PathBuf,
    conf: String,
}

/// Keeps the server's config in step with the key manifest: when what it
/// renders from changes (a client added or removed, a certificate pin of
/// the pair rotated), the config is rendered again and the server reloads
/// it (SIGHUP). nats-server checks every connection again on a reload, so
/// a removed client is disconnected then. An unreadable manifest keeps the
/// config as it is (and says so once).
async fn follow_manifest(
    mut r: Rendered,
    pid: tokio::sync::watch::Receiver<Option<u32>>,
    cancel: CancellationToken,
) {
    let role = if r.role == "witness" {
        Role::Witness
    } else {
        Role::Member(&r.role)
    };
    let mut warned = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(MANIFEST_EVERY) => {}
            _ = cancel.cancelled() => return,
        }
        let manifest = match crate::keys::manifest_beside(&r.tls) {
            Ok(m) => {
                warned = false;
                m
            }
            Err(e) => {
                if !warned {
                    tracing::warn!("keeping the server's config as it is: {e:#}");
                    warned = true;
                }
                continue;
            }
        };
        let conf = match natsconf::render(&r.topo, &r.node, role, &r.store, Some(&r.tls), &manifest)
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("the manifest changed, but the config does not render: {e}");
                continue;
            }
        };
        if conf == r.conf {
            continue;
        }
        if let Err(e) = std::fs::write(&r.conf_path, &conf) {
            tracing::warn!("writing {}: {e}", r.conf_path.display());
            continue;
        }
        let reloaded = (*pid.borrow())
            .is_some_and(|p| crate::faults::kill(p, nix::sys::signal::Signal::SIGHUP));
        tracing::info!(
            clients = manifest.clients.len(),
            reloaded,
            "the manifest changed: the server's users and pins follow"
        );
        r.conf = conf;
    }
}

/// The process's server once started: its client URL, the supervisor's
/// view of the child (None when attached) and the supervisor task.
#[derive(Debug)]
pub struct OwnServer {
    /// The client URL of the server.
    pub url: String,
    /// The process's certificate, on the secured tree: its server presents
    /// it, and so does every connection of the process to it.
    pub tls: Option<crate::certs::TlsFiles>,
    /// The child's pid and restart count (None when attached).
    pub supervised: Option<supervisor::Supervised>,
    task: Option<JoinHandle<()>>,
    cancel: CancellationToken,
}

impl OwnServer {
    /// Starts (or attaches to) the server of `role` in `node`, its config
    /// and store under `data`; `key` is the process's nkey seed, whose
    /// certificate beside it the secured tree needs.
    pub fn start(
        mode: &Nats,
        topo: &topology::Topology,
        node: &topology::Node,
        role: Role<'_>,
        data: &Path,
        key: Option<&Path>,
    ) -> anyhow::Result<OwnServer> {
        let ep = natsconf::endpoint(node, role).with_context(|| {
            format!("node {} has no {:?} in the topology", node.id, role.name())
        })?;
        let tls = match (topo.mesh.security, key) {
            (topology::Security::Secured, Some(key)) => Some(
                crate::certs::TlsFiles::of_seed(key)
                    .with_context(|| format!("the TLS files of {}/{}", node.id, role.name()))?,
            ),
            _ => None,
        };
        let cancel = CancellationToken::new();
        match mode {
            Nats::Supervise(binary) => {
                let manifest = match &tls {
                    Some(t) => crate::keys::manifest_beside(t)?,
                    None => Default::default(),
                };
                if tls.is_some()
                    && node.is_pair()
                    && natsconf::route_pins(node, &manifest).is_none()
                {
                    tracing::warn!(
                        "the manifest has no certificate pins for this pair: its routes take any certificate of the mesh CA (run canopy keys gen again to add them)"
                    );
                }
                let conf = natsconf::render(
                    topo,
                    node,
                    role,
                    &data.join("jetstream"),
                    tls.as_ref(),
                    &manifest,
                )
                .map_err(anyhow::Error::msg)?;
                let conf_path = data.join("nats.conf");
                std::fs::write(&conf_path, &conf)
                    .with_context(|| format!("writing {}", conf_path.display()))?;
                let (sup, task) = supervisor::start(
                    binary.clone(),
                    conf_path.clone(),
                    data.join("nats.log"),
                    cancel.clone(),
                )?;
                if let Some(tls) = &tls {
                    tokio::spawn(follow_manifest(
                        Rendered {
                            topo: topo.clone(),
                            node: node.clone(),
                            role: role.name().to_owned(),
                            store: data.join("jetstream"),
                            tls: tls.clone(),
                            conf_path,
                            conf,
                        },
                        sup.pid.clone(),
                        cancel.clone(),
                    ));
                }
                Ok(OwnServer {
                    url: natsconf::client_url(topo, ep),
                    tls,
                    supervised: Some(sup),
                    task: Some(task),
                    cancel,
                })
            }
            Nats::Attach(url) => Ok(OwnServer {
                url: url.clone(),
                tls,
                supervised: None,
                task: None,
                cancel,
            }),
        }
    }

    /// The child's current pid, if supervised and running.
    pub fn pid(&self) -> Option<u32> {
        self.supervised.as_ref().and_then(|s| *s.pid.borrow())
    }

    /// Supervisor restarts of the child so far.
    pub fn restarts(&self) -> u64 {
        self.supervised
            .as_ref()
            .map(|s| s.restarts.load(std::sync::atomic::Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Stops the child (if supervised) and waits for the supervisor.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Connects to the process's own server, retrying forever (it may be
/// restarting).
pub async fn connect_own(server: &OwnServer, name: String) -> anyhow::Result<async_nats::Client> {
    let url = &server.url;
    options(server.tls.as_ref())
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|n| Duration::from_millis((50 * (n as u64 + 1)).min(500)))
        .connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}
