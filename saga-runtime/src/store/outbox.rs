//! What waits to be published: the entries a commit emits, the keys that delete them, and
//! the handle the publishing task deletes them with.

use std::sync::{Arc, Mutex, PoisonError};

pub use saga_core::OutboxEntry;



/// Key of some of one commit's outbox entries; pass back to [`OutboxCleaner::remove_outbox`]
/// once they are published.
pub type OutboxKey = sled::IVec;

/// The records one commit emits, under the keys that delete them once published.
#[derive(Debug, Clone)]
pub struct OutboxBatch {
    pub keys: Vec<OutboxKey>,
    pub entries: Vec<OutboxEntry>,
}

/// Deletes published entries from the outbox; the only store access the publisher needs.
///
/// The deletions ride on the service's next commit (or [`Store::delete_published`]) rather
/// than a batch of their own: every sled batch writes the log out (sled 0.34 rolls its log
/// buffer for each), so one batch per publish doubled the log writes of a paced service.
/// Deleting late is safe: a crash before it only means publishing those entries again, which
/// consumers drop as duplicates.
#[derive(Clone)]
pub struct OutboxCleaner {
    pub(super) published: Arc<Mutex<Vec<OutboxKey>>>,
}

impl OutboxCleaner {
    /// Forgets published outbox entries, with the store's next commit.
    pub fn remove_outbox(&self, keys: impl IntoIterator<Item = OutboxKey>) {
        self.published.lock().unwrap_or_else(PoisonError::into_inner).extend(keys);
    }
}
