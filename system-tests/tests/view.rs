//! The orders view on a real broker: the README's four scenarios and a poison record answered
//! exactly by each endpoint; then a view killed (-9) during a stream, and one rebuilt from an
//! empty store, answering the same as one that ran without interruption.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use std::collections::BTreeMap;

use serde_json::{json, Value};
use shared_events::*;
use support::workload::{self, Outcome};
use support::{http_get, wait_until, Deployment};

fn order_json(id: &str, customer: &str, sku: &str, qty: u32, price: u64, country: &str) -> String {
    format!(
        r#"{{"order_id":"{id}","customer_id":"{customer}","items":[{{"sku":"{sku}","quantity":{qty},"unit_price_cents":{price}}}],"ship_to":{{"country":"{country}"}}}}"#
    )
}

fn get(url: &str) -> (u16, Value) {
    let (status, body) = http_get(url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"));
    (status, json)
}

/// The answer without `read_to`, which moves as the view reads on.
fn settled(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("read_to");
    }
    v
}

/// Waits until the view at `url` has read every saga topic to its end; returns its `/stats`.
async fn read_to_the_end(d: &Deployment, url: &str) -> Value {
    use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
    wait_until("the view to read every topic to its end", || async {
        let (_, stats) = get(&format!("{url}/stats"));
        for topic in Topic::ORDER {
            for partition in 0..d.partitions {
                let pc = d.client().partition_client(d.topic(topic), partition, UnknownTopicHandling::Retry).await.map_err(|e| e.to_string())?;
                let end = pc.get_offset(OffsetAt::Latest).await.map_err(|e| e.to_string())?;
                let read = stats["read_to"][topic.as_str()][partition.to_string()].as_i64().unwrap_or(0);
                if read < end {
                    return Err(format!("{topic}/{partition}: read to {read} of {end}"));
                }
            }
        }
        Ok(stats)
    }, || d.logs()).await
}

/// The hours of the last 24 that saw anything, by their start: a window that slid between
/// two requests loses only empty hours.
fn busy_hours(stats: &Value) -> BTreeMap<i64, Value> {
    stats["last_24_hours"].as_array().unwrap().iter()
        .filter(|h| h["placed"] != 0 || h["completed"] != 0 || h["cancelled"] != 0 || h["dead_letters"] != 0 || h["charged_cents"] != 0)
        .map(|h| (h["hour_start_ms"].as_i64().unwrap(), h.clone()))
        .collect()
}

fn steps(order: &Value) -> Vec<String> {
    let mut steps: Vec<String> = order["timeline"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap().to_owned()).collect();
    steps.sort();
    steps
}

fn sorted(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_view_answers_the_four_scenarios_and_counts_the_poison() {
    let mut d = Deployment::new(3, &[]).await;
    d.add_view("orders-view");
    d.start_all().await;
    let url = d.view_url("orders-view");
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let [happy, broke, gizmo, aq] = ["happy", "broke", "gizmo", "aq"].map(|s| format!("{run}-{s}"));
    d.kcat_publish(Topic::OrderCreated, &happy, &order_json(&happy, "alice", "widget", 2, 1250, "US"));
    d.kcat_publish(Topic::OrderCreated, &broke, &order_json(&broke, "bob", "widget", 2, 1250, "US"));
    d.kcat_publish(Topic::OrderCreated, &gizmo, &order_json(&gizmo, "alice", "gizmo", 1, 500, "US"));
    d.kcat_publish(Topic::OrderCreated, &aq, &order_json(&aq, "alice", "widget", 3, 1250, "AQ"));
    d.kcat_publish(Topic::OrderCreated, &format!("{run}-bad-json"), r#"{"order_id": "oops", "items": ["#);

    // Everything settled: four outcomes, every compensation, and the poison parked by the
    // three services that read OrderCreated (order-service, payment-service and the view).
    let stats = wait_until("the view to count every outcome, compensation and dead letter", || async {
        let (_, stats) = get(&format!("{url}/stats"));
        let a = &stats["all_time"];
        let done = a["placed"] == 4 && a["completed"] == 1 && a["cancelled"] == 3 && a["compensations"]["refunds"] == 2
            && a["compensations"]["stock_releases"] == 1 && a["dead_letters"] == 3;
        if done { Ok(stats) } else { Err(a.to_string()) }
    }, || d.logs()).await;

    let a = &stats["all_time"];
    assert_eq!(a["cancelled_by_reason"], json!({"payment_failed": 1, "shipping_failed": 1, "stock_failed": 1}));
    assert_eq!((a["charged_cents"].as_u64(), a["refunded_cents"].as_u64(), a["revenue_cents"].as_i64()), (Some(2500 + 500 + 3750), Some(500 + 3750), Some(2500)));
    assert_eq!(a["compensations"]["shipment_cancellations"], 0);
    assert_eq!(a["dead_letters_by_reason"], json!({"invalid_json": 3}));
    let hours = stats["last_24_hours"].as_array().unwrap();
    assert_eq!(hours.len(), 24);
    assert_eq!(hours.iter().map(|h| h["completed"].as_u64().unwrap()).sum::<u64>(), 1, "the hour it happened in holds it");
    assert!(stats["read_to"]["OrderCreated"].is_object(), "{stats}");

    // Each order, exactly.
    let (status, o) = get(&format!("{url}/orders/{happy}"));
    assert_eq!(status, 200, "{o}");
    assert_eq!((o["status"].as_str(), o["cancel_reason"].is_null()), (Some("completed"), true));
    assert_eq!(o["customer_id"], "alice");
    assert_eq!(o["lines"], json!([{"sku": "widget", "quantity": 2, "unit_price_cents": 1250}]));
    assert_eq!((o["total_cents"].as_u64(), o["charged_cents"].as_u64(), o["refunded_cents"].as_u64()), (Some(2500), Some(2500), None));
    assert!(o["shipment_id"].is_string());
    assert_eq!(steps(&o), sorted(&["OrderCreated", "PaymentCompleted", "StockReserved", "ShipmentScheduled", "OrderCompleted"]));
    assert_eq!(o["timeline"][0]["step"], "OrderCreated");
    assert_eq!(o["compensations"], json!({"done": [], "awaited": []}));

    let (_, o) = get(&format!("{url}/orders/{broke}"));
    assert_eq!((o["status"].as_str(), o["cancel_reason"].as_str()), (Some("cancelled"), Some("payment_failed")));
    assert_eq!((o["charged_cents"].as_u64(), o["refunded_cents"].as_u64()), (None, None));
    assert_eq!(steps(&o), sorted(&["OrderCreated", "PaymentFailed", "OrderCancelled"]));
    assert_eq!(o["compensations"], json!({"done": [], "awaited": []}));

    let (_, o) = get(&format!("{url}/orders/{gizmo}"));
    assert_eq!((o["status"].as_str(), o["cancel_reason"].as_str()), (Some("cancelled"), Some("stock_failed")));
    assert_eq!((o["charged_cents"].as_u64(), o["refunded_cents"].as_u64()), (Some(500), Some(500)));
    assert_eq!(steps(&o), sorted(&["OrderCreated", "PaymentCompleted", "StockFailed", "OrderCancelled", "PaymentRefunded"]));
    assert_eq!(o["compensations"], json!({"done": ["PaymentRefunded"], "awaited": []}));

    let (_, o) = get(&format!("{url}/orders/{aq}"));
    assert_eq!((o["status"].as_str(), o["cancel_reason"].as_str()), (Some("cancelled"), Some("shipping_failed")));
    assert_eq!((o["charged_cents"].as_u64(), o["refunded_cents"].as_u64()), (Some(3750), Some(3750)));
    assert_eq!(
        steps(&o),
        sorted(&["OrderCreated", "PaymentCompleted", "StockReserved", "ShippingFailed", "OrderCancelled", "PaymentRefunded", "StockReleased"])
    );
    assert_eq!(o["compensations"], json!({"done": ["PaymentRefunded", "StockReleased"], "awaited": []}));

    // Unknown: 404, with how far the view had read, so "not seen yet" can be told apart.
    let (status, e) = get(&format!("{url}/orders/{run}-never"));
    assert_eq!((status, e["error"].as_str()), (404, Some("unknown_order")), "{e}");
    assert!(e["read_to"]["OrderCreated"].is_object(), "{e}");

    // A customer's orders, newest first, a page at a time. Other tests' alice orders may be on
    // this broker under other prefixes, never in this deployment's topics.
    let (status, page) = get(&format!("{url}/customers/alice/orders?limit=2"));
    assert_eq!(status, 200, "{page}");
    let first: Vec<(i64, String)> = page["orders"].as_array().unwrap().iter()
        .map(|o| (o["created_at_ms"].as_i64().unwrap(), o["order_id"].as_str().unwrap().to_owned())).collect();
    assert_eq!(first.len(), 2);
    let cursor = page["next"].as_str().expect("a full page has a next cursor").to_owned();
    let (_, rest) = get(&format!("{url}/customers/alice/orders?limit=2&before={cursor}"));
    let second: Vec<(i64, String)> = rest["orders"].as_array().unwrap().iter()
        .map(|o| (o["created_at_ms"].as_i64().unwrap(), o["order_id"].as_str().unwrap().to_owned())).collect();
    assert_eq!(second.len(), 1, "{rest}");
    assert!(rest["next"].is_null(), "{rest}");
    let all: Vec<(i64, String)> = first.into_iter().chain(second).collect();
    let mut newest_first = all.clone();
    newest_first.sort_by(|x, y| y.cmp(x));
    assert_eq!(all, newest_first, "newest first across pages");
    let mut ids: Vec<String> = all.into_iter().map(|(_, id)| id).collect();
    ids.sort();
    assert_eq!(ids, sorted(&[&happy, &gizmo, &aq]));
    let (_, bobs) = get(&format!("{url}/customers/bob/orders"));
    assert_eq!(bobs["orders"][0]["status"], "cancelled");
    assert_eq!(bobs["orders"][0]["cancel_reason"], "payment_failed");
    let (_, nobody) = get(&format!("{url}/customers/{run}-nobody/orders"));
    assert_eq!((nobody["orders"].as_array().map(Vec::len), nobody["next"].is_null()), (Some(0), true));

    // Bad queries: 400 with a code and a reason.
    for query in ["limit=0", "limit=abc", "limit=101", "before=yesterday"] {
        let (status, e) = get(&format!("{url}/customers/alice/orders?{query}"));
        assert_eq!((status, e["error"].as_str()), (400, Some("bad_query")), "{query}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    }
    let (status, e) = get(&format!("{url}/nowhere"));
    assert_eq!((status, e["error"].as_str()), (404, Some("not_found")));
    assert_eq!(http_get(&format!("{url}/healthz")).unwrap(), (200, "ok\n".to_owned()));
    let (status, page) = http_get(&format!("{url}/")).unwrap();
    assert!(status == 200 && page.contains("<title>Orders view</title>"), "{status}");
    d.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_killed_or_rebuilt_answers_as_one_never_interrupted() {
    let mut d = Deployment::new(3, &[]).await;
    workload::use_fault_seeds(&mut d);
    d.add_view("orders-view");
    d.start_all().await;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let orders = workload::plan(run, 60);

    // kill -9 twice while the orders stream in; each time it restarts where its store says.
    for (i, order) in orders.iter().enumerate() {
        workload::publish(&d, order).await;
        if i == 20 || i == 40 {
            d.service("orders-view").kill9();
            d.service("orders-view").start();
            // Ready again before the next kill, so each kill hits a running view.
            d.wait_ready("orders-view").await;
        }
    }
    let url = d.view_url("orders-view");
    let completed = orders.iter().filter(|o| o.outcome == Outcome::Completed).count();
    let expect = |stats: &Value| {
        let a = &stats["all_time"];
        a["placed"] == orders.len() && a["completed"] == completed && a["cancelled"] == orders.len() - completed
            && a["compensations"]["refunds"] == orders.iter().filter(|o| matches!(o.outcome, Outcome::StockFailed | Outcome::ShippingFailed)).count()
            && a["compensations"]["stock_releases"] == orders.iter().filter(|o| o.outcome == Outcome::ShippingFailed).count()
    };
    wait_until("the killed view to count every order and compensation", || async {
        let (_, stats) = get(&format!("{url}/stats"));
        if expect(&stats) { Ok(()) } else { Err(stats["all_time"].to_string()) }
    }, || d.logs()).await;
    // Every outcome counted: the saga has settled. Once the view has read every topic to its
    // end, nothing it shows can still change.
    let killed = read_to_the_end(&d, &url).await;

    // A second view, started now, reads everything without interruption.
    d.add_view("orders-view#fresh");
    d.service("orders-view#fresh").args.extend(["--group-id".to_owned(), "orders-view-fresh".to_owned()]);
    d.service("orders-view#fresh").start();
    d.wait_ready("orders-view#fresh").await;
    let fresh_url = d.view_url("orders-view#fresh");
    let fresh = read_to_the_end(&d, &fresh_url).await;
    assert!(expect(&fresh), "{}", fresh["all_time"]);
    assert_eq!(killed["all_time"], fresh["all_time"]);
    assert_eq!(busy_hours(&killed), busy_hours(&fresh));
    let answers = |url: &str| -> BTreeMap<String, Value> {
        orders.iter().map(|o| (o.id.clone(), settled(get(&format!("{url}/orders/{}", o.id)).1))).collect()
    };
    let by_killed = answers(&url);
    assert_eq!(by_killed, answers(&fresh_url));
    for o in &orders {
        let expected = if o.outcome == Outcome::Completed { "completed" } else { "cancelled" };
        assert_eq!(by_killed[&o.id]["status"], expected, "{}: {}", o.id, by_killed[&o.id]);
    }

    // Its store deleted, the killed view rebuilds the same answers from the topics.
    d.service("orders-view").term().await;
    std::fs::remove_dir_all(&d.services["orders-view"].data_dir).unwrap();
    d.service("orders-view").start();
    d.wait_ready("orders-view").await;
    let url = d.view_url("orders-view");
    let rebuilt = read_to_the_end(&d, &url).await;
    assert_eq!(rebuilt["all_time"], fresh["all_time"]);
    assert_eq!(answers(&url), by_killed);
    d.stop_all().await;
}

/// The page, rendered by a real browser: headless Chromium (Debian's) loads it, runs its script
/// against the live API, and both the DOM it ends with and its screenshot are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_renders_an_order_a_customer_and_the_numbers_in_a_real_browser() {
    let mut d = Deployment::new(1, &[]).await;
    d.add_view("orders-view");
    d.start_all().await;
    let url = d.view_url("orders-view");
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let [happy, broke] = ["happy", "broke"].map(|s| format!("{run}-{s}"));
    d.kcat_publish(Topic::OrderCreated, &happy, &order_json(&happy, "alice", "widget", 2, 1250, "US"));
    d.kcat_publish(Topic::OrderCreated, &broke, &order_json(&broke, "bob", "widget", 2, 1250, "US"));
    wait_until("the view to see both outcomes", || async {
        let (_, stats) = get(&format!("{url}/stats"));
        let a = &stats["all_time"];
        if a["completed"] == 1 && a["cancelled"] == 1 { Ok(()) } else { Err(a.to_string()) }
    }, || d.logs()).await;

    let page = format!("{url}/?order={happy}&customer=alice");
    let profile = tempfile::tempdir().unwrap();
    let shot = d.root.path().join("page.png");
    let chromium = |extra: &[String]| {
        let out = std::process::Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1000"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            // Long enough for the page's requests, in the browser's virtual time.
            .arg("--virtual-time-budget=10000")
            .args(extra)
            .arg(&page)
            .output()
            .expect("chromium (apt-get install chromium; scripts/test.sh installs it)");
        assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // What the script built: the order's status and lines, the customer's list, the figures and
    // the chart.
    let dom = chromium(&["--dump-dom".to_owned()]);
    assert!(dom.contains(r#"data-ready="true""#), "the script never finished:\n{dom}");
    let order_panel = &dom[dom.find(r#"id="order""#).unwrap()..dom.find(r#"id="customer""#).unwrap()];
    for expected in [happy.as_str(), r#"class="status completed">completed<"#, "2 × widget at 12.50", "25.00", "<li>OrderCreated at ", "<li>OrderCompleted +"] {
        assert!(order_panel.contains(expected), "the order panel lacks {expected:?}:\n{order_panel}");
    }
    let customer_panel = &dom[dom.find(r#"id="customer""#).unwrap()..dom.find(r#"id="figures""#).unwrap()];
    assert!(customer_panel.contains(&happy) && !customer_panel.contains(&broke), "alice's orders only:\n{customer_panel}");
    let figure = |id: &str| {
        let at = dom.find(&format!(r#"id="figure-{id}""#)).unwrap_or_else(|| panic!("no figure {id}:\n{dom}"));
        let b = &dom[at..];
        b[b.find("<b>").unwrap() + 3..b.find("</b>").unwrap()].to_owned()
    };
    assert_eq!((figure("placed"), figure("completed"), figure("cancelled"), figure("revenue")), ("2".into(), "1".into(), "1".into(), "25.00".into()));
    assert!(dom.contains("Cancelled by reason: payment_failed 1."), "{dom}");
    assert!(dom.matches("<rect").count() >= 48, "a completed and a cancelled bar per hour:\n{dom}");

    // And what it looks like: the header's dark band, the green "completed" badge and bar.
    chromium(&[format!("--screenshot={}", shot.display())]);
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((frame.width, frame.height), (1280, 1000));
    let channels = frame.line_size / frame.width as usize;
    let count = |rgb: [u8; 3]| {
        pixels[..frame.buffer_size()].chunks(channels).filter(|p| p[..3].iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= 6)).count()
    };
    let total = (frame.width * frame.height) as usize;
    assert!(count([0x1d, 0x23, 0x30]) * 100 > total * 3, "the header band is not drawn");
    assert!(count([0xd8, 0xf3, 0xdf]) > 100, "the completed badge is not drawn");
    assert!(count([0x3a, 0x9d, 0x5d]) > 100, "the chart's completed bar is not drawn");
    d.stop_all().await;
}
