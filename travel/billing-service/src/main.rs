//! billing-service: the charge for a trip, the travel saga's pivot.
//!
//! Consumes               Decides                                  Emits
//! TripReserved     ──▶  charge the trip's total from the     ──▶  TripCharged | TripChargeDeclined
//!                       customer's wallet (payment-rules'         (insufficient_funds,
//!                       wallet logic, shared, not copied)         unknown_customer)
//!
//! Never refunds: past the charge the trip is confirmed, and trip-service refuses a
//! cancellation once it has asked for it.
//!
//! State (sled): `wallets` (customer → cents), `trips` (trip → charged/declined).
//! Demo wallets on first start: alice 100000, bob 1000 (`--seed FILE` replaces them).

use std::process::ExitCode;

use billing_rules::Billing;
use clap::Parser;

/// Charges customers' wallets for trips.
#[derive(Parser)]
#[command(name = "billing-service", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    runtime: saga_runtime::RuntimeArgs,
}

#[global_allocator]
static ALLOCATOR: saga_runtime::Allocator = saga_runtime::Allocator;

fn main() -> ExitCode {
    saga_runtime::main(Billing::default(), Cli::parse().runtime)
}
