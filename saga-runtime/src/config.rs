//! Flags and environment variables shared by every service binary, and their validation.

use std::path::PathBuf;
use std::time::Duration;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Options every service accepts. Flatten into a binary's `clap::Parser`.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "localhost:9092", value_delimiter = ',')]
    pub bootstrap_servers: Vec<String>,

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

    /// Fault injection for tests: abort the process right after every Nth durable commit,
    /// before its outbox is published (the window the outbox exists for).
    #[arg(long, hide = true, env = "SAGA_FAULT_CRASH_AFTER_COMMIT",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub fault_crash_after_commit: Option<u32>,
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
    pub data_dir: PathBuf,
    pub partitions: i32,
    pub replication_factor: i16,
    pub topic_prefix: String,
    pub seed: Option<PathBuf>,
    pub max_batch: usize,
    pub fetch_wait_ms: i32,
    /// Bound on sled's page cache.
    pub cache_bytes: u64,
    /// Longest wait between retries while the broker is unreachable.
    pub max_backoff: Duration,
    /// See [`RuntimeArgs::fault_crash_after_commit`].
    pub fault_crash_after_commit: Option<u32>,
}

/// A setting that cannot work; reported in one line at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--bootstrap-servers: `{0}` is not host:port")]
    BadBootstrap(String),
}

impl RuntimeArgs {
    /// Checks the arguments and fills in per-service defaults.
    pub fn into_config(self, service: &'static str) -> Result<RuntimeConfig, ConfigError> {
        let mut servers = Vec::new();
        for s in self.bootstrap_servers {
            let s = s.trim().to_owned();
            let valid = s
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
            if !valid {
                return Err(ConfigError::BadBootstrap(s));
            }
            servers.push(s);
        }
        let short = service.strip_suffix("-service").unwrap_or(service);
        Ok(RuntimeConfig {
            service,
            bootstrap_servers: servers,
            data_dir: self.data_dir.unwrap_or_else(|| PathBuf::from("data").join(short)),
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            topic_prefix: self.topic_prefix,
            seed: self.seed,
            max_batch: self.max_batch as usize,
            fetch_wait_ms: self.fetch_wait_ms,
            cache_bytes: 16 << 20,
            max_backoff: Duration::from_secs(5),
            fault_crash_after_commit: self.fault_crash_after_commit,
        })
    }
}

#[cfg(test)]
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
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.bootstrap_servers, ["localhost:9092"]);
        assert_eq!(c.data_dir, PathBuf::from("data/payment"));
        assert_eq!(c.partitions, 3);
        assert_eq!(c.topic_prefix, "");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--bootstrap-servers", "localhost"]).unwrap_err().contains("host:port"));
        assert!(parse(&["--bootstrap-servers", "a:1,b:x"]).unwrap_err().contains("b:x"));
        assert!(parse(&["--partitions", "0"]).is_err());
        assert!(parse(&["--topic-prefix", "a b"]).is_err());
        assert!(parse(&["--log-format", "xml"]).is_err());
        assert_eq!(parse(&["--bootstrap-servers", "a:1, b:2"]).unwrap().bootstrap_servers, ["a:1", "b:2"]);
    }
}
