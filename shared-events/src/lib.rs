//! The sagas' shared language: topic names, event schemas and how an event travels as a
//! Kafka record. The single source of truth every service and tool spells names from.
//!
//! # Layout
//! - [`topic`]: the [`Topic`] enum; a topic is named after the one event type it carries.
//! - [`events`]: the payload of each event (serde, snake_case JSON) and the [`Event`] sum type.
//! - [`envelope`]: [`Metadata`] carried in Kafka headers, [`Envelope`] = metadata + event,
//!   and the typed decode of a record into an envelope ([`decode_record`]).
//! - [`text`]: input text made safe for logs (control characters escaped) and truncated.
//! - [`travel`]: the travel saga's payloads, a second saga on the same runtime (its events are
//!   [`Event`] variants too).
//! - [`partitioner`]: Kafka's Java-compatible murmur2 key partitioner, so tools place an order
//!   where a Java client (or `kcat -X partitioner=murmur2_random`) would.
//!
//! This crate does no I/O: it turns bytes into types and back.

pub mod envelope;
pub mod events;
pub mod partitioner;
pub mod text;
pub mod topic;
pub mod travel;

pub use envelope::{
    decode_record, DecodeError, Envelope, EventId, Metadata, RawRecord, EncodedRecord,
    SCHEMA_VERSION,
};
pub use events::*;
pub use topic::{Saga, Topic};
