//! Decode + normalize a 10-event PostHog batch, per wire encoding, without
//! HTTP: the CPU cost the ingress pays per request before publishing.
//! Reported as events per second.
//!
//! Run: `cargo bench --bench posthog`.

#[path = "../tests/it/posthog_wire.rs"]
mod wire;

use axum::http::{HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Value};
use sluice::ingress::posthog::{self, v1, PosthogState, RequestFacts};
use wire::{encode, Wire};

const TOKEN: &str = "phc_bench_token";
const EVENTS: usize = 10;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().with_timezone(&Utc)
}

/// A page view the size posthog-js sends (a couple of dozen properties).
fn event(i: usize) -> Value {
    json!({
        "event": if i % 3 == 0 { "$pageview" } else { "product viewed" },
        "uuid": uuid::Uuid::from_u128(0x0190_a5b2_1c3d_7e4f_8a9b_0c1d_2e3f_0000 + i as u128).to_string(),
        "distinct_id": format!("user-{}", i % 4),
        "timestamp": "2026-03-01T11:59:58.123Z",
        "$set": {"email": format!("user{}@example.com", i % 4), "plan": "pro"},
        "properties": {
            "$current_url": format!("https://shop.example.com/products/{i}?utm_source=newsletter"),
            "$host": "shop.example.com",
            "$pathname": format!("/products/{i}"),
            "$browser": "Chrome",
            "$browser_version": 131,
            "$os": "Mac OS X",
            "$os_version": "14.6.1",
            "$device_type": "Desktop",
            "$screen_height": 1117,
            "$screen_width": 1728,
            "$viewport_height": 992,
            "$viewport_width": 1728,
            "$lib": "web",
            "$lib_version": "1.200.0",
            "$insert_id": format!("ins{i:08}"),
            "$time": 1772366398.123,
            "$session_id": "01955f2a-7b1c-7c3e-9d4f-5a6b7c8d9e0f",
            "$window_id": "01955f2a-7b1c-7c3e-9d4f-5a6b7c8d9e10",
            "$referrer": "https://www.google.com/",
            "$referring_domain": "www.google.com",
            "product_id": format!("sku-{i}"),
            "price": 19.99,
            "categories": ["shoes", "sale"],
            "$anon_distinct_id": "01955f2a-0000-7000-8000-000000000001",
        }
    })
}

fn v0(c: &mut Criterion) {
    let batch = json!({"api_key": TOKEN, "batch": (0..EVENTS).map(event).collect::<Vec<_>>(), "sent_at": "2026-03-01T12:00:00Z"});
    let json = batch.to_string().into_bytes();
    let policy = PosthogState::from_tokens([TOKEN.to_string()]);
    let mut group = c.benchmark_group("posthog_v0_decode_to_records_10_events");
    group.throughput(Throughput::Elements(EVENTS as u64));
    for w in Wire::ALL {
        let enc = encode(&json, w);
        let headers = enc.header_map();
        let query = (!enc.query.is_empty()).then_some(enc.query.as_str());
        let facts = RequestFacts { path: "/batch/", query, headers: &headers, peer: Some([203, 0, 113, 7].into()) };
        assert_eq!(posthog::decode_records(&policy, &facts, &enc.body, now()).expect("decodes").len(), EVENTS);
        group.bench_with_input(BenchmarkId::from_parameter(format!("{w:?}")), &enc.body, |b, body| {
            b.iter(|| posthog::decode_records(&policy, &facts, body, now()))
        });
    }
    group.finish();
}

fn v1(c: &mut Criterion) {
    let events: Vec<Value> = (0..EVENTS)
        .map(|i| {
            let mut e = event(i);
            let set = e.as_object_mut().unwrap().remove("$set").unwrap();
            e["properties"]["$set"] = set;
            e["timestamp"] = json!("2026-03-01T11:59:58.123+00:00");
            e["options"] = json!({});
            e
        })
        .collect();
    let json = json!({"created_at": "2026-03-01T12:00:00+00:00", "batch": events}).to_string().into_bytes();
    let policy = PosthogState::from_tokens([TOKEN.to_string()]);
    let mut group = c.benchmark_group("posthog_v1_decode_10_events");
    group.throughput(Throughput::Elements(EVENTS as u64));
    let bodies = [
        ("identity", None, json.clone()),
        ("gzip", Some("gzip"), wire::gzip(&json)),
        ("deflate", Some("deflate"), wire::zlib(&json)),
        ("zstd", Some("zstd"), wire::zstd(&json)),
        ("br", Some("br"), wire::brotli_stored(&json)),
    ];
    for (name, encoding, body) in bodies {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("authorization", format!("Bearer {TOKEN}")),
            ("content-type", "application/json".into()),
            ("user-agent", "posthog-python/7.91.1".into()),
            ("posthog-sdk-info", "posthog-python/7.91.1".into()),
            ("posthog-attempt", "1".into()),
            ("posthog-request-id", "6d1f3c2a-9b8e-4c7d-a6f5-e4d3c2b1a098".into()),
            ("posthog-request-timestamp", "2026-03-01T12:00:00+00:00".into()),
        ] {
            headers.insert(k, HeaderValue::from_str(&v).unwrap());
        }
        if let Some(e) = encoding {
            headers.insert("content-encoding", HeaderValue::from_static(e));
        }
        let facts =
            RequestFacts { path: v1::PATH, query: None, headers: &headers, peer: Some([203, 0, 113, 7].into()) };
        assert_eq!(v1::decode(&policy, &facts, &body, now()).expect("decodes").events.len(), EVENTS);
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| v1::decode(&policy, &facts, body, now()))
        });
    }
    group.finish();
}

criterion_group!(benches, v0, v1);
criterion_main!(benches);
