//! The four service binaries (and the orders view) as child processes, and their RSS and CPU
//! from /proc.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

pub const SERVICES: [&str; 4] = ["order-service", "payment-service", "inventory-service", "shipping-service"];
pub const VIEW: &str = "orders-view";

pub struct Service {
    pub name: &'static str,
    child: Child,
    pub log: PathBuf,
    peak_rss_kb: u64,
    rss_samples: Vec<u64>,
    cpu_start: Option<(u64, Instant)>,
}

/// What a service used during the measured window.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub service: &'static str,
    pub peak_rss_mib: f64,
    pub median_rss_mib: f64,
    pub cpu_percent: f64,
}

impl Service {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size, from /proc/<pid>/status.
    fn rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// User + system CPU time in clock ticks (USER_HZ, 100/s on Linux).
    fn cpu_ticks(&self) -> Option<u64> {
        cpu_ticks_of(self.pid())
    }
}

/// User + system CPU time of any process, in clock ticks (the broker's, for the report).
fn cpu_ticks_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The CPU another process (the broker) uses from now on.
pub struct CpuMeter {
    pid: u32,
    ticks: u64,
    since: Instant,
}

impl CpuMeter {
    /// Starts measuring `pid`; `None` without a pid or when /proc does not have it.
    pub fn start(pid: Option<u32>) -> Option<CpuMeter> {
        let pid = pid?;
        Some(CpuMeter { pid, ticks: cpu_ticks_of(pid)?, since: Instant::now() })
    }

    /// CPU used since the start, as a percentage of one core.
    pub fn percent(&self) -> Option<f64> {
        let ticks = cpu_ticks_of(self.pid)?.saturating_sub(self.ticks);
        let wall = self.since.elapsed().as_secs_f64();
        (wall > 0.0).then(|| ticks as f64 / 100.0 / wall * 100.0)
    }
}

/// Starts these binaries on fresh stores, with `extra` arguments, and waits until ready.
pub fn start_all(names: &[&'static str], bin_dir: &Path, dir: &Path, common: &[String], extra: &BTreeMap<&str, Vec<String>>) -> Result<Vec<Service>> {
    let mut services = Vec::new();
    for &name in names {
        let bin = bin_dir.join(name);
        if !bin.exists() {
            bail!("{} not found: build with `cargo build --release` (or pass --bin-dir)", bin.display());
        }
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(&bin)
            .args(common)
            .args(["--data-dir", &dir.join(name).display().to_string()])
            .args(extra.get(name).into_iter().flatten())
            .env("RUST_LOG", std::env::var("SAGA_BENCH_LOG").unwrap_or_else(|_| "warn,saga_runtime=info,orders_view=info,rskafka=off".into()))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        services.push(Service { name, child, log, peak_rss_kb: 0, rss_samples: Vec::new(), cpu_start: None });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for s in &mut services {
        loop {
            let text = std::fs::read_to_string(&s.log).unwrap_or_default();
            if text.contains(&format!("{} ready", s.name)) {
                break;
            }
            if let Some(status) = s.child.try_wait()? {
                bail!("{} exited ({status}) before it was ready:\n{text}", s.name);
            }
            if Instant::now() > deadline {
                bail!("{} not ready after 60 s:\n{text}", s.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(services)
}

/// Where a started service serves `/metrics` (`--metrics-addr 127.0.0.1:0`), from its JSON log.
pub fn metrics_url(service: &Service) -> Result<String> {
    let text = std::fs::read_to_string(&service.log)?;
    text.lines()
        .filter(|l| l.contains("serving /metrics"))
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["addr"].as_str().map(|a| format!("http://{a}/metrics")))
        .with_context(|| format!("{} does not say where it serves /metrics", service.name))
}

/// GETs every url once a second until `stop` is set, as Prometheus scrapes; returns how many
/// scrapes succeeded and the bytes of the last ones.
pub fn scrape(urls: Vec<String>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Result<(usize, usize)>> {
    std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
        let (mut scrapes, mut bytes) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            bytes = 0;
            for url in &urls {
                let body = agent.get(url).call().with_context(|| format!("scrape {url}"))?.body_mut().read_to_string()?;
                scrapes += 1;
                bytes += body.len();
            }
            std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
        }
        Ok((scrapes, bytes))
    })
}

/// Starts the CPU clocks of the measured window.
pub fn mark(services: &mut [Service]) {
    for s in services {
        s.cpu_start = s.cpu_ticks().map(|t| (t, Instant::now()));
    }
}

/// Takes one RSS sample of each.
pub fn sample(services: &mut [Service]) {
    for s in services {
        if let Some(kb) = s.rss_kb() {
            s.peak_rss_kb = s.peak_rss_kb.max(kb);
            s.rss_samples.push(kb);
        }
    }
}

/// What each used since [`mark`].
pub fn usage(services: &mut [Service]) -> Vec<Usage> {
    services
        .iter_mut()
        .map(|s| {
            let cpu_percent = match (s.cpu_start, s.cpu_ticks()) {
                (Some((t0, at)), Some(t1)) => (t1 - t0) as f64 / 100.0 / at.elapsed().as_secs_f64() * 100.0,
                _ => 0.0,
            };
            s.rss_samples.sort_unstable();
            let median = s.rss_samples.get(s.rss_samples.len() / 2).copied().unwrap_or(0);
            Usage {
                service: s.name,
                peak_rss_mib: s.peak_rss_kb as f64 / 1024.0,
                median_rss_mib: median as f64 / 1024.0,
                cpu_percent,
            }
        })
        .collect()
}

/// A service a run gave up on (an error before [`stop`]) must not outlive the bench.
impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// SIGTERM, then wait for each.
pub fn stop(services: Vec<Service>) {
    for s in &services {
        let _ = Command::new("kill").args(["-TERM", &s.pid().to_string()]).status();
    }
    for mut s in services {
        let _ = s.child.wait();
    }
    // Each is reaped now: dropping it kills nothing.
}
