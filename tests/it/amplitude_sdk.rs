//! The official `amplitude-analytics` Python SDK against a running
//! `sluice ingress` on the real Kafka-protocol broker: what the SDK does with
//! Sluice's answers (accept, split on 413, drop exactly the invalid events)
//! and the envelopes that reach the broker.

use crate::common;

use std::time::Duration;

use serde_json::{json, Value};
use sluice::event::{Event, Kind};

const KEY: &str = "sdk0123456789abcdef0123456789abc";

struct Run {
    /// insert_id → {event_type, code, message} from the SDK's callback.
    events: serde_json::Map<String, Value>,
    /// Every HTTP status code the SDK's worker received, in order.
    http_codes: Vec<u64>,
    /// Envelopes read back from the broker.
    envelopes: Vec<Event>,
}

/// Start a sluice on fresh topics, run `script` against `path`, and read
/// back `expect` envelopes.
async fn run(script: &str, path: &str, expect: usize) -> Option<Run> {
    let brokers = common::kafka_brokers()?;
    let python = common::python()?;
    let (yaml, topic) =
        common::kafka_config(&brokers, &format!("connectors:\n  amplitude:\n    api_keys: [\"{KEY}\"]\n"));
    let sluice = common::Sluice::start("ingress", &yaml);
    let url = format!("{}{path}", sluice.base);
    let script_owned = script.to_string();
    let out = tokio::task::spawn_blocking(move || common::run_python(&python, &script_owned, &[&url, KEY], &[]))
        .await
        .expect("python task");
    let report: Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{script} printed no report ({e}):\n{out}\nsluice log:\n{}", sluice.logs()));
    // An unknown key is answered like Amplitude (the SDK matches the
    // prefix), and neither it nor the configured key reaches the log.
    let wrong = "wrong-key-never-logged";
    let resp = reqwest::Client::new()
        .post(format!("{}/2/httpapi", sluice.base))
        .json(&json!({"api_key": wrong, "events": [{"event_type": "e", "user_id": "user-00001"}]}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.expect("JSON body");
    assert_eq!(body, json!({"code": 400, "error": format!("Invalid API key: {wrong}")}));
    let logs = sluice.logs();
    assert!(logs.contains("invalid_api_key"), "the refusal is logged with its reason:\n{logs}");
    assert!(!logs.contains(KEY) && !logs.contains(wrong), "an API key reached the log:\n{logs}");

    // Ask for one more than expected: anything beyond `expect` would be a
    // duplicate or a leaked invalid event (the read then runs its full wait).
    let mut envelopes = common::read_events(&brokers, &topic, expect + 1, Duration::from_secs(20)).await;
    envelopes.sort_by(|a, b| a.id.cmp(&b.id));
    Some(Run {
        events: report["events"].as_object().cloned().unwrap_or_default(),
        http_codes: report["http_codes"].as_array().unwrap().iter().filter_map(Value::as_u64).collect(),
        envelopes,
    })
}

fn code_of(run: &Run, insert_id: &str) -> Value {
    run.events.get(insert_id).map(|e| e["code"].clone()).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_normal_tracking_over_http_v2_and_batch() {
    for path in ["/2/httpapi", "/batch"] {
        let Some(run) = run("amplitude_track.py", path, 6).await else { return };
        for i in 0..5 {
            assert_eq!(code_of(&run, &format!("sdk-track-{i}")), json!(200), "{path}: {:?}", run.events);
        }
        assert_eq!(code_of(&run, "sdk-revenue-0"), json!(200), "{path}");
        assert_eq!(run.envelopes.len(), 6, "{path}: exactly the tracked events reach the broker");

        let revenue = run.envelopes.iter().find(|e| e.id == "sdk-revenue-0").expect("revenue envelope");
        assert_eq!((revenue.kind, revenue.name.as_str()), (Kind::Track, "revenue_amount"));
        let r = revenue.revenue.as_ref().expect("typed revenue");
        assert_eq!(
            (r.price, r.quantity, r.amount, r.product_id.as_deref()),
            (Some(3.5), Some(2), Some(7.0), Some("prod-1"))
        );

        let e = run.envelopes.iter().find(|e| e.id == "sdk-track-3").expect("track envelope");
        assert_eq!((e.kind, e.name.as_str(), e.project.as_str()), (Kind::Track, "Song Played", KEY));
        assert_eq!(e.distinct_id.as_deref(), Some("sdk-user-0001"));
        assert_eq!(e.properties["n"], 3);
        assert_eq!(e.user_properties.set["plan"], "pro");
        assert_eq!(e.context.extra["device_id"], "sdk-device-0001");
        assert_eq!(e.context.extra["country"], "France");
        assert_eq!(e.context.extra["session_id"], 1_767_225_600_000_i64);
        let lib = e.context.library.as_ref().expect("library");
        assert_eq!(lib.name, "amplitude-python");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_splits_a_batch_refused_with_413_and_finally_succeeds() {
    let Some(run) = run("amplitude_split.py", "/2/httpapi", 20).await else { return };
    assert!(run.http_codes.contains(&413), "the first batch must be refused as too large: {:?}", run.http_codes);
    assert_eq!(run.http_codes.last(), Some(&200), "{:?}", run.http_codes);
    for i in 0..20 {
        assert_eq!(code_of(&run, &format!("sdk-split-{i:02}")), json!(200), "{:?}", run.http_codes);
    }
    let ids: Vec<String> = run.envelopes.iter().map(|e| e.id.clone()).collect();
    let want: Vec<String> = (0..20).map(|i| format!("sdk-split-{i:02}")).collect();
    assert_eq!(ids, want, "every event exactly once");
    assert_eq!(run.envelopes[0].properties.len(), 70);
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_drops_exactly_the_invalid_events() {
    let Some(run) = run("amplitude_invalid.py", "/2/httpapi", 4).await else { return };
    assert_eq!(run.http_codes.first(), Some(&400), "{:?}", run.http_codes);
    for (i, want) in [(0, 200), (1, 400), (2, 200), (3, 200), (4, 400), (5, 200)] {
        assert_eq!(code_of(&run, &format!("sdk-invalid-{i}")), json!(want), "event {i}: {:?}", run.events);
    }
    let ids: Vec<&str> = run.envelopes.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["sdk-invalid-0", "sdk-invalid-2", "sdk-invalid-3", "sdk-invalid-5"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_identify_becomes_an_identify_envelope() {
    let Some(run) = run("amplitude_identify.py", "/2/httpapi", 2).await else { return };
    assert_eq!(code_of(&run, "sdk-identify-0"), json!(200), "{:?}", run.events);
    assert_eq!(code_of(&run, "sdk-group-0"), json!(200), "{:?}", run.events);
    assert_eq!(run.envelopes.len(), 2);
    let group = &run.envelopes[0];
    assert_eq!((group.id.as_str(), group.kind), ("sdk-group-0", Kind::Group));
    assert_eq!(group.context.extra["groups"], json!({"org": "acme"}));
    assert_eq!(group.context.extra["group_properties"], json!({"$set": {"tier": "enterprise"}}));
    let ident = &run.envelopes[1];
    assert_eq!((ident.id.as_str(), ident.kind, ident.name.as_str()), ("sdk-identify-0", Kind::Identify, "$identify"));
    assert_eq!(ident.distinct_id.as_deref(), Some("sdk-user-ident"));
    assert_eq!(ident.email.as_deref(), Some("ann@example.com"));
    assert_eq!(ident.user_properties.set_once["first_seen"], "2026-01-01");
    assert_eq!(ident.user_properties.unset, ["legacy"]);
    assert_eq!(ident.user_properties.other["$add"], json!({"logins": 1}));
    assert_eq!(ident.user_properties.other["$append"], json!({"tags": "beta"}));
}
