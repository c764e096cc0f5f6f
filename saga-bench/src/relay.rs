//! The ceiling: the same number of hops as a saga, consume → produce topic to topic, with no
//! business logic and no local store. What Kafka and the client allow on this machine.

use anyhow::{Context, Result};
use rskafka::client::partition::{Compression, OffsetAt, UnknownTopicHandling};
use saga_runtime::kafka::{chunks_by_size, FETCH_MAX_BYTES, PRODUCE_MAX_BYTES};
use shared_events::Event;

use crate::load::{self, Outgoing};
use crate::report::RunResult;
use crate::Args;

/// A completed saga passes four services: payment, inventory, shipping, order.
pub const HOPS: usize = 4;

pub async fn run(args: &Args) -> Result<RunResult> {
    let prefix = load::unique("ceiling");
    let topics: Vec<String> = (0..=HOPS).map(|h| format!("{prefix}Hop{h}")).collect();
    let setup = load::client(args).await?;
    let controller = setup.controller_client()?;
    for t in &topics {
        controller.create_topic(t, args.partitions, 1, 10_000).await.with_context(|| format!("create {t}"))?;
    }
    // Each relay is its own client, like a service, relaying partition to partition.
    let mut relays = tokio::task::JoinSet::new();
    for hop in 0..HOPS {
        let client = load::client(args).await?;
        for p in 0..args.partitions {
            let from = client.partition_client(&topics[hop], p, UnknownTopicHandling::Retry).await?;
            let to = client.partition_client(&topics[hop + 1], p, UnknownTopicHandling::Retry).await?;
            let wait = args.fetch_wait_ms;
            relays.spawn(async move {
                let mut next = from.get_offset(OffsetAt::Earliest).await.unwrap_or(0);
                loop {
                    // The same fetch and produce sizes as the services.
                    let Ok((records, _)) = from.fetch_records(next, 1..FETCH_MAX_BYTES, wait).await else { continue };
                    let from = next;
                    let batch: Vec<_> = records.into_iter().filter(|r| r.offset >= from).map(|r| {
                        next = next.max(r.offset + 1);
                        r.record
                    }).collect();
                    for chunk in chunks_by_size(batch, PRODUCE_MAX_BYTES) {
                        // A lost record would stall the run until its timeout: retry.
                        while to.produce(chunk.clone(), Compression::NoCompression).await.is_err() {
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
    }
    let run_id = prefix.trim_end_matches('.').to_owned();
    let batch = |id: &str, n: usize| -> Vec<Outgoing> {
        (0..n).map(|i| load::encode(Event::OrderCreated(load::order(id, i, args)))).collect()
    };
    let last = [topics[HOPS].clone()];
    if args.warmup > 0 {
        let warm_id = format!("{run_id}-w");
        load::round_trip(&setup, &topics[0], &last, args.partitions, batch(&warm_id, args.warmup), &warm_id, args.rate)
            .await
            .context("warm-up")?;
    }
    let run_id = format!("{run_id}-m");
    let records = batch(&run_id, args.orders);
    let payload_bytes = records.first().map_or(0, |r| r.value.len());
    let measured = load::round_trip(&setup, &topics[0], &last, args.partitions, records, &run_id, args.rate).await;
    relays.abort_all();
    for t in &topics {
        let _ = controller.delete_topic(t, 10_000).await;
    }
    let (sent, arrived) = measured?;
    Ok(RunResult::from_times(&sent, &arrived, payload_bytes, Vec::new()))
}
