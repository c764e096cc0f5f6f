//! Operating the saga with Prometheus: a real Prometheus server (Debian's `prometheus`)
//! scrapes the four services' `/metrics`; what it reports is what happened, and every
//! exposition passes `promtool check metrics`. `/readyz` fails while the broker is down and
//! recovers after; `/healthz` stays up meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shared_events::*;
use support::{http_get, order_json, run_id, wait_until, DedicatedBroker, Deployment, SERVICES};

/// Each service on a port of its own choosing (it logs where): no two tests can collide.
const METRICS_ON_ANY_PORT: [&str; 2] = ["--metrics-addr", "127.0.0.1:0"];

/// A Prometheus server scraping `targets` (job name → `http://host:port`) every second.
struct Prometheus {
    child: Child,
    url: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(targets: &BTreeMap<String, String>) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let mut config = String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
        for (job, url) in targets {
            let target = url.trim_start_matches("http://");
            config += &format!("  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n");
        }
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let log = dir.path().join("prometheus.log");
        // A free port can be taken between choosing it and Prometheus binding it: choose again.
        for _ in 0..5 {
            let [port] = support::free_ports::<1>();
            let mut child = Command::new("prometheus")
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap()) // it logs to stderr
                .spawn()
                .expect("Debian's prometheus package (scripts/test.sh installs it)");
            let url = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + support::TEST_TIMEOUT;
            while Instant::now() < deadline {
                if http_get(&format!("{url}/-/ready")).is_ok_and(|(status, _)| status == 200) {
                    return Prometheus { child, url, log, _dir: dir };
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("Prometheus did not start:\n{}", support::tail(&log, 20));
    }

    /// The single value of an instant query, if it has one.
    fn value(&self, expr: &str) -> Result<f64, String> {
        let encoded: String = expr.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
        let (status, body) = http_get(&format!("{}/api/v1/query?query={encoded}", self.url))?;
        let answer: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{status} {body}: {e}"))?;
        let result = answer["data"]["result"].as_array().ok_or_else(|| format!("{status} {body}"))?;
        match result.as_slice() {
            [one] => one["value"][1].as_str().and_then(|v| v.parse().ok()).ok_or_else(|| body.clone()),
            _ => Err(format!("{expr}: {body}")),
        }
    }

    /// Waits until `expr` evaluates to `want`.
    async fn wait_for(&self, expr: &str, want: f64, context: impl Fn() -> String) {
        wait_until(&format!("Prometheus: {expr} == {want}"), || async {
            match self.value(expr) {
                Ok(v) if v == want => Ok(()),
                Ok(v) => Err(format!("{expr} = {v}")),
                Err(e) => Err(e),
            }
        }, || format!("{}\n--- prometheus ---\n{}", context(), support::tail(&self.log, 10))).await;
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `promtool check metrics` on an exposition: its complaints, if any.
fn promtool_check(exposition: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package)");
    child.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_what_the_saga_did() {
    let mut d = Deployment::new(3, &METRICS_ON_ANY_PORT).await;
    d.start_all().await;
    let targets: BTreeMap<String, String> =
        SERVICES.iter().map(|s| (s.to_string(), d.services[*s].metrics_url().expect("it logs where it serves"))).collect();
    let prometheus = Prometheus::start(&targets);
    prometheus.wait_for("sum(up)", 4.0, || d.logs()).await;

    // Twelve orders that complete, one from a customer payment does not know, one poison record.
    let run = run_id();
    let good: Vec<String> = (0..12).map(|i| format!("{run}-{i}")).collect();
    for id in &good {
        d.kcat_publish(Topic::OrderCreated, id, &order_json(id, "alice", 1, 100));
    }
    let stranger = format!("{run}-stranger");
    d.kcat_publish(Topic::OrderCreated, &stranger, &order_json(&stranger, "mallory", 1, 100));
    d.kcat_publish(Topic::OrderCreated, &format!("{run}-poison"), "{not json");
    for id in &good {
        d.wait_for(Topic::OrderCompleted, id).await;
    }
    d.wait_for(Topic::OrderCancelled, &stranger).await;

    let logs = || d.logs();
    prometheus.wait_for("sum(saga_sagas_completed_total)", good.len() as f64, logs).await;
    prometheus.wait_for(r#"saga_sagas_cancelled_total{reason="payment_failed"}"#, 1.0, logs).await;
    prometheus.wait_for(r#"sum(saga_sagas_cancelled_total{reason!="payment_failed"})"#, 0.0, logs).await;
    prometheus.wait_for("saga_sagas_in_flight + saga_compensations_awaited", 0.0, logs).await;
    // Payment read every OrderCreated, the poison included, and parked the poison.
    prometheus.wait_for(r#"sum(saga_records_consumed_total{job="payment-service",topic="OrderCreated"})"#, 14.0, logs).await;
    prometheus.wait_for(r#"saga_dead_letters_total{job="payment-service",reason="invalid_json"}"#, 1.0, logs).await;
    // What the services say they parked is what DeadLetter holds, and what they wrote there.
    let letters = wait_until("both readers of OrderCreated to park the poison", || async {
        let letters = d.dead_letters().await;
        if letters.len() == 2 { Ok(letters.len()) } else { Err(format!("{letters:?}")) }
    }, logs).await;
    prometheus.wait_for("sum(saga_dead_letters_total)", letters as f64, logs).await;
    prometheus.wait_for(r#"sum(saga_events_emitted_total{topic="DeadLetter"})"#, letters as f64, logs).await;
    prometheus.wait_for(r#"sum(saga_events_emitted_total{topic="OrderCompleted"})"#, good.len() as f64, logs).await;
    // Idle: nothing behind, nothing waiting to be published; every store commit was timed.
    prometheus.wait_for("max(saga_consumer_lag)", 0.0, logs).await;
    prometheus.wait_for("sum(saga_outbox_events)", 0.0, logs).await;
    prometheus.wait_for("count(saga_store_commit_duration_seconds_count > 0)", 4.0, logs).await;

    for (service, url) in &targets {
        let (status, exposition) = http_get(&format!("{url}/metrics")).unwrap();
        assert_eq!(status, 200, "{service}");
        promtool_check(&exposition).unwrap_or_else(|e| panic!("{service}'s exposition fails promtool check metrics: {e}"));
        assert_eq!(http_get(&format!("{url}/readyz")).unwrap(), (200, "ready\n".to_owned()), "{service}");
        assert_eq!(http_get(&format!("{url}/healthz")).unwrap(), (200, "ok\n".to_owned()), "{service}");
    }
    d.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_the_broker_is_down_and_recovers_after() {
    let broker = DedicatedBroker::start_new();
    let mut d = Deployment::on(&broker.bootstrap(), 1, &METRICS_ON_ANY_PORT).await;
    d.service("payment-service").start();
    d.wait_ready("payment-service").await;
    let url = d.services["payment-service"].metrics_url().unwrap();
    let probe = |path: &str| http_get(&format!("{url}{path}"));
    wait_until("/readyz once caught up", || async {
        match probe("/readyz") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    }, || d.logs()).await;

    broker.stop();
    let stopped = Instant::now();
    let body = wait_until("/readyz to fail with the broker down", || async {
        match probe("/readyz") {
            Ok((503, body)) => Ok(body),
            other => Err(format!("{other:?}")),
        }
    }, || d.logs()).await;
    // The fetch's long poll (250 ms) plus the stall it allows (5 s), and slack for a busy machine.
    assert!(stopped.elapsed() < Duration::from_secs(12), "failed only after {:?}", stopped.elapsed());
    assert!(body.contains("fetch stalled") && body.contains("OrderCreated/0"), "{body}");
    assert_eq!(probe("/healthz").unwrap(), (200, "ok\n".to_owned()), "waiting for the broker is alive");

    broker.start();
    wait_until("/readyz to recover with the broker back", || async {
        match probe("/readyz") {
            Ok((200, body)) => Ok(body),
            other => Err(format!("{other:?}")),
        }
    }, || d.logs()).await;
    assert!(d.service("payment-service").term().await.success());
    let log = d.services["payment-service"].log_text();
    assert!(log.contains("Connection refused") && log.contains("retrying"), "the outage is in the log too:\n{log}");
}
