//! Topic names. Each topic carries exactly one event type and is named after it.

use std::fmt;
use std::str::FromStr;

/// Every topic of the saga. `Topic::X.as_str()` is both the topic name and the event type `X`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
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
    FlightReserved,
    FlightUnavailable,
    HotelReserved,
    HotelUnavailable,
    CarReserved,
    CarUnavailable,
    TripReserved,
    TripCharged,
    TripChargeDeclined,
    TripConfirmed,
    TripCancelled,
    FlightReleased,
    HotelReleased,
    CarReleased,
    TripCancellationRequested,
    TripCancellationRefused,
    DeadLetter,
}

/// The sagas that share the runtime, each with its own topics; `DeadLetter` serves both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Saga {
    /// OrderCreated → PaymentCompleted → StockReserved → ShipmentScheduled → OrderCompleted.
    Order,
    /// TripRequested → flight, hotel and car in parallel → TripReserved → TripCharged →
    /// TripConfirmed.
    Travel,
}

impl Saga {
    pub const ALL: [Saga; 2] = [Saga::Order, Saga::Travel];

    /// Its topics in saga order, `DeadLetter` last.
    pub fn topics(self) -> Vec<Topic> {
        Topic::ALL.into_iter().filter(|t| *t == Topic::DeadLetter || t.saga() == Some(self)).collect()
    }

    /// Every topic of each saga that `consumes` or `emits` touches, `DeadLetter` last: what a
    /// service of those sagas creates and checks at start-up.
    pub fn topics_of(consumes: &[Topic], emits: &[Topic]) -> Vec<Topic> {
        let sagas: Vec<Saga> = consumes.iter().chain(emits).filter_map(|t| t.saga()).collect();
        Topic::ALL.into_iter().filter(|t| *t == Topic::DeadLetter || t.saga().is_some_and(|s| sagas.contains(&s))).collect()
    }

    /// What its correlation id is called in payloads and logs.
    pub const fn id_field(self) -> &'static str {
        match self {
            Saga::Order => "order_id",
            Saga::Travel => "trip_id",
        }
    }
}

impl Topic {
    /// All topics, each saga's in saga order; `DeadLetter` last.
    pub const ALL: [Topic; 32] = [
        Topic::OrderCreated,
        Topic::PaymentCompleted,
        Topic::PaymentFailed,
        Topic::StockReserved,
        Topic::StockFailed,
        Topic::ShipmentScheduled,
        Topic::ShippingFailed,
        Topic::OrderCompleted,
        Topic::OrderCancelled,
        Topic::PaymentRefunded,
        Topic::StockReleased,
        Topic::OrderCancellationRequested,
        Topic::OrderCancellationRefused,
        Topic::ShipmentCancelled,
        Topic::TripRequested,
        Topic::FlightReserved,
        Topic::FlightUnavailable,
        Topic::HotelReserved,
        Topic::HotelUnavailable,
        Topic::CarReserved,
        Topic::CarUnavailable,
        Topic::TripReserved,
        Topic::TripCharged,
        Topic::TripChargeDeclined,
        Topic::TripConfirmed,
        Topic::TripCancelled,
        Topic::FlightReleased,
        Topic::HotelReleased,
        Topic::CarReleased,
        Topic::TripCancellationRequested,
        Topic::TripCancellationRefused,
        Topic::DeadLetter,
    ];

    /// The order saga's topics and `DeadLetter`: what the order saga's services and tools read.
    pub const ORDER: [Topic; 15] = [
        Topic::OrderCreated,
        Topic::PaymentCompleted,
        Topic::PaymentFailed,
        Topic::StockReserved,
        Topic::StockFailed,
        Topic::ShipmentScheduled,
        Topic::ShippingFailed,
        Topic::OrderCompleted,
        Topic::OrderCancelled,
        Topic::PaymentRefunded,
        Topic::StockReleased,
        Topic::OrderCancellationRequested,
        Topic::OrderCancellationRefused,
        Topic::ShipmentCancelled,
        Topic::DeadLetter,
    ];

    /// The saga this topic belongs to; `None` for `DeadLetter`, which every service writes.
    pub const fn saga(self) -> Option<Saga> {
        match self {
            Topic::DeadLetter => None,
            Topic::OrderCreated
            | Topic::PaymentCompleted
            | Topic::PaymentFailed
            | Topic::StockReserved
            | Topic::StockFailed
            | Topic::ShipmentScheduled
            | Topic::ShippingFailed
            | Topic::OrderCompleted
            | Topic::OrderCancelled
            | Topic::PaymentRefunded
            | Topic::StockReleased
            | Topic::OrderCancellationRequested
            | Topic::OrderCancellationRefused
            | Topic::ShipmentCancelled => Some(Saga::Order),
            Topic::TripRequested
            | Topic::FlightReserved
            | Topic::FlightUnavailable
            | Topic::HotelReserved
            | Topic::HotelUnavailable
            | Topic::CarReserved
            | Topic::CarUnavailable
            | Topic::TripReserved
            | Topic::TripCharged
            | Topic::TripChargeDeclined
            | Topic::TripConfirmed
            | Topic::TripCancelled
            | Topic::FlightReleased
            | Topic::HotelReleased
            | Topic::CarReleased
            | Topic::TripCancellationRequested
            | Topic::TripCancellationRefused => Some(Saga::Travel),
        }
    }

    /// Whether customers (a storefront, a person with kcat) write this topic. ACLs can keep
    /// everyone but its owning service off every other topic, not off these, so what their
    /// headers claim (ids, causes, times) is not believed: see `envelope::decode_record`.
    pub const fn is_customer_writable(self) -> bool {
        matches!(self, Topic::OrderCreated | Topic::OrderCancellationRequested | Topic::TripRequested | Topic::TripCancellationRequested)
    }

    /// The topic's name, which is also the event type it carries.
    pub const fn as_str(self) -> &'static str {
        match self {
            Topic::OrderCreated => "OrderCreated",
            Topic::PaymentCompleted => "PaymentCompleted",
            Topic::PaymentFailed => "PaymentFailed",
            Topic::StockReserved => "StockReserved",
            Topic::StockFailed => "StockFailed",
            Topic::ShipmentScheduled => "ShipmentScheduled",
            Topic::ShippingFailed => "ShippingFailed",
            Topic::OrderCompleted => "OrderCompleted",
            Topic::OrderCancelled => "OrderCancelled",
            Topic::PaymentRefunded => "PaymentRefunded",
            Topic::StockReleased => "StockReleased",
            Topic::OrderCancellationRequested => "OrderCancellationRequested",
            Topic::OrderCancellationRefused => "OrderCancellationRefused",
            Topic::ShipmentCancelled => "ShipmentCancelled",
            Topic::TripRequested => "TripRequested",
            Topic::FlightReserved => "FlightReserved",
            Topic::FlightUnavailable => "FlightUnavailable",
            Topic::HotelReserved => "HotelReserved",
            Topic::HotelUnavailable => "HotelUnavailable",
            Topic::CarReserved => "CarReserved",
            Topic::CarUnavailable => "CarUnavailable",
            Topic::TripReserved => "TripReserved",
            Topic::TripCharged => "TripCharged",
            Topic::TripChargeDeclined => "TripChargeDeclined",
            Topic::TripConfirmed => "TripConfirmed",
            Topic::TripCancelled => "TripCancelled",
            Topic::FlightReleased => "FlightReleased",
            Topic::HotelReleased => "HotelReleased",
            Topic::CarReleased => "CarReleased",
            Topic::TripCancellationRequested => "TripCancellationRequested",
            Topic::TripCancellationRefused => "TripCancellationRefused",
            Topic::DeadLetter => "DeadLetter",
        }
    }

    /// Compensation events undo an earlier step; logs and tools mark them.
    pub const fn is_compensation(self) -> bool {
        matches!(
            self,
            Topic::PaymentRefunded
                | Topic::StockReleased
                | Topic::ShipmentCancelled
                | Topic::FlightReleased
                | Topic::HotelReleased
                | Topic::CarReleased
        )
    }

    /// Who publishes this event: a service, or `customer` (a person or a tool).
    pub const fn emitted_by(self) -> &'static str {
        match self {
            Topic::OrderCreated | Topic::OrderCancellationRequested | Topic::TripRequested | Topic::TripCancellationRequested => "customer",
            Topic::PaymentCompleted | Topic::PaymentFailed | Topic::PaymentRefunded => "payment",
            Topic::StockReserved | Topic::StockFailed | Topic::StockReleased => "inventory",
            Topic::ShipmentScheduled | Topic::ShippingFailed | Topic::ShipmentCancelled => "shipping",
            Topic::OrderCompleted | Topic::OrderCancelled | Topic::OrderCancellationRefused => "order",
            Topic::FlightReserved | Topic::FlightUnavailable | Topic::FlightReleased => "flight",
            Topic::HotelReserved | Topic::HotelUnavailable | Topic::HotelReleased => "hotel",
            Topic::CarReserved | Topic::CarUnavailable | Topic::CarReleased => "car",
            Topic::TripCharged | Topic::TripChargeDeclined => "billing",
            Topic::TripReserved | Topic::TripConfirmed | Topic::TripCancelled | Topic::TripCancellationRefused => "trip",
            Topic::DeadLetter => "any service",
        }
    }

    /// Terminal events end a saga.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Topic::OrderCompleted | Topic::OrderCancelled | Topic::TripConfirmed | Topic::TripCancelled)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not one of the saga's topics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a saga topic or event type")]
pub struct UnknownTopic(pub String);

impl FromStr for Topic {
    type Err = UnknownTopic;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Topic::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownTopic(s.to_owned()))
    }
}

/// A topic in JSON is its name (`"PaymentRefunded"`).
impl serde::Serialize for Topic {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Topic {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for t in Topic::ALL {
            assert_eq!(t.as_str().parse::<Topic>(), Ok(t));
            assert!(seen.insert(t.as_str()));
        }
        assert!("orderCreated".parse::<Topic>().is_err());
    }

    #[test]
    fn each_saga_lists_its_own_topics_and_dead_letter_serves_both() {
        assert_eq!(Saga::Order.topics(), Topic::ORDER.to_vec());
        let travel = Saga::Travel.topics();
        assert_eq!(Topic::ORDER.len() + travel.len() - 1, Topic::ALL.len(), "each topic in one saga, DeadLetter in both");
        assert!(travel.iter().all(|t| !Topic::ORDER.contains(t) || *t == Topic::DeadLetter));
        assert_eq!(travel.last(), Some(&Topic::DeadLetter));
    }
}
