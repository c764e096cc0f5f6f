//! Event payloads: what each step of the saga says, as snake_case JSON.
//!
//! Events carry what their consumers need to act (event-carried state transfer): payment
//! forwards the lines and the address so inventory and shipping never need `OrderCreated`.
//! Every payload carries `order_id`, which is also the Kafka record key.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Topic;

/// An order's id, chosen by whoever places the order; the saga's correlation id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(pub String);

impl OrderId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for OrderId {
    fn from(s: &str) -> Self {
        OrderId(s.to_owned())
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: u64,
}

/// Where the parcel goes. Only `country` (ISO 3166 alpha-2) is required.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Address {
    pub country: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
}

/// A quantity of one SKU, as reserved or released by inventory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StockLine {
    pub sku: String,
    pub quantity: u32,
}

/// A customer placed an order. Published by a person (kcat) or a tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: OrderId,
    pub customer_id: String,
    pub items: Vec<LineItem>,
    pub ship_to: Address,
}

impl OrderCreated {
    /// Σ quantity × unit price. Decoding rejects orders whose total overflows, so a decoded
    /// event always has one.
    pub fn total_cents(&self) -> Option<u64> {
        total_cents(&self.items)
    }
}

/// Σ quantity × unit price, or `None` on overflow.
pub fn total_cents(items: &[LineItem]) -> Option<u64> {
    items.iter().try_fold(0u64, |sum, line| {
        u64::from(line.quantity)
            .checked_mul(line.unit_price_cents)
            .and_then(|line_total| sum.checked_add(line_total))
    })
}

/// The customer's wallet was charged. Carries the lines and address onward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCompleted {
    pub order_id: OrderId,
    pub customer_id: String,
    pub amount_cents: u64,
    pub items: Vec<LineItem>,
    pub ship_to: Address,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentFailureReason {
    InsufficientFunds,
    UnknownCustomer,
}

/// The wallet could not be charged; nothing was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub order_id: OrderId,
    pub customer_id: String,
    pub amount_cents: u64,
    pub reason: PaymentFailureReason,
}

/// Every line was reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReserved {
    pub order_id: OrderId,
    pub items: Vec<StockLine>,
    pub ship_to: Address,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StockFailureReason {
    OutOfStock,
    UnknownSku,
}

/// No line was reserved, because of `sku`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockFailed {
    pub order_id: OrderId,
    pub reason: StockFailureReason,
    pub sku: String,
    pub requested: u32,
    pub available: u32,
}

/// The parcel is booked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentScheduled {
    pub order_id: OrderId,
    pub shipment_id: String,
    pub country: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShippingFailureReason {
    DestinationNotServed,
}

/// The address cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippingFailed {
    pub order_id: OrderId,
    pub country: String,
    pub reason: ShippingFailureReason,
}

/// Terminal: the order shipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCompleted {
    pub order_id: OrderId,
    pub shipment_id: String,
}

/// Why an order was cancelled; the step that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    PaymentFailed,
    StockFailed,
    ShippingFailed,
    /// No terminal state within the saga deadline.
    Timeout,
    /// The customer asked (`OrderCancellationRequested`) before the order shipped.
    CustomerRequest,
}

/// Terminal: the order failed. Whoever acted on it must undo what it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: OrderId,
    pub reason: CancelReason,
    pub detail: String,
}

/// Compensation: payment gave back exactly what it charged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub order_id: OrderId,
    pub customer_id: String,
    pub amount_cents: u64,
}

/// Compensation: inventory put back exactly what it reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReleased {
    pub order_id: OrderId,
    pub items: Vec<StockLine>,
}

/// A customer asks to cancel an order. Hand-typed: `{"order_id":"o-1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancellationRequested {
    pub order_id: OrderId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// Shipping is the pivot: once booked, an order is no longer cancelled.
    AlreadyShipped,
    AlreadyCancelled,
}

/// The cancellation request came too late.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancellationRefused {
    pub order_id: OrderId,
    pub reason: RefusalReason,
}

/// Compensation: a shipment booked for an order that was cancelled meanwhile is called off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentCancelled {
    pub order_id: OrderId,
    pub shipment_id: String,
}

/// A record a service could not process, parked with its origin so nothing is lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The order the record seems to be about, when that much could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<OrderId>,
    /// Or the trip (the travel saga).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trip_id: Option<TripId>,
    /// The service that could not process it.
    pub service: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    /// A stable, low-cardinality code (`invalid_json`, `invalid_field`, …).
    pub error_code: String,
    /// The reason, for people.
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The original value when it is UTF-8 …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// … or its bytes in hex when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_hex: Option<String>,
    /// The copy holds only the first 64 KiB; the original stays on its topic at its offset.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payload_truncated: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The last offset of the range this entry parks, when it is more than one record: a batch
    /// the client could not read at all (an unknown codec, a corrupt batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_last_offset: Option<i64>,
    /// The key copy is cut short (the original stays on its topic).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub key_truncated: bool,
    /// Some header copies are cut short or left out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub headers_truncated: bool,
}

impl DeadLetter {
    /// What a rule returns to have its input parked: a code and a reason. The runtime fills in
    /// the origin (service, topic, partition, offset) and a bounded copy of the record.
    pub fn rejected(order_id: &OrderId, error_code: &str, error: String) -> DeadLetter {
        DeadLetter { order_id: Some(order_id.clone()), ..DeadLetter::rejected_for(error_code, error) }
    }

    /// [`DeadLetter::rejected`], for a trip.
    pub fn rejected_trip(trip_id: &crate::travel::TripId, error_code: &str, error: String) -> DeadLetter {
        DeadLetter { trip_id: Some(trip_id.clone()), ..DeadLetter::rejected_for(error_code, error) }
    }

    fn rejected_for(error_code: &str, error: String) -> DeadLetter {
        DeadLetter {
            order_id: None,
            trip_id: None,
            service: String::new(),
            source_topic: String::new(),
            source_partition: -1,
            source_offset: -1,
            error_code: error_code.to_owned(),
            error,
            key: None,
            payload: None,
            payload_hex: None,
            payload_truncated: false,
            headers: BTreeMap::new(),
            source_last_offset: None,
            key_truncated: false,
            headers_truncated: false,
        }
    }
}

macro_rules! reason_codes {
    ($($ty:ident { $($variant:ident => $code:literal),* $(,)? })*) => {$(
        impl $ty {
            /// Every reason, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];

            /// The snake_case code, as on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $code,)*
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}

reason_codes! {
    PaymentFailureReason { InsufficientFunds => "insufficient_funds", UnknownCustomer => "unknown_customer" }
    StockFailureReason { OutOfStock => "out_of_stock", UnknownSku => "unknown_sku" }
    ShippingFailureReason { DestinationNotServed => "destination_not_served" }
    CancelReason {
        PaymentFailed => "payment_failed", StockFailed => "stock_failed", ShippingFailed => "shipping_failed",
        Timeout => "timeout", CustomerRequest => "customer_request",
    }
    RefusalReason { AlreadyShipped => "already_shipped", AlreadyCancelled => "already_cancelled" }
}

/// `widget×2, gadget×1`: stock lines for people.
pub fn describe_lines(lines: &[StockLine]) -> String {
    lines.iter().map(|l| format!("{}×{}", l.sku, l.quantity)).collect::<Vec<_>>().join(", ")
}

macro_rules! events {
    ($($name:ident),* $(,)?; $($shared:ident($payload:ty)),* $(,)?) => {
        /// Any saga event. Variant, topic and event type share one name; so does the payload
        /// type, except for the legs' events, whose payloads are shared
        /// ([`crate::travel::TripLeg`], [`crate::travel::TripLegUnavailable`]).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Event {
            $($name($name),)*
            $($shared($payload),)*
        }

        impl Event {
            /// The topic of each variant, in declaration order.
            pub const TOPICS: &'static [Topic] = &[$(Topic::$name,)* $(Topic::$shared,)*];

            /// The topic this event is published on (and its event type).
            pub fn topic(&self) -> Topic {
                match self {
                    $(Event::$name(_) => Topic::$name,)*
                    $(Event::$shared(_) => Topic::$shared,)*
                }
            }

            /// The payload as JSON.
            pub fn to_json(&self) -> Vec<u8> {
                // Serializing these plain structs (string keys, no maps with non-string keys)
                // cannot fail.
                let result = match self {
                    $(Event::$name(e) => serde_json::to_vec(e),)*
                    $(Event::$shared(e) => serde_json::to_vec(e),)*
                };
                result.unwrap_or_default()
            }

            /// Parses the payload of an event of type `topic`, naming the field that is wrong.
            pub(crate) fn parse(topic: Topic, json: &[u8]) -> Result<Event, crate::DecodeError> {
                Ok(match topic {
                    $(Topic::$name => Event::$name(crate::envelope::parse_json(json)?),)*
                    $(Topic::$shared => Event::$shared(crate::envelope::parse_json(json)?),)*
                })
            }
        }

        $(
            impl From<$name> for Event {
                fn from(e: $name) -> Self {
                    Event::$name(e)
                }
            }
        )*
    };
}

use crate::travel::{
    TripCancellationRefused, TripCancellationRequested, TripCancelled, TripChargeDeclined, TripCharged, TripConfirmed,
    TripId, TripLeg, TripLegUnavailable, TripRequested, TripReserved,
};

events!(
    OrderCreated,
    PaymentCompleted,
    PaymentFailed,
    StockReserved,
    StockFailed,
    ShipmentScheduled,
    ShippingFailed,
    OrderCompleted,
    OrderCancelled,
    PaymentRefunded,
    StockReleased,
    OrderCancellationRequested,
    OrderCancellationRefused,
    ShipmentCancelled,
    TripRequested,
    TripReserved,
    TripCharged,
    TripChargeDeclined,
    TripConfirmed,
    TripCancelled,
    TripCancellationRequested,
    TripCancellationRefused,
    DeadLetter;
    FlightReserved(TripLeg),
    FlightUnavailable(TripLegUnavailable),
    HotelReserved(TripLeg),
    HotelUnavailable(TripLegUnavailable),
    CarReserved(TripLeg),
    CarUnavailable(TripLegUnavailable),
    FlightReleased(TripLeg),
    HotelReleased(TripLeg),
    CarReleased(TripLeg),
);

impl Event {
    /// The order this event is about. `None` for the travel saga's events, and for a dead
    /// letter whose order is unknown.
    pub fn order_id(&self) -> Option<&OrderId> {
        Some(match self {
            Event::OrderCreated(e) => &e.order_id,
            Event::PaymentCompleted(e) => &e.order_id,
            Event::PaymentFailed(e) => &e.order_id,
            Event::StockReserved(e) => &e.order_id,
            Event::StockFailed(e) => &e.order_id,
            Event::ShipmentScheduled(e) => &e.order_id,
            Event::ShippingFailed(e) => &e.order_id,
            Event::OrderCompleted(e) => &e.order_id,
            Event::OrderCancelled(e) => &e.order_id,
            Event::PaymentRefunded(e) => &e.order_id,
            Event::StockReleased(e) => &e.order_id,
            Event::OrderCancellationRequested(e) => &e.order_id,
            Event::OrderCancellationRefused(e) => &e.order_id,
            Event::ShipmentCancelled(e) => &e.order_id,
            Event::DeadLetter(e) => return e.order_id.as_ref(),
            _ => return None,
        })
    }

    /// The trip this event is about. `None` for the order saga's events, and for a dead
    /// letter whose trip is unknown.
    pub fn trip_id(&self) -> Option<&TripId> {
        Some(match self {
            Event::TripRequested(e) => &e.trip_id,
            Event::TripReserved(e) => &e.trip_id,
            Event::TripCharged(e) => &e.trip_id,
            Event::TripChargeDeclined(e) => &e.trip_id,
            Event::TripConfirmed(e) => &e.trip_id,
            Event::TripCancelled(e) => &e.trip_id,
            Event::TripCancellationRequested(e) => &e.trip_id,
            Event::TripCancellationRefused(e) => &e.trip_id,
            Event::FlightReserved(e) | Event::HotelReserved(e) | Event::CarReserved(e) => &e.trip_id,
            Event::FlightReleased(e) | Event::HotelReleased(e) | Event::CarReleased(e) => &e.trip_id,
            Event::FlightUnavailable(e) | Event::HotelUnavailable(e) | Event::CarUnavailable(e) => &e.trip_id,
            Event::DeadLetter(e) => return e.trip_id.as_ref(),
            _ => return None,
        })
    }

    /// The saga instance this event is about, whichever saga: its order or trip id, which is
    /// also the record's key. `None` only for a dead letter about nothing readable.
    pub fn saga_id(&self) -> Option<&str> {
        self.order_id().map(OrderId::as_str).or_else(|| self.trip_id().map(TripId::as_str))
    }

    /// Checks what the types cannot: non-empty ids, positive quantities, a total that fits.
    /// Returns the path of the offending field and why.
    pub(crate) fn validate(&self) -> Result<(), (String, &'static str)> {
        // Ids are printed in logs as they are; a control character in one could start a forged
        // log line, and is never part of a real id.
        fn non_empty(field: &str, value: &str) -> Result<(), (String, &'static str)> {
            if value.trim().is_empty() {
                Err((field.to_owned(), "must not be empty"))
            } else {
                plain(field, value)
            }
        }
        fn plain(field: &str, value: &str) -> Result<(), (String, &'static str)> {
            if crate::text::has_control(value) {
                Err((field.to_owned(), "must not contain control characters"))
            } else {
                Ok(())
            }
        }
        fn lines(items: &[LineItem]) -> Result<(), (String, &'static str)> {
            if items.is_empty() {
                return Err(("items".into(), "must list at least one line"));
            }
            for (i, line) in items.iter().enumerate() {
                non_empty(&format!("items[{i}].sku"), &line.sku)?;
                if line.quantity == 0 {
                    return Err((format!("items[{i}].quantity"), "must be positive"));
                }
            }
            if total_cents(items).is_none() {
                return Err(("items".into(), "order total overflows"));
            }
            Ok(())
        }
        fn stock_lines(items: &[StockLine]) -> Result<(), (String, &'static str)> {
            for (i, line) in items.iter().enumerate() {
                non_empty(&format!("items[{i}].sku"), &line.sku)?;
                if line.quantity == 0 {
                    return Err((format!("items[{i}].quantity"), "must be positive"));
                }
            }
            Ok(())
        }
        if let Some(id) = self.order_id() {
            non_empty("order_id", id.as_str())?;
        }
        if let Some(id) = self.trip_id() {
            non_empty("trip_id", id.as_str())?;
            if id.as_str().len() > crate::travel::MAX_ID_BYTES {
                return Err(("trip_id".to_owned(), "must be at most 128 bytes"));
            }
        }
        match self {
            Event::OrderCreated(e) => {
                non_empty("customer_id", &e.customer_id)?;
                lines(&e.items)?;
                non_empty("ship_to.country", &e.ship_to.country)
            }
            Event::PaymentCompleted(e) => {
                plain("customer_id", &e.customer_id)?;
                lines(&e.items)?;
                non_empty("ship_to.country", &e.ship_to.country)
            }
            Event::PaymentFailed(e) => plain("customer_id", &e.customer_id),
            Event::PaymentRefunded(e) => plain("customer_id", &e.customer_id),
            Event::StockReserved(e) => stock_lines(&e.items),
            Event::StockReleased(e) => stock_lines(&e.items),
            Event::StockFailed(e) => plain("sku", &e.sku),
            Event::ShipmentScheduled(e) => {
                plain("shipment_id", &e.shipment_id)?;
                plain("country", &e.country)
            }
            Event::ShippingFailed(e) => plain("country", &e.country),
            Event::OrderCompleted(e) => plain("shipment_id", &e.shipment_id),
            Event::ShipmentCancelled(e) => plain("shipment_id", &e.shipment_id),
            Event::OrderCancelled(e) => plain("detail", &e.detail),
            Event::TripRequested(e) => e.check().map_err(|bad| (bad.field().to_owned(), bad.reason())),
            Event::TripReserved(e) => plain("customer_id", &e.customer_id),
            Event::TripCharged(e) => plain("customer_id", &e.customer_id),
            Event::TripChargeDeclined(e) => plain("customer_id", &e.customer_id),
            Event::TripConfirmed(e) => plain("customer_id", &e.customer_id),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn total_is_sum_of_lines_and_detects_overflow() {
        let line = |q, p| LineItem { sku: "w".into(), quantity: q, unit_price_cents: p };
        assert_eq!(total_cents(&[line(2, 1250), line(1, 5)]), Some(2505));
        assert_eq!(total_cents(&[line(u32::MAX, u64::MAX)]), None);
        assert_eq!(total_cents(&[line(1, u64::MAX), line(1, 1)]), None);
    }

    #[test]
    fn reason_codes_match_the_wire() {
        for r in [CancelReason::PaymentFailed, CancelReason::StockFailed, CancelReason::ShippingFailed] {
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
        assert_eq!(serde_json::to_string(&StockFailureReason::UnknownSku).unwrap(), "\"unknown_sku\"");
        assert_eq!(serde_json::to_string(&PaymentFailureReason::InsufficientFunds).unwrap(), "\"insufficient_funds\"");
    }

    #[test]
    fn every_topic_is_listed_and_has_one_variant() {
        // The compiler holds the enums together (`Event::parse` matches every `Topic`,
        // `Event::topic` every variant); `Topic::ALL` is a hand-kept list, which this holds to
        // them: every topic, once.
        let mut topics = Event::TOPICS.to_vec();
        topics.sort();
        let mut all = Topic::ALL.to_vec();
        all.sort();
        assert_eq!(topics, all);
    }
}
