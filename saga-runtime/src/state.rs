//! In-memory tables that hold a service's state and remember what changed since the last commit.
//!
//! Rules read and write plain maps; the runtime writes the changed rows to sled in the same
//! atomic batch as the offsets and the outbox. Tables do no I/O themselves.

use std::collections::{BTreeSet, HashMap};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A named map from string keys to values, with change tracking.
#[derive(Debug, Clone)]
pub struct Table<V> {
    name: &'static str,
    rows: HashMap<String, V>,
    dirty: BTreeSet<String>,
}

impl<V> Table<V> {
    /// `name` is the table's name in the store; it must not change across versions.
    pub fn new(name: &'static str) -> Self {
        Table { name, rows: HashMap::new(), dirty: BTreeSet::new() }
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.rows.get(key)
    }

    /// Mutable access; the row is written back at the next commit.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let row = self.rows.get_mut(key)?;
        if !self.dirty.contains(key) {
            self.dirty.insert(key.to_owned());
        }
        Some(row)
    }

    pub fn insert(&mut self, key: impl Into<String>, value: V) {
        let key = key.into();
        self.dirty.insert(key.clone());
        self.rows.insert(key, value);
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let old = self.rows.remove(key);
        if old.is_some() {
            self.dirty.insert(key.to_owned());
        }
        old
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.rows.iter()
    }
}

/// A row to write: `None` deletes it.
pub type RowChange = (String, Option<Vec<u8>>);

/// What the runtime needs of a table: its name, loading a stored row, and draining changes.
pub trait PersistentTable: Send {
    fn name(&self) -> &'static str;
    /// Loads one stored row (at start-up).
    fn load_row(&mut self, key: &str, bytes: &[u8]) -> Result<(), serde_json::Error>;
    /// Appends every row changed since the last call, and forgets them.
    fn drain_changes(&mut self, out: &mut Vec<RowChange>);
}

impl<V: Serialize + DeserializeOwned + Send> PersistentTable for Table<V> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn load_row(&mut self, key: &str, bytes: &[u8]) -> Result<(), serde_json::Error> {
        self.rows.insert(key.to_owned(), serde_json::from_slice(bytes)?);
        Ok(())
    }

    fn drain_changes(&mut self, out: &mut Vec<RowChange>) {
        for key in std::mem::take(&mut self.dirty) {
            // Plain data types with string keys serialize without error.
            let value = self.rows.get(&key).and_then(|v| serde_json::to_vec(v).ok());
            out.push((key, value));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn drained(t: &mut Table<u64>) -> Vec<RowChange> {
        let mut out = Vec::new();
        t.drain_changes(&mut out);
        out
    }

    #[test]
    fn tracks_inserts_updates_and_removes_once() {
        let mut t = Table::new("wallets");
        t.insert("alice", 10);
        t.insert("bob", 1);
        if let Some(v) = t.get_mut("alice") {
            *v += 5;
        }
        t.remove("bob");
        assert!(t.get_mut("nobody").is_none());
        assert_eq!(
            drained(&mut t),
            vec![("alice".into(), Some(b"15".to_vec())), ("bob".into(), None)]
        );
        assert!(drained(&mut t).is_empty(), "changes are drained once");
    }

    #[test]
    fn loaded_rows_are_not_dirty() {
        let mut t: Table<u64> = Table::new("wallets");
        t.load_row("alice", b"7").unwrap();
        assert_eq!(t.get("alice"), Some(&7));
        assert!(drained(&mut t).is_empty());
    }
}
