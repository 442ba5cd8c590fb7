//! Amplitude's request and event validation, with its exact refusals.
//!
//! A request with any invalid event is refused whole (400) with per-field
//! maps of event indexes; the official SDKs drop exactly the listed events
//! and resend the rest, so every index must be right and every problem of
//! every event must be listed (a missed one costs the client a round trip,
//! a wrong one loses a good event).
//!
//! Rules, from the HTTP V2 / Batch docs and observed server answers:
//! * `event_type` required (string); `user_id` or `device_id` required.
//! * ids: strings (numbers are taken as their text, as Amplitude does), at
//!   least `options.min_id_length` (default 5) characters, and not one of
//!   the documented placeholder values (`null`, `undefined`, all-zero
//!   UUID, ...).
//! * `time`: integer milliseconds since epoch.
//! * typed numbers: `price`, `revenue`, `location_lat`, `location_lng`
//!   (numbers); `quantity`, `session_id`, `event_id` (integers).
//! * objects: `event_properties`, `user_properties`, `groups`,
//!   `group_properties`, `plan`; at most 40 levels deep.
//! * every string (keys too) at most 1024 characters.
//! * unknown extra fields are accepted.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::ingress::IngressError;

/// Events per request (both APIs).
pub const MAX_EVENTS: usize = 2000;
/// Amplitude's default `min_id_length`.
pub const DEFAULT_MIN_ID_LENGTH: usize = 5;
/// Every string value or key, in characters.
pub const MAX_STRING_CHARS: usize = 1024;
/// "Object depth may not exceed 40 layers."
pub const MAX_DEPTH: usize = 40;

/// Id values Amplitude refuses whatever their length (compared without
/// regard to ASCII case). `""` is the two-character string the docs list.
const INVALID_IDS: &[&str] = &[
    "anonymous",
    "nil",
    "none",
    "null",
    "n/a",
    "na",
    "undefined",
    "unknown",
    "\"\"",
    "00000000-0000-0000-0000-000000000000",
    "{}",
    "lmy47d",
    "0",
    "-1",
];

const NUMBER_FIELDS: &[&str] = &["price", "revenue", "location_lat", "location_lng"];
const INTEGER_FIELDS: &[&str] = &["quantity", "session_id", "event_id"];
const OBJECT_FIELDS: &[&str] = &["event_properties", "user_properties", "groups", "group_properties", "plan"];
/// Documented string fields whose type is enforced. The other documented
/// strings are not: refusing what Amplitude coerces would make SDKs drop
/// events Amplitude keeps.
const STRING_FIELDS: &[&str] = &["event_type", "insert_id"];

/// A parsed upload request (`/2/httpapi`, `/batch`), events not yet checked.
#[derive(Debug)]
pub struct Upload {
    pub api_key: String,
    pub events: Vec<Value>,
    pub min_id_length: usize,
}

/// The request-level checks: body present, JSON object, `api_key` and
/// `events` there. Key acceptance and the event count are the caller's.
pub fn parse_upload(body: &[u8]) -> Result<Upload, IngressError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(IngressError::Malformed { code: "missing_body", message: "Missing request body".into() });
    }
    let invalid_json = || IngressError::Malformed { code: "invalid_json", message: "Invalid JSON request body".into() };
    // A map, not a derived struct: serde would also read a JSON array into
    // a struct positionally.
    let Ok(Value::Object(mut req)) = serde_json::from_slice::<Value>(body) else {
        return Err(invalid_json());
    };
    let api_key = match req.remove("api_key") {
        Some(Value::String(k)) if !k.is_empty() => k,
        _ => return Err(IngressError::MissingField { field: "api_key" }),
    };
    let events = match req.remove("events") {
        Some(Value::Array(events)) => events,
        None | Some(Value::Null) => return Err(IngressError::MissingField { field: "events" }),
        Some(_) => return Err(invalid_json()),
    };
    Ok(Upload { api_key, events, min_id_length: min_id_length(req.get("options")) })
}

/// `options.min_id_length` when it is a non-negative integer, else the
/// default (a malformed option is not worth refusing the events for).
fn min_id_length(options: Option<&Value>) -> usize {
    options
        .and_then(|o| o.get("min_id_length"))
        .and_then(Value::as_u64)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        .unwrap_or(DEFAULT_MIN_ID_LENGTH)
}

/// Which events failed which check: field → event indexes, per map.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Problems {
    pub missing: BTreeMap<String, Vec<usize>>,
    pub invalid: BTreeMap<String, Vec<usize>>,
    pub id_lengths: BTreeMap<String, Vec<usize>>,
}

impl Problems {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.invalid.is_empty() && self.id_lengths.is_empty()
    }

    fn add(map: &mut BTreeMap<String, Vec<usize>>, field: &str, index: usize) {
        let list = map.entry(field.to_string()).or_default();
        if list.last() != Some(&index) {
            list.push(index);
        }
    }

    /// The 400 Amplitude answers. Its `error` text follows what the server
    /// says for the dominant problem (event-level missing fields share the
    /// request-level text, as Amplitude's own do); every non-empty map is
    /// included so a client drops all bad events in one round trip.
    pub fn into_error(self) -> IngressError {
        let message = if !self.missing.is_empty() {
            "Request missing required field"
        } else if !self.invalid.is_empty() {
            "Invalid field values on some events"
        } else {
            "Invalid id length for user_id or device_id"
        };
        let mut details = Map::new();
        for (key, map) in [
            ("events_with_missing_fields", self.missing),
            ("events_with_invalid_fields", self.invalid),
            ("events_with_invalid_id_lengths", self.id_lengths),
        ] {
            if !map.is_empty() {
                let obj = map.into_iter().map(|(f, idx)| (f, Value::from(idx))).collect();
                details.insert(key.into(), Value::Object(obj));
            }
        }
        IngressError::InvalidEvents { message: message.into(), details }
    }
}

/// Check every event; `Err` carries the index maps.
pub fn validate_events(events: &[Value], min_id_length: usize) -> Result<(), IngressError> {
    let mut problems = Problems::default();
    for (i, ev) in events.iter().enumerate() {
        check_event(i, ev, min_id_length, &mut problems);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.into_error())
    }
}

/// Record every problem of event `index` in `problems`.
pub fn check_event(index: usize, ev: &Value, min_id_length: usize, problems: &mut Problems) {
    let Value::Object(obj) = ev else {
        // Not an event at all: listed so the SDK drops it rather than
        // resending it forever.
        Problems::add(&mut problems.invalid, "event", index);
        return;
    };
    match obj.get("event_type") {
        None | Some(Value::Null) => Problems::add(&mut problems.missing, "event_type", index),
        Some(Value::String(s)) if s.is_empty() => Problems::add(&mut problems.missing, "event_type", index),
        _ => {}
    }
    let user = check_id(obj.get("user_id"), "user_id", index, min_id_length, problems);
    let device = check_id(obj.get("device_id"), "device_id", index, min_id_length, problems);
    if !user && !device {
        // Amplitude derives a missing device_id from user_id, so with
        // neither it is device_id that is missing (unverified: the server's
        // exact key; SDKs only read the indexes).
        Problems::add(&mut problems.missing, "device_id", index);
    }
    for (field, value) in obj {
        if value.is_null() || field == "user_id" || field == "device_id" {
            continue;
        }
        let f = field.as_str();
        let type_ok = if f == "time" {
            value.as_i64().is_some_and(|ms| chrono::DateTime::from_timestamp_millis(ms).is_some())
        } else if NUMBER_FIELDS.contains(&f) {
            value.is_number()
        } else if INTEGER_FIELDS.contains(&f) {
            value.is_i64() || value.is_u64()
        } else if OBJECT_FIELDS.contains(&f) {
            value.is_object()
        } else if STRING_FIELDS.contains(&f) {
            value.is_string()
        } else {
            true
        };
        if !type_ok || !within_limits(value, 0) || too_long(field) {
            Problems::add(&mut problems.invalid, f, index);
        }
    }
}

/// Check one id field; true when it holds a usable id.
fn check_id(value: Option<&Value>, field: &str, index: usize, min_len: usize, problems: &mut Problems) -> bool {
    let Some(id) = value.and_then(id_text) else {
        if value.is_some_and(|v| !v.is_null() && !matches!(v, Value::String(s) if s.is_empty())) {
            // An object, array or bool where an id belongs.
            Problems::add(&mut problems.invalid, field, index);
            return true;
        }
        return false;
    };
    let chars = id.chars().count();
    if chars > MAX_STRING_CHARS || INVALID_IDS.iter().any(|bad| id.eq_ignore_ascii_case(bad)) {
        Problems::add(&mut problems.invalid, field, index);
    } else if chars < min_len {
        Problems::add(&mut problems.id_lengths, field, index);
    }
    true
}

/// An id as text: strings as they are, numbers as their decimal text (the
/// server measures a numeric id's length the same way). Empty is absent.
pub fn id_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::String(s) if !s.is_empty() => Some(std::borrow::Cow::Borrowed(s.as_str())),
        Value::Number(n) => Some(std::borrow::Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// Strings (values and keys) within [`MAX_STRING_CHARS`] and nesting within
/// [`MAX_DEPTH`]. serde_json's own recursion limit bounds this walk.
fn within_limits(v: &Value, depth: usize) -> bool {
    match v {
        Value::String(s) => !too_long(s),
        Value::Array(items) => depth < MAX_DEPTH && items.iter().all(|x| within_limits(x, depth + 1)),
        Value::Object(obj) => depth < MAX_DEPTH && obj.iter().all(|(k, x)| !too_long(k) && within_limits(x, depth + 1)),
        _ => true,
    }
}

fn too_long(s: &str) -> bool {
    // Bytes bound characters from above: count only when it can matter.
    s.len() > MAX_STRING_CHARS && s.chars().count() > MAX_STRING_CHARS
}
