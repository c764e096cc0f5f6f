//! compose.yaml, checked by a real Compose implementation (`docker compose` or Debian's
//! `docker-compose`; `config` needs no Docker engine), and against the saga's contract.
//! Building the image needs an engine and is not tested here (see the README).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use std::process::Command;

use shared_events::Topic;
use support::{repo_root, SERVICES, TRAVEL_SERVICES};

fn compose(args: &[&str]) -> std::process::Output {
    compose_files(&["compose.yaml"], args)
}

fn compose_files(files: &[&str], args: &[&str]) -> std::process::Output {
    let v2 = Command::new("docker").args(["compose", "version"]).output().is_ok_and(|o| o.status.success());
    let mut cmd = if v2 {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new("docker-compose")
    };
    for file in files {
        cmd.arg("-f").arg(repo_root().join(file));
    }
    cmd.args(args).output().expect("a Compose implementation (docker compose, or apt-get install docker-compose)")
}

#[test]
fn compose_file_is_valid_and_runs_the_whole_saga() {
    let check = compose(&["config", "-q"]);
    assert!(check.status.success(), "compose.yaml is invalid:\n{}", String::from_utf8_lossy(&check.stderr));
    let services = String::from_utf8(compose(&["config", "--services"]).stdout).unwrap();
    for s in SERVICES.iter().chain(&TRAVEL_SERVICES).chain(&["orders-view", "kafka", "topics", "prometheus"]) {
        assert!(services.lines().any(|l| l == *s), "compose.yaml lacks {s}:\n{services}");
    }
}

#[test]
fn the_secured_override_runs_each_service_as_its_own_principal_after_saga_acl() {
    let files = ["compose.yaml", "compose.secured.yaml"];
    let check = compose_files(&files, &["config", "-q"]);
    assert!(check.status.success(), "compose.secured.yaml is invalid:\n{}", String::from_utf8_lossy(&check.stderr));
    let merged = String::from_utf8(compose_files(&files, &["config"]).stdout).unwrap();
    let blocks = service_blocks(&merged);
    for s in SERVICES.into_iter().chain(TRAVEL_SERVICES).chain(["orders-view"]) {
        let body = &blocks[s];
        assert!(body.contains(&format!("KAFKA_SASL_USERNAME: {s}")), "{s} runs as {s}:\n{body}");
        let password = body.lines().find_map(|l| l.trim().strip_prefix("KAFKA_SASL_PASSWORD: ")).unwrap_or_else(|| panic!("{s} has a password:\n{body}"));
        let user = format!("user_{s}=\"{password}\"");
        assert!(blocks["kafka"].contains(&user), "the broker knows {s} by that password ({user}):\n{}", blocks["kafka"]);
        assert!(body.contains("KAFKA_SECURITY_PROTOCOL: SASL_SSL") && body.contains("KAFKA_SSL_CA_LOCATION: /tls/ca.pem"), "{s}:\n{body}");
        assert!(body.contains("\n      acl:\n        condition: service_completed_successfully"), "{s} starts after saga acl:\n{body}");
    }
    assert!(merged.contains("StandardAuthorizer") && merged.contains("KAFKA_SUPER_USERS: User:admin"), "{merged}");
    // Indentation differs between Compose implementations: compare the lines trimmed.
    let acl: Vec<&str> = blocks["acl"].lines().map(str::trim).collect();
    assert!(acl.windows(2).any(|w| w == ["- saga", "- acl"]), "the acl container runs `saga acl`:\n{}", blocks["acl"]);
}

/// Each service's lines in `config`'s output, by name: under `services:`, a service starts at
/// a line indented by exactly two spaces.
fn service_blocks(merged: &str) -> std::collections::BTreeMap<String, String> {
    let mut blocks = std::collections::BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_services = false;
    for line in merged.lines() {
        if !line.starts_with(' ') {
            in_services = line == "services:";
            current = None;
            continue;
        }
        if !in_services {
            continue;
        }
        if let Some(name) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')).and_then(|l| l.strip_suffix(':')) {
            current = Some(name.to_owned());
            blocks.insert(name.to_owned(), String::new());
        } else if let Some(name) = &current {
            let body = blocks.get_mut(name).unwrap();
            body.push('\n');
            body.push_str(line);
        }
    }
    blocks
}

#[test]
fn the_secured_override_makes_its_certificates_with_keytool_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash").arg(repo_root().join("scripts/compose/tls.sh")).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list = Command::new("keytool")
        .args(["-list", "-v", "-storetype", "PKCS12", "-storepass", "saga-tls", "-keystore"])
        .arg(dir.path().join("broker.keystore.p12"))
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    // The broker's key with a certificate the CA signed, for the names clients connect to.
    assert!(list.contains("Certificate chain length: 2") && list.contains("Issuer: CN=saga compose throwaway CA"), "{list}");
    for name in ["DNSName: kafka", "DNSName: localhost", "IPAddress: 127.0.0.1"] {
        assert!(list.contains(name), "{name} missing:\n{list}");
    }
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    let admin = std::fs::read_to_string(dir.path().join("admin.properties")).unwrap();
    assert!(admin.contains("security.protocol=SASL_SSL") && admin.contains(&format!("ssl.truststore.location={}/truststore.p12", dir.path().display())), "{admin}");
}

#[test]
fn prometheus_scrapes_every_service_where_it_serves_its_metrics() {
    let merged = String::from_utf8(compose(&["config"]).stdout).unwrap();
    let blocks = service_blocks(&merged);
    let prometheus: Vec<&str> = blocks["prometheus"].lines().map(str::trim).collect();
    assert!(prometheus.iter().any(|l| l.starts_with("image: prom/prometheus:")), "the official image:\n{}", blocks["prometheus"]);
    // Compose v1 prints a mount in one line, v2 in source and target lines.
    let mounted = blocks["prometheus"].contains("/scripts/compose/prometheus.yml") && blocks["prometheus"].contains("/etc/prometheus/prometheus.yml");
    assert!(mounted, "the scrape config is mounted where the image reads it:\n{}", blocks["prometheus"]);
    let scrape = std::fs::read_to_string(repo_root().join("scripts/compose/prometheus.yml")).unwrap();
    for s in SERVICES.into_iter().chain(TRAVEL_SERVICES).chain(["orders-view"]) {
        let body = &blocks[s];
        let port = body
            .lines()
            .find_map(|l| l.trim().strip_prefix("SAGA_METRICS_ADDR: 0.0.0.0:"))
            .unwrap_or_else(|| panic!("{s} serves metrics on every interface:\n{body}"));
        let job = format!("  - job_name: {s}\n    static_configs:\n      - targets: [\"{s}:{port}\"]\n");
        assert!(scrape.contains(&job), "Prometheus scrapes {s} on port {port}:\n{scrape}");
    }
    let check = Command::new("promtool").arg("check").arg("config").arg(repo_root().join("scripts/compose/prometheus.yml")).output().unwrap();
    assert!(check.status.success(), "{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
}

#[test]
fn compose_creates_every_topic_of_both_sagas() {
    let topics = std::fs::read_to_string(repo_root().join("compose.yaml")).unwrap();
    // The words of the topics container's `for t in …; do` loop.
    let listed: std::collections::BTreeSet<&str> = topics
        .split("for t in")
        .nth(1)
        .and_then(|rest| rest.split("; do").next())
        .unwrap_or_else(|| panic!("the topics container loops over the topics:\n{topics}"))
        .split(|c: char| c.is_whitespace() || c == '\\')
        .filter(|w| !w.is_empty())
        .collect();
    let expected: std::collections::BTreeSet<&str> = Topic::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(listed, expected, "compose.yaml creates exactly shared-events' topics");
}

#[test]
fn dockerfile_is_multi_stage_and_runs_as_non_root() {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    assert!(text.matches("FROM ").count() >= 2, "multi-stage build expected");
    let user = text.lines().rev().find(|l| l.starts_with("USER ")).expect("a USER line");
    assert!(!user.contains("root") && !user.ends_with(" 0"), "runs as {user}");
    for s in SERVICES.iter().chain(&TRAVEL_SERVICES).chain(&["orders-view", "saga"]) {
        assert!(text.contains(&format!("target/release/{s}")), "image lacks {s}");
        assert!(s == &"saga" || text.contains(&format!("-p {s} ")), "the image builds {s}");
    }
}
