//! `saga-bench`: how many sagas per second, how fast each, and at what cost — measured the
//! same way every time, against the broker's own ceiling on the same machine.
//!
//! One invocation runs, each with fresh topics (a unique prefix, deleted after it unless
//! `--keep-topics`) and fresh service stores:
//! 1. the **ceiling**: four relays (consume → produce, no logic, no store) moving N records
//!    through the same number of hops as a saga;
//! 2. the **saga**, saturated: N orders as fast as they can be published;
//! 3. the saga at **half** that throughput, for latency;
//! 4. the saga saturated **without fsync** (`--unsafe-skip-fsync`), for the cost of durability.
//!
//! It starts the four service binaries itself (from `--bin-dir`) against `--bootstrap-servers`
//! and samples their RSS and CPU from /proc. `scripts/bench.sh` starts a broker and runs it.
//! `--with-view` adds the orders view: its lag when the last order ends, and (`--view-rps`)
//! its answers' latency under a fixed request rate.

mod load;
mod procs;
mod relay;
mod report;
mod view;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

/// Measure saga throughput and latency against Kafka's own hop ceiling.
#[derive(Parser, Debug, Clone)]
#[command(name = "saga-bench", version, about, long_about = None)]
pub struct Args {
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "localhost:9092")]
    pub bootstrap_servers: String,
    /// TLS and SASL, for the load generator and the services it starts alike.
    #[command(flatten)]
    pub security: saga_runtime::security::SecurityArgs,
    /// Compression of what the services and the ceiling's relays write (orders are sent
    /// uncompressed, as a storefront would).
    #[arg(long, value_enum, default_value = "none")]
    pub compression: saga_runtime::config::CompressionArg,
    /// Where the release service binaries are.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Orders per run.
    #[arg(long, default_value_t = 50_000)]
    pub orders: usize,
    /// Partitions per topic.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// Lines per order (payload size).
    #[arg(long, default_value_t = 1)]
    pub items: usize,
    /// Outcome mix in percent: completed,payment_failed,stock_failed,shipping_failed.
    #[arg(long, default_value = "70,10,10,10", value_parser = parse_mix)]
    pub mix: [u32; 4],
    /// Only these phases (comma-separated): ceiling,saga,half,unsafe.
    #[arg(long, value_delimiter = ',', default_value = "ceiling,saga,half,unsafe")]
    pub phases: Vec<String>,
    /// Publish at this many orders/s instead of as fast as possible (every phase but half).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Long-poll wait of every fetch (relays and services), in milliseconds.
    #[arg(long, default_value_t = 250)]
    pub fetch_wait_ms: i32,
    /// The services' `--fetch-linger-ms` (and the view's, where its `--fetch-min-bytes` leaves
    /// it on): 0, the services' default, reads a stream as it comes; 20 trades latency for
    /// CPU on a busy machine (BENCHMARKS.md, session 11).
    #[arg(long, default_value_t = 0)]
    pub fetch_linger_ms: i32,
    /// Orders sent (at the run's rate) and completed before measuring, per run: a fresh
    /// broker compiles its hot paths and services open their connections in the first seconds.
    #[arg(long, default_value_t = 10_000)]
    pub warmup: usize,
    /// Also print each run's latency by half-second of sending (where the tail comes from).
    #[arg(long)]
    pub timeline: bool,
    /// The broker's process id, to report its CPU per run (`scripts/bench.sh` passes it).
    #[arg(long, env = "BENCH_BROKER_PID")]
    pub broker_pid: Option<u32>,
    /// Serve each service's metrics (`--metrics-addr`) and scrape them all once a second
    /// through the measured window, as Prometheus would: what the endpoint costs the loop.
    #[arg(long)]
    pub scrape_metrics: bool,
    /// Also run the orders view: report how far behind it is when the last order ends and
    /// how long it takes to catch up.
    #[arg(long)]
    pub with_view: bool,
    /// With `--with-view`, in paced runs (half, or `--rate`): this many `GET /orders/{id}` a
    /// second at the view through the measured window, timed from when each was due.
    #[arg(long, default_value_t = 0.0)]
    pub view_rps: f64,
    /// More arguments for the view, e.g. `--view-args=--fetch-min-bytes=65536`.
    #[arg(long, allow_hyphen_values = true)]
    pub view_args: Vec<String>,
    /// Instead of any phase: `--view-rps` requests for 10 s at a view already running here,
    /// for ids `<--view-ids-prefix><n>`, n below 1000 (a bench run's warm-up orders).
    #[arg(long, requires = "view_ids_prefix")]
    pub view_url: Option<String>,
    #[arg(long)]
    pub view_ids_prefix: Option<String>,
    /// Where service stores and logs go.
    #[arg(long, default_value = "target/bench")]
    pub work_dir: PathBuf,
    /// Leave each run's topics on the broker (to read them with `saga`). Without it they are
    /// deleted once the run is measured: a broker that keeps every run's partitions grows
    /// slower from run to run.
    #[arg(long)]
    pub keep_topics: bool,
}

fn parse_mix(s: &str) -> Result<[u32; 4], String> {
    let parts: Vec<u32> = s.split(',').map(|p| p.trim().parse().map_err(|_| format!("`{p}` is not a percentage"))).collect::<Result<_, _>>()?;
    match parts.as_slice() {
        [a, b, c, d] if a + b + c + d == 100 => Ok([*a, *b, *c, *d]),
        _ => Err("give four percentages that add up to 100".into()),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("saga-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    if let (Some(url), Some(prefix)) = (&args.view_url, &args.view_ids_prefix) {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ids = (0..1000).map(|i| format!("{prefix}{i}")).collect();
        let load = view::load(url.clone(), ids, args.view_rps.max(1.0), std::sync::Arc::clone(&stop));
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let h = load.join().map_err(|_| anyhow::anyhow!("the load panicked"))?;
        println!("{h:?}");
        return Ok(());
    }
    let mut results = report::Report::new(&args);
    let wants = |p: &str| args.phases.iter().any(|x| x == p);
    if wants("ceiling") {
        eprintln!("ceiling: {} records through 4 relay hops…", args.orders);
        let r = relay::run(&args).await.context("ceiling run")?;
        // Paced, it is no ceiling but the latency of the bare hops at the saga's rate.
        results.add(if args.rate.is_some() { "hops alone, same rate (no logic, no store)" } else { "ceiling (4 relay hops, no logic, no store)" }, r);
    }
    let mut saturated = None;
    if wants("saga") {
        eprintln!("saga: {} orders{}…", args.orders, args.rate.map_or(" as fast as possible".into(), |r| format!(" at {r}/s")));
        let r = load::run(&args, args.rate, false).await.context("saga run")?;
        saturated = Some(r.throughput);
        results.add(if args.rate.is_some() { "saga (fixed rate)" } else { "saga, saturated (fsync on)" }, r);
    }
    if wants("half") {
        let rate = saturated.map(|t| t / 2.0).or(args.rate).context("the half phase needs the saga phase (or --rate)")?;
        eprintln!("saga at half throughput: {rate:.0} orders/s…");
        let r = load::run(&args, Some(rate), false).await.context("half-rate run")?;
        results.add("saga at half the saturated rate", r);
    }
    if wants("unsafe") {
        eprintln!("saga without fsync…");
        let r = load::run(&args, args.rate, true).await.context("unsafe run")?;
        results.add(if args.rate.is_some() { "saga (fixed rate), --unsafe-skip-fsync" } else { "saga, saturated, --unsafe-skip-fsync" }, r);
    }
    results.print(args.timeline);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?).with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
