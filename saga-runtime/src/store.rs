//! The service's sled database: state rows, stored offsets, the outbox and applied event ids,
//! all in one tree so that one atomic batch covers a whole step.
//!
//! Keys (one tree, prefixed):
//! ```text
//! meta/format              → store format version
//! meta/seeded              → present once demo/seed data was written
//! state/<table>/<row key>  → JSON row
//! offset/<topic>/<part>    → next offset to read (i64, big-endian)
//! outbox/<seq>             → JSON OutboxEntry, seq a big-endian u64 (publish order)
//! applied/<event id>       → empty; the event's effects are in this store
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shared_events::{EventId, Topic};

use crate::state::{PersistentTable, RowChange};

const FORMAT: &[u8] = b"1";
const META_FORMAT: &[u8] = b"meta/format";
const META_SEEDED: &[u8] = b"meta/seeded";
const STATE: &str = "state/";
const OFFSET: &str = "offset/";
const OUTBOX: &[u8] = b"outbox/";
const APPLIED: &[u8] = b"applied/";

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
}

/// A record waiting to be published. Written in the same batch as the effects that produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The saga topic (without any deployment prefix).
    pub topic: String,
    pub partition: i32,
    pub key: String,
    pub value: String,
    pub headers: BTreeMap<String, String>,
}

/// Everything one processed batch changes, written atomically.
#[derive(Debug, Default)]
pub struct Commit {
    pub rows: Vec<(&'static str, RowChange)>,
    pub outbox: Vec<OutboxEntry>,
    pub offsets: HashMap<(Topic, i32), i64>,
    pub applied: Vec<EventId>,
    pub seeded: bool,
}

impl Commit {
    /// Collects the changed rows of every table.
    pub fn add_table_changes(&mut self, tables: Vec<&mut dyn PersistentTable>) {
        let mut changes = Vec::new();
        for table in tables {
            table.drain_changes(&mut changes);
            let name = table.name();
            self.rows.extend(changes.drain(..).map(|c| (name, c)));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
            && self.outbox.is_empty()
            && self.offsets.is_empty()
            && self.applied.is_empty()
            && !self.seeded
    }
}

/// Key of an outbox entry; pass back to [`Store::remove_outbox`] once published.
pub type OutboxKey = sled::IVec;

/// The service's durable store.
pub struct Store {
    db: sled::Db,
    next_seq: u64,
}

impl Store {
    /// Opens (or creates) the store in `dir`. `cache_bytes` bounds sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
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
            Some(v) => {
                return Err(StoreError::Format {
                    path: dir.to_owned(),
                    found: String::from_utf8_lossy(&v).into_owned(),
                })
            }
        }
        let next_seq = match db.scan_prefix(OUTBOX).next_back().transpose()? {
            Some((key, _)) => seq_of(&key).map_or(0, |s| s + 1),
            None => 0,
        };
        Ok(Store { db, next_seq })
    }

    /// Whether seed data was already written.
    pub fn is_seeded(&self) -> Result<bool, StoreError> {
        Ok(self.db.contains_key(META_SEEDED)?)
    }

    /// Loads every stored row into the matching table.
    pub fn load_tables(&self, tables: Vec<&mut dyn PersistentTable>) -> Result<(), StoreError> {
        for table in tables {
            let prefix = format!("{STATE}{}/", table.name());
            for row in self.db.scan_prefix(prefix.as_bytes()) {
                let (key, value) = row?;
                let full = String::from_utf8_lossy(&key).into_owned();
                let row_key = &full[prefix.len()..];
                table
                    .load_row(row_key, &value)
                    .map_err(|e| StoreError::Corrupt { key: full.clone(), reason: e.to_string() })?;
            }
        }
        Ok(())
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
        let mut out = HashMap::new();
        for row in self.db.scan_prefix(OFFSET.as_bytes()) {
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

    /// Whether the effects of this event are already in the store.
    pub fn is_applied(&self, id: EventId) -> Result<bool, StoreError> {
        Ok(self.db.contains_key(applied_key(id))?)
    }

    /// Everything still waiting to be published, oldest first.
    pub fn outbox(&self) -> Result<Vec<(OutboxKey, OutboxEntry)>, StoreError> {
        self.db
            .scan_prefix(OUTBOX)
            .map(|row| {
                let (key, value) = row?;
                let entry = serde_json::from_slice(&value).map_err(|e| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason: e.to_string(),
                })?;
                Ok((key, entry))
            })
            .collect()
    }

    /// Writes a commit as one atomic batch (not yet durable: see [`Store::flush`]).
    /// Returns the outbox keys it wrote, in publish order.
    pub fn commit(&mut self, commit: Commit) -> Result<Vec<(OutboxKey, OutboxEntry)>, StoreError> {
        let mut batch = sled::Batch::default();
        for (table, (key, value)) in commit.rows {
            let full = format!("{STATE}{table}/{key}");
            match value {
                Some(v) => batch.insert(full.as_bytes(), v),
                None => batch.remove(full.as_bytes()),
            }
        }
        for ((topic, partition), next) in commit.offsets {
            batch.insert(format!("{OFFSET}{topic}/{partition}").as_bytes(), &next.to_be_bytes());
        }
        for id in commit.applied {
            batch.insert(applied_key(id), &[]);
        }
        if commit.seeded {
            batch.insert(META_SEEDED, &[]);
        }
        let mut written = Vec::with_capacity(commit.outbox.len());
        for entry in commit.outbox {
            let mut key = OUTBOX.to_vec();
            key.extend_from_slice(&self.next_seq.to_be_bytes());
            self.next_seq += 1;
            let value = serde_json::to_vec(&entry).map_err(|e| StoreError::Corrupt {
                key: "outbox".into(),
                reason: e.to_string(),
            })?;
            batch.insert(key.as_slice(), value);
            written.push((OutboxKey::from(key), entry));
        }
        self.db.apply_batch(batch)?;
        Ok(written)
    }

    /// Makes every committed batch durable. Nothing leaves the process before this returns.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// A handle that deletes published outbox entries, for the publishing task.
    pub fn outbox_cleaner(&self) -> OutboxCleaner {
        OutboxCleaner { db: self.db.clone() }
    }
}

/// Deletes published entries from the outbox; the only store access the publisher needs.
#[derive(Clone)]
pub struct OutboxCleaner {
    db: sled::Db,
}

impl OutboxCleaner {
    /// Forgets published outbox entries. Losing this write only means publishing them again.
    pub fn remove_outbox(&self, keys: impl IntoIterator<Item = OutboxKey>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key);
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }
}

fn applied_key(id: EventId) -> Vec<u8> {
    let mut key = APPLIED.to_vec();
    key.extend_from_slice(id.0.as_bytes());
    key
}

fn seq_of(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(OUTBOX.len()..)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::state::Table;

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
            commit.add_table_changes(vec![&mut wallets]);
            commit.offsets.insert((Topic::OrderCreated, 2), 17);
            commit.applied.push(id);
            commit.outbox = vec![entry("PaymentCompleted"), entry("PaymentFailed")];
            let written = store.commit(commit).unwrap();
            assert_eq!(written.len(), 2);
            store.flush().await.unwrap();
            store.outbox_cleaner().remove_outbox([written[0].0.clone()]).unwrap();
            store.flush().await.unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(store.is_seeded().unwrap());
        assert!(store.is_applied(id).unwrap());
        assert!(!store.is_applied(EventId::for_order(Topic::OrderCreated, "o-2")).unwrap());
        assert_eq!(store.offsets().unwrap()[&(Topic::OrderCreated, 2)], 17);
        let outbox = store.outbox().unwrap();
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].1.topic, "PaymentFailed");
        let mut wallets: Table<u64> = Table::new("wallets");
        store.load_tables(vec![&mut wallets]).unwrap();
        assert_eq!(wallets.get("alice"), Some(&5));
        assert_eq!(store.read_table::<u64>("wallets").unwrap()["alice"], 5);
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
        let topics: Vec<_> = store.outbox().unwrap().into_iter().map(|(_, e)| e.topic).collect();
        assert_eq!(topics, ["A", "B", "C"]);
    }
}
