//! Consumer-group offsets: the stored positions, committed where Kafka's tools read them.

use std::sync::Arc;
use std::time::Duration;

use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::broker::BrokerClient;
use rskafka::client::Client;
use shared_events::Topic;
use tracing::{debug, info, warn};

use crate::config::RuntimeConfig;

use super::{bounded, is_authorization, topic_name, KafkaEdgeError};

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
