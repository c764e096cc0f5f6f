//! Flight rules: seats per flight and date. A trip's flight leg asks for some seats on one
//! flight on one day; it gets them all or none, and gives them back, once, if the trip is
//! cancelled (see the `reservations` crate for the invariant).

use std::collections::BTreeMap;

use reservations::{Decision, Reservations, Unit};
use saga_core::{Context, PersistentTable, Service};
use serde::Deserialize;
use shared_events::{Envelope, Event, Topic};
use shared_events::travel::{FlightLeg, Leg, LegReleased, TripCancelled, TripRequested};

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

pub struct Flights {
    pub seats: Reservations,
}

impl Default for Flights {
    fn default() -> Self {
        Flights { seats: Reservations::new(Leg::Flight) }
    }
}

impl Flights {
    pub fn seed(&mut self, seed: Seed) {
        self.seats.seed(seed.flights);
    }

    /// The seats a flight leg takes: one day.
    pub fn units(leg: &FlightLeg) -> Vec<Unit> {
        vec![Unit { resource: leg.flight.clone(), day: leg.date.clone(), count: leg.seats }]
    }

    /// Reserves the trip's flight, if it asked for one.
    pub fn on_trip_requested(&mut self, trip: &TripRequested) -> Option<Decision> {
        let Some(leg) = trip.flight.as_ref() else {
            self.seats.not_asked(&trip.trip_id);
            return None;
        };
        self.seats.reserve(&trip.trip_id, Self::units(leg))
    }

    pub fn on_trip_cancelled(&mut self, cancelled: &TripCancelled) -> Option<LegReleased> {
        self.seats.release(&cancelled.trip_id)
    }
}

impl Service for Flights {
    const NAME: &'static str = "flight-service";
    const CONSUMES: &'static [Topic] = &[Topic::TripRequested, Topic::TripCancelled];
    const EMITS: &'static [Topic] = &[Topic::FlightReserved, Topic::FlightUnavailable, Topic::FlightReleased];
    type Seed = Seed;

    fn seed(&mut self, seed: Seed) {
        Flights::seed(self, seed);
    }

    fn handle(&mut self, input: &Envelope, _ctx: &Context) -> Vec<Event> {
        match &input.event {
            Event::TripRequested(trip) => self.on_trip_requested(trip).map(Event::from).into_iter().collect(),
            Event::TripCancelled(cancelled) => self.on_trip_cancelled(cancelled).map(Event::from).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    fn tables(&mut self) -> Vec<&mut dyn PersistentTable> {
        let r = &mut self.seats;
        vec![&mut r.capacity, &mut r.free, &mut r.trips]
    }
}
