//! Amplitude's HTTP V2, Batch and Identify APIs driven through the real
//! router with an in-memory bus: every validation rule and every response
//! body, compared as JSON with what Amplitude answers.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use tower::ServiceExt;

use sluice::bus::memory::MemoryBus;
use sluice::bus::{BusError, Topic};
use sluice::config::Config;
use sluice::event::{Event, Kind};
use sluice::ingress::{self, AppState, Clock};

const KEY: &str = "0123456789abcdef0123456789abcdef";
const NOW_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// A clock tests can move forward.
struct TestClock(Mutex<DateTime<Utc>>);

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

struct Harness {
    app: Router,
    bus: MemoryBus,
    clock: Arc<TestClock>,
}

impl Harness {
    fn new(amplitude_yaml: &str) -> Harness {
        Harness::build(amplitude_yaml, None)
    }

    /// `data_dir` persists the dedup window, as with the embedded bus.
    fn build(amplitude_yaml: &str, data_dir: Option<&std::path::Path>) -> Harness {
        let yaml = format!("connectors:\n  amplitude:\n{amplitude_yaml}");
        let config = Config::from_yaml(&yaml, "test.yaml", &|_| None).expect("config");
        let bus = MemoryBus::new();
        let clock = Arc::new(TestClock(Mutex::new(DateTime::from_timestamp_millis(NOW_MS).unwrap())));
        let state =
            AppState::new(Arc::new(config), Arc::new(bus.clone()), clock.clone(), None, data_dir).expect("state");
        Harness { app: ingress::router(state), bus, clock }
    }

    fn with_key() -> Harness {
        Harness::new(&format!("    api_keys: [\"{KEY}\"]\n"))
    }

    async fn send(&self, method: Method, uri: &str, content_type: &str, body: impl Into<Body>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, content_type)
            .body(body.into())
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{uri}: body is not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
        (status, body)
    }

    async fn post(&self, uri: &str, body: &Value) -> (StatusCode, Value) {
        self.send(Method::POST, uri, "application/json; charset=UTF-8", body.to_string()).await
    }

    fn published(&self) -> Vec<Event> {
        self.bus.records(Topic::Events).iter().map(|r| Event::from_payload(&r.payload).unwrap()).collect()
    }
}

fn good(i: usize) -> Value {
    json!({"event_type": "watch_tutorial", "user_id": format!("user-{i:05}"), "time": NOW_MS - 1000})
}

fn upload(events: Vec<Value>) -> Value {
    json!({"api_key": KEY, "events": events})
}

fn ok_body(events: usize, body: &Value) -> Value {
    json!({"code": 200, "events_ingested": events, "payload_size_bytes": body.to_string().len(),
        "server_upload_time": NOW_MS})
}

#[tokio::test]
async fn success_body_and_both_upload_routes() {
    let h = Harness::with_key();
    for uri in ["/2/httpapi", "/batch"] {
        let body = upload(vec![good(1), good(2)]);
        let (status, resp) = h.post(uri, &body).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(resp, ok_body(2, &body), "{uri}");
    }
    assert_eq!(h.published().len(), 4);
    // The SDK's exact content type, and none at all, are both read as JSON.
    let body = upload(vec![good(3)]);
    let (status, _) = h.send(Method::POST, "/2/httpapi", "application/json", body.to_string()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn request_level_refusals() {
    let h = Harness::with_key();
    let cases: Vec<(&str, String, StatusCode, Value)> = vec![
        ("empty body", String::new(), StatusCode::BAD_REQUEST, json!({"code": 400, "error": "Missing request body"})),
        (
            "not JSON",
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            json!({"code": 400, "error": "Invalid JSON request body"}),
        ),
        (
            "a JSON array",
            "[1,2]".into(),
            StatusCode::BAD_REQUEST,
            json!({"code": 400, "error": "Invalid JSON request body"}),
        ),
        (
            "an array shaped like the fields",
            json!([KEY, [good(0)], null]).to_string(),
            StatusCode::BAD_REQUEST,
            json!({"code": 400, "error": "Invalid JSON request body"}),
        ),
        (
            "events not an array",
            json!({"api_key": KEY, "events": "x"}).to_string(),
            StatusCode::BAD_REQUEST,
            json!({"code": 400, "error": "Invalid JSON request body"}),
        ),
        (
            "no api_key",
            json!({"events": [good(0)]}).to_string(),
            StatusCode::BAD_REQUEST,
            json!({"code": 400, "error": "Request missing required field", "missing_field": "api_key"}),
        ),
        (
            "empty api_key",
            json!({"api_key": "", "events": [good(0)]}).to_string(),
            StatusCode::BAD_REQUEST,
            json!({"code": 400, "error": "Request missing required field", "missing_field": "api_key"}),
        ),
        (
            "no events",
            json!({"api_key": KEY}).to_string(),
            StatusCode::BAD_REQUEST,
            json!({"code": 400, "error": "Request missing required field", "missing_field": "events"}),
        ),
        (
            "unknown key",
            json!({"api_key": "not-a-key", "events": [good(0)]}).to_string(),
            StatusCode::BAD_REQUEST,
            json!({"code": 400, "error": "Invalid API key: not-a-key"}),
        ),
        (
            "2001 events",
            upload((0..2001).map(good).collect()).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"code": 413, "error": "Payload too large"}),
        ),
    ];
    for uri in ["/2/httpapi", "/batch"] {
        for (name, body, status, want) in &cases {
            // `/batch` sends bodies that are not Amplitude-shaped to PostHog.
            if uri == "/batch" && !body.contains("\"events\"") {
                continue;
            }
            let (got_status, got) = h.send(Method::POST, uri, "application/json", body.clone()).await;
            assert_eq!((got_status, &got), (*status, want), "{uri}: {name}");
        }
    }
    assert!(h.published().is_empty());
    // Exactly 2000 is allowed.
    let body = upload((0..2000).map(good).collect());
    assert_eq!(h.post("/2/httpapi", &body).await.0, StatusCode::OK);
}

#[tokio::test]
async fn body_limits() {
    let h = Harness::with_key();
    // Over 1 MB on HTTP V2 (well under 2000 events).
    let big = "x".repeat(1000);
    let heavy = |i| json!({"event_type": "e", "user_id": format!("user-{i:05}"), "event_properties": {"a": big}});
    let body = upload((0..1000).map(heavy).collect());
    assert!(body.to_string().len() > 1_000_000);
    let (status, resp) = h.post("/2/httpapi", &body).await;
    assert_eq!((status, resp), (StatusCode::PAYLOAD_TOO_LARGE, json!({"code": 413, "error": "Payload too large"})));
    // The same body is fine for the Batch API.
    assert_eq!(h.post("/batch", &body).await.0, StatusCode::OK);
    // Over 20 MB (but under the shared route's 20 MiB) on /batch.
    let filler = "y".repeat(1000);
    let mut events: Vec<Value> = Vec::new();
    let one = json!({"event_type": "e", "user_id": "user-00001",
        "event_properties": (0..10).map(|k| (format!("p{k}"), Value::from(filler.clone()))).collect::<serde_json::Map<_, _>>()});
    let per = one.to_string().len() + 1;
    events.resize(20_100_000 / per + 1, one);
    let body = upload(events).to_string();
    assert!(body.len() > 20_000_000 && body.len() < 20 * 1024 * 1024, "{}", body.len());
    let (status, resp) = h.send(Method::POST, "/batch", "application/json", body).await;
    assert_eq!((status, resp), (StatusCode::PAYLOAD_TOO_LARGE, json!({"code": 413, "error": "Payload too large"})));
}

#[tokio::test]
async fn wrong_method_is_json_too() {
    let h = Harness::with_key();
    let (status, body) = h.send(Method::GET, "/2/httpapi", "application/json", "").await;
    assert_eq!((status, body), (StatusCode::METHOD_NOT_ALLOWED, json!({"code": 405, "error": "method not allowed"})));
}

/// One invalid event at index 1 between valid ones → the exact 400.
#[tokio::test]
async fn every_event_rule_reports_the_right_index() {
    let h = Harness::with_key();
    let missing = |f: &str| json!({"code": 400, "error": "Request missing required field", "events_with_missing_fields": {f: [1]}});
    let invalid = |f: &str| json!({"code": 400, "error": "Invalid field values on some events", "events_with_invalid_fields": {f: [1]}});
    let id_length = |f: &str| {
        json!({"code": 400, "error": "Invalid id length for user_id or device_id",
            "events_with_invalid_id_lengths": {f: [1]}})
    };
    let deep = (0..41).fold(json!("leaf"), |inner, _| json!({ "n": inner }));
    let cases: Vec<(&str, Value, Value)> = vec![
        ("no event_type", json!({"user_id": "user-00001"}), missing("event_type")),
        ("empty event_type", json!({"event_type": "", "user_id": "user-00001"}), missing("event_type")),
        ("null event_type", json!({"event_type": null, "user_id": "user-00001"}), missing("event_type")),
        ("numeric event_type", json!({"event_type": 42, "user_id": "user-00001"}), invalid("event_type")),
        ("no ids", json!({"event_type": "e"}), missing("device_id")),
        ("empty ids", json!({"event_type": "e", "user_id": "", "device_id": null}), missing("device_id")),
        ("short user_id", json!({"event_type": "e", "user_id": "abcd"}), id_length("user_id")),
        ("short numeric user_id", json!({"event_type": "e", "user_id": 1234}), id_length("user_id")),
        (
            "short device_id beside a good user_id",
            json!({"event_type": "e", "user_id": "user-00001", "device_id": "d1"}),
            id_length("device_id"),
        ),
        ("object user_id", json!({"event_type": "e", "user_id": {"a": 1}}), invalid("user_id")),
        ("bool device_id", json!({"event_type": "e", "device_id": true}), invalid("device_id")),
        ("too long user_id", json!({"event_type": "e", "user_id": "u".repeat(1025)}), invalid("user_id")),
        (
            "ISO time",
            json!({"event_type": "e", "user_id": "user-00001", "time": "2026-01-01T00:00:00Z"}),
            invalid("time"),
        ),
        ("float time", json!({"event_type": "e", "user_id": "user-00001", "time": 1.5e12}), invalid("time")),
        ("string price", json!({"event_type": "e", "user_id": "user-00001", "price": "4.99"}), invalid("price")),
        ("string revenue", json!({"event_type": "e", "user_id": "user-00001", "revenue": "x"}), invalid("revenue")),
        ("float quantity", json!({"event_type": "e", "user_id": "user-00001", "quantity": 1.5}), invalid("quantity")),
        (
            "string lat",
            json!({"event_type": "e", "user_id": "user-00001", "location_lat": "1"}),
            invalid("location_lat"),
        ),
        (
            "bool lng",
            json!({"event_type": "e", "user_id": "user-00001", "location_lng": true}),
            invalid("location_lng"),
        ),
        (
            "float session_id",
            json!({"event_type": "e", "user_id": "user-00001", "session_id": 1.5}),
            invalid("session_id"),
        ),
        ("string event_id", json!({"event_type": "e", "user_id": "user-00001", "event_id": "7"}), invalid("event_id")),
        (
            "string event_properties",
            json!({"event_type": "e", "user_id": "user-00001", "event_properties": "x"}),
            invalid("event_properties"),
        ),
        (
            "array user_properties",
            json!({"event_type": "e", "user_id": "user-00001", "user_properties": [1]}),
            invalid("user_properties"),
        ),
        ("string groups", json!({"event_type": "e", "user_id": "user-00001", "groups": "g"}), invalid("groups")),
        (
            "numeric group_properties",
            json!({"event_type": "e", "user_id": "user-00001", "group_properties": 1}),
            invalid("group_properties"),
        ),
        ("string plan", json!({"event_type": "e", "user_id": "user-00001", "plan": "p"}), invalid("plan")),
        (
            "numeric insert_id",
            json!({"event_type": "e", "user_id": "user-00001", "insert_id": 5}),
            invalid("insert_id"),
        ),
        (
            "1025-char property value",
            json!({"event_type": "e", "user_id": "user-00001", "event_properties": {"a": "v".repeat(1025)}}),
            invalid("event_properties"),
        ),
        (
            "1025-char property key",
            json!({"event_type": "e", "user_id": "user-00001", "user_properties": {"k".repeat(1025): 1}}),
            invalid("user_properties"),
        ),
        (
            "1025-char unknown field",
            json!({"event_type": "e", "user_id": "user-00001", "city": "c".repeat(1025)}),
            invalid("city"),
        ),
        (
            "41 levels deep",
            json!({"event_type": "e", "user_id": "user-00001", "event_properties": deep}),
            invalid("event_properties"),
        ),
        ("not an object", json!(7), invalid("event")),
    ];
    for (name, bad, want) in cases {
        let body = upload(vec![good(0), bad, good(2)]);
        let (status, got) = h.post("/2/httpapi", &body).await;
        assert_eq!((status, got), (StatusCode::BAD_REQUEST, want), "{name}");
    }
    assert!(h.published().is_empty(), "a request with an invalid event publishes nothing");
}

#[tokio::test]
async fn documented_invalid_ids_are_refused() {
    let h = Harness::with_key();
    let bad = [
        "anonymous",
        "nil",
        "None",
        "NULL",
        "n/a",
        "na",
        "undefined",
        "unknown",
        "\"\"",
        "00000000-0000-0000-0000-000000000000",
        "{}",
        "lmy47d",
        "0",
        "-1",
    ];
    for id in bad {
        for field in ["user_id", "device_id"] {
            // min_id_length 1 so that short placeholders are refused for what they are.
            let body = json!({"api_key": KEY, "options": {"min_id_length": 1},
                "events": [good(0), {"event_type": "e", field: id}]});
            let (status, got) = h.post("/2/httpapi", &body).await;
            let want = json!({"code": 400, "error": "Invalid field values on some events",
                "events_with_invalid_fields": {field: [1]}});
            assert_eq!((status, got), (StatusCode::BAD_REQUEST, want), "{field} = {id:?}");
        }
    }
}

#[tokio::test]
async fn unknown_fields_ids_as_numbers_and_min_id_length_are_accepted() {
    let h = Harness::with_key();
    let body = json!({"api_key": KEY, "options": {"min_id_length": 3}, "events": [
        {"event_type": "e", "user_id": "abc", "library": "amplitude-python/1.3.0", "partner_id": "p",
         "version_name": "v", "ingestion_metadata": {"source_name": "s"}, "surprise": {"x": [1, 2]}},
        {"event_type": "e", "device_id": 123456, "time": NOW_MS, "price": 1, "quantity": 2, "session_id": -1},
        {"event_type": "e", "user_id": "user-00001", "device_id": null, "city": null, "time": null},
    ]});
    let (status, got) = h.post("/2/httpapi", &body).await;
    assert_eq!((status, got), (StatusCode::OK, ok_body(3, &body)));
    let events = h.published();
    assert_eq!(events[0].context.extra["surprise"], json!({"x": [1, 2]}));
    assert_eq!(events[1].distinct_id.as_deref(), Some("123456"));
}

#[tokio::test]
async fn all_problems_of_all_events_are_listed_together() {
    let h = Harness::with_key();
    let body = upload(vec![
        json!({"event_type": "e", "user_id": "user-00001", "time": "yesterday", "price": "1"}),
        good(1),
        json!({"user_id": "ab"}),
        json!({"event_type": "e", "device_id": "dev"}),
        json!({"event_type": "e", "user_id": "user-00001", "time": "later"}),
    ]);
    let (status, got) = h.post("/batch", &body).await;
    let want = json!({"code": 400, "error": "Request missing required field",
        "events_with_missing_fields": {"event_type": [2]},
        "events_with_invalid_fields": {"time": [0, 4], "price": [0]},
        "events_with_invalid_id_lengths": {"user_id": [2], "device_id": [3]}});
    assert_eq!((status, got), (StatusCode::BAD_REQUEST, want));
}

#[tokio::test]
async fn open_mode_accepts_any_key() {
    let h = Harness::new("    eps_threshold: 0\n");
    let body = json!({"api_key": "whatever-key", "events": [good(0)]});
    assert_eq!(h.post("/2/httpapi", &body).await.0, StatusCode::OK);
    assert_eq!(h.published()[0].project, "whatever-key");
}

#[tokio::test]
async fn bus_failure_is_a_503_and_nothing_is_remembered() {
    let h = Harness::with_key();
    h.bus.refuse(Some(|| BusError::Unavailable("down".into())));
    let mut ev = good(0);
    ev["insert_id"] = json!("ins-1");
    let body = upload(vec![ev]);
    let req = Request::post("/2/httpapi").body(Body::from(body.to_string())).unwrap();
    let resp = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key(header::RETRY_AFTER));
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let got: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(got, json!({"code": 503, "error": "event bus unavailable"}));
    // The retry is published: the failed attempt did not mark the insert_id seen.
    h.bus.refuse(None);
    assert_eq!(h.post("/2/httpapi", &body).await.0, StatusCode::OK);
    assert_eq!(h.published().len(), 1);
}

#[tokio::test]
async fn insert_id_duplicates_are_acknowledged_but_not_republished() {
    let h = Harness::with_key();
    let ev = |insert: &str, device: &str| json!({"event_type": "e", "user_id": "user-00001", "device_id": device, "insert_id": insert});
    let first = upload(vec![ev("ins-1", "device-1"), ev("ins-1", "device-1"), ev("ins-2", "device-1")]);
    assert_eq!(h.post("/2/httpapi", &first).await, (StatusCode::OK, ok_body(3, &first)));
    assert_eq!(h.published().len(), 2, "the in-request repeat is dropped");
    // A resend (the SDK after a timeout) is acknowledged in full, published not at all.
    assert_eq!(h.post("/batch", &first).await, (StatusCode::OK, ok_body(3, &first)));
    assert_eq!(h.published().len(), 2);
    // The same insert_id on another device is another event (Amplitude's scope).
    let other = upload(vec![ev("ins-1", "device-2")]);
    assert_eq!(h.post("/2/httpapi", &other).await.0, StatusCode::OK);
    let ids: Vec<String> = h.published().into_iter().map(|e| e.id).collect();
    assert_eq!(ids, ["ins-1", "ins-2", "ins-1"]);
    // Another project is another scope too.
    let h2 = Harness::new("    dedup_window_secs: 60\n");
    let a = json!({"api_key": "key-a", "events": [ev("ins-9", "device-1")]});
    let b = json!({"api_key": "key-b", "events": [ev("ins-9", "device-1")]});
    for body in [&a, &b, &a] {
        assert_eq!(h2.post("/2/httpapi", body).await.0, StatusCode::OK);
    }
    assert_eq!(h2.published().len(), 2);
}

#[tokio::test]
async fn insert_ids_survive_a_restart_with_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let body = upload(vec![json!({"event_type": "e", "device_id": "device-1", "insert_id": "ins-restart"})]);
    let first = Harness::build(&format!("    api_keys: [\"{KEY}\"]\n"), Some(dir.path()));
    assert_eq!(first.post("/2/httpapi", &body).await, (StatusCode::OK, ok_body(1, &body)));
    assert_eq!(first.published().len(), 1);
    drop(first);
    // A fresh state on the same directory, as after a restart of an embedded-bus process.
    let second = Harness::build(&format!("    api_keys: [\"{KEY}\"]\n"), Some(dir.path()));
    assert_eq!(second.post("/2/httpapi", &body).await, (StatusCode::OK, ok_body(1, &body)));
    assert!(second.published().is_empty(), "acknowledged, not published again");
}

#[tokio::test]
async fn eps_throttle_answers_amplitudes_429() {
    let h = Harness::new(&format!("    api_keys: [\"{KEY}\"]\n    eps_threshold: 1\n"));
    let dev = |d: &str| json!({"event_type": "e", "device_id": d, "user_id": "user-00001"});
    // 31 events in the window: over 1/s averaged over 30 s, but this request is still accepted.
    let burst = upload((0..31).map(|_| dev("device-aaaa")).collect());
    assert_eq!(h.post("/2/httpapi", &burst).await.0, StatusCode::OK);
    let next = upload(vec![json!({"event_type": "e", "device_id": "device-bbbb"}), dev("device-aaaa")]);
    let (status, got) = h.post("/2/httpapi", &next).await;
    let want = json!({"code": 429, "error": "Too many requests for some devices and users", "eps_threshold": 1,
        "throttled_devices": {"device-aaaa": 2}, "throttled_users": {"user-00001": 2}, "throttled_events": [1]});
    assert_eq!((status, got), (StatusCode::TOO_MANY_REQUESTS, want));
    assert_eq!(h.published().len(), 31, "a throttled request publishes nothing");
    // 30 s later the window is clear.
    *h.clock.0.lock().unwrap() += Duration::seconds(30);
    assert_eq!(h.post("/2/httpapi", &next).await.0, StatusCode::OK);
}

#[tokio::test]
async fn identify_api_form_query_and_multipart() {
    let h = Harness::with_key();
    let ident = r#"[{"user_id":"user-00001","device_id":"device-0001","user_properties":{"$set":{"email":"a@b.co"},"plan":"pro"},"paying":"true"}]"#;
    let form: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("api_key", KEY)
        .append_pair("identification", ident)
        .finish();
    let (status, got) = h.send(Method::POST, "/identify", "application/x-www-form-urlencoded", form.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        got,
        json!({"code": 200, "events_ingested": 1, "payload_size_bytes": form.len(), "server_upload_time": NOW_MS})
    );

    let (status, got) = h.send(Method::GET, &format!("/identify?{form}"), "text/plain", "").await;
    assert_eq!((status, got["events_ingested"].clone()), (StatusCode::OK, json!(1)));

    let multipart = format!(
        "--b0undary\r\nContent-Disposition: form-data; name=\"api_key\"\r\n\r\n{KEY}\r\n\
         --b0undary\r\nContent-Disposition: form-data; name=\"identification\"\r\n\r\n{{\"device_id\":\"device-0002\"}}\r\n\
         --b0undary--\r\n"
    );
    let (status, _) = h.send(Method::POST, "/identify", "multipart/form-data; boundary=b0undary", multipart).await;
    assert_eq!(status, StatusCode::OK);

    let events = h.published();
    assert_eq!(events.len(), 3);
    let e = &events[0];
    assert_eq!((e.kind, e.name.as_str()), (Kind::Identify, "$identify"));
    assert_eq!(e.distinct_id.as_deref(), Some("user-00001"));
    assert_eq!(e.email.as_deref(), Some("a@b.co"));
    assert_eq!(e.user_properties.set["plan"], "pro");
    assert_eq!(e.context.extra["device_id"], "device-0001");
    assert_eq!(e.context.extra["paying"], "true");
    assert_eq!(events[2].distinct_id.as_deref(), Some("device-0002"));
}

#[tokio::test]
async fn identify_api_refusals() {
    let h = Harness::with_key();
    let enc = |pairs: &[(&str, &str)]| {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k, v);
        }
        s.finish()
    };
    let cases = [
        (
            enc(&[("identification", r#"{"user_id":"user-00001"}"#)]),
            json!({"code": 400, "error": "Request missing required field", "missing_field": "api_key"}),
        ),
        (enc(&[("api_key", KEY)]), json!({"code": 400, "error": "missing_event"})),
        (enc(&[("api_key", KEY), ("identification", "{oops")]), json!({"code": 400, "error": "missing_event"})),
        (
            enc(&[("api_key", "wrong-key"), ("identification", r#"{"user_id":"user-00001"}"#)]),
            json!({"code": 400, "error": "Invalid API key: wrong-key"}),
        ),
        (
            enc(&[("api_key", KEY), ("identification", r#"[{"user_id":"user-00001"},{"user_id":"abc"},{}]"#)]),
            json!({"code": 400, "error": "Request missing required field",
                "events_with_missing_fields": {"device_id": [2]},
                "events_with_invalid_id_lengths": {"user_id": [1]}}),
        ),
    ];
    for (form, want) in cases {
        let (status, got) = h.send(Method::POST, "/identify", "application/x-www-form-urlencoded", form.clone()).await;
        assert_eq!((status, got), (StatusCode::BAD_REQUEST, want), "{form}");
    }
    let (status, got) = h.send(Method::DELETE, "/identify", "text/plain", "").await;
    assert_eq!((status, got), (StatusCode::METHOD_NOT_ALLOWED, json!({"code": 405, "error": "method not allowed"})));
    assert!(h.published().is_empty());
}

#[tokio::test]
async fn normalization_into_the_envelope() {
    let h = Harness::with_key();
    let body = upload(vec![
        json!({
            "event_type": "Purchase", "user_id": "user-00001", "device_id": "C8F9E604-F01A-4BD9",
            "time": 1_396_381_378_123_i64, "insert_id": "5f0adeff-6668-4427-8d02-57d803a2b841",
            "event_properties": {"load_time": 0.8371, "source": "notification"},
            "user_properties": {"email": "x@example.com", "age": 25, "$set": {"age": 26}},
            "groups": {"team_id": "1"}, "app_version": "2.1.3", "platform": "iOS", "os_name": "Android",
            "os_version": "4.2.2", "device_brand": "Verizon", "device_manufacturer": "Apple",
            "device_model": "iPhone 9,1", "carrier": "Verizon", "country": "United States",
            "region": "California", "city": "San Francisco", "dma": "SF", "language": "English",
            "price": 4.99, "quantity": 3, "revenue": -1.99, "productId": "prod-1", "revenueType": "Refund",
            "currency": "USD", "location_lat": 37.77, "location_lng": -122.39, "ip": "127.0.0.1",
            "idfa": "AEBE52E7", "adid": "AEBE52E7", "android_id": "BCCE52E7", "event_id": 23,
            "session_id": 1_396_381_378_123_i64, "user_agent": "Mozilla/5.0", "library": "amplitude-python/1.3.0",
            "plan": {"branch": "main"}
        }),
        json!({"event_type": "$identify", "device_id": "device-0001", "user_properties": {
            "$set": {"name": "Ann"}, "$setOnce": {"first_seen": "2026-01-01"}, "$unset": {"old": "-"},
            "$add": {"logins": 1}, "$append": {"tags": "a"}, "$prepend": {"tags": "z"},
            "$preInsert": {"l": 1}, "$postInsert": {"l": 2}, "$remove": {"l": 3}, "$clearAll": "-"}}),
        json!({"event_type": "$groupidentify", "user_id": "user-00002", "groups": {"org": "acme"},
            "group_properties": {"$set": {"plan": "enterprise"}}}),
        json!({"event_type": "revenue_amount", "user_id": "user-00003", "ip": "$remote",
            "event_properties": {"$price": 2.5, "$quantity": 2, "$productId": "p-9", "$revenueType": "sale"}}),
    ]);
    assert_eq!(h.post("/2/httpapi", &body).await.0, StatusCode::OK);
    let ev = h.published();

    let p = &ev[0];
    assert_eq!((p.kind, p.name.as_str(), p.project.as_str()), (Kind::Track, "Purchase", KEY));
    assert_eq!(p.source_name, "amplitude");
    assert_eq!(p.id, "5f0adeff-6668-4427-8d02-57d803a2b841");
    assert_eq!(p.distinct_id.as_deref(), Some("user-00001"));
    assert_eq!(p.email.as_deref(), Some("x@example.com"));
    assert_eq!(p.timestamp.timestamp_millis(), 1_396_381_378_123);
    assert_eq!(p.received_at.timestamp_millis(), NOW_MS);
    assert_eq!(Value::Object(p.properties.clone()), json!({"load_time": 0.8371, "source": "notification"}));
    assert_eq!(p.user_properties.set["age"], 26, "an explicit $set wins over a plain key");
    let r = p.revenue.as_ref().unwrap();
    assert_eq!(
        (r.price, r.quantity, r.currency.as_deref(), r.product_id.as_deref(), r.revenue_type.as_deref()),
        (Some(4.99), Some(3), Some("USD"), Some("prod-1"), Some("Refund"))
    );
    assert!((r.amount.unwrap() - 14.97).abs() < 1e-9, "price × quantity wins over revenue");
    assert_eq!(p.context.ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(p.context.user_agent.as_deref(), Some("Mozilla/5.0"));
    let lib = p.context.library.as_ref().unwrap();
    assert_eq!((lib.name.as_str(), lib.version.as_deref()), ("amplitude-python", Some("1.3.0")));
    for (k, v) in [
        ("device_id", json!("C8F9E604-F01A-4BD9")),
        ("platform", json!("iOS")),
        ("city", json!("San Francisco")),
        ("location_lat", json!(37.77)),
        ("session_id", json!(1_396_381_378_123_i64)),
        ("event_id", json!(23)),
        ("groups", json!({"team_id": "1"})),
        ("plan", json!({"branch": "main"})),
    ] {
        assert_eq!(p.context.extra[k], v, "context.extra.{k}");
    }
    for moved in ["price", "user_id", "time", "insert_id", "ip", "library", "event_type"] {
        assert!(!p.context.extra.contains_key(moved), "{moved} is not duplicated into extra");
    }

    let i = &ev[1];
    assert_eq!((i.kind, i.distinct_id.as_deref()), (Kind::Identify, Some("device-0001")));
    assert_eq!(Value::Object(i.user_properties.set.clone()), json!({"name": "Ann"}));
    assert_eq!(Value::Object(i.user_properties.set_once.clone()), json!({"first_seen": "2026-01-01"}));
    assert_eq!(i.user_properties.unset, ["old"]);
    assert_eq!(
        Value::Object(i.user_properties.other.clone()),
        json!({"$add": {"logins": 1}, "$append": {"tags": "a"}, "$prepend": {"tags": "z"},
            "$preInsert": {"l": 1}, "$postInsert": {"l": 2}, "$remove": {"l": 3}, "$clearAll": "-"})
    );
    assert_eq!(i.timestamp.timestamp_millis(), NOW_MS, "no time: the upload time");
    uuid::Uuid::parse_str(&i.id).expect("no insert_id: a generated UUID");

    let g = &ev[2];
    assert_eq!(g.kind, Kind::Group);
    assert_eq!(g.context.extra["groups"], json!({"org": "acme"}));
    assert_eq!(g.context.extra["group_properties"], json!({"$set": {"plan": "enterprise"}}));

    let r = ev[3].revenue.as_ref().unwrap();
    assert_eq!((r.price, r.quantity, r.amount, r.product_id.as_deref()), (Some(2.5), Some(2), Some(5.0), Some("p-9")));
    assert_eq!(ev[3].context.ip, None, "$remote without a known peer stays unset");
}
