//! Kafka as companies run it: a broker with a SASL_SSL listener (SCRAM and PLAIN users, a
//! throwaway CA) and a mutual-TLS listener, made by `scripts/kafka.sh`. The whole saga runs
//! over SASL_SSL; `saga` reads over mutual TLS; a wrong password and an untrusted CA stop a
//! service at start-up with one line.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use shared_events::*;
use support::{bin_dir, Deployment, SecuredBroker};

fn broker() -> &'static SecuredBroker {
    static BROKER: OnceLock<SecuredBroker> = OnceLock::new();
    BROKER.get_or_init(SecuredBroker::start_new)
}

fn order_json(id: &str) -> String {
    format!(r#"{{"order_id":"{id}","customer_id":"alice","items":[{{"sku":"widget","quantity":1,"unit_price_cents":100}}],"ship_to":{{"country":"US"}}}}"#)
}

fn password_file(dir: &Path, password: &str) -> PathBuf {
    let file = dir.join(format!("password-{password}"));
    std::fs::write(&file, format!("{password}\n")).unwrap();
    file
}

/// The flags that connect a binary to the SASL_SSL listener with `mechanism`.
fn sasl_ssl(b: &SecuredBroker, mechanism: &str, password: &Path) -> Vec<String> {
    [
        "--bootstrap-servers", &b.sasl_ssl(),
        "--security-protocol", "SASL_SSL",
        "--ssl-ca-location", &b.tls("ca.pem"),
        "--sasl-mechanism", mechanism,
        "--sasl-username", "saga",
        "--sasl-password-file", &password.display().to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Points a prepared service at the SASL_SSL listener instead of PLAINTEXT.
fn secure(d: &mut Deployment, service: &str, flags: Vec<String>) {
    let args = &mut d.service(service).args;
    let at = args.iter().position(|a| a == "--bootstrap-servers").unwrap();
    args.drain(at..at + 2);
    args.extend(flags);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_runs_over_sasl_ssl_and_saga_reads_over_mutual_tls() {
    let b = broker();
    let mut d = Deployment::on(&b.plaintext(), 3, &[]).await;
    let password = password_file(d.root.path(), "saga-secret");
    // Every mechanism the issue names, one service or two each.
    for (service, mechanism) in [
        ("order-service", "PLAIN"),
        ("payment-service", "SCRAM-SHA-256"),
        ("inventory-service", "SCRAM-SHA-512"),
        ("shipping-service", "SCRAM-SHA-512"),
    ] {
        secure(&mut d, service, sasl_ssl(b, mechanism, &password));
    }
    d.start_all().await;
    for s in support::SERVICES {
        assert!(d.services[s].log_text().contains("security=SASL_SSL"), "{s} says how it connects");
        assert!(!d.services[s].log_text().contains("saga-secret"), "{s} never logs the password");
    }

    // As the README types it: kcat authenticating as a client of the SASL_SSL listener.
    let id = format!("{}-secured", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut kcat = Command::new("kcat")
        .args(["-P", "-b", &b.sasl_ssl(), "-t", &d.topic(Topic::OrderCreated), "-K", "\t", "-X", "partitioner=murmur2_random"])
        .args(["-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanisms=PLAIN", "-X", "sasl.username=saga", "-X", "sasl.password=saga-secret"])
        .args(["-X", &format!("ssl.ca.location={}", b.tls("ca.pem"))])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        writeln!(kcat.stdin.take().unwrap(), "{id}\t{}", order_json(&id)).unwrap();
    }
    assert!(kcat.wait().unwrap().success(), "kcat over SASL_SSL");
    d.wait_for(Topic::OrderCompleted, &id).await;

    // `saga` over mutual TLS, on the listener that refuses clients without a certificate.
    let out = support::clean_env(&mut Command::new(bin_dir().join("saga")))
        .args(["--bootstrap-servers", &b.ssl(), "--topic-prefix", &d.prefix, "--color", "never"])
        .args(["--security-protocol", "SSL", "--ssl-ca-location", &b.tls("ca.pem")])
        .args(["--ssl-certificate-location", &b.tls("client.pem"), "--ssl-key-location", &b.tls("client.key")])
        .args(["trace", &id])
        .output()
        .unwrap();
    let trace = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && trace.contains("OrderCompleted"), "{trace}{}", String::from_utf8_lossy(&out.stderr));
    d.stop_all().await;
}

/// Runs `payment-service` with `flags` until it exits on its own; returns (exit code, stderr).
fn run_until_exit(dir: &Path, flags: &[String]) -> (Option<i32>, String) {
    let stderr = dir.join("stderr.log");
    let mut child = support::clean_env(&mut Command::new(bin_dir().join("payment-service")))
        .args(["--data-dir", &dir.join("payment").display().to_string()])
        .args(flags)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + support::TEST_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("payment-service kept running with bad security settings:\n{}", std::fs::read_to_string(&stderr).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status.code(), std::fs::read_to_string(&stderr).unwrap())
}

/// The one line a refused start-up ends with (the log line before it says the same).
fn last_line(stderr: &str) -> &str {
    stderr.lines().last().unwrap_or_default()
}

#[test]
fn a_wrong_password_stops_a_service_at_start_up_with_one_line() {
    let b = broker();
    let dir = tempfile::tempdir().unwrap();
    let wrong = password_file(dir.path(), "not-the-password");
    for mechanism in ["SCRAM-SHA-512", "PLAIN"] {
        let (code, stderr) = run_until_exit(dir.path(), &sasl_ssl(b, mechanism, &wrong));
        assert_eq!(code, Some(1), "{stderr}");
        let line = last_line(&stderr);
        assert!(line.starts_with("payment-service: error: cannot connect to Kafka at 127.0.0.1:"), "{stderr}");
        assert!(line.contains(&format!("SASL_SSL ({mechanism} as saga)")) && line.contains("authentication failed"), "{line}");
        assert!(!stderr.contains("not-the-password"), "the password is never printed");
    }
}

#[test]
fn an_untrusted_certificate_stops_a_service_at_start_up_with_one_line() {
    let b = broker();
    let dir = tempfile::tempdir().unwrap();
    let password = password_file(dir.path(), "saga-secret");
    let mut flags = sasl_ssl(b, "SCRAM-SHA-512", &password);
    let ca = flags.iter().position(|f| f == "--ssl-ca-location").unwrap() + 1;
    flags[ca] = b.tls("other-ca.pem");
    let (code, stderr) = run_until_exit(dir.path(), &flags);
    assert_eq!(code, Some(1), "{stderr}");
    let line = last_line(&stderr);
    assert!(line.contains("TLS with 127.0.0.1:") && line.contains("invalid peer certificate"), "{line}");
}

#[test]
fn a_bad_security_flag_stops_a_service_before_it_connects() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_until_exit(dir.path(), &["--sasl-username".into(), "saga".into()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.trim(), "payment-service: error: --sasl-username needs --security-protocol SASL_PLAINTEXT or SASL_SSL (it is PLAINTEXT)");
}
