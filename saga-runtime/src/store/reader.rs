//! Reading a running service's committed state from another thread: what a query side (the
//! orders view's HTTP API) answers from, while the loop goes on writing.
//!
//! A commit is one sled batch, so each row read is as some commit left it, never half of one;
//! a read of several rows may see them from different commits. Committed is not yet durable: a
//! crash can take back what was read, and the restarted service derives the same rows again
//! from the same records.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use shared_events::Topic;

use super::keys::STATE;
use super::{read_offsets, StoreError};

/// A read-only handle on a store's state rows and offsets; cheap to clone.
#[derive(Clone)]
pub struct StoreReader {
    pub(super) db: sled::Db,
}

impl StoreReader {
    /// The row under `key` in `table`.
    pub fn row<V: DeserializeOwned>(&self, table: &str, key: &str) -> Result<Option<V>, StoreError> {
        let full = format!("{STATE}{table}/{key}");
        match self.db.get(full.as_bytes())? {
            None => Ok(None),
            Some(value) => serde_json::from_slice(&value).map(Some).map_err(|e| StoreError::Corrupt { key: full, reason: e.to_string() }),
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
        read_offsets(&self.db)
    }
}
