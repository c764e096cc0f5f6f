//! The saga end to end: the README's four scenarios, a poison message and a duplicate, on a
//! real broker with the four real binaries; then the final wallets and stock from their stores.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use std::collections::BTreeMap;

use shared_events::partitioner::partition_for_key;
use shared_events::*;
use support::{wait_until, Deployment};

fn order_json(id: &str, customer: &str, sku: &str, qty: u32, price: u64, country: &str) -> String {
    format!(
        r#"{{"order_id":"{id}","customer_id":"{customer}","items":[{{"sku":"{sku}","quantity":{qty},"unit_price_cents":{price}}}],"ship_to":{{"country":"{country}"}}}}"#
    )
}

fn order(id: &str, customer: &str, sku: &str, qty: u32, price: u64, country: &str) -> Envelope {
    let event = OrderCreated {
        order_id: id.into(),
        customer_id: customer.into(),
        items: vec![LineItem { sku: sku.into(), quantity: qty, unit_price_cents: price }],
        ship_to: Address { country: country.into(), ..Address::default() },
    };
    Envelope::root(event.into(), support::workload::now_ms())
}

/// How many distinct events of each type the topics hold for an order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_scenarios_a_poison_message_and_a_duplicate() {
    let mut d = Deployment::new(3, &[]).await;
    d.start_all().await;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let happy = format!("{run}-happy");
    let broke = format!("{run}-broke");
    let gizmo = format!("{run}-gizmo");
    let antarctica = format!("{run}-aq");

    // As in the README: hand-typed with kcat (no headers) and with the Java partitioner.
    d.kcat_publish(Topic::OrderCreated, &happy, &order_json(&happy, "alice", "widget", 2, 1250, "US"));
    d.kcat_publish(Topic::OrderCreated, &broke, &order_json(&broke, "bob", "widget", 2, 1250, "US"));
    // As a tool would: with metadata headers.
    d.publish(&order(&gizmo, "alice", "gizmo", 1, 500, "US")).await;
    d.publish(&order(&antarctica, "alice", "widget", 3, 1250, "AQ")).await;
    // Poison: malformed JSON, and a non-positive quantity.
    d.kcat_publish(Topic::OrderCreated, &format!("{run}-bad-json"), r#"{"order_id": "oops", "items": ["#);
    d.kcat_publish(Topic::OrderCreated, &format!("{run}-zero"), &order_json(&format!("{run}-zero"), "alice", "widget", 0, 1, "US"));

    let terminal = |id: String, topic: Topic| {
        let d = &d;
        async move {
            wait_until(&format!("{topic} for {id}"), || async {
                let n = d.events_for(topic, &id).await.len();
                if n > 0 { Ok(()) } else { Err(format!("{:?}", d.census(&id).await)) }
            }, || d.logs()).await;
        }
    };
    terminal(happy.clone(), Topic::OrderCompleted).await;
    terminal(broke.clone(), Topic::OrderCancelled).await;
    terminal(gizmo.clone(), Topic::PaymentRefunded).await;
    terminal(antarctica.clone(), Topic::PaymentRefunded).await;
    terminal(antarctica.clone(), Topic::StockReleased).await;

    // The hand-typed order sits where a Java client would put it, and every event of the saga
    // keeps that partition.
    let expected_partition = partition_for_key(happy.as_bytes(), 3);
    for topic in [Topic::OrderCreated, Topic::PaymentCompleted, Topic::StockReserved, Topic::ShipmentScheduled, Topic::OrderCompleted] {
        for seen in d.events_for(topic, &happy).await {
            assert_eq!(seen.partition, expected_partition, "{topic} of {happy} left its partition");
        }
    }

    // A duplicate of the hand-typed order (same bytes, no headers), then a marker order on the
    // same partition: once the marker completes, payment has read past the duplicate.
    d.kcat_publish(Topic::OrderCreated, &happy, &order_json(&happy, "alice", "widget", 2, 1250, "US"));
    let marker = (0..)
        .map(|i| format!("{run}-marker-{i}"))
        .find(|id| partition_for_key(id.as_bytes(), 3) == expected_partition)
        .unwrap();
    d.kcat_publish(Topic::OrderCreated, &marker, &order_json(&marker, "alice", "widget", 1, 100, "US"));
    terminal(marker.clone(), Topic::OrderCompleted).await;

    // Poison records: parked on DeadLetter by both services that read OrderCreated.
    let letters = wait_until("4 dead letters", || async {
        let letters: Vec<shared_events::DeadLetter> = d.read(Topic::DeadLetter).await.into_iter().filter_map(Result::ok)
            .filter_map(|s| match s.envelope.event { Event::DeadLetter(l) => Some(l), _ => None })
            .filter(|l| l.key.as_deref().is_some_and(|k| k.starts_with(run)))
            .collect();
        if letters.len() >= 4 { Ok(letters) } else { Err(format!("{letters:?}")) }
    }, || d.logs()).await;
    assert_eq!(letters.len(), 4, "{letters:?}");
    for l in &letters {
        assert_eq!(l.source_topic, "OrderCreated");
        assert!(["order-service", "payment-service"].contains(&l.service.as_str()));
        assert!(l.payload.is_some(), "the original payload is kept");
    }
    let zero = letters.iter().find(|l| l.key.as_deref() == Some(&format!("{run}-zero"))).unwrap();
    assert_eq!(zero.error_code, "invalid_field");
    assert!(zero.error.contains("items[0].quantity"), "{}", zero.error);
    let bad_json = letters.iter().find(|l| l.key.as_deref() == Some(&format!("{run}-bad-json"))).unwrap();
    assert_eq!(bad_json.error_code, "invalid_json");

    // Graceful stop: every service exits 0.
    d.stop_all().await;

    // Exactly the events each scenario calls for, once each.
    use Topic::*;
    let expect = |pairs: &[(Topic, usize)]| pairs.iter().copied().collect::<BTreeMap<_, _>>();
    assert_eq!(d.census(&happy).await, expect(&[(OrderCreated, 2), (PaymentCompleted, 1), (StockReserved, 1), (ShipmentScheduled, 1), (OrderCompleted, 1)]));
    assert_eq!(d.census(&broke).await, expect(&[(OrderCreated, 1), (PaymentFailed, 1), (OrderCancelled, 1)]));
    assert_eq!(d.census(&gizmo).await, expect(&[(OrderCreated, 1), (PaymentCompleted, 1), (StockFailed, 1), (OrderCancelled, 1), (PaymentRefunded, 1)]));
    assert_eq!(d.census(&antarctica).await, expect(&[(OrderCreated, 1), (PaymentCompleted, 1), (StockReserved, 1), (ShippingFailed, 1), (OrderCancelled, 1), (PaymentRefunded, 1), (StockReleased, 1)]));

    // Refunds give back exactly what was charged.
    for id in [&gizmo, &antarctica] {
        let charged = d.events_for(PaymentCompleted, id).await;
        let refunded = d.events_for(PaymentRefunded, id).await;
        let (Event::PaymentCompleted(c), Event::PaymentRefunded(r)) = (&charged[0].envelope.event, &refunded[0].envelope.event) else { unreachable!() };
        assert_eq!(c.amount_cents, r.amount_cents);
    }

    // Money and stock add up: only the happy order and the marker shipped.
    let wallets: BTreeMap<String, u64> = d.table("payment-service", "wallets");
    assert_eq!(wallets["alice"], 100_000 - 2 * 1250 - 100);
    assert_eq!(wallets["bob"], 1_000);
    let stock: BTreeMap<String, u32> = d.table("inventory-service", "stock");
    assert_eq!(stock, [("widget".to_owned(), 100 - 2 - 1), ("gadget".to_owned(), 5), ("gizmo".to_owned(), 0)].into());

    // The logs tell the story, one line per step with the order id.
    let payment_log = d.services["payment-service"].log_text();
    assert!(payment_log.contains("COMPENSATION: payment refunded"), "{payment_log}");
    assert!(payment_log.contains("duplicate ignored"), "{payment_log}");
    let order_log = d.services["order-service"].log_text();
    assert!(order_log.contains("COMPENSATION COMPLETE"), "{order_log}");
}
