//! The saga under faults, on a real broker with the real binaries: kill -9 storms (including
//! crashes between a local commit and the publish of its outbox), a broker restart,
//! duplicates, cancellations that overtake the events they cancel, and graceful stops.
//! After each, every order must reach exactly the events its outcome calls for, once each,
//! and money and stock must add up in the services' stores.
//!
//! Soak mode: `SAGA_SOAK_ORDERS=5000 SAGA_SOAK_KILLS=300 scripts/test.sh -p system-tests --test faults -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shared_events::partitioner::partition_for_key;
use shared_events::*;
use support::workload;
use support::{wait_until, Chaos, DedicatedBroker, Deployment, SERVICES, TEST_TIMEOUT};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Debug, Default)]
struct Tally {
    kills: usize,
    terms: usize,
    injected_crashes: usize,
}

/// Whether a service ended by the crash `--fault-crash-after-commit` injects: SIGABRT, right
/// after logging that it would.
fn injected_abort(status: std::process::ExitStatus, log: &std::path::Path) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(6)
        && support::tail(log, 3).lines().last().is_some_and(|l| l.contains("fault injection: aborting"))
}

/// Restarts any service that died on its own; only injected aborts are expected.
fn supervise(d: &mut Deployment, tally: &mut Tally) {
    for name in SERVICES {
        let svc = d.service(name);
        if let Some(status) = svc.reap() {
            assert!(injected_abort(status, &svc.log), "{name} died on its own with {status}\n{}", support::tail(&svc.log, 30));
            tally.injected_crashes += 1;
            svc.start();
        }
    }
}

/// Supervises and polls the topics until every order is right, or fails with the evidence.
async fn finish(d: &mut Deployment, orders: &[workload::PlannedOrder], tally: &mut Tally) {
    let deadline = Instant::now() + TEST_TIMEOUT * 2;
    loop {
        supervise(d, tally);
        match workload::check_topics(d, orders).await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("sagas did not finish: {e}\n{}", d.logs()),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Distinct dead letters for the run's poison records.
async fn dead_letters(d: &Deployment, run: &str) -> BTreeMap<EventId, DeadLetter> {
    d.read(Topic::DeadLetter)
        .await
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|s| match s.envelope.event {
            Event::DeadLetter(l) if l.key.as_deref().is_some_and(|k| k.starts_with(run)) => Some((s.envelope.meta.event_id, l)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_storm_loses_nothing_and_doubles_nothing() {
    let n_orders = env_or("SAGA_SOAK_ORDERS", 240);
    let n_faults = env_or("SAGA_SOAK_KILLS", 24);
    let mut chaos = Chaos::from_env();
    let mut d = Deployment::new(3, &[]).await;
    workload::use_fault_seeds(&mut d);
    // Besides the random kills, three services abort right after every few durable commits,
    // before publishing: the window between local commit and outbox publish.
    for (name, every) in [("payment-service", "5"), ("inventory-service", "7"), ("order-service", "11")] {
        d.service(name).args.extend(["--fault-crash-after-commit".to_owned(), every.to_owned()]);
    }
    d.start_all().await;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let orders = workload::plan(run, n_orders);
    let poison = ["{\"order_id\":", "[1,2,3]", "{\"order_id\":\"x\",\"customer_id\":\"alice\",\"items\":[],\"ship_to\":{\"country\":\"US\"}}"];
    let mut tally = Tally::default();
    let mut next = 0;
    while next < orders.len() || tally.kills + tally.terms < n_faults {
        for _ in 0..4 {
            if let Some(order) = orders.get(next) {
                workload::publish(&d, order).await;
                next += 1;
                if next % (orders.len() / poison.len()).max(1) == 0 {
                    let i = next / (orders.len() / poison.len()).max(1) - 1;
                    if let Some(bad) = poison.get(i) {
                        let key = format!("{run}-poison-{i}");
                        d.produce(Topic::OrderCreated, partition_for_key(key.as_bytes(), 3), Some(key.into_bytes()), bad.as_bytes().to_vec(), BTreeMap::new()).await;
                    }
                }
            }
        }
        supervise(&mut d, &mut tally);
        if tally.kills + tally.terms < n_faults && chaos.below(3) == 0 {
            let name = SERVICES[chaos.below(4) as usize];
            let svc = d.service(name);
            if svc.is_running() {
                // SIGTERM once it is up (before its handlers exist the OS default applies);
                // kill -9 at any moment.
                if chaos.below(4) == 0 && svc.is_ready() {
                    let status = svc.term().await;
                    // The batch in hand when SIGTERM lands is still committed, and its commit
                    // may be the one the injected crash was armed for: that is a crash, not a
                    // failed stop.
                    if injected_abort(status, &svc.log) {
                        tally.injected_crashes += 1;
                    } else {
                        assert!(status.success(), "{name} exited with {status} on SIGTERM\n{}", support::tail(&svc.log, 20));
                        tally.terms += 1;
                    }
                } else {
                    svc.kill9();
                    tally.kills += 1;
                }
                svc.start();
            }
        }
        // Chaos is about timing: faults land at random moments of the stream.
        tokio::time::sleep(Duration::from_millis(20 + chaos.below(120))).await;
    }
    finish(&mut d, &orders, &mut tally).await;

    // Every poison record is parked, once per service that read it.
    let letters = wait_until("dead letters for every poison record", || async {
        let letters = dead_letters(&d, run).await;
        if letters.len() >= 2 * poison.len() { Ok(letters) } else { Err(format!("{} so far", letters.len())) }
    }, || d.logs()).await;
    assert_eq!(letters.len(), 2 * poison.len(), "{letters:?}");

    d.stop_all().await;
    workload::check_stores(&d, &orders);
    let restarts: u32 = d.services.values().map(|s| s.starts - 1).sum();
    let outbox_recoveries: usize = d.services.values().map(|s| s.log_text().matches("publishing events left in the outbox").count()).sum();
    eprintln!(
        "storm: {} orders ({} hand-typed), {} poison, {} kill -9, {} SIGTERM, {} injected crashes between commit and publish, {} restarts, {} outbox recoveries",
        orders.len(), orders.iter().filter(|o| o.hand_typed).count(), poison.len(), tally.kills, tally.terms, tally.injected_crashes, restarts, outbox_recoveries
    );
    assert!(tally.injected_crashes > 0, "no crash landed between commit and publish");
    assert!(outbox_recoveries > 0, "no restart found a pending outbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_is_ridden_out() {
    let broker = DedicatedBroker::start_new();
    let mut d = Deployment::on(&broker.bootstrap(), 3, &[]).await;
    workload::use_fault_seeds(&mut d);
    d.start_all().await;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let orders = workload::plan(run, 90);
    let (before, after) = orders.split_at(45);
    for order in before {
        workload::publish(&d, order).await;
    }

    broker.stop();
    // Each service notices and says so once, then backs off.
    for name in SERVICES {
        let svc = &d.services[name];
        wait_until(&format!("{name} to report the outage"), || async {
            let log = svc.log_text();
            if log.contains("retrying") { Ok(()) } else { Err(support::tail(&svc.log, 3)) }
        }, || d.logs()).await;
    }
    // No busy spin: CPU used over a few seconds of outage stays small.
    let cpu_before: Vec<Duration> = SERVICES.iter().map(|n| d.services[*n].cpu_time()).collect();
    let window = Duration::from_secs(4);
    tokio::time::sleep(window).await; // a measurement window, not a wait for a condition
    for (name, before) in SERVICES.iter().zip(cpu_before) {
        let used = d.services[*name].cpu_time() - before;
        assert!(used < Duration::from_millis(800), "{name} used {used:?} of CPU in {window:?} of outage");
    }
    broker.start();
    for order in after {
        workload::publish(&d, order).await;
    }
    let mut tally = Tally::default();
    finish(&mut d, &orders, &mut tally).await;
    for svc in d.services.values() {
        assert_eq!(svc.starts, 1, "{} restarted: no crash loop expected", svc.name);
        assert!(svc.is_running(), "{} exited during the outage", svc.name);
    }
    d.stop_all().await;
    workload::check_stores(&d, &orders);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_have_no_effect() {
    let mut d = Deployment::new(3, &[]).await;
    workload::use_fault_seeds(&mut d);
    d.start_all().await;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let orders = workload::plan(run, 40);
    for order in &orders {
        workload::publish(&d, order).await;
    }
    let mut tally = Tally::default();
    finish(&mut d, &orders, &mut tally).await;
    let before = workload::distinct_events(&d).await;
    let ignored = |d: &Deployment| -> BTreeMap<&'static str, usize> {
        SERVICES.iter().map(|n| (*n, d.services[*n].log_text().matches("duplicate ignored").count())).collect()
    };
    let ignored_before = ignored(&d);
    let expected = republish_run(&d, run, &orders).await;
    // Each duplicate is dropped by each consumer, with one log line.
    wait_until("every duplicate to be dropped", || async {
        let now = ignored(&d);
        let missing: Vec<String> = expected.iter()
            .filter(|(n, e)| now[*n] < ignored_before[*n] + **e)
            .map(|(n, e)| format!("{n}: {} of {e}", now[*n] - ignored_before[*n]))
            .collect();
        if missing.is_empty() { Ok(()) } else { Err(missing.join(", ")) }
    }, || d.logs()).await;

    let after = workload::distinct_events(&d).await;
    assert_eq!(before, after, "a duplicate produced a new event");
    d.stop_all().await;
    workload::check_stores(&d, &orders);
}

/// Duplicates older than the window of remembered event ids reach the rules, which must
/// ignore what they already did: no new event, money and stock unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_older_than_the_dedup_window_have_no_effect() {
    let mut d = Deployment::new(3, &[]).await;
    workload::use_fault_seeds(&mut d);
    for name in SERVICES {
        d.service(name).args.extend(["--dedup-window".to_owned(), "1".to_owned()]);
    }
    d.start_all().await;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let mut orders = workload::plan(run, 40);
    for order in &orders {
        workload::publish(&d, order).await;
    }
    let mut tally = Tally::default();
    finish(&mut d, &orders, &mut tally).await;
    let before = workload::distinct_events(&d).await;
    republish_run(&d, run, &orders).await;

    // Then one order of each outcome on each partition: its events land on every partition
    // of every topic after the duplicates, so once they finish every duplicate was read.
    let marker_run = format!("{run}m");
    let mut covered = std::collections::BTreeSet::new();
    let markers: Vec<_> = workload::plan(&marker_run, 400)
        .into_iter()
        .filter(|o| covered.insert((format!("{:?}", o.outcome), partition_for_key(o.id.as_bytes(), d.partitions))))
        .collect();
    assert_eq!(markers.len(), 4 * d.partitions as usize, "a marker per outcome and partition");
    for order in &markers {
        workload::publish(&d, order).await;
    }
    finish(&mut d, &markers, &mut tally).await;

    let mut after = workload::distinct_events(&d).await;
    after.retain(|order, _| !order.starts_with(&marker_run));
    assert_eq!(before, after, "a duplicate produced a new event");
    d.stop_all().await;
    orders.extend(markers);
    workload::check_stores(&d, &orders);
}

/// Publishes every consumed event of the run again: same ids, same partitions. Hand-typed
/// orders go again as a person would send them, without headers. Returns how many
/// duplicates each service reads.
async fn republish_run(d: &Deployment, run: &str, orders: &[workload::PlannedOrder]) -> BTreeMap<&'static str, usize> {
    let mut expected: BTreeMap<&str, usize> = BTreeMap::new();
    let consumers = support::consumers_of;
    let hand_typed: std::collections::BTreeSet<&str> = orders.iter().filter(|o| o.hand_typed).map(|o| o.id.as_str()).collect();
    for topic in Topic::ORDER {
        if consumers(topic).is_empty() {
            continue;
        }
        for seen in d.read(topic).await.into_iter().filter_map(Result::ok) {
            let Some(order_id) = seen.envelope.event.order_id().map(|o| o.0.clone()) else { continue };
            if !order_id.starts_with(run) {
                continue;
            }
            let rec = seen.envelope.encode();
            let headers = if topic == Topic::OrderCreated && hand_typed.contains(order_id.as_str()) {
                BTreeMap::new()
            } else {
                rec.headers.into_iter().map(|(k, v)| (k, v.into_bytes())).collect()
            };
            d.produce(topic, seen.partition, Some(rec.key.into_bytes()), rec.value, headers).await;
            for c in consumers(topic) {
                *expected.entry(c).or_default() += 1;
            }
        }
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_that_overtakes_the_order_blocks_charge_and_reservation() {
    let mut d = Deployment::new(3, &[]).await;
    d.start_all().await;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let early = |id: &str| Envelope::root(OrderCancelled { order_id: id.into(), reason: CancelReason::PaymentFailed, detail: "test".into() }.into(), workload::now_ms());
    let line = LineItem { sku: "widget".into(), quantity: 2, unit_price_cents: 1250 };
    let ship_to = Address { country: "US".into(), ..Address::default() };

    // Which of two topics a service reads first is not up to the publisher, so each late
    // event is sent only once the service has recorded the cancellation.
    let logged = |svc: &'static str, id: String, needle: &'static str| {
        let d = &d;
        async move {
            let s = &d.services[svc];
            wait_until(&format!("{svc}: {needle} ({id})"), || async {
                let hit = s.log_text().lines().any(|l| l.contains(needle) && l.contains(id.as_str()));
                if hit { Ok(()) } else { Err(support::tail(&s.log, 3)) }
            }, || d.logs()).await;
        }
    };
    // Payment sees the cancellation, then the order.
    let a = format!("{run}-a");
    d.publish(&early(&a)).await;
    logged("payment-service", a.clone(), "order cancelled before payment saw it").await;
    d.publish(&Envelope::root(OrderCreated { order_id: a.as_str().into(), customer_id: "alice".into(), items: vec![line.clone()], ship_to: ship_to.clone() }.into(), workload::now_ms())).await;
    logged("payment-service", a.clone(), "after its cancellation").await;
    // Inventory sees the cancellation, then the payment.
    let b = format!("{run}-b");
    d.publish(&early(&b)).await;
    logged("inventory-service", b.clone(), "order cancelled with nothing reserved").await;
    d.publish(&Envelope::root(PaymentCompleted { order_id: b.as_str().into(), customer_id: "alice".into(), amount_cents: 2500, items: vec![line], ship_to }.into(), workload::now_ms())).await;
    logged("inventory-service", b.clone(), "after the order's cancellation").await;

    for t in [Topic::PaymentCompleted, Topic::PaymentFailed, Topic::PaymentRefunded] {
        assert!(d.events_for(t, &a).await.is_empty(), "{t} for an order cancelled before payment saw it");
    }
    for t in [Topic::StockReserved, Topic::StockFailed, Topic::StockReleased] {
        assert!(d.events_for(t, &b).await.is_empty(), "{t} for an order cancelled before inventory saw it");
    }
    d.stop_all().await;
    let wallets: BTreeMap<String, u64> = d.table("payment-service", "wallets");
    assert_eq!(wallets["alice"], 100_000);
    let stock: BTreeMap<String, u32> = d.table("inventory-service", "stock");
    assert_eq!(stock["widget"], 100);
}
