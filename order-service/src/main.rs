//! order-service: the order's own record, and the end of every saga.
//!
//! Consumes                                Decides                          Emits
//! OrderCreated, PaymentCompleted,   ──▶  record the step (pending → paid
//! StockReserved                          → reserved)
//! ShipmentScheduled                 ──▶  the order shipped            ──▶  OrderCompleted
//! PaymentFailed, StockFailed,       ──▶  the order failed             ──▶  OrderCancelled (reason),
//! ShippingFailed                                                            which payment and
//!                                                                           inventory undo
//! PaymentRefunded, StockReleased    ──▶  log when every compensation the cancelled order
//!                                        waits for has arrived
//!
//! State (sled): `orders` (order → facts learned; status derived from them).

use std::process::ExitCode;

use clap::Parser;
use order_service::Orders;

/// Tracks orders through the saga and ends each one, completed or cancelled.
#[derive(Parser)]
#[command(name = "order-service", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    runtime: saga_runtime::RuntimeArgs,
}

fn main() -> ExitCode {
    saga_runtime::main::<Orders>(Cli::parse().runtime)
}
