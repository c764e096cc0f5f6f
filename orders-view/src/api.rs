//! The view's HTTP API: JSON over the committed projections, read from the store on threads
//! of its own while the loop goes on writing. Every answer says how far the view has read
//! (`read_to`), so a client that just placed an order can tell "not seen yet" from "unknown".

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use orders_view_rules::{customer_prefix, hour_key, Counts, OrderView, ALL_TIME, HOUR_MS};
use saga_runtime::store::{StoreError, StoreReader};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared_events::{LineItem, Topic};

/// Most orders one page of a customer's list holds, and how many it holds unless asked.
pub const PAGE_MAX: usize = 100;
pub const PAGE_DEFAULT: usize = 20;

/// The page at `/`: plain HTML and script, no build step.
const PAGE: &str = include_str!("page.html");

pub fn router(store: StoreReader) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/orders/{order_id}", get(order))
        .route("/customers/{customer_id}/orders", get(customer_orders))
        .route("/stats", get(stats))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such path; see / for what the view serves".to_owned()) })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "the view answers GET only".to_owned())
        })
        .with_state(store)
}

/// Runs a handler's store scans off the server's threads: a scan waits for sled's lock
/// while a commit is applied, and must not hold up every other request.
async fn off_thread(read: impl FnOnce() -> Result<Response, ApiError> + Send + 'static) -> Result<Response, ApiError> {
    tokio::task::spawn_blocking(read)
        .await
        .unwrap_or_else(|e| Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the request failed: {e}"))))
}

/// A path segment that did not decode (not UTF-8 once percent-decoded).
fn bad_path(e: PathRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_path", e.body_text())
}

/// An answer a client can act on: the status, a stable code, a sentence, and how far the view
/// had read.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: String) -> Self {
        ApiError { status, body: json!({ "error": code, "message": message }) }
    }

    fn with(mut self, field: &str, value: Value) -> Self {
        self.body[field] = value;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, [(header::CACHE_CONTROL, "no-store")], Json(self.body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // The details are for the operator's log, not for clients.
        tracing::error!(error = %e, "the view's store could not be read");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store_error", "the view could not read its store; see its log".to_owned())
    }
}

/// Where the view has read each partition to, `{"OrderCreated": {"0": 12}, …}`: every record
/// before those offsets is in the answer.
fn read_to(store: &StoreReader) -> Result<ReadTo, ApiError> {
    let mut out = ReadTo::new();
    for (&(topic, partition), &next) in store.offsets()?.iter() {
        out.entry(topic.as_str()).or_default().insert(partition, next);
    }
    Ok(out)
}

/// `read_to`, serialised as it is (no `Value` tree on the hot path); a partition's number
/// becomes a JSON key.
type ReadTo = BTreeMap<&'static str, BTreeMap<i32, i64>>;

fn ok(body: impl Serialize) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

#[derive(Serialize)]
struct Step {
    step: Topic,
    at_ms: i64,
}

#[derive(Serialize)]
struct Compensations {
    done: Vec<Topic>,
    awaited: Vec<Topic>,
}

/// One order, as `GET /orders/{id}` answers it.
#[derive(Serialize)]
struct OrderBody<'a> {
    order_id: &'a str,
    status: order_rules::OrderStatus,
    cancel_reason: Option<&'static str>,
    customer_id: Option<&'a str>,
    /// When the saga started.
    created_at_ms: Option<i64>,
    lines: &'a [LineItem],
    total_cents: Option<u64>,
    ship_to_country: Option<&'a str>,
    charged_cents: Option<u64>,
    refunded_cents: Option<u64>,
    shipment_id: Option<&'a str>,
    timeline: Vec<Step>,
    compensations: Compensations,
    read_to: &'a ReadTo,
}

impl<'a> OrderBody<'a> {
    fn of(order_id: &'a str, v: &'a OrderView, read_to: &'a ReadTo) -> Self {
        OrderBody {
            order_id,
            status: v.status(),
            cancel_reason: v.cancel_reason().map(|r| r.as_str()),
            customer_id: v.record.customer_id.as_deref(),
            created_at_ms: v.placed_at_ms,
            lines: &v.lines,
            total_cents: v.total_cents,
            ship_to_country: v.country.as_deref(),
            charged_cents: v.charged_cents,
            refunded_cents: v.refunded_cents,
            shipment_id: v.record.shipment_id.as_deref(),
            timeline: v.timeline.iter().map(|s| Step { step: s.step, at_ms: s.at_ms }).collect(),
            compensations: Compensations { done: v.compensations_done(), awaited: v.compensations_awaited() },
            read_to,
        }
    }
}

async fn order(State(store): State<StoreReader>, path: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let Path(order_id) = path.map_err(bad_path)?;
    // Offsets first: whatever they cover is in the row read after them. A row read does not
    // wait for the loop's commits (a page sled must read back is the rare exception), so it
    // is answered here, without a hop to the blocking pool.
    let read_to = read_to(&store)?;
    let found = store.row::<OrderView>("orders", &order_id)?;
    order_answer(&order_id, found, read_to)
}

fn order_answer(order_id: &str, found: Option<OrderView>, read_to: ReadTo) -> Result<Response, ApiError> {
    match found {
        // Serialised straight from the row: the busiest answer builds no `Value` tree.
        Some(view) => Ok(ok(OrderBody::of(order_id, &view, &read_to))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_order",
            "the view has no event for this order; if it was placed after `read_to`, it is not seen yet".to_owned(),
        )
        .with("order_id", json!(order_id))
        .with("read_to", json!(read_to))),
    }
}

#[derive(Deserialize)]
struct Page {
    limit: Option<String>,
    before: Option<String>,
}

/// One order in a customer's list.
#[derive(Serialize)]
struct Listed<'a> {
    order_id: &'a str,
    status: order_rules::OrderStatus,
    cancel_reason: Option<&'static str>,
    created_at_ms: Option<i64>,
    total_cents: Option<u64>,
}

async fn customer_orders(
    State(store): State<StoreReader>,
    path: Result<Path<String>, PathRejection>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(customer_id) = path.map_err(bad_path)?;
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", message);
    let Query(page) = page.map_err(|e| bad(e.body_text()))?;
    let limit = match page.limit.as_deref() {
        None => PAGE_DEFAULT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=PAGE_MAX).contains(&n) => n,
            _ => return Err(bad(format!("limit must be a whole number from 1 to {PAGE_MAX}"))),
        },
    };
    // A cursor is what an earlier page returned as `next`: `<created ms>:<order id>`.
    if let Some(before) = &page.before {
        let valid = before.split_once(':').is_some_and(|(ms, id)| ms.len() == 13 && ms.bytes().all(|b| b.is_ascii_digit()) && !id.is_empty());
        if !valid {
            return Err(bad("before must be the `next` cursor of an earlier page".to_owned()));
        }
    }
    off_thread(move || customer_body(&store, &customer_id, page.before.as_deref(), limit)).await
}

fn customer_body(store: &StoreReader, customer_id: &str, before: Option<&str>, limit: usize) -> Result<Response, ApiError> {
    let read_to = read_to(store)?;
    let prefix = customer_prefix(customer_id);
    let rows = store.rows_before::<()>("by_customer", &prefix, before, limit)?;
    let mut views = Vec::with_capacity(rows.len());
    for (rest, ()) in &rows {
        let Some((_, order_id)) = rest.split_once(':') else { continue };
        if let Some(view) = store.row::<OrderView>("orders", order_id)? {
            views.push((order_id.to_owned(), view));
        }
    }
    let orders: Vec<Listed<'_>> = views
        .iter()
        .map(|(id, v)| Listed {
            order_id: id,
            status: v.status(),
            cancel_reason: v.cancel_reason().map(|r| r.as_str()),
            created_at_ms: v.placed_at_ms,
            total_cents: v.total_cents,
        })
        .collect();
    // A full page may have more after it.
    let next = (rows.len() == limit).then(|| rows.last().map(|(rest, ())| rest.clone())).flatten();
    Ok(ok(json!({ "customer_id": customer_id, "orders": orders, "next": next, "read_to": read_to })))
}

/// Counts as `/stats` shows them.
fn counts_body(c: &Counts) -> Value {
    json!({
        "placed": c.placed,
        "completed": c.completed,
        "cancelled": c.cancelled_total(),
        "cancelled_by_reason": c.cancelled,
        "charged_cents": c.charged_cents,
        "refunded_cents": c.refunded_cents,
        "revenue_cents": c.revenue_cents(),
        "compensations": {
            "refunds": c.refunds,
            "stock_releases": c.stock_releases,
            "shipment_cancellations": c.shipment_cancellations,
        },
        "dead_letters": c.dead_letters.values().sum::<u64>(),
        "dead_letters_by_reason": c.dead_letters,
    })
}

async fn stats(State(store): State<StoreReader>) -> Result<Response, ApiError> {
    stats_body(&store)
}

fn stats_body(store: &StoreReader) -> Result<Response, ApiError> {
    let read_to = read_to(store)?;
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let all: Counts = store.row("stats", ALL_TIME)?.unwrap_or_default();
    let this_hour = now_ms.div_euclid(HOUR_MS) * HOUR_MS;
    let mut hours = Vec::with_capacity(24);
    for back in (0..24).rev() {
        let start = this_hour - back * HOUR_MS;
        let counts: Counts = store.row("stats", &hour_key(start))?.unwrap_or_default();
        let mut body = counts_body(&counts);
        body["hour_start_ms"] = json!(start);
        hours.push(body);
    }
    Ok(ok(json!({ "all_time": counts_body(&all), "last_24_hours": hours, "read_to": read_to })))
}
