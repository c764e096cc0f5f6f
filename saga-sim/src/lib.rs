//! The whole saga in one process, driven by one seed: the four services' real rules and the
//! runtime's real step (`saga_core::step`) against an in-memory Kafka ([`log`]) and
//! in-memory stores with sled's contract ([`node`]), while a scheduler interleaves them,
//! crashes and restarts them between any two steps (after a commit, before a flush, before a
//! publish, mid-publish), duplicates records, reorders topics and moves a virtual clock. At the
//! end of every run the oracles check what the saga promises: every order terminal with the
//! compensations its outcome needs, money and stock exactly conserved, no event id twice with
//! different content.
//!
//! The travel saga runs here too (`Config::saga`, [`travel`]): its five rule sets under the
//! same faults, with its own oracles (every trip ended and whole, seats, rooms, cars and money
//! conserved).
//!
//! A run is a function of its seed: `SAGA_SIM_SEED=…` replays one exactly (see the tests).

pub mod log;
pub mod node;
pub mod planted;
pub mod rng;
pub mod travel;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use inventory_rules::Inventory;
use order_rules::{OrderRecord, Orders};
use payment_rules::Payment;
use shared_events::envelope::headers;
use shared_events::partitioner::partition_for_key;
use shared_events::{Address, Envelope, Event, EventId, LineItem, OrderCancellationRequested, OrderCreated, Saga, Topic};
use shipping_rules::Shipping;

use crate::log::Log;
use crate::node::{Node, Process};
use crate::rng::Rng;

/// A bug planted on purpose, to show the oracles catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    /// In the runtime's part: a restart forgets the outbox instead of publishing it first.
    OutboxLostOnRestart,
    /// In the rules: payment refunds a cancellation it already refunded
    /// ([`planted::RefundOnDuplicate`]). Only a duplicate the dedup window let through can
    /// trigger it.
    RefundOnDuplicate,
    /// In the travel saga's rules: the car service forgets a cancellation that came before its
    /// trip's request ([`planted::ReserveAfterCancel`]), so the late request holds a car for
    /// good.
    ReserveAfterCancel,
}

/// What a run does besides its seed.
#[derive(Debug, Clone)]
pub struct Config {
    /// Orders the storefront places.
    pub orders: usize,
    /// Scheduler steps before the faults stop and everything is let run to its end.
    pub chaos_steps: usize,
    pub planted: Option<PlantedBug>,
    /// Which saga runs: the order saga, or the travel saga (`orders` is then its trips).
    pub saga: Saga,
}

impl Default for Config {
    fn default() -> Self {
        Config { orders: 12, chaos_steps: 1_500, planted: None, saga: Saga::Order }
    }
}

/// A run that kept every promise.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub crashes: u32,
    pub records: usize,
    /// Dead letters the poison records called for (one per record and service reading it).
    pub poison: usize,
    pub completed: usize,
    /// Cancelled orders by reason (`timeout`, `payment_failed`, …).
    pub cancelled: BTreeMap<&'static str, usize>,
}

/// A run that broke a promise: how to replay it, what broke, and what happened to the order.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub violations: Vec<String>,
    /// The trace lines of the first order a violation names (or the whole run's last lines).
    pub trace: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {} broke the saga's promises (replay: SAGA_SIM_SEED={}):", self.seed, self.seed)?;
        for v in &self.violations {
            writeln!(f, "  {v}")?;
        }
        writeln!(f, "what happened:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// The demo world every run starts from.
const WALLETS: [(&str, u64); 2] = [("alice", 100_000), ("bob", 1_000)];
const STOCK: [(&str, u32); 3] = [("widget", 100), ("gadget", 5), ("gizmo", 0)];
/// Weighted by repetition: most orders can succeed, some cannot pay (bob), some are from a
/// customer payment does not know (carol), some go where shipping does not (AQ), some want what
/// is out of stock (gizmo), or runs out (gadget).
const CUSTOMERS: [&str; 5] = ["alice", "alice", "alice", "bob", "carol"];
const SKUS: [&str; 5] = ["widget", "widget", "widget", "gadget", "gizmo"];
const COUNTRIES: [&str; 5] = ["US", "US", "US", "CA", "AQ"];
const DEADLINE: Duration = Duration::from_secs(10);
/// What a producer gets wrong: not JSON, the wrong shape, not text, no value at all.
const POISON: [&[u8]; 4] = [b"{not json", br#"{"order_id": 7}"#, &[0xff, 0xfe, 0x00], b""];

struct World {
    saga: Saga,
    rng: Rng,
    now_ms: i64,
    log: Log,
    partitions: i32,
    nodes: Vec<Box<dyn Process>>,
    /// The orders the storefront placed.
    placed: Vec<OrderCreated>,
    /// The trips it requested (the travel saga).
    trips: Vec<shared_events::travel::TripRequested>,
    trace: Vec<String>,
    crashes: u32,
    planted: Option<PlantedBug>,
    /// When the storefront placed its last order.
    last_placed_ms: i64,
    /// Orders still open when everything had first been delivered, before the clock was moved
    /// past every deadline: an event lost on the way (a deadline would hide it).
    open_when_quiet: Option<Vec<String>>,
}

/// Runs one seed to its end and checks the oracles.
pub fn run(seed: u64, config: &Config) -> Result<Outcome, Failure> {
    let mut world = World::new(seed, config).map_err(|e| Failure { seed, violations: vec![e], trace: Vec::new() })?;
    let fail = |world: &World, violations: Vec<String>| Failure { seed, trace: world.trace_for(&violations), violations };
    if let Err(e) = world.chaos(config) {
        return Err(fail(&world, vec![e]));
    }
    if let Err(e) = world.settle() {
        return Err(fail(&world, vec![e]));
    }
    let (outcome, violations) = world.check();
    if violations.is_empty() {
        Ok(outcome)
    } else {
        Err(fail(&world, violations))
    }
}

impl World {
    fn new(seed: u64, config: &Config) -> Result<World, String> {
        let mut rng = Rng::new(seed);
        let partitions = 1 + rng.below(3) as i32;
        // Small windows let duplicates through to the rules, which must still drop them.
        let window = *rng.pick(&[1, 2, 4, 16, 64, usize::MAX]);
        let wallets = WALLETS.iter().map(|(c, w)| (c.to_string(), *w)).collect();
        let stock = STOCK.iter().map(|(s, n)| (s.to_string(), *n)).collect();
        let nodes: Vec<Box<dyn Process>> = if config.saga == Saga::Travel {
            travel::nodes(partitions, window, wallets, config.planted)?
        } else {
            vec![
            Box::new(Node::new(|| Orders::new(Some(DEADLINE)), order_rules::Seed {}, partitions, window)?),
            if config.planted == Some(PlantedBug::RefundOnDuplicate) {
                Box::new(Node::new(|| planted::RefundOnDuplicate(Payment::default()), payment_rules::Seed { wallets }, partitions, window)?)
            } else {
                Box::new(Node::new(Payment::default, payment_rules::Seed { wallets }, partitions, window)?)
            },
            Box::new(Node::new(Inventory::default, inventory_rules::Seed { stock }, partitions, window)?),
            Box::new(Node::new(Shipping::default, shipping_rules::Seed::default(), partitions, window)?),
            ]
        };
        Ok(World {
            saga: config.saga,
            rng,
            now_ms: 1_000_000,
            log: Log::default(),
            partitions,
            nodes,
            placed: Vec::new(),
            trips: Vec::new(),
            trace: Vec::new(),
            crashes: 0,
            planted: config.planted,
            last_placed_ms: 0,
            open_when_quiet: None,
        })
    }

    fn place(&mut self, seq: usize) {
        if self.saga == Saga::Travel {
            return self.request_trip(seq);
        }
        let id = format!("o-{seq}");
        let sku = *self.rng.pick(&SKUS);
        let order = OrderCreated {
            order_id: id.as_str().into(),
            customer_id: self.rng.pick(&CUSTOMERS).to_string(),
            items: vec![LineItem { sku: sku.into(), quantity: 1 + self.rng.below(3) as u32, unit_price_cents: 100 * (1 + self.rng.below(20)) }],
            ship_to: Address { country: self.rng.pick(&COUNTRIES).to_string(), ..Address::default() },
        };
        let partition = partition_for_key(id.as_bytes(), self.partitions);
        let with_headers = self.rng.chance(500);
        let envelope = Envelope::root(Event::OrderCreated(order.clone()), self.now_ms);
        let offset = self.log.append_event(&envelope, partition, with_headers, self.now_ms);
        self.trace.push(format!("{:>8} storefront places {id} ({} {}×{} for {}, to {}) at OrderCreated/{partition}@{offset}",
            self.now_ms, order.customer_id, sku, order.items[0].quantity, order.total_cents().unwrap_or(0), order.ship_to.country));
        self.placed.push(order);
        self.last_placed_ms = self.now_ms;
    }

    fn request_cancellation(&mut self) {
        if self.saga == Saga::Travel {
            return self.cancel_trip();
        }
        if self.placed.is_empty() {
            return;
        }
        let id = self.rng.pick(&self.placed).order_id.clone();
        let partition = partition_for_key(id.as_str().as_bytes(), self.partitions);
        let envelope = Envelope::root(Event::OrderCancellationRequested(OrderCancellationRequested { order_id: id.clone(), reason: None }), self.now_ms);
        self.log.append_event(&envelope, partition, self.rng.chance(500), self.now_ms);
        self.trace.push(format!("{:>8} the customer asks to cancel {id}", self.now_ms));
    }

    /// A record no service can decode, on any saga topic, as a buggy producer or a person with
    /// kcat writes it: each service that reads the topic must park it once and go on.
    fn write_poison(&mut self) {
        let topics = self.saga.topics();
        let topic = *self.rng.pick(&topics);
        if topic == Topic::DeadLetter {
            return;
        }
        let partition = self.rng.below(self.partitions as u64) as i32;
        let ids = self.ids();
        let key = match ids.is_empty() {
            true => "junk".to_owned(),
            false => self.rng.pick(&ids).clone(),
        };
        let value = *self.rng.pick(&POISON);
        let record = saga_core::Record {
            offset: -1,
            key: Some(key.clone().into_bytes()),
            value: (!value.is_empty()).then(|| value.to_vec()),
            headers: Default::default(),
            timestamp_ms: self.now_ms,
        };
        let offset = self.log.append(topic, partition, record);
        self.trace.push(format!("{:>8} a producer writes poison keyed {key} at {topic}/{partition}@{offset}", self.now_ms));
    }

    /// A record appended again, as a producer retrying after a lost acknowledgement does.
    fn duplicate_a_record(&mut self) {
        let topics = self.saga.topics();
        let topic = *self.rng.pick(&topics);
        let partition = self.rng.below(self.partitions as u64) as i32;
        let end = self.log.end(topic, partition);
        if end > 0 {
            let offset = self.rng.below(end as u64) as i64;
            self.log.duplicate(topic, partition, offset);
            self.trace.push(format!("{:>8} Kafka holds {topic}/{partition}@{offset} twice", self.now_ms));
        }
    }

    /// Faults and progress interleaved; the storefront places its orders meanwhile.
    fn chaos(&mut self, config: &Config) -> Result<(), String> {
        let mut next_order = 0;
        for _ in 0..config.chaos_steps {
            let node = self.rng.below(self.nodes.len() as u64) as usize;
            match self.rng.below(100) {
                0..=39 => {
                    self.nodes[node].step(&self.log, &mut self.rng, self.now_ms, &mut self.trace)?;
                }
                40..=54 => self.nodes[node].flush(),
                55..=69 => {
                    let max = 1 + self.rng.below(4) as usize;
                    self.nodes[node].publish(&mut self.log, &mut self.rng, max, 50, self.now_ms, &mut self.trace);
                }
                70..=77 => self.nodes[node].timer(&self.log, self.now_ms, &mut self.trace)?,
                78..=88 => self.now_ms += 1 + self.rng.below(600) as i64,
                89..=94 if next_order < config.orders => {
                    self.place(next_order);
                    next_order += 1;
                }
                // A few customers change their minds, racing their orders.
                95 if self.rng.chance(200) => self.request_cancellation(),
                96 if self.rng.chance(150) => self.write_poison(),
                97..=98 => self.duplicate_a_record(),
                99 => {
                    self.crashes += 1;
                    let lost = self.nodes[node].crash(&self.log, self.planted == Some(PlantedBug::OutboxLostOnRestart));
                    self.trace.push(format!("{:>8} {} crashes (kill -9), losing {lost} unflushed commits, and restarts", self.now_ms, self.nodes[node].name()));
                }
                _ => {}
            }
        }
        while next_order < config.orders {
            self.place(next_order);
            next_order += 1;
        }
        Ok(())
    }

    /// No more faults: every process runs until nothing is left to do, and the clock passes
    /// every deadline.
    fn settle(&mut self) -> Result<(), String> {
        for round in 0..1_000 {
            let mut busy = false;
            for node in &mut self.nodes {
                while node.step(&self.log, &mut self.rng, self.now_ms, &mut self.trace)? {}
                node.timer(&self.log, self.now_ms, &mut self.trace)?;
                node.flush();
                while node.publish(&mut self.log, &mut self.rng, usize::MAX, 0, self.now_ms, &mut self.trace) {
                    node.flush();
                }
                busy |= node.busy(&self.log);
            }
            for node in &self.nodes {
                busy |= node.busy(&self.log);
            }
            if !busy && round > 0 {
                let every_deadline = self.last_placed_ms + DEADLINE.as_millis() as i64;
                if self.now_ms > every_deadline {
                    return Ok(());
                }
                // Everything delivered: every saga has run its course, unless an event was
                // lost. Then let the deadlines pass, and settle again.
                if self.open_when_quiet.is_none() {
                    self.open_when_quiet = Some(self.open_orders());
                }
                self.now_ms = every_deadline + 1;
            }
            self.now_ms += 100;
        }
        Err("the saga never settled".to_owned())
    }

    /// The ids of the orders or trips placed so far.
    fn ids(&self) -> Vec<String> {
        match self.saga {
            Saga::Order => self.placed.iter().map(|o| o.order_id.0.clone()).collect(),
            Saga::Travel => self.trips.iter().map(|t| t.trip_id.0.clone()).collect(),
        }
    }

    /// The orders order-service (or trips trip-service) has not ended (so far).
    fn open_orders(&self) -> Vec<String> {
        if self.saga == Saga::Travel {
            return self.open_trips();
        }
        let mut ignored = Vec::new();
        let orders = rows::<OrderRecord>(self.node("order-service"), "orders", &mut ignored);
        self.placed
            .iter()
            .map(|o| o.order_id.as_str())
            .filter(|id| !orders.get(*id).is_some_and(OrderRecord::is_terminal))
            .map(str::to_owned)
            .collect()
    }

    fn node(&self, name: &str) -> &dyn Process {
        self.nodes.iter().find(|n| n.name() == name).map(|n| n.as_ref()).unwrap_or_else(|| self.nodes[0].as_ref())
    }

    /// The oracles.
    fn check(&self) -> (Outcome, Vec<String>) {
        let mut violations = Vec::new();
        let mut outcome = Outcome { crashes: self.crashes, records: self.log.all().count(), ..Outcome::default() };
        if self.saga == Saga::Travel {
            self.check_trips(&mut outcome, &mut violations);
        } else {
            self.check_orders(&mut outcome, &mut violations);
        }
        self.check_log(&mut outcome, &mut violations);
        (outcome, violations)
    }

    /// Every order ended, with its compensations; money and stock conserved.
    fn check_orders(&self, outcome: &mut Outcome, violations: &mut Vec<String>) {
        let orders = rows::<OrderRecord>(self.node("order-service"), "orders", violations);
        let mut spent: BTreeMap<&str, u64> = BTreeMap::new();
        let mut taken: BTreeMap<&str, u64> = BTreeMap::new();
        for order in &self.placed {
            let id = order.order_id.as_str();
            let Some(rec) = orders.get(id) else {
                violations.push(format!("{id}: order-service never heard of it"));
                continue;
            };
            if !rec.is_terminal() {
                violations.push(format!("{id}: not terminal ({:?})", rec.status()));
            } else if rec.completed {
                outcome.completed += 1;
                *spent.entry(&order.customer_id).or_default() += order.total_cents().unwrap_or(0);
                for line in &order.items {
                    *taken.entry(&line.sku).or_default() += u64::from(line.quantity);
                }
            } else {
                *outcome.cancelled.entry(rec.cancelled.map_or("?", |r| r.as_str())).or_default() += 1;
                let awaiting = rec.awaiting();
                if !awaiting.is_empty() {
                    violations.push(format!("{id}: cancelled, still waiting for {awaiting:?}"));
                }
            }
        }
        for id in self.open_when_quiet.iter().flatten() {
            violations.push(format!("{id}: still open once every event was delivered (before any deadline was let pass)"));
        }
        // Money: each wallet lost exactly what its completed orders cost; no other wallet exists.
        let wallets = rows::<u64>(self.node("payment-service"), "wallets", violations);
        let expected: BTreeMap<String, u64> =
            WALLETS.iter().map(|(c, start)| (c.to_string(), start - spent.get(c).copied().unwrap_or(0))).collect();
        if wallets != expected {
            violations.push(format!("wallets: {wallets:?}, expected {expected:?}"));
        }
        // Stock: exactly what completed orders took is gone.
        let stock = rows::<u32>(self.node("inventory-service"), "stock", violations);
        let expected: BTreeMap<String, u32> = STOCK
            .iter()
            .map(|(sku, start)| (sku.to_string(), start - taken.get(sku).map_or(0, |n| u32::try_from(*n).unwrap_or(u32::MAX))))
            .collect();
        if stock != expected {
            violations.push(format!("stock: {stock:?}, expected {expected:?}"));
        }
    }

    /// What holds of the whole log in either saga: event ids, poison, `saga audit`.
    fn check_log(&self, outcome: &mut Outcome, violations: &mut Vec<String>) {
        // An event id names one event: copies are equal.
        let mut by_id: BTreeMap<Vec<u8>, (Topic, Option<Vec<u8>>)> = BTreeMap::new();
        for (topic, _, record) in self.log.all() {
            let Some(id) = record.headers.get(headers::EVENT_ID) else { continue };
            let seen = by_id.entry(id.clone()).or_insert_with(|| (topic, record.value.clone()));
            if *seen != (topic, record.value.clone()) {
                violations.push(format!("event {} on {topic} differs from an earlier copy", String::from_utf8_lossy(id)));
            }
        }
        // Poison: every record that does not decode is parked once by each service that reads
        // its topic (one dead letter id per service and offset, however often it was read), and
        // nothing else is parked.
        let mut recorded: Vec<saga_cli::Recorded> = Vec::new();
        let mut poison: BTreeMap<EventId, String> = BTreeMap::new();
        let mut parked: BTreeMap<EventId, String> = BTreeMap::new();
        for (topic, partition, record) in self.log.all() {
            let offset = record.offset;
            match shared_events::envelope::decode_record(record.raw(topic)) {
                Ok(envelope) => {
                    if let Event::DeadLetter(letter) = &envelope.event {
                        let id = envelope.event.saga_id().unwrap_or("-");
                        let what = format!("{id}: parked on DeadLetter by {}: {} ({})", letter.service, letter.error, letter.error_code);
                        parked.insert(envelope.meta.event_id, what);
                    }
                    recorded.push(saga_cli::Recorded { topic, partition, offset, envelope });
                }
                Err(e) if topic == Topic::DeadLetter => violations.push(format!("{topic}/{partition}@{offset} does not decode: {e}")),
                Err(_) => {
                    for node in self.nodes.iter().filter(|n| n.consumes().contains(&topic)) {
                        let letter = EventId::dead_letter(node.name(), topic.as_str(), partition, offset);
                        poison.insert(letter, format!("poison at {topic}/{partition}@{offset}: never parked by {}", node.name()));
                    }
                }
            }
        }
        for (id, what) in &parked {
            if !poison.contains_key(id) {
                violations.push(what.clone());
            }
        }
        for (id, what) in &poison {
            if !parked.contains_key(id) {
                violations.push(what.clone());
            }
        }
        outcome.poison = poison.len();
        // And what `saga audit` checks of the whole log, with no grace: everything has settled.
        for v in saga_cli::analysis::audit(&recorded, self.now_ms, 0) {
            violations.push(format!("{}: audit: {}: {}", v.order_id.as_deref().unwrap_or("-"), v.rule, v.detail));
        }
    }

    /// The trace lines of the first order a violation names; otherwise the last lines.
    fn trace_for(&self, violations: &[String]) -> Vec<String> {
        let named = violations.iter().find_map(|v| v.split(':').next().filter(|w| w.starts_with("o-") || w.starts_with("t-")));
        match named {
            Some(id) => {
                let needle = format!("{id} ");
                let end_needle = format!("{id}]");
                self.trace.iter().filter(|l| l.contains(&needle) || l.contains(&end_needle) || l.ends_with(id) || l.contains("crashes")).cloned().collect()
            }
            None => self.trace.iter().rev().take(40).rev().cloned().collect(),
        }
    }
}

/// A table's durable rows, decoded.
fn rows<V: serde::de::DeserializeOwned>(node: &dyn Process, table: &str, violations: &mut Vec<String>) -> BTreeMap<String, V> {
    node.rows(table)
        .into_iter()
        .filter_map(|(k, v)| match serde_json::from_slice(&v) {
            Ok(v) => Some((k, v)),
            Err(e) => {
                violations.push(format!("{}/{table}/{k}: unreadable row: {e}", node.name()));
                None
            }
        })
        .collect()
}
