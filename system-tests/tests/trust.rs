//! What a customer-writable record may claim, end to end: an order id reused with another
//! payload is parked as a conflict, and an `event_id` header chosen to shadow someone else's
//! order shadows nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use std::collections::BTreeMap;

use shared_events::*;
use support::{order_json, run_id, wait_until, Deployment};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_id_reused_with_another_payload_is_parked_as_a_conflict() {
    let mut d = Deployment::new(3, &[]).await;
    d.start_all().await;
    let id = format!("{}-reused", run_id());
    d.kcat_publish(Topic::OrderCreated, &id, &order_json(&id, "alice", 1, 100));
    d.wait_for(Topic::OrderCompleted, &id).await;
    // The same order typed again (other spacing): a duplicate. Another payload: a conflict.
    d.kcat_publish(Topic::OrderCreated, &id, &order_json(&id, "alice", 1, 100).replace(',', ", "));
    d.kcat_publish(Topic::OrderCreated, &id, &order_json(&id, "bob", 1, 100));
    let letter = wait_until("the conflict on DeadLetter", || async {
        match d.dead_letters().await.into_iter().find(|l| l.error_code == "order_id_conflict") {
            Some(l) => Ok(l),
            None => Err("not yet".to_owned()),
        }
    }, || d.logs()).await;
    assert_eq!((letter.service.as_str(), letter.source_topic.as_str()), ("order-service", "OrderCreated"));
    assert_eq!(letter.order_id.as_ref().map(|o| o.as_str()), Some(id.as_str()));
    assert!(letter.payload.as_deref().is_some_and(|p| p.contains("bob")), "the conflicting record is kept");
    // A later order on the same topic completes: both readers are past the conflict.
    let after = format!("{id}-after");
    d.kcat_publish(Topic::OrderCreated, &after, &order_json(&after, "alice", 1, 100));
    d.wait_for(Topic::OrderCompleted, &after).await;
    d.stop_all().await;
    assert_eq!(d.dead_letters().await.len(), 1, "the duplicate is no conflict");
    let wallets: BTreeMap<String, u64> = d.table("payment-service", "wallets");
    assert_eq!((wallets["alice"], wallets["bob"]), (100_000 - 200, 1_000), "nobody is charged twice, bob not at all");
    assert_eq!(d.events_for(Topic::PaymentCompleted, &id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chosen_event_id_cannot_make_another_order_a_duplicate() {
    let mut d = Deployment::new(3, &[]).await;
    d.start_all().await;
    let run = run_id();
    let (junk, victim) = (format!("{run}-junk"), format!("{run}-victim"));
    // The victim's order id is known in advance, so is its event id: claim it first.
    let victim_json = order_json(&victim, "alice", 1, 100);
    let victim_id = decode_record(RawRecord {
        topic: Topic::OrderCreated,
        key: Some(victim.as_bytes()),
        value: Some(victim_json.as_bytes()),
        headers: &BTreeMap::new(),
        timestamp_ms: 0,
    })
    .unwrap()
    .meta
    .event_id;
    let headers = BTreeMap::from([(envelope::headers::EVENT_ID.to_owned(), victim_id.to_string().into_bytes())]);
    d.produce(Topic::OrderCreated, 0, Some(junk.clone().into_bytes()), order_json(&junk, "alice", 1, 100).into_bytes(), headers).await;
    d.wait_for(Topic::OrderCompleted, &junk).await;
    d.kcat_publish(Topic::OrderCreated, &victim, &victim_json);
    d.wait_for(Topic::OrderCompleted, &victim).await;
    d.stop_all().await;
    for svc in ["order-service", "payment-service"] {
        let log = d.services[svc].log_text();
        assert!(!log.contains("duplicate ignored"), "{svc} took an order for a duplicate:\n{log}");
    }
}
