//! shipping-service: books parcels.
//!
//! Consumes                    Decides                               Emits
//! StockReserved       ──▶  is the destination country served? ──▶  ShipmentScheduled
//!                                                                  | ShippingFailed
//!                                                                    (destination_not_served)
//! OrderCancelled      ──▶  was a shipment booked meanwhile?    ──▶  ShipmentCancelled
//!                          (a deadline or a customer raced the      (compensation)
//!                          booking; not booked: remember it,
//!                          never book it)
//! State (sled): `countries` (served), `shipments` (order → scheduled/refused).
//! Demo countries on first start: US CA GB DE FR NL JP (`--seed FILE` replaces them).

use std::process::ExitCode;

use clap::Parser;
use shipping_rules::Shipping;

/// Books shipments for the order saga.
#[derive(Parser)]
#[command(name = "shipping-service", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    runtime: saga_runtime::RuntimeArgs,
}

#[global_allocator]
static ALLOCATOR: saga_runtime::Allocator = saga_runtime::Allocator;

fn main() -> ExitCode {
    saga_runtime::main(Shipping::default(), Cli::parse().runtime)
}
