//! One conformance suite, three backends: the embedded log, the in-memory
//! fake, and Kafka over TCP against the real broker the test command starts.
//!
//! Each check takes a factory that opens the bus (again, for restarts) so the
//! same assertions hold for publish/consume, per-key order, ack semantics,
//! redelivery after restart and the dead-letter topic.

use crate::common;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sluice::bus::memory::MemoryBus;
use sluice::bus::{Bus, Message, Record, Topic};
use sluice::config::{BusConfig, BusKind, KafkaConfig};

type Opener = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Bus>>>>;

fn records(n: usize, keys: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            key: format!("user-{}", i % keys).into_bytes(),
            payload: format!("{{\"n\":{i}}}").into_bytes(),
        })
        .collect()
}

fn n_of(m: &Message) -> usize {
    let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    v["n"].as_u64().unwrap() as usize
}

/// Poll until `want` messages arrived or the deadline passed.
async fn drain(sub: &mut Box<dyn sluice::bus::Subscriber>, want: usize, within: Duration) -> Vec<Message> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < want && tokio::time::Instant::now() < deadline {
        got.extend(sub.poll(want - got.len(), Duration::from_millis(500)).await.unwrap());
    }
    got
}

async fn publish_consume_in_key_order(open: &Opener) {
    let bus = open().await;
    bus.publisher.publish(Topic::Events, records(200, 7)).await.unwrap();
    let mut sub = bus.subscribe(Topic::Events).await.unwrap();
    let got = drain(&mut sub, 200, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 200, "every published record is delivered once");
    let mut last: HashMap<Vec<u8>, usize> = HashMap::new();
    for m in &got {
        let n = n_of(m);
        assert_eq!(m.key, format!("user-{}", n % 7).into_bytes(), "key travels with the payload");
        if let Some(prev) = last.insert(m.key.clone(), n) {
            assert!(n > prev, "per-key order broken: {prev} then {n}");
        }
    }
    let mut all: Vec<usize> = got.iter().map(n_of).collect();
    all.sort_unstable();
    assert_eq!(all, (0..200).collect::<Vec<_>>());
}

async fn unacked_messages_are_redelivered_after_restart(open: &Opener) {
    let bus = open().await;
    bus.publisher.publish(Topic::Events, records(20, 1)).await.unwrap();
    {
        let mut sub = bus.subscribe(Topic::Events).await.unwrap();
        let got = drain(&mut sub, 20, Duration::from_secs(30)).await;
        assert_eq!(got.len(), 20);
        // Ack 0..10 and 15, but not 10..15: the position may only pass 9.
        let acked: Vec<_> = got.iter().filter(|m| n_of(m) < 10 || n_of(m) == 15).map(|m| m.position).collect();
        sub.ack(&acked).await.unwrap();
        sub.commit().await.unwrap();
    }
    drop(bus);
    let bus = open().await;
    let mut sub = bus.subscribe(Topic::Events).await.unwrap();
    let got = drain(&mut sub, 10, Duration::from_secs(30)).await;
    let ns: Vec<usize> = got.iter().map(n_of).collect();
    assert_eq!(ns, (10..20).collect::<Vec<_>>(), "resumes at the first unacknowledged message");
    let positions: Vec<_> = got.iter().map(|m| m.position).collect();
    sub.ack(&positions).await.unwrap();
    sub.commit().await.unwrap();
    drop(sub);
    drop(bus);
    let bus = open().await;
    let mut sub = bus.subscribe(Topic::Events).await.unwrap();
    let again = sub.poll(10, Duration::from_secs(3)).await.unwrap();
    assert!(again.is_empty(), "everything acknowledged: nothing redelivered, got {}", again.len());
}

async fn dead_letters_are_a_separate_topic(open: &Opener) {
    let bus = open().await;
    bus.publisher.publish(Topic::DeadLetters, records(3, 1)).await.unwrap();
    let mut dlq = bus.subscribe(Topic::DeadLetters).await.unwrap();
    let got = drain(&mut dlq, 3, Duration::from_secs(30)).await;
    assert_eq!(got.iter().map(n_of).collect::<Vec<_>>(), vec![0, 1, 2]);
    let mut events = bus.subscribe(Topic::Events).await.unwrap();
    assert!(
        events.poll(10, Duration::from_secs(2)).await.unwrap().is_empty(),
        "dead letters never reach the events topic"
    );
}

async fn ready_reports_ok(open: &Opener) {
    let bus = open().await;
    bus.publisher.ready().await.unwrap();
}

// ---- embedded ----

fn embedded_opener(dir: std::path::PathBuf) -> Opener {
    Box::new(move || {
        let cfg = BusConfig { kind: BusKind::Embedded, path: dir.clone(), ..BusConfig::default() };
        Box::pin(async move { Bus::open(&cfg).await.unwrap() })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_conformance() {
    for check in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let open = embedded_opener(dir.path().to_path_buf());
        match check {
            0 => publish_consume_in_key_order(&open).await,
            1 => unacked_messages_are_redelivered_after_restart(&open).await,
            2 => dead_letters_are_a_separate_topic(&open).await,
            _ => ready_reports_ok(&open).await,
        }
    }
}

// ---- memory (the unit-test fake must behave like the real ones) ----

#[tokio::test]
async fn memory_conformance() {
    for check in 0..4 {
        let shared = MemoryBus::new();
        let open: Opener = Box::new(move || {
            let b = shared.clone();
            Box::pin(async move { Bus::new(std::sync::Arc::new(b.clone()), std::sync::Arc::new(b)) })
        });
        match check {
            0 => publish_consume_in_key_order(&open).await,
            1 => unacked_messages_are_redelivered_after_restart(&open).await,
            2 => dead_letters_are_a_separate_topic(&open).await,
            _ => ready_reports_ok(&open).await,
        }
    }
}

// ---- kafka (real broker over TCP) ----

fn kafka_opener(brokers: &str, partitions: i32) -> Opener {
    let mut properties: std::collections::BTreeMap<String, String> = Default::default();
    for (k, v) in common::fast_group_properties() {
        properties.insert(k.into(), v.into());
    }
    let kafka = KafkaConfig {
        brokers: brokers.to_string(),
        topic: common::unique("conf"),
        dead_letter_topic: common::unique("conf-dlq"),
        group_id: common::unique("group"),
        properties,
        partitions,
        ..KafkaConfig::default()
    };
    Box::new(move || {
        let cfg = BusConfig { kind: BusKind::Kafka, kafka: kafka.clone(), ..BusConfig::default() };
        Box::pin(async move { Bus::open(&cfg).await.unwrap() })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_conformance() {
    let Some(brokers) = common::kafka_brokers() else { return };
    publish_consume_in_key_order(&kafka_opener(&brokers, 3)).await;
    unacked_messages_are_redelivered_after_restart(&kafka_opener(&brokers, 1)).await;
    dead_letters_are_a_separate_topic(&kafka_opener(&brokers, 1)).await;
    ready_reports_ok(&kafka_opener(&brokers, 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_publish_answers_for_the_whole_batch() {
    let Some(brokers) = common::kafka_brokers() else { return };
    let kafka = KafkaConfig {
        brokers,
        topic: common::unique("batch"),
        dead_letter_topic: common::unique("batch-dlq"),
        partitions: 3,
        ..KafkaConfig::default()
    };
    let cfg = BusConfig { kind: BusKind::Kafka, kafka, ..BusConfig::default() };
    let bus = Bus::open(&cfg).await.unwrap();
    // Nothing to send is not an error and does not wait.
    tokio::time::timeout(Duration::from_secs(1), bus.publisher.publish(Topic::Events, Vec::new()))
        .await
        .expect("an empty publish answers at once")
        .unwrap();
    // Many concurrent publishes, each answered once its own records landed.
    let publishes = (0..20).map(|_| bus.publisher.publish(Topic::Events, records(50, 7)));
    for result in futures::future::join_all(publishes).await {
        result.unwrap();
    }
    // One record over librdkafka's message.max.bytes fails the publish as
    // too large, and the producer keeps working.
    let mut batch = records(3, 1);
    batch[1].payload = vec![b'x'; 2_000_000];
    let err = bus.publisher.publish(Topic::Events, batch).await.unwrap_err();
    assert!(matches!(err, sluice::bus::BusError::TooLarge(_)), "{err:?}");
    bus.publisher.publish(Topic::Events, records(5, 2)).await.unwrap();
    // A record over the producer's batch.size (256 KiB) but under
    // message.max.bytes still goes, in a batch of its own; its bytes do not
    // compress away (lz4), so the broker takes the whole batch too.
    let mut batch = records(3, 3);
    let mut x: u32 = 1;
    batch[1].payload = (0..600_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            b'!' + (x >> 16) as u8 % 90
        })
        .collect();
    bus.publisher.publish(Topic::Events, batch).await.expect("a record bigger than batch.size is produced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_unreachable_broker_is_retryable() {
    let Some(_) = common::kafka_brokers() else { return };
    // Nothing listens on this port: publishes must fail as Unavailable (503),
    // never hang and never succeed.
    let port = common::free_port();
    let kafka = KafkaConfig {
        brokers: format!("127.0.0.1:{port}"),
        create_topics: false,
        publish_timeout_ms: 1500,
        ..KafkaConfig::default()
    };
    let cfg = BusConfig { kind: BusKind::Kafka, kafka, ..BusConfig::default() };
    let bus = Bus::open(&cfg).await.unwrap();
    let err = bus.publisher.publish(Topic::Events, records(1, 1)).await.unwrap_err();
    assert!(matches!(err, sluice::bus::BusError::Unavailable(_)), "{err:?}");
    assert!(bus.publisher.ready().await.is_err());
}
