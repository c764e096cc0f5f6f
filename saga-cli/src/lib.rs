//! `saga`: the whole saga's history, read straight from its topics — no coordinator, no
//! extra store. The topics already hold every step of every order.
//!
//! # Layout
//! - [`analysis`]: pure functions over recorded events: an order's state (derived with the
//!   order service's own rules), stuck sagas, and the audit of the saga's invariants.
//! - [`render`]: one line per event, for people, optionally coloured.
//! - [`io`]: reading every topic from the start, following them live, publishing.
//! - [`access`]: the Kafka ACLs each service, the storefront and monitors need (`saga acl`).

pub mod access;
pub mod analysis;
pub mod io;
pub mod render;
pub mod trips;

pub use analysis::Recorded;
