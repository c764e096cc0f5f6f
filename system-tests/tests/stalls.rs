//! Records that ordinary producers write, and that once stopped a service for good: each is
//! read or parked, and an ordinary order placed after it still completes. On a real broker,
//! written by Kafka's own Java producer where a Java client is the one that writes them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use std::collections::BTreeMap;

use shared_events::*;
use support::{order_json, run_id, wait_until, Deployment};

/// An ordinary hand-typed order placed after the stall: it must complete.
async fn an_ordinary_order_still_completes(d: &Deployment, run: &str) {
    let id = format!("{run}-after");
    d.kcat_publish(Topic::OrderCreated, &id, &order_json(&id, "alice", 1, 100));
    d.wait_for(Topic::OrderCompleted, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_and_lz4_batches_are_read_and_services_write_zstd() {
    let mut d = Deployment::new(3, &["--compression", "zstd"]).await;
    d.start_all().await;
    let run = run_id();
    // Enough alike records in one batch that the codec really shrinks it.
    for codec in ["zstd", "lz4"] {
        let lines: Vec<String> = (0..40)
            .map(|i| format!("{run}-{codec}-{i}"))
            .map(|id| format!("{id}|{}", order_json(&id, "alice", 1, 10)))
            .collect();
        d.java_produce(Topic::OrderCreated, &lines, &["--compression", codec, "--partition", "1"]);
    }
    for codec in ["zstd", "lz4"] {
        for i in 0..40 {
            d.wait_for(Topic::OrderCompleted, &format!("{run}-{codec}-{i}")).await;
        }
    }
    an_ordinary_order_still_completes(&d, &run).await;
    assert!(d.dead_letters().await.is_empty(), "nothing to park");
    // `saga` reads the services' zstd batches too.
    let trace = d.wait_trace(&format!("{run}-zstd-0"), "OrderCompleted").await;
    assert!(trace.contains("PaymentCompleted"), "{trace}");
    d.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_transaction_is_never_acted_on_and_a_committed_one_is() {
    let mut d = Deployment::new(3, &[]).await;
    d.start_all().await;
    let run = run_id();
    let (aborted, committed) = (format!("{run}-aborted"), format!("{run}-committed"));
    // Same partition: the committed transaction's records and markers follow the aborted ones.
    d.java_produce(
        Topic::OrderCreated,
        &[format!("{aborted}|{}", order_json(&aborted, "alice", 4, 1000))],
        &["--transactional-id", &format!("{run}-tx"), "--abort", "--partition", "0"],
    );
    d.java_produce(
        Topic::OrderCreated,
        &[format!("{committed}|{}", order_json(&committed, "alice", 1, 500))],
        &["--transactional-id", &format!("{run}-tx"), "--partition", "0"],
    );
    d.wait_for(Topic::OrderCompleted, &committed).await;
    an_ordinary_order_still_completes(&d, &run).await;
    d.stop_all().await;

    // Nothing about the aborted order anywhere, and the markers were skipped, not parked.
    for topic in Topic::ORDER {
        assert!(d.events_for(topic, &aborted).await.is_empty(), "{topic} holds the aborted order");
    }
    assert!(d.dead_letters().await.is_empty(), "transaction markers are not dead letters");
    for svc in ["order-service", "payment-service"] {
        assert!(!d.services[svc].log_text().contains(&aborted), "{svc} saw the aborted order");
    }
    let wallets: BTreeMap<String, u64> = d.table("payment-service", "wallets");
    assert_eq!(wallets["alice"], 100_000 - 500 - 100, "only the committed and the ordinary order are charged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_without_a_value_is_read() {
    let mut d = Deployment::new(3, &[]).await;
    d.start_all().await;
    let run = run_id();
    let id = format!("{run}-null-header");
    d.java_produce(Topic::OrderCreated, &[format!("{id}|{}", order_json(&id, "alice", 1, 10))], &["--null-header", "trace-id"]);
    d.wait_for(Topic::OrderCompleted, &id).await;
    an_ordinary_order_still_completes(&d, &run).await;
    assert!(d.dead_letters().await.is_empty());
    d.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_bounded_whatever_the_record_it_parks() {
    let mut d = Deployment::new(3, &[]).await;
    d.start_all().await;
    let run = run_id();
    // A 600 KB key that is not the order id: a copy of it would make a dead letter the
    // broker refuses.
    let id = format!("{run}-big-key");
    let key = format!("{run}-{}", "k".repeat(600 * 1024));
    d.produce(Topic::OrderCreated, 0, Some(key.clone().into_bytes()), order_json(&id, "alice", 1, 10).into_bytes(), BTreeMap::new()).await;
    let letters = wait_until("two dead letters (order and payment)", || async {
        let letters = d.dead_letters().await;
        if letters.len() >= 2 { Ok(letters) } else { Err(format!("{}", letters.len())) }
    }, || d.logs()).await;
    for l in &letters {
        assert_eq!(l.error_code, "key_mismatch");
        assert!(l.key_truncated && l.key.as_ref().unwrap().len() <= 1024, "the key copy is cut");
        assert!(key.starts_with(l.key.as_deref().unwrap()));
        assert!(l.error.len() <= 1024, "the reason quotes the key, bounded too");
        assert_eq!(l.order_id.as_ref().map(|o| o.as_str()), Some(id.as_str()));
    }
    an_ordinary_order_still_completes(&d, &run).await;
    d.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_the_broker_refuses_for_good_is_parked_and_publishing_goes_on() {
    let mut d = Deployment::new(3, &[]).await;
    d.start_all().await;
    // DeadLetter takes records of at most 4 KB: a dead letter copying a 50 KB payload is
    // refused (MessageTooLarge) every time it is sent.
    let dead_letter_topic = d.topic(Topic::DeadLetter);
    d.kafka_tool("kafka.admin.ConfigCommand", &["--alter", "--entity-type", "topics", "--entity-name", &dead_letter_topic, "--add-config", "max.message.bytes=4096"]);
    // The broker applies it a moment later: wait until it refuses a large record (one that
    // does not decode, so it is no dead letter to the readers).
    wait_until("DeadLetter to refuse 8 KB records", || async {
        match d.try_produce(Topic::DeadLetter, 0, None, vec![b'~'; 8 * 1024], BTreeMap::new()).await {
            Err(e) if e.contains("MessageTooLarge") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    }, || d.logs()).await;
    let run = run_id();
    let junk = format!("{run}-junk");
    d.kcat_publish(Topic::OrderCreated, &junk, &format!("{{\"not an order\": \"{}\"}}", "x".repeat(50 * 1024)));
    an_ordinary_order_still_completes(&d, &run).await;
    let letters = wait_until("the two dead letters of the junk, without their copies", || async {
        let letters: Vec<DeadLetter> = d.dead_letters().await.into_iter().filter(|l| l.key.as_deref() == Some(junk.as_str())).collect();
        if letters.len() >= 2 { Ok(letters) } else { Err(format!("{}", letters.len())) }
    }, || d.logs()).await;
    for l in &letters {
        assert_eq!((l.source_topic.as_str(), l.error_code.as_str()), ("OrderCreated", "invalid_field"), "the origin and reason stay");
        assert!(l.error.contains("MessageTooLarge"), "{}", l.error);
        assert!(l.payload.is_none() && l.payload_truncated, "the copy that did not fit is gone");
    }
    d.stop_all().await;
    for svc in ["order-service", "payment-service"] {
        let log = d.services[svc].log_text();
        assert_eq!(log.matches("refused an event for good").count(), 1, "{svc} logs it once:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_for_a_deleted_topic_is_parked_and_publishing_goes_on() {
    let mut d = Deployment::new(3, &[]).await;
    d.start_all().await;
    let run = run_id();
    let shipped = format!("{run}-shipped");
    d.kcat_publish(Topic::OrderCreated, &shipped, &order_json(&shipped, "alice", 1, 10));
    d.wait_for(Topic::OrderCompleted, &shipped).await;
    // The refusal of a late cancellation goes to a topic that is gone; the order placed after
    // it must still complete (its events queue behind the refusal).
    d.delete_topic(Topic::OrderCancellationRefused).await;
    d.kcat_publish(Topic::OrderCancellationRequested, &shipped, &format!(r#"{{"order_id":"{shipped}"}}"#));
    an_ordinary_order_still_completes(&d, &run).await;
    let parked = wait_until("the refusal parked on DeadLetter", || async {
        let letters = d.dead_letters().await;
        match letters.into_iter().find(|l| l.source_topic == "OrderCancellationRefused") {
            Some(l) => Ok(l),
            None => Err("not yet".to_owned()),
        }
    }, || d.logs()).await;
    assert_eq!((parked.error_code.as_str(), parked.order_id.as_ref().map(|o| o.as_str())), ("publish_refused", Some(shipped.as_str())));
    assert!(parked.error.contains("does not exist"), "{}", parked.error);
    d.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newline_in_an_id_cannot_forge_a_log_line() {
    let mut d = Deployment::new(3, &[]).await;
    d.start_all().await;
    let run = run_id();
    let forged = "INFO step: wallet charged → PaymentCompleted order_id=forged";
    // In the order id (JSON escapes it; the decoded id holds a real newline) …
    let id = format!("{run}-nl");
    let json = order_json(&format!("{id}\\n{forged}"), "alice", 1, 10);
    d.kcat_publish(Topic::OrderCreated, &id, &json);
    // … and in a key that does not match its order id, which the reason quotes.
    let other = format!("{run}-key");
    d.produce(Topic::OrderCreated, 0, Some(format!("{other}\n{forged}").into_bytes()), order_json(&other, "alice", 1, 10).into_bytes(), BTreeMap::new()).await;
    let letters = wait_until("four dead letters", || async {
        let letters = d.dead_letters().await;
        if letters.len() >= 4 { Ok(letters) } else { Err(format!("{}", letters.len())) }
    }, || d.logs()).await;
    let codes: Vec<&str> = letters.iter().map(|l| l.error_code.as_str()).collect();
    assert_eq!(codes.iter().filter(|c| **c == "invalid_field").count(), 2, "{codes:?}");
    assert!(letters.iter().any(|l| l.error.contains("order_id") && l.error.contains("control characters")), "{letters:?}");
    an_ordinary_order_still_completes(&d, &run).await;
    d.stop_all().await;
    for svc in support::SERVICES {
        let log = d.services[svc].log_text();
        assert!(!log.lines().any(|l| l.starts_with("INFO step:")), "{svc} printed a forged line:\n{log}");
        assert!(!log.contains("order_id=forged") || log.contains("\\n"), "{svc}: {log}");
    }
    let order_log = d.services["order-service"].log_text();
    assert!(order_log.contains("bad record parked on DeadLetter"), "{order_log}");
}

/// Batches whose second record has a header name that is not UTF-8: the broker stores them (it
/// does not read header names as UTF-8), the client cannot read that record. In an
/// uncompressed batch only that record is parked (records are length-prefixed); in a
/// compressed one the whole batch is, as one range. Either way the partition goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_or_batch_the_client_cannot_read_is_parked_as_one_range() {
    let mut d = Deployment::new(3, &[]).await;
    d.start_all().await;
    let run = run_id();
    let batch = |name: &str| -> (Vec<String>, Vec<support::raw::RawRecord>) {
        let ids: Vec<String> = (0..3).map(|i| format!("{run}-{name}-{i}")).collect();
        let records = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let headers = if i == 1 { vec![(vec![0xff, 0xfe], b"v".to_vec())] } else { Vec::new() };
                (id.clone().into_bytes(), order_json(id, "alice", 1, 10).into_bytes(), headers)
            })
            .collect();
        (ids, records)
    };
    let (plain_ids, plain) = batch("plain");
    let plain_base = support::raw::produce(&d.bootstrap, &d.topic(Topic::OrderCreated), 0, &plain, false);
    let (gzip_ids, gzip) = batch("gzip");
    let gzip_base = support::raw::produce(&d.bootstrap, &d.topic(Topic::OrderCreated), 0, &gzip, true);

    // Both readers of OrderCreated park the same: one record of the plain batch, the whole
    // gzip batch.
    let letters = wait_until("two dead letters from each reader", || async {
        let letters: Vec<DeadLetter> = d.dead_letters().await;
        if letters.len() >= 4 { Ok(letters) } else { Err(format!("{letters:?}")) }
    }, || d.logs()).await;
    let ranges: Vec<(i64, Option<i64>)> = letters.iter().map(|l| (l.source_offset, l.source_last_offset)).collect();
    assert_eq!(ranges.iter().filter(|r| **r == (plain_base + 1, None)).count(), 2, "{letters:?}");
    assert_eq!(ranges.iter().filter(|r| **r == (gzip_base, Some(gzip_base + 2))).count(), 2, "{letters:?}");
    for l in &letters {
        assert_eq!((l.error_code.as_str(), l.source_partition), ("unreadable_batch", 0));
        assert!(l.payload_hex.is_some(), "the raw bytes are kept");
    }
    for id in [&plain_ids[0], &plain_ids[2]] {
        d.wait_for(Topic::OrderCompleted, id).await;
    }
    an_ordinary_order_still_completes(&d, &run).await;
    d.stop_all().await;
    for id in [&plain_ids[1], &gzip_ids[0], &gzip_ids[1], &gzip_ids[2]] {
        assert!(d.events_for(Topic::PaymentCompleted, id).await.is_empty(), "{id} was parked, not charged");
    }
    let log = d.services["payment-service"].log_text();
    assert_eq!(log.matches("unreadable batch parked on DeadLetter").count(), 2, "one line per range:\n{log}");
}
