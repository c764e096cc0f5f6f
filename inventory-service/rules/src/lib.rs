//! Inventory rules: reserve every line of a paid order or none of them, and release exactly
//! that reservation when the order is cancelled. No I/O.
//!
//! Invariant: Σ stock + Σ reserved (not released) = Σ seeded stock, per SKU.

use std::collections::BTreeMap;

use saga_core::{Context, PersistentTable, Service, Table};
use serde::{Deserialize, Serialize};
use shared_events::{
    describe_lines, Envelope, Event, OrderCancelled, PaymentCompleted, StockFailed, StockFailureReason, StockLine,
    StockReleased, StockReserved, Topic,
};
use tracing::{debug, info, warn};

/// What inventory knows about one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Reservation {
    Reserved { items: Vec<StockLine> },
    Released { items: Vec<StockLine> },
    Refused { reason: StockFailureReason, sku: String },
    /// The cancellation arrived before the payment: a tombstone, so a late
    /// `PaymentCompleted` never reserves.
    CancelledBeforeReserve,
}

/// Stock on first start: `{"stock": {"widget": 100}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub stock: BTreeMap<String, u32>,
}

impl Default for Seed {
    /// The demo stock.
    fn default() -> Self {
        Seed { stock: [("widget".into(), 100), ("gadget".into(), 5), ("gizmo".into(), 0)].into() }
    }
}

/// Inventory's state: units on hand by SKU, and a reservation record per order.
#[derive(Debug)]
pub struct Inventory {
    pub stock: Table<u32>,
    pub reservations: Table<Reservation>,
}

impl Default for Inventory {
    fn default() -> Self {
        Inventory { stock: Table::new("stock"), reservations: Table::new("reservations") }
    }
}

/// Sums the quantities of lines that name the same SKU; sorted by SKU.
pub fn merge_lines<'a>(lines: impl IntoIterator<Item = (&'a str, u32)>) -> Vec<(String, u64)> {
    let mut merged = BTreeMap::<&str, u64>::new();
    for (sku, qty) in lines {
        *merged.entry(sku).or_default() += u64::from(qty);
    }
    merged.into_iter().map(|(s, q)| (s.to_owned(), q)).collect()
}

impl Inventory {
    /// Reserves all lines, or none (naming the first SKU that is short or unknown).
    pub fn on_payment_completed(&mut self, paid: &PaymentCompleted) -> Option<Event> {
        let order_id = paid.order_id.as_str();
        match self.reservations.get(order_id) {
            Some(Reservation::CancelledBeforeReserve) => {
                warn!(order_id = %order_id, "payment arrived after the order's cancellation: not reserving");
                return None;
            }
            Some(_) => {
                debug!(order_id = %order_id, "order already handled");
                return None;
            }
            None => {}
        }
        let wanted = merge_lines(paid.items.iter().map(|l| (l.sku.as_str(), l.quantity)));
        for (sku, requested) in &wanted {
            let available = self.stock.get(sku);
            let reason = match available {
                None => StockFailureReason::UnknownSku,
                Some(a) if u64::from(a) < *requested => StockFailureReason::OutOfStock,
                Some(_) => continue,
            };
            let requested = u32::try_from(*requested).unwrap_or(u32::MAX);
            let available = available.unwrap_or(0);
            info!(order_id = %order_id, sku, requested, available, reason = %reason, "stock refused, nothing reserved → StockFailed");
            self.reservations.insert(order_id, Reservation::Refused { reason, sku: sku.clone() });
            return Some(Event::StockFailed(StockFailed {
                order_id: paid.order_id.clone(),
                reason,
                sku: sku.clone(),
                requested,
                available,
            }));
        }
        let items: Vec<StockLine> = wanted
            .into_iter()
            .map(|(sku, q)| StockLine { sku, quantity: u32::try_from(q).unwrap_or(u32::MAX) })
            .collect();
        for line in &items {
            if let Some(on_hand) = self.stock.get_mut(&line.sku) {
                *on_hand -= line.quantity; // checked above: on_hand >= quantity
            }
        }
        info!(order_id = %order_id, items = %describe_lines(&items), "stock reserved → StockReserved");
        self.reservations.insert(order_id, Reservation::Reserved { items: items.clone() });
        Some(Event::StockReserved(StockReserved {
            order_id: paid.order_id.clone(),
            items,
            ship_to: paid.ship_to.clone(),
        }))
    }

    /// Releases exactly what was reserved; does nothing for an order it never reserved.
    pub fn on_order_cancelled(&mut self, cancel: &OrderCancelled) -> Option<Event> {
        let order_id = cancel.order_id.as_str();
        match self.reservations.get(order_id) {
            Some(Reservation::Reserved { items }) => {
                for line in &items {
                    match self.stock.get_mut(&line.sku) {
                        Some(on_hand) => *on_hand = on_hand.saturating_add(line.quantity),
                        None => self.stock.insert(line.sku.clone(), line.quantity),
                    }
                }
                warn!(order_id = %order_id, items = %describe_lines(&items), compensation = true, "COMPENSATION: stock released → StockReleased");
                self.reservations.insert(order_id, Reservation::Released { items: items.clone() });
                Some(Event::StockReleased(StockReleased { order_id: cancel.order_id.clone(), items }))
            }
            Some(Reservation::Refused { .. }) => {
                info!(order_id = %order_id, "order cancelled; nothing was reserved, nothing to release");
                None
            }
            Some(Reservation::Released { .. } | Reservation::CancelledBeforeReserve) => None,
            None => {
                info!(order_id = %order_id, "order cancelled with nothing reserved; a late payment will not reserve it");
                self.reservations.insert(order_id, Reservation::CancelledBeforeReserve);
                None
            }
        }
    }

    /// Units held by live reservations, by SKU.
    pub fn reserved(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        self.reservations.for_each(|_, r| {
            if let Reservation::Reserved { items } = r {
                for l in items {
                    *out.entry(l.sku.clone()).or_default() += u64::from(l.quantity);
                }
            }
        });
        out
    }
}

impl Service for Inventory {
    const NAME: &'static str = "inventory-service";
    const CONSUMES: &'static [Topic] = &[Topic::PaymentCompleted, Topic::OrderCancelled];
    const EMITS: &'static [Topic] = &[Topic::StockReserved, Topic::StockFailed, Topic::StockReleased];
    type Seed = Seed;

    fn seed(&mut self, seed: Seed) {
        for (sku, units) in seed.stock {
            self.stock.insert(sku, units);
        }
    }

    fn handle(&mut self, input: &Envelope, _ctx: &Context) -> Vec<Event> {
        let emitted = match &input.event {
            Event::PaymentCompleted(paid) => self.on_payment_completed(paid),
            Event::OrderCancelled(cancel) => self.on_order_cancelled(cancel),
            _ => None,
        };
        emitted.into_iter().collect()
    }

    fn tables(&mut self) -> Vec<&mut dyn PersistentTable> {
        vec![&mut self.stock, &mut self.reservations]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shared_events::{Address, CancelReason, LineItem};

    fn paid(id: &str, lines: &[(&str, u32)]) -> PaymentCompleted {
        PaymentCompleted {
            order_id: id.into(),
            customer_id: "alice".into(),
            amount_cents: 0,
            items: lines
                .iter()
                .map(|(s, q)| LineItem { sku: (*s).into(), quantity: *q, unit_price_cents: 1 })
                .collect(),
            ship_to: Address { country: "US".into(), ..Address::default() },
        }
    }

    fn cancel(id: &str) -> OrderCancelled {
        OrderCancelled { order_id: id.into(), reason: CancelReason::ShippingFailed, detail: String::new() }
    }

    fn demo() -> Inventory {
        let mut i = Inventory::default();
        i.seed(Seed::default());
        i
    }

    #[test]
    fn reserves_all_lines_merging_duplicates() {
        let mut inv = demo();
        let out = inv.on_payment_completed(&paid("o-1", &[("widget", 2), ("gadget", 1), ("widget", 3)]));
        let Some(Event::StockReserved(r)) = out else { panic!("expected StockReserved, got {out:?}") };
        assert_eq!(r.items, vec![StockLine { sku: "gadget".into(), quantity: 1 }, StockLine { sku: "widget".into(), quantity: 5 }]);
        assert_eq!(inv.stock.get("widget"), Some(95));
        assert_eq!(inv.stock.get("gadget"), Some(4));
    }

    #[test]
    fn reserves_nothing_when_one_line_is_short() {
        let mut inv = demo();
        let out = inv.on_payment_completed(&paid("o-1", &[("widget", 2), ("gizmo", 1)]));
        assert!(matches!(out, Some(Event::StockFailed(StockFailed { reason: StockFailureReason::OutOfStock, requested: 1, available: 0, .. }))));
        assert_eq!(inv.stock.get("widget"), Some(100));
        let unknown = inv.on_payment_completed(&paid("o-2", &[("sprocket", 1)]));
        assert!(matches!(unknown, Some(Event::StockFailed(StockFailed { reason: StockFailureReason::UnknownSku, .. }))));
        assert_eq!(inv.on_order_cancelled(&cancel("o-1")), None);
    }

    #[test]
    fn releases_exactly_once_and_tombstones_block_late_payments() {
        let mut inv = demo();
        inv.on_payment_completed(&paid("o-1", &[("gadget", 5)]));
        assert_eq!(inv.stock.get("gadget"), Some(0));
        assert!(matches!(inv.on_order_cancelled(&cancel("o-1")), Some(Event::StockReleased(_))));
        assert_eq!(inv.on_order_cancelled(&cancel("o-1")), None);
        assert_eq!(inv.stock.get("gadget"), Some(5));
        assert_eq!(inv.on_order_cancelled(&cancel("o-2")), None);
        assert_eq!(inv.on_payment_completed(&paid("o-2", &[("gadget", 1)])), None);
        assert_eq!(inv.stock.get("gadget"), Some(5));
    }

    #[derive(Debug, Clone)]
    enum Input {
        Paid { order: usize, lines: Vec<(usize, u32)> },
        Cancelled { order: usize },
    }

    fn input() -> impl Strategy<Value = Input> {
        prop_oneof![
            (0usize..5, prop::collection::vec((0usize..4, 1u32..4), 1..3))
                .prop_map(|(order, lines)| Input::Paid { order, lines }),
            (0usize..5).prop_map(|order| Input::Cancelled { order }),
        ]
    }

    proptest! {
        /// Any sequence conserves stock per SKU and never releases what was not reserved.
        #[test]
        fn stock_is_conserved(inputs in prop::collection::vec(input(), 0..40)) {
            const SKUS: [&str; 4] = ["widget", "gadget", "gizmo", "sprocket"];
            let mut inv = demo();
            let mut start = BTreeMap::new();
            inv.stock.for_each(|sku, units| {
                start.insert(sku.to_owned(), u64::from(*units));
            });
            let mut released = std::collections::BTreeSet::new();
            for i in inputs {
                match i {
                    Input::Paid { order, lines } => {
                        let lines: Vec<(&str, u32)> = lines.iter().map(|(s, q)| (SKUS[*s], *q)).collect();
                        inv.on_payment_completed(&paid(&format!("o-{order}"), &lines));
                    }
                    Input::Cancelled { order } => {
                        if let Some(Event::StockReleased(_)) = inv.on_order_cancelled(&cancel(&format!("o-{order}"))) {
                            prop_assert!(released.insert(order), "released twice");
                        }
                    }
                }
                let reserved = inv.reserved();
                for (sku, units) in &start {
                    let on_hand = u64::from(inv.stock.get(sku).unwrap_or(0));
                    prop_assert_eq!(on_hand + reserved.get(sku).copied().unwrap_or(0), *units, "{}", sku);
                }
            }
        }
    }
}
