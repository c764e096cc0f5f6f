//! Patched in (not in rskafka 0.6.0): requests that cover many partitions led by one broker.
//!
//! A [`PartitionClient`](super::partition::PartitionClient) fetches and produces one partition
//! per request. A consumer of many partitions then makes one request (and receives one
//! response) per partition with new records, where Kafka's own clients make one per broker.
//! A [`BrokerClient`] sends one fetch, or one produce, for any set of partitions that broker
//! leads, over a connection of its own. It does not retry: errors, per request or per
//! partition, go back to the caller, which knows what a retry means for it.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::Mutex;

use crate::{
    client::{
        error::{Error, RequestContext, Result, ServerErrorResponse},
        metadata_cache::MetadataCacheGeneration,
        partition::{build_produce_partition_data, extract_partition, Compression, PartitionFetch},
    },
    connection::{BrokerCache, BrokerConnection, BrokerConnector, MetadataLookupMode},
    protocol::{
        messages::{
            COORDINATOR_KEY_TYPE_GROUP, FindCoordinatorRequest, OffsetCommitRequest,
            OffsetCommitRequestPartition, OffsetCommitRequestTopic,
            FetchRequest, FetchRequestPartition, FetchRequestTopic, IsolationLevel,
            NORMAL_CONSUMER, ProduceRequest, ProduceRequestTopicData, ReadVersionedType,
            RequestBody, WriteVersionedType,
        },
        primitives::*,
    },
    record::Record,
};

/// One partition to fetch, from `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// What one fetch brought back for one partition: what it holds from the requested offset on
/// (read committed, batch by batch), or the broker's error for that partition.
#[derive(Debug)]
pub struct PartitionRecords {
    pub topic: String,
    pub partition: i32,
    pub result: Result<PartitionFetch>,
}

/// What one produce did for one partition: the offset of its first record, or the error.
#[derive(Debug)]
pub struct PartitionProduced {
    pub topic: String,
    pub partition: i32,
    pub result: Result<i64>,
}

/// Fetch and produce requests to one broker, each covering many partitions.
pub struct BrokerClient {
    broker_id: i32,
    brokers: Arc<BrokerConnector>,
    connection: Mutex<Option<BrokerConnection>>,
}

impl std::fmt::Debug for BrokerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BrokerClient({})", self.broker_id)
    }
}

impl BrokerClient {
    pub(super) fn new(broker_id: i32, brokers: Arc<BrokerConnector>) -> Self {
        Self { broker_id, brokers, connection: Mutex::new(None) }
    }

    /// The broker this client talks to.
    pub fn broker_id(&self) -> i32 {
        self.broker_id
    }

    async fn connection(&self) -> Result<BrokerConnection> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = &*slot {
            return Ok(Arc::clone(connection));
        }
        let connection = self.brokers.connect(self.broker_id).await?.ok_or_else(|| {
            Error::InvalidResponse(format!("broker {} is not in the cluster metadata", self.broker_id))
        })?;
        *slot = Some(Arc::clone(&connection));
        Ok(connection)
    }

    /// Sends `request`; a failed request drops the connection, so the next one reconnects.
    async fn request<R>(&self, request: R) -> Result<R::ResponseBody>
    where
        R: RequestBody + Send + WriteVersionedType<Vec<u8>>,
        R::ResponseBody: ReadVersionedType<std::io::Cursor<Vec<u8>>>,
    {
        let connection = self.connection().await?;
        match connection.request(request).await {
            Ok(response) => Ok(response),
            Err(e) => {
                *self.connection.lock().await = None;
                Err(e.into())
            }
        }
    }

    /// Commits `offsets` (topic, partition, next offset to read) for `group_id`, as a consumer
    /// outside group membership does (generation -1, no member id); this broker must be the
    /// group's coordinator ([`find_group_coordinator`]). One result per partition.
    pub async fn commit_offsets(
        &self,
        group_id: &str,
        offsets: &[(String, i32, i64)],
    ) -> Result<Vec<(String, i32, Result<()>)>> {
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for (topic, partition, offset) in offsets {
            let partition = OffsetCommitRequestPartition {
                partition_index: Int32(*partition),
                committed_offset: Int64(*offset),
                committed_metadata: NullableString(None),
            };
            match topics.iter_mut().find(|t| t.name.0 == *topic) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(OffsetCommitRequestTopic { name: String_(topic.clone()), partitions: vec![partition] }),
            }
        }
        let request = OffsetCommitRequest {
            group_id: String_(group_id.to_owned()),
            generation_id: Int32(-1),
            member_id: String_(String::new()),
            topics,
        };
        let response = self.request(request).await?;
        let mut out = Vec::new();
        for topic in response.topics {
            for partition in topic.partitions {
                let result = match partition.error {
                    None => Ok(()),
                    Some(protocol_error) => Err(Error::ServerError {
                        protocol_error,
                        error_message: None,
                        request: RequestContext::Partition(topic.name.0.clone(), partition.partition_index.0),
                        response: None,
                        is_virtual: false,
                    }),
                };
                out.push((topic.name.0.clone(), partition.partition_index.0, result));
            }
        }
        Ok(out)
    }

    /// Fetches every partition in one request: the broker answers once `min_bytes` are there
    /// in all (or after `max_wait_ms`), with at most `partition_max_bytes` per partition and
    /// `max_bytes` in all (the first non-empty partition always gets one batch), filled in the
    /// order given, so rotate the order between calls to be fair.
    pub async fn fetch(
        &self,
        partitions: &[FetchPartition],
        min_bytes: i32,
        max_bytes: i32,
        partition_max_bytes: i32,
        max_wait_ms: i32,
    ) -> Result<Vec<PartitionRecords>> {
        let mut topics: Vec<FetchRequestTopic> = Vec::new();
        for p in partitions {
            let partition = FetchRequestPartition {
                partition: Int32(p.partition),
                fetch_offset: Int64(p.offset),
                partition_max_bytes: Int32(partition_max_bytes),
            };
            // Consecutive partitions of one topic share an entry; the order stays as given.
            match topics.last_mut() {
                Some(t) if t.topic.0 == p.topic => t.partitions.push(partition),
                _ => topics.push(FetchRequestTopic { topic: String_(p.topic.clone()), partitions: vec![partition] }),
            }
        }
        let request = FetchRequest {
            replica_id: NORMAL_CONSUMER,
            max_wait_ms: Int32(max_wait_ms),
            min_bytes: Int32(min_bytes),
            max_bytes: Some(Int32(max_bytes)),
            isolation_level: Some(IsolationLevel::ReadCommitted),
            topics,
        };
        let response = self.request(request).await?;
        throttle(response.throttle_time_ms).await;

        let offsets: HashMap<(&str, i32), i64> =
            partitions.iter().map(|p| ((p.topic.as_str(), p.partition), p.offset)).collect();
        let mut out = Vec::with_capacity(partitions.len());
        for topic in response.responses {
            for partition in topic.partitions {
                let index = partition.partition_index.0;
                let Some(&offset) = offsets.get(&(topic.topic.0.as_str(), index)) else {
                    return Err(Error::InvalidResponse(format!(
                        "fetch answered for {}/{index}, which was not asked for",
                        topic.topic.0
                    )));
                };
                let result = match partition.error_code {
                    Some(protocol_error) => Err(Error::ServerError {
                        protocol_error,
                        error_message: None,
                        request: RequestContext::Fetch {
                            topic_name: topic.topic.0.clone(),
                            partition_id: index,
                            offset,
                        },
                        response: Some(ServerErrorResponse::PartitionFetchState {
                            high_watermark: partition.high_watermark.0,
                            last_stable_offset: partition.last_stable_offset.map(|x| x.0),
                        }),
                        is_virtual: false,
                    }),
                    None => Ok(extract_partition(&partition, offset)),
                };
                out.push(PartitionRecords { topic: topic.topic.0.clone(), partition: index, result });
            }
        }
        Ok(out)
    }

    /// Produces to every partition in one request (acks from all in-sync replicas). Each
    /// partition's records are appended in the order given, as one batch; partitions succeed
    /// or fail independently. Empty record lists are skipped; a partition given twice is an
    /// error (Kafka answers once per partition), so split a partition's chunks over requests.
    pub async fn produce(
        &self,
        batches: Vec<(String, i32, Vec<Record>)>,
        compression: Compression,
    ) -> Result<Vec<PartitionProduced>> {
        let mut topic_data: Vec<ProduceRequestTopicData> = Vec::new();
        let mut asked = 0;
        let mut seen = std::collections::HashSet::new();
        for (topic, partition, records) in batches {
            if records.is_empty() {
                continue;
            }
            if !seen.insert((topic.clone(), partition)) {
                return Err(Error::InvalidResponse(format!(
                    "{topic}/{partition} given twice in one produce request"
                )));
            }
            asked += 1;
            let data = build_produce_partition_data(partition, records, compression);
            match topic_data.iter_mut().find(|t| t.name.0 == topic) {
                Some(t) => t.partition_data.push(data),
                None => topic_data.push(ProduceRequestTopicData { name: String_(topic), partition_data: vec![data] }),
            }
        }
        if asked == 0 {
            return Ok(Vec::new());
        }
        let request = ProduceRequest {
            transactional_id: NullableString(None),
            acks: Int16(-1),
            timeout_ms: Int32(30_000),
            topic_data,
        };
        let response = self.request(request).await?;
        throttle(response.throttle_time_ms).await;

        let mut out = Vec::with_capacity(asked);
        for topic in response.responses {
            for partition in topic.partition_responses {
                let result = match partition.error {
                    Some(protocol_error) => Err(Error::ServerError {
                        protocol_error,
                        error_message: None,
                        request: RequestContext::Partition(topic.name.0.clone(), partition.index.0),
                        response: None,
                        is_virtual: false,
                    }),
                    None => Ok(partition.base_offset.0),
                };
                out.push(PartitionProduced { topic: topic.name.0.clone(), partition: partition.index.0, result });
            }
        }
        if out.len() != asked {
            return Err(Error::InvalidResponse(format!(
                "produce to {asked} partitions answered for {}",
                out.len()
            )));
        }
        Ok(out)
    }
}

/// Waits as long as the broker asks a throttled client to.
async fn throttle(throttle_time_ms: Option<Int32>) {
    if let Some(ms) = throttle_time_ms.and_then(|t| u64::try_from(t.0).ok()).filter(|ms| *ms > 0) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// The leader of every partition of `topics`, fresh from a broker (not from a cache).
/// A partition without a leader, or a topic the broker reports an error for, is left out.
pub(super) async fn partition_leaders(
    brokers: &BrokerConnector,
    topics: Vec<String>,
) -> Result<HashMap<(String, i32), i32>> {
    let (metadata, _): (_, Option<MetadataCacheGeneration>) =
        brokers.request_metadata(&MetadataLookupMode::ArbitraryBroker, Some(topics)).await?;
    let mut leaders = HashMap::new();
    for topic in metadata.topics {
        if topic.error.is_some() {
            continue;
        }
        for partition in topic.partitions {
            if partition.error.is_none() && partition.leader_id.0 >= 0 {
                leaders.insert((topic.name.0.clone(), partition.partition_index.0), partition.leader_id.0);
            }
        }
    }
    Ok(leaders)
}

/// The broker coordinating `group_id`, asked of any broker (patched in).
pub(super) async fn find_group_coordinator(brokers: &BrokerConnector, group_id: &str) -> Result<i32> {
    let (broker, _) = brokers.get().await?;
    let request = FindCoordinatorRequest {
        key: String_(group_id.to_owned()),
        key_type: Int8(COORDINATOR_KEY_TYPE_GROUP),
    };
    let response = broker.request(request).await?;
    match response.error {
        None => Ok(response.node_id.0),
        Some(protocol_error) => Err(Error::ServerError {
            protocol_error,
            error_message: response.error_message.0,
            request: RequestContext::Topic(group_id.to_owned()),
            response: None,
            is_virtual: false,
        }),
    }
}
