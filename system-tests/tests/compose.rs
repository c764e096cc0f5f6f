//! compose.yaml, checked by a real Compose implementation (`docker compose` or Debian's
//! `docker-compose`; `config` needs no Docker engine), and against the saga's contract.
//! Building the image needs an engine and is not tested here (see the README).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use std::process::Command;

use shared_events::Topic;
use support::{repo_root, SERVICES};

fn compose(args: &[&str]) -> std::process::Output {
    let file = repo_root().join("compose.yaml");
    let file = file.to_str().unwrap();
    let v2 = Command::new("docker").args(["compose", "version"]).output().is_ok_and(|o| o.status.success());
    let mut cmd = if v2 {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new("docker-compose")
    };
    cmd.args(["-f", file]).args(args).output().expect("a Compose implementation (docker compose, or apt-get install docker-compose)")
}

#[test]
fn compose_file_is_valid_and_runs_the_whole_saga() {
    let check = compose(&["config", "-q"]);
    assert!(check.status.success(), "compose.yaml is invalid:\n{}", String::from_utf8_lossy(&check.stderr));
    let services = String::from_utf8(compose(&["config", "--services"]).stdout).unwrap();
    for s in SERVICES.iter().chain(&["kafka", "topics"]) {
        assert!(services.lines().any(|l| l == *s), "compose.yaml lacks {s}:\n{services}");
    }
}

#[test]
fn compose_creates_every_saga_topic() {
    let text = std::fs::read_to_string(repo_root().join("compose.yaml")).unwrap();
    for t in Topic::ALL {
        assert!(text.contains(t.as_str()), "compose.yaml does not create {t}");
    }
}

#[test]
fn dockerfile_is_multi_stage_and_runs_as_non_root() {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    assert!(text.matches("FROM ").count() >= 2, "multi-stage build expected");
    let user = text.lines().rev().find(|l| l.starts_with("USER ")).expect("a USER line");
    assert!(!user.contains("root") && !user.ends_with(" 0"), "runs as {user}");
    for s in SERVICES {
        assert!(text.contains(&format!("target/release/{s}")), "image lacks {s}");
    }
}
