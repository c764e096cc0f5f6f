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
    DeadLetter,
}

impl Topic {
    /// All topics, in saga order; `DeadLetter` last.
    pub const ALL: [Topic; 15] = [
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

    /// Whether customers (a storefront, a person with kcat) write this topic. ACLs can keep
    /// everyone but its owning service off every other topic, not off these, so what their
    /// headers claim (ids, causes, times) is not believed: see `envelope::decode_record`.
    pub const fn is_customer_writable(self) -> bool {
        matches!(self, Topic::OrderCreated | Topic::OrderCancellationRequested)
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
            Topic::DeadLetter => "DeadLetter",
        }
    }

    /// Compensation events undo an earlier step; logs and tools mark them.
    pub const fn is_compensation(self) -> bool {
        matches!(self, Topic::PaymentRefunded | Topic::StockReleased | Topic::ShipmentCancelled)
    }

    /// Who publishes this event: a service, or `customer` (a person or a tool).
    pub const fn emitted_by(self) -> &'static str {
        match self {
            Topic::OrderCreated | Topic::OrderCancellationRequested => "customer",
            Topic::PaymentCompleted | Topic::PaymentFailed | Topic::PaymentRefunded => "payment",
            Topic::StockReserved | Topic::StockFailed | Topic::StockReleased => "inventory",
            Topic::ShipmentScheduled | Topic::ShippingFailed | Topic::ShipmentCancelled => "shipping",
            Topic::OrderCompleted | Topic::OrderCancelled | Topic::OrderCancellationRefused => "order",
            Topic::DeadLetter => "any service",
        }
    }

    /// Terminal events end a saga.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Topic::OrderCompleted | Topic::OrderCancelled)
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
}
