//! The Kafka edge: connecting, creating topics, fetching every input partition, and publishing
//! outbox entries. Positions live in our store; the consumer group only shows them to Kafka's
//! tools ([`groups`]).
//!
//! Like Kafka's own clients, a service makes one fetch request per broker for all the input
//! partitions that broker leads, and one produce request per broker for all the partitions a
//! batch goes to (rskafka's `PartitionClient` does one partition per request; the vendored
//! copy adds `BrokerClient`). Fetching and publishing use separate connections, so a
//! long-polling fetch never delays a publish.
//!
//! - this module: connecting, topic creation, the start-up ACL check, and the errors;
//! - [`fetch`]: the fetch tasks, one per leader broker;
//! - [`publish`]: the [`Publisher`];
//! - [`groups`]: consumer-group offsets, for Kafka's lag tools.

pub mod fetch;
pub mod groups;
pub mod publish;

use std::collections::HashMap;
use std::time::Duration;

use rskafka::client::acl::{AclOperation, AuthorizedOperations};
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::{Client, ClientBuilder};
use rskafka::BackoffConfig;
use shared_events::Topic;
use tracing::info;

use crate::config::RuntimeConfig;
use crate::security::Security;

pub use fetch::{fetch_inputs, raw_record, Fetched, Input, FETCH_RESPONSE_MAX_BYTES};
pub use groups::{commit_group_offsets, GROUP_COMMIT_INTERVAL};
pub use publish::{chunks_by_size, is_permanent, produce_rounds, ProduceRound, Publisher, RecordSize, Refused, TOPIC_GONE_AFTER};

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
    for &topic in &config.topics {
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
        .filter(|t| config.topics.iter().any(|s| t.name == topic_name(&config.topic_prefix, *s)))
        .map(|t| (t.name, t.partitions.len()))
        .collect();
    // Metadata is eventually consistent: a topic another service just created may not be
    // listed yet, or listed without partitions. That is worth a retry, not an error.
    let missing: Vec<String> = config
        .topics
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

/// The full names of `topics` in a deployment.
pub(crate) fn topic_names(prefix: &str, topics: &[Topic]) -> Vec<String> {
    topics.iter().map(|t| topic_name(prefix, *t)).collect()
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
}
