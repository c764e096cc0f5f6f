//! `saga`: see the whole saga without a coordinator, straight from its topics.
//!
//! ```text
//! saga trace <ORDER_ID>          the order's timeline across all topics, and its state
//! saga watch [--order|--customer] every event live, one line each
//! saga stuck --older-than 30s    sagas with no terminal state after that long, and what they wait on
//! saga audit                     check the whole log for the saga's invariants (exit 1 on violation)
//! saga place --customer alice --item widget:2 --price 1250 --country US
//! saga cancel <ORDER_ID>         ask to cancel an order (OrderCancellationRequested)
//! saga acl [--dry-run]           grant each service, the storefront and monitors their Kafka ACLs
//! ```

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use saga_cli::analysis::{self, Recorded};
use saga_cli::io::Topics;
use saga_cli::render;
use saga_runtime::config::parse_duration;
use saga_runtime::security::SecurityArgs;
use shared_events::{Address, Envelope, Event, LineItem, OrderCancellationRequested, OrderCreated};

/// Trace, watch and audit the order saga by reading its Kafka topics.
#[derive(Parser)]
#[command(name = "saga", version, about, long_about = None)]
struct Cli {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, global = true, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "localhost:9092", value_delimiter = ',')]
    bootstrap_servers: Vec<String>,

    #[command(flatten)]
    security: SecurityArgs,

    /// Topic prefix of the deployment (as given to the services).
    #[arg(long, global = true, env = "SAGA_TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,

    /// Colour: auto (when writing to a terminal), always, never.
    #[arg(long, global = true, default_value = "auto", value_parser = ["auto", "always", "never"])]
    color: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// An order's or a trip's timeline across all topics, then its state in one line.
    Trace {
        /// The order id or trip id.
        order_id: String,
    },
    /// Follow every topic live, one line per event.
    Watch {
        /// Only this order (or trip).
        #[arg(long)]
        order: Option<String>,
        /// Only this customer's orders and trips.
        #[arg(long)]
        customer: Option<String>,
        /// Start from the oldest records instead of now.
        #[arg(long)]
        from_beginning: bool,
    },
    /// Sagas with no terminal state (or compensation missing) after this long.
    Stuck {
        /// e.g. 30s, 5m.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        older_than: Duration,
    },
    /// Check the whole log for the sagas' invariants (orders' and trips'); exit 1 if any is
    /// broken.
    Audit {
        /// Compensations of cancellations younger than this are in flight, not missing.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        grace: Duration,
    },
    /// Publish an OrderCreated; prints the order id.
    Place {
        #[arg(long)]
        customer: String,
        /// A line, `sku:quantity` or `sku:quantity:unit_price_cents`; repeat for more lines.
        #[arg(long = "item", required = true, value_parser = parse_item)]
        items: Vec<(String, u32, Option<u64>)>,
        /// Unit price in cents for lines that do not give one.
        #[arg(long, default_value_t = 1000)]
        price: u64,
        /// Destination country (ISO 3166 alpha-2).
        #[arg(long, default_value = "US")]
        country: String,
        /// The order id [default: a new o-<random>].
        #[arg(long)]
        order_id: Option<String>,
        /// The orders view to follow the order on (its URL is printed).
        #[arg(long, env = "SAGA_VIEW_URL", default_value = "http://127.0.0.1:8080")]
        view_url: String,
    },
    /// Ask to cancel an order (refused once it has shipped).
    Cancel {
        order_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Grant each service, the storefront and monitors the Kafka ACLs they need and no more
    /// (derived from the services' code); idempotent. Needs a principal allowed to manage ACLs
    /// (a super user) and a cluster with an authorizer; everything not granted stays denied.
    Acl {
        /// Print what would be granted; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// A role's principal, ROLE=PRINCIPAL (e.g. `storefront=User:shop`); repeatable.
        /// Roles: order-service, payment-service, inventory-service, shipping-service,
        /// storefront, monitor [default: User:<role>].
        #[arg(long = "principal", value_parser = parse_principal)]
        principals: Vec<(String, String)>,
    },
}

fn parse_principal(s: &str) -> Result<(String, String), String> {
    let roles: Vec<&str> = saga_cli::access::roles().iter().map(|r| r.name).collect();
    match s.split_once('=') {
        Some((role, principal)) if roles.contains(&role) && principal.split_once(':').is_some_and(|(t, n)| !t.is_empty() && !n.is_empty()) => {
            Ok((role.to_owned(), principal.to_owned()))
        }
        Some((role, _)) if !roles.contains(&role) => Err(format!("`{role}` is not a role (roles: {})", roles.join(", "))),
        _ => Err(format!("`{s}` is not ROLE=TYPE:NAME, e.g. storefront=User:shop")),
    }
}

fn parse_item(s: &str) -> Result<(String, u32, Option<u64>), String> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || format!("`{s}` is not sku:quantity[:unit_price_cents]");
    match parts.as_slice() {
        [sku, qty] | [sku, qty, _] if !sku.is_empty() => {
            let qty: u32 = qty.parse().ok().filter(|q| *q > 0).ok_or_else(bad)?;
            let price = match parts.get(2) {
                Some(p) => Some(p.parse().map_err(|_| bad())?),
                None => None,
            };
            Ok(((*sku).to_owned(), qty, price))
        }
        _ => Err(bad()),
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("saga: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let colour = match cli.color.as_str() {
        "always" => true,
        "never" => false,
        _ => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let security = cli.security.into_security()?;
    if let Command::Acl { dry_run, principals } = &cli.command {
        return provision_acls(&cli.bootstrap_servers, &security, &cli.topic_prefix, principals, *dry_run).await;
    }
    let topics = Topics::connect(&cli.bootstrap_servers, &security, &cli.topic_prefix).await?;
    match cli.command {
        Command::Trace { order_id } => {
            let events = topics.read_all().await?.events;
            // An order and a trip may share an id: each is its own saga, traced in turn.
            let sagas: Vec<_> = analysis::by_saga(&events).into_iter().filter(|((_, id), _)| *id == order_id).collect();
            if sagas.is_empty() {
                bail!("no events for order or trip `{order_id}`");
            }
            for (i, ((saga, _), history)) in sagas.iter().enumerate() {
                if i > 0 {
                    say("");
                }
                say(&format!("{} {order_id} (partition {})", analysis::noun(*saga), history[0].partition));
                let mut previous = None;
                for e in history {
                    say(&render::trace_line(e, previous, colour));
                    previous = Some(e.at_ms());
                }
                say(&analysis::state_line(history));
            }
        }
        Command::Watch { order, customer, from_beginning } => {
            let shown = |e: &Recorded, owner: &HashMap<String, String>| {
                let id = e.saga_id().unwrap_or_default();
                order.as_deref().is_none_or(|o| o == id)
                    && customer.as_deref().is_none_or(|c| owner.get(id).map(String::as_str) == Some(c))
            };
            // History first, in time order (a customer filter needs it anyway, to know whose
            // each order is); then live from exactly where the history ended.
            let mut owner: HashMap<String, String> = HashMap::new();
            let mut ends = None;
            if customer.is_some() || from_beginning {
                let mut history = topics.read_all().await?;
                history.events.sort_by_key(|e| (e.at_ms(), e.topic));
                for e in &history.events {
                    learn_owner(&mut owner, e);
                    if from_beginning && shown(e, &owner) {
                        say(&render::watch_line(e, colour));
                    }
                }
                ends = Some(history.ends);
            }
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            let follow = topics.follow(ends.as_ref(), tx, |n| {
                eprintln!("saga: watching {n} partitions live (Ctrl-C to stop)");
            });
            tokio::pin!(follow);
            loop {
                tokio::select! {
                    r = &mut follow => { r?; break; }
                    _ = tokio::signal::ctrl_c() => break,
                    Some(e) = rx.recv() => {
                        learn_owner(&mut owner, &e);
                        if shown(&e, &owner) {
                            say(&render::watch_line(&e, colour));
                        }
                    }
                }
            }
        }
        Command::Stuck { older_than } => {
            let events = topics.read_all().await?.events;
            let stuck = analysis::stuck(&events, now_ms(), older_than.as_millis() as i64);
            if stuck.is_empty() {
                say(&format!("no saga older than {older_than:?} is unfinished"));
            }
            for s in &stuck {
                let id = format!("{} {}", analysis::noun(s.saga), s.order_id);
                say(&format!("{id:<30} {:>8.1}s  last {:<24} waiting on {}", s.age_ms as f64 / 1000.0, s.last.as_str(), s.waiting_on));
            }
        }
        Command::Audit { grace } => {
            let history = topics.read_all().await?;
            let (events, undecodable) = (history.events, history.undecodable);
            let sagas = analysis::by_saga(&events).len();
            let violations = analysis::audit(&events, now_ms(), grace.as_millis() as i64);
            for v in &violations {
                let whose = match (v.saga, &v.order_id) {
                    (Some(saga), Some(id)) => format!("{} {id}", analysis::noun(saga)),
                    (_, id) => id.clone().unwrap_or_else(|| "-".to_owned()),
                };
                say(&format!("{} {whose}: {} — {}", render::paint("VIOLATION", render::Tone::Poison, colour), v.rule, v.detail));
                for e in &v.evidence {
                    say(&format!("    {} {}/{}@{} id={} {}", render::clock(e.at_ms()), e.topic, e.partition, e.offset, e.envelope.meta.event_id, render::facts(&e.envelope.event)));
                }
            }
            say(&format!(
                "audited {} events of {sagas} orders and trips ({undecodable} undecodable records, on DeadLetter): {} violation(s)",
                events.len(),
                violations.len()
            ));
            if !violations.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Place { customer, items, price, country, order_id, view_url } => {
            let order_id = order_id.unwrap_or_else(|| format!("o-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
            let event = OrderCreated {
                order_id: order_id.as_str().into(),
                customer_id: customer,
                items: items
                    .into_iter()
                    .map(|(sku, quantity, p)| LineItem { sku, quantity, unit_price_cents: p.unwrap_or(price) })
                    .collect(),
                ship_to: Address { country, ..Address::default() },
            };
            let total = event.total_cents().context("the order total overflows")?;
            let (partition, offset) = topics.publish(&Envelope::root(Event::OrderCreated(event), now_ms())).await?;
            eprintln!("placed {order_id} ({total} cents) at OrderCreated/{partition}@{offset}; follow it with: saga trace {order_id}");
            // The view has seen the order once its `read_to` for that partition is past the offset.
            eprintln!(
                "or on the orders view: {}/orders/{} (seen once read_to.OrderCreated.{partition} > {offset})",
                view_url.trim_end_matches('/'),
                path_segment(&order_id)
            );
            say(&order_id);
        }
        Command::Cancel { order_id, reason } => {
            let event = OrderCancellationRequested { order_id: order_id.as_str().into(), reason };
            topics.publish(&Envelope::root(Event::OrderCancellationRequested(event), now_ms())).await?;
            eprintln!("asked to cancel {order_id}; see the outcome with: saga trace {order_id}");
        }
        Command::Acl { .. } => unreachable!("handled before connecting to the topics"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `saga acl`: creates the plan's ACLs that do not exist yet, one line per principal and
/// operation, and names ACLs on the saga's topics that the plan does not have (left alone).
async fn provision_acls(
    servers: &[String],
    security: &saga_runtime::security::Security,
    prefix: &str,
    principals: &[(String, String)],
    dry_run: bool,
) -> Result<ExitCode> {
    use rskafka::client::acl::{AclBinding, AclBindingFilter, ResourceType};
    let backoff = saga_runtime::kafka::backoff(Duration::from_secs(1));
    let client = saga_runtime::kafka::connect_with(servers, security, "saga-cli", backoff).await?;
    let admin = client.controller_client()?;
    let filter = AclBindingFilter::any();
    let describe = || async {
        let listed = saga_runtime::kafka::bounded("describe ACLs", Duration::ZERO, admin.describe_acls(&filter)).await.map_err(acl_error)?;
        Ok::<_, anyhow::Error>(listed.into_iter().collect::<std::collections::BTreeSet<AclBinding>>())
    };
    let existing = describe().await?;
    let plan = saga_cli::access::plan(prefix, |role| {
        principals.iter().rev().find(|(r, _)| r == role.name).map_or_else(|| format!("User:{}", role.name), |(_, p)| p.clone())
    });
    // Two roles may share a principal: each ACL once.
    let wanted: Vec<AclBinding> =
        plan.iter().flat_map(|(_, _, b)| b.iter().cloned()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let missing: Vec<AclBinding> = wanted.iter().filter(|b| !existing.contains(b)).cloned().collect();
    let mut failed = Vec::new();
    if !dry_run && !missing.is_empty() {
        let results = saga_runtime::kafka::bounded("create ACLs", Duration::ZERO, admin.create_acls(&missing)).await.map_err(acl_error)?;
        failed = missing.iter().zip(results).filter_map(|(b, r)| r.err().map(|e| (b.clone(), e))).collect();
        // The controller has committed them; wait until the broker answering enforces them
        // too, so services started next are not refused.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = describe().await?;
            let pending = missing.iter().filter(|b| !now.contains(b) && !failed.iter().any(|(f, _)| f == *b)).count();
            if pending == 0 {
                break;
            }
            if std::time::Instant::now() > deadline {
                eprintln!("saga: warning: {pending} granted ACLs not visible yet after 10 s");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let status = |b: &AclBinding| match (existing.contains(b), dry_run) {
        (true, _) => "exists",
        (false, true) => "would grant",
        (false, false) if failed.iter().any(|(f, _)| f == b) => "FAILED",
        (false, false) => "granted",
    };
    for (role, principal, bindings) in &plan {
        say(&format!("{principal} ({}: {})", role.name, role.about));
        // One line per resource type, operation and status, topics first, in the operations'
        // order (Read, Write, Create, …).
        let mut lines: std::collections::BTreeMap<(i8, i8, &str), (String, Vec<String>)> = std::collections::BTreeMap::new();
        for b in bindings {
            let name = b.resource_name.strip_prefix(prefix).unwrap_or(&b.resource_name);
            let (label, name) = match b.resource_type {
                ResourceType::Topic => (b.operation.to_string(), name.to_owned()),
                kind => (format!("{} {}", b.operation, kind.to_string().to_lowercase()), format!("{name}*")),
            };
            lines.entry((b.resource_type.code(), b.operation.code(), status(b))).or_insert_with(|| (label, Vec::new())).1.push(name);
        }
        for ((_, _, status), (operation, names)) in lines {
            let names = topics_in_words(names);
            say(&format!("  {status:<11} {operation:<9} {names}"));
        }
    }
    // Other ACLs naming the saga's topics or groups: worth knowing, not ours to remove.
    let ours: Vec<&str> = wanted.iter().map(|b| b.resource_name.as_str()).collect();
    for extra in existing.iter().filter(|b| ours.contains(&b.resource_name.as_str()) && !wanted.contains(b)) {
        say(&format!("not in the plan, left alone: {extra}"));
    }
    for (binding, error) in &failed {
        eprintln!("saga: error: cannot create `{binding}`: {error}");
    }
    let verb = if dry_run { "would grant" } else { "granted" };
    let topics = if prefix.is_empty() { String::new() } else { format!(" (prefix `{prefix}`)") };
    say(&format!(
        "{} ACLs for {} principals on the saga's topics and groups{topics}: {} {verb}, {} existed; everything else is denied",
        wanted.len(),
        plan.len(),
        missing.len() - failed.len(),
        wanted.len() - missing.len()
    ));
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// What an operator should do about a refused ACL request.
fn acl_error(e: saga_runtime::kafka::KafkaEdgeError) -> anyhow::Error {
    use rskafka::client::error::{Error, ProtocolError};
    let hint = match &e {
        saga_runtime::kafka::KafkaEdgeError::Kafka(Error::ServerError { protocol_error, .. }) => match protocol_error {
            ProtocolError::SecurityDisabled => Some("the cluster has no authorizer (`authorizer.class.name`), so ACLs would change nothing"),
            ProtocolError::ClusterAuthorizationFailed => Some("this principal may not manage ACLs: run as a super user (`super.users`)"),
            _ => None,
        },
        _ => None,
    };
    match hint {
        Some(hint) => anyhow::anyhow!("{hint} ({e})"),
        None => anyhow::Error::new(e).context("cannot manage ACLs"),
    }
}

/// Prints a line; a closed pipe (`saga watch | head`) ends the program quietly, like other
/// Unix tools.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

fn learn_owner(owner: &mut HashMap<String, String>, e: &Recorded) {
    let customer = match &e.envelope.event {
        Event::OrderCreated(o) => &o.customer_id,
        Event::PaymentCompleted(p) => &p.customer_id,
        Event::PaymentFailed(p) => &p.customer_id,
        Event::TripRequested(t) => &t.customer_id,
        _ => return,
    };
    if let Some(id) = e.saga_id() {
        owner.entry(id.to_owned()).or_insert_with(|| customer.clone());
    }
}

/// `text` as one URL path segment: everything but unreserved characters percent-encoded.
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A list of topic names, shortened when it is all of them or all of one saga's.
fn topics_in_words(names: Vec<String>) -> String {
    use shared_events::{Saga, Topic};
    let mut given = names.clone();
    given.sort();
    let sorted = |topics: Vec<Topic>| {
        let mut n: Vec<String> = topics.iter().map(|t| t.as_str().to_owned()).collect();
        n.sort();
        n
    };
    if given == sorted(Topic::ALL.to_vec()) {
        return "every saga topic".to_owned();
    }
    for (saga, words) in [(Saga::Order, "every order-saga topic"), (Saga::Travel, "every travel-saga topic")] {
        if given == sorted(saga.topics()) {
            return words.to_owned();
        }
    }
    names.join(", ")
}
