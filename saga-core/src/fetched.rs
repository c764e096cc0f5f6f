//! The records the step reads, as plain data: what a Kafka client fetched from one partition,
//! or what a simulated log hands out.

use std::collections::BTreeMap;

use shared_events::Topic;

/// One record and its offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, Vec<u8>>,
    pub timestamp_ms: i64,
}

impl Record {
    /// The record as `shared_events` decodes it, read from `topic`.
    pub fn raw(&self, topic: Topic) -> shared_events::RawRecord<'_> {
        shared_events::RawRecord {
            topic,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: &self.headers,
            timestamp_ms: self.timestamp_ms,
        }
    }
}

/// A range of offsets the client could not read (a codec the build lacks, a corrupt batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableBatch {
    pub first_offset: i64,
    pub last_offset: i64,
    pub reason: String,
    /// The batch as it came, for the dead letter's copy.
    pub bytes: Vec<u8>,
}

/// Records fetched from one partition of one input topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub topic: Topic,
    pub partition: i32,
    pub records: Vec<Record>,
    /// Batches the client could not read, each to be parked on DeadLetter as one range of
    /// offsets.
    pub unreadable: Vec<UnreadableBatch>,
    /// Where reading this partition goes on: past the records, and past what the fetch skipped
    /// (transaction markers, aborted transactions, unreadable batches).
    pub next_offset: i64,
    /// The first time this reader has read up to the partition's end: from then on the
    /// service has seen what was there when it started. The runtime's readiness reads it; the
    /// step does not.
    pub caught_up: bool,
}
