//! One envelope → the Brevo operations it stands for ([`Op`]), following the
//! source connector's mapping (`event_filters`, `event_mapping`,
//! `property_mapping`, `lists`; see [`crate::config::Mapping`]).
//!
//! * `track` / `page` / `screen` / `webhook` → one custom event for
//!   `/v3/events/batch`: `event_name` (mapped, else sanitized to
//!   `[A-Za-z0-9_-]`, ≤ 255), `event_date`, `identifiers` (`email_id` when
//!   known, `ext_id` = the user id), `event_properties` (keys sanitized, ≤ 50 KB;
//!   the largest properties are dropped first, counted and logged),
//!   `contact_properties` from the mapped user properties.
//! * `identify` → a contact upsert with the mapped attributes, through
//!   `/v3/contacts/import` when the contact has an email and a list to land
//!   on, else `POST /v3/contacts` with `updateEnabled`.
//! * `lists` rules → list membership: additions ride on the import (its
//!   `listIds`) for contacts with an email, which also creates the contact
//!   first; other additions and every removal are list calls.
//! * `group` / `alias` have no Brevo counterpart and are skipped (counted);
//!   an event with no identifier at all is dead-lettered with the reason.
//!
//! Nothing here does I/O: [`map_event`] is a pure function of the config and
//! the envelope, shared by the forwarder and `sluice map`.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::config::{is_brevo_name, Config, ListRule, Mapping};
use crate::event::{Event, Kind, Source};
use crate::metrics as m;

/// Brevo's limit on one event's `event_properties` ("50 KB"; read as
/// 50,000 bytes, the stricter reading).
pub const MAX_EVENT_PROPERTIES_BYTES: usize = 50_000;

/// Who a contact call is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContactRef {
    Email(String),
    ExtId(String),
}

/// One Brevo operation derived from one envelope. The batcher groups
/// operations of the same shape into one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// One item of `POST /v3/events/batch`; `bytes` is its JSON length.
    Event { item: Value, bytes: usize },
    /// One `jsonBody` entry of `POST /v3/contacts/import` into `list_ids`
    /// (sorted, non-empty: Brevo's import requires a list).
    Import { email: String, attributes: Map<String, Value>, list_ids: Vec<i64> },
    /// `POST /v3/contacts` with `updateEnabled: true`: one contact per call.
    Upsert { body: Value },
    /// `POST /v3/contacts/lists/{list_id}/contacts/add|remove`.
    List { list_id: i64, add: bool, contact: ContactRef },
}

impl Op {
    /// Bytes this operation adds to a request body (approximate for
    /// non-event operations, which have generous limits).
    pub fn bytes(&self) -> usize {
        match self {
            Op::Event { bytes, .. } => *bytes,
            Op::Import { email, attributes, .. } => {
                email.len() + 32 + serde_json::to_vec(attributes).map(|v| v.len()).unwrap_or(0)
            }
            Op::Upsert { body } => serde_json::to_vec(body).map(|v| v.len()).unwrap_or(0),
            Op::List { contact: ContactRef::Email(s) | ContactRef::ExtId(s), .. } => s.len() + 3,
        }
    }
}

/// What became of one envelope.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// Brevo operations, in the order they must happen; `user` keys the
    /// delivery lane so one person's operations stay in order.
    Ops { user: String, ops: Vec<Op> },
    /// Deliberately not forwarded (filtered, no Brevo counterpart); acked.
    Skip(&'static str),
    /// Cannot be mapped: goes to the dead-letter topic with the reason.
    Dead { reason: &'static str, detail: String },
}

static EMPTY_NAMES: Vec<String> = Vec::new();
static EMPTY_MAP: BTreeMap<String, String> = BTreeMap::new();
static EMPTY_LISTS: Vec<ListRule> = Vec::new();

/// The mapping of the connector the event came through (an unknown webhook
/// source, e.g. removed from the config since, gets the defaults).
pub fn mapping_for<'a>(config: &'a Config, ev: &Event) -> Mapping<'a> {
    match ev.source {
        Source::Posthog => config.connectors.posthog.mapping(),
        Source::Amplitude => config.connectors.amplitude.mapping(),
        Source::Webhook => match config.connectors.webhooks.iter().find(|w| w.name == ev.source_name) {
            Some(w) => w.mapping(),
            None => Mapping {
                event_filters: &EMPTY_NAMES,
                event_mapping: &EMPTY_MAP,
                property_mapping: &EMPTY_MAP,
                lists: &EMPTY_LISTS,
            },
        },
    }
}

/// User properties that map to Brevo's built-in attributes when a connector
/// configures no `property_mapping`: mapping works out of the box for the
/// names PostHog, Amplitude and most apps use.
const DEFAULT_PROPERTY_MAPPING: &[(&str, &str)] = &[
    ("first_name", "FIRSTNAME"),
    ("firstName", "FIRSTNAME"),
    ("$first_name", "FIRSTNAME"),
    ("firstname", "FIRSTNAME"),
    ("last_name", "LASTNAME"),
    ("lastName", "LASTNAME"),
    ("$last_name", "LASTNAME"),
    ("lastname", "LASTNAME"),
];

fn attribute_for<'a>(mapping: &'a Mapping<'_>, key: &str) -> Option<&'a str> {
    if mapping.property_mapping.is_empty() {
        DEFAULT_PROPERTY_MAPPING.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    } else {
        mapping.property_mapping.get(key).map(String::as_str)
    }
}

/// Brevo event names and property keys allow `[A-Za-z0-9_-]`, at most 255
/// characters; anything else becomes `_`.
pub fn sanitize_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).take(255).collect()
}

/// Map one envelope.
pub fn map_event(config: &Config, ev: &Event) -> Mapped {
    let mapping = mapping_for(config, ev);
    let Some(user) = ev.distinct_id.clone().filter(|s| !s.is_empty()).or_else(|| ev.email.clone()) else {
        return Mapped::Dead {
            reason: "no_identifier",
            detail: format!("{} event {:?} has neither an email nor a user id", ev.source.as_str(), ev.name),
        };
    };
    let email = ev.email.as_deref().filter(|e| !e.is_empty());
    let ext_id = ev.distinct_id.as_deref().filter(|s| !s.is_empty());
    let lists = list_changes(&mapping, ev);
    let mut ops = Vec::new();
    match ev.kind {
        Kind::Group | Kind::Alias => return Mapped::Skip("unsupported_kind"),
        Kind::Identify => {
            let attributes = contact_attributes(&mapping, ev, AttributeTarget::Contact);
            let adds: Vec<i64> = lists.iter().filter(|(_, add)| **add).map(|(id, _)| *id).collect();
            let import_lists = if adds.is_empty() { config.brevo.default_list_id.into_iter().collect() } else { adds };
            match email {
                Some(email) if !import_lists.is_empty() => {
                    let mut attributes = attributes;
                    if let Some(id) = ext_id {
                        // EXT_ID is one of the import's documented identifier columns.
                        attributes.insert("EXT_ID".into(), Value::from(id));
                    }
                    ops.push(Op::Import { email: email.to_string(), attributes, list_ids: import_lists });
                }
                _ => {
                    let mut body = Map::new();
                    if let Some(e) = email {
                        body.insert("email".into(), Value::from(e));
                    }
                    if let Some(id) = ext_id {
                        body.insert("ext_id".into(), Value::from(id));
                    }
                    if !attributes.is_empty() {
                        body.insert("attributes".into(), Value::Object(attributes));
                    }
                    body.insert("updateEnabled".into(), Value::Bool(true));
                    ops.push(Op::Upsert { body: Value::Object(body) });
                    push_list_ops(&mut ops, &lists, email, ext_id, true);
                }
            }
            push_list_ops(&mut ops, &lists, email, ext_id, false);
        }
        Kind::Track | Kind::Page | Kind::Screen | Kind::Webhook => {
            if !mapping.event_filters.is_empty() && !mapping.event_filters.iter().any(|f| f == &ev.name) {
                return Mapped::Skip("filtered");
            }
            let name = match mapping.event_mapping.get(&ev.name) {
                Some(n) => n.clone(),
                None => sanitize_name(&ev.name),
            };
            if !is_brevo_name(&name) {
                return Mapped::Dead { reason: "unmappable", detail: format!("event name {:?} is empty", ev.name) };
            }
            let mut item = Map::new();
            item.insert("event_name".into(), Value::from(name));
            item.insert(
                "event_date".into(),
                Value::from(ev.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            );
            let mut identifiers = Map::new();
            if let Some(e) = email {
                identifiers.insert("email_id".into(), Value::from(e));
            }
            if let Some(id) = ext_id {
                identifiers.insert("ext_id".into(), Value::from(id));
            }
            item.insert("identifiers".into(), Value::Object(identifiers));
            let contact = contact_attributes(&mapping, ev, AttributeTarget::Event);
            if !contact.is_empty() {
                item.insert("contact_properties".into(), Value::Object(contact));
            }
            let props = event_properties(ev);
            if !props.is_empty() {
                item.insert("event_properties".into(), Value::Object(props));
            }
            let item = Value::Object(item);
            let bytes = serde_json::to_vec(&item).map(|v| v.len()).unwrap_or(0);
            ops.push(Op::Event { item, bytes });
            push_list_ops(&mut ops, &lists, email, ext_id, true);
            push_list_ops(&mut ops, &lists, email, ext_id, false);
        }
    }
    Mapped::Ops { user, ops }
}

/// List additions (`add`) or removals for one contact. Additions for a
/// contact with an email go through the import (which creates the contact
/// before adding it); the rest are list calls.
fn push_list_ops(ops: &mut Vec<Op>, lists: &BTreeMap<i64, bool>, email: Option<&str>, ext_id: Option<&str>, add: bool) {
    let contact = match (email, ext_id) {
        (Some(e), _) => ContactRef::Email(e.to_string()),
        (None, Some(id)) => ContactRef::ExtId(id.to_string()),
        (None, None) => return,
    };
    let ids: Vec<i64> = lists.iter().filter(|(_, a)| **a == add).map(|(id, _)| *id).collect();
    if ids.is_empty() {
        return;
    }
    if add {
        if let ContactRef::Email(e) = &contact {
            // An identify with an email already imported into these lists.
            if ops.iter().any(|o| matches!(o, Op::Import { .. })) {
                return;
            }
            ops.push(Op::Import { email: e.clone(), attributes: Map::new(), list_ids: ids });
            return;
        }
    }
    for list_id in ids {
        ops.push(Op::List { list_id, add, contact: contact.clone() });
    }
}

/// Membership changes the list rules ask for: list id → add (true) or
/// remove (false). Property rules are read after event rules and win.
fn list_changes(mapping: &Mapping<'_>, ev: &Event) -> BTreeMap<i64, bool> {
    let mut out = BTreeMap::new();
    for rule in mapping.lists {
        if rule.add_on_events.iter().any(|n| n == &ev.name) {
            out.insert(rule.id, true);
        }
        if rule.remove_on_events.iter().any(|n| n == &ev.name) {
            out.insert(rule.id, false);
        }
        if let Some(v) = rule.when_property.as_ref().and_then(|p| ev.user_properties.set.get(p)) {
            out.insert(rule.id, truthy(v));
        }
    }
    out
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !(s.is_empty() || s.eq_ignore_ascii_case("false") || s == "0"),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum AttributeTarget {
    /// `contact_properties` of an event: the batch schema allows strings and
    /// integers only (the stricter reading of a spec that also mentions
    /// booleans).
    Event,
    /// Contact attributes (import, upsert): text, numbers, booleans, lists.
    Contact,
}

/// Mapped user properties (`$set`; `$set_once` cannot be honoured without
/// reading the contact first, so it is left out).
fn contact_attributes(mapping: &Mapping<'_>, ev: &Event, target: AttributeTarget) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in &ev.user_properties.set {
        let Some(attr) = attribute_for(mapping, key) else { continue };
        let v = match (target, value) {
            (_, Value::Null) => continue,
            (_, Value::String(_)) => value.clone(),
            (_, Value::Number(n)) if n.is_i64() || n.is_u64() => value.clone(),
            (_, Value::Number(n)) => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
                _ if target == AttributeTarget::Contact => value.clone(),
                _ => Value::from(n.to_string()),
            },
            (AttributeTarget::Contact, Value::Bool(_)) => value.clone(),
            (AttributeTarget::Event, Value::Bool(b)) => Value::from(b.to_string()),
            (AttributeTarget::Contact, Value::Array(a)) if a.iter().all(Value::is_string) => value.clone(),
            (_, other) => Value::from(other.to_string()),
        };
        out.insert(attr.to_string(), v);
    }
    out
}

/// Properties that are plumbing of the source, not facts about the event;
/// `token` is a credential and must never be forwarded.
const DROPPED_PROPERTIES: &[&str] = &["token", "$token", "api_key", "$set", "$set_once", "$unset", "distinct_id"];

/// The event's properties with Brevo-safe keys, revenue facts added, nulls
/// removed and the total kept ≤ [`MAX_EVENT_PROPERTIES_BYTES`].
fn event_properties(ev: &Event) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in &ev.properties {
        if DROPPED_PROPERTIES.contains(&k.as_str()) || v.is_null() {
            continue;
        }
        let key = sanitize_name(k);
        if key.is_empty() || out.contains_key(&key) {
            continue;
        }
        out.insert(key, sanitize_value(v));
    }
    if let Some(r) = &ev.revenue {
        if let Some(a) = r.amount.and_then(serde_json::Number::from_f64) {
            out.entry("revenue").or_insert(Value::Number(a));
        }
        if let Some(c) = &r.currency {
            out.entry("currency").or_insert(Value::from(c.clone()));
        }
    }
    let size = serde_json::to_vec(&out).map(|v| v.len()).unwrap_or(0);
    if size > MAX_EVENT_PROPERTIES_BYTES {
        let dropped = shrink(&mut out, size);
        m::properties_dropped(dropped.len());
        tracing::warn!(
            event_id = %ev.id,
            size,
            limit = MAX_EVENT_PROPERTIES_BYTES,
            dropped = ?dropped,
            "event_properties over Brevo's limit: largest properties dropped"
        );
    }
    out
}

/// Drop the largest properties until the object fits; returns their names.
fn shrink(props: &mut Map<String, Value>, mut size: usize) -> Vec<String> {
    let mut sizes: Vec<(usize, String)> = props
        .iter()
        .map(|(k, v)| (k.len() + 4 + serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0), k.clone()))
        .collect();
    sizes.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut dropped = Vec::new();
    for (s, k) in sizes {
        if size <= MAX_EVENT_PROPERTIES_BYTES {
            break;
        }
        props.remove(&k);
        size = size.saturating_sub(s);
        dropped.push(k);
    }
    dropped
}

/// Nested objects get Brevo-safe keys too; nulls inside are removed.
fn sanitize_value(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, v) in o {
                if v.is_null() {
                    continue;
                }
                let key = sanitize_name(k);
                if !key.is_empty() && !out.contains_key(&key) {
                    out.insert(key, sanitize_value(v));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().filter(|v| !v.is_null()).map(sanitize_value).collect()),
        other => other.clone(),
    }
}

/// The `/v3/contacts/import` body for these entries (already merged per email).
pub fn import_body(list_ids: &[i64], entries: Vec<Value>) -> Value {
    json!({
        "jsonBody": entries,
        "listIds": list_ids,
        "updateExistingContacts": true,
        // Empty values must not wipe attributes Brevo already holds.
        "emptyContactsAttributes": false,
        "disableNotification": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-04T05:06:07.089Z").unwrap().with_timezone(&Utc)
    }

    fn track(name: &str) -> Event {
        let mut e = Event::new(Source::Posthog, "posthog", "phc_x", Kind::Track, name, at());
        e.distinct_id = Some("user-1".into());
        e.email = Some("ann@example.com".into());
        e
    }

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml, "t.yaml", &|_| None).unwrap()
    }

    fn ops(m: Mapped) -> Vec<Op> {
        match m {
            Mapped::Ops { ops, .. } => ops,
            other => panic!("expected ops, got {other:?}"),
        }
    }

    fn only_event(m: Mapped) -> Value {
        match ops(m).as_slice() {
            [Op::Event { item, bytes }] => {
                assert_eq!(*bytes, serde_json::to_vec(item).unwrap().len());
                item.clone()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_track_event_becomes_a_brevo_custom_event() {
        let mut e = track("$pageview");
        e.properties.insert("$current_url".into(), Value::from("https://x.io/a"));
        e.properties.insert("token".into(), Value::from("phc_x"));
        e.properties.insert("gone".into(), Value::Null);
        e.properties.insert("nested".into(), json!({"a b": 1, "n": null}));
        let item = only_event(map_event(&Config::default(), &e));
        assert_eq!(
            item,
            json!({
                "event_name": "_pageview",
                "event_date": "2026-03-04T05:06:07.089Z",
                "identifiers": {"email_id": "ann@example.com", "ext_id": "user-1"},
                "event_properties": {"_current_url": "https://x.io/a", "nested": {"a_b": 1}},
            })
        );
    }

    #[test]
    fn event_mapping_and_filters_apply() {
        let cfg = config(
            "connectors:\n  posthog:\n    event_filters: [signed_up, $pageview]\n    event_mapping: {signed_up: SignUp}\n",
        );
        assert_eq!(only_event(map_event(&cfg, &track("signed_up")))["event_name"], "SignUp");
        assert_eq!(only_event(map_event(&cfg, &track("$pageview")))["event_name"], "_pageview");
        assert_eq!(map_event(&cfg, &track("clicked")), Mapped::Skip("filtered"));
    }

    #[test]
    fn names_are_sanitized_and_capped() {
        assert_eq!(sanitize_name("invoice.paid"), "invoice_paid");
        assert_eq!(sanitize_name("Ünïcode name!"), "_n_code_name_");
        assert_eq!(sanitize_name(&"x".repeat(300)).len(), 255);
    }

    #[test]
    fn an_event_name_that_sanitizes_to_nothing_is_dead_lettered() {
        assert!(matches!(map_event(&Config::default(), &track("")), Mapped::Dead { reason: "unmappable", .. }));
    }

    #[test]
    fn no_identifier_is_dead_lettered_with_a_reason() {
        let mut e = track("x");
        e.email = None;
        e.distinct_id = None;
        match map_event(&Config::default(), &e) {
            Mapped::Dead { reason, detail } => {
                assert_eq!(reason, "no_identifier");
                assert!(detail.contains("neither an email nor a user id"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn email_only_and_id_only_identifiers() {
        let mut e = track("x");
        e.distinct_id = None;
        assert_eq!(
            only_event(map_event(&Config::default(), &e))["identifiers"],
            json!({"email_id": "ann@example.com"})
        );
        let mut e = track("x");
        e.email = None;
        assert_eq!(only_event(map_event(&Config::default(), &e))["identifiers"], json!({"ext_id": "user-1"}));
    }

    #[test]
    fn mapped_user_properties_become_contact_properties_with_batch_safe_types() {
        let cfg = config(
            "connectors:\n  posthog:\n    property_mapping: {$name: FIRSTNAME, plan: PLAN, paid: PAID, score: SCORE, seats: SEATS}\n",
        );
        let mut e = track("x");
        for (k, v) in [
            ("$name", json!("Ann")),
            ("plan", json!("pro")),
            ("paid", json!(true)),
            ("score", json!(2.5)),
            ("seats", json!(3.0)),
            ("unmapped", json!("x")),
        ] {
            e.user_properties.set.insert(k.into(), v);
        }
        let item = only_event(map_event(&cfg, &e));
        assert_eq!(
            item["contact_properties"],
            json!({"FIRSTNAME": "Ann", "PLAN": "pro", "PAID": "true", "SCORE": "2.5", "SEATS": 3})
        );
    }

    #[test]
    fn default_property_mapping_covers_first_and_last_name() {
        let mut e = track("x");
        e.user_properties.set.insert("first_name".into(), json!("Ann"));
        e.user_properties.set.insert("company".into(), json!("ACME"));
        assert_eq!(only_event(map_event(&Config::default(), &e))["contact_properties"], json!({"FIRSTNAME": "Ann"}));
    }

    #[test]
    fn oversize_properties_drop_the_largest_first() {
        let mut e = track("x");
        e.properties.insert("huge".into(), Value::from("a".repeat(40_000)));
        e.properties.insert("big".into(), Value::from("b".repeat(20_000)));
        e.properties.insert("small".into(), Value::from("c"));
        let item = only_event(map_event(&Config::default(), &e));
        let props = item["event_properties"].as_object().unwrap();
        assert!(!props.contains_key("huge"));
        assert!(props.contains_key("big") && props.contains_key("small"));
        assert!(serde_json::to_vec(props).unwrap().len() <= MAX_EVENT_PROPERTIES_BYTES);
    }

    #[test]
    fn revenue_is_added_to_event_properties() {
        let mut e = track("order");
        e.revenue =
            Some(crate::event::Revenue { amount: Some(12.5), currency: Some("eur".into()), ..Default::default() });
        let item = only_event(map_event(&Config::default(), &e));
        assert_eq!(item["event_properties"], json!({"revenue": 12.5, "currency": "eur"}));
    }

    fn identify(email: Option<&str>) -> Event {
        let mut e = Event::new(Source::Amplitude, "amplitude", "k", Kind::Identify, "$identify", at());
        e.distinct_id = Some("u-9".into());
        e.email = email.map(Into::into);
        e.user_properties.set.insert("first_name".into(), json!("Bo"));
        e.user_properties.set.insert("vip".into(), json!(true));
        e
    }

    #[test]
    fn identify_without_a_list_upserts_one_contact() {
        assert_eq!(
            ops(map_event(&Config::default(), &identify(Some("bo@x.io")))),
            vec![Op::Upsert {
                body: json!({"email": "bo@x.io", "ext_id": "u-9", "attributes": {"FIRSTNAME": "Bo"}, "updateEnabled": true})
            }]
        );
    }

    #[test]
    fn identify_with_a_default_list_is_imported() {
        let cfg = config("brevo:\n  default_list_id: 7\n");
        assert_eq!(
            ops(map_event(&cfg, &identify(Some("bo@x.io")))),
            vec![Op::Import {
                email: "bo@x.io".into(),
                attributes: json!({"FIRSTNAME": "Bo", "EXT_ID": "u-9"}).as_object().unwrap().clone(),
                list_ids: vec![7],
            }]
        );
    }

    #[test]
    fn list_rules_add_through_the_import_and_remove_through_list_calls() {
        let cfg = config(
            "connectors:\n  amplitude:\n    lists:\n      - {id: 3, name: vips, when_property: vip}\n      - {id: 4, name: trial, remove_on_events: [$identify]}\n",
        );
        let got = ops(map_event(&cfg, &identify(Some("bo@x.io"))));
        assert!(matches!(&got[0], Op::Import { list_ids, .. } if list_ids == &vec![3]));
        assert_eq!(got[1], Op::List { list_id: 4, add: false, contact: ContactRef::Email("bo@x.io".into()) });
        assert_eq!(got.len(), 2);
        // Without an email both go by ext_id, after the upsert.
        let got = ops(map_event(&cfg, &identify(None)));
        assert!(matches!(&got[0], Op::Upsert { .. }));
        assert_eq!(got[1], Op::List { list_id: 3, add: true, contact: ContactRef::ExtId("u-9".into()) });
        assert_eq!(got[2], Op::List { list_id: 4, add: false, contact: ContactRef::ExtId("u-9".into()) });
    }

    #[test]
    fn an_event_rule_puts_the_contact_on_a_list() {
        let cfg = config("connectors:\n  posthog:\n    lists:\n      - {id: 11, add_on_events: [signed_up]}\n");
        let got = ops(map_event(&cfg, &track("signed_up")));
        assert!(matches!(&got[0], Op::Event { .. }));
        assert_eq!(got[1], Op::Import { email: "ann@example.com".into(), attributes: Map::new(), list_ids: vec![11] });
    }

    #[test]
    fn group_and_alias_are_skipped() {
        let mut e = track("$groupidentify");
        e.kind = Kind::Group;
        assert_eq!(map_event(&Config::default(), &e), Mapped::Skip("unsupported_kind"));
    }

    #[test]
    fn webhook_sources_use_their_own_mapping() {
        let cfg = config(
            "connectors:\n  webhooks:\n    - {name: stripe, scheme: stripe, secrets: [s], event_mapping: {invoice.paid: InvoicePaid}}\n",
        );
        let mut e = Event::new(Source::Webhook, "stripe", "stripe", Kind::Webhook, "invoice.paid", at());
        e.email = Some("c@x.io".into());
        assert_eq!(only_event(map_event(&cfg, &e))["event_name"], "InvoicePaid");
        e.source_name = "gone".into();
        assert_eq!(only_event(map_event(&cfg, &e))["event_name"], "invoice_paid");
    }
}
