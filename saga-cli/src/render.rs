//! Events for people: the facts that matter in a few words, one line per event, coloured
//! when the terminal supports it (compensation in magenta, failures in yellow, poison in red).

use shared_events::{describe_lines, Event, LineItem, Topic};

use crate::analysis::Recorded;

fn items(lines: &[LineItem]) -> String {
    lines.iter().map(|l| format!("{}×{} @{}", l.sku, l.quantity, l.unit_price_cents)).collect::<Vec<_>>().join(", ")
}

/// The facts of an event: amounts, lines, reasons.
pub fn facts(event: &Event) -> String {
    match event {
        Event::OrderCreated(e) => format!(
            "{} orders {} to {} (total {} cents)",
            e.customer_id, items(&e.items), e.ship_to.country, e.total_cents().unwrap_or_default()
        ),
        Event::PaymentCompleted(e) => format!("charged {} cents to {}", e.amount_cents, e.customer_id),
        Event::PaymentFailed(e) => format!("{}: {} cents from {}", e.reason, e.amount_cents, e.customer_id),
        Event::StockReserved(e) => format!("reserved {}", describe_lines(&e.items)),
        Event::StockFailed(e) => format!("{} {} (requested {}, available {})", e.reason, e.sku, e.requested, e.available),
        Event::ShipmentScheduled(e) => format!("{} to {}", e.shipment_id, e.country),
        Event::ShippingFailed(e) => format!("{} {}", e.reason, e.country),
        Event::OrderCompleted(e) => format!("shipped as {}", e.shipment_id),
        Event::OrderCancelled(e) => format!("{}: {}", e.reason, e.detail),
        Event::PaymentRefunded(e) => format!("refunded {} cents to {}", e.amount_cents, e.customer_id),
        Event::StockReleased(e) => format!("released {}", describe_lines(&e.items)),
        Event::OrderCancellationRequested(e) => e.reason.clone().unwrap_or_else(|| "by the customer".into()),
        Event::OrderCancellationRefused(e) => e.reason.to_string(),
        Event::ShipmentCancelled(e) => format!("called off {}", e.shipment_id),
        Event::DeadLetter(e) => format!(
            "{} could not read {}/{}@{}: {}",
            e.service, e.source_topic, e.source_partition, e.source_offset, e.error
        ),
        Event::TripRequested(e) => {
            let legs = [
                e.flight.as_ref().map(|f| format!("flight {}×{} on {}", f.flight, f.seats, f.date)),
                e.hotel.as_ref().map(|h| format!("hotel {}×{} for {} nights from {}", h.hotel, h.rooms, h.nights, h.check_in)),
                e.car.as_ref().map(|c| format!("car {}×{} for {} days from {}", c.location, c.cars, c.days, c.pick_up)),
            ];
            let legs: Vec<String> = legs.into_iter().flatten().collect();
            format!("{} asks for {} (total {} cents)", e.customer_id, legs.join(", "), e.total_cents().unwrap_or_default())
        }
        Event::FlightReserved(_) | Event::HotelReserved(_) | Event::CarReserved(_) => "reserved".to_owned(),
        Event::FlightUnavailable(e) | Event::HotelUnavailable(e) | Event::CarUnavailable(e) => format!("{:?}", e.reason),
        Event::FlightReleased(_) | Event::HotelReleased(_) | Event::CarReleased(_) => "released".to_owned(),
        Event::TripReserved(e) => format!("every leg reserved; charge {} cents to {}", e.amount_cents, e.customer_id),
        Event::TripCharged(e) => format!("charged {} cents to {}", e.amount_cents, e.customer_id),
        Event::TripChargeDeclined(e) => format!("{}: {} cents from {}", e.reason, e.amount_cents, e.customer_id),
        Event::TripConfirmed(e) => format!("booked for {} cents", e.amount_cents),
        Event::TripCancelled(e) => format!("{:?}", e.reason),
        Event::TripCancellationRequested(_) => "by the customer".to_owned(),
        Event::TripCancellationRefused(_) => "the charge was already asked for".to_owned(),
    }
}

/// How an event reads at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Progress,
    Failure,
    Compensation,
    Terminal,
    Poison,
}

pub fn tone(topic: Topic) -> Tone {
    match topic {
        t if t.is_compensation() => Tone::Compensation,
        t if t.is_terminal() => Tone::Terminal,
        Topic::PaymentFailed
        | Topic::StockFailed
        | Topic::ShippingFailed
        | Topic::OrderCancellationRefused
        | Topic::FlightUnavailable
        | Topic::HotelUnavailable
        | Topic::CarUnavailable
        | Topic::TripChargeDeclined
        | Topic::TripCancellationRefused => Tone::Failure,
        Topic::DeadLetter => Tone::Poison,
        _ => Tone::Progress,
    }
}

/// Wraps text in the tone's ANSI colour when `colour` is on.
pub fn paint(text: &str, tone: Tone, colour: bool) -> String {
    if !colour {
        return text.to_owned();
    }
    let code = match tone {
        Tone::Progress => "32",
        Tone::Failure => "33",
        Tone::Compensation => "35;1",
        Tone::Terminal => "36;1",
        Tone::Poison => "31;1",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// `HH:MM:SS.mmm` (UTC) of a millisecond timestamp.
pub fn clock(ms: i64) -> String {
    let day_ms = ms.rem_euclid(86_400_000);
    format!("{:02}:{:02}:{:02}.{:03}", day_ms / 3_600_000, day_ms / 60_000 % 60, day_ms / 1000 % 60, day_ms % 1000)
}

/// The marker in front of compensation steps.
pub fn marker(topic: Topic) -> &'static str {
    if topic.is_compensation() { "↩ " } else { "  " }
}

/// One line for `watch`: time, service, event, order, facts.
pub fn watch_line(e: &Recorded, colour: bool) -> String {
    let order = e.saga_id().unwrap_or("-");
    let name = format!("{}{:<26}", marker(e.topic), e.topic.as_str());
    format!(
        "{}  {:<10} {} {:<14} {}",
        clock(e.at_ms()),
        e.topic.emitted_by(),
        paint(&name, tone(e.topic), colour),
        order,
        facts(&e.envelope.event)
    )
}

/// One line of `trace`: time, time since the previous step, service, event, facts.
pub fn trace_line(e: &Recorded, previous_ms: Option<i64>, colour: bool) -> String {
    let delta = previous_ms.map_or("".to_owned(), |p| format!("+{} ms", e.at_ms() - p));
    let name = format!("{}{:<26}", marker(e.topic), e.topic.as_str());
    let note = if e.topic.is_compensation() { "  (compensation)" } else { "" };
    format!(
        "{}  {:>9}  {:<10} {} {}{}",
        clock(e.at_ms()),
        delta,
        e.topic.emitted_by(),
        paint(&name, tone(e.topic), colour),
        facts(&e.envelope.event),
        note
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn clock_reads_utc_time_of_day() {
        assert_eq!(clock(0), "00:00:00.000");
        assert_eq!(clock(86_400_000 + 3_723_004), "01:02:03.004");
    }

    #[test]
    fn colour_only_when_asked() {
        assert_eq!(paint("x", Tone::Compensation, false), "x");
        assert!(paint("x", Tone::Compensation, true).starts_with("\x1b[35"));
        assert_eq!(tone(Topic::PaymentRefunded), Tone::Compensation);
        assert_eq!(tone(Topic::ShippingFailed), Tone::Failure);
    }
}
