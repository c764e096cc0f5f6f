//! Flight rules: seats per flight and date. A trip's flight leg asks for some seats on one
//! flight on one day; it gets them all or none, and gives them back, once, if the trip is
//! cancelled (the `reservations` crate is the service; this says what a flight leg takes).

use std::collections::BTreeMap;

use reservations::{Ask, LegRules, LegService, Unit};
use serde::Deserialize;
use shared_events::travel::{Leg, TripRequested};

/// Seats per flight, each day, on first start: `{"flights": {"LH400": 150}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub flights: BTreeMap<String, u32>,
}

impl Default for Seed {
    /// The demo flights; `QF1` has two seats, so a party of three never flies it.
    fn default() -> Self {
        Seed { flights: [("LH400".into(), 150), ("BA981".into(), 120), ("QF1".into(), 2)].into() }
    }
}

/// The flight service.
pub type Flights = LegService<Seats>;

/// What the flight leg reserves: seats, on one day.
pub struct Seats;

impl LegRules for Seats {
    const NAME: &'static str = "flight-service";
    const LEG: Leg = Leg::Flight;
    type Seed = Seed;

    fn capacity(seed: Seed) -> BTreeMap<String, u32> {
        seed.flights
    }

    /// The seats a flight leg takes, on its one day.
    fn asks(trip: &TripRequested) -> Ask {
        match &trip.flight {
            Some(leg) => Ask::Units(vec![Unit { resource: leg.flight.clone(), day: leg.date.clone(), count: leg.seats }]),
            None => Ask::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_events::travel::FlightLeg;

    #[test]
    fn a_flight_takes_its_seats_on_its_one_day() {
        let flight = FlightLeg { flight: "QF1".into(), date: "2027-03-14".into(), seats: 2, price_cents: 1 };
        let trip = TripRequested { trip_id: "t-1".into(), customer_id: "alice".into(), flight: Some(flight), hotel: None, car: None };
        assert_eq!(Seats::asks(&trip), Ask::Units(vec![Unit { resource: "QF1".into(), day: "2027-03-14".into(), count: 2 }]));
        assert_eq!(Seats::asks(&TripRequested { flight: None, ..trip }), Ask::Nothing);
    }
}
