//! The travel saga's payloads: one booking request fans out to flight, hotel and car services
//! at once; the trip is charged only once every requested leg is reserved (the pivot), and a
//! trip cancelled for any reason has every leg that reserved released, exactly once.
//!
//! ```text
//! TripRequested ──┬─▶ flight ─▶ FlightReserved | FlightUnavailable ─┐
//!                 ├─▶ hotel  ─▶ HotelReserved  | HotelUnavailable  ─┼─▶ trip ─▶ TripReserved ─▶ billing
//!                 └─▶ car    ─▶ CarReserved    | CarUnavailable    ─┘      ◀── TripCharged | TripChargeDeclined
//! trip ─▶ TripConfirmed | TripCancelled ─▶ each leg that reserved ─▶ FlightReleased, …
//! ```
//!
//! Each leg's three topics are its service's own; their payloads name no leg (the topic does).
//! The rules speak of any leg ([`LegReserved`], [`LegUnavailable`], [`LegReleased`]), which
//! convert to and from the per-leg events.
//!
//! Every payload carries `trip_id`, the saga's correlation id (and, once these travel as
//! records, the Kafka key). Dates are ISO 8601 calendar dates (`2027-03-14`), checked by
//! [`TripRequested::check`] before any rule sees them.

use serde::{Deserialize, Serialize};
use time::{Date, Month};

use crate::text::has_control;
use crate::Event;

/// Longest stay, rental or trip id a request may ask for; bounds the rows one request touches.
pub const MAX_DAYS: u32 = 30;
pub const MAX_ID_BYTES: usize = 128;

/// A trip's id, chosen by whoever requests it; the saga's correlation id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TripId(pub String);

impl TripId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TripId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for TripId {
    fn from(s: &str) -> Self {
        TripId(s.to_owned())
    }
}

/// The three kinds of reservation a trip may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leg {
    Flight,
    Hotel,
    Car,
}

impl Leg {
    pub const ALL: [Leg; 3] = [Leg::Flight, Leg::Hotel, Leg::Car];

    pub const fn as_str(self) -> &'static str {
        match self {
            Leg::Flight => "flight",
            Leg::Hotel => "hotel",
            Leg::Car => "car",
        }
    }

    /// Its service's three topics: reserved, unavailable, released.
    pub const fn topics(self) -> [crate::Topic; 3] {
        use crate::Topic;
        match self {
            Leg::Flight => [Topic::FlightReserved, Topic::FlightUnavailable, Topic::FlightReleased],
            Leg::Hotel => [Topic::HotelReserved, Topic::HotelUnavailable, Topic::HotelReleased],
            Leg::Car => [Topic::CarReserved, Topic::CarUnavailable, Topic::CarReleased],
        }
    }
}

/// Seats on one flight on one date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlightLeg {
    pub flight: String,
    pub date: String,
    pub seats: u32,
    pub price_cents: u64,
}

/// Rooms in one hotel for `nights` nights from `check_in`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotelLeg {
    pub hotel: String,
    pub check_in: String,
    pub nights: u32,
    pub rooms: u32,
    pub price_cents: u64,
}

/// Cars at one location for `days` days from `pick_up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarLeg {
    pub location: String,
    pub pick_up: String,
    pub days: u32,
    pub cars: u32,
    pub price_cents: u64,
}

/// A customer asks for any non-empty subset of a flight, a hotel and a car. Published by a
/// person (kcat) or a tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TripRequested {
    pub trip_id: TripId,
    pub customer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flight: Option<FlightLeg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotel: Option<HotelLeg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub car: Option<CarLeg>,
}

/// Why a request cannot be taken up at all (it is parked, never half-applied).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("a trip asks for at least one of flight, hotel and car")]
    NoLeg,
    #[error("{field} must be 1 to {MAX_ID_BYTES} bytes without control characters")]
    BadId { field: &'static str },
    #[error("{field} must be a calendar date, YYYY-MM-DD")]
    BadDate { field: &'static str },
    #[error("{field} must be from 1 to {max}")]
    OutOfRange { field: &'static str, max: u32 },
    #[error("the trip's total price does not fit in 64 bits of cents")]
    PriceOverflow,
}

impl TripRequested {
    /// The legs asked for, in [`Leg::ALL`] order.
    pub fn legs(&self) -> Vec<Leg> {
        let asked = [self.flight.is_some(), self.hotel.is_some(), self.car.is_some()];
        Leg::ALL.into_iter().zip(asked).filter_map(|(leg, a)| a.then_some(leg)).collect()
    }

    /// Σ of the legs' prices: what the trip costs, charged once every leg is reserved.
    pub fn total_cents(&self) -> Option<u64> {
        let prices = [self.flight.as_ref().map(|f| f.price_cents), self.hotel.as_ref().map(|h| h.price_cents), self.car.as_ref().map(|c| c.price_cents)];
        prices.into_iter().flatten().try_fold(0u64, u64::checked_add)
    }

    /// Everything a rule relies on: ids, dates, counts, a total that fits.
    pub fn check(&self) -> Result<(), BadRequest> {
        id("trip_id", &self.trip_id.0)?;
        id("customer_id", &self.customer_id)?;
        if self.legs().is_empty() {
            return Err(BadRequest::NoLeg);
        }
        if let Some(f) = &self.flight {
            id("flight.flight", &f.flight)?;
            date("flight.date", &f.date)?;
            count("flight.seats", f.seats, 9)?;
        }
        if let Some(h) = &self.hotel {
            id("hotel.hotel", &h.hotel)?;
            date("hotel.check_in", &h.check_in)?;
            count("hotel.nights", h.nights, MAX_DAYS)?;
            within_calendar("hotel.check_in", &h.check_in, h.nights)?;
            count("hotel.rooms", h.rooms, 9)?;
        }
        if let Some(c) = &self.car {
            id("car.location", &c.location)?;
            date("car.pick_up", &c.pick_up)?;
            count("car.days", c.days, MAX_DAYS)?;
            within_calendar("car.pick_up", &c.pick_up, c.days)?;
            count("car.cars", c.cars, 9)?;
        }
        self.total_cents().map(|_| ()).ok_or(BadRequest::PriceOverflow)
    }
}

fn id(field: &'static str, value: &str) -> Result<(), BadRequest> {
    let ok = !value.is_empty() && value.len() <= MAX_ID_BYTES && !has_control(value);
    ok.then_some(()).ok_or(BadRequest::BadId { field })
}

fn date(field: &'static str, value: &str) -> Result<(), BadRequest> {
    parse_date(value).map(|_| ()).ok_or(BadRequest::BadDate { field })
}

/// A run of days that stays inside the calendar (`time`'s, to year 9999).
fn within_calendar(field: &'static str, first: &str, days: u32) -> Result<(), BadRequest> {
    dates_from(first, days).map(|_| ()).ok_or(BadRequest::BadDate { field })
}

fn count(field: &'static str, value: u32, max: u32) -> Result<(), BadRequest> {
    (1..=max).contains(&value).then_some(()).ok_or(BadRequest::OutOfRange { field, max })
}

/// `YYYY-MM-DD` as a calendar date; `None` for anything else (`2027-02-30`, `27-3-1`).
pub fn parse_date(text: &str) -> Option<Date> {
    let mut parts = text.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit());
    // One spelling per day: the text is a day's key in the legs' inventories.
    if parts.next().is_some() || !digits(y, 4) || !digits(m, 2) || !digits(d, 2) {
        return None;
    }
    let month = Month::try_from(m.parse::<u8>().ok()?).ok()?;
    Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()
}

/// `n` consecutive dates from `first` (`YYYY-MM-DD`, as [`parse_date`] reads), as text:
/// the nights of a stay, the days of a rental. `None` if `first` is not a date or the run
/// leaves the calendar.
pub fn dates_from(first: &str, n: u32) -> Option<Vec<String>> {
    let mut day = parse_date(first)?;
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        if i > 0 {
            day = day.next_day()?;
        }
        out.push(format!("{:04}-{:02}-{:02}", day.year(), u8::from(day.month()), day.day()));
    }
    Some(out)
}

/// A leg's service reserved what the trip asked of it (`FlightReserved`, `HotelReserved`,
/// `CarReserved`: one topic per leg, each owned by its service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegReserved {
    pub trip_id: TripId,
    pub leg: Leg,
}

/// Why a leg could not be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnavailableReason {
    /// Fewer units free than asked on at least one day.
    SoldOut,
    /// No such flight, hotel or location in the service's inventory.
    UnknownResource,
}

/// A leg's service could not reserve it (`FlightUnavailable`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegUnavailable {
    pub trip_id: TripId,
    pub leg: Leg,
    pub reason: UnavailableReason,
}

/// Compensation: a leg's service gave back what it had reserved for a cancelled trip
/// (`FlightReleased`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegReleased {
    pub trip_id: TripId,
    pub leg: Leg,
}

/// Every leg the trip asked for is reserved: the trip service asks billing to charge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TripReserved {
    pub trip_id: TripId,
    pub customer_id: String,
    pub amount_cents: u64,
}

/// Billing charged the trip: the pivot; from here the trip is confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TripCharged {
    pub trip_id: TripId,
    pub customer_id: String,
    pub amount_cents: u64,
}

/// Billing declined the charge (`reason` as payment's: unknown customer, insufficient funds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TripChargeDeclined {
    pub trip_id: TripId,
    pub customer_id: String,
    pub amount_cents: u64,
    pub reason: crate::PaymentFailureReason,
}

/// The trip is booked: every leg reserved, the charge taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TripConfirmed {
    pub trip_id: TripId,
    pub customer_id: String,
    pub amount_cents: u64,
}

/// Why a trip ended cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TripCancelReason {
    /// A requested leg could not be reserved.
    LegUnavailable { leg: Leg },
    ChargeDeclined,
    /// The trip was not reserved in full before its deadline.
    Deadline,
    /// The customer asked, before the charge.
    CustomerRequest,
}

/// The trip service cancelled the trip; every leg that reserved releases on seeing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TripCancelled {
    pub trip_id: TripId,
    pub reason: TripCancelReason,
}

/// A customer asks to call the trip off. Honoured until the charge is asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TripCancellationRequested {
    pub trip_id: TripId,
}

/// The trip service refused a cancellation: the charge was already asked for, or the trip
/// was over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TripCancellationRefused {
    pub trip_id: TripId,
}

/// A trip's id alone: what a leg's `…Reserved` and `…Released` events say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TripLeg {
    pub trip_id: TripId,
}

/// A leg's `…Unavailable` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TripLegUnavailable {
    pub trip_id: TripId,
    pub reason: UnavailableReason,
}

macro_rules! leg_events {
    ($($payload:ident => $($name:ident)|*;)*) => {
        $($(
            #[doc = concat!("`", stringify!($name), "`: see [`", stringify!($payload), "`].")]
            pub type $name = $payload;
        )*)*
    };
}

leg_events! {
    TripLeg => FlightReserved | HotelReserved | CarReserved | FlightReleased | HotelReleased | CarReleased;
    TripLegUnavailable => FlightUnavailable | HotelUnavailable | CarUnavailable;
}

impl From<LegReserved> for Event {
    fn from(e: LegReserved) -> Self {
        let payload = TripLeg { trip_id: e.trip_id };
        match e.leg {
            Leg::Flight => Event::FlightReserved(payload),
            Leg::Hotel => Event::HotelReserved(payload),
            Leg::Car => Event::CarReserved(payload),
        }
    }
}

impl From<LegUnavailable> for Event {
    fn from(e: LegUnavailable) -> Self {
        let payload = TripLegUnavailable { trip_id: e.trip_id, reason: e.reason };
        match e.leg {
            Leg::Flight => Event::FlightUnavailable(payload),
            Leg::Hotel => Event::HotelUnavailable(payload),
            Leg::Car => Event::CarUnavailable(payload),
        }
    }
}

impl From<LegReleased> for Event {
    fn from(e: LegReleased) -> Self {
        let payload = TripLeg { trip_id: e.trip_id };
        match e.leg {
            Leg::Flight => Event::FlightReleased(payload),
            Leg::Hotel => Event::HotelReleased(payload),
            Leg::Car => Event::CarReleased(payload),
        }
    }
}

impl Event {
    /// A leg's reservation, whichever leg.
    pub fn leg_reserved(&self) -> Option<LegReserved> {
        let (leg, e) = match self {
            Event::FlightReserved(e) => (Leg::Flight, e),
            Event::HotelReserved(e) => (Leg::Hotel, e),
            Event::CarReserved(e) => (Leg::Car, e),
            _ => return None,
        };
        Some(LegReserved { trip_id: e.trip_id.clone(), leg })
    }

    /// A leg that could not be reserved, whichever leg.
    pub fn leg_unavailable(&self) -> Option<LegUnavailable> {
        let (leg, e) = match self {
            Event::FlightUnavailable(e) => (Leg::Flight, e),
            Event::HotelUnavailable(e) => (Leg::Hotel, e),
            Event::CarUnavailable(e) => (Leg::Car, e),
            _ => return None,
        };
        Some(LegUnavailable { trip_id: e.trip_id.clone(), leg, reason: e.reason })
    }

    /// A leg given back, whichever leg.
    pub fn leg_released(&self) -> Option<LegReleased> {
        let (leg, e) = match self {
            Event::FlightReleased(e) => (Leg::Flight, e),
            Event::HotelReleased(e) => (Leg::Hotel, e),
            Event::CarReleased(e) => (Leg::Car, e),
            _ => return None,
        };
        Some(LegReleased { trip_id: e.trip_id.clone(), leg })
    }
}

impl BadRequest {
    /// The field at fault, as decoding reports it.
    pub fn field(&self) -> &'static str {
        match self {
            BadRequest::NoLeg => "flight",
            BadRequest::BadId { field } | BadRequest::BadDate { field } | BadRequest::OutOfRange { field, .. } => field,
            BadRequest::PriceOverflow => "price_cents",
        }
    }

    /// Why, for people.
    pub fn reason(&self) -> &'static str {
        match self {
            BadRequest::NoLeg => "a trip asks for at least one of flight, hotel and car",
            BadRequest::BadId { .. } => "must be 1 to 128 (MAX_ID_BYTES) bytes without control characters",
            BadRequest::BadDate { .. } => "must be a calendar date, YYYY-MM-DD",
            BadRequest::OutOfRange { .. } => "is out of range (seats, rooms and cars 1 to 9; nights and days 1 to 30)",
            BadRequest::PriceOverflow => "the trip's total price overflows",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FULL: &str = r#"{"trip_id":"t-1","customer_id":"alice",
        "flight":{"flight":"LH400","date":"2027-03-14","seats":2,"price_cents":40000},
        "hotel":{"hotel":"adlon","check_in":"2027-03-14","nights":3,"rooms":1,"price_cents":60000},
        "car":{"location":"BER","pick_up":"2027-03-15","days":2,"cars":1,"price_cents":9000}}"#;

    #[test]
    fn a_full_request_reads_and_checks() {
        let t: TripRequested = serde_json::from_str(FULL).unwrap();
        assert_eq!(t.check(), Ok(()));
        assert_eq!(t.legs(), Leg::ALL.to_vec());
        assert_eq!(t.total_cents(), Some(109_000));
    }

    #[test]
    fn bad_requests_say_which_field() {
        let mut t: TripRequested = serde_json::from_str(FULL).unwrap();
        t.hotel.as_mut().unwrap().check_in = "2027-02-30".into();
        assert_eq!(t.check(), Err(BadRequest::BadDate { field: "hotel.check_in" }));
        t.hotel.as_mut().unwrap().check_in = "2027-02-28".into();
        t.car.as_mut().unwrap().days = 0;
        assert_eq!(t.check(), Err(BadRequest::OutOfRange { field: "car.days", max: MAX_DAYS }));
        let none = TripRequested { flight: None, hotel: None, car: None, ..t.clone() };
        assert_eq!(none.check(), Err(BadRequest::NoLeg));
        let mut rich = t;
        rich.car.as_mut().unwrap().days = 1;
        rich.flight.as_mut().unwrap().price_cents = u64::MAX;
        assert_eq!(rich.check(), Err(BadRequest::PriceOverflow));
        assert!(serde_json::from_str::<TripRequested>(&FULL.replace("\"seats\"", "\"seat\"")).is_err(), "unknown fields are refused");
        let mut late: TripRequested = serde_json::from_str(FULL).unwrap();
        late.hotel.as_mut().unwrap().check_in = "9999-12-31".into();
        assert_eq!(late.check(), Err(BadRequest::BadDate { field: "hotel.check_in" }), "a stay past the calendar's end");
    }

    #[test]
    fn dates_run_across_months_and_years() {
        assert_eq!(dates_from("2027-12-30", 3).unwrap(), ["2027-12-30", "2027-12-31", "2028-01-01"]);
        assert_eq!(dates_from("2028-02-28", 2).unwrap(), ["2028-02-28", "2028-02-29"]);
        for bad in ["2027-3-14", "2027-03-14-1", "27-03-14", "2027-13-01", "", "2027-03-1x", "2027-+3-14", "+027-03-14"] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }
}
