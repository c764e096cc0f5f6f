//! Every binary's command line: `--help`, and bad flags or config stop it at start-up with one
//! readable line and a non-zero exit. No broker needed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use std::process::Command;

use support::{bin_dir, SERVICES};

fn run(service: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin_dir().join(service)).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_binary_has_help() {
    for s in SERVICES {
        let (code, stdout, _) = run(s, &["--help"]);
        assert_eq!(code, 0, "{s}");
        for flag in ["--bootstrap-servers", "--data-dir", "--log-format", "--partitions", "--seed", "KAFKA_BOOTSTRAP_SERVERS"] {
            assert!(stdout.contains(flag), "{s} --help lacks {flag}:\n{stdout}");
        }
    }
}

#[test]
fn bad_flags_stop_with_one_readable_line() {
    for s in SERVICES {
        let (code, _, stderr) = run(s, &["--bootstrap-servers", "no-port-here"]);
        assert_eq!(code, 2, "{s}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{s}: {stderr}");
        assert!(stderr.contains("no-port-here") && stderr.contains("host:port"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");

        let (code, _, stderr) = run(s, &["--log-format", "xml"]);
        assert_eq!(code, 2, "{s}: {stderr}");
        assert!(stderr.contains("xml") && !stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_metrics_address_that_cannot_serve_stops_with_one_readable_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, _, stderr) =
        run("shipping-service", &["--metrics-addr", &addr, "--data-dir", data.to_str().unwrap(), "--bootstrap-servers", "127.0.0.1:1"]);
    assert_eq!(code, 1, "{stderr}");
    let line = stderr.trim();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains(&format!("cannot serve metrics on {addr}")) && !line.contains("panicked"), "{line}");
    assert!(!data.exists(), "it stopped before touching its store");

    let (code, _, stderr) = run("shipping-service", &["--metrics-addr", "9601"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("9601") && stderr.contains("HOST:PORT"), "{stderr}");
}

#[test]
fn a_bad_seed_file_stops_with_one_readable_line() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.json");
    std::fs::write(&seed, r#"{"wallets": {"alice": -5}}"#).unwrap();
    let data = dir.path().join("data");
    let (code, _, stderr) = run(
        "payment-service",
        &["--seed", seed.to_str().unwrap(), "--data-dir", data.to_str().unwrap(), "--bootstrap-servers", "127.0.0.1:1"],
    );
    assert_eq!(code, 1, "{stderr}");
    let line = stderr.trim();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("seed.json") && line.contains("invalid value"), "{line}");

    let (code, _, stderr) = run("payment-service", &["--seed", "/does/not/exist.json", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/does/not/exist.json"), "{stderr}");
}
