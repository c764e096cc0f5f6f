//! payment-service: the customer's wallet.
//!
//! Consumes                    Decides                               Emits
//! OrderCreated        ──▶  charge Σ quantity × unit price  ──▶  PaymentCompleted (lines + address
//!                          from the customer's wallet           carried on) | PaymentFailed
//!                                                               (insufficient_funds, unknown_customer)
//! OrderCancelled      ──▶  refund exactly what was charged ──▶  PaymentRefunded (compensation)
//!                          (never charged: remember the
//!                          cancellation, never charge it)
//!
//! State (sled): `wallets` (customer → cents), `payments` (order → charged/refunded/declined).
//! Demo wallets on first start: alice 100000, bob 1000 (`--seed FILE` replaces them).

use std::process::ExitCode;

use clap::Parser;
use payment_rules::Payment;

/// Charges and refunds customers' wallets for the order saga.
#[derive(Parser)]
#[command(name = "payment-service", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    runtime: saga_runtime::RuntimeArgs,
}

#[global_allocator]
static ALLOCATOR: saga_runtime::Allocator = saga_runtime::Allocator;

fn main() -> ExitCode {
    saga_runtime::main(Payment::default(), Cli::parse().runtime)
}
