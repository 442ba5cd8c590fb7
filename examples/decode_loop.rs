//! Instruction counts that do not move with the machine's load, for
//! callgrind: the load harness's PostHog 10-event batch, N times, through
//!
//! * `decode` (default): `posthog::decode_records` alone (decode, normalize,
//!   serialize to records);
//! * `router`: the whole in-process request path (Sluice's router and
//!   middleware, the `/batch` shape check, decode, publish to a bus that
//!   drops the records), building each request included, with Sluice's
//!   Prometheus recorder installed as `sluice` runs (its metrics counted).
//!
//! ```sh
//! cargo build --release --example decode_loop
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/decode_loop 0 [router]
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/decode_loop 300 [router]
//! ```
//!
//! Instructions per event = (Ir at 300 − Ir at 0) / 3,000. Wall-clock
//! benchmarks on the shared two-core machine move by ±30 % between runs;
//! this does not (BENCHMARKS.md, "Profile"). The allocator is mimalloc, as
//! in Sluice's binary (glibc's malloc costs differently: a growing `Vec`
//! and a block above its per-thread cache's 1 KiB read high there).

#[path = "../benches/support/bodies.rs"]
mod bodies;
#[path = "../benches/support/inproc.rs"]
mod inproc;

use axum::http::{HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};
use sluice::ingress::posthog::{self, PosthogState, RequestFacts};
use tower::ServiceExt;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    match args.next().as_deref() {
        Some("router") => router(n),
        _ => decode(n),
    }
}

fn decode(n: u64) {
    let template = bodies::posthog_template(inproc::TOKEN, 10, 1, bodies::PosthogUsers::PerEvent);
    let body = template.render(1);
    let policy = PosthogState::from_tokens([inproc::TOKEN.to_string()]);
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let facts = RequestFacts { path: "/batch/", query: None, headers: &headers, peer: Some([203, 0, 113, 7].into()) };
    let now: DateTime<Utc> = Utc::now();
    let mut bytes = 0;
    for _ in 0..n {
        let records = posthog::decode_records(&policy, &facts, &body, now).expect("the harness body decodes");
        assert_eq!(records.len(), template.events);
        bytes += records.iter().map(|r| r.payload.len()).sum::<usize>();
    }
    println!("{n} batches, {bytes} payload bytes");
}

fn router(n: u64) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _metrics = sluice::metrics::install();
    let app = inproc::router();
    let [posthog, ..] = inproc::cases();
    // The first request warms lazy statics; it runs for every N alike.
    for i in 0..=n {
        let resp = rt.block_on(app.clone().oneshot(inproc::request(&posthog, i))).unwrap_or_else(|e| match e {});
        assert!(resp.status().is_success(), "request {i}: {}", resp.status());
    }
    println!("{n} requests through the router");
}
