//! One simulated service process: the real rules (`Service`) and the runtime's real step
//! (`saga_core::step`), over a store kept in memory with sled's contract. A commit changes
//! what the process sees at once; only a flush makes it durable; a crash keeps exactly what was
//! flushed, and a restart replays the durable outbox first, as the runtime does.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use saga_core::state::{RowSource, RowVisitor};
use saga_core::step::{process_batch, process_timers, AppliedIds};
use saga_core::{Commit, Fetched, OutboxEntry, Service};
use shared_events::{EventId, Topic};

use crate::log::Log;
use crate::rng::Rng;

/// Rows kept in memory per table after a commit: few, so rules also run on rows read back.
const RESIDENT_ROWS: usize = 4;

/// One table's rows, shared with the table that reads them.
type Rows = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

/// A table's rows as its [`RowSource`].
struct Source(Rows);

impl RowSource for Source {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.lock().map_err(|e| e.to_string())?.get(key).cloned())
    }

    fn scan(&self, visit: &mut RowVisitor<'_>) -> Result<(), String> {
        let rows = self.0.lock().map_err(|e| e.to_string())?.clone();
        rows.iter().try_for_each(|(k, v)| visit(k, v))
    }
}

/// The applied ids a store remembers, as `saga_runtime::store` keeps them: whole commits, the
/// oldest forgotten once the rest hold `window` or more, the newest always kept. A duplicate
/// older than that reaches the rules, which must see for themselves that it is one.
#[derive(Debug, Clone)]
struct AppliedWindow {
    commits: VecDeque<Vec<EventId>>,
    ids: HashSet<EventId>,
    count: usize,
    window: usize,
}

impl AppliedWindow {
    fn new(window: usize) -> Self {
        AppliedWindow { commits: VecDeque::new(), ids: HashSet::new(), count: 0, window }
    }

    fn push(&mut self, ids: &[EventId]) {
        if ids.is_empty() {
            return;
        }
        self.ids.extend(ids.iter().copied());
        self.count += ids.len();
        self.commits.push_back(ids.to_vec());
        while self.count > self.window && self.commits.len() > 1 {
            let Some(oldest) = self.commits.pop_front() else { break };
            self.count -= oldest.len();
            for id in &oldest {
                self.ids.remove(id);
            }
        }
    }
}

impl AppliedIds for AppliedWindow {
    fn is_applied(&self, applied: EventId) -> bool {
        self.ids.contains(&applied)
    }
}

/// What survives a crash.
struct Durable {
    rows: BTreeMap<&'static str, BTreeMap<String, Vec<u8>>>,
    offsets: BTreeMap<(Topic, i32), i64>,
    applied: AppliedWindow,
    outbox: Vec<OutboxEntry>,
}

/// What the world asks of a process, whatever service it runs.
pub trait Process {
    fn name(&self) -> &'static str;
    /// The topics it reads (`Service::CONSUMES`).
    fn consumes(&self) -> &'static [Topic];
    /// Fetches a few records of one to three input partitions with something unread and steps
    /// them as one batch; `false` if nothing is unread (or the outbox is still being replayed).
    fn step(&mut self, log: &Log, rng: &mut Rng, now_ms: i64, trace: &mut Vec<String>) -> Result<bool, String>;
    /// Makes every commit durable (and forgets published outbox entries).
    fn flush(&mut self);
    /// Publishes up to `max` durable outbox entries, in order; some twice. `false` if none waited.
    fn publish(&mut self, log: &mut Log, rng: &mut Rng, max: usize, duplicate_per_mille: u64, now_ms: i64, trace: &mut Vec<String>) -> bool;
    /// Lets the rules emit what is due, once every input was read to its end since the start.
    fn timer(&mut self, log: &Log, now_ms: i64, trace: &mut Vec<String>) -> Result<(), String>;
    /// Kill -9: everything not flushed is gone; then it starts again. Returns how many
    /// commits were lost.
    fn crash(&mut self, log: &Log, lose_outbox: bool) -> usize;
    /// Whether it has anything to do: unread input, an unflushed commit, an unpublished event.
    fn busy(&self, log: &Log) -> bool;
    /// A table's durable rows.
    fn rows(&self, table: &str) -> BTreeMap<String, Vec<u8>>;
}

/// A simulated process running `S`.
pub struct Node<S: Service> {
    make: Box<dyn Fn() -> S>,
    live: S,
    /// Each table's rows as the live service sees them: durable, plus committed and unflushed.
    current: BTreeMap<&'static str, Rows>,
    durable: Durable,
    unflushed: Vec<Commit>,
    /// Applied ids, durable and unflushed.
    applied: AppliedWindow,
    /// Where fetching goes on, per input.
    positions: BTreeMap<(Topic, i32), i64>,
    /// Durable outbox entries already published since the last flush.
    published: usize,
    /// Outbox entries left from before the last start, published before anything is fetched.
    replay_left: usize,
    /// Where each input ended at the last start: timers wait until all are read that far.
    start_ends: BTreeMap<(Topic, i32), i64>,
    partitions: i32,
}

impl<S: Service> Node<S> {
    /// A first start: `make` builds the service (with its settings), `seed` fills the store;
    /// the store remembers about `dedup_window` applied ids.
    pub fn new(make: impl Fn() -> S + 'static, seed: S::Seed, partitions: i32, dedup_window: usize) -> Result<Self, String> {
        let live = make();
        let mut node = Node {
            make: Box::new(make),
            live,
            current: BTreeMap::new(),
            durable: Durable { rows: BTreeMap::new(), offsets: BTreeMap::new(), applied: AppliedWindow::new(dedup_window), outbox: Vec::new() },
            unflushed: Vec::new(),
            applied: AppliedWindow::new(dedup_window),
            positions: BTreeMap::new(),
            published: 0,
            replay_left: 0,
            start_ends: BTreeMap::new(),
            partitions,
        };
        node.boot(&Log::default(), false);
        node.live.seed(seed);
        let mut commit = Commit { seeded: true, ..Commit::default() };
        commit.add_table_changes(node.live.tables()).map_err(|e| e.to_string())?;
        node.apply(commit);
        node.flush();
        Ok(node)
    }

    /// Starts from what is durable, as the runtime does after a crash.
    fn boot(&mut self, log: &Log, lose_outbox: bool) {
        self.live = (self.make)();
        self.current.clear();
        for table in self.live.tables() {
            let rows: Rows = Arc::new(Mutex::new(self.durable.rows.get(table.name()).cloned().unwrap_or_default()));
            self.current.insert(table.name(), Arc::clone(&rows));
            table.attach(Box::new(Source(rows)), RESIDENT_ROWS);
        }
        self.unflushed.clear();
        self.applied = self.durable.applied.clone();
        self.positions = self.durable.offsets.clone();
        self.published = 0;
        if lose_outbox {
            self.durable.outbox.clear();
        }
        self.replay_left = self.durable.outbox.len();
        self.start_ends = self.inputs().map(|(t, p)| ((t, p), log.end(t, p))).collect();
    }

    fn position(&self, input: (Topic, i32)) -> i64 {
        self.positions.get(&input).copied().unwrap_or(0)
    }

    fn inputs(&self) -> impl Iterator<Item = (Topic, i32)> + '_ {
        S::CONSUMES.iter().flat_map(|&t| (0..self.partitions).map(move |p| (t, p)))
    }

    /// A commit: visible at once, durable at the next flush.
    fn apply(&mut self, commit: Commit) {
        for (table, (key, value)) in &commit.rows {
            if let Some(Ok(mut rows)) = self.current.get(table).map(|r| r.lock()) {
                match value {
                    Some(v) => rows.insert(key.clone(), v.clone()),
                    None => rows.remove(key),
                };
            }
        }
        self.applied.push(&commit.applied);
        self.unflushed.push(commit);
    }

    fn note_outputs(&self, commit: &Commit, what: &str, now_ms: i64, trace: &mut Vec<String>) {
        for out in &commit.outbox {
            trace.push(format!("{now_ms:>8} {} {what} → {} {}", S::NAME, out.topic, out.key));
        }
    }
}

impl<S: Service> Process for Node<S> {
    fn name(&self) -> &'static str {
        S::NAME
    }

    fn consumes(&self) -> &'static [Topic] {
        S::CONSUMES
    }

    fn step(&mut self, log: &Log, rng: &mut Rng, now_ms: i64, trace: &mut Vec<String>) -> Result<bool, String> {
        // As the runtime does: what the last run left in the outbox goes out before anything
        // new is read.
        if self.replay_left > 0 {
            return Ok(false);
        }
        let mut unread: Vec<(Topic, i32)> = self.inputs().filter(|&i| self.position(i) < log.end(i.0, i.1)).collect();
        if unread.is_empty() {
            return Ok(false);
        }
        // One to three partitions in one batch (one commit), as the loop takes what is queued.
        let mut batch = Vec::new();
        for _ in 0..1 + rng.below(3) {
            if unread.is_empty() {
                break;
            }
            let (topic, partition) = unread.remove(rng.below(unread.len() as u64) as usize);
            let from = self.position((topic, partition));
            let records = log.fetch(topic, partition, from, 1 + rng.below(6) as usize);
            let next_offset = from + records.len() as i64;
            let keys: Vec<String> =
                records.iter().map(|r| String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned()).collect();
            trace.push(format!("{now_ms:>8} {} reads {topic}/{partition}@{from}..{next_offset} [{}]", S::NAME, keys.join(" ")));
            self.positions.insert((topic, partition), next_offset);
            batch.push(Fetched { topic, partition, records, unreadable: Vec::new(), next_offset, caught_up: false });
        }
        let commit = process_batch(&mut self.live, &self.applied, &(), batch, now_ms)
            .map_err(|e| format!("{}: the step failed: {e}", S::NAME))?;
        self.note_outputs(&commit, "decides", now_ms, trace);
        self.apply(commit);
        Ok(true)
    }

    fn flush(&mut self) {
        let published = std::mem::take(&mut self.published);
        self.durable.outbox.drain(..published.min(self.durable.outbox.len()));
        for commit in self.unflushed.drain(..) {
            for (table, (key, value)) in commit.rows {
                let rows = self.durable.rows.entry(table).or_default();
                match value {
                    Some(v) => rows.insert(key, v),
                    None => rows.remove(&key),
                };
            }
            self.durable.offsets.extend(commit.offsets);
            self.durable.applied.push(&commit.applied);
            self.durable.outbox.extend(commit.outbox);
        }
    }

    fn publish(&mut self, log: &mut Log, rng: &mut Rng, max: usize, duplicate_per_mille: u64, now_ms: i64, trace: &mut Vec<String>) -> bool {
        let waiting = &self.durable.outbox[self.published.min(self.durable.outbox.len())..];
        if waiting.is_empty() {
            return false;
        }
        let n = waiting.len().min(max.max(1));
        for entry in &waiting[..n] {
            log.append_entry(entry, now_ms);
            let twice = rng.chance(duplicate_per_mille);
            if twice {
                log.append_entry(entry, now_ms);
            }
            trace.push(format!("{now_ms:>8} {} publishes {} {}{}", S::NAME, entry.topic, entry.key, if twice { " twice" } else { "" }));
        }
        self.published += n;
        self.replay_left = self.replay_left.saturating_sub(n);
        true
    }

    fn timer(&mut self, _log: &Log, now_ms: i64, trace: &mut Vec<String>) -> Result<(), String> {
        // Deadlines are judged once every input is read to where it stood at the start.
        if self.replay_left > 0 || !self.inputs().all(|i| self.position(i) >= self.start_ends.get(&i).copied().unwrap_or(0)) {
            return Ok(());
        }
        let commit = process_timers(&mut self.live, now_ms).map_err(|e| format!("{}: the timer step failed: {e}", S::NAME))?;
        if !commit.is_empty() {
            self.note_outputs(&commit, "times out", now_ms, trace);
            self.apply(commit);
        }
        Ok(())
    }

    fn crash(&mut self, log: &Log, lose_outbox: bool) -> usize {
        let lost = self.unflushed.len();
        self.boot(log, lose_outbox);
        lost
    }

    fn busy(&self, log: &Log) -> bool {
        !self.unflushed.is_empty()
            || self.published < self.durable.outbox.len()
            || self.inputs().any(|i| self.position(i) < log.end(i.0, i.1))
    }

    fn rows(&self, table: &str) -> BTreeMap<String, Vec<u8>> {
        self.durable.rows.get(table).cloned().unwrap_or_default()
    }
}
