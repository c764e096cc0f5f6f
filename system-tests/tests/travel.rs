//! The travel saga end to end, on a real broker with its five real binaries: the README's
//! scenarios (a full trip, a sold-out hotel, a declined charge, a car reserved only after the
//! hotel had failed), typed with kcat; then seats, rooms, cars and money from the stores.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use std::collections::BTreeMap;

use reservations::LegRecord;
use shared_events::travel::{Leg, TripCancelReason};
use shared_events::{Event, Saga, Topic};
use support::{wait_until, Deployment};
use trip_rules::{TripRecord, TripStatus};

/// A request as a person types it: any of a flight, a hotel and a car.
fn trip_json(id: &str, customer: &str, flight: Option<(&str, u32)>, hotel: Option<(&str, u32)>, car: Option<(&str, u32)>) -> String {
    let mut legs = Vec::new();
    if let Some((f, seats)) = flight {
        legs.push(format!(r#""flight":{{"flight":"{f}","date":"2027-03-14","seats":{seats},"price_cents":40000}}"#));
    }
    if let Some((h, nights)) = hotel {
        legs.push(format!(r#""hotel":{{"hotel":"{h}","check_in":"2027-03-14","nights":{nights},"rooms":1,"price_cents":30000}}"#));
    }
    if let Some((l, days)) = car {
        legs.push(format!(r#""car":{{"location":"{l}","pick_up":"2027-03-14","days":{days},"cars":1,"price_cents":9000}}"#));
    }
    format!(r#"{{"trip_id":"{id}","customer_id":"{customer}",{}}}"#, legs.join(","))
}

/// How many events of each travel topic are about `trip_id`.
async fn census(d: &Deployment, trip_id: &str) -> BTreeMap<Topic, usize> {
    let mut counts = BTreeMap::new();
    for topic in Saga::Travel.topics() {
        let n = d.events_for(topic, trip_id).await.len();
        if n > 0 {
            counts.insert(topic, n);
        }
    }
    counts
}

/// Waits until the census satisfies `done`, then takes it again: one census reads the topics
/// one after another, so it may miss an early event yet see a later one; a census begun after
/// the later one was seen holds every event before it.
async fn wait_census(d: &Deployment, trip_id: &str, what: &str, done: impl Fn(&BTreeMap<Topic, usize>) -> bool) -> BTreeMap<Topic, usize> {
    wait_until(what, || async {
        let c = census(d, trip_id).await;
        if done(&c) { Ok(()) } else { Err(format!("{c:?}")) }
    }, || d.logs()).await;
    census(d, trip_id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_trip_a_sold_out_hotel_a_declined_charge_and_a_late_car() {
    let mut d = Deployment::travel(3, &[]).await;
    d.start_all().await;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (full, sold_out, declined, late) = (format!("{run}-full"), format!("{run}-soldout"), format!("{run}-declined"), format!("{run}-late"));

    // 1. A full trip: every leg reserved, charged, confirmed.
    d.kcat_publish(Topic::TripRequested, &full, &trip_json(&full, "alice", Some(("LH400", 2)), Some(("tiny-inn", 2)), Some(("BER", 3))));
    let c = wait_census(&d, &full, "the full trip confirmed", |c| c.contains_key(&Topic::TripConfirmed)).await;
    let expected: BTreeMap<Topic, usize> = [
        Topic::TripRequested,
        Topic::FlightReserved,
        Topic::HotelReserved,
        Topic::CarReserved,
        Topic::TripReserved,
        Topic::TripCharged,
        Topic::TripConfirmed,
    ]
    .into_iter()
    .map(|t| (t, 1))
    .collect();
    assert_eq!(c, expected);
    let charged = d.wait_for(Topic::TripCharged, &full).await;
    assert!(matches!(charged.envelope.event, Event::TripCharged(ref e) if e.amount_cents == 79_000 && e.customer_id == "alice"));

    // 2. The same nights at tiny-inn (one room, taken by the full trip): sold out. The flight
    // and car this trip reserved in parallel are released, each once.
    d.kcat_publish(Topic::TripRequested, &sold_out, &trip_json(&sold_out, "alice", Some(("BA981", 1)), Some(("tiny-inn", 1)), Some(("LHR", 1))));
    let c = wait_census(&d, &sold_out, "the sold-out trip cancelled and released", |c| {
        c.contains_key(&Topic::TripCancelled) && c.contains_key(&Topic::FlightReleased) && c.contains_key(&Topic::CarReleased)
    })
    .await;
    let cancelled = d.wait_for(Topic::TripCancelled, &sold_out).await;
    assert!(matches!(cancelled.envelope.event, Event::TripCancelled(ref e) if e.reason == TripCancelReason::LegUnavailable { leg: Leg::Hotel }));
    assert_eq!((c[&Topic::HotelUnavailable], c.get(&Topic::HotelReserved), c.get(&Topic::TripReserved)), (1, None, None));

    // 3. Bob's wallet (1000 cents) cannot pay: every leg reserved, the charge declined, every
    // leg released.
    d.kcat_publish(Topic::TripRequested, &declined, &trip_json(&declined, "bob", Some(("LH400", 1)), Some(("adlon", 1)), Some(("BER", 1))));
    let c = wait_census(&d, &declined, "the declined trip released", |c| {
        [Topic::FlightReleased, Topic::HotelReleased, Topic::CarReleased].iter().all(|t| c.contains_key(t))
    })
    .await;
    assert_eq!((c[&Topic::TripChargeDeclined], c[&Topic::TripCancelled], c.get(&Topic::TripCharged)), (1, 1, None));

    // 4. The car service is down while the hotel fails; it learns of the trip, and of its
    // cancellation, only afterwards: whatever it reserves late, it gives back.
    d.service("car-service").term().await;
    d.kcat_publish(Topic::TripRequested, &late, &trip_json(&late, "alice", None, Some(("tiny-inn", 1)), Some(("SYD", 2))));
    wait_census(&d, &late, "the late trip cancelled without the car", |c| c.contains_key(&Topic::TripCancelled)).await;
    assert!(!census(&d, &late).await.contains_key(&Topic::CarReserved), "the car service was down");
    d.service("car-service").start();
    d.wait_ready("car-service").await;
    // Either it reads the request first, reserves, and releases on reading the cancellation; or
    // it reads the cancellation first and never reserves. Its log says which, once both are read.
    let car_log = |d: &Deployment| d.services["car-service"].log_text();
    wait_until("the car service to read the late trip's request and cancellation", || async {
        let log = car_log(&d);
        let done = log.lines().any(|l| l.contains(late.as_str()) && (l.contains("COMPENSATION: car released") || l.contains("not reserving it")));
        if done { Ok(()) } else { Err("not yet".to_owned()) }
    }, || d.logs()).await;
    let c = census(&d, &late).await;
    assert_eq!(c.get(&Topic::CarReserved), c.get(&Topic::CarReleased), "a late reservation is released: {c:?}");
    assert!(c.get(&Topic::CarReserved).is_none_or(|n| *n == 1));

    // Wait until the trip service has heard every release, then read the stores.
    for id in [&sold_out, &declined, &late] {
        let id = id.clone();
        wait_until(&format!("{id}'s releases heard"), || async {
            let c = census(&d, &id).await;
            let released: usize = [Topic::FlightReleased, Topic::HotelReleased, Topic::CarReleased].iter().filter_map(|t| c.get(t)).sum();
            let reserved: usize = [Topic::FlightReserved, Topic::HotelReserved, Topic::CarReserved].iter().filter_map(|t| c.get(t)).sum();
            if released == reserved { Ok(()) } else { Err(format!("{c:?}")) }
        }, || d.logs()).await;
    }
    d.stop_all().await;

    let trips: BTreeMap<String, TripRecord> = d.table("trip-service", "trips");
    assert_eq!(trips[&full].status, TripStatus::Confirmed);
    for id in [&sold_out, &declined, &late] {
        assert_eq!(trips[id].status, TripStatus::Cancelled, "{id}");
    }
    // Conservation, from each leg's store: free + held = capacity on every day touched, and only
    // the confirmed trip holds anything.
    for (service, leg) in [("flight-service", Leg::Flight), ("hotel-service", Leg::Hotel), ("car-service", Leg::Car)] {
        let capacity: BTreeMap<String, u32> = d.table(service, "capacity");
        let free: BTreeMap<String, u32> = d.table(service, "free");
        let records: BTreeMap<String, LegRecord> = d.table(service, "trips");
        let mut held: BTreeMap<String, u32> = BTreeMap::new();
        for (trip, record) in &records {
            if let LegRecord::Reserved { units } = record {
                assert_eq!(trip, &full, "{leg:?}: only the confirmed trip holds units");
                for u in units {
                    *held.entry(u.key()).or_default() += u.count;
                }
            }
        }
        for (day, left) in &free {
            let resource = day.rsplit_once('/').unwrap().0;
            assert_eq!(left + held.get(day).copied().unwrap_or(0), capacity[resource], "{leg:?} {day}");
        }
    }
    let cars: BTreeMap<String, LegRecord> = d.table("car-service", "trips");
    assert!(matches!(cars[&late], LegRecord::Released { .. } | LegRecord::CancelledFirst), "{:?}", cars[&late]);
    let wallets: BTreeMap<String, u64> = d.table("billing-service", "wallets");
    assert_eq!((wallets["alice"], wallets["bob"]), (100_000 - 79_000, 1_000));
}
