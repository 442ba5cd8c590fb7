//! The Kafka bus (rdkafka with its bundled librdkafka).
//!
//! * Producer: idempotent, `acks=all`, lz4; `publish` enqueues every record
//!   in one `rd_kafka_produce_batch` call on a topic handle held for the
//!   producer's life (so they are all in flight together) and resolves when
//!   the last delivery report arrived: the reports count down one
//!   [`Pending`] per publish. Queue full and broker errors are retryable
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
use rdkafka::bindings as rdsys;
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{Producer, ProducerContext, ThreadedProducer};
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

impl Pending {
    /// The count-down for `messages` messages and where its answer arrives.
    fn new(messages: usize) -> (Arc<Pending>, Answer) {
        let (done, answer) = tokio::sync::oneshot::channel();
        let pending = Pending {
            remaining: std::sync::atomic::AtomicUsize::new(messages),
            error: std::sync::Mutex::new(None),
            done: std::sync::Mutex::new(Some(done)),
        };
        (Arc::new(pending), answer)
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type KafkaProducer = ThreadedProducer<StatsContext>;

/// A producer, its generation and its topic handles, replaced together.
struct Live {
    generation: u64,
    /// librdkafka's handles for the events and dead-letter topics, held for
    /// the producer's life: a publish neither looks its topic up by name nor
    /// builds a C string per message (BENCHMARKS.md, "One produce call per
    /// request"). Declared before `producer` so they are destroyed first.
    topics: [TopicHandle; 2],
    producer: KafkaProducer,
}

impl Live {
    fn new(generation: u64, producer: KafkaProducer, cfg: &KafkaConfig) -> Result<Live, KafkaError> {
        let handle = |topic| TopicHandle::new(&producer, topic_name(cfg, topic));
        let topics = [handle(Topic::Events)?, handle(Topic::DeadLetters)?];
        Ok(Live { generation, topics, producer })
    }

    fn topic(&self, topic: Topic) -> &TopicHandle {
        match topic {
            Topic::Events => &self.topics[0],
            Topic::DeadLetters => &self.topics[1],
        }
    }
}

/// An application reference to a librdkafka topic (`rd_kafka_topic_t`).
struct TopicHandle(std::ptr::NonNull<rdsys::rd_kafka_topic_t>);

// SAFETY: librdkafka's topic handles may be used from any thread; producing
// on one is thread-safe, and the handle is destroyed once, on drop.
unsafe impl Send for TopicHandle {}
unsafe impl Sync for TopicHandle {}

impl TopicHandle {
    fn new(producer: &KafkaProducer, name: &str) -> Result<TopicHandle, KafkaError> {
        let c_name = std::ffi::CString::new(name).map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
        // SAFETY: the client pointer is live for the call; a null topic
        // configuration means the producer's defaults.
        let raw =
            unsafe { rdsys::rd_kafka_topic_new(producer.client().native_ptr(), c_name.as_ptr(), std::ptr::null_mut()) };
        std::ptr::NonNull::new(raw)
            .map(TopicHandle)
            .ok_or_else(|| KafkaError::ClientCreation(format!("librdkafka refused a handle for topic {name}")))
    }
}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_topic_new and destroyed only here.
        unsafe { rdsys::rd_kafka_topic_destroy(self.0.as_ptr()) }
    }
}

pub struct KafkaBus {
    cfg: KafkaConfig,
    publisher: Arc<KafkaPublisher>,
}

pub struct KafkaPublisher {
    /// The live producer. Replaced after a fatal error (an idempotent
    /// producer that is fenced or lost its sequence after a broker outage
    /// never recovers by itself).
    producer: std::sync::RwLock<Arc<Live>>,
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
        let live = Arc::new(Live::new(0, producer, cfg)?);
        let publisher =
            KafkaPublisher { producer: std::sync::RwLock::new(live), producer_config: pc, cfg: cfg.clone() };
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
    fn current(&self) -> Arc<Live> {
        self.producer.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// After a failed publish: when librdkafka reports the producer fatally
    /// broken, put a fresh one in its place (once per generation), so the
    /// process recovers when the broker does, without a restart.
    fn replace_if_fatal(&self, failed: &Live, error: &KafkaError) {
        let fatal = match failed.producer.client().fatal_error() {
            Some((code, reason)) => format!("{code:?}: {reason}"),
            None if error.rdkafka_error_code().is_some_and(broken_producer) => error.to_string(),
            None => return,
        };
        let mut slot = self.producer.write().unwrap_or_else(|p| p.into_inner());
        if slot.generation != failed.generation {
            return; // another publish replaced it already
        }
        let generation = failed.generation + 1;
        let fresh = self
            .producer_config
            .create_with_context::<_, KafkaProducer>(StatsContext)
            .and_then(|producer| Live::new(generation, producer, &self.cfg));
        match fresh {
            Ok(fresh) => {
                tracing::warn!(error = %fatal, generation, "Kafka producer hit a fatal error; replaced it");
                m::producer_replaced();
                *slot = Arc::new(fresh);
            }
            Err(e) => tracing::error!(error = %e, "Kafka producer hit a fatal error and cannot be replaced"),
        }
    }

    /// Hand every record to librdkafka in one `rd_kafka_produce_batch` call;
    /// it copies each into its own queue and partitions it by key. Every
    /// record goes in before any report is awaited, so a publish's messages
    /// are in flight together. A refused message (queue full, too large)
    /// fails the publish; the ones already enqueued still go out.
    fn enqueue(topic: &TopicHandle, records: &[Record], pending: &Arc<Pending>) -> Result<(), KafkaError> {
        let mut messages: Vec<rdsys::rd_kafka_message_t> = records
            .iter()
            .map(|r| rdsys::rd_kafka_message_t {
                err: rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                rkt: std::ptr::null_mut(),
                partition: UNASSIGNED_PARTITION,
                payload: r.payload.as_ptr() as *mut std::ffi::c_void,
                len: r.payload.len(),
                key: r.key.as_ptr() as *mut std::ffi::c_void,
                key_len: r.key.len(),
                offset: 0,
                // Each message owns one reference; its delivery report
                // (StatsContext::delivery) takes it back.
                _private: Arc::into_raw(pending.clone()) as *mut std::ffi::c_void,
            })
            .collect();
        let count = std::ffi::c_int::try_from(messages.len()).expect("a publish holds fewer than 2^31 records");
        // SAFETY: the topic handle is live; the messages point into
        // `records`, which outlive the call, and RD_KAFKA_MSG_F_COPY makes
        // librdkafka copy payloads and keys before it returns.
        let enqueued = unsafe {
            rdsys::rd_kafka_produce_batch(
                topic.0.as_ptr(),
                UNASSIGNED_PARTITION,
                rdsys::RD_KAFKA_MSG_F_COPY,
                messages.as_mut_ptr(),
                count,
            )
        };
        if enqueued == count {
            return Ok(());
        }
        let mut first = None;
        for refused in messages.iter().filter(|m| m.err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR) {
            // SAFETY: librdkafka took no reference for a refused message;
            // this is the one `Arc::into_raw` above made for it.
            drop(unsafe { Arc::from_raw(refused._private as *const Pending) });
            first.get_or_insert(refused.err);
        }
        let code = first.map_or(RDKafkaErrorCode::Fail, RDKafkaErrorCode::from);
        Err(KafkaError::MessageProduction(code))
    }
}

/// `RD_KAFKA_PARTITION_UA`: let the topic's partitioner place each message
/// by its key.
const UNASSIGNED_PARTITION: i32 = -1;

#[async_trait]
impl Publisher for KafkaPublisher {
    async fn publish(&self, topic: Topic, records: Vec<Record>) -> Result<(), BusError> {
        if records.is_empty() {
            return Ok(());
        }
        let live = self.current();
        let (pending, answer) = Pending::new(records.len());
        let enqueued = Self::enqueue(live.topic(topic), &records, &pending);
        // librdkafka holds its own copies now: a publish waiting for its
        // delivery reports does not keep a second one.
        drop(records);
        drop(pending);
        let result = match enqueued {
            // A closed channel: librdkafka dropped messages unreported.
            Ok(()) => answer.await.unwrap_or(Err(KafkaError::Canceled)),
            Err(e) => Err(e),
        };
        result.map_err(|e| {
            self.replace_if_fatal(&live, &e);
            map_err(&e)
        })
    }

    async fn ready(&self) -> Result<(), BusError> {
        let live = self.current();
        let topic = self.cfg.topic.clone();
        tokio::task::spawn_blocking(move || {
            let md =
                live.producer.client().fetch_metadata(Some(&topic), Duration::from_secs(3)).map_err(|e| map_err(&e))?;
            match md.topics().first() {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
                _ => Err(BusError::Unavailable(format!("topic {topic} not available"))),
            }
        })
        .await
        .map_err(|e| BusError::Fatal(e.to_string()))?
    }

    async fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        let live = self.current();
        tokio::task::spawn_blocking(move || live.producer.flush(timeout).map_err(|e| map_err(&e)))
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

    /// The references handed to librdkafka with each message come back
    /// exactly once: at once for a refused message, by the delivery report
    /// (here: the purge when the producer is dropped) for an enqueued one.
    #[test]
    fn every_message_reference_comes_back_once() {
        let mut cfg = KafkaConfig { brokers: "127.0.0.1:9".into(), ..KafkaConfig::default() };
        cfg.properties.insert("queue.buffering.max.messages".into(), "3".into());
        let producer = producer_config(&cfg).create_with_context(StatsContext).unwrap();
        let live = Live::new(0, producer, &cfg).unwrap();
        let records: Vec<Record> =
            (0..5).map(|i| Record { key: format!("k{i}").into_bytes(), payload: vec![b'x'; 10] }).collect();
        let (pending, mut answer) = Pending::new(records.len());
        let err = KafkaPublisher::enqueue(live.topic(Topic::Events), &records, &pending).unwrap_err();
        assert_eq!(err.rdkafka_error_code(), Some(RDKafkaErrorCode::QueueFull), "{err}");
        assert!(matches!(map_err(&err), BusError::Unavailable(_)));
        assert_eq!(Arc::strong_count(&pending), 1 + 3, "three messages queued, two refused and released");
        drop(live);
        assert_eq!(Arc::strong_count(&pending), 1, "the purged messages' reports released theirs");
        drop(pending);
        assert_eq!(
            answer.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed),
            "a publish refused at enqueue is answered by its error, never by the reports"
        );
    }
}
