//! Shipping rules: book a shipment when the order's destination country is served, refuse
//! it otherwise. Shipping is the saga's last step, so it never needs undoing. No I/O.

use std::collections::BTreeSet;

use saga_runtime::{PersistentTable, Service, Table};
use serde::{Deserialize, Serialize};
use shared_events::{
    Envelope, Event, ShipmentScheduled, ShippingFailed, ShippingFailureReason, StockReserved, Topic,
};
use tracing::{debug, info};

/// What shipping decided for one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Shipment {
    Scheduled { shipment_id: String, country: String },
    Refused { country: String },
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
        if self.shipments.get(order_id).is_some() {
            debug!(order_id = %order_id, "order already handled");
            return None;
        }
        let country = normalize_country(&reserved.ship_to.country);
        if self.countries.get(&country).copied().unwrap_or(false) {
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

impl Service for Shipping {
    const NAME: &'static str = "shipping-service";
    const CONSUMES: &'static [Topic] = &[Topic::StockReserved];
    type Seed = Seed;

    fn seed(&mut self, seed: Seed) {
        for country in seed.countries {
            self.countries.insert(normalize_country(&country), true);
        }
    }

    fn handle(&mut self, input: &Envelope, _now_ms: i64) -> Vec<Event> {
        let emitted = match &input.event {
            Event::StockReserved(reserved) => self.on_stock_reserved(reserved),
            _ => None,
        };
        emitted.into_iter().collect()
    }

    fn tables(&mut self) -> Vec<&mut dyn PersistentTable> {
        vec![&mut self.countries, &mut self.shipments]
    }
}

#[cfg(test)]
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

    #[test]
    fn unserved_countries_are_refused() {
        let mut s = demo();
        let out = s.on_stock_reserved(&reserved("o-1", "AQ"));
        assert!(matches!(out, Some(Event::ShippingFailed(ShippingFailed { reason: ShippingFailureReason::DestinationNotServed, .. }))));
    }
}
