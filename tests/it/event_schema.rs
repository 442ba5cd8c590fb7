//! The envelope's JSON Schema (docs/event.schema.json) and the Rust type agree:
//! every envelope the type serializes validates, and the schema refuses what
//! the type refuses.

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use sluice::event::{Context, Event, Kind, Library, Revenue, Source};

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/event.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::options().should_validate_formats(true).build(&schema).unwrap()
}

fn full_event() -> Event {
    let t = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    let mut e = Event::new(Source::Amplitude, "amplitude", "key", Kind::Identify, "$identify", t);
    e.distinct_id = Some("user-1".into());
    e.email = Some("a@example.com".into());
    e.properties.insert("plan".into(), json!("pro"));
    e.user_properties.set.insert("name".into(), json!("Ada"));
    e.user_properties.set_once.insert("first_seen".into(), json!("2026-01-01"));
    e.user_properties.unset.push("old".into());
    e.user_properties.other.insert("$add".into(), json!({"logins": 1}));
    e.revenue = Some(Revenue { amount: Some(12.5), currency: Some("usd".into()), ..Revenue::default() });
    e.context = Context {
        ip: Some("203.0.113.7".into()),
        user_agent: Some("ua".into()),
        library: Some(Library { name: "amplitude-python".into(), version: Some("1.3.0".into()) }),
        anon_distinct_id: Some("anon".into()),
        extra: serde_json::Map::from_iter([("device_id".to_string(), json!("d-1"))]),
    };
    e
}

#[test]
fn serialized_envelopes_validate() {
    let v = schema();
    let minimal = Event::new(Source::Webhook, "stripe", "stripe", Kind::Webhook, "invoice.paid", Utc::now());
    for e in [full_event(), minimal] {
        let doc = serde_json::to_value(&e).unwrap();
        let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{doc:#}");
    }
}

#[test]
fn schema_refuses_what_the_type_refuses() {
    let v = schema();
    let good = serde_json::to_value(full_event()).unwrap();
    let mut mutations: Vec<(&str, Value)> = Vec::new();
    let mut extra = good.clone();
    extra["surprise"] = json!(1);
    mutations.push(("unknown field", extra));
    let mut kind = good.clone();
    kind["kind"] = json!("purchase");
    mutations.push(("unknown kind", kind));
    let mut no_id = good.clone();
    no_id.as_object_mut().unwrap().remove("id");
    mutations.push(("missing id", no_id));
    let mut ts = good.clone();
    ts["timestamp"] = json!("yesterday");
    mutations.push(("bad timestamp", ts));
    for (what, doc) in mutations {
        assert!(!v.is_valid(&doc), "schema accepted {what}");
        assert!(serde_json::from_value::<Event>(doc).is_err(), "type accepted {what}");
    }
}
