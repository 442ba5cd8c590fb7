//! The forwarder: bus → Brevo.
//!
//! The loop polls the bus, maps each envelope to Brevo calls
//! ([`mapping`]), sends them through a [`Deliver`] implementation (the HTTP
//! client, or a dry run that logs requests when no API key is configured),
//! and acknowledges a message only after Brevo accepted its work or it was
//! written to the dead-letter topic with a reason.

pub mod brevo;
pub mod mapping;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::bus::{Bus, Position, Publisher, Subscriber, Topic};
use crate::config::Config;
use crate::event::{DeadLetter, Event};
use crate::metrics as m;
pub use brevo::{BrevoRequest, Deliver, DeliverError, DryRun, HttpBrevo};

/// Runs until `shutdown` flips to true, then commits what was acknowledged.
pub async fn run(
    config: Arc<Config>,
    bus: Bus,
    deliver: Arc<dyn Deliver>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut sub = bus.subscribe(Topic::Events).await?;
    let linger = Duration::from_millis(config.brevo.linger_ms);
    tracing::info!(dry_run = config.brevo.api_key.is_none(), "forwarder started");
    while !*shutdown.borrow() {
        let msgs = tokio::select! {
            r = sub.poll(config.brevo.max_batch_events, linger) => r,
            _ = shutdown.changed() => break,
        };
        let msgs = match msgs {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "bus poll failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if msgs.is_empty() {
            continue;
        }
        let mut events = Vec::with_capacity(msgs.len());
        let mut dead = Vec::new();
        let positions: Vec<Position> = msgs.iter().map(|m| m.position).collect();
        for msg in &msgs {
            match Event::from_payload(&msg.payload) {
                Ok(ev) => events.push(ev),
                Err(e) => dead.push(DeadLetter {
                    reason: "undecodable".into(),
                    detail: e.to_string(),
                    failed_at: chrono::Utc::now(),
                    event: None,
                    raw: Some(String::from_utf8_lossy(&msg.payload).into_owned()),
                }),
            }
        }
        let plan = mapping::plan(&config, &events);
        dead.extend(plan.dead_letters);
        loop {
            match deliver_all(deliver.as_ref(), &plan.requests).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "Brevo delivery failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if *shutdown.borrow() {
                        // Not acknowledged: redelivered after restart.
                        let _ = sub.commit().await;
                        return Ok(());
                    }
                }
            }
        }
        if !dead.is_empty() {
            dead_letter(bus.publisher.as_ref(), &dead).await?;
        }
        let latencies = events.iter().map(|e| (chrono::Utc::now() - e.received_at).to_std().unwrap_or_default());
        m::delivered("all", latencies);
        ack(sub.as_mut(), &positions).await?;
    }
    sub.commit().await?;
    tracing::info!("forwarder stopped");
    Ok(())
}

async fn deliver_all(deliver: &dyn Deliver, requests: &[BrevoRequest]) -> Result<(), DeliverError> {
    for r in requests {
        deliver.send(r).await?;
    }
    Ok(())
}

async fn dead_letter(publisher: &dyn Publisher, letters: &[DeadLetter]) -> anyhow::Result<()> {
    for l in letters {
        m::dead_letters(reason_label(&l.reason), 1);
    }
    publisher.publish(Topic::DeadLetters, letters.iter().map(DeadLetter::to_record).collect()).await?;
    Ok(())
}

fn reason_label(reason: &str) -> &'static str {
    match reason {
        "undecodable" => "undecodable",
        "no_identifier" => "no_identifier",
        "brevo_rejected" => "brevo_rejected",
        _ => "other",
    }
}

async fn ack(sub: &mut dyn Subscriber, positions: &[Position]) -> anyhow::Result<()> {
    sub.ack(positions).await?;
    Ok(())
}
