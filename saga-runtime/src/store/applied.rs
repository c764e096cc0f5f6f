//! The applied-id window: which events' effects the store holds, so a redelivered event is
//! dropped. Ids are kept per commit (`applied/<seq><chunk>`), in memory for lookups without a
//! read and on disk for restarts; only the latest commits' ids are kept, so neither grows with
//! the number of events ever seen.

use std::collections::{HashSet, VecDeque};

use shared_events::EventId;

use super::keys::{chunk_key, seq_key, seq_of, APPLIED, APPLIED_PER_CHUNK};
use super::StoreError;

/// The latest commits' applied ids.
pub(super) struct AppliedWindow {
    /// Every applied event id on disk.
    ids: HashSet<EventId>,
    /// The commits whose ids `ids` holds, oldest first: (seq, number of ids).
    commits: VecDeque<(u64, usize)>,
    count: usize,
    /// Most ids kept; older commits' ids are forgotten, on disk too.
    window: usize,
}

impl AppliedWindow {
    /// Reads the window from `db`, deleting (with `expired`) the commits already outside it.
    pub(super) fn load(db: &sled::Db, window: usize, expired: &mut sled::Batch) -> Result<AppliedWindow, StoreError> {
        let mut applied = AppliedWindow { ids: HashSet::new(), commits: VecDeque::new(), count: 0, window };
        for row in db.scan_prefix(APPLIED) {
            let (key, ids) = row?;
            if ids.len() % 16 != 0 {
                return Err(StoreError::Corrupt {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason: format!("{} bytes is not a whole number of event ids", ids.len()),
                });
            }
            if let Some(seq) = seq_of(APPLIED, &key) {
                match applied.commits.back_mut() {
                    Some((last, count)) if *last == seq => *count += ids.len() / 16,
                    _ => applied.commits.push_back((seq, ids.len() / 16)),
                }
                applied.count += ids.len() / 16;
            }
        }
        applied.expire(db, expired)?;
        // One pass over the kept commits' keys (they sort together, from the oldest kept).
        if let Some(&(first, _)) = applied.commits.front() {
            for row in db.range(seq_key(APPLIED, first)..) {
                let (key, ids) = row?;
                if !key.starts_with(APPLIED) {
                    break;
                }
                applied.ids.extend(ids.chunks_exact(16).filter_map(|id| uuid::Uuid::from_slice(id).ok().map(EventId)));
            }
        }
        Ok(applied)
    }

    pub(super) fn contains(&self, id: EventId) -> bool {
        self.ids.contains(&id)
    }

    /// Writes commit `seq`'s ids into `batch`, and the deletion of what falls out of the
    /// window. The new ids count once [`AppliedWindow::remember`] is called, after the batch
    /// is applied.
    pub(super) fn add(&mut self, db: &sled::Db, seq: u64, applied: &[EventId], batch: &mut sled::Batch) -> Result<(), StoreError> {
        if applied.is_empty() {
            return Ok(());
        }
        let ids: Vec<u8> = applied.iter().flat_map(|id| *id.0.as_bytes()).collect();
        for (chunk, ids) in ids.chunks(APPLIED_PER_CHUNK * 16).enumerate() {
            batch.insert(chunk_key(APPLIED, seq, chunk)?, ids);
        }
        self.commits.push_back((seq, applied.len()));
        self.count += applied.len();
        self.expire(db, batch)
    }

    /// The ids of a commit now applied.
    pub(super) fn remember(&mut self, applied: Vec<EventId>) {
        self.ids.extend(applied);
    }

    /// Moves the oldest commits' ids out of the window: out of memory now, off disk with `batch`.
    fn expire(&mut self, db: &sled::Db, batch: &mut sled::Batch) -> Result<(), StoreError> {
        // The newest commit always stays, whatever its size.
        while self.count > self.window && self.commits.len() > 1 {
            let Some((seq, count)) = self.commits.pop_front() else { break };
            // Point reads of the keys the commit wrote (and the format-2 key), not a prefix
            // scan: this runs on every commit once the window is full.
            let chunks = count.div_ceil(APPLIED_PER_CHUNK);
            let keys = std::iter::once(seq_key(APPLIED, seq))
                .chain((0..chunks).map(|chunk| chunk_key(APPLIED, seq, chunk)).filter_map(Result::ok));
            for key in keys {
                if let Some(ids) = db.get(&key)? {
                    for id in ids.chunks_exact(16).filter_map(|id| uuid::Uuid::from_slice(id).ok()) {
                        self.ids.remove(&EventId(id));
                    }
                    batch.remove(key);
                }
            }
            self.count -= count;
        }
        Ok(())
    }
}
