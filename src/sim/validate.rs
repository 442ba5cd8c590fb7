//! Brevo's request validation rules, as pure functions over parsed JSON.
//!
//! Sources: `reference/brevo/events.openapi.yaml` and
//! `swagger_definition_v3.yml`. Where the spec and its own prose disagree the
//! stricter reading wins unless the prose explicitly allows more, because a
//! client that passes the simulator must pass Brevo:
//! - `event_properties` values: the schema lists string/integer/object/array,
//!   the description adds number and boolean explicitly, so those pass; `null`
//!   is listed nowhere and is refused.
//! - `contact_properties` values: string/integer/boolean on `/events`, but only
//!   string/integer on `/events/batch` (its schema has no boolean and no prose
//!   adds one). Non-integer numbers are refused on both.
//! - `event_date`: RFC 3339 (the documented examples), not every ISO 8601 form.
//!
//! Brevo's exact error messages are not documented; the messages here name the
//! field and the rule. The codes are Brevo's (`missing_parameter`,
//! `invalid_parameter`).

use serde_json::{Map, Value};

/// Longest `event_name` and event property key.
pub const MAX_NAME_CHARS: usize = 255;
/// `event_properties` size limit ("50KB"), measured as serialized JSON.
pub const MAX_EVENT_PROPERTIES_BYTES: usize = 50 * 1024;
/// Events per `POST /v3/events/batch`.
pub const MAX_BATCH_EVENTS: usize = 200;
/// Request body size of `POST /v3/events/batch` ("512KB").
pub const MAX_BATCH_BYTES: usize = 512 * 1024;
/// Items per list add/remove call.
pub const MAX_LIST_ITEMS: usize = 150;
/// Request body size of `POST /v3/contacts/import` ("10MB").
pub const MAX_IMPORT_BYTES: usize = 10 * 1024 * 1024;
/// The documented keys of `identifiers`, in Brevo's resolution priority.
pub const IDENTIFIER_KEYS: [&str; 6] =
    ["contact_id", "email_id", "ext_id", "phone_id", "whatsapp_id", "landline_number_id"];

/// A refused request: Brevo's error code and a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
}

pub fn missing(message: impl Into<String>) -> Invalid {
    Invalid { code: "missing_parameter", message: message.into() }
}

pub fn invalid(message: impl Into<String>) -> Invalid {
    Invalid { code: "invalid_parameter", message: message.into() }
}

/// `[A-Za-z0-9_-]+`, the alphabet of event names and property keys.
pub fn is_brevo_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A plausible email address: one `@`, a non-empty local part, a dotted
/// domain, no whitespace. Brevo refuses addresses that fail far subtler checks.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else { return false };
    !local.is_empty()
        && !domain.contains('@')
        && domain.split('.').count() >= 2
        && domain.split('.').all(|p| !p.is_empty())
        && !s.chars().any(char::is_whitespace)
}

fn is_integer(v: &Value) -> bool {
    v.is_i64() || v.is_u64()
}

/// One custom event (`POST /v3/events` body or one item of a batch).
pub fn event(v: &Value, in_batch: bool) -> Result<(), Invalid> {
    let Some(ev) = v.as_object() else { return Err(invalid("event must be a JSON object")) };
    match ev.get("event_name") {
        None | Some(Value::Null) => return Err(missing("event_name is required")),
        Some(Value::String(name)) => {
            if name.chars().count() > MAX_NAME_CHARS {
                return Err(invalid(format!("event_name is limited to {MAX_NAME_CHARS} characters")));
            }
            if !is_brevo_name(name) {
                return Err(invalid(
                    "event_name may only contain alphanumeric characters, hyphens (-) and underscores (_)",
                ));
            }
        }
        Some(_) => return Err(invalid("event_name must be a string")),
    }
    identifiers(ev.get("identifiers"))?;
    if let Some(date) = ev.get("event_date") {
        match date.as_str() {
            Some(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => {}
            _ => return Err(invalid("event_date must be an ISO 8601 date-time such as 2024-01-24T17:39:57+01:00")),
        }
    }
    if let Some(props) = ev.get("contact_properties") {
        contact_properties(props, in_batch)?;
    }
    if let Some(props) = ev.get("event_properties") {
        event_properties(props)?;
    }
    if let Some(obj) = ev.get("object") {
        object(obj)?;
    }
    Ok(())
}

fn identifiers(v: Option<&Value>) -> Result<(), Invalid> {
    let ids = match v {
        None | Some(Value::Null) => return Err(missing("identifiers is required")),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(invalid("identifiers must be an object")),
    };
    let mut present = 0;
    for key in IDENTIFIER_KEYS {
        let Some(value) = ids.get(key) else { continue };
        match (key, value) {
            (_, Value::Null) => continue,
            ("contact_id", v) if v.as_u64().is_some_and(|n| n > 0) => {}
            ("contact_id", _) => return Err(invalid("identifiers.contact_id must be a positive integer")),
            ("email_id", Value::String(s)) if !is_email(s) => {
                return Err(invalid(format!("identifiers.email_id is not a valid email address: {s:?}")))
            }
            (_, Value::String(s)) if s.is_empty() => {
                return Err(invalid(format!("identifiers.{key} must not be empty")))
            }
            (_, Value::String(_)) => {}
            (_, _) => return Err(invalid(format!("identifiers.{key} must be a string"))),
        }
        present += 1;
    }
    if present == 0 {
        return Err(missing(format!("identifiers: at least one of {} is required", IDENTIFIER_KEYS.join(", "))));
    }
    Ok(())
}

fn contact_properties(v: &Value, in_batch: bool) -> Result<(), Invalid> {
    let Some(props) = v.as_object() else { return Err(invalid("contact_properties must be an object")) };
    for (k, value) in props {
        let ok = match value {
            Value::String(_) => true,
            Value::Number(_) => is_integer(value),
            Value::Bool(_) => !in_batch,
            _ => false,
        };
        if !ok {
            let allowed = if in_batch { "a string or an integer" } else { "a string, an integer or a boolean" };
            return Err(invalid(format!("contact_properties.{k} must be {allowed}")));
        }
    }
    Ok(())
}

fn event_properties(v: &Value) -> Result<(), Invalid> {
    let Some(props) = v.as_object() else { return Err(invalid("event_properties must be an object")) };
    for (k, value) in props {
        if value.is_null() {
            return Err(invalid(format!("event_properties.{k} must be a string, number, boolean, object or array")));
        }
    }
    check_keys(props, "event_properties")?;
    let size = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
    if size > MAX_EVENT_PROPERTIES_BYTES {
        return Err(invalid(format!(
            "event_properties is {size} bytes; the limit is {MAX_EVENT_PROPERTIES_BYTES} bytes (50KB)"
        )));
    }
    Ok(())
}

/// Keys at every depth: the docs apply the key rule to "top level properties
/// and nested properties".
fn check_keys(m: &Map<String, Value>, at: &str) -> Result<(), Invalid> {
    for (k, v) in m {
        if k.chars().count() > MAX_NAME_CHARS || !is_brevo_name(k) {
            return Err(invalid(format!(
                "{at}: key {k:?} must be 1-{MAX_NAME_CHARS} alphanumeric characters, hyphens or underscores"
            )));
        }
        check_nested(v, &format!("{at}.{k}"))?;
    }
    Ok(())
}

fn check_nested(v: &Value, at: &str) -> Result<(), Invalid> {
    match v {
        Value::Object(m) => check_keys(m, at),
        Value::Array(items) => items.iter().try_for_each(|i| check_nested(i, at)),
        _ => Ok(()),
    }
}

fn object(v: &Value) -> Result<(), Invalid> {
    let Some(obj) = v.as_object() else { return Err(invalid("object must be an object")) };
    if obj.get("type").is_some_and(|t| !t.is_string()) {
        return Err(invalid("object.type must be a string"));
    }
    match obj.get("identifiers") {
        None => Ok(()),
        Some(Value::Object(ids)) if ids.values().all(Value::is_string) => Ok(()),
        Some(_) => Err(invalid("object.identifiers must be an object of strings (id, ext_id)")),
    }
}

/// `attributes` of `POST /v3/contacts`: number, string, boolean or an array
/// of strings (multiple-choice).
pub fn contact_attributes(v: &Value) -> Result<(), Invalid> {
    let Some(attrs) = v.as_object() else { return Err(invalid("attributes must be an object")) };
    for (k, value) in attrs {
        let ok = match value {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => true,
            Value::Array(items) => items.iter().all(Value::is_string),
            _ => false,
        };
        if !ok {
            return Err(invalid(format!("attributes.{k} must be a number, string, boolean or array of strings")));
        }
    }
    Ok(())
}

/// An optional array of existing-list ids (`listIds`, `unlinkListIds`).
pub fn list_ids(v: Option<&Value>, field: &str) -> Result<Vec<u64>, Invalid> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_u64().ok_or_else(|| invalid(format!("{field} must be an array of positive integers"))))
            .collect(),
        Some(_) => Err(invalid(format!("{field} must be an array of integers"))),
    }
}

/// An optional boolean field.
pub fn flag(obj: &Map<String, Value>, field: &str) -> Result<Option<bool>, Invalid> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(format!("{field} must be a boolean"))),
    }
}

/// An optional string field.
pub fn string<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, Invalid> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!("{field} must be a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok_event() -> Value {
        json!({
            "event_name": "order_completed",
            "event_date": "2024-01-24T17:39:57+01:00",
            "identifiers": {"email_id": "jane@example.com", "ext_id": "u-1"},
            "contact_properties": {"FIRSTNAME": "Jane", "AGE": 37},
            "event_properties": {"amount": 12.5, "paid": true, "items": [{"sku-id": "A1"}], "meta": {"src_x": "web"}}
        })
    }

    fn code_of(v: Value, batch: bool) -> Option<&'static str> {
        event(&v, batch).err().map(|e| e.code)
    }

    #[test]
    fn a_documented_event_passes() {
        assert_eq!(event(&ok_event(), false), Ok(()));
        assert_eq!(event(&ok_event(), true), Ok(()));
        assert_eq!(event(&json!({"event_name": "x", "identifiers": {"contact_id": 7}}), true), Ok(()));
    }

    #[test]
    fn event_name_rules() {
        let mut e = ok_event();
        e.as_object_mut().unwrap().remove("event_name");
        assert_eq!(code_of(e, false), Some("missing_parameter"));
        let mut e = ok_event();
        e["event_name"] = json!("order completed");
        assert_eq!(code_of(e, false), Some("invalid_parameter"));
        let mut e = ok_event();
        e["event_name"] = json!("a".repeat(255));
        assert_eq!(code_of(e.clone(), false), None);
        e["event_name"] = json!("a".repeat(256));
        assert_eq!(code_of(e, false), Some("invalid_parameter"));
        let mut e = ok_event();
        e["event_name"] = json!(42);
        assert_eq!(code_of(e, false), Some("invalid_parameter"));
    }

    #[test]
    fn identifiers_need_one_documented_key() {
        let mut e = ok_event();
        e.as_object_mut().unwrap().remove("identifiers");
        assert_eq!(code_of(e, false), Some("missing_parameter"));
        let mut e = ok_event();
        e["identifiers"] = json!({"user_id": "u-1"});
        assert_eq!(code_of(e, false), Some("missing_parameter"));
        let mut e = ok_event();
        e["identifiers"] = json!({"email_id": "not-an-email"});
        assert_eq!(code_of(e, false), Some("invalid_parameter"));
        let mut e = ok_event();
        e["identifiers"] = json!({"contact_id": "12"});
        assert_eq!(code_of(e, false), Some("invalid_parameter"));
        let mut e = ok_event();
        e["identifiers"] = json!({"ext_id": ""});
        assert_eq!(code_of(e, false), Some("invalid_parameter"));
        let mut e = ok_event();
        e["identifiers"] = json!({"phone_id": "+33600000000"});
        assert_eq!(code_of(e, false), None);
    }

    #[test]
    fn contact_properties_types_differ_between_single_and_batch() {
        let mut e = ok_event();
        e["contact_properties"] = json!({"OPT_IN": true});
        assert_eq!(code_of(e.clone(), false), None);
        assert_eq!(code_of(e, true), Some("invalid_parameter"));
        let mut e = ok_event();
        e["contact_properties"] = json!({"SCORE": 1.5});
        assert_eq!(code_of(e, false), Some("invalid_parameter"));
        let mut e = ok_event();
        e["contact_properties"] = json!({"TAGS": ["a"]});
        assert_eq!(code_of(e, false), Some("invalid_parameter"));
    }

    #[test]
    fn event_properties_keys_size_and_nulls() {
        let mut e = ok_event();
        e["event_properties"] = json!({"$current_url": "https://x"});
        assert_eq!(code_of(e, true), Some("invalid_parameter"));
        let mut e = ok_event();
        e["event_properties"] = json!({"outer": {"inner key": 1}});
        assert_eq!(code_of(e, true), Some("invalid_parameter"));
        let mut e = ok_event();
        e["event_properties"] = json!({"gone": null});
        assert_eq!(code_of(e, true), Some("invalid_parameter"));
        // Exactly at the limit passes, one byte over fails.
        let overhead = serde_json::to_vec(&json!({"blob": ""})).unwrap().len();
        let mut e = ok_event();
        e["event_properties"] = json!({"blob": "x".repeat(MAX_EVENT_PROPERTIES_BYTES - overhead)});
        assert_eq!(code_of(e.clone(), true), None);
        e["event_properties"] = json!({"blob": "x".repeat(MAX_EVENT_PROPERTIES_BYTES - overhead + 1)});
        assert_eq!(code_of(e, true), Some("invalid_parameter"));
    }

    #[test]
    fn event_date_must_be_rfc3339() {
        let mut e = ok_event();
        e["event_date"] = json!("24/01/2024");
        assert_eq!(code_of(e.clone(), false), Some("invalid_parameter"));
        e["event_date"] = json!("2024-01-24T17:39:57.123Z");
        assert_eq!(code_of(e, false), None);
    }

    #[test]
    fn emails_and_names() {
        assert!(is_email("a.b+c@example.co.uk"));
        for bad in ["", "a", "a@b", "@x.io", "a@@x.io", "a b@x.io", "a@x..io"] {
            assert!(!is_email(bad), "{bad:?} accepted");
        }
        assert!(is_brevo_name("Order_Completed-2"));
        assert!(!is_brevo_name("order.completed"));
        assert!(!is_brevo_name(""));
    }

    #[test]
    fn contact_attribute_values() {
        assert_eq!(contact_attributes(&json!({"A": 1, "B": "x", "C": true, "D": ["x", "y"]})), Ok(()));
        assert!(contact_attributes(&json!({"A": null})).is_err());
        assert!(contact_attributes(&json!({"A": {"x": 1}})).is_err());
        assert!(contact_attributes(&json!({"A": [1]})).is_err());
        assert_eq!(list_ids(Some(&json!([1, 2])), "listIds"), Ok(vec![1, 2]));
        assert!(list_ids(Some(&json!(["1"])), "listIds").is_err());
    }
}
