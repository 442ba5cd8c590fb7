//! Split roles over the real broker: `sluice ingress` publishes to Kafka and
//! answers only after the delivery report; `sluice forward` consumes the same
//! topic from its consumer group.

use crate::common;

use std::time::{Duration, Instant};

use common::Sluice;
use sluice::event::{Kind, Source};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_publishes_and_a_separate_forwarder_delivers() {
    let Some(brokers) = common::kafka_brokers() else { return };
    let (yaml, topic) = common::kafka_config(&brokers, "brevo:\n  linger_ms: 50\n");
    let ingress = Sluice::start("ingress", &yaml);
    let resp = reqwest::Client::new()
        .post(format!("{}/i/v0/e/", ingress.base))
        .json(&serde_json::json!({
            "api_key": "phc_kafka", "event": "$pageview", "distinct_id": 42,
            "uuid": "0190d6a0-0000-7000-8000-000000000001",
            "properties": {"$current_url": "https://example.com/"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let events = common::read_events(&brokers, &topic, 1, Duration::from_secs(30)).await;
    assert_eq!(events.len(), 1, "the acknowledged event is on the broker");
    let e = &events[0];
    assert_eq!(e.id, "0190d6a0-0000-7000-8000-000000000001");
    assert_eq!((e.source, e.kind), (Source::Posthog, Kind::Page));
    assert_eq!(e.distinct_id.as_deref(), Some("42"), "numeric distinct_id becomes text");
    assert_eq!(e.project, "phc_kafka");
    assert_eq!(e.partition_key(), "posthog:phc_kafka:42");

    let forwarder = Sluice::start("forward", &yaml);
    let deadline = Instant::now() + Duration::from_secs(40);
    while !forwarder.logs().contains("would send Brevo request") {
        assert!(Instant::now() < deadline, "forwarder did not deliver; log:\n{}", forwarder.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(forwarder.logs().contains("\\\"ext_id\\\":\\\"42\\\""), "{}", forwarder.logs());
    let ready = reqwest::get(format!("{}/readyz", forwarder.base)).await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarder_reports_readiness_in_metrics() {
    let Some(brokers) = common::kafka_brokers() else { return };
    let (yaml, _) = common::kafka_config(&brokers, "");
    let fwd = Sluice::start("forward", &yaml);
    assert_eq!(reqwest::get(format!("{}/readyz", fwd.base)).await.unwrap().status(), 200);
    let metrics = reqwest::get(format!("{}/metrics", fwd.base)).await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "sluice_ready 1"), "{metrics}");
}
