//! Hotel rules: rooms per hotel and night. A trip's hotel leg asks for some rooms for a run of
//! nights; it gets every night or none, and gives them back, once, if the trip is cancelled
//! (the `reservations` crate is the service; this says what a stay takes).

use std::collections::BTreeMap;

use reservations::{Ask, LegRules, LegService, Unit};
use serde::Deserialize;
use shared_events::travel::{dates_from, Leg, TripRequested};

/// Rooms per hotel, each night, on first start: `{"hotels": {"adlon": 20}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub hotels: BTreeMap<String, u32>,
}

impl Default for Seed {
    /// The demo hotels; `tiny-inn` has one room, so a second guest on the same night finds it
    /// sold out.
    fn default() -> Self {
        Seed { hotels: [("adlon".into(), 20), ("savoy".into(), 15), ("tiny-inn".into(), 1)].into() }
    }
}

/// The hotel service.
pub type Hotels = LegService<Rooms>;

/// What the hotel leg reserves: rooms, one unit per night.
pub struct Rooms;

impl LegRules for Rooms {
    const NAME: &'static str = "hotel-service";
    const LEG: Leg = Leg::Hotel;
    type Seed = Seed;

    fn capacity(seed: Seed) -> BTreeMap<String, u32> {
        seed.hotels
    }

    /// The rooms a stay takes, one unit per night.
    fn asks(trip: &TripRequested) -> Ask {
        let Some(leg) = trip.hotel.as_ref() else { return Ask::Nothing };
        match dates_from(&leg.check_in, leg.nights) {
            Some(nights) => Ask::Units(nights.into_iter().map(|day| Unit { resource: leg.hotel.clone(), day, count: leg.rooms }).collect()),
            None => Ask::Impossible,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use reservations::{Decision, LegRecord};
    use shared_events::travel::{HotelLeg, UnavailableReason};

    fn stay(check_in: &str, nights: u32) -> TripRequested {
        let hotel = HotelLeg { hotel: "tiny-inn".into(), check_in: check_in.into(), nights, rooms: 1, price_cents: 1 };
        TripRequested { trip_id: "t-1".into(), customer_id: "alice".into(), flight: None, hotel: Some(hotel), car: None }
    }

    #[test]
    fn a_stay_takes_each_night_across_the_month_and_nothing_past_the_calendar() {
        let Ask::Units(units) = Rooms::asks(&stay("2027-02-27", 3)) else { panic!("a stay inside the calendar asks for rooms") };
        let nights: Vec<&str> = units.iter().map(|u| u.day.as_str()).collect();
        assert_eq!(nights, ["2027-02-27", "2027-02-28", "2027-03-01"]);
        assert_eq!(Rooms::asks(&stay("9999-12-31", 2)), Ask::Impossible);
        assert_eq!(Rooms::asks(&TripRequested { hotel: None, ..stay("2027-02-27", 1) }), Ask::Nothing);
    }

    #[test]
    fn the_service_refuses_an_impossible_stay_and_records_a_trip_that_asked_nothing() {
        let mut hotels = Hotels::default();
        hotels.seed(Seed::default());
        let d = hotels.on_trip_requested(&stay("9999-12-31", 2));
        assert!(matches!(d, Some(Decision::Unavailable(ref u)) if u.reason == UnavailableReason::UnknownResource && u.leg == Leg::Hotel), "{d:?}");
        let none = TripRequested { trip_id: "t-2".into(), hotel: None, ..stay("2027-02-27", 1) };
        assert_eq!(hotels.on_trip_requested(&none), None);
        assert_eq!(hotels.units.trips.get("t-2"), Some(LegRecord::NotAsked));
    }
}
