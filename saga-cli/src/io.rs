//! Kafka for the CLI: read every saga topic from the start, follow them live, publish.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use saga_runtime::kafka::backoff;
use saga_runtime::security::Security;
use rskafka::record::{Record, RecordAndOffset};
use saga_runtime::kafka::bounded;
use shared_events::envelope::decode_record;
use shared_events::partitioner::partition_for_key;
use shared_events::{Envelope, Topic};
use tokio::sync::mpsc;

use crate::analysis::Recorded;

/// What [`Topics::read_all`] found.
pub struct History {
    pub events: Vec<Recorded>,
    pub undecodable: usize,
    pub ends: BTreeMap<(Topic, i32), i64>,
}

/// A connection to the saga's topics (with an optional deployment prefix).
pub struct Topics {
    client: Arc<Client>,
    prefix: String,
    partitions: BTreeMap<Topic, i32>,
}

impl Topics {
    pub async fn connect(bootstrap: &[String], security: &Security, prefix: &str) -> Result<Topics> {
        let servers = bootstrap.join(",");
        let client = saga_runtime::kafka::connect_with(bootstrap, security, "saga-cli", backoff(Duration::from_secs(1))).await?;
        let listed = bounded("list topics", Duration::ZERO, client.list_topics()).await.context("cannot list topics")?;
        let mut partitions = BTreeMap::new();
        for topic in Topic::ALL {
            let name = format!("{prefix}{topic}");
            if let Some(t) = listed.iter().find(|t| t.name == name) {
                partitions.insert(topic, t.partitions.len() as i32);
            }
        }
        if partitions.is_empty() {
            anyhow::bail!("no saga topics on {servers} (prefix `{prefix}`); start a service first");
        }
        Ok(Topics { client: Arc::new(client), prefix: prefix.to_owned(), partitions })
    }

    async fn partition(&self, topic: Topic, partition: i32) -> Result<PartitionClient> {
        let name = format!("{}{topic}", self.prefix);
        bounded("connect to partition", Duration::ZERO, self.client.partition_client(&name, partition, UnknownTopicHandling::Error))
            .await
            .with_context(|| format!("cannot read {name}/{partition}"))
    }

    /// Every decodable event on every saga topic, up to now; how many records did not decode
    /// (they are on `DeadLetter`, parked by the services that read them); and where each
    /// partition ended, to [`Topics::follow`] from there.
    ///
    /// What it returns is one moment's state of all the topics: it reads every partition up to
    /// where it ended, then looks again, until a look finds nothing new anywhere. Read one
    /// partition after another, a saga that runs meanwhile could show a later step (read
    /// late) without an earlier one (read early). Under constant load it stops after a few
    /// looks, as close to one moment as it got.
    pub async fn read_all(&self) -> Result<History> {
        let mut out = Vec::new();
        let mut undecodable = 0;
        let mut cursors = BTreeMap::new();
        for (&topic, &count) in &self.partitions {
            for partition in 0..count {
                let pc = self.partition(topic, partition).await?;
                let earliest = bounded("earliest offset", Duration::ZERO, pc.get_offset(OffsetAt::Earliest)).await?;
                cursors.insert((topic, partition), (pc, earliest));
            }
        }
        for _look in 0..5 {
            let mut ends = BTreeMap::new();
            for (&key, (pc, _)) in &cursors {
                ends.insert(key, bounded("latest offset", Duration::ZERO, pc.get_offset(OffsetAt::Latest)).await?);
            }
            if cursors.iter().all(|(key, (_, next))| *next >= ends[key]) {
                break;
            }
            for (&(topic, partition), (pc, next)) in cursors.iter_mut() {
                let end = ends[&(topic, partition)];
                while *next < end {
                    let fetched = bounded("fetch", Duration::ZERO, pc.fetch(*next, 1..8 * 1024 * 1024, 100)).await?;
                    let from = *next;
                    undecodable += fetched.unreadable.len();
                    // Past transaction markers and aborted records too, which hold no event.
                    *next = fetched.next_offset.map_or(from, |n| n.clamp(from, end));
                    for r in fetched.records.into_iter().filter(|r| r.offset >= from && r.offset < end) {
                        match decode(topic, partition, &r) {
                            Some(rec) => out.push(rec),
                            None => undecodable += 1,
                        }
                    }
                    if *next == from {
                        break;
                    }
                }
                // Past a gap (a record no fetch returns), go on from the end.
                *next = (*next).max(end);
            }
        }
        let ends = cursors.into_iter().map(|(key, (_, next))| (key, next)).collect();
        Ok(History { events: out, undecodable, ends })
    }

    /// Sends every new event to `tx`, from `from` (where a [`Topics::read_all`] ended) or from
    /// now, until `tx` closes.
    /// Tells `ready` once every partition's starting offset is fixed: from then on, nothing
    /// published is missed.
    pub async fn follow(
        &self,
        from: Option<&BTreeMap<(Topic, i32), i64>>,
        tx: mpsc::Sender<Recorded>,
        ready: impl FnOnce(usize),
    ) -> Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        let mut starts = Vec::new();
        for (&topic, &count) in &self.partitions {
            for partition in 0..count {
                let pc = self.partition(topic, partition).await?;
                let next = match from.and_then(|ends| ends.get(&(topic, partition))) {
                    Some(end) => *end,
                    None => bounded("offset", Duration::ZERO, pc.get_offset(OffsetAt::Latest)).await?,
                };
                starts.push((topic, partition, pc, next));
            }
        }
        ready(starts.len());
        for (topic, partition, pc, mut next) in starts {
            {
                let tx = tx.clone();
                tasks.spawn(async move {
                    loop {
                        let fetched = bounded("fetch", Duration::from_millis(500), pc.fetch(next, 1..8 * 1024 * 1024, 500)).await;
                        let Ok(fetched) = fetched else {
                            tokio::time::sleep(Duration::from_secs(1)).await; // broker away: try again shortly
                            continue;
                        };
                        let from = next;
                        // Past transaction markers and aborted records too, which hold no event.
                        next = fetched.next_offset.map_or(from, |n| n.max(from));
                        let mut records = fetched.records;
                        records.sort_by_key(|r| r.offset);
                        for r in records {
                            if r.offset < from {
                                continue;
                            }
                            if let Some(rec) = decode(topic, partition, &r) {
                                if tx.send(rec).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        }
        drop(tx);
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    /// Publishes like the services do: headers, key = order id, the Java partitioner.
    /// Publishes `envelope` to its topic; returns the partition and the offset it got.
    pub async fn publish(&self, envelope: &Envelope) -> Result<(i32, i64)> {
        let topic = envelope.meta.event_type;
        let count = *self.partitions.get(&topic).with_context(|| format!("topic {topic} does not exist"))?;
        let rec = envelope.encode();
        let partition = partition_for_key(rec.key.as_bytes(), count);
        let pc = self.partition(topic, partition).await?;
        let record = Record {
            key: Some(rec.key.into_bytes()),
            value: Some(rec.value),
            headers: rec.headers.into_iter().map(|(k, v)| (k, v.into_bytes())).collect(),
            timestamp: rskafka::chrono::DateTime::from_timestamp_millis(envelope.meta.occurred_at_ms).unwrap_or_default(),
        };
        let offsets = bounded("produce", Duration::ZERO, pc.produce(vec![record], Compression::NoCompression))
            .await
            .with_context(|| format!("cannot publish to {}{topic}", self.prefix))?;
        Ok((partition, offsets.first().copied().unwrap_or(-1)))
    }
}

fn decode(topic: Topic, partition: i32, r: &RecordAndOffset) -> Option<Recorded> {
    decode_record(saga_runtime::kafka::raw_record(topic, r)).ok().map(|envelope| Recorded { topic, partition, offset: r.offset, envelope })
}
