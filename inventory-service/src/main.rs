//! inventory-service: stock on hand.
//!
//! Consumes                    Decides                               Emits
//! PaymentCompleted    ──▶  reserve every line, or none       ──▶  StockReserved (address carried on)
//!                                                                 | StockFailed (out_of_stock,
//!                                                                   unknown_sku: which SKU, how many)
//! OrderCancelled      ──▶  release exactly what was reserved ──▶  StockReleased (compensation)
//!                          (never reserved: remember the
//!                          cancellation, never reserve it)
//!
//! State (sled): `stock` (SKU → units), `reservations` (order → reserved/released/refused).
//! Demo stock on first start: widget 100, gadget 5, gizmo 0 (`--seed FILE` replaces it).

use std::process::ExitCode;

use clap::Parser;
use inventory_rules::Inventory;

/// Reserves and releases stock for the order saga.
#[derive(Parser)]
#[command(name = "inventory-service", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    runtime: saga_runtime::RuntimeArgs,
}

#[global_allocator]
static ALLOCATOR: saga_runtime::Allocator = saga_runtime::Allocator;

fn main() -> ExitCode {
    saga_runtime::main(Inventory::default(), Cli::parse().runtime)
}
