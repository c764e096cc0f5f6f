//! Payment rules: charge a customer's wallet when an order is created, refund exactly that
//! charge when the order is cancelled. No I/O: the runtime feeds events and persists tables.
//!
//! Invariant: Σ wallets + Σ charges not refunded = Σ seeded wallets. Each order is charged at
//! most once and refunded at most once, and only if it was charged.

use std::collections::BTreeMap;

use saga_core::{Context, PersistentTable, Service, Table};
use serde::{Deserialize, Serialize};
use shared_events::{
    Envelope, Event, OrderCancelled, OrderCreated, PaymentCompleted, PaymentFailed,
    PaymentFailureReason, PaymentRefunded, Topic,
};
use tracing::{debug, info, warn};

/// Wallets: balances in cents by customer. Shared with the travel saga's billing, whose
/// charge is the same act on a different saga.
pub mod wallet {
    use saga_core::Table;
    use shared_events::PaymentFailureReason;

    /// Takes `amount_cents` from `customer_id`'s wallet, or says why not (and takes nothing).
    pub fn charge(wallets: &mut Table<u64>, customer_id: &str, amount_cents: u64) -> Result<(), PaymentFailureReason> {
        // Read first: a refusal must not mark the row changed.
        match wallets.get(customer_id) {
            None => Err(PaymentFailureReason::UnknownCustomer),
            Some(b) if b < amount_cents => Err(PaymentFailureReason::InsufficientFunds),
            Some(_) => {
                if let Some(b) = wallets.get_mut(customer_id) {
                    *b -= amount_cents;
                }
                Ok(())
            }
        }
    }

    /// Gives `amount_cents` back to `customer_id`'s wallet (made again if it was removed).
    pub fn refund(wallets: &mut Table<u64>, customer_id: &str, amount_cents: u64) {
        match wallets.get_mut(customer_id) {
            Some(b) => *b = b.saturating_add(amount_cents),
            None => wallets.insert(customer_id, amount_cents),
        }
    }
}

/// What payment knows about one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PaymentRecord {
    Charged { customer_id: String, amount_cents: u64 },
    Refunded { customer_id: String, amount_cents: u64 },
    Declined { reason: PaymentFailureReason },
    /// The cancellation arrived before the order: a tombstone, so a late `OrderCreated` is
    /// never charged.
    CancelledBeforeCharge,
}

/// Wallets on first start: `{"wallets": {"alice": 100000}}` (cents).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub wallets: BTreeMap<String, u64>,
}

impl Default for Seed {
    /// The demo wallets.
    fn default() -> Self {
        Seed { wallets: [("alice".into(), 100_000), ("bob".into(), 1_000)].into() }
    }
}

/// Payment's state: wallet balances (cents) by customer, and a record per order.
#[derive(Debug)]
pub struct Payment {
    pub wallets: Table<u64>,
    pub payments: Table<PaymentRecord>,
}

impl Default for Payment {
    fn default() -> Self {
        Payment { wallets: Table::new("wallets"), payments: Table::new("payments") }
    }
}

impl Payment {
    /// Charges Σ quantity × unit price, or declines (unknown customer, insufficient funds).
    pub fn on_order_created(&mut self, order: &OrderCreated) -> Option<Event> {
        let order_id = order.order_id.as_str();
        match self.payments.get(order_id) {
            Some(PaymentRecord::CancelledBeforeCharge) => {
                warn!(order_id = %order_id, "order arrived after its cancellation: not charging it");
                return None;
            }
            Some(_) => {
                debug!(order_id = %order_id, "order already handled");
                return None;
            }
            None => {}
        }
        let customer_id = order.customer_id.clone();
        // Decoding rejects orders whose total overflows.
        let amount_cents = order.total_cents().unwrap_or(u64::MAX);
        let balance = self.wallets.get(&customer_id);
        if let Err(reason) = wallet::charge(&mut self.wallets, &customer_id, amount_cents) {
            info!(order_id = %order_id, customer_id, amount_cents, balance_cents = balance, reason = %reason, "payment declined → PaymentFailed");
            self.payments.insert(order_id, PaymentRecord::Declined { reason });
            return Some(Event::PaymentFailed(PaymentFailed {
                order_id: order.order_id.clone(),
                customer_id,
                amount_cents,
                reason,
            }));
        }
        info!(order_id = %order_id, customer_id, amount_cents, "wallet charged → PaymentCompleted");
        self.payments.insert(
            order_id,
            PaymentRecord::Charged { customer_id: customer_id.clone(), amount_cents },
        );
        Some(Event::PaymentCompleted(PaymentCompleted {
            order_id: order.order_id.clone(),
            customer_id,
            amount_cents,
            items: order.items.clone(),
            ship_to: order.ship_to.clone(),
        }))
    }

    /// Refunds exactly what was charged; does nothing for an order it never charged.
    pub fn on_order_cancelled(&mut self, cancel: &OrderCancelled) -> Option<Event> {
        let order_id = cancel.order_id.as_str();
        match self.payments.get(order_id) {
            Some(PaymentRecord::Charged { customer_id, amount_cents }) => {
                wallet::refund(&mut self.wallets, &customer_id, amount_cents);
                self.payments.insert(
                    order_id,
                    PaymentRecord::Refunded { customer_id: customer_id.clone(), amount_cents },
                );
                warn!(order_id = %order_id, customer_id, amount_cents, compensation = true, "COMPENSATION: payment refunded → PaymentRefunded");
                Some(Event::PaymentRefunded(PaymentRefunded {
                    order_id: cancel.order_id.clone(),
                    customer_id,
                    amount_cents,
                }))
            }
            Some(PaymentRecord::Declined { .. }) => {
                info!(order_id = %order_id, "order cancelled; it was never charged, nothing to refund");
                None
            }
            Some(PaymentRecord::Refunded { .. } | PaymentRecord::CancelledBeforeCharge) => None,
            None => {
                info!(order_id = %order_id, "order cancelled before payment saw it; it will not be charged");
                self.payments.insert(order_id, PaymentRecord::CancelledBeforeCharge);
                None
            }
        }
    }

    /// Money not in wallets: charged and not refunded.
    pub fn held_cents(&self) -> u64 {
        let mut held = 0;
        self.payments.for_each(|_, r| {
            if let PaymentRecord::Charged { amount_cents, .. } = r {
                held += amount_cents;
            }
        });
        held
    }
}

impl Service for Payment {
    const NAME: &'static str = "payment-service";
    const CONSUMES: &'static [Topic] = &[Topic::OrderCreated, Topic::OrderCancelled];
    const EMITS: &'static [Topic] = &[Topic::PaymentCompleted, Topic::PaymentFailed, Topic::PaymentRefunded];
    type Seed = Seed;

    fn seed(&mut self, seed: Seed) {
        for (customer, cents) in seed.wallets {
            self.wallets.insert(customer, cents);
        }
    }

    fn handle(&mut self, input: &Envelope, _ctx: &Context) -> Vec<Event> {
        let emitted = match &input.event {
            Event::OrderCreated(order) => self.on_order_created(order),
            Event::OrderCancelled(cancel) => self.on_order_cancelled(cancel),
            _ => None,
        };
        emitted.into_iter().collect()
    }

    fn tables(&mut self) -> Vec<&mut dyn PersistentTable> {
        vec![&mut self.wallets, &mut self.payments]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shared_events::{Address, CancelReason, LineItem};

    fn order(id: &str, customer: &str, qty: u32, price: u64) -> OrderCreated {
        OrderCreated {
            order_id: id.into(),
            customer_id: customer.into(),
            items: vec![LineItem { sku: "widget".into(), quantity: qty, unit_price_cents: price }],
            ship_to: Address { country: "US".into(), ..Address::default() },
        }
    }

    fn cancel(id: &str) -> OrderCancelled {
        OrderCancelled { order_id: id.into(), reason: CancelReason::StockFailed, detail: String::new() }
    }

    fn demo() -> Payment {
        let mut p = Payment::default();
        p.seed(Seed::default());
        p
    }

    #[test]
    fn charges_the_total() {
        let mut p = demo();
        let out = p.on_order_created(&order("o-1", "alice", 2, 1250));
        assert!(matches!(out, Some(Event::PaymentCompleted(PaymentCompleted { amount_cents: 2500, .. }))));
        assert_eq!(p.wallets.get("alice"), Some(97_500));
    }

    #[test]
    fn declines_without_touching_wallets() {
        let mut p = demo();
        let poor = p.on_order_created(&order("o-1", "bob", 1, 1001));
        assert!(matches!(poor, Some(Event::PaymentFailed(PaymentFailed { reason: PaymentFailureReason::InsufficientFunds, .. }))));
        let unknown = p.on_order_created(&order("o-2", "carol", 1, 1));
        assert!(matches!(unknown, Some(Event::PaymentFailed(PaymentFailed { reason: PaymentFailureReason::UnknownCustomer, .. }))));
        assert_eq!(p.wallets.get("bob"), Some(1_000));
        assert_eq!(p.on_order_cancelled(&cancel("o-1")), None, "nothing to refund");
    }

    #[test]
    fn refunds_exactly_once() {
        let mut p = demo();
        p.on_order_created(&order("o-1", "alice", 3, 100));
        let refund = p.on_order_cancelled(&cancel("o-1"));
        assert!(matches!(refund, Some(Event::PaymentRefunded(PaymentRefunded { amount_cents: 300, .. }))));
        assert_eq!(p.on_order_cancelled(&cancel("o-1")), None);
        assert_eq!(p.wallets.get("alice"), Some(100_000));
    }

    #[test]
    fn cancellation_first_blocks_the_charge() {
        let mut p = demo();
        assert_eq!(p.on_order_cancelled(&cancel("o-1")), None);
        assert_eq!(p.on_order_created(&order("o-1", "alice", 1, 100)), None);
        assert_eq!(p.wallets.get("alice"), Some(100_000));
    }

    #[derive(Debug, Clone)]
    enum Input {
        Created { order: usize, customer: usize, qty: u32, price: u64 },
        Cancelled { order: usize },
    }

    fn input() -> impl Strategy<Value = Input> {
        prop_oneof![
            (0usize..5, 0usize..3, 1u32..5, 0u64..40_000)
                .prop_map(|(order, customer, qty, price)| Input::Created { order, customer, qty, price }),
            (0usize..5).prop_map(|order| Input::Cancelled { order }),
        ]
    }

    fn in_wallets(p: &Payment) -> u64 {
        let mut total = 0;
        p.wallets.for_each(|_, cents| total += cents);
        total
    }

    proptest! {
        /// Any sequence (duplicates, cancellations before orders) conserves money, charges each
        /// order at most once, and refunds exactly the charge.
        #[test]
        fn money_is_conserved(inputs in prop::collection::vec(input(), 0..40)) {
            let mut p = demo();
            let start = in_wallets(&p);
            let mut charged = BTreeMap::<String, u64>::new();
            let mut refunded = BTreeMap::<String, u64>::new();
            let mut cancelled = std::collections::BTreeSet::new();
            for i in inputs {
                match i {
                    Input::Created { order: o, customer, qty, price } => {
                        let id = format!("o-{o}");
                        let who = ["alice", "bob", "carol"][customer];
                        if let Some(Event::PaymentCompleted(e)) = p.on_order_created(&order(&id, who, qty, price)) {
                            prop_assert!(!cancelled.contains(&id), "charged a cancelled order");
                            prop_assert!(charged.insert(id, e.amount_cents).is_none(), "charged twice");
                        }
                    }
                    Input::Cancelled { order: o } => {
                        let id = format!("o-{o}");
                        cancelled.insert(id.clone());
                        if let Some(Event::PaymentRefunded(e)) = p.on_order_cancelled(&cancel(&id)) {
                            prop_assert_eq!(Some(&e.amount_cents), charged.get(&id));
                            prop_assert!(refunded.insert(id, e.amount_cents).is_none(), "refunded twice");
                        }
                    }
                }
                let now = in_wallets(&p);
                prop_assert_eq!(now + p.held_cents(), start);
            }
        }
    }
}
