//! The in-process request path shared by the allocation report
//! (`benches/envelope.rs`) and the instruction count
//! (`examples/decode_loop.rs`): Sluice's router on a bus that drops what it
//! is given, configured for the load harness's tokens and secret, and the
//! harness's bodies as requests.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request;
use axum::Router;
use chrono::Utc;
use sluice::bus::{BusError, Publisher, Record, Topic};
use sluice::config::Config;
use sluice::ingress::{self, AppState, SystemClock};

use super::bodies;

pub const TOKEN: &str = "phc_sluicebench";
pub const AMPLITUDE_KEY: &str = "amp_sluicebench";
pub const STRIPE_SECRET: &str = "whsec_sluicebench";

/// A publisher that accepts and drops, so the path is measured without a bus.
pub struct DropBus;

#[async_trait]
impl Publisher for DropBus {
    async fn publish(&self, _topic: Topic, records: Vec<Record>) -> Result<(), BusError> {
        std::hint::black_box(records);
        Ok(())
    }
    async fn ready(&self) -> Result<(), BusError> {
        Ok(())
    }
    async fn flush(&self, _timeout: Duration) -> Result<(), BusError> {
        Ok(())
    }
}

pub fn bench_config() -> Config {
    let yaml = format!(
        r#"
connectors:
  posthog:
    project_tokens: ["{TOKEN}"]
  amplitude:
    api_keys: ["{AMPLITUDE_KEY}"]
  webhooks:
    - name: stripe
      scheme: stripe
      secrets: ["{STRIPE_SECRET}"]
"#
    );
    match Config::from_yaml(&yaml, "<bench>", &|_| None) {
        Ok(c) => c,
        Err(e) => panic!("bench config: {e}"),
    }
}

/// Sluice's ingress router over [`DropBus`].
pub fn router() -> Router {
    match AppState::new(Arc::new(bench_config()), Arc::new(DropBus), Arc::new(SystemClock), None, None) {
        Ok(state) => ingress::router(state),
        Err(e) => panic!("state: {e:#}"),
    }
}

/// One source's request path: method, path, headers and body per request.
pub struct PathCase {
    pub name: &'static str,
    pub path: &'static str,
    pub template: bodies::Template,
    pub stripe: bool,
}

/// The load harness's three scenarios, in its order.
pub fn cases() -> [PathCase; 3] {
    [
        PathCase {
            name: "posthog /batch/ (10-event JSON batch)",
            path: "/batch/",
            template: bodies::posthog_template(TOKEN, 10, 1, bodies::PosthogUsers::PerEvent),
            stripe: false,
        },
        PathCase {
            name: "amplitude /2/httpapi (100-event batch)",
            path: "/2/httpapi",
            template: bodies::amplitude_template(AMPLITUDE_KEY, 100, 1),
            stripe: false,
        },
        PathCase {
            name: "stripe /webhooks/stripe (1 event)",
            path: "/webhooks/stripe",
            template: bodies::stripe_template(1),
            stripe: true,
        },
    ]
}

/// Request number `n` of a case (its ids rendered, Stripe's signed now).
pub fn request(case: &PathCase, n: u64) -> Request<Body> {
    let body = case.template.render(n);
    let mut req = Request::post(case.path).header("content-type", "application/json");
    if case.stripe {
        req = req
            .header("stripe-signature", bodies::stripe_signature(STRIPE_SECRET, Utc::now().timestamp() as u64, &body));
    }
    match req.body(Body::from(body)) {
        Ok(r) => r,
        Err(e) => panic!("request: {e}"),
    }
}
