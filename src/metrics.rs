//! Every metric Sluice exports is named here, and only here.
//!
//! Prometheus conventions: counters end in `_total`, durations are
//! `_seconds`, sizes `_bytes`; labels are bounded sets (source, route,
//! reason, endpoint class, status, partition), never user ids or tokens.
//! Other modules call the small functions below instead of naming metrics.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

// Ingress.
pub const EVENTS_RECEIVED: &str = "sluice_events_received_total";
pub const EVENTS_REJECTED: &str = "sluice_events_rejected_total";
pub const HTTP_REQUESTS: &str = "sluice_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "sluice_http_request_duration_seconds";
pub const HTTP_REQUEST_SIZE: &str = "sluice_http_request_size_bytes";
pub const BATCH_EVENTS: &str = "sluice_ingress_batch_events";
pub const DECOMPRESSION_RATIO: &str = "sluice_ingress_decompression_ratio";
pub const DEDUP_HITS: &str = "sluice_dedup_hits_total";
pub const READY: &str = "sluice_ready";

// Bus.
pub const PUBLISH_DURATION: &str = "sluice_bus_publish_duration_seconds";
pub const PUBLISH_FAILURES: &str = "sluice_bus_publish_failures_total";
pub const PRODUCER_QUEUE_MESSAGES: &str = "sluice_kafka_producer_queue_messages";
pub const PRODUCER_QUEUE_BYTES: &str = "sluice_kafka_producer_queue_bytes";
pub const PRODUCER_REPLACED: &str = "sluice_kafka_producer_replaced_total";
pub const CONSUMER_LAG: &str = "sluice_consumer_lag_messages";
pub const EMBEDDED_LOG_BYTES: &str = "sluice_embedded_log_bytes";
pub const EMBEDDED_COMMIT_DURATION: &str = "sluice_embedded_commit_duration_seconds";
pub const EMBEDDED_COMMIT_RECORDS: &str = "sluice_embedded_commit_records";
pub const EMBEDDED_RETENTION_DELETED: &str = "sluice_embedded_retention_deleted_total";
pub const EMBEDDED_RETENTION_DROPPED: &str = "sluice_embedded_retention_dropped_total";

// Forwarder.
pub const BREVO_REQUESTS: &str = "sluice_brevo_requests_total";
pub const BREVO_REQUEST_DURATION: &str = "sluice_brevo_request_duration_seconds";
pub const BREVO_EVENTS_PER_REQUEST: &str = "sluice_brevo_events_per_request";
pub const BREVO_RETRIES: &str = "sluice_brevo_retries_total";
pub const RATE_LIMIT_WAIT: &str = "sluice_rate_limiter_wait_seconds";
pub const RATE_LIMIT_PAUSES: &str = "sluice_rate_limit_pauses_total";
pub const DEAD_LETTERS: &str = "sluice_dead_letters_total";
pub const EVENTS_DELIVERED: &str = "sluice_events_delivered_total";
pub const PROPERTIES_DROPPED: &str = "sluice_event_properties_dropped_total";
pub const END_TO_END_LATENCY: &str = "sluice_end_to_end_latency_seconds";
pub const LAST_DELIVERY: &str = "sluice_forwarder_last_delivery_timestamp_seconds";
pub const FORWARD_SKIPPED: &str = "sluice_forwarder_skipped_total";

/// Install the Prometheus recorder; the handle renders `/metrics`.
/// Installing twice (tests) returns a handle to a fresh, unregistered
/// recorder rather than failing.
pub fn install() -> PrometheusHandle {
    let latency = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
    let e2e = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0];
    let bytes = [256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 20971520.0];
    let counts = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 150.0, 190.0, 200.0, 500.0, 1000.0, 2000.0, 8192.0];
    let ratio = [1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0];
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(END_TO_END_LATENCY.into()), &e2e)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), &bytes))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_EVENTS.into()), &counts))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BREVO_EVENTS_PER_REQUEST.into()), &counts))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(EMBEDDED_COMMIT_RECORDS.into()), &counts))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(DECOMPRESSION_RATIO.into()), &ratio))
        .expect("static bucket lists are non-empty");
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    // Only the first install in a process wins; later ones (tests) keep a
    // handle that renders nothing.
    if metrics::set_global_recorder(recorder).is_ok() {
        spawn_upkeep(handle.clone());
    }
    handle
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The exporter keeps every histogram sample until it is folded into the
/// buckets, which only a scrape or an upkeep run does: without this thread
/// a Sluice nobody scrapes grew by every request's samples (~1.2 MB/s under
/// PostHog load, BENCHMARKS.md).
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new().name("sluice-metrics-upkeep".into()).spawn(move || loop {
        std::thread::sleep(UPKEEP_INTERVAL);
        handle.run_upkeep();
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms are folded only on scrape");
    }
}

// ---- ingress ----

pub fn events_received(source: &'static str, n: usize) {
    counter!(EVENTS_RECEIVED, "source" => source).increment(n as u64);
}

/// Count refused events with a bounded reason (`invalid_token`, `too_large`,
/// `bad_signature`, ...). Every refusal goes through here.
pub fn events_rejected(source: &'static str, reason: &'static str, n: usize) {
    counter!(EVENTS_REJECTED, "source" => source, "reason" => reason).increment(n.max(1) as u64);
}

pub fn http_request(route: &'static str, status: u16, elapsed: Duration) {
    counter!(HTTP_REQUESTS, "route" => route, "status" => status.to_string()).increment(1);
    histogram!(HTTP_REQUEST_DURATION, "route" => route).record(elapsed.as_secs_f64());
}

pub fn request_size(source: &'static str, bytes: usize, events: usize) {
    histogram!(HTTP_REQUEST_SIZE, "source" => source).record(bytes as f64);
    histogram!(BATCH_EVENTS, "source" => source).record(events as f64);
}

pub fn decompression(source: &'static str, compressed: usize, inflated: usize) {
    if compressed > 0 {
        histogram!(DECOMPRESSION_RATIO, "source" => source).record(inflated as f64 / compressed as f64);
    }
}

/// A duplicate suppressed at `stage` (`amplitude_insert_id`,
/// `webhook_<source name>` — one per configured webhook source, so bounded
/// by the config — `forwarder`).
pub fn dedup_hit(stage: &str, n: usize) {
    counter!(DEDUP_HITS, "stage" => stage.to_string()).increment(n as u64);
}

pub fn ready(ok: bool) {
    gauge!(READY).set(if ok { 1.0 } else { 0.0 });
}

// ---- bus ----

pub fn publish(topic: &'static str, elapsed: Duration, ok: bool) {
    histogram!(PUBLISH_DURATION, "topic" => topic).record(elapsed.as_secs_f64());
    if !ok {
        counter!(PUBLISH_FAILURES, "topic" => topic).increment(1);
    }
}

pub fn producer_queue(messages: u64, bytes: u64) {
    gauge!(PRODUCER_QUEUE_MESSAGES).set(messages as f64);
    gauge!(PRODUCER_QUEUE_BYTES).set(bytes as f64);
}

/// The Kafka producer hit a fatal error (fenced, lost sequence) and was
/// replaced by a fresh one.
pub fn producer_replaced() {
    counter!(PRODUCER_REPLACED).increment(1);
}

pub fn consumer_lag(topic: &str, partition: i32, lag: u64) {
    gauge!(CONSUMER_LAG, "topic" => topic.to_string(), "partition" => partition.to_string()).set(lag as f64);
}

pub fn embedded_log_bytes(bytes: u64) {
    gauge!(EMBEDDED_LOG_BYTES).set(bytes as f64);
}

pub fn embedded_commit(elapsed: Duration, records: usize) {
    histogram!(EMBEDDED_COMMIT_DURATION).record(elapsed.as_secs_f64());
    histogram!(EMBEDDED_COMMIT_RECORDS).record(records as f64);
}

/// Retention deleted `deleted` records, `undelivered` of them before the
/// forwarder acknowledged them (data loss by configuration).
pub fn embedded_retention(deleted: u64, undelivered: u64) {
    counter!(EMBEDDED_RETENTION_DELETED).increment(deleted);
    counter!(EMBEDDED_RETENTION_DROPPED).increment(undelivered);
}

// ---- forwarder ----

pub fn brevo_request(endpoint: &'static str, status: u16, elapsed: Duration, events: usize) {
    counter!(BREVO_REQUESTS, "endpoint" => endpoint, "status" => status.to_string()).increment(1);
    histogram!(BREVO_REQUEST_DURATION, "endpoint" => endpoint).record(elapsed.as_secs_f64());
    histogram!(BREVO_EVENTS_PER_REQUEST, "endpoint" => endpoint).record(events as f64);
}

pub fn brevo_retry(endpoint: &'static str) {
    counter!(BREVO_RETRIES, "endpoint" => endpoint).increment(1);
}

pub fn rate_limit_wait(class: &'static str, waited: Duration) {
    histogram!(RATE_LIMIT_WAIT, "class" => class).record(waited.as_secs_f64());
}

pub fn rate_limit_pause(class: &'static str) {
    counter!(RATE_LIMIT_PAUSES, "class" => class).increment(1);
}

pub fn dead_letters(reason: &'static str, n: usize) {
    counter!(DEAD_LETTERS, "reason" => reason).increment(n as u64);
}

/// Envelopes deliberately not sent to Brevo (`filtered` by `event_filters`,
/// `unsupported_kind` for group/alias), acknowledged without a dead letter.
pub fn forward_skipped(source: &'static str, reason: &'static str, n: usize) {
    counter!(FORWARD_SKIPPED, "source" => source, "reason" => reason).increment(n as u64);
}

pub fn properties_dropped(n: usize) {
    counter!(PROPERTIES_DROPPED).increment(n as u64);
}

/// Events Brevo accepted (or dry-run logged), with their end-to-end latency.
pub fn delivered(source: &'static str, latencies: impl IntoIterator<Item = Duration>) {
    let mut n = 0u64;
    for l in latencies {
        histogram!(END_TO_END_LATENCY).record(l.as_secs_f64());
        n += 1;
    }
    counter!(EVENTS_DELIVERED, "source" => source).increment(n);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    gauge!(LAST_DELIVERY).set(now.as_secs_f64());
}
