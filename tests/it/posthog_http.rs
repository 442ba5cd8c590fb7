//! The PostHog ingress over HTTP: the real router, in process, publishing to
//! the in-memory bus. Every route × body encoding × body shape must be
//! accepted and give the same envelopes; every refusal must carry the status
//! a PostHog SDK expects, in PostHog's error shape; CORS on every route.

use crate::posthog_wire as wire;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sluice::bus::memory::MemoryBus;
use sluice::bus::{BusError, Topic};
use sluice::config::{Config, Secret};
use sluice::event::{Event, Kind};
use sluice::ingress::{router, AppState, FixedClock};
use tower::ServiceExt;
use wire::{encode, Encoded, Wire};

const TOKEN: &str = "phc_test_token";
const PEER: &str = "198.51.100.4:50000";

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().with_timezone(&Utc)
}

struct Harness {
    app: Router,
    bus: MemoryBus,
    /// How many published records [`Harness::take`] already returned.
    seen: std::cell::Cell<usize>,
}

impl Harness {
    fn new() -> Harness {
        let mut cfg = Config::default();
        cfg.connectors.posthog.project_tokens = vec![Secret::new(TOKEN)];
        let bus = MemoryBus::new();
        let state = AppState::new(Arc::new(cfg), Arc::new(bus.clone()), Arc::new(FixedClock(now())), None, None)
            .expect("state");
        Harness { app: router(state), bus, seen: Default::default() }
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let resp: Response<Body> = self.app.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body").to_vec();
        (status, headers, body)
    }

    async fn send_encoded(&self, path: &str, enc: &Encoded) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let mut b = Request::builder().method(enc.method).uri(enc.uri(path));
        for (k, v) in &enc.headers {
            b = b.header(*k, v);
        }
        self.send(with_peer(b.body(Body::from(enc.body.clone())).unwrap())).await
    }

    /// Everything published since the last call.
    fn take(&self) -> Vec<Event> {
        let records = self.bus.records(Topic::Events);
        let fresh =
            records[self.seen.get()..].iter().map(|r| Event::from_payload(&r.payload).expect("envelope")).collect();
        self.seen.set(records.len());
        fresh
    }
}

fn with_peer(mut req: Request<Body>) -> Request<Body> {
    req.extensions_mut().insert(ConnectInfo(PEER.parse::<SocketAddr>().unwrap()));
    req
}

fn post_json(path: &str, body: &Value) -> Request<Body> {
    with_peer(
        Request::post(path).header("content-type", "application/json").body(Body::from(body.to_string())).unwrap(),
    )
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

const UUID_A: &str = "0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b";
const UUID_B: &str = "0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5c";

/// Two events as posthog-js would send them: a page view and an identify.
fn events_json(with_token: bool) -> Vec<Value> {
    let mut a = json!({
        "event": "$pageview",
        "uuid": UUID_A,
        "distinct_id": "user-1",
        "timestamp": "2026-03-01T11:59:00.000Z",
        "properties": {"$current_url": "https://example.com/ü?x=1+2", "$lib": "web", "$lib_version": "1.200.0"}
    });
    let mut b = json!({
        "event": "$identify",
        "uuid": UUID_B,
        "distinct_id": "user-1",
        "timestamp": "2026-03-01T11:59:30.000Z",
        "$set": {"email": "ada@example.com"},
        "properties": {"$anon_distinct_id": "anon-9", "$set_once": {"first_seen": "2026-01-01"}}
    });
    if with_token {
        a["properties"]["token"] = json!(TOKEN);
        b["properties"]["token"] = json!(TOKEN);
    }
    vec![a, b]
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Single,
    Array,
    Envelope,
}

fn body_of(shape: Shape) -> Value {
    match shape {
        Shape::Single => events_json(true).remove(0),
        Shape::Array => Value::Array(events_json(true)),
        Shape::Envelope => json!({"api_key": TOKEN, "batch": events_json(false), "historical_migration": false}),
    }
}

fn routes() -> Vec<String> {
    ["/e", "/i/v0/e", "/capture", "/track", "/engage", "/batch"]
        .iter()
        .flat_map(|p| [p.to_string(), format!("{p}/")])
        .collect()
}

fn check_pageview(e: &Event) {
    assert_eq!(e.id, UUID_A);
    assert_eq!(e.kind, Kind::Page);
    assert_eq!(e.name, "$pageview");
    assert_eq!(e.project, TOKEN);
    assert_eq!(e.source_name, "posthog");
    assert_eq!(e.distinct_id.as_deref(), Some("user-1"));
    assert_eq!(e.properties.get("$current_url"), Some(&json!("https://example.com/ü?x=1+2")));
    assert!(!e.properties.contains_key("token"));
    assert_eq!(e.context.library.as_ref().map(|l| l.name.as_str()), Some("web"));
    assert_eq!(e.context.ip.as_deref(), Some("198.51.100.4"));
    assert_eq!(e.timestamp, DateTime::parse_from_rfc3339("2026-03-01T11:59:00Z").unwrap());
    assert_eq!(e.received_at, now());
}

fn check_identify(e: &Event) {
    assert_eq!(e.id, UUID_B);
    assert_eq!(e.kind, Kind::Identify);
    assert_eq!(e.email.as_deref(), Some("ada@example.com"));
    assert_eq!(e.user_properties.set.get("email"), Some(&json!("ada@example.com")));
    assert_eq!(e.user_properties.set_once.get("first_seen"), Some(&json!("2026-01-01")));
    assert_eq!(e.context.anon_distinct_id.as_deref(), Some("anon-9"));
}

#[tokio::test]
async fn every_route_encoding_and_shape_is_accepted_alike() {
    let h = Harness::new();
    let mut requests = 0;
    for shape in [Shape::Single, Shape::Array, Shape::Envelope] {
        let mut reference: Option<Vec<Event>> = None;
        let json = body_of(shape).to_string().into_bytes();
        for route in routes() {
            for w in Wire::ALL {
                let enc = encode(&json, w);
                let (status, _, body) = h.send_encoded(&route, &enc).await;
                let ctx = format!("{shape:?} {w:?} {route}");
                assert_eq!(status, StatusCode::OK, "{ctx}: {}", String::from_utf8_lossy(&body));
                assert_eq!(json_of(&body), json!({"status": 1}), "{ctx}");
                requests += 1;
            }
        }
        let published = h.take();
        let per_request = if matches!(shape, Shape::Single) { 1 } else { 2 };
        assert_eq!(published.len(), per_request * routes().len() * Wire::ALL.len(), "{shape:?}");
        // Every request produced the same envelopes as the first one.
        for chunk in published.chunks(per_request) {
            match &reference {
                Some(r) => assert_eq!(chunk, &r[..per_request], "{shape:?}"),
                None => reference = Some(chunk.to_vec()),
            }
        }
        check_pageview(&published[0]);
        if per_request == 2 {
            check_identify(&published[1]);
        }
    }
    assert_eq!(requests, 3 * 12 * Wire::ALL.len());
}

#[tokio::test]
async fn beacon_answers_204() {
    let h = Harness::new();
    let enc = encode(body_of(Shape::Array).to_string().as_bytes(), Wire::FormBase64);
    let mut enc = enc;
    enc.query = "beacon=1&ver=1.0".into();
    let (status, _, body) = h.send_encoded("/e/", &enc).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());
    assert_eq!(h.take().len(), 2, "published before answering");
}

#[tokio::test]
async fn cors_preflight_and_headers_on_every_route() {
    let h = Harness::new();
    let origin = "https://shop.example";
    let mut paths = routes();
    paths.push("/i/v1/analytics/events".into());
    paths.push("/i/v1/analytics/events/".into());
    for path in &paths {
        let req = Request::builder()
            .method("OPTIONS")
            .uri(path)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .body(Body::empty())
            .unwrap();
        let (status, headers, _) = h.send(req).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers["access-control-allow-origin"], origin, "{path}");
        assert_eq!(headers["access-control-allow-credentials"], "true", "{path}");
        assert!(headers["access-control-allow-methods"].to_str().unwrap().contains("POST"), "{path}");
        assert!(headers["access-control-allow-headers"].to_str().unwrap().contains("content-type"), "{path}");

        // Success and refusal alike carry the CORS headers.
        for body in [body_of(Shape::Array), json!({"event": "x", "distinct_id": "u", "token": "phc_wrong"})] {
            let mut req = post_json(path, &body);
            req.headers_mut().insert("origin", origin.parse().unwrap());
            let (status, headers, _) = h.send(req).await;
            assert_eq!(
                headers.get("access-control-allow-origin").map(|v| v.to_str().unwrap()),
                Some(origin),
                "{path} {status}"
            );
            assert_eq!(headers["access-control-allow-credentials"], "true");
        }
    }
    // Even the 413 the body limit answers before any decoding.
    let mut req = with_peer(
        Request::post("/batch").header("content-length", (21 * 1024 * 1024).to_string()).body(Body::empty()).unwrap(),
    );
    req.headers_mut().insert("origin", origin.parse().unwrap());
    let (status, headers, _) = h.send(req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(headers["access-control-allow-origin"], origin);
}

/// Assert a refusal: status, PostHog's error shape and the reason code.
fn assert_refusal(status: StatusCode, body: &[u8], want: u16, code: &str, ctx: &str) {
    assert_eq!(status.as_u16(), want, "{ctx}: {}", String::from_utf8_lossy(body));
    let v = json_of(body);
    assert_eq!(v["code"], code, "{ctx}: {v}");
    let want_type = match want {
        401 => "authentication_error",
        500..=599 => "server_error",
        _ => "validation_error",
    };
    assert_eq!(v["type"], want_type, "{ctx}");
    assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{ctx}: {v}");
}

#[tokio::test]
async fn refusals_carry_the_status_posthog_answers() {
    let h = Harness::new();
    let ev = |extra: Value| {
        let mut e = json!({"event": "signed up", "distinct_id": "u1"});
        e.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        e
    };
    let table: Vec<(&str, Value, u16, &str)> = vec![
        ("no token", ev(json!({})), 401, "missing_token"),
        ("batch without api_key", json!({"batch": [ev(json!({"token": TOKEN}))]}), 401, "missing_token"),
        ("unknown token", ev(json!({"token": "phc_someone_else"})), 401, "invalid_token"),
        ("personal key", ev(json!({"token": "phx_secret"})), 401, "personal_api_key"),
        (
            "tokens differ",
            json!([ev(json!({"token": TOKEN})), ev(json!({"token": "phc_other"}))]),
            401,
            "token_mismatch",
        ),
        ("token too long", ev(json!({"token": "p".repeat(65)})), 401, "invalid_token"),
        ("no distinct_id", json!({"event": "e", "token": TOKEN}), 400, "missing_distinct_id"),
        ("empty distinct_id", ev(json!({"token": TOKEN, "distinct_id": ""})), 400, "missing_distinct_id"),
        ("empty event name", ev(json!({"token": TOKEN, "event": ""})), 400, "missing_event_name"),
        ("no event name", json!({"distinct_id": "u", "token": TOKEN}), 400, "missing_event_name"),
        ("empty batch", json!({"api_key": TOKEN, "batch": []}), 400, "empty_batch"),
        ("bad uuid", ev(json!({"token": TOKEN, "uuid": "not-a-uuid"})), 400, "invalid_uuid"),
        (
            "event over 1 MB",
            ev(json!({"token": TOKEN, "properties": {"blob": "x".repeat(1_000_001)}})),
            413,
            "too_large",
        ),
    ];
    for (name, body, status, code) in table {
        for path in ["/e/", "/batch/"] {
            let (s, _, b) = h.send(post_json(path, &body)).await;
            assert_refusal(s, &b, status, code, &format!("{name} on {path}"));
        }
    }

    let raw = |path: &str, query: &str, ct: &str, body: Vec<u8>| {
        let uri = if query.is_empty() { path.to_string() } else { format!("{path}?{query}") };
        with_peer(Request::post(uri).header("content-type", ct).body(Body::from(body)).unwrap())
    };
    let cases: Vec<(&str, Request<Body>, u16, &str)> = vec![
        ("invalid JSON", raw("/e/", "", "application/json", b"{not json".to_vec()), 400, "invalid_payload"),
        ("empty body", raw("/e/", "", "application/json", vec![]), 400, "empty_payload"),
        ("bad gzip", raw("/e/", "compression=gzip-js", "text/plain", b"plain".to_vec()), 400, "invalid_gzip"),
        ("bad lz64", raw("/e/", "compression=lz64", "text/plain", b"%%%%".to_vec()), 400, "invalid_lz64"),
        (
            "form without data",
            raw("/e/", "", "application/x-www-form-urlencoded", b"ver=1".to_vec()),
            400,
            "empty_payload",
        ),
        ("2 MiB on /e", raw("/e/", "", "application/json", vec![b' '; 2 * 1024 * 1024 + 1]), 413, "too_large"),
        (
            "20 MiB on /batch",
            raw("/batch/", "", "application/json", vec![b' '; 20 * 1024 * 1024 + 1]),
            413,
            "too_large",
        ),
        ("gzip bomb", raw("/batch/", "", "text/plain", gzip_bomb()), 413, "too_large"),
    ];
    for (name, req, status, code) in cases {
        let (s, _, b) = h.send(req).await;
        assert_refusal(s, &b, status, code, name);
    }
    // A lone 2 MiB body is fine on /batch (its limit is 20 MiB).
    let mut padded = body_of(Shape::Envelope).to_string();
    padded.push_str(&" ".repeat(3 * 1024 * 1024));
    let (s, _, b) = h.send(raw("/batch", "", "application/json", padded.into_bytes())).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    // Methods PostHog does not serve.
    let (s, _, _) = h.send(with_peer(Request::put("/e/").body(Body::empty()).unwrap())).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(h.take().len(), 2, "only the padded batch was published");
}

/// 21 MiB of zeros, gzipped to a few kilobytes.
fn gzip_bomb() -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..21 {
        enc.write_all(&chunk).unwrap();
    }
    let out = enc.finish().unwrap();
    assert!(out.len() < 64 * 1024);
    out
}

#[tokio::test]
async fn bus_refusal_is_503_with_retry_after_and_nothing_claimed() {
    let h = Harness::new();
    h.bus.refuse(Some(|| BusError::Unavailable("broker down".into())));
    for path in ["/e/", "/batch/"] {
        let (s, headers, b) = h.send(post_json(path, &body_of(Shape::Array))).await;
        assert_refusal(s, &b, 503, "bus_unavailable", path);
        assert_eq!(headers["retry-after"], "5");
        assert!(!String::from_utf8_lossy(&b).contains("broker down"), "5xx bodies stay generic");
    }
    h.bus.refuse(None);
    assert!(h.take().is_empty());
    let (s, _, _) = h.send(post_json("/e/", &body_of(Shape::Array))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.take().len(), 2);
}

#[tokio::test]
async fn amplitude_batches_still_reach_amplitude() {
    // `/batch` is shared; a body with `events` and no `batch` is not ours.
    let h = Harness::new();
    let (s, _, b) = h.send(post_json("/batch", &json!({"api_key": "k", "events": [{"event_type": "a"}]}))).await;
    let v = json_of(&b);
    assert!(v.get("type").is_none(), "answered in PostHog's dialect: {v} ({s})");
    assert!(h.take().is_empty());
}

// ---- capture v1 ----

fn v1_request(body: Vec<u8>, encoding: Option<&str>, token: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/i/v1/analytics/events")
        .header("content-type", "application/json")
        .header("user-agent", "posthog-python/7.91.1")
        .header("posthog-sdk-info", "posthog-python/7.91.1")
        .header("posthog-attempt", "1")
        .header("posthog-request-id", "6d1f3c2a-9b8e-4c7d-a6f5-e4d3c2b1a098")
        .header("posthog-request-timestamp", "2026-03-01T12:00:10+00:00");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if let Some(e) = encoding {
        b = b.header("content-encoding", e);
    }
    with_peer(b.body(Body::from(body)).unwrap())
}

fn v1_batch() -> Value {
    json!({
        "created_at": "2026-03-01T12:00:10+00:00",
        "batch": [
            {
                "event": "order placed",
                "uuid": UUID_A,
                "distinct_id": "user-1",
                "timestamp": "2026-03-01T12:00:05+00:00",
                "options": {"process_person_profile": true},
                "properties": {"total": 12.5, "$set": {"email": "ada@example.com"}},
                "session_id": "s-1"
            },
            {
                "event": "",
                "uuid": UUID_B,
                "distinct_id": "user-1",
                "timestamp": "2026-03-01T12:00:05+00:00",
                "options": {},
                "properties": {}
            },
            {
                "event": "guest event",
                "uuid": "0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5d",
                "distinct_id": "guest",
                "timestamp": "not a time",
                "options": {},
                "properties": {}
            },
            {
                "event": "guest event",
                "uuid": "0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5e",
                "distinct_id": "guest",
                "timestamp": "2026-03-01T12:00:05Z",
                "options": {"cookieless_mode": "yes?"},
                "properties": {}
            },
            {
                "event": "guest event",
                "uuid": "0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5f",
                "distinct_id": "guest",
                "timestamp": "2026-03-01T12:00:05Z",
                "options": {},
                "properties": {}
            }
        ]
    })
}

#[tokio::test]
async fn v1_per_event_results_and_every_encoding() {
    let h = Harness::new();
    let json = v1_batch().to_string().into_bytes();
    let bodies: Vec<(Option<&str>, Vec<u8>)> = vec![
        (None, json.clone()),
        (Some("gzip"), wire::gzip(&json)),
        (Some("deflate"), wire::zlib(&json)),
        (Some("zstd"), wire::zstd(&json)),
        (Some("br"), wire::brotli_stored(&json)),
    ];
    for (encoding, body) in bodies {
        let (s, _, b) = h.send(v1_request(body, encoding, Some(TOKEN))).await;
        assert_eq!(s, StatusCode::OK, "{encoding:?}: {}", String::from_utf8_lossy(&b));
        assert_eq!(
            json_of(&b),
            json!({"results": {
                UUID_A: {"result": "ok"},
                UUID_B: {"result": "drop", "details": "missing_event_name"},
                "0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5d": {"result": "drop", "details": "invalid_event_timestamp"},
                "0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5e": {"result": "drop", "details": "invalid_options"},
                "0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5f": {"result": "warning", "details": "person_processing_disabled"}
            }}),
            "{encoding:?}"
        );
        let evs = h.take();
        assert_eq!(evs.len(), 2, "the ok and the warning event are published, drops are not");
        let order = &evs[0];
        assert_eq!(order.id, UUID_A);
        assert_eq!(order.kind, Kind::Track);
        assert_eq!(order.project, TOKEN);
        assert_eq!(order.email.as_deref(), Some("ada@example.com"));
        assert_eq!(order.properties.get("total"), Some(&json!(12.5)));
        assert_eq!(order.properties.get("$session_id"), Some(&json!("s-1")));
        assert_eq!(order.properties.get("$process_person_profile"), Some(&json!(true)));
        assert_eq!(order.context.library.as_ref().unwrap().name, "posthog-python");
        assert_eq!(order.context.library.as_ref().unwrap().version.as_deref(), Some("7.91.1"));
        assert_eq!(order.context.user_agent.as_deref(), Some("posthog-python/7.91.1"));
        // Client clock 10 s ahead (request timestamp 12:00:10 vs now 12:00:00).
        assert_eq!(order.timestamp, DateTime::parse_from_rfc3339("2026-03-01T11:59:55Z").unwrap());
        assert_eq!(evs[1].distinct_id.as_deref(), Some("guest"));
    }
}

#[tokio::test]
async fn v1_refusals() {
    let h = Harness::new();
    let body = v1_batch().to_string().into_bytes();
    let v1_refusal = |s: StatusCode, b: &[u8], want: u16, code: &str, ctx: &str| {
        assert_eq!(s.as_u16(), want, "{ctx}: {}", String::from_utf8_lossy(b));
        let v = json_of(b);
        assert_eq!(v["error"], code, "{ctx}: {v}");
        assert!(v["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{ctx}");
    };
    let (s, _, b) = h.send(v1_request(body.clone(), None, None)).await;
    v1_refusal(s, &b, 401, "missing_token", "no Authorization");
    let (s, _, b) = h.send(v1_request(body.clone(), None, Some("phc_unknown"))).await;
    v1_refusal(s, &b, 401, "invalid_token", "unknown token");
    let (s, _, b) = h.send(v1_request(body.clone(), None, Some("phx_personal"))).await;
    v1_refusal(s, &b, 401, "personal_api_key", "personal key");

    let mut req = v1_request(body.clone(), None, Some(TOKEN));
    req.headers_mut().remove("posthog-request-id");
    let (s, _, b) = h.send(req).await;
    v1_refusal(s, &b, 400, "missing_required_headers", "missing header");

    let mut req = v1_request(body.clone(), None, Some(TOKEN));
    req.headers_mut().insert("authorization", format!("Basic {TOKEN}").parse().unwrap());
    let (s, _, b) = h.send(req).await;
    v1_refusal(s, &b, 400, "invalid_header_value", "basic auth");

    let mut req = v1_request(body.clone(), None, Some(TOKEN));
    req.headers_mut().insert("content-type", "text/plain".parse().unwrap());
    let (s, _, b) = h.send(req).await;
    v1_refusal(s, &b, 415, "unsupported_content_type", "text/plain");

    let (s, _, b) = h.send(v1_request(body.clone(), Some("lz4"), Some(TOKEN))).await;
    v1_refusal(s, &b, 415, "unsupported_encoding", "lz4");

    let (s, _, b) = h.send(v1_request(b"not json".to_vec(), None, Some(TOKEN))).await;
    v1_refusal(s, &b, 400, "request_parsing_error", "bad JSON");

    let (s, _, b) = h.send(v1_request(gzip_bomb(), Some("gzip"), Some(TOKEN))).await;
    v1_refusal(s, &b, 413, "too_large", "gzip bomb");

    let mut dup = v1_batch();
    dup["batch"][1]["uuid"] = json!(UUID_A);
    let (s, _, b) = h.send(v1_request(dup.to_string().into_bytes(), None, Some(TOKEN))).await;
    v1_refusal(s, &b, 400, "duplicate_event_uuid", "duplicate uuid");

    let empty = json!({"created_at": "2026-03-01T12:00:10Z", "batch": []});
    let (s, _, b) = h.send(v1_request(empty.to_string().into_bytes(), None, Some(TOKEN))).await;
    v1_refusal(s, &b, 400, "empty_batch", "empty batch");

    h.bus.refuse(Some(|| BusError::Unavailable("down".into())));
    let (s, headers, b) = h.send(v1_request(body.clone(), None, Some(TOKEN))).await;
    v1_refusal(s, &b, 503, "bus_unavailable", "bus down");
    assert!(headers.contains_key("retry-after"));
    h.bus.refuse(None);
    assert!(h.take().is_empty(), "nothing published by refused requests");
}
