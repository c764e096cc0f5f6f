//! Flags and environment variables shared by every service binary, and their validation.

use std::path::PathBuf;
use std::time::Duration;

use crate::security::{Security, SecurityArgs, SecurityError};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// How a binary compresses the record batches it writes (the producer's `compression.type`).
/// Reading takes every codec, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CompressionArg {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl CompressionArg {
    pub fn codec(self) -> rskafka::client::partition::Compression {
        use rskafka::client::partition::Compression;
        match self {
            CompressionArg::None => Compression::NoCompression,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

impl std::fmt::Display for CompressionArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_value_name(self, f)
    }
}

/// Writes a flag value as the flag spells it (`SASL_SSL`, `SCRAM-SHA-512`, `zstd`), for
/// `Display`: one spelling for `--help`, messages and the flags a binary passes on.
pub(crate) fn write_value_name<T: clap::ValueEnum>(value: &T, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    f.write_str(value.to_possible_value().as_ref().map_or("", |v| v.get_name()))
}

/// Options every service accepts. Flatten into a binary's `clap::Parser`.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "localhost:9092", value_delimiter = ',')]
    pub bootstrap_servers: Vec<String>,

    #[command(flatten)]
    pub security: SecurityArgs,

    /// Compression of the batches this service writes: none, gzip, snappy, lz4 or zstd
    /// (BENCHMARKS.md measures each). Batches of any codec are read.
    #[arg(long, env = "KAFKA_COMPRESSION_TYPE", value_enum, default_value = "none")]
    pub compression: CompressionArg,

    /// Directory of this service's sled store [default: ./data/<service>].
    #[arg(long, env = "DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,

    /// Partitions per topic when this service creates the saga's topics.
    #[arg(long, env = "SAGA_PARTITIONS", default_value_t = 3,
          value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub partitions: i32,

    /// Replication factor when this service creates the saga's topics.
    #[arg(long, env = "SAGA_REPLICATION_FACTOR", default_value_t = 1,
          value_parser = clap::value_parser!(i16).range(1..=32))]
    pub replication_factor: i16,

    /// Prefix for every topic name, to run several saga deployments on one cluster
    /// (e.g. `staging.` gives `staging.OrderCreated`). Empty by default.
    #[arg(long, env = "SAGA_TOPIC_PREFIX", default_value = "", value_parser = parse_prefix)]
    pub topic_prefix: String,

    /// Consumer group under which this instance commits its positions to Kafka, so Kafka's
    /// tools (`kafka-consumer-groups.sh --describe`) show its lag; the store stays what it
    /// resumes from [default: <topic prefix><service>, plus `-<instance>` when scaled out].
    #[arg(long, env = "KAFKA_GROUP_ID", value_parser = parse_group_id)]
    pub group_id: Option<String>,

    /// Serve Prometheus metrics (`/metrics`) and the probes (`/healthz`, `/readyz`) on this
    /// HOST:PORT, e.g. `0.0.0.0:9601` (README: the ports `run-local.sh` and compose use)
    /// [default: off].
    #[arg(long, env = "SAGA_METRICS_ADDR", value_parser = parse_host_port)]
    pub metrics_addr: Option<String>,

    /// JSON file with the data to load on first start, replacing the demo data.
    #[arg(long, env = "SEED_FILE")]
    pub seed: Option<PathBuf>,

    /// Most records processed (and committed) in one batch.
    #[arg(long, env = "SAGA_MAX_BATCH", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_batch: u32,

    /// Longest a fetch waits on the broker for new records, in milliseconds.
    #[arg(long, env = "SAGA_FETCH_WAIT_MS", default_value_t = 250,
          value_parser = clap::value_parser!(i32).range(1..=30_000))]
    pub fetch_wait_ms: i32,

    /// Bytes a fetch waits for before the broker answers (or `--fetch-wait-ms` passes), as the
    /// Java consumer's `fetch.min.bytes`. Above 1, fewer and bigger batches: fewer commits,
    /// and a row changed by several records of one batch is written once (the orders view).
    /// At most 524288, the most one answer carries.
    #[arg(long, env = "SAGA_FETCH_MIN_BYTES", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(1..=i64::from(crate::kafka::FETCH_RESPONSE_MAX_BYTES)))]
    pub fetch_min_bytes: i32,

    /// After a fetch that brought more than one record (a stream, not a lone event), how long
    /// the next one waits for a fuller answer (`--fetch-linger-bytes`), in milliseconds: a
    /// steady stream then comes in batches, each one commit, instead of a commit for every few
    /// records. After a quieter answer a fetch long-polls as `--fetch-min-bytes` and
    /// `--fetch-wait-ms` say, answered at the first record. Never longer than
    /// `--fetch-wait-ms`; off if `--fetch-min-bytes` is at least `--fetch-linger-bytes`. 0 (the
    /// default): off, every answer as soon as there is a record. It trades latency for CPU:
    /// worth it where the services share a machine that is busy (BENCHMARKS.md, session 11).
    #[arg(long, env = "SAGA_FETCH_LINGER_MS", default_value_t = 0,
          value_parser = clap::value_parser!(i32).range(0..=30_000))]
    pub fetch_linger_ms: i32,

    /// The answer a lingering fetch waits for, in bytes (see `--fetch-linger-ms`).
    #[arg(long, env = "SAGA_FETCH_LINGER_BYTES", default_value_t = 65_536,
          value_parser = clap::value_parser!(i32).range(1..=i64::from(crate::kafka::FETCH_RESPONSE_MAX_BYTES)))]
    pub fetch_linger_bytes: i32,

    /// Most state rows per table kept in memory between batches; the rest are read from the
    /// store when an event needs them. Bounds memory however many orders the service has seen.
    #[arg(long, env = "SAGA_RESIDENT_ROWS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub resident_rows: u32,

    /// Most MiB of the store's pages sled keeps in memory. Rows are read back on demand, so a
    /// service needs only the hot pages (offsets, the outbox tail, recent rows); a store read
    /// for every request, whose rows are rewritten across its whole history (the orders
    /// view), wants its working set.
    #[arg(long, env = "SAGA_STORE_CACHE_MB", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub store_cache_mb: u32,

    /// How many of the latest applied event ids are remembered to drop a redelivered event
    /// unseen. An older duplicate reaches the rules, which ignore what they already did
    /// (each service's per-order records).
    #[arg(long, env = "SAGA_DEDUP_WINDOW", default_value_t = 100_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub dedup_window: u32,

    /// This instance's number (1-based) among `--instances`; it owns the partitions p with
    /// p mod instances = instance - 1, on every topic it reads.
    #[arg(long, env = "SAGA_INSTANCE", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub instance: u32,

    /// How many instances of this service share the partitions.
    #[arg(long, env = "SAGA_INSTANCES", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub instances: u32,

    /// Own exactly these partitions (comma-separated) instead of `--instance`/`--instances`.
    #[arg(long, env = "SAGA_OWN_PARTITIONS", value_delimiter = ',', conflicts_with_all = ["instance", "instances"])]
    pub own_partitions: Vec<i32>,

    /// UNSAFE: do not fsync the store before publishing (sled still flushes every second).
    /// Only for measuring what durability costs: a crash can then publish events whose
    /// effects are lost, and a redo may decide differently.
    #[arg(long, env = "SAGA_UNSAFE_SKIP_FSYNC")]
    pub unsafe_skip_fsync: bool,

    /// Fault injection for tests: abort the process right after every Nth durable commit,
    /// before its outbox is published (the window the outbox exists for).
    #[arg(long, hide = true, env = "SAGA_FAULT_CRASH_AFTER_COMMIT",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub fault_crash_after_commit: Option<u32>,
}

/// Capped exponential backoff between retries while Kafka is away: the wait starts at
/// `initial`, doubles after each wait up to `max`, and starts over after a success. Every
/// retry loop of the runtime (connecting, fetching, looking up leaders, publishing) uses one.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    wait: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, wait: initial.min(max), max }
    }

    /// The wait before the next try.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The next try waited: the one after it waits twice as long, up to the cap.
    pub fn grow(&mut self) {
        self.wait = (self.wait * 2).min(self.max);
    }

    /// The wait before the next try; the one after waits twice as long.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.wait;
        self.grow();
        wait
    }

    /// It worked: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.wait = self.initial.min(self.max);
    }
}

/// Parses `500ms`, `30s`, `5m`, `2h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("`{s}` is not a duration (try 500ms, 30s, 5m)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown unit `{other}` in `{s}` (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

/// `host:port` with a host and a nonzero port (the host may be a name, resolved when used).
fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

/// `HOST:PORT` to listen on; port 0 asks for any free port (the log says which).
fn parse_host_port(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()) {
        Ok(s.to_owned())
    } else {
        Err(format!("`{s}` is not HOST:PORT"))
    }
}

fn parse_group_id(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.len() <= 249 && !s.chars().any(char::is_control) {
        Ok(s.to_owned())
    } else {
        Err("must be 1 to 249 characters, none of them control characters".into())
    }
}

fn parse_prefix(s: &str) -> Result<String, String> {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) && s.len() <= 200 {
        Ok(s.to_owned())
    } else {
        Err("may only contain ASCII letters, digits, '.', '_' and '-'".into())
    }
}

/// Validated settings the runtime runs with.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub service: &'static str,
    pub bootstrap_servers: Vec<String>,
    /// TLS and SASL, checked.
    pub security: Security,
    /// See [`RuntimeArgs::compression`].
    pub compression: CompressionArg,
    pub data_dir: PathBuf,
    pub partitions: i32,
    pub replication_factor: i16,
    pub topic_prefix: String,
    /// The topics of the sagas the service takes part in, `DeadLetter` included: the ones it
    /// creates, checks and looks up leaders for. Filled in by [`crate::run_with`] from what the
    /// service consumes and emits ([`shared_events::Saga::topics_of`]).
    pub topics: Vec<shared_events::Topic>,
    /// See [`RuntimeArgs::group_id`].
    pub group_id: String,
    pub seed: Option<PathBuf>,
    /// See [`RuntimeArgs::metrics_addr`].
    pub metrics_addr: Option<String>,
    pub max_batch: usize,
    pub fetch_wait_ms: i32,
    /// See [`RuntimeArgs::fetch_min_bytes`].
    pub fetch_min_bytes: i32,
    /// See [`RuntimeArgs::fetch_linger_ms`].
    pub fetch_linger_ms: i32,
    /// See [`RuntimeArgs::fetch_linger_bytes`].
    pub fetch_linger_bytes: i32,
    /// Bound on sled's page cache.
    pub cache_bytes: u64,
    /// See [`RuntimeArgs::resident_rows`].
    pub resident_rows: usize,
    /// See [`RuntimeArgs::dedup_window`].
    pub dedup_window: usize,
    /// Longest wait between retries while the broker is unreachable.
    pub max_backoff: Duration,
    /// See [`RuntimeArgs::fault_crash_after_commit`].
    pub fault_crash_after_commit: Option<u32>,
    /// Which partitions this instance consumes.
    pub ownership: Ownership,
    /// See [`RuntimeArgs::unsafe_skip_fsync`].
    pub unsafe_skip_fsync: bool,
}

/// Which partitions of the saga's topics an instance consumes. Static, so two instances own
/// the same partition only if they are configured to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// `instance` of `of` (1-based): partitions p with p mod of = instance - 1.
    Share { instance: u32, of: u32 },
    /// An explicit list.
    List(Vec<i32>),
}

impl Ownership {
    /// The owned partitions among `0..partitions`.
    pub fn owned(&self, partitions: i32) -> Vec<i32> {
        match self {
            Ownership::Share { instance, of } => {
                (0..partitions).filter(|p| *p as u32 % of == instance - 1).collect()
            }
            Ownership::List(list) => {
                let mut owned: Vec<i32> = list.iter().copied().filter(|p| (0..partitions).contains(p)).collect();
                owned.sort_unstable();
                owned.dedup();
                owned
            }
        }
    }
}

/// A setting that cannot work; reported in one line at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--bootstrap-servers: `{0}` is not host:port")]
    BadBootstrap(String),
    #[error("--instance {instance} is not one of --instances {of}")]
    BadInstance { instance: u32, of: u32 },
    #[error("--own-partitions: `{0}` is not a partition number")]
    BadPartition(i32),
    #[error(transparent)]
    Security(#[from] SecurityError),
}

impl RuntimeArgs {
    /// Checks the arguments and fills in per-service defaults.
    pub fn into_config(self, service: &'static str) -> Result<RuntimeConfig, ConfigError> {
        let mut servers = Vec::new();
        for s in self.bootstrap_servers {
            let s = s.trim().to_owned();
            if !is_host_port(&s) {
                return Err(ConfigError::BadBootstrap(s));
            }
            servers.push(s);
        }
        if self.instance > self.instances {
            return Err(ConfigError::BadInstance { instance: self.instance, of: self.instances });
        }
        if let Some(bad) = self.own_partitions.iter().find(|p| **p < 0) {
            return Err(ConfigError::BadPartition(*bad));
        }
        let ownership = if self.own_partitions.is_empty() {
            Ownership::Share { instance: self.instance, of: self.instances }
        } else {
            Ownership::List(self.own_partitions)
        };
        let short = service.strip_suffix("-service").unwrap_or(service);
        // Instances of one service never share a store, nor a consumer group.
        let instance = match &ownership {
            Ownership::Share { of: 1, .. } => String::new(),
            Ownership::Share { instance, .. } => format!("-{instance}"),
            Ownership::List(list) => format!("-p{}", list.iter().map(i32::to_string).collect::<Vec<_>>().join("-")),
        };
        let default_dir = format!("{short}{instance}");
        let group_id = self.group_id.unwrap_or_else(|| format!("{}{service}{instance}", self.topic_prefix));
        let security = self.security.into_security()?;
        Ok(RuntimeConfig {
            service,
            bootstrap_servers: servers,
            security,
            compression: self.compression,
            data_dir: self.data_dir.unwrap_or_else(|| PathBuf::from("data").join(default_dir)),
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            topic_prefix: self.topic_prefix,
            topics: Vec::new(),
            group_id,
            seed: self.seed,
            metrics_addr: self.metrics_addr,
            max_batch: self.max_batch as usize,
            fetch_wait_ms: self.fetch_wait_ms,
            fetch_min_bytes: self.fetch_min_bytes,
            fetch_linger_ms: self.fetch_linger_ms,
            fetch_linger_bytes: self.fetch_linger_bytes,
            // At 16 MiB sled's cache took ~20 MiB more RSS per service, and grew with history
            // (BENCHMARKS.md).
            cache_bytes: u64::from(self.store_cache_mb) << 20,
            resident_rows: self.resident_rows as usize,
            dedup_window: self.dedup_window as usize,
            max_backoff: Duration::from_secs(5),
            fault_crash_after_commit: self.fault_crash_after_commit,
            ownership,
            unsafe_skip_fsync: self.unsafe_skip_fsync,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        rt: RuntimeArgs,
    }

    fn parse(args: &[&str]) -> Result<RuntimeConfig, String> {
        let cli = Cli::try_parse_from(std::iter::once("svc").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.rt.into_config("payment-service").map_err(|e| e.to_string())
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_starts_over_after_a_success() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let waits: Vec<u128> = (0..5).map(|_| b.next_wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.wait(), Duration::from_millis(100));
        b.grow();
        assert_eq!(b.wait(), Duration::from_millis(200));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.bootstrap_servers, ["localhost:9092"]);
        assert_eq!(c.data_dir, PathBuf::from("data/payment"));
        assert_eq!(c.partitions, 3);
        assert_eq!(c.topic_prefix, "");
    }

    #[test]
    fn instances_own_disjoint_partitions_covering_all() {
        let a = parse(&["--instance", "1", "--instances", "2"]).unwrap();
        let b = parse(&["--instance", "2", "--instances", "2"]).unwrap();
        assert_eq!(a.ownership.owned(5), [0, 2, 4]);
        assert_eq!(b.ownership.owned(5), [1, 3]);
        assert_eq!(b.data_dir, PathBuf::from("data/payment-2"));
        let list = parse(&["--own-partitions", "2,0,9"]).unwrap();
        assert_eq!(list.ownership.owned(3), [0, 2]);
        assert!(parse(&["--instance", "3", "--instances", "2"]).unwrap_err().contains("--instance 3"));
        assert!(parse(&["--own-partitions", "1", "--instance", "1"]).is_err());
        assert!(parse(&["--own-partitions", "-1"]).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--bootstrap-servers", "localhost"]).unwrap_err().contains("host:port"));
        assert!(parse(&["--bootstrap-servers", "a:1,b:x"]).unwrap_err().contains("b:x"));
        assert!(parse(&["--partitions", "0"]).is_err());
        assert!(parse(&["--topic-prefix", "a b"]).is_err());
        assert!(parse(&["--log-format", "xml"]).is_err());
        assert!(parse(&["--metrics-addr", "9601"]).unwrap_err().contains("HOST:PORT"));
        assert_eq!(parse(&["--metrics-addr", "0.0.0.0:9601"]).unwrap().metrics_addr.as_deref(), Some("0.0.0.0:9601"));
        assert!(parse(&["--metrics-addr", "localhost:0"]).is_ok(), "any free port");
        assert_eq!(parse(&[]).unwrap().metrics_addr, None, "off unless asked for");
        assert_eq!(parse(&["--bootstrap-servers", "a:1, b:2"]).unwrap().bootstrap_servers, ["a:1", "b:2"]);
    }
}
