//! The broker stopped mid-load: the test's own Tansu is frozen with SIGSTOP
//! (its in-memory data survives) while 16 clients post PostHog events to a
//! `sluice ingress` on Kafka. While it is frozen the ingress answers 503 with
//! `Retry-After` within its publish timeout, `/readyz` turns 503 and memory
//! stays bounded; after SIGCONT the same process takes events again (no
//! restart) and every event that got a 2xx, before, during or after the
//! stall, is on the topic.
//!
//! Figures are printed as a `FIGURES ...` line (run with `--nocapture`).

use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{status_counts, Load, OwnBroker, RssSampler, Sluice};

const TOKEN: &str = "phc_broker_outage";
const USER: &str = "user-outage";
const PUBLISH_TIMEOUT_MS: u64 = 3000;
/// How long the broker stays frozen.
const STALL: Duration = Duration::from_secs(12);

async fn readyz(base: &str) -> Option<u16> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().ok()?;
    client.get(format!("{base}/readyz")).send().await.ok().map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stopped_mid_load_gets_503_then_recovers_without_restart() {
    let Some(broker) = OwnBroker::start() else { return };
    let extra = format!("connectors:\n  posthog:\n    project_tokens: [{TOKEN}]\n");
    let (yaml, topic) = common::kafka_config(&broker.addr, &extra);
    let yaml = yaml
        .replace("server:\n", "server:\n  retry_after_secs: 2\n")
        .replace("    partitions: 2\n", &format!("    partitions: 2\n    publish_timeout_ms: {PUBLISH_TIMEOUT_MS}\n"));
    let ingress = Sluice::start("ingress", &yaml);
    let rss = RssSampler::start(ingress.child.id());
    let load = Load::start(&ingress.base, TOKEN, USER, 16);

    // Healthy first.
    let warm = common::eventually(Duration::from_secs(60), || (load.acked().len() >= 300).then_some(())).await;
    assert!(warm.is_some(), "no progress before the stall; log:\n{}", ingress.logs());
    assert_eq!(readyz(&ingress.base).await, Some(200), "/readyz before the stall");

    broker.pause();
    let paused_at = Instant::now();
    let refused = common::eventually(Duration::from_secs(20), || {
        load.outcomes().into_iter().find(|o| o.at > paused_at && o.status == Some(503))
    })
    .await
    .unwrap_or_else(|| panic!("no 503 while the broker is stopped; log:\n{}", ingress.logs()));
    assert_eq!(refused.retry_after.as_deref(), Some("2"), "503 without the configured Retry-After");
    let mut ready_during = None;
    for _ in 0..10 {
        ready_during = readyz(&ingress.base).await;
        if ready_during == Some(503) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(ready_during, Some(503), "/readyz must turn 503 while the broker is stopped");
    let remaining = STALL.saturating_sub(paused_at.elapsed());
    tokio::time::sleep(remaining).await;
    let rss_stalled_kib = rss.peak_kib();

    broker.resume();
    let resumed_at = Instant::now();
    let recovered = common::eventually(Duration::from_secs(60), || {
        load.outcomes().into_iter().find(|o| o.at > resumed_at && o.status == Some(200))
    })
    .await;
    assert!(recovered.is_some(), "the same process never took an event after the broker returned; log:\n{}", {
        ingress.logs()
    });
    let recovered_after = recovered.map(|o| o.at - resumed_at).unwrap_or_default();
    let mut ready_after = None;
    for _ in 0..40 {
        ready_after = readyz(&ingress.base).await;
        if ready_after == Some(200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(ready_after, Some(200), "/readyz did not recover");
    // Recovery went through the producer replacement (Tansu fences the old
    // producer after the outage), and the operator can see it.
    let metrics = reqwest::get(format!("{}/metrics", ingress.base)).await.expect("metrics").text().await.expect("text");
    let replaced: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_kafka_producer_replaced_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(replaced >= 1.0, "no producer replacement counted:\n{metrics}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outcomes = load.stop().await;

    // During the stall: answers are 503 + Retry-After (or a 2xx for what the
    // broker had taken before it froze), each within the publish timeout plus
    // a margin for scheduling; never an answer that took the whole request
    // timeout, never another 5xx.
    let stall_end = resumed_at;
    let during: Vec<&common::Outcome> = outcomes.iter().filter(|o| o.at > paused_at && o.at <= stall_end).collect();
    let bound = Duration::from_millis(PUBLISH_TIMEOUT_MS) + Duration::from_secs(3);
    for o in &during {
        let st = o.status.unwrap_or_else(|| panic!("connection failed during the stall: {o:?}"));
        assert!(st == 503 || (200..300).contains(&st), "unexpected answer during the stall: {o:?}");
        if st == 503 {
            assert_eq!(o.retry_after.as_deref(), Some("2"), "503 without Retry-After: {o:?}");
        }
        assert!(o.latency <= bound, "an answer took {:?} (> {bound:?}) while the broker was stopped", o.latency);
    }
    let refused_during = during.iter().filter(|o| o.status == Some(503)).count();
    assert!(refused_during > 0, "no request was refused during the stall");
    for o in &outcomes {
        let st = o.status.unwrap_or_else(|| panic!("connection failed: {o:?}"));
        assert!(st == 200 || st == 503, "unexpected status {st}: {o:?}");
    }

    // Bounded memory: the stall does not grow an unbounded queue.
    let peak_kib = rss.peak_kib();
    assert!(peak_kib < 200 * 1024, "peak RSS {peak_kib} KiB over 200 MB");

    // Nothing acknowledged is missing.
    let acked: HashSet<String> = common::acked_ids(&outcomes).into_iter().collect();
    let on_topic = common::read_topic(&broker.addr, &topic, Duration::from_secs(60), |got| {
        let ids: HashSet<&str> = got.iter().map(|(_, e)| e.id.as_str()).collect();
        acked.iter().all(|id| ids.contains(id.as_str()))
    })
    .await;
    let ids: HashSet<&str> = on_topic.iter().map(|(_, e)| e.id.as_str()).collect();
    let missing = acked.iter().filter(|id| !ids.contains(id.as_str())).count();
    assert_eq!(missing, 0, "{missing} acknowledged events are not on the topic");
    let refused_ids: HashSet<&str> = outcomes.iter().filter(|o| o.status == Some(503)).map(|o| o.id.as_str()).collect();
    let refused_on_topic = refused_ids.iter().filter(|id| ids.contains(*id)).count();

    eprintln!(
        "FIGURES broker stall: sent={} acked={} statuses={:?} during_stall={:?} stall={:?} recovered_after={:?} on_topic={} acked_missing={missing} refused_but_on_topic={refused_on_topic} peak_rss_kib={peak_kib} rss_at_end_of_stall_kib={rss_stalled_kib}",
        outcomes.len(),
        acked.len(),
        status_counts(&outcomes),
        status_counts(during.iter().copied()),
        STALL,
        recovered_after,
        on_topic.len(),
    );
}
