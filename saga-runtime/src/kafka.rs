//! The Kafka edge: connecting, creating topics, fetching every input partition, and publishing
//! outbox entries. rskafka has no consumer groups; positions live in our store.
//!
//! Like Kafka's own clients, a service makes one fetch request per broker for all the input
//! partitions that broker leads, and one produce request per broker for all the partitions a
//! batch goes to (rskafka's `PartitionClient` does one partition per request; the vendored
//! copy adds `BrokerClient`). Fetching and publishing use separate connections, so a
//! long-polling fetch never delays a publish.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rskafka::chrono::{TimeZone, Utc};
use rskafka::client::acl::{AclOperation, AuthorizedOperations};
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, OffsetAt, PartitionFetch, UnknownTopicHandling, UnreadableBatch};
use rskafka::client::broker::{BrokerClient, FetchPartition, PartitionProduced};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::{Record, RecordAndOffset};
use rskafka::BackoffConfig;
use shared_events::Topic;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::{Backoff, RuntimeConfig};
use crate::metrics::Metrics;
use crate::security::Security;
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
    /// Batches the client could not read (a codec this build lacks, a corrupt batch), each to
    /// be parked on DeadLetter as one range of offsets.
    pub unreadable: Vec<UnreadableBatch>,
    /// Where reading this partition goes on: past the records, and past what the fetch skipped
    /// (transaction markers, aborted transactions, unreadable batches).
    pub next_offset: i64,
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
    /// The brokers answer but refuse this client's security settings: no retry can help.
    #[error("cannot connect to Kafka at {servers} with {security}: {cause}")]
    Refused { servers: String, security: String, cause: String },
    /// The brokers accept this client but its ACLs do not allow what it must do.
    #[error("Kafka does not let this client, {security}, {missing}: is it running with another service's credentials, or are the ACLs not provisioned (`saga acl`)?")]
    NotAuthorized { security: String, missing: String },
}

impl KafkaEdgeError {
    /// Whether retrying cannot help: the brokers refuse the credentials, the SASL mechanism or
    /// a certificate (an unreachable broker is waited for instead).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            KafkaEdgeError::Refused { .. } | KafkaEdgeError::NotAuthorized { .. } | KafkaEdgeError::PartitionMismatch(_)
        )
    }
}

/// Whether the broker refused a request because this client's principal lacks an ACL.
pub fn is_authorization(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::ServerError {
            protocol_error: ProtocolError::TopicAuthorizationFailed
                | ProtocolError::ClusterAuthorizationFailed
                | ProtocolError::GroupAuthorizationFailed
                | ProtocolError::TransactionalIdAuthorizationFailed,
            ..
        }
    )
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


/// rskafka's retries inside one call, waiting at most `max_backoff` between tries.
pub fn backoff(max_backoff: Duration) -> BackoffConfig {
    // rskafka retries forever by default, with waits of up to 500 s; we want errors back soon
    // enough to log them, to notice a shutdown, and to stop on refused credentials.
    BackoffConfig {
        init_backoff: Duration::from_millis(100),
        max_backoff,
        base: 2.0,
        deadline: Some(Duration::from_secs(3)),
    }
}

/// Builds a client; fails if no bootstrap server answers, or with [`KafkaEdgeError::Refused`]
/// if they refuse the security settings.
pub async fn connect(config: &RuntimeConfig) -> Result<Client, KafkaEdgeError> {
    connect_with(&config.bootstrap_servers, &config.security, config.service, backoff(config.max_backoff)).await
}

/// Builds a client for any binary (the services, `saga`, `saga-bench`).
pub async fn connect_with(
    servers: &[String],
    security: &Security,
    client_id: &str,
    backoff: BackoffConfig,
) -> Result<Client, KafkaEdgeError> {
    let builder = ClientBuilder::new(servers.to_vec()).client_id(client_id).backoff_config(backoff);
    let build = security.apply(builder).build();
    let servers = servers.join(",");
    bounded("connect", Duration::ZERO, async {
        build.await.map_err(|source| match source.misconfiguration() {
            Some(cause) => KafkaEdgeError::Refused { servers: servers.clone(), security: security.describe(), cause },
            None => KafkaEdgeError::Connect { servers: servers.clone(), source },
        })
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
            // It cannot see the topic (no DESCRIBE) or may not create it.
            Err(e) if is_authorization(&e) => {
                let missing = format!("create or describe topic {name}");
                return Err(KafkaEdgeError::NotAuthorized { security: config.security.describe(), missing });
            }
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
        // The list leaves out what this principal may not describe: that is not lag.
        let allowed = bounded("check ACLs", Duration::ZERO, client.topic_authorized_operations(missing.clone())).await?;
        if let Some(hidden) = missing.iter().find(|n| matches!(allowed.get(*n), Some(Err(ProtocolError::TopicAuthorizationFailed)))) {
            let missing = format!("describe topic {hidden}");
            return Err(KafkaEdgeError::NotAuthorized { security: config.security.describe(), missing });
        }
        return Err(KafkaEdgeError::TopicsNotReady(missing.join(", ")));
    }
    let first = counts.first().map_or(config.partitions as usize, |c| c.1);
    if counts.iter().any(|c| c.1 != first) {
        let detail = counts.iter().map(|(n, c)| format!("{n}={c}")).collect::<Vec<_>>().join(", ");
        return Err(KafkaEdgeError::PartitionMismatch(detail));
    }
    Ok(first as i32)
}

/// Checks that the brokers let this client read what the service consumes and write what it
/// emits (and `DeadLetter`), so that running with another service's credentials, or before
/// its ACLs are provisioned, stops the service at start-up instead of at its first produce.
/// A broker without an authorizer allows everything.
pub async fn check_access(
    client: &Client,
    config: &RuntimeConfig,
    consumes: &[Topic],
    emits: &[Topic],
) -> Result<(), KafkaEdgeError> {
    let mut names: Vec<String> =
        consumes.iter().chain(&crate::topics_written(emits)).map(|t| topic_name(&config.topic_prefix, *t)).collect();
    names.sort();
    names.dedup();
    let allowed = bounded("check ACLs", Duration::ZERO, client.topic_authorized_operations(names)).await?;
    match missing_access(&config.topic_prefix, consumes, emits, &allowed) {
        Access::Granted => Ok(()),
        Access::NotListed(topics) => Err(KafkaEdgeError::TopicsNotReady(topics.join(", "))),
        Access::Missing(missing) => Err(KafkaEdgeError::NotAuthorized { security: config.security.describe(), missing }),
    }
}

/// What [`missing_access`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    Granted,
    /// What it may not do, e.g. `read PaymentCompleted or write StockReserved, DeadLetter`.
    Missing(String),
    /// Topics the broker did not answer for (just created, not in its metadata yet).
    NotListed(Vec<String>),
}

/// Whether the authorized operations a broker reported (see
/// `Client::topic_authorized_operations`) let a service read `consumes` and write `emits` and
/// `DeadLetter`.
pub fn missing_access(
    prefix: &str,
    consumes: &[Topic],
    emits: &[Topic],
    allowed: &HashMap<String, Result<AuthorizedOperations, ProtocolError>>,
) -> Access {
    let writes = crate::topics_written(emits);
    let mut not_listed = Vec::new();
    let mut denied = |topics: &[Topic], operation: AclOperation| -> Vec<&'static str> {
        let mut out = Vec::new();
        for topic in topics {
            let name = topic_name(prefix, *topic);
            match allowed.get(&name) {
                Some(Ok(ops)) if ops.allows(operation) => {}
                Some(Ok(_)) | Some(Err(ProtocolError::TopicAuthorizationFailed)) => out.push(topic.as_str()),
                Some(Err(_)) | None => not_listed.push(name),
            }
        }
        out
    };
    let reads = denied(consumes, AclOperation::Read);
    let writes = denied(&writes, AclOperation::Write);
    if !not_listed.is_empty() {
        not_listed.sort();
        not_listed.dedup();
        return Access::NotListed(not_listed);
    }
    let missing: Vec<String> = [("read", reads), ("write", writes)]
        .into_iter()
        .filter(|(_, topics)| !topics.is_empty())
        .map(|(what, topics)| format!("{what} {}", topics.join(", ")))
        .collect();
    if missing.is_empty() {
        Access::Granted
    } else {
        Access::Missing(missing.join(" or "))
    }
}

/// How often, at most, a service commits its positions under its consumer group.
pub const GROUP_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// Commits the positions `positions` shows under the service's consumer group
/// (`--group-id`), at most once per [`GROUP_COMMIT_INTERVAL`], as a consumer outside group
/// membership does (Kafka's tools then show the group's lag). The store stays the source of
/// truth: a failed commit is retried, and a refused one (no ACL on the group) is logged once;
/// neither stops the service. Returns after one last commit once the sender is dropped.
pub async fn commit_group_offsets(
    client: Arc<Client>,
    config: RuntimeConfig,
    mut positions: tokio::sync::watch::Receiver<std::collections::BTreeMap<(Topic, i32), i64>>,
) {
    let group = config.group_id.as_str();
    let mut coordinator: Option<BrokerClient> = None;
    let mut committed = std::collections::BTreeMap::new();
    let (mut retry, mut last, mut refused_logged, mut failing) = (false, false, false, false);
    let mut tick = tokio::time::interval(GROUP_COMMIT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if !retry && positions.changed().await.is_err() {
            last = true;
        }
        if !last {
            tick.tick().await;
        }
        let latest = positions.borrow_and_update().clone();
        if latest != committed {
            match commit_group_once(&client, &config, &mut coordinator, &latest).await {
                Ok(()) => {
                    if failing {
                        info!(group, "committing group offsets again");
                    }
                    committed = latest;
                    (retry, failing) = (false, false);
                }
                Err(error) => {
                    coordinator = None;
                    retry = true;
                    let refused = matches!(&error, KafkaEdgeError::Kafka(e) if is_authorization(e));
                    if refused && !refused_logged {
                        warn!(group, %error, "the brokers refuse this service's group offsets (an ACL on the group?); Kafka's tools will not show its lag. It runs on");
                        refused_logged = true;
                    } else if !refused && !failing && !is_coordinator_settling(&error) {
                        warn!(group, %error, "cannot commit group offsets; retrying");
                        failing = true;
                    } else {
                        debug!(group, %error, "group offsets not committed yet");
                    }
                }
            }
        } else {
            retry = false;
        }
        if last {
            return;
        }
    }
}

/// Whether a group commit failed only because the coordinator is moving or starting (the
/// first commit of a cluster creates `__consumer_offsets`).
fn is_coordinator_settling(error: &KafkaEdgeError) -> bool {
    matches!(
        error,
        KafkaEdgeError::Kafka(KafkaError::ServerError {
            protocol_error: ProtocolError::CoordinatorNotAvailable
                | ProtocolError::NotCoordinator
                | ProtocolError::CoordinatorLoadInProgress,
            ..
        })
    )
}

async fn commit_group_once(
    client: &Client,
    config: &RuntimeConfig,
    coordinator: &mut Option<BrokerClient>,
    positions: &std::collections::BTreeMap<(Topic, i32), i64>,
) -> Result<(), KafkaEdgeError> {
    let group = config.group_id.as_str();
    if coordinator.is_none() {
        let id = bounded("find the group coordinator", Duration::ZERO, client.find_group_coordinator(group)).await?;
        *coordinator = Some(client.broker_client(id));
    }
    let Some(broker) = coordinator.as_ref() else {
        return Ok(());
    };
    let offsets: Vec<(String, i32, i64)> =
        positions.iter().map(|((topic, partition), offset)| (topic_name(&config.topic_prefix, *topic), *partition, *offset)).collect();
    let results = bounded("commit group offsets", Duration::ZERO, broker.commit_offsets(group, &offsets)).await?;
    match results.into_iter().find_map(|(_, _, r)| r.err()) {
        Some(error) => Err(KafkaEdgeError::Kafka(error)),
        None => Ok(()),
    }
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
            let names = all_topic_names(&config.topic_prefix);
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
            let fetch = broker.fetch(&request, 1, FETCH_RESPONSE_MAX_BYTES, FETCH_MAX_BYTES, config.fetch_wait_ms);
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
        records,
        unreadable,
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

/// Publishes outbox entries: one produce request per leader broker for all the partitions a
/// batch touches, on a connection of its own (a long-polling fetch never delays a publish).
pub struct Publisher {
    client: Arc<Client>,
    /// How this client authenticates, for the error when the ACLs refuse a write.
    security: String,
    prefix: String,
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
        let names = all_topic_names(&self.prefix);
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

/// Every saga topic's full name in a deployment.
fn all_topic_names(prefix: &str) -> Vec<String> {
    Topic::ALL.iter().map(|t| topic_name(prefix, *t)).collect()
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

    /// The broker's bit field for these operations.
    fn ops(operations: &[AclOperation]) -> Result<AuthorizedOperations, ProtocolError> {
        Ok(AuthorizedOperations(operations.iter().fold(0, |bits, o| bits | 1 << o.code())))
    }

    #[test]
    fn access_names_every_read_and_write_the_acls_lack() {
        use AclOperation::{Describe, Read, Write};
        let consumes = [Topic::PaymentCompleted, Topic::OrderCancelled];
        let emits = [Topic::StockReserved, Topic::StockFailed];
        let mut allowed: HashMap<String, _> = [
            ("p.PaymentCompleted", ops(&[Read, Describe])),
            ("p.OrderCancelled", ops(&[Read, Describe])),
            ("p.StockReserved", ops(&[Write, Describe])),
            ("p.StockFailed", ops(&[Write, Describe])),
            ("p.DeadLetter", ops(&[Write, Describe])),
        ]
        .into_iter()
        .map(|(n, o)| (n.to_owned(), o))
        .collect();
        assert_eq!(missing_access("p.", &consumes, &emits, &allowed), Access::Granted);

        // Another service's ACLs: it may read and write, but not these.
        allowed.insert("p.PaymentCompleted".into(), ops(&[Write, Describe]));
        allowed.insert("p.StockFailed".into(), ops(&[Read, Describe]));
        allowed.insert("p.DeadLetter".into(), Err(ProtocolError::TopicAuthorizationFailed));
        assert_eq!(
            missing_access("p.", &consumes, &emits, &allowed),
            Access::Missing("read PaymentCompleted or write StockFailed, DeadLetter".into())
        );

        // A topic the broker did not answer for is waited for, not refused.
        allowed.remove("p.OrderCancelled");
        allowed.insert("p.StockReserved".into(), Err(ProtocolError::UnknownTopicOrPartition));
        assert_eq!(
            missing_access("p.", &consumes, &emits, &allowed),
            Access::NotListed(vec!["p.OrderCancelled".into(), "p.StockReserved".into()])
        );
    }

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
