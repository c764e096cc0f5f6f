//! Tables that hold a service's state for its rules, and remember what changed since the last commit.
//!
//! Rules read and write plain maps; the runtime writes the changed rows to sled in the same
//! atomic batch as the offsets and the outbox. A table holds the rows in use, not the whole
//! history: the runtime attaches a [`RowSource`] (the store), a row that is not in memory is
//! read from it on first use, and once more than `resident_rows` rows are in memory after a
//! commit, they are all dropped (every one is on disk by then). Memory so stays bounded however
//! many orders a service has seen. Without a source (the rules' unit tests) a table is a plain map.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A stored row that could not be read, or a changed row that could not be written. Rules
/// never see it: the runtime stops before committing anything decided without the row, or a
/// commit that would lose the change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("row `{table}/{key}` could not be {}: {reason}", if *.written { "written" } else { "read" })]
pub struct RowError {
    pub table: &'static str,
    pub key: String,
    pub reason: String,
    /// Whether writing it failed (else reading it).
    pub written: bool,
}

/// Called with each stored row's key and bytes; an error stops the scan.
pub type RowVisitor<'a> = dyn FnMut(&str, &[u8]) -> Result<(), String> + 'a;

/// Where a table's rows live when they are not in memory (the store).
pub trait RowSource: Send {
    /// The stored row under `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Every stored row, in key order; stops at the first error `visit` returns.
    fn scan(&self, visit: &mut RowVisitor<'_>) -> Result<(), String>;
}

/// A named map from string keys to values, with change tracking.
pub struct Table<V> {
    name: &'static str,
    /// Rows in memory. `None`: known to be absent (removed, or not in the source).
    rows: RefCell<HashMap<String, Option<V>>>,
    dirty: BTreeSet<String>,
    source: Option<Box<dyn RowSource>>,
    /// With a source: how many rows may stay in memory after a commit.
    resident_rows: usize,
    /// The first read that failed since the runtime last asked.
    failure: RefCell<Option<RowError>>,
}

impl<V> fmt::Debug for Table<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("name", &self.name)
            .field("in_memory", &self.rows.borrow().len())
            .field("dirty", &self.dirty.len())
            .field("backed", &self.source.is_some())
            .finish()
    }
}

impl<V: Clone + DeserializeOwned> Table<V> {
    /// `name` is the table's name in the store; it must not change across versions.
    pub fn new(name: &'static str) -> Self {
        Table {
            name,
            rows: RefCell::new(HashMap::new()),
            dirty: BTreeSet::new(),
            source: None,
            resident_rows: usize::MAX,
            failure: RefCell::new(None),
        }
    }

    /// The row under `key` (a copy: rows are small, and this keeps reads `&self`).
    pub fn get(&self, key: &str) -> Option<V> {
        if let Some(row) = self.rows.borrow().get(key) {
            return row.clone();
        }
        let row = self.read(key);
        self.rows.borrow_mut().insert(key.to_owned(), row.clone());
        row
    }

    /// Mutable access; the row is written back at the next commit.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        if !self.rows.get_mut().contains_key(key) {
            let row = self.read(key);
            self.rows.get_mut().insert(key.to_owned(), row);
        }
        let row = self.rows.get_mut().get_mut(key)?.as_mut()?;
        if !self.dirty.contains(key) {
            self.dirty.insert(key.to_owned());
        }
        Some(row)
    }

    pub fn insert(&mut self, key: impl Into<String>, value: V) {
        let key = key.into();
        self.dirty.insert(key.clone());
        self.rows.get_mut().insert(key, Some(value));
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let old = self.get(key);
        if old.is_some() {
            self.dirty.insert(key.to_owned());
            self.rows.get_mut().insert(key.to_owned(), None);
        }
        old
    }

    /// Visits every row, in memory or stored (in no particular order). With a source this reads
    /// the whole table: for start-up and tests, not for every event. `visit` must not read this
    /// table (the rows in memory are borrowed meanwhile).
    pub fn for_each(&self, mut visit: impl FnMut(&str, &V)) {
        let rows = self.rows.borrow();
        for (key, row) in rows.iter() {
            if let Some(row) = row {
                visit(key, row);
            }
        }
        let Some(source) = &self.source else { return };
        let scanned = source.scan(&mut |key, bytes| {
            if rows.contains_key(key) {
                return Ok(()); // the copy in memory is the newer one
            }
            let row: V = serde_json::from_slice(bytes).map_err(|e| format!("{key}: {e}"))?;
            visit(key, &row);
            Ok(())
        });
        if let Err(reason) = scanned {
            self.fail(String::new(), reason);
        }
    }

    fn read(&self, key: &str) -> Option<V> {
        let source = self.source.as_ref()?;
        let bytes = match source.get(key) {
            Ok(bytes) => bytes?,
            Err(reason) => {
                self.fail(key.to_owned(), reason);
                return None;
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(row) => Some(row),
            Err(e) => {
                self.fail(key.to_owned(), e.to_string());
                None
            }
        }
    }

    fn fail(&self, key: String, reason: String) {
        self.failure.borrow_mut().get_or_insert(RowError { table: self.name, key, reason, written: false });
    }
}

/// A row to write: `None` deletes it.
pub type RowChange = (String, Option<Vec<u8>>);

/// What the runtime needs of a table: its name, its source, and draining changes.
pub trait PersistentTable: Send {
    fn name(&self) -> &'static str;
    /// From now on, rows not in memory are read from `source`, and at most `resident_rows`
    /// stay in memory after a commit.
    fn attach(&mut self, source: Box<dyn RowSource>, resident_rows: usize);
    /// Appends every row changed since the last call and forgets the changes; then trims
    /// memory. Fails if a row could not be read since the last call: what the rules decided
    /// without it must not be committed.
    fn drain_changes(&mut self, out: &mut Vec<RowChange>) -> Result<(), RowError>;
}

impl<V: Clone + Serialize + DeserializeOwned + Send> PersistentTable for Table<V> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn attach(&mut self, source: Box<dyn RowSource>, resident_rows: usize) {
        self.source = Some(source);
        self.resident_rows = resident_rows;
    }

    fn drain_changes(&mut self, out: &mut Vec<RowChange>) -> Result<(), RowError> {
        if let Some(failure) = self.failure.get_mut().take() {
            return Err(failure);
        }
        let rows = self.rows.get_mut();
        for key in std::mem::take(&mut self.dirty) {
            // A row that cannot be serialised fails the commit: writing `None` would delete it.
            let value = match rows.get(&key).and_then(|v| v.as_ref()).map(serde_json::to_vec).transpose() {
                Ok(value) => value,
                Err(e) => return Err(RowError { table: self.name, key, reason: e.to_string(), written: true }),
            };
            out.push((key, value));
        }
        // Every row is clean now: dropping them all is cheaper than tracking which are cold,
        // and the hot ones (open orders, wallets, stock) come back on first use.
        if self.source.is_some() && rows.len() > self.resident_rows {
            rows.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn a_row_that_cannot_be_serialised_fails_the_commit_instead_of_deleting_the_row() {
        // JSON map keys must be strings: a map keyed by pairs does not serialise.
        let mut t: Table<BTreeMap<(u8, u8), u8>> = Table::new("pairs");
        t.insert("k".to_owned(), BTreeMap::from([((1, 2), 3)]));
        let mut out = Vec::new();
        let err = t.drain_changes(&mut out).unwrap_err();
        assert!(err.written && err.key == "k" && out.is_empty(), "{err}");
        assert!(err.to_string().starts_with("row `pairs/k` could not be written"), "{err}");
    }

    fn drained(t: &mut Table<u64>) -> Vec<RowChange> {
        let mut out = Vec::new();
        t.drain_changes(&mut out).unwrap();
        out
    }

    /// Stored rows, shared so a test can look at them while a table holds the source.
    #[derive(Clone, Default)]
    struct Rows(Arc<Mutex<BTreeMap<String, Vec<u8>>>>);

    impl Rows {
        fn apply(&self, changes: Vec<RowChange>) {
            let mut rows = self.0.lock().unwrap();
            for (k, v) in changes {
                match v {
                    Some(v) => rows.insert(k, v),
                    None => rows.remove(&k),
                };
            }
        }
    }

    impl RowSource for Rows {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(self.0.lock().unwrap().get(key).cloned())
        }
        fn scan(&self, visit: &mut RowVisitor<'_>) -> Result<(), String> {
            for (k, v) in self.0.lock().unwrap().iter() {
                visit(k, v)?;
            }
            Ok(())
        }
    }

    struct Broken;
    impl RowSource for Broken {
        fn get(&self, _: &str) -> Result<Option<Vec<u8>>, String> {
            Err("disk on fire".into())
        }
        fn scan(&self, _: &mut RowVisitor<'_>) -> Result<(), String> {
            Err("disk on fire".into())
        }
    }

    fn all(t: &Table<u64>) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        t.for_each(|k, v| {
            out.insert(k.to_owned(), *v);
        });
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
    fn rows_leave_memory_past_the_bound_and_come_back_from_the_source() {
        let stored = Rows::default();
        let mut t: Table<u64> = Table::new("wallets");
        t.attach(Box::new(stored.clone()), 2);
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            t.insert(name, i as u64);
        }
        stored.apply(drained(&mut t));
        assert_eq!(t.rows.borrow().len(), 0, "three rows over a bound of two: memory emptied");
        assert_eq!(t.get("c"), Some(2), "read back from the source");
        *t.get_mut("a").unwrap() += 10;
        t.remove("b");
        assert_eq!(t.get("b"), None, "a removal is seen before it is committed");
        assert_eq!(all(&t), BTreeMap::from([("a".into(), 10), ("c".into(), 2)]), "memory overrides the source");
        stored.apply(drained(&mut t));
        assert_eq!(stored.0.lock().unwrap().keys().cloned().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(t.get("zed"), None);
    }

    #[test]
    fn a_failed_read_fails_the_commit() {
        let mut t: Table<u64> = Table::new("wallets");
        t.attach(Box::new(Broken), 10);
        assert_eq!(t.get("alice"), None);
        let err = t.drain_changes(&mut Vec::new()).unwrap_err();
        assert_eq!((err.table, err.key.as_str()), ("wallets", "alice"));
        assert!(t.drain_changes(&mut Vec::new()).is_ok(), "reported once");
    }

    #[test]
    fn an_undecodable_stored_row_is_a_failure_not_an_absent_row() {
        let stored = Rows::default();
        stored.apply(vec![("alice".into(), Some(b"not json".to_vec()))]);
        let mut t: Table<u64> = Table::new("wallets");
        t.attach(Box::new(stored), 10);
        assert_eq!(t.get("alice"), None);
        assert!(t.drain_changes(&mut Vec::new()).is_err());
    }
}
