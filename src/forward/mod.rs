//! The forwarder: bus → Brevo.
//!
//! Read in this order:
//!
//! | file | owns |
//! |---|---|
//! | [`pipeline`] | the loop: poll, dedup, map, hand to lanes, acknowledge after Brevo accepted or the dead letter is durable |
//! | [`mapping`] | one envelope → Brevo operations (custom event, contact import/upsert, list calls), per connector mapping |
//! | [`batcher`] | operations → requests per lane: ≤ 200 events / 512 KB, ≤ 150 list items, per-user order across endpoints, linger |
//! | [`limiter`] | per-class per-second and per-hour budgets, plan presets, `x-sib-ratelimit-*`, 429 pauses |
//! | [`delivery`] | sending a lane's requests: retries with backoff, splitting refused batches, per-item results |
//! | [`brevo`] | the request type, the [`Deliver`] hop (HTTP client, dry run), reading Brevo's answers |
//! | [`dlq`] | dead letters out, and `sluice dlq list|replay` |
//! | [`preview`] | `sluice map`: the requests a mapping produces, without sending |

pub mod batcher;
pub mod brevo;
pub mod delivery;
pub mod dlq;
pub mod limiter;
pub mod mapping;
pub mod pipeline;
pub mod preview;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::bus::Bus;
use crate::config::{BusKind, Config};
use crate::dedup::DedupStore;
pub use brevo::{BrevoReply, BrevoRequest, Deliver, DeliverError, DryRun, HttpBrevo};

/// Runs until `shutdown` flips to true. Delivered envelope ids are
/// remembered for `brevo.dedup_window_secs`, on disk beside the embedded log
/// (so a restart keeps the window) or in memory with Kafka.
pub async fn run(
    config: Arc<Config>,
    bus: Bus,
    deliver: Arc<dyn Deliver>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let dir = (config.bus.kind == BusKind::Embedded).then(|| config.bus.path.clone());
    let dedup = Arc::new(DedupStore::open(
        "forwarder",
        Duration::from_secs(config.brevo.dedup_window_secs),
        config.brevo.dedup_max_entries,
        dir.as_deref(),
    )?);
    pipeline::run_with(config, bus, deliver, dedup, shutdown).await
}
