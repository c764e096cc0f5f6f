//! The durable consume → commit → publish loop that every saga service runs on, written once.
//!
//! A service supplies its rules as a [`Service`] (from `saga-core`, which does no I/O): the
//! topics it consumes, its state tables, and a `handle` function from one event to the events
//! it emits. The runtime does all the I/O:
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
//! - [`step`] (`saga-core`): the loop's sans-IO step: a batch or a timer tick into a commit.
//! - [`kafka`]: connecting, topic creation, the fetch task, the publisher.
//! - [`metrics`], [`endpoint`]: what `/metrics` reports and the probes judge; their HTTP server.
//! - [`store`]: the sled store (state rows, offsets, outbox, applied ids).
//! - [`state`] (`saga-core`): [`Table`], the in-memory map rules read and write.
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
pub mod store;

pub use config::{LogFormat, RuntimeArgs, RuntimeConfig};
pub use engine::{main, main_with, run, run_with, Alongside, RuntimeError};
pub use logging::init_logging;
pub use shutdown::shutdown_signal;
// The rules' side of the contract, and the step, live in `saga-core` (no I/O); re-exported so
// the runtime's modules and its users name one path.
pub use saga_core::{prometheus, state, step, topics_written, Context, PersistentTable, Service, Table, TimerEvent};

/// The allocator each service binary declares as its `#[global_allocator]`. Each event costs
/// many small, short-lived allocations (fetched records, JSON, sled's node copies); glibc's
/// allocator spent about a fifth of a service's CPU on them under load, mimalloc a fraction of
/// that (BENCHMARKS.md). `.cargo/config.toml` makes it commit memory lazily.
pub use mimalloc::MiMalloc as Allocator;
