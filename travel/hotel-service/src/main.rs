//! hotel-service: rooms per hotel and night, reserved for trips all or nothing.
//!
//! Consumes                Decides                                Emits
//! TripRequested     ──▶  a stay asked for? that many rooms    ──▶  HotelReserved | HotelUnavailable
//!                        free every night of it?                   (sold_out, unknown_resource)
//! TripCancelled     ──▶  give back what the trip holds, once  ──▶  HotelReleased (compensation)
//!                        (nothing reserved yet: remember, and
//!                        never reserve it)
//!
//! State (sled): `capacity` (hotel → rooms a night), `free` (hotel/night → rooms left),
//! `trips` (trip → reserved, released or unavailable).
//! Demo hotels on first start: adlon 20, savoy 15 and tiny-inn 1 room a night (`--seed FILE`
//! replaces them).

use std::process::ExitCode;

use clap::Parser;
use hotel_rules::Hotels;

/// Reserves and releases rooms per hotel and night for the travel saga.
#[derive(Parser)]
#[command(name = "hotel-service", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    runtime: saga_runtime::RuntimeArgs,
}

#[global_allocator]
static ALLOCATOR: saga_runtime::Allocator = saga_runtime::Allocator;

fn main() -> ExitCode {
    saga_runtime::main(Hotels::default(), Cli::parse().runtime)
}
