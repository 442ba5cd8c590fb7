//! One PostHog wire event → one [`Event`] envelope.
//!
//! What goes where (the contract the forwarder relies on):
//! - kind from the event name (`$identify`, `$set`, `$set_once` → identify;
//!   `$groupidentify` → group; `$create_alias` → alias; `$pageview` → page;
//!   `$screen` → screen; anything else → track);
//! - `user_properties.set` / `set_once` merge the top-level `$set` /
//!   `$set_once` over the ones inside `properties` (top level wins, as in
//!   PostHog's ingestion); `properties.$unset` becomes `unset`;
//! - `email` from `$set.email`, else `properties.$email`, else `properties.email`;
//! - `context`: `$anon_distinct_id`, `$lib`/`$lib_version`, the client ip
//!   (`$ip` wins over the request's address), the request's user agent;
//! - `timestamp` with PostHog's clock-skew correction (see [`event_time`]);
//! - `id` is the client's `uuid` (canonical form), else a new UUIDv7.
//!
//! Keys lifted into envelope fields (`$set`, `$set_once`, `$unset`,
//! `$anon_distinct_id`, `$lib`, `$lib_version`, `$ip`, `token`,
//! `distinct_id`) are removed from `properties`; everything else stays.

use std::borrow::Cow;

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::event::{Event, Kind, Library, RawProps, Source, UserProperties};

/// What normalization reads and lifts out of an event's properties, whether
/// they are parsed (`Map`) or the client's raw JSON ([`RawProps`]).
pub trait Props: Serialize + Sized {
    /// The value of `key`.
    fn value(&self, key: &str) -> Option<Cow<'_, Value>>;
    /// Remove `key`, returning its value.
    fn take(&mut self, key: &str) -> Option<Value>;
    /// Remove `key`, dropping its value (without parsing it when avoidable).
    fn discard(&mut self, key: &str) {
        self.take(key);
    }
    /// Whether `key` holds an object (without parsing it when avoidable).
    fn holds_object(&self, key: &str) -> bool {
        self.value(key).is_some_and(|v| v.is_object())
    }
    /// Remove `key` when it holds an object and return that object, held
    /// the way `self` is; otherwise an empty one, and `key` stays.
    fn take_object(&mut self, key: &str) -> Self;
    /// Add `over`'s keys; where both hold a key, `over`'s value wins.
    fn overlay(&mut self, over: Self);
}

impl Props for Map<String, Value> {
    fn value(&self, key: &str) -> Option<Cow<'_, Value>> {
        self.get(key).map(Cow::Borrowed)
    }
    fn take(&mut self, key: &str) -> Option<Value> {
        self.remove(key)
    }
    fn take_object(&mut self, key: &str) -> Self {
        if !self.holds_object(key) {
            return Map::new();
        }
        match self.remove(key) {
            Some(Value::Object(o)) => o,
            _ => Map::new(),
        }
    }
    fn overlay(&mut self, over: Self) {
        self.extend(over);
    }
}

impl Props for RawProps<'_> {
    fn value(&self, key: &str) -> Option<Cow<'_, Value>> {
        self.get(key).map(Cow::Owned)
    }
    fn take(&mut self, key: &str) -> Option<Value> {
        self.remove(key)
    }
    fn discard(&mut self, key: &str) {
        self.remove_raw(key);
    }
    fn holds_object(&self, key: &str) -> bool {
        self.raw(key).is_some_and(|v| v.starts_with('{'))
    }
    fn take_object(&mut self, key: &str) -> Self {
        if !self.holds_object(key) {
            return RawProps::default();
        }
        // Raw values come from a parsed request: an object reads as one.
        self.remove_raw(key).and_then(|raw| RawProps::parse(raw).ok()).unwrap_or_default()
    }
    fn overlay(&mut self, over: Self) {
        RawProps::overlay(self, over);
    }
}

/// PostHog truncates longer distinct ids to this many characters.
pub const DISTINCT_ID_MAX_CHARS: usize = 200;

/// Timestamps further than this in the future are replaced by "now"
/// (PostHog: 23 hours).
const FUTURE_CUTOFF_HOURS: i64 = 23;

/// Request-level facts every event of one request shares.
pub struct Shared<'a> {
    /// The validated project token.
    pub token: &'a str,
    pub now: DateTime<Utc>,
    /// When the client says it sent the request; drives skew correction.
    pub sent_at: Option<DateTime<Utc>>,
    /// The request's client address; `None` when the client asked not to
    /// record it (`ip=0`).
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Library identity from the request (v1's `PostHog-Sdk-Info`, or the
    /// `ver` query parameter for the version), used when the event has none.
    pub library: Option<Library>,
    pub historical_migration: bool,
}

/// Map an event name to its kind.
pub fn kind_of(name: &str) -> Kind {
    match name {
        "$identify" | "$set" | "$set_once" => Kind::Identify,
        "$groupidentify" => Kind::Group,
        "$create_alias" => Kind::Alias,
        "$pageview" => Kind::Page,
        "$screen" => Kind::Screen,
        _ => Kind::Track,
    }
}

/// The distinct id as PostHog reads it: strings as they are, anything else
/// (numbers, even arrays) as its JSON text; NUL replaced; at most 200
/// characters. `None` when missing, null or empty.
pub fn distinct_id_text(value: &Value) -> Option<String> {
    distinct_id_from(Cow::Borrowed(value))
}

/// [`distinct_id_text`], moving an owned string instead of copying it.
fn distinct_id_from(value: Cow<'_, Value>) -> Option<String> {
    let text = match value {
        Cow::Owned(Value::String(s)) => s,
        Cow::Borrowed(Value::String(s)) => s.clone(),
        v if v.is_null() => return None,
        other => other.to_string(),
    };
    if text.is_empty() {
        return None;
    }
    let text = crate::ingress::without_nul(text);
    Some(if text.len() > DISTINCT_ID_MAX_CHARS { text.chars().take(DISTINCT_ID_MAX_CHARS).collect() } else { text })
}

/// Where the distinct id sits: `distinct_id`, `$distinct_id`, then
/// `properties.distinct_id` (first non-null wins).
pub fn find_distinct_id(event: &impl Props, props: &impl Props) -> Option<String> {
    fn present(v: Option<Cow<'_, Value>>) -> Option<Cow<'_, Value>> {
        v.filter(|v| !v.is_null())
    }
    present(event.value("distinct_id"))
        .or_else(|| present(event.value("$distinct_id")))
        .or_else(|| present(props.value("distinct_id")))
        .and_then(distinct_id_from)
}

/// Parse ISO 8601 as clients write it: RFC 3339 (with `T` or a space),
/// or without an offset (read as UTC), or a bare date.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| Utc.from_utc_datetime(&t))
}

/// When the event happened, PostHog's way:
/// - `timestamp` given: corrected by the client's clock skew
///   (`now - sent_at`) when `sent_at` is known and not disabled;
/// - else `offset` (milliseconds before sending): `now - offset`;
/// - else now. An unreadable timestamp is "now", not a refusal (PostHog
///   accepts the event and records an ingestion warning).
///
/// Results more than 23 hours ahead of now are clamped to now.
pub fn event_time(
    timestamp: Option<&Value>,
    offset: Option<&Value>,
    sent_at: Option<DateTime<Utc>>,
    skew_correction: bool,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let parsed = timestamp.and_then(|v| match v {
        Value::String(s) => parse_time(s),
        Value::Number(n) => n.as_i64().and_then(DateTime::from_timestamp_millis),
        _ => None,
    });
    let t = match (parsed, offset.and_then(as_millis)) {
        (Some(ts), _) => match sent_at.filter(|_| skew_correction) {
            Some(sent) => ts.checked_add_signed(now.signed_duration_since(sent)).unwrap_or(ts),
            None => ts,
        },
        (None, Some(ms)) => Duration::try_milliseconds(ms).and_then(|d| now.checked_sub_signed(d)).unwrap_or(now),
        (None, None) => now,
    };
    clamp_future(t, now)
}

pub fn clamp_future(t: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    if t.signed_duration_since(now) > Duration::hours(FUTURE_CUTOFF_HOURS) {
        now
    } else {
        t
    }
}

fn as_millis(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "1"),
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => false,
    }
}

/// A string value, trimmed, unless empty; an owned string that needs no
/// trimming is moved, not copied.
fn non_empty_str(v: Option<Cow<'_, Value>>) -> Option<String> {
    let s = match v? {
        Cow::Owned(Value::String(s)) => s,
        Cow::Borrowed(Value::String(s)) => return Some(s.trim()).filter(|t| !t.is_empty()).map(str::to_string),
        _ => return None,
    };
    match s.trim() {
        "" => None,
        t if t.len() == s.len() => Some(s),
        t => Some(t.to_string()),
    }
}

/// Build the envelope for one event whose name, distinct id and id are
/// already decided. `top` is the event object without `properties`.
pub fn envelope<P: Props>(
    shared: &Shared<'_>,
    name: &str,
    distinct_id: String,
    id: String,
    mut top: P,
    mut props: P,
) -> Event<P> {
    let mut ev = Event::blank(Source::Posthog, "posthog", shared.token, kind_of(name), name, shared.now);
    ev.id = id;
    ev.distinct_id = Some(distinct_id);

    let skew_correction = !truthy(props.value("$ignore_sent_at").as_deref());
    ev.timestamp = event_time(
        top.value("timestamp").as_deref(),
        top.value("offset").as_deref(),
        shared.sent_at,
        skew_correction,
        shared.now,
    );

    // Person properties: the top-level form overrides the nested one. They
    // stay in the form the properties are in (PostHog's hot path: the
    // client's raw JSON, neither parsed into a tree nor re-encoded).
    let mut set = props.take_object("$set");
    set.overlay(top.take_object("$set"));
    let mut set_once = props.take_object("$set_once");
    set_once.overlay(top.take_object("$set_once"));
    let mut unset = vec![];
    let unset_names = match props.value("$unset").as_deref() {
        Some(Value::Array(names)) if names.iter().all(Value::is_string) => {
            Some(names.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        }
        _ => None,
    };
    if let Some(names) = unset_names {
        props.discard("$unset");
        unset = names;
    }

    ev.email = non_empty_str(set.value("email"))
        .or_else(|| non_empty_str(props.value("$email")))
        .or_else(|| non_empty_str(props.value("email")));

    if let Some(anon) = props.value("$anon_distinct_id").and_then(distinct_id_from) {
        props.discard("$anon_distinct_id");
        ev.context.anon_distinct_id = Some(anon);
    }

    let lib = non_empty_str(props.value("$lib"));
    let lib_version = props.value("$lib_version").and_then(|v| match v {
        Cow::Owned(Value::String(s)) if !s.is_empty() => Some(s),
        Cow::Borrowed(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        v => v.as_number().map(ToString::to_string),
    });
    ev.context.library = match lib {
        Some(name) => {
            props.discard("$lib");
            props.discard("$lib_version");
            let version = lib_version.or_else(|| shared.library.as_ref().and_then(|l| l.version.clone()));
            Some(Library { name, version })
        }
        None => shared.library.clone().filter(|l| !l.name.is_empty()),
    };

    ev.context.ip = match non_empty_str(props.value("$ip")) {
        Some(ip) => {
            props.discard("$ip");
            Some(ip)
        }
        None => shared.ip.clone(),
    };
    ev.context.user_agent = shared.user_agent.clone();
    if shared.historical_migration {
        ev.context.extra.insert("historical_migration".into(), Value::Bool(true));
    }

    // Plumbing the envelope already carries elsewhere; the token must not
    // travel on as an event property.
    props.discard("token");
    props.discard("distinct_id");
    ev.with_properties(props, UserProperties { set, set_once, unset, other: Map::new() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    #[test]
    fn kinds() {
        for (name, kind) in [
            ("$identify", Kind::Identify),
            ("$set", Kind::Identify),
            ("$set_once", Kind::Identify),
            ("$groupidentify", Kind::Group),
            ("$create_alias", Kind::Alias),
            ("$pageview", Kind::Page),
            ("$screen", Kind::Screen),
            ("$autocapture", Kind::Track),
            ("signed up", Kind::Track),
        ] {
            assert_eq!(kind_of(name), kind, "{name}");
        }
    }

    #[test]
    fn distinct_ids() {
        assert_eq!(distinct_id_text(&json!("u1")).as_deref(), Some("u1"));
        assert_eq!(distinct_id_text(&json!(23)).as_deref(), Some("23"));
        assert_eq!(distinct_id_text(&json!(23.5)).as_deref(), Some("23.5"));
        assert_eq!(distinct_id_text(&json!(["a", "b"])).as_deref(), Some(r#"["a","b"]"#));
        assert_eq!(distinct_id_text(&json!("")), None);
        assert_eq!(distinct_id_text(&json!(null)), None);
        assert_eq!(distinct_id_text(&json!("a\0b")).as_deref(), Some("a\u{FFFD}b"));
        let long = "é".repeat(250);
        assert_eq!(distinct_id_text(&json!(long)).unwrap().chars().count(), 200);

        let ev = json!({"distinct_id": null, "$distinct_id": "d"}).as_object().unwrap().clone();
        assert_eq!(find_distinct_id(&ev, &Map::new()).as_deref(), Some("d"));
        let props = json!({"distinct_id": 7}).as_object().unwrap().clone();
        assert_eq!(find_distinct_id(&Map::new(), &props).as_deref(), Some("7"));
    }

    #[test]
    fn timestamps_and_skew() {
        let now = t("2026-03-01T12:00:00Z");
        // Client clock 1 hour ahead: event at its 12:30 is really 11:30.
        let sent = t("2026-03-01T13:00:00Z");
        let ts = json!("2026-03-01T12:30:00+00:00");
        assert_eq!(event_time(Some(&ts), None, Some(sent), true, now), t("2026-03-01T11:30:00Z"));
        assert_eq!(event_time(Some(&ts), None, Some(sent), false, now), t("2026-03-01T12:30:00Z"));
        assert_eq!(event_time(Some(&ts), None, None, true, now), t("2026-03-01T12:30:00Z"));
        // Offset: milliseconds before sending.
        assert_eq!(event_time(None, Some(&json!(1500)), Some(sent), true, now), t("2026-03-01T11:59:58.500Z"));
        // Unreadable → now; far future → now.
        assert_eq!(event_time(Some(&json!("yesterday")), None, None, true, now), now);
        assert_eq!(event_time(Some(&json!("2026-03-03T00:00:00Z")), None, None, true, now), now);
        assert_eq!(event_time(None, None, None, true, now), now);
        // Forms clients write.
        assert_eq!(t("2026-03-01 12:00:00.123+02:00"), t("2026-03-01T10:00:00.123Z"));
        assert_eq!(t("2026-03-01T12:00:00.123456"), t("2026-03-01T12:00:00.123456Z"));
        assert_eq!(t("2026-03-01"), t("2026-03-01T00:00:00Z"));
        assert_eq!(event_time(Some(&json!(1772366400000i64)), None, None, true, now), t("2026-03-01T12:00:00Z"));
    }

    fn shared(now: DateTime<Utc>) -> Shared<'static> {
        Shared {
            token: "phc_t",
            now,
            sent_at: None,
            ip: Some("10.0.0.9".into()),
            user_agent: Some("ua/1".into()),
            library: None,
            historical_migration: false,
        }
    }

    #[test]
    fn identify_lifts_person_properties_and_context() {
        let now = t("2026-03-01T12:00:00Z");
        let top = json!({
            "$set": {"email": "top@x.io", "plan": "pro"},
            "$set_once": {"first": 1},
            "timestamp": "2026-03-01T11:00:00Z"
        });
        let props = json!({
            "$set": {"email": "inner@x.io", "name": "Ada"},
            "$set_once": {"first": 0, "src": "ad"},
            "$unset": ["old"],
            "$anon_distinct_id": "anon-1",
            "$lib": "posthog-python",
            "$lib_version": "7.91.1",
            "$ip": "1.2.3.4",
            "token": "phc_t",
            "distinct_id": "u1",
            "$email": "other@x.io",
            "keep": true
        });
        let ev = envelope(
            &shared(now),
            "$identify",
            "u1".into(),
            "id-1".into(),
            top.as_object().unwrap().clone(),
            props.as_object().unwrap().clone(),
        );
        assert_eq!(ev.kind, Kind::Identify);
        assert_eq!(ev.project, "phc_t");
        assert_eq!(ev.id, "id-1");
        assert_eq!(ev.email.as_deref(), Some("top@x.io"));
        assert_eq!(
            Value::Object(ev.user_properties.set.clone()),
            json!({"email": "top@x.io", "plan": "pro", "name": "Ada"})
        );
        assert_eq!(Value::Object(ev.user_properties.set_once.clone()), json!({"first": 1, "src": "ad"}));
        assert_eq!(ev.user_properties.unset, vec!["old".to_string()]);
        assert_eq!(ev.context.anon_distinct_id.as_deref(), Some("anon-1"));
        assert_eq!(ev.context.library, Some(Library { name: "posthog-python".into(), version: Some("7.91.1".into()) }));
        assert_eq!(ev.context.ip.as_deref(), Some("1.2.3.4"));
        assert_eq!(ev.context.user_agent.as_deref(), Some("ua/1"));
        assert_eq!(Value::Object(ev.properties.clone()), json!({"$email": "other@x.io", "keep": true}));
        assert_eq!(ev.timestamp, t("2026-03-01T11:00:00Z"));
        assert_eq!(ev.received_at, now);
    }

    /// PostHog's hot path keeps `$set` / `$set_once` as the client's raw
    /// JSON: the same envelope as the parsed path, the top level winning,
    /// a repeated key keeping its last value, the client's text verbatim.
    #[test]
    fn raw_person_properties_make_the_envelope_parsed_ones_make() {
        let now = t("2026-03-01T12:00:00Z");
        let top = r#"{"$set": {"email": "top@x.io", "plan": "pro", "plan": "max"}, "$set_once": {"first": 1},
            "timestamp": "2026-03-01T11:00:00Z"}"#;
        let props = r#"{"$set": {"email": "inner@x.io", "name": "Ad\u0061", "n": 1.50}, "$set_once": {"first": 0},
            "$unset": ["old"], "keep": true, "$set_once": {"src": "ad"}}"#;
        let parsed = |text: &str| serde_json::from_str::<Map<String, Value>>(text).unwrap();
        let from_map = envelope(&shared(now), "$identify", "u1".into(), "i".into(), parsed(top), parsed(props));
        let raw = |text| RawProps::parse(text).unwrap();
        let from_raw = envelope(&shared(now), "$identify", "u1".into(), "i".into(), raw(top), raw(props));
        assert_eq!(from_raw.email.as_deref(), Some("top@x.io"));
        let record = from_raw.into_record(0);
        let text = std::str::from_utf8(&record.payload).unwrap();
        assert!(text.contains(r#""name":"Ad\u0061","n":1.50"#), "{text}");
        assert_eq!(Event::from_payload(&record.payload).unwrap(), from_map);
        assert_eq!(
            Value::Object(from_map.user_properties.set),
            json!({"email": "top@x.io", "plan": "max", "name": "Ada", "n": 1.5})
        );
        assert_eq!(Value::Object(from_map.user_properties.set_once), json!({"first": 1, "src": "ad"}));
    }

    #[test]
    fn email_sources_in_order() {
        let now = t("2026-03-01T12:00:00Z");
        let mk = |props: Value| {
            envelope(&shared(now), "e", "u".into(), "i".into(), Map::new(), props.as_object().unwrap().clone()).email
        };
        assert_eq!(mk(json!({"$email": "a@x", "email": "b@x"})).as_deref(), Some("a@x"));
        assert_eq!(mk(json!({"email": "b@x"})).as_deref(), Some("b@x"));
        assert_eq!(mk(json!({"email": ""})), None);
        assert_eq!(mk(json!({"email": 5})), None);
        assert_eq!(mk(json!({"$set": {"email": "c@x"}, "email": "b@x"})).as_deref(), Some("c@x"));
    }

    #[test]
    fn request_ip_unless_ip_property() {
        let now = t("2026-03-01T12:00:00Z");
        let ev = envelope(&shared(now), "e", "u".into(), "i".into(), Map::new(), Map::new());
        assert_eq!(ev.context.ip.as_deref(), Some("10.0.0.9"));
        let mut s = shared(now);
        s.ip = None;
        s.library = Some(Library { name: "web".into(), version: Some("1.2".into()) });
        s.historical_migration = true;
        let ev = envelope(&s, "e", "u".into(), "i".into(), Map::new(), Map::new());
        assert_eq!(ev.context.ip, None);
        assert_eq!(ev.context.library.unwrap().version.as_deref(), Some("1.2"));
        assert_eq!(ev.context.extra.get("historical_migration"), Some(&Value::Bool(true)));
    }
}
