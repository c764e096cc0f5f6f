//! Shipping rules: book a shipment when the order's destination country is served, refuse
//! it otherwise; call off a booked shipment if its order was cancelled meanwhile (a deadline
//! or a customer's request racing the booking). No I/O.

use std::collections::BTreeSet;

use saga_core::{Context, PersistentTable, Service, Table};
use serde::{Deserialize, Serialize};
use shared_events::{
    Envelope, Event, OrderCancelled, ShipmentCancelled, ShipmentScheduled, ShippingFailed,
    ShippingFailureReason, StockReserved, Topic,
};
use tracing::{debug, info, warn};

/// What shipping decided for one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Shipment {
    Scheduled { shipment_id: String, country: String },
    Refused { country: String },
    /// Booked, then called off because the order was cancelled.
    Cancelled { shipment_id: String },
    /// The cancellation arrived first: a tombstone, so a late `StockReserved` never ships.
    CancelledBeforeShipping,
}

/// Served countries on first start: `{"countries": ["US", "CA"]}` (ISO 3166 alpha-2).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub countries: BTreeSet<String>,
}

impl Default for Seed {
    /// The demo destinations (not `AQ`).
    fn default() -> Self {
        let countries = ["US", "CA", "GB", "DE", "FR", "NL", "JP"];
        Seed { countries: countries.into_iter().map(String::from).collect() }
    }
}

/// Shipping's state: served countries, and a shipment record per order.
#[derive(Debug)]
pub struct Shipping {
    pub countries: Table<bool>,
    pub shipments: Table<Shipment>,
}

impl Default for Shipping {
    fn default() -> Self {
        Shipping { countries: Table::new("countries"), shipments: Table::new("shipments") }
    }
}

/// Country codes compare case-insensitively and without surrounding blanks.
pub fn normalize_country(country: &str) -> String {
    country.trim().to_ascii_uppercase()
}

impl Shipping {
    /// Schedules a shipment to a served country, or refuses the destination.
    pub fn on_stock_reserved(&mut self, reserved: &StockReserved) -> Option<Event> {
        let order_id = reserved.order_id.as_str();
        match self.shipments.get(order_id) {
            Some(Shipment::CancelledBeforeShipping) => {
                warn!(order_id = %order_id, "stock reserved after the order's cancellation: not shipping");
                return None;
            }
            Some(_) => {
                debug!(order_id = %order_id, "order already handled");
                return None;
            }
            None => {}
        }
        let country = normalize_country(&reserved.ship_to.country);
        if self.countries.get(&country).unwrap_or(false) {
            // Derived from the order id so that redoing the step books the same shipment.
            let shipment_id = format!("shp-{order_id}");
            info!(order_id = %order_id, shipment_id, country, "shipment booked → ShipmentScheduled");
            self.shipments.insert(
                order_id,
                Shipment::Scheduled { shipment_id: shipment_id.clone(), country: country.clone() },
            );
            Some(Event::ShipmentScheduled(ShipmentScheduled {
                order_id: reserved.order_id.clone(),
                shipment_id,
                country,
            }))
        } else {
            info!(order_id = %order_id, country, "destination not served → ShippingFailed");
            self.shipments.insert(order_id, Shipment::Refused { country: country.clone() });
            Some(Event::ShippingFailed(ShippingFailed {
                order_id: reserved.order_id.clone(),
                country,
                reason: ShippingFailureReason::DestinationNotServed,
            }))
        }
    }
}

impl Shipping {
    /// Calls off a booked shipment; remembers a cancellation that came first.
    pub fn on_order_cancelled(&mut self, cancel: &OrderCancelled) -> Option<Event> {
        let order_id = cancel.order_id.as_str();
        match self.shipments.get(order_id) {
            Some(Shipment::Scheduled { shipment_id, .. }) => {
                warn!(order_id = %order_id, shipment_id, compensation = true, "COMPENSATION: shipment called off → ShipmentCancelled");
                self.shipments.insert(order_id, Shipment::Cancelled { shipment_id: shipment_id.clone() });
                Some(Event::ShipmentCancelled(ShipmentCancelled { order_id: cancel.order_id.clone(), shipment_id }))
            }
            Some(_) => None,
            None => {
                debug!(order_id = %order_id, "order cancelled before shipping saw it; it will not ship");
                self.shipments.insert(order_id, Shipment::CancelledBeforeShipping);
                None
            }
        }
    }
}

impl Service for Shipping {
    const NAME: &'static str = "shipping-service";
    const CONSUMES: &'static [Topic] = &[Topic::StockReserved, Topic::OrderCancelled];
    const EMITS: &'static [Topic] = &[Topic::ShipmentScheduled, Topic::ShippingFailed, Topic::ShipmentCancelled];
    type Seed = Seed;

    fn seed(&mut self, seed: Seed) {
        for country in seed.countries {
            self.countries.insert(normalize_country(&country), true);
        }
    }

    fn handle(&mut self, input: &Envelope, _ctx: &Context) -> Vec<Event> {
        let emitted = match &input.event {
            Event::StockReserved(reserved) => self.on_stock_reserved(reserved),
            Event::OrderCancelled(cancel) => self.on_order_cancelled(cancel),
            _ => None,
        };
        emitted.into_iter().collect()
    }

    fn tables(&mut self) -> Vec<&mut dyn PersistentTable> {
        vec![&mut self.countries, &mut self.shipments]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use shared_events::{Address, StockLine};

    fn reserved(id: &str, country: &str) -> StockReserved {
        StockReserved {
            order_id: id.into(),
            items: vec![StockLine { sku: "widget".into(), quantity: 1 }],
            ship_to: Address { country: country.into(), ..Address::default() },
        }
    }

    fn demo() -> Shipping {
        let mut s = Shipping::default();
        s.seed(Seed::default());
        s
    }

    #[test]
    fn served_countries_get_a_shipment_once() {
        let mut s = demo();
        let out = s.on_stock_reserved(&reserved("o-1", " us "));
        assert!(matches!(&out, Some(Event::ShipmentScheduled(e)) if e.shipment_id == "shp-o-1" && e.country == "US"));
        assert_eq!(s.on_stock_reserved(&reserved("o-1", "US")), None);
    }

    fn cancel(id: &str) -> OrderCancelled {
        OrderCancelled { order_id: id.into(), reason: shared_events::CancelReason::Timeout, detail: String::new() }
    }

    #[test]
    fn a_booked_shipment_is_called_off_once_and_a_tombstone_blocks_a_late_booking() {
        let mut s = demo();
        s.on_stock_reserved(&reserved("o-1", "US"));
        assert!(matches!(s.on_order_cancelled(&cancel("o-1")), Some(Event::ShipmentCancelled(_))));
        assert_eq!(s.on_order_cancelled(&cancel("o-1")), None);
        assert_eq!(s.on_order_cancelled(&cancel("o-2")), None);
        assert_eq!(s.on_stock_reserved(&reserved("o-2", "US")), None);
    }

    proptest::proptest! {
        /// Any sequence of bookings and cancellations, with duplicates: at most one decision
        /// per order, at most one call-off, and only of a booked shipment.
        #[test]
        fn one_decision_per_order(inputs in proptest::collection::vec((0usize..4, proptest::bool::ANY, proptest::bool::ANY), 0..30)) {
            let mut s = demo();
            let mut decided = std::collections::BTreeMap::new();
            let mut called_off = std::collections::BTreeSet::new();
            for (o, is_cancel, served) in inputs {
                let id = format!("o-{o}");
                if is_cancel {
                    if let Some(Event::ShipmentCancelled(_)) = s.on_order_cancelled(&cancel(&id)) {
                        proptest::prop_assert!(matches!(decided.get(&id), Some(true)), "called off an unbooked shipment");
                        proptest::prop_assert!(called_off.insert(id), "called off twice");
                    }
                } else if let Some(e) = s.on_stock_reserved(&reserved(&id, if served { "US" } else { "AQ" })) {
                    let booked = matches!(e, Event::ShipmentScheduled(_));
                    proptest::prop_assert!(decided.insert(id, booked).is_none(), "decided twice");
                }
            }
        }
    }

    #[test]
    fn unserved_countries_are_refused() {
        let mut s = demo();
        let out = s.on_stock_reserved(&reserved("o-1", "AQ"));
        assert!(matches!(out, Some(Event::ShippingFailed(ShippingFailed { reason: ShippingFailureReason::DestinationNotServed, .. }))));
    }
}
