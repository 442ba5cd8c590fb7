//! The bus between ingress and forwarder: one pair of traits, two backends.
//!
//! * [`Publisher`] — `publish` resolves only once every record is durable
//!   (Kafka delivery report with `acks=all`, or an fsync'd embedded commit).
//! * [`Subscriber`] — yields [`Message`]s; the committed position advances
//!   only when [`Subscriber::ack`] is called, and only over a contiguous prefix
//!   of acknowledged offsets per partition (see [`AckTracker`]).
//!
//! Records are bytes (key + payload) so the same conformance suite checks both
//! backends; [`crate::event`] owns the encoding of envelopes into records.

pub mod embedded;
pub mod kafka;
pub mod memory;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{BusConfig, BusKind};

/// The two logical topics every backend provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    Events,
    DeadLetters,
}

impl Topic {
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Events => "events",
            Topic::DeadLetters => "dead_letters",
        }
    }
}

/// One record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Partition key; records with the same key keep their order.
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Where a consumed message sits, for acknowledging it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Message {
    pub position: Position,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Why the bus could not do what was asked. The ingress maps these to HTTP
/// statuses in `ingress::error`.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Temporary: queue full, broker unreachable, timeout, disk full. The
    /// client should retry (ingress answers 503 + Retry-After).
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The record is larger than the bus accepts (ingress answers 413).
    #[error("record too large: {0}")]
    TooLarge(String),
    /// Anything else; a bug or a misconfiguration.
    #[error("bus error: {0}")]
    Fatal(String),
}

/// Publishes records durably.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Resolves `Ok` only when every record is durable. On error, none of the
    /// records may be assumed durable (some may be: at-least-once).
    async fn publish(&self, topic: Topic, records: Vec<Record>) -> Result<(), BusError>;

    /// Whether the bus is reachable and writable right now (for `/readyz`).
    async fn ready(&self) -> Result<(), BusError>;

    /// Flush anything buffered; called on shutdown.
    async fn flush(&self, timeout: Duration) -> Result<(), BusError>;
}

/// Consumes records, with explicit acknowledgement.
#[async_trait]
pub trait Subscriber: Send + 'static {
    /// Up to `max` messages; waits at most `wait` for the first one and
    /// returns an empty vector when none arrived.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>, BusError>;

    /// Mark these messages done. The committed position of each partition
    /// advances over the longest contiguous acknowledged prefix.
    async fn ack(&mut self, positions: &[Position]) -> Result<(), BusError>;

    /// Make the committed position durable now (called on shutdown).
    async fn commit(&mut self) -> Result<(), BusError>;
}

/// Tracks outstanding offsets per partition so out-of-order acks never move
/// the committed position past an unacknowledged message.
#[derive(Debug, Default)]
pub struct AckTracker {
    partitions: HashMap<i32, PartitionAcks>,
}

#[derive(Debug, Default)]
struct PartitionAcks {
    /// Delivered but not yet acknowledged offsets.
    outstanding: BTreeSet<i64>,
    /// Highest offset ever delivered.
    highest: i64,
    /// Next offset to commit (one past the last contiguous done offset).
    committable: i64,
}

impl AckTracker {
    /// Record that `pos` was handed to the consumer.
    pub fn delivered(&mut self, pos: Position) {
        if self.partitions.get(&pos.partition).is_some_and(|p| pos.offset < p.committable) {
            // The bus rewound (rebalance, restart): start this partition over.
            self.partitions.remove(&pos.partition);
        }
        let part = self.partitions.entry(pos.partition).or_insert_with(|| PartitionAcks {
            outstanding: BTreeSet::new(),
            highest: pos.offset,
            committable: pos.offset,
        });
        part.outstanding.insert(pos.offset);
        part.highest = part.highest.max(pos.offset);
    }

    /// Record an ack; returns the partition and its new committable offset
    /// when it moved.
    pub fn ack(&mut self, pos: Position) -> Option<(i32, i64)> {
        let part = self.partitions.get_mut(&pos.partition)?;
        if !part.outstanding.remove(&pos.offset) {
            return None;
        }
        let next = match part.outstanding.iter().next() {
            Some(&lowest) => lowest,
            None => part.highest + 1,
        };
        if next > part.committable {
            part.committable = next;
            Some((pos.partition, next))
        } else {
            None
        }
    }

    /// Next offset to commit per partition.
    pub fn committable(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.partitions.iter().map(|(p, a)| (*p, a.committable))
    }

    /// Forget a partition (after a rebalance revoked it).
    pub fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }
}

/// The opened bus: a publisher plus a way to open subscribers.
#[derive(Clone)]
pub struct Bus {
    pub publisher: Arc<dyn Publisher>,
    opener: Arc<dyn SubscriberOpener>,
}

/// Opens subscribers; a separate trait so `Bus` stays cheaply clonable.
#[async_trait]
pub trait SubscriberOpener: Send + Sync + 'static {
    async fn open(&self, topic: Topic) -> Result<Box<dyn Subscriber>, BusError>;
}

impl Bus {
    pub fn new(publisher: Arc<dyn Publisher>, opener: Arc<dyn SubscriberOpener>) -> Bus {
        Bus { publisher, opener }
    }

    /// Open the backend the config names.
    pub async fn open(cfg: &BusConfig) -> anyhow::Result<Bus> {
        match cfg.kind {
            BusKind::Embedded => {
                let log = embedded::EmbeddedLog::open(&cfg.path, cfg.embedded.clone())?;
                Ok(Bus::new(log.clone(), log))
            }
            BusKind::Kafka => {
                let k = kafka::KafkaBus::connect(&cfg.kafka).await?;
                Ok(Bus::new(k.publisher(), Arc::new(k)))
            }
        }
    }

    pub async fn subscribe(&self, topic: Topic) -> Result<Box<dyn Subscriber>, BusError> {
        self.opener.open(topic).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(o: i64) -> Position {
        Position { partition: 0, offset: o }
    }

    #[test]
    fn ack_tracker_advances_only_over_contiguous_prefix() {
        let mut t = AckTracker::default();
        for o in 10..15 {
            t.delivered(p(o));
        }
        assert_eq!(t.ack(p(12)), None, "12 acked while 10 outstanding must not move");
        assert_eq!(t.ack(p(10)), Some((0, 11)));
        assert_eq!(t.ack(p(11)), Some((0, 13)), "11 done and 12 already done: next is 13");
        assert_eq!(t.ack(p(14)), None);
        assert_eq!(t.ack(p(13)), Some((0, 15)));
        assert_eq!(t.ack(p(13)), None, "double ack is ignored");
    }
}
