//! Each service as its own principal on a broker with Kafka's StandardAuthorizer (deny by
//! default), its ACLs provisioned by `saga acl`: the four scenarios run; the storefront may
//! place and cancel orders and nothing else; a service with another's credentials stops at
//! start-up with one line.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use shared_events::partitioner::partition_for_key;
use shared_events::*;
use support::{bin_dir, order_json, run_id, wait_until, Deployment, SecuredBroker};

fn broker() -> &'static SecuredBroker {
    static BROKER: OnceLock<SecuredBroker> = OnceLock::new();
    BROKER.get_or_init(SecuredBroker::start_with_authorizer)
}

/// The four services on the authorizing broker, each as its own principal, read by the test
/// as the super user. Nothing is provisioned yet.
async fn deployment(b: &SecuredBroker) -> Deployment {
    let admin = b.client_as("admin").await;
    let mut d = Deployment::with_client(&b.sasl_ssl(), 3, &[], admin);
    let dir = d.root.path().to_owned();
    for s in support::SERVICES {
        let args = &mut d.service(s).args;
        let at = args.iter().position(|a| a == "--bootstrap-servers").unwrap();
        args.drain(at..at + 2);
        args.extend(b.flags_as(s, &dir));
    }
    d
}

/// `saga <args>` as `user` against this deployment: (exit code, stdout, stderr).
fn saga_as(b: &SecuredBroker, d: &Deployment, user: &str, args: &[&str]) -> (i32, String, String) {
    let out = support::clean_env(&mut Command::new(bin_dir().join("saga")))
        .args(b.flags_as(user, d.root.path()))
        .args(["--topic-prefix", &d.prefix, "--color", "never"])
        .args(args)
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// kcat as `user` writing one `key<TAB>value` record to `topic`: Ok, or kcat's complaint.
fn kcat_as(b: &SecuredBroker, d: &Deployment, user: &str, topic: Topic, key: &str, value: &str) -> Result<(), String> {
    let mut child = Command::new("kcat")
        .args(["-P", "-t", &d.topic(topic), "-K", "\t", "-X", "partitioner=murmur2_random"])
        .args(b.kcat_as(user))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is required for the system tests (apt-get install kcat)");
    writeln!(child.stdin.take().unwrap(), "{key}\t{value}").unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

fn provision(b: &SecuredBroker, d: &Deployment) -> String {
    let (code, out, err) = saga_as(b, d, "admin", &["acl"]);
    assert_eq!(code, 0, "saga acl failed: {out}{err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_as_its_own_principal_and_the_storefront_may_only_order() {
    let b = broker();
    let mut d = deployment(b).await;

    // Provisioned once: everything granted. Again: nothing new (idempotent).
    let first = provision(b, &d);
    assert!(first.contains("User:payment-service (payment-service") && first.contains("granted     Write     DeadLetter, PaymentCompleted, PaymentFailed, PaymentRefunded"), "{first}");
    assert!(first.contains("User:storefront") && first.contains("granted     Write     OrderCancellationRequested, OrderCreated"), "{first}");
    let granted = first.lines().last().unwrap().to_owned();
    assert!(granted.contains(", 0 existed"), "{granted}");
    let again = provision(b, &d);
    assert!(again.lines().last().unwrap().contains(": 0 granted,") && !again.contains("  granted "), "{again}");

    d.start_all().await;
    for s in support::SERVICES {
        assert!(d.services[s].log_text().contains(&format!("SCRAM-SHA-512 as {s}")), "{s} runs as its own principal");
    }

    // The README's four scenarios, placed by the storefront with kcat.
    let run = run_id();
    let order = |id: &str, customer: &str, sku: &str, qty: u32, price: u64, country: &str| {
        format!(r#"{{"order_id":"{id}","customer_id":"{customer}","items":[{{"sku":"{sku}","quantity":{qty},"unit_price_cents":{price}}}],"ship_to":{{"country":"{country}"}}}}"#)
    };
    let [happy, broke, gizmo, antarctica] = ["happy", "broke", "gizmo", "aq"].map(|s| format!("{run}-{s}"));
    kcat_as(b, &d, "storefront", Topic::OrderCreated, &happy, &order(&happy, "alice", "widget", 2, 1250, "US")).unwrap();
    kcat_as(b, &d, "storefront", Topic::OrderCreated, &broke, &order(&broke, "bob", "widget", 2, 1250, "US")).unwrap();
    kcat_as(b, &d, "storefront", Topic::OrderCreated, &gizmo, &order(&gizmo, "alice", "gizmo", 1, 500, "US")).unwrap();
    kcat_as(b, &d, "storefront", Topic::OrderCreated, &antarctica, &order(&antarctica, "alice", "widget", 3, 1250, "AQ")).unwrap();
    d.wait_for(Topic::OrderCompleted, &happy).await;
    d.wait_for(Topic::OrderCancelled, &broke).await;
    d.wait_for(Topic::PaymentRefunded, &gizmo).await;
    d.wait_for(Topic::PaymentRefunded, &antarctica).await;
    d.wait_for(Topic::StockReleased, &antarctica).await;

    // The storefront forging what only a service may say is refused by the broker: a refund
    // of the shipped order, a payment and a reservation for an order nobody paid for.
    let forged = format!("{run}-forged");
    let attempts = [
        (Topic::OrderCancelled, happy.clone(), format!(r#"{{"order_id":"{happy}","reason":"customer_requested","detail":"forged"}}"#)),
        (Topic::PaymentCompleted, forged.clone(), format!(r#"{{"order_id":"{forged}","customer_id":"alice","amount_cents":1,"items":[{{"sku":"widget","quantity":50,"unit_price_cents":1}}],"ship_to":{{"country":"US"}}}}"#)),
        (Topic::StockReserved, forged.clone(), format!(r#"{{"order_id":"{forged}","items":[{{"sku":"widget","quantity":50,"unit_price_cents":1}}],"ship_to":{{"country":"US"}}}}"#)),
    ];
    for (topic, key, value) in &attempts {
        let refused = kcat_as(b, &d, "storefront", *topic, key, value).expect_err(&format!("the storefront wrote {topic}"));
        assert!(refused.contains("Topic authorization failed"), "{topic}: {refused}");
    }
    // So is the read-only principal, through `saga place`; and it can read everything.
    let (code, _, err) = saga_as(b, &d, "monitor", &["place", "--customer", "alice", "--item", "widget:1"]);
    assert_ne!(code, 0, "monitor placed an order");
    assert!(err.contains("cannot publish to") && err.contains("TopicAuthorizationFailed"), "{err}");
    let (code, trace, err) = saga_as(b, &d, "monitor", &["trace", &happy]);
    assert!(code == 0 && trace.contains("OrderCompleted"), "{trace}{err}");

    // The reuse defence with ACLs on: the storefront reusing an order id with another payload
    // is parked as a conflict, and nothing else happens to that order.
    kcat_as(b, &d, "storefront", Topic::OrderCreated, &happy, &order(&happy, "alice", "widget", 40, 1, "US")).unwrap();
    let conflict = wait_until("the reused order id on DeadLetter", || async {
        let letters = d.dead_letters().await;
        letters.into_iter().find(|l| l.key.as_deref() == Some(happy.as_str()) && l.error_code == "order_id_conflict").ok_or_else(|| "not yet".to_owned())
    }, || d.logs()).await;
    assert_eq!(conflict.service, "order-service");

    // A marker order on each partition: once each completes, every service has read past the
    // forgery attempts and the conflict.
    let markers: Vec<String> = (0..3)
        .map(|p| (0..).map(|i| format!("{run}-marker-{i}")).find(|id| partition_for_key(id.as_bytes(), 3) == p).unwrap())
        .collect();
    for m in &markers {
        kcat_as(b, &d, "storefront", Topic::OrderCreated, m, &order_json(m, "alice", 1, 100)).unwrap();
    }
    for m in &markers {
        d.wait_for(Topic::OrderCompleted, m).await;
    }

    // The monitor sees the services' lag with Kafka's own tool; their group commits were
    // allowed (the runtime says so once if not).
    let config = d.root.path().join("monitor.properties");
    std::fs::write(&config, format!(
        "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"monitor\" password=\"monitor-secret\";\nssl.truststore.type=PKCS12\nssl.truststore.location={}\nssl.truststore.password=saga-tls\n",
        b.tls("truststore.p12")
    )).unwrap();
    let group = format!("{}payment-service", d.prefix);
    let config = config.display().to_string();
    let rows = wait_until("the monitor to see payment-service at LAG 0", || async {
        let rows = support::group_rows(&d.kafka_tool(support::CONSUMER_GROUPS, &["--command-config", &config, "--describe", "--group", &group]));
        let inputs = [Topic::OrderCreated, Topic::OrderCancelled].map(|t| d.topic(t));
        let ready = rows.len() == 6 && rows.iter().all(|r| inputs.contains(&r.topic) && r.lag == Some(0));
        if ready { Ok(rows) } else { Err(format!("{rows:?}")) }
    }, || d.logs()).await;
    let placed = rows.iter().filter(|r| r.topic == d.topic(Topic::OrderCreated)).map(|r| r.log_end).sum::<i64>();
    assert_eq!(placed, 4 + 1 + 3, "the scenarios, the reused id and the markers: {rows:?}");
    for s in support::SERVICES {
        assert!(!d.services[s].log_text().contains("refuse this service's group offsets"), "{s}: {}", d.services[s].log_text());
    }
    d.stop_all().await;

    use Topic::*;
    let expect = |pairs: &[(Topic, usize)]| pairs.iter().copied().collect::<BTreeMap<_, _>>();
    // The happy order, and the reuse of its id: parked, with nothing else.
    assert_eq!(d.census(&happy).await, expect(&[(OrderCreated, 2), (PaymentCompleted, 1), (StockReserved, 1), (ShipmentScheduled, 1), (OrderCompleted, 1), (DeadLetter, 1)]));
    assert_eq!(d.census(&broke).await, expect(&[(OrderCreated, 1), (PaymentFailed, 1), (OrderCancelled, 1)]));
    assert_eq!(d.census(&gizmo).await, expect(&[(OrderCreated, 1), (PaymentCompleted, 1), (StockFailed, 1), (OrderCancelled, 1), (PaymentRefunded, 1)]));
    assert_eq!(d.census(&antarctica).await, expect(&[(OrderCreated, 1), (PaymentCompleted, 1), (StockReserved, 1), (ShippingFailed, 1), (OrderCancelled, 1), (PaymentRefunded, 1), (StockReleased, 1)]));
    assert!(d.census(&forged).await.is_empty(), "nothing about the forged order was written");

    // No money or stock moved but what the real orders moved.
    let wallets: BTreeMap<String, u64> = d.table("payment-service", "wallets");
    assert_eq!(wallets["alice"], 100_000 - 2 * 1250 - 3 * 100);
    assert_eq!(wallets["bob"], 1_000);
    let stock: BTreeMap<String, u32> = d.table("inventory-service", "stock");
    assert_eq!(stock, [("widget".to_owned(), 100 - 2 - 3), ("gadget".to_owned(), 5), ("gizmo".to_owned(), 0)].into());
}

/// Runs `binary` as `user` until it exits on its own; returns (exit code, stderr).
fn run_until_exit(b: &SecuredBroker, d: &Deployment, binary: &str, user: &str) -> (Option<i32>, String) {
    let dir = d.root.path().join(format!("{binary}-as-{user}"));
    let out = support::clean_env(&mut Command::new(bin_dir().join(binary)))
        .args(["--data-dir", &dir.display().to_string(), "--topic-prefix", &d.prefix, "--partitions", "3"])
        .args(b.flags_as(user, d.root.path()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn one_error_line(stderr: &str, binary: &str) -> String {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&format!("{binary}: error:"))).collect();
    assert_eq!(errors.len(), 1, "one error line, got: {stderr}");
    errors[0].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_its_acls_stops_at_start_up_with_one_line() {
    let b = broker();
    let d = deployment(b).await;

    // Before provisioning: the service may not even create or see its topics.
    let (code, stderr) = run_until_exit(b, &d, "payment-service", "payment-service");
    assert_eq!(code, Some(1), "{stderr}");
    let line = one_error_line(&stderr, "payment-service");
    assert!(line.contains("Kafka does not let this client, SASL_SSL (SCRAM-SHA-512 as payment-service), create or describe topic"), "{line}");

    provision(b, &d);
    // Another service's credentials: it may read and write, but not what this service must.
    let (code, stderr) = run_until_exit(b, &d, "inventory-service", "payment-service");
    assert_eq!(code, Some(1), "{stderr}");
    let line = one_error_line(&stderr, "inventory-service");
    assert!(
        line.contains("(SCRAM-SHA-512 as payment-service), read PaymentCompleted or write StockReserved, StockFailed, StockReleased: is it running with another service's credentials"),
        "{line}"
    );
    // The storefront's, on order-service: it may only write what customers write.
    let (code, stderr) = run_until_exit(b, &d, "order-service", "storefront");
    assert_eq!(code, Some(1), "{stderr}");
    let line = one_error_line(&stderr, "order-service");
    assert!(line.contains("as storefront), create or describe topic"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_acls_refuse_later_stops_the_service_with_one_line() {
    use rskafka::client::acl::{AclBinding, AclOperation, AclPermissionType, PatternType, ResourceType};
    let b = broker();
    let mut d = deployment(b).await;
    provision(b, &d);
    d.start_all().await;

    // An operator denies payment-service its own topic under it (a DENY beats every ALLOW).
    let deny = AclBinding {
        resource_type: ResourceType::Topic,
        resource_name: d.topic(Topic::PaymentCompleted),
        pattern_type: PatternType::Literal,
        principal: "User:payment-service".to_owned(),
        host: "*".to_owned(),
        operation: AclOperation::Write,
        permission: AclPermissionType::Deny,
    };
    let created = d.client().controller_client().unwrap().create_acls(&[deny]).await.unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let id = format!("{}-denied", run_id());
    kcat_as(b, &d, "storefront", Topic::OrderCreated, &id, &order_json(&id, "alice", 1, 100)).unwrap();
    // It stops at the refused write, with one line, instead of retrying it forever; the others
    // go on.
    let status = d.service("payment-service").exited(support::TEST_TIMEOUT, "stop at its refused write").await;
    assert_eq!(status.code(), Some(1), "{}", d.logs());
    let log = d.services["payment-service"].log_text();
    let line = one_error_line(&log, "payment-service");
    assert!(line.contains(&format!("(SCRAM-SHA-512 as payment-service), write {}: is it running", d.topic(Topic::PaymentCompleted))), "{line}");
    d.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_commit_the_acls_refuse_is_logged_once_and_the_service_runs_on() {
    let b = broker();
    let mut d = deployment(b).await;
    provision(b, &d);
    // A group its ACLs do not cover.
    d.service("payment-service").args.extend(["--group-id".to_owned(), "somebody-elses-group".to_owned()]);
    d.start_all().await;
    let run = run_id();
    for i in 0..3 {
        let id = format!("{run}-{i}");
        kcat_as(b, &d, "storefront", Topic::OrderCreated, &id, &order_json(&id, "alice", 1, 100)).unwrap();
        d.wait_for(Topic::OrderCompleted, &id).await;
    }
    let log = d.services["payment-service"].log_text();
    let warned = log.lines().filter(|l| l.contains("refuse this service's group offsets")).count();
    assert_eq!(warned, 1, "logged once:\n{log}");
    assert!(log.contains("group=\"somebody-elses-group\"") || log.contains("group=somebody-elses-group"), "{log}");
    d.stop_all().await;
}
