//! The Kafka edge: connecting, creating topics, one fetch task per input partition, and
//! publishing outbox entries. rskafka has no consumer groups; positions live in our store.
//!
//! Every fetcher and every producer partition has its own connection (an rskafka
//! `PartitionClient` each), so a long-polling fetch never delays a publish.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rskafka::chrono::{TimeZone, Utc};
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::{Record, RecordAndOffset};
use rskafka::BackoffConfig;
use shared_events::Topic;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::RuntimeConfig;
use crate::store::OutboxEntry;

/// A fetched record, as `shared_events` decodes it.
pub fn raw_record(topic: Topic, record: &RecordAndOffset) -> shared_events::RawRecord<'_> {
    shared_events::RawRecord {
        topic,
        key: record.record.key.as_deref(),
        value: record.record.value.as_deref(),
        headers: &record.record.headers,
        timestamp_ms: record.record.timestamp.timestamp_millis(),
    }
}

/// Records fetched from one partition of one input topic.
#[derive(Debug)]
pub struct Fetched {
    pub topic: Topic,
    pub partition: i32,
    pub records: Vec<RecordAndOffset>,
    /// The first time this fetcher has read up to the partition's end: from then on the
    /// service has seen what was there when it started.
    pub caught_up: bool,
}

/// A failure talking to Kafka. Retryable by nature: the runtime waits and tries again.
#[derive(Debug, thiserror::Error)]
pub enum KafkaEdgeError {
    #[error("cannot reach Kafka at {servers}: {source}")]
    Connect { servers: String, source: KafkaError },
    #[error("cannot create or list topics: {0}")]
    Topics(KafkaError),
    #[error("topics disagree on partition count ({0}); every saga topic needs the same count so an order keeps its partition")]
    PartitionMismatch(String),
    #[error("publishing to {topic}/{partition} failed: {source}")]
    Publish { topic: String, partition: i32, source: KafkaError },
    #[error("fetching {topic}/{partition} failed: {source}")]
    Fetch { topic: String, partition: i32, source: KafkaError },
    #[error("topics not visible yet (just created?): {0}")]
    TopicsNotReady(String),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("no answer from Kafka within {0:?} ({1})")]
    TimedOut(Duration, &'static str),
}

/// Most bytes of records in one produce request. Kafka refuses a request over its
/// `message.max.bytes` (1 MiB by default) with `MessageTooLarge`, and retrying the same request
/// would never succeed, so a partition's records are split well below that.
pub const PRODUCE_MAX_BYTES: usize = 256 * 1024;

/// Most bytes one fetch brings back.
pub const FETCH_MAX_BYTES: i32 = 256 * 1024;

/// How long one call to the broker may take before we give up on it and back off.
/// rskafka retries internally (and its retries nest), so without this bound an outage could
/// go unreported for minutes.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(8);

/// Runs one broker call under [`CALL_TIMEOUT`] (plus `extra`, e.g. a fetch's long-poll wait).
pub async fn bounded<T, E>(
    what: &'static str,
    extra: Duration,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, KafkaEdgeError>
where
    KafkaEdgeError: From<E>,
{
    let limit = CALL_TIMEOUT + extra;
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(KafkaEdgeError::from),
        Err(_) => Err(KafkaEdgeError::TimedOut(limit, what)),
    }
}


fn backoff(config: &RuntimeConfig) -> BackoffConfig {
    // rskafka retries forever by default, with waits of up to 500 s; we want errors back soon
    // enough to log them and to notice a shutdown.
    BackoffConfig {
        init_backoff: Duration::from_millis(100),
        max_backoff: config.max_backoff,
        base: 2.0,
        deadline: Some(Duration::from_secs(3)),
    }
}

/// Builds a client; fails if no bootstrap server answers.
pub async fn connect(config: &RuntimeConfig) -> Result<Client, KafkaEdgeError> {
    let build = ClientBuilder::new(config.bootstrap_servers.clone())
        .client_id(config.service)
        .backoff_config(backoff(config))
        .build();
    bounded("connect", Duration::ZERO, async {
        build.await.map_err(|source| KafkaEdgeError::Connect { servers: config.bootstrap_servers.join(","), source })
    })
    .await
}

/// The full topic name for a saga topic in this deployment.
pub fn topic_name(prefix: &str, topic: Topic) -> String {
    format!("{prefix}{topic}")
}

/// Creates any missing saga topic and returns the partition count they all share.
pub async fn ensure_topics(client: &Client, config: &RuntimeConfig) -> Result<i32, KafkaEdgeError> {
    let existing: HashMap<String, usize> = bounded("list topics", Duration::ZERO, async {
        client.list_topics().await.map_err(KafkaEdgeError::Topics)
    })
    .await?
        .into_iter()
        .map(|t| (t.name, t.partitions.len()))
        .collect();
    let controller = client.controller_client().map_err(KafkaEdgeError::Topics)?;
    for topic in Topic::ALL {
        let name = topic_name(&config.topic_prefix, topic);
        if existing.contains_key(&name) {
            continue;
        }
        let create = controller.create_topic(&name, config.partitions, config.replication_factor, 10_000);
        match bounded("create topic", Duration::from_secs(10), async { Ok::<_, KafkaEdgeError>(create.await) }).await? {
            Ok(()) => info!(topic = %name, partitions = config.partitions, "created topic"),
            Err(KafkaError::ServerError { protocol_error: ProtocolError::TopicAlreadyExists, .. }) => {}
            Err(e) => return Err(KafkaEdgeError::Topics(e)),
        }
    }
    // Read back: another service may have created some with another count.
    let counts: Vec<(String, usize)> = bounded("list topics", Duration::ZERO, async {
        client.list_topics().await.map_err(KafkaEdgeError::Topics)
    })
    .await?
        .into_iter()
        .filter(|t| Topic::ALL.iter().any(|s| t.name == topic_name(&config.topic_prefix, *s)))
        .map(|t| (t.name, t.partitions.len()))
        .collect();
    // Metadata is eventually consistent: a topic another service just created may not be
    // listed yet, or listed without partitions. That is worth a retry, not an error.
    let missing: Vec<String> = Topic::ALL
        .iter()
        .map(|t| topic_name(&config.topic_prefix, *t))
        .filter(|n| !counts.iter().any(|(c, p)| c == n && *p > 0))
        .collect();
    if !missing.is_empty() {
        return Err(KafkaEdgeError::TopicsNotReady(missing.join(", ")));
    }
    let first = counts.first().map_or(config.partitions as usize, |c| c.1);
    if counts.iter().any(|c| c.1 != first) {
        let detail = counts.iter().map(|(n, c)| format!("{n}={c}")).collect::<Vec<_>>().join(", ");
        return Err(KafkaEdgeError::PartitionMismatch(detail));
    }
    Ok(first as i32)
}

/// Fetches one partition forever from `offset`, sending non-empty batches to `tx`.
/// Rides out broker outages with capped exponential backoff and one log line per outage.
pub async fn fetch_partition(
    client: Arc<Client>,
    config: RuntimeConfig,
    topic: Topic,
    partition: i32,
    mut offset: Option<i64>,
    tx: mpsc::Sender<Fetched>,
) {
    let name = topic_name(&config.topic_prefix, topic);
    let mut delay = Duration::from_millis(100);
    let mut failing = false;
    let mut announced_caught_up = false;
    let mut partition_client: Option<PartitionClient> = None;
    loop {
        let result = fetch_once(&client, &mut partition_client, &name, partition, &mut offset, config.fetch_wait_ms).await;
        match result {
            Ok((mut records, high_watermark)) => {
                if failing {
                    info!(topic = %name, partition, "fetching again after broker outage");
                    failing = false;
                }
                delay = Duration::from_millis(100);
                records.retain(|r| offset.is_none_or(|o| r.offset >= o));
                records.sort_by_key(|r| r.offset);
                if let Some(last) = records.last() {
                    offset = Some(last.offset + 1);
                }
                let caught_up = !announced_caught_up && offset.is_some_and(|o| o >= high_watermark);
                announced_caught_up |= caught_up;
                if (!records.is_empty() || caught_up) && tx.send(Fetched { topic, partition, records, caught_up }).await.is_err() {
                    return; // the loop stopped
                }
            }
            Err(KafkaEdgeError::Fetch {
                source: KafkaError::ServerError { protocol_error: ProtocolError::OffsetOutOfRange, .. },
                ..
            }) => {
                warn!(topic = %name, partition, offset, "stored offset is out of range (retention?); resuming from the earliest record");
                offset = None;
            }
            Err(error) => {
                if !failing {
                    warn!(topic = %name, partition, %error, "fetch failed; retrying with backoff");
                    failing = true;
                } else {
                    debug!(topic = %name, partition, %error, "fetch still failing");
                }
                partition_client = None;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(config.max_backoff);
            }
        }
    }
}

async fn fetch_once(
    client: &Client,
    slot: &mut Option<PartitionClient>,
    name: &str,
    partition: i32,
    offset: &mut Option<i64>,
    wait_ms: i32,
) -> Result<(Vec<RecordAndOffset>, i64), KafkaEdgeError> {
    let err = |source| KafkaEdgeError::Fetch { topic: name.to_owned(), partition, source };
    let pc = match slot {
        Some(pc) => pc,
        None => {
            let pc = bounded("connect to partition leader", Duration::ZERO, async {
                client.partition_client(name, partition, UnknownTopicHandling::Retry).await.map_err(err)
            })
            .await?;
            slot.insert(pc)
        }
    };
    let from = match *offset {
        Some(o) => o,
        None => {
            bounded("earliest offset", Duration::ZERO, async { pc.get_offset(OffsetAt::Earliest).await.map_err(err) })
                .await?
        }
    };
    *offset = Some(from);
    let long_poll = Duration::from_millis(wait_ms.max(0) as u64);
    // FETCH_MAX_BYTES per fetch and a short queue (engine.rs) bound what is prefetched, and so the RSS.
    bounded("fetch", long_poll, async { pc.fetch_records(from, 1..FETCH_MAX_BYTES, wait_ms).await.map_err(err) }).await
}

/// Publishes outbox entries, keeping one producing connection per (topic, partition).
pub struct Publisher {
    client: Arc<Client>,
    prefix: String,
    partitions: HashMap<(String, i32), Arc<PartitionClient>>,
}

impl Publisher {
    pub fn new(client: Arc<Client>, prefix: String) -> Self {
        Publisher { client, prefix, partitions: HashMap::new() }
    }

    async fn partition(&mut self, topic: &str, partition: i32) -> Result<Arc<PartitionClient>, KafkaEdgeError> {
        let key = (topic.to_owned(), partition);
        if let Some(pc) = self.partitions.get(&key) {
            return Ok(Arc::clone(pc));
        }
        let name = format!("{}{topic}", self.prefix);
        let pc = bounded("connect to partition leader", Duration::ZERO, async {
            self.client
                .partition_client(&name, partition, UnknownTopicHandling::Retry)
                .await
                .map_err(|source| KafkaEdgeError::Publish { topic: name, partition, source })
        })
        .await?;
        let pc = Arc::new(pc);
        self.partitions.insert(key, Arc::clone(&pc));
        Ok(pc)
    }

    /// Publishes entries; each (topic, partition) keeps their order, partitions go in parallel.
    pub async fn publish(&mut self, entries: &[&OutboxEntry]) -> Result<(), KafkaEdgeError> {
        let mut groups: Vec<((String, i32), Vec<Record>)> = Vec::new();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for e in entries {
            let key = (e.topic.clone(), e.partition);
            let record = Record {
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
            };
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, records)) => records.push(record),
                None => groups.push((key, vec![record])),
            }
        }
        let mut sends = Vec::with_capacity(groups.len());
        for ((topic, partition), records) in groups {
            let pc = self.partition(&topic, partition).await?;
            sends.push(async move {
                // In order, one bounded request after another, for this partition.
                for chunk in chunks_by_size(records, PRODUCE_MAX_BYTES) {
                    let topic = topic.clone();
                    bounded("produce", Duration::ZERO, async {
                        pc.produce(chunk, Compression::NoCompression)
                            .await
                            .map_err(|source| KafkaEdgeError::Publish { topic, partition, source })
                    })
                    .await?;
                }
                Ok::<(), KafkaEdgeError>(())
            });
        }
        let results = futures::future::join_all(sends).await;
        for r in results {
            if let Err(e) = r {
                // The connection may be stale; reconnect on the next attempt.
                self.partitions.clear();
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Splits records into runs of at most `max_bytes` (approximately; a record larger than that
/// goes alone), keeping their order.
pub fn chunks_by_size(records: Vec<Record>, max_bytes: usize) -> Vec<Vec<Record>> {
    let mut chunks: Vec<Vec<Record>> = Vec::new();
    let mut size = 0;
    for record in records {
        let len = record.approximate_size() + 64; // + per-record framing
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
