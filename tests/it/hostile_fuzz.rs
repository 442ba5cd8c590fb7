//! Fuzz-style property test over the whole HTTP router (every route, every
//! layer: request id, metrics, admission, the sources' decoders and
//! verifiers), in process over the in-memory bus.
//!
//! Inputs are either random requests (method, path, query, headers, bytes) or
//! mutations of a seed corpus of valid requests (PostHog JSON / batch / form /
//! gzip-js / lz64, Amplitude HTTP V2 / Batch / Identify, Stripe- and
//! Standard-Webhooks-signed deliveries) with bit flips, truncation,
//! insertion, deletion and re-encoding (gzip, base64, form, lz64). Every
//! request must be answered without a panic, with a 2xx, a 4xx or a 503 (the
//! bus is told to refuse some of the time); any other 5xx is a bug.
//!
//! Deterministic: a fixed ChaCha seed and no failure persistence; 256 cases
//! by default. A long local run:
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test --release --test it hostile_fuzz::
//! ```

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use base64::Engine;
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use sha2::Sha256;
use sluice::bus::memory::MemoryBus;
use sluice::bus::BusError;
use tower::ServiceExt;

const TOKEN: &str = "phc_fuzz_token";
const AMP_KEY: &str = "amp_fuzz_key";
const STRIPE_SECRET: &str = "whsec_fuzz_stripe";
const STD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The router's clock, and the timestamp the seed signatures carry.
const NOW: i64 = 1_700_000_000;

fn config() -> sluice::config::Config {
    let yaml = format!(
        r#"connectors:
  posthog:
    project_tokens: [{TOKEN}]
  amplitude:
    api_keys: [{AMP_KEY}]
  webhooks:
    - name: stripe
      scheme: stripe
      secrets: [{STRIPE_SECRET}]
    - name: std
      scheme: standard
      secrets: [{STD_SECRET}]
"#
    );
    sluice::config::Config::from_yaml(&yaml, "fuzz.yaml", &|_| None).expect("config")
}

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The bus refuses this request's publish (503 expected on success paths).
    bus_down: bool,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn b64(d: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(d)
}

fn gzip(d: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(d).expect("gzip");
    e.finish().expect("gzip")
}

fn form(data: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    s.append_pair("data", data);
    for (k, v) in extra {
        s.append_pair(k, v);
    }
    s.finish().into_bytes()
}

fn h(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// Valid requests, one per decoder path.
fn corpus() -> Vec<Req> {
    let event = format!(
        r#"{{"api_key":"{TOKEN}","event":"signup","distinct_id":"user-1","uuid":"0190d6a0-0000-7000-8000-000000000001","properties":{{"$set":{{"email":"ada@example.com"}},"plan":"pro"}},"timestamp":"2023-11-14T22:13:20Z"}}"#
    );
    let batch = format!(
        r#"{{"api_key":"{TOKEN}","batch":[{{"event":"$pageview","distinct_id":42,"properties":{{"$current_url":"https://e.com/"}}}},{{"event":"$identify","distinct_id":"u2","$set":{{"email":"b@e.com"}}}}],"sent_at":"2023-11-14T22:13:20Z"}}"#
    );
    let array = format!(
        r#"[{{"token":"{TOKEN}","event":"a","distinct_id":"u"}},{{"token":"{TOKEN}","event":"b","distinct_id":"u"}}]"#
    );
    let amp = format!(
        r#"{{"api_key":"{AMP_KEY}","events":[{{"event_type":"purchase","user_id":"user-12345","time":1700000000000,"insert_id":"ins-1","price":9.5,"quantity":2,"event_properties":{{"a":1}}}}],"options":{{"min_id_length":5}}}}"#
    );
    let identify = r#"{"user_id":"user-12345","user_properties":{"$set":{"email":"c@e.com"}}}"#;
    let stripe_body = r#"{"id":"evt_fuzz","object":"event","type":"customer.created","created":1700000000,"data":{"object":{"email":"d@e.com"}}}"#;
    let stripe_sig = format!(
        "t={NOW},v1={}",
        hex::encode(hmac(STRIPE_SECRET.as_bytes(), format!("{NOW}.{stripe_body}").as_bytes()))
    );
    let std_body = r#"{"type":"user.created","data":{"email":"e@e.com"}}"#;
    let std_key =
        base64::engine::general_purpose::STANDARD.decode(STD_SECRET.trim_start_matches("whsec_")).expect("secret");
    let std_sig = format!("v1,{}", b64(&hmac(&std_key, format!("msg_fuzz.{NOW}.{std_body}").as_bytes())));
    let json = || h("content-type", "application/json");
    let req = |path: &str, query: Option<&str>, headers: Vec<(String, String)>, body: Vec<u8>| Req {
        method: "POST",
        path: path.into(),
        query: query.map(str::to_string),
        headers,
        body,
        bus_down: false,
    };
    vec![
        req("/i/v0/e/", None, vec![json()], event.clone().into_bytes()),
        req("/batch/", None, vec![json()], batch.clone().into_bytes()),
        req("/e/", None, vec![json()], array.into_bytes()),
        req(
            "/e/",
            Some("compression=gzip-js&ip=1&_=1700000000000&ver=1.160.0"),
            vec![h("content-type", "text/plain")],
            gzip(event.as_bytes()),
        ),
        req("/batch/", None, vec![json(), h("content-encoding", "gzip")], gzip(batch.as_bytes())),
        req(
            "/e/",
            None,
            vec![h("content-type", "application/x-www-form-urlencoded")],
            form(&b64(event.as_bytes()), &[]),
        ),
        req(
            "/e/",
            None,
            vec![h("content-type", "application/x-www-form-urlencoded")],
            form(&lz_str::compress_to_base64(&batch), &[("compression", "lz64")]),
        ),
        Req {
            method: "GET",
            ..req(
                "/e/",
                Some(&format!(
                    "data={}",
                    b64(event.as_bytes()).replace('+', "%2B").replace('/', "%2F").replace('=', "%3D")
                )),
                vec![],
                vec![],
            )
        },
        Req {
            method: "OPTIONS",
            ..req(
                "/i/v0/e/",
                None,
                vec![h("origin", "https://app.example.com"), h("access-control-request-method", "POST")],
                vec![],
            )
        },
        req("/2/httpapi", None, vec![h("content-type", "application/json; charset=UTF-8")], amp.clone().into_bytes()),
        req("/batch", None, vec![json()], amp.into_bytes()),
        req(
            "/identify",
            None,
            vec![h("content-type", "application/x-www-form-urlencoded")],
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("api_key", AMP_KEY)
                .append_pair("identification", identify)
                .finish()
                .into_bytes(),
        ),
        req(
            "/webhooks/stripe",
            None,
            vec![json(), h("stripe-signature", &stripe_sig)],
            stripe_body.as_bytes().to_vec(),
        ),
        req(
            "/webhooks/std",
            None,
            vec![
                json(),
                h("webhook-id", "msg_fuzz"),
                h("webhook-timestamp", &NOW.to_string()),
                h("webhook-signature", &std_sig),
            ],
            std_body.as_bytes().to_vec(),
        ),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn mutate(body: &mut Vec<u8>, m: &Mutation) {
    let len = body.len().max(1);
    match m {
        Mutation::FlipBit(i, bit) => {
            if !body.is_empty() {
                let i = i % body.len();
                body[i] ^= 1 << (bit % 8);
            }
        }
        Mutation::Truncate(i) => body.truncate(i % len),
        Mutation::Insert(i, bytes) => {
            let i = i % (body.len() + 1);
            body.splice(i..i, bytes.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let i = i % len;
            let end = (i + n).min(body.len());
            if i < end {
                body.drain(i..end);
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Wrap {
    None,
    Gzip,
    Base64,
    Form,
    Lz64,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 1..16),
                proptest::sample::select(vec![
                    b"\0".to_vec(),
                    b"\"".to_vec(),
                    b"{".to_vec(),
                    b"[".to_vec(),
                    b"}".to_vec(),
                    b"\\u0000".to_vec(),
                    b"1e999".to_vec(),
                    b"\xff".to_vec(),
                    b",".to_vec(),
                    b"null".to_vec(),
                    b"%".to_vec(),
                    b"\\ud800".to_vec(),
                ]),
            ]
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..32).prop_map(|(i, n)| Mutation::Delete(i, n)),
    ]
}

const PATHS: &[&str] = &[
    "/e",
    "/e/",
    "/i/v0/e",
    "/i/v0/e/",
    "/capture",
    "/capture/",
    "/track/",
    "/engage/",
    "/batch",
    "/batch/",
    "/i/v1/analytics/events",
    "/2/httpapi",
    "/identify",
    "/webhooks/stripe",
    "/webhooks/std",
    "/webhooks/nope",
    "/webhooks/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/",
    "/nope",
];
const METHODS: &[&str] = &["POST", "POST", "POST", "GET", "OPTIONS", "PUT", "DELETE", "HEAD", "PATCH"];
const QUERIES: &[&str] = &[
    "compression=gzip-js",
    "compression=gzip",
    "compression=lz64",
    "compression=lz-string",
    "compression=base64",
    "compression=b64",
    "compression=br",
    "compression=",
    "ip=1&_=1700000000000&ver=1.0",
    "beacon=1",
    "data=",
    "data=%ZZ",
    "data=eyJ",
    "compression=gzip-js&beacon=1",
];
const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=UTF-8",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    "",
    "\u{7f}",
];
const HEADER_NAMES: &[&str] = &[
    "content-encoding",
    "stripe-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "origin",
    "x-request-id",
    "content-length",
    "transfer-encoding",
    "user-agent",
    "x-forwarded-for",
    "accept-encoding",
];

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,80}",
        Just(format!("t={NOW},v1={}", "0".repeat(64))),
        Just(format!("t={NOW},v1=zz,v0=00,v1=")),
        Just("t=,v1=".to_string()),
        Just(format!("t=99999999999999999999,v1={}", "a".repeat(64))),
        Just("v1,AAAA v2,BBBB v1,".to_string()),
        Just("v1,!!!notbase64".to_string()),
        Just(NOW.to_string()),
        Just("-1".to_string()),
        Just("gzip".to_string()),
        Just("gzip, deflate".to_string()),
        Just("chunked".to_string()),
    ]
}

fn random_request() -> impl Strategy<Value = Req> {
    (
        proptest::sample::select(METHODS),
        prop_oneof![3 => proptest::sample::select(PATHS).prop_map(str::to_string), 1 => "/[a-z0-9/_.%~-]{0,24}"],
        proptest::option::of(prop_oneof![
            proptest::sample::select(QUERIES).prop_map(str::to_string),
            "[a-z0-9=&%_.+-]{0,40}"
        ]),
        proptest::sample::select(CONTENT_TYPES),
        proptest::collection::vec((proptest::sample::select(HEADER_NAMES), header_value()), 0..4),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            "[ -~]{0,512}".prop_map(String::into_bytes),
            Just(b"\x1f\x8b\x08\x00\x00\x00\x00\x00".to_vec()),
        ],
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(method, path, query, ct, hs, body, bus_down)| {
            let mut headers: Vec<(String, String)> = hs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            if !ct.is_empty() {
                headers.push(h("content-type", ct));
            }
            Req { method, path, query, headers, body, bus_down }
        })
}

fn mutated_seed(seeds: Vec<Req>) -> impl Strategy<Value = Req> {
    (
        proptest::sample::select(seeds),
        proptest::collection::vec(mutation(), 0..4),
        proptest::sample::select(vec![
            Wrap::None,
            Wrap::None,
            Wrap::None,
            Wrap::Gzip,
            Wrap::Base64,
            Wrap::Form,
            Wrap::Lz64,
        ]),
        proptest::option::of((proptest::sample::select(HEADER_NAMES), header_value())),
        proptest::bool::weighted(0.15),
    )
        .prop_map(|(mut req, muts, wrap, header, bus_down)| {
            for m in &muts {
                mutate(&mut req.body, m);
            }
            req.body = match wrap {
                Wrap::None => req.body,
                Wrap::Gzip => gzip(&req.body),
                Wrap::Base64 => b64(&req.body).into_bytes(),
                Wrap::Form => form(&b64(&req.body), &[]),
                Wrap::Lz64 => form(
                    &lz_str::compress_to_base64(String::from_utf8_lossy(&req.body).as_ref()),
                    &[("compression", "lz64")],
                ),
            };
            if let Some((k, v)) = header {
                req.headers.retain(|(n, _)| n != k);
                req.headers.push((k.to_string(), v));
            }
            req.bus_down = bus_down;
            req
        })
}

fn build(r: &Req) -> Option<Request<Body>> {
    let uri = match &r.query {
        Some(q) => format!("{}?{q}", r.path),
        None => r.path.clone(),
    };
    let mut b = Request::builder().method(r.method).uri(uri);
    for (k, v) in &r.headers {
        if k == "content-length" || k == "transfer-encoding" {
            // Framing headers belong to the connection layer; the hostile
            // framing cases are in hostile_http.rs against the binary.
            continue;
        }
        b = b.header(k.as_str(), v.as_str());
    }
    // Requests the HTTP layer itself cannot represent (invalid URI or header)
    // never reach the router.
    b.body(Body::from(r.body.clone())).ok()
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
}

#[test]
fn the_router_answers_every_request_with_2xx_4xx_or_503_and_never_panics() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let bus = Arc::new(MemoryBus::new());
    let clock = chrono::DateTime::from_timestamp(NOW, 0).expect("time");
    let state = sluice::ingress::AppState::new(
        Arc::new(config()),
        bus.clone(),
        Arc::new(sluice::ingress::FixedClock(clock)),
        None,
        None,
    )
    .expect("state");
    let app = sluice::ingress::router(state);

    // The seeds themselves must be valid, or mutating them explores nothing.
    for seed in corpus() {
        let status =
            rt.block_on(app.clone().oneshot(build(&seed).expect("seed request"))).expect("infallible").status();
        assert!(status.is_success(), "seed {} {} {:?} answered {status}", seed.method, seed.path, seed.query);
    }

    let strategy = prop_oneof![1 => random_request(), 2 => mutated_seed(corpus())];
    let config = Config { cases: cases(), failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let result = runner.run(&strategy, |req| {
        let Some(http) = build(&req) else { return Ok(()) };
        bus.refuse(req.bus_down.then_some((|| BusError::Unavailable("fuzz: bus down".into())) as fn() -> BusError));
        let status = rt.block_on(app.clone().oneshot(http)).expect("infallible").status().as_u16();
        *seen.borrow_mut().entry(status).or_default() += 1;
        if !(200..300).contains(&status) && !(400..500).contains(&status) && status != 503 {
            return Err(TestCaseError::fail(format!("status {status}")));
        }
        if status == 503 && !req.bus_down && !req.path.contains("readyz") {
            return Err(TestCaseError::fail("503 while the bus was up"));
        }
        Ok(())
    });
    bus.refuse(None);
    let seen = seen.into_inner();
    eprintln!("FIGURES fuzz: cases={} statuses={seen:?}", cases());
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        seen.keys().any(|s| (200..300).contains(s)),
        "no case was accepted: the corpus is not reaching the decoders"
    );
    assert!(seen.keys().any(|s| (400..500).contains(s)), "no case was refused");
}
