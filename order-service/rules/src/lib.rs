//! Order rules: follow each order through the saga, end it (completed or cancelled), cancel it
//! at its deadline or at the customer's request (until it ships), and say when a cancelled
//! order's compensations have all arrived. No I/O: time comes in as an argument.
//!
//! The order service reads nine topics, so it may see an order's events in any order (a
//! `StockFailed` before the `PaymentCompleted` that caused it). It therefore records *facts*
//! and derives the status from them; a later step implies the earlier ones (stock was only
//! ever reserved for a paid order). Applying the same facts in any order ends in the same state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use saga_core::prometheus::{self, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use saga_core::{Context, PersistentTable, Service, Table, TimerEvent};
use serde::{Deserialize, Serialize};
use shared_events::{
    CancelReason, DeadLetter, Envelope, Event, EventId, OrderCancellationRefused, OrderCancelled, OrderCompleted,
    OrderId, RefusalReason, Topic,
};
use tracing::{debug, info, warn};

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
    /// When the saga started (its `OrderCreated`), ms since the epoch.
    #[serde(default)]
    pub created_at_ms: Option<i64>,
    /// The order's partition: where the order service emits on its own (deadline).
    #[serde(default)]
    pub partition: Option<i32>,
    pub customer_id: Option<String>,
    pub placed: bool,
    pub paid: bool,
    pub reserved: bool,
    pub shipment_id: Option<String>,
    pub completed: bool,
    pub cancelled: Option<CancelReason>,
    pub refunded: bool,
    pub released: bool,
    /// A shipment booked after the order was cancelled has been called off.
    #[serde(default)]
    pub shipment_cancelled: bool,
    /// Whether "compensated" was already logged for this order.
    pub compensated: bool,
    /// The customer's cancellation request that cancelled the order: a redelivered copy,
    /// however late, is not answered again (with a refusal that would contradict it).
    #[serde(default)]
    pub cancelled_by_request: Option<EventId>,
    /// The `OrderCreated` that placed the order (its id covers its content): another one with
    /// the same order id is a conflict, parked. `None` in rows of earlier releases.
    #[serde(default)]
    pub placed_by: Option<EventId>,
}

impl OrderRecord {
    pub fn is_terminal(&self) -> bool {
        self.completed || self.cancelled.is_some()
    }

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
    /// release if stock was reserved, a call-off if it shipped anyway. Empty if not cancelled.
    pub fn awaiting(&self) -> Vec<Topic> {
        let mut waiting = Vec::new();
        if self.cancelled.is_none() {
            return waiting;
        }
        if self.paid && !self.refunded {
            waiting.push(Topic::PaymentRefunded);
        }
        if self.reserved && !self.released {
            waiting.push(Topic::StockReleased);
        }
        if self.shipment_id.is_some() && !self.completed && !self.shipment_cancelled {
            waiting.push(Topic::ShipmentCancelled);
        }
        waiting
    }

    /// Whether `input` is news to this order ([`Checked`]).
    pub fn check(&self, order_id: &OrderId, input: &Envelope) -> Checked {
        match &input.event {
            Event::OrderCancellationRequested(_) if self.cancelled_by_request == Some(input.meta.event_id) => {
                debug!(order_id = %order_id, "cancellation request already granted");
                Checked::Known
            }
            Event::OrderCreated(_) => match self.placed_by {
                Some(first) if first != input.meta.event_id => {
                    warn!(order_id = %order_id, first = %first, "order id reused with another payload: parked on DeadLetter");
                    let reason = format!("order {order_id} was placed before with another payload (event {first}); this one is not the order");
                    Checked::Conflict(Box::new(DeadLetter::rejected(order_id, "order_id_conflict", reason)))
                }
                _ => Checked::New,
            },
            _ => Checked::New,
        }
    }

    /// Records a checked `input` ([`OrderRecord::check`]); returns what order-service emits
    /// for it: the event that ends the saga, or a refused cancellation. The order service's
    /// rules, for anything that follows an order from its events (the view, `saga trace`).
    pub fn record(&mut self, order_id: &OrderId, input: &Envelope, ctx: &Context) -> Option<Event> {
        let event = &input.event;
        // An earlier release's row has `placed` without `placed_by`: which payload placed it
        // is unknown, and stays so.
        if matches!(event, Event::OrderCreated(_)) && !(self.placed && self.placed_by.is_none()) {
            self.placed_by = Some(input.meta.event_id);
        }
        self.created_at_ms.get_or_insert(input.meta.saga_started_at_ms);
        self.partition.get_or_insert(ctx.partition);
        let emitted = step(self, order_id, event);
        if matches!(event, Event::OrderCancellationRequested(_)) && matches!(emitted, Some(Event::OrderCancelled(_))) {
            self.cancelled_by_request = Some(input.meta.event_id);
        }
        emitted
    }
}

/// What order-service makes of an input before recording it ([`OrderRecord::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// News to the order: record it ([`OrderRecord::record`]).
    New,
    /// Not news: a cancellation request already granted. Nothing to answer.
    Known,
    /// An `OrderCreated` reusing the order id with another payload: not the order, parked
    /// with this dead letter.
    Conflict(Box<DeadLetter>),
}

/// No demo data: orders arrive from Kafka.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {}

/// The order service's state: one record per order, and the saga deadline.
#[derive(Debug)]
pub struct Orders {
    pub orders: Table<OrderRecord>,
    deadline: Option<Duration>,
    /// Derived from `orders`: built on first use, kept up to date by every save.
    index: Option<Index>,
    /// Registered when the binary serves metrics (`Service::register_metrics`).
    metrics: Option<OrderMetrics>,
}

/// What the deadline and the metrics need to know without reading every order.
#[derive(Debug, Default)]
struct Index {
    /// Orders not yet terminal: the only ones a deadline can still cancel; the sagas in flight.
    open: BTreeSet<String>,
    /// Cancelled orders still waiting for compensations, and how many each waits for.
    awaiting: BTreeMap<String, usize>,
    /// The sum of `awaiting`.
    awaited: usize,
}

impl Index {
    fn build(orders: &Table<OrderRecord>) -> Self {
        let mut index = Index::default();
        orders.for_each(|id, r| index.update(id, r));
        index
    }

    fn update(&mut self, id: &str, rec: &OrderRecord) {
        if rec.is_terminal() {
            self.open.remove(id);
        } else if !self.open.contains(id) {
            self.open.insert(id.to_owned());
        }
        let waits = rec.awaiting().len();
        let before = if waits == 0 { self.awaiting.remove(id) } else { self.awaiting.insert(id.to_owned(), waits) };
        self.awaited = self.awaited + waits - before.unwrap_or(0);
    }
}

/// order-service's own figures on `/metrics`, beside the runtime's.
#[derive(Debug)]
struct OrderMetrics {
    completed: IntCounter,
    cancelled: IntCounterVec,
    in_flight: IntGauge,
    awaited: IntGauge,
}

impl OrderMetrics {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let completed = IntCounter::new("saga_sagas_completed_total", "Orders this service completed (OrderCompleted emitted).")?;
        let cancelled = IntCounterVec::new(
            Opts::new("saga_sagas_cancelled_total", "Orders this service cancelled (OrderCancelled emitted), by reason; reason=\"timeout\" counts deadline cancellations."),
            &["reason"],
        )?;
        for reason in CancelReason::ALL {
            cancelled.with_label_values(&[reason.as_str()]);
        }
        let in_flight = IntGauge::new("saga_sagas_in_flight", "Orders placed or heard of that are neither completed nor cancelled yet.")?;
        let awaited = IntGauge::new(
            "saga_compensations_awaited",
            "Compensations (refunds, stock releases, shipment call-offs) cancelled orders still wait for.",
        )?;
        registry.register(Box::new(completed.clone()))?;
        registry.register(Box::new(cancelled.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(awaited.clone()))?;
        Ok(OrderMetrics { completed, cancelled, in_flight, awaited })
    }
}

impl Default for Orders {
    fn default() -> Self {
        Orders::new(None)
    }
}

impl Orders {
    /// `deadline`: cancel an order that has no terminal state this long after it was created.
    pub fn new(deadline: Option<Duration>) -> Self {
        Orders { orders: Table::new("orders"), deadline, index: None, metrics: None }
    }

    /// Records what `input` says about its order; returns the event that ends the saga (or
    /// refuses a cancellation), if any.
    pub fn apply(&mut self, input: &Envelope, ctx: &Context) -> Option<Event> {
        let order_id = input.event.order_id()?.clone();
        let mut rec = self.orders.get(order_id.as_str()).unwrap_or_default();
        match rec.check(&order_id, input) {
            Checked::New => {}
            Checked::Known => return None,
            Checked::Conflict(letter) => return Some(Event::DeadLetter(*letter)),
        }
        let before = rec.cancelled.map(|_| rec.awaiting());
        let emitted = rec.record(&order_id, input, ctx);
        self.save(order_id, rec, before);
        emitted
    }

    /// Cancels every open order past its deadline.
    pub fn on_timer(&mut self, now_ms: i64) -> Vec<TimerEvent> {
        let Some(deadline) = self.deadline else { return Vec::new() };
        let deadline_ms = i64::try_from(deadline.as_millis()).unwrap_or(i64::MAX);
        let orders = &self.orders;
        // Built once, from the whole table (read from the store): the open orders are the
        // only ones a deadline can still cancel, and few.
        let index = self.index.get_or_insert_with(|| Index::build(orders));
        let due: Vec<String> = index
            .open
            .iter()
            .filter(|id| {
                orders.get(id.as_str()).and_then(|r| r.created_at_ms).is_some_and(|t| now_ms.saturating_sub(t) >= deadline_ms)
            })
            .cloned()
            .collect();
        let mut out = Vec::new();
        for id in due {
            let order_id = OrderId(id.clone());
            let Some(mut rec) = self.orders.get(&id) else { continue };
            let detail = format!("no terminal state within {deadline:?}");
            if let Some(event) = cancel(&mut rec, &order_id, CancelReason::Timeout, detail) {
                out.push(TimerEvent {
                    event,
                    partition: rec.partition.unwrap_or(0),
                    saga_started_at_ms: rec.created_at_ms.unwrap_or(now_ms),
                });
            }
            self.save(order_id, rec, None);
        }
        out
    }

    /// Stores the record; logs compensation progress when what a cancelled order awaits
    /// changed (`before`: what it awaited before this step, if it was cancelled already).
    fn save(&mut self, order_id: OrderId, mut rec: OrderRecord, before: Option<Vec<Topic>>) {
        if rec.cancelled.is_some() {
            let awaiting = rec.awaiting();
            if awaiting.is_empty() {
                if !rec.compensated {
                    rec.compensated = true;
                    warn!(order_id = %order_id, compensation = true, refunded = rec.refunded, released = rec.released,
                          "COMPENSATION COMPLETE: order cancelled and every step it took is undone");
                }
            } else {
                // A late success after a deadline re-opens the wait.
                rec.compensated = false;
                if before.as_ref() != Some(&awaiting) {
                    info!(order_id = %order_id, awaiting = ?awaiting.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                          "waiting for compensation");
                }
            }
        }
        if let Some(index) = &mut self.index {
            index.update(order_id.as_str(), &rec);
        }
        self.orders.insert(order_id.0, rec);
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
                warn!(order_id = %id, reason = %reason, "late shipment for a cancelled order: shipping will call it off");
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
        Event::ShipmentCancelled(e) => {
            rec.shipment_id = Some(e.shipment_id.clone());
            rec.shipment_cancelled = true;
            warn!(order_id = %id, shipment_id = e.shipment_id, compensation = true, "shipment call-off confirmed");
            None
        }
        Event::OrderCancellationRequested(e) => {
            let refuse = if rec.completed {
                Some(RefusalReason::AlreadyShipped)
            } else if rec.cancelled.is_some() {
                Some(RefusalReason::AlreadyCancelled)
            } else {
                None
            };
            match refuse {
                Some(reason) => {
                    warn!(order_id = %id, reason = %reason, "cancellation refused → OrderCancellationRefused");
                    Some(Event::OrderCancellationRefused(OrderCancellationRefused { order_id: order_id.clone(), reason }))
                }
                None => {
                    let detail = e.reason.clone().unwrap_or_else(|| "requested by the customer".to_owned());
                    cancel(rec, order_id, CancelReason::CustomerRequest, detail)
                }
            }
        }
        // The order service's own decisions, as facts: it never consumes them, but tools that
        // replay a saga's history through these rules (`saga trace`) do.
        Event::OrderCompleted(_) => {
            if rec.cancelled.is_none() {
                rec.completed = true;
            }
            None
        }
        Event::OrderCancelled(e) => {
            if !rec.completed {
                rec.cancelled.get_or_insert(e.reason);
            }
            None
        }
        Event::OrderCancellationRefused(_) | Event::DeadLetter(_) => None,
        // The travel saga's: the order service never consumes them.
        _ => None,
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
        Topic::ShipmentCancelled,
        Topic::OrderCancellationRequested,
    ];
    const EMITS: &'static [Topic] = &[Topic::OrderCompleted, Topic::OrderCancelled, Topic::OrderCancellationRefused, Topic::DeadLetter];
    type Seed = Seed;

    fn seed(&mut self, _seed: Seed) {}

    fn handle(&mut self, input: &Envelope, ctx: &Context) -> Vec<Event> {
        self.apply(input, ctx).into_iter().collect()
    }

    fn on_timer(&mut self, now_ms: i64) -> Vec<TimerEvent> {
        Orders::on_timer(self, now_ms)
    }

    fn tables(&mut self) -> Vec<&mut dyn PersistentTable> {
        vec![&mut self.orders]
    }

    fn register_metrics(&mut self, registry: &Registry) -> prometheus::Result<()> {
        self.metrics = Some(OrderMetrics::register(registry)?);
        let orders = &self.orders;
        self.index.get_or_insert_with(|| Index::build(orders));
        self.observe(&[]);
        Ok(())
    }

    fn observe(&mut self, emitted: &[Event]) {
        let (Some(metrics), Some(index)) = (&self.metrics, &self.index) else { return };
        for event in emitted {
            match event {
                Event::OrderCompleted(_) => metrics.completed.inc(),
                Event::OrderCancelled(e) => metrics.cancelled.with_label_values(&[e.reason.as_str()]).inc(),
                _ => {}
            }
        }
        metrics.in_flight.set(index.open.len() as i64);
        metrics.awaited.set(index.awaited as i64);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
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

    const CTX: Context = Context { now_ms: 1_000, partition: 2 };

    fn env(e: &Event) -> Envelope {
        Envelope::root(e.clone(), 1_000)
    }

    #[test]
    fn an_order_id_reused_with_another_payload_is_a_conflict_and_the_same_again_is_not() {
        let mut orders = Orders::new(None);
        let ctx = Context { now_ms: 1_000, partition: 0 };
        assert_eq!(orders.apply(&env(&created()), &ctx), None);
        assert_eq!(orders.apply(&env(&created()), &ctx), None, "the same order again is a duplicate");
        let Event::OrderCreated(mut other) = created() else { unreachable!() };
        other.customer_id = "mallory".into();
        let conflict = orders.apply(&env(&other.into()), &ctx);
        let Some(Event::DeadLetter(letter)) = conflict else { panic!("expected a conflict, got {conflict:?}") };
        assert_eq!((letter.error_code.as_str(), letter.order_id), ("order_id_conflict", Some(id())));
        assert_eq!(orders.orders.get("o-1").unwrap().customer_id.as_deref(), Some("alice"), "the first order stands");
    }

    /// Feeds events in order; returns the topics emitted and the final record.
    fn check(events: &[Event]) -> (Vec<Topic>, OrderRecord) {
        let mut orders = Orders::default();
        let emitted = events.iter().filter_map(|e| orders.apply(&env(e), &CTX)).map(|e| e.topic()).collect();
        (emitted, orders.orders.get("o-1").unwrap_or_default())
    }

    fn cancel_request() -> Event {
        OrderCancellationRequested { order_id: id(), reason: None }.into()
    }
    fn shipment_cancelled() -> Event {
        ShipmentCancelled { order_id: id(), shipment_id: "shp-o-1".into() }.into()
    }

    #[test]
    fn the_deadline_cancels_open_orders_once_on_their_partition() {
        let mut orders = Orders::new(Some(Duration::from_secs(30)));
        orders.apply(&env(&created()), &CTX);
        assert!(orders.on_timer(1_000 + 29_999).is_empty());
        let due = orders.on_timer(1_000 + 30_000);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].partition, 2);
        assert!(matches!(&due[0].event, Event::OrderCancelled(c) if c.reason == CancelReason::Timeout));
        assert!(orders.on_timer(1_000 + 60_000).is_empty(), "cancelled once");
        // A late success does not resurrect it; its shipment must be called off.
        assert_eq!(orders.apply(&env(&shipped()), &CTX), None);
        let rec = orders.orders.get("o-1").unwrap();
        assert_eq!(rec.status(), OrderStatus::Cancelled);
        assert_eq!(rec.awaiting(), [Topic::PaymentRefunded, Topic::StockReleased, Topic::ShipmentCancelled]);
    }

    /// One sample of the exposition, e.g. `saga_sagas_in_flight` or `saga_sagas_cancelled_total{reason="timeout"}`.
    fn sample(registry: &Registry, series: &str) -> f64 {
        use saga_core::prometheus::Encoder;
        let mut text = Vec::new();
        prometheus::TextEncoder::new().encode(&registry.gather(), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        let line = text.lines().find(|l| l.rsplit_once(' ').is_some_and(|(s, _)| s == series));
        line.and_then(|l| l.rsplit_once(' ')).map(|(_, v)| v.parse().unwrap()).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    }

    /// What the runtime does per step: apply, then observe what was emitted.
    fn step_observed(orders: &mut Orders, e: &Event) {
        let out: Vec<Event> = orders.apply(&env(e), &CTX).into_iter().collect();
        orders.observe(&out);
    }

    #[test]
    fn metrics_count_outcomes_and_follow_the_open_and_awaited_orders() {
        let mut orders = Orders::new(Some(Duration::from_secs(30)));
        // An order from before the metrics were registered is counted as in flight.
        orders.apply(&env(&created()), &CTX);
        let registry = Registry::new();
        orders.register_metrics(&registry).unwrap();
        assert_eq!(sample(&registry, "saga_sagas_in_flight"), 1.0);
        // It pays, reserves, then shipping fails: cancelled, awaiting a refund and a release.
        for e in [paid(), reserved(), no_ship()] {
            step_observed(&mut orders, &e);
        }
        assert_eq!(sample(&registry, "saga_sagas_in_flight"), 0.0);
        assert_eq!(sample(&registry, r#"saga_sagas_cancelled_total{reason="shipping_failed"}"#), 1.0);
        assert_eq!(sample(&registry, "saga_compensations_awaited"), 2.0);
        step_observed(&mut orders, &refunded());
        assert_eq!(sample(&registry, "saga_compensations_awaited"), 1.0);
        step_observed(&mut orders, &released());
        assert_eq!(sample(&registry, "saga_compensations_awaited"), 0.0);
        // Another order completes; a third meets its deadline.
        let other = |e: Event, id: &str| match e {
            Event::OrderCreated(c) => Event::OrderCreated(OrderCreated { order_id: id.into(), ..c }),
            Event::ShipmentScheduled(s) => Event::ShipmentScheduled(ShipmentScheduled { order_id: id.into(), ..s }),
            e => e,
        };
        step_observed(&mut orders, &other(created(), "o-2"));
        step_observed(&mut orders, &other(created(), "o-3"));
        assert_eq!(sample(&registry, "saga_sagas_in_flight"), 2.0);
        step_observed(&mut orders, &other(shipped(), "o-2"));
        assert_eq!(sample(&registry, "saga_sagas_completed_total"), 1.0);
        let due: Vec<Event> = orders.on_timer(1_000 + 30_000).into_iter().map(|d| d.event).collect();
        orders.observe(&due);
        assert_eq!(sample(&registry, r#"saga_sagas_cancelled_total{reason="timeout"}"#), 1.0);
        assert_eq!(sample(&registry, "saga_sagas_in_flight"), 0.0);
        assert_eq!(sample(&registry, r#"saga_sagas_cancelled_total{reason="payment_failed"}"#), 0.0, "every reason is shown");
    }

    #[test]
    fn completed_orders_never_time_out() {
        let mut orders = Orders::new(Some(Duration::from_secs(1)));
        for e in [created(), paid(), reserved(), shipped()] {
            orders.apply(&env(&e), &CTX);
        }
        assert!(orders.on_timer(i64::MAX).is_empty());
    }

    #[test]
    fn customers_may_cancel_until_the_order_ships() {
        let (out, rec) = check(&[created(), paid(), cancel_request(), refunded()]);
        assert_eq!(out, [Topic::OrderCancelled]);
        assert_eq!(rec.cancelled, Some(CancelReason::CustomerRequest));
        assert!(rec.compensated);
        let (out, rec) = check(&[created(), paid(), reserved(), shipped(), cancel_request()]);
        assert_eq!(out, [Topic::OrderCompleted, Topic::OrderCancellationRefused]);
        assert_eq!(rec.status(), OrderStatus::Completed);
        let (out, _) = check(&[created(), declined(), cancel_request()]);
        assert_eq!(out, [Topic::OrderCancelled, Topic::OrderCancellationRefused]);
    }

    #[test]
    fn a_granted_cancellation_request_redelivered_late_is_not_answered_again() {
        let mut orders = Orders::default();
        let request = env(&cancel_request());
        orders.apply(&env(&created()), &CTX);
        let granted = orders.apply(&request, &CTX).map(|e| e.topic());
        assert_eq!(granted, Some(Topic::OrderCancelled));
        // The runtime's id window has forgotten it: the rules see the same request again.
        assert_eq!(orders.apply(&request, &CTX), None);
        // A second, distinct request is answered: the order is cancelled already.
        let mut second = env(&cancel_request());
        second.meta.event_id = EventId::for_order(Topic::OrderCancellationRequested, "a second request");
        let refused = orders.apply(&second, &CTX).map(|e| e.topic());
        assert_eq!(refused, Some(Topic::OrderCancellationRefused));
    }

    #[test]
    fn a_shipment_racing_a_cancellation_is_called_off() {
        let (_, rec) = check(&[created(), paid(), reserved(), cancel_request(), shipped(), refunded(), released()]);
        assert!(!rec.compensated);
        assert_eq!(rec.awaiting(), [Topic::ShipmentCancelled]);
        let (_, rec) = check(&[created(), paid(), reserved(), cancel_request(), shipped(), refunded(), released(), shipment_cancelled()]);
        assert!(rec.compensated);
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
