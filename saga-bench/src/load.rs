//! The load: N orders of a known mix published across partitions (as fast as possible, or at a
//! rate), and the time each takes to reach its terminal topic.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rskafka::client::broker::{BrokerClient, FetchPartition, PartitionRecords};
use rskafka::client::partition::{Compression, OffsetAt, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::Record;
use saga_runtime::kafka::produce_rounds;
use shared_events::partitioner::partition_for_key;
use shared_events::{Address, Envelope, Event, LineItem, OrderCreated, Topic};
use tokio::sync::mpsc;

use crate::procs;
use crate::report::RunResult;
use crate::Args;

/// A record to send: key and value and headers.
pub struct Outgoing {
    pub key: String,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, Vec<u8>>,
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}.", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub async fn client(args: &Args) -> Result<Arc<Client>> {
    let servers: Vec<String> = args.bootstrap_servers.split(',').map(str::to_owned).collect();
    let security = args.security.clone().into_security()?;
    let backoff = saga_runtime::kafka::backoff(std::time::Duration::from_secs(1));
    let client = saga_runtime::kafka::connect_with(&servers, &security, "saga-bench", backoff).await?;
    Ok(Arc::new(client))
}

/// The i-th order of the mix. Outcomes are decided by the data: bob cannot pay, gizmo is out
/// of stock, AQ is not served.
pub fn order(run: &str, i: usize, args: &Args) -> OrderCreated {
    let slot = (i % 100) as u32;
    let [c, p, s, _] = args.mix;
    let (customer, first_sku, country) = if slot < c {
        ("alice", "widget", "US")
    } else if slot < c + p {
        ("bob", "widget", "US")
    } else if slot < c + p + s {
        ("alice", "gizmo", "US")
    } else {
        ("alice", "widget", "AQ")
    };
    let items = (0..args.items.max(1))
        .map(|n| LineItem { sku: if n == 0 { first_sku } else { "widget" }.into(), quantity: 1, unit_price_cents: 100 + n as u64 })
        .collect();
    OrderCreated {
        order_id: format!("{run}{i}").as_str().into(),
        customer_id: customer.into(),
        items,
        ship_to: Address { country: country.into(), ..Address::default() },
    }
}

pub fn encode(event: Event) -> Outgoing {
    let rec = Envelope::root(event, now_ms()).encode();
    Outgoing { key: rec.key, value: rec.value, headers: rec.headers.into_iter().map(|(k, v)| (k, v.into_bytes())).collect() }
}

/// Publishes records to `topic` by key (the Java partitioner), in batches, paced at `rate`
/// records/s if given, one produce request per leader broker for each batch, as a Kafka client
/// would send them. Returns when each key was handed to Kafka.
pub async fn publish(client: &Client, topic: &str, partitions: i32, records: Vec<Outgoing>, rate: Option<f64>) -> Result<HashMap<String, Instant>> {
    let topics = [topic.to_owned()];
    let leaders = leaders(client, &topics, partitions).await?;
    let producers: HashMap<i32, Arc<BrokerClient>> =
        leaders.values().map(|&leader| (leader, Arc::new(client.broker_client(leader)))).collect();
    let mut sent = HashMap::with_capacity(records.len());
    let chunk = match rate {
        Some(r) => ((r / 100.0).ceil() as usize).max(1), // ~10 ms of load per send
        None => 500,
    };
    let start = Instant::now();
    let mut done = 0usize;
    let mut in_flight = tokio::task::JoinSet::new();
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        if let Some(r) = rate {
            // Sends are not awaited here, so the generator keeps its schedule.
            let due = start + Duration::from_secs_f64(done as f64 / r);
            tokio::time::sleep_until(due.into()).await;
        }
        let mut by_partition: Vec<Vec<Record>> = (0..partitions).map(|_| Vec::new()).collect();
        let mut keys = Vec::new();
        for o in records.by_ref().take(chunk) {
            let p = partition_for_key(o.key.as_bytes(), partitions) as usize;
            keys.push(o.key.clone());
            by_partition[p].push(Record {
                key: Some(o.key.into_bytes()),
                value: Some(o.value),
                headers: o.headers,
                timestamp: rskafka::chrono::DateTime::from_timestamp_millis(now_ms()).unwrap_or_default(),
            });
        }
        done += keys.len();
        let now = Instant::now();
        for k in keys {
            sent.insert(k, now);
        }
        let batches = by_partition.into_iter().zip(0..).filter(|(r, _)| !r.is_empty());
        let batches = batches.map(|(r, p)| (leaders[&(topic.to_owned(), p)], topic.to_owned(), p, r));
        // The order of orders does not matter here, so rounds need not wait for each other.
        for (leader, batch) in produce_rounds(batches).into_iter().flatten() {
            let producer = Arc::clone(&producers[&leader]);
            // Orders arrive uncompressed, as a storefront would send them; `--compression` is
            // the services' (and the relays').
            in_flight.spawn(async move { produce_with_retries(&producer, batch, Compression::NoCompression).await });
        }
        if rate.is_none() {
            while let Some(r) = in_flight.join_next().await {
                r??;
            }
        }
    }
    while let Some(r) = in_flight.join_next().await {
        r??;
    }
    Ok(sent)
}

/// Sends one request, again while it fails (the broker client does not retry): a brief broker
/// hiccup must not end a run. A partition written twice only repeats keys, counted once.
async fn produce_with_retries(producer: &BrokerClient, batch: Vec<(String, i32, Vec<Record>)>, compression: Compression) -> Result<()> {
    let mut attempt = 0;
    loop {
        let failed = match producer.produce(batch.clone(), compression).await {
            Ok(produced) => produced
                .into_iter()
                .find_map(|p| p.result.err().map(|e| anyhow::anyhow!("produce to {}/{}: {e}", p.topic, p.partition))),
            Err(e) => Some(anyhow::Error::new(e).context("produce")),
        };
        match failed {
            None => return Ok(()),
            Some(e) if attempt >= 50 => return Err(e.context(format!("after {attempt} retries"))),
            Some(_) => attempt += 1,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leader of every partition of `topics`, once each has one (topics may be new).
pub async fn leaders(client: &Client, topics: &[String], partitions: i32) -> Result<HashMap<(String, i32), i32>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last_error = match client.partition_leaders(topics.to_vec()).await {
            Ok(leaders) if topics.iter().all(|t| (0..partitions).all(|p| leaders.contains_key(&(t.clone(), p)))) => {
                return Ok(leaders);
            }
            Ok(_) => "not every partition has a leader yet".to_owned(),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!("no leader for every partition of {topics:?}: {last_error}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Times of sending and of arrival of each record's key.
pub type Timed = (HashMap<String, Instant>, HashMap<String, Instant>);

/// Publishes `records` to `input` and waits for each key to reach one of `terminal`.
/// Keys must share `key_prefix`, which nothing else on those topics has.
pub async fn round_trip(
    client: &Arc<Client>,
    input: &str,
    terminal: &[String],
    partitions: i32,
    records: Vec<Outgoing>,
    key_prefix: &str,
    rate: Option<f64>,
) -> Result<Timed> {
    // Read from where the terminal topics end before the first send: a warm-up's records
    // there are not re-read while this run is measured.
    let from = ends(client, terminal, partitions).await?;
    let collector = {
        let (client, prefix, n) = (Arc::clone(client), key_prefix.to_owned(), records.len());
        tokio::spawn(async move { collect(&client, from, &prefix, n, Duration::from_secs(600)).await })
    };
    let sent = publish(client, input, partitions, records, rate).await?;
    let arrived = collector.await??;
    Ok((sent, arrived))
}

/// One fetch from `broker` for every cursor, each partition's records keeping only those past
/// its cursor, which moves past them. The cursors rotate, so a partition with more than one
/// response's worth waiting cannot starve the others.
pub async fn fetch_new(
    broker: &BrokerClient,
    cursors: &mut [FetchPartition],
    max_bytes: i32,
    partition_max_bytes: i32,
    max_wait_ms: i32,
) -> rskafka::client::error::Result<Vec<PartitionRecords>> {
    let mut answers = broker.fetch(cursors, 1, max_bytes, partition_max_bytes, max_wait_ms).await?;
    cursors.rotate_left(1);
    for answer in &mut answers {
        let Ok(fetched) = &mut answer.result else { continue };
        let Some(cursor) = cursors.iter_mut().find(|c| c.topic == answer.topic && c.partition == answer.partition) else {
            continue;
        };
        let from = cursor.offset;
        fetched.records.retain(|r| r.offset >= from);
        // Past what was skipped too (transaction markers): else the cursor would stop there.
        if let Some(next) = fetched.records.iter().map(|r| r.offset + 1).chain(fetched.next_offset).max() {
            cursor.offset = cursor.offset.max(next);
        }
    }
    Ok(answers)
}

/// Where each partition of `topics` ends now, grouped by leader broker.
async fn ends(client: &Client, topics: &[String], partitions: i32) -> Result<HashMap<i32, Vec<FetchPartition>>> {
    let mut by_leader: HashMap<i32, Vec<FetchPartition>> = HashMap::new();
    for ((topic, partition), leader) in leaders(client, topics, partitions).await? {
        let pc = client.partition_client(&topic, partition, UnknownTopicHandling::Retry).await?;
        let offset = pc.get_offset(OffsetAt::Latest).await.with_context(|| format!("end of {topic}/{partition}"))?;
        by_leader.entry(leader).or_default().push(FetchPartition { topic, partition, offset });
    }
    Ok(by_leader)
}

/// Reads partitions from the given offsets (one long-poll per leader broker for all of them)
/// until `expected` distinct keys starting with `key_prefix` arrived; when each first did.
pub async fn collect(client: &Client, from: HashMap<i32, Vec<FetchPartition>>, key_prefix: &str, expected: usize, timeout: Duration) -> Result<HashMap<String, Instant>> {
    let (tx, mut rx) = mpsc::channel::<Vec<String>>(1024);
    let by_leader = from;
    let mut tasks = tokio::task::JoinSet::new();
    for (leader, mut next) in by_leader {
        let broker = client.broker_client(leader);
        let tx = tx.clone();
        tasks.spawn(async move {
            // Errors are retried on the same broker (a bench runs on one), and said once in a
            // while, so a stalled run shows why before its timeout.
            let mut last_said: Option<Instant> = None;
            let mut say = |what: String| {
                if last_said.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    eprintln!("saga-bench: reading terminal topics: {what}");
                    last_said = Some(Instant::now());
                }
            };
            loop {
                let answers = match fetch_new(&broker, &mut next, 8 * 1024 * 1024, 1024 * 1024, 50).await {
                    Ok(answers) => answers,
                    Err(e) => {
                        say(e.to_string());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let mut keys = Vec::new();
                for answer in answers {
                    let records = match answer.result {
                        Ok(fetched) => fetched.records,
                        Err(e) => {
                            say(format!("{}/{}: {e}", answer.topic, answer.partition));
                            continue;
                        }
                    };
                    keys.extend(records.into_iter().filter_map(|r| r.record.key).map(|k| String::from_utf8_lossy(&k).into_owned()));
                }
                if !keys.is_empty() && tx.send(keys).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut arrived = HashMap::with_capacity(expected);
    let deadline = tokio::time::Instant::now() + timeout;
    while arrived.len() < expected {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(keys)) => {
                let now = Instant::now();
                for k in keys.into_iter().filter(|k| k.starts_with(key_prefix)) {
                    arrived.entry(k).or_insert(now);
                }
            }
            Ok(None) => break,
            Err(_) => bail!("only {} of {expected} arrived within {timeout:?}", arrived.len()),
        }
    }
    tasks.abort_all();
    Ok(arrived)
}

/// Deletes a measured run's topics, unless `--keep-topics`. Each run makes its own (45
/// partitions with the defaults), and a broker holding a few dozen runs' worth answered the
/// next runs markedly slower (BENCHMARKS.md). A topic left behind costs only that, so a
/// failure is reported and the report goes on.
pub async fn delete_topics(args: &Args, client: &Client, topics: impl IntoIterator<Item = String>) {
    if args.keep_topics {
        return;
    }
    let controller = match client.controller_client() {
        Ok(c) => c,
        Err(e) => return eprintln!("  the run's topics stay on the broker: {e}"),
    };
    for topic in topics {
        if let Err(e) = controller.delete_topic(topic.as_str(), 10_000).await {
            eprintln!("  could not delete {topic}: {e}");
        }
    }
}

/// One saga run on fresh topics and stores.
pub async fn run(args: &Args, rate: Option<f64>, unsafe_skip_fsync: bool) -> Result<RunResult> {
    let prefix = unique("bench");
    let dir = args.work_dir.join(prefix.trim_end_matches('.'));
    std::fs::create_dir_all(&dir)?;
    let wallets = dir.join("wallets.json");
    let stock = dir.join("stock.json");
    std::fs::write(&wallets, r#"{"wallets": {"alice": 1000000000000000, "bob": 1}}"#)?;
    std::fs::write(&stock, r#"{"stock": {"widget": 4000000000, "gizmo": 0}}"#)?;
    let mut common = vec![
        "--bootstrap-servers".to_owned(), args.bootstrap_servers.clone(),
        "--topic-prefix".to_owned(), prefix.clone(),
        "--partitions".to_owned(), args.partitions.to_string(),
        "--log-format".to_owned(), "json".to_owned(),
        "--fetch-wait-ms".to_owned(), args.fetch_wait_ms.to_string(),
        "--fetch-linger-ms".to_owned(), args.fetch_linger_ms.to_string(),
        "--compression".to_owned(), args.compression.to_string(),
    ];
    common.extend(args.security.to_args());
    if unsafe_skip_fsync {
        common.push("--unsafe-skip-fsync".to_owned());
    }
    if args.scrape_metrics {
        common.extend(["--metrics-addr".to_owned(), "127.0.0.1:0".to_owned()]);
    }
    let extra = BTreeMap::from([
        ("payment-service", vec!["--seed".to_owned(), wallets.display().to_string()]),
        ("inventory-service", vec!["--seed".to_owned(), stock.display().to_string()]),
        ("order-service", vec!["--saga-deadline".to_owned(), "0".to_owned()]),
    ]);
    let mut extra = extra;
    let mut names = procs::SERVICES.to_vec();
    if args.with_view {
        names.push(procs::VIEW);
        let mut view = vec!["--http-addr".to_owned(), "127.0.0.1:0".to_owned()];
        view.extend(args.view_args.iter().cloned());
        extra.insert(procs::VIEW, view);
    }
    let mut services = procs::start_all(&names, &args.bin_dir, &dir, &common, &extra)?;
    let view_url = services.iter().find(|s| s.name == procs::VIEW).map(|s| crate::view::url(&s.log)).transpose()?;
    let client = client(args).await?;

    let input = format!("{prefix}{}", Topic::OrderCreated);
    let terminal = [Topic::OrderCompleted, Topic::OrderCancelled].map(|t| format!("{prefix}{t}"));
    let run_id = prefix.trim_end_matches('.').to_owned();
    if args.warmup > 0 {
        let warm_id = format!("{run_id}-w");
        let warm = (0..args.warmup).map(|i| encode(Event::OrderCreated(order(&warm_id, i, args)))).collect();
        round_trip(&client, &input, &terminal, args.partitions, warm, &warm_id, rate).await.context("warm-up")?;
    }
    let run_id = format!("{run_id}-m");
    let records: Vec<Outgoing> = (0..args.orders).map(|i| encode(Event::OrderCreated(order(&run_id, i, args)))).collect();
    let payload_bytes = records.first().map_or(0, |r| r.value.len());

    let scraping = Arc::new(AtomicBool::new(false));
    let scraper = match args.scrape_metrics {
        true => Some(procs::scrape(services.iter().map(procs::metrics_url).collect::<Result<_>>()?, Arc::clone(&scraping))),
        false => None,
    };
    // Reads of orders that exist: the warm-up's, all ended before the measured window.
    let view_stop = Arc::new(AtomicBool::new(false));
    let view_load = match (&view_url, rate) {
        (Some(url), Some(_)) if args.view_rps > 0.0 && args.warmup > 0 => {
            let warm_id = format!("{}-w", prefix.trim_end_matches('.'));
            let ids = (0..args.warmup).map(|i| format!("{warm_id}{i}")).collect();
            Some(crate::view::load(url.clone(), ids, args.view_rps, Arc::clone(&view_stop)))
        }
        _ => None,
    };
    procs::mark(&mut services);
    let broker = procs::CpuMeter::start(args.broker_pid);
    // The load generator's own share of the machine: its orders, its reading of the terminal
    // topics, and the view's requests.
    let generator = procs::CpuMeter::start(Some(std::process::id()));
    let (stop_sampling, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(async move {
        let mut services = services;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tick.tick() => procs::sample(&mut services),
                _ = &mut stopped => break services,
            }
        }
    });
    let measured = round_trip(&client, &input, &terminal, args.partitions, records, &run_id, rate).await;
    view_stop.store(true, Ordering::Relaxed);
    let http = view_load.map(|l| l.join().map_err(|_| anyhow::anyhow!("the view's load panicked"))).transpose()?;
    let _ = stop_sampling.send(());
    scraping.store(true, Ordering::Relaxed);
    if let Some(scraper) = scraper {
        let (scrapes, bytes) = scraper.join().map_err(|_| anyhow::anyhow!("the scraper panicked"))??;
        eprintln!("  scraped /metrics {scrapes} times, {bytes} bytes per round of four");
    }
    let mut services = sampler.await?;
    let usage = procs::usage(&mut services);
    let broker_cpu_percent = broker.and_then(|m| m.percent());
    let generator_cpu_percent = generator.and_then(|m| m.percent());
    // Still running: how far behind the view is now that the last order ended, and how long
    // until it has counted every outcome.
    let view = match &view_url {
        Some(url) if measured.is_ok() => {
            let records_behind_at_end = crate::view::records_behind(&client, url, &prefix, args.partitions).await?;
            let all = (args.warmup + args.orders) as u64;
            let url = url.clone();
            let caught_up = tokio::task::spawn_blocking(move || crate::view::wait_caught_up(&url, all, Duration::from_secs(300))).await??;
            Some(crate::view::ViewResult { records_behind_at_end, caught_up_ms: caught_up.as_secs_f64() * 1000.0, http })
        }
        _ => None,
    };
    procs::stop(services);
    delete_topics(args, &client, Topic::ORDER.iter().map(|t| format!("{prefix}{t}"))).await;
    let (sent, arrived) = measured?;
    Ok(RunResult { broker_cpu_percent, generator_cpu_percent, view, ..RunResult::from_times(&sent, &arrived, payload_bytes, usage) })
}
