//! The integration tests, in one binary so that the suite links once.
//!
//! Run one area with `cargo test --test it <module>::`, e.g.
//! `cargo test --test it kafka_roles::`.

mod common;
mod posthog_wire;

mod amplitude_http;
mod amplitude_sdk;
mod amplitude_validate_prop;
mod brevo_sim;
mod bus_conformance;
mod deploy;
mod event_schema;
mod forward_cli;
mod forward_e2e_http;
mod forward_sim;
mod hostile_fuzz;
mod hostile_http;
mod http_limits;
mod kafka_roles;
mod posthog_http;
mod posthog_props;
mod posthog_sdk;
mod prometheus_scrape;
mod reliability_brevo;
mod reliability_broker;
mod reliability_crash;
mod reliability_disk;
mod secrets_in_logs;
mod serve_embedded;
mod webhooks_http;
