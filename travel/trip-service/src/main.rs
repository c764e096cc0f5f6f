//! trip-service: each trip's own record, and the end of every travel saga.
//!
//! Consumes                                   Decides                              Emits
//! TripRequested, FlightReserved,       ──▶  record what each leg said, in any
//! HotelReserved, CarReserved                order; every requested leg
//!                                           reserved?                       ──▶  TripReserved (billing charges)
//! FlightUnavailable, HotelUnavailable, ──▶  a leg cannot be had             ──▶  TripCancelled, from which
//! CarUnavailable                                                                 every leg that reserved
//!                                                                                releases itself
//! TripCharged | TripChargeDeclined     ──▶  the pivot's answer              ──▶  TripConfirmed | TripCancelled
//! TripCancellationRequested            ──▶  charge not asked for yet?       ──▶  TripCancelled | TripCancellationRefused
//! (a timer, every second)              ──▶  reserving past --trip-deadline? ──▶  TripCancelled (deadline)
//! FlightReleased, HotelReleased,       ──▶  record the compensations a cancelled trip awaits
//! CarReleased
//!
//! State (sled): `trips` (trip → what each leg said, the request, the status).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use trip_rules::Trips;

/// Tracks trips through the travel saga and ends each one, confirmed or cancelled.
#[derive(Parser)]
#[command(name = "trip-service", version, about, long_about = None)]
struct Cli {
    /// Cancel a trip not reserved in full this long after it was requested (e.g. 500ms, 30s,
    /// 5m; 0 = never). Once the charge is asked for, the deadline no longer applies.
    #[arg(long, env = "TRIP_DEADLINE", default_value = "30s", value_parser = saga_runtime::config::parse_duration)]
    trip_deadline: Duration,

    #[command(flatten)]
    runtime: saga_runtime::RuntimeArgs,
}

#[global_allocator]
static ALLOCATOR: saga_runtime::Allocator = saga_runtime::Allocator;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let deadline = Some(cli.trip_deadline).filter(|d| !d.is_zero());
    saga_runtime::main(Trips::new(deadline), cli.runtime)
}
