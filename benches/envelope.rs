//! Envelope serialization throughput (`Event::to_record`, `from_payload`)
//! and allocations per event on the ingress paths.
//!
//! A counting global allocator wraps the system one; before the criterion
//! groups run, the bench prints allocations (and bytes allocated) per event
//! for:
//! * building one normalized envelope and serializing it to a bus record;
//! * the whole in-process request path of each source — router, middleware,
//!   decode, normalize, `to_record`, publish to a bus that drops the records —
//!   driven through `ingress::router` with the same bodies the load harness
//!   sends (`benches/support/bodies.rs`). A source whose route answers 404
//!   on this build is reported as skipped.
//!
//! `cargo bench --bench envelope`; the figures in BENCHMARKS.md come from it.

use chrono::{DateTime, Utc};
use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use serde_json::{json, Map, Value};
use sluice::event::{Event, Kind, Source};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use tower::ServiceExt;

#[path = "support/bodies.rs"]
mod bodies;
#[path = "support/inproc.rs"]
mod inproc;
use inproc::{request, TOKEN};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// (allocations, bytes) made while `f` runs.
fn counted(f: impl FnOnce()) -> (u64, u64) {
    let (a, b) = (ALLOCS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
    f();
    (ALLOCS.load(Ordering::Relaxed) - a, BYTES.load(Ordering::Relaxed) - b)
}

/// A PostHog `$pageview` as the PostHog source normalizes it: the same
/// properties the load harness sends.
fn pageview(now: DateTime<Utc>) -> Event {
    let raw = bodies::posthog_event(1, 42, &now.to_rfc3339());
    let mut e = Event::new(Source::Posthog, "posthog", TOKEN, Kind::Page, "$pageview", now);
    e.distinct_id = Some("user-000042".into());
    e.email = Some("user-000042@example.com".into());
    if let Some(Value::Object(mut props)) = raw.get("properties").cloned() {
        if let Some(Value::Object(set)) = props.remove("$set") {
            e.user_properties.set = set;
        }
        e.properties = props;
    }
    e.context.ip = Some("127.0.0.1".into());
    e
}

fn report_allocations() {
    let now = Utc::now();
    println!("allocations per event (counting global allocator)");
    println!("{:<48} {:>12} {:>14}", "path", "allocs/event", "bytes/event");

    const N: u64 = 2000;
    let (a, b) = counted(|| {
        for _ in 0..N {
            std::hint::black_box(pageview(now));
        }
    });
    println!(
        "{:<48} {:>12.1} {:>14.0}",
        "envelope: build a normalized $pageview",
        a as f64 / N as f64,
        b as f64 / N as f64
    );
    let event = pageview(now);
    let (a, b) = counted(|| {
        for _ in 0..N {
            std::hint::black_box(event.to_record());
        }
    });
    println!("{:<48} {:>12.1} {:>14.0}", "envelope: Event::to_record", a as f64 / N as f64, b as f64 / N as f64);

    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let app = inproc::router();
    let cases = inproc::cases();
    for case in &cases {
        let events = case.template.events as u64;
        // Warm once (lazy statics, first-use allocations), and find out
        // whether this build serves the route at all.
        let status =
            rt.block_on(app.clone().oneshot(request(case, 0))).map(|r| r.status()).unwrap_or_else(|e| match e {});
        if status.as_u16() == 404 {
            println!("{:<48} {:>12} {:>14}", case.name, "skipped", "(404 here)");
            continue;
        }
        if !status.is_success() {
            println!("{:<48} {:>12} {:>14}", case.name, "refused", status.as_u16());
            continue;
        }
        const REQUESTS: u64 = 200;
        let reqs: Vec<_> = (1..=REQUESTS).map(|n| request(case, n)).collect();
        let (a, b) = counted(|| {
            rt.block_on(async {
                for req in reqs {
                    let resp = app.clone().oneshot(req).await.unwrap_or_else(|e| match e {});
                    std::hint::black_box(resp);
                }
            })
        });
        let per = (REQUESTS * events) as f64;
        println!("{:<48} {:>12.1} {:>14.0}", case.name, a as f64 / per, b as f64 / per);
    }
    println!();
}

fn envelope(c: &mut Criterion) {
    let now = Utc::now();
    let event = pageview(now);
    let payload = event.to_record().payload;
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Elements(1));
    g.bench_function("to_record_pageview", |b| b.iter(|| std::hint::black_box(&event).to_record()));
    g.bench_function("from_payload_pageview", |b| b.iter(|| Event::from_payload(std::hint::black_box(&payload))));
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("to_record_pageview_bytes", |b| b.iter(|| std::hint::black_box(&event).to_record()));
    g.finish();

    let batch: Vec<Event> = (0..10).map(|_| pageview(now)).collect();
    let mut g = c.benchmark_group("envelope_batch");
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("to_record_10_event_batch", |b| {
        b.iter_batched(|| (), |_| batch.iter().map(Event::to_record).collect::<Vec<_>>(), BatchSize::SmallInput)
    });
    g.finish();

    // A webhook envelope carries the vendor's whole object: larger, nested.
    let mut hook = Event::new(Source::Webhook, "stripe", "stripe", Kind::Webhook, "invoice.paid", now);
    let raw: Value = serde_json::from_slice(&bodies::stripe_template(1).render(1)).unwrap_or(Value::Null);
    hook.properties = match raw {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    hook.email = Some("ada@example.com".into());
    let mut g = c.benchmark_group("envelope_webhook");
    g.throughput(Throughput::Elements(1));
    g.bench_function("to_record_invoice_paid", |b| b.iter(|| std::hint::black_box(&hook).to_record()));
    g.finish();
    let _ = json!(null);
}

criterion_group!(benches, envelope);

fn main() {
    report_allocations();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
