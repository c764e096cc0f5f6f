//! An in-memory Kafka: per topic and partition, a log of records with offsets. Producing
//! appends; fetching reads any number of records from an offset. Nothing is ever lost once
//! appended (an acknowledged write, with the replication this models as perfect).

use std::collections::BTreeMap;

use saga_core::{OutboxEntry, Record};
use shared_events::{Envelope, Topic};

/// Every partition of every topic.
#[derive(Debug, Default)]
pub struct Log {
    partitions: BTreeMap<(Topic, i32), Vec<Record>>,
}

impl Log {
    pub fn append(&mut self, topic: Topic, partition: i32, mut record: Record) -> i64 {
        let log = self.partitions.entry((topic, partition)).or_default();
        record.offset = log.len() as i64;
        log.push(record);
        log.len() as i64 - 1
    }

    /// What a service's publisher writes: an outbox entry, as the runtime turns it into a record.
    pub fn append_entry(&mut self, entry: &OutboxEntry, now_ms: i64) -> Option<i64> {
        let topic: Topic = entry.topic.parse().ok()?;
        let record = Record {
            offset: -1,
            key: Some(entry.key.clone().into_bytes()),
            value: Some(entry.value.clone().into_bytes()),
            headers: entry.headers.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect(),
            timestamp_ms: now_ms,
        };
        Some(self.append(topic, entry.partition, record))
    }

    /// What a storefront writes: an envelope with its headers, or (as a person with kcat
    /// would) the bare JSON.
    pub fn append_event(&mut self, envelope: &Envelope, partition: i32, with_headers: bool, now_ms: i64) -> i64 {
        let encoded = envelope.encode();
        let headers = if with_headers { encoded.headers.into_iter().map(|(k, v)| (k, v.into_bytes())).collect() } else { BTreeMap::new() };
        let record = Record { offset: -1, key: Some(encoded.key.into_bytes()), value: Some(encoded.value), headers, timestamp_ms: now_ms };
        self.append(envelope.meta.event_type, partition, record)
    }

    pub fn end(&self, topic: Topic, partition: i32) -> i64 {
        self.partitions.get(&(topic, partition)).map_or(0, |l| l.len() as i64)
    }

    /// At most `max` records from `offset` on.
    pub fn fetch(&self, topic: Topic, partition: i32, offset: i64, max: usize) -> Vec<Record> {
        let Some(log) = self.partitions.get(&(topic, partition)) else { return Vec::new() };
        log.iter().skip(offset.max(0) as usize).take(max).cloned().collect()
    }

    /// A record already in the log, appended once more (a producer's retry after a lost ack).
    pub fn duplicate(&mut self, topic: Topic, partition: i32, offset: i64) {
        if let Some(record) = self.partitions.get(&(topic, partition)).and_then(|l| l.get(offset as usize)).cloned() {
            self.append(topic, partition, record);
        }
    }

    /// Every record, by topic and partition.
    pub fn all(&self) -> impl Iterator<Item = (Topic, i32, &Record)> {
        self.partitions.iter().flat_map(|((t, p), log)| log.iter().map(move |r| (*t, *p, r)))
    }
}
