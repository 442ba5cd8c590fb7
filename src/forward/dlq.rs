//! The dead-letter topic: writing letters (with a counted, bounded reason),
//! and `sluice dlq list|replay` to inspect them and re-drive them after a
//! mapping fix.
//!
//! A replayed envelope keeps its id. The forwarder only remembers ids of
//! envelopes Brevo accepted, so a replay is not mistaken for a duplicate;
//! replaying the same letter twice, though, sends it twice.

use std::io::Write;
use std::time::Duration;

use crate::bus::{Bus, BusError, Position, Publisher, Topic};
use crate::config::BusKind;
use crate::event::DeadLetter;
use crate::metrics as m;

/// Reasons the forwarder writes, as bounded metric labels.
pub fn reason_label(reason: &str) -> &'static str {
    match reason {
        "undecodable" => "undecodable",
        "unsupported_schema" => "unsupported_schema",
        "no_identifier" => "no_identifier",
        "unmappable" => "unmappable",
        "too_large" => "too_large",
        "brevo_rejected" => "brevo_rejected",
        _ => "other",
    }
}

/// Publish letters durably; counted per reason once durable.
pub async fn publish(publisher: &dyn Publisher, letters: &[DeadLetter]) -> Result<(), BusError> {
    if letters.is_empty() {
        return Ok(());
    }
    publisher.publish(Topic::DeadLetters, letters.iter().map(DeadLetter::to_record).collect()).await?;
    for l in letters {
        m::dead_letters(reason_label(&l.reason), 1);
    }
    Ok(())
}

/// How long to wait for dead letters: Kafka needs a group join first.
fn waits(bus_kind: BusKind) -> (Duration, Duration) {
    match bus_kind {
        BusKind::Embedded => (Duration::from_millis(300), Duration::from_millis(100)),
        BusKind::Kafka => (Duration::from_secs(15), Duration::from_secs(2)),
    }
}

/// Every dead letter not yet replayed, oldest first, with its position.
async fn read_all(
    bus: &Bus,
    kind: BusKind,
) -> anyhow::Result<(Box<dyn crate::bus::Subscriber>, Vec<(Position, Vec<u8>)>)> {
    let (first, next) = waits(kind);
    let mut sub = bus.subscribe(Topic::DeadLetters).await?;
    let mut out = Vec::new();
    let mut wait = first;
    loop {
        let msgs = sub.poll(1000, wait).await?;
        if msgs.is_empty() {
            break;
        }
        out.extend(msgs.into_iter().map(|m| (m.position, m.payload)));
        wait = next;
    }
    Ok((sub, out))
}

/// `sluice dlq list`: print pending dead letters as JSON lines; changes nothing.
pub async fn list(bus: &Bus, kind: BusKind, out: &mut dyn Write) -> anyhow::Result<usize> {
    let (_sub, letters) = read_all(bus, kind).await?;
    for (_, payload) in &letters {
        out.write_all(payload)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(letters.len())
}

/// What `sluice dlq replay` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Envelopes republished to the events topic.
    pub replayed: usize,
    /// Letters without an envelope (undecodable payloads): printed, then
    /// acknowledged, since no mapping fix can deliver them.
    pub unreplayable: usize,
}

/// `sluice dlq replay`: republish every pending letter's envelope to the
/// events topic, then acknowledge the letters (at-least-once: a crash in
/// between replays them again next time).
pub async fn replay(bus: &Bus, kind: BusKind, out: &mut dyn Write) -> anyhow::Result<ReplayReport> {
    let (mut sub, letters) = read_all(bus, kind).await?;
    let mut report = ReplayReport::default();
    let mut records = Vec::new();
    for (_, payload) in &letters {
        match serde_json::from_slice::<DeadLetter>(payload) {
            Ok(DeadLetter { event: Some(ev), .. }) => {
                writeln!(out, "{}", serde_json::json!({"replayed": ev.id, "name": ev.name}))?;
                records.push(ev.to_record());
                report.replayed += 1;
            }
            _ => {
                writeln!(out, "{}", serde_json::json!({"unreplayable": String::from_utf8_lossy(payload)}))?;
                report.unreplayable += 1;
            }
        }
    }
    if !records.is_empty() {
        bus.publisher.publish(Topic::Events, records).await?;
    }
    let positions: Vec<Position> = letters.iter().map(|(p, _)| *p).collect();
    sub.ack(&positions).await?;
    sub.commit().await?;
    out.flush()?;
    Ok(report)
}
