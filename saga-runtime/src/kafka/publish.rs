//! Publishing outbox entries: one produce request per leader broker, in order per partition,
//! with what the broker refuses for good handed back instead of retried.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rskafka::chrono::{TimeZone, Utc};
use rskafka::client::acl::AclOperation;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::Compression;
use rskafka::client::broker::{BrokerClient, PartitionProduced};
use rskafka::client::Client;
use rskafka::record::Record;
use shared_events::Topic;

use crate::config::RuntimeConfig;
use crate::store::OutboxEntry;

use super::{topic_names, bounded, is_authorization, topic_name, KafkaEdgeError, PRODUCE_MAX_BYTES};

/// Publishes outbox entries: one produce request per leader broker for all the partitions a
/// batch touches, on a connection of its own (a long-polling fetch never delays a publish).
pub struct Publisher {
    client: Arc<Client>,
    /// How this client authenticates, for the error when the ACLs refuse a write.
    security: String,
    prefix: String,
    /// The service's sagas' topics, whose leaders it looks up.
    topics: Vec<Topic>,
    compression: Compression,
    /// Topics the cluster does not list, and since when (see [`TOPIC_GONE_AFTER`]).
    missing: HashMap<String, std::time::Instant>,
    leaders: HashMap<(String, i32), i32>,
    brokers: HashMap<i32, Arc<BrokerClient>>,
}

impl Publisher {
    pub fn new(client: Arc<Client>, config: &RuntimeConfig) -> Self {
        Publisher {
            client,
            security: config.security.describe(),
            prefix: config.topic_prefix.clone(),
            topics: config.topics.clone(),
            compression: config.compression.codec(),
            missing: HashMap::new(),
            leaders: HashMap::new(),
            brokers: HashMap::new(),
        }
    }

    /// The leader of a (full-named) topic's partition, cached until a publish fails.
    async fn leader(&mut self, name: &str, partition: i32) -> Result<i32, KafkaEdgeError> {
        if let Some(&leader) = self.leaders.get(&(name.to_owned(), partition)) {
            return Ok(leader);
        }
        let names = topic_names(&self.prefix, &self.topics);
        self.leaders = bounded("look up partition leaders", Duration::ZERO, self.client.partition_leaders(names)).await?;
        self.leaders.get(&(name.to_owned(), partition)).copied().ok_or_else(|| KafkaEdgeError::Publish {
            topic: name.to_owned(),
            partition,
            source: KafkaError::ServerError {
                protocol_error: ProtocolError::LeaderNotAvailable,
                error_message: None,
                request: rskafka::client::error::RequestContext::Partition(name.to_owned(), partition),
                response: None,
                is_virtual: true,
            },
        })
    }

    /// Publishes entries; each (topic, partition) keeps their order. On an error some may be
    /// published already: publishing them again is safe, as consumers drop what they applied.
    /// Entries the broker refuses for good (see [`is_permanent`]) are not retried: they come
    /// back as [`Refused`], and everything else is published.
    /// A write the ACLs refuse is [`KafkaEdgeError::NotAuthorized`], which no retry fixes.
    pub async fn publish(&mut self, entries: &[&OutboxEntry]) -> Result<Vec<Refused>, KafkaEdgeError> {
        let result = match self.try_publish(entries).await {
            Err(KafkaEdgeError::Publish { topic, source, .. }) if is_authorization(&source) => {
                Err(KafkaEdgeError::NotAuthorized { security: self.security.clone(), missing: format!("write {topic}") })
            }
            result => result,
        };
        if result.is_err() {
            // A connection may be stale, or a leader moved: start afresh on the next attempt.
            self.leaders.clear();
            self.brokers.clear();
        }
        result
    }

    async fn try_publish(&mut self, entries: &[&OutboxEntry]) -> Result<Vec<Refused>, KafkaEdgeError> {
        let mut refused = Vec::new();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        // Per (topic, partition): the indices of its entries, in order.
        let mut groups: Vec<((String, i32), Vec<usize>)> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            match groups.iter_mut().find(|((t, p), _)| *t == e.topic && *p == e.partition) {
                Some((_, indices)) => indices.push(i),
                None => groups.push(((e.topic.clone(), e.partition), vec![i])),
            }
        }
        let mut led = Vec::with_capacity(groups.len());
        for ((topic, partition), indices) in groups {
            let Ok(saga_topic) = topic.parse::<Topic>() else {
                let reason = format!("`{}` is not a saga topic", shared_events::text::Escaped(&topic));
                refused.extend(indices.into_iter().map(|index| Refused { index, reason: reason.clone() }));
                continue;
            };
            let name = topic_name(&self.prefix, saga_topic);
            match self.leader(&name, partition).await {
                Ok(leader) => {
                    self.missing.remove(&name);
                    led.push((leader, name, partition, indices));
                }
                Err(error) => {
                    // A topic it may no longer see or write is not a deleted one: its events
                    // stay in the outbox and the service stops.
                    self.check_may_write(&name).await?;
                    // A topic deleted under a running service: its entries would be retried
                    // forever, and everything published after them with them.
                    if !self.topic_gone(&name).await? {
                        return Err(error);
                    }
                    let since = *self.missing.entry(name.clone()).or_insert_with(std::time::Instant::now);
                    if since.elapsed() < TOPIC_GONE_AFTER {
                        return Err(error);
                    }
                    let reason = format!("topic {name} does not exist (deleted?) for {} s", since.elapsed().as_secs());
                    refused.extend(indices.into_iter().map(|index| Refused { index, reason: reason.clone() }));
                }
            }
        }
        for round in produce_rounds(led.into_iter().map(|(leader, name, partition, indices)| {
            let records = indices.iter().map(|&i| (i, record(entries[i], now_ms))).collect();
            (leader, name, partition, records)
        })) {
            let mut sends = Vec::with_capacity(round.len());
            for (leader, batches) in round {
                let broker = self.broker(leader);
                let compression = self.compression;
                sends.push(async move {
                    let mut indices = HashMap::new();
                    let batches = batches
                        .into_iter()
                        .map(|(topic, partition, records)| {
                            let (chunk, records): (Vec<usize>, Vec<Record>) = records.into_iter().unzip();
                            indices.insert((topic.clone(), partition), chunk);
                            (topic, partition, records)
                        })
                        .collect();
                    let produced = bounded("produce", Duration::ZERO, broker.produce(batches, compression)).await?;
                    let mut for_good = Vec::new();
                    for (topic, partition, source) in refused_for_good(produced)? {
                        let Some(chunk) = indices.remove(&(topic.clone(), partition)) else {
                            let unasked = KafkaError::InvalidResponse("an answer for a partition not asked for".into());
                            return Err(KafkaEdgeError::Publish { topic, partition, source: unasked });
                        };
                        for_good.push((topic, partition, chunk, source));
                    }
                    Ok((leader, for_good))
                });
            }
            for result in futures::future::join_all(sends).await {
                let (leader, for_good) = result?;
                for (topic, partition, chunk, source) in for_good {
                    // One record of the chunk spoils it for all (a batch too large, one invalid
                    // record): send them one by one, in order, to find which.
                    if chunk.len() == 1 {
                        refused.push(Refused { index: chunk[0], reason: source.to_string() });
                        continue;
                    }
                    let broker = self.broker(leader);
                    for i in chunk {
                        let one = vec![(topic.clone(), partition, vec![record(entries[i], now_ms)])];
                        let produced = bounded("produce", Duration::ZERO, broker.produce(one, self.compression)).await?;
                        for (_, _, source) in refused_for_good(produced)? {
                            refused.push(Refused { index: i, reason: source.to_string() });
                        }
                    }
                }
            }
        }
        Ok(refused)
    }

    /// [`KafkaEdgeError::NotAuthorized`] if the ACLs do not let this client write `name` (the
    /// topic list leaves out what a principal may not describe).
    async fn check_may_write(&self, name: &str) -> Result<(), KafkaEdgeError> {
        let allowed = bounded("check ACLs", Duration::ZERO, self.client.topic_authorized_operations(vec![name.to_owned()])).await?;
        let refused = match allowed.get(name) {
            Some(Ok(ops)) => !ops.allows(AclOperation::Write),
            Some(Err(e)) => *e == ProtocolError::TopicAuthorizationFailed,
            None => false,
        };
        if refused {
            return Err(KafkaEdgeError::NotAuthorized { security: self.security.clone(), missing: format!("write {name}") });
        }
        Ok(())
    }

    /// Whether the cluster answers and does not list `name`.
    async fn topic_gone(&self, name: &str) -> Result<bool, KafkaEdgeError> {
        let listed = bounded("list topics", Duration::ZERO, async { self.client.list_topics().await.map_err(KafkaEdgeError::Topics) }).await?;
        Ok(!listed.iter().any(|t| t.name == name))
    }

    fn broker(&mut self, leader: i32) -> Arc<BrokerClient> {
        Arc::clone(self.brokers.entry(leader).or_insert_with(|| Arc::new(self.client.broker_client(leader))))
    }
}

/// How long a topic may be missing from the cluster before what goes to it is parked on
/// DeadLetter, so that it holds back nothing published after it. Like the Java producer's
/// `delivery.timeout.ms` (2 minutes by default), shorter: a saga has deadlines to keep.
pub const TOPIC_GONE_AFTER: Duration = Duration::from_secs(30);

/// An outbox entry the broker refused for good: sending the same record again cannot succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its place in the entries given to [`Publisher::publish`].
    pub index: usize,
    pub reason: String,
}

/// The partitions of a produce the broker refused for good, with why; an error if it refused
/// one for a reason a retry may fix.
fn refused_for_good(produced: Vec<PartitionProduced>) -> Result<Vec<(String, i32, KafkaError)>, KafkaEdgeError> {
    let mut refused = Vec::new();
    for p in produced {
        match p.result {
            Ok(_) => {}
            Err(source) if is_permanent(&source) => refused.push((p.topic, p.partition, source)),
            Err(source) => return Err(KafkaEdgeError::Publish { topic: p.topic, partition: p.partition, source }),
        }
    }
    Ok(refused)
}

/// Whether the broker's answer to a produce means this record can never be written as it is
/// (too large for the topic, invalid), so retrying it would hold back everything behind it.
pub fn is_permanent(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::ServerError {
            // Not `CorruptMessage` (the Java client retries it: bytes may have been damaged on
            // the way), nor `UnsupportedCompressionType` or `InvalidTimestamp`: they are the
            // set-up's (a codec the broker lacks, a clock ahead of the broker's), would refuse
            // every entry and their dead letters alike, and are logged and retried until fixed.
            protocol_error: ProtocolError::MessageTooLarge
                | ProtocolError::RecordListTooLarge
                | ProtocolError::InvalidRecord
                | ProtocolError::InvalidTopicException,
            ..
        }
    )
}

/// The Kafka record for an outbox entry.
fn record(e: &OutboxEntry, now_ms: i64) -> Record {
    Record {
        key: Some(e.key.clone().into_bytes()),
        value: Some(e.value.clone().into_bytes()),
        headers: e.headers.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect(),
        timestamp: e
            .headers
            .get(shared_events::envelope::headers::OCCURRED_AT_MS)
            .and_then(|ms| ms.parse::<i64>().ok())
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .or_else(|| Utc.timestamp_millis_opt(now_ms).single())
            .unwrap_or_default(),
    }
}

/// One produce round: for each leader broker, the (topic, partition, records) it is sent.
pub type ProduceRound<R = Record> = HashMap<i32, Vec<(String, i32, Vec<R>)>>;

/// Deals each (leader, topic, partition, records) out into rounds: round r holds every
/// partition's r-th chunk of at most [`PRODUCE_MAX_BYTES`], grouped by leader. Sending the
/// rounds one after another, one request per leader each, keeps every partition's order.
/// A record may travel with a tag (the publisher's entry index), as `(tag, record)`.
pub fn produce_rounds<R: RecordSize>(partitions: impl IntoIterator<Item = (i32, String, i32, Vec<R>)>) -> Vec<ProduceRound<R>> {
    let mut rounds: Vec<ProduceRound<R>> = Vec::new();
    for (leader, topic, partition, records) in partitions {
        for (r, chunk) in chunks_by_size(records, PRODUCE_MAX_BYTES).into_iter().enumerate() {
            if rounds.len() <= r {
                rounds.push(HashMap::new());
            }
            rounds[r].entry(leader).or_default().push((topic.clone(), partition, chunk));
        }
    }
    rounds
}

/// What [`chunks_by_size`] measures: a record, or a record with a tag.
pub trait RecordSize {
    fn record_size(&self) -> usize;
}

impl RecordSize for Record {
    fn record_size(&self) -> usize {
        self.approximate_size()
    }
}

impl<T> RecordSize for (T, Record) {
    fn record_size(&self) -> usize {
        self.1.approximate_size()
    }
}

/// Splits records into runs of at most `max_bytes` (approximately; a record larger than that
/// goes alone), keeping their order.
pub fn chunks_by_size<R: RecordSize>(records: Vec<R>, max_bytes: usize) -> Vec<Vec<R>> {
    let mut chunks: Vec<Vec<R>> = Vec::new();
    let mut size = 0;
    for record in records {
        let len = record.record_size() + 64; // + per-record framing
        match chunks.last_mut() {
            Some(chunk) if size + len <= max_bytes => chunk.push(record),
            _ => {
                chunks.push(vec![record]);
                size = 0;
            }
        }
        size += len;
    }
    chunks
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn record(bytes: usize) -> Record {
        Record { key: None, value: Some(vec![0; bytes]), headers: Default::default(), timestamp: Default::default() }
    }

    #[test]
    fn only_errors_no_retry_can_fix_are_permanent() {
        let server = |protocol_error| KafkaError::ServerError {
            protocol_error,
            error_message: None,
            request: rskafka::client::error::RequestContext::Partition("t".into(), 0),
            response: None,
            is_virtual: false,
        };
        assert!(is_permanent(&server(ProtocolError::MessageTooLarge)));
        assert!(is_permanent(&server(ProtocolError::InvalidRecord)));
        assert!(!is_permanent(&server(ProtocolError::NotLeaderOrFollower)), "a leader moves: retry");
        assert!(!is_permanent(&server(ProtocolError::TopicAuthorizationFailed)), "an ACL can be granted: retry");
        assert!(!is_permanent(&server(ProtocolError::UnsupportedCompressionType)), "the set-up's, for every entry");
        assert!(!is_permanent(&KafkaError::InvalidResponse("cut".into())));
    }

    #[test]
    fn chunks_stay_under_the_limit_in_order() {
        let records: Vec<Record> = (0..100).map(|i| record(1000 + i)).collect();
        let chunks = chunks_by_size(records.clone(), 10_000);
        assert!(chunks.len() > 1);
        for c in &chunks {
            assert!(c.iter().map(|r| r.approximate_size() + 64).sum::<usize>() <= 10_000);
        }
        assert_eq!(chunks.concat(), records);
        let huge = chunks_by_size(vec![record(50_000), record(10)], 10_000);
        assert_eq!(huge.len(), 2, "an oversized record goes alone");
    }
}
