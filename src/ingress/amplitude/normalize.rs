//! One validated Amplitude event → the normalized [`Event`].
//!
//! * `$identify` → identify, `$groupidentify` → group, anything else track.
//! * `user_properties` (on every kind: Amplitude applies them to the user
//!   whatever the event) → [`UserProperties`]: `$set`, `$setOnce`, `$unset`
//!   typed; `$add`, `$append`, `$prepend`, `$preInsert`, `$postInsert`,
//!   `$remove`, `$clearAll` kept verbatim in `other`; plain keys are sets.
//! * revenue fields (top level, else the SDK's `$price`-style event
//!   properties) → [`Revenue`].
//! * `insert_id` → `id`; `time` → `timestamp`; `ip` (`$remote` = the peer),
//!   `user_agent`, `library` → context; every other field (device,
//!   location, session, groups, plan, unknown extras) → `context.extra`, so
//!   nothing the client sent is lost.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::validate::id_text;
use crate::event::{Event, Kind, Library, Revenue, Source, UserProperties};
use crate::ingress::without_nul;

/// `source_name` of every Amplitude envelope.
pub const SOURCE_NAME: &str = "amplitude";

/// Request facts every event of one request shares.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    /// The project: the request's API key.
    pub api_key: &'a str,
    pub received_at: DateTime<Utc>,
    /// The peer address, for `ip: "$remote"`.
    pub peer_ip: Option<String>,
}

/// One accepted event and the raw identifiers the ingress still needs:
/// dedup is per device (else user) and throttling per user and per device.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub event: Event,
    pub user_id: Option<String>,
    pub device_id: Option<String>,
    pub insert_id: Option<String>,
}

/// Normalize one event that passed [`super::validate::check_event`].
pub fn normalize(mut obj: Map<String, Value>, origin: &Origin<'_>) -> Accepted {
    let name = take_text(&mut obj, "event_type").unwrap_or_default();
    let kind = match name.as_str() {
        "$identify" => Kind::Identify,
        "$groupidentify" => Kind::Group,
        _ => Kind::Track,
    };
    let id = |v: Option<Value>| v.as_ref().and_then(id_text).map(Cow::into_owned).map(without_nul);
    let user_id = id(obj.remove("user_id"));
    let device_id = id(obj.remove("device_id"));
    let insert_id = take_text(&mut obj, "insert_id").filter(|s| !s.is_empty()).map(without_nul);

    let mut ev = Event::new(Source::Amplitude, SOURCE_NAME, origin.api_key, kind, &name, origin.received_at);
    ev.distinct_id = user_id.clone().or_else(|| device_id.clone());
    if let Some(id) = &insert_id {
        ev.id = id.clone();
    }
    // Without `time` Amplitude uses the upload time, which received_at is.
    if let Some(t) = obj.remove("time").and_then(|t| t.as_i64()).and_then(DateTime::from_timestamp_millis) {
        ev.timestamp = t;
    }
    if let Some(Value::Object(p)) = obj.remove("event_properties") {
        ev.properties = p;
    }
    if let Some(Value::Object(up)) = obj.remove("user_properties") {
        ev.user_properties = user_properties(up);
    }
    ev.email = ["email", "Email"]
        .iter()
        .find_map(|k| ev.user_properties.set.get(*k).or_else(|| ev.user_properties.set_once.get(*k)))
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty())
        .map(str::to_string);
    ev.revenue = revenue(&mut obj, &ev.properties);

    match obj.remove("ip") {
        Some(Value::String(ip)) if ip == "$remote" => ev.context.ip = origin.peer_ip.clone(),
        Some(Value::String(ip)) if !ip.is_empty() => ev.context.ip = Some(ip),
        Some(other) => keep(&mut obj, "ip", other),
        None => {}
    }
    match obj.remove("user_agent") {
        Some(Value::String(ua)) if !ua.is_empty() => ev.context.user_agent = Some(ua),
        Some(other) => keep(&mut obj, "user_agent", other),
        None => {}
    }
    // The SDKs send "amplitude-python/1.3.0".
    match obj.remove("library") {
        Some(Value::String(lib)) if !lib.is_empty() => {
            let (name, version) = match lib.split_once('/') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (lib, None),
            };
            ev.context.library = Some(Library { name, version });
        }
        Some(other) => keep(&mut obj, "library", other),
        None => {}
    }
    if let Some(d) = &device_id {
        obj.insert("device_id".into(), Value::from(d.clone()));
    }
    obj.retain(|_, v| !v.is_null());
    ev.context.extra = obj;
    Accepted { event: ev, user_id, device_id, insert_id }
}

fn keep(obj: &mut Map<String, Value>, key: &str, v: Value) {
    if !v.is_null() {
        obj.insert(key.into(), v);
    }
}

/// A string field, numbers taken as their text.
fn take_text(obj: &mut Map<String, Value>, key: &str) -> Option<String> {
    match obj.remove(key)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => None,
        other => {
            obj.insert(key.into(), other);
            None
        }
    }
}

/// Amplitude user-property operations → the envelope's typed operations.
pub fn user_properties(up: Map<String, Value>) -> UserProperties {
    let mut out: UserProperties = UserProperties::default();
    let mut plain = Map::new();
    for (op, v) in up {
        match (op.as_str(), v) {
            ("$set", Value::Object(m)) => out.set.extend(m),
            ("$setOnce", Value::Object(m)) => out.set_once.extend(m),
            ("$unset", Value::Object(m)) => out.unset.extend(m.into_iter().map(|(k, _)| k)),
            ("$unset", Value::Array(names)) => {
                out.unset.extend(names.into_iter().filter_map(|n| n.as_str().map(str::to_string)))
            }
            ("$unset", Value::String(name)) => out.unset.push(name),
            (
                "$set" | "$setOnce" | "$unset" | "$add" | "$append" | "$prepend" | "$preInsert" | "$postInsert"
                | "$remove" | "$clearAll",
                v,
            ) => {
                out.other.insert(op, v);
            }
            (_, v) => {
                plain.insert(op, v);
            }
        }
    }
    // Plain keys are sets; an explicit `$set` of the same key wins.
    for (k, v) in plain {
        out.set.entry(k).or_insert(v);
    }
    out
}

/// Revenue from the top-level fields, else from the `$price`-style event
/// properties the SDKs' Revenue helpers send. Amplitude: revenue = price ×
/// quantity when both are given, else the `revenue` field, else the price.
fn revenue(obj: &mut Map<String, Value>, props: &Map<String, Value>) -> Option<Revenue> {
    let mut field = |top: &str, prop: &str| -> Option<Value> {
        obj.remove(top).filter(|v| !v.is_null()).or_else(|| props.get(prop).filter(|v| !v.is_null()).cloned())
    };
    let text = |v: Value| match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let price = field("price", "$price").and_then(|v| v.as_f64());
    let quantity = field("quantity", "$quantity").and_then(|v| v.as_i64());
    let total = field("revenue", "$revenue").and_then(|v| v.as_f64());
    let product_id = field("productId", "$productId").and_then(text);
    let revenue_type = field("revenueType", "$revenueType").and_then(text);
    let currency = field("currency", "$currency").and_then(text);
    if price.is_none()
        && quantity.is_none()
        && total.is_none()
        && product_id.is_none()
        && revenue_type.is_none()
        && currency.is_none()
    {
        return None;
    }
    let amount = match (price, quantity) {
        (Some(p), Some(q)) => Some(p * q as f64),
        _ => total.or(price),
    };
    Some(Revenue { amount, amount_minor: None, currency, price, quantity, product_id, revenue_type })
}
