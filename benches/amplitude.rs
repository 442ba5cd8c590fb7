//! Validate + normalize of one 100-event Amplitude upload, as the Python SDK
//! sends it: the CPU work of the request path before the publish.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};

use sluice::ingress::amplitude::validate::parse_upload;
use sluice::ingress::amplitude::{validate_and_normalize, Origin};

fn sdk_like_body(n: usize) -> Vec<u8> {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "event_type": if i % 10 == 0 { "$identify" } else { "Song Played" },
                "user_id": format!("user-{:06}", i % 37),
                "device_id": format!("C8F9E604-F01A-4BD9-95C6-{:012}", i),
                "time": 1_767_225_600_000_i64 + i as i64,
                "insert_id": format!("5f0adeff-6668-4427-8d02-{:012}", i),
                "library": "amplitude-python/1.3.0",
                "platform": "iOS", "os_name": "ios", "os_version": "17.2", "country": "France",
                "city": "Paris", "language": "French", "ip": "203.0.113.7", "session_id": 1_767_225_000_000_i64,
                "event_properties": {"title": "Blue", "duration": 231.5, "tags": ["a", "b"], "album": {"year": 1999}},
                "user_properties": if i % 10 == 0 {
                    json!({"$set": {"email": "a@example.com", "plan": "pro"}, "$add": {"plays": 1}})
                } else {
                    json!({"plan": "pro"})
                },
                "price": 0.99, "quantity": 1, "productId": "song-1",
            })
        })
        .collect();
    json!({"api_key": "0123456789abcdef0123456789abcdef", "events": events}).to_string().into_bytes()
}

fn bench(c: &mut Criterion) {
    let body = sdk_like_body(100);
    let received_at = chrono::DateTime::from_timestamp_millis(1_767_225_700_000).unwrap_or_default();
    let mut group = c.benchmark_group("amplitude");
    group.throughput(Throughput::Elements(100));
    group.bench_function("validate_normalize_100_events", |b| {
        b.iter(|| {
            let upload = parse_upload(black_box(&body)).expect("valid upload");
            let origin = Origin { api_key: &upload.api_key, received_at, peer_ip: None };
            let accepted = validate_and_normalize(upload.events, upload.min_id_length, &origin).expect("valid events");
            black_box(accepted)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
