//! Signature verification cost: a 4 KB event checked against two configured
//! secrets (a source mid-rotation, signed with the second one, so both HMACs
//! run; they always do, the comparison never stops early).

use axum::http::{HeaderMap, HeaderValue};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice::config::WebhookScheme;
use sluice::ingress::webhook::signature::{verify, SigningKey};

const NOW: i64 = 1_700_000_000;

/// A Stripe-shaped JSON event padded to exactly `len` bytes.
fn event(len: usize) -> Vec<u8> {
    let head = br#"{"id":"evt_bench","object":"event","type":"invoice.paid","created":1700000000,"data":{"object":{"id":"in_1","object":"invoice","customer":"cus_1","currency":"usd","total":1999,"description":""#;
    let tail = br#""}}}"#;
    let mut body = head.to_vec();
    body.resize(len - tail.len(), b'x');
    body.extend_from_slice(tail);
    body
}

fn bench(c: &mut Criterion) {
    let body = event(4096);
    let mut group = c.benchmark_group("webhook_verify");
    group.throughput(Throughput::Bytes(body.len() as u64));

    let keys = [
        SigningKey::new(WebhookScheme::Stripe, "whsec_old_secret_for_the_bench").unwrap(),
        SigningKey::new(WebhookScheme::Stripe, "whsec_new_secret_for_the_bench").unwrap(),
    ];
    let mut headers = HeaderMap::new();
    headers.insert("stripe-signature", HeaderValue::from_str(&keys[1].stripe_header(NOW, &body)).unwrap());
    group.bench_with_input(BenchmarkId::new("stripe", "4KiB_2_secrets"), &body, |b, body| {
        b.iter(|| verify(WebhookScheme::Stripe, &headers, body, &keys, 300, NOW).unwrap())
    });

    let keys = [
        SigningKey::new(WebhookScheme::Standard, "whsec_c29tZW9uZS1lbHNlLXNvbWVvbmUtZWxzZQ==").unwrap(),
        SigningKey::new(WebhookScheme::Standard, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
    ];
    let mut headers = HeaderMap::new();
    headers.insert("webhook-id", HeaderValue::from_static("msg_bench"));
    headers.insert("webhook-timestamp", HeaderValue::from_str(&NOW.to_string()).unwrap());
    headers.insert(
        "webhook-signature",
        HeaderValue::from_str(&keys[1].standard_signature("msg_bench", NOW, &body)).unwrap(),
    );
    group.bench_with_input(BenchmarkId::new("standard", "4KiB_2_secrets"), &body, |b, body| {
        b.iter(|| verify(WebhookScheme::Standard, &headers, body, &keys, 300, NOW).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
