//! Trip rules: the trip service owns each trip's state and its deadline, as order-service
//! owns an order's. The legs reserve in parallel, on their own, from `TripRequested`; this
//! service watches their answers arrive in any order and decides once:
//!
//! - every requested leg reserved → `TripReserved`: billing charges (the pivot);
//! - a leg unavailable, the deadline passed, or the customer asking, all before that →
//!   `TripCancelled`, from which every leg that reserved releases itself;
//! - billing's answer → `TripConfirmed`, or `TripCancelled` (charge declined).
//!
//! Once the charge is asked for, the trip is no longer this service's to call off: a
//! cancellation request is refused, and the deadline no longer applies.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use saga_core::{Context, PersistentTable, Service, Table, TimerEvent};
use serde::{Deserialize, Serialize};
use shared_events::{DeadLetter, Envelope, Event, EventId, Topic};
use shared_events::travel::{
    Leg, LegReleased, LegReserved, LegUnavailable, TripCancelReason, TripCancellationRefused, TripCancellationRequested,
    TripCancelled, TripChargeDeclined, TripCharged, TripConfirmed, TripId, TripRequested, TripReserved, UnavailableReason,
};
use tracing::{info, warn};

/// Where a trip stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TripStatus {
    /// Waiting for its legs (or for its request: the legs' answers may come first).
    Reserving,
    /// `TripReserved` sent; waiting for billing.
    Charging,
    Confirmed,
    Cancelled,
}

/// What the request said, as far as this service needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requested {
    pub customer_id: String,
    pub legs: Vec<Leg>,
    pub amount_cents: u64,
    pub at_ms: i64,
    /// The trip's partition: where this service emits on its own (the deadline).
    pub partition: i32,
}

/// One trip as this service knows it, from every event about it, whatever came first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TripRecord {
    pub status: TripStatus,
    pub request: Option<Requested>,
    pub reserved: BTreeSet<Leg>,
    pub unavailable: BTreeMap<Leg, UnavailableReason>,
    pub released: BTreeSet<Leg>,
    pub cancel_requested: bool,
    pub cancel_reason: Option<TripCancelReason>,
    /// The `TripRequested` that requested the trip (its id covers its content): another one
    /// with the same trip id is a conflict, parked. `None` in rows of session 10's release,
    /// which stay unchecked: which request made them is unknown.
    #[serde(default)]
    pub requested_by: Option<EventId>,
}

impl Default for TripRecord {
    fn default() -> Self {
        TripRecord {
            status: TripStatus::Reserving,
            request: None,
            reserved: BTreeSet::new(),
            unavailable: BTreeMap::new(),
            released: BTreeSet::new(),
            cancel_requested: false,
            cancel_reason: None,
            requested_by: None,
        }
    }
}

impl TripRecord {
    pub fn is_terminal(&self) -> bool {
        matches!(self.status, TripStatus::Confirmed | TripStatus::Cancelled)
    }

    /// Legs still to give back: reserved for a cancelled trip, not yet released.
    pub fn releases_awaited(&self) -> Vec<Leg> {
        if self.status != TripStatus::Cancelled {
            return Vec::new();
        }
        self.reserved.difference(&self.released).copied().collect()
    }
}

/// What one input made this service say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Reserved(TripReserved),
    Confirmed(TripConfirmed),
    Cancelled(TripCancelled),
    Refused(TripCancellationRefused),
    /// A second, different request with a trip id already taken: parked on DeadLetter. Every
    /// service reads a trip's requests in the same order (one partition), so each acted on
    /// the first and ignores this one; parking it tells whoever sent it.
    Conflict(Box<DeadLetter>),
}

/// An input, as the runtime hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Requested(TripRequested),
    LegReserved(LegReserved),
    LegUnavailable(LegUnavailable),
    LegReleased(LegReleased),
    Charged(TripCharged),
    ChargeDeclined(TripChargeDeclined),
    CancellationRequested(TripCancellationRequested),
}

impl Input {
    pub fn trip_id(&self) -> &TripId {
        match self {
            Input::Requested(e) => &e.trip_id,
            Input::LegReserved(e) => &e.trip_id,
            Input::LegUnavailable(e) => &e.trip_id,
            Input::LegReleased(e) => &e.trip_id,
            Input::Charged(e) => &e.trip_id,
            Input::ChargeDeclined(e) => &e.trip_id,
            Input::CancellationRequested(e) => &e.trip_id,
        }
    }
}

/// The trip service's state: one record per trip, and the deadline.
#[derive(Debug)]
pub struct Trips {
    pub trips: Table<TripRecord>,
    deadline: Option<Duration>,
    /// Trips still reserving, by when they were requested: the only ones the deadline can
    /// cancel. Built from the table on first use.
    reserving: Option<BTreeMap<String, i64>>,
}

impl Trips {
    /// `deadline`: cancel a trip not reserved in full this long after it was requested.
    pub fn new(deadline: Option<Duration>) -> Self {
        Trips { trips: Table::new("trips"), deadline, reserving: None }
    }

    /// Records `input` and decides, if the trip can now be decided. `started_at_ms`: when the
    /// saga began (the request's time, which the deadline counts from, however late this
    /// service reads it); `partition`: the input's, which is the trip's (every event about it is
    /// keyed by its id).
    pub fn apply(&mut self, input: &Input, now_ms: i64, started_at_ms: i64, partition: i32) -> Option<Decision> {
        let trip_id = input.trip_id().clone();
        let mut trip = self.trips.get(trip_id.as_str()).unwrap_or_default();
        let before = trip.clone();
        let said = match input {
            Input::Requested(r) => {
                let id = EventId::for_event(&Event::TripRequested(r.clone()));
                if let Some(first) = trip.requested_by.filter(|first| *first != id) {
                    warn!(trip_id = %trip_id, first = %first, "trip id reused with another request: parked on DeadLetter");
                    let reason = format!("trip {trip_id} was requested before with another request (event {first}); this one is not the trip");
                    return Some(Decision::Conflict(Box::new(DeadLetter::rejected_trip(&trip_id, "trip_id_conflict", reason))));
                }
                // A row with a request but no id predates the check: which request made it is
                // unknown, and stays so.
                if trip.request.is_none() || trip.requested_by.is_some() {
                    trip.requested_by = Some(id);
                }
                if trip.request.is_none() {
                    let amount_cents = r.total_cents().unwrap_or(u64::MAX);
                    info!(trip_id = %trip_id, customer_id = r.customer_id, legs = ?r.legs(), amount_cents, "trip requested");
                    trip.request = Some(Requested { customer_id: r.customer_id.clone(), legs: r.legs(), amount_cents, at_ms: started_at_ms.min(now_ms), partition });
                }
                None
            }
            Input::LegReserved(e) => {
                trip.reserved.insert(e.leg);
                None
            }
            Input::LegUnavailable(e) => {
                trip.unavailable.entry(e.leg).or_insert(e.reason);
                None
            }
            Input::LegReleased(e) => {
                trip.released.insert(e.leg);
                None
            }
            Input::Charged(e) if trip.status == TripStatus::Charging => {
                trip.status = TripStatus::Confirmed;
                info!(trip_id = %trip_id, amount_cents = e.amount_cents, "trip charged and every leg reserved → TripConfirmed");
                Some(Decision::Confirmed(TripConfirmed { trip_id: trip_id.clone(), customer_id: e.customer_id.clone(), amount_cents: e.amount_cents }))
            }
            Input::ChargeDeclined(e) if trip.status == TripStatus::Charging => {
                warn!(trip_id = %trip_id, reason = %e.reason, "charge declined → TripCancelled");
                Some(cancel(&mut trip, &trip_id, TripCancelReason::ChargeDeclined))
            }
            Input::Charged(_) | Input::ChargeDeclined(_) => None,
            Input::CancellationRequested(_) => match trip.status {
                TripStatus::Reserving => {
                    trip.cancel_requested = true;
                    None
                }
                TripStatus::Charging | TripStatus::Confirmed | TripStatus::Cancelled => {
                    info!(trip_id = %trip_id, status = ?trip.status, "cancellation refused: the charge was already asked for, or the trip is over");
                    Some(Decision::Refused(TripCancellationRefused { trip_id: trip_id.clone() }))
                }
            },
        };
        let said = said.or_else(|| decide(&mut trip, &trip_id));
        if trip != before {
            self.track(&trip_id, &trip);
            self.trips.insert(trip_id.as_str(), trip);
        }
        said
    }

    /// Cancels every trip still reserving past its deadline; each with its partition and when
    /// it was requested.
    pub fn on_deadline(&mut self, now_ms: i64) -> Vec<(TripCancelled, i32, i64)> {
        let Some(deadline) = self.deadline else { return Vec::new() };
        let deadline_ms = i64::try_from(deadline.as_millis()).unwrap_or(i64::MAX);
        let due: Vec<String> = self.reserving().iter().filter(|(_, at)| now_ms.saturating_sub(**at) >= deadline_ms).map(|(id, _)| id.clone()).collect();
        let mut out = Vec::new();
        for id in due {
            let trip_id = TripId(id);
            let Some(mut trip) = self.trips.get(trip_id.as_str()) else { continue };
            if trip.status != TripStatus::Reserving {
                continue;
            }
            warn!(trip_id = %trip_id, ?deadline, "trip not reserved in time → TripCancelled");
            let (partition, at_ms) = trip.request.as_ref().map_or((0, now_ms), |r| (r.partition, r.at_ms));
            if let Decision::Cancelled(c) = cancel(&mut trip, &trip_id, TripCancelReason::Deadline) {
                out.push((c, partition, at_ms));
            }
            self.track(&trip_id, &trip);
            self.trips.insert(trip_id.as_str(), trip);
        }
        out
    }

    fn reserving(&mut self) -> &BTreeMap<String, i64> {
        let trips = &self.trips;
        self.reserving.get_or_insert_with(|| {
            let mut open = BTreeMap::new();
            trips.for_each(|id, t| {
                if let (TripStatus::Reserving, Some(r)) = (t.status, &t.request) {
                    open.insert(id.to_owned(), r.at_ms);
                }
            });
            open
        })
    }

    fn track(&mut self, trip_id: &TripId, trip: &TripRecord) {
        let Some(open) = &mut self.reserving else { return };
        match (&trip.status, &trip.request) {
            (TripStatus::Reserving, Some(r)) => open.insert(trip_id.0.clone(), r.at_ms),
            _ => open.remove(trip_id.as_str()),
        };
    }
}

/// Nothing to load on first start: trips come from `TripRequested`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {}

impl Input {
    /// The input an event is, if this service consumes it.
    pub fn of(event: &Event) -> Option<Input> {
        Some(match event {
            Event::TripRequested(e) => Input::Requested(e.clone()),
            Event::TripCharged(e) => Input::Charged(e.clone()),
            Event::TripChargeDeclined(e) => Input::ChargeDeclined(e.clone()),
            Event::TripCancellationRequested(e) => Input::CancellationRequested(e.clone()),
            other => {
                if let Some(e) = other.leg_reserved() {
                    Input::LegReserved(e)
                } else if let Some(e) = other.leg_unavailable() {
                    Input::LegUnavailable(e)
                } else {
                    Input::LegReleased(other.leg_released()?)
                }
            }
        })
    }
}

impl From<Decision> for Event {
    fn from(d: Decision) -> Event {
        match d {
            Decision::Reserved(e) => e.into(),
            Decision::Confirmed(e) => e.into(),
            Decision::Cancelled(e) => e.into(),
            Decision::Refused(e) => e.into(),
            Decision::Conflict(letter) => Event::DeadLetter(*letter),
        }
    }
}

impl Service for Trips {
    const NAME: &'static str = "trip-service";
    const CONSUMES: &'static [Topic] = &[
        Topic::TripRequested,
        Topic::FlightReserved,
        Topic::FlightUnavailable,
        Topic::HotelReserved,
        Topic::HotelUnavailable,
        Topic::CarReserved,
        Topic::CarUnavailable,
        Topic::TripCharged,
        Topic::TripChargeDeclined,
        Topic::FlightReleased,
        Topic::HotelReleased,
        Topic::CarReleased,
        Topic::TripCancellationRequested,
    ];
    const EMITS: &'static [Topic] = &[Topic::TripReserved, Topic::TripConfirmed, Topic::TripCancelled, Topic::TripCancellationRefused];
    type Seed = Seed;

    fn seed(&mut self, _seed: Seed) {}

    fn handle(&mut self, input: &Envelope, ctx: &Context) -> Vec<Event> {
        let Some(trip_input) = Input::of(&input.event) else { return Vec::new() };
        // As its metadata says; decoding clamps what customers write to the record's time.
        let started_at_ms = input.meta.saga_started_at_ms;
        self.apply(&trip_input, ctx.now_ms, started_at_ms, ctx.partition).map(Event::from).into_iter().collect()
    }

    fn on_timer(&mut self, now_ms: i64) -> Vec<TimerEvent> {
        self.on_deadline(now_ms)
            .into_iter()
            .map(|(c, partition, saga_started_at_ms)| TimerEvent { event: c.into(), partition, saga_started_at_ms })
            .collect()
    }

    fn tables(&mut self) -> Vec<&mut dyn PersistentTable> {
        vec![&mut self.trips]
    }
}

/// While reserving, with the request known: the customer's cancellation first, then a leg
/// that cannot be had, then every leg reserved.
fn decide(trip: &mut TripRecord, trip_id: &TripId) -> Option<Decision> {
    if trip.status != TripStatus::Reserving {
        return None;
    }
    let request = trip.request.clone()?;
    if trip.cancel_requested {
        info!(trip_id = %trip_id, "the customer called the trip off → TripCancelled");
        return Some(cancel(trip, trip_id, TripCancelReason::CustomerRequest));
    }
    if let Some(leg) = request.legs.iter().find(|l| trip.unavailable.contains_key(l)) {
        warn!(trip_id = %trip_id, leg = leg.as_str(), "a leg cannot be reserved → TripCancelled");
        return Some(cancel(trip, trip_id, TripCancelReason::LegUnavailable { leg: *leg }));
    }
    if request.legs.iter().all(|l| trip.reserved.contains(l)) {
        trip.status = TripStatus::Charging;
        info!(trip_id = %trip_id, amount_cents = request.amount_cents, "every leg reserved → TripReserved");
        return Some(Decision::Reserved(TripReserved { trip_id: trip_id.clone(), customer_id: request.customer_id, amount_cents: request.amount_cents }));
    }
    None
}

fn cancel(trip: &mut TripRecord, trip_id: &TripId, reason: TripCancelReason) -> Decision {
    trip.status = TripStatus::Cancelled;
    trip.cancel_reason = Some(reason);
    Decision::Cancelled(TripCancelled { trip_id: trip_id.clone(), reason })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use shared_events::travel::{CarLeg, HotelLeg};

    fn request(id: &str) -> TripRequested {
        TripRequested {
            trip_id: id.into(),
            customer_id: "alice".into(),
            flight: None,
            hotel: Some(HotelLeg { hotel: "adlon".into(), check_in: "2027-03-14".into(), nights: 2, rooms: 1, price_cents: 500 }),
            car: Some(CarLeg { location: "BER".into(), pick_up: "2027-03-14".into(), days: 2, cars: 1, price_cents: 300 }),
        }
    }

    impl Trips {
        fn apply_at(&mut self, input: &Input, now_ms: i64) -> Option<Decision> {
            self.apply(input, now_ms, now_ms, 0)
        }
    }

    fn reserved(id: &str, leg: Leg) -> Input {
        Input::LegReserved(LegReserved { trip_id: id.into(), leg })
    }

    #[test]
    fn answers_before_the_request_are_kept_and_the_charge_is_asked_for_once() {
        let mut t = Trips::new(None);
        assert_eq!(t.apply_at(&reserved("t-1", Leg::Car), 1), None);
        assert_eq!(t.apply_at(&reserved("t-1", Leg::Hotel), 2), None, "no request yet: nothing to decide");
        let d = t.apply_at(&Input::Requested(request("t-1")), 3);
        assert_eq!(d, Some(Decision::Reserved(TripReserved { trip_id: "t-1".into(), customer_id: "alice".into(), amount_cents: 800 })));
        assert_eq!(t.apply_at(&reserved("t-1", Leg::Car), 4), None, "a duplicate asks nothing more");
        let refused = t.apply_at(&Input::CancellationRequested(TripCancellationRequested { trip_id: "t-1".into() }), 5);
        assert!(matches!(refused, Some(Decision::Refused(_))), "past the pivot");
        let charged = TripCharged { trip_id: "t-1".into(), customer_id: "alice".into(), amount_cents: 800 };
        assert!(matches!(t.apply_at(&Input::Charged(charged.clone()), 6), Some(Decision::Confirmed(_))));
        assert_eq!(t.apply_at(&Input::Charged(charged), 7), None);
    }

    #[test]
    fn a_leg_unavailable_cancels_and_the_reserved_one_is_awaited_until_released() {
        let mut t = Trips::new(None);
        t.apply_at(&Input::Requested(request("t-1")), 1);
        t.apply_at(&reserved("t-1", Leg::Car), 2);
        let d = t.apply_at(&Input::LegUnavailable(LegUnavailable { trip_id: "t-1".into(), leg: Leg::Hotel, reason: UnavailableReason::SoldOut }), 3);
        assert_eq!(d, Some(Decision::Cancelled(TripCancelled { trip_id: "t-1".into(), reason: TripCancelReason::LegUnavailable { leg: Leg::Hotel } })));
        assert_eq!(t.trips.get("t-1").unwrap().releases_awaited(), [Leg::Car]);
        t.apply_at(&Input::LegReleased(LegReleased { trip_id: "t-1".into(), leg: Leg::Car }), 4);
        assert_eq!(t.trips.get("t-1").unwrap().releases_awaited(), []);
    }

    #[test]
    fn the_deadline_cancels_a_trip_still_reserving_once_and_never_one_being_charged() {
        let mut t = Trips::new(Some(Duration::from_millis(100)));
        t.apply_at(&Input::Requested(request("slow")), 0);
        t.apply_at(&Input::Requested(request("fast")), 0);
        t.apply_at(&reserved("fast", Leg::Car), 10);
        t.apply_at(&reserved("fast", Leg::Hotel), 20);
        assert_eq!(t.on_deadline(99), []);
        let cancelled = t.on_deadline(100);
        assert_eq!(cancelled, [(TripCancelled { trip_id: "slow".into(), reason: TripCancelReason::Deadline }, 0, 0)]);
        assert_eq!(t.on_deadline(1_000), [], "once");
        assert_eq!(t.trips.get("fast").unwrap().status, TripStatus::Charging);
    }

    #[test]
    fn a_cancellation_before_the_request_cancels_it_on_arrival() {
        let mut t = Trips::new(None);
        assert_eq!(t.apply_at(&Input::CancellationRequested(TripCancellationRequested { trip_id: "t-1".into() }), 1), None);
        let d = t.apply_at(&Input::Requested(request("t-1")), 2);
        assert!(matches!(d, Some(Decision::Cancelled(TripCancelled { reason: TripCancelReason::CustomerRequest, .. }))));
    }

    #[test]
    fn a_trip_id_reused_with_another_request_is_a_conflict_and_the_same_again_is_not() {
        let mut t = Trips::new(None);
        t.apply_at(&Input::Requested(request("t-1")), 1);
        assert_eq!(t.apply_at(&Input::Requested(request("t-1")), 2), None, "the same request again is a duplicate");
        let mut other = request("t-1");
        other.car = None;
        let Some(Decision::Conflict(letter)) = t.apply_at(&Input::Requested(other.clone()), 3) else { panic!("expected a conflict") };
        assert_eq!((letter.error_code.as_str(), letter.trip_id, letter.order_id), ("trip_id_conflict", Some("t-1".into()), None));
        assert_eq!(t.trips.get("t-1").unwrap().request.unwrap().legs, [Leg::Hotel, Leg::Car], "the first request stands");

        // A row written before the check has no id: it takes no other request's for its own.
        let mut old = t.trips.get("t-1").unwrap();
        old.requested_by = None;
        t.trips.insert("t-1", old);
        assert_eq!(t.apply_at(&Input::Requested(other), 4), None);
        assert_eq!(t.trips.get("t-1").unwrap().requested_by, None);
        assert_eq!(t.apply_at(&Input::Requested(request("t-1")), 5), None, "nor is the real one parked later");
    }
}
