//! The sans-IO step of the loop: one batch of fetched records, or one timer tick, in; the
//! commit it makes (state rows, outbox entries, next offsets, applied ids) out. No store, no
//! Kafka, no clock: the time comes in as an argument, and the only question asked of the store
//! (has this event been applied?) goes through [`AppliedIds`]. The runtime calls these
//! functions with its sled store; anything else that drives the rules (a simulator) calls the
//! same ones.

use std::collections::HashSet;

use shared_events::envelope::decode_record;
use shared_events::text::{self, Escaped};
use shared_events::travel::TripId;
use shared_events::{DeadLetter, Envelope, Event, EventId, Metadata, Saga, Topic, SCHEMA_VERSION};
use tracing::{info, warn};

use crate::commit::{Commit, OutboxEntry};
use crate::fetched::{Fetched, Record, UnreadableBatch};
use crate::state::RowError;
use crate::Service;

/// What the step asks of a store: whether an event was applied already (its id, on the topic
/// it came from: [`EventId::applied_on`]).
pub trait AppliedIds {
    fn is_applied(&self, applied: EventId) -> bool;
}

/// What the step counts as it goes, for whoever reports it (the runtime's `/metrics`). Every
/// method does nothing by default; `()` counts nothing.
pub trait StepMetrics {
    /// A record or batch parked on DeadLetter, by its error code.
    fn dead_letter(&self, _reason: &str) {}
    /// An input dropped because its event was applied already.
    fn duplicate(&self, _topic: Topic) {}
    /// `records` records read from a partition, which is now read up to `next_offset`.
    fn consumed(&self, _topic: Topic, _partition: i32, _records: usize, _next_offset: i64) {}
}

impl StepMetrics for () {}

/// Lets the service emit what is due (deadlines); returns everything that changed.
pub fn process_timers<S: Service>(service: &mut S, now_ms: i64) -> Result<Commit, RowError> {
    let mut commit = Commit::default();
    let due = service.on_timer(now_ms);
    if !due.is_empty() {
        service.observe(&due.iter().map(|d| d.event.clone()).collect::<Vec<_>>());
    }
    for due in due {
        debug_assert!(S::EMITS.contains(&due.event.topic()), "{} emitted {}, not in its EMITS", S::NAME, due.event.topic());
        let out = Envelope::on_timer(due.event, due.saga_started_at_ms, now_ms);
        commit.outbox.push(outbox_entry(&out, due.partition));
    }
    commit.add_table_changes(service.tables())?;
    Ok(commit)
}

/// Decodes, deduplicates and applies one batch; returns everything it changed.
pub fn process_batch<S: Service>(
    service: &mut S,
    store: &impl AppliedIds,
    metrics: &impl StepMetrics,
    batch: Vec<Fetched>,
    now_ms: i64,
) -> Result<Commit, RowError> {
    let mut commit = Commit::default();
    let mut seen = HashSet::new();
    for fetched in batch {
        for bad in &fetched.unreadable {
            // One line and one dead letter per range the client could not read, in the commit
            // that moves past it.
            warn!(
                topic = %fetched.topic, partition = fetched.partition,
                first_offset = bad.first_offset, last_offset = bad.last_offset,
                error_code = "unreadable_batch", error = %Escaped(&bad.reason),
                "unreadable batch parked on DeadLetter"
            );
            metrics.dead_letter("unreadable_batch");
            let letter = dead_letter(S::NAME, &fetched, Parked::Batch(bad), now_ms);
            commit.outbox.push(outbox_entry(&letter, fetched.partition));
        }
        for rec in &fetched.records {
            match decode_record(rec.raw(fetched.topic)) {
                Err(error) => {
                    let key = rec.key.as_deref().map(String::from_utf8_lossy);
                    let key = key.as_deref().map(|k| text::truncated(k, LOGGED_KEY_MAX).0);
                    warn!(
                        topic = %fetched.topic, partition = fetched.partition, offset = rec.offset, key,
                        error_code = error.code(), error = %Escaped(&error.to_string()),
                        "bad record parked on DeadLetter"
                    );
                    metrics.dead_letter(error.code());
                    let letter = dead_letter(S::NAME, &fetched, Parked::Record(rec, &error), now_ms);
                    commit.outbox.push(outbox_entry(&letter, fetched.partition));
                }
                Ok(mut input) => {
                    let id = input.meta.event_id;
                    // Remembered per topic: a record on one topic never shadows another's event.
                    let applied = id.applied_on(fetched.topic);
                    // A saga never started in the future; one that claims to would never time out.
                    input.meta.saga_started_at_ms = input.meta.saga_started_at_ms.min(now_ms);
                    if !seen.insert(applied) || store.is_applied(applied) {
                        match (input.event.order_id(), input.event.trip_id()) {
                            (_, Some(trip_id)) => info!(trip_id = %trip_id, event = %input.meta.event_type, event_id = %id, "duplicate ignored"),
                            (order_id, None) => {
                                let order_id = order_id.map(|o| o.as_str()).unwrap_or_default();
                                info!(order_id, event = %input.meta.event_type, event_id = %id, "duplicate ignored");
                            }
                        }
                        metrics.duplicate(fetched.topic);
                    } else {
                        let since_order_ms = now_ms.saturating_sub(input.meta.saga_started_at_ms);
                        let span = tracing::info_span!("step", since_order_ms);
                        let ctx = crate::Context { now_ms, partition: fetched.partition };
                        let outputs = span.in_scope(|| service.handle(&input, &ctx));
                        service.observe(&outputs);
                        for event in outputs {
                            debug_assert!(
                                S::EMITS.contains(&event.topic()) || event.topic() == Topic::DeadLetter,
                                "{} emitted {}, not in its EMITS",
                                S::NAME,
                                event.topic()
                            );
                            let out = match event {
                                // A rule parks its input: the origin and the copy are the runtime's.
                                Event::DeadLetter(rejected) => {
                                    metrics.dead_letter(&rejected.error_code);
                                    dead_letter(S::NAME, &fetched, Parked::Rejected(rec, &rejected), now_ms)
                                }
                                event => Envelope::caused_by(&input.meta, event, now_ms),
                            };
                            commit.outbox.push(outbox_entry(&out, fetched.partition));
                        }
                        commit.applied.push(applied);
                    }
                }
            }
        }
        // Past the records, and past whatever the fetch skipped (transaction markers, aborted
        // transactions) or parked.
        commit.offsets.insert((fetched.topic, fetched.partition), fetched.next_offset);
        metrics.consumed(fetched.topic, fetched.partition, fetched.records.len(), fetched.next_offset);
    }
    commit.add_table_changes(service.tables())?;
    Ok(commit)
}

pub fn outbox_entry(envelope: &Envelope, partition: i32) -> OutboxEntry {
    let record = envelope.encode();
    OutboxEntry {
        topic: envelope.meta.event_type.as_str().to_owned(),
        partition,
        key: record.key,
        value: String::from_utf8_lossy(&record.value).into_owned(),
        headers: record.headers,
    }
}

/// Most bytes of the bad record's value copied into its dead letter.
const DEAD_LETTER_PAYLOAD_MAX: usize = 64 * 1024;
/// Most bytes of a key, and of each header value, copied into a dead letter; most headers.
const DEAD_LETTER_KEY_MAX: usize = 1024;
const DEAD_LETTER_HEADERS_MAX: usize = 64;
/// Most bytes of a whole dead letter's JSON: well below any topic's `max.message.bytes` worth
/// running (Kafka's default is 1 MiB), so a dead letter is never refused for its size. Escaping
/// can make the JSON several times the bytes copied, so the payload copy shrinks until it fits.
pub const DEAD_LETTER_MAX_BYTES: usize = 128 * 1024;
/// Most bytes of a bad record's key printed in its log line.
const LOGGED_KEY_MAX: usize = 128;

/// A dead letter's copy of headers: at most [`DEAD_LETTER_HEADERS_MAX`], names and values cut at
/// [`DEAD_LETTER_KEY_MAX`]; and whether anything was cut or left out.
fn bounded_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, std::borrow::Cow<'a, str>)>,
) -> (std::collections::BTreeMap<String, String>, bool) {
    let mut cut = false;
    let mut copy = std::collections::BTreeMap::new();
    for (i, (name, value)) in headers.into_iter().enumerate() {
        if i >= DEAD_LETTER_HEADERS_MAX {
            cut = true;
            break;
        }
        let (name, name_cut) = text::truncated(name, DEAD_LETTER_KEY_MAX);
        let (value, value_cut) = text::truncated(&value, DEAD_LETTER_KEY_MAX);
        cut |= name_cut || value_cut;
        copy.insert(name.to_owned(), value.to_owned());
    }
    (copy, cut)
}

/// What a dead letter parks: one record that did not decode, one a rule rejected, or a batch
/// that could not be read.
enum Parked<'a> {
    Record(&'a Record, &'a shared_events::DecodeError),
    Rejected(&'a Record, &'a DeadLetter),
    Batch(&'a UnreadableBatch),
}

/// The dead letter for an event Kafka refused for good: what it was and why, with the
/// smallest copy of it (no payload, no headers), so that it fits where the event did not. A
/// refused dead letter keeps its origin and id (it was never published) and loses its copy of
/// the record; any other event gets an id derived from its own, so parking it again after a
/// crash yields the same id.
pub fn refused_letter(service: &str, entry: &OutboxEntry, reason: &str, now_ms: i64) -> Envelope {
    let event_id = entry.headers.get(shared_events::envelope::headers::EVENT_ID).map(String::as_str).unwrap_or_default();
    let own_id = event_id.parse().ok().map(EventId);
    let (key, key_truncated) = text::truncated(&entry.key, DEAD_LETTER_KEY_MAX);
    let refused = |what: &str| text::truncated(&format!("{what}; Kafka refused it for good: {reason}"), DEAD_LETTER_KEY_MAX).0.to_owned();
    let (headers, headers_truncated) = bounded_headers(entry.headers.iter().map(|(k, v)| (k.as_str(), v.as_str().into())));
    let letter = match serde_json::from_str::<DeadLetter>(&entry.value) {
        Ok(letter) if entry.topic == Topic::DeadLetter.as_str() => DeadLetter {
            error: refused(&letter.error),
            key: letter.key.map(|k| text::truncated(&k, DEAD_LETTER_KEY_MAX).0.to_owned()),
            payload: None,
            payload_hex: None,
            payload_truncated: true,
            headers_truncated: letter.headers_truncated || !letter.headers.is_empty(),
            headers: Default::default(),
            ..letter
        },
        _ => DeadLetter {
            order_id: readable_key(entry).filter(|_| saga_of(&entry.topic) == Some(Saga::Order)).map(shared_events::OrderId::from),
            trip_id: readable_key(entry).filter(|_| saga_of(&entry.topic) == Some(Saga::Travel)).map(TripId::from),
            service: service.to_owned(),
            source_topic: entry.topic.clone(),
            source_partition: entry.partition,
            // Never written: it has no offset.
            source_offset: -1,
            error_code: "publish_refused".to_owned(),
            error: refused(&format!("event {event_id}")),
            key: Some(key.to_owned()),
            payload: None,
            payload_hex: None,
            payload_truncated: true,
            headers,
            source_last_offset: None,
            key_truncated,
            headers_truncated,
        },
    };
    let is_letter = entry.topic == Topic::DeadLetter.as_str();
    Envelope {
        meta: Metadata {
            event_id: match own_id {
                Some(id) if is_letter => id,
                _ => EventId::dead_letter(service, &entry.topic, entry.partition, -1).derive(event_id),
            },
            event_type: Topic::DeadLetter,
            schema_version: SCHEMA_VERSION,
            causation_id: own_id.filter(|_| !is_letter),
            occurred_at_ms: now_ms,
            saga_started_at_ms: now_ms,
        },
        event: Event::DeadLetter(letter),
    }
}

/// The dead letter for what `service` could not process: origin, reason, and a copy of the
/// input bounded by [`DEAD_LETTER_MAX_BYTES`] (the original stays on its topic in full).
fn dead_letter(service: &str, fetched: &Fetched, parked: Parked<'_>, now_ms: i64) -> Envelope {
    let (offset, last_offset, error_code, error, key, headers, value, is_text) = match parked {
        Parked::Record(rec, error) => (
            rec.offset,
            None,
            error.code(),
            error.to_string(),
            rec.key.as_deref(),
            Some(&rec.headers),
            rec.value.as_deref().unwrap_or_default(),
            true,
        ),
        Parked::Rejected(rec, rejected) => (
            rec.offset,
            None,
            rejected.error_code.as_str(),
            rejected.error.clone(),
            rec.key.as_deref(),
            Some(&rec.headers),
            rec.value.as_deref().unwrap_or_default(),
            true,
        ),
        Parked::Batch(bad) => (
            bad.first_offset,
            (bad.last_offset > bad.first_offset).then_some(bad.last_offset),
            "unreadable_batch",
            bad.reason.clone(),
            None,
            None,
            bad.bytes.as_slice(),
            false,
        ),
    };
    let (key, key_truncated) = match key.map(String::from_utf8_lossy) {
        Some(k) => {
            let (kept, cut) = text::truncated(&k, DEAD_LETTER_KEY_MAX);
            (Some(kept.to_owned()), cut)
        }
        None => (None, false),
    };
    let (headers, headers_truncated) =
        bounded_headers(headers.into_iter().flatten().map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v))));
    let saga = fetched.topic.saga();
    let mut letter = DeadLetter {
        // A record on DeadLetter itself belongs to either saga: both ids are looked for.
        order_id: if is_text && saga != Some(Saga::Travel) { shared_events::envelope::sniff_order_id(value) } else { None },
        trip_id: if is_text && saga != Some(Saga::Order) { shared_events::envelope::sniff_trip_id(value) } else { None },
        service: service.to_owned(),
        source_topic: fetched.topic.as_str().to_owned(),
        source_partition: fetched.partition,
        source_offset: offset,
        error_code: error_code.to_owned(),
        error: text::truncated(&error, DEAD_LETTER_KEY_MAX).0.to_owned(),
        key,
        payload: None,
        payload_hex: None,
        payload_truncated: false,
        headers,
        source_last_offset: last_offset,
        key_truncated,
        headers_truncated,
    };
    let envelope = |event| Envelope {
        meta: Metadata {
            event_id: EventId::dead_letter(service, fetched.topic.as_str(), fetched.partition, offset),
            event_type: Topic::DeadLetter,
            schema_version: SCHEMA_VERSION,
            causation_id: None,
            occurred_at_ms: now_ms,
            saga_started_at_ms: now_ms,
        },
        event: Event::DeadLetter(event),
    };
    let whole_text = if is_text { std::str::from_utf8(value).ok() } else { None };
    let mut budget = DEAD_LETTER_PAYLOAD_MAX;
    loop {
        letter.payload_truncated = match whole_text {
            Some(whole) => {
                let (kept, cut) = text::truncated(whole, budget);
                letter.payload = Some(kept.to_owned());
                cut
            }
            None => {
                let copied = &value[..value.len().min(budget / 2)];
                letter.payload_hex = Some(copied.iter().map(|b| format!("{b:02x}")).collect());
                copied.len() < value.len()
            }
        };
        let candidate = envelope(letter.clone());
        if budget == 0 || candidate.event.to_json().len() <= DEAD_LETTER_MAX_BYTES {
            return candidate;
        }
        budget /= 4;
    }
}

/// The saga a topic named in an outbox entry belongs to.
fn saga_of(topic: &str) -> Option<Saga> {
    topic.parse::<Topic>().ok().and_then(Topic::saga)
}

/// An outbox entry's key as a saga id, if it could be one (it names the order or trip).
fn readable_key(entry: &OutboxEntry) -> Option<&str> {
    Some(entry.key.as_str()).filter(|k| !k.is_empty() && !text::has_control(k))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A service that asks to cancel every order it sees, and counts them: enough to see the
    /// step's decisions without sled or Kafka.
    struct Canceller {
        seen: crate::Table<u64>,
    }

    impl Service for Canceller {
        const NAME: &'static str = "canceller";
        const CONSUMES: &'static [Topic] = &[Topic::OrderCreated];
        const EMITS: &'static [Topic] = &[Topic::OrderCancellationRequested];
        type Seed = ();
        fn seed(&mut self, _seed: ()) {}
        fn handle(&mut self, input: &Envelope, _ctx: &crate::Context) -> Vec<Event> {
            let Some(order_id) = input.event.order_id().cloned() else { return Vec::new() };
            let n = self.seen.get(order_id.as_str()).unwrap_or_default();
            self.seen.insert(order_id.0.clone(), n + 1);
            vec![shared_events::OrderCancellationRequested { order_id, reason: None }.into()]
        }
        fn tables(&mut self) -> Vec<&mut dyn crate::PersistentTable> {
            vec![&mut self.seen]
        }
    }

    /// The ids a test says were applied before.
    struct Applied(HashSet<EventId>);

    impl AppliedIds for Applied {
        fn is_applied(&self, applied: EventId) -> bool {
            self.0.contains(&applied)
        }
    }

    fn record_of(envelope: &Envelope, offset: i64) -> Record {
        let encoded = envelope.encode();
        Record {
            offset,
            key: Some(encoded.key.into_bytes()),
            value: Some(encoded.value),
            headers: encoded.headers.into_iter().map(|(k, v)| (k, v.into_bytes())).collect(),
            timestamp_ms: 0,
        }
    }

    #[test]
    fn a_batch_steps_without_a_store_dropping_duplicates_and_parking_what_does_not_decode() {
        let order = shared_events::OrderCreated {
            order_id: "o-1".into(),
            customer_id: "alice".into(),
            items: vec![shared_events::LineItem { sku: "widget".into(), quantity: 1, unit_price_cents: 5 }],
            ship_to: shared_events::Address { country: "US".into(), ..Default::default() },
        };
        let created = Envelope::root(order.into(), 1_000);
        let poison = Record { offset: 2, key: Some(b"o-2".to_vec()), value: Some(b"{not json".to_vec()), ..Record::default() };
        let batch = |records| Fetched { records, next_offset: 3, ..fetched() };
        let metrics = ();
        let mut service = Canceller { seen: crate::Table::new("seen") };
        // The order, the same order again in the same batch, and a poison record.
        let records = vec![record_of(&created, 0), record_of(&created, 1), poison];
        let commit = process_batch(&mut service, &Applied(HashSet::new()), &metrics, vec![batch(records)], 2_000).unwrap();
        let topics: Vec<&str> = commit.outbox.iter().map(|e| e.topic.as_str()).collect();
        assert_eq!(topics, ["OrderCancellationRequested", "DeadLetter"], "one answer to the order, once; the poison parked");
        assert_eq!(commit.applied, [created.meta.event_id.applied_on(Topic::OrderCreated)]);
        assert_eq!(commit.offsets[&(Topic::OrderCreated, 1)], 3, "past every record");
        assert_eq!(commit.rows, [("seen", ("o-1".to_owned(), Some(b"1".to_vec())))]);
        // Redelivered later, once applied: nothing happens.
        let applied = Applied(commit.applied.iter().copied().collect());
        let again = process_batch(&mut service, &applied, &metrics, vec![batch(vec![record_of(&created, 0)])], 3_000).unwrap();
        assert!(again.outbox.is_empty() && again.applied.is_empty() && again.rows.is_empty());
    }

    fn fetched() -> Fetched {
        Fetched { topic: Topic::OrderCreated, partition: 1, records: Vec::new(), unreadable: Vec::new(), next_offset: 0, caught_up: false }
    }

    fn letter(envelope: &Envelope) -> &DeadLetter {
        match &envelope.event {
            Event::DeadLetter(l) => l,
            other => panic!("not a dead letter: {other:?}"),
        }
    }

    #[test]
    fn a_dead_letter_stays_bounded_whatever_it_copies() {
        // A huge key, many headers, and a payload JSON escapes to six times its size.
        let rec = Record {
            offset: 7,
            key: Some(vec![b'k'; 600 * 1024]),
            value: Some(vec![0x01; 300 * 1024]),
            headers: (0..100).map(|i| (format!("h{i}"), vec![b'v'; 5000])).collect(),
            timestamp_ms: 0,
        };
        let error = shared_events::DecodeError::MissingValue;
        let envelope = dead_letter("payment-service", &fetched(), Parked::Record(&rec, &error), 1);
        assert!(envelope.event.to_json().len() <= DEAD_LETTER_MAX_BYTES);
        let l = letter(&envelope);
        assert!(l.key_truncated && l.headers_truncated && l.payload_truncated);
        assert!(l.headers.len() <= DEAD_LETTER_HEADERS_MAX);
        assert!(l.payload.as_ref().is_some_and(|p| !p.is_empty()), "as much of the payload as fits is kept");
        assert_eq!((l.source_partition, l.source_offset, l.source_last_offset), (1, 7, None));
    }

    #[test]
    fn an_unreadable_batch_is_one_dead_letter_for_its_range() {
        let bad = UnreadableBatch { first_offset: 10, last_offset: 14, reason: "Malformed data: bad".into(), bytes: vec![0xab; 40] };
        let envelope = dead_letter("order-service", &fetched(), Parked::Batch(&bad), 1);
        let l = letter(&envelope);
        assert_eq!((l.error_code.as_str(), l.source_offset, l.source_last_offset), ("unreadable_batch", 10, Some(14)));
        assert_eq!(l.payload_hex.as_deref(), Some("ab".repeat(40).as_str()));
        assert_eq!(envelope.meta.event_id, EventId::dead_letter("order-service", "OrderCreated", 1, 10));
    }

    #[test]
    fn a_refused_dead_letter_keeps_its_origin_and_id_and_loses_its_copy() {
        let rec = Record { offset: 3, key: Some(b"o-1".to_vec()), value: Some(vec![b'x'; 50_000]), ..Record::default() };
        let error = shared_events::DecodeError::MissingValue;
        let original = dead_letter("payment-service", &fetched(), Parked::Record(&rec, &error), 1);
        let entry = outbox_entry(&original, 1);
        let smaller = refused_letter("payment-service", &entry, "MessageTooLarge", 2);
        assert_eq!(smaller.meta.event_id, original.meta.event_id, "the same dead letter, never published");
        let l = letter(&smaller);
        assert_eq!((l.source_topic.as_str(), l.source_offset, l.error_code.as_str()), ("OrderCreated", 3, "missing_value"));
        assert!(l.payload.is_none() && l.payload_truncated && l.error.contains("MessageTooLarge"));
        assert!(smaller.event.to_json().len() < 2048);
        // Any other event refused: a new dead letter that names it, with a stable id.
        let event = Envelope::root(Event::OrderCancellationRequested(shared_events::OrderCancellationRequested { order_id: "o-2".into(), reason: None }), 5);
        let entry = outbox_entry(&event, 0);
        let parked = refused_letter("order-service", &entry, "InvalidRecord", 6);
        assert_eq!(parked.meta.event_id, refused_letter("order-service", &entry, "InvalidRecord", 7).meta.event_id);
        assert_eq!(parked.meta.causation_id, Some(event.meta.event_id));
        assert_eq!(letter(&parked).error_code, "publish_refused");
    }
}
