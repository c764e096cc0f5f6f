//! The service's sled database: state rows, stored offsets, the outbox and applied event ids,
//! all in one tree so that one atomic batch covers a whole step.
//!
//! Keys (one tree, prefixed):
//! ```text
//! meta/format              → store format version
//! meta/seeded              → present once demo/seed data was written
//! state/<table>/<row key>  → JSON row
//! offset/<topic>/<part>    → next offset to read (i64, big-endian)
//! outbox/<seq><chunk>      → JSON array: records one commit emits, in publish order
//! applied/<seq><chunk>     → ids of events one commit applied, 16 bytes each
//! ```
//!
//! `<seq>` numbers commits (a big-endian u64, so keys sort in commit order) and `<chunk>` a
//! commit's keys (a big-endian u16; format 2 had none). A few keys per commit, not one per
//! event, because sled's cost is per key written; but each value stays under [`CHUNK_BYTES`],
//! because sled 0.34 writes a log message bigger than a quarter of its 512 KiB segment to a
//! file of its own that its flush does not fsync, and a leaf node holds up to 16 keys: small
//! values keep every write in the log a flush makes durable.
//!
//! Applied ids are also kept in memory, so checking one costs no read; only the latest
//! commits' ids are kept, in memory and on disk ([`Store::open_with_dedup_window`]), and state
//! rows are read on demand ([`Store::attach_tables`]), so neither memory nor the store grows
//! with anything but the state itself.

mod applied;
mod keys;
mod outbox;
mod reader;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use shared_events::{EventId, Topic};

use saga_core::step::AppliedIds;

use crate::state::{PersistentTable, RowError, RowSource};

use applied::AppliedWindow;
use keys::{
    chunk_key, json_chunks, seq_of, upgrade_from_1, APPLIED, FORMAT, FORMAT_1, FORMAT_2, META_FORMAT,
    META_SEEDED, OFFSET, OUTBOX, STATE,
};
pub use keys::CHUNK_BYTES;
pub use outbox::{OutboxBatch, OutboxCleaner, OutboxEntry, OutboxKey};
pub use reader::{Offsets, StoreReader};
pub use saga_core::Commit;

/// Store failures. All are fatal: the in-memory state may no longer match the disk, so the
/// service stops and a restart reloads from the last durable batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("the store at {path} was written by an incompatible version (format {found})")]
    Format { path: PathBuf, found: String },
    #[error("store I/O failed: {0}")]
    Io(#[from] sled::Error),
    #[error("corrupt row `{key}`: {reason}")]
    Corrupt { key: String, reason: String },
    #[error(transparent)]
    Row(#[from] RowError),
    #[error("the task flushing the store stopped unexpectedly")]
    FlushStopped,
}

/// The service's durable store.
pub struct Store {
    db: sled::Db,
    /// The next commit's sequence number.
    next_seq: u64,
    /// The latest commits' applied ids, for lookups without a read.
    applied: AppliedWindow,
    /// Published outbox keys, deleted with the next commit: see [`OutboxCleaner`].
    published: Arc<Mutex<Vec<OutboxKey>>>,
    /// Where committed batches have read to, for readers; `None` until one is made.
    reader_offsets: Option<reader::SharedOffsets>,
}

impl Store {
    /// Opens (or creates) the store in `dir`. `cache_bytes` bounds sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        Store::open_with_dedup_window(dir, cache_bytes, usize::MAX)
    }

    /// Opens the store remembering only about the latest `dedup_window` applied event ids
    /// (whole commits: the oldest commit's ids go once the rest are `dedup_window` or more; the
    /// newest commit's always stay). Older ones are deleted, and never loaded.
    pub fn open_with_dedup_window(dir: &Path, cache_bytes: u64, dedup_window: usize) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // We flush explicitly before anything leaves the process; the background flush
            // only bounds how much an un-flushed, un-published batch could cost to redo.
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|source| StoreError::Open { path: dir.to_owned(), source })?;
        match db.get(META_FORMAT)? {
            None => {
                db.insert(META_FORMAT, FORMAT)?;
            }
            Some(v) if v.as_ref() == FORMAT => {}
            // Its keys are format-3 keys without a chunk number; they read the same.
            Some(v) if v.as_ref() == FORMAT_2 => {
                db.insert(META_FORMAT, FORMAT)?;
            }
            Some(v) if v.as_ref() == FORMAT_1 => upgrade_from_1(&db)?,
            Some(v) => {
                return Err(StoreError::Format {
                    path: dir.to_owned(),
                    found: String::from_utf8_lossy(&v).into_owned(),
                })
            }
        }
        let mut expired = sled::Batch::default();
        let applied = AppliedWindow::load(&db, dedup_window, &mut expired)?;
        db.apply_batch(expired)?;
        // Numbers only need to be new to the keys that exist: published outbox keys are
        // deleted, and a commit with no outbox or applied ids leaves no key, so a number may
        // be reused after a restart, never while a key carries it. Deletions queued by the
        // `OutboxCleaner` live only as long as this `Store` and name numbers below `next_seq`,
        // so none can reach a reused number.
        let mut next_seq = 0;
        for prefix in [OUTBOX, APPLIED] {
            if let Some((key, _)) = db.scan_prefix(prefix).next_back().transpose()? {
                next_seq = next_seq.max(seq_of(prefix, &key).map_or(0, |s| s + 1));
            }
        }
        Ok(Store { db, next_seq, applied, published: Arc::default(), reader_offsets: None })
    }

    /// Whether seed data was already written.
    pub fn is_seeded(&self) -> Result<bool, StoreError> {
        Ok(self.db.contains_key(META_SEEDED)?)
    }

    /// Backs every table with its stored rows: a row not in memory is read when the rules ask
    /// for it, and at most `resident_rows` rows per table stay in memory after a commit.
    pub fn attach_tables(&self, tables: Vec<&mut dyn PersistentTable>, resident_rows: usize) {
        for table in tables {
            let prefix = format!("{STATE}{}/", table.name());
            table.attach(Box::new(StoredRows { db: self.db.clone(), prefix }), resident_rows);
        }
    }

    /// Reads one table's rows without a service (tests and tools, with the service stopped).
    pub fn read_table<V: serde::de::DeserializeOwned>(
        &self,
        table: &str,
    ) -> Result<BTreeMap<String, V>, StoreError> {
        let prefix = format!("{STATE}{table}/");
        let mut out = BTreeMap::new();
        for row in self.db.scan_prefix(prefix.as_bytes()) {
            let (key, value) = row?;
            let full = String::from_utf8_lossy(&key).into_owned();
            let v = serde_json::from_slice(&value)
                .map_err(|e| StoreError::Corrupt { key: full.clone(), reason: e.to_string() })?;
            out.insert(full[prefix.len()..].to_owned(), v);
        }
        Ok(out)
    }

    /// The stored next offset of every (topic, partition) this service has consumed.
    pub fn offsets(&self) -> Result<HashMap<(Topic, i32), i64>, StoreError> {
        read_offsets(&self.db)
    }

    /// A read-only handle on the committed rows, for another thread. From now on every
    /// commit's offsets are also kept in memory for it.
    pub fn reader(&mut self) -> Result<StoreReader, StoreError> {
        let offsets = match &self.reader_offsets {
            Some(o) => Arc::clone(o),
            None => Arc::clone(self.reader_offsets.insert(Arc::new(RwLock::new(Arc::new(self.offsets()?))))),
        };
        Ok(StoreReader { db: self.db.clone(), offsets })
    }

    /// Whether the effects of this event are already in the store.
    pub fn is_applied(&self, id: EventId) -> bool {
        self.applied.contains(id)
    }

    /// Everything still waiting to be published, oldest commit first.
    pub fn outbox(&self) -> Result<Vec<OutboxBatch>, StoreError> {
        let mut out: Vec<(Option<u64>, OutboxBatch)> = Vec::new();
        for row in self.db.scan_prefix(OUTBOX) {
            let (key, value) = row?;
            let entries: Vec<OutboxEntry> = serde_json::from_slice(&value).map_err(|e| StoreError::Corrupt {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason: e.to_string(),
            })?;
            let seq = seq_of(OUTBOX, &key);
            match out.last_mut() {
                Some((last, batch)) if seq.is_some() && *last == seq => {
                    batch.keys.push(key);
                    batch.entries.extend(entries);
                }
                _ => out.push((seq, OutboxBatch { keys: vec![key], entries })),
            }
        }
        Ok(out.into_iter().map(|(_, b)| b).collect())
    }

    /// Writes a commit as one atomic batch (not yet durable: see [`Store::flush`]).
    /// Returns what it put in the outbox, if anything.
    pub fn commit(&mut self, commit: Commit) -> Result<Option<OutboxBatch>, StoreError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut batch = sled::Batch::default();
        for key in self.take_published() {
            batch.remove(key);
        }
        for (table, (key, value)) in commit.rows {
            let full = format!("{STATE}{table}/{key}");
            match value {
                Some(v) => batch.insert(full.as_bytes(), v),
                None => batch.remove(full.as_bytes()),
            }
        }
        for ((topic, partition), next) in &commit.offsets {
            batch.insert(format!("{OFFSET}{topic}/{partition}").as_bytes(), &next.to_be_bytes());
        }
        self.applied.add(&self.db, seq, &commit.applied, &mut batch)?;
        if commit.seeded {
            batch.insert(META_SEEDED, &[]);
        }
        let written = if commit.outbox.is_empty() {
            None
        } else {
            let mut keys = Vec::new();
            for (chunk, value) in json_chunks(&commit.outbox)?.into_iter().enumerate() {
                let key = OutboxKey::from(chunk_key(OUTBOX, seq, chunk)?);
                batch.insert(key.clone(), value);
                keys.push(key);
            }
            Some(OutboxBatch { keys, entries: commit.outbox })
        };
        self.db.apply_batch(batch)?;
        // After the batch: a reader's offsets never claim more than its rows hold. The new
        // map is made, and the old one freed, outside the lock, so a reader waits for a
        // pointer's swap at most, never for this thread (which may be off the CPU) to copy.
        if let Some(offsets) = &self.reader_offsets {
            let mut next = HashMap::clone(&offsets.read().unwrap_or_else(PoisonError::into_inner));
            next.extend(commit.offsets);
            let old = std::mem::replace(&mut *offsets.write().unwrap_or_else(PoisonError::into_inner), Arc::new(next));
            drop(old);
        }
        self.applied.remember(commit.applied);
        Ok(written)
    }

    /// Makes every committed batch durable, and deletes what was published since the last
    /// commit. Nothing leaves the process before this returns.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.delete_published()?;
        self.flusher().flush().await
    }

    /// Deletes the outbox entries published since the last commit now, in a batch of their
    /// own; for when no commit is coming (idle, stopping).
    pub fn delete_published(&self) -> Result<(), StoreError> {
        let keys = self.take_published();
        if !keys.is_empty() {
            let mut batch = sled::Batch::default();
            for key in keys {
                batch.remove(key);
            }
            self.db.apply_batch(batch)?;
        }
        Ok(())
    }

    fn take_published(&self) -> Vec<OutboxKey> {
        std::mem::take(&mut *self.published.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A handle that flushes from another task while this one keeps committing.
    pub fn flusher(&self) -> Flusher {
        Flusher { db: self.db.clone() }
    }

    /// A handle that deletes published outbox entries, for the publishing task.
    pub fn outbox_cleaner(&self) -> OutboxCleaner {
        OutboxCleaner { published: Arc::clone(&self.published) }
    }
}

impl AppliedIds for Store {
    fn is_applied(&self, applied: EventId) -> bool {
        Store::is_applied(self, applied)
    }
}

/// The stored next offset of every (topic, partition) in `db`.
fn read_offsets(db: &sled::Db) -> Result<HashMap<(Topic, i32), i64>, StoreError> {
    let mut out = HashMap::new();
    for row in db.scan_prefix(OFFSET.as_bytes()) {
        let (key, value) = row?;
        let text = String::from_utf8_lossy(&key).into_owned();
        let corrupt = || StoreError::Corrupt { key: text.clone(), reason: "bad offset row".into() };
        let (topic, partition) = text[OFFSET.len()..].rsplit_once('/').ok_or_else(corrupt)?;
        let topic: Topic = topic.parse().map_err(|_| corrupt())?;
        let partition: i32 = partition.parse().map_err(|_| corrupt())?;
        let bytes: [u8; 8] = value.as_ref().try_into().map_err(|_| corrupt())?;
        out.insert((topic, partition), i64::from_be_bytes(bytes));
    }
    Ok(out)
}

/// One table's stored rows, read on demand.
struct StoredRows {
    db: sled::Db,
    /// `state/<table>/`
    prefix: String,
}

impl RowSource for StoredRows {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let full = format!("{}{key}", self.prefix);
        self.db.get(full.as_bytes()).map(|row| row.map(|v| v.to_vec())).map_err(|e| e.to_string())
    }

    fn scan(&self, visit: &mut crate::state::RowVisitor<'_>) -> Result<(), String> {
        for row in self.db.scan_prefix(self.prefix.as_bytes()) {
            let (key, value) = row.map_err(|e| e.to_string())?;
            let key = std::str::from_utf8(&key[self.prefix.len()..]).map_err(|e| e.to_string())?;
            visit(key, &value)?;
        }
        Ok(())
    }
}

/// Makes every commit written so far durable; see [`Store::flush`].
#[derive(Clone)]
pub struct Flusher {
    db: sled::Db,
}

impl Flusher {
    /// Covers every commit written before the returned future is first polled (so at least
    /// every one written before this call). sled holds its log while it syncs: a commit made
    /// meanwhile waits for the sync to end.
    pub fn flush(&self) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        let db = self.db.clone();
        async move {
            db.flush_async().await?;
            Ok(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use keys::seq_key;
    use crate::state::Table;

    #[test]
    fn a_reader_reads_a_row_while_sled_holds_its_batch_lock() {
        // sled's `get` waits while its concurrency-control lock is held for writing, as
        // `apply_batch` holds it; a transaction holds it through its closure, which makes the
        // wait observable.
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 1 << 20).unwrap();
        store.commit(Commit { rows: vec![("orders", ("o".to_owned(), Some(b"7".to_vec())))], ..Commit::default() }).unwrap();
        let reader = store.reader().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let read: sled::transaction::TransactionResult<_, ()> = store.db.transaction(|_| {
            let (reader, tx) = (reader.clone(), tx.clone());
            std::thread::spawn(move || tx.send(reader.row::<u32>("orders", "o")));
            Ok(rx.recv_timeout(std::time::Duration::from_secs(10)))
        });
        let row = read.unwrap().expect("the read waited for the lock");
        assert_eq!(row.unwrap(), Some(7));
    }

    #[test]
    fn a_reader_sees_rows_and_offsets_from_before_it_and_of_later_commits() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 1 << 20).unwrap();
        let row = |key: &str, value: Option<&str>| ("orders", (key.to_owned(), value.map(|v| v.as_bytes().to_vec())));
        let offsets = HashMap::from([((Topic::OrderCreated, 0), 5)]);
        store.commit(Commit { rows: vec![row("old", Some("1"))], offsets, ..Commit::default() }).unwrap();
        let reader = store.reader().unwrap();
        assert_eq!(reader.offsets().unwrap()[&(Topic::OrderCreated, 0)], 5, "where the store stood when it was made");
        assert_eq!(reader.row::<u32>("orders", "old").unwrap(), Some(1));
        let offsets = HashMap::from([((Topic::OrderCreated, 0), 9)]);
        store.commit(Commit { rows: vec![row("new", Some("2")), row("old", None)], offsets, ..Commit::default() }).unwrap();
        assert_eq!((reader.row::<u32>("orders", "new").unwrap(), reader.row::<u32>("orders", "old").unwrap()), (Some(2), None));
        assert_eq!(reader.offsets().unwrap()[&(Topic::OrderCreated, 0)], 9);
        // And sled agrees.
        assert_eq!(store.read_table::<u32>("orders").unwrap(), BTreeMap::from([("new".to_owned(), 2)]));
    }

    fn entry(topic: &str) -> OutboxEntry {
        OutboxEntry {
            topic: topic.into(),
            partition: 0,
            key: "o-1".into(),
            value: "{}".into(),
            headers: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn a_commit_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let id = EventId::for_order(Topic::OrderCreated, "o-1");
        {
            let mut store = Store::open(dir.path(), 1 << 20).unwrap();
            let mut wallets: Table<u64> = Table::new("wallets");
            wallets.insert("alice", 5);
            let mut commit = Commit { seeded: true, ..Commit::default() };
            commit.add_table_changes(vec![&mut wallets]).unwrap();
            commit.offsets.insert((Topic::OrderCreated, 2), 17);
            commit.applied.push(id);
            commit.outbox = vec![entry("PaymentCompleted")];
            let published = store.commit(commit).unwrap().unwrap();
            assert_eq!(published.entries.len(), 1);
            let pending = Commit { outbox: vec![entry("PaymentFailed"), entry("PaymentRefunded")], ..Commit::default() };
            store.commit(pending).unwrap().unwrap();
            store.flush().await.unwrap();
            store.outbox_cleaner().remove_outbox(published.keys);
            store.flush().await.unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(store.is_seeded().unwrap());
        assert!(store.is_applied(id));
        assert!(!store.is_applied(EventId::for_order(Topic::OrderCreated, "o-2")));
        assert_eq!(store.offsets().unwrap()[&(Topic::OrderCreated, 2)], 17);
        let outbox = store.outbox().unwrap();
        assert_eq!(outbox.len(), 1);
        let topics: Vec<_> = outbox[0].entries.iter().map(|e| e.topic.as_str()).collect();
        assert_eq!(topics, ["PaymentFailed", "PaymentRefunded"]);
        let mut wallets: Table<u64> = Table::new("wallets");
        store.attach_tables(vec![&mut wallets], 10);
        assert_eq!(wallets.get("alice"), Some(5), "read from the store on first use");
        assert_eq!(store.read_table::<u64>("wallets").unwrap()["alice"], 5);
    }

    #[tokio::test]
    async fn only_the_latest_applied_ids_are_kept_in_memory_and_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let id = |n: usize| EventId::for_order(Topic::OrderCreated, &format!("o-{n}"));
        let commit_ids = |store: &mut Store, ids: std::ops::Range<usize>| {
            store.commit(Commit { applied: ids.map(id).collect(), ..Commit::default() }).unwrap();
        };
        {
            let mut store = Store::open(dir.path(), 1 << 20).unwrap();
            for n in 0..4 {
                commit_ids(&mut store, n * 10..n * 10 + 10);
            }
            store.flush().await.unwrap();
        }
        {
            let mut store = Store::open_with_dedup_window(dir.path(), 1 << 20, 30).unwrap();
            assert!(!store.is_applied(id(9)) && store.is_applied(id(10)), "whole commits go, oldest first");
            commit_ids(&mut store, 40..50);
            assert!(!store.is_applied(id(19)) && store.is_applied(id(20)) && store.is_applied(id(49)));
            commit_ids(&mut store, 50..100);
            assert!(store.is_applied(id(99)) && !store.is_applied(id(49)), "the newest commit stays whatever its size");
            store.flush().await.unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(!store.is_applied(id(30)), "forgotten on disk too");
        assert!(store.is_applied(id(50)));
        assert_eq!(store.db.scan_prefix(APPLIED).count(), 1);
    }

    #[tokio::test]
    async fn outbox_keeps_publish_order_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = Store::open(dir.path(), 1 << 20).unwrap();
            let commit = Commit { outbox: vec![entry("A"), entry("B")], ..Commit::default() };
            store.commit(commit).unwrap();
            store.flush().await.unwrap();
        }
        let mut store = Store::open(dir.path(), 1 << 20).unwrap();
        store.commit(Commit { outbox: vec![entry("C")], ..Commit::default() }).unwrap();
        let topics: Vec<_> =
            store.outbox().unwrap().into_iter().flat_map(|b| b.entries).map(|e| e.topic).collect();
        assert_eq!(topics, ["A", "B", "C"]);
    }

    #[tokio::test]
    async fn a_format_1_store_is_upgraded_without_losing_anything() {
        let dir = tempfile::tempdir().unwrap();
        let (seen, pending) = (EventId::for_order(Topic::OrderCreated, "o-1"), entry("PaymentCompleted"));
        {
            let db = sled::open(dir.path()).unwrap();
            db.insert(META_FORMAT, FORMAT_1).unwrap();
            db.insert(b"state/wallets/alice", b"5".as_slice()).unwrap();
            db.insert(format!("{OFFSET}OrderCreated/0").as_bytes(), &7i64.to_be_bytes()).unwrap();
            db.insert([APPLIED, seen.0.as_bytes().as_slice()].concat(), b"".as_slice()).unwrap();
            db.insert(seq_key(OUTBOX, 3), serde_json::to_vec(&pending).unwrap()).unwrap();
            db.flush().unwrap();
        }
        let mut store = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(store.is_applied(seen));
        assert_eq!(store.offsets().unwrap()[&(Topic::OrderCreated, 0)], 7);
        assert_eq!(store.read_table::<u64>("wallets").unwrap()["alice"], 5);
        let outbox = store.outbox().unwrap();
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].entries, [pending]);
        // New commits go after the upgraded ones and keep the old ids.
        let next = EventId::for_order(Topic::OrderCreated, "o-2");
        store.commit(Commit { applied: vec![next], outbox: vec![entry("B")], ..Commit::default() }).unwrap();
        store.flush().await.unwrap();
        drop(store);
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(store.is_applied(seen) && store.is_applied(next));
        let topics: Vec<_> = store.outbox().unwrap().into_iter().flat_map(|b| b.entries).map(|e| e.topic).collect();
        assert_eq!(topics, ["PaymentCompleted", "B"]);
    }

    #[tokio::test]
    async fn big_commits_are_written_in_small_values_and_format_2_stores_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let old_ids = [EventId::for_order(Topic::OrderCreated, "old-1"), EventId::for_order(Topic::OrderCreated, "old-2")];
        {
            let db = sled::open(dir.path()).unwrap();
            db.insert(META_FORMAT, FORMAT_2).unwrap();
            db.insert(seq_key(OUTBOX, 5), serde_json::to_vec(&[entry("Old1"), entry("Old2")]).unwrap()).unwrap();
            db.insert(seq_key(APPLIED, 5), old_ids.iter().flat_map(|id| *id.0.as_bytes()).collect::<Vec<u8>>()).unwrap();
            db.flush().unwrap();
        }
        let topics: Vec<String> = (0..3000).map(|i| format!("T{i:04}")).collect();
        let ids: Vec<EventId> = (0..1000).map(|i| EventId::for_order(Topic::OrderCreated, &format!("o-{i}"))).collect();
        {
            let mut store = Store::open(dir.path(), 1 << 20).unwrap();
            assert!(old_ids.iter().all(|id| store.is_applied(*id)));
            let outbox = topics.iter().map(|t| entry(t)).collect();
            store.commit(Commit { applied: ids.clone(), outbox, ..Commit::default() }).unwrap();
            store.flush().await.unwrap();
            let values: Vec<usize> = store.db.iter().values().map(|v| v.unwrap().len()).collect();
            assert!(values.iter().all(|len| *len <= CHUNK_BYTES), "a value over {CHUNK_BYTES} bytes: {values:?}");
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.db.get(META_FORMAT).unwrap().unwrap().as_ref(), FORMAT);
        assert!(ids.iter().chain(&old_ids).all(|id| store.is_applied(*id)));
        let outbox = store.outbox().unwrap();
        assert_eq!(outbox.len(), 2, "one batch per commit");
        assert_eq!(outbox[0].entries, [entry("Old1"), entry("Old2")]);
        let read: Vec<&str> = outbox[1].entries.iter().map(|e| e.topic.as_str()).collect();
        assert_eq!(read, topics, "in publish order");
        assert!(outbox[1].keys.len() > 10);
        store.outbox_cleaner().remove_outbox(outbox[1].keys.clone());
        assert_eq!(store.outbox().unwrap().len(), 2, "deleted with the next commit, not before");
        store.delete_published().unwrap();
        assert_eq!(store.outbox().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn published_entries_are_deleted_by_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = Store::open(dir.path(), 1 << 20).unwrap();
            let first = store.commit(Commit { outbox: vec![entry("A")], ..Commit::default() }).unwrap().unwrap();
            store.outbox_cleaner().remove_outbox(first.keys);
            assert_eq!(store.outbox().unwrap().len(), 1, "not deleted before a commit");
            store.commit(Commit { outbox: vec![entry("B")], ..Commit::default() }).unwrap();
            let left: Vec<_> = store.outbox().unwrap().into_iter().flat_map(|b| b.entries).collect();
            assert_eq!(left, [entry("B")]);
            store.flusher().flush().await.unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let left: Vec<_> = store.outbox().unwrap().into_iter().flat_map(|b| b.entries).collect();
        assert_eq!(left, [entry("B")], "the deletion is part of the durable commit");
    }

    #[tokio::test]
    async fn commit_numbers_continue_after_the_outbox_is_emptied() {
        // The last commit's outbox key is gone once published and flushed; its applied key is not. A
        // reused number would overwrite the applied ids of an earlier commit.
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (EventId::for_order(Topic::OrderCreated, "o-1"), EventId::for_order(Topic::OrderCreated, "o-2"));
        {
            let mut store = Store::open(dir.path(), 1 << 20).unwrap();
            let commit = Commit { applied: vec![first], outbox: vec![entry("A")], ..Commit::default() };
            let written = store.commit(commit).unwrap().unwrap();
            store.outbox_cleaner().remove_outbox(written.keys);
            store.flush().await.unwrap();
        }
        {
            let mut store = Store::open(dir.path(), 1 << 20).unwrap();
            store.commit(Commit { applied: vec![second], ..Commit::default() }).unwrap();
            store.flush().await.unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(store.is_applied(first) && store.is_applied(second));
    }

    #[tokio::test]
    async fn a_dropped_store_can_be_opened_again_at_once() {
        // sled's file lock goes with its file, which the threadpool job that wrote a commit holds
        // for a moment after waking the flush: dropping the store has to wait for that job, or the
        // next open fails with "could not acquire lock". Several rounds, because one rarely loses.
        let dir = tempfile::tempdir().unwrap();
        let id = |n: usize| EventId::for_order(Topic::OrderCreated, &format!("o-{n}"));
        for n in 0..20 {
            let mut store = Store::open(dir.path(), 1 << 20).unwrap_or_else(|e| panic!("round {n}: {e}"));
            assert!(n == 0 || store.is_applied(id(n - 1)));
            let commit = Commit { applied: vec![id(n)], outbox: vec![entry("A")], ..Commit::default() };
            let written = store.commit(commit).unwrap().unwrap();
            store.outbox_cleaner().remove_outbox(written.keys);
            store.flush().await.unwrap();
        }
    }
}
