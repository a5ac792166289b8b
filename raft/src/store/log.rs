//! The raft log and vote on disk (openraft `RaftLogStorage`, storage-v2).
//!
//! The log is kept twice: in memory (a `BTreeMap` shared with the readers
//! openraft hands to replication tasks) and in `raft-log.bin`. An append is
//! acknowledged to openraft only after the file is fsync'd. Truncate and
//! purge rewrite the whole (small) file atomically.
//!
//! Appends reach the file on a thread of its own, which writes them in order
//! and fsyncs (several appends share one fsync when they queue up):
//! `append` is called by openraft's core task, which must keep sending and
//! answering heartbeats while the disk takes its time (a write or an fsync
//! can block for hundreds of milliseconds under write pressure). Blocking
//! it there stalled heartbeats, so followers stood for election although
//! every process was alive. The entries are in memory (readable) at once;
//! openraft counts them as stored only when the thread reports the fsync.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::io::Write;
use std::ops::RangeBounds;
use std::path::Path;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;

use openraft::storage::LogFlushed;
use openraft::storage::RaftLogStorage;
use openraft::Entry;
use openraft::ErrorSubject;
use openraft::ErrorVerb;
use openraft::LogId;
use openraft::LogState;
use openraft::RaftLogReader;
use openraft::StorageError;
use openraft::Vote;
use serde::Deserialize;
use serde::Serialize;

use super::file;
use super::LOG_FILE;
use super::VOTE_FILE;
use crate::error::RaftError;
use crate::types::NodeId;
use crate::types::TypeConfig;

/// One record of the log file.
#[derive(Serialize, Deserialize)]
enum Record {
    /// An appended entry. A later entry at the same index replaces it and
    /// everything after it (only after a rewrite, in practice).
    Entry(Entry<TypeConfig>),
    /// Everything up to and including this id is purged (in a snapshot).
    Purged(LogId<NodeId>),
}

/// The in-memory copy of the log, shared with readers.
#[derive(Default)]
struct LogInner {
    /// Entries not yet purged, by index.
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    /// The last purged log id (the log "starts" after it).
    last_purged: Option<LogId<NodeId>>,
}

type Shared = Arc<Mutex<LogInner>>;

fn lock(shared: &Shared) -> MutexGuard<'_, LogInner> {
    // Nothing can panic while the lock is held (plain map operations), so a
    // poisoned lock still holds consistent data.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read_range<RB: RangeBounds<u64>>(shared: &Shared, range: RB) -> Vec<Entry<TypeConfig>> {
    lock(shared)
        .entries
        .range(range)
        .map(|(_, e)| e.clone())
        .collect()
}

/// Work for the flusher thread, done in order.
enum Flush {
    /// Append these encoded records, make them durable, then tell openraft.
    Append(Vec<u8>, LogFlushed<TypeConfig>),
    /// The file was rewritten (and fsync'd) and reopened: sync this one
    /// from now on.
    Switch(File),
}

/// Writes appends in order and fsyncs them, one fsync for every batch of
/// appends that queued up meanwhile; ends when the store is dropped. After
/// a failed write or fsync every later append fails too (openraft stops on
/// a storage error anyway).
fn flusher(mut file: File, jobs: mpsc::Receiver<Flush>) {
    fn sync(
        file: &File,
        waiting: &mut Vec<LogFlushed<TypeConfig>>,
        failed: &mut Option<io::Error>,
    ) {
        if waiting.is_empty() {
            return;
        }
        if failed.is_none() {
            if let Err(e) = file.sync_data() {
                *failed = Some(e);
            }
        }
        for cb in waiting.drain(..) {
            cb.log_io_completed(match failed {
                None => Ok(()),
                Some(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
    let mut waiting = Vec::new();
    let mut failed: Option<io::Error> = None;
    while let Ok(first) = jobs.recv() {
        for job in std::iter::once(first).chain(jobs.try_iter()) {
            match job {
                Flush::Append(bytes, cb) => {
                    if failed.is_none() {
                        if let Err(e) = file.write_all(&bytes) {
                            failed = Some(e);
                        }
                    }
                    waiting.push(cb);
                }
                Flush::Switch(new) => {
                    // Entries written before the rewrite are in the new
                    // file, fsync'd by the rewrite; syncing the old one
                    // keeps the order simple.
                    sync(&file, &mut waiting, &mut failed);
                    file = new;
                }
            }
        }
        sync(&file, &mut waiting, &mut failed);
    }
}

/// The log store of one node.
pub(crate) struct LogStore {
    /// The data directory (for the vote file and rewrites).
    dir: PathBuf,
    /// The flusher thread's queue (it holds the append handle).
    flush: mpsc::Sender<Flush>,
    /// The log in memory.
    shared: Shared,
    /// The persisted vote, cached.
    vote: Option<Vote<NodeId>>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("dir", &self.dir).finish()
    }
}

/// The end of this node's log, readable without asking openraft's core:
/// what a pre-vote compares (openraft's `RaftState::last_log_id` is not
/// public). It moves when openraft appends, truncates or purges, as
/// openraft's own copy does.
#[derive(Clone)]
pub(crate) struct LogTail {
    shared: Shared,
}

impl Debug for LogTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LogTail").field(&self.last_log_id()).finish()
    }
}

impl LogTail {
    /// The id of the last entry, or of the last purged one if none is
    /// left, or `None` for an empty log.
    pub(crate) fn last_log_id(&self) -> Option<LogId<NodeId>> {
        let inner = lock(&self.shared);
        inner
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.last_purged)
    }
}

/// A reader handed to openraft's replication tasks.
#[derive(Clone)]
pub(crate) struct LogReader {
    shared: Shared,
}

fn storage(path: &Path, source: io::Error) -> RaftError {
    RaftError::Storage {
        path: path.to_path_buf(),
        source,
    }
}

fn log_err(verb: ErrorVerb, e: io::Error) -> StorageError<NodeId> {
    StorageError::from_io_error(ErrorSubject::Logs, verb, e)
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, recovering the vote and every
    /// durable entry, and cutting a torn tail left by a crash.
    pub(crate) fn open(dir: &Path) -> Result<Self, RaftError> {
        std::fs::create_dir_all(dir).map_err(|e| storage(dir, e))?;
        let vote_path = dir.join(VOTE_FILE);
        let vote = file::read_json(&vote_path).map_err(|e| storage(&vote_path, e))?;
        let log_path = dir.join(LOG_FILE);
        let (records, valid) =
            file::read_records::<Record>(&log_path).map_err(|e| storage(&log_path, e))?;
        let mut inner = LogInner::default();
        for r in records {
            match r {
                Record::Entry(e) => {
                    let _dropped = inner.entries.split_off(&e.log_id.index);
                    inner.entries.insert(e.log_id.index, e);
                }
                Record::Purged(id) => {
                    inner.entries = inner.entries.split_off(&(id.index + 1));
                    if inner
                        .last_purged
                        .as_ref()
                        .is_none_or(|p| p.index < id.index)
                    {
                        inner.last_purged = Some(id);
                    }
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| storage(&log_path, e))?;
        let len = file.metadata().map_err(|e| storage(&log_path, e))?.len();
        if len > valid {
            tracing::warn!(
                path = %log_path.display(),
                cut = len - valid,
                "cutting a torn tail off the raft log"
            );
            file.set_len(valid).map_err(|e| storage(&log_path, e))?;
            file.sync_all().map_err(|e| storage(&log_path, e))?;
        }
        file::sync_dir(dir).map_err(|e| storage(dir, e))?;
        let (flush, jobs) = mpsc::channel();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || flusher(file, jobs))
            .map_err(|e| storage(&log_path, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            flush,
            shared: Arc::new(Mutex::new(inner)),
            vote,
        })
    }

    /// No entry, nothing purged and no vote: with no snapshot either, an
    /// emptied store (see `pair::boot`).
    pub(crate) fn is_empty(&self) -> bool {
        let inner = lock(&self.shared);
        self.vote.is_none() && inner.entries.is_empty() && inner.last_purged.is_none()
    }

    /// Persists `vote` before openraft runs (an emptied voter adopts the
    /// vote its peers confirmed, so that openraft refuses anything older).
    pub(crate) fn persist_vote(&mut self, vote: Vote<NodeId>) -> Result<(), RaftError> {
        let path = self.dir.join(VOTE_FILE);
        let bytes = serde_json::to_vec(&vote)
            .map_err(|e| storage(&path, io::Error::new(io::ErrorKind::InvalidData, e)))?;
        file::write_atomic(&path, &bytes).map_err(|e| storage(&path, e))?;
        self.vote = Some(vote);
        Ok(())
    }

    /// A handle on the end of the log (see [`LogTail`]).
    pub(crate) fn tail(&self) -> LogTail {
        LogTail {
            shared: self.shared.clone(),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// Rewrites the log file from memory and reopens the append handle.
    fn rewrite(&mut self) -> io::Result<()> {
        let mut bytes = Vec::new();
        {
            let inner = lock(&self.shared);
            if let Some(p) = &inner.last_purged {
                file::encode_record(&Record::Purged(*p), &mut bytes)?;
            }
            for e in inner.entries.values() {
                file::encode_record(&Record::Entry(e.clone()), &mut bytes)?;
            }
        }
        let path = self.log_path();
        file::write_atomic(&path, &bytes)?;
        let file = OpenOptions::new().append(true).open(&path)?;
        self.flush
            .send(Flush::Switch(file))
            .map_err(|_| io::Error::other("the raft log writer stopped"))?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        Ok(read_range(&self.shared, range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        Ok(read_range(&self.shared, range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id = lock(&self.shared).last_purged;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: self.tail().last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            shared: self.shared.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let bytes = serde_json::to_vec(vote).map_err(|e| {
            StorageError::from_io_error(
                ErrorSubject::Vote,
                ErrorVerb::Write,
                io::Error::new(io::ErrorKind::InvalidData, e),
            )
        })?;
        file::write_atomic(&self.dir.join(VOTE_FILE), &bytes)
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let mut bytes = Vec::new();
        for e in &entries {
            if let Err(e) = file::encode_record(&Record::Entry(e.clone()), &mut bytes) {
                callback.log_io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                return Err(log_err(ErrorVerb::Write, e));
            }
        }
        {
            let mut inner = lock(&self.shared);
            for e in entries {
                inner.entries.insert(e.log_id.index, e);
            }
        }
        // Written and acknowledged once fsync'd, by the writer thread.
        if let Err(mpsc::SendError(job)) = self.flush.send(Flush::Append(bytes, callback)) {
            let e = io::Error::other("the raft log writer stopped");
            if let Flush::Append(_, callback) = job {
                callback.log_io_completed(Err(io::Error::new(e.kind(), e.to_string())));
            }
            return Err(log_err(ErrorVerb::Write, e));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        {
            let mut inner = lock(&self.shared);
            let _dropped = inner.entries.split_off(&log_id.index);
        }
        self.rewrite().map_err(|e| log_err(ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        {
            let mut inner = lock(&self.shared);
            inner.entries = inner.entries.split_off(&(log_id.index + 1));
            if inner
                .last_purged
                .as_ref()
                .is_none_or(|p| p.index < log_id.index)
            {
                inner.last_purged = Some(log_id);
            }
        }
        self.rewrite().map_err(|e| log_err(ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::CommittedLeaderId;
    use openraft::EntryPayload;

    use super::*;
    use crate::types::Request;

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Request::Renew {
                member: 1,
                incarnation: 7,
                epoch: index,
            }),
        }
    }

    async fn state(s: &mut LogStore) -> (Option<u64>, Option<u64>) {
        let st = s.get_log_state().await.expect("state");
        (
            st.last_purged_log_id.map(|l| l.index),
            st.last_log_id.map(|l| l.index),
        )
    }

    async fn indices(s: &mut LogStore) -> Vec<u64> {
        s.try_get_log_entries(0..)
            .await
            .expect("read")
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    }

    #[tokio::test]
    async fn log_and_vote_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vote = Vote::new_committed(3, 2);
        {
            let mut s = LogStore::open(dir.path()).expect("open");
            assert_eq!(s.read_vote().await.expect("vote"), None);
            assert_eq!(state(&mut s).await, (None, None));
            s.save_vote(&vote).await.expect("save vote");
            s.blocking_append((1..=5).map(|i| entry(1, i)))
                .await
                .expect("append");
            s.blocking_append([entry(2, 6)]).await.expect("append");
        }
        let mut s = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(s.read_vote().await.expect("vote"), Some(vote));
        assert_eq!(state(&mut s).await, (None, Some(6)));
        let all = s.try_get_log_entries(1..=6).await.expect("read");
        assert_eq!(all.len(), 6);
        assert_eq!(all[5].log_id, LogId::new(CommittedLeaderId::new(2, 1), 6));
        assert_eq!(
            all[2].payload,
            EntryPayload::Normal(Request::Renew {
                member: 1,
                incarnation: 7,
                epoch: 3
            })
        );
    }

    #[tokio::test]
    async fn an_adopted_vote_is_persisted_and_the_store_is_no_longer_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = LogStore::open(dir.path()).expect("open");
            assert!(s.is_empty());
            s.persist_vote(Vote::new_committed(7, 2)).expect("persist");
            assert!(!s.is_empty());
        }
        let mut s = LogStore::open(dir.path()).expect("reopen");
        assert!(!s.is_empty());
        assert_eq!(
            s.read_vote().await.expect("vote"),
            Some(Vote::new_committed(7, 2))
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = LogStore::open(dir.path()).expect("open");
        s.blocking_append([entry(1, 1)]).await.expect("append");
        assert!(!s.is_empty(), "a log");
    }

    #[tokio::test]
    async fn truncate_and_purge_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = LogStore::open(dir.path()).expect("open");
            s.blocking_append((1..=10).map(|i| entry(1, i)))
                .await
                .expect("append");
            s.truncate(LogId::new(CommittedLeaderId::new(1, 1), 8))
                .await
                .expect("truncate");
            assert_eq!(indices(&mut s).await, (1..=7).collect::<Vec<_>>());
            // A new leader's entries replace the truncated ones.
            s.blocking_append([entry(3, 8)]).await.expect("append");
            s.purge(LogId::new(CommittedLeaderId::new(1, 1), 4))
                .await
                .expect("purge");
            assert_eq!(indices(&mut s).await, vec![5, 6, 7, 8]);
            assert_eq!(state(&mut s).await, (Some(4), Some(8)));
            s.blocking_append([entry(3, 9)]).await.expect("append");
        }
        let mut s = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(indices(&mut s).await, vec![5, 6, 7, 8, 9]);
        assert_eq!(state(&mut s).await, (Some(4), Some(9)));
        let e8 = s.try_get_log_entries(8..9).await.expect("read");
        assert_eq!(e8[0].log_id.leader_id.term, 3);
    }

    #[tokio::test]
    async fn purging_everything_keeps_the_last_log_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = LogStore::open(dir.path()).expect("open");
            s.blocking_append((1..=3).map(|i| entry(1, i)))
                .await
                .expect("append");
            s.purge(LogId::new(CommittedLeaderId::new(1, 1), 3))
                .await
                .expect("purge");
        }
        let mut s = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(state(&mut s).await, (Some(3), Some(3)));
        assert!(indices(&mut s).await.is_empty());
    }

    #[tokio::test]
    async fn a_torn_append_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = LogStore::open(dir.path()).expect("open");
            s.blocking_append((1..=2).map(|i| entry(1, i)))
                .await
                .expect("append");
        }
        // Simulate a crash in the middle of the third append.
        let path = dir.path().join(LOG_FILE);
        let mut bytes = std::fs::read(&path).expect("read");
        let mut rec = Vec::new();
        file::encode_record(&Record::Entry(entry(1, 3)), &mut rec).expect("encode");
        bytes.extend_from_slice(&rec[..rec.len() / 2]);
        std::fs::write(&path, &bytes).expect("write");
        {
            let mut s = LogStore::open(dir.path()).expect("reopen");
            assert_eq!(indices(&mut s).await, vec![1, 2]);
            s.blocking_append([entry(1, 3)]).await.expect("append");
        }
        let mut s = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(indices(&mut s).await, vec![1, 2, 3]);
    }
}
