//! What a saga participant's rules are written against, and the sans-IO step that runs them.
//!
//! A service supplies its rules as a [`Service`]: the topics it consumes and emits, its state
//! [`Table`]s, and a `handle` function from one event to the events it emits. [`step`] turns a
//! batch of fetched records (or a timer tick) into the [`Commit`] it makes: changed rows,
//! outbox entries, next offsets, applied ids.
//!
//! This crate does no I/O and depends on nothing that could: no Kafka client, no store, no
//! async runtime. The services' rules depend on it alone, so the dependency graph, not a
//! convention, keeps them away from sled and Kafka. `saga-runtime` drives the step with sled
//! and rskafka; `saga-sim` drives the same step with models of both.
//!
//! # Layout
//! - [`Service`], [`Context`], [`TimerEvent`]: the rules' side of the contract.
//! - [`state`]: [`Table`], the in-memory map rules read and write, and what a store attaches.
//! - [`fetched`]: the records the step reads, as plain data.
//! - [`commit`]: what one step changes, to be written atomically.
//! - [`step`]: decode, dedup, handle, dead letters; the timer tick.

pub mod commit;
pub mod fetched;
pub mod state;
pub mod step;

use serde::de::DeserializeOwned;
use shared_events::{Envelope, Event, Topic};

pub use commit::{Commit, OutboxEntry};
pub use fetched::{Fetched, Record, UnreadableBatch};
pub use state::{PersistentTable, RowError, Table};
pub use step::{AppliedIds, StepMetrics};
/// The metrics library services register their own metrics with (`Service::register_metrics`).
pub use prometheus;

/// What a rule may know besides the event: the time, and the partition the event came from
/// (the order's partition, for events a service emits later on its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub now_ms: i64,
    pub partition: i32,
}

/// An event a service emits on its own as time passes (e.g. a saga deadline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerEvent {
    pub event: Event,
    /// The order's partition (see [`Context::partition`]).
    pub partition: i32,
    pub saga_started_at_ms: i64,
}

/// A saga participant's rules and state, free of I/O.
///
/// `handle` and `on_timer` must be deterministic given the state, the input and the time: the
/// runtime relies on that to make a replayed batch produce the same effects and event ids.
pub trait Service: Send + 'static {
    /// The binary's name, e.g. `payment-service`; used in logs and dead letters.
    const NAME: &'static str;
    /// The topics it reads.
    const CONSUMES: &'static [Topic];
    /// The topics its rules write (`handle` and `on_timer` return only these events). The
    /// runtime may also write `DeadLetter` for any service, for input it cannot process.
    /// With `CONSUMES`, this is what the service's Kafka ACLs grant (`saga acl`), and what it
    /// checks it may do at start-up.
    const EMITS: &'static [Topic];
    /// The data loaded on first start (demo data by default, or `--seed FILE`).
    type Seed: DeserializeOwned + Default;
    /// Log targets (crates) whose events the binary does not print unless `RUST_LOG` names
    /// them: a view that replays another service's rules would otherwise tell that service's
    /// story ("saga failed → OrderCancelled") as its own.
    const SILENCED_LOGS: &'static [&'static str] = &[];

    /// Fills an empty store.
    fn seed(&mut self, seed: Self::Seed);

    /// Reacts to one event from `CONSUMES`; returns the events to emit.
    fn handle(&mut self, input: &Envelope, ctx: &Context) -> Vec<Event>;

    /// Called about once a second; returns events due by `now_ms`. Most services have none.
    fn on_timer(&mut self, _now_ms: i64) -> Vec<TimerEvent> {
        Vec::new()
    }

    /// The tables that make up the state, for loading and persisting.
    fn tables(&mut self) -> Vec<&mut dyn PersistentTable>;

    /// Registers the service's own metrics beside the runtime's (order-service: its sagas'
    /// outcomes). Called once, with the state loaded and before anything is consumed, when the
    /// binary serves metrics (`--metrics-addr`).
    fn register_metrics(&mut self, _registry: &prometheus::Registry) -> prometheus::Result<()> {
        Ok(())
    }

    /// Updates those metrics after a step (`handle` or `on_timer`), from what it emitted and
    /// the state it left. Observation only: nothing here may change what the rules decide.
    fn observe(&mut self, _emitted: &[Event]) {}
}

/// Every topic a service with these `EMITS` writes: those, and `DeadLetter`, which the runtime
/// writes for any service. What its ACLs grant and what it checks at start-up.
pub fn topics_written(emits: &[Topic]) -> Vec<Topic> {
    let mut writes = emits.to_vec();
    if !writes.contains(&Topic::DeadLetter) {
        writes.push(Topic::DeadLetter);
    }
    writes
}
