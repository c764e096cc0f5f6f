//! Order rules: follow each order through the saga, end it (completed or cancelled), and say
//! when a cancelled order's compensations have all arrived. No I/O.
//!
//! The order service reads nine topics, so it may see an order's events in any order (a
//! `StockFailed` before the `PaymentCompleted` that caused it). It therefore records *facts*
//! and derives the status from them; a later step implies the earlier ones (stock was only
//! ever reserved for a paid order). Applying the same facts in any order ends in the same state.

use saga_runtime::{PersistentTable, Service, Table};
use serde::{Deserialize, Serialize};
use shared_events::{CancelReason, Envelope, Event, OrderCancelled, OrderCompleted, OrderId, Topic};
use tracing::{info, warn};

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Pending,
    Paid,
    Reserved,
    Completed,
    Cancelled,
}

/// What the order service has learned about one order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub customer_id: Option<String>,
    pub placed: bool,
    pub paid: bool,
    pub reserved: bool,
    pub shipment_id: Option<String>,
    pub completed: bool,
    pub cancelled: Option<CancelReason>,
    pub refunded: bool,
    pub released: bool,
    /// Whether "compensated" was already logged for this order.
    pub compensated: bool,
}

impl OrderRecord {
    pub fn status(&self) -> OrderStatus {
        if self.cancelled.is_some() {
            OrderStatus::Cancelled
        } else if self.completed {
            OrderStatus::Completed
        } else if self.reserved {
            OrderStatus::Reserved
        } else if self.paid {
            OrderStatus::Paid
        } else {
            OrderStatus::Pending
        }
    }

    /// The compensations a cancelled order still waits for: a refund if it was paid, a
    /// release if stock was reserved.
    pub fn awaiting(&self) -> Vec<Topic> {
        let mut waiting = Vec::new();
        if self.paid && !self.refunded {
            waiting.push(Topic::PaymentRefunded);
        }
        if self.reserved && !self.released {
            waiting.push(Topic::StockReleased);
        }
        waiting
    }
}

/// No demo data: orders arrive from Kafka.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {}

/// The order service's state: one record per order.
#[derive(Debug)]
pub struct Orders {
    pub orders: Table<OrderRecord>,
}

impl Default for Orders {
    fn default() -> Self {
        Orders { orders: Table::new("orders") }
    }
}

impl Orders {
    /// Records what `event` says about its order; returns the terminal event, if this one
    /// ends the saga.
    pub fn apply(&mut self, event: &Event) -> Option<Event> {
        let order_id = event.order_id()?.clone();
        let mut rec = self.orders.get(order_id.as_str()).cloned().unwrap_or_default();
        let was = rec.status();
        let emitted = step(&mut rec, &order_id, event);
        if rec.cancelled.is_some() && !rec.compensated {
            let awaiting = rec.awaiting();
            if awaiting.is_empty() {
                rec.compensated = true;
                warn!(order_id = %order_id, compensation = true, refunded = rec.refunded, released = rec.released,
                      "COMPENSATION COMPLETE: order cancelled and every step it took is undone");
            } else if was != OrderStatus::Cancelled || matches!(event, Event::PaymentRefunded(_) | Event::StockReleased(_)) {
                info!(order_id = %order_id, awaiting = ?awaiting.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                      "waiting for compensation");
            }
        }
        self.orders.insert(order_id.0, rec);
        emitted
    }
}

/// One fact into the record. Kept apart from logging of compensation progress above.
fn step(rec: &mut OrderRecord, order_id: &OrderId, event: &Event) -> Option<Event> {
    let id = order_id.as_str();
    match event {
        Event::OrderCreated(e) => {
            rec.placed = true;
            rec.customer_id = Some(e.customer_id.clone());
            info!(order_id = %id, customer_id = e.customer_id, total_cents = e.total_cents(), lines = e.items.len(),
                  country = e.ship_to.country, "order placed, pending payment");
            None
        }
        Event::PaymentCompleted(e) => {
            rec.paid = true;
            info!(order_id = %id, amount_cents = e.amount_cents, status = ?rec.status(), "order paid");
            None
        }
        Event::PaymentFailed(e) => {
            cancel(rec, order_id, CancelReason::PaymentFailed, e.reason.to_string())
        }
        Event::StockReserved(_) => {
            rec.paid = true;
            rec.reserved = true;
            info!(order_id = %id, status = ?rec.status(), "stock reserved for order");
            None
        }
        Event::StockFailed(e) => {
            rec.paid = true;
            let detail = format!("{} {} (requested {}, available {})", e.reason, e.sku, e.requested, e.available);
            cancel(rec, order_id, CancelReason::StockFailed, detail)
        }
        Event::ShipmentScheduled(e) => {
            rec.paid = true;
            rec.reserved = true;
            rec.shipment_id = Some(e.shipment_id.clone());
            if let Some(reason) = rec.cancelled {
                warn!(order_id = %id, reason = %reason, "shipment scheduled for an order already cancelled");
                return None;
            }
            if rec.completed {
                return None;
            }
            rec.completed = true;
            info!(order_id = %id, shipment_id = e.shipment_id, "saga complete → OrderCompleted");
            Some(Event::OrderCompleted(OrderCompleted {
                order_id: order_id.clone(),
                shipment_id: e.shipment_id.clone(),
            }))
        }
        Event::ShippingFailed(e) => {
            rec.paid = true;
            rec.reserved = true;
            let detail = format!("{} {}", e.reason, e.country);
            cancel(rec, order_id, CancelReason::ShippingFailed, detail)
        }
        Event::PaymentRefunded(e) => {
            rec.paid = true;
            rec.refunded = true;
            warn!(order_id = %id, amount_cents = e.amount_cents, compensation = true, "refund confirmed");
            None
        }
        Event::StockReleased(_) => {
            rec.reserved = true;
            rec.released = true;
            warn!(order_id = %id, compensation = true, "stock release confirmed");
            None
        }
        Event::OrderCompleted(_) | Event::OrderCancelled(_) | Event::DeadLetter(_) => None,
    }
}

fn cancel(rec: &mut OrderRecord, order_id: &OrderId, reason: CancelReason, detail: String) -> Option<Event> {
    if rec.cancelled.is_some() || rec.completed {
        return None;
    }
    rec.cancelled = Some(reason);
    warn!(order_id = %order_id, reason = %reason, detail, awaiting = ?rec.awaiting().iter().map(|t| t.as_str()).collect::<Vec<_>>(),
          "saga failed → OrderCancelled");
    Some(Event::OrderCancelled(OrderCancelled { order_id: order_id.clone(), reason, detail }))
}

impl Service for Orders {
    const NAME: &'static str = "order-service";
    const CONSUMES: &'static [Topic] = &[
        Topic::OrderCreated,
        Topic::PaymentCompleted,
        Topic::PaymentFailed,
        Topic::StockReserved,
        Topic::StockFailed,
        Topic::ShipmentScheduled,
        Topic::ShippingFailed,
        Topic::PaymentRefunded,
        Topic::StockReleased,
    ];
    type Seed = Seed;

    fn seed(&mut self, _seed: Seed) {}

    fn handle(&mut self, input: &Envelope, _now_ms: i64) -> Vec<Event> {
        self.apply(&input.event).into_iter().collect()
    }

    fn tables(&mut self) -> Vec<&mut dyn PersistentTable> {
        vec![&mut self.orders]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shared_events::*;

    fn id() -> OrderId {
        "o-1".into()
    }

    fn created() -> Event {
        OrderCreated {
            order_id: id(),
            customer_id: "alice".into(),
            items: vec![LineItem { sku: "widget".into(), quantity: 1, unit_price_cents: 5 }],
            ship_to: Address { country: "US".into(), ..Address::default() },
        }
        .into()
    }
    fn paid() -> Event {
        PaymentCompleted { order_id: id(), customer_id: "alice".into(), amount_cents: 5, items: vec![], ship_to: Address::default() }.into()
    }
    fn declined() -> Event {
        PaymentFailed { order_id: id(), customer_id: "bob".into(), amount_cents: 5, reason: PaymentFailureReason::InsufficientFunds }.into()
    }
    fn reserved() -> Event {
        StockReserved { order_id: id(), items: vec![], ship_to: Address::default() }.into()
    }
    fn no_stock() -> Event {
        StockFailed { order_id: id(), reason: StockFailureReason::OutOfStock, sku: "gizmo".into(), requested: 1, available: 0 }.into()
    }
    fn shipped() -> Event {
        ShipmentScheduled { order_id: id(), shipment_id: "shp-o-1".into(), country: "US".into() }.into()
    }
    fn no_ship() -> Event {
        ShippingFailed { order_id: id(), country: "AQ".into(), reason: ShippingFailureReason::DestinationNotServed }.into()
    }
    fn refunded() -> Event {
        PaymentRefunded { order_id: id(), customer_id: "alice".into(), amount_cents: 5 }.into()
    }
    fn released() -> Event {
        StockReleased { order_id: id(), items: vec![] }.into()
    }

    /// Feeds events in order; returns the topics emitted and the final record.
    fn check(events: &[Event]) -> (Vec<Topic>, OrderRecord) {
        let mut orders = Orders::default();
        let emitted = events.iter().filter_map(|e| orders.apply(e)).map(|e| e.topic()).collect();
        (emitted, orders.orders.get("o-1").cloned().unwrap_or_default())
    }

    #[test]
    fn happy_path_completes_once() {
        let (out, rec) = check(&[created(), paid(), reserved(), shipped(), shipped()]);
        assert_eq!(out, [Topic::OrderCompleted]);
        assert_eq!(rec.status(), OrderStatus::Completed);
    }

    #[test]
    fn declined_payment_cancels_with_nothing_to_undo() {
        let (out, rec) = check(&[created(), declined()]);
        assert_eq!(out, [Topic::OrderCancelled]);
        assert!(rec.awaiting().is_empty() && rec.compensated);
    }

    #[test]
    fn stock_failure_waits_for_the_refund() {
        let (out, rec) = check(&[created(), no_stock()]);
        assert_eq!(out, [Topic::OrderCancelled]);
        assert_eq!(rec.awaiting(), [Topic::PaymentRefunded]);
        let (_, rec) = check(&[created(), no_stock(), refunded()]);
        assert!(rec.compensated);
    }

    #[test]
    fn shipping_failure_waits_for_refund_and_release() {
        let (out, rec) = check(&[created(), paid(), reserved(), no_ship()]);
        assert_eq!(out, [Topic::OrderCancelled]);
        assert_eq!(rec.awaiting(), [Topic::PaymentRefunded, Topic::StockReleased]);
        let (_, rec) = check(&[created(), paid(), reserved(), no_ship(), released(), refunded()]);
        assert!(rec.compensated && rec.awaiting().is_empty());
    }

    fn scenario() -> impl Strategy<Value = Vec<Event>> {
        prop_oneof![
            Just(vec![created(), paid(), reserved(), shipped()]),
            Just(vec![created(), declined()]),
            Just(vec![created(), paid(), no_stock(), refunded()]),
            Just(vec![created(), paid(), reserved(), no_ship(), refunded(), released()]),
        ]
    }

    proptest! {
        /// Any delivery order, with duplicates, ends in the same terminal state with exactly one
        /// terminal event, as delivering the saga's events in causal order does.
        #[test]
        fn order_of_delivery_does_not_matter(
            events in scenario().prop_flat_map(|evs| {
                let n = evs.len();
                (Just(evs), prop::collection::vec(0..n, 0..4)).prop_flat_map(|(evs, dups)| {
                    let mut all = evs.clone();
                    all.extend(dups.into_iter().map(|i| evs[i].clone()));
                    (Just(evs), Just(all).prop_shuffle())
                })
            })
        ) {
            let (causal, shuffled) = events;
            let (expected_out, expected) = check(&causal);
            let (out, rec) = check(&shuffled);
            prop_assert_eq!(out, expected_out);
            prop_assert_eq!(rec.status(), expected.status());
            prop_assert_eq!(rec.compensated, expected.compensated);
            prop_assert!(matches!(rec.status(), OrderStatus::Completed | OrderStatus::Cancelled));
        }
    }
}
