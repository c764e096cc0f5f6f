//! Reading a running service's committed state from another thread: what a query side (the
//! orders view's HTTP API) answers from, while the loop goes on writing.
//!
//! A commit is one sled batch, so each row read is as some commit left it, never half of one;
//! a read of several rows may see them from different commits. Committed is not yet durable: a
//! crash can take back what was read, and the restarted service derives the same rows again
//! from the same records.
//!
//! Rows are read from sled without waiting for a commit being applied
//! (`Tree::get_unisolated`, a patch of the vendored sled): sled 0.34 applies a batch under a
//! lock that its `get` waits for, and that batch in turn waits for a flush's sync, so a plain
//! `get` could wait out a commit, a sync, and the loop's thread off the CPU in between. A row
//! is always one commit's whole value, but it may be from a commit still being applied, one
//! newer than the offsets say: those are a lower bound. (A commit sled fails part-way is not
//! rolled back in memory either way; its offsets never advance, and the service stops.)
//! Offsets are kept in memory, swapped whole after each commit is applied.
//!
//! A row whose page is not in sled's cache is read from the log (`pread`), and if that page
//! was written by a commit not yet flushed, the read first waits for that write: which is why
//! a store read for every request wants a cache that holds its working set
//! (`--store-cache-mb`).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use serde::de::DeserializeOwned;
use shared_events::Topic;

use super::keys::STATE;
use super::StoreError;

/// The next offset to read of each (topic, partition).
pub type Offsets = HashMap<(Topic, i32), i64>;

/// The offsets a reader answers: the loop swaps in a new map after each commit is applied.
pub(super) type SharedOffsets = Arc<RwLock<Arc<Offsets>>>;

/// A read-only handle on a store's state rows and offsets; cheap to clone.
#[derive(Clone)]
pub struct StoreReader {
    pub(super) db: sled::Db,
    /// Where the commits applied so far have read each partition to.
    pub(super) offsets: SharedOffsets,
}

impl StoreReader {
    /// The row under `key` in `table`. Never waits for a commit being applied, so a server
    /// can call it on its own thread; a page not in sled's cache is read from disk (see the
    /// module's doc).
    pub fn row<V: DeserializeOwned>(&self, table: &str, key: &str) -> Result<Option<V>, StoreError> {
        let full = format!("{STATE}{table}/{key}");
        match self.db.get_unisolated(full.as_bytes())? {
            None => Ok(None),
            Some(value) => serde_json::from_slice(&value).map(Some).map_err(|e| StoreError::Corrupt { key: full, reason: e.to_string() }),
        }
    }

    /// At most `limit` rows of `table` whose keys start with `prefix` and, after it, sort
    /// before `before` (all of them without it): the last ones first. Keys come back without
    /// `prefix`. sled's iterators wait for a commit being applied, so call this off a server's
    /// thread.
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
    pub fn offsets(&self) -> Result<Arc<Offsets>, StoreError> {
        Ok(Arc::clone(&self.offsets.read().unwrap_or_else(PoisonError::into_inner)))
    }
}
