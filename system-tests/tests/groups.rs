//! Consumer-group lag with the tools Kafka users already run: each service commits its
//! positions under its group, so `kafka-consumer-groups.sh --describe` (Kafka's own
//! `ConsumerGroupCommand`) shows LAG 0 once it is idle, and the lag that builds while it is
//! stopped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use shared_events::*;
use support::{order_json, run_id, wait_until, Deployment, GroupRow, CONSUMER_GROUPS};

/// `kafka-consumer-groups.sh --describe --group <group>`'s rows.
fn describe(d: &Deployment, group: &str) -> Vec<GroupRow> {
    support::group_rows(&d.kafka_tool(CONSUMER_GROUPS, &["--describe", "--group", group]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_consumer_groups_shows_each_services_lag() {
    let mut d = Deployment::new(3, &[]).await;
    d.start_all().await;
    let run = run_id();
    let ids: Vec<String> = (0..12).map(|i| format!("{run}-{i}")).collect();
    for id in &ids {
        d.kcat_publish(Topic::OrderCreated, id, &order_json(id, "alice", 1, 100));
    }
    for id in &ids {
        d.wait_for(Topic::OrderCompleted, id).await;
    }

    // Idle: every input partition of every service committed, at the log's end.
    for service in support::SERVICES {
        let group = format!("{}{service}", d.prefix);
        let rows = wait_until(&format!("{group} at LAG 0 on all its inputs"), || async {
            let rows = describe(&d, &group);
            let inputs = rows.iter().filter(|r| r.topic.starts_with(&d.prefix)).count();
            let idle = rows.iter().all(|r| r.lag == Some(0) && r.current == Some(r.log_end));
            if inputs > 0 && inputs % 3 == 0 && idle { Ok(rows) } else { Err(format!("{rows:?}")) }
        }, || d.logs()).await;
        let created = rows.iter().filter(|r| r.topic == d.topic(Topic::OrderCreated)).map(|r| r.log_end).sum::<i64>();
        if ["order-service", "payment-service"].contains(&service) {
            assert_eq!(created, ids.len() as i64, "{service} read every OrderCreated: {rows:?}");
        }
    }

    // Payment stopped while orders keep coming: its lag on OrderCreated is what arrived.
    assert!(d.service("payment-service").term().await.success());
    let more: Vec<String> = (0..5).map(|i| format!("{run}-late-{i}")).collect();
    for id in &more {
        d.kcat_publish(Topic::OrderCreated, id, &order_json(id, "alice", 1, 100));
    }
    let group = format!("{}payment-service", d.prefix);
    wait_until("payment-service's lag to show the 5 orders it has not read", || async {
        let rows = describe(&d, &group);
        let lag: i64 = rows.iter().filter(|r| r.topic == d.topic(Topic::OrderCreated)).filter_map(|r| r.lag).sum();
        if lag == more.len() as i64 { Ok(()) } else { Err(format!("lag {lag}: {rows:?}")) }
    }, || d.logs()).await;

    // Back: it catches up and the lag is gone again.
    d.service("payment-service").start();
    d.wait_ready("payment-service").await;
    for id in &more {
        d.wait_for(Topic::OrderCompleted, id).await;
    }
    wait_until("payment-service at LAG 0 again", || async {
        let rows = describe(&d, &group);
        if !rows.is_empty() && rows.iter().all(|r| r.lag == Some(0)) { Ok(()) } else { Err(format!("{rows:?}")) }
    }, || d.logs()).await;
    d.stop_all().await;
}
