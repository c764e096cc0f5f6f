//! Car rules: cars per rental location and day. A trip's car leg asks for some cars for a run
//! of days; it gets every day or none, and gives them back, once, if the trip is cancelled
//! (the `reservations` crate is the service; this says what a rental takes).

use std::collections::BTreeMap;

use reservations::{Ask, LegRules, LegService, Unit};
use serde::Deserialize;
use shared_events::travel::{dates_from, Leg, TripRequested};

/// Cars per location, each day, on first start: `{"locations": {"BER": 10}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub locations: BTreeMap<String, u32>,
}

impl Default for Seed {
    /// The demo rental locations.
    fn default() -> Self {
        Seed { locations: [("BER".into(), 10), ("LHR".into(), 12), ("SYD".into(), 4)].into() }
    }
}

/// The car service.
pub type Cars = LegService<Rentals>;

/// What the car leg reserves: cars, one unit per day.
pub struct Rentals;

impl LegRules for Rentals {
    const NAME: &'static str = "car-service";
    const LEG: Leg = Leg::Car;
    type Seed = Seed;

    fn capacity(seed: Seed) -> BTreeMap<String, u32> {
        seed.locations
    }

    /// The cars a rental takes, one unit per day.
    fn asks(trip: &TripRequested) -> Ask {
        let Some(leg) = trip.car.as_ref() else { return Ask::Nothing };
        match dates_from(&leg.pick_up, leg.days) {
            Some(days) => Ask::Units(days.into_iter().map(|day| Unit { resource: leg.location.clone(), day, count: leg.cars }).collect()),
            None => Ask::Impossible,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_events::travel::CarLeg;

    fn rental(pick_up: &str, days: u32) -> TripRequested {
        let car = CarLeg { location: "SYD".into(), pick_up: pick_up.into(), days, cars: 2, price_cents: 1 };
        TripRequested { trip_id: "t-1".into(), customer_id: "alice".into(), flight: None, hotel: None, car: Some(car) }
    }

    #[test]
    fn a_rental_takes_its_cars_on_each_day_and_nothing_past_the_calendar() {
        let Ask::Units(units) = Rentals::asks(&rental("2028-02-28", 2)) else { panic!("a rental inside the calendar asks for cars") };
        let days: Vec<(&str, u32)> = units.iter().map(|u| (u.day.as_str(), u.count)).collect();
        assert_eq!(days, [("2028-02-28", 2), ("2028-02-29", 2)], "a leap year");
        assert_eq!(Rentals::asks(&rental("9999-12-30", 3)), Ask::Impossible);
        assert_eq!(Rentals::asks(&TripRequested { car: None, ..rental("2028-02-28", 1) }), Ask::Nothing);
    }
}
