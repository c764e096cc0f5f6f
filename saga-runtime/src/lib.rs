//! The durable consume → commit → publish loop that every saga service runs on, written once.
//!
//! A service supplies its rules as a [`Service`]: the topics it consumes, its state tables, and
//! a `handle` function from one event to the events it emits. The runtime does all the I/O:
//!
//! ```text
//!            ┌──── one fetch request per broker, for every input partition ───────┐
//!  Kafka ──▶ │ fetch from the stored offsets ─▶ channel                           │
//!            └─────────────────────────────────────┬──────────────────────────────┘
//!                                                  ▼
//!   batch ─▶ decode ──bad──▶ DeadLetter entry ─────┐
//!              │ok                                  │
//!              ▼                                    ▼
//!      already applied? ─yes─▶ skip        ┌─ one sled batch (atomic) ──────────┐
//!              │no                         │ changed state rows                 │
//!              ▼                           │ outbox entries (events to emit)    │
//!      Service::handle ──▶ events ───────▶ │ next offsets, applied event ids    │
//!                                          └──────────────┬─────────────────────┘
//!                              flush (fsync), in the background: one flush covers
//!                              every commit made while the last one ran (group commit)
//!                                                         ▼
//!             publishing task (FIFO): publish outbox to Kafka ─▶ delete published entries
//! ```
//!
//! On start the runtime publishes whatever the outbox still holds, then resumes fetching at the
//! stored offsets. Effects happen exactly once (state, offsets and applied ids change together);
//! publishing is at least once (a crash after the flush republishes), and consumers drop
//! duplicates by event id.
//!
//! # Layout
//! - [`config`]: flags and environment shared by every binary.
//! - [`security`]: TLS and SASL settings (the Java client's names), checked at start-up.
//! - [`engine`]: the loop above ([`run`]), its I/O and its tasks.
//! - [`step`]: the loop's sans-IO step: a batch or a timer tick into a commit.
//! - [`kafka`]: connecting, topic creation, the fetch task, the publisher.
//! - [`metrics`], [`endpoint`]: what `/metrics` reports and the probes judge; their HTTP server.
//! - [`store`]: the sled store (state rows, offsets, outbox, applied ids).
//! - [`state`]: [`Table`], the in-memory map rules read and write.
//! - [`logging`], [`shutdown`]: tracing set-up; Ctrl-C/SIGTERM.

// rskafka's nested futures inside the publishing task exceed the default layout depth.
#![recursion_limit = "256"]

pub mod config;
pub mod endpoint;
pub mod engine;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod security;
pub mod shutdown;
pub mod state;
pub mod step;
pub mod store;

use serde::de::DeserializeOwned;
use shared_events::{Envelope, Event, Topic};

pub use config::{LogFormat, RuntimeArgs, RuntimeConfig};
pub use engine::{main, run, RuntimeError};
pub use logging::init_logging;
pub use shutdown::shutdown_signal;
pub use state::{PersistentTable, Table};
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

/// The allocator each service binary declares as its `#[global_allocator]`. Each event costs
/// many small, short-lived allocations (fetched records, JSON, sled's node copies); glibc's
/// allocator spent about a fifth of a service's CPU on them under load, mimalloc a fraction of
/// that (BENCHMARKS.md). `.cargo/config.toml` makes it commit memory lazily.
pub use mimalloc::MiMalloc as Allocator;
