//! What the recorded events say about trips (the travel saga): a trip's state, what an
//! unfinished one waits for, and the travel saga's invariants. Pure functions, like
//! [`crate::analysis`], which hands trips' histories here.

use std::collections::BTreeSet;

use shared_events::travel::Leg;
use shared_events::{Event, Topic};
use trip_rules::{Input, TripRecord, TripStatus, Trips};

use crate::analysis::{Recorded, Violation};

/// A trip's state as the trip service sees it, from its events (replayed through the trip
/// service's own rules).
pub fn state(history: &[Recorded]) -> TripRecord {
    let mut trips = Trips::new(None);
    let mut id = None;
    for e in history {
        if let Some(input) = Input::of(&e.envelope.event) {
            trips.apply(&input, e.at_ms(), e.envelope.meta.saga_started_at_ms, e.partition);
        }
        id = e.saga_id().map(str::to_owned);
    }
    id.and_then(|id| trips.trips.get(&id)).unwrap_or_default()
}

/// The legs asked for that have not answered yet.
fn unanswered(rec: &TripRecord) -> Vec<Leg> {
    let asked = rec.request.as_ref().map(|r| r.legs.clone()).unwrap_or_default();
    asked.into_iter().filter(|l| !rec.reserved.contains(l) && !rec.unavailable.contains_key(l)).collect()
}

fn names(topics: impl IntoIterator<Item = Topic>) -> String {
    topics.into_iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
}

/// The step an unfinished trip waits for.
pub fn waiting_on(rec: &TripRecord) -> String {
    match rec.status {
        TripStatus::Reserving if rec.request.is_none() => "its TripRequested (seen only later steps)".to_owned(),
        TripStatus::Reserving => format!("legs: {}", names(unanswered(rec).into_iter().map(|l| l.topics()[0]))),
        TripStatus::Charging => "billing (TripCharged or TripChargeDeclined)".to_owned(),
        TripStatus::Cancelled => format!("compensation: {}", names(rec.releases_awaited().into_iter().map(|l| l.topics()[2]))),
        TripStatus::Confirmed => "nothing".to_owned(),
    }
}

/// Whether the trip is done: ended, and every release a cancellation calls for arrived.
pub fn is_finished(rec: &TripRecord) -> bool {
    matches!(rec.status, TripStatus::Confirmed) || (rec.status == TripStatus::Cancelled && rec.releases_awaited().is_empty())
}

/// The one-line summary of a trip's state.
pub fn state_line(history: &[Recorded]) -> String {
    let rec = state(history);
    let status = match rec.status {
        TripStatus::Confirmed => format!("confirmed ({} cents)", rec.request.as_ref().map_or(0, |r| r.amount_cents)),
        TripStatus::Cancelled => {
            let reason = rec.cancel_reason.map(|r| format!("{r:?}")).unwrap_or_default();
            let awaited = rec.releases_awaited();
            if !awaited.is_empty() {
                format!("cancelled ({reason}), waiting for {}", names(awaited.into_iter().map(|l| l.topics()[2])))
            } else if rec.released.is_empty() {
                format!("cancelled ({reason}), nothing to undo")
            } else {
                format!("cancelled ({reason}), compensated: {}", names(rec.released.iter().map(|l| l.topics()[2])))
            }
        }
        other => format!("{} — {}", format!("{other:?}").to_lowercase(), waiting_on(&rec)),
    };
    format!("state: {status}")
}

/// The travel saga's invariants over one trip's history (distinct events, in time order):
/// - no event type twice (but a customer's requests and their refusals), one terminal state;
/// - a charge only after every requested leg was reserved, and only for a confirmed trip;
/// - every leg a cancelled trip reserved is released exactly once; nothing is released that
///   was not reserved, or for a trip that was not cancelled.
///
/// A release missing for a cancellation younger than `grace_ms` is in flight.
pub fn audit(trip_id: &str, history: &[Recorded], now_ms: i64, grace_ms: i64, out: &mut Vec<Violation>) {
    let mut v = |rule: &'static str, detail: String, evidence: Vec<&Recorded>| {
        out.push(Violation { saga: Some(shared_events::Saga::Travel), order_id: Some(trip_id.to_owned()), rule, detail, evidence: evidence.into_iter().cloned().collect() })
    };
    let of = |t: Topic| history.iter().filter(|e| e.topic == t).collect::<Vec<_>>();
    for t in shared_events::Saga::Travel.topics() {
        let list = of(t);
        if list.len() > 1 && !matches!(t, Topic::TripCancellationRequested | Topic::TripCancellationRefused) {
            v("once per trip", format!("{} distinct {t} events", list.len()), list);
        }
    }
    let (confirmed, cancelled, charged) = (of(Topic::TripConfirmed), of(Topic::TripCancelled), of(Topic::TripCharged));
    if !confirmed.is_empty() && !cancelled.is_empty() {
        v("one terminal state", "both confirmed and cancelled".into(), confirmed.iter().chain(&cancelled).copied().collect());
    }
    if !charged.is_empty() && !cancelled.is_empty() {
        v("the charge is the pivot", "charged, yet cancelled".into(), charged.iter().chain(&cancelled).copied().collect());
    }
    let asked: BTreeSet<Leg> = history
        .iter()
        .find_map(|e| match &e.envelope.event {
            Event::TripRequested(r) => Some(r.legs().into_iter().collect()),
            _ => None,
        })
        .unwrap_or_default();
    if !charged.is_empty() {
        let missing: Vec<Leg> = asked.iter().copied().filter(|l| of(l.topics()[0]).is_empty()).collect();
        if !missing.is_empty() {
            v("charge only a trip reserved in full", format!("charged without {missing:?} reserved"), charged.clone());
        }
    }
    let in_flight = cancelled.iter().all(|c| now_ms - c.at_ms() < grace_ms);
    for leg in Leg::ALL {
        let [reserved, _, released] = leg.topics();
        let (reserved, released) = (of(reserved), of(released));
        match (cancelled.is_empty(), reserved.len(), released.len()) {
            (true, _, n) if n > 0 => v("release only for a cancelled trip", format!("{leg:?} released, but the trip was never cancelled"), released.clone()),
            (false, 0, n) if n > 0 => v("release exactly what was reserved", format!("{leg:?} released but never reserved"), released.clone()),
            (false, r, 0) if r > 0 && !in_flight => {
                v("release exactly what was reserved", format!("cancelled and {leg:?} reserved, but never released"), reserved.iter().chain(&cancelled).copied().collect())
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::analysis::{audit as audit_all, by_saga, state_line as line_of, stuck};
    use shared_events::travel::*;
    use shared_events::{Envelope, Saga};

    fn rec(topic: Topic, event: Event, cause: Option<&Recorded>, at: i64) -> Recorded {
        let envelope = match cause {
            Some(c) => Envelope::caused_by(&c.envelope.meta, event, at),
            None => Envelope::root(event, at),
        };
        assert_eq!(envelope.event.topic(), topic);
        Recorded { topic, partition: 0, offset: at, envelope }
    }

    /// A trip whose hotel was sold out while its car reserved; the car released.
    fn sold_out_hotel() -> Vec<Recorded> {
        let id = TripId::from("t-1");
        let request = TripRequested {
            trip_id: id.clone(),
            customer_id: "alice".into(),
            flight: None,
            hotel: Some(HotelLeg { hotel: "tiny-inn".into(), check_in: "2027-03-14".into(), nights: 1, rooms: 1, price_cents: 10 }),
            car: Some(CarLeg { location: "SYD".into(), pick_up: "2027-03-14".into(), days: 1, cars: 1, price_cents: 5 }),
        };
        let requested = rec(Topic::TripRequested, request.into(), None, 1);
        let car = rec(Topic::CarReserved, LegReserved { trip_id: id.clone(), leg: Leg::Car }.into(), Some(&requested), 2);
        let hotel = rec(Topic::HotelUnavailable, LegUnavailable { trip_id: id.clone(), leg: Leg::Hotel, reason: UnavailableReason::SoldOut }.into(), Some(&requested), 3);
        let cancelled = rec(Topic::TripCancelled, TripCancelled { trip_id: id.clone(), reason: TripCancelReason::LegUnavailable { leg: Leg::Hotel } }.into(), Some(&hotel), 4);
        let released = rec(Topic::CarReleased, LegReleased { trip_id: id, leg: Leg::Car }.into(), Some(&cancelled), 5);
        vec![requested, car, hotel, cancelled, released]
    }

    #[test]
    fn a_compensated_trip_passes_the_audit_and_reads_as_compensated() {
        let events = sold_out_hotel();
        assert_eq!(audit_all(&events, 1_000_000, 30_000), vec![]);
        let line = line_of(&by_saga(&events)[&(Saga::Travel, "t-1".to_owned())]);
        assert!(line.contains("cancelled (LegUnavailable { leg: Hotel }), compensated: CarReleased"), "{line}");
        assert!(stuck(&events, 1_000_000, 1_000).is_empty());
    }

    #[test]
    fn a_missing_release_is_in_flight_then_a_violation_and_stuck() {
        let mut events = sold_out_hotel();
        events.retain(|e| e.topic != Topic::CarReleased);
        assert!(audit_all(&events, 10, 30_000).is_empty(), "within the grace period");
        let found = audit_all(&events, 100_000, 30_000);
        assert_eq!(found.iter().map(|v| v.rule).collect::<Vec<_>>(), ["release exactly what was reserved"]);
        let stuck = stuck(&events, 100_000, 1_000);
        assert_eq!(stuck.len(), 1);
        assert!(stuck[0].waiting_on.contains("CarReleased"), "{}", stuck[0].waiting_on);
    }

    #[test]
    fn a_release_without_a_cancellation_and_a_charge_of_a_cancelled_trip_are_found() {
        let mut events = sold_out_hotel();
        events.retain(|e| e.topic != Topic::TripCancelled);
        let rules: Vec<&str> = audit_all(&events, 100_000, 30_000).iter().map(|v| v.rule).collect();
        assert!(rules.contains(&"release only for a cancelled trip"), "{rules:?}");

        let mut events = sold_out_hotel();
        let requested = events[0].clone();
        events.push(rec(Topic::TripCharged, TripCharged { trip_id: "t-1".into(), customer_id: "alice".into(), amount_cents: 15 }.into(), Some(&requested), 6));
        let rules: BTreeSet<&str> = audit_all(&events, 100_000, 30_000).iter().map(|v| v.rule).collect();
        assert!(rules.contains("the charge is the pivot") && rules.contains("charge only a trip reserved in full"), "{rules:?}");
    }

    #[test]
    fn a_trip_waiting_for_a_leg_is_stuck_on_it() {
        let events: Vec<Recorded> = sold_out_hotel().into_iter().take(2).collect();
        let found = stuck(&events, 60_000, 30_000);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].waiting_on, "legs: HotelReserved");
    }

    #[test]
    fn a_trip_id_reused_is_a_violation_unless_trip_service_parked_it() {
        let mut events = sold_out_hotel();
        let other = TripRequested { trip_id: "t-1".into(), customer_id: "bob".into(), flight: None, hotel: None, car: Some(CarLeg { location: "BER".into(), pick_up: "2027-03-14".into(), days: 1, cars: 1, price_cents: 5 }) };
        events.push(rec(Topic::TripRequested, other.into(), None, 9));
        let rules: Vec<&str> = audit_all(&events, 100_000, 30_000).iter().map(|v| v.rule).collect();
        assert_eq!(rules, ["once per trip"]);
        let letter = shared_events::DeadLetter { source_topic: "TripRequested".into(), source_partition: 0, source_offset: 9, ..shared_events::DeadLetter::rejected_trip(&"t-1".into(), "trip_id_conflict", "requested before".into()) };
        events.push(rec(Topic::DeadLetter, letter.into(), None, 10));
        assert_eq!(audit_all(&events, 100_000, 30_000), vec![]);
    }
}
