//! car-service: cars per rental location and day, reserved for trips all or nothing.
//!
//! Consumes                Decides                                Emits
//! TripRequested     ──▶  a car asked for? that many cars      ──▶  CarReserved | CarUnavailable
//!                        free every day of the rental?             (sold_out, unknown_resource)
//! TripCancelled     ──▶  give back what the trip holds, once  ──▶  CarReleased (compensation)
//!                        (nothing reserved yet: remember, and
//!                        never reserve it)
//!
//! State (sled): `capacity` (location → cars a day), `free` (location/day → cars left),
//! `trips` (trip → reserved, released or unavailable).
//! Demo locations on first start: BER 10, LHR 12 and SYD 4 cars a day (`--seed FILE`
//! replaces them).

use std::process::ExitCode;

use clap::Parser;
use car_rules::Cars;

/// Reserves and releases cars per rental location and day for the travel saga.
#[derive(Parser)]
#[command(name = "car-service", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    runtime: saga_runtime::RuntimeArgs,
}

#[global_allocator]
static ALLOCATOR: saga_runtime::Allocator = saga_runtime::Allocator;

fn main() -> ExitCode {
    saga_runtime::main(Cars::default(), Cli::parse().runtime)
}
