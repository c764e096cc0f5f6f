//! Fetching: one long-polling request per leader broker for all the input partitions it
//! leads, and what each answer brings that the loop has not seen.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionFetch, UnknownTopicHandling, UnreadableBatch};
use rskafka::client::broker::FetchPartition;
use rskafka::client::Client;
use rskafka::record::RecordAndOffset;
pub use saga_core::Fetched;
use shared_events::Topic;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::{Backoff, RuntimeConfig};
use crate::metrics::Metrics;

use super::{topic_names, bounded, is_authorization, topic_name, KafkaEdgeError, FETCH_MAX_BYTES};

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

/// The client's record as the step reads it (its parts move; nothing is copied).
fn plain_record(r: RecordAndOffset) -> saga_core::Record {
    let RecordAndOffset { record, offset } = r;
    saga_core::Record { offset, timestamp_ms: record.timestamp.timestamp_millis(), key: record.key, value: record.value, headers: record.headers }
}

fn plain_unreadable(u: UnreadableBatch) -> saga_core::UnreadableBatch {
    let UnreadableBatch { first_offset, last_offset, reason, bytes } = u;
    saga_core::UnreadableBatch { first_offset, last_offset, reason, bytes }
}

/// One input partition, and where reading it goes on.
#[derive(Debug)]
pub struct Input {
    pub topic: Topic,
    pub partition: i32,
    /// The next offset to read; `None` starts at the earliest record Kafka still has.
    pub offset: Option<i64>,
    /// Whether [`Fetched::caught_up`] was sent for it.
    announced_caught_up: bool,
    /// Where the partition ended at the first fetch answer: what catching up reads to.
    first_end: Option<i64>,
}

impl Input {
    pub fn new(topic: Topic, partition: i32, offset: Option<i64>) -> Self {
        Input { topic, partition, offset, announced_caught_up: false, first_end: None }
    }
}

/// Fetches every input partition forever, sending non-empty batches to `tx`: one request
/// per leader broker covering all the partitions it leads (see [`fetch_from_leader`]).
/// Partitions whose leader moves (a leadership error, or a broker that stays unreachable while
/// the metadata names another leader) are looked up again. Returns when `tx` is closed, or
/// with [`KafkaEdgeError::NotAuthorized`] if the ACLs stop letting it read an input.
pub async fn fetch_inputs(
    client: Arc<Client>,
    config: RuntimeConfig,
    inputs: Vec<Input>,
    tx: mpsc::Sender<Fetched>,
    metrics: Arc<Metrics>,
) -> Result<(), KafkaEdgeError> {
    let mut unassigned = inputs;
    let mut leaders_tasks = tokio::task::JoinSet::new();
    let mut backoff = Backoff::new(Duration::from_millis(100), config.max_backoff);
    loop {
        if !unassigned.is_empty() {
            let names = topic_names(&config.topic_prefix, &config.topics);
            let asked = bounded("look up partition leaders", Duration::ZERO, client.partition_leaders(names)).await;
            match asked {
                Ok(leaders) => {
                    let mut by_leader: HashMap<i32, Vec<Input>> = HashMap::new();
                    let mut leaderless = Vec::new();
                    for input in unassigned.drain(..) {
                        match leaders.get(&(topic_name(&config.topic_prefix, input.topic), input.partition)) {
                            Some(&leader) => by_leader.entry(leader).or_default().push(input),
                            None => leaderless.push(input),
                        }
                    }
                    for (leader, inputs) in by_leader {
                        debug!(leader, partitions = inputs.len(), "fetching from partition leader");
                        leaders_tasks.spawn(fetch_from_leader(Arc::clone(&client), config.clone(), leader, inputs, tx.clone(), Arc::clone(&metrics)));
                    }
                    if leaderless.is_empty() {
                        backoff.reset();
                    } else {
                        warn!(partitions = leaderless.len(), "some input partitions have no leader yet; retrying");
                    }
                    unassigned = leaderless;
                }
                Err(error) => warn!(%error, "cannot look up partition leaders; retrying"),
            }
        }
        let retry = tokio::time::sleep(backoff.wait());
        tokio::select! {
            ended = leaders_tasks.join_next(), if !leaders_tasks.is_empty() => match ended {
                // Leadership moved: look the partitions up again.
                Some(Ok(Ok(Some(inputs)))) => unassigned.extend(inputs),
                Some(Ok(Err(refused))) => return Err(refused),
                // The loop stopped (or the task panicked, which a restart cannot fix).
                Some(Ok(Ok(None))) | Some(Err(_)) | None => return Ok(()),
            },
            () = retry, if !unassigned.is_empty() => backoff.grow(),
            () = tx.closed() => return Ok(()),
        }
    }
}

/// Most bytes one fetch response carries, over all its partitions.
pub const FETCH_RESPONSE_MAX_BYTES: i32 = 512 * 1024;

/// Fetches the partitions one broker leads, with one long-polling request for all of them.
/// Rides out broker outages with capped exponential backoff and one log line per outage.
/// Returns the inputs (with their offsets) if that broker no longer leads one of them, `None`
/// once `tx` is closed, and an error no retry fixes (the ACLs refuse a read).
async fn fetch_from_leader(
    client: Arc<Client>,
    config: RuntimeConfig,
    leader: i32,
    mut inputs: Vec<Input>,
    tx: mpsc::Sender<Fetched>,
    metrics: Arc<Metrics>,
) -> Result<Option<Vec<Input>>, KafkaEdgeError> {
    let mut broker = client.broker_client(leader);
    let names: Vec<String> = inputs.iter().map(|i| topic_name(&config.topic_prefix, i.topic)).collect();
    let long_poll = Duration::from_millis(config.fetch_wait_ms.max(0) as u64);
    let mut backoff = Backoff::new(Duration::from_millis(100), config.max_backoff);
    let mut failing = false;
    // The broker fills a response in the order partitions are asked for: start each request
    // one partition further, so a busy partition cannot starve the ones after it.
    let mut first = 0;
    // Whether the last answer brought more than one record: a stream, not a lone event; then
    // the next fetch lingers (`RuntimeArgs::fetch_linger_ms`).
    let mut streaming = false;
    loop {
        let mut outcome = Ok(());
        for (input, name) in inputs.iter_mut().zip(&names) {
            if input.offset.is_none() {
                match earliest_offset(&client, name, input.partition).await {
                    Ok(offset) => input.offset = Some(offset),
                    Err(KafkaEdgeError::Fetch { source, .. }) if is_authorization(&source) => {
                        let missing = format!("read {name}");
                        return Err(KafkaEdgeError::NotAuthorized { security: config.security.describe(), missing });
                    }
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
        }
        let mut moved = false;
        if outcome.is_ok() {
            first = (first + 1) % inputs.len().max(1);
            let request: Vec<FetchPartition> = (0..inputs.len())
                .map(|k| (first + k) % inputs.len())
                .map(|k| FetchPartition {
                    topic: names[k].clone(),
                    partition: inputs[k].partition,
                    offset: inputs[k].offset.unwrap_or(0),
                })
                .collect();
            let (min_bytes, wait_ms) = fetch_wants(&config, streaming);
            let fetch = broker.fetch(&request, min_bytes, FETCH_RESPONSE_MAX_BYTES, FETCH_MAX_BYTES, wait_ms);
            let mut brought = 0;
            match bounded("fetch", long_poll, fetch).await {
                Err(e) => outcome = Err(e),
                Ok(answers) => {
                    // Every partition answered is stamped before any is handed to the loop, which
                    // may keep this task waiting (`/readyz` judges fetches by these stamps).
                    let now = crate::metrics::clock_ms();
                    for answer in &answers {
                        if let (Ok(fetch), Some(input)) = (&answer.result, inputs.iter().zip(&names).find(|(i, n)| **n == answer.topic && i.partition == answer.partition)) {
                            metrics.answered(input.0.topic, input.0.partition, log_end(fetch.high_watermark, fetch.last_stable_offset), now);
                        }
                    }
                    for answer in answers {
                        let Some(k) = (0..inputs.len()).find(|&k| names[k] == answer.topic && inputs[k].partition == answer.partition) else {
                            continue;
                        };
                        let input = &mut inputs[k];
                        match answer.result {
                            Ok(fetch) => {
                                if let Some(fetched) = take_fetched(input, fetch) {
                                    brought += fetched.records.len() + fetched.unreadable.len();
                                    if tx.send(fetched).await.is_err() {
                                        return Ok(None); // the loop stopped
                                    }
                                }
                            }
                            Err(KafkaError::ServerError { protocol_error: ProtocolError::OffsetOutOfRange, .. }) => {
                                warn!(topic = %names[k], partition = input.partition, offset = input.offset, "stored offset is out of range (retention?); resuming from the earliest record");
                                input.offset = None;
                            }
                            Err(KafkaError::ServerError {
                                protocol_error:
                                    ProtocolError::NotLeaderOrFollower
                                    | ProtocolError::LeaderNotAvailable
                                    | ProtocolError::UnknownTopicOrPartition
                                    | ProtocolError::FencedLeaderEpoch
                                    | ProtocolError::UnknownLeaderEpoch,
                                ..
                            }) => moved = true,
                            Err(source) if is_authorization(&source) => {
                                let missing = format!("read {}", names[k]);
                                return Err(KafkaEdgeError::NotAuthorized { security: config.security.describe(), missing });
                            }
                            Err(source) => {
                                outcome = Err(KafkaEdgeError::Fetch { topic: names[k].clone(), partition: input.partition, source });
                            }
                        }
                    }
                }
            }
            streaming = brought > 1;
        }
        match outcome {
            Ok(()) if moved => {
                info!(leader, "a partition's leader moved; looking leaders up again");
                // Metadata may lag the move: do not spin on it.
                tokio::time::sleep(backoff.wait()).await;
                return Ok(Some(inputs));
            }
            Ok(()) => {
                if failing {
                    info!(leader, "fetching again after broker outage");
                    failing = false;
                }
                backoff.reset();
            }
            Err(error) => {
                if !failing {
                    warn!(leader, %error, "fetch failed; retrying with backoff");
                    failing = true;
                } else {
                    debug!(leader, %error, "fetch still failing");
                }
                tokio::time::sleep(backoff.next_wait()).await;
                // The connection may be half-open (a timeout does not drop it): start afresh.
                broker = client.broker_client(leader);
                if moved || leadership_moved(&client, &names, &inputs, leader).await {
                    return Ok(Some(inputs));
                }
            }
        }
    }
}

/// The `min_bytes` and `max_wait_ms` of the next fetch: a long poll for the first record, or,
/// while `streaming`, a short linger for a fuller answer. A `--fetch-min-bytes` at least as big
/// as the linger's already batches, and waits longer for it.
fn fetch_wants(config: &RuntimeConfig, streaming: bool) -> (i32, i32) {
    if streaming && config.fetch_linger_ms > 0 && config.fetch_linger_bytes > config.fetch_min_bytes {
        (config.fetch_linger_bytes, config.fetch_linger_ms.min(config.fetch_wait_ms))
    } else {
        (config.fetch_min_bytes, config.fetch_wait_ms)
    }
}

/// Whether a broker other than `leader` now leads one of `inputs` (a broker that is down for
/// good hands its partitions over; its fetcher must follow them). `false` if nobody can say.
async fn leadership_moved(client: &Client, names: &[String], inputs: &[Input], leader: i32) -> bool {
    let Ok(leaders) = bounded("look up partition leaders", Duration::ZERO, client.partition_leaders(names.to_vec())).await
    else {
        return false;
    };
    names.iter().zip(inputs).any(|(name, input)| leaders.get(&(name.clone(), input.partition)).is_some_and(|&l| l != leader))
}

/// What one fetch of `input` brought that the loop has not seen, advancing the input past it;
/// `None` if there is nothing to send.
fn take_fetched(input: &mut Input, fetch: PartitionFetch) -> Option<Fetched> {
    let PartitionFetch { mut records, mut unreadable, next_offset, high_watermark, last_stable_offset } = fetch;
    let from = input.offset;
    records.retain(|r| from.is_none_or(|o| r.offset >= o));
    records.sort_by_key(|r| r.offset);
    unreadable.retain(|u| from.is_none_or(|o| u.last_offset >= o));
    for u in &mut unreadable {
        u.first_offset = u.first_offset.max(from.unwrap_or(i64::MIN));
    }
    let past_records = records.last().map(|r| r.offset + 1);
    let past_unreadable = unreadable.iter().map(|u| u.last_offset + 1).max();
    let next = [from, next_offset, past_records, past_unreadable].into_iter().flatten().max();
    let advanced = next != from;
    input.offset = next;
    // Caught up means read to where the partition ended when first asked, not to an end that
    // keeps moving under a steady stream; or to the readable end, if a transaction opened
    // since holds it back.
    let now_end = log_end(high_watermark, last_stable_offset);
    let end = now_end.min(*input.first_end.get_or_insert(now_end));
    let caught_up = !input.announced_caught_up && input.offset.is_some_and(|o| o >= end);
    input.announced_caught_up |= caught_up;
    (advanced || caught_up).then(|| Fetched {
        topic: input.topic,
        partition: input.partition,
        records: records.into_iter().map(plain_record).collect(),
        unreadable: unreadable.into_iter().map(plain_unreadable).collect(),
        next_offset: input.offset.unwrap_or_default(),
        caught_up,
    })
}

/// Where a fetched partition ends for this reader. Read committed: nothing past the last stable
/// offset comes back while a transaction is open, so that is the end to catch up with.
fn log_end(high_watermark: i64, last_stable_offset: Option<i64>) -> i64 {
    last_stable_offset.filter(|o| *o >= 0).map_or(high_watermark, |o| o.min(high_watermark))
}

/// The earliest offset Kafka still has for a partition (a one-off, on its own connection).
async fn earliest_offset(client: &Client, name: &str, partition: i32) -> Result<i64, KafkaEdgeError> {
    let err = |source| KafkaEdgeError::Fetch { topic: name.to_owned(), partition, source };
    bounded("earliest offset", Duration::ZERO, async {
        let pc = client.partition_client(name, partition, UnknownTopicHandling::Retry).await.map_err(err)?;
        pc.get_offset(OffsetAt::Earliest).await.map_err(err)
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rskafka::record::Record;

    fn record(bytes: usize) -> Record {
        Record { key: None, value: Some(vec![0; bytes]), headers: Default::default(), timestamp: Default::default() }
    }

    fn at(offset: i64) -> RecordAndOffset {
        RecordAndOffset { record: record(1), offset }
    }

    fn fetch(records: Vec<RecordAndOffset>, high_watermark: i64) -> PartitionFetch {
        let next_offset = records.iter().map(|r| r.offset + 1).max();
        PartitionFetch { records, next_offset, high_watermark, ..PartitionFetch::default() }
    }

    fn config(args: &[&str]) -> RuntimeConfig {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            rt: crate::RuntimeArgs,
        }
        let cli = Cli::try_parse_from(std::iter::once("svc").chain(args.iter().copied())).unwrap();
        cli.rt.into_config("payment-service").unwrap()
    }

    #[test]
    fn a_lone_event_is_long_polled_for_and_a_stream_lingers_for_a_fuller_answer() {
        let plain = config(&["--fetch-wait-ms", "250", "--fetch-min-bytes", "1", "--fetch-linger-ms", "20", "--fetch-linger-bytes", "65536"]);
        assert_eq!(fetch_wants(&plain, false), (1, 250), "idle: answered at the first record");
        assert_eq!(fetch_wants(&plain, true), (65_536, 20), "streaming: a short wait for a batch");
        let off = config(&["--fetch-wait-ms", "250", "--fetch-linger-ms", "0"]);
        assert_eq!(fetch_wants(&off, true), (off.fetch_min_bytes, 250));
        // The orders view's own batching waits longer for more: lingering would shorten it.
        let view = config(&["--fetch-wait-ms", "250", "--fetch-min-bytes", "262144", "--fetch-linger-ms", "20"]);
        assert_eq!(fetch_wants(&view, true), (262_144, 250));
        let short = config(&["--fetch-wait-ms", "5", "--fetch-min-bytes", "1", "--fetch-linger-ms", "20"]);
        assert_eq!(fetch_wants(&short, true).1, 5, "never longer than the long poll");
    }

    #[test]
    fn a_fetch_yields_only_unseen_records_in_order_and_catching_up_is_announced_once() {
        let mut input = Input::new(Topic::OrderCreated, 0, Some(5));
        // Kafka returns whole record batches, so records before the asked offset come back.
        let fetched = take_fetched(&mut input, fetch(vec![at(6), at(4), at(5)], 10)).unwrap();
        assert_eq!(fetched.records.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![5, 6]);
        assert!(!fetched.caught_up);
        assert_eq!((input.offset, fetched.next_offset), (Some(7), 7));
        assert!(take_fetched(&mut input, fetch(vec![at(6)], 10)).is_none(), "nothing new, not caught up");
        let end = take_fetched(&mut input, fetch(vec![at(7), at(8), at(9)], 10)).unwrap();
        assert!(end.caught_up);
        let idle = take_fetched(&mut input, fetch(Vec::new(), 10));
        assert!(idle.is_none(), "caught up is announced once");
        assert_eq!(input.offset, Some(10));
    }

    #[test]
    fn caught_up_is_where_the_partition_ended_when_first_asked() {
        let mut input = Input::new(Topic::OrderCreated, 0, Some(0));
        // A backlog of 6 behind a stream that keeps growing: each answer ends further on.
        assert!(!take_fetched(&mut input, fetch((0..3).map(at).collect(), 6)).unwrap().caught_up);
        let fetched = take_fetched(&mut input, fetch((3..7).map(at).collect(), 9)).unwrap();
        assert!(fetched.caught_up, "read past 6, where it stood at first, though the log is at 9 now");
    }

    #[test]
    fn an_empty_partition_is_caught_up_at_once() {
        let mut input = Input::new(Topic::PaymentCompleted, 2, Some(0));
        let fetched = take_fetched(&mut input, fetch(Vec::new(), 0)).unwrap();
        assert!(fetched.caught_up && fetched.records.is_empty());
    }

    #[test]
    fn skipped_batches_advance_the_offset_and_unreadable_ones_are_clipped_to_it() {
        let mut input = Input::new(Topic::OrderCreated, 0, Some(3));
        // Only a transaction marker at offset 3: nothing to process, but the offset moves on.
        let marker = PartitionFetch { next_offset: Some(4), high_watermark: 9, ..PartitionFetch::default() };
        let fetched = take_fetched(&mut input, marker).unwrap();
        assert!(fetched.records.is_empty() && fetched.unreadable.is_empty());
        assert_eq!(fetched.next_offset, 4);
        // A batch covering 2..=6 that cannot be read: parked from the asked offset on.
        let bad = UnreadableBatch { first_offset: 2, last_offset: 6, reason: "zstd".into(), bytes: vec![1] };
        let fetch = PartitionFetch {
            records: vec![at(7)],
            unreadable: vec![bad],
            next_offset: Some(8),
            high_watermark: 9,
            last_stable_offset: Some(8),
        };
        let fetched = take_fetched(&mut input, fetch).unwrap();
        assert_eq!((fetched.unreadable[0].first_offset, fetched.unreadable[0].last_offset), (4, 6));
        assert_eq!(fetched.next_offset, 8);
        assert!(fetched.caught_up, "an open transaction's records are not waited for");
    }
}
