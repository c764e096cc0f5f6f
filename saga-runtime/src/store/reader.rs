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

/// Most bytes of rows [`Committed`] holds; past it, it starts again empty (the rest are read
/// from sled).
pub const COMMITTED_BYTES: usize = 128 << 20;

/// The rows and offsets of the commits made since the reader was made, as written.
pub(super) struct Committed {
    /// By full key; `None`: deleted.
    pub(super) rows: HashMap<String, Option<Arc<[u8]>>>,
    /// Bytes of the keys and values in `rows`.
    bytes: usize,
    offsets: HashMap<(Topic, i32), i64>,
}

impl Committed {
    pub(super) fn new(offsets: HashMap<(Topic, i32), i64>) -> Self {
        Committed { rows: HashMap::new(), bytes: 0, offsets }
    }

    /// One commit's rows and offsets, applied to the store already.
    pub(super) fn apply(&mut self, rows: Vec<(String, Option<Arc<[u8]>>)>, offsets: &HashMap<(Topic, i32), i64>) {
        let size = |k: &String, v: &Option<Arc<[u8]>>| k.len() + v.as_ref().map_or(0, |v| v.len());
        for (key, value) in rows {
            let new = size(&key, &value);
            if let Some(old) = self.rows.insert(key.clone(), value) {
                self.bytes -= size(&key, &old);
            }
            self.bytes += new;
        }
        if self.bytes > COMMITTED_BYTES {
            self.rows.clear();
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
        let full = format!("{STATE}{table}/{key}");
        let cached = self.committed.read().unwrap_or_else(PoisonError::into_inner).rows.get(&full).cloned();
        let decode = |bytes: &[u8]| serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { key: full.clone(), reason: e.to_string() });
        match cached {
            Some(Some(bytes)) => decode(&bytes).map(Some),
            Some(None) => Ok(None),
            None => match self.db.get(full.as_bytes())? {
                None => Ok(None),
                Some(value) => decode(&value).map(Some),
            },
        }
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
