//! The orders view under the saga's load: how far behind it is when the saga's last order
//! ends, how long it takes to catch up, and how fast it answers `GET /orders/{id}` at a fixed
//! request rate meanwhile.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use rskafka::client::Client;
use serde::Serialize;
use shared_events::Topic;

/// What the view did in one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ViewResult {
    /// Records on the saga's topics the view had not read yet when the last order ended.
    pub records_behind_at_end: i64,
    /// From then until its `/stats` counted every order's outcome.
    pub caught_up_ms: f64,
    pub http: Option<HttpResult>,
}

/// `GET /orders/{id}` at a fixed rate, timed from when each request was due (so a stall
/// counts against every request it delays, not just the one it hit).
#[derive(Debug, Clone, Default, Serialize)]
pub struct HttpResult {
    pub target_rps: f64,
    pub achieved_rps: f64,
    pub requests: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// The generator's own share: how late it sent requests (p99), from when each was due to
    /// when its thread got to send it (a thread's wait for a core, or for a free thread).
    pub sent_late_p99_ms: f64,
    /// The p99 from sending a request to reading its whole answer: the view, the network, and
    /// the generator's thread waking to read it. (Quantiles do not add up to the latency's.)
    pub round_trip_p99_ms: f64,
}

/// A client whose every step has a deadline but whose host lookup has none: with a global
/// timeout, ureq resolves every request's host (an IP literal too, a pooled connection too) on
/// a thread it spawns for it, and that thread, new and unhurried, waited for a busy core before
/// each request could even be sent.
fn agent() -> ureq::Agent {
    let step = Some(Duration::from_secs(5));
    ureq::Agent::config_builder()
        .timeout_connect(step)
        .timeout_send_request(step)
        .timeout_recv_response(step)
        .timeout_recv_body(step)
        .http_status_as_error(false)
        .build()
        .into()
}

fn stats(agent: &ureq::Agent, base: &str) -> Result<serde_json::Value> {
    let body = agent.get(format!("{base}/stats")).call().with_context(|| format!("GET {base}/stats"))?.body_mut().read_to_string()?;
    Ok(serde_json::from_str(&body)?)
}

/// Records behind now: every saga topic's end minus where the view has read it to.
pub async fn records_behind(client: &Client, base: &str, prefix: &str, partitions: i32) -> Result<i64> {
    let stats = stats(&agent(), base)?;
    let mut behind = 0;
    for topic in Topic::ORDER {
        for partition in 0..partitions {
            let pc = client.partition_client(format!("{prefix}{topic}"), partition, UnknownTopicHandling::Retry).await?;
            let end = pc.get_offset(OffsetAt::Latest).await?;
            let read = stats["read_to"][topic.as_str()][partition.to_string()].as_i64().unwrap_or(0);
            behind += (end - read).max(0);
        }
    }
    Ok(behind)
}

/// Waits until the view has counted `orders` outcomes; returns how long that took.
pub fn wait_caught_up(base: &str, orders: u64, timeout: Duration) -> Result<Duration> {
    let agent = agent();
    let started = Instant::now();
    loop {
        let s = stats(&agent, base)?;
        let a = &s["all_time"];
        let ended = a["completed"].as_u64().unwrap_or(0) + a["cancelled"].as_u64().unwrap_or(0);
        if ended >= orders {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("the view counted {ended} of {orders} outcomes after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One request's times, in milliseconds.
struct Timing {
    /// From when it was due until its answer was read.
    latency: f64,
    sent_late: f64,
    round_trip: f64,
}

/// Sends `GET {base}/orders/{id}` for the given ids, `rps` a second on a fixed schedule, from a
/// few threads (eight: one stalled on the CPU delays only the requests it holds), until
/// `stop` is set.
pub fn load(base: String, ids: Vec<String>, rps: f64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<HttpResult> {
    std::thread::spawn(move || {
        let next = Arc::new(AtomicUsize::new(0));
        let timings = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(AtomicUsize::new(0));
        let ids = Arc::new(ids);
        let start = Instant::now();
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (next, timings, errors, ids, stop, base) =
                    (Arc::clone(&next), Arc::clone(&timings), Arc::clone(&errors), Arc::clone(&ids), Arc::clone(&stop), base.clone());
                std::thread::spawn(move || {
                    // The client shares the busy cores with what it measures: with a short
                    // slice, it sends when a request is due and reads the answer when it comes,
                    // instead of waiting out another thread's slice and counting that against
                    // the view.
                    let _ = thread_slice::request(thread_slice::SHORTEST);
                    let agent = agent();
                    let mut mine = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let due = start + Duration::from_secs_f64(k as f64 / rps);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let id = &ids[k.wrapping_mul(2_654_435_761) % ids.len()];
                        let sent = Instant::now();
                        let ok = agent
                            .get(format!("{base}/orders/{id}"))
                            .call()
                            .ok()
                            .filter(|r| r.status() == 200)
                            .and_then(|mut r| r.body_mut().read_to_string().ok())
                            .is_some();
                        if !ok {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        let ms = |later: Instant, earlier: Instant| later.saturating_duration_since(earlier).as_secs_f64() * 1000.0;
                        let done = Instant::now();
                        mine.push(Timing { latency: ms(done, due), sent_late: ms(sent, due), round_trip: ms(done, sent) });
                    }
                    timings.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(mine);
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
        let seconds = start.elapsed().as_secs_f64();
        let timings = std::mem::take(&mut *timings.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let sorted = |of: fn(&Timing) -> f64| {
            let mut v: Vec<f64> = timings.iter().map(of).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let lat = sorted(|t| t.latency);
        let q = |p: f64| crate::report::quantile(&lat, p);
        HttpResult {
            target_rps: rps,
            achieved_rps: lat.len() as f64 / seconds.max(f64::EPSILON),
            requests: lat.len(),
            errors: errors.load(Ordering::Relaxed),
            p50_ms: q(0.50),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: lat.last().copied().unwrap_or(0.0),
            sent_late_p99_ms: crate::report::quantile(&sorted(|t| t.sent_late), 0.99),
            round_trip_p99_ms: crate::report::quantile(&sorted(|t| t.round_trip), 0.99),
        }
    })
}

/// Where a started view serves its API, from its JSON log.
pub fn url(log: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(log)?;
    text.lines()
        .filter(|l| l.contains("serving the orders view"))
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["addr"].as_str().map(|a| format!("http://{a}")))
        .context("orders-view does not say where it serves")
}
