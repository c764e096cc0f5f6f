//! The travel saga end to end, on a real broker with its five real binaries: the README's
//! scenarios (a full trip, a sold-out hotel, a declined charge, a car reserved only after the
//! hotel had failed), typed with kcat; then seats, rooms, cars and money from the stores.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

mod support;

use std::collections::BTreeMap;

use reservations::LegRecord;
use shared_events::travel::{Leg, TripCancelReason};
use shared_events::{Event, Saga, Topic};
use support::{wait_until, Chaos, Deployment};
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

/// From each leg's stopped store: free + held = capacity on every day a trip touched, and only
/// the trips `may_hold` approves hold units.
fn assert_units_conserved(d: &Deployment, may_hold: impl Fn(&str) -> bool) {
    for (service, leg) in [("flight-service", Leg::Flight), ("hotel-service", Leg::Hotel), ("car-service", Leg::Car)] {
        let capacity: BTreeMap<String, u32> = d.table(service, "capacity");
        let free: BTreeMap<String, u32> = d.table(service, "free");
        let records: BTreeMap<String, LegRecord> = d.table(service, "trips");
        let mut held: BTreeMap<String, u32> = BTreeMap::new();
        for (trip, record) in &records {
            if let LegRecord::Reserved { units } = record {
                assert!(may_hold(trip), "{leg:?}: {trip} holds units but is not confirmed");
                for u in units {
                    *held.entry(u.key()).or_default() += u.count;
                }
            }
        }
        for (day, left) in &free {
            let resource = day.rsplit_once('/').unwrap().0;
            assert_eq!(left + held.get(day).copied().unwrap_or(0), capacity[resource], "{leg:?} {day}: free + held = capacity");
        }
    }
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

    // The full trip's id again, with another request (the car alone), and a record that is not
    // JSON: the one is parked by trip-service as a conflict, while every service ignores it as
    // a trip it has decided; the other is parked by each service that reads TripRequested.
    // Neither reserves anything.
    d.kcat_publish(Topic::TripRequested, &full, &trip_json(&full, "alice", None, None, Some(("BER", 1))));
    let poison = format!("{run}-poison");
    d.kcat_publish(Topic::TripRequested, &poison, "{\"trip_id\": oops");
    let parked = wait_until("the conflict and the poison parked", || async {
        let letters = d.dead_letters().await;
        let conflicts: Vec<_> = letters.iter().filter(|l| l.trip_id.as_ref().map(|t| t.as_str()) == Some(full.as_str()) && l.error_code == "trip_id_conflict").collect();
        let mut poisoned: Vec<&str> = letters.iter().filter(|l| l.key.as_deref() == Some(poison.as_str())).map(|l| l.service.as_str()).collect();
        poisoned.sort_unstable();
        if conflicts.len() == 1 && poisoned.len() == 4 { Ok((conflicts[0].service.clone(), poisoned.join(","))) } else { Err(format!("{conflicts:?} {poisoned:?}")) }
    }, || d.logs()).await;
    assert_eq!(parked, ("trip-service".to_owned(), "car-service,flight-service,hotel-service,trip-service".to_owned()));

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
    // The log line comes before the commit and publish: wait for the topics to agree.
    let c = wait_census(&d, &late, "a late reservation to be released", |c| c.get(&Topic::CarReserved) == c.get(&Topic::CarReleased)).await;
    assert!(c.get(&Topic::CarReserved).is_none_or(|n| *n == 1), "{c:?}");

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

    let mut after = expected.clone();
    after.insert(Topic::TripRequested, 2);
    after.insert(Topic::DeadLetter, 1);
    assert_eq!(census(&d, &full).await, after, "the conflicting request reserved, charged and released nothing");
    let trips: BTreeMap<String, TripRecord> = d.table("trip-service", "trips");
    assert_eq!(trips[&full].status, TripStatus::Confirmed);
    for id in [&sold_out, &declined, &late] {
        assert_eq!(trips[id].status, TripStatus::Cancelled, "{id}");
    }
    // Conservation, from each leg's store: free + held = capacity on every day touched, and only
    // the confirmed trip holds anything.
    assert_units_conserved(&d, |trip| trip == full);
    // The operator's tools read trips too: the late trip's story, and a clean audit.
    let (code, trace, err) = d.saga(&["trace", &late]);
    assert_eq!(code, 0, "{err}");
    assert!(trace.contains(&format!("trip {late}")) && trace.contains("HotelUnavailable") && trace.contains("TripCancelled"), "{trace}");
    assert!(trace.contains("state: cancelled (LegUnavailable { leg: Hotel })"), "{trace}");
    let (code, audit, _) = d.saga(&["audit", "--grace", "0s"]);
    assert_eq!(code, 0, "{audit}");
    assert!(audit.contains("0 violation"), "{audit}");
    let cars: BTreeMap<String, LegRecord> = d.table("car-service", "trips");
    assert!(matches!(cars[&late], LegRecord::Released { .. } | LegRecord::CancelledFirst), "{:?}", cars[&late]);
    let wallets: BTreeMap<String, u64> = d.table("billing-service", "wallets");
    assert_eq!((wallets["alice"], wallets["bob"]), (100_000 - 79_000, 1_000));
}

/// A request that contends for the storm's small inventories (QF1, tiny-inn, SYD, on two
/// dates), from alice or from bob, who can pay for little.
fn contended_trip(id: &str, chaos: &mut Chaos) -> String {
    let date = ["2027-05-01", "2027-05-02"][chaos.below(2) as usize];
    let who = if chaos.below(5) == 0 { "bob" } else { "alice" };
    let mut legs = Vec::new();
    while legs.is_empty() {
        if chaos.below(2) == 0 {
            legs.push(format!(r#""flight":{{"flight":"QF1","date":"{date}","seats":{},"price_cents":300}}"#, 1 + chaos.below(2)));
        }
        if chaos.below(2) == 0 {
            legs.push(format!(r#""hotel":{{"hotel":"tiny-inn","check_in":"{date}","nights":{},"rooms":1,"price_cents":200}}"#, 1 + chaos.below(2)));
        }
        if chaos.below(2) == 0 {
            legs.push(format!(r#""car":{{"location":"SYD","pick_up":"{date}","days":2,"cars":{},"price_cents":100}}"#, 1 + chaos.below(3)));
        }
    }
    format!(r#"{{"trip_id":"{id}","customer_id":"{who}",{}}}"#, legs.join(","))
}

/// Distinct event ids per topic for each of the run's trips.
async fn distinct(d: &Deployment, run: &str) -> BTreeMap<String, BTreeMap<Topic, usize>> {
    let mut out: BTreeMap<String, BTreeMap<Topic, std::collections::BTreeSet<shared_events::EventId>>> = BTreeMap::new();
    for topic in Saga::Travel.topics() {
        if topic == Topic::DeadLetter {
            continue;
        }
        for seen in d.read(topic).await.into_iter().filter_map(Result::ok) {
            if let Some(id) = seen.envelope.event.saga_id().filter(|id| id.starts_with(run)) {
                out.entry(id.to_owned()).or_default().entry(topic).or_default().insert(seen.envelope.meta.event_id);
            }
        }
    }
    out.into_iter().map(|(id, topics)| (id, topics.into_iter().map(|(t, ids)| (t, ids.len())).collect())).collect()
}

/// Whether a trip's events are whole: one end, each leg reserved at most once, a cancelled
/// trip's reserved legs released once each, a confirmed one charged once and released never.
fn whole(events: &BTreeMap<Topic, usize>) -> Result<(), String> {
    let n = |t: Topic| events.get(&t).copied().unwrap_or(0);
    let (confirmed, cancelled) = (n(Topic::TripConfirmed), n(Topic::TripCancelled));
    if confirmed + cancelled != 1 {
        return Err(format!("not ended once: {events:?}"));
    }
    for leg in Leg::ALL {
        let [reserved, _, released] = leg.topics();
        let want = if cancelled == 1 { n(reserved) } else { 0 };
        if n(reserved) > 1 || n(released) != want {
            return Err(format!("{leg:?} reserved {} released {}: {events:?}", n(reserved), n(released)));
        }
    }
    if n(Topic::TripCharged) != confirmed {
        return Err(format!("charged {} for confirmed {confirmed}: {events:?}", n(Topic::TripCharged)));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_nine_storm_with_duplicates_loses_no_seat_room_car_or_cent() {
    let n_trips: usize = std::env::var("TRAVEL_SOAK_TRIPS").ok().and_then(|v| v.parse().ok()).unwrap_or(120);
    let n_kills: usize = std::env::var("TRAVEL_SOAK_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let mut chaos = Chaos::from_env();
    let mut d = Deployment::travel(3, &[]).await;
    // Inventories the run's trips contend for, about two thirds of what they ask.
    for (service, seed) in [
        ("flight-service", r#"{"flights": {"QF1": 30}}"#),
        ("hotel-service", r#"{"hotels": {"tiny-inn": 20}}"#),
        ("car-service", r#"{"locations": {"SYD": 40}}"#),
    ] {
        let file = d.root.path().join(format!("{service}.seed.json"));
        std::fs::write(&file, seed).unwrap();
        d.service(service).args.extend(["--seed".to_owned(), file.display().to_string()]);
    }
    // Besides the kills, two services abort right after every few durable commits, before
    // publishing: the window between a local commit and its outbox's publish.
    for (name, every) in [("trip-service", "7"), ("hotel-service", "5")] {
        d.service(name).args.extend(["--fault-crash-after-commit".to_owned(), every.to_owned()]);
    }
    d.start_all().await;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let mut kills = 0;
    let mut crashes = 0;
    let supervise = |d: &mut Deployment, crashes: &mut usize| {
        for name in support::TRAVEL_SERVICES {
            let svc = d.service(name);
            if let Some(status) = svc.reap() {
                use std::os::unix::process::ExitStatusExt;
                let injected = status.signal() == Some(6) && support::tail(&svc.log, 3).contains("fault injection: aborting");
                assert!(injected, "{name} died on its own with {status}\n{}", support::tail(&svc.log, 30));
                *crashes += 1;
                svc.start();
            }
        }
    };
    let mut next = 0;
    while next < n_trips || kills < n_kills {
        for _ in 0..3 {
            if next < n_trips {
                let id = format!("{run}-{next}");
                let json = contended_trip(&id, &mut chaos);
                let partition = shared_events::partitioner::partition_for_key(id.as_bytes(), 3);
                let copies = if chaos.below(6) == 0 { 2 } else { 1 };
                for _ in 0..copies {
                    d.produce(Topic::TripRequested, partition, Some(id.clone().into_bytes()), json.clone().into_bytes(), BTreeMap::new()).await;
                }
                if chaos.below(8) == 0 {
                    let cancel = format!(r#"{{"trip_id":"{id}"}}"#);
                    d.produce(Topic::TripCancellationRequested, partition, Some(id.clone().into_bytes()), cancel.into_bytes(), BTreeMap::new()).await;
                }
                next += 1;
            }
        }
        supervise(&mut d, &mut crashes);
        if kills < n_kills && chaos.below(3) == 0 {
            let name = support::TRAVEL_SERVICES[chaos.below(5) as usize];
            let svc = d.service(name);
            if svc.is_running() {
                svc.kill9();
                kills += 1;
                svc.start();
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20 + chaos.below(120))).await;
    }

    // Until every trip is whole on the topics.
    let deadline = std::time::Instant::now() + support::TEST_TIMEOUT * 2;
    loop {
        supervise(&mut d, &mut crashes);
        let events = distinct(&d, run).await;
        let broken: Vec<String> = (0..n_trips)
            .map(|i| format!("{run}-{i}"))
            .filter_map(|id| whole(events.get(&id).unwrap_or(&BTreeMap::new())).err().map(|e| format!("{id}: {e}")))
            .collect();
        if broken.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "trips not whole: {}\n{}", broken[..broken.len().min(5)].join("\n"), d.logs());
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let events = distinct(&d, run).await;
    d.stop_all().await;

    // The stores agree with the topics, and everything adds up.
    let trips: BTreeMap<String, TripRecord> = d.table("trip-service", "trips");
    let mut confirmed_cents = 0;
    for i in 0..n_trips {
        let id = format!("{run}-{i}");
        let ended = if events[&id].contains_key(&Topic::TripConfirmed) { TripStatus::Confirmed } else { TripStatus::Cancelled };
        assert_eq!(trips[&id].status, ended, "{id}");
        assert_eq!(trips[&id].releases_awaited(), Vec::<Leg>::new(), "{id}");
        if ended == TripStatus::Confirmed {
            confirmed_cents += trips[&id].request.as_ref().unwrap().amount_cents;
        }
    }
    assert_units_conserved(&d, |trip| trips[trip].status == TripStatus::Confirmed);
    let wallets: BTreeMap<String, u64> = d.table("billing-service", "wallets");
    let seeded: u64 = billing_rules::Seed::default().wallets.values().sum();
    assert_eq!(wallets.values().sum::<u64>() + confirmed_cents, seeded, "money adds up");
    let confirmed = events.values().filter(|e| e.contains_key(&Topic::TripConfirmed)).count();
    let restarts: u32 = d.services.values().map(|s| s.starts - 1).sum();
    eprintln!("travel storm: {n_trips} trips ({confirmed} confirmed), {kills} kill -9, {crashes} injected crashes between commit and publish, {restarts} restarts");
    assert!(crashes > 0, "no crash landed between commit and publish");
    assert!(confirmed > 0 && confirmed < n_trips, "both outcomes: {confirmed} of {n_trips} confirmed");
}
