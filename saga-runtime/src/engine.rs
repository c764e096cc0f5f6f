//! The loop itself: start-up, batches, commit, publish, graceful stop.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shared_events::text::{self, Escaped};
use shared_events::Topic;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::config::{Backoff, RuntimeArgs, RuntimeConfig};
use crate::kafka::{self, Fetched, KafkaEdgeError, Publisher};
use crate::metrics::{clock_ms, Metrics};
use crate::step::{outbox_entry, process_batch, process_timers, refused_letter};
use crate::store::{Commit, OutboxBatch, OutboxCleaner, OutboxEntry, Store, StoreError, StoreReader};
use crate::Service;

/// Why a service stopped on its own. Broker outages are not here: the loop rides them out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("seed file {path}: {reason}")]
    Seed { path: String, reason: String },
    #[error(transparent)]
    Kafka(#[from] KafkaEdgeError),
    #[error("the publishing task stopped unexpectedly")]
    PublisherStopped,
    #[error("a fetch task stopped unexpectedly")]
    FetcherStopped,
    #[error("this instance owns no partition: {ownership:?} of {partitions} partitions")]
    NothingOwned { ownership: crate::config::Ownership, partitions: i32 },
    #[error(transparent)]
    Endpoint(#[from] crate::endpoint::EndpointError),
    /// What the binary runs beside the loop could not start.
    #[error("{0}")]
    Alongside(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// What a binary runs beside the loop from its committed state (the orders view's HTTP API).
/// It starts once the store is open and seeded, before Kafka is reached, so a port in use
/// stops the binary at start-up; what it returns is dropped, to stop it, when the loop returns.
/// An `Err` is one line that stops the binary.
pub type Alongside = Box<dyn FnOnce(StoreReader) -> Result<Box<dyn std::any::Any + Send>, String> + Send>;

/// Runs a service binary: logging, config check, the loop until Ctrl-C/SIGTERM.
/// A bad setting or a fatal error prints one line and exits non-zero.
pub fn main<S: Service>(service: S, args: RuntimeArgs) -> ExitCode {
    main_with(service, args, None)
}

/// [`main`], with something run beside the loop ([`Alongside`]).
pub fn main_with<S: Service>(service: S, args: RuntimeArgs, alongside: Option<Alongside>) -> ExitCode {
    crate::init_logging(args.log_format, S::SILENCED_LOGS);
    let config = match args.into_config(S::NAME) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: error: {e}", S::NAME);
            return ExitCode::from(2);
        }
    };
    // One thread: a service's work is a short pipeline (store calls included; `--max-batch`
    // bounds how long one batch holds the thread), and on a machine it shares with the
    // broker and the other services, handing records between threads cost more (wake-ups,
    // one malloc arena per thread: order-service peaked at 92 MiB vs 37 MiB at 1000 orders/s)
    // than it gained (BENCHMARKS.md).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: error: cannot start the async runtime: {e}", S::NAME);
            return ExitCode::FAILURE;
        }
    };
    // Signal handlers go in before anything else, so a SIGTERM during start-up is graceful too.
    match runtime.block_on(async { run_with(service, config, crate::shutdown_signal(), alongside).await }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "stopped");
            eprintln!("{}: error: {e}", S::NAME);
            ExitCode::FAILURE
        }
    }
}

/// Runs `S` until `shutdown` completes. Stops between batches: the batch in hand is
/// committed and published (or left in the outbox if the broker is down) before returning.
pub async fn run<S: Service>(service: S, config: RuntimeConfig, shutdown: impl Future<Output = ()>) -> Result<(), RuntimeError> {
    run_with(service, config, shutdown, None).await
}

/// [`run`], with something run beside the loop ([`Alongside`]).
pub async fn run_with<S: Service>(
    mut service: S,
    config: RuntimeConfig,
    shutdown: impl Future<Output = ()>,
    alongside: Option<Alongside>,
) -> Result<(), RuntimeError> {
    let config = RuntimeConfig { topics: shared_events::Saga::topics_of(S::CONSUMES, S::EMITS), ..config };
    tokio::pin!(shutdown);
    if config.unsafe_skip_fsync {
        warn!("UNSAFE: --unsafe-skip-fsync: events may be published before their effects are durable");
    }
    let metrics = Arc::new(Metrics::new(S::NAME, S::CONSUMES, S::EMITS, Duration::from_millis(config.fetch_wait_ms.max(0) as u64))?);
    // Bound first, so a port in use stops the service before it does anything; served until
    // `run` returns, so the probes answer while it connects and while it stops.
    let _endpoint = match &config.metrics_addr {
        Some(addr) => Some(crate::endpoint::serve(addr, Arc::clone(&metrics))?),
        None => None,
    };
    let mut store = Store::open_with_dedup_window(&config.data_dir, config.cache_bytes, config.dedup_window)?;
    store.attach_tables(service.tables(), config.resident_rows);
    seed_if_new(&mut service, &mut store, &config).await?;
    if config.metrics_addr.is_some() {
        service.register_metrics(metrics.registry())?;
    }
    let _alongside = match alongside {
        Some(start) => Some(start(store.reader()?).map_err(RuntimeError::Alongside)?),
        None => None,
    };

    let Some((client, partitions)) = connect(&config, S::CONSUMES, S::EMITS, &mut shutdown).await? else {
        return Ok(());
    };
    metrics.health.connected();
    let mut publisher = Publisher::new(Arc::clone(&client), &config);

    // 1. Whatever a previous run committed but did not publish goes out first.
    let pending = store.outbox()?;
    if !pending.is_empty() {
        let count: usize = pending.iter().map(|b| b.entries.len()).sum();
        info!(count, "publishing events left in the outbox by the previous run");
        metrics.outbox_events.set(count as i64);
        if !publish(&mut publisher, &store.outbox_cleaner(), pending, &config, &metrics, shutdown.as_mut()).await? {
            return stop(&store).await;
        }
    }

    // 2. Resume every owned input partition where the store says we stopped.
    let owned = config.ownership.owned(partitions);
    if owned.is_empty() {
        return Err(RuntimeError::NothingOwned { ownership: config.ownership.clone(), partitions });
    }
    let offsets = store.offsets()?;
    let (tx, mut rx) = mpsc::channel::<Fetched>(16);
    let inputs = S::CONSUMES
        .iter()
        .flat_map(|&topic| owned.iter().map(move |&partition| (topic, partition)))
        .map(|(topic, partition)| kafka::Input::new(topic, partition, offsets.get(&(topic, partition)).copied()))
        .collect::<Vec<_>>();
    metrics.track_inputs(inputs.iter().map(|i| ((i.topic, i.partition), i.offset)), clock_ms());
    let mut fetchers = JoinSet::new();
    fetchers.spawn(kafka::fetch_inputs(Arc::clone(&client), config.clone(), inputs, tx, Arc::clone(&metrics)));
    // The positions, as Kafka's tools read them: committed under the consumer group once a
    // second at most, beside the loop (the store stays what a restart resumes from).
    let mut positions: std::collections::BTreeMap<(Topic, i32), i64> =
        offsets.iter().filter(|((t, p), _)| S::CONSUMES.contains(t) && owned.contains(p)).map(|(k, o)| (*k, *o)).collect();
    let (positions_tx, positions_rx) = tokio::sync::watch::channel(positions.clone());
    let mut group_task = tokio::spawn(kafka::commit_group_offsets(Arc::clone(&client), config.clone(), positions_rx));
    info!(
        consumes = ?S::CONSUMES.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        partitions = ?owned,
        of = partitions,
        data_dir = %config.data_dir.display(),
        security = %config.security.describe(),
        "{} ready", S::NAME
    );

    // 3. Publishing runs beside the loop, first in first out, so the next batch is processed
    //    while the last one's events are on the wire. What it is handed is already durable in
    //    the outbox, so nothing is lost if it never gets to send it.
    let (to_publish, mut publish_queue) = mpsc::channel::<OutboxBatch>(32);
    let (abandon, abandoned) = tokio::sync::watch::channel(false);
    let cleaner = store.outbox_cleaner();
    let publisher_config = config.clone();
    let publisher_metrics = Arc::clone(&metrics);
    let mut publisher_task = tokio::spawn(async move {
        let mut abandoned = abandoned;
        while let Some(first) = publish_queue.recv().await {
            // Everything already queued goes out in the same round: one request per broker
            // for many batches, instead of one round trip per batch.
            let mut batches = vec![first];
            while let Ok(more) = publish_queue.try_recv() {
                batches.push(more);
            }
            let stop = async {
                let _ = abandoned.wait_for(|a| *a).await;
            };
            tokio::pin!(stop);
            if !publish(&mut publisher, &cleaner, batches, &publisher_config, &publisher_metrics, stop.as_mut()).await? {
                break;
            }
        }
        Ok::<(), KafkaEdgeError>(())
    });

    // 4. Batches until asked to stop. A commit's events may leave only once the commit is on
    //    disk, but the loop does not await the disk: one flush runs in the background while the
    //    next batches are fetched and decided, and when it ends every commit made before it
    //    started is handed to the publisher (group commit). sled makes a commit wait while a
    //    flush syncs its log, so what overlaps the sync is the deciding, not the writing. A
    //    commit with nothing to publish starts no flush of its own: until something leaves the
    //    process, losing it in a crash only means deciding it again from the same inputs.
    let mut durable = Durability::new(&store, config.unsafe_skip_fsync, metrics.flush_seconds.clone());
    let mut commits_with_output = 0u32;
    // Timers (deadlines) judge by the wall clock, so they wait until every input partition has
    // been read up to where it stood at start: after downtime, an order that succeeded
    // meanwhile must be seen to succeed before its deadline is judged.
    let inputs = S::CONSUMES.len() * owned.len();
    let mut caught_up = 0usize;
    let mut timer = tokio::time::interval(Duration::from_secs(1));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    'batches: loop {
        metrics.health.turned(clock_ms());
        let commit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            ended = &mut publisher_task => {
                // It runs until its queue closes, below; ending earlier means the brokers
                // refuse its writes for good, or it panicked.
                return Err(match ended {
                    Ok(Err(fatal)) => fatal.into(),
                    _ => RuntimeError::PublisherStopped,
                });
            }
            Some(ended) = fetchers.join_next() => {
                // Fetchers run until the loop ends; one that stopped otherwise (refused by the
                // ACLs, or a panic) would stall its partitions silently.
                return Err(match ended {
                    Ok(Err(fatal)) => fatal.into(),
                    _ => RuntimeError::FetcherStopped,
                });
            }
            flushed = durable.flushed() => {
                for written in flushed? {
                    commits_with_output += 1;
                    if config.fault_crash_after_commit.is_some_and(|n| commits_with_output % n == 0) {
                        error!(pending = written.entries.len(), "fault injection: aborting between commit and publish");
                        std::process::abort();
                    }
                    // A full queue (broker away) must not make the loop deaf to SIGTERM: what
                    // it was about to hand over is durable in the outbox already, and stays
                    // there, in order, with everything after it. Waiting for Kafka is not a
                    // stuck loop (`/healthz`); `/readyz` reports the publisher jammed.
                    let handed = match to_publish.try_send(written) {
                        Ok(()) => Some(()),
                        Err(mpsc::error::TrySendError::Closed(_)) => None,
                        Err(mpsc::error::TrySendError::Full(written)) => {
                            metrics.health.handing_over(Some(clock_ms()));
                            let send = to_publish.send(written);
                            tokio::pin!(send);
                            let handed = loop {
                                tokio::select! {
                                    biased;
                                    () = &mut shutdown => break None,
                                    sent = &mut send => break sent.ok(),
                                    () = tokio::time::sleep(Duration::from_secs(1)) => metrics.health.turned(clock_ms()),
                                }
                            };
                            metrics.health.handing_over(None);
                            handed
                        }
                    };
                    if handed.is_none() {
                        durable.hold_back();
                        break 'batches;
                    }
                }
                durable.start_flush();
                continue;
            }
            fetched = rx.recv() => match fetched {
                Some(first) => {
                    let mut batch = vec![first];
                    let mut records = batch[0].records.len();
                    while records < config.max_batch {
                        match rx.try_recv() {
                            Ok(f) => {
                                records += f.records.len();
                                batch.push(f);
                            }
                            Err(_) => break,
                        }
                    }
                    caught_up += batch.iter().filter(|f| f.caught_up).count();
                    if caught_up >= inputs {
                        metrics.health.caught_up();
                    }
                    process_batch(&mut service, &store, &*metrics, batch, now_ms()).map_err(StoreError::from)?
                }
                None => break,
            },
            _ = timer.tick() => {
                positions_tx.send_if_modified(|shown| {
                    let changed = *shown != positions;
                    if changed {
                        shown.clone_from(&positions);
                    }
                    changed
                });
                // Published entries are deleted with the next commit; this deletes whatever no
                // commit has taken yet (an idle service makes none).
                store.delete_published()?;
                if caught_up < inputs {
                    continue;
                }
                let commit = process_timers(&mut service, now_ms()).map_err(StoreError::from)?;
                if commit.is_empty() {
                    continue;
                }
                commit
            }
        };
        positions.extend(commit.offsets.iter().map(|(k, o)| (*k, *o)));
        let (partitions, inputs_applied, outputs) = (commit.offsets.len(), commit.applied.len(), commit.outbox.len());
        let started = std::time::Instant::now();
        let written = store.commit(commit)?;
        let took = started.elapsed();
        metrics.commit_seconds.observe(took.as_secs_f64());
        metrics.outbox_events.add(outputs as i64);
        debug!(partitions, applied = inputs_applied, outputs, commit_us = took.as_micros() as u64, "batch committed");
        if let Some(written) = written {
            durable.push(written);
            durable.start_flush();
        }
    }
    metrics.health.stopping();
    fetchers.shutdown().await;
    // The last positions go to the group once more, so a stopped service shows its true lag.
    positions_tx.send_replace(positions);
    drop(positions_tx);
    if tokio::time::timeout(Duration::from_secs(3), &mut group_task).await.is_err() {
        debug!("the last group offset commit did not finish within 3 s");
        group_task.abort();
    }
    // What was committed but not yet handed over goes to the publisher too, once durable, unless
    // its queue is full (Kafka away): then it and everything after it wait in the outbox.
    for written in durable.finish().await? {
        if to_publish.try_send(written).is_err() {
            break;
        }
    }
    // Let the publisher finish what it was handed; if Kafka is away, leave it in the outbox.
    drop(to_publish);
    let grace = Duration::from_secs(5);
    let drained = tokio::select! {
        ended = &mut publisher_task => Some(ended),
        () = tokio::time::sleep(grace) => None,
    };
    match drained {
        Some(Ok(Ok(()))) => {}
        Some(Ok(Err(fatal))) => return Err(fatal.into()),
        Some(Err(_)) => return Err(RuntimeError::PublisherStopped),
        None => {
            warn!("publishing did not finish within {grace:?}; the rest stays in the outbox for the next start");
            let _ = abandon.send(true);
            let _ = publisher_task.await;
        }
    }
    stop(&store).await
}

/// A flush (fsync) running in the background.
type FlushTask = tokio::task::JoinHandle<Result<(), StoreError>>;

/// Commits whose events wait for the disk, and the one flush in progress.
struct Durability {
    store: crate::store::Flusher,
    skip_fsync: bool,
    flush_seconds: prometheus::Histogram,
    /// Committed after the running flush started, so not covered by it.
    waiting: Vec<OutboxBatch>,
    /// Committed before it started; durable when it ends. `None` handle: nothing to wait for
    /// (`--unsafe-skip-fsync`).
    flushing: Option<(Option<FlushTask>, Vec<OutboxBatch>)>,
    /// Set once a hand-over was cut short: the rest waits in the outbox for the next start.
    held_back: bool,
}

impl Durability {
    fn new(store: &Store, skip_fsync: bool, flush_seconds: prometheus::Histogram) -> Self {
        Durability { store: store.flusher(), skip_fsync, flush_seconds, waiting: Vec::new(), flushing: None, held_back: false }
    }

    /// Records a commit whose events may be published once it is on disk.
    fn push(&mut self, written: OutboxBatch) {
        self.waiting.push(written);
    }

    /// Starts a flush covering every waiting commit, unless one is running or none waits.
    fn start_flush(&mut self) {
        if self.flushing.is_some() || self.waiting.is_empty() {
            return;
        }
        let handle = (!self.skip_fsync).then(|| {
            let (flush, timer) = (self.store.flush(), self.flush_seconds.start_timer());
            tokio::spawn(async move {
                let flushed = flush.await;
                timer.observe_duration();
                flushed
            })
        });
        self.flushing = Some((handle, std::mem::take(&mut self.waiting)));
    }

    /// The commits the running flush made durable, oldest first; pending while none runs.
    /// Cancel-safe: dropped before the flush ends, it can be awaited again.
    async fn flushed(&mut self) -> Result<Vec<OutboxBatch>, RuntimeError> {
        let Some((handle, _)) = &mut self.flushing else {
            return std::future::pending().await;
        };
        let result = match handle {
            Some(handle) => handle.await.unwrap_or(Err(StoreError::FlushStopped)),
            None => Ok(()),
        };
        let batches = self.flushing.take().map(|(_, b)| b).unwrap_or_default();
        result?;
        Ok(batches)
    }

    /// Leaves what a cut-short hand-over did not reach, and everything after it, in the outbox.
    fn hold_back(&mut self) {
        self.held_back = true;
    }

    /// Waits until every commit is durable; returns those not yet handed over, oldest first
    /// (none after a cut-short hand-over, so nothing overtakes what waits in the outbox).
    async fn finish(mut self) -> Result<Vec<OutboxBatch>, RuntimeError> {
        let mut out = if self.flushing.is_some() { self.flushed().await? } else { Vec::new() };
        if !self.waiting.is_empty() {
            if !self.skip_fsync {
                self.store.flush().await?;
            }
            out.append(&mut self.waiting);
        }
        Ok(if self.held_back { Vec::new() } else { out })
    }
}

async fn stop(store: &Store) -> Result<(), RuntimeError> {
    store.flush().await?;
    info!("stopped cleanly");
    Ok(())
}

/// On first start, writes the seed (a file, or the service's demo data) in one commit.
async fn seed_if_new<S: Service>(
    service: &mut S,
    store: &mut Store,
    config: &RuntimeConfig,
) -> Result<(), RuntimeError> {
    let seed = match &config.seed {
        Some(path) => {
            let err = |reason: String| RuntimeError::Seed { path: path.display().to_string(), reason };
            let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
            Some(serde_json::from_slice::<S::Seed>(&text).map_err(|e| err(e.to_string()))?)
        }
        None => None,
    };
    if store.is_seeded()? {
        if seed.is_some() {
            warn!("--seed ignored: the store already holds data (delete the data directory to reseed)");
        }
        return Ok(());
    }
    info!(source = if seed.is_some() { "seed file" } else { "demo data" }, "first start: seeding the store");
    service.seed(seed.unwrap_or_default());
    let mut commit = Commit { seeded: true, ..Commit::default() };
    commit.add_table_changes(service.tables()).map_err(StoreError::from)?;
    store.commit(commit)?;
    store.flush().await?;
    Ok(())
}

/// How long a start-up refused by the ACLs keeps asking before it stops: ACLs granted just
/// before (`saga acl`, then the services) take a moment to reach every broker.
const ACL_GRACE: Duration = Duration::from_secs(5);

/// Connects and prepares topics, retrying while the broker is unreachable.
/// `None` if shutdown was requested first.
async fn connect(
    config: &RuntimeConfig,
    consumes: &[Topic],
    emits: &[Topic],
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<(Arc<rskafka::client::Client>, i32)>, RuntimeError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), config.max_backoff);
    let mut attempt = 0u32;
    let mut refused_since = None;
    loop {
        attempt += 1;
        let ready = async {
            let client = kafka::connect(config).await?;
            let partitions = kafka::ensure_topics(&client, config).await?;
            kafka::check_access(&client, config, consumes, emits).await?;
            Ok::<_, KafkaEdgeError>((Arc::new(client), partitions))
        };
        let result = tokio::select! {
            biased;
            () = shutdown.as_mut() => return Ok(None),
            r = ready => r,
        };
        match result {
            Ok(ready) => return Ok(Some(ready)),
            // ACLs just granted reach every broker a moment after the controller commits them.
            Err(error @ KafkaEdgeError::NotAuthorized { .. })
                if refused_since.get_or_insert_with(std::time::Instant::now).elapsed() < ACL_GRACE =>
            {
                debug!(%error, "ACLs refuse this client; asking again in case they were just granted");
                tokio::select! {
                    biased;
                    () = shutdown.as_mut() => return Ok(None),
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(error) => {
                if attempt == 1 || attempt % 10 == 0 {
                    warn!(%error, attempt, "Kafka not ready; retrying");
                }
                tokio::select! {
                    biased;
                    () = shutdown.as_mut() => return Ok(None),
                    () = tokio::time::sleep(backoff.next_wait()) => {}
                }
            }
        }
    }
}

/// Publishes entries, then has them deleted from the outbox (with the next commit), retrying
/// with backoff while Kafka is unreachable. Returns `false` if shutdown came first (the
/// entries stay in the outbox), and an error no retry can fix (the ACLs refuse the writes;
/// the entries stay in the outbox too).
async fn publish(
    publisher: &mut Publisher,
    cleaner: &OutboxCleaner,
    batches: Vec<OutboxBatch>,
    config: &RuntimeConfig,
    metrics: &Metrics,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<bool, KafkaEdgeError> {
    let mut refs: Vec<&OutboxEntry> = batches.iter().flat_map(|b| &b.entries).collect();
    let total = refs.len();
    let mut round = PublishRound::start(metrics);
    // Dead letters for entries the broker refused for good; owned here, published next.
    let mut parked: Vec<OutboxEntry>;
    let mut second_try = false;
    let mut backoff = Backoff::new(Duration::from_millis(100), config.max_backoff);
    let mut failing = false;
    loop {
        metrics.health.publish_sent(clock_ms());
        let result = tokio::select! {
            biased;
            () = shutdown.as_mut() => return Ok(false),
            r = publisher.publish(&refs) => r,
        };
        match result {
            Ok(refused) if !refused.is_empty() => {
                metrics.health.publish_answered();
                metrics.emitted(refs.iter().enumerate().filter(|(i, _)| !refused.iter().any(|r| r.index == *i)).map(|(_, e)| e.topic.as_str()));
                // Retrying cannot help, and publishing is first in first out: park each refused
                // entry, once, as a smaller dead letter, and go on. One refused in turn is
                // logged and dropped (its log line names what it parked).
                let letters: Vec<OutboxEntry> = refused
                    .iter()
                    .filter_map(|r| {
                        let entry = refs[r.index];
                        let event_id = entry.headers.get(shared_events::envelope::headers::EVENT_ID).map(String::as_str).unwrap_or_default();
                        let order_id = text::escaped(&entry.key);
                        if second_try {
                            error!(order_id, event_id = %Escaped(event_id), reason = %Escaped(&r.reason), "Kafka refused the smaller dead letter too; dropped");
                            return None;
                        }
                        warn!(
                            order_id, topic = %Escaped(&entry.topic), partition = entry.partition, event_id = %Escaped(event_id),
                            reason = %Escaped(&r.reason), "Kafka refused an event for good; parked on DeadLetter"
                        );
                        if entry.topic != Topic::DeadLetter.as_str() {
                            metrics.dead_letter("publish_refused");
                        }
                        Some(outbox_entry(&refused_letter(config.service, entry, &r.reason, now_ms()), entry.partition))
                    })
                    .collect();
                parked = letters;
                refs = parked.iter().collect();
                second_try = true;
            }
            Ok(_) => {
                if failing {
                    info!(count = total, "published after broker outage");
                }
                debug!(count = total, "published");
                metrics.emitted(refs.iter().map(|e| e.topic.as_str()));
                metrics.outbox_events.sub(total as i64);
                round.acknowledged();
                cleaner.remove_outbox(batches.into_iter().flat_map(|b| b.keys));
                return Ok(true);
            }
            Err(error) if error.is_fatal() => return Err(error),
            Err(error) => {
                if !failing {
                    warn!(%error, pending = refs.len(), "publish failed; events stay in the outbox, retrying with backoff");
                    failing = true;
                }
                tokio::select! {
                    biased;
                    () = shutdown.as_mut() => return Ok(false),
                    () = tokio::time::sleep(backoff.next_wait()) => {}
                }
            }
        }
    }
}

/// A publish round in progress, for the latency histogram and `/readyz` (which judges how
/// long a publish has waited for Kafka); ends when dropped, however the round ends.
struct PublishRound<'a> {
    metrics: &'a Metrics,
    timer: Option<prometheus::HistogramTimer>,
}

impl<'a> PublishRound<'a> {
    fn start(metrics: &'a Metrics) -> Self {
        PublishRound { metrics, timer: Some(metrics.publish_seconds.start_timer()) }
    }

    /// Kafka acknowledged every event of the round.
    fn acknowledged(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.observe_duration();
        }
    }
}

impl Drop for PublishRound<'_> {
    fn drop(&mut self) {
        self.metrics.health.publish_answered();
        // Only rounds that ended in Kafka's acknowledgement are timed; a stop is no latency.
        if let Some(timer) = self.timer.take() {
            timer.stop_and_discard();
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
