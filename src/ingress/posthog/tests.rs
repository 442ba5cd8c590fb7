//! Table tests for v0 decoding: token, distinct id, name and uuid rules,
//! body shapes, time handling. Routes, encodings and statuses over HTTP are
//! in `tests/it/posthog_http.rs`.

use axum::http::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

use super::*;
use crate::event::Kind;

fn now() -> DateTime<Utc> {
    parse_time("2026-03-01T12:00:00Z").unwrap()
}

fn open() -> PosthogState {
    PosthogState::from_tokens([])
}

fn facts<'a>(path: &'a str, query: Option<&'a str>, headers: &'a HeaderMap) -> RequestFacts<'a> {
    RequestFacts { path, query, headers, peer: Some("192.0.2.7".parse().unwrap()) }
}

fn run(policy: &PosthogState, path: &str, body: &Value) -> Result<Vec<Event>, IngressError> {
    let h = HeaderMap::new();
    decode(policy, &facts(path, None, &h), body.to_string().as_bytes(), now())
}

fn ok(body: Value) -> Vec<Event> {
    run(&open(), "/e/", &body).expect("accepted")
}

/// The status and reason a refusal maps to.
fn refused(policy: &PosthogState, path: &str, body: Value) -> (u16, &'static str) {
    match run(policy, path, &body) {
        Ok(evs) => panic!("accepted {} events from {body}", evs.len()),
        Err(e) => (e.status().as_u16(), e.reason()),
    }
}

#[test]
fn body_shapes() {
    let one = ok(json!({"event": "a", "distinct_id": "u", "token": "t"}));
    assert_eq!(one.len(), 1);
    let arr = ok(
        json!([{"event": "a", "distinct_id": "u", "token": "t"}, {"event": "b", "distinct_id": "u", "$token": "t"}]),
    );
    assert_eq!(arr.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    let batch =
        ok(json!({"api_key": "t", "batch": [{"event": "a", "distinct_id": "u"}], "sent_at": "2026-03-01T12:00:00Z"}));
    assert_eq!(batch[0].project, "t");
    let batch = ok(json!({"token": "t2", "batch": [{"event": "a", "distinct_id": "u"}]}));
    assert_eq!(batch[0].project, "t2");
}

#[test]
fn token_rules() {
    let only_a = PosthogState::from_tokens(["phc_a".to_string()]);
    let ev = |extra: Value| {
        let mut e = json!({"event": "x", "distinct_id": "u"});
        e.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        e
    };
    // Every place a token can sit.
    for (place, body) in [
        ("token", ev(json!({"token": "phc_a"}))),
        ("$token", ev(json!({"$token": "phc_a"}))),
        ("api_key", ev(json!({"api_key": "phc_a"}))),
        ("properties.token", ev(json!({"properties": {"token": "phc_a"}}))),
        ("envelope api_key", json!({"api_key": "phc_a", "batch": [ev(json!({}))]})),
    ] {
        let evs = run(&only_a, "/e", &body).unwrap_or_else(|e| panic!("{place}: {e}"));
        assert_eq!(evs[0].project, "phc_a", "{place}");
        assert!(!evs[0].properties.contains_key("token"), "{place}: token leaked into properties");
    }
    // The envelope wins over what events say.
    let evs =
        run(&only_a, "/batch", &json!({"api_key": "phc_a", "batch": [ev(json!({"token": "phc_other"}))]})).unwrap();
    assert_eq!(evs[0].project, "phc_a");
    // Surrounding whitespace is trimmed, as PostHog does.
    assert_eq!(run(&only_a, "/e", &ev(json!({"token": " phc_a\n"}))).unwrap()[0].project, "phc_a");
    // One token spread over some events of an array is fine.
    assert_eq!(run(&only_a, "/e", &json!([ev(json!({"token": "phc_a"})), ev(json!({}))])).unwrap().len(), 2);

    for (body, want) in [
        (ev(json!({})), (401, "missing_token")),
        (json!({"batch": [ev(json!({"token": "phc_a"}))]}), (401, "missing_token")),
        (json!({"api_key": 5, "batch": [ev(json!({}))]}), (401, "invalid_token")),
        (ev(json!({"token": ""})), (401, "missing_token")),
        (json!([ev(json!({"token": "phc_a"})), ev(json!({"token": "phc_b"}))]), (401, "token_mismatch")),
        (ev(json!({"token": "phx_personal"})), (401, "personal_api_key")),
        (ev(json!({"token": "phc_b"})), (401, "invalid_token")),
        (ev(json!({"token": "x".repeat(65)})), (401, "invalid_token")),
        (ev(json!({"token": "phc_ä"})), (401, "invalid_token")),
        (ev(json!({"token": 42})), (401, "invalid_token")),
    ] {
        assert_eq!(refused(&only_a, "/e", body.clone()), want, "{body}");
    }
    // Open mode takes any well-formed token but still refuses personal keys.
    assert!(run(&open(), "/e", &ev(json!({"token": "anything"}))).is_ok());
    assert_eq!(refused(&open(), "/e", ev(json!({"token": "phx_1"}))), (401, "personal_api_key"));
}

#[test]
fn distinct_id_and_name_rules() {
    let base = |extra: Value| {
        let mut e = json!({"event": "x", "token": "t"});
        e.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        e
    };
    let id = |extra: Value| ok(base(extra))[0].distinct_id.clone().unwrap();
    assert_eq!(id(json!({"distinct_id": "a"})), "a");
    assert_eq!(id(json!({"$distinct_id": "b"})), "b");
    assert_eq!(id(json!({"properties": {"distinct_id": "c"}})), "c");
    assert_eq!(id(json!({"distinct_id": 42})), "42");
    assert_eq!(id(json!({"distinct_id": "d", "properties": {"distinct_id": "e"}})), "d");
    assert_eq!(id(json!({"distinct_id": "é".repeat(300)})).chars().count(), 200);

    for body in [
        base(json!({})),
        base(json!({"distinct_id": ""})),
        base(json!({"distinct_id": null})),
        base(json!({"properties": {"distinct_id": ""}})),
    ] {
        assert_eq!(refused(&open(), "/e", body.clone()), (400, "missing_distinct_id"), "{body}");
    }
    assert_eq!(
        refused(&open(), "/e", json!({"event": "", "distinct_id": "u", "token": "t"})),
        (400, "missing_event_name")
    );
    assert_eq!(refused(&open(), "/e", json!({"distinct_id": "u", "token": "t"})), (400, "missing_event_name"));
    assert_eq!(refused(&open(), "/e", json!({"event": 3, "distinct_id": "u", "token": "t"})), (400, "invalid_payload"));
    assert_eq!(
        refused(&open(), "/e", json!({"event": "x", "distinct_id": "u", "token": "t", "properties": [1]})),
        (400, "invalid_payload")
    );
    assert_eq!(refused(&open(), "/e", json!([])), (400, "empty_batch"));
    assert_eq!(refused(&open(), "/e", json!({"api_key": "t", "batch": []})), (400, "empty_batch"));
    assert_eq!(refused(&open(), "/e", json!("just a string")), (400, "invalid_payload"));
    assert_eq!(refused(&open(), "/e", json!([1, 2])), (400, "invalid_payload"));
}

#[test]
fn engage_without_a_name_is_an_identify() {
    let body = json!({"$token": "t", "$distinct_id": "u1", "$set": {"email": "a@b.co", "name": "A"}});
    let evs = run(&open(), "/engage/", &body).unwrap();
    assert_eq!(evs[0].name, "$identify");
    assert_eq!(evs[0].kind, Kind::Identify);
    assert_eq!(evs[0].email.as_deref(), Some("a@b.co"));
    assert_eq!(evs[0].user_properties.set.get("name"), Some(&json!("A")));
    // Elsewhere a nameless event is refused.
    assert_eq!(refused(&open(), "/capture", body), (400, "missing_event_name"));
}

#[test]
fn uuid_is_kept_or_generated() {
    let evs = ok(json!([
        {"event": "a", "distinct_id": "u", "token": "t", "uuid": "0190A5B2-1C3D-7E4F-8A9B-0C1D2E3F4A5B"},
        {"event": "b", "distinct_id": "u", "token": "t"},
        {"event": "c", "distinct_id": "u", "token": "t", "uuid": ""},
        {"event": "d", "distinct_id": "u", "token": "t", "uuid": "0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5c"},
        {"event": "e", "distinct_id": "u", "token": "t", "uuid": " 0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5d "},
        {"event": "f", "distinct_id": "u", "token": "t", "uuid": "0190a5b21c3d7e4f8a9b0c1d2e3f4a5e"},
        {"event": "g", "distinct_id": "u", "token": "t", "uuid": "urn:uuid:0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5f"},
        // 36 characters, but the simple form padded with spaces.
        {"event": "h", "distinct_id": "u", "token": "t", "uuid": "  0190a5b21c3d7e4f8a9b0c1d2e3f4a60  "}
    ]));
    // Every accepted form ends in the canonical one.
    assert_eq!(evs[0].id, "0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b");
    assert_eq!(evs[3].id, "0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5c");
    assert_eq!(evs[4].id, "0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5d");
    assert_eq!(evs[5].id, "0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5e");
    assert_eq!(evs[6].id, "0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a5f");
    assert_eq!(evs[7].id, "0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f4a60");
    for e in &evs[1..3] {
        assert_eq!(uuid::Uuid::parse_str(&e.id).unwrap().get_version_num(), 7);
    }
    assert_eq!(
        refused(&open(), "/e", json!({"event": "a", "distinct_id": "u", "token": "t", "uuid": "nope"})),
        (400, "invalid_uuid")
    );
}

#[test]
fn performance_events_are_dropped_silently() {
    let evs = ok(json!([
        {"event": "$performance_event", "distinct_id": "u", "token": "t"},
        {"event": "kept", "distinct_id": "u", "token": "t"}
    ]));
    assert_eq!(evs.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["kept"]);
    assert!(ok(json!({"event": "$performance_event", "distinct_id": "u", "token": "t"})).is_empty());
}

#[test]
fn one_event_over_a_megabyte_is_413() {
    let big = "x".repeat(EVENT_SIZE_LIMIT);
    let (status, reason) =
        refused(&open(), "/e", json!({"event": "a", "distinct_id": "u", "token": "t", "properties": {"big": big}}));
    assert_eq!((status, reason), (413, "too_large"));
    // Just under the limit passes.
    let fits = "x".repeat(EVENT_SIZE_LIMIT - 100);
    assert_eq!(ok(json!({"event": "a", "distinct_id": "u", "token": "t", "properties": {"b": fits}})).len(), 1);
}

#[test]
fn sent_at_corrects_clock_skew() {
    // The client's clock runs 10 minutes fast.
    let body = json!({"api_key": "t", "sentAt": "2026-03-01T12:10:00Z", "batch": [
        {"event": "a", "distinct_id": "u", "timestamp": "2026-03-01T12:05:00Z"},
        {"event": "b", "distinct_id": "u", "timestamp": "2026-03-01T12:05:00Z", "properties": {"$ignore_sent_at": true}},
        {"event": "c", "distinct_id": "u", "offset": 2000},
        {"event": "d", "distinct_id": "u"}
    ]});
    let evs = ok(body);
    assert_eq!(evs[0].timestamp, parse_time("2026-03-01T11:55:00Z").unwrap());
    assert_eq!(evs[1].timestamp, parse_time("2026-03-01T12:05:00Z").unwrap());
    assert_eq!(evs[2].timestamp, parse_time("2026-03-01T11:59:58Z").unwrap());
    assert_eq!(evs[3].timestamp, now());
    assert!(evs.iter().all(|e| e.received_at == now()));

    // posthog-js sends its send time as `_` (milliseconds) in the query.
    let h = HeaderMap::new();
    let sent_ms = parse_time("2026-03-01T12:10:00Z").unwrap().timestamp_millis().to_string();
    let q = format!("_={sent_ms}&ip=1");
    let body = json!([{"event": "a", "distinct_id": "u", "token": "t", "timestamp": "2026-03-01T12:05:00Z"}]);
    let evs = decode(&open(), &facts("/e/", Some(&q), &h), body.to_string().as_bytes(), now()).unwrap();
    assert_eq!(evs[0].timestamp, parse_time("2026-03-01T11:55:00Z").unwrap());
    // Seconds (old SDKs) are ignored rather than misread.
    let q = "_=1772366400";
    let evs = decode(&open(), &facts("/e/", Some(q), &h), body.to_string().as_bytes(), now()).unwrap();
    assert_eq!(evs[0].timestamp, parse_time("2026-03-01T12:05:00Z").unwrap());
}

#[test]
fn request_context() {
    let mut h = HeaderMap::new();
    h.insert("user-agent", HeaderValue::from_static("Mozilla/5.0 test"));
    let body = json!({"event": "$pageview", "distinct_id": "u", "token": "t", "properties": {"$lib": "web", "$lib_version": "1.2.3"}});
    let evs = decode(&open(), &facts("/i/v0/e/", Some("ver=9.9.9"), &h), body.to_string().as_bytes(), now()).unwrap();
    let e = &evs[0];
    assert_eq!(e.kind, Kind::Page);
    assert_eq!(e.context.ip.as_deref(), Some("192.0.2.7"));
    assert_eq!(e.context.user_agent.as_deref(), Some("Mozilla/5.0 test"));
    assert_eq!(e.context.library, Some(Library { name: "web".into(), version: Some("1.2.3".into()) }));
    assert!(!e.properties.contains_key("$lib"));

    // A proxy's X-Forwarded-For names the client; `ip=0` asks for none.
    h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9, 10.0.0.1"));
    let evs = decode(&open(), &facts("/e", None, &h), body.to_string().as_bytes(), now()).unwrap();
    assert_eq!(evs[0].context.ip.as_deref(), Some("203.0.113.9"));
    let evs = decode(&open(), &facts("/e", Some("ip=0"), &h), body.to_string().as_bytes(), now()).unwrap();
    assert_eq!(evs[0].context.ip, None);
}

#[test]
fn form_without_data_and_empty_bodies_are_400() {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/x-www-form-urlencoded"));
    let f = facts("/e", None, &h);
    for body in [&b"compression=lz64"[..], b"not a form", b""] {
        let err = decode(&open(), &f, body, now()).unwrap_err();
        assert_eq!(err.status().as_u16(), 400, "{:?}: {err}", String::from_utf8_lossy(body));
    }
    let err = decode(&open(), &facts("/e", None, &HeaderMap::new()), b"", now()).unwrap_err();
    assert_eq!(err.reason(), "empty_payload");
}

#[test]
fn invalid_compressed_payloads_are_400_and_bombs_413() {
    let h = HeaderMap::new();
    let err = decode(&open(), &facts("/e", Some("compression=gzip-js"), &h), b"not gzip", now()).unwrap_err();
    assert_eq!((err.status().as_u16(), err.reason()), (400, "invalid_gzip"));
    let err = decode(&open(), &facts("/e", Some("compression=lz64"), &h), b"@@@@", now()).unwrap_err();
    assert_eq!((err.status().as_u16(), err.reason()), (400, "invalid_lz64"));
}

fn run_text(text: &str) -> Result<Vec<Event>, IngressError> {
    let h = HeaderMap::new();
    decode(&open(), &facts("/e/", None, &h), text.as_bytes(), now())
}

/// Properties travel as the client's JSON text, yet whatever parsing them
/// into values would refuse is still refused, and the rest arrives intact.
#[test]
fn raw_properties_are_checked_like_parsed_ones() {
    let event = |props: &str| format!(r#"{{"api_key":"phc_t","event":"e","distinct_id":"u","properties":{props}}}"#);
    for bad in [
        r#"{"s":"\ud800"}"#,
        r#"{"s":"x\uDC00y"}"#,
        r#"{"n":1e400}"#,
        r#"{"n":-2.5E+999}"#,
        &format!(r#"{{"n":{}}}"#, "9".repeat(400)),
        &format!(r#"{{"deep":{}{}}}"#, "[".repeat(200), "]".repeat(200)),
    ] {
        match run_text(&event(bad)) {
            Err(e) => assert_eq!((e.status().as_u16(), e.reason()), (400, "invalid_payload"), "{bad}"),
            Ok(evs) => panic!("accepted {bad}: {:?}", evs[0].properties),
        }
    }
    let good = r#"{"emoji":"\ud83d\ude00","n":1e5,"big":18446744073709551616,"s":"a\"b\\c\u00e9","deep":[[[{"k":[]}]]],"dup":1,"dup":2,"nul":null}"#;
    let evs = run_text(&event(good)).expect("accepted");
    let want: Value = serde_json::from_str(good).unwrap();
    assert_eq!(Value::Object(evs[0].properties.clone()), want);
    assert_eq!(evs[0].properties["emoji"], "😀");
    assert_eq!(evs[0].properties["dup"], 2);

    assert!(!needs_strict_check(event(r#"{"a":"[[[[ 1e9","b":1.5,"c":[1,2],"d":"\n\"é"}"#).as_bytes()));
    assert!(needs_strict_check(br#"{"a":1e9}"#));
    assert!(needs_strict_check(br#"{"a":"\uD83D"}"#));
}

#[test]
fn properties_that_are_not_an_object_are_refused() {
    let event = |props: &str| format!(r#"{{"api_key":"phc_t","event":"e","distinct_id":"u","properties":{props}}}"#);
    for bad in [r#""text""#, "[1]", "3", "true"] {
        match run_text(&event(bad)) {
            Err(e) => assert_eq!(e.reason(), "invalid_payload", "{bad}"),
            Ok(_) => panic!("accepted properties {bad}"),
        }
    }
    assert!(run_text(&event("null")).expect("null properties").first().is_some_and(|e| e.properties.is_empty()));
    let no_props = r#"{"api_key":"phc_t","event":"e","distinct_id":"u"}"#;
    assert_eq!(run_text(no_props).expect("no properties").len(), 1);
}

/// The per-event limit counts the event as compact JSON: exactly the limit
/// passes, one byte more is 413, and whitespace the client adds is not
/// counted.
#[test]
fn the_event_limit_counts_compact_json() {
    let with_value = |len: usize, gap: &str| {
        format!(
            r#"{{"api_key":"phc_t",{gap}"event":"e",{gap}"distinct_id":"u",{gap}"properties":{{"b":"{}"}}}}"#,
            "x".repeat(len)
        )
    };
    let overhead = with_value(0, "").len();
    let exact = EVENT_SIZE_LIMIT - overhead;
    assert_eq!(with_value(exact, "").len(), EVENT_SIZE_LIMIT);
    assert_eq!(run_text(&with_value(exact, "")).expect("exactly the limit").len(), 1);
    let err = run_text(&with_value(exact + 1, "")).unwrap_err();
    assert_eq!((err.status().as_u16(), err.reason()), (413, "too_large"));
    let spaced = with_value(exact, "\n    ");
    assert!(spaced.len() > EVENT_SIZE_LIMIT);
    assert_eq!(run_text(&spaced).expect("whitespace is not counted").len(), 1);
}

/// The success answer is written as a constant: the same status, content
/// type and bytes as the JSON value PostHog's capture answers with.
#[tokio::test]
async fn the_success_answer_is_what_serializing_the_json_gives() {
    let constant = super::ok(false);
    let serialized = axum::Json(json!({"status": 1})).into_response();
    assert_eq!(constant.status(), serialized.status());
    assert_eq!(constant.headers().get("content-type"), serialized.headers().get("content-type"));
    let bytes = |r: Response| axum::body::to_bytes(r.into_body(), 64);
    assert_eq!(bytes(constant).await.unwrap(), bytes(serialized).await.unwrap());
    assert_eq!(super::ok(true).status(), StatusCode::NO_CONTENT);
}

/// Wherever the one-pass reader answers for a whole body, the serde path
/// gives the same events and envelope fields; where it does not, the serde
/// path alone decides.
#[test]
fn body_reader_agrees_with_the_serde_path() {
    let ev = r#"{"event":"e","distinct_id":"u","properties":{"a":1,"$set":{"x":"y"}}}"#;
    let bodies = [
        format!(r#"{{"api_key":"phc_a","batch":[{ev},{ev}],"sent_at":"2026-01-02T03:04:05Z"}}"#),
        format!(r#"{{"api_key":null,"token":"phc_t","batch":[{ev}],"sentAt":"2026-01-02T03:04:05.120Z"}}"#),
        format!(r#"{{"token":null,"batch":[{ev}],"sent_at":null,"sentAt":"2026-01-02T03:04:05Z"}}"#),
        format!(r#"{{"batch":[{ev}],"api_key":7,"sent_at":5,"historical_migration":true}}"#),
        format!(r#"{{"batch":[{ev}],"historical_migration":"true","other":{{"k":[1,2]}}}}"#),
        r#"{"batch":[]}"#.to_string(),
        format!(r#" [ {ev} , {ev} ] "#),
        ev.to_string(),
        r#"{"event":"e","api_key":"phc_x","properties":null}"#.to_string(),
        r#"{"event":"e","properties":[1],"properties":{"b":2}}"#.to_string(),
        format!(r#"{{"api_key":"a","api_key":"b","batch":[{ev}]}}"#),
        format!(r#"{{"batch":[{ev}],"batch":[{ev}]}}"#),
        r#"{"batch":null,"event":"e"}"#.to_string(),
        format!(r#"{{"batch":[{ev}],"sent_at":1e3}}"#),
        format!(r#"{{"batch":[{ev}]}} tail"#),
        format!(r#"[{ev},]"#),
        r#"{"event":"\ud83d\ude00"}"#.to_string(),
    ];
    let mut answered = 0;
    for text in &bodies {
        let serde = parse_body_serde(text).map(|p| format!("{p:?}")).map_err(|e| format!("{e:?}"));
        if let Some(fast) = scan_body(text) {
            assert_eq!(Ok(format!("{fast:?}")), serde, "{text}");
            answered += 1;
        }
        let whole = parse_body(text).map(|p| format!("{p:?}")).map_err(|e| format!("{e:?}"));
        assert_eq!(whole, serde, "{text}");
    }
    assert!(answered >= 9, "the reader answered {answered} of {}", bodies.len());
}

/// The CORS middleware answers what tower-http's `CorsLayer` answers when it
/// mirrors the request with credentials and a one-hour max age (how Sluice
/// configured it before): same status, headers and body for preflights,
/// plain and credential-less requests, with and without the asking headers.
#[tokio::test]
async fn cors_middleware_answers_like_the_mirroring_cors_layer() {
    use std::time::Duration;

    use axum::body::{Body, Bytes};
    use axum::http::{header, Method, Request};
    use tower::ServiceExt;
    use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

    async fn handler() -> Response {
        ([(header::VARY, "accept-encoding"), (header::CONTENT_TYPE, "application/json")], "{\"status\":1}")
            .into_response()
    }
    let ours = Router::new().route("/e/", get(handler).post(handler)).layer(axum::middleware::from_fn(cors));
    let reference = Router::new().route("/e/", get(handler).post(handler)).layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::mirror_request())
            .allow_credentials(true)
            .allow_methods(AllowMethods::mirror_request())
            .allow_headers(AllowHeaders::mirror_request())
            .max_age(Duration::from_secs(3600)),
    );
    async fn answer(router: &Router, method: &Method, asking: &[(&str, &str)]) -> (u16, Vec<(String, String)>, Bytes) {
        let mut req = Request::builder().method(method).uri("/e/");
        for (k, v) in asking {
            req = req.header(*k, *v);
        }
        let resp = router.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let mut headers: Vec<(String, String)> =
            resp.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string())).collect();
        headers.sort_by(|a, b| a.0.cmp(&b.0)); // stable: one name's values keep their order
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        (status, headers, body)
    }
    let origin = ("origin", "https://shop.example.com");
    let method = ("access-control-request-method", "POST");
    let asked_headers = ("access-control-request-headers", "content-type, x-posthog-token");
    let cases: &[(Method, &[(&str, &str)])] = &[
        (Method::OPTIONS, &[origin, method, asked_headers]),
        (Method::OPTIONS, &[origin, method]),
        (Method::OPTIONS, &[]),
        (Method::POST, &[origin]),
        (Method::POST, &[]),
        (Method::GET, &[origin, method]),
    ];
    for (m, asking) in cases {
        let got = answer(&ours, m, asking).await;
        assert_eq!(got, answer(&reference, m, asking).await, "{m} {asking:?}");
        assert!(got.1.iter().any(|(k, v)| k == "access-control-allow-credentials" && v == "true"), "{m} {asking:?}");
    }
}
