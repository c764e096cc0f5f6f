//! order-service: the order's own record, and the end of every saga.
//!
//! Consumes                                Decides                          Emits
//! OrderCreated, PaymentCompleted,   ──▶  record the step (pending → paid
//! StockReserved                          → reserved)
//! ShipmentScheduled                 ──▶  the order shipped            ──▶  OrderCompleted
//! PaymentFailed, StockFailed,       ──▶  the order failed             ──▶  OrderCancelled (reason),
//! ShippingFailed                                                            which payment and
//!                                                                           inventory undo
//! OrderCancellationRequested        ──▶  not shipped yet?              ──▶  OrderCancelled (customer_request)
//!                                                                         | OrderCancellationRefused
//! (a timer, every second)           ──▶  open past --saga-deadline?   ──▶  OrderCancelled (timeout)
//! PaymentRefunded, StockReleased,   ──▶  log when every compensation the cancelled order
//! ShipmentCancelled                      waits for has arrived
//!
//! State (sled): `orders` (order → facts learned; status derived from them).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use order_rules::Orders;

/// Tracks orders through the saga and ends each one, completed or cancelled.
#[derive(Parser)]
#[command(name = "order-service", version, about, long_about = None)]
struct Cli {
    /// Cancel an order that reached no terminal state this long after it was created
    /// (e.g. 500ms, 30s, 5m; 0 = never).
    #[arg(long, env = "SAGA_DEADLINE", default_value = "30s", value_parser = saga_runtime::config::parse_duration)]
    saga_deadline: Duration,

    #[command(flatten)]
    runtime: saga_runtime::RuntimeArgs,
}

#[global_allocator]
static ALLOCATOR: saga_runtime::Allocator = saga_runtime::Allocator;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let deadline = Some(cli.saga_deadline).filter(|d| !d.is_zero());
    saga_runtime::main(Orders::new(deadline), cli.runtime)
}
