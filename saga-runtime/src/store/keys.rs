//! The store's key layout and format: prefixes, commit-numbered keys, chunked JSON values,
//! and the upgrade from format 1 (see the layout in [`super`]).

use serde::Serialize;

use super::{OutboxEntry, StoreError};

pub(super) const FORMAT: &[u8] = b"3";
/// One outbox key and one applied key per commit, however big (`outbox/<seq>`).
pub(super) const FORMAT_2: &[u8] = b"2";
/// One outbox key per entry and one `applied/<event id>` key per applied event.
pub(super) const FORMAT_1: &[u8] = b"1";
pub(super) const META_FORMAT: &[u8] = b"meta/format";
pub(super) const META_SEEDED: &[u8] = b"meta/seeded";
pub(super) const STATE: &str = "state/";
pub(super) const OFFSET: &str = "offset/";
pub(super) const OUTBOX: &[u8] = b"outbox/";
pub(super) const APPLIED: &[u8] = b"applied/";
/// Largest outbox or applied-ids value (one record bigger than this goes alone).
pub const CHUNK_BYTES: usize = 7 * 1024;
pub(super) const APPLIED_PER_CHUNK: usize = CHUNK_BYTES / 16;

/// Rewrites a format-1 store in place, in one batch: each unpublished entry becomes a
/// one-entry commit (same key, same order) and all applied ids one commit after them.
/// State rows, offsets and seed marker are the same in both formats.
pub(super) fn upgrade_from_1(db: &sled::Db) -> Result<(), StoreError> {
    let corrupt = |key: &[u8], reason: String| StoreError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason };
    let mut batch = sled::Batch::default();
    let mut next_seq = 0;
    for row in db.scan_prefix(OUTBOX) {
        let (key, value) = row?;
        let entry: OutboxEntry = serde_json::from_slice(&value).map_err(|e| corrupt(&key, e.to_string()))?;
        let one = serde_json::to_vec(&[entry]).map_err(|e| corrupt(&key, e.to_string()))?;
        next_seq = seq_of(OUTBOX, &key).map_or(next_seq, |s| s + 1);
        batch.insert(key, one);
    }
    let mut ids = Vec::new();
    for row in db.scan_prefix(APPLIED) {
        let (key, _) = row?;
        let id = key.get(APPLIED.len()..).filter(|id| id.len() == 16).ok_or_else(|| corrupt(&key, "not a format-1 applied id".into()))?;
        ids.extend_from_slice(id);
        batch.remove(key);
    }
    for (chunk, ids) in ids.chunks(APPLIED_PER_CHUNK * 16).enumerate() {
        batch.insert(chunk_key(APPLIED, next_seq, chunk)?, ids);
    }
    batch.insert(META_FORMAT, FORMAT);
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}

pub(super) fn seq_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub(super) fn chunk_key(prefix: &[u8], seq: u64, chunk: usize) -> Result<Vec<u8>, StoreError> {
    let chunk = u16::try_from(chunk)
        .map_err(|_| StoreError::Corrupt { key: "outbox".into(), reason: format!("{chunk} chunks in one commit") })?;
    let mut key = seq_key(prefix, seq);
    key.extend_from_slice(&chunk.to_be_bytes());
    Ok(key)
}

/// The commit number of a `<prefix><seq>` (format 2) or `<prefix><seq><chunk>` key.
pub(super) fn seq_of(prefix: &[u8], key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(prefix.len()..prefix.len() + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// `entries` as JSON arrays of at most [`CHUNK_BYTES`] each (or one entry, if bigger), in order.
pub(super) fn json_chunks<T: Serialize>(entries: &[T]) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut chunks = Vec::new();
    let mut current = vec![b'['];
    for entry in entries {
        let json = serde_json::to_vec(entry)
            .map_err(|e| StoreError::Corrupt { key: "outbox".into(), reason: e.to_string() })?;
        if current.len() > 1 && current.len() + json.len() + 1 > CHUNK_BYTES {
            current.push(b']');
            chunks.push(std::mem::replace(&mut current, vec![b'[']));
        }
        if current.len() > 1 {
            current.push(b',');
        }
        current.extend_from_slice(&json);
    }
    current.push(b']');
    chunks.push(current);
    Ok(chunks)
}
