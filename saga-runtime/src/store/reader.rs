//! Reading a running service's committed state from another thread: what a query side (the
//! orders view's HTTP API) answers from, while the loop goes on writing.
//!
//! A commit is one sled batch, so each row read is as some commit left it, never half of one;
//! a read of several rows may see them from different commits. Committed is not yet durable: a
//! crash can take back what was read, and the restarted service derives the same rows again
//! from the same records.
//!
//! Rows and offsets committed since the reader was made are answered from memory
//! ([`Committed`]): sled 0.34 applies a batch under a lock that every read waits for, so a
//! reader going to sled waits out each commit, and for as long as the loop's thread is off the
//! CPU while it holds the lock. Older rows are read from sled.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use serde::de::DeserializeOwned;
use shared_events::Topic;

use super::keys::STATE;
use super::StoreError;

/// About the most bytes of rows [`Committed`] holds: two generations of up to half of it each.
/// When the newer one fills, the older one is dropped (its rows are read from sled again) and
/// the newer one becomes the older, so the rows most recently committed stay in memory.
pub const COMMITTED_BYTES: usize = 128 << 20;

/// What a row in memory costs beside its key and value: the map's slot, the `String` and the
/// `Arc` headers.
const ROW_OVERHEAD: usize = 96;

/// The rows and offsets of the commits made since the reader was made, as written.
pub(super) struct Committed {
    /// By full key; `None`: deleted. Newer commits' rows.
    rows: HashMap<String, Option<Arc<[u8]>>>,
    /// The generation before `rows`: looked up when `rows` has no entry.
    older: HashMap<String, Option<Arc<[u8]>>>,
    /// What `rows` costs, keys, values and [`ROW_OVERHEAD`].
    bytes: usize,
    offsets: HashMap<(Topic, i32), i64>,
}

fn row_bytes(key: &str, value: &Option<Arc<[u8]>>) -> usize {
    ROW_OVERHEAD + key.len() + value.as_ref().map_or(0, |v| v.len())
}

impl Committed {
    pub(super) fn new(offsets: HashMap<(Topic, i32), i64>) -> Self {
        Committed { rows: HashMap::new(), older: HashMap::new(), bytes: 0, offsets }
    }

    /// The row under a full key, if a commit since the reader was made wrote it (`Some(None)`:
    /// deleted); `None` if it must be read from sled.
    pub(super) fn get(&self, key: &str) -> Option<Option<Arc<[u8]>>> {
        self.rows.get(key).or_else(|| self.older.get(key)).cloned()
    }

    /// One commit's rows and offsets, applied to the store already.
    pub(super) fn apply(&mut self, rows: Vec<(String, Option<Arc<[u8]>>)>, offsets: &HashMap<(Topic, i32), i64>) {
        for (key, value) in rows {
            let new = row_bytes(&key, &value);
            match self.rows.get_mut(&key) {
                Some(old) => {
                    self.bytes = self.bytes - row_bytes(&key, old) + new;
                    *old = value;
                }
                None => {
                    self.bytes += new;
                    self.rows.insert(key, value);
                }
            }
        }
        if self.bytes > COMMITTED_BYTES / 2 {
            self.older = std::mem::take(&mut self.rows);
            self.bytes = 0;
        }
        self.offsets.extend(offsets);
    }
}

/// A read-only handle on a store's state rows and offsets; cheap to clone.
#[derive(Clone)]
pub struct StoreReader {
    pub(super) db: sled::Db,
    pub(super) committed: Arc<RwLock<Committed>>,
}

impl StoreReader {
    /// The row under `key` in `table`.
    pub fn row<V: DeserializeOwned>(&self, table: &str, key: &str) -> Result<Option<V>, StoreError> {
        if let Some(found) = self.row_in_memory(table, key) {
            return found;
        }
        let full = format!("{STATE}{table}/{key}");
        match self.db.get(full.as_bytes())? {
            None => Ok(None),
            Some(value) => serde_json::from_slice(&value).map(Some).map_err(|e| StoreError::Corrupt { key: full, reason: e.to_string() }),
        }
    }

    /// The row under `key` in `table` if memory has it (a commit since the reader was made
    /// wrote it): never waits for sled. `None`: [`StoreReader::row`] must read sled.
    pub fn row_in_memory<V: DeserializeOwned>(&self, table: &str, key: &str) -> Option<Result<Option<V>, StoreError>> {
        let full = format!("{STATE}{table}/{key}");
        let cached = self.committed.read().unwrap_or_else(PoisonError::into_inner).get(&full)?;
        Some(match cached {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| StoreError::Corrupt { key: full, reason: e.to_string() }),
            None => Ok(None),
        })
    }

    /// At most `limit` rows of `table` whose keys start with `prefix` and, after it, sort
    /// before `before` (all of them without it): the last ones first. Keys come back without
    /// `prefix`.
    pub fn rows_before<V: DeserializeOwned>(
        &self,
        table: &str,
        prefix: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, V)>, StoreError> {
        let start = format!("{STATE}{table}/{prefix}");
        let rows = match before {
            Some(before) => self.db.range(start.as_bytes().to_vec()..format!("{start}{before}").into_bytes()),
            None => self.db.scan_prefix(start.as_bytes()),
        };
        let mut out = Vec::new();
        for row in rows.rev().take(limit) {
            let (key, value) = row?;
            let full = String::from_utf8_lossy(&key).into_owned();
            let v = serde_json::from_slice(&value).map_err(|e| StoreError::Corrupt { key: full.clone(), reason: e.to_string() })?;
            out.push((full[start.len()..].to_owned(), v));
        }
        Ok(out)
    }

    /// Where the service has read each input partition to: every record before these offsets
    /// is in the rows (the committed state, not yet necessarily durable).
    pub fn offsets(&self) -> Result<HashMap<(Topic, i32), i64>, StoreError> {
        Ok(self.committed.read().unwrap_or_else(PoisonError::into_inner).offsets.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn value(n: usize) -> Option<Arc<[u8]>> {
        Some(Arc::from(vec![b'x'; n]))
    }

    #[test]
    fn a_row_written_again_counts_once_and_a_full_generation_becomes_the_older() {
        let mut c = Committed::new(HashMap::new());
        c.apply(vec![("a".into(), value(10)), ("a".into(), value(20))], &HashMap::new());
        assert_eq!(c.bytes, ROW_OVERHEAD + 1 + 20, "the second write replaces the first");
        c.apply(vec![("a".into(), None)], &HashMap::new());
        assert_eq!((c.bytes, c.get("a")), (ROW_OVERHEAD + 1, Some(None)), "a delete is remembered");
        // Fill the newer generation: it becomes the older, still answered, and the next rows
        // start a new one.
        let big = COMMITTED_BYTES / 2;
        c.apply(vec![("b".into(), value(big))], &HashMap::new());
        assert_eq!((c.rows.len(), c.older.len(), c.bytes), (0, 2, 0));
        assert_eq!(c.get("b").flatten().map(|v| v.len()), Some(big));
        c.apply(vec![("c".into(), value(1))], &HashMap::new());
        assert!(c.get("b").is_some() && c.get("c").is_some());
        // The next time the newer fills, the oldest rows go (to be read from sled).
        c.apply(vec![("d".into(), value(big))], &HashMap::new());
        assert_eq!((c.get("a"), c.get("b").is_some(), c.get("d").is_some()), (None, false, true));
    }
}
