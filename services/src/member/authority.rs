//! Who may command this node: the checks on a signed command, against the
//! key manifest (re-read when its file changes) and the nonces already
//! used (a member taking over reads the recent ones from its stream, so a
//! replay across a failover is refused too).
//!
//! The nonces come from two places: the fold, which tells [`Authority`]
//! every `command` event of the node's own origin as it folds it (on the
//! standby too, so a member that takes over already knows them), and, once
//! at start, the last minute of `_command` events of the stream (what came
//! before the fold's restored snapshot). An activation serves its first
//! command only once both have caught up: the start read is done and the
//! fold has reached the activation's own first events.
//!
//! Each refusal names the check that failed: `key`, `signature`,
//! `request`, `node`, `time`, `replay`, `role` or `scope`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use events::audit::Manifest;
use events::{Body, CommandOp, Request};
use futures::StreamExt;

use crate::wire::SignedCommand;

/// How far a command's `ts` may be from this node's clock.
pub const SKEW: Duration = Duration::from_secs(30);

/// A command whose signature, client and rights were checked.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The client's name in the manifest.
    pub by: String,
    /// What it asked.
    pub request: Request,
    /// Its key, signature and the exact bytes signed, for the record.
    pub key: String,
    /// The signature.
    pub sig: Vec<u8>,
    /// The request as signed.
    pub signed: Vec<u8>,
}

/// The command checks of one member.
#[derive(Debug)]
pub struct Authority {
    manifest: Arc<crate::keys::ManifestFile>,
    /// nonce → the request's ts (ms); pruned past twice the skew.
    nonces: Mutex<HashMap<String, u64>>,
    /// Set once the start read of the recent commands is done.
    started: tokio::sync::watch::Sender<bool>,
}

/// A refusal: which check, and why.
/// The manifest's client holding `cmd`'s key, and the signature's bytes.
fn signer<'m>(
    manifest: &'m Manifest,
    cmd: &SignedCommand,
) -> Result<(&'m str, &'m events::audit::ClientKey, Vec<u8>), String> {
    let Some((name, client)) = manifest.client(&cmd.key) else {
        return Err(refused(
            "key",
            format!("{} is not a client key of the manifest", cmd.key),
        ));
    };
    let sig = hex::decode(&cmd.sig).map_err(|_| refused("signature", "sig is not hex"))?;
    Ok((name, client, sig))
}

/// Client `name`'s scope holds `node`.
fn in_scope(name: &str, client: &events::audit::ClientKey, node: &str) -> Result<(), String> {
    if client.covers(node) {
        return Ok(());
    }
    Err(refused(
        "scope",
        format!(
            "client {name} may command {} and below, not {node}",
            client.scope
        ),
    ))
}

/// A request signed at `ts` is within [`SKEW`] of `now_ms` and carries a
/// well-formed nonce.
fn fresh(ts: u64, nonce: &str, now_ms: u64) -> Result<(), String> {
    let skew = now_ms.abs_diff(ts);
    if skew > SKEW.as_millis() as u64 {
        return Err(refused(
            "time",
            format!(
                "signed {:.1} s {} this node's clock (at most {} s)",
                skew as f64 / 1000.0,
                if ts < now_ms { "behind" } else { "ahead of" },
                SKEW.as_secs()
            ),
        ));
    }
    if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refused("request", "nonce: expected 32 hex digits"));
    }
    Ok(())
}

fn refused(check: &str, why: impl std::fmt::Display) -> String {
    format!("refused ({check}): {why}")
}

impl Authority {
    /// Loads the manifest at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Authority> {
        Ok(Authority {
            manifest: Arc::new(crate::keys::ManifestFile::load(path)?),
            nonces: Mutex::new(HashMap::new()),
            started: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Remembers the nonce of a recorded signed command (from the fold).
    pub fn observe(&self, b: &events::CommandBody) {
        if let Ok(req) = serde_json::from_slice::<Request>(&b.signed) {
            self.nonces
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(req.nonce, req.ts);
        }
    }

    /// Reads the recent commands once (retrying until it can or `cancel`),
    /// then marks the start read done.
    pub async fn load_at_start(
        self: Arc<Self>,
        js: async_nats::jetstream::Context,
        origin: String,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        loop {
            match self.load_recent(&js, &origin).await {
                Ok(n) => {
                    tracing::debug!("{n} recent commands read at start");
                    self.started.send_replace(true);
                    return;
                }
                Err(e) => tracing::warn!("recent commands not read yet (commands wait): {e:#}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// Waits until the start read is done.
    pub async fn started(&self) {
        let mut rx = self.started.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// The manifest, re-read if its file changed (a client added or
    /// retired); a file that no longer parses keeps the last good one.
    pub fn manifest(&self) -> Arc<Manifest> {
        self.manifest.current()
    }

    /// Checks a signed command for `node` at `now_ms`, and uses up its
    /// nonce if every check passes.
    pub fn check(&self, node: &str, cmd: &SignedCommand, now_ms: u64) -> Result<Checked, String> {
        let manifest = self.manifest();
        let (name, client, sig) = signer(&manifest, cmd)?;
        events::verify_command(&cmd.key, cmd.signed.as_bytes(), &sig)
            .map_err(|e| refused("signature", e))?;
        let request: Request = serde_json::from_str(&cmd.signed)
            .map_err(|e| refused("request", format!("the signed request does not parse: {e}")))?;
        if request.node != node {
            return Err(refused(
                "node",
                format!("signed for {}, this node is {node}", request.node),
            ));
        }
        fresh(request.ts, &request.nonce, now_ms)?;
        if !client.may(request.op) {
            let needs = match request.op {
                CommandOp::Force => "engineer",
                _ => "operator or engineer",
            };
            return Err(refused(
                "role",
                format!(
                    "client {name} is a {}; {} needs {needs}",
                    client.role, request.op
                ),
            ));
        }
        in_scope(name, client, node)?;
        self.use_nonce(&request.nonce, request.ts, now_ms)?;
        Ok(Checked {
            by: name.to_owned(),
            key: cmd.key.clone(),
            sig,
            signed: cmd.signed.clone().into_bytes(),
            request,
        })
    }

    /// Uses up `nonce` (of a request signed at `ts`), or refuses it as a
    /// replay; forgets nonces older than twice the skew.
    fn use_nonce(&self, nonce: &str, ts: u64, now_ms: u64) -> Result<(), String> {
        let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        let horizon = now_ms.saturating_sub(2 * SKEW.as_millis() as u64);
        nonces.retain(|_, t| *t >= horizon);
        if nonces.contains_key(nonce) {
            return Err(refused("replay", format!("nonce {nonce} was used before")));
        }
        nonces.insert(nonce.to_owned(), ts);
        Ok(())
    }

    /// Checks a signed switchover or maintenance change asked of `member`
    /// of `node` at `now_ms`, with the pair at `epoch`: a client of the
    /// manifest signed it for this member, now, once, as an engineer whose
    /// scope holds the node; a switchover names the epoch it hands over.
    /// Returns the client's name and the request.
    pub fn check_control(
        &self,
        node: &str,
        member: &str,
        cmd: &SignedCommand,
        now_ms: u64,
        epoch: u64,
    ) -> Result<(String, events::ControlRequest), String> {
        let manifest = self.manifest();
        let (name, client, sig) = signer(&manifest, cmd)?;
        events::verify_control(&cmd.key, cmd.signed.as_bytes(), &sig)
            .map_err(|e| refused("signature", e))?;
        let request: events::ControlRequest = serde_json::from_str(&cmd.signed).map_err(|e| {
            refused(
                "request",
                format!("the signed control request does not parse: {e}"),
            )
        })?;
        if request.node != node || request.member != member {
            return Err(refused(
                "node",
                format!(
                    "signed for {}/{}, this is {node}/{member}",
                    request.node, request.member
                ),
            ));
        }
        fresh(request.ts, &request.nonce, now_ms)?;
        if client.role != "engineer" {
            return Err(refused(
                "role",
                format!(
                    "client {name} is a {}; {} needs an engineer",
                    client.role, request.op
                ),
            ));
        }
        in_scope(name, client, node)?;
        if request.op == "switchover" && request.epoch != Some(epoch) {
            return Err(refused(
                "epoch",
                format!(
                    "signed to hand over epoch {}, the pair is at epoch {epoch} (the role moved since)",
                    request.epoch.map(|e| e.to_string()).unwrap_or_else(|| "none".into())
                ),
            ));
        }
        self.use_nonce(&request.nonce, request.ts, now_ms)?;
        Ok((name.to_owned(), request))
    }

    /// Remembers the nonces of the signed commands `origin`'s stream
    /// recorded in the last two skews. Returns how many it read.
    async fn load_recent(
        &self,
        js: &async_nats::jetstream::Context,
        origin: &str,
    ) -> anyhow::Result<usize> {
        let stream = js
            .get_stream(events::subjects::stream_name(origin))
            .await
            .context("opening the node's stream")?;
        let since = SystemTime::now()
            .checked_sub(2 * SKEW)
            .unwrap_or(SystemTime::UNIX_EPOCH)
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let start_time = async_nats::datetime::from_nanos(since.as_nanos() as i128)
            .map_err(|e| anyhow::anyhow!("start time: {e}"))?;
        let consumer = stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::ByStartTime { start_time },
                filter_subject: events::subjects::event_subject(
                    origin,
                    events::subjects::COMMAND_TOKEN,
                ),
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(10),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .context("reading the recent commands")?;
        let pending = consumer.cached_info().num_pending;
        let mut read = 0usize;
        if pending == 0 {
            return Ok(0);
        }
        let mut msgs = consumer
            .fetch()
            .max_messages(pending as usize)
            .expires(Duration::from_secs(5))
            .messages()
            .await?;
        let mut nonces = self
            .nonces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        while let Some(m) = msgs.next().await {
            let m = m.map_err(|e| anyhow::anyhow!("reading a recent command: {e}"))?;
            read += 1;
            if let Ok(ev) = events::decode(&m.payload) {
                if let Body::Command(b) = ev.body {
                    if let Ok(req) = serde_json::from_slice::<Request>(&b.signed) {
                        nonces.insert(req.nonce, req.ts);
                    }
                }
            }
            if read as u64 >= pending {
                break;
            }
        }
        *self.nonces.lock().unwrap_or_else(|p| p.into_inner()) = nonces;
        Ok(read)
    }
}

/// Which keys open an epoch of `origin` ([`crate::keys::ManifestFile::opener`]);
/// `None` (every epoch open) without an authority: the plaintext tree.
pub fn opener(authority: Option<&Arc<Authority>>, origin: &str) -> Option<events::Opener> {
    authority?.manifest.opener(origin)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is the failure report in tests
mod tests {
    use super::*;
    use events::audit::ClientKey;

    const NOW: u64 = 1_800_000_000_000;

    fn kp(seed: u8) -> nkeys::KeyPair {
        nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, [seed; 32]).unwrap()
    }

    fn authority(dir: &Path) -> Authority {
        let mut m = Manifest::default();
        for (name, seed, role, scope) in [
            ("eng", 1, "engineer", "root.south"),
            ("ops", 2, "operator", "root"),
            ("view", 3, "viewer", "root"),
        ] {
            m.clients.insert(
                name.into(),
                ClientKey {
                    key: kp(seed).public_key(),
                    role: role.into(),
                    scope: scope.into(),
                },
            );
        }
        let path = dir.join("manifest.json");
        std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
        Authority::load(&path).unwrap()
    }

    fn signed(seed: u8, node: &str, op: CommandOp, ts: u64) -> SignedCommand {
        SignedCommand::sign(&kp(seed), node, op, "p", Some(serde_json::json!(1)), ts).unwrap()
    }

    fn check_of(r: Result<Checked, String>) -> String {
        match r {
            Ok(c) => format!("ok by {}", c.by),
            Err(e) => e
                .split(')')
                .next()
                .unwrap_or_default()
                .replace("refused (", ""),
        }
    }

    #[test]
    fn every_check_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let a = authority(dir.path());
        let south = "root.south";
        let ok = signed(1, south, CommandOp::Force, NOW);
        assert_eq!(check_of(a.check(south, &ok, NOW)), "ok by eng");
        assert_eq!(check_of(a.check(south, &ok, NOW)), "replay");
        assert_eq!(
            check_of(a.check(south, &signed(9, south, CommandOp::Write, NOW), NOW)),
            "key"
        );
        let mut bad = signed(1, south, CommandOp::Write, NOW);
        bad.signed = bad.signed.replace("\"p\"", "\"q\"");
        assert_eq!(check_of(a.check(south, &bad, NOW)), "signature");
        let other = signed(1, "root.north", CommandOp::Write, NOW);
        assert_eq!(check_of(a.check(south, &other, NOW)), "node");
        let stale = signed(1, south, CommandOp::Write, NOW - 31_000);
        assert_eq!(check_of(a.check(south, &stale, NOW)), "time");
        let early = signed(1, south, CommandOp::Write, NOW + 31_000);
        assert_eq!(check_of(a.check(south, &early, NOW)), "time");
        assert_eq!(
            check_of(a.check(south, &signed(2, south, CommandOp::Force, NOW), NOW)),
            "role"
        );
        assert_eq!(
            check_of(a.check(south, &signed(3, south, CommandOp::Write, NOW), NOW)),
            "role"
        );
        let north = signed(1, "root.north", CommandOp::Write, NOW);
        assert_eq!(check_of(a.check("root.north", &north, NOW)), "scope");
        // An operator writes anywhere below its scope.
        let w = signed(2, south, CommandOp::Write, NOW);
        assert_eq!(check_of(a.check(south, &w, NOW)), "ok by ops");
    }

    #[test]
    fn a_client_added_to_the_manifest_file_is_known_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let a = authority(dir.path());
        let cmd = signed(4, "root", CommandOp::Write, NOW);
        assert_eq!(check_of(a.check("root", &cmd, NOW)), "key");
        let mut m = (*a.manifest()).clone();
        m.clients.insert(
            "new".into(),
            ClientKey {
                key: kp(4).public_key(),
                role: "operator".into(),
                scope: "root".into(),
            },
        );
        // A later mtime than the first write, whatever the clock's grain.
        let path = dir.path().join("manifest.json");
        std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(check_of(a.check("root", &cmd, NOW)), "ok by new");
    }
}
