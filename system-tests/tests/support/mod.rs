//! Test support: a real Kafka broker, the real service binaries, and helpers that wait for
//! conditions (never for time).
//!
//! - The broker: `KAFKA_BOOTSTRAP_SERVERS` if set, otherwise one started by
//!   `scripts/kafka.sh` on free ports for this test binary, stopped when it exits.
//!   A missing broker fails the test loudly; it is never skipped.
//! - Each [`Deployment`] has its own topic prefix and data directories, so tests running in
//!   parallel never see each other's events.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rskafka::client::partition::{Compression, OffsetAt, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use shared_events::envelope::decode_record;
use shared_events::partitioner::partition_for_key;
use shared_events::{Envelope, Topic};

pub mod raw;
pub mod workload;

/// A hand-typed `OrderCreated` of one widget line, shipped to the US, as kcat would send it.
pub fn order_json(id: &str, customer: &str, qty: u32, price: u64) -> String {
    format!(
        r#"{{"order_id":"{id}","customer_id":"{customer}","items":[{{"sku":"widget","quantity":{qty},"unit_price_cents":{price}}}],"ship_to":{{"country":"US"}}}}"#
    )
}

/// A short unique prefix for one test's order ids.
pub fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// Upper bound for any single condition a test waits for.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(90);

pub const SERVICES: [&str; 4] = ["order-service", "payment-service", "inventory-service", "shipping-service"];

/// The travel saga's services.
pub const TRAVEL_SERVICES: [&str; 5] = ["trip-service", "flight-service", "hotel-service", "car-service", "billing-service"];

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// xorshift64*: a reproducible source of chaos; the seed is printed with every run.
pub struct Chaos(u64);

impl Chaos {
    pub fn from_env() -> Chaos {
        let seed = std::env::var("SAGA_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
        });
        eprintln!("chaos seed: {seed} (rerun with SAGA_CHAOS_SEED={seed})");
        Chaos(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// `N` distinct free ports: each listener is held until all are chosen.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// Removes the settings a developer's or CI's environment may hold for the binaries (the
/// broker, its security, the runtime's knobs), so a test runs them with its own flags only.
pub fn clean_env(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with("KAFKA_") || n.starts_with("SAGA_") || n == "RUST_LOG") {
            command.env_remove(name);
        }
    }
    command
}

/// The broker's bootstrap address, starting one for this test binary if none is configured.
pub fn bootstrap() -> &'static str {
    static BOOTSTRAP: OnceLock<String> = OnceLock::new();
    BOOTSTRAP.get_or_init(|| {
        if let Ok(servers) = std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
            return servers;
        }
        let (port, controller) = (free_port(), free_port());
        let home = repo_root().join("target").join("test-kafka").join(format!("{}", std::process::id()));
        let ok = kafka_sh("start", &home, &[("KAFKA_PORT", port.to_string()), ("KAFKA_CONTROLLER_PORT", controller.to_string())]);
        assert!(ok, "could not start a Kafka broker with scripts/kafka.sh (needs java and mvn)");
        format!("127.0.0.1:{port}")
    })
}

/// Runs `scripts/kafka.sh <action>` for a broker in `home` with these settings, owned by this
/// test process (stopped and deleted when it exits); whether it succeeded.
fn kafka_sh(action: &str, home: &Path, settings: &[(&str, String)]) -> bool {
    let mut command = Command::new("bash");
    command.arg(repo_root().join("scripts/kafka.sh")).arg(action).env("KAFKA_HOME", home);
    command.env("KAFKA_STOP_WITH_PID", std::process::id().to_string());
    for (name, value) in settings {
        command.env(name, value);
    }
    command.status().expect("run scripts/kafka.sh").success()
}

/// Where the service binaries are; builds them (once per test binary) so they are current.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap().to_owned(); // target/<profile>/deps/..
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.current_dir(repo_root()).args(["build", "--quiet", "--bins"]);
        for s in SERVICES.iter().chain(&TRAVEL_SERVICES).chain(&["orders-view", "saga-cli"]) {
            build.args(["-p", s]);
        }
        if release {
            build.arg("--release");
        }
        assert!(build.status().unwrap().success(), "building the service binaries failed");
        dir
    })
}

/// Polls `probe` until it returns `Some`, or fails after `TEST_TIMEOUT` with what it waited
/// for, the last value seen and `context()` (typically the services' log tails).
pub async fn wait_until<T, F, Fut>(what: &str, mut probe: F, context: impl Fn() -> String) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + TEST_TIMEOUT;
    loop {
        let last = match probe().await {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}\nlast seen: {last}\n{}", context());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now() -> rskafka::chrono::DateTime<rskafka::chrono::Utc> {
    use rskafka::chrono::TimeZone;
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    rskafka::chrono::Utc.timestamp_millis_opt(ms).unwrap()
}

/// One running (or stopped) service binary.
pub struct ServiceProc {
    /// A label: the binary's name, or `payment-service#2` for a second instance.
    pub name: String,
    /// The binary.
    pub binary: &'static str,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Arguments for the next start; tests may add their own.
    pub args: Vec<String>,
    child: Option<Child>,
    /// How many times it was started.
    pub starts: u32,
}

impl ServiceProc {
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = clean_env(&mut Command::new(bin_dir().join(self.binary)))
            .args(&self.args)
            // Few rows in memory, so every test also runs rules on rows read back from the store.
            .env("SAGA_RESIDENT_ROWS", "8")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.name));
        self.child = Some(child);
        self.starts += 1;
    }

    /// If it exited on its own, collects and returns its status.
    pub fn reap(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().unwrap()?;
        self.child = None;
        Some(status)
    }

    /// CPU time (user + system) it has used so far, from /proc.
    pub fn cpu_time(&self) -> Duration {
        let pid = self.child.as_ref().expect("not running").id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
    }

    /// Whether it said "ready" since its last start.
    pub fn is_ready(&self) -> bool {
        self.child.is_some() && self.log_text().matches(&format!("{} ready", self.binary)).count() >= self.starts as usize
    }

    /// Where its latest start serves `/metrics` and the probes (`--metrics-addr`, e.g. on port
    /// 0), from its log: `http://127.0.0.1:PORT`.
    pub fn metrics_url(&self) -> Option<String> {
        self.served_url("serving /metrics")
    }

    /// Where its latest start serves what the log line containing `needle` announces (its
    /// `addr=HOST:PORT`): `http://HOST:PORT`.
    pub fn served_url(&self, needle: &str) -> Option<String> {
        let log = self.log_text();
        let line = log.lines().filter(|l| l.contains(needle)).nth(self.starts.checked_sub(1)? as usize)?;
        let addr = line.split_once("addr=")?.1.split_whitespace().next()?;
        Some(format!("http://{addr}"))
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: a crash at an arbitrary instruction.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub async fn term(&mut self) -> ExitStatus {
        let pid = self.child.as_ref().expect("service not running").id();
        let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
        assert!(status.success());
        self.exited(Duration::from_secs(30), "stop after SIGTERM").await
    }

    /// Waits until it exits on its own (killing it and failing after `within`).
    pub async fn exited(&mut self, within: Duration, what: &str) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.reap() {
                return status;
            }
            if Instant::now() > deadline {
                self.kill9();
                panic!("{} did not {what} within {within:?}\n{}", self.name, tail(&self.log, 30));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServiceProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// An event read back from a topic, with where it was.
#[derive(Debug, Clone)]
pub struct Seen {
    pub partition: i32,
    pub offset: i64,
    pub envelope: Envelope,
}

/// Four services on one broker, with their own topic prefix and data directories.
pub struct Deployment {
    pub prefix: String,
    pub bootstrap: String,
    pub partitions: i32,
    pub root: tempfile::TempDir,
    pub services: BTreeMap<String, ServiceProc>,
    client: Arc<Client>,
    reader: tokio::sync::Mutex<BTreeMap<(Topic, i32), PartitionCursor>>,
}

/// What has been read of one partition so far.
struct PartitionCursor {
    client: Arc<rskafka::client::partition::PartitionClient>,
    next: i64,
    seen: Vec<Result<Seen, String>>,
}

impl Deployment {
    /// Prepares (does not start) the four services; `extra` args go to every service.
    pub async fn new(partitions: i32, extra: &[&str]) -> Deployment {
        Self::on(bootstrap(), partitions, extra).await
    }

    /// Like [`Deployment::new`], on a given broker.
    pub async fn on(bootstrap: &str, partitions: i32, extra: &[&str]) -> Deployment {
        let client = ClientBuilder::new(vec![bootstrap.to_owned()]).build().await.expect("connect to the test broker");
        Self::with_client(bootstrap, partitions, extra, client)
    }

    /// Like [`Deployment::on`], reading and writing its topics with `client` (e.g. a super
    /// user's on a broker with ACLs).
    pub fn with_client(bootstrap: &str, partitions: i32, extra: &[&str], client: Client) -> Deployment {
        Self::of(&SERVICES, bootstrap, partitions, extra, client)
    }

    /// The travel saga's five services (not started) on the test broker.
    pub async fn travel(partitions: i32, extra: &[&str]) -> Deployment {
        let client = ClientBuilder::new(vec![bootstrap().to_owned()]).build().await.expect("connect to the test broker");
        Self::of(&TRAVEL_SERVICES, bootstrap(), partitions, extra, client)
    }

    fn of(names: &[&'static str], bootstrap: &str, partitions: i32, extra: &[&str], client: Client) -> Deployment {
        let bootstrap = bootstrap.to_owned();
        let prefix = format!("t{}.", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let root = tempfile::tempdir().unwrap();
        let mut services = BTreeMap::new();
        for &name in names {
            let data_dir = root.path().join(name);
            let mut args = vec![
                "--bootstrap-servers".to_owned(),
                bootstrap.clone(),
                "--data-dir".to_owned(),
                data_dir.display().to_string(),
                "--topic-prefix".to_owned(),
                prefix.clone(),
                "--partitions".to_owned(),
                partitions.to_string(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            let log = root.path().join(format!("{name}.log"));
            services.insert(name.to_owned(), ServiceProc { name: name.to_owned(), binary: name, data_dir, log, args, child: None, starts: 0 });
        }
        Deployment { prefix, bootstrap, partitions, root, services, client: Arc::new(client), reader: Default::default() }
    }

    /// Adds the orders view (not started) as `name`, with its own store, serving its API on a
    /// free port ([`Deployment::view_url`]).
    pub fn add_view(&mut self, name: &str) {
        let template = &self.services["order-service"];
        let data_dir = self.root.path().join(name);
        let mut args = template.args.clone();
        let dir = args.iter().position(|a| a == "--data-dir").unwrap() + 1;
        args[dir] = data_dir.display().to_string();
        args.extend(["--http-addr".to_owned(), "127.0.0.1:0".to_owned()]);
        let log = self.root.path().join(format!("{name}.log"));
        self.services.insert(name.to_owned(), ServiceProc { name: name.to_owned(), binary: "orders-view", data_dir, log, args, child: None, starts: 0 });
    }

    /// Where the view `name`'s latest start serves its API.
    pub fn view_url(&self, name: &str) -> String {
        self.services[name].served_url("serving the orders view").unwrap_or_else(|| panic!("{name} does not serve\n{}", tail(&self.services[name].log, 20)))
    }

    /// Replaces `binary`'s one instance by `n` instances sharing its partitions, each with its
    /// own store. Their labels are `binary#1` … `binary#n`.
    pub fn scale(&mut self, binary: &'static str, n: u32) {
        let one = self.services.remove(binary).expect("scale an unscaled service");
        for i in 1..=n {
            let name = format!("{binary}#{i}");
            let data_dir = self.root.path().join(format!("{binary}-{i}"));
            let mut args = one.args.clone();
            let dir = args.iter().position(|a| a == "--data-dir").unwrap() + 1;
            args[dir] = data_dir.display().to_string();
            args.extend(["--instance".to_owned(), i.to_string(), "--instances".to_owned(), n.to_string()]);
            let log = self.root.path().join(format!("{binary}-{i}.log"));
            self.services.insert(name.clone(), ServiceProc { name, binary, data_dir, log, args, child: None, starts: 0 });
        }
    }

    /// Starts every service and waits until each has said it is ready (so topics exist).
    pub async fn start_all(&mut self) {
        for s in self.services.values_mut() {
            s.start();
        }
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            self.wait_ready(&name).await;
        }
    }

    pub async fn wait_ready(&self, name: &str) {
        let svc = &self.services[name];
        let needle = format!("{} ready", svc.binary);
        wait_until(&needle, || async { if svc.is_ready() { Ok(()) } else { Err(tail(&svc.log, 3)) } }, || self.logs()).await;
    }

    pub fn service(&mut self, name: &str) -> &mut ServiceProc {
        self.services.get_mut(name).unwrap()
    }

    /// The client the deployment reads and writes its topics with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn topic(&self, t: Topic) -> String {
        format!("{}{t}", self.prefix)
    }

    /// Every service's last log lines, for failure messages.
    pub fn logs(&self) -> String {
        self.services
            .values()
            .map(|s| format!("--- {} ---\n{}", s.name, tail(&s.log, 25)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Publishes like a tool: headers and the Java partitioner's choice of partition.
    pub async fn publish(&self, envelope: &Envelope) -> i32 {
        let rec = envelope.encode();
        let partition = partition_for_key(rec.key.as_bytes(), self.partitions);
        self.produce(envelope.meta.event_type, partition, Some(rec.key.into_bytes()), rec.value,
            rec.headers.into_iter().map(|(k, v)| (k, v.into_bytes())).collect()).await;
        partition
    }

    /// Produces raw bytes to a partition (duplicates, garbage).
    pub async fn produce(&self, topic: Topic, partition: i32, key: Option<Vec<u8>>, value: Vec<u8>, headers: BTreeMap<String, Vec<u8>>) {
        self.try_produce(topic, partition, key, value, headers).await.unwrap();
    }

    /// Like [`Deployment::produce`], with the broker's answer.
    pub async fn try_produce(&self, topic: Topic, partition: i32, key: Option<Vec<u8>>, value: Vec<u8>, headers: BTreeMap<String, Vec<u8>>) -> Result<(), String> {
        let pc = self.client.partition_client(self.topic(topic), partition, UnknownTopicHandling::Retry).await.unwrap();
        let record = Record { key, value: Some(value), headers, timestamp: now() };
        pc.produce(vec![record], Compression::NoCompression).await.map(|_| ()).map_err(|e| e.to_string())
    }

    /// Publishes a hand-typed record the way the README does: kcat, key = order id, Java partitioner.
    pub fn kcat_publish(&self, topic: Topic, key: &str, value: &str) {
        let mut child = Command::new("kcat")
            .args(["-P", "-b", &self.bootstrap, "-t", &self.topic(topic), "-K", "\t", "-X", "partitioner=murmur2_random"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("kcat is required for the system tests (apt-get install kcat)");
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{key}\t{value}").unwrap();
        assert!(child.wait().unwrap().success(), "kcat failed");
    }

    /// Produces `key|value` lines with Kafka's own Java producer (`scripts/kafka/Produce.java`),
    /// with its `options` (`--compression zstd`, `--transactional-id t --abort`,
    /// `--null-header h`, …), and waits until every record is acknowledged.
    pub fn java_produce(&self, topic: Topic, lines: &[String], options: &[&str]) {
        let mut child = Command::new("java")
            .arg("-cp")
            .arg(repo_root().join(".kafka/libs/*"))
            .arg(repo_root().join("scripts/kafka/Produce.java"))
            .args(["--bootstrap-server", &self.bootstrap, "--topic", &self.topic(topic)])
            .args(options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("java runs scripts/kafka/Produce.java");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            for line in lines {
                writeln!(stdin, "{line}").unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "Produce.java {options:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Runs one of Kafka's own command-line tools (a class from its jars) against this broker;
    /// returns what it printed.
    pub fn kafka_tool(&self, class: &str, args: &[&str]) -> String {
        let out = Command::new("java")
            .arg("-cp")
            .arg(repo_root().join(".kafka/libs/*"))
            .arg(format!("-Dlog4j2.configurationFile={}", repo_root().join("scripts/kafka/log4j2.properties").display()))
            .arg(class)
            .args(["--bootstrap-server", &self.bootstrap])
            .args(args)
            .output()
            .expect("java runs Kafka's tools");
        assert!(out.status.success(), "{class} {args:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Deletes one of this deployment's topics, as an operator might under running services.
    pub async fn delete_topic(&self, topic: Topic) {
        let controller = self.client.controller_client().unwrap();
        let name = self.topic(topic);
        controller.delete_topic(name.clone(), 10_000).await.unwrap();
        // The controller answers once it has decided; the broker applies the deletion a moment
        // later, and a write in between still succeeds (and is then deleted with the topic).
        wait_until(&format!("{name} to be gone from the broker's metadata"), || async {
            match self.client.list_topics().await {
                Ok(topics) if !topics.iter().any(|t| t.name == name) => Ok(()),
                Ok(_) => Err("still listed".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        }, || self.logs()).await;
    }

    /// The dead letters on the DeadLetter topic so far.
    pub async fn dead_letters(&self) -> Vec<shared_events::DeadLetter> {
        self.read(Topic::DeadLetter)
            .await
            .into_iter()
            .filter_map(Result::ok)
            .filter_map(|s| match s.envelope.event {
                shared_events::Event::DeadLetter(l) => Some(l),
                _ => None,
            })
            .collect()
    }

    /// Waits until an event of `topic` about `order_id` is on its topic.
    pub async fn wait_for(&self, topic: Topic, order_id: &str) -> Seen {
        wait_until(&format!("{topic} for {order_id}"), || async {
            match self.events_for(topic, order_id).await.into_iter().next() {
                Some(seen) => Ok(seen),
                None => Err("not yet".to_owned()),
            }
        }, || self.logs()).await
    }

    /// Every record on a topic, decoded (records that do not decode are returned as errors).
    /// Reads incrementally: each call fetches only what arrived since the last one.
    pub async fn read(&self, topic: Topic) -> Vec<Result<Seen, String>> {
        let mut cursors = self.reader.lock().await;
        let mut out = Vec::new();
        for partition in 0..self.partitions {
            let cursor = match cursors.entry((topic, partition)) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let pc = self.client.partition_client(self.topic(topic), partition, UnknownTopicHandling::Retry).await.unwrap();
                    e.insert(PartitionCursor { client: Arc::new(pc), next: 0, seen: Vec::new() })
                }
            };
            let end = cursor.client.get_offset(OffsetAt::Latest).await.unwrap();
            while cursor.next < end {
                let from = cursor.next;
                let fetched = cursor.client.fetch(cursor.next, 1..10_000_000, 100).await.unwrap();
                for r in fetched.records {
                    if r.offset < from {
                        continue;
                    }
                    let raw = saga_runtime::kafka::raw_record(topic, &r);
                    cursor.seen.push(decode_record(raw).map(|envelope| Seen { partition, offset: r.offset, envelope }).map_err(|e| e.to_string()));
                }
                // Past transaction markers and aborted records too, which hold no event.
                cursor.next = fetched.next_offset.map_or(from, |n| n.max(from));
            }
            out.extend(cursor.seen.iter().cloned());
        }
        out
    }

    /// The decodable events on a topic about `order_id` (or a trip, by its id).
    pub async fn events_for(&self, topic: Topic, order_id: &str) -> Vec<Seen> {
        self.read(topic).await.into_iter().filter_map(Result::ok).filter(|s| s.envelope.event.saga_id() == Some(order_id)).collect()
    }

    /// How many events of each topic there are about `order_id`.
    pub async fn census(&self, order_id: &str) -> BTreeMap<Topic, usize> {
        let mut counts = BTreeMap::new();
        for topic in Topic::ORDER {
            let n = self.events_for(topic, order_id).await.len();
            if n > 0 {
                counts.insert(topic, n);
            }
        }
        counts
    }

    /// Stops every running service with SIGTERM and asserts each exits 0.
    pub async fn stop_all(&mut self) {
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            let svc = self.services.get_mut(&name).unwrap();
            if svc.is_running() {
                let status = svc.term().await;
                assert!(status.success(), "{name} exited with {status} after SIGTERM\n{}", tail(&svc.log, 30));
            }
        }
    }

    /// Runs the `saga` CLI against this deployment; returns (exit code, stdout, stderr).
    pub fn saga(&self, args: &[&str]) -> (i32, String, String) {
        let out = clean_env(&mut Command::new(bin_dir().join("saga")))
            .args(["--bootstrap-servers", &self.bootstrap, "--topic-prefix", &self.prefix, "--color", "never"])
            .args(args)
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Waits until `saga trace <order>` prints a line containing `needle`; returns the trace.
    pub async fn wait_trace(&self, order_id: &str, needle: &str) -> String {
        wait_until(&format!("`saga trace {order_id}` to show {needle:?}"), || async {
            let (_, out, err) = self.saga(&["trace", order_id]);
            if out.contains(needle) { Ok(out) } else { Err(format!("{out}{err}")) }
        }, || self.logs()).await
    }

    /// A table of a stopped service's store.
    pub fn table<V: serde::de::DeserializeOwned>(&self, service: &str, table: &str) -> BTreeMap<String, V> {
        let svc = &self.services[service];
        assert!(!svc.is_running(), "stop {service} before reading its store");
        let store = saga_runtime::store::Store::open(&svc.data_dir, 1 << 20).unwrap();
        store.read_table(table).unwrap()
    }
}

/// The services that read `topic`, from each one's own `Service::CONSUMES`.
pub fn consumers_of(topic: Topic) -> Vec<&'static str> {
    use saga_runtime::Service;
    [
        (order_rules::Orders::NAME, order_rules::Orders::CONSUMES),
        (payment_rules::Payment::NAME, payment_rules::Payment::CONSUMES),
        (inventory_rules::Inventory::NAME, inventory_rules::Inventory::CONSUMES),
        (shipping_rules::Shipping::NAME, shipping_rules::Shipping::CONSUMES),
    ]
    .into_iter()
    .filter(|(_, consumes)| consumes.contains(&topic))
    .map(|(name, _)| name)
    .collect()
}

/// GETs `url`: its status and body, or why nothing answered.
pub fn http_get(url: &str) -> Result<(u16, String), String> {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(10))).build().into();
    let mut response = agent.get(url).call().map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().map_err(|e| format!("GET {url}: {e}"))?;
    Ok((status, body))
}

/// A broker of a test's own, which it may stop and start again (same data, same port).
pub struct DedicatedBroker {
    pub port: u16,
    controller_port: u16,
    home: PathBuf,
}

impl DedicatedBroker {
    pub fn start_new() -> DedicatedBroker {
        let home = repo_root().join("target").join("test-kafka").join(format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
        let broker = DedicatedBroker { port: free_port(), controller_port: free_port(), home };
        broker.start();
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn script(&self, action: &str) {
        let ok = kafka_sh(action, &self.home, &[("KAFKA_PORT", self.port.to_string()), ("KAFKA_CONTROLLER_PORT", self.controller_port.to_string())]);
        assert!(ok, "kafka.sh {action} failed");
    }

    pub fn start(&self) {
        self.script("start");
    }

    pub fn stop(&self) {
        self.script("stop");
    }
}

impl Drop for DedicatedBroker {
    fn drop(&mut self) {
        self.script("stop");
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// A broker of a test binary's own with, besides PLAINTEXT, a SASL_SSL listener (user `saga`,
/// password `saga-secret`, for PLAIN and both SCRAMs) and a mutual-TLS listener, with the
/// throwaway CA and certificates `scripts/kafka.sh` makes.
pub struct SecuredBroker {
    pub port: u16,
    pub sasl_ssl_port: u16,
    pub ssl_port: u16,
    home: PathBuf,
}

impl SecuredBroker {
    pub fn start_new() -> SecuredBroker {
        Self::start("secured", false)
    }

    /// With Kafka's StandardAuthorizer on (deny by default) and the saga's users: `admin`
    /// (the super user), one per service, `storefront` and `monitor`, each with password
    /// `<user>-secret`.
    pub fn start_with_authorizer() -> SecuredBroker {
        Self::start("authorizer", true)
    }

    fn start(name: &str, authorizer: bool) -> SecuredBroker {
        let home = repo_root().join("target").join("test-kafka").join(format!("{}-{name}", std::process::id()));
        let [port, sasl_ssl_port, ssl_port, controller_port] = free_ports();
        let b = SecuredBroker { port, sasl_ssl_port, ssl_port, home };
        let ok = kafka_sh("start", &b.home, &[
            ("KAFKA_AUTHORIZER", if authorizer { "1" } else { "0" }.to_owned()),
            ("KAFKA_PORT", b.port.to_string()),
            ("KAFKA_CONTROLLER_PORT", controller_port.to_string()),
            ("KAFKA_SASL_SSL_PORT", b.sasl_ssl_port.to_string()),
            ("KAFKA_SSL_PORT", b.ssl_port.to_string()),
        ]);
        assert!(ok, "could not start a secured broker with scripts/kafka.sh");
        b
    }

    pub fn plaintext(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn sasl_ssl(&self) -> String {
        format!("127.0.0.1:{}", self.sasl_ssl_port)
    }

    pub fn ssl(&self) -> String {
        format!("127.0.0.1:{}", self.ssl_port)
    }

    /// A file the script made in the broker's `tls/` directory.
    pub fn tls(&self, file: &str) -> String {
        self.home.join(format!("broker-{}", self.port)).join("tls").join(file).display().to_string()
    }

    /// The flags that make a binary `user` on the SASL_SSL listener (SCRAM-SHA-512), its
    /// password in a file under `dir`.
    pub fn flags_as(&self, user: &str, dir: &Path) -> Vec<String> {
        let password = dir.join(format!("{user}.password"));
        std::fs::write(&password, format!("{user}-secret\n")).unwrap();
        [
            "--bootstrap-servers", &self.sasl_ssl(),
            "--security-protocol", "SASL_SSL",
            "--ssl-ca-location", &self.tls("ca.pem"),
            "--sasl-mechanism", "SCRAM-SHA-512",
            "--sasl-username", user,
            "--sasl-password-file", &password.display().to_string(),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// A client authenticated as `user` on the SASL_SSL listener.
    pub async fn client_as(&self, user: &str) -> Client {
        use saga_runtime::security::{SaslMechanism, SecurityArgs, SecurityProtocol};
        let security = SecurityArgs {
            security_protocol: Some(SecurityProtocol::SaslSsl),
            ssl_ca_location: Some(self.tls("ca.pem").into()),
            sasl_mechanism: Some(SaslMechanism::ScramSha512),
            sasl_username: Some(user.to_owned()),
            ..SecurityArgs::default()
        }
        .into_security_with(Some(format!("{user}-secret")))
        .unwrap();
        security.apply(ClientBuilder::new(vec![self.sasl_ssl()])).build().await.unwrap()
    }

    /// kcat's flags for `user` on the SASL_SSL listener (PLAIN: Debian's librdkafka cannot do
    /// Kafka 4's SCRAM).
    pub fn kcat_as(&self, user: &str) -> Vec<String> {
        let settings = [
            "security.protocol=SASL_SSL".to_owned(),
            "sasl.mechanisms=PLAIN".to_owned(),
            format!("sasl.username={user}"),
            format!("sasl.password={user}-secret"),
            format!("ssl.ca.location={}", self.tls("ca.pem")),
        ];
        let mut flags = vec!["-b".to_owned(), self.sasl_ssl()];
        for s in settings {
            flags.extend(["-X".to_owned(), s]);
        }
        flags
    }
}

/// Kafka's `kafka-consumer-groups.sh`, as a class of its jars (see [`Deployment::kafka_tool`]).
pub const CONSUMER_GROUPS: &str = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";

/// One row of `kafka-consumer-groups.sh --describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    pub topic: String,
    pub partition: i32,
    /// `None` while nothing is committed (`-`).
    pub current: Option<i64>,
    pub log_end: i64,
    pub lag: Option<i64>,
}

/// The rows `--describe` printed, read by column name.
pub fn group_rows(out: &str) -> Vec<GroupRow> {
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.find(|l| l.contains("CURRENT-OFFSET")) else {
        return Vec::new();
    };
    let columns: Vec<&str> = header.split_whitespace().collect();
    let at = |name: &str| columns.iter().position(|c| *c == name).unwrap();
    let (topic, partition, current, log_end, lag) = (at("TOPIC"), at("PARTITION"), at("CURRENT-OFFSET"), at("LOG-END-OFFSET"), at("LAG"));
    lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() == columns.len())
        .map(|f| GroupRow {
            topic: f[topic].to_owned(),
            partition: f[partition].parse().unwrap(),
            current: f[current].parse().ok(),
            log_end: f[log_end].parse().unwrap(),
            lag: f[lag].parse().ok(),
        })
        .collect()
}
