//! A stream of orders with known outcomes, and the saga's invariants checked against the
//! topics and the services' stores.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use shared_events::partitioner::partition_for_key;
use shared_events::*;

use super::Deployment;

/// Seed data for fault tests: plenty of money and widgets, so outcomes depend only on the plan.
pub const WALLETS_SEED: &str = r#"{"wallets": {"alice": 1000000000, "bob": 1000}}"#;
pub const STOCK_SEED: &str = r#"{"stock": {"widget": 1000000, "gadget": 5, "gizmo": 0}}"#;
pub const ALICE: u64 = 1_000_000_000;
pub const BOB: u64 = 1_000;
pub const WIDGETS: u64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    PaymentFailed,
    StockFailed,
    ShippingFailed,
}

impl Outcome {
    /// The event types the saga of an order with this outcome leaves on the topics, once each.
    pub fn expected_topics(self) -> BTreeSet<Topic> {
        use Topic::*;
        let list: &[Topic] = match self {
            Outcome::Completed => &[OrderCreated, PaymentCompleted, StockReserved, ShipmentScheduled, OrderCompleted],
            Outcome::PaymentFailed => &[OrderCreated, PaymentFailed, OrderCancelled],
            Outcome::StockFailed => &[OrderCreated, PaymentCompleted, StockFailed, OrderCancelled, PaymentRefunded],
            Outcome::ShippingFailed => &[
                OrderCreated, PaymentCompleted, StockReserved, ShippingFailed, OrderCancelled, PaymentRefunded, StockReleased,
            ],
        };
        list.iter().copied().collect()
    }
}

#[derive(Debug, Clone)]
pub struct PlannedOrder {
    pub id: String,
    pub outcome: Outcome,
    pub event: OrderCreated,
    /// Published without headers, as a person with kcat would.
    pub hand_typed: bool,
}

impl PlannedOrder {
    pub fn total(&self) -> u64 {
        self.event.total_cents().unwrap()
    }

    pub fn widgets(&self) -> u64 {
        self.event.items.iter().filter(|l| l.sku == "widget").map(|l| u64::from(l.quantity)).sum()
    }
}

/// `n` orders: 60% complete, 15% payment fails, 10% stock fails, 15% shipping fails;
/// every third one hand-typed.
pub fn plan(run: &str, n: usize) -> Vec<PlannedOrder> {
    (0..n)
        .map(|i| {
            let outcome = match i % 20 {
                0..=11 => Outcome::Completed,
                12..=14 => Outcome::PaymentFailed,
                15..=16 => Outcome::StockFailed,
                _ => Outcome::ShippingFailed,
            };
            let (customer, sku, country) = match outcome {
                Outcome::Completed => ("alice", "widget", ["US", "DE", "JP"][i % 3]),
                Outcome::PaymentFailed => ("bob", "widget", "US"),
                Outcome::StockFailed => ("alice", "gizmo", "US"),
                Outcome::ShippingFailed => ("alice", "widget", "AQ"),
            };
            let quantity = 1 + (i % 3) as u32;
            // bob's orders always exceed his 1000 cents.
            let unit_price_cents = if customer == "bob" { 2_000 } else { 100 + (i as u64 * 37) % 900 };
            let id = format!("{run}-{i:05}");
            let event = OrderCreated {
                order_id: id.as_str().into(),
                customer_id: customer.into(),
                items: vec![LineItem { sku: sku.into(), quantity, unit_price_cents }],
                ship_to: Address { country: country.into(), ..Address::default() },
            };
            PlannedOrder { id, outcome, event, hand_typed: i % 3 == 0 }
        })
        .collect()
}

/// Publishes one planned order (with headers, or hand-typed without).
pub async fn publish(d: &Deployment, order: &PlannedOrder) {
    let envelope = Envelope::root(order.event.clone().into(), now_ms());
    if order.hand_typed {
        let partition = partition_for_key(order.id.as_bytes(), d.partitions);
        d.produce(Topic::OrderCreated, partition, Some(order.id.clone().into_bytes()), Event::OrderCreated(order.event.clone()).to_json(), BTreeMap::new()).await;
    } else {
        d.publish(&envelope).await;
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Distinct event ids per (order, topic), over every topic of the order saga.
pub async fn distinct_events(d: &Deployment) -> BTreeMap<String, BTreeMap<Topic, BTreeMap<EventId, Event>>> {
    let mut out: BTreeMap<String, BTreeMap<Topic, BTreeMap<EventId, Event>>> = BTreeMap::new();
    for topic in Topic::ORDER {
        if topic == Topic::DeadLetter {
            continue;
        }
        for seen in d.read(topic).await.into_iter().filter_map(Result::ok) {
            let Some(order) = seen.envelope.event.order_id() else { continue };
            out.entry(order.0.clone())
                .or_default()
                .entry(topic)
                .or_default()
                .insert(seen.envelope.meta.event_id, seen.envelope.event);
        }
    }
    out
}

/// Checks the topics: each order has exactly the events its outcome calls for, each once
/// (by event id), refunds equal charges and releases equal reservations.
/// `Err` describes the first orders that are not there yet (or are wrong).
pub async fn check_topics(d: &Deployment, orders: &[PlannedOrder]) -> Result<(), String> {
    let events = distinct_events(d).await;
    let mut problems = String::new();
    let mut count = 0;
    for order in orders {
        let empty = BTreeMap::new();
        let have = events.get(&order.id).unwrap_or(&empty);
        let topics: BTreeSet<Topic> = have.keys().copied().collect();
        let doubled: Vec<Topic> = have.iter().filter(|(_, ids)| ids.len() > 1).map(|(t, _)| *t).collect();
        let expected = order.outcome.expected_topics();
        let mut wrong = Vec::new();
        if topics != expected {
            wrong.push(format!("has {topics:?}, expects {expected:?}"));
        }
        if !doubled.is_empty() {
            wrong.push(format!("DOUBLED (distinct event ids): {doubled:?}"));
        }
        let one = |t: Topic| have.get(&t).and_then(|m| m.values().next());
        if let (Some(Event::PaymentCompleted(c)), Some(Event::PaymentRefunded(r))) = (one(Topic::PaymentCompleted), one(Topic::PaymentRefunded)) {
            if c.amount_cents != r.amount_cents || c.amount_cents != order.total() {
                wrong.push(format!("charged {} refunded {} total {}", c.amount_cents, r.amount_cents, order.total()));
            }
        }
        if let (Some(Event::StockReserved(a)), Some(Event::StockReleased(b))) = (one(Topic::StockReserved), one(Topic::StockReleased)) {
            if a.items != b.items {
                wrong.push(format!("reserved {:?} released {:?}", a.items, b.items));
            }
        }
        if !wrong.is_empty() {
            count += 1;
            if count <= 5 {
                let _ = writeln!(problems, "{} ({:?}): {}", order.id, order.outcome, wrong.join("; "));
            }
        }
    }
    if count == 0 {
        Ok(())
    } else {
        Err(format!("{count} of {} orders not (yet) right:\n{problems}", orders.len()))
    }
}

/// With the services stopped: money and stock add up in the stores.
pub fn check_stores(d: &Deployment, orders: &[PlannedOrder]) {
    let spent: u64 = orders.iter().filter(|o| o.outcome == Outcome::Completed).map(PlannedOrder::total).sum();
    let shipped: u64 = orders.iter().filter(|o| o.outcome == Outcome::Completed).map(PlannedOrder::widgets).sum();
    let wallets: BTreeMap<String, u64> = d.table("payment-service", "wallets");
    assert_eq!(wallets["alice"], ALICE - spent, "alice's wallet: money not conserved");
    assert_eq!(wallets["bob"], BOB, "bob's wallet: money not conserved");
    let stock: BTreeMap<String, u32> = d.table("inventory-service", "stock");
    assert_eq!(u64::from(stock["widget"]), WIDGETS - shipped, "widgets not conserved");
    assert_eq!(stock["gizmo"], 0);
}

/// Writes the fault tests' seed files and points payment and inventory at them.
pub fn use_fault_seeds(d: &mut Deployment) {
    let wallets = d.root.path().join("wallets.json");
    let stock = d.root.path().join("stock.json");
    std::fs::write(&wallets, WALLETS_SEED).unwrap();
    std::fs::write(&stock, STOCK_SEED).unwrap();
    d.service("payment-service").args.extend(["--seed".to_owned(), wallets.display().to_string()]);
    d.service("inventory-service").args.extend(["--seed".to_owned(), stock.display().to_string()]);
}
