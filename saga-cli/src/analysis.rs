//! What the recorded events say: per-saga histories, current state, stuck sagas, and
//! violations of the sagas' invariants. Pure functions: no Kafka, no clock. Orders are
//! analysed here; trips in [`crate::trips`].

use std::collections::{BTreeMap, BTreeSet};

use order_rules::{OrderRecord, OrderStatus, Orders};
use saga_runtime::Context;
use shared_events::{Envelope, Event, EventId, Saga, Topic};

/// One event as found on a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub topic: Topic,
    pub partition: i32,
    pub offset: i64,
    pub envelope: Envelope,
}

impl Recorded {
    /// The order or trip it is about.
    pub fn saga_id(&self) -> Option<&str> {
        self.envelope.event.saga_id()
    }

    /// The saga it belongs to (`None`: a dead letter).
    pub fn saga(&self) -> Option<Saga> {
        self.topic.saga()
    }

    pub fn at_ms(&self) -> i64 {
        self.envelope.meta.occurred_at_ms
    }
}

/// Events grouped by order or trip, each one's events once per event id, in time order. An
/// order and a trip may share an id (each saga's ids are its own): they are two sagas. A
/// request its saga parked as a conflict (an id reused with another payload) is left out: it
/// is the customer's mistake, on DeadLetter, and no part of the saga it collided with.
pub fn by_saga(events: &[Recorded]) -> BTreeMap<(Saga, String), Vec<Recorded>> {
    let parked: BTreeSet<(&str, i32, i64)> = events
        .iter()
        .filter_map(|e| match &e.envelope.event {
            Event::DeadLetter(l) if matches!(l.error_code.as_str(), "order_id_conflict" | "trip_id_conflict") => {
                Some((l.source_topic.as_str(), l.source_partition, l.source_offset))
            }
            _ => None,
        })
        .collect();
    // The letter names the topic as written, with any `--topic-prefix`.
    let was_parked = |e: &Recorded| parked.iter().any(|(topic, p, o)| (*p, *o) == (e.partition, e.offset) && topic.ends_with(e.topic.as_str()));
    let mut sagas: BTreeMap<(Saga, String), Vec<Recorded>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for e in events {
        let (Some(id), Some(saga)) = (e.saga_id(), e.saga()) else { continue };
        if !seen.insert(e.envelope.meta.event_id) || was_parked(e) {
            continue;
        }
        sagas.entry((saga, id.to_owned())).or_default().push(e.clone());
    }
    for list in sagas.values_mut() {
        list.sort_by_key(|e| (e.at_ms(), e.topic, e.offset));
    }
    sagas
}

/// An order's state as the order service sees it, from its events (replayed through the
/// order service's own rules).
pub fn state(history: &[Recorded]) -> OrderRecord {
    let mut orders = Orders::default();
    let mut id = None;
    for e in history {
        let ctx = Context { now_ms: e.at_ms(), partition: e.partition };
        orders.apply(&e.envelope, &ctx);
        id = e.saga_id().map(str::to_owned);
    }
    id.and_then(|id| orders.orders.get(&id)).unwrap_or_default()
}

/// Whether the saga has a terminal event on the topics.
pub fn is_terminal(history: &[Recorded]) -> bool {
    history.iter().any(|e| e.topic.is_terminal())
}

/// What one saga of `saga` is called: an order, a trip.
pub fn noun(saga: Saga) -> &'static str {
    match saga {
        Saga::Order => "order",
        Saga::Travel => "trip",
    }
}

/// Whether a history is a trip's.
fn is_trip(history: &[Recorded]) -> bool {
    history.first().and_then(Recorded::saga) == Some(Saga::Travel)
}

/// The one-line summary of an order's or a trip's state.
pub fn state_line(history: &[Recorded]) -> String {
    if is_trip(history) {
        return crate::trips::state_line(history);
    }
    let rec = state(history);
    let span = match (history.first(), history.last()) {
        (Some(a), Some(b)) => format!(", {} ms from first to last event", b.at_ms() - a.at_ms()),
        _ => String::new(),
    };
    let status = match rec.status() {
        OrderStatus::Cancelled => {
            let reason = rec.cancelled.map(|r| r.to_string()).unwrap_or_default();
            let awaiting = rec.awaiting();
            if awaiting.is_empty() {
                let mut undone = Vec::new();
                if rec.refunded {
                    undone.push("refunded");
                }
                if rec.released {
                    undone.push("stock released");
                }
                if rec.shipment_cancelled {
                    undone.push("shipment called off");
                }
                if undone.is_empty() {
                    format!("cancelled ({reason}), nothing to undo")
                } else {
                    format!("cancelled ({reason}), compensated: {}", undone.join(", "))
                }
            } else {
                let names: Vec<&str> = awaiting.iter().map(|t| t.as_str()).collect();
                format!("cancelled ({reason}), waiting for {}", names.join(" and "))
            }
        }
        OrderStatus::Completed => "completed (shipped)".to_owned(),
        other => format!("{} — {}", format!("{other:?}").to_lowercase(), waiting_on(&rec)),
    };
    format!("state: {status}{span}")
}

/// The step an unfinished saga waits for.
pub fn waiting_on(rec: &OrderRecord) -> String {
    if rec.cancelled.is_some() {
        let names: Vec<&str> = rec.awaiting().iter().map(|t| t.as_str()).collect();
        return format!("compensation: {}", names.join(", "));
    }
    match rec.status() {
        OrderStatus::Pending if !rec.placed => "its OrderCreated (seen only later steps)".to_owned(),
        OrderStatus::Pending => "payment (PaymentCompleted or PaymentFailed)".to_owned(),
        OrderStatus::Paid => "inventory (StockReserved or StockFailed)".to_owned(),
        OrderStatus::Reserved => "shipping (ShipmentScheduled or ShippingFailed)".to_owned(),
        OrderStatus::Completed | OrderStatus::Cancelled => "nothing".to_owned(),
    }
}

/// A saga without a terminal state (or a cancelled one still awaiting compensation) older
/// than the threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    pub saga: Saga,
    pub order_id: String,
    pub age_ms: i64,
    pub last: Topic,
    pub waiting_on: String,
}

/// Sagas started more than `older_than_ms` before `now_ms` that have not finished.
pub fn stuck(events: &[Recorded], now_ms: i64, older_than_ms: i64) -> Vec<Stuck> {
    let mut out = Vec::new();
    for ((saga, order_id), history) in by_saga(events) {
        let (unfinished, waiting) = if is_trip(&history) {
            let rec = crate::trips::state(&history);
            (!crate::trips::is_finished(&rec), crate::trips::waiting_on(&rec))
        } else {
            let rec = state(&history);
            (!is_terminal(&history) || !rec.awaiting().is_empty(), waiting_on(&rec))
        };
        let started = history.iter().map(|e| e.envelope.meta.saga_started_at_ms).min().unwrap_or(now_ms);
        let age_ms = now_ms - started;
        if unfinished && age_ms > older_than_ms {
            let last = history.last().map_or(Topic::OrderCreated, |e| e.topic);
            out.push(Stuck { saga, order_id, age_ms, last, waiting_on: waiting });
        }
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.age_ms));
    out
}

/// A broken invariant, with the events that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Whose: `None` for an event that names no saga.
    pub saga: Option<Saga>,
    pub order_id: Option<String>,
    pub rule: &'static str,
    pub detail: String,
    pub evidence: Vec<Recorded>,
}

/// Checks the whole log:
/// - no order both completed and cancelled, and no event type twice for one order;
/// - a cancelled order that was charged is refunded exactly once, by the amount charged;
///   its reservation released exactly once, exactly; its late shipment called off;
/// - nothing is compensated that was not done, or for an order that was not cancelled;
/// - every event's cause is an event on the topics.
///
/// Compensations still missing for cancellations younger than `grace_ms` are in flight, not
/// violations.
pub fn audit(events: &[Recorded], now_ms: i64, grace_ms: i64) -> Vec<Violation> {
    let mut out = Vec::new();
    let known: BTreeSet<EventId> = events.iter().map(|e| e.envelope.meta.event_id).collect();
    for e in events {
        if let Some(cause) = e.envelope.meta.causation_id {
            if !known.contains(&cause) {
                out.push(Violation {
                    saga: e.saga(),
                    order_id: e.saga_id().map(str::to_owned),
                    rule: "unknown cause",
                    detail: format!("{} names cause {cause}, which is on no topic", e.topic),
                    evidence: vec![e.clone()],
                });
            }
        }
    }
    for ((_, order_id), history) in by_saga(events) {
        if is_trip(&history) {
            crate::trips::audit(&order_id, &history, now_ms, grace_ms, &mut out);
            continue;
        }
        let mut v = |rule: &'static str, detail: String, evidence: Vec<&Recorded>| {
            out.push(Violation {
                saga: Some(Saga::Order),
                order_id: Some(order_id.clone()),
                rule,
                detail,
                evidence: evidence.into_iter().cloned().collect(),
            })
        };
        let of = |t: Topic| history.iter().filter(|e| e.topic == t).collect::<Vec<_>>();
        for t in Topic::ORDER {
            let list = of(t);
            // A customer may ask to cancel more than once; every other event happens once.
            if list.len() > 1 && !matches!(t, Topic::OrderCancellationRequested | Topic::OrderCancellationRefused) {
                v("once per order", format!("{} distinct {t} events", list.len()), list);
            }
        }
        let completed = of(Topic::OrderCompleted);
        let cancelled = of(Topic::OrderCancelled);
        if !completed.is_empty() && !cancelled.is_empty() {
            v("one terminal state", "both completed and cancelled".into(), completed.iter().chain(&cancelled).copied().collect());
        }
        let charged = of(Topic::PaymentCompleted);
        let refunded = of(Topic::PaymentRefunded);
        let reserved = of(Topic::StockReserved);
        let released = of(Topic::StockReleased);
        let shipped = of(Topic::ShipmentScheduled);
        let called_off = of(Topic::ShipmentCancelled);
        if cancelled.is_empty() {
            for (what, list) in [("refunded", &refunded), ("stock released", &released), ("shipment called off", &called_off)] {
                if !list.is_empty() {
                    v("compensate only cancelled orders", format!("{what}, but the order was never cancelled"), list.clone());
                }
            }
            continue;
        }
        let in_flight = cancelled.iter().all(|c| now_ms - c.at_ms() < grace_ms);
        let pairs = [
            ("refund exactly what was charged", &charged, &refunded, "charged", "refunded"),
            ("release exactly what was reserved", &reserved, &released, "reserved", "released"),
            ("call off a late shipment", &shipped, &called_off, "shipped", "called off"),
        ];
        for (rule, done, undone, done_word, undone_word) in pairs {
            match (done.len(), undone.len()) {
                (0, 0) => {}
                (0, _) => v(rule, format!("{undone_word} but never {done_word}"), undone.clone()),
                (_, 0) if in_flight => {}
                (_, 0) => v(rule, format!("cancelled and {done_word}, but never {undone_word}"), done.iter().chain(&cancelled).copied().collect()),
                (_, 1) => {
                    if let Some(diff) = mismatch(&done[0].envelope.event, &undone[0].envelope.event) {
                        v(rule, diff, vec![done[0], undone[0]]);
                    }
                }
                (_, n) => v(rule, format!("{undone_word} {n} times"), undone.clone()),
            }
        }
    }
    out
}

/// How a compensation differs from what it undoes, if it does.
fn mismatch(done: &Event, undone: &Event) -> Option<String> {
    match (done, undone) {
        (Event::PaymentCompleted(c), Event::PaymentRefunded(r)) if c.amount_cents != r.amount_cents => {
            Some(format!("charged {} cents, refunded {}", c.amount_cents, r.amount_cents))
        }
        (Event::StockReserved(a), Event::StockReleased(b)) if a.items != b.items => {
            Some(format!("reserved {:?}, released {:?}", a.items, b.items))
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use shared_events::*;

    fn rec(topic: Topic, event: Event, cause: Option<&Recorded>, at: i64) -> Recorded {
        let envelope = match cause {
            Some(c) => Envelope::caused_by(&c.envelope.meta, event, at),
            None => Envelope::root(event, at),
        };
        Recorded { topic, partition: 0, offset: at, envelope }
    }

    fn cancelled_after_shipping_failed() -> Vec<Recorded> {
        let id = OrderId::from("o-1");
        let items = vec![LineItem { sku: "widget".into(), quantity: 2, unit_price_cents: 10 }];
        let ship_to = Address { country: "AQ".into(), ..Address::default() };
        let lines = vec![StockLine { sku: "widget".into(), quantity: 2 }];
        let created = rec(Topic::OrderCreated, OrderCreated { order_id: id.clone(), customer_id: "alice".into(), items: items.clone(), ship_to: ship_to.clone() }.into(), None, 1);
        let paid = rec(Topic::PaymentCompleted, PaymentCompleted { order_id: id.clone(), customer_id: "alice".into(), amount_cents: 20, items, ship_to: ship_to.clone() }.into(), Some(&created), 2);
        let reserved = rec(Topic::StockReserved, StockReserved { order_id: id.clone(), items: lines.clone(), ship_to }.into(), Some(&paid), 3);
        let failed = rec(Topic::ShippingFailed, ShippingFailed { order_id: id.clone(), country: "AQ".into(), reason: ShippingFailureReason::DestinationNotServed }.into(), Some(&reserved), 4);
        let cancelled = rec(Topic::OrderCancelled, OrderCancelled { order_id: id.clone(), reason: CancelReason::ShippingFailed, detail: String::new() }.into(), Some(&failed), 5);
        let refunded = rec(Topic::PaymentRefunded, PaymentRefunded { order_id: id.clone(), customer_id: "alice".into(), amount_cents: 20 }.into(), Some(&cancelled), 6);
        let released = rec(Topic::StockReleased, StockReleased { order_id: id, items: lines }.into(), Some(&cancelled), 7);
        vec![created, paid, reserved, failed, cancelled, refunded, released]
    }

    #[test]
    fn a_compensated_saga_passes_the_audit_and_reads_as_compensated() {
        let events = cancelled_after_shipping_failed();
        assert_eq!(audit(&events, 1_000_000, 30_000), vec![]);
        let line = state_line(&by_saga(&events)[&(Saga::Order, "o-1".to_owned())]);
        assert!(line.contains("cancelled (shipping_failed), compensated: refunded, stock released"), "{line}");
        assert!(stuck(&events, 1_000_000, 1_000).is_empty());
    }

    #[test]
    fn a_missing_refund_is_in_flight_then_a_violation() {
        let mut events = cancelled_after_shipping_failed();
        events.retain(|e| e.topic != Topic::PaymentRefunded);
        assert!(audit(&events, 10, 30_000).is_empty(), "within the grace period");
        let found = audit(&events, 100_000, 30_000);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].rule, "refund exactly what was charged");
        let stuck = stuck(&events, 100_000, 1_000);
        assert_eq!(stuck.len(), 1);
        assert!(stuck[0].waiting_on.contains("PaymentRefunded"));
    }

    #[test]
    fn double_refunds_wrong_amounts_and_unknown_causes_are_found() {
        let mut events = cancelled_after_shipping_failed();
        let cancelled = events[4].clone();
        let mut second = rec(Topic::PaymentRefunded, PaymentRefunded { order_id: "o-1".into(), customer_id: "alice".into(), amount_cents: 25 }.into(), Some(&cancelled), 8);
        second.envelope.meta.event_id = EventId::for_order(Topic::DeadLetter, "x");
        events.push(second);
        let rules: BTreeSet<&str> = audit(&events, 100_000, 30_000).iter().map(|v| v.rule).collect();
        assert!(rules.contains("refund exactly what was charged") && rules.contains("once per order"), "{rules:?}");

        let mut events = cancelled_after_shipping_failed();
        events.remove(0); // the OrderCreated, cause of the PaymentCompleted
        let found = audit(&events, 100_000, 30_000);
        assert!(found.iter().any(|v| v.rule == "unknown cause"), "{found:?}");
    }

    #[test]
    fn an_unfinished_saga_is_stuck_waiting_on_the_next_step() {
        let events: Vec<Recorded> = cancelled_after_shipping_failed().into_iter().take(2).collect();
        let found = stuck(&events, 60_000, 30_000);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].last, Topic::PaymentCompleted);
        assert!(found[0].waiting_on.starts_with("inventory"), "{}", found[0].waiting_on);
    }

    /// The compensated order, and its id reused for another order, at `at` (offset `at`).
    fn reused_with_another_order(at: i64) -> Vec<Recorded> {
        let mut events = cancelled_after_shipping_failed();
        let other = OrderCreated { order_id: "o-1".into(), customer_id: "bob".into(), items: vec![LineItem { sku: "gadget".into(), quantity: 1, unit_price_cents: 5 }], ship_to: Address::default() };
        events.push(rec(Topic::OrderCreated, other.into(), None, at));
        events
    }

    /// What order-service parks for the record at `topic`/0/`offset`.
    fn parked(topic: &str, offset: i64, letter: DeadLetter) -> Recorded {
        let letter = DeadLetter { source_topic: topic.to_owned(), source_partition: 0, source_offset: offset, ..letter };
        rec(Topic::DeadLetter, letter.into(), None, 100)
    }

    #[test]
    fn an_order_id_reused_is_a_violation_unless_it_was_parked_as_a_conflict() {
        let events = reused_with_another_order(8);
        let rules: Vec<&str> = audit(&events, 100_000, 30_000).iter().map(|v| v.rule).collect();
        assert_eq!(rules, ["once per order"]);
        let mut events = events;
        events.push(parked("bench.OrderCreated", 8, DeadLetter::rejected(&"o-1".into(), "order_id_conflict", "placed before".into())));
        assert_eq!(audit(&events, 100_000, 30_000), vec![]);
        // Parked, it is no part of the order, even stamped before it: not in its story either.
        let mut early = reused_with_another_order(0);
        early.push(parked("OrderCreated", 0, DeadLetter::rejected(&"o-1".into(), "order_id_conflict", "placed before".into())));
        let history = &by_saga(&early)[&(Saga::Order, "o-1".to_owned())];
        assert_eq!(history.len(), 7);
        assert!(matches!(&history[0].envelope.event, Event::OrderCreated(o) if o.customer_id == "alice"));
        // A trip's conflict excuses nothing of an order with the same id.
        let mut events = reused_with_another_order(8);
        events.push(parked("TripRequested", 8, DeadLetter::rejected_trip(&"o-1".into(), "trip_id_conflict", "requested before".into())));
        assert_eq!(audit(&events, 100_000, 30_000).len(), 1);
    }

    #[test]
    fn an_order_and_a_trip_that_share_an_id_are_two_sagas() {
        let mut events = cancelled_after_shipping_failed();
        let request = travel::TripRequested {
            trip_id: "o-1".into(),
            customer_id: "alice".into(),
            flight: None,
            hotel: None,
            car: Some(travel::CarLeg { location: "SYD".into(), pick_up: "2027-03-14".into(), days: 1, cars: 1, price_cents: 5 }),
        };
        let requested = rec(Topic::TripRequested, request.into(), None, 10);
        let unavailable = travel::LegUnavailable { trip_id: "o-1".into(), leg: travel::Leg::Car, reason: travel::UnavailableReason::SoldOut };
        let car = rec(Topic::CarUnavailable, unavailable.into(), Some(&requested), 11);
        let cancelled = travel::TripCancelled { trip_id: "o-1".into(), reason: travel::TripCancelReason::LegUnavailable { leg: travel::Leg::Car } };
        let cancelled = rec(Topic::TripCancelled, cancelled.into(), Some(&car), 12);
        events.extend([requested, car, cancelled]);
        let sagas = by_saga(&events);
        assert_eq!(sagas.keys().cloned().collect::<Vec<_>>(), [(Saga::Order, "o-1".to_owned()), (Saga::Travel, "o-1".to_owned())]);
        assert_eq!(sagas[&(Saga::Travel, "o-1".to_owned())].len(), 3);
        assert_eq!(audit(&events, 100_000, 30_000), vec![], "neither saga's events break the other's rules");
        assert!(state_line(&sagas[&(Saga::Travel, "o-1".to_owned())]).contains("cancelled"));
    }
}
