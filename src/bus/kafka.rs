//! The Kafka bus (rdkafka with its bundled librdkafka).
//!
//! * Producer: idempotent, `acks=all`, lz4; `publish` enqueues every record
//!   (so they are all in flight together) and resolves when the last
//!   delivery report arrived: the reports count down one [`Pending`] per
//!   publish. Queue full and broker errors are retryable
//!   (`BusError::Unavailable`, ingress answers 503), message too large is
//!   `BusError::TooLarge` (413). A producer left fatally broken or fenced
//!   (Tansu fences it after an outage) is replaced by a fresh one on the next
//!   failed publish, so the process recovers without a restart.
//! * Consumer: a consumer group with `enable.auto.offset.store=false`; an
//!   offset is stored only after [`Subscriber::ack`], over the contiguous acked
//!   prefix per partition, and committed by librdkafka's auto-commit and
//!   synchronously on shutdown. So a crash redelivers, never skips.
//! * Topics are created at startup when `bus.kafka.create_topics` is on and
//!   they are missing (an existing topic is left as it is). With it off the
//!   broker's own auto-creation, or the operator, must provide them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::{Message as _, Offset, TopicPartitionList};

use super::{AckTracker, BusError, Message, Position, Publisher, Record, Subscriber, SubscriberOpener, Topic};
use crate::config::KafkaConfig;
use crate::metrics as m;

/// Turns librdkafka statistics into metrics (queue depth, consumer lag).
#[derive(Clone, Default)]
pub struct StatsContext;

impl ClientContext for StatsContext {
    fn stats(&self, stats: Statistics) {
        m::producer_queue(stats.msg_cnt, stats.msg_size);
        for (topic, t) in &stats.topics {
            for (id, p) in &t.partitions {
                if *id >= 0 && p.consumer_lag >= 0 {
                    m::consumer_lag(topic, *id, p.consumer_lag as u64);
                }
            }
        }
    }
}

impl ConsumerContext for StatsContext {}

/// Delivery reports count down the publish they belong to (see [`Pending`]).
impl ProducerContext for StatsContext {
    type DeliveryOpaque = Arc<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Arc<Pending>) {
        if let Err((e, _)) = result {
            lock(&pending.error).get_or_insert_with(|| e.clone());
        }
        if pending.remaining.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            let outcome = lock(&pending.error).take().map_or(Ok(()), Err);
            if let Some(done) = lock(&pending.done).take() {
                let _ = done.send(outcome);
            }
        }
    }
}

/// One publish's messages inside librdkafka. Each message carries a
/// reference; the last delivery report answers the publish, with the first
/// error if any message failed. One allocation and one wake-up per publish,
/// not per message. If librdkafka drops messages without a report (producer
/// destroyed), the answer channel closes and the publish fails.
pub struct Pending {
    remaining: std::sync::atomic::AtomicUsize,
    error: std::sync::Mutex<Option<KafkaError>>,
    done: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Result<(), KafkaError>>>>,
}

type Answer = tokio::sync::oneshot::Receiver<Result<(), KafkaError>>;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type KafkaProducer = ThreadedProducer<StatsContext>;

pub struct KafkaBus {
    cfg: KafkaConfig,
    publisher: Arc<KafkaPublisher>,
}

pub struct KafkaPublisher {
    /// The live producer and its generation. Replaced after a fatal error
    /// (an idempotent producer that is fenced or lost its sequence after a
    /// broker outage never recovers by itself).
    producer: std::sync::RwLock<(u64, KafkaProducer)>,
    producer_config: ClientConfig,
    cfg: KafkaConfig,
}

fn base_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    c.set("statistics.interval.ms", "5000");
    c
}

fn apply_overrides(c: &mut ClientConfig, cfg: &KafkaConfig, producer: bool) {
    const PRODUCER_ONLY: &[&str] = &[
        "acks",
        "enable.idempotence",
        "linger.ms",
        "compression.type",
        "message.timeout.ms",
        "queue.buffering.max.messages",
        "queue.buffering.max.kbytes",
        "batch.num.messages",
        "batch.size",
    ];
    const CONSUMER_ONLY: &[&str] =
        &["group.id", "session.timeout.ms", "auto.offset.reset", "heartbeat.interval.ms", "max.poll.interval.ms"];
    for (k, v) in &cfg.properties {
        let skip = if producer { CONSUMER_ONLY.contains(&k.as_str()) } else { PRODUCER_ONLY.contains(&k.as_str()) };
        if !skip {
            c.set(k, v);
        }
    }
}

/// The producer's settings: Sluice's defaults, then `bus.kafka.properties`.
fn producer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut pc = base_config(cfg);
    pc.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        // A partition's batch goes out once it holds 256 KiB (before
        // compression) instead of librdkafka's 1 MB: under heavy load it is
        // full before the linger ends, so a request waits less and the
        // producer's round trips do not bound the throughput of clients that
        // wait for their answer (BENCHMARKS.md, "Latency at 128 connections").
        .set("batch.size", "262144")
        // lz4 batches: the broker stores and copies a third of the bytes.
        // Against Tansu on the same two cores this took PostHog ingress
        // from ~54,000 to ~92,000 events/s (BENCHMARKS.md).
        .set("compression.type", "lz4")
        .set("message.timeout.ms", cfg.publish_timeout_ms.to_string())
        // Bounded producer queue: past it publishes fail fast with 503.
        .set("queue.buffering.max.messages", "200000")
        .set("queue.buffering.max.kbytes", "131072");
    apply_overrides(&mut pc, cfg, true);
    pc
}

fn topic_name(cfg: &KafkaConfig, topic: Topic) -> &str {
    match topic {
        Topic::Events => &cfg.topic,
        Topic::DeadLetters => &cfg.dead_letter_topic,
    }
}

fn map_err(e: &KafkaError) -> BusError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge) | Some(RDKafkaErrorCode::InvalidMessageSize) => {
            BusError::TooLarge(e.to_string())
        }
        _ => BusError::Unavailable(e.to_string()),
    }
}

impl KafkaBus {
    pub async fn connect(cfg: &KafkaConfig) -> anyhow::Result<KafkaBus> {
        let pc = producer_config(cfg);
        let producer: KafkaProducer = pc.create_with_context(StatsContext)?;
        if cfg.create_topics {
            ensure_topics(cfg).await?;
        }
        let publisher =
            KafkaPublisher { producer: std::sync::RwLock::new((0, producer)), producer_config: pc, cfg: cfg.clone() };
        Ok(KafkaBus { cfg: cfg.clone(), publisher: Arc::new(publisher) })
    }

    pub fn publisher(&self) -> Arc<KafkaPublisher> {
        self.publisher.clone()
    }
}

/// Create the events and dead-letter topics when missing.
async fn ensure_topics(cfg: &KafkaConfig) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = base_config(cfg).create()?;
    let topics: Vec<NewTopic> = [&cfg.topic, &cfg.dead_letter_topic]
        .into_iter()
        .map(|t| NewTopic::new(t, cfg.partitions, TopicReplication::Fixed(cfg.replication_factor)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics(topics.iter(), &opts).await?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, partitions = cfg.partitions, "created topic"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => tracing::debug!(topic = %name, "topic exists"),
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Errors after which an idempotent producer stays broken: the broker no
/// longer accepts its producer id, epoch or sequence (seen from Tansu after an
/// outage as `ProducerFenced` on every later message).
fn broken_producer(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::OutOfOrderSequenceNumber
            | RDKafkaErrorCode::UnknownProducerId
            | RDKafkaErrorCode::InvalidProducerIdMapping
            | RDKafkaErrorCode::Fatal
    )
}

impl KafkaPublisher {
    fn current(&self) -> (u64, KafkaProducer) {
        self.producer.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// After a failed publish: when librdkafka reports the producer fatally
    /// broken, put a fresh one in its place (once per generation), so the
    /// process recovers when the broker does, without a restart.
    fn replace_if_fatal(&self, generation: u64, failed: &KafkaProducer, error: &KafkaError) {
        let fatal = match failed.client().fatal_error() {
            Some((code, reason)) => format!("{code:?}: {reason}"),
            None if error.rdkafka_error_code().is_some_and(broken_producer) => error.to_string(),
            None => return,
        };
        let mut slot = self.producer.write().unwrap_or_else(|p| p.into_inner());
        if slot.0 != generation {
            return; // another publish replaced it already
        }
        match self.producer_config.create_with_context::<_, KafkaProducer>(StatsContext) {
            Ok(fresh) => {
                tracing::warn!(error = %fatal, generation = generation + 1, "Kafka producer hit a fatal error; replaced it");
                m::producer_replaced();
                *slot = (generation + 1, fresh);
            }
            Err(e) => tracing::error!(error = %e, "Kafka producer hit a fatal error and cannot be replaced"),
        }
    }

    /// Hand every record to librdkafka, which copies it into its own queue.
    /// Every record goes in before any report is awaited, so a publish's
    /// messages are in flight together. A refused message (queue full)
    /// fails the publish; the ones already enqueued still go out.
    fn enqueue(producer: &KafkaProducer, name: &str, records: &[Record]) -> Result<Answer, KafkaError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let pending = Arc::new(Pending {
            remaining: std::sync::atomic::AtomicUsize::new(records.len()),
            error: std::sync::Mutex::new(None),
            done: std::sync::Mutex::new(Some(done)),
        });
        for r in records {
            let rec = BaseRecord::with_opaque_to(name, pending.clone()).key(&r.key).payload(&r.payload);
            producer.send(rec).map_err(|(e, _)| e)?;
        }
        Ok(answer)
    }
}

#[async_trait]
impl Publisher for KafkaPublisher {
    async fn publish(&self, topic: Topic, records: Vec<Record>) -> Result<(), BusError> {
        if records.is_empty() {
            return Ok(());
        }
        let name = topic_name(&self.cfg, topic);
        let (generation, producer) = self.current();
        let enqueued = Self::enqueue(&producer, name, &records);
        // librdkafka holds its own copies now: a publish waiting for its
        // delivery reports does not keep a second one.
        drop(records);
        let result = match enqueued {
            // A closed channel: librdkafka dropped messages unreported.
            Ok(answer) => answer.await.unwrap_or(Err(KafkaError::Canceled)),
            Err(e) => Err(e),
        };
        result.map_err(|e| {
            self.replace_if_fatal(generation, &producer, &e);
            map_err(&e)
        })
    }

    async fn ready(&self) -> Result<(), BusError> {
        let client = self.current().1;
        let topic = self.cfg.topic.clone();
        tokio::task::spawn_blocking(move || {
            let md = client.client().fetch_metadata(Some(&topic), Duration::from_secs(3)).map_err(|e| map_err(&e))?;
            match md.topics().first() {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
                _ => Err(BusError::Unavailable(format!("topic {topic} not available"))),
            }
        })
        .await
        .map_err(|e| BusError::Fatal(e.to_string()))?
    }

    async fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        let p = self.current().1;
        tokio::task::spawn_blocking(move || p.flush(timeout).map_err(|e| map_err(&e)))
            .await
            .map_err(|e| BusError::Fatal(e.to_string()))?
    }
}

#[async_trait]
impl SubscriberOpener for KafkaBus {
    async fn open(&self, topic: Topic) -> Result<Box<dyn Subscriber>, BusError> {
        let mut cc = base_config(&self.cfg);
        let group = match topic {
            Topic::Events => self.cfg.group_id.clone(),
            Topic::DeadLetters => format!("{}.dlq", self.cfg.group_id),
        };
        cc.set("group.id", &group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        apply_overrides(&mut cc, &self.cfg, false);
        let consumer: StreamConsumer<StatsContext> =
            cc.create_with_context(StatsContext).map_err(|e| BusError::Fatal(e.to_string()))?;
        let name = topic_name(&self.cfg, topic).to_string();
        consumer.subscribe(&[&name]).map_err(|e| map_err(&e))?;
        Ok(Box::new(KafkaSubscriber { consumer, topic: name, tracker: AckTracker::default() }))
    }
}

pub struct KafkaSubscriber {
    consumer: StreamConsumer<StatsContext>,
    topic: String,
    tracker: AckTracker,
}

/// Copy a borrowed message out and note it as delivered.
fn own(tracker: &mut AckTracker, m: &rdkafka::message::BorrowedMessage<'_>) -> Message {
    {
        let position = Position { partition: m.partition(), offset: m.offset() };
        tracker.delivered(position);
        Message {
            position,
            key: m.key().map(<[u8]>::to_vec).unwrap_or_default(),
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        }
    }
}

#[async_trait]
impl Subscriber for KafkaSubscriber {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>, BusError> {
        let mut out = Vec::new();
        let first = match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_) => return Ok(out),
            Ok(r) => r.map_err(|e| map_err(&e))?,
        };
        let msg = own(&mut self.tracker, &first);
        drop(first);
        out.push(msg);
        while out.len() < max {
            match self.consumer.recv().now_or_never() {
                Some(Ok(m)) => {
                    let msg = own(&mut self.tracker, &m);
                    out.push(msg);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "kafka consume error");
                    break;
                }
                None => break,
            }
        }
        Ok(out)
    }

    async fn ack(&mut self, positions: &[Position]) -> Result<(), BusError> {
        let mut tpl = TopicPartitionList::new();
        // Only the furthest move per partition is stored.
        let mut moved = std::collections::BTreeMap::new();
        for p in positions {
            if let Some((partition, next)) = self.tracker.ack(*p) {
                moved.insert(partition, next);
            }
        }
        for (partition, next) in moved {
            tpl.add_partition_offset(&self.topic, partition, Offset::Offset(next))
                .map_err(|e| BusError::Fatal(e.to_string()))?;
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.store_offsets(&tpl) {
                // The partition was revoked in a rebalance: its new owner
                // resumes from the last committed offset (at-least-once).
                tracing::warn!(error = %e, "cannot store offsets (partition revoked?)");
            }
        }
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), BusError> {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => Ok(()),
            // Nothing stored since the last commit.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(e) => Err(map_err(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_defaults_are_durable_and_compressed_and_properties_win() {
        let mut cfg = KafkaConfig::default();
        let pc = producer_config(&cfg);
        for (key, want) in
            [("acks", "all"), ("enable.idempotence", "true"), ("compression.type", "lz4"), ("batch.size", "262144")]
        {
            assert_eq!(pc.get(key), Some(want), "{key}");
        }
        cfg.properties.insert("compression.type".into(), "snappy".into());
        cfg.properties.insert("group.id".into(), "consumer-only".into());
        let pc = producer_config(&cfg);
        assert_eq!(pc.get("compression.type"), Some("snappy"));
        assert_eq!(pc.get("group.id"), None, "consumer settings stay off the producer");
    }

    #[test]
    fn producer_settings_stay_off_the_consumer() {
        let mut cfg = KafkaConfig::default();
        for (k, v) in [("batch.size", "65536"), ("linger.ms", "1"), ("socket.keepalive.enable", "true")] {
            cfg.properties.insert(k.into(), v.into());
        }
        let mut cc = base_config(&cfg);
        apply_overrides(&mut cc, &cfg, false);
        assert_eq!(cc.get("batch.size"), None);
        assert_eq!(cc.get("linger.ms"), None);
        assert_eq!(cc.get("socket.keepalive.enable"), Some("true"), "shared settings reach both");
        assert_eq!(producer_config(&cfg).get("batch.size"), Some("65536"), "the user's value wins on the producer");
    }
}
