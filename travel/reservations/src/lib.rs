//! Reserving units for trips: a leg asks for some units of some resources on some days (two
//! seats on LH400 on 14 March; one room at the Adlon for three nights), and gets all of them
//! or none. What the flight, hotel and car services share; each says only how its leg maps
//! to unit keys.
//!
//! Each resource (a flight, a hotel, a rental location) has a capacity per day, seeded once;
//! a day's free count starts at it when a trip first asks for that day.
//!
//! Invariant: for every resource and day, free + Σ held by trips = the resource's capacity. A trip's leg is
//! reserved at most once and released at most once, and only if it was reserved; a
//! cancellation that arrives before the request leaves a tombstone, so the late request is
//! never reserved.

mod service;

pub use service::{Ask, LegRules, LegService};

use std::collections::{BTreeMap, BTreeSet};

use saga_core::Table;
use serde::{Deserialize, Serialize};
use shared_events::travel::{Leg, LegReleased, LegReserved, LegUnavailable, TripId, UnavailableReason};
use tracing::{debug, info, warn};

/// Some units of one resource on one day: two seats on LH400 on 2027-03-14.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    pub resource: String,
    pub day: String,
    pub count: u32,
}

impl Unit {
    /// The `free` table's key: `<resource>/<day>`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.resource, self.day)
    }
}

pub type Units = Vec<Unit>;

/// What a leg's service knows about one trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LegRecord {
    Reserved { units: Units },
    Released { units: Units },
    Unavailable { reason: UnavailableReason },
    /// The cancellation came first: the trip must never be reserved here.
    CancelledFirst,
    /// The request asked nothing of this leg: its cancellation has nothing to give back.
    NotAsked,
}

/// What a request decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Reserved(LegReserved),
    Unavailable(LegUnavailable),
}

impl From<Decision> for shared_events::Event {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Reserved(e) => e.into(),
            Decision::Unavailable(e) => e.into(),
        }
    }
}

/// Capacity per resource, free units per resource and day, and one record per trip.
#[derive(Debug)]
pub struct Reservations {
    pub leg: Leg,
    pub capacity: Table<u32>,
    /// By [`Unit::key`]; a day no trip has asked for yet has no row (all of it is free).
    pub free: Table<u32>,
    pub trips: Table<LegRecord>,
}

impl Reservations {
    /// `leg` names this service's leg in what it emits and logs.
    pub fn new(leg: Leg) -> Self {
        Reservations { leg, capacity: Table::new("capacity"), free: Table::new("free"), trips: Table::new("trips") }
    }

    /// Seeds each resource's capacity per day. For a first start only.
    pub fn seed(&mut self, capacity: impl IntoIterator<Item = (String, u32)>) {
        for (resource, n) in capacity {
            self.capacity.insert(resource, n);
        }
    }

    /// Free units of `unit`'s resource on its day; `None`: no such resource.
    pub fn free_on(&self, unit: &Unit) -> Option<u32> {
        self.free.get(&unit.key()).or_else(|| self.capacity.get(&unit.resource))
    }

    /// Reserves every unit of `units` or none. `None`: this trip was already decided here
    /// (a duplicate), or cancelled before it arrived.
    pub fn reserve(&mut self, trip_id: &TripId, units: Units) -> Option<Decision> {
        let leg = self.leg;
        match self.trips.get(trip_id.as_str()) {
            Some(LegRecord::CancelledFirst) => {
                warn!(trip_id = %trip_id, leg = leg.as_str(), "request arrived after its trip's cancellation: not reserving it");
                return None;
            }
            Some(_) => {
                debug!(trip_id = %trip_id, leg = leg.as_str(), "request already decided");
                return None;
            }
            None => {}
        }
        // Σ per day first: a request may name one day twice.
        let mut wanted: BTreeMap<String, (&Unit, u32)> = BTreeMap::new();
        for unit in &units {
            let w = wanted.entry(unit.key()).or_insert((unit, 0));
            w.1 = w.1.saturating_add(unit.count);
        }
        let mut short = None;
        for (unit, n) in wanted.values() {
            match self.free_on(unit) {
                None => {
                    short = Some(UnavailableReason::UnknownResource);
                    break;
                }
                Some(free) if free < *n => short = Some(UnavailableReason::SoldOut),
                Some(_) => {}
            }
        }
        if let Some(reason) = short {
            info!(trip_id = %trip_id, leg = leg.as_str(), ?reason, "{} unavailable → {}", leg.as_str(), leg.topics()[1]);
            self.trips.insert(trip_id.as_str(), LegRecord::Unavailable { reason });
            return Some(Decision::Unavailable(LegUnavailable { trip_id: trip_id.clone(), leg, reason }));
        }
        for (key, (unit, n)) in &wanted {
            // Checked above: the resource exists and has `n` free.
            let free = self.free_on(unit).unwrap_or(0);
            self.free.insert(key.clone(), free - n);
        }
        info!(trip_id = %trip_id, leg = leg.as_str(), units = units.len(), "{} reserved → {}", leg.as_str(), leg.topics()[0]);
        self.trips.insert(trip_id.as_str(), LegRecord::Reserved { units });
        Some(Decision::Reserved(LegReserved { trip_id: trip_id.clone(), leg }))
    }

    /// The trip's request asked nothing of this leg: remembered, so that its cancellation is
    /// known to hold nothing here (and is not taken for one that came first).
    pub fn not_asked(&mut self, trip_id: &TripId) {
        if self.trips.get(trip_id.as_str()).is_none() {
            debug!(trip_id = %trip_id, leg = self.leg.as_str(), "trip asks nothing of this leg");
            self.trips.insert(trip_id.as_str(), LegRecord::NotAsked);
        }
    }

    /// Refuses a leg whose days cannot be named (decoding refuses such a request first, so
    /// this is a second line of defence); `None` if the trip was already decided here.
    pub fn refuse(&mut self, trip_id: &TripId, reason: UnavailableReason) -> Option<Decision> {
        if self.trips.get(trip_id.as_str()).is_some() {
            return None;
        }
        self.trips.insert(trip_id.as_str(), LegRecord::Unavailable { reason });
        Some(Decision::Unavailable(LegUnavailable { trip_id: trip_id.clone(), leg: self.leg, reason }))
    }

    /// The trip was cancelled: gives back what it holds here, once.
    pub fn release(&mut self, trip_id: &TripId) -> Option<LegReleased> {
        let leg = self.leg;
        match self.trips.get(trip_id.as_str()) {
            Some(LegRecord::Reserved { units }) => {
                for unit in &units {
                    // Reserved, so the day has a row.
                    let free = self.free_on(unit).unwrap_or(0);
                    self.free.insert(unit.key(), free.saturating_add(unit.count));
                }
                warn!(trip_id = %trip_id, leg = leg.as_str(), compensation = true, "COMPENSATION: {} released → {}", leg.as_str(), leg.topics()[2]);
                self.trips.insert(trip_id.as_str(), LegRecord::Released { units });
                Some(LegReleased { trip_id: trip_id.clone(), leg })
            }
            Some(LegRecord::Released { .. } | LegRecord::Unavailable { .. } | LegRecord::CancelledFirst | LegRecord::NotAsked) => None,
            None => {
                info!(trip_id = %trip_id, leg = leg.as_str(), "trip cancelled before its request arrived here; it will not be reserved");
                self.trips.insert(trip_id.as_str(), LegRecord::CancelledFirst);
                None
            }
        }
    }

    /// Units held by trips, by [`Unit::key`].
    pub fn held(&self) -> BTreeMap<String, u64> {
        let mut held: BTreeMap<String, u64> = BTreeMap::new();
        self.trips.for_each(|_, r| {
            if let LegRecord::Reserved { units } = r {
                for unit in units {
                    *held.entry(unit.key()).or_default() += u64::from(unit.count);
                }
            }
        });
        held
    }

    /// The invariant, checked: every day's free and held units add up to its resource's
    /// capacity. The days that do not, with (free + held, capacity).
    pub fn unbalanced(&self) -> Vec<(String, u64, u64)> {
        let held = self.held();
        let mut days: BTreeSet<String> = held.keys().cloned().collect();
        self.free.for_each(|key, _| {
            days.insert(key.to_owned());
        });
        let mut out = Vec::new();
        for key in days {
            let resource = key.rsplit_once('/').map_or(key.as_str(), |(r, _)| r);
            let capacity = u64::from(self.capacity.get(resource).unwrap_or(0));
            let free = self.free.get(&key).map_or(capacity, u64::from);
            let total = free + held.get(&key).copied().unwrap_or(0);
            if total != capacity {
                out.push((key, total, capacity));
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn seats(n: u32) -> Units {
        vec![Unit { resource: "LH400".into(), day: "2027-03-14".into(), count: n }]
    }

    fn service() -> Reservations {
        let mut r = Reservations::new(Leg::Flight);
        r.seed([("LH400".to_owned(), 3)]);
        r
    }

    #[test]
    fn a_leg_gets_all_its_units_or_none_and_is_released_once() {
        let mut r = service();
        let (t1, t2) = (TripId::from("t-1"), TripId::from("t-2"));
        assert!(matches!(r.reserve(&t1, seats(2)), Some(Decision::Reserved(_))));
        assert_eq!(r.reserve(&t1, seats(2)), None, "a duplicate reserves nothing");
        assert!(matches!(
            r.reserve(&t2, [seats(1), seats(1)].concat()),
            Some(Decision::Unavailable(LegUnavailable { reason: UnavailableReason::SoldOut, .. }))
        ), "the same day twice counts twice");
        assert_eq!(r.free.get("LH400/2027-03-14"), Some(1), "a refused leg takes nothing");
        assert_eq!(r.unbalanced(), []);
        assert!(r.release(&t1).is_some());
        assert_eq!(r.release(&t1), None, "released once");
        assert_eq!(r.release(&t2), None, "nothing to release for a refused leg");
        assert_eq!(r.free.get("LH400/2027-03-14"), Some(3));
        assert!(r.held().is_empty());
        assert_eq!(r.unbalanced(), []);
    }

    #[test]
    fn a_cancellation_first_means_the_late_request_never_reserves() {
        let mut r = service();
        let t = TripId::from("t-1");
        assert_eq!(r.release(&t), None);
        assert_eq!(r.reserve(&t, seats(1)), None);
        assert_eq!(r.free_on(&seats(1)[0]), Some(3));
    }

    #[test]
    fn a_trip_that_asked_nothing_of_the_leg_is_cancelled_quietly() {
        let mut r = service();
        let t = TripId::from("t-1");
        r.not_asked(&t);
        assert_eq!(r.release(&t), None);
        assert_eq!(r.trips.get("t-1"), Some(LegRecord::NotAsked), "not taken for a cancellation that came first");
        assert_eq!(r.reserve(&t, seats(1)), None, "a request with the same id, asking this time, is one already decided");
        assert_eq!(r.free_on(&seats(1)[0]), Some(3));
        r.release(&TripId::from("t-2"));
        r.not_asked(&TripId::from("t-2"));
        assert_eq!(r.trips.get("t-2"), Some(LegRecord::CancelledFirst));
    }

    #[test]
    fn an_unknown_resource_is_refused_and_a_wrong_count_is_found() {
        let mut r = service();
        let unknown = vec![Unit { resource: "LH999".into(), day: "2027-03-14".into(), count: 1 }];
        let d = r.reserve(&TripId::from("t-1"), unknown);
        assert!(matches!(d, Some(Decision::Unavailable(LegUnavailable { reason: UnavailableReason::UnknownResource, .. }))));
        r.free.insert("LH400/2027-03-14", 2);
        assert_eq!(r.unbalanced(), [("LH400/2027-03-14".to_owned(), 2, 3)]);
    }
}
