//! Seeing the saga without a coordinator: the `saga` CLI (trace, watch, stuck, audit, place,
//! cancel) on a real broker, the saga deadline, and customer cancellation before and after
//! the pivot (shipping).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use std::process::Command;

use shared_events::*;
use support::{bin_dir, wait_until, Deployment};

fn placed_id(out: &str) -> String {
    out.trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_watch_place_and_an_audit_that_finds_a_planted_violation() {
    let mut d = Deployment::new(3, &[]).await;
    d.start_all().await;

    // `watch` follows live, in the background, into a file; one for bob only.
    let watch_all = d.root.path().join("watch-all.txt");
    let watch_bob = d.root.path().join("watch-bob.txt");
    let mut watchers = Vec::new();
    for (file, filter) in [(&watch_all, vec![]), (&watch_bob, vec!["--customer", "bob"])] {
        let status = file.with_extension("err");
        let child = Command::new(bin_dir().join("saga"))
            .args(["--bootstrap-servers", &d.bootstrap, "--topic-prefix", &d.prefix, "--color", "never", "watch"])
            .args(filter)
            .stdout(std::fs::File::create(file).unwrap())
            .stderr(std::fs::File::create(&status).unwrap())
            .spawn()
            .unwrap();
        watchers.push(child);
        wait_until("watch to be live", || async {
            let text = std::fs::read_to_string(&status).unwrap_or_default();
            if text.contains("live") { Ok(()) } else { Err(text) }
        }, || d.logs()).await;
    }

    let (code, out, err) = d.saga(&["place", "--customer", "alice", "--item", "widget:2", "--price", "1250", "--country", "US"]);
    assert_eq!(code, 0, "{err}");
    let happy = placed_id(&out);
    assert!(err.contains(&format!("saga trace {happy}")), "{err}");
    let (_, out, _) = d.saga(&["place", "--customer", "alice", "--item", "widget:3:1250", "--country", "AQ"]);
    let antarctica = placed_id(&out);
    let (_, out, _) = d.saga(&["place", "--customer", "bob", "--item", "widget:2", "--price", "1250"]);
    let broke = placed_id(&out);

    // The state says completed from ShipmentScheduled on (it replays order-service's rules);
    // OrderCompleted itself is published a moment later, so wait for the event.
    let trace = d.wait_trace(&happy, "OrderCompleted").await;
    assert!(trace.contains("state: completed"), "{trace}");
    for step in ["OrderCreated", "PaymentCompleted", "StockReserved", "ShipmentScheduled", "OrderCompleted", "charged 2500 cents to alice", "+"] {
        assert!(trace.contains(step), "trace lacks {step}:\n{trace}");
    }
    let trace = d.wait_trace(&antarctica, "compensated: refunded, stock released").await;
    assert!(trace.contains("↩ PaymentRefunded") && trace.contains("(compensation)"), "{trace}");
    assert!(trace.contains("destination_not_served AQ"), "{trace}");
    d.wait_trace(&broke, "cancelled (payment_failed), nothing to undo").await;

    // The live view saw every step, compensation marked; bob's view only bob.
    wait_until("watch to show the compensation", || async {
        let text = std::fs::read_to_string(&watch_all).unwrap();
        if text.contains("↩ StockReleased") && text.contains(&happy) { Ok(()) } else { Err(text) }
    }, || d.logs()).await;
    wait_until("bob's watch to show his cancellation", || async {
        let text = std::fs::read_to_string(&watch_bob).unwrap();
        if text.contains("OrderCancelled") { Ok(text) } else { Err(text) }
    }, || d.logs()).await;
    let bob_only = std::fs::read_to_string(&watch_bob).unwrap();
    assert!(!bob_only.contains(&happy) && bob_only.contains(&broke), "{bob_only}");
    for mut w in watchers {
        let _ = w.kill();
        let _ = w.wait();
    }

    // A clean log audits clean.
    let (code, out, _) = d.saga(&["audit"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 violation"), "{out}");

    // Plant a violation: a second refund, with an id of its own, for the cancelled order.
    let refunds: Vec<_> = d.events_for(Topic::PaymentRefunded, &antarctica).await;
    let mut twice = refunds[0].envelope.clone();
    twice.meta.event_id = EventId(uuid::Uuid::new_v4());
    d.publish(&twice).await;
    wait_until("the audit to find the double refund", || async {
        let (code, out, _) = d.saga(&["audit"]);
        if code == 1 && out.contains("VIOLATION") && out.contains(&antarctica) && out.contains("refunded 2 times") {
            Ok(())
        } else {
            Err(format!("exit {code}: {out}"))
        }
    }, || d.logs()).await;
    d.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_cancels_a_stuck_saga_and_a_late_shipment_is_called_off() {
    let mut d = Deployment::new(3, &[]).await;
    d.service("order-service").args.extend(["--saga-deadline".to_owned(), "6s".to_owned()]);
    d.start_all().await;
    // Shipping is down: the saga stops at Reserved.
    assert!(d.service("shipping-service").term().await.success());
    let (_, out, _) = d.saga(&["place", "--customer", "alice", "--item", "gadget:2", "--price", "100", "--country", "JP"]);
    let id = placed_id(&out);
    wait_until("`saga stuck` to list the order", || async {
        let (_, out, _) = d.saga(&["stuck", "--older-than", "1s"]);
        if out.contains(&id) && out.contains("waiting on shipping") { Ok(()) } else { Err(out) }
    }, || d.logs()).await;
    // The deadline cancels it and the normal compensations follow.
    let trace = d.wait_trace(&id, "compensated: refunded, stock released").await;
    assert!(trace.contains("timeout: no terminal state within 6s"), "{trace}");
    // Shipping comes back to a StockReserved and an OrderCancelled: whichever it reads first,
    // the order does not ship, or its shipment is called off. It never completes.
    d.service("shipping-service").start();
    d.wait_ready("shipping-service").await;
    wait_until("shipping to settle the cancelled order", || async {
        let scheduled = d.events_for(Topic::ShipmentScheduled, &id).await.len();
        let called_off = d.events_for(Topic::ShipmentCancelled, &id).await.len();
        let log = d.services["shipping-service"].log_text();
        let tombstone = log.contains(&id) && log.contains("not shipping");
        if scheduled == called_off && (scheduled == 1 || tombstone) { Ok(()) } else { Err(format!("scheduled {scheduled}, called off {called_off}")) }
    }, || d.logs()).await;
    assert!(d.events_for(Topic::OrderCompleted, &id).await.is_empty());
    let (_, out, _) = d.saga(&["trace", &id]);
    assert!(out.contains("state: cancelled (timeout)"), "{out}");
    let (code, out, _) = d.saga(&["audit"]);
    assert_eq!(code, 0, "{out}");
    d.stop_all().await;
    let stock: std::collections::BTreeMap<String, u32> = d.table("inventory-service", "stock");
    assert_eq!(stock["gadget"], 5);
    let wallets: std::collections::BTreeMap<String, u64> = d.table("payment-service", "wallets");
    assert_eq!(wallets["alice"], 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_cancel_until_the_order_ships_then_are_refused() {
    let mut d = Deployment::new(3, &[]).await;
    d.start_all().await;

    // Before shipping (shipping is down, the order waits at Reserved): cancelled with kcat.
    assert!(d.service("shipping-service").term().await.success());
    let (_, out, _) = d.saga(&["place", "--customer", "alice", "--item", "widget:4", "--price", "10"]);
    let early = placed_id(&out);
    d.wait_trace(&early, "StockReserved").await;
    d.kcat_publish(Topic::OrderCancellationRequested, &early, &format!(r#"{{"order_id":"{early}","reason":"changed my mind"}}"#));
    let trace = d.wait_trace(&early, "compensated: refunded, stock released").await;
    assert!(trace.contains("customer_request: changed my mind"), "{trace}");
    d.service("shipping-service").start();

    // After shipping (the pivot): refused, with an event and a log line; nothing undone.
    let (_, out, _) = d.saga(&["place", "--customer", "alice", "--item", "widget:1", "--price", "10"]);
    let late = placed_id(&out);
    // Once order-service itself says so (OrderCompleted), not when shipping has (the state
    // says completed from ShipmentScheduled on): a cancellation read before that would win.
    d.wait_trace(&late, "OrderCompleted").await;
    let (code, _, err) = d.saga(&["cancel", &late]);
    assert_eq!(code, 0, "{err}");
    let trace = d.wait_trace(&late, "OrderCancellationRefused").await;
    assert!(trace.contains("already_shipped") && trace.contains("state: completed"), "{trace}");
    assert!(d.events_for(Topic::PaymentRefunded, &late).await.is_empty());
    assert!(d.services["order-service"].log_text().contains("cancellation refused"));

    d.stop_all().await;
    let wallets: std::collections::BTreeMap<String, u64> = d.table("payment-service", "wallets");
    assert_eq!(wallets["alice"], 100_000 - 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_that_succeeded_during_downtime_is_not_cancelled_by_its_deadline() {
    let mut d = Deployment::new(3, &[]).await;
    d.service("order-service").args.extend(["--saga-deadline".to_owned(), "3s".to_owned()]);
    d.start_all().await;
    // order-service records the order (payment is held back meanwhile), then goes down while
    // the order completes everywhere else …
    assert!(d.service("payment-service").term().await.success());
    let (_, out, _) = d.saga(&["place", "--customer", "alice", "--item", "widget:1", "--price", "10"]);
    let id = placed_id(&out);
    let placed = std::time::Instant::now();
    let order_log = |d: &Deployment| d.services["order-service"].log_text();
    wait_until("order-service to record the order", || async {
        if order_log(&d).lines().any(|l| l.contains("order placed") && l.contains(&id)) { Ok(()) } else { Err(String::new()) }
    }, || d.logs()).await;
    assert!(d.service("order-service").term().await.success());
    d.service("payment-service").start();
    wait_until("the shipment to be booked", || async {
        let n = d.events_for(Topic::ShipmentScheduled, &id).await.len();
        if n == 1 { Ok(()) } else { Err(format!("{n} shipments")) }
    }, || d.logs()).await;
    // … for longer than the deadline.
    wait_until("the deadline to pass", || async {
        if placed.elapsed() > std::time::Duration::from_secs(4) { Ok(()) } else { Err(format!("{:?}", placed.elapsed())) }
    }, || d.logs()).await;
    d.service("order-service").start();
    // It completes the order itself: had its deadline been judged before it read the
    // shipment, it would have cancelled the order, and an OrderCompleted would never come.
    d.wait_for(Topic::OrderCompleted, &id).await;
    let trace = d.wait_trace(&id, "state: completed").await;
    assert!(!trace.contains("OrderCancelled"), "{trace}");
    assert!(d.events_for(Topic::OrderCancelled, &id).await.is_empty());
    d.stop_all().await;
}
