//! What one step changes (state rows, outbox entries, next offsets, applied ids), for a store
//! to write in one atomic batch.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use shared_events::{EventId, Topic};

use crate::state::{PersistentTable, RowChange, RowError};

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
    /// Collects the changed rows of every table; fails if a table could not read a row the
    /// rules asked for (nothing decided without it may be committed).
    pub fn add_table_changes(&mut self, tables: Vec<&mut dyn PersistentTable>) -> Result<(), RowError> {
        let mut changes = Vec::new();
        for table in tables {
            table.drain_changes(&mut changes)?;
            let name = table.name();
            self.rows.extend(changes.drain(..).map(|c| (name, c)));
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
            && self.outbox.is_empty()
            && self.offsets.is_empty()
            && self.applied.is_empty()
            && !self.seeded
    }
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
