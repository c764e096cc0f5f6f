//! The ceiling: the same number of hops as a saga, consume → produce topic to topic, with no
//! business logic and no local store. What Kafka and the client allow on this machine.

use anyhow::{Context, Result};
use std::collections::HashMap;

use rskafka::client::broker::FetchPartition;
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use rskafka::record::Record;
use saga_runtime::kafka::{produce_rounds, FETCH_MAX_BYTES, FETCH_RESPONSE_MAX_BYTES};
use shared_events::Event;

use crate::procs;
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
    // Each relay is its own client, like a service, relaying partition to partition with the
    // services' requests: one fetch for all the partitions a broker leads, one produce for
    // all those a batch goes to, and the same sizes.
    let mut relays = tokio::task::JoinSet::new();
    for hop in 0..HOPS {
        let client = load::client(args).await?;
        let leaders = load::leaders(&client, &topics, args.partitions).await?;
        let leader = |topic: &String, p: i32| {
            leaders.get(&(topic.clone(), p)).copied().with_context(|| format!("no leader for {topic}/{p}"))
        };
        let mut by_leader: HashMap<i32, Vec<i32>> = HashMap::new();
        for p in 0..args.partitions {
            by_leader.entry(leader(&topics[hop], p)?).or_default().push(p);
        }
        for (from_leader, partitions) in by_leader {
            let from = client.broker_client(from_leader);
            let mut to_leader: HashMap<i32, i32> = HashMap::new();
            let mut producers = HashMap::new();
            let mut next = Vec::new();
            for &p in &partitions {
                let leader = leader(&topics[hop + 1], p)?;
                to_leader.insert(p, leader);
                producers.entry(leader).or_insert_with(|| client.broker_client(leader));
                let pc = client.partition_client(&topics[hop], p, UnknownTopicHandling::Retry).await?;
                next.push(FetchPartition { topic: topics[hop].clone(), partition: p, offset: pc.get_offset(OffsetAt::Earliest).await? });
            }
            let to_topic = topics[hop + 1].clone();
            let wait = args.fetch_wait_ms;
            let compression = args.compression.codec();
            relays.spawn(async move {
                loop {
                    let Ok(answers) = load::fetch_new(&from, &mut next, FETCH_RESPONSE_MAX_BYTES, FETCH_MAX_BYTES, wait).await else {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    };
                    let mut relayed = Vec::new();
                    for answer in answers {
                        let Ok(fetched) = answer.result else { continue };
                        let records = fetched.records;
                        if let Some(&leader) = to_leader.get(&answer.partition) {
                            let batch: Vec<Record> = records.into_iter().map(|r| r.record).collect();
                            relayed.push((leader, to_topic.clone(), answer.partition, batch));
                        }
                    }
                    // In rounds, as the services' publisher sends them.
                    for (leader, batch) in produce_rounds(relayed).into_iter().flatten() {
                        let Some(producer) = producers.get(&leader) else { continue };
                        // A lost record would stall the run until its timeout: retry.
                        while !matches!(producer.produce(batch.clone(), compression).await, Ok(ps) if ps.iter().all(|p| p.result.is_ok())) {
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
    let broker = procs::CpuMeter::start(args.broker_pid);
    let measured = load::round_trip(&setup, &topics[0], &last, args.partitions, records, &run_id, args.rate).await;
    let broker_cpu_percent = broker.and_then(|m| m.percent());
    // Stopped before their topics go.
    relays.shutdown().await;
    load::delete_topics(args, &setup, topics).await;
    let (sent, arrived) = measured?;
    Ok(RunResult { broker_cpu_percent, ..RunResult::from_times(&sent, &arrived, payload_bytes, Vec::new()) })
}
