//! Car rules: cars per rental location and day. A trip's car leg asks for some cars for a run
//! of days; it gets every day or none, and gives them back, once, if the trip is cancelled
//! (see the `reservations` crate for the invariant).

use std::collections::BTreeMap;

use reservations::{Decision, Reservations, Unit};
use saga_core::{Context, PersistentTable, Service};
use serde::Deserialize;
use shared_events::{Envelope, Event, Topic};
use shared_events::travel::{dates_from, CarLeg, Leg, LegReleased, TripCancelled, TripRequested, UnavailableReason};

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

pub struct Cars {
    pub cars: Reservations,
}

impl Default for Cars {
    fn default() -> Self {
        Cars { cars: Reservations::new(Leg::Car) }
    }
}

impl Cars {
    pub fn seed(&mut self, seed: Seed) {
        self.cars.seed(seed.locations);
    }

    /// The cars a rental takes: one unit per day. `None` if the days leave the calendar.
    pub fn units(leg: &CarLeg) -> Option<Vec<Unit>> {
        let days = dates_from(&leg.pick_up, leg.days)?;
        Some(days.into_iter().map(|day| Unit { resource: leg.location.clone(), day, count: leg.cars }).collect())
    }

    /// Reserves the trip's rental, if it asked for one.
    pub fn on_trip_requested(&mut self, trip: &TripRequested) -> Option<Decision> {
        let Some(leg) = trip.car.as_ref() else {
            self.cars.not_asked(&trip.trip_id);
            return None;
        };
        match Self::units(leg) {
            Some(units) => self.cars.reserve(&trip.trip_id, units),
            None => self.cars.refuse(&trip.trip_id, UnavailableReason::UnknownResource),
        }
    }

    pub fn on_trip_cancelled(&mut self, cancelled: &TripCancelled) -> Option<LegReleased> {
        self.cars.release(&cancelled.trip_id)
    }
}

impl Service for Cars {
    const NAME: &'static str = "car-service";
    const CONSUMES: &'static [Topic] = &[Topic::TripRequested, Topic::TripCancelled];
    const EMITS: &'static [Topic] = &[Topic::CarReserved, Topic::CarUnavailable, Topic::CarReleased];
    type Seed = Seed;

    fn seed(&mut self, seed: Seed) {
        Cars::seed(self, seed);
    }

    fn handle(&mut self, input: &Envelope, _ctx: &Context) -> Vec<Event> {
        match &input.event {
            Event::TripRequested(trip) => self.on_trip_requested(trip).map(Event::from).into_iter().collect(),
            Event::TripCancelled(cancelled) => self.on_trip_cancelled(cancelled).map(Event::from).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    fn tables(&mut self) -> Vec<&mut dyn PersistentTable> {
        let r = &mut self.cars;
        vec![&mut r.capacity, &mut r.free, &mut r.trips]
    }
}
