//! The audit, pure: one origin's stream (a replica of it) in, a report of
//! every broken rule out. `canopy audit` reads the streams and prints; this
//! module decides. `docs/wire-format.md` ("Audit") states the rules for
//! other implementations.
//!
//! Whether a message is the next event of the origin's chain is decided by
//! [`crate::ChainVerifier`], the same rules every reader applies: the audit
//! turns its [`Break`]s into `undecodable`, `foreign`, `duplicate` (an event
//! not at its own seq), `broken_chain` and `stale_epoch`, and where the
//! lenient reader steps over a broken link or an older epoch, the audit
//! keeps that event in the chain, so what follows is checked against it.
//!
//! The rules, by [`Violation::kind`], in the order they are checked for
//! each message (one message can break several):
//!
//! | kind | rule |
//! | --- | --- |
//! | `duplicate` | the stream sequence is not above the previous message's (delivered twice, or out of order); or the event's `seq` differs from its stream sequence (an event stored again, or moved). The message is left out of the chain. |
//! | `gap` | stream sequences are missing between two messages (reported at the first missing one). The first message may be above 1 (retention removed the start): it is trusted, and `first_seq` records it. |
//! | `undecodable` | the bytes are not a valid event ([`crate::decode`]); left out of the chain. |
//! | `foreign` | a valid event of another origin; left out of the chain. |
//! | `broken_chain` | `prev` is not the hash of the previous chain event (32 zero bytes for seq 1). Checked only when that event is the one just before (`seq - 1`): after a message left out or a gap the chain restarts unverified, the cause being reported already. A broken event still joins the chain, so what follows it is checked against it. |
//! | `stale_epoch` | the epoch is below the previous chain event's (the epoch went back: a deposed member wrote). |
//! | `interleaved_epochs` | the epoch is above the previous chain event's but was seen before (an epoch that had ended appears again: two members active in alternation), or an event of epoch E is written by a member other than E's first one (two writers in one epoch). |
//! | `bad_signature` | a checkpoint's signature does not verify with its own `key` ([`crate::verify_checkpoint`]). |
//! | `wrong_signer` | a checkpoint's `member` is not the member of its epoch (the first writer of that epoch), or its `key` is not that member's key in the [`Manifest`] (or the manifest has none). |
//! | `bad_checkpoint` | a checkpoint's `head_seq` is 0 or not below its own seq, or goes back before the previous valid checkpoint's head, or the held event at `head_seq` does not hash to `head`. A head the audit does not hold (before a trusted start, in a gap, a message left out) cannot be compared and is not a violation. |
//! | `unsigned_tail` | an event not covered by a valid checkpoint (one with no violation above; it covers the events up to its `head_seq`; a valid checkpoint is signed itself and needs no other to cover it) while more than 3 × `checkpoint_every_events` chain events *of its own epoch* follow it, or while a chain event of its own epoch more than 3 × `checkpoint_every_ms` younger (by `ts`) follows it. (The unsigned tail of a member that died is covered by the next epoch's first checkpoint, held to `no_checkpoint_at_role_change`.) Reported once per uncovered stretch, at its oldest event. |
//! | (not a violation) `fenced` | a late append of a deposed activation: an event of an older epoch, by that epoch's member, whose link is broken, sealed before the next epoch began; left out of the chain and listed in [`OriginReport::fenced`] (see [`Auditor`]). |
//! | `no_checkpoint_at_role_change` | an epoch that begins in the audited history (at seq 1, or after another epoch's event) has `checkpoint_every_events` events and none of them is a valid checkpoint of that epoch. Reported at the epoch's first event. |
//!
//! Slack: a checkpoint is sealed after the events it covers and may be in
//! flight while a stream is read, or be lost (a publish that failed), so the
//! unsigned limits are the interval plus a slack of two intervals: one
//! missing or invalid checkpoint (reported as such) is not also an unsigned
//! stretch, two in a row are. An event is only ever judged by the events
//! that follow it:
//! the tail of a live stream (and a stream cut short) is never a
//! violation; comparing `last_seq` with the origin's own is the caller's.
//! A zero interval disables its rule.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::checkpoint::verify_checkpoint;
use crate::codec::decode;
use crate::state::{Applied, State};
use crate::verify::{Break, ChainVerifier, Mark};
use crate::wire::{hash, Body, CheckpointBody, Event, Hash, ZERO_HASH};

mod commands;

/// The stable names of [`Violation::kind`].
pub mod kind {
    /// Missing stream sequences.
    pub const GAP: &str = "gap";
    /// A stream sequence seen twice, or an event's seq not its stream's.
    pub const DUPLICATE: &str = "duplicate";
    /// Bytes that are not a valid event.
    pub const UNDECODABLE: &str = "undecodable";
    /// A valid event of another origin.
    pub const FOREIGN: &str = "foreign";
    /// `prev` is not the previous event's hash.
    pub const BROKEN_CHAIN: &str = "broken_chain";
    /// The epoch went back.
    pub const STALE_EPOCH: &str = "stale_epoch";
    /// Two members active in alternation, or in one epoch.
    pub const INTERLEAVED_EPOCHS: &str = "interleaved_epochs";
    /// A checkpoint's signature does not verify.
    pub const BAD_SIGNATURE: &str = "bad_signature";
    /// A checkpoint signed by another than the epoch's member.
    pub const WRONG_SIGNER: &str = "wrong_signer";
    /// A checkpoint's head does not match the chain.
    pub const BAD_CHECKPOINT: &str = "bad_checkpoint";
    /// Events left unsigned too long.
    pub const UNSIGNED_TAIL: &str = "unsigned_tail";
    /// A new epoch without an early checkpoint of its member.
    pub const NO_CHECKPOINT_AT_ROLE_CHANGE: &str = "no_checkpoint_at_role_change";
    /// A recorded command whose signature does not verify, or whose
    /// recorded fields differ from what its client signed.
    pub const BAD_COMMAND: &str = "bad_command";
    /// A signed command by a key that is no client of the manifest at that
    /// time, or whose role or scope does not allow it.
    pub const UNAUTHORIZED_COMMAND: &str = "unauthorized_command";
    /// On a secured tree: a command without a signature, or a forced /
    /// unforced event no accepted signed command asked for.
    pub const UNSIGNED_COMMAND: &str = "unsigned_command";
}

/// The public half of the mesh's keys, written by `canopy keys gen` as
/// JSON: who may sign which origin's checkpoints (`keys`:
/// `"<node>/<member>"` → the member's public user nkey) and which clients
/// may command what (`clients`, and the `retired_clients` whose old
/// signatures still verify).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `"<node>/<member>"` → public user nkey (`U...`).
    pub keys: BTreeMap<String, String>,
    /// `"none"` for the plaintext development tree; absent (secured) by
    /// default. On a secured tree every command must be signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<String>,
    /// Client name → its command key, role and scope.
    #[serde(default)]
    pub clients: BTreeMap<String, ClientKey>,
    /// Keys that were a client's once: their signatures made before
    /// `retired_ms` still verify.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_clients: Vec<RetiredClient>,
    /// SHA-256 fingerprints (hex of the DER) of the mesh's TLS
    /// certificates: `"ca"`, `"<node>/<member>"`, `"clients/<name>"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub certs: BTreeMap<String, String>,
    /// `"<node>/<member>"` → hex SHA-256 of its certificate's
    /// SubjectPublicKeyInfo (nats-server's `pinned_certs`): a pair's routes
    /// take only its three servers' certificates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pins: BTreeMap<String, String>,
}

/// A client principal's public key and rights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientKey {
    /// Its command-signing public user nkey (`U...`).
    pub key: String,
    /// `viewer`, `operator` or `engineer` (the topology's `role`).
    pub role: String,
    /// The node whose subtree it may command.
    pub scope: String,
}

/// A client key taken out of service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredClient {
    /// The client's name.
    pub name: String,
    /// What it held while in service.
    #[serde(flatten)]
    pub held: ClientKey,
    /// When it was retired (ms since the Unix epoch): commands signed
    /// later are not its.
    pub retired_ms: u64,
}

impl ClientKey {
    /// Whether the role allows `op`: operators write and unforce,
    /// engineers also force; viewers command nothing.
    pub fn may(&self, op: crate::CommandOp) -> bool {
        match op {
            crate::CommandOp::Write | crate::CommandOp::Unforce => {
                matches!(self.role.as_str(), "operator" | "engineer")
            }
            crate::CommandOp::Force => self.role == "engineer",
        }
    }

    /// Whether `node` lies in the scope's subtree.
    pub fn covers(&self, node: &str) -> bool {
        node == self.scope
            || node
                .strip_prefix(self.scope.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
    }
}

impl Manifest {
    /// The key of `member` of `node`, if the manifest has one.
    pub fn key(&self, node: &str, member: &str) -> Option<&str> {
        self.keys
            .get(&format!("{node}/{member}"))
            .map(String::as_str)
    }

    /// Set the key of `member` of `node`.
    pub fn insert(&mut self, node: &str, member: &str, key: impl Into<String>) {
        self.keys.insert(format!("{node}/{member}"), key.into());
    }

    /// Whether commands must be signed (every tree but `security = "none"`).
    pub fn secured(&self) -> bool {
        self.security.as_deref() != Some("none")
    }

    /// The client in service holding `key`: (name, its entry).
    pub fn client(&self, key: &str) -> Option<(&str, &ClientKey)> {
        self.clients
            .iter()
            .find(|(_, c)| c.key == key)
            .map(|(n, c)| (n.as_str(), c))
    }

    /// The client that held `key` at `ms` (in service, or retired after).
    pub fn client_at(&self, key: &str, ms: u64) -> Option<(&str, &ClientKey)> {
        self.client(key).or_else(|| {
            self.retired_clients
                .iter()
                .find(|r| r.held.key == key && ms < r.retired_ms)
                .map(|r| (r.name.as_str(), &r.held))
        })
    }
}

/// How often the origin checkpoints (the topology's setting): the audit's
/// unsigned limits are three times these (see the module doc). 0 disables
/// a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditConfig {
    /// A checkpoint every this many events.
    pub checkpoint_every_events: u64,
    /// A checkpoint at least every this many milliseconds (of event `ts`).
    pub checkpoint_every_ms: u64,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// One of [`kind`]'s names.
    pub kind: &'static str,
    /// The origin audited (whose stream held the message).
    pub origin: String,
    /// The stream sequence concerned (for `gap`, the first missing one).
    pub seq: u64,
    /// For people: what was found.
    pub detail: String,
}

/// What the audit of one origin found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OriginReport {
    /// The origin audited.
    pub origin: String,
    /// Stream sequence of the first message fed (0 if none).
    pub first_seq: u64,
    /// Stream sequence of the last message fed (0 if none).
    pub last_seq: u64,
    /// Events in the chain: valid events of this origin stored at their
    /// own seq, violations or not.
    pub events: u64,
    /// Runs of chain events of one (epoch, member), in stream order:
    /// (epoch, member, first seq, last seq). A clean history lists each
    /// epoch once.
    pub epochs: Vec<(u64, String, u64, u64)>,
    /// Valid checkpoints (no violation of their own).
    pub checkpoints: u64,
    /// Late appends of a deposed activation, fenced out of the chain (see
    /// [`Auditor`]'s "Fenced late appends"): not violations, but listed so
    /// an auditor sees them: their stream sequences.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fenced: Vec<u64>,
    /// Every violation, by stream sequence.
    pub violations: Vec<Violation>,
}

impl OriginReport {
    /// Whether no rule was broken.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// At most this many chain events are held to check checkpoint heads and
/// unsigned stretches (their seq, hash and ts: about 48 MiB). Only a stream
/// without a checkpoint for that long (reported as `unsigned_tail` long
/// before) can reach it; a head older than what is held is not compared.
const MAX_HELD: usize = 1 << 20;

/// A chain event, as the audit remembers it.
#[derive(Debug, Clone, Copy)]
struct Held {
    seq: u64,
    hash: Hash,
    ts: u64,
    epoch: u64,
    /// A valid checkpoint: signed itself, it needs no other to cover it.
    signed: bool,
}

/// An epoch that began in view and has not yet shown its checkpoint.
#[derive(Debug, Clone)]
struct Awaiting {
    epoch: u64,
    member: String,
    first_seq: u64,
    events: u64,
}

/// The audit of one origin, fed its stream's messages in stream order.
///
/// ## Fenced late appends
///
/// A deposed member's appends can arrive at the stream late (its own
/// nats-server was frozen with them while the other member took over):
/// the first is refused (the new activation took its seq), but the next,
/// expecting exactly the new tail, lands. Such a message names an earlier
/// epoch and that epoch's own member, and chains onto an event of that
/// member that never landed. Every reader steps over it (it is not the
/// next event of the chain), and the new activation chains over it. The
/// audit leaves it out of the chain and lists it as *fenced* rather than
/// as a violation when all of these hold: its epoch is older than the
/// chain's, that epoch was written by the same member, its link is broken,
/// and it was sealed (`ts`) before the next epoch's first event: it was
/// written while its member still held the role, and only stored late.
/// Sealed after the next epoch began, it is a write of a deposed member: a
/// `stale_epoch` violation.
#[derive(Debug, Clone)]
pub struct Auditor {
    cfg: AuditConfig,
    /// This origin's keys: member → public key.
    keys: BTreeMap<String, String>,
    report: OriginReport,
    /// Stream sequence of the last message fed.
    last_stream: Option<u64>,
    /// The chain rules every reader shares (lenient: after a message left
    /// out, the next event may chain over it), positioned on the last chain
    /// event, broken or not.
    verifier: ChainVerifier,
    /// Every epoch seen → its first member (the one active in it).
    epoch_members: BTreeMap<u64, String>,
    /// Every epoch seen → the `ts` of its first event.
    epoch_started: BTreeMap<u64, u64>,
    /// Chain events from the newest valid checkpoint's head on.
    held: VecDeque<Held>,
    /// Head of the newest valid checkpoint (0: none yet).
    covered: u64,
    /// Oldest uncovered event already reported as `unsigned_tail`.
    unsigned_reported: Option<u64>,
    /// A new epoch waiting for its first checkpoint.
    awaiting: Option<Awaiting>,
    /// Who may command this origin, and the overrides asked for.
    commands: commands::Commands,
}

impl Auditor {
    /// An audit of `origin`'s stream, checking checkpoints against
    /// `manifest` and their frequency against `cfg`.
    pub fn new(origin: &str, manifest: &Manifest, cfg: AuditConfig) -> Self {
        let prefix = format!("{origin}/");
        let keys = manifest
            .keys
            .iter()
            .filter_map(|(name, key)| {
                let member = name.strip_prefix(&prefix)?;
                Some((member.to_owned(), key.clone()))
            })
            .collect();
        Self {
            cfg,
            keys,
            report: OriginReport {
                origin: origin.to_owned(),
                ..OriginReport::default()
            },
            last_stream: None,
            verifier: ChainVerifier::new(origin),
            epoch_members: BTreeMap::new(),
            epoch_started: BTreeMap::new(),
            held: VecDeque::new(),
            covered: 0,
            unsigned_reported: None,
            awaiting: None,
            commands: commands::Commands::new(manifest),
        }
    }

    /// The next message of the origin's stream: its stream sequence and
    /// exact bytes. Every message, in stream order.
    pub fn feed(&mut self, stream_seq: u64, bytes: &[u8]) {
        match self.last_stream {
            Some(last) if stream_seq <= last => {
                return self.violation(
                    kind::DUPLICATE,
                    stream_seq,
                    format!("stream sequence {stream_seq} again, after {last}"),
                );
            }
            Some(last) if stream_seq > last + 1 => self.violation(
                kind::GAP,
                last + 1,
                format!("stream sequences {}..={} missing", last + 1, stream_seq - 1),
            ),
            Some(_) => {}
            None => self.report.first_seq = stream_seq,
        }
        self.last_stream = Some(stream_seq);
        self.report.last_seq = stream_seq;

        match self.verifier.read(stream_seq, bytes) {
            Ok(event) => self.chain(&event, hash(bytes)),
            Err(why) => self.left_out(stream_seq, why),
        }
    }

    /// A message that is not an event of this origin at its own seq: it is
    /// reported and left out of the chain.
    fn left_out(&mut self, stream_seq: u64, why: Break) {
        let (kind, detail) = match why {
            Break::Undecodable(e) => (kind::UNDECODABLE, e.to_string()),
            Break::WrongOrigin { seq, expected, got } => (
                kind::FOREIGN,
                format!("event {seq} of origin {got} in the stream of {expected}"),
            ),
            Break::Misplaced { seq, stream_seq } => (
                kind::DUPLICATE,
                format!("event seq {seq} stored at stream sequence {stream_seq}"),
            ),
            // Not from `read`: the chain rules are `chain`'s.
            other => (kind::DUPLICATE, other.to_string()),
        };
        self.violation(kind, stream_seq, detail);
    }

    /// A late append of a deposed activation (see the type's doc): left out
    /// of the chain, listed, not a violation.
    fn fenced(&self, event: &Event) -> bool {
        let Some(last) = self.verifier.last() else {
            return false;
        };
        let older = event.epoch < last.epoch;
        let its_member = self.epoch_members.get(&event.epoch) == Some(&event.member);
        let broken = self.verifier.check_link(event).is_err();
        let next_started = self
            .epoch_started
            .range(event.epoch + 1..)
            .next()
            .map(|(_, ts)| *ts);
        older && its_member && broken && next_started.is_some_and(|t| event.ts < t)
    }

    /// A valid event of this origin at its own seq: it joins the chain.
    fn chain(&mut self, event: &Event, hash: Hash) {
        let seq = event.seq;
        if self.fenced(event) {
            self.report.fenced.push(seq);
            return;
        }
        self.report.events += 1;
        let broken = match self.verifier.check_link(event) {
            Err(Break::NonZeroGenesis { got }) => Some((ZERO_HASH, got)),
            Err(Break::BrokenPrev {
                after,
                expected,
                got,
                ..
            }) if after.checked_add(1) == Some(seq) => Some((expected, got)),
            // Across a message left out or a gap, an event that does not
            // chain to the last one restarts the chain unverified: the
            // cause was reported already. (`Behind` cannot happen: stream
            // sequences only go up here, and seq is the stream's.)
            _ => None,
        };
        if let Some((want, got)) = broken {
            self.violation(
                kind::BROKEN_CHAIN,
                seq,
                format!(
                    "prev {} but the previous event hashes to {}",
                    hex::encode(got),
                    hex::encode(want)
                ),
            );
        }

        let new_epoch = self.epochs(event);
        if new_epoch && self.cfg.checkpoint_every_events > 0 {
            self.awaiting = Some(Awaiting {
                epoch: event.epoch,
                member: event.member.clone(),
                first_seq: seq,
                events: 0,
            });
        }

        let signed = match &event.body {
            Body::Checkpoint(b) => self.checkpoint(event, b),
            _ => false,
        };
        if let Some((kind, detail)) = self.commands.check(event) {
            self.violation(kind, seq, detail);
        }
        if signed {
            self.report.checkpoints += 1;
        }
        self.held.push_back(Held {
            seq,
            hash,
            ts: event.ts,
            epoch: event.epoch,
            signed,
        });
        if let (true, Body::Checkpoint(b)) = (signed, &event.body) {
            self.covered = self.covered.max(b.head_seq);
            while self.held.front().is_some_and(|h| h.seq < self.covered) {
                self.held.pop_front();
            }
        }
        while self.held.len() > MAX_HELD {
            self.held.pop_front();
        }
        self.unsigned(event.ts, event.epoch);
        self.role_change(event, signed);
        self.verifier.accept(Mark {
            seq,
            epoch: event.epoch,
            hash,
        });
    }

    /// The epoch rules; true if the event begins an epoch in view (at seq 1
    /// or after an event of a lower epoch).
    fn epochs(&mut self, event: &Event) -> bool {
        let (seq, epoch, member) = (event.seq, event.epoch, &event.member);
        let first_member = self.epoch_members.get(&epoch).cloned();
        let last_epoch = self.verifier.last().map(|m| m.epoch);
        let mut new_epoch = false;
        match (self.verifier.check_epoch(event), last_epoch) {
            (Err(Break::OlderEpoch { current, .. }), _) => self.violation(
                kind::STALE_EPOCH,
                seq,
                format!("epoch {epoch} (member {member}) after epoch {current}"),
            ),
            (_, Some(last)) if epoch > last && first_member.is_some() => self.violation(
                kind::INTERLEAVED_EPOCHS,
                seq,
                format!("epoch {epoch} had ended and appears again after epoch {last}"),
            ),
            _ => match &first_member {
                Some(first) if first != member => self.violation(
                    kind::INTERLEAVED_EPOCHS,
                    seq,
                    format!("written by {member} in epoch {epoch}, whose member is {first}"),
                ),
                Some(_) => {}
                None => new_epoch = last_epoch.is_some() || seq == 1,
            },
        }
        if first_member.is_none() {
            self.epoch_members.insert(epoch, member.clone());
            self.epoch_started.insert(epoch, event.ts);
        }
        match self.report.epochs.last_mut() {
            Some((e, m, _, last)) if *e == epoch && m == member => *last = seq,
            _ => self.report.epochs.push((epoch, member.clone(), seq, seq)),
        }
        new_epoch
    }

    /// The checkpoint rules; true if the checkpoint is valid.
    fn checkpoint(&mut self, event: &Event, b: &CheckpointBody) -> bool {
        let (seq, epoch) = (event.seq, event.epoch);
        let origin = self.report.origin.clone();
        if let Err(e) = verify_checkpoint(&origin, epoch, b) {
            self.violation(kind::BAD_SIGNATURE, seq, e.to_string());
            return false;
        }
        let member = self
            .epoch_members
            .get(&epoch)
            .cloned()
            .unwrap_or_else(|| event.member.clone());
        if b.member != member {
            self.violation(
                kind::WRONG_SIGNER,
                seq,
                format!(
                    "signed as member {}, but epoch {epoch}'s member is {member}",
                    b.member
                ),
            );
            return false;
        }
        let expected = self.keys.get(&member).cloned();
        if expected.as_deref() != Some(b.key.as_str()) {
            let expected = expected.unwrap_or_else(|| "none".into());
            self.violation(
                kind::WRONG_SIGNER,
                seq,
                format!(
                    "signed by key {}, not the manifest key of {origin}/{member} ({expected})",
                    b.key
                ),
            );
            return false;
        }
        let head_seq = b.head_seq;
        let problem = if head_seq == 0 || head_seq >= seq {
            Some(format!(
                "head_seq {head_seq} is not an event before the checkpoint (seq {seq})"
            ))
        } else if head_seq < self.covered {
            Some(format!(
                "head_seq {head_seq} goes back before the previous checkpoint's head {}",
                self.covered
            ))
        } else {
            let at = self.held.partition_point(|h| h.seq < head_seq);
            match self.held.get(at).filter(|h| h.seq == head_seq) {
                Some(h) if h.hash != b.head => Some(format!(
                    "head {} but event {head_seq} hashes to {}",
                    hex::encode(b.head),
                    hex::encode(h.hash)
                )),
                // Matches, or not held: cannot be compared.
                _ => None,
            }
        };
        match problem {
            Some(detail) => {
                self.violation(kind::BAD_CHECKPOINT, seq, detail);
                false
            }
            None => true,
        }
    }

    /// The unsigned-stretch rule, after a chain event of time `ts` in
    /// `epoch`. Only events of the oldest uncovered event's own epoch count
    /// against it: a member killed before it could sign leaves a tail that
    /// the next epoch's first checkpoint covers (its chain runs through
    /// it), and that checkpoint is held to the role-change rule instead.
    fn unsigned(&mut self, ts: u64, epoch: u64) {
        // A valid checkpoint is signed itself: the newest one is never
        // covered by another while the plant is quiet, and needs not be.
        let from = self.held.partition_point(|h| h.seq <= self.covered);
        let Some(at) = (from..self.held.len()).find(|&i| !self.held[i].signed) else {
            return;
        };
        let oldest = self.held[at];
        if oldest.epoch != epoch {
            return;
        }
        if self.unsigned_reported == Some(oldest.seq) {
            return;
        }
        let after = (self.held.len() - at - 1) as u64;
        let every = self.cfg.checkpoint_every_events;
        let by_count = every > 0 && after > every.saturating_mul(3);
        let ms = self.cfg.checkpoint_every_ms;
        let age_us = ts.saturating_sub(oldest.ts);
        let by_time = ms > 0 && age_us > ms.saturating_mul(3).saturating_mul(1000);
        if by_count || by_time {
            self.unsigned_reported = Some(oldest.seq);
            self.violation(
                kind::UNSIGNED_TAIL,
                oldest.seq,
                format!(
                    "event {} not covered by a checkpoint while {after} events and {} ms \
                     followed it",
                    oldest.seq,
                    age_us / 1000
                ),
            );
        }
    }

    /// The role-change rule, after a chain event (`signed`: a valid
    /// checkpoint).
    fn role_change(&mut self, event: &Event, signed: bool) {
        let Some(a) = self.awaiting.as_mut().filter(|a| a.epoch == event.epoch) else {
            return;
        };
        if signed {
            self.awaiting = None;
            return;
        }
        a.events += 1;
        if a.events >= self.cfg.checkpoint_every_events {
            let detail = format!(
                "epoch {} of member {}: no valid checkpoint in its first {} events",
                a.epoch, a.member, a.events
            );
            let seq = a.first_seq;
            self.awaiting = None;
            self.violation(kind::NO_CHECKPOINT_AT_ROLE_CHANGE, seq, detail);
        }
    }

    fn violation(&mut self, kind: &'static str, seq: u64, detail: String) {
        self.report.violations.push(Violation {
            kind,
            origin: self.report.origin.clone(),
            seq,
            detail,
        });
    }

    /// The report, violations sorted by stream sequence (in the order found
    /// for one sequence).
    pub fn finish(mut self) -> OriginReport {
        self.report.violations.sort_by_key(|v| v.seq);
        self.report
    }
}

/// Audit one origin's whole stream: (stream sequence, bytes) in order.
pub fn audit<'a>(
    origin: &str,
    manifest: &Manifest,
    cfg: AuditConfig,
    messages: impl IntoIterator<Item = (u64, &'a [u8])>,
) -> OriginReport {
    let mut a = Auditor::new(origin, manifest, cfg);
    for (seq, bytes) in messages {
        a.feed(seq, bytes);
    }
    a.finish()
}

/// Where [`state_at`] stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// After the event with this seq (`--seq N`).
    Seq(u64),
    /// After the last event sealed at or before this time, unix
    /// microseconds (`--at TIME`).
    Ts(u64),
}

/// The state of the plant at a past point: the fold of each origin's events
/// up to `until`. `messages` are the streams' messages in stream order (one
/// origin's after another's, or interleaved: only each origin's own order
/// matters).
///
/// Each origin's history is folded as a prefix: its first event past the
/// bound ends it, even if a later one (a clock set back) is within it.
/// Messages that do not decode are skipped; a hole they (or a gap) leave is
/// stepped over rather than waited for, so the fold shows what the stream
/// holds. The audit says what is wrong with it.
pub fn state_at<'a>(messages: impl IntoIterator<Item = &'a [u8]>, until: Until) -> State {
    let mut state = State::new();
    let mut ended = BTreeSet::new();
    for bytes in messages {
        let Ok(event) = decode(bytes) else {
            continue;
        };
        if ended.contains(&event.origin) {
            continue;
        }
        let past = match until {
            Until::Seq(n) => event.seq > n,
            Until::Ts(t) => event.ts > t,
        };
        if past {
            ended.insert(event.origin.clone());
            continue;
        }
        if let Applied::Gap { got, .. } = state.apply(&event) {
            if let Some(o) = state.origins.get_mut(&event.origin) {
                o.seq = got - 1;
            }
            state.apply(&event);
        }
    }
    state
}

#[cfg(test)]
mod tests;
