//! What a service tells Prometheus, and what its probes judge: figures the loop, the fetcher
//! and the publisher update as they go. All atomics, so a scrape never waits for the loop and
//! the loop never waits for a scrape.
//!
//! Names follow Prometheus conventions (`saga_…_total` counters, base units, `_seconds`); the
//! README's metrics table lists them. Labels are bounded: topics, partitions, reason codes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use shared_events::Topic;

/// Store and publish latencies, 100 µs to 5 s: an fsync takes a few milliseconds here, a
/// publish round one broker round trip, a broker outage seconds.
const LATENCY_BUCKETS: [f64; 15] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// How long a fetch may go unanswered, or a publish round keep retrying, before `/readyz`
/// fails. Beyond the fetch's own long-poll wait: an idle partition answers at least that often.
pub const STALL: Duration = Duration::from_secs(5);

/// How long the loop may go without turning before `/healthz` fails. It turns at least once a
/// second when idle (its timer), and a batch holds it for milliseconds.
pub const LOOP_STALL: Duration = Duration::from_secs(15);

/// Milliseconds on a monotonic clock (never 0), for the probes' stamps: a wall clock stepped
/// by NTP must not make a service look stalled.
pub fn clock_ms() -> i64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as i64 + 1
}

/// The runtime's metrics for one service, and the state its probes read.
pub struct Metrics {
    registry: Registry,
    consumed: IntCounterVec,
    emitted: IntCounterVec,
    dead_letters: IntCounterVec,
    duplicates: IntCounterVec,
    lag: IntGaugeVec,
    /// `store.commit`: one batch's state, outbox, offsets and applied ids, in one sled batch.
    pub commit_seconds: Histogram,
    /// One fsync of the store (a group commit covers every batch committed while it ran).
    pub flush_seconds: Histogram,
    /// One publish round: from handing events to Kafka until every one is acknowledged.
    pub publish_seconds: Histogram,
    /// Events committed to the outbox and not yet acknowledged by Kafka.
    pub outbox_events: IntGauge,
    /// Per input partition, set once the partitions are known.
    inputs: OnceLock<HashMap<(Topic, i32), InputFigures>>,
    pub health: Health,
    /// How long fetches long-poll: an idle partition answers at least this often.
    fetch_wait: Duration,
}

/// What is known about one input partition.
struct InputFigures {
    consumed: IntCounter,
    lag: IntGauge,
    /// The next offset this service will commit past (-1: never committed).
    position: AtomicI64,
    /// Where the partition ended (log end, or last stable offset) at its last fetch answer.
    log_end: AtomicI64,
    /// When a fetch last answered for it ([`clock_ms`]).
    answered_ms: AtomicI64,
}

impl Metrics {
    /// Registers the runtime's metrics for `service`. `emits`: the topics it writes, whose
    /// counters start at zero; `consumes`: the topics whose duplicates it counts.
    pub fn new(service: &'static str, consumes: &[Topic], emits: &[Topic], fetch_wait: Duration) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let info = IntGaugeVec::new(Opts::new("saga_service_info", "The service and the runtime's version; always 1."), &["service", "version"])?;
        info.with_label_values(&[service, env!("CARGO_PKG_VERSION")]).set(1);
        let consumed = IntCounterVec::new(
            Opts::new("saga_records_consumed_total", "Records fetched from an input partition and processed (including bad ones parked on DeadLetter)."),
            &["topic", "partition"],
        )?;
        let emitted = IntCounterVec::new(
            Opts::new("saga_events_emitted_total", "Events this service wrote to Kafka and Kafka acknowledged, by topic (after a crash, the outbox's are written again)."),
            &["topic"],
        )?;
        let dead_letters = IntCounterVec::new(
            Opts::new("saga_dead_letters_total", "Records and events this service parked on DeadLetter, by reason code."),
            &["reason"],
        )?;
        let duplicates = IntCounterVec::new(
            Opts::new("saga_duplicates_dropped_total", "Redelivered events dropped because this service already applied them, by topic."),
            &["topic"],
        )?;
        let lag = IntGaugeVec::new(
            Opts::new("saga_consumer_lag", "Records in an input partition past this service's position (log end minus position)."),
            &["topic", "partition"],
        )?;
        let histogram = |name: &str, help: &str| Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()));
        let commit_seconds = histogram("saga_store_commit_duration_seconds", "Writing one batch's effects to the store (state, outbox, offsets, applied ids, atomically).")?;
        let flush_seconds = histogram("saga_store_flush_duration_seconds", "One fsync of the store; events are published only after it.")?;
        let publish_seconds = histogram("saga_publish_duration_seconds", "One publish round, until Kafka acknowledged every event in it (retries included).")?;
        let outbox_events = IntGauge::new("saga_outbox_events", "Events committed to the outbox and not yet acknowledged by Kafka.")?;
        for topic in crate::topics_written(emits) {
            emitted.with_label_values(&[topic.as_str()]);
        }
        for topic in consumes {
            duplicates.with_label_values(&[topic.as_str()]);
        }
        // The reasons the runtime itself parks for; a rule's own (order_id_conflict, …) appear
        // with their first dead letter.
        for reason in shared_events::DecodeError::CODES.iter().chain(&["unreadable_batch", "publish_refused"]) {
            dead_letters.with_label_values(&[reason]);
        }
        registry.register(Box::new(info))?;
        registry.register(Box::new(consumed.clone()))?;
        registry.register(Box::new(emitted.clone()))?;
        registry.register(Box::new(dead_letters.clone()))?;
        registry.register(Box::new(duplicates.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        registry.register(Box::new(commit_seconds.clone()))?;
        registry.register(Box::new(flush_seconds.clone()))?;
        registry.register(Box::new(publish_seconds.clone()))?;
        registry.register(Box::new(outbox_events.clone()))?;
        Ok(Metrics {
            registry,
            consumed,
            emitted,
            dead_letters,
            duplicates,
            lag,
            commit_seconds,
            flush_seconds,
            publish_seconds,
            outbox_events,
            inputs: OnceLock::new(),
            health: Health::default(),
            fetch_wait,
        })
    }

    /// Where a service registers its own metrics (`Service::register_metrics`).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Starts tracking the input partitions, from their stored positions.
    pub fn track_inputs(&self, inputs: impl IntoIterator<Item = ((Topic, i32), Option<i64>)>, now_ms: i64) {
        let figures = inputs
            .into_iter()
            .map(|((topic, partition), position)| {
                let partition_label = partition.to_string();
                let labels = [topic.as_str(), partition_label.as_str()];
                let figures = InputFigures {
                    consumed: self.consumed.with_label_values(&labels),
                    lag: self.lag.with_label_values(&labels),
                    position: AtomicI64::new(position.unwrap_or(-1)),
                    log_end: AtomicI64::new(-1),
                    // Not stalled before its first answer: catching up is reported instead.
                    answered_ms: AtomicI64::new(now_ms),
                };
                ((topic, partition), figures)
            })
            .collect();
        let _ = self.inputs.set(figures);
    }

    fn input(&self, topic: Topic, partition: i32) -> Option<&InputFigures> {
        self.inputs.get()?.get(&(topic, partition))
    }

    /// A fetch answered for a partition: it ended at `log_end`.
    pub fn answered(&self, topic: Topic, partition: i32, log_end: i64, now_ms: i64) {
        if let Some(input) = self.input(topic, partition) {
            input.answered_ms.store(now_ms, Ordering::Relaxed);
            input.log_end.store(log_end, Ordering::Relaxed);
            input.update_lag();
        }
    }

    /// A batch with `records` records from a partition was processed, and committed up to `next_offset`.
    pub fn consumed(&self, topic: Topic, partition: i32, records: usize, next_offset: i64) {
        if let Some(input) = self.input(topic, partition) {
            input.consumed.inc_by(records as u64);
            input.position.store(next_offset, Ordering::Relaxed);
            input.update_lag();
        }
    }

    pub fn duplicate(&self, topic: Topic) {
        self.duplicates.with_label_values(&[topic.as_str()]).inc();
    }

    pub fn dead_letter(&self, reason: &str) {
        self.dead_letters.with_label_values(&[reason]).inc();
    }

    /// Kafka acknowledged these events (their topics, in publishing order).
    pub fn emitted<'a>(&self, topics: impl IntoIterator<Item = &'a str>) {
        // Outbox entries come in runs of one topic: one label lookup per run.
        let mut run: Option<(&str, u64)> = None;
        for topic in topics {
            match &mut run {
                Some((current, n)) if *current == topic => *n += 1,
                _ => {
                    if let Some((done, n)) = run.replace((topic, 1)) {
                        self.emitted.with_label_values(&[done]).inc_by(n);
                    }
                }
            }
        }
        if let Some((done, n)) = run {
            self.emitted.with_label_values(&[done]).inc_by(n);
        }
    }

    /// The exposition, in the Prometheus text format.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        use prometheus::Encoder;
        let mut text = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut text)?;
        String::from_utf8(text).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }

    /// `Ok` if the service is ready for work; otherwise every reason it is not.
    pub fn readiness(&self, now_ms: i64) -> Result<(), Vec<String>> {
        let health = &self.health;
        let mut not = Vec::new();
        if health.stopping.load(Ordering::Relaxed) {
            not.push("stopping".to_owned());
        }
        if !health.connected.load(Ordering::Relaxed) {
            not.push("not connected to Kafka yet".to_owned());
        } else if !health.caught_up.load(Ordering::Relaxed) {
            not.push("catching up with where its inputs stood at start".to_owned());
        }
        // While the loop waits for the publisher, fetches wait for the loop: that is the
        // publisher's stall, reported below, not the fetch's.
        let handing_over = health.handing_over_since_ms.load(Ordering::Relaxed) > 0;
        let stall_ms = (STALL + self.fetch_wait).as_millis() as i64;
        let mut stalled: Vec<String> = self
            .inputs
            .get()
            .into_iter()
            .flatten()
            .filter(|_| !handing_over)
            .filter(|(_, input)| now_ms - input.answered_ms.load(Ordering::Relaxed) > stall_ms)
            .map(|((topic, partition), _)| format!("{topic}/{partition}"))
            .collect();
        if !stalled.is_empty() {
            stalled.sort();
            not.push(format!("fetch stalled: no answer for over {} s from {}", stall_ms / 1000, stalled.join(", ")));
        }
        let waiting = health.unacknowledged_since_ms.load(Ordering::Relaxed);
        if waiting > 0 && now_ms - waiting > STALL.as_millis() as i64 {
            not.push(format!(
                "publisher jammed: Kafka has acknowledged no publish for {} s (retrying; the events wait in the outbox)",
                (now_ms - waiting) / 1000
            ));
        }
        if not.is_empty() {
            Ok(())
        } else {
            Err(not)
        }
    }

    /// `Ok` if the process is alive and its loop is turning (or not started yet).
    pub fn liveness(&self, now_ms: i64) -> Result<(), String> {
        let turned = self.health.loop_turned_ms.load(Ordering::Relaxed);
        let quiet = now_ms - turned;
        if turned > 0 && quiet > LOOP_STALL.as_millis() as i64 {
            return Err(format!("the loop has not turned for {} s", quiet / 1000));
        }
        Ok(())
    }
}

/// The step's counts, as the families above.
impl saga_core::StepMetrics for Metrics {
    fn dead_letter(&self, reason: &str) {
        Metrics::dead_letter(self, reason);
    }

    fn duplicate(&self, topic: Topic) {
        Metrics::duplicate(self, topic);
    }

    fn consumed(&self, topic: Topic, partition: i32, records: usize, next_offset: i64) {
        Metrics::consumed(self, topic, partition, records, next_offset);
    }
}

impl InputFigures {
    fn update_lag(&self) {
        let end = self.log_end.load(Ordering::Relaxed);
        if end >= 0 {
            self.lag.set((end - self.position.load(Ordering::Relaxed).max(0)).max(0));
        }
    }
}

/// What the probes judge, set by the loop and the publisher.
#[derive(Debug, Default)]
pub struct Health {
    /// When the loop last turned ([`clock_ms`]; 0: not started).
    loop_turned_ms: AtomicI64,
    connected: AtomicBool,
    caught_up: AtomicBool,
    /// Since when a publish has waited for Kafka's acknowledgement, retries included (0: none).
    unacknowledged_since_ms: AtomicI64,
    /// Since when the loop has waited for the publisher to take a durable commit (0: it does not).
    handing_over_since_ms: AtomicI64,
    stopping: AtomicBool,
}

impl Health {
    pub fn turned(&self, now_ms: i64) {
        self.loop_turned_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn connected(&self) {
        self.connected.store(true, Ordering::Relaxed);
    }

    pub fn caught_up(&self) {
        self.caught_up.store(true, Ordering::Relaxed);
    }

    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// A publish is sent to Kafka; a retry keeps the first attempt's time.
    pub fn publish_sent(&self, now_ms: i64) {
        let _ = self.unacknowledged_since_ms.compare_exchange(0, now_ms, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Kafka answered the publish (or the round ended): nothing waits for it.
    pub fn publish_answered(&self) {
        self.unacknowledged_since_ms.store(0, Ordering::Relaxed);
    }

    /// The loop starts (`Some`) or stops (`None`) waiting for the publisher.
    pub fn handing_over(&self, since_ms: Option<i64>) {
        self.handing_over_since_ms.store(since_ms.unwrap_or(0), Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn metrics() -> Metrics {
        let m = Metrics::new("payment-service", &[Topic::OrderCreated], &[Topic::PaymentCompleted], Duration::from_millis(250)).unwrap();
        m.track_inputs([((Topic::OrderCreated, 0), Some(10)), ((Topic::OrderCreated, 1), None)], NOW);
        m
    }

    fn ready(m: &Metrics) {
        m.health.connected();
        m.health.caught_up();
    }

    #[test]
    fn lag_is_log_end_minus_position_from_either_side() {
        let m = metrics();
        m.answered(Topic::OrderCreated, 0, 25, NOW);
        m.answered(Topic::OrderCreated, 1, 4, NOW);
        let text = m.encode().unwrap();
        assert!(text.contains(r#"saga_consumer_lag{partition="0",topic="OrderCreated"} 15"#), "{text}");
        assert!(text.contains(r#"saga_consumer_lag{partition="1",topic="OrderCreated"} 4"#), "{text}");
        m.consumed(Topic::OrderCreated, 0, 12, 22);
        let text = m.encode().unwrap();
        assert!(text.contains(r#"saga_consumer_lag{partition="0",topic="OrderCreated"} 3"#), "{text}");
        assert!(text.contains(r#"saga_records_consumed_total{partition="0",topic="OrderCreated"} 12"#), "{text}");
        // Counters of what may happen start at zero, so rates and sums exist from the start.
        assert!(text.contains(r#"saga_events_emitted_total{topic="DeadLetter"} 0"#), "{text}");
        assert!(text.contains(r#"saga_duplicates_dropped_total{topic="OrderCreated"} 0"#), "{text}");
    }

    #[test]
    fn emitted_events_are_counted_by_topic() {
        let m = metrics();
        m.emitted(["PaymentCompleted", "PaymentCompleted", "DeadLetter", "PaymentCompleted"]);
        let text = m.encode().unwrap();
        assert!(text.contains(r#"saga_events_emitted_total{topic="PaymentCompleted"} 3"#), "{text}");
        assert!(text.contains(r#"saga_events_emitted_total{topic="DeadLetter"} 1"#), "{text}");
    }

    #[test]
    fn readiness_names_every_reason() {
        let m = metrics();
        assert_eq!(m.readiness(NOW), Err(vec!["not connected to Kafka yet".to_owned()]));
        m.health.connected();
        assert_eq!(m.readiness(NOW), Err(vec!["catching up with where its inputs stood at start".to_owned()]));
        m.health.caught_up();
        assert_eq!(m.readiness(NOW), Ok(()));
        // Partition 1 answers, partition 0 goes quiet past the stall.
        let later = NOW + 6_000;
        m.answered(Topic::OrderCreated, 1, 0, later);
        assert_eq!(m.readiness(later), Err(vec!["fetch stalled: no answer for over 5 s from OrderCreated/0".to_owned()]));
        m.answered(Topic::OrderCreated, 0, 0, later);
        assert_eq!(m.readiness(later), Ok(()));
    }

    #[test]
    fn a_publish_unanswered_past_the_stall_is_a_jam_and_quiet_fetches_are_not_blamed_for_it() {
        let m = metrics();
        ready(&m);
        m.health.publish_sent(NOW);
        m.health.publish_sent(NOW + 3_000); // a retry: the wait began with the first attempt
        assert_eq!(m.readiness(NOW + 4_000), Ok(()), "a slow answer is not a jam yet");
        // The loop waits for the publisher, so it takes nothing from the fetches.
        m.health.handing_over(Some(NOW + 1_000));
        let jammed = "publisher jammed: Kafka has acknowledged no publish for 7 s (retrying; the events wait in the outbox)";
        assert_eq!(m.readiness(NOW + 7_000), Err(vec![jammed.to_owned()]));
        m.health.publish_answered();
        m.health.handing_over(None);
        m.answered(Topic::OrderCreated, 0, 0, NOW + 7_000);
        m.answered(Topic::OrderCreated, 1, 0, NOW + 7_000);
        assert_eq!(m.readiness(NOW + 7_000), Ok(()));
        m.health.stopping();
        assert_eq!(m.readiness(NOW + 7_000), Err(vec!["stopping".to_owned()]));
    }

    #[test]
    fn liveness_fails_only_once_the_loop_stops_turning() {
        let m = metrics();
        assert_eq!(m.liveness(NOW), Ok(()), "starting up (connecting, publishing the outbox) is alive");
        m.health.turned(NOW);
        assert_eq!(m.liveness(NOW + 14_000), Ok(()));
        assert_eq!(m.liveness(NOW + 16_000), Err("the loop has not turned for 16 s".to_owned()));
    }

    #[test]
    fn the_exposition_is_the_prometheus_text_format() {
        let m = metrics();
        m.dead_letter("invalid_json");
        m.commit_seconds.observe(0.002);
        let text = m.encode().unwrap();
        for line in [
            "# TYPE saga_dead_letters_total counter",
            r#"saga_dead_letters_total{reason="invalid_json"} 1"#,
            r#"saga_dead_letters_total{reason="unreadable_batch"} 0"#,
            "# TYPE saga_store_commit_duration_seconds histogram",
            r#"saga_store_commit_duration_seconds_bucket{le="0.0025"} 1"#,
            r#"saga_service_info{service="payment-service",version="0.1.0"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
        }
    }
}
