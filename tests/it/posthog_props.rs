//! Properties of the PostHog decoder, over generated input:
//! - any event that serializes, put on the wire in any encoding and body
//!   shape, decodes to the same envelope as its plain JSON, and that
//!   envelope carries exactly what was generated;
//! - arbitrary bytes, on any route with any encoding hint, never panic
//!   the decoder (v0 or v1): they decode or are refused.

use crate::posthog_wire as wire;

use axum::http::{HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use sluice::ingress::posthog::{self, v1, PosthogState, RequestFacts};
use wire::{encode, Wire};

const TOKEN: &str = "phc_prop";

/// Fixed seed: the same cases on every run, so a failure reproduces and CI
/// never flakes; nothing written beside the sources.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_c0ffee),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().with_timezone(&Utc)
}

/// Keys the decoder lifts out of `properties` into envelope fields.
const LIFTED: [&str; 10] = [
    "token",
    "distinct_id",
    "$set",
    "$set_once",
    "$unset",
    "$anon_distinct_id",
    "$lib",
    "$lib_version",
    "$ip",
    "$ignore_sent_at",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        // Unicode, plus the characters encodings like to mangle.
        "[a-zA-Z0-9 +/=%&?é✓🦀\\\\\"\\n]{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn properties() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("\\$?[a-z_]{1,10}", json_value(), 0..6)
        .prop_map(|m| m.into_iter().filter(|(k, _)| !LIFTED.contains(&k.as_str())).collect())
}

#[derive(Debug, Clone)]
struct Generated {
    name: String,
    distinct_id: String,
    uuid: uuid::Uuid,
    timestamp: DateTime<Utc>,
    properties: Map<String, Value>,
    set: Map<String, Value>,
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        "[a-zA-Z$][a-zA-Z0-9 _$.:-]{0,30}",
        "[a-zA-Z0-9@._+ éü-]{1,60}",
        any::<u128>(),
        // Up to ~10 days back, millisecond precision (what SDKs send).
        0i64..864_000_000,
        properties(),
        prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..4),
    )
        .prop_map(|(name, distinct_id, uuid, back_ms, properties, set)| Generated {
            name,
            distinct_id,
            uuid: uuid::Uuid::from_u128(uuid),
            timestamp: now() - chrono::Duration::milliseconds(back_ms),
            properties,
            set: set.into_iter().collect(),
        })
        .prop_filter("PostHog drops performance events", |g| g.name != "$performance_event")
}

fn wire_event(g: &Generated, with_token: bool) -> Value {
    let mut props = g.properties.clone();
    if with_token {
        props.insert("token".into(), json!(TOKEN));
    }
    json!({
        "event": g.name,
        "distinct_id": g.distinct_id,
        "uuid": g.uuid.to_string(),
        "timestamp": g.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "$set": g.set,
        "properties": props,
    })
}

fn decode(path: &str, enc: &wire::Encoded) -> Result<Vec<sluice::event::Event>, sluice::ingress::IngressError> {
    let headers = enc.header_map();
    let query = (!enc.query.is_empty()).then_some(enc.query.as_str());
    let facts = RequestFacts { path, query, headers: &headers, peer: None };
    posthog::decode(&PosthogState::from_tokens([TOKEN.to_string()]), &facts, &enc.body, now())
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn every_encoding_and_shape_decodes_to_the_same_envelope(g in generated(), second in generated()) {
        let bodies = [
            ("/e/", wire_event(&g, true)),
            ("/i/v0/e/", json!([wire_event(&g, true), wire_event(&second, true)])),
            ("/batch/", json!({"api_key": TOKEN, "batch": [wire_event(&g, false), wire_event(&second, false)]})),
        ];
        for (path, body) in bodies {
            let plain = body.to_string().into_bytes();
            let expected = decode(path, &encode(&plain, Wire::Json)).expect("plain JSON decodes");
            let e = &expected[0];
            prop_assert_eq!(&e.name, &g.name);
            prop_assert_eq!(e.distinct_id.as_deref(), Some(g.distinct_id.as_str()));
            prop_assert_eq!(&e.id, &g.uuid.to_string());
            prop_assert_eq!(&e.project, TOKEN);
            prop_assert_eq!(e.timestamp, g.timestamp);
            prop_assert_eq!(&e.properties, &g.properties);
            prop_assert_eq!(&e.user_properties.set, &g.set);
            prop_assert_eq!(e.kind, posthog::kind_of(&g.name));
            for w in Wire::ALL {
                let got = decode(path, &encode(&plain, w));
                prop_assert!(got.is_ok(), "{:?} on {}: {:?}", w, path, got.err());
                prop_assert_eq!(got.unwrap(), expected.clone(), "{:?} on {}", w, path);
            }
        }
    }
}

/// Routes and hints the garbage is thrown at.
fn v0_contexts() -> Vec<(&'static str, Option<&'static str>, Option<&'static str>)> {
    let mut out = Vec::new();
    for path in ["/e/", "/engage", "/batch"] {
        for query in [None, Some("compression=gzip-js"), Some("compression=lz64"), Some("compression=base64")] {
            for ct in [None, Some("application/x-www-form-urlencoded"), Some("text/plain")] {
                out.push((path, query, ct));
            }
        }
    }
    out
}

fn v1_headers(encoding: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("authorization", "Bearer phc_prop"),
        ("content-type", "application/json"),
        ("user-agent", "posthog-python/7.91.1"),
        ("posthog-sdk-info", "posthog-python/7.91.1"),
        ("posthog-attempt", "1"),
        ("posthog-request-id", "6d1f3c2a-9b8e-4c7d-a6f5-e4d3c2b1a098"),
        ("posthog-request-timestamp", "2026-03-01T12:00:00Z"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    if let Some(e) = encoding {
        h.insert("content-encoding", HeaderValue::from_str(e).unwrap());
    }
    h
}

fn throw_at_everything(bytes: &[u8]) {
    let policy = PosthogState::from_tokens([]);
    for (path, query, ct) in v0_contexts() {
        let mut headers = HeaderMap::new();
        if let Some(ct) = ct {
            headers.insert("content-type", HeaderValue::from_static(ct));
        }
        let facts = RequestFacts { path, query, headers: &headers, peer: None };
        let _ = posthog::decode(&policy, &facts, bytes, now());
    }
    for encoding in [None, Some("gzip"), Some("deflate"), Some("zstd"), Some("br")] {
        let headers = v1_headers(encoding);
        let facts = RequestFacts { path: v1::PATH, query: None, headers: &headers, peer: None };
        let _ = v1::decode(&policy, &facts, bytes, now());
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        throw_at_everything(&bytes);
    }

    /// Garbage that gets past the first checks: base64-alphabet text (LZ-string
    /// and base64 paths), and bytes behind each compression's magic number.
    #[test]
    fn plausible_garbage_never_panics(
        text in "[A-Za-z0-9+/= ]{0,400}",
        tail in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        throw_at_everything(text.as_bytes());
        for magic in [&[0x1f, 0x8b, 0x08][..], &[0x28, 0xb5, 0x2f, 0xfd], &[0x78, 0x9c], b"data=", b"[{\"event\":"] {
            let mut b = magic.to_vec();
            b.extend_from_slice(&tail);
            throw_at_everything(&b);
        }
    }

    /// Valid JSON of arbitrary shape must be answered, not crash.
    #[test]
    fn arbitrary_json_never_panics(v in json_value()) {
        let text = v.to_string();
        throw_at_everything(text.as_bytes());
        throw_at_everything(json!({"api_key": TOKEN, "batch": [v.clone()]}).to_string().as_bytes());
        throw_at_everything(json!({"created_at": "2026-03-01T12:00:00Z", "batch": [v]}).to_string().as_bytes());
    }
}
