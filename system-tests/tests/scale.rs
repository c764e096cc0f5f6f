//! Scale-out by partitions: two instances each of payment and inventory share three
//! partitions; every saga stays correct and both instances of each do work.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use support::workload::{self, Outcome};
use support::Deployment;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_each_of_payment_and_inventory() {
    let mut d = Deployment::new(3, &[]).await;
    workload::use_fault_seeds(&mut d);
    d.scale("payment-service", 2);
    d.scale("inventory-service", 2);
    d.start_all().await;

    // Instance 1 of 2 owns partitions 0 and 2; instance 2 owns partition 1.
    for (label, owned) in [("payment-service#1", "[0, 2]"), ("payment-service#2", "[1]"), ("inventory-service#1", "[0, 2]"), ("inventory-service#2", "[1]")] {
        let log = d.services[label].log_text();
        assert!(log.contains(&format!("partitions={owned}")), "{label} should own {owned}:\n{log}");
    }

    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let orders = workload::plan(run, 120);
    for order in &orders {
        workload::publish(&d, order).await;
    }
    support::wait_until("every saga to finish", || workload::check_topics(&d, &orders), || d.logs()).await;
    d.stop_all().await;

    // Both instances of each service did work.
    for label in ["payment-service#1", "payment-service#2", "inventory-service#1", "inventory-service#2"] {
        let log = d.services[label].log_text();
        let steps = log.matches("→ Payment").count() + log.matches("→ Stock").count();
        assert!(steps > 0, "{label} did no work");
    }

    // Each instance keeps its own wallets and stock (seeded alike): together they add up.
    let completed: Vec<_> = orders.iter().filter(|o| o.outcome == Outcome::Completed).collect();
    let spent: u64 = completed.iter().map(|o| o.total()).sum();
    let shipped: u64 = completed.iter().map(|o| o.widgets()).sum();
    let alice: u64 = ["payment-service#1", "payment-service#2"].iter()
        .map(|l| d.table::<u64>(l, "wallets")["alice"]).sum();
    assert_eq!(alice, 2 * workload::ALICE - spent);
    let widgets: u64 = ["inventory-service#1", "inventory-service#2"].iter()
        .map(|l| u64::from(d.table::<u32>(l, "stock")["widget"])).sum();
    assert_eq!(widgets, 2 * workload::WIDGETS - shipped);
}
