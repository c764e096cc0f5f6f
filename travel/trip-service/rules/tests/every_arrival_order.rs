//! The travel saga's rules together, with no runtime: each service's inputs are delivered in
//! any order, some twice, with the deadline and customers' cancellations at any point. Once
//! every message is delivered, every trip is confirmed or cancelled, a confirmed trip holds
//! each leg it asked for and was charged once, a cancelled one holds nothing and was never
//! charged, each reserved leg of a cancelled trip was released exactly once, and seats,
//! rooms, cars and money add up.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use billing_rules::{Billing, Charge};
use car_rules::Cars;
use flight_rules::Flights;
use hotel_rules::Hotels;
use proptest::prelude::*;
use reservations::{Decision as LegDecision, LegRecord, Reservations};
use shared_events::travel::{
    CarLeg, FlightLeg, HotelLeg, Leg, LegReleased, TripCancellationRequested, TripCancelled, TripRequested,
};
use trip_rules::{Decision, Input, TripStatus, Trips};

/// A message in flight, by the consumer it is for.
#[derive(Debug, Clone)]
enum Msg {
    Trip(Input),
    Leg(Leg, LegMsg),
    Billing(shared_events::travel::TripReserved),
}

#[derive(Debug, Clone)]
enum LegMsg {
    Requested(Box<TripRequested>),
    Cancelled(TripCancelled),
}

struct World {
    trips: Trips,
    flights: Flights,
    hotels: Hotels,
    cars: Cars,
    billing: Billing,
    queue: VecDeque<Msg>,
    releases: BTreeMap<(String, Leg), u32>,
    now_ms: i64,
}

impl World {
    fn new() -> Self {
        let mut w = World {
            trips: Trips::new(Some(Duration::from_millis(50))),
            flights: Flights::default(),
            hotels: Hotels::default(),
            cars: Cars::default(),
            billing: Billing::default(),
            queue: VecDeque::new(),
            releases: BTreeMap::new(),
            now_ms: 0,
        };
        w.flights.seed(flight_rules::Seed::default());
        w.hotels.seed(hotel_rules::Seed::default());
        w.cars.seed(car_rules::Seed::default());
        w.billing.seed(billing_rules::Seed::default());
        w
    }

    fn publish_request(&mut self, r: TripRequested) {
        for leg in Leg::ALL {
            self.queue.push_back(Msg::Leg(leg, LegMsg::Requested(Box::new(r.clone()))));
        }
        self.queue.push_back(Msg::Trip(Input::Requested(r)));
    }

    fn said_by_trip(&mut self, d: Decision) {
        match d {
            Decision::Reserved(r) => self.queue.push_back(Msg::Billing(r)),
            Decision::Cancelled(c) => {
                for leg in Leg::ALL {
                    self.queue.push_back(Msg::Leg(leg, LegMsg::Cancelled(c.clone())));
                }
            }
            Decision::Confirmed(_) | Decision::Refused(_) => {}
            Decision::Conflict(letter) => panic!("one request per trip here: {letter:?}"),
        }
    }

    fn said_by_leg(&mut self, d: LegDecision) {
        self.queue.push_back(Msg::Trip(match d {
            LegDecision::Reserved(e) => Input::LegReserved(e),
            LegDecision::Unavailable(e) => Input::LegUnavailable(e),
        }));
    }

    fn released(&mut self, r: LegReleased) {
        *self.releases.entry((r.trip_id.0.clone(), r.leg)).or_default() += 1;
        self.queue.push_back(Msg::Trip(Input::LegReleased(r)));
    }

    fn deliver(&mut self, msg: Msg) {
        self.now_ms += 1;
        match msg {
            Msg::Trip(input) => {
                if let Some(d) = self.trips.apply(&input, self.now_ms, self.now_ms, 0) {
                    self.said_by_trip(d);
                }
            }
            Msg::Leg(leg, LegMsg::Requested(r)) => {
                let d = match leg {
                    Leg::Flight => self.flights.on_trip_requested(&r),
                    Leg::Hotel => self.hotels.on_trip_requested(&r),
                    Leg::Car => self.cars.on_trip_requested(&r),
                };
                if let Some(d) = d {
                    self.said_by_leg(d);
                }
            }
            Msg::Leg(leg, LegMsg::Cancelled(c)) => {
                let r = match leg {
                    Leg::Flight => self.flights.on_trip_cancelled(&c),
                    Leg::Hotel => self.hotels.on_trip_cancelled(&c),
                    Leg::Car => self.cars.on_trip_cancelled(&c),
                };
                if let Some(r) = r {
                    self.released(r);
                }
            }
            Msg::Billing(r) => match self.billing.on_trip_reserved(&r) {
                Some(Charge::Charged(c)) => self.queue.push_back(Msg::Trip(Input::Charged(c))),
                Some(Charge::Declined(d)) => self.queue.push_back(Msg::Trip(Input::ChargeDeclined(d))),
                None => {}
            },
        }
    }

    fn leg(&self, leg: Leg) -> &Reservations {
        match leg {
            Leg::Flight => &self.flights.units,
            Leg::Hotel => &self.hotels.units,
            Leg::Car => &self.cars.units,
        }
    }
}

/// What the schedule does next: deliver the message at (this index mod the queue's length),
/// deliver it and leave a copy (a redelivery), fire the deadline timer, or have a customer
/// ask to cancel a trip.
#[derive(Debug, Clone)]
enum Step {
    Deliver(usize),
    Duplicate(usize),
    Timer,
    Cancel(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => any::<usize>().prop_map(Step::Deliver),
        1 => any::<usize>().prop_map(Step::Duplicate),
        1 => Just(Step::Timer),
        1 => any::<usize>().prop_map(Step::Cancel),
    ]
}

/// Trips that contend for small inventories: QF1 has 2 seats, tiny-inn 1 room, SYD 4 cars;
/// bob's wallet is small.
fn trip(i: usize) -> impl Strategy<Value = TripRequested> {
    let flight = prop_oneof![Just(None), (prop_oneof![Just("QF1"), Just("LH400")], 1u32..3).prop_map(|(f, seats)| Some(FlightLeg {
        flight: f.into(),
        date: "2027-03-14".into(),
        seats,
        price_cents: 300,
    }))];
    let hotel = prop_oneof![Just(None), (prop_oneof![Just("tiny-inn"), Just("adlon")], 1u32..4).prop_map(|(h, nights)| Some(HotelLeg {
        hotel: h.into(),
        check_in: "2027-03-13".into(),
        nights,
        rooms: 1,
        price_cents: 200,
    }))];
    let car = prop_oneof![Just(None), (prop_oneof![Just("SYD"), Just("XXX")], 1u32..3).prop_map(|(l, cars)| Some(CarLeg {
        location: l.into(),
        pick_up: "2027-03-14".into(),
        days: 2,
        cars,
        price_cents: 100,
    }))];
    (flight, hotel, car, prop_oneof![Just("alice"), Just("bob")]).prop_filter_map("a trip asks for a leg", move |(flight, hotel, car, who)| {
        let t = TripRequested { trip_id: format!("t-{i}").as_str().into(), customer_id: who.into(), flight, hotel, car };
        (t.check().is_ok()).then_some(t)
    })
}

fn trips() -> impl Strategy<Value = Vec<TripRequested>> {
    (1usize..6).prop_flat_map(|n| (0..n).map(trip).collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn every_trip_ends_whole_whatever_the_order(requests in trips(), steps in prop::collection::vec(step(), 0..200)) {
        let mut w = World::new();
        let wallets_before: u64 = billing_rules::Seed::default().wallets.values().sum();
        for r in &requests {
            w.publish_request(r.clone());
        }
        for s in steps {
            match s {
                Step::Deliver(i) | Step::Duplicate(i) if !w.queue.is_empty() => {
                    let i = i % w.queue.len();
                    let Some(msg) = (if matches!(s, Step::Duplicate(_)) { w.queue.get(i).cloned() } else { w.queue.remove(i) }) else { continue };
                    w.deliver(msg);
                }
                Step::Deliver(_) | Step::Duplicate(_) => {}
                Step::Timer => {
                    w.now_ms += 60;
                    for (c, _, _) in w.trips.on_deadline(w.now_ms) {
                        w.said_by_trip(Decision::Cancelled(c));
                    }
                }
                Step::Cancel(i) => {
                    let id = requests[i % requests.len()].trip_id.clone();
                    w.queue.push_back(Msg::Trip(Input::CancellationRequested(TripCancellationRequested { trip_id: id })));
                }
            }
        }
        // Then everything still in flight, in order; the deadline may still fire.
        while let Some(msg) = w.queue.pop_front() {
            w.deliver(msg);
        }
        for (c, _, _) in w.trips.on_deadline(i64::MAX) {
            w.said_by_trip(Decision::Cancelled(c));
        }
        while let Some(msg) = w.queue.pop_front() {
            w.deliver(msg);
        }

        let mut charged = 0;
        for r in &requests {
            let id = r.trip_id.as_str();
            let trip = w.trips.trips.get(id).unwrap();
            let held = |leg: Leg| matches!(w.leg(leg).trips.get(id), Some(LegRecord::Reserved { .. }));
            let billed = w.billing.trips.get(id);
            match trip.status {
                TripStatus::Confirmed => {
                    for leg in Leg::ALL {
                        prop_assert_eq!(held(leg), r.legs().contains(&leg), "{} {:?}: a confirmed trip holds exactly its legs", id, leg);
                    }
                    let charged_right = matches!(billed, Some(billing_rules::BillingRecord::Charged { amount_cents, .. }) if Some(amount_cents) == r.total_cents());
                    prop_assert!(charged_right, "{}: a confirmed trip is charged its total once", id);
                    charged += r.total_cents().unwrap();
                }
                TripStatus::Cancelled => {
                    for leg in Leg::ALL {
                        prop_assert!(!held(leg), "{} {:?}: a cancelled trip holds nothing", id, leg);
                        let reserved = matches!(w.leg(leg).trips.get(id), Some(LegRecord::Released { .. }));
                        prop_assert_eq!(w.releases.get(&(id.to_owned(), leg)).copied().unwrap_or(0), u32::from(reserved), "{} {:?}: released once if it reserved", id, leg);
                    }
                    prop_assert!(!matches!(billed, Some(billing_rules::BillingRecord::Charged { .. })), "{}: a cancelled trip is never charged", id);
                    prop_assert_eq!(trip.releases_awaited(), Vec::<Leg>::new());
                }
                other => prop_assert!(false, "{}: still {:?} once everything was delivered", id, other),
            }
        }
        for leg in Leg::ALL {
            prop_assert_eq!(w.leg(leg).unbalanced(), vec![], "{:?}: free + held = capacity", leg);
        }
        let mut wallets = 0;
        w.billing.wallets.for_each(|_, b| wallets += b);
        prop_assert_eq!(wallets + charged, wallets_before);
        prop_assert_eq!(w.billing.charged_cents(), charged);
    }
}
