//! Results: throughput, latency percentiles, resource use; a table for people, JSON for tools.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

use crate::procs::Usage;
use crate::Args;

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub sagas: usize,
    pub seconds: f64,
    /// Completed sagas (any terminal state) per second.
    pub throughput: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub payload_bytes: usize,
    pub services: Vec<Usage>,
    /// The broker's CPU over the measured part (100% = one core), when `--broker-pid` is given.
    pub broker_cpu_percent: Option<f64>,
    /// The bench's own CPU over the measured part: what the load itself takes from the machine.
    pub generator_cpu_percent: Option<f64>,
    /// Latency by half-second of sending, to tell a steady tail from a stall.
    pub timeline: Vec<Slice>,
    /// The orders view, with `--with-view`.
    pub view: Option<crate::view::ViewResult>,
}

/// The orders sent in one half-second of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Slice {
    pub from_s: f64,
    pub orders: usize,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The `p` quantile of sorted latencies.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    sorted.get(((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0)
}

impl RunResult {
    pub fn from_times(sent: &HashMap<String, Instant>, arrived: &HashMap<String, Instant>, payload_bytes: usize, services: Vec<Usage>) -> RunResult {
        let first = sent.values().min();
        let mut slices: std::collections::BTreeMap<u64, Vec<f64>> = Default::default();
        let mut lat: Vec<f64> = Vec::with_capacity(arrived.len());
        for (key, at) in arrived {
            let Some(s) = sent.get(key) else { continue };
            let ms = at.saturating_duration_since(*s).as_secs_f64() * 1000.0;
            lat.push(ms);
            if let Some(t0) = first {
                slices.entry(s.saturating_duration_since(*t0).as_millis() as u64 / 500).or_default().push(ms);
            }
        }
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| quantile(&lat, p);
        let timeline = slices
            .into_iter()
            .map(|(half_s, mut l)| {
                l.sort_by(f64::total_cmp);
                Slice { from_s: half_s as f64 / 2.0, orders: l.len(), p99_ms: quantile(&l, 0.99), max_ms: l.last().copied().unwrap_or(0.0) }
            })
            .collect();
        let last = arrived.values().max();
        let seconds = match (first, last) {
            (Some(a), Some(b)) => b.saturating_duration_since(*a).as_secs_f64(),
            _ => 0.0,
        };
        RunResult {
            sagas: lat.len(),
            seconds,
            throughput: if seconds > 0.0 { lat.len() as f64 / seconds } else { 0.0 },
            p50_ms: pct(0.50),
            p95_ms: pct(0.95),
            p99_ms: pct(0.99),
            max_ms: lat.last().copied().unwrap_or(0.0),
            payload_bytes,
            services,
            broker_cpu_percent: None,
            generator_cpu_percent: None,
            timeline,
            view: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub orders: usize,
    pub partitions: i32,
    pub items_per_order: usize,
    pub mix_percent: [u32; 4],
    pub warmup_orders: usize,
    pub runs: Vec<(String, RunResult)>,
}

impl Report {
    pub fn new(args: &Args) -> Report {
        Report { orders: args.orders, partitions: args.partitions, items_per_order: args.items, mix_percent: args.mix, warmup_orders: args.warmup, runs: Vec::new() }
    }

    pub fn add(&mut self, name: &str, result: RunResult) {
        self.runs.push((name.to_owned(), result));
    }

    pub fn print(&self, timeline: bool) {
        println!(
            "{} orders (after {} warm-up), {} partitions, {} line(s) per order, mix completed/payment/stock/shipping = {:?}%",
            self.orders, self.warmup_orders, self.partitions, self.items_per_order, self.mix_percent
        );
        println!("{:<44} {:>10} {:>8} {:>8} {:>8} {:>8}", "run", "sagas/s", "p50 ms", "p95 ms", "p99 ms", "max ms");
        for (name, r) in &self.runs {
            println!("{:<44} {:>10.0} {:>8.1} {:>8.1} {:>8.1} {:>8.1}", name, r.throughput, r.p50_ms, r.p95_ms, r.p99_ms, r.max_ms);
        }
        let ceiling = self.runs.iter().find(|(n, _)| n.starts_with("ceiling")).map(|(_, r)| r.throughput);
        let saga = self.runs.iter().find(|(n, _)| n.starts_with("saga, saturated (fsync")).map(|(_, r)| r.throughput);
        if let (Some(c), Some(s)) = (ceiling, saga) {
            println!("saga throughput = {:.0}% of the hop ceiling", s / c * 100.0);
        }
        for (name, r) in &self.runs {
            if let Some(cpu) = r.broker_cpu_percent {
                println!("{name}: broker {cpu:.0}% CPU");
            }
            if let Some(cpu) = r.generator_cpu_percent {
                println!("{name}: load generator {cpu:.0}% CPU");
            }
        }
        for (name, r) in &self.runs {
            let Some(v) = &r.view else { continue };
            println!("{name}: view {} records behind when the last order ended, caught up {:.0} ms later", v.records_behind_at_end, v.caught_up_ms);
            if let Some(h) = &v.http {
                println!(
                    "{name}: view GET /orders/{{id}} at {:.0}/s (achieved {:.0}/s, {} requests, {} errors): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.1} ms; sent late p99 {:.2} ms, round trip p99 {:.2} ms",
                    h.target_rps, h.achieved_rps, h.requests, h.errors, h.p50_ms, h.p99_ms, h.p999_ms, h.max_ms, h.sent_late_p99_ms, h.round_trip_p99_ms
                );
            }
        }
        for (name, r) in self.runs.iter().filter(|(_, r)| !r.services.is_empty()) {
            let usage: Vec<String> = r.services.iter()
                .map(|u| format!("{} {:.1} MiB peak ({:.1} median), {:.0}% CPU", u.service.trim_end_matches("-service"), u.peak_rss_mib, u.median_rss_mib, u.cpu_percent))
                .collect();
            println!("{name}: {}", usage.join("; "));
        }
        for (name, r) in self.runs.iter().filter(|_| timeline) {
            println!("{name}, by half-second of sending (orders, p99 ms, max ms):");
            for s in &r.timeline {
                println!("  {:>6.1}s {:>6} {:>8.1} {:>8.1}", s.from_s, s.orders, s.p99_ms, s.max_ms);
            }
        }
    }
}
