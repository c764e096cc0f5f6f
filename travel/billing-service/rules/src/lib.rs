//! Billing rules: charge a trip's customer once every leg of the trip is reserved — the
//! travel saga's pivot. A charge is never refunded: past it the trip is confirmed, and the
//! trip service refuses cancellations once it has asked for the charge.
//!
//! Invariant: Σ wallets + Σ charges = Σ seeded wallets; each trip is charged at most once.

use payment_rules::wallet;
use saga_core::{Context, PersistentTable, Service, Table};
use serde::{Deserialize, Serialize};
use shared_events::travel::{TripChargeDeclined, TripCharged, TripReserved};
use shared_events::{Envelope, Event, PaymentFailureReason, Topic};
use tracing::{debug, info};

pub use payment_rules::Seed;

/// What billing knows about one trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum BillingRecord {
    Charged { customer_id: String, amount_cents: u64 },
    Declined { reason: PaymentFailureReason },
}

/// What a charge request decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charge {
    Charged(TripCharged),
    Declined(TripChargeDeclined),
}

#[derive(Debug)]
pub struct Billing {
    pub wallets: Table<u64>,
    pub trips: Table<BillingRecord>,
}

impl Default for Billing {
    fn default() -> Self {
        Billing { wallets: Table::new("wallets"), trips: Table::new("trips") }
    }
}

impl Billing {
    pub fn seed(&mut self, seed: Seed) {
        for (customer, cents) in seed.wallets {
            self.wallets.insert(customer, cents);
        }
    }

    /// Charges the trip's total, or declines; `None` for a trip already decided.
    pub fn on_trip_reserved(&mut self, trip: &TripReserved) -> Option<Charge> {
        let trip_id = &trip.trip_id;
        if self.trips.get(trip_id.as_str()).is_some() {
            debug!(trip_id = %trip_id, "charge already decided");
            return None;
        }
        let (customer_id, amount_cents) = (trip.customer_id.clone(), trip.amount_cents);
        match wallet::charge(&mut self.wallets, &customer_id, amount_cents) {
            Ok(()) => {
                info!(trip_id = %trip_id, customer_id, amount_cents, "trip charged → TripCharged");
                self.trips.insert(trip_id.as_str(), BillingRecord::Charged { customer_id: customer_id.clone(), amount_cents });
                Some(Charge::Charged(TripCharged { trip_id: trip_id.clone(), customer_id, amount_cents }))
            }
            Err(reason) => {
                info!(trip_id = %trip_id, customer_id, amount_cents, reason = %reason, "charge declined → TripChargeDeclined");
                self.trips.insert(trip_id.as_str(), BillingRecord::Declined { reason });
                Some(Charge::Declined(TripChargeDeclined { trip_id: trip_id.clone(), customer_id, amount_cents, reason }))
            }
        }
    }

    /// Money taken: Σ charges.
    pub fn charged_cents(&self) -> u64 {
        let mut charged = 0;
        self.trips.for_each(|_, r| {
            if let BillingRecord::Charged { amount_cents, .. } = r {
                charged += amount_cents;
            }
        });
        charged
    }
}

impl Service for Billing {
    const NAME: &'static str = "billing-service";
    const CONSUMES: &'static [Topic] = &[Topic::TripReserved];
    const EMITS: &'static [Topic] = &[Topic::TripCharged, Topic::TripChargeDeclined];
    type Seed = Seed;

    fn seed(&mut self, seed: Seed) {
        Billing::seed(self, seed);
    }

    fn handle(&mut self, input: &Envelope, _ctx: &Context) -> Vec<Event> {
        let Event::TripReserved(trip) = &input.event else { return Vec::new() };
        match self.on_trip_reserved(trip) {
            Some(Charge::Charged(e)) => vec![e.into()],
            Some(Charge::Declined(e)) => vec![e.into()],
            None => Vec::new(),
        }
    }

    fn tables(&mut self) -> Vec<&mut dyn PersistentTable> {
        vec![&mut self.wallets, &mut self.trips]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn reserved(trip: &str, customer: &str, cents: u64) -> TripReserved {
        TripReserved { trip_id: trip.into(), customer_id: customer.into(), amount_cents: cents }
    }

    #[test]
    fn a_trip_is_charged_once_or_declined_and_money_adds_up() {
        let mut b = Billing::default();
        b.seed(Seed::default());
        let alice = b.wallets.get("alice").unwrap();
        assert!(matches!(b.on_trip_reserved(&reserved("t-1", "alice", 500)), Some(Charge::Charged(_))));
        assert_eq!(b.on_trip_reserved(&reserved("t-1", "alice", 500)), None, "a duplicate charges nothing");
        let declined = b.on_trip_reserved(&reserved("t-2", "bob", 1_000_000));
        assert!(matches!(declined, Some(Charge::Declined(TripChargeDeclined { reason: PaymentFailureReason::InsufficientFunds, .. }))));
        assert!(matches!(b.on_trip_reserved(&reserved("t-3", "mallory", 1)), Some(Charge::Declined(_))));
        assert_eq!(b.wallets.get("alice").unwrap() + b.charged_cents(), alice);
        assert_eq!(b.wallets.get("bob"), Seed::default().wallets.get("bob").copied(), "a decline takes nothing");
    }
}
