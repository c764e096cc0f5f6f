//! The travel saga in the simulator: its five services' real rules as nodes, a storefront that
//! requests trips (and calls some off), and the travel saga's oracles.

use std::collections::BTreeMap;

use billing_rules::Billing;
use car_rules::Cars;
use flight_rules::Flights;
use hotel_rules::Hotels;
use reservations::LegRecord;
use shared_events::partitioner::partition_for_key;
use shared_events::travel::{CarLeg, FlightLeg, HotelLeg, Leg, TripCancelReason, TripCancellationRequested, TripRequested};
use shared_events::{Envelope, Event};
use trip_rules::{TripRecord, TripStatus, Trips};

use crate::node::{Node, Process};
use crate::{rows, Outcome, PlantedBug, World, DEADLINE, WALLETS};

/// Small inventories, so trips contend: a seat, a room or a car is often the last one.
const FLIGHTS: [(&str, u32); 2] = [("QF1", 2), ("LH400", 3)];
const HOTELS: [(&str, u32); 2] = [("tiny-inn", 1), ("adlon", 2)];
const CARS: [(&str, u32); 2] = [("SYD", 2), ("BER", 3)];
const DATES: [&str; 2] = ["2027-03-14", "2027-03-15"];
/// Weighted by repetition; carol has no wallet, bob a small one.
const CUSTOMERS: [&str; 5] = ["alice", "alice", "alice", "bob", "carol"];

/// The five services, seeded.
pub(crate) fn nodes(partitions: i32, window: usize, wallets: BTreeMap<String, u64>, planted: Option<PlantedBug>) -> Result<Vec<Box<dyn Process>>, String> {
    let seed = |pairs: &[(&str, u32)]| pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect::<BTreeMap<_, _>>();
    Ok(vec![
        Box::new(Node::new(|| Trips::new(Some(DEADLINE)), trip_rules::Seed {}, partitions, window)?),
        Box::new(Node::new(Flights::default, flight_rules::Seed { flights: seed(&FLIGHTS) }, partitions, window)?),
        Box::new(Node::new(Hotels::default, hotel_rules::Seed { hotels: seed(&HOTELS) }, partitions, window)?),
        if planted == Some(PlantedBug::ReserveAfterCancel) {
            Box::new(Node::new(|| crate::planted::ReserveAfterCancel(Cars::default()), car_rules::Seed { locations: seed(&CARS) }, partitions, window)?)
        } else {
            Box::new(Node::new(Cars::default, car_rules::Seed { locations: seed(&CARS) }, partitions, window)?)
        },
        Box::new(Node::new(Billing::default, billing_rules::Seed { wallets }, partitions, window)?),
    ])
}

impl World {
    /// The storefront requests a trip: any non-empty subset of the legs.
    pub(crate) fn request_trip(&mut self, seq: usize) {
        let id = format!("t-{seq}");
        let date = self.rng.pick(&DATES).to_string();
        let mut trip = TripRequested { trip_id: id.as_str().into(), customer_id: self.rng.pick(&CUSTOMERS).to_string(), flight: None, hotel: None, car: None };
        while trip.legs().is_empty() {
            if self.rng.chance(500) {
                let flight = self.rng.pick(&FLIGHTS).0.to_owned();
                trip.flight = Some(FlightLeg { flight, date: date.clone(), seats: 1 + self.rng.below(2) as u32, price_cents: 100 * (1 + self.rng.below(5)) });
            }
            if self.rng.chance(500) {
                let hotel = self.rng.pick(&HOTELS).0.to_owned();
                trip.hotel = Some(HotelLeg { hotel, check_in: date.clone(), nights: 1 + self.rng.below(2) as u32, rooms: 1, price_cents: 100 * (1 + self.rng.below(5)) });
            }
            if self.rng.chance(500) {
                let location = self.rng.pick(&CARS).0.to_owned();
                trip.car = Some(CarLeg { location, pick_up: date.clone(), days: 1 + self.rng.below(3) as u32, cars: 1, price_cents: 100 * (1 + self.rng.below(5)) });
            }
        }
        let partition = partition_for_key(id.as_bytes(), self.partitions);
        let envelope = Envelope::root(Event::TripRequested(trip.clone()), self.now_ms);
        let offset = self.log.append_event(&envelope, partition, self.rng.chance(500), self.now_ms);
        self.trace.push(format!("{:>8} storefront requests {id} ({} {:?}, {} cents) at TripRequested/{partition}@{offset}",
            self.now_ms, trip.customer_id, trip.legs(), trip.total_cents().unwrap_or(0)));
        self.trips.push(trip);
        self.last_placed_ms = self.now_ms;
    }

    pub(crate) fn cancel_trip(&mut self) {
        if self.trips.is_empty() {
            return;
        }
        let id = self.rng.pick(&self.trips).trip_id.clone();
        let partition = partition_for_key(id.as_str().as_bytes(), self.partitions);
        let envelope = Envelope::root(Event::TripCancellationRequested(TripCancellationRequested { trip_id: id.clone() }), self.now_ms);
        self.log.append_event(&envelope, partition, self.rng.chance(500), self.now_ms);
        self.trace.push(format!("{:>8} the customer asks to cancel {id}", self.now_ms));
    }

    /// The trips trip-service has not ended (so far).
    pub(crate) fn open_trips(&self) -> Vec<String> {
        let mut ignored = Vec::new();
        let trips = rows::<TripRecord>(self.node("trip-service"), "trips", &mut ignored);
        self.trips
            .iter()
            .map(|t| t.trip_id.as_str())
            .filter(|id| !trips.get(*id).is_some_and(TripRecord::is_terminal))
            .map(str::to_owned)
            .collect()
    }

    /// Every trip ended, nothing awaited; each leg's units and billing's money conserved, and
    /// held only by confirmed trips.
    pub(crate) fn check_trips(&self, outcome: &mut Outcome, violations: &mut Vec<String>) {
        let trips = rows::<TripRecord>(self.node("trip-service"), "trips", violations);
        let mut spent: BTreeMap<&str, u64> = BTreeMap::new();
        for trip in &self.trips {
            let id = trip.trip_id.as_str();
            let Some(rec) = trips.get(id) else {
                violations.push(format!("{id}: trip-service never heard of it"));
                continue;
            };
            match rec.status {
                TripStatus::Confirmed => {
                    outcome.completed += 1;
                    *spent.entry(&trip.customer_id).or_default() += trip.total_cents().unwrap_or(0);
                }
                TripStatus::Cancelled => {
                    let reason = match rec.cancel_reason {
                        Some(TripCancelReason::LegUnavailable { .. }) => "leg_unavailable",
                        Some(TripCancelReason::ChargeDeclined) => "charge_declined",
                        Some(TripCancelReason::Deadline) => "deadline",
                        Some(TripCancelReason::CustomerRequest) => "customer_request",
                        None => "?",
                    };
                    *outcome.cancelled.entry(reason).or_default() += 1;
                    let awaited = rec.releases_awaited();
                    if !awaited.is_empty() {
                        violations.push(format!("{id}: cancelled, still waiting for releases of {awaited:?}"));
                    }
                }
                other => violations.push(format!("{id}: not terminal ({other:?})")),
            }
        }
        for id in self.open_when_quiet.iter().flatten() {
            violations.push(format!("{id}: still open once every event was delivered (before any deadline was let pass)"));
        }
        for (service, leg) in [("flight-service", Leg::Flight), ("hotel-service", Leg::Hotel), ("car-service", Leg::Car)] {
            let node = self.node(service);
            let capacity = rows::<u32>(node, "capacity", violations);
            let free = rows::<u32>(node, "free", violations);
            let records = rows::<LegRecord>(node, "trips", violations);
            let mut held: BTreeMap<String, u32> = BTreeMap::new();
            for (trip, record) in &records {
                if let LegRecord::Reserved { units } = record {
                    if trips.get(trip).map(|t| t.status) != Some(TripStatus::Confirmed) {
                        violations.push(format!("{trip}: {leg:?} holds units, but the trip is not confirmed"));
                    }
                    for u in units {
                        *held.entry(u.key()).or_default() += u.count;
                    }
                }
            }
            for (day, left) in &free {
                let resource = day.rsplit_once('/').map_or(day.as_str(), |(r, _)| r);
                let total = left + held.get(day).copied().unwrap_or(0);
                if Some(&total) != capacity.get(resource) {
                    violations.push(format!("{leg:?} {day}: {left} free + {} held, capacity {:?}", held.get(day).copied().unwrap_or(0), capacity.get(resource)));
                }
            }
        }
        let wallets = rows::<u64>(self.node("billing-service"), "wallets", violations);
        let expected: BTreeMap<String, u64> = WALLETS.iter().map(|(c, start)| (c.to_string(), start - spent.get(c).copied().unwrap_or(0))).collect();
        if wallets != expected {
            violations.push(format!("wallets: {wallets:?}, expected {expected:?}"));
        }
    }
}
