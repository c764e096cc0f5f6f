//! Hotel rules: rooms per hotel and night. A trip's hotel leg asks for some rooms for a run of
//! nights; it gets every night or none, and gives them back, once, if the trip is cancelled
//! (see the `reservations` crate for the invariant).

use std::collections::BTreeMap;

use reservations::{Decision, Reservations, Unit};
use saga_core::{Context, PersistentTable, Service};
use serde::Deserialize;
use shared_events::{Envelope, Event, Topic};
use shared_events::travel::{dates_from, HotelLeg, Leg, LegReleased, TripCancelled, TripRequested, UnavailableReason};

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

pub struct Hotels {
    pub rooms: Reservations,
}

impl Default for Hotels {
    fn default() -> Self {
        Hotels { rooms: Reservations::new(Leg::Hotel) }
    }
}

impl Hotels {
    pub fn seed(&mut self, seed: Seed) {
        self.rooms.seed(seed.hotels);
    }

    /// The rooms a stay takes: one unit per night. `None` if the nights leave the calendar.
    pub fn units(leg: &HotelLeg) -> Option<Vec<Unit>> {
        let nights = dates_from(&leg.check_in, leg.nights)?;
        Some(nights.into_iter().map(|day| Unit { resource: leg.hotel.clone(), day, count: leg.rooms }).collect())
    }

    /// Reserves the trip's stay, if it asked for one.
    pub fn on_trip_requested(&mut self, trip: &TripRequested) -> Option<Decision> {
        let Some(leg) = trip.hotel.as_ref() else {
            self.rooms.not_asked(&trip.trip_id);
            return None;
        };
        match Self::units(leg) {
            Some(units) => self.rooms.reserve(&trip.trip_id, units),
            None => self.rooms.refuse(&trip.trip_id, UnavailableReason::UnknownResource),
        }
    }

    pub fn on_trip_cancelled(&mut self, cancelled: &TripCancelled) -> Option<LegReleased> {
        self.rooms.release(&cancelled.trip_id)
    }
}

impl Service for Hotels {
    const NAME: &'static str = "hotel-service";
    const CONSUMES: &'static [Topic] = &[Topic::TripRequested, Topic::TripCancelled];
    const EMITS: &'static [Topic] = &[Topic::HotelReserved, Topic::HotelUnavailable, Topic::HotelReleased];
    type Seed = Seed;

    fn seed(&mut self, seed: Seed) {
        Hotels::seed(self, seed);
    }

    fn handle(&mut self, input: &Envelope, _ctx: &Context) -> Vec<Event> {
        match &input.event {
            Event::TripRequested(trip) => self.on_trip_requested(trip).map(Event::from).into_iter().collect(),
            Event::TripCancelled(cancelled) => self.on_trip_cancelled(cancelled).map(Event::from).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    fn tables(&mut self) -> Vec<&mut dyn PersistentTable> {
        let r = &mut self.rooms;
        vec![&mut r.capacity, &mut r.free, &mut r.trips]
    }
}
