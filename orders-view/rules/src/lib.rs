//! The orders view's projections: what became of each order, each customer's orders, and the
//! business's numbers, kept from the saga's events alone. No I/O.
//!
//! Each order's state is order-service's own: every event goes through order-rules'
//! [`OrderRecord::check`] and [`OrderRecord::record`], the functions order-service applies, so
//! the view and the service cannot disagree on what a fact means. One thing only the view adds:
//! the view reads every topic, in whatever order they arrive, so the rules' guess at an outcome
//! (a shipment seen before the deadline's cancellation) gives way to the outcome order-service
//! published, `OrderCompleted` or `OrderCancelled`; it publishes exactly one per order.
//!
//! The counts change only when an order's view changes (its first charge, its outcome, …) or a
//! dead letter is new, so a duplicate the dedup window let through counts nothing twice.

use std::collections::BTreeMap;

use order_rules::{Checked, OrderRecord, OrderStatus};
use saga_core::{Context, PersistentTable, Service, Table};
use serde::{Deserialize, Serialize};
use shared_events::{CancelReason, DeadLetter, Envelope, Event, EventId, LineItem, OrderId, Saga, Topic};
use tracing::debug;

/// One step of an order's saga, as the view saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The event, by its topic (`PaymentCompleted`, …).
    pub step: Topic,
    /// When it happened (its `occurred_at_ms`).
    pub at_ms: i64,
    pub event_id: EventId,
}

/// What the view knows about one order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    /// The order as order-service's rules see it.
    pub record: OrderRecord,
    /// Whether order-service's outcome (`OrderCompleted` or `OrderCancelled`) has arrived.
    pub decided: bool,
    /// When the order was placed: its `OrderCreated`'s saga start (the record's time, for one
    /// typed by hand). Not the first event seen: a customer's cancellation may come first.
    #[serde(default)]
    pub placed_at_ms: Option<i64>,
    /// When order-service published the outcome.
    #[serde(default)]
    pub decided_at_ms: Option<i64>,
    pub lines: Vec<LineItem>,
    pub total_cents: Option<u64>,
    pub country: Option<String>,
    pub charged_cents: Option<u64>,
    pub refunded_cents: Option<u64>,
    /// Every step, once per event id, in time order.
    pub timeline: Vec<Step>,
}

impl OrderView {
    /// Where the order stands: a guess at the outcome is not shown until order-service
    /// publishes it.
    pub fn status(&self) -> OrderStatus {
        match self.record.status() {
            OrderStatus::Completed | OrderStatus::Cancelled if !self.decided => {
                if self.record.reserved {
                    OrderStatus::Reserved
                } else if self.record.paid {
                    OrderStatus::Paid
                } else {
                    OrderStatus::Pending
                }
            }
            status => status,
        }
    }

    /// Why it was cancelled, once order-service said so.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.record.cancelled.filter(|_| self.decided)
    }

    /// Compensations done: refund, stock release, shipment call-off.
    pub fn compensations_done(&self) -> Vec<Topic> {
        let r = &self.record;
        [(r.refunded, Topic::PaymentRefunded), (r.released, Topic::StockReleased), (r.shipment_cancelled, Topic::ShipmentCancelled)]
            .into_iter()
            .filter_map(|(done, t)| done.then_some(t))
            .collect()
    }

    /// Compensations a cancelled order still waits for.
    pub fn compensations_awaited(&self) -> Vec<Topic> {
        if self.decided {
            self.record.awaiting()
        } else {
            Vec::new()
        }
    }
}

/// Counts over a span of time (all time, or one hour).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub placed: u64,
    pub completed: u64,
    /// Cancelled orders by reason (`payment_failed`, `timeout`, …).
    pub cancelled: BTreeMap<String, u64>,
    pub charged_cents: u64,
    pub refunded_cents: u64,
    pub refunds: u64,
    pub stock_releases: u64,
    pub shipment_cancellations: u64,
    /// Dead letters by error code.
    pub dead_letters: BTreeMap<String, u64>,
}

impl Counts {
    /// Revenue: charged minus refunded.
    pub fn revenue_cents(&self) -> i128 {
        i128::from(self.charged_cents) - i128::from(self.refunded_cents)
    }

    pub fn cancelled_total(&self) -> u64 {
        self.cancelled.values().sum()
    }
}

pub const HOUR_MS: i64 = 3_600_000;

/// The key of all-time counts in the `stats` table.
pub const ALL_TIME: &str = "all";

/// The key of one hour's counts in the `stats` table (the hour that holds `at_ms`).
pub fn hour_key(at_ms: i64) -> String {
    format!("hour/{:013}", at_ms.div_euclid(HOUR_MS) * HOUR_MS)
}

/// The prefix of one customer's rows in the `by_customer` table: length-prefixed, so no
/// customer id can be a prefix of another's.
pub fn customer_prefix(customer_id: &str) -> String {
    format!("{:05}:{customer_id}:", customer_id.len())
}

/// The latest time a `by_customer` key holds: 13 digits (the year 2286).
pub const KEY_TIME_MAX_MS: i64 = 9_999_999_999_999;

/// One order's row in the `by_customer` table: under its customer, in order of creation. A
/// time is a producer's to choose, so it is clamped to what 13 digits hold.
pub fn customer_key(customer_id: &str, created_at_ms: i64, order_id: &str) -> String {
    format!("{}{:013}:{order_id}", customer_prefix(customer_id), created_at_ms.clamp(0, KEY_TIME_MAX_MS))
}

/// No seed data: everything comes from the topics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {}

/// The view's state.
#[derive(Debug)]
pub struct OrdersView {
    /// Order id → what the view knows.
    pub orders: Table<OrderView>,
    /// [`customer_key`] → nothing: each customer's orders, in order of creation.
    pub by_customer: Table<()>,
    /// [`ALL_TIME`] or [`hour_key`] → counts.
    pub stats: Table<Counts>,
    /// Dead letters counted, by event id.
    pub dead_letters: Table<()>,
}

impl Default for OrdersView {
    fn default() -> Self {
        OrdersView {
            orders: Table::new("orders"),
            by_customer: Table::new("by_customer"),
            stats: Table::new("stats"),
            dead_letters: Table::new("dead_letters"),
        }
    }
}

impl OrdersView {
    fn count(&mut self, at_ms: i64, change: impl Fn(&mut Counts)) {
        for key in [ALL_TIME.to_owned(), hour_key(at_ms)] {
            let mut counts = self.stats.get(&key).unwrap_or_default();
            change(&mut counts);
            self.stats.insert(key, counts);
        }
    }

    fn on_dead_letter(&mut self, id: EventId, letter: &DeadLetter, at_ms: i64) {
        let key = id.to_string();
        if self.dead_letters.get(&key).is_some() {
            return;
        }
        self.dead_letters.insert(key, ());
        self.count(at_ms, |c| *c.dead_letters.entry(letter.error_code.clone()).or_default() += 1);
    }

    /// Applies one event to its order's view, and counts what changed.
    pub fn apply(&mut self, input: &Envelope, ctx: &Context) {
        let at_ms = input.meta.occurred_at_ms;
        if let Event::DeadLetter(letter) = &input.event {
            // The travel saga's dead letters share the topic; they are not the orders'.
            let travel = letter.trip_id.is_some() || letter.source_topic.parse::<Topic>().ok().and_then(Topic::saga) == Some(Saga::Travel);
            if travel {
                return;
            }
            self.on_dead_letter(input.meta.event_id, letter, at_ms);
            return;
        }
        let Some(order_id) = input.event.order_id().cloned() else { return };
        let mut view = self.orders.get(order_id.as_str()).unwrap_or_default();
        if view.timeline.iter().any(|s| s.event_id == input.meta.event_id) {
            return;
        }
        let before = Milestones::of(&view);
        if !follow(&mut view, &order_id, input, ctx) {
            return;
        }
        let after = Milestones::of(&view);
        debug!(order_id = %order_id, event = %input.meta.event_type, status = ?view.status(), "order view updated");
        if !before.placed && after.placed {
            self.count(at_ms, |c| c.placed += 1);
            if let (Some(customer), Some(placed)) = (&view.record.customer_id, view.placed_at_ms) {
                self.by_customer.insert(customer_key(customer, placed, order_id.as_str()), ());
            }
        }
        if let (None, Some(charged)) = (before.charged, after.charged) {
            self.count(at_ms, |c| c.charged_cents += charged);
        }
        if let (None, Some(refunded)) = (before.refunded, after.refunded) {
            self.count(at_ms, |c| {
                c.refunded_cents += refunded;
                c.refunds += 1;
            });
        }
        if !before.released && after.released {
            self.count(at_ms, |c| c.stock_releases += 1);
        }
        if !before.shipment_cancelled && after.shipment_cancelled {
            self.count(at_ms, |c| c.shipment_cancellations += 1);
        }
        // An outcome counts for an order placed: a cancellation request for an id never
        // placed is cancelled by order-service, but no order ended. Counted in the hour of the
        // outcome, whichever of the two arrived last.
        if !before.ended && after.ended {
            let decided_at = view.decided_at_ms.unwrap_or(at_ms);
            match view.record.cancelled {
                Some(reason) => self.count(decided_at, |c| *c.cancelled.entry(reason.as_str().to_owned()).or_default() += 1),
                None => self.count(decided_at, |c| c.completed += 1),
            }
        }
        self.orders.insert(order_id.0, view);
    }
}

/// What the counts follow of an order: each changes once, from unset to set.
struct Milestones {
    placed: bool,
    charged: Option<u64>,
    refunded: Option<u64>,
    released: bool,
    shipment_cancelled: bool,
    /// Placed, and its outcome published.
    ended: bool,
}

impl Milestones {
    fn of(v: &OrderView) -> Self {
        Milestones {
            placed: v.record.placed,
            charged: v.charged_cents,
            refunded: v.refunded_cents,
            released: v.record.released,
            shipment_cancelled: v.record.shipment_cancelled,
            ended: v.record.placed && v.decided,
        }
    }
}

/// One event into an order's view: order-service's rules for the facts, the event itself for
/// amounts and lines, and order-service's published outcome over the rules' guess. `false` if
/// the event is not the order's news.
fn follow(view: &mut OrderView, order_id: &OrderId, input: &Envelope, ctx: &Context) -> bool {
    // The rules log as order-service would: the binary silences them (`SILENCED_LOGS`).
    let news = view.record.check(order_id, input) == Checked::New;
    if news {
        view.record.record(order_id, input, ctx);
    }
    if !news {
        // A cancellation already granted, or an order id reused with another payload.
        return false;
    }
    match &input.event {
        Event::OrderCreated(e) => {
            view.placed_at_ms = Some(input.meta.saga_started_at_ms);
            // The rules keep the first event's start, which a customer's request may have
            // set; the view's rows must not depend on which came first.
            view.record.created_at_ms = view.placed_at_ms;
            view.lines.clone_from(&e.items);
            view.total_cents = e.total_cents();
            view.country = Some(e.ship_to.country.clone());
        }
        Event::PaymentCompleted(e) => {
            view.charged_cents.get_or_insert(e.amount_cents);
        }
        Event::PaymentRefunded(e) => {
            view.refunded_cents.get_or_insert(e.amount_cents);
        }
        Event::OrderCompleted(_) if !view.decided => {
            view.decided = true;
            view.decided_at_ms = Some(input.meta.occurred_at_ms);
            view.record.completed = true;
            view.record.cancelled = None;
        }
        Event::OrderCancelled(e) if !view.decided => {
            view.decided = true;
            view.decided_at_ms = Some(input.meta.occurred_at_ms);
            view.record.completed = false;
            view.record.cancelled = Some(e.reason);
        }
        _ => {}
    }
    let step = Step { step: input.meta.event_type, at_ms: input.meta.occurred_at_ms, event_id: input.meta.event_id };
    let at = view.timeline.partition_point(|s| (s.at_ms, s.step) <= (step.at_ms, step.step));
    view.timeline.insert(at, step);
    true
}

impl Service for OrdersView {
    const NAME: &'static str = "orders-view";
    /// Every saga topic: the orders' events, and the dead letters it counts.
    const CONSUMES: &'static [Topic] = &Topic::ORDER;
    /// Nothing: a view never takes part in the saga.
    const EMITS: &'static [Topic] = &[];
    type Seed = Seed;
    /// order-service's rules log order-service's decisions; here they are only replayed.
    const SILENCED_LOGS: &'static [&'static str] = &["order_rules"];

    fn seed(&mut self, _seed: Seed) {}

    fn handle(&mut self, input: &Envelope, ctx: &Context) -> Vec<Event> {
        self.apply(input, ctx);
        Vec::new()
    }

    fn tables(&mut self) -> Vec<&mut dyn PersistentTable> {
        vec![&mut self.orders, &mut self.by_customer, &mut self.stats, &mut self.dead_letters]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shared_events::{
        Address, OrderCancellationRequested, OrderCancelled, OrderCompleted, OrderCreated, PaymentCompleted, PaymentRefunded, ShipmentCancelled,
        ShipmentScheduled, StockLine, StockReleased, StockReserved,
    };

    const T0: i64 = 1_764_000_000_000;

    fn created(id: &str) -> Envelope {
        let order = OrderCreated {
            order_id: id.into(),
            customer_id: "alice".into(),
            items: vec![LineItem { sku: "widget".into(), quantity: 2, unit_price_cents: 2500 }],
            ship_to: Address { country: "US".into(), ..Address::default() },
        };
        Envelope::root(order.into(), T0)
    }

    /// The events of one saga, each caused by the one before, `step_ms` apart.
    fn chain(first: Envelope, rest: Vec<Event>, step_ms: i64) -> Vec<Envelope> {
        let mut out = vec![first];
        for (i, event) in rest.into_iter().enumerate() {
            let cause = out.last().map(|e| e.meta.clone()).unwrap();
            out.push(Envelope::caused_by(&cause, event, T0 + (i as i64 + 1) * step_ms));
        }
        out
    }

    fn completed_saga(id: &str) -> Vec<Envelope> {
        let o: OrderId = id.into();
        let ship_to = Address { country: "US".into(), ..Address::default() };
        let items = vec![LineItem { sku: "widget".into(), quantity: 2, unit_price_cents: 2500 }];
        chain(
            created(id),
            vec![
                PaymentCompleted { order_id: o.clone(), customer_id: "alice".into(), amount_cents: 5000, items, ship_to: ship_to.clone() }.into(),
                StockReserved { order_id: o.clone(), items: vec![StockLine { sku: "widget".into(), quantity: 2 }], ship_to }.into(),
                ShipmentScheduled { order_id: o.clone(), shipment_id: format!("ship-{id}"), country: "US".into() }.into(),
                OrderCompleted { order_id: o, shipment_id: format!("ship-{id}") }.into(),
            ],
            10,
        )
    }

    /// An order the deadline cancelled while its shipment was being booked: the shipment, the
    /// cancellation and the compensations all follow.
    fn timed_out_saga(id: &str) -> Vec<Envelope> {
        let mut events = completed_saga(id);
        events.pop();
        let o: OrderId = id.into();
        let cancel = Envelope::on_timer(OrderCancelled { order_id: o.clone(), reason: CancelReason::Timeout, detail: "late".into() }.into(), T0, T0 + 35);
        let compensations = [
            Event::from(PaymentRefunded { order_id: o.clone(), customer_id: "alice".into(), amount_cents: 5000 }),
            StockReleased { order_id: o.clone(), items: vec![StockLine { sku: "widget".into(), quantity: 2 }] }.into(),
            ShipmentCancelled { order_id: o, shipment_id: format!("ship-{id}") }.into(),
        ];
        events.push(cancel.clone());
        events.extend(compensations.into_iter().enumerate().map(|(i, e)| Envelope::caused_by(&cancel.meta, e, T0 + 40 + i as i64)));
        events
    }

    /// A customer cancels an order after it was paid; and asks to cancel one never placed.
    fn cancelled_by_request(id: &str, never_placed: &str) -> Vec<Envelope> {
        let mut events = completed_saga(id);
        events.truncate(2);
        let o: OrderId = id.into();
        let request = Envelope::root(OrderCancellationRequested { order_id: o.clone(), reason: None }.into(), T0 + 15);
        let cancel = Envelope::caused_by(&request.meta, OrderCancelled { order_id: o.clone(), reason: CancelReason::CustomerRequest, detail: "asked".into() }.into(), T0 + 16);
        let refund = Envelope::caused_by(&cancel.meta, PaymentRefunded { order_id: o, customer_id: "alice".into(), amount_cents: 5000 }.into(), T0 + 17);
        let ghost: OrderId = never_placed.into();
        let ghost_request = Envelope::root(OrderCancellationRequested { order_id: ghost.clone(), reason: None }.into(), T0 + 20);
        let ghost_cancel = Envelope::caused_by(&ghost_request.meta, OrderCancelled { order_id: ghost, reason: CancelReason::CustomerRequest, detail: "asked".into() }.into(), T0 + 21);
        events.extend([request, cancel, refund, ghost_request, ghost_cancel]);
        events
    }

    /// What the view says of an order: not the rules' bookkeeping inside it (which request
    /// cancelled an order may depend on what came first), but everything the API shows.
    type Shown = (OrderStatus, Option<CancelReason>, Vec<Topic>, Vec<Topic>, [Option<u64>; 3], Vec<Step>, [Option<i64>; 2], Vec<LineItem>);

    fn shown(views: BTreeMap<String, OrderView>) -> BTreeMap<String, Shown> {
        views
            .into_iter()
            .map(|(id, v)| {
                let shown = (
                    v.status(),
                    v.cancel_reason(),
                    v.compensations_done(),
                    v.compensations_awaited(),
                    [v.total_cents, v.charged_cents, v.refunded_cents],
                    v.timeline.clone(),
                    [v.placed_at_ms, v.decided_at_ms],
                    v.lines.clone(),
                );
                (id, shown)
            })
            .collect()
    }

    /// Every row of a table, for comparing two views whole.
    fn rows<V: Clone + serde::de::DeserializeOwned>(table: &Table<V>) -> BTreeMap<String, V> {
        let mut out = BTreeMap::new();
        table.for_each(|k, v| {
            out.insert(k.to_owned(), v.clone());
        });
        out
    }

    fn view_of(events: &[Envelope]) -> OrdersView {
        let mut view = OrdersView::default();
        for e in events {
            view.apply(e, &Context { now_ms: e.meta.occurred_at_ms, partition: 0 });
        }
        view
    }

    #[test]
    fn a_completed_order_has_its_amounts_timeline_and_counts() {
        let view = view_of(&completed_saga("o-1"));
        let o = view.orders.get("o-1").unwrap();
        assert_eq!(o.status(), OrderStatus::Completed);
        assert_eq!((o.total_cents, o.charged_cents, o.refunded_cents), (Some(5000), Some(5000), None));
        let steps: Vec<Topic> = o.timeline.iter().map(|s| s.step).collect();
        assert_eq!(steps, [Topic::OrderCreated, Topic::PaymentCompleted, Topic::StockReserved, Topic::ShipmentScheduled, Topic::OrderCompleted]);
        let all = view.stats.get(ALL_TIME).unwrap();
        assert_eq!((all.placed, all.completed, all.charged_cents, all.revenue_cents()), (1, 1, 5000, 5000));
        assert_eq!(view.stats.get(&hour_key(T0)), Some(all), "one hour holds it all");
        assert!(view.by_customer.get(&customer_key("alice", T0, "o-1")).is_some());
    }

    #[test]
    fn a_guess_gives_way_to_the_outcome_order_service_published() {
        // The shipment arrives before the deadline's cancellation: the rules alone would call
        // the order completed. Until order-service says, the view shows how far it got.
        let events = timed_out_saga("o-2");
        let mut view = view_of(&events[..4]);
        assert_eq!(view.orders.get("o-2").unwrap().status(), OrderStatus::Reserved);
        for e in &events[4..] {
            view.apply(e, &Context { now_ms: 0, partition: 0 });
        }
        let o = view.orders.get("o-2").unwrap();
        assert_eq!((o.status(), o.cancel_reason()), (OrderStatus::Cancelled, Some(CancelReason::Timeout)));
        assert_eq!(o.compensations_done(), [Topic::PaymentRefunded, Topic::StockReleased, Topic::ShipmentCancelled]);
        assert!(o.compensations_awaited().is_empty());
        let all = view.stats.get(ALL_TIME).unwrap();
        assert_eq!((all.completed, all.cancelled_total(), all.refunds, all.stock_releases, all.shipment_cancellations), (0, 1, 1, 1, 1));
        assert_eq!(all.revenue_cents(), 0);
    }

    #[test]
    fn a_dead_letter_is_counted_once() {
        let letter = DeadLetter::rejected(&"o-3".into(), "invalid_json", "bad".into());
        let envelope = Envelope::root(Event::DeadLetter(letter), T0);
        let view = view_of(&[envelope.clone(), envelope]);
        assert_eq!(view.stats.get(ALL_TIME).unwrap().dead_letters, BTreeMap::from([("invalid_json".to_owned(), 1)]));
    }

    proptest! {
        /// Topics arrive in any order, and duplicates get through: the view and every count
        /// end the same.
        #[test]
        fn any_arrival_order_with_duplicates_ends_the_same(
            done in Just(completed_saga("o-1")).prop_shuffle(),
            late in Just(timed_out_saga("o-2")).prop_shuffle(),
            asked in Just(cancelled_by_request("o-3", "o-9")).prop_shuffle(),
            again in proptest::collection::vec(0usize..20, 0..6),
        ) {
            let expected = view_of(&[completed_saga("o-1"), timed_out_saga("o-2"), cancelled_by_request("o-3", "o-9")].concat());
            let mut events: Vec<Envelope> = done.into_iter().chain(late).chain(asked).collect();
            let copies: Vec<Envelope> = again.iter().map(|i| events[i % events.len()].clone()).collect();
            events.extend(copies);
            let view = view_of(&events);
            prop_assert_eq!(shown(rows(&view.orders)), shown(rows(&expected.orders)));
            prop_assert_eq!(rows(&view.stats), rows(&expected.stats));
            prop_assert_eq!(rows(&view.by_customer), rows(&expected.by_customer));
            // The order cancelled on request was placed at its creation, not its request.
            prop_assert_eq!(view.orders.get("o-3").and_then(|o| o.placed_at_ms), Some(T0));
            // Three orders ended; the request for one never placed ended none.
            let all = view.stats.get(ALL_TIME).unwrap();
            prop_assert_eq!((all.placed, all.completed, all.cancelled_total()), (3, 1, 2));
        }
    }
}
