//! Real rules with a bug planted, for the tests that show the oracles catch a rule gone wrong
//! (the runtime's planted bug lives in [`crate::node`]). A wrapper, so the services' own crates
//! carry no switch that could ship.

use payment_rules::{Payment, PaymentRecord};
use saga_core::{Context, PersistentTable, Service};
use shared_events::{Envelope, Event, Topic};

/// payment-service's rules, forgetting that an order was refunded when its cancellation comes
/// again: the refund is paid twice, as rules without their own duplicate check would.
pub struct RefundOnDuplicate(pub Payment);

impl Service for RefundOnDuplicate {
    const NAME: &'static str = Payment::NAME;
    const CONSUMES: &'static [Topic] = Payment::CONSUMES;
    const EMITS: &'static [Topic] = Payment::EMITS;
    type Seed = <Payment as Service>::Seed;

    fn seed(&mut self, seed: Self::Seed) {
        self.0.seed(seed);
    }

    fn handle(&mut self, input: &Envelope, ctx: &Context) -> Vec<Event> {
        if let Event::OrderCancelled(cancelled) = &input.event {
            let order_id = cancelled.order_id.as_str();
            if let Some(PaymentRecord::Refunded { customer_id, amount_cents }) = self.0.payments.get(order_id) {
                self.0.payments.insert(order_id, PaymentRecord::Charged { customer_id, amount_cents });
            }
        }
        self.0.handle(input, ctx)
    }

    fn tables(&mut self) -> Vec<&mut dyn PersistentTable> {
        self.0.tables()
    }
}

/// car-service's rules, forgetting a cancellation that came before its trip's request: the
/// late request is reserved, and nothing will ever release it.
pub struct ReserveAfterCancel(pub car_rules::Cars);

impl Service for ReserveAfterCancel {
    const NAME: &'static str = car_rules::Cars::NAME;
    const CONSUMES: &'static [Topic] = car_rules::Cars::CONSUMES;
    const EMITS: &'static [Topic] = car_rules::Cars::EMITS;
    type Seed = <car_rules::Cars as Service>::Seed;

    fn seed(&mut self, seed: Self::Seed) {
        self.0.seed(seed);
    }

    fn handle(&mut self, input: &Envelope, ctx: &Context) -> Vec<Event> {
        if let Event::TripRequested(trip) = &input.event {
            let id = trip.trip_id.as_str();
            if self.0.units.trips.get(id) == Some(reservations::LegRecord::CancelledFirst) {
                self.0.units.trips.remove(id);
            }
        }
        self.0.handle(input, ctx)
    }

    fn tables(&mut self) -> Vec<&mut dyn PersistentTable> {
        self.0.tables()
    }
}
