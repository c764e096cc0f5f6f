//! How an event travels: metadata in Kafka headers, payload as JSON, order id as key.
//!
//! A hand-typed record (kcat, no headers) is a complete event: every header has a default,
//! and the event id is derived from the event type and order id, so publishing the same
//! order twice by hand yields the same id and is deduplicated downstream.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Event, Topic};

/// The largest event value accepted, in bytes. Events carry their lines onward, so an input
/// near Kafka's 1 MiB record limit could produce an output the broker refuses forever; such
/// inputs are refused here instead (and parked on DeadLetter).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// How far before its record's timestamp a customer-written event may say it happened (a
/// tool's clock behind the broker's); earlier, or later than the record, is clamped.
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// The newest schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Header keys. Header values are UTF-8 text.
pub mod headers {
    pub const EVENT_ID: &str = "event_id";
    pub const EVENT_TYPE: &str = "event_type";
    pub const SCHEMA_VERSION: &str = "schema_version";
    pub const CAUSATION_ID: &str = "causation_id";
    pub const OCCURRED_AT_MS: &str = "occurred_at_ms";
    pub const SAGA_STARTED_AT_MS: &str = "saga_started_at_ms";
}

/// Namespace for the saga's derived (UUID v5) event ids.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a58_9d0e_4b7a_a3c4_52e1_d9b0_7f16);

/// A unique event id. Ids are derived, never random, so a replayed step yields the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub Uuid);

impl EventId {
    /// The id of the first event of `event_type` about `order_id`, for events that arrive
    /// without an `event_id` header. Each event type happens at most once per order.
    pub fn for_order(event_type: Topic, order_id: &str) -> EventId {
        EventId(Uuid::new_v5(&ID_NAMESPACE, format!("{event_type}/{order_id}").as_bytes()))
    }

    /// The id of an event that enters the saga from outside: [`EventId::for_order`], except
    /// for `OrderCreated`, whose id also covers its content (as JSON, so spacing and field
    /// order do not count). The same order typed twice is one event; an order id reused with
    /// other lines or another customer is another event, which the order service parks as a
    /// conflict instead of dropping it unseen as a duplicate.
    pub fn for_event(event: &Event) -> EventId {
        let order_id = event.saga_id().unwrap_or_default();
        match event {
            // A trip's request, likewise: a trip id reused for other legs is another event.
            Event::OrderCreated(_) | Event::TripRequested(_) => {
                let mut name = format!("{}/{order_id}/", event.topic()).into_bytes();
                name.extend(event.to_json());
                EventId(Uuid::new_v5(&ID_NAMESPACE, &name))
            }
            _ => EventId::for_order(event.topic(), order_id),
        }
    }

    /// The id of the `event_type` event caused by `cause`.
    pub fn caused_by(cause: EventId, event_type: Topic) -> EventId {
        EventId(Uuid::new_v5(&cause.0, event_type.as_str().as_bytes()))
    }

    /// The id of the dead letter `service` wrote for the record at `topic/partition/offset`.
    pub fn dead_letter(service: &str, topic: &str, partition: i32, offset: i64) -> EventId {
        let name = format!("DeadLetter/{service}/{topic}/{partition}/{offset}");
        EventId(Uuid::new_v5(&ID_NAMESPACE, name.as_bytes()))
    }
}

impl EventId {
    /// An id derived from this one and `name`: the same inputs always give the same id.
    pub fn derive(self, name: &str) -> EventId {
        EventId(Uuid::new_v5(&self.0, name.as_bytes()))
    }

    /// What a consumer remembers this event by, read on `topic`: an id is only ever a
    /// duplicate of one on the same topic, so a record on one topic cannot shadow an event of
    /// another by claiming its id.
    pub fn applied_on(self, topic: Topic) -> EventId {
        self.derive(topic.as_str())
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What travels in the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub event_id: EventId,
    pub event_type: Topic,
    pub schema_version: u32,
    /// The event that caused this one; `None` for an order placed from outside.
    pub causation_id: Option<EventId>,
    /// When the event was emitted (ms since the Unix epoch).
    pub occurred_at_ms: i64,
    /// When the saga's `OrderCreated` was emitted, carried along for "time since order".
    pub saga_started_at_ms: i64,
}

/// An event with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub meta: Metadata,
    pub event: Event,
}

/// A record ready for Kafka: key, JSON value and text headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRecord {
    pub key: String,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

impl Envelope {
    /// An event that starts a saga (or enters it from outside), e.g. a tool placing an order.
    pub fn root(event: Event, now_ms: i64) -> Envelope {
        let event_type = event.topic();
        Envelope {
            meta: Metadata {
                event_id: EventId::for_event(&event),
                event_type,
                schema_version: SCHEMA_VERSION,
                causation_id: None,
                occurred_at_ms: now_ms,
                saga_started_at_ms: now_ms,
            },
            event,
        }
    }

    /// The event a service emits in reaction to `cause`. Its id is derived from the cause's,
    /// so redoing the same step produces the same id.
    pub fn caused_by(cause: &Metadata, event: Event, now_ms: i64) -> Envelope {
        let event_type = event.topic();
        Envelope {
            meta: Metadata {
                event_id: EventId::caused_by(cause.event_id, event_type),
                event_type,
                schema_version: SCHEMA_VERSION,
                causation_id: Some(cause.event_id),
                occurred_at_ms: now_ms,
                saga_started_at_ms: cause.saga_started_at_ms,
            },
            event,
        }
    }

    /// An event a service emits on its own as time passes (a deadline), not in reaction to an
    /// input. Its id derives from its type and order, so re-emitting it after a crash yields
    /// the same id.
    pub fn on_timer(event: Event, saga_started_at_ms: i64, now_ms: i64) -> Envelope {
        let mut envelope = Envelope::root(event, now_ms);
        envelope.meta.saga_started_at_ms = saga_started_at_ms;
        envelope
    }

    /// Key, value and headers for Kafka. The key is the order id.
    pub fn encode(&self) -> EncodedRecord {
        let mut headers = BTreeMap::new();
        headers.insert(headers::EVENT_ID.to_owned(), self.meta.event_id.to_string());
        headers.insert(headers::EVENT_TYPE.to_owned(), self.meta.event_type.as_str().to_owned());
        headers.insert(headers::SCHEMA_VERSION.to_owned(), self.meta.schema_version.to_string());
        if let Some(cause) = self.meta.causation_id {
            headers.insert(headers::CAUSATION_ID.to_owned(), cause.to_string());
        }
        headers.insert(headers::OCCURRED_AT_MS.to_owned(), self.meta.occurred_at_ms.to_string());
        headers.insert(
            headers::SAGA_STARTED_AT_MS.to_owned(),
            self.meta.saga_started_at_ms.to_string(),
        );
        EncodedRecord {
            key: self.event.saga_id().unwrap_or_default().to_owned(),
            value: self.event.to_json(),
            headers,
        }
    }
}

/// A Kafka record as fetched, before decoding.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// The saga topic it was read from.
    pub topic: Topic,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a BTreeMap<String, Vec<u8>>,
    /// The broker's record timestamp, used when the headers carry none.
    pub timestamp_ms: i64,
}

/// Why a record is not a valid event. Each variant says what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("the record has no value")]
    MissingValue,
    #[error("the value has {0} bytes; events may have at most {MAX_EVENT_BYTES}")]
    TooLarge(usize),
    #[error("the value is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("field `{field}`: {reason}")]
    InvalidField { field: String, reason: String },
    #[error("event type `{event_type}` does not belong on topic `{topic}`")]
    UnknownEventType { event_type: String, topic: Topic },
    #[error("header `{header}`: {reason}")]
    InvalidHeader { header: &'static str, reason: String },
    #[error("schema version {found} is newer than this service reads ({SCHEMA_VERSION})")]
    UnsupportedSchemaVersion { found: u32 },
    #[error("record key `{key}` does not match the payload's id (order_id or trip_id) `{order_id}`")]
    KeyMismatch { key: String, order_id: String },
}

impl DecodeError {
    /// Every [`DecodeError::code`].
    pub const CODES: [&'static str; 8] = [
        "missing_value",
        "too_large",
        "invalid_json",
        "invalid_field",
        "unknown_event_type",
        "invalid_header",
        "unsupported_schema_version",
        "key_mismatch",
    ];

    /// A stable code for logs, metrics and dead letters.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::MissingValue => "missing_value",
            DecodeError::TooLarge(_) => "too_large",
            DecodeError::InvalidJson(_) => "invalid_json",
            DecodeError::InvalidField { .. } => "invalid_field",
            DecodeError::UnknownEventType { .. } => "unknown_event_type",
            DecodeError::InvalidHeader { .. } => "invalid_header",
            DecodeError::UnsupportedSchemaVersion { .. } => "unsupported_schema_version",
            DecodeError::KeyMismatch { .. } => "key_mismatch",
        }
    }
}

/// Decodes a fetched record into a typed event, or says precisely why it cannot.
pub fn decode_record(raw: RawRecord<'_>) -> Result<Envelope, DecodeError> {
    let header = |name: &'static str| -> Result<Option<&str>, DecodeError> {
        raw.headers
            .get(name)
            .map(|v| {
                std::str::from_utf8(v).map_err(|_| DecodeError::InvalidHeader {
                    header: name,
                    reason: "not UTF-8".into(),
                })
            })
            .transpose()
    };
    let parse_header = |name: &'static str| -> Result<Option<i64>, DecodeError> {
        header(name)?
            .map(|s| {
                s.trim().parse::<i64>().map_err(|e| DecodeError::InvalidHeader {
                    header: name,
                    reason: format!("`{s}` is not an integer: {e}"),
                })
            })
            .transpose()
    };

    if let Some(event_type) = header(headers::EVENT_TYPE)? {
        if event_type != raw.topic.as_str() {
            return Err(DecodeError::UnknownEventType {
                event_type: event_type.to_owned(),
                topic: raw.topic,
            });
        }
    }
    let schema_version = match parse_header(headers::SCHEMA_VERSION)? {
        None => SCHEMA_VERSION,
        Some(v) => match u32::try_from(v) {
            Ok(v) if (1..=SCHEMA_VERSION).contains(&v) => v,
            Ok(v) if v > SCHEMA_VERSION => {
                return Err(DecodeError::UnsupportedSchemaVersion { found: v })
            }
            _ => {
                return Err(DecodeError::InvalidHeader {
                    header: headers::SCHEMA_VERSION,
                    reason: format!("`{v}` is not a schema version"),
                })
            }
        },
    };
    let parse_id = |name: &'static str| -> Result<Option<EventId>, DecodeError> {
        header(name)?
            .map(|s| {
                Uuid::parse_str(s.trim()).map(EventId).map_err(|e| DecodeError::InvalidHeader {
                    header: name,
                    reason: format!("`{s}` is not a UUID: {e}"),
                })
            })
            .transpose()
    };
    let mut event_id = parse_id(headers::EVENT_ID)?;
    let mut causation_id = parse_id(headers::CAUSATION_ID)?;
    let mut occurred_at_ms = parse_header(headers::OCCURRED_AT_MS)?.unwrap_or(raw.timestamp_ms);
    let mut saga_started_at_ms = parse_header(headers::SAGA_STARTED_AT_MS)?.unwrap_or(occurred_at_ms);
    if raw.topic.is_customer_writable() {
        // Anyone a storefront lets in writes here. An id of their choosing could make a real
        // event look like a duplicate of theirs (derived ids are predictable), a cause could
        // claim a history that is not, and a start time could cancel an order at once or keep
        // it open forever. So the id derives from the order alone, there is no cause, and the
        // times stay within the record's own timestamp and a clock skew before it.
        event_id = None;
        causation_id = None;
        occurred_at_ms = occurred_at_ms.clamp(raw.timestamp_ms.saturating_sub(MAX_CLOCK_SKEW_MS), raw.timestamp_ms);
        saga_started_at_ms = occurred_at_ms;
    }

    let value = raw.value.ok_or(DecodeError::MissingValue)?;
    if value.len() > MAX_EVENT_BYTES {
        return Err(DecodeError::TooLarge(value.len()));
    }
    let event = Event::parse(raw.topic, value)?;
    event
        .validate()
        .map_err(|(field, reason)| DecodeError::InvalidField { field, reason: reason.into() })?;

    let order_id = event.saga_id().unwrap_or_default();
    if let Some(key) = raw.key.filter(|k| !k.is_empty()) {
        if key != order_id.as_bytes() {
            return Err(DecodeError::KeyMismatch {
                key: String::from_utf8_lossy(key).into_owned(),
                order_id: order_id.to_owned(),
            });
        }
    }

    Ok(Envelope {
        meta: Metadata {
            event_id: event_id.unwrap_or_else(|| EventId::for_event(&event)),
            event_type: raw.topic,
            schema_version,
            causation_id,
            occurred_at_ms,
            saga_started_at_ms,
        },
        event,
    })
}

/// The `order_id` of a payload that failed to decode, when that much can be read.
pub fn sniff_order_id(json: &[u8]) -> Option<crate::OrderId> {
    #[derive(Deserialize)]
    struct Sniff {
        order_id: crate::OrderId,
    }
    serde_json::from_slice::<Sniff>(json)
        .ok()
        .map(|s| s.order_id)
        .filter(|o| !o.0.is_empty() && !crate::text::has_control(&o.0))
}

/// The `trip_id` of a payload that failed to decode, when that much can be read.
pub fn sniff_trip_id(json: &[u8]) -> Option<crate::travel::TripId> {
    #[derive(Deserialize)]
    struct Sniff {
        trip_id: crate::travel::TripId,
    }
    serde_json::from_slice::<Sniff>(json)
        .ok()
        .map(|s| s.trip_id)
        .filter(|t| !t.0.is_empty() && !crate::text::has_control(&t.0))
}

/// Deserializes JSON, turning serde's message into the path of the wrong field and a reason.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, DecodeError> {
    let de = &mut serde_json::Deserializer::from_slice(json);
    let value: T = serde_path_to_error::deserialize(&mut *de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => field_error(&path, &inner),
            _ => DecodeError::InvalidJson(inner.to_string()),
        }
    })?;
    de.end().map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
    Ok(value)
}

fn field_error(path: &str, err: &serde_json::Error) -> DecodeError {
    // serde_json appends " at line L column C"; the field path says more.
    let message = err.to_string();
    let reason = match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message,
    };
    // For a missing field serde reports the parent's path; name the field itself.
    let missing = reason
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'));
    let field = match (missing, path) {
        (Some(name), "." | "") => name.to_owned(),
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, "." | "") => "(value)".to_owned(),
        (None, path) => path.to_owned(),
    };
    let reason = if missing.is_some() { "is required".to_owned() } else { reason };
    DecodeError::InvalidField { field, reason }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::*;
    use proptest::prelude::*;

    const TYPED: &str = r#"{"order_id":"o-1","customer_id":"alice","items":[{"sku":"widget","quantity":2,"unit_price_cents":1250}],"ship_to":{"country":"US"}}"#;

    fn raw<'a>(
        topic: Topic,
        value: &'a [u8],
        headers: &'a BTreeMap<String, Vec<u8>>,
    ) -> RawRecord<'a> {
        RawRecord { topic, key: Some(b"o-1"), value: Some(value), headers, timestamp_ms: 42 }
    }

    #[test]
    fn codes_lists_every_code_once() {
        let s = String::new;
        let every = [
            DecodeError::MissingValue,
            DecodeError::TooLarge(1),
            DecodeError::InvalidJson(s()),
            DecodeError::InvalidField { field: s(), reason: s() },
            DecodeError::UnknownEventType { event_type: s(), topic: Topic::OrderCreated },
            DecodeError::InvalidHeader { header: "h", reason: s() },
            DecodeError::UnsupportedSchemaVersion { found: 9 },
            DecodeError::KeyMismatch { key: s(), order_id: s() },
        ];
        let codes: Vec<&str> = every.iter().map(DecodeError::code).collect();
        assert_eq!(codes, DecodeError::CODES);
    }

    fn decode(topic: Topic, value: &str) -> Result<Envelope, DecodeError> {
        decode_record(raw(topic, value.as_bytes(), &BTreeMap::new()))
    }

    fn field_err(value: &str) -> (String, String) {
        match decode(Topic::OrderCreated, value) {
            Err(DecodeError::InvalidField { field, reason }) => (field, reason),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn what_a_customer_topic_claims_in_headers_is_not_believed() {
        let victim = EventId::for_order(Topic::OrderCreated, "victim");
        let mut h = BTreeMap::new();
        h.insert(headers::EVENT_ID.to_owned(), victim.to_string().into_bytes());
        h.insert(headers::CAUSATION_ID.to_owned(), victim.to_string().into_bytes());
        h.insert(headers::SAGA_STARTED_AT_MS.to_owned(), b"99999999999999".to_vec());
        fn record(h: &BTreeMap<String, Vec<u8>>, ts: i64) -> RawRecord<'_> {
            RawRecord { topic: Topic::OrderCreated, key: Some(b"o-1"), value: Some(TYPED.as_bytes()), headers: h, timestamp_ms: ts }
        }
        let env = decode_record(record(&h, 1_000_000_000)).unwrap();
        assert_eq!(env.meta.event_id, EventId::for_event(&env.event), "the id derives from the order");
        assert_eq!(env.meta.causation_id, None);
        assert_eq!((env.meta.occurred_at_ms, env.meta.saga_started_at_ms), (1_000_000_000, 1_000_000_000), "not after the record");
        h.insert(headers::OCCURRED_AT_MS.to_owned(), b"1".to_vec());
        let env = decode_record(record(&h, 1_000_000_000)).unwrap();
        assert_eq!(env.meta.saga_started_at_ms, 1_000_000_000 - MAX_CLOCK_SKEW_MS, "nor long before it");
        // A service's topic, which only its owner may write (ACLs): its headers stand.
        let payment = r#"{"order_id":"o-1","customer_id":"alice","amount_cents":5,"items":[{"sku":"w","quantity":1,"unit_price_cents":5}],"ship_to":{"country":"US"}}"#;
        let env = decode_record(RawRecord { topic: Topic::PaymentCompleted, value: Some(payment.as_bytes()), ..record(&h, 0) }).unwrap();
        assert_eq!((env.meta.event_id, env.meta.causation_id), (victim, Some(victim)));
    }

    #[test]
    fn an_order_typed_again_is_the_same_event_and_another_payload_is_not() {
        let id = |json: &str| decode(Topic::OrderCreated, json).unwrap().meta.event_id;
        let spaced = TYPED.replace(',', ", ").replace(':', ": ");
        assert_eq!(id(TYPED), id(&spaced), "spacing does not count");
        assert_ne!(id(TYPED), id(&TYPED.replace("alice", "bob")), "another customer is another event");
        assert_ne!(id(TYPED), id(&TYPED.replace(r#""quantity":2"#, r#""quantity":3"#)));
    }

    #[test]
    fn an_id_applied_on_one_topic_is_no_duplicate_on_another() {
        let id = EventId::for_order(Topic::OrderCancelled, "o-1");
        assert_ne!(id.applied_on(Topic::OrderCreated), id.applied_on(Topic::OrderCancelled));
        assert_eq!(id.applied_on(Topic::OrderCancelled), id.applied_on(Topic::OrderCancelled));
    }

    #[test]
    fn hand_typed_order_decodes_with_derived_metadata() {
        let env = decode(Topic::OrderCreated, TYPED).unwrap();
        let Event::OrderCreated(order) = &env.event else { panic!("wrong variant") };
        assert_eq!(order.total_cents(), Some(2500));
        assert_eq!(env.meta.event_id, EventId::for_event(&env.event));
        assert_eq!(env.meta.causation_id, None);
        assert_eq!(env.meta.occurred_at_ms, 42);
        assert_eq!(env.meta.saga_started_at_ms, 42);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (TYPED.replace(r#""quantity":2"#, r#""quantity":0"#), "items[0].quantity", "must be positive"),
            (TYPED.replace(r#""quantity":2"#, r#""quantity":-1"#), "items[0].quantity", "invalid value"),
            (TYPED.replace(r#""quantity":2"#, r#""quantity":"2""#), "items[0].quantity", "invalid type"),
            (TYPED.replace(r#""quantity":2,"#, ""), "items[0].quantity", "is required"),
            (TYPED.replace(r#","ship_to":{"country":"US"}"#, ""), "ship_to", "is required"),
            (TYPED.replace(r#""customer_id":"alice""#, r#""customer_id":"""#), "customer_id", "must not be empty"),
            (TYPED.replace(r#""country":"US""#, r#""city":"Paris""#), "ship_to.country", "is required"),
            (r#"{"order_id":"o-1","customer_id":"a","items":[],"ship_to":{"country":"US"}}"#.to_owned(), "items", "at least one"),
            // A newline in an id could forge a log line when the id is printed.
            (TYPED.replace(r#""o-1""#, r#""o-1\nINFO step: wallet charged""#), "order_id", "control characters"),
            (TYPED.replace(r#""alice""#, r#""al\u001bice""#), "customer_id", "control characters"),
            (TYPED.replace(r#""widget""#, r#""wid\tget""#), "items[0].sku", "control characters"),
        ];
        for (json, field, reason) in cases {
            let (f, r) = field_err(&json);
            assert_eq!(f, field, "{json}");
            assert!(r.contains(reason), "{r} should contain {reason}");
        }
    }

    #[test]
    fn malformed_json_and_bad_headers_are_rejected() {
        assert!(matches!(decode(Topic::OrderCreated, "{not json"), Err(DecodeError::InvalidJson(_))));
        assert!(matches!(decode(Topic::OrderCreated, ""), Err(DecodeError::InvalidJson(_))));
        let mut h = BTreeMap::new();
        h.insert(headers::EVENT_TYPE.to_owned(), b"OrderShipped".to_vec());
        let err = decode_record(raw(Topic::OrderCreated, TYPED.as_bytes(), &h)).unwrap_err();
        assert_eq!(err.code(), "unknown_event_type");
        let mut h = BTreeMap::new();
        h.insert(headers::SCHEMA_VERSION.to_owned(), b"9".to_vec());
        let err = decode_record(raw(Topic::OrderCreated, TYPED.as_bytes(), &h)).unwrap_err();
        assert_eq!(err, DecodeError::UnsupportedSchemaVersion { found: 9 });
        let mut h = BTreeMap::new();
        h.insert(headers::EVENT_ID.to_owned(), b"nope".to_vec());
        let err = decode_record(raw(Topic::OrderCreated, TYPED.as_bytes(), &h)).unwrap_err();
        assert_eq!(err.code(), "invalid_header");
        // Headers that decode, so the key is what is wrong.
        let fine = BTreeMap::new();
        let wrong_key = RawRecord { key: Some(b"o-2"), ..raw(Topic::OrderCreated, TYPED.as_bytes(), &fine) };
        assert_eq!(decode_record(wrong_key).unwrap_err(), DecodeError::KeyMismatch { key: "o-2".into(), order_id: "o-1".into() });
    }

    #[test]
    fn oversized_values_are_refused() {
        let big = TYPED.replace(r#""country":"US""#, &format!(r#""country":"US","city":"{}""#, "x".repeat(MAX_EVENT_BYTES)));
        assert_eq!(decode(Topic::OrderCreated, &big).unwrap_err().code(), "too_large");
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let json = TYPED.replace(r#""country":"US""#, r#""country":"US","city":"Boston","gift":true"#);
        assert!(decode(Topic::OrderCreated, &json).is_ok());
    }

    #[test]
    fn caused_by_derives_stable_ids() {
        let cause = decode(Topic::OrderCreated, TYPED).unwrap().meta;
        let ev = Event::OrderCancelled(OrderCancelled {
            order_id: "o-1".into(),
            reason: CancelReason::PaymentFailed,
            detail: String::new(),
        });
        let a = Envelope::caused_by(&cause, ev.clone(), 100);
        let b = Envelope::caused_by(&cause, ev, 200);
        assert_eq!(a.meta.event_id, b.meta.event_id);
        assert_ne!(a.meta.event_id, cause.event_id);
        assert_eq!(a.meta.causation_id, Some(cause.event_id));
        assert_eq!(a.meta.saga_started_at_ms, 42);
    }

    fn arb_string() -> impl Strategy<Value = String> + Clone {
        "[a-zA-Z0-9_-]{1,12}"
    }

    fn arb_lines() -> impl Strategy<Value = Vec<LineItem>> {
        prop::collection::vec(
            (arb_string(), 1u32..1000, 0u64..1_000_000)
                .prop_map(|(sku, quantity, unit_price_cents)| LineItem { sku, quantity, unit_price_cents }),
            1..4,
        )
    }

    fn arb_address() -> impl Strategy<Value = Address> {
        (arb_string(), prop::option::of(arb_string()))
            .prop_map(|(country, city)| Address { country, city, ..Address::default() })
    }

    fn arb_stock_lines() -> impl Strategy<Value = Vec<StockLine>> {
        prop::collection::vec((arb_string(), 1u32..1000).prop_map(|(sku, quantity)| StockLine { sku, quantity }), 1..4)
    }

    /// One event of every type, with arbitrary contents that pass validation.
    fn arb_event() -> impl Strategy<Value = Event> {
        let id = arb_string().prop_map(OrderId);
        prop_oneof![
            (id.clone(), arb_string(), arb_lines(), arb_address()).prop_map(|(order_id, customer_id, items, ship_to)| {
                OrderCreated { order_id, customer_id, items, ship_to }.into()
            }),
            (id.clone(), arb_string(), any::<u64>(), arb_lines(), arb_address()).prop_map(
                |(order_id, customer_id, amount_cents, items, ship_to)| {
                    PaymentCompleted { order_id, customer_id, amount_cents, items, ship_to }.into()
                }
            ),
            (id.clone(), arb_string(), any::<u64>(), any::<bool>()).prop_map(|(order_id, customer_id, amount_cents, b)| {
                let reason = if b { PaymentFailureReason::InsufficientFunds } else { PaymentFailureReason::UnknownCustomer };
                PaymentFailed { order_id, customer_id, amount_cents, reason }.into()
            }),
            (id.clone(), arb_stock_lines(), arb_address()).prop_map(|(order_id, items, ship_to)| {
                StockReserved { order_id, items, ship_to }.into()
            }),
            (id.clone(), arb_string(), any::<u32>(), any::<u32>()).prop_map(|(order_id, sku, requested, available)| {
                StockFailed { order_id, reason: StockFailureReason::OutOfStock, sku, requested, available }.into()
            }),
            (id.clone(), arb_string(), arb_string()).prop_map(|(order_id, shipment_id, country)| {
                ShipmentScheduled { order_id, shipment_id, country }.into()
            }),
            (id.clone(), arb_string()).prop_map(|(order_id, country)| {
                ShippingFailed { order_id, country, reason: ShippingFailureReason::DestinationNotServed }.into()
            }),
            (id.clone(), arb_string()).prop_map(|(order_id, shipment_id)| OrderCompleted { order_id, shipment_id }.into()),
            (id.clone(), "[^\\p{Cc}]*").prop_map(|(order_id, detail)| {
                OrderCancelled { order_id, reason: CancelReason::StockFailed, detail }.into()
            }),
            (id.clone(), arb_string(), any::<u64>()).prop_map(|(order_id, customer_id, amount_cents)| {
                PaymentRefunded { order_id, customer_id, amount_cents }.into()
            }),
            (id.clone(), arb_stock_lines()).prop_map(|(order_id, items)| StockReleased { order_id, items }.into()),
            (id.clone(), prop::option::of(".*")).prop_map(|(order_id, reason)| OrderCancellationRequested { order_id, reason }.into()),
            (id.clone(), any::<bool>()).prop_map(|(order_id, b)| {
                let reason = if b { RefusalReason::AlreadyShipped } else { RefusalReason::AlreadyCancelled };
                OrderCancellationRefused { order_id, reason }.into()
            }),
            (id.clone(), arb_string()).prop_map(|(order_id, shipment_id)| ShipmentCancelled { order_id, shipment_id }.into()),
            (prop::option::of(id), ".*", any::<i32>(), any::<i64>()).prop_map(|(order_id, error, p, o)| {
                DeadLetter {
                    order_id,
                    trip_id: None,
                    service: "payment-service".into(),
                    source_topic: "OrderCreated".into(),
                    source_partition: p,
                    source_offset: o,
                    error_code: "invalid_json".into(),
                    error,
                    key: None,
                    payload: Some("{".into()),
                    payload_hex: None,
                    payload_truncated: false,
                    headers: BTreeMap::new(),
                    source_last_offset: None,
                    key_truncated: false,
                    headers_truncated: false,
                }
                .into()
            }),
        ]
    }

    proptest! {
        /// encode → decode gives back the same envelope, for every event type.
        #[test]
        fn roundtrip(event in arb_event(), now in 0i64..i64::MAX / 2) {
            let env = Envelope::root(event, now);
            let rec = env.encode();
            let headers: BTreeMap<String, Vec<u8>> =
                rec.headers.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
            let decoded = decode_record(RawRecord {
                topic: env.meta.event_type,
                key: Some(rec.key.as_bytes()),
                value: Some(&rec.value),
                headers: &headers,
                // As the publisher writes it.
                timestamp_ms: env.meta.occurred_at_ms,
            });
            prop_assert_eq!(decoded, Ok(env));
        }

        /// Whatever headers a customer-writable record carries, its id derives from its order
        /// and its times lie within the record's own timestamp and the allowed skew.
        #[test]
        fn customer_records_get_derived_ids_and_bounded_times(
            id in any::<u128>(), started in any::<i64>(), occurred in any::<i64>(), ts in 0i64..i64::MAX / 2,
        ) {
            let mut h = BTreeMap::new();
            h.insert(headers::EVENT_ID.to_owned(), Uuid::from_u128(id).to_string().into_bytes());
            h.insert(headers::SAGA_STARTED_AT_MS.to_owned(), started.to_string().into_bytes());
            h.insert(headers::OCCURRED_AT_MS.to_owned(), occurred.to_string().into_bytes());
            let env = decode_record(RawRecord { topic: Topic::OrderCreated, key: Some(b"o-1"), value: Some(TYPED.as_bytes()), headers: &h, timestamp_ms: ts }).unwrap();
            prop_assert_eq!(env.meta.event_id, EventId::for_event(&env.event));
            prop_assert!(env.meta.saga_started_at_ms <= ts && env.meta.saga_started_at_ms >= ts - MAX_CLOCK_SKEW_MS);
        }

        /// Arbitrary bytes on any topic decode or fail with an error; they never panic.
        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256), t in 0usize..Topic::ALL.len()) {
            let _ = decode_record(RawRecord {
                topic: Topic::ALL[t],
                key: None,
                value: Some(&bytes),
                headers: &BTreeMap::new(),
                timestamp_ms: 0,
            });
        }

        /// Near-valid JSON (one byte changed) never panics either, and errors name a code.
        #[test]
        fn mutated_order_never_panics(i in 0usize..TYPED.len(), b in any::<u8>()) {
            let mut bytes = TYPED.as_bytes().to_vec();
            bytes[i] = b;
            // No headers and a small value: only the payload can be wrong (its JSON, a field, or
            // an order id that no longer matches the key).
            if let Err(e) = decode_record(raw(Topic::OrderCreated, &bytes, &BTreeMap::new())) {
                prop_assert!(["invalid_json", "invalid_field", "key_mismatch"].contains(&e.code()), "{:?}", e);
            }
        }
    }
}
