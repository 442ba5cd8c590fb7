//! The official posthog-python SDK against a running `sluice ingress` on the
//! real Kafka broker: sync mode, capture v0 and v1, gzip on and off. Every
//! call's envelope is read back from Kafka and checked field by field, and
//! the same call must give the same envelope whatever the wire protocol.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sluice::event::{Event, Kind};

const TOKEN: &str = "phc_sdk_test_token";

fn config(brokers: &str) -> (String, String) {
    common::kafka_config(brokers, &format!("connectors:\n  posthog:\n    project_tokens: [\"{TOKEN}\"]\n"))
}

fn last_json_line(out: &str) -> Value {
    let line = out.lines().rev().find(|l| l.trim_start().starts_with('{')).expect("the script printed JSON");
    serde_json::from_str(line).expect("JSON line")
}

/// The envelope without what legitimately differs between two sends of the
/// same call: its id, when it was received, and the skew-corrected time.
fn comparable(e: &Event) -> Event {
    let mut e = e.clone();
    e.id = String::new();
    e.timestamp = DateTime::<Utc>::UNIX_EPOCH;
    e.received_at = DateTime::<Utc>::UNIX_EPOCH;
    e
}

#[tokio::test(flavor = "multi_thread")]
async fn posthog_python_sdk_captures_and_identifies() {
    let Some(brokers) = common::kafka_brokers() else { return };
    let Some(python) = common::python() else { return };
    let (yaml, topic) = config(&brokers);
    let sluice = common::Sluice::start("ingress", &yaml);
    let started = chrono::Utc::now();

    let mut runs = Vec::new();
    for (mode, gzip) in [("v0", "off"), ("v0", "on"), ("v1", "off"), ("v1", "on")] {
        let out = common::run_python(&python, "posthog_capture.py", &[&sluice.base, TOKEN, mode, gzip, "ok"], &[]);
        runs.push((format!("{mode} gzip={gzip}"), last_json_line(&out)));
    }
    // The SDK must see 401 for a token Sluice does not know, in both protocols.
    for mode in ["v0", "v1"] {
        let out = common::run_python(
            &python,
            "posthog_capture.py",
            &[&sluice.base, "phc_unknown", mode, "off", "unauthorized"],
            &[],
        );
        assert_eq!(last_json_line(&out)["status"], 401, "{mode}");
    }

    let want: usize = runs.iter().map(|(_, r)| r["sent"].as_array().unwrap().len()).sum();
    assert_eq!(want, 24);
    let events = common::read_events(&brokers, &topic, want, Duration::from_secs(60)).await;
    assert_eq!(events.len(), want, "every accepted call reached Kafka; sluice log:\n{}", sluice.logs());
    let by_id: HashMap<&str, &Event> = events.iter().map(|e| (e.id.as_str(), e)).collect();
    assert_eq!(by_id.len(), want, "no duplicates");

    let mut per_call: HashMap<String, Vec<(String, Event)>> = HashMap::new();
    for (run, report) in &runs {
        let version = report["version"].as_str().unwrap();
        let when = DateTime::parse_from_rfc3339(report["timestamp"].as_str().unwrap()).unwrap().with_timezone(&Utc);
        for sent in report["sent"].as_array().unwrap() {
            let call = sent["call"].as_str().unwrap();
            let uuid = sent["uuid"].as_str().unwrap();
            let e = *by_id.get(uuid).unwrap_or_else(|| panic!("{run} {call}: uuid {uuid} not in Kafka"));
            let ctx = format!("{run} {call}");
            check_common(e, version, when, started, &ctx);
            check_call(call, e, &ctx);
            per_call.entry(call.to_string()).or_default().push((run.clone(), e.clone()));
        }
    }
    // v0 or v1, gzip or not: one call, one envelope.
    for (call, sends) in &per_call {
        let (first_run, first) = &sends[0];
        for (run, e) in &sends[1..] {
            assert_eq!(comparable(e), comparable(first), "{call}: {run} differs from {first_run}");
        }
    }
}

/// What every envelope from the Python SDK carries.
fn check_common(e: &Event, version: &str, when: DateTime<Utc>, started: DateTime<Utc>, ctx: &str) {
    assert_eq!(e.schema, sluice::event::SCHEMA_VERSION, "{ctx}");
    assert_eq!(e.source, sluice::event::Source::Posthog, "{ctx}");
    assert_eq!(e.source_name, "posthog", "{ctx}");
    assert_eq!(e.project, TOKEN, "{ctx}");
    let lib = e.context.library.as_ref().unwrap_or_else(|| panic!("{ctx}: no library"));
    assert_eq!(lib.name, "posthog-python", "{ctx}");
    assert_eq!(lib.version.as_deref(), Some(version), "{ctx}");
    assert_eq!(e.context.user_agent.as_deref(), Some(format!("posthog-python/{version}").as_str()), "{ctx}");
    assert_eq!(e.context.ip.as_deref(), Some("127.0.0.1"), "{ctx}");
    for lifted in ["$lib", "$lib_version", "token", "$set", "$set_once", "$anon_distinct_id", "distinct_id"] {
        assert!(!e.properties.contains_key(lifted), "{ctx}: {lifted} left in properties");
    }
    // The SDK's own additions survive as properties.
    assert_eq!(e.properties.get("$geoip_disable"), Some(&json!(true)), "{ctx}");
    assert_eq!(e.properties.get("$is_server"), Some(&json!(true)), "{ctx}");
    // Same machine: clock-skew correction moves the time by milliseconds.
    let skew = (e.timestamp - when).num_milliseconds().abs();
    assert!(skew < 5_000, "{ctx}: timestamp {} vs sent {when}", e.timestamp);
    assert!(e.received_at >= started - chrono::Duration::seconds(1), "{ctx}");
    assert!(e.received_at <= chrono::Utc::now(), "{ctx}");
}

fn check_call(call: &str, e: &Event, ctx: &str) {
    let set = |v: Value| v.as_object().unwrap().clone();
    match call {
        "capture" => {
            assert_eq!((e.kind, e.name.as_str()), (Kind::Track, "order completed"), "{ctx}");
            assert_eq!(e.distinct_id.as_deref(), Some("user-42"), "{ctx}");
            assert_eq!(e.properties.get("total"), Some(&json!(99.5)), "{ctx}");
            assert_eq!(e.properties.get("currency"), Some(&json!("EUR")), "{ctx}");
            assert_eq!(e.properties.get("items"), Some(&json!(["a", "b"])), "{ctx}");
            assert_eq!(e.user_properties.set, set(json!({"plan": "pro"})), "{ctx}");
            assert_eq!(e.email, None, "{ctx}");
            // capture() adds the runtime's system context.
            assert!(e.properties.contains_key("$python_version"), "{ctx}");
        }
        "identify" => {
            assert_eq!((e.kind, e.name.as_str()), (Kind::Identify, "$identify"), "{ctx}");
            assert_eq!(e.distinct_id.as_deref(), Some("user-42"), "{ctx}");
            assert_eq!(e.email.as_deref(), Some("ada@example.com"), "{ctx}");
            assert_eq!(e.user_properties.set, set(json!({"email": "ada@example.com", "name": "Ada"})), "{ctx}");
            assert_eq!(e.user_properties.set_once, set(json!({"first_source": "ads"})), "{ctx}");
            assert_eq!(e.context.anon_distinct_id.as_deref(), Some("anon-42"), "{ctx}");
        }
        "set" => {
            assert_eq!((e.kind, e.name.as_str()), (Kind::Identify, "$set"), "{ctx}");
            assert_eq!(e.email.as_deref(), Some("ada@example.com"), "{ctx}");
            assert_eq!(e.user_properties.set, set(json!({"email": "ada@example.com", "company": "Acme"})), "{ctx}");
        }
        "pageview" => {
            assert_eq!((e.kind, e.name.as_str()), (Kind::Page, "$pageview"), "{ctx}");
            assert_eq!(e.properties.get("$current_url"), Some(&json!("https://example.com/ü")), "{ctx}");
        }
        "alias" => {
            assert_eq!((e.kind, e.name.as_str()), (Kind::Alias, "$create_alias"), "{ctx}");
            assert_eq!(e.distinct_id.as_deref(), Some("anon-42"), "{ctx}");
            assert_eq!(e.properties.get("alias"), Some(&json!("user-42")), "{ctx}");
        }
        "group" => {
            assert_eq!((e.kind, e.name.as_str()), (Kind::Group, "$groupidentify"), "{ctx}");
            assert_eq!(e.properties.get("$group_type"), Some(&json!("company")), "{ctx}");
            assert_eq!(e.properties.get("$group_key"), Some(&json!("acme")), "{ctx}");
            assert_eq!(e.properties.get("$group_set"), Some(&json!({"name": "Acme"})), "{ctx}");
        }
        other => panic!("unknown call {other}"),
    }
}
