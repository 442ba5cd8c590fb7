//! Every metric Sluice exports is named here, and only here.
//!
//! Prometheus conventions: counters end in `_total`, durations are
//! `_seconds`, sizes `_bytes`; labels are bounded sets (source, route,
//! reason, endpoint class, status, partition), never user ids or tokens.
//! Other modules call the small functions below instead of naming metrics.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Histogram};
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

/// Route labels of the HTTP metrics: every route Sluice serves (trailing-slash
/// twins share one), `other` for a matched route not listed, `unmatched` for
/// a request no route took.
const ROUTES: [&str; 15] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/batch",
    "/e",
    "/i/v0/e",
    "/i/v1/analytics/events",
    "/capture",
    "/track",
    "/engage",
    "/2/httpapi",
    "/identify",
    "/webhooks/{name}",
    "other",
    "unmatched",
];

/// A request's route label, one of [`ROUTES`]: a bounded set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route(usize);

impl Route {
    pub const OTHER: Route = Route(ROUTES.len() - 2);
    pub const UNMATCHED: Route = Route(ROUTES.len() - 1);

    /// The label of the route that matched `path` (axum's pattern).
    pub fn of(path: &str) -> Route {
        let path = path.trim_end_matches('/');
        ROUTES[..Route::OTHER.0].iter().position(|r| *r == path).map_or(Route::OTHER, Route)
    }

    pub fn label(self) -> &'static str {
        ROUTES[self.0]
    }
}

/// `source` labels of the ingress metrics a request records.
const SOURCES: [&str; 3] = ["posthog", "amplitude", "webhook"];

/// The metrics every ingress request records, held as handles so a request
/// does not look them up by name and labels: each lookup builds a key
/// (allocating its label list, and a string for a status code), hashes it
/// and reads the recorder's registry, four to six times per request, ~2 % of
/// the Kafka ingress profile (BENCHMARKS.md).
///
/// A handle is registered the first time it is used, with the recorder in
/// place then: the global one in `sluice`, a test's local recorder in tests.
/// So a series appears in `/metrics` once it has a sample, as with the
/// macros, and one set of handles belongs to one state (never `static`,
/// which would tie every test to the first test's recorder). Labels outside
/// [`SOURCES`] and status codes outside 100–599 are looked up per call.
pub struct IngressMetrics {
    routes: [RouteMetrics; ROUTES.len()],
    sources: [SourceMetrics; SOURCES.len()],
    publish_duration: OnceLock<Histogram>,
    publish_failures: OnceLock<Counter>,
}

struct RouteMetrics {
    duration: OnceLock<Histogram>,
    /// `sluice_http_requests_total` by status code, indexed from 100.
    by_status: Box<[OnceLock<Counter>]>,
}

#[derive(Default)]
struct SourceMetrics {
    received: OnceLock<Counter>,
    size: OnceLock<Histogram>,
    batch: OnceLock<Histogram>,
}

const STATUS_CODES: std::ops::Range<u16> = 100..600;

impl Default for IngressMetrics {
    fn default() -> IngressMetrics {
        IngressMetrics {
            routes: std::array::from_fn(|_| RouteMetrics {
                duration: OnceLock::new(),
                by_status: STATUS_CODES.map(|_| OnceLock::new()).collect(),
            }),
            sources: Default::default(),
            publish_duration: OnceLock::new(),
            publish_failures: OnceLock::new(),
        }
    }
}

impl IngressMetrics {
    /// One answered HTTP request (every route, refusals included).
    pub fn http_request(&self, route: Route, status: u16, elapsed: Duration) {
        let (r, route) = (&self.routes[route.0], route.label());
        let register = || counter!(HTTP_REQUESTS, "route" => route, "status" => status.to_string());
        match r.by_status.get(usize::from(status.wrapping_sub(STATUS_CODES.start))) {
            Some(slot) => slot.get_or_init(register).increment(1),
            None => register().increment(1),
        }
        r.duration.get_or_init(|| histogram!(HTTP_REQUEST_DURATION, "route" => route)).record(elapsed.as_secs_f64());
    }

    /// A request's size on the wire and how many events it carried.
    pub fn request_size(&self, source: &'static str, bytes: usize, events: usize) {
        match self.source(source) {
            Some(s) => {
                s.size.get_or_init(|| histogram!(HTTP_REQUEST_SIZE, "source" => source)).record(bytes as f64);
                s.batch.get_or_init(|| histogram!(BATCH_EVENTS, "source" => source)).record(events as f64);
            }
            None => {
                histogram!(HTTP_REQUEST_SIZE, "source" => source).record(bytes as f64);
                histogram!(BATCH_EVENTS, "source" => source).record(events as f64);
            }
        }
    }

    /// Events the bus accepted from `source`.
    pub fn events_received(&self, source: &'static str, n: usize) {
        match self.source(source) {
            Some(s) => s.received.get_or_init(|| counter!(EVENTS_RECEIVED, "source" => source)).increment(n as u64),
            None => counter!(EVENTS_RECEIVED, "source" => source).increment(n as u64),
        }
    }

    /// One publish of a request's events to the events topic.
    pub fn publish(&self, elapsed: Duration, ok: bool) {
        self.publish_duration
            .get_or_init(|| histogram!(PUBLISH_DURATION, "topic" => "events"))
            .record(elapsed.as_secs_f64());
        if !ok {
            self.publish_failures.get_or_init(|| counter!(PUBLISH_FAILURES, "topic" => "events")).increment(1);
        }
    }

    fn source(&self, source: &str) -> Option<&SourceMetrics> {
        SOURCES.iter().position(|known| *known == source).map(|i| &self.sources[i])
    }
}

/// Count refused events with a bounded reason (`invalid_token`, `too_large`,
/// `bad_signature`, ...). Every refusal goes through here.
pub fn events_rejected(source: &'static str, reason: &'static str, n: usize) {
    counter!(EVENTS_REJECTED, "source" => source, "reason" => reason).increment(n.max(1) as u64);
}

/// The inflated / compressed size of a compressed request body (a plain body
/// records nothing: the panel reads the ratio of compressed ones).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn render(f: impl FnOnce()) -> String {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, f);
        handle.render()
    }

    #[test]
    fn route_labels_are_the_routes_with_trailing_slash_twins_folded() {
        assert_eq!(Route::of("/batch/").label(), "/batch");
        assert_eq!(Route::of("/batch").label(), "/batch");
        assert_eq!(Route::of("/i/v0/e/").label(), "/i/v0/e");
        assert_eq!(Route::of("/webhooks/{name}").label(), "/webhooks/{name}");
        assert_eq!(Route::of("/somewhere/else"), Route::OTHER);
        assert_eq!(Route::of("other"), Route::OTHER, "the fallback labels are not routes");
        assert_eq!(Route::of("unmatched"), Route::OTHER);
        assert_eq!(Route::UNMATCHED.label(), "unmatched");
    }

    #[test]
    fn held_handles_record_what_the_named_metrics_would() {
        let text = render(|| {
            let m = IngressMetrics::default();
            for status in [200, 200, 503] {
                m.http_request(Route::of("/batch/"), status, Duration::from_millis(3));
            }
            // Outside the held range: looked up per call, same series.
            m.http_request(Route::UNMATCHED, 999, Duration::from_millis(1));
            m.request_size("posthog", 6_500, 10);
            m.request_size("posthog", 650, 1);
            m.events_received("posthog", 11);
            m.events_received("some_new_source", 2);
            m.publish(Duration::from_millis(2), true);
            m.publish(Duration::from_millis(2), false);
        });
        for line in [
            r#"sluice_http_requests_total{route="/batch",status="200"} 2"#,
            r#"sluice_http_requests_total{route="/batch",status="503"} 1"#,
            r#"sluice_http_requests_total{route="unmatched",status="999"} 1"#,
            r#"sluice_http_request_duration_seconds_count{route="/batch"} 3"#,
            r#"sluice_http_request_size_bytes_sum{source="posthog"} 7150"#,
            r#"sluice_ingress_batch_events_count{source="posthog"} 2"#,
            r#"sluice_events_received_total{source="posthog"} 11"#,
            r#"sluice_events_received_total{source="some_new_source"} 2"#,
            r#"sluice_bus_publish_duration_seconds_count{topic="events"} 2"#,
            r#"sluice_bus_publish_failures_total{topic="events"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn a_series_appears_once_it_has_a_sample() {
        let text = render(|| {
            let m = IngressMetrics::default();
            m.publish(Duration::from_millis(1), true);
        });
        assert!(!text.contains("sluice_bus_publish_failures_total"), "{text}");
        assert!(!text.contains("sluice_http_requests_total"), "{text}");
        assert!(!text.contains(r#"source="amplitude""#), "{text}");
    }

    #[test]
    fn handles_belong_to_the_recorder_of_their_first_use() {
        let first = PrometheusBuilder::new().build_recorder();
        let second = PrometheusBuilder::new().build_recorder();
        let (a, b) = (IngressMetrics::default(), IngressMetrics::default());
        metrics::with_local_recorder(&first, || a.events_received("amplitude", 1));
        metrics::with_local_recorder(&second, || b.events_received("amplitude", 5));
        let line = |n| format!(r#"sluice_events_received_total{{source="amplitude"}} {n}"#);
        assert!(first.handle().render().contains(&line(1)), "{}", first.handle().render());
        assert!(second.handle().render().contains(&line(5)), "{}", second.handle().render());
    }
}
