//! The HTTP side: one router for every source plus health and metrics.
//!
//! Each source lives in its own file and turns a [`RawRequest`] into
//! [`Event`]s; [`publish`] is the only work on the request path after
//! decoding, and a source answers 2xx only after it returned `Ok` (the bus
//! made the events durable). `POST /batch` is shared by PostHog and
//! Amplitude's Batch API and is routed by the body's shape ([`batch`]).

pub mod amplitude;
pub mod error;
pub mod posthog;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::PrometheusHandle;
use tracing::Instrument;

use crate::bus::{Publisher, Record, Topic};
use crate::config::Config;
use crate::event::Event;
use crate::metrics as m;
pub use error::{Dialect, IngressError};

/// Where "now" comes from, so tests can pin it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock stopped at one instant, for tests.
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// Everything a handler needs; one reference count to clone (axum clones
/// it for every request).
#[derive(Clone)]
pub struct AppState(Arc<Handles>);

impl std::ops::Deref for AppState {
    type Target = Handles;
    fn deref(&self) -> &Handles {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Handles {
    pub config: Arc<Config>,
    pub publisher: Arc<dyn Publisher>,
    pub clock: Arc<dyn Clock>,
    /// Renders `/metrics`; `None` when metrics are not installed (tests).
    pub metrics: Option<PrometheusHandle>,
    /// What each request records, as handles (registered on first use).
    pub meters: Arc<m::IngressMetrics>,
    pub posthog: Arc<posthog::PosthogState>,
    pub amplitude: Arc<amplitude::AmplitudeState>,
    pub webhooks: Arc<webhook::WebhookState>,
}

impl AppState {
    /// Build the state; `data_dir` holds persistent dedup stores when the bus
    /// is embedded (None keeps them in memory only).
    pub fn new(
        config: Arc<Config>,
        publisher: Arc<dyn Publisher>,
        clock: Arc<dyn Clock>,
        metrics: Option<PrometheusHandle>,
        data_dir: Option<&std::path::Path>,
    ) -> anyhow::Result<AppState> {
        Ok(AppState(Arc::new(Handles {
            posthog: Arc::new(posthog::PosthogState::new(&config)?),
            amplitude: Arc::new(amplitude::AmplitudeState::new(&config, data_dir)?),
            webhooks: Arc::new(webhook::WebhookState::new(&config, data_dir)?),
            config,
            publisher,
            clock,
            metrics,
            meters: Arc::default(),
        })))
    }
}

/// A request as every source sees it: method, query, headers, the exact body
/// bytes and the peer address. Built by [`RawRequest::read`] with a body limit.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub method: Method,
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub peer: Option<SocketAddr>,
}

impl RawRequest {
    /// Read the request body, refusing more than `limit` bytes with 413.
    pub async fn read(req: Request, limit: usize) -> Result<RawRequest, IngressError> {
        let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        let (parts, body) = req.into_parts();
        if let Some(len) = parts.headers.get(axum::http::header::CONTENT_LENGTH) {
            if len.to_str().ok().and_then(|l| l.parse::<usize>().ok()).is_some_and(|l| l > limit) {
                return Err(IngressError::TooLarge { what: "request body", limit });
            }
        }
        let body = axum::body::to_bytes(body, limit).await.map_err(|e| {
            // A client that stalls mid-body ends here via the request timeout.
            if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
                IngressError::TooLarge { what: "request body", limit }
            } else {
                IngressError::Malformed { code: "body_read_failed", message: format!("cannot read request body: {e}") }
            }
        })?;
        Ok(RawRequest {
            method: parts.method,
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            headers: parts.headers,
            body,
            peer,
        })
    }

    /// First value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let q = self.query.as_deref()?;
        url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Publish events durably; the handler may answer 2xx only after `Ok`.
/// Takes the events by value and drops them once serialized: a request
/// waiting for its delivery report holds only the records (about a quarter of
/// the decoded events' memory), each at its exact length (one scratch buffer
/// per request, [`Event::to_record_in`]), which bounds RSS under load.
pub async fn publish(state: &AppState, source: &'static str, events: Vec<Event>) -> Result<(), IngressError> {
    let records = {
        let mut scratch = Vec::with_capacity(4096);
        events.iter().map(|e| e.to_record_in(&mut scratch)).collect()
    };
    drop(events);
    publish_records(state, source, records).await
}

/// [`publish`] for envelopes already serialized (one record per event).
pub async fn publish_records(state: &AppState, source: &'static str, records: Vec<Record>) -> Result<(), IngressError> {
    if records.is_empty() {
        return Ok(());
    }
    let n = records.len();
    let started = Instant::now();
    let result = state.publisher.publish(Topic::Events, records).await;
    state.meters.publish(started.elapsed(), result.is_ok());
    match result {
        Ok(()) => {
            state.meters.events_received(source, n);
            Ok(())
        }
        Err(e) => {
            tracing::warn!(source, error = %e, events = n, "publish failed");
            Err(IngressError::from_bus(e, state.config.server.retry_after_secs))
        }
    }
}

/// Count and log a refusal, then render it in the source's dialect.
pub fn refuse(source: &'static str, dialect: Dialect, err: IngressError, events: usize) -> Response {
    m::events_rejected(source, err.reason(), events);
    if err.status().is_server_error() {
        tracing::error!(source, reason = err.reason(), error = %err, "request failed");
    } else {
        tracing::info!(source, reason = err.reason(), status = err.status().as_u16(), "request refused");
    }
    err.render(dialect)
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let limit = state.config.server.max_concurrent_requests;
    let timeout = Duration::from_secs(state.config.server.request_timeout_secs);
    let connectors = &state.config.connectors;
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(webhook::routes());
    // A disabled connector's routes are not mounted: 404, like any unknown path.
    if connectors.posthog.enabled || connectors.amplitude.enabled {
        let shared_batch = any(batch).layer(middleware::from_fn(posthog::cors));
        app = app.route("/batch", shared_batch.clone()).route("/batch/", shared_batch);
    }
    if connectors.posthog.enabled {
        app = app.merge(posthog::routes());
    }
    if connectors.amplitude.enabled {
        app = app.merge(amplitude::routes());
    }
    app.layer(middleware::from_fn_with_state(Arc::new(Admission::new(limit, timeout)), admit))
        // Outside admission, so overload 503s and timeout 408s are counted
        // in sluice_http_requests_total (the 5xx-ratio alert relies on it).
        .layer(middleware::from_fn_with_state(state.meters.clone(), record_http))
        .layer(middleware::from_fn(request_id))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Concurrency cap (503 beyond it, at once) and the whole-request deadline.
struct Admission {
    permits: Arc<tokio::sync::Semaphore>,
    timeout: Duration,
}

impl Admission {
    fn new(limit: usize, timeout: Duration) -> Admission {
        Admission { permits: Arc::new(tokio::sync::Semaphore::new(limit.max(1))), timeout }
    }
}

async fn admit(State(adm): State<Arc<Admission>>, req: Request, next: Next) -> Response {
    let dialect = dialect_for(req.uri().path());
    let Ok(_permit) = adm.permits.clone().try_acquire_owned() else {
        return refuse("http", dialect, IngressError::Overloaded { retry_after_secs: 1 }, 1);
    };
    match tokio::time::timeout(adm.timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => refuse("http", dialect, IngressError::Timeout, 1),
    }
}

/// Which dialect a refusal made before routing is written in. `/batch` is
/// shared and its body is unknown here: PostHog's (Amplitude's SDK reads
/// only the status of a 503 or 408).
fn dialect_for(path: &str) -> Dialect {
    match path.trim_end_matches('/') {
        "/2/httpapi" | "/identify" => Dialect::Amplitude,
        p if p.starts_with("/webhooks/") => Dialect::Webhook,
        _ => Dialect::Posthog,
    }
}

/// The header that correlates a client's request with Sluice's log lines.
pub const REQUEST_ID: &str = "x-request-id";

/// Outermost layer: every log line written while handling the request (the
/// "request refused" line included) carries `request_id` through a span, and
/// the response echoes it so a client or proxy can quote it. A caller's id is
/// kept when it is a short token (proxies and load balancers set one);
/// anything else is replaced so clients cannot stuff the logs.
async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    // ERROR level so the span stays enabled whatever `log.level` filters out:
    // an error line must never lose its id.
    let span = tracing::error_span!("request", request_id = %id);
    let mut resp = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

fn acceptable_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'='))
}

async fn record_http(State(meters): State<Arc<m::IngressMetrics>>, req: Request, next: Next) -> Response {
    let route = match req.extensions().get::<MatchedPath>() {
        Some(p) => m::Route::of(p.as_str()),
        None => m::Route::UNMATCHED,
    };
    let started = Instant::now();
    let resp = next.run(req).await;
    meters.http_request(route, resp.status().as_u16(), started.elapsed());
    resp
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    ready_response(state.publisher.as_ref()).await
}

/// `/readyz` for every role: 200 when the bus is reachable and writable.
pub async fn ready_response(publisher: &dyn Publisher) -> Response {
    match publisher.ready().await {
        Ok(()) => {
            m::ready(true);
            axum::Json(serde_json::json!({"status": "ready"})).into_response()
        }
        Err(e) => {
            m::ready(false);
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "unavailable", "reason": "bus"})))
                .into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(h) => ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], h.render()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `/batch` is both PostHog's batch route and Amplitude's Batch API. An
/// Amplitude body is a JSON object with `events` and no `batch`; everything
/// else (including compressed bodies) is PostHog's.
async fn batch(State(state): State<AppState>, req: Request<Body>) -> Response {
    let raw = match RawRequest::read(req, posthog::BATCH_BODY_LIMIT).await {
        Ok(r) => r,
        Err(e) => return refuse("posthog", Dialect::Posthog, e, 1),
    };
    let connectors = &state.config.connectors;
    let amplitude_shape = is_amplitude_batch(&raw.body);
    if (amplitude_shape && !connectors.amplitude.enabled) || (!amplitude_shape && !connectors.posthog.enabled) {
        return StatusCode::NOT_FOUND.into_response();
    }
    if amplitude_shape {
        amplitude::handle_batch(&state, raw).await
    } else {
        posthog::handle(&state, raw).await
    }
}

fn is_amplitude_batch(body: &[u8]) -> bool {
    // One light pass over the top-level keys; anything the scanner is unsure
    // of goes to serde_json, which decides (a full second parse of every
    // PostHog batch was ~4 % of the ingress's CPU).
    match std::str::from_utf8(body).ok().and_then(amplitude_shape_scan) {
        Some(shape) => shape,
        None => is_amplitude_batch_serde(body),
    }
}

/// [`is_amplitude_batch`] by serde_json: what decides every body the scanner leaves.
fn is_amplitude_batch_serde(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct TopKeys {
        events: Option<serde::de::IgnoredAny>,
        batch: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<TopKeys>(body) {
        Ok(k) => k.events.is_some() && k.batch.is_none(),
        Err(_) => false,
    }
}

/// [`is_amplitude_batch`] by [`Scan`]: `events` present and not null, no
/// `batch`; `None` when unsure (a repeated key, which serde refuses, or
/// anything the scanner leaves to serde). A top-level `batch` that is not
/// null settles it at once: serde answers "not Amplitude" for such a body
/// whatever follows (valid or not), so PostHog batches are not read twice.
fn amplitude_shape_scan(text: &str) -> Option<bool> {
    let mut s = crate::event::scan::Scan::new(text);
    if s.peek()? != b'{' {
        return None;
    }
    // Each: absent, or whether its value is other than null.
    let (mut events, mut batch): (Option<bool>, Option<bool>) = (None, None);
    let mut settled = None;
    let walked = s.object(|s, key| {
        if key == "batch" && s.peek()? != b'n' {
            settled = Some(false);
            return None;
        }
        let raw = s.value()?;
        let slot = match key {
            "events" => &mut events,
            "batch" => &mut batch,
            _ => return Some(()),
        };
        match slot.replace(raw != "null") {
            Some(_) => None,
            None => Some(()),
        }
    });
    if settled.is_some() {
        return settled;
    }
    walked?;
    s.at_end().then_some(events == Some(true) && batch != Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::memory::MemoryBus;
    use tower::ServiceExt;

    fn test_router() -> Router {
        let config = Arc::new(Config::default());
        let state =
            AppState::new(config, Arc::new(MemoryBus::new()), Arc::new(SystemClock), None, None).expect("state");
        router(state)
    }

    async fn get_with(router: Router, path: &str, id: Option<&str>) -> Response {
        let mut req = Request::builder().uri(path);
        if let Some(id) = id {
            req = req.header(REQUEST_ID, id);
        }
        router.oneshot(req.body(Body::empty()).expect("request")).await.expect("infallible")
    }

    fn response_id(resp: &Response) -> String {
        resp.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).expect("x-request-id on the response").to_string()
    }

    #[test]
    fn overload_refusals_are_counted_as_http_responses() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        metrics::with_local_recorder(&recorder, || {
            rt.block_on(async {
                let mut cfg = Config::default();
                cfg.server.max_concurrent_requests = 1;
                let state = AppState::new(Arc::new(cfg), Arc::new(MemoryBus::new()), Arc::new(SystemClock), None, None)
                    .expect("state");
                let app = router(state);
                // The first request takes the only permit and waits for a
                // body that never comes.
                let (_tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
                let stalled = Request::post("/e/").body(Body::from_stream(rx)).expect("request");
                let mut held = Box::pin(app.clone().oneshot(stalled));
                assert!(futures::poll!(&mut held).is_pending());
                let resp = app.oneshot(Request::post("/e/").body(Body::from("{}")).expect("request")).await;
                assert_eq!(resp.expect("infallible").status(), StatusCode::SERVICE_UNAVAILABLE);
            })
        });
        let text = handle.render();
        assert!(text.contains(r#"sluice_http_requests_total{route="/e",status="503"} 1"#), "{text}");
        assert!(text.contains(r#"sluice_events_rejected_total{source="http",reason="overloaded"} 1"#), "{text}");
    }

    #[tokio::test]
    async fn a_disabled_connector_answers_404_and_leaves_the_other_working() {
        let yaml = "connectors:\n  posthog:\n    project_tokens: [phc_only]\n  amplitude:\n    enabled: false\n";
        let cfg = Config::from_yaml(yaml, "t.yaml", &|_| None).expect("config");
        assert!(!cfg.open_mode(), "a disabled connector without keys is not open mode");
        let bus = Arc::new(MemoryBus::new());
        let app = router(AppState::new(Arc::new(cfg), bus.clone(), Arc::new(SystemClock), None, None).expect("state"));
        let post = |path: &str, body: &str| {
            Request::post(path).header("content-type", "application/json").body(Body::from(body.to_string())).unwrap()
        };
        let amp = r#"{"api_key":"any_key_at_all_0123456789","events":[{"event_type":"e","user_id":"user-1"}]}"#;
        for path in ["/2/httpapi", "/batch", "/batch/"] {
            let resp = app.clone().oneshot(post(path, amp)).await.unwrap();
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        }
        let ph = r#"{"api_key":"phc_only","batch":[{"event":"e","distinct_id":"u"}]}"#;
        for path in ["/batch/", "/i/v0/e/"] {
            let resp = app.clone().oneshot(post(path, ph)).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
        }
        assert_eq!(bus.records(Topic::Events).len(), 2, "only the PostHog events reached the bus");
    }

    #[tokio::test]
    async fn request_id_is_echoed_when_the_caller_sends_a_sane_one() {
        let resp = get_with(test_router(), "/healthz", Some("lb-7f3a.42")).await;
        assert_eq!(response_id(&resp), "lb-7f3a.42");
        // Refusals carry it too: that is where an operator needs it most.
        let resp = get_with(test_router(), "/e/", Some("trace:abc")).await;
        assert!(resp.status().is_client_error(), "{}", resp.status());
        assert_eq!(response_id(&resp), "trace:abc");
    }

    #[tokio::test]
    async fn request_id_is_generated_when_missing_or_unacceptable() {
        let a = response_id(&get_with(test_router(), "/healthz", None).await);
        let b = response_id(&get_with(test_router(), "/healthz", None).await);
        assert_eq!(a.len(), 32, "{a}");
        assert_ne!(a, b, "every request gets its own id");
        let long = "x".repeat(129);
        for bad in ["has space", "quote\"", long.as_str(), ""] {
            let got = response_id(&get_with(test_router(), "/healthz", Some(bad)).await);
            assert_ne!(got, bad);
            assert_eq!(got.len(), 32, "{got}");
        }
    }

    #[test]
    fn refusals_before_routing_speak_the_route_dialect() {
        assert_eq!(dialect_for("/2/httpapi"), Dialect::Amplitude);
        assert_eq!(dialect_for("/identify/"), Dialect::Amplitude);
        assert_eq!(dialect_for("/webhooks/stripe"), Dialect::Webhook);
        assert_eq!(dialect_for("/i/v0/e/"), Dialect::Posthog);
    }

    #[test]
    fn batch_routing_by_shape() {
        assert!(is_amplitude_batch(br#"{"api_key":"k","events":[{"event_type":"a"}]}"#));
        assert!(!is_amplitude_batch(br#"{"api_key":"k","batch":[{"event":"a","properties":{"events":1}}]}"#));
        assert!(!is_amplitude_batch(b"\x1f\x8b\x08\x00"));
        assert!(!is_amplitude_batch(br#"[{"event":"a"}]"#));
    }

    /// The one-pass shape check answers as the serde one wherever it answers.
    #[test]
    fn batch_shape_scan_agrees_with_serde() {
        let serde_shape = |text: &str| is_amplitude_batch_serde(text.as_bytes());
        let bodies = [
            r#"{"api_key":"k","events":[{"event_type":"a"}]}"#,
            r#"{"events":null,"api_key":"k"}"#,
            r#"{"events":[],"batch":null}"#,
            r#"{"events":[],"batch":[]}"#,
            r#"{"batch":[{"events":[1]}],"api_key":"k"}"#,
            r#" { "events" : { } } "#,
            r#"{"events":[],"events":[]}"#,
            r#"{"batch":null,"batch":null,"events":[]}"#,
            r#"{"events":[1,]}"#,
            r#"{"events":[]} trailing"#,
            r#"{"events":[1e3]}"#,
            r#"{"batch":[{"event":"a"}],"events":[]}"#,
            r#"{"api_key":"k","batch":{},"events":[1]} not json"#,
            r#"{"batch":null,"events":[1]}"#,
            r#"{"batch":nul,"events":[1]}"#,
            r#"{"events":[1],"batch":"x"}"#,
            r#"{"events":[]}"#,
            r#"[{"events":[]}]"#,
            "",
        ];
        let mut answered = 0;
        for text in bodies {
            let serde = serde_shape(text);
            if let Some(scan) = amplitude_shape_scan(text) {
                assert_eq!(scan, serde, "{text}");
                answered += 1;
            }
            assert_eq!(is_amplitude_batch(text.as_bytes()), serde, "{text}");
        }
        assert!(answered >= 10, "the scan answered {answered}");
        // A non-null `batch` settles the shape before the rest is read.
        assert_eq!(amplitude_shape_scan(r#"{"batch":[1],"events":[] this is never read"#), Some(false));
    }
}

/// An identifier with every NUL replaced by U+FFFD, as PostHog's capture does
/// for distinct ids: a raw NUL never reaches the bus (Kafka consumers and
/// databases downstream choke on it), and the id stays distinct.
pub fn without_nul(id: String) -> String {
    if id.contains('\0') {
        id.replace('\0', "\u{FFFD}")
    } else {
        id
    }
}

#[cfg(test)]
mod nul_tests {
    #[test]
    fn nul_is_replaced_and_other_text_kept() {
        assert_eq!(super::without_nul("a\0b\0".into()), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(super::without_nul("plain".into()), "plain");
    }
}
