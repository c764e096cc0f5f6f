//! flight-service: seats per flight and date, reserved for trips all or nothing.
//!
//! Consumes                Decides                                Emits
//! TripRequested     ──▶  a flight asked for? that many seats  ──▶  FlightReserved | FlightUnavailable
//!                        free on that flight that day?             (sold_out, unknown_resource)
//! TripCancelled     ──▶  give back what the trip holds, once  ──▶  FlightReleased (compensation)
//!                        (nothing reserved yet: remember, and
//!                        never reserve it)
//!
//! State (sled): `capacity` (flight → seats a day), `free` (flight/date → seats left),
//! `trips` (trip → reserved, released or unavailable).
//! Demo flights on first start: LH400 150, BA981 120 and QF1 2 seats a day (`--seed FILE`
//! replaces them).

use std::process::ExitCode;

use clap::Parser;
use flight_rules::Flights;

/// Reserves and releases seats per flight and date for the travel saga.
#[derive(Parser)]
#[command(name = "flight-service", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    runtime: saga_runtime::RuntimeArgs,
}

#[global_allocator]
static ALLOCATOR: saga_runtime::Allocator = saga_runtime::Allocator;

fn main() -> ExitCode {
    saga_runtime::main(Flights::default(), Cli::parse().runtime)
}
