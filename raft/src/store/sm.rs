//! The state machine store (openraft `RaftStateMachine`): applies entries to
//! [`PairState`], keeps this node's own apply instants, persists snapshots,
//! and publishes every applied batch on a watch channel for the pair task.
//!
//! Apply instants are local, never replicated: the grant rule needs "how
//! long ago did *I* apply the last renewal", which is always after the
//! renewal was sent, whatever the node. When the state is loaded from a
//! snapshot (start, or installed from the leader) the instants are set to
//! that moment: later than the truth, which only delays grants.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::io::Cursor;
use std::path::Path;
use std::path::PathBuf;

use openraft::storage::RaftStateMachine;
use openraft::Entry;
use openraft::EntryPayload;
use openraft::ErrorSubject;
use openraft::ErrorVerb;
use openraft::LogId;
use openraft::RaftSnapshotBuilder;
use openraft::Snapshot;
use openraft::SnapshotMeta;
use openraft::StorageError;
use openraft::StoredMembership;
use serde::Deserialize;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::file;
use super::identity::GroupCell;
use super::identity::GroupFile;
use super::GROUP_FILE;
use super::SNAPSHOT_FILE;
use crate::error::RaftError;
use crate::state::PairState;
use crate::types::NodeId;
use crate::types::Response;
use crate::types::TypeConfig;

type Membership = StoredMembership<NodeId, openraft::EmptyNode>;

/// This node's own observations of applied entries (not replicated).
#[derive(Clone, Debug)]
pub(crate) struct LocalTimes {
    /// When this node applied the entry that last moved `renew_index` (or
    /// loaded the state): the grant rule's reference point.
    pub(crate) renewed_at: Instant,
    /// When this node applied each member's last health report.
    pub(crate) health_at: BTreeMap<NodeId, Instant>,
    /// Consecutive `plc_ok == Some(false)` reports of each member.
    pub(crate) plc_bad_streak: BTreeMap<NodeId, u32>,
    /// Consecutive `stream_ok == Some(false)` reports of each member.
    pub(crate) stream_bad_streak: BTreeMap<NodeId, u32>,
    /// Consecutive `stream_ok == Some(true)` reports of each member.
    pub(crate) stream_good_streak: BTreeMap<NodeId, u32>,
    /// When each member last lost the role, as applied here.
    pub(crate) lost_role_at: BTreeMap<NodeId, Instant>,
    /// When each member was last granted the role, as applied here.
    pub(crate) gained_role_at: BTreeMap<NodeId, Instant>,
}

impl LocalTimes {
    fn new(now: Instant) -> Self {
        Self {
            renewed_at: now,
            health_at: BTreeMap::new(),
            plc_bad_streak: BTreeMap::new(),
            stream_bad_streak: BTreeMap::new(),
            stream_good_streak: BTreeMap::new(),
            lost_role_at: BTreeMap::new(),
            gained_role_at: BTreeMap::new(),
        }
    }
}

/// What the pair task sees after every applied batch.
#[derive(Clone, Debug)]
pub(crate) struct Applied {
    /// The state as applied here.
    pub(crate) state: PairState,
    /// Local apply instants.
    pub(crate) local: LocalTimes,
}

/// The snapshot file: openraft's meta plus the state.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, openraft::EmptyNode>,
    state: PairState,
}

/// The state machine of one node.
pub(crate) struct StateMachine {
    /// Where the snapshot file lives.
    dir: PathBuf,
    /// The replicated state.
    state: PairState,
    /// Last applied log id (openraft needs it back on restart).
    last_applied: Option<LogId<NodeId>>,
    /// Last applied membership (same).
    membership: Membership,
    /// Local apply instants.
    local: LocalTimes,
    /// Publishes every applied batch; the receiver is the pair task's.
    tx: watch::Sender<Applied>,
    /// Distinguishes snapshots built at the same log id.
    snapshot_seq: u64,
    /// Where the group id goes once known: the shared cell the listener
    /// answers peers from, and `raft-group.json` (see `store::identity`).
    identity: Identity,
}

/// The group identity a state machine keeps up to date.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    /// Written into `raft-group.json`.
    pub(crate) mesh: String,
    /// Same.
    pub(crate) node: String,
    /// The id as this node knows it.
    pub(crate) cell: GroupCell,
}

impl Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("state", &self.state)
            .field("last_applied", &self.last_applied)
            .finish()
    }
}

fn sm_err(verb: ErrorVerb, e: io::Error) -> StorageError<NodeId> {
    StorageError::from_io_error(ErrorSubject::StateMachine, verb, e)
}

fn snap_err(verb: ErrorVerb, e: io::Error) -> StorageError<NodeId> {
    StorageError::from_io_error(ErrorSubject::Snapshot(None), verb, e)
}

fn write_snapshot(dir: &Path, snap: &SnapshotFile) -> io::Result<Vec<u8>> {
    let data = serde_json::to_vec(&snap.state)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let bytes =
        serde_json::to_vec(snap).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    file::write_atomic(&dir.join(SNAPSHOT_FILE), &bytes)?;
    Ok(data)
}

impl StateMachine {
    /// Opens the state machine in `dir`: the last snapshot, if any, is the
    /// starting state; openraft re-applies committed entries after it.
    pub(crate) fn open(
        dir: &Path,
        identity: Identity,
    ) -> Result<(Self, watch::Receiver<Applied>), RaftError> {
        let path = dir.join(SNAPSHOT_FILE);
        let snap: Option<SnapshotFile> =
            file::read_json(&path).map_err(|e| RaftError::Storage {
                path: path.clone(),
                source: e,
            })?;
        let (state, last_applied, membership) = match snap {
            Some(s) => (s.state, s.meta.last_log_id, s.meta.last_membership),
            None => (PairState::default(), None, Membership::default()),
        };
        let local = LocalTimes::new(Instant::now());
        let (tx, rx) = watch::channel(Applied {
            state: state.clone(),
            local: local.clone(),
        });
        Ok((
            Self {
                dir: dir.to_path_buf(),
                state,
                last_applied,
                membership,
                local,
                tx,
                snapshot_seq: 0,
                identity,
            },
            rx,
        ))
        .and_then(|(sm, rx)| {
            // A store from before the file existed, or whose file was lost:
            // the snapshot may already know the id.
            sm.record_group().map_err(|source| RaftError::Storage {
                path: dir.join(GROUP_FILE),
                source,
            })?;
            Ok((sm, rx))
        })
    }

    /// Nothing applied and no snapshot: with an empty log and no vote,
    /// an emptied store (see `pair::boot`).
    pub(crate) fn is_empty(&self) -> bool {
        self.last_applied.is_none()
    }

    /// Tells the cell, and the file if it says otherwise, the group id of
    /// the state (if it has one).
    fn record_group(&self) -> io::Result<()> {
        let Some(group) = self.state.group else {
            return Ok(());
        };
        let known = self.identity.cell.get();
        self.identity.cell.set(group);
        let on_disk = file::read_json::<GroupFile>(&self.dir.join(GROUP_FILE))
            .ok()
            .flatten();
        if known != Some(group) || on_disk.as_ref().is_none_or(|f| f.group != group) {
            tracing::info!(group = %format_args!("{group:016x}"), "raft group id recorded");
            GroupFile {
                mesh: self.identity.mesh.clone(),
                node: self.identity.node.clone(),
                group,
            }
            .write(&self.dir)?;
        }
        Ok(())
    }

    fn publish(&self) {
        self.tx.send_replace(Applied {
            state: self.state.clone(),
            local: self.local.clone(),
        });
    }

    fn apply_one(&mut self, entry: Entry<TypeConfig>, now: Instant) -> Response {
        self.last_applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => Response::Ok,
            EntryPayload::Membership(m) => {
                self.membership = StoredMembership::new(Some(entry.log_id), m);
                Response::Ok
            }
            EntryPayload::Normal(req) => {
                let (resp, effect) = self.state.apply(entry.log_id.index, &req);
                let l = &mut self.local;
                if effect.renewed {
                    l.renewed_at = now;
                }
                if let Some(m) = effect.lost_role {
                    l.lost_role_at.insert(m, now);
                }
                if let Some(m) = effect.gained_role {
                    l.gained_role_at.insert(m, now);
                }
                if let Some((m, plc_ok)) = effect.health_of {
                    l.health_at.insert(m, now);
                    bump_streak(&mut l.plc_bad_streak, m, plc_ok == Some(false));
                }
                if let Some((m, stream_ok)) = effect.stream_of {
                    bump_streak(&mut l.stream_bad_streak, m, stream_ok == Some(false));
                    bump_streak(&mut l.stream_good_streak, m, stream_ok == Some(true));
                }
                resp
            }
        }
    }
}

/// Counts one more bad report of `member` in a row, or starts over.
fn bump_streak(streaks: &mut BTreeMap<NodeId, u32>, member: NodeId, bad: bool) {
    let streak = streaks.entry(member).or_insert(0);
    *streak = if bad { streak.saturating_add(1) } else { 0 };
}

/// Builds a snapshot from a copy of the state taken when openraft asked.
pub(crate) struct SnapshotBuilder {
    dir: PathBuf,
    snap: SnapshotFile,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let data =
            write_snapshot(&self.dir, &self.snap).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        Ok(Snapshot {
            meta: self.snap.meta.clone(),
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let now = Instant::now();
        let before = self.state.group;
        let responses = entries
            .into_iter()
            .map(|e| self.apply_one(e, now))
            .collect();
        if self.state.group != before {
            self.record_group()
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        }
        self.publish();
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_seq += 1;
        let id = match &self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.snapshot_seq),
            None => format!("none-{}", self.snapshot_seq),
        };
        SnapshotBuilder {
            dir: self.dir.clone(),
            snap: SnapshotFile {
                meta: SnapshotMeta {
                    last_log_id: self.last_applied,
                    last_membership: self.membership.clone(),
                    snapshot_id: id,
                },
                state: self.state.clone(),
            },
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::EmptyNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let state: PairState = serde_json::from_slice(snapshot.get_ref()).map_err(|e| {
            snap_err(
                ErrorVerb::Read,
                io::Error::new(io::ErrorKind::InvalidData, e),
            )
        })?;
        let snap = SnapshotFile {
            meta: meta.clone(),
            state,
        };
        write_snapshot(&self.dir, &snap).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        self.state = snap.state;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        // Later than the truth, hence safe: see the module doc.
        self.local.renewed_at = Instant::now();
        self.record_group()
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let path = self.dir.join(SNAPSHOT_FILE);
        let snap: Option<SnapshotFile> =
            file::read_json(&path).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let Some(snap) = snap else {
            return Ok(None);
        };
        let data = serde_json::to_vec(&snap.state).map_err(|e| {
            sm_err(
                ErrorVerb::Read,
                io::Error::new(io::ErrorKind::InvalidData, e),
            )
        })?;
        Ok(Some(Snapshot {
            meta: snap.meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;
    use crate::types::Health;
    use crate::types::Request;
    use crate::types::NO_INCARNATION;

    fn identity() -> Identity {
        Identity {
            mesh: "m".into(),
            node: "n".into(),
            cell: GroupCell::default(),
        }
    }

    fn normal(index: u64, req: Request) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(req),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn apply_stamps_local_instants_and_publishes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut sm, rx) = StateMachine::open(dir.path(), identity()).expect("open");
        let start = rx.borrow().local.renewed_at;
        tokio::time::advance(std::time::Duration::from_millis(10)).await;
        let bad = Health {
            plc_ok: Some(false),
            life_sign: None,
            ready: true,
        };
        let out = sm
            .apply(vec![
                normal(
                    1,
                    Request::Acquire {
                        member: 2,
                        incarnation: NO_INCARNATION,
                        expect_epoch: 0,
                        expect_renew_index: 0,
                    },
                ),
                normal(
                    2,
                    Request::Health {
                        member: 1,
                        incarnation: 11,
                        report: bad.clone(),
                        stream_ok: Some(false),
                    },
                ),
                normal(
                    3,
                    Request::Health {
                        member: 1,
                        incarnation: 11,
                        report: bad.clone(),
                        stream_ok: Some(false),
                    },
                ),
                normal(
                    4,
                    Request::Renew {
                        member: 1,
                        incarnation: 11,
                        epoch: 1,
                    },
                ),
            ])
            .await
            .expect("apply");
        assert_eq!(
            out,
            vec![
                Response::Granted { epoch: 1 },
                Response::Ok,
                Response::Ok,
                Response::Fenced
            ]
        );
        let a = rx.borrow().clone();
        assert_eq!(a.state.active, Some(2));
        assert_eq!(a.state.renew_index, 1);
        assert!(a.local.renewed_at > start);
        assert_eq!(a.local.plc_bad_streak.get(&1), Some(&2));
        assert_eq!(a.local.stream_bad_streak.get(&1), Some(&2));
        assert!(a.local.gained_role_at.contains_key(&2));
        let (last, _) = sm.applied_state().await.expect("applied");
        assert_eq!(last.map(|l| l.index), Some(4));
    }

    #[tokio::test]
    async fn a_snapshot_survives_a_restart_and_installs_elsewhere() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut sm, _rx) = StateMachine::open(dir.path(), identity()).expect("open");
        sm.apply(vec![
            normal(
                1,
                Request::Health {
                    member: 1,
                    incarnation: 11,
                    report: Health::default(),
                    stream_ok: None,
                },
            ),
            normal(
                2,
                Request::Acquire {
                    member: 1,
                    incarnation: 11,
                    expect_epoch: 0,
                    expect_renew_index: 0,
                },
            ),
        ])
        .await
        .expect("apply");
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        drop(sm);

        let (mut again, rx) = StateMachine::open(dir.path(), identity()).expect("reopen");
        assert_eq!(rx.borrow().state.active, Some(1));
        assert_eq!(rx.borrow().state.active_incarnation, 11);
        let (applied, _) = again.applied_state().await.expect("applied");
        assert_eq!(applied.map(|l| l.index), Some(2));
        let current = again
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("some");
        assert_eq!(current.meta, snap.meta);

        let other = tempfile::tempdir().expect("tempdir");
        let (mut fresh, rx) = StateMachine::open(other.path(), identity()).expect("open");
        fresh
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .expect("install");
        assert_eq!(rx.borrow().state.epoch, 1);
        assert!(rx.borrow().state.names_active(1, 11));
        assert_eq!(
            fresh.applied_state().await.expect("applied").0,
            snap.meta.last_log_id
        );
    }

    #[tokio::test]
    async fn a_snapshot_from_before_incarnations_loads_and_names_no_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut sm, _rx) = StateMachine::open(dir.path(), identity()).expect("open");
        sm.apply(vec![normal(
            1,
            Request::Acquire {
                member: 2,
                incarnation: NO_INCARNATION,
                expect_epoch: 0,
                expect_renew_index: 0,
            },
        )])
        .await
        .expect("apply");
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        drop(sm);
        // Strip the incarnation fields, as the format was before them.
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        let state = json
            .get_mut("state")
            .and_then(|v| v.as_object_mut())
            .expect("state object");
        assert!(state.remove("active_incarnation").is_some());
        assert!(state.remove("incarnations").is_some());
        std::fs::write(&path, serde_json::to_vec(&json).expect("encode")).expect("write");

        let (_, rx) = StateMachine::open(dir.path(), identity()).expect("old snapshot opens");
        let st = rx.borrow().state.clone();
        assert_eq!((st.active, st.epoch), (Some(2), 1));
        assert_eq!(st.active_incarnation, NO_INCARNATION);
    }

    #[tokio::test]
    async fn the_group_id_is_written_when_applied_and_restored_from_a_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ident = identity();
        let (mut sm, _rx) = StateMachine::open(dir.path(), ident.clone()).expect("open");
        assert!(sm.is_empty());
        sm.apply(vec![normal(1, Request::Group { id: 0x77 })])
            .await
            .expect("apply");
        assert!(!sm.is_empty());
        assert_eq!(ident.cell.get(), Some(0x77));
        let read = |d: &Path| GroupFile::read(d, "m", "n").expect("read");
        assert_eq!(read(dir.path()).map(|f| f.group), Some(0x77));
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        drop(sm);
        // The file lost (or never written, by an older version): the
        // snapshot restores it on open.
        std::fs::remove_file(dir.path().join(GROUP_FILE)).expect("remove");
        let again = identity();
        let (_sm, _rx) = StateMachine::open(dir.path(), again.clone()).expect("reopen");
        assert_eq!(again.cell.get(), Some(0x77));
        assert_eq!(read(dir.path()).map(|f| f.group), Some(0x77));
        // Installed from a leader: learned too.
        let other = tempfile::tempdir().expect("tempdir");
        let learner = identity();
        let (mut fresh, _rx) = StateMachine::open(other.path(), learner.clone()).expect("open");
        fresh
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .expect("install");
        assert_eq!(learner.cell.get(), Some(0x77));
        assert_eq!(read(other.path()).map(|f| f.group), Some(0x77));
    }

    #[tokio::test]
    async fn an_unreadable_snapshot_is_a_storage_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SNAPSHOT_FILE);
        std::fs::write(&path, br#"{"meta":{},"state":{"active":"b"}}"#).expect("write");
        match StateMachine::open(dir.path(), identity()) {
            Err(RaftError::Storage { path: p, source }) => {
                assert_eq!(p, path);
                assert_eq!(source.kind(), io::ErrorKind::InvalidData);
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a corrupt snapshot opened"),
        }
    }
}
