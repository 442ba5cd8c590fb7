//! Decode the load harness's PostHog 10-event batch N times
//! (`posthog::decode_records`: decode, normalize, serialize to records),
//! for an instruction count that does not move with the machine's load:
//!
//! ```sh
//! cargo build --release --example decode_loop
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/decode_loop 0
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/decode_loop 200
//! ```
//!
//! Instructions per event = (Ir at 200 − Ir at 0) / 2,000. Wall-clock
//! benchmarks on the shared two-core machine move by ±30 % between runs;
//! this does not (BENCHMARKS.md, "Profile").

#[path = "../benches/support/bodies.rs"]
mod bodies;

use axum::http::{HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};
use sluice::ingress::posthog::{self, PosthogState, RequestFacts};

const TOKEN: &str = "phc_decode_loop";

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let template = bodies::posthog_template(TOKEN, 10, 1);
    let body = template.render(1);
    let policy = PosthogState::from_tokens([TOKEN.to_string()]);
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
