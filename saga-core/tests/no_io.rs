//! The promise ARCHITECTURE.md makes, held by the dependency graph: the step and every
//! service's rules build without anything that does I/O, so no rule can reach sled or Kafka.

use std::collections::BTreeSet;
use std::process::Command;

/// Crates whose presence would mean rules could do I/O: the store, the Kafka client, the async
/// runtime and the HTTP server.
const IO_CRATES: &[&str] = &["sled", "rskafka", "tokio", "mio", "socket2", "hyper", "axum", "saga-runtime"];

/// The crates that must stay free of them.
const PURE: &[&str] = &[
    "saga-core",
    "order-rules",
    "payment-rules",
    "inventory-rules",
    "shipping-rules",
    "orders-view-rules",
    "reservations",
    "trip-rules",
    "flight-rules",
    "hotel-rules",
    "car-rules",
    "billing-rules",
];

/// Every crate `package` builds with (normal dependencies, for this host), by name.
fn dependencies(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["tree", "--frozen", "--edges", "normal", "--prefix", "none", "--package", package, "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo tree: {e}"));
    assert!(out.status.success(), "cargo tree -p {package} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect()
}

#[test]
fn the_step_and_the_rules_depend_on_nothing_that_does_io() {
    for pure in PURE {
        let reached = dependencies(pure);
        assert!(reached.contains("shared-events"), "{pure}: cargo tree found {reached:?}, not even shared-events");
        let io: Vec<&&str> = IO_CRATES.iter().filter(|c| reached.contains(**c)).collect();
        assert!(io.is_empty(), "{pure} depends on {io:?}: rules must stay free of I/O (ARCHITECTURE.md)");
    }
    // And the check can fail: the runtime has all of them.
    let runtime = dependencies("saga-runtime");
    assert!(["sled", "rskafka", "tokio"].iter().all(|c| runtime.contains(*c)), "cargo tree found {runtime:?} for saga-runtime");
}
