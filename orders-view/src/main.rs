//! orders-view: "where is my order?", and the business's numbers. The query side of the saga.
//!
//! Consumes                 Keeps (sled, from events alone)           Serves (HTTP JSON)
//! every order-saga   ──▶  each order's view, through order-     ──▶  GET /orders/{id}
//! topic (DeadLetter        service's own rules; each customer's       GET /customers/{id}/orders
//! too)
//!                          orders; counts all-time and per hour       GET /stats, /healthz, /
//!
//! Emits nothing: it never takes part in the saga. Delete its store and it rebuilds the same
//! answers from the topics.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use orders_view_rules::OrdersView;

mod api;

/// Serves each order's state, each customer's orders and the saga's numbers, from the events.
#[derive(Parser)]
#[command(name = "orders-view", version, about, long_about = None)]
struct Cli {
    /// Where the HTTP API and the page listen (`HOST:PORT`; port 0 picks a free one).
    #[arg(long, env = "SAGA_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: String,
    /// Threads answering requests: with two, one answers while the other waits for a core (a
    /// busy host, a collector's pause next door). 1 answers on the accepting thread.
    #[arg(long, env = "SAGA_HTTP_THREADS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    http_threads: u16,
    #[command(flatten)]
    runtime: saga_runtime::RuntimeArgs,
}

#[global_allocator]
static ALLOCATOR: saga_runtime::Allocator = saga_runtime::Allocator;

/// The view's default for `--store-cache-mb`, in place of the services' 4. Every request reads
/// a row, and an order's row is rewritten as its events arrive: with 4 MiB, nearly every read
/// and write pulled its page back from the log, and the view fell behind the half-rate saga
/// (BENCHMARKS.md).
const STORE_CACHE_MB: &str = "256";

fn main() -> ExitCode {
    let matches = Cli::command().mut_arg("store_cache_mb", |arg| arg.default_value(STORE_CACHE_MB)).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let (addr, threads) = (cli.http_addr, usize::from(cli.http_threads));
    let serve: saga_runtime::Alongside = Box::new(move |store| {
        let endpoint =
            saga_runtime::endpoint::serve_router("the orders view", &addr, api::router(store), threads).map_err(|e| e.to_string())?;
        tracing::info!(addr = %endpoint.local_addr, "serving the orders view: /orders/{{id}}, /customers/{{id}}/orders, /stats, /");
        Ok(Box::new(endpoint))
    });
    saga_runtime::main_with(OrdersView::default(), cli.runtime, Some(serve))
}
