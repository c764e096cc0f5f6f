//! A leg's service, whole: what the flight, hotel and car services are, given what makes each
//! one leg ([`LegRules`]). It consumes `TripRequested` and `TripCancelled`, reserves the units
//! the request asks of its leg, all or none, and releases them once if the trip is cancelled.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use saga_core::{Context, PersistentTable, Service};
use serde::de::DeserializeOwned;
use shared_events::travel::{Leg, LegReleased, TripCancelled, TripRequested, UnavailableReason};
use shared_events::{Envelope, Event, Topic};

use crate::{Decision, Reservations, Units};

/// What makes a service one leg of a trip.
pub trait LegRules: Send + 'static {
    /// The binary's name, e.g. `hotel-service`.
    const NAME: &'static str;
    /// Which leg: names what it emits (`<Leg>Reserved`, …) and logs.
    const LEG: Leg;
    /// What is loaded on first start (demo inventory by default).
    type Seed: DeserializeOwned + Default;

    /// Each resource's capacity per day, from the seed.
    fn capacity(seed: Self::Seed) -> BTreeMap<String, u32>;

    /// What `trip` asks of this leg.
    fn asks(trip: &TripRequested) -> Ask;
}

/// What a request asks of one leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Nothing: the leg is not part of the trip.
    Nothing,
    /// These units, all or none.
    Units(Units),
    /// Units that cannot exist (days past the calendar's end): refused as unknown.
    Impossible,
}

/// The service of the leg `R`: its units, per resource and day, and what it knows of each trip.
pub struct LegService<R> {
    pub units: Reservations,
    rules: PhantomData<fn() -> R>,
}

impl<R: LegRules> Default for LegService<R> {
    fn default() -> Self {
        LegService { units: Reservations::new(R::LEG), rules: PhantomData }
    }
}

impl<R: LegRules> LegService<R> {
    /// Fills an empty store with the seed's capacities.
    pub fn seed(&mut self, seed: R::Seed) {
        self.units.seed(R::capacity(seed));
    }

    /// Reserves what the trip asks of this leg, if anything.
    pub fn on_trip_requested(&mut self, trip: &TripRequested) -> Option<Decision> {
        match R::asks(trip) {
            Ask::Nothing => {
                self.units.not_asked(&trip.trip_id);
                None
            }
            Ask::Units(units) => self.units.reserve(&trip.trip_id, units),
            Ask::Impossible => self.units.refuse(&trip.trip_id, UnavailableReason::UnknownResource),
        }
    }

    /// Gives back what the trip holds, once; remembers a cancellation that came first.
    pub fn on_trip_cancelled(&mut self, cancelled: &TripCancelled) -> Option<LegReleased> {
        self.units.release(&cancelled.trip_id)
    }
}

impl<R: LegRules> Service for LegService<R> {
    const NAME: &'static str = R::NAME;
    const CONSUMES: &'static [Topic] = &[Topic::TripRequested, Topic::TripCancelled];
    /// `<Leg>Reserved`, `<Leg>Unavailable`, `<Leg>Released`.
    const EMITS: &'static [Topic] = &R::LEG.topics();
    type Seed = R::Seed;

    fn seed(&mut self, seed: R::Seed) {
        LegService::seed(self, seed);
    }

    fn handle(&mut self, input: &Envelope, _ctx: &Context) -> Vec<Event> {
        match &input.event {
            Event::TripRequested(trip) => self.on_trip_requested(trip).map(Event::from).into_iter().collect(),
            Event::TripCancelled(cancelled) => self.on_trip_cancelled(cancelled).map(Event::from).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    fn tables(&mut self) -> Vec<&mut dyn PersistentTable> {
        let r = &mut self.units;
        vec![&mut r.capacity, &mut r.free, &mut r.trips]
    }
}
