//! The normalized event envelope: the one type every hop shares.
//!
//! Ingress sources build an [`Event`] from whatever their wire format is, the
//! bus carries it as JSON (see `docs/event.md` and `docs/event.schema.json`),
//! and the forwarder maps it to Brevo calls. Nothing downstream of the ingress
//! looks at a vendor's raw payload again.

mod json;
pub(crate) mod scan;

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Version of the envelope layout. Bumped on any incompatible change so a
/// forwarder can dead-letter envelopes it does not understand instead of
/// mis-mapping them.
pub const SCHEMA_VERSION: &str = "1";

/// Where an event entered Sluice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Posthog,
    Amplitude,
    Webhook,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Posthog => "posthog",
            Source::Amplitude => "amplitude",
            Source::Webhook => "webhook",
        }
    }
}

/// What an event means, independent of the vendor's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Track,
    Identify,
    Group,
    Alias,
    Page,
    Screen,
    Webhook,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Track => "track",
            Kind::Identify => "identify",
            Kind::Group => "group",
            Kind::Alias => "alias",
            Kind::Page => "page",
            Kind::Screen => "screen",
            Kind::Webhook => "webhook",
        }
    }
}

/// Person-property operations carried with an event. `S` is how the `set`
/// and `set_once` objects are held: parsed, or (PostHog's hot path, like
/// its event's properties) as the client's raw JSON entries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "S: Deserialize<'de> + Default"))]
pub struct UserProperties<S = Map<String, Value>> {
    /// Properties to overwrite (`$set`).
    #[serde(default)]
    pub set: S,
    /// Properties to write only when absent (`$set_once` / `$setOnce`).
    #[serde(default)]
    pub set_once: S,
    /// Property names to remove (`$unset`).
    #[serde(default)]
    pub unset: Vec<String>,
    /// Other vendor operations kept verbatim, keyed by operation
    /// (`$add`, `$append`, `$prepend`, `$preInsert`, `$postInsert`, `$remove`,
    /// `$clearAll`), so nothing a client sent is silently lost.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub other: Map<String, Value>,
}

impl UserProperties {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.set_once.is_empty() && self.unset.is_empty() && self.other.is_empty()
    }
}

/// Money attached to an event (Amplitude revenue fields, Stripe amounts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revenue {
    /// Total amount in major units (e.g. 12.5 for $12.50) when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<f64>,
    /// Amount in the currency's minor unit, as Stripe sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_minor: Option<i64>,
    /// ISO 4217 code, lower or upper case as the sender wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue_type: Option<String>,
}

/// The SDK that produced an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Library {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Request and device facts that are not the event's own properties.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<Library>,
    /// The anonymous id an identify merges from (PostHog `$anon_distinct_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anon_distinct_id: Option<String>,
    /// Source-specific facts (device, location, session, group keys...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// One normalized event. See `docs/event.md` for the field-by-field contract.
///
/// `P` is how `properties` are held: parsed JSON everywhere by default; the
/// PostHog ingress builds `Event<RawProps>`, whose values stay the client's
/// JSON text (borrowed from the request), so they are neither parsed into a
/// tree nor re-encoded on the way to the bus. Both serialize to the same
/// envelope JSON. A field added here must also be written by
/// `event/json.rs` (the PostHog hot path's writer); its tests fail to
/// compile until it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "P: Deserialize<'de> + Default"))]
pub struct Event<P = Map<String, Value>> {
    /// Envelope layout version, [`SCHEMA_VERSION`].
    pub schema: String,
    /// Stable id: the client's uuid / insert_id / webhook event id, else a
    /// generated UUIDv7. Used for deduplication downstream.
    pub id: String,
    pub source: Source,
    /// Which configured source: `posthog`, `amplitude`, or the webhook name.
    pub source_name: String,
    /// Project the event belongs to: the PostHog project token, the Amplitude
    /// API key, or the webhook source name. Part of the partition key.
    pub project: String,
    pub kind: Kind,
    /// Event name as the source called it (`$pageview`, `invoice.paid`).
    pub name: String,
    /// The user id the source knows the person by; `None` only for webhooks
    /// that carry no customer.
    pub distinct_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default)]
    pub properties: P,
    #[serde(default)]
    pub user_properties: UserProperties<P>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue: Option<Revenue>,
    /// When the event happened, after clock-skew correction.
    pub timestamp: DateTime<Utc>,
    /// When Sluice received the request carrying it.
    pub received_at: DateTime<Utc>,
    #[serde(default)]
    pub context: Context,
}

impl Event {
    /// A fresh envelope with the required fields set and everything else empty.
    pub fn new(source: Source, source_name: &str, project: &str, kind: Kind, name: &str, now: DateTime<Utc>) -> Event {
        Event { id: new_id(), ..Event::blank(source, source_name, project, kind, name, now) }
    }

    /// [`Event::new`] with an empty `id`, for callers that already have one.
    pub fn blank(
        source: Source,
        source_name: &str,
        project: &str,
        kind: Kind,
        name: &str,
        now: DateTime<Utc>,
    ) -> Event {
        Event {
            schema: SCHEMA_VERSION.to_string(),
            id: String::new(),
            source,
            source_name: source_name.to_string(),
            project: project.to_string(),
            kind,
            name: name.to_string(),
            distinct_id: None,
            email: None,
            properties: Map::new(),
            user_properties: UserProperties::default(),
            revenue: None,
            timestamp: now,
            received_at: now,
            context: Context::default(),
        }
    }

    /// Parse a bus payload back into an event.
    pub fn from_payload(payload: &[u8]) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

impl<P: Serialize> Event<P> {
    /// The same event with its properties and person properties held as
    /// `properties` and `user_properties` (this event's own are dropped).
    pub fn with_properties<Q>(self, properties: Q, user_properties: UserProperties<Q>) -> Event<Q> {
        Event {
            schema: self.schema,
            id: self.id,
            source: self.source,
            source_name: self.source_name,
            project: self.project,
            kind: self.kind,
            name: self.name,
            distinct_id: self.distinct_id,
            email: self.email,
            properties,
            user_properties,
            revenue: self.revenue,
            timestamp: self.timestamp,
            received_at: self.received_at,
            context: self.context,
        }
    }

    /// Kafka key: source + project + user, so one user's events stay in one
    /// partition and therefore in order.
    pub fn partition_key(&self) -> String {
        let user = self.distinct_id.as_deref().or(self.email.as_deref()).unwrap_or(&self.id);
        let mut key = String::with_capacity(self.source_name.len() + self.project.len() + user.len() + 2);
        key.push_str(&self.source_name);
        key.push(':');
        key.push_str(&self.project);
        key.push(':');
        key.push_str(user);
        key
    }

    /// The bus record for this event: partition key and JSON payload.
    pub fn to_record(&self) -> crate::bus::Record {
        let mut payload = Vec::with_capacity(512);
        // Serializing owned JSON types or validated raw JSON cannot fail.
        let _ = serde_json::to_writer(&mut payload, self);
        crate::bus::Record { key: self.partition_key().into_bytes(), payload }
    }

    /// [`Event::to_record`] for one of many: serialized into `scratch`
    /// (cleared first, its capacity kept for the next event) and copied out
    /// at its exact length. A record waiting for its commit then holds no
    /// growth slack: Amplitude's ~670-byte envelopes had grown
    /// `to_record`'s 512-byte buffer to 1,024 bytes, a third of the memory
    /// of every request waiting on the bus.
    pub fn to_record_in(&self, scratch: &mut Vec<u8>) -> crate::bus::Record {
        scratch.clear();
        let _ = serde_json::to_writer(&mut *scratch, self);
        crate::bus::Record { key: self.partition_key().into_bytes(), payload: scratch.as_slice().to_vec() }
    }
}

impl<'a> Event<RawProps<'a>> {
    /// [`Event::to_record`] through a hand-written writer
    /// (`event/json.rs`): the same JSON, with the properties copied as the
    /// client's text ([`RawProps::write_json`]) and no per-character
    /// escaping calls, `bytes` of payload reserved up front. The PostHog
    /// ingress's hot path.
    pub fn into_record(self, bytes: usize) -> crate::bus::Record {
        let mut payload = Vec::with_capacity(bytes);
        json::write_event(&self, &mut payload);
        crate::bus::Record { key: self.partition_key().into_bytes(), payload }
    }
}

/// Event properties as the client wrote them: keys in the client's order,
/// each value the JSON text of the request, borrowed. Serializes as a JSON
/// object, values copied verbatim. A key the client repeated keeps its last
/// value, as a parsed object would. Removed entries stay as tombstones
/// (`None`) so removing does not shift the rest.
#[derive(Debug, Default, Clone)]
pub struct RawProps<'a>(Vec<(Cow<'a, str>, Option<&'a str>)>);

impl<'a> RawProps<'a> {
    /// Parse one JSON object, borrowing every value (and every key without
    /// escapes) from `text`: the one-pass reader ([`scan`]) where it can,
    /// else serde_json, which also words the error.
    pub fn parse(text: &'a str) -> Result<RawProps<'a>, serde_json::Error> {
        scan::Scan::whole_object(text).map_or_else(|| serde_json::from_str(text), Ok)
    }

    /// Write the object as JSON: values verbatim, and keys verbatim too
    /// when they were borrowed from the parsed text (serde_json borrows a
    /// string only when it has no escapes, and refuses control characters,
    /// so such a key needs none); keys that had escapes are escaped again.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        for (k, v) in &self.0 {
            let Some(v) = v else { continue };
            if !first {
                out.push(b',');
            }
            first = false;
            match k {
                Cow::Borrowed(k) => {
                    out.push(b'"');
                    out.extend_from_slice(k.as_bytes());
                    out.push(b'"');
                }
                Cow::Owned(k) => {
                    let _ = serde_json::to_writer(&mut *out, k);
                }
            }
            out.push(b':');
            out.extend_from_slice(v.as_bytes());
        }
        out.push(b'}');
    }

    fn entries(&self) -> impl Iterator<Item = (&Cow<'a, str>, &'a str)> {
        self.0.iter().filter_map(|(k, v)| v.map(|v| (k, v)))
    }

    /// Drop every entry whose key appears again later (JSON's last value
    /// wins, as when parsing into a map). Pairwise for the usual handful of
    /// keys; through a set beyond [`PAIRWISE_KEYS`]: pairwise, one event of
    /// 100,000 keys took 11 s of CPU.
    fn keep_last_of_each_key(&mut self) {
        let entries = &self.0;
        let keep: Vec<bool> = if entries.len() <= PAIRWISE_KEYS {
            if !prints_meet(entries) {
                return;
            }
            let repeated = |i: usize| entries[i + 1..].iter().any(|(k, _)| *k == entries[i].0);
            if !(0..entries.len()).any(repeated) {
                return;
            }
            (0..entries.len()).map(|i| !repeated(i)).collect()
        } else {
            let mut seen = std::collections::HashSet::with_capacity(entries.len());
            let mut keep: Vec<bool> = entries.iter().rev().map(|(k, _)| seen.insert(&**k)).collect();
            if keep.iter().all(|k| *k) {
                return;
            }
            keep.reverse();
            keep
        };
        let mut flags = keep.into_iter();
        self.0.retain(|_| flags.next().unwrap_or(true));
    }

    pub fn len(&self) -> usize {
        self.entries().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw JSON of `key`'s value.
    pub fn raw(&self, key: &str) -> Option<&'a str> {
        self.entries().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// `key`'s value, parsed (`None` when absent; an unparsable value, which
    /// [`RawProps::parse`] never yields, reads as absent).
    pub fn get(&self, key: &str) -> Option<Value> {
        self.raw(key).and_then(parse_raw)
    }

    /// Remove `key`, returning its raw JSON.
    pub fn remove_raw(&mut self, key: &str) -> Option<&'a str> {
        self.0.iter_mut().find(|(k, v)| k == key && v.is_some())?.1.take()
    }

    /// Remove `key`, returning its parsed value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.remove_raw(key).and_then(parse_raw)
    }

    /// Add `over`'s entries; where both hold a key, `over`'s value wins (a
    /// map's `extend`).
    pub fn overlay(&mut self, over: RawProps<'a>) {
        if over.0.is_empty() {
            return;
        }
        self.0.extend(over.0);
        self.keep_last_of_each_key();
    }
}

/// A raw value parsed. A string without escapes is its text between the
/// quotes (the parser that produced the raw value validated it); that is
/// most looked-up values, and serde's per-call setup was 4 % of the PostHog
/// decode.
fn parse_raw(text: &str) -> Option<Value> {
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        if !inner.contains('\\') {
            return Some(Value::String(inner.to_string()));
        }
    }
    serde_json::from_str(text).ok()
}

impl Serialize for RawProps<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.entries() {
            // Verbatim, as the raw JSON it is (a plain &str would be quoted).
            let raw: &RawValue = serde_json::from_str(v).map_err(serde::ser::Error::custom)?;
            map.serialize_entry(k, raw)?;
        }
        map.end()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawProps<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = RawProps<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<RawProps<'de>, M::Error> {
                let mut props = RawProps(raw_entries(map, None)?.0);
                props.keep_last_of_each_key();
                Ok(props)
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// The value of the key [`RawProps::split_entries`] reads as an object of its own.
#[derive(Debug)]
pub enum Nested<'a> {
    Absent,
    Null,
    Object(RawProps<'a>),
    /// Present but neither an object nor null.
    Other,
}

impl<'a> RawProps<'a> {
    /// For a visitor inside an object (an event of a batch): its entries as
    /// raw values, except `nested`'s value (the event's `properties`), read
    /// as raw entries of its own in the same pass instead of as one raw
    /// value to parse again.
    pub fn split_entries<'de, M: serde::de::MapAccess<'de>>(
        map: M,
        nested: &str,
    ) -> Result<(RawProps<'de>, Nested<'de>), M::Error> {
        let (entries, nested) = raw_entries(map, Some(nested))?;
        let mut props = RawProps(entries);
        props.keep_last_of_each_key();
        let nested = match nested {
            Nested::Object(mut inner) => {
                inner.keep_last_of_each_key();
                Nested::Object(inner)
            }
            other => other,
        };
        Ok((props, nested))
    }

    /// Length of this object written as compact JSON (keys counted
    /// unescaped, values as the client wrote them).
    pub fn json_len(&self) -> usize {
        1 + self.entries().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>().max(1)
    }
}

pub(crate) type Entries<'a> = Vec<(Cow<'a, str>, Option<&'a str>)>;

/// Objects up to this many keys look for repeated keys pair by pair.
const PAIRWISE_KEYS: usize = 32;

/// Whether two of (at most [`PAIRWISE_KEYS`]) keys may be equal: their
/// prints meet in a small open-addressed table. Equal keys always meet;
/// different ones rarely do, and then the caller compares the text.
fn prints_meet(entries: &[(Cow<'_, str>, Option<&str>)]) -> bool {
    // Room for twice the keys, so a probe ends soon; indexed by the top six
    // bits of a multiplicative hash.
    const SLOTS: usize = 64;
    const _: () = assert!(SLOTS >= 2 * PAIRWISE_KEYS);
    let mut table = [0u64; SLOTS];
    for (k, _) in entries {
        let print = key_print(k.as_bytes()) | 1;
        let mut at = (print.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize;
        loop {
            match table[at] {
                0 => {
                    table[at] = print;
                    break;
                }
                p if p == print => return true,
                _ => at = (at + 1) % SLOTS,
            }
        }
    }
    false
}

/// A key's length and up to its first and last eight bytes mixed into one
/// word: equal keys have equal prints; different keys usually do not.
fn key_print(k: &[u8]) -> u64 {
    let n = k.len();
    let (head, tail) =
        if n >= 8 { (word(&k[..8]), word(&k[n - 8..])) } else { (k.iter().fold(0, |w, &b| w << 8 | u64::from(b)), 0) };
    head ^ tail.rotate_left(23) ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn word(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap_or_default())
}

/// Collect an object's entries as raw values; the entry named `nested` (the
/// last one, if repeated) is read as [`Nested`] instead.
fn raw_entries<'de, M: serde::de::MapAccess<'de>>(
    mut map: M,
    nested: Option<&str>,
) -> Result<(Entries<'de>, Nested<'de>), M::Error> {
    // Nothing reserved up front: a batch of a million `{}` events must not
    // cost a million allocations (tests/it/hostile_http.rs).
    let mut entries = Vec::new();
    let mut inner = Nested::Absent;
    while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
        if entries.is_empty() {
            entries.reserve(map.size_hint().unwrap_or(8));
        }
        if nested == Some(&*k) {
            inner = map.next_value::<NestedValue<'de>>()?.0;
        } else {
            entries.push((k, Some(map.next_value::<&'de RawValue>()?.get())));
        }
    }
    Ok((entries, inner))
}

struct NestedValue<'a>(Nested<'a>);

impl<'de> Deserialize<'de> for NestedValue<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::IgnoredAny;
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = NestedValue<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
                Ok(NestedValue(Nested::Object(RawProps(raw_entries(map, None)?.0))))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(NestedValue(Nested::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(NestedValue(Nested::Other))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(NestedValue(Nested::Other))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(NestedValue(Nested::Other))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(NestedValue(Nested::Other))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(NestedValue(Nested::Other))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(NestedValue(Nested::Other))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// An object key, borrowed unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(Visit)
    }
}

/// A new time-ordered UUIDv7 as text.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// An event the forwarder could not deliver, with the reason, as written to
/// the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetter {
    /// Machine-readable reason (`no_identifier`, `brevo_rejected`, ...).
    pub reason: String,
    /// Human detail, e.g. Brevo's error message.
    pub detail: String,
    pub failed_at: DateTime<Utc>,
    /// The original envelope when it could be decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
    /// The raw payload when it could not be decoded as an [`Event`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

impl DeadLetter {
    pub fn to_record(&self) -> crate::bus::Record {
        let key = match &self.event {
            Some(e) => e.partition_key().into_bytes(),
            None => b"undecodable".to_vec(),
        };
        crate::bus::Record { key, payload: serde_json::to_vec(self).unwrap_or_default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        let now = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z").unwrap().with_timezone(&Utc);
        let mut e = Event::new(Source::Posthog, "posthog", "phc_abc", Kind::Track, "clicked", now);
        e.distinct_id = Some("user-1".into());
        e.properties.insert("button".into(), Value::from("buy"));
        e
    }

    /// The last of repeated keys wins, as in a parsed map, for small
    /// objects (pairwise) and large ones (through a set) alike.
    #[test]
    fn repeated_keys_keep_their_last_value_in_small_and_large_objects() {
        // Short keys, and long ones of one length whose first and last
        // eight bytes agree (their prints are equal: the text decides).
        let shapes: [fn(usize) -> String; 2] = [|k| format!("k{k}"), |k| format!("$feature/flag-{k:04}-variant")];
        // n keys and "last": up to PAIRWISE_KEYS entries pair by pair.
        let sizes = [3usize, 9, PAIRWISE_KEYS - 1, PAIRWISE_KEYS, 5_000];
        for (n, shape) in sizes.into_iter().flat_map(|n| shapes.map(|s| (n, s))) {
            let mut text = String::from("{");
            for i in 0..n {
                text.push_str(&format!("\"{}\": {i},", shape(i % (n / 3).max(1))));
            }
            text.push_str("\"last\": true}");
            let props: RawProps<'_> = serde_json::from_str(&text).unwrap();
            let parsed: Map<String, Value> = serde_json::from_str(&text).unwrap();
            let got: Map<String, Value> =
                props.entries().map(|(k, v)| (k.to_string(), serde_json::from_str(v).unwrap())).collect();
            assert_eq!(props.len(), parsed.len(), "{n}: one entry per key");
            assert_eq!(got, parsed, "{n}");
        }
    }

    #[test]
    fn raw_values_parse_as_serde_parses_them() {
        let text = r#"{"a": "plain", "b": "", "c": "q\"uote", "d": "\u00e9t\u00e9", "e": "\ud800", "f": 1.5,
            "g": {"x": ["y"]}, "h": null, "i": "é ✓", "j": "back\\slash", "k": true}"#;
        let props = RawProps::parse(text).unwrap();
        let mut n = 0;
        for (key, raw) in props.entries() {
            let want: Option<Value> = serde_json::from_str(raw).ok();
            assert_eq!(parse_raw(raw), want, "{key}");
            n += 1;
        }
        assert_eq!(n, 11);
        assert_eq!(props.get("a"), Some(Value::from("plain")));
        assert_eq!(props.get("e"), None, "a lone surrogate does not parse");
    }

    #[test]
    fn round_trips_through_json() {
        let e = sample();
        let back = Event::from_payload(&e.to_record().payload).unwrap();
        assert_eq!(e, back);
    }

    #[test]
    fn partition_key_is_source_project_user() {
        assert_eq!(sample().partition_key(), "posthog:phc_abc:user-1");
        let mut anon = sample();
        anon.distinct_id = None;
        anon.email = Some("a@b.co".into());
        assert_eq!(anon.partition_key(), "posthog:phc_abc:a@b.co");
    }

    #[test]
    fn ids_are_uuid_v7() {
        let id = uuid::Uuid::parse_str(&new_id()).unwrap();
        assert_eq!(id.get_version_num(), 7);
    }

    #[test]
    fn raw_properties_serialize_like_parsed_ones() {
        let text = r#"{"b": [1, {"x": "\u00e9"}], "a\"q": 2.50, "b": "last", "n": null}"#;
        let raw = RawProps::parse(text).unwrap();
        assert_eq!(raw.len(), 3, "the repeated key keeps one entry");
        assert_eq!(raw.get("b"), Some(Value::from("last")));
        let parsed: Map<String, Value> = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_value(&raw).unwrap(), Value::Object(parsed.clone()));
        let mut e = sample();
        e.properties = parsed;
        let raw_event = e.clone().with_properties(raw, UserProperties::default());
        let back = Event::from_payload(&raw_event.to_record().payload).unwrap();
        assert_eq!(back, e);
        assert_eq!(raw_event.partition_key(), e.partition_key());
        let mut raw = RawProps::parse(text).unwrap();
        assert_eq!(raw.remove("a\"q"), Some(serde_json::json!(2.5)));
        assert!(raw.raw("a\"q").is_none());
        assert!(RawProps::parse("[1]").is_err());
    }

    /// Records made through one scratch buffer are the records `to_record`
    /// makes, each payload at its exact length, whatever the previous event
    /// left in the buffer.
    #[test]
    fn to_record_in_copies_each_payload_out_at_its_length() {
        let mut long = sample();
        long.properties.insert("note".into(), Value::from("x".repeat(3000)));
        let mut scratch = Vec::new();
        for e in [long, sample()] {
            let (shared, own) = (e.to_record_in(&mut scratch), e.to_record());
            assert_eq!((&shared.key, &shared.payload), (&own.key, &own.payload));
            assert_eq!(shared.payload.capacity(), shared.payload.len());
        }
        assert!(scratch.capacity() >= 3000, "the buffer keeps its capacity for the next event");
    }

    #[test]
    fn into_record_appends_the_raw_properties_to_the_envelope() {
        let text = r#"{"b": [1, {"x": "\u00e9"}], "a\"q": 2.50, "t\tab": 1, "b": "last", "token": "t", "n": null}"#;
        let mut raw = RawProps::parse(text).unwrap();
        assert!(raw.remove_raw("token").is_some());
        assert!(raw.remove_raw("token").is_none(), "a removed entry is gone");
        assert_eq!(raw.len(), 4);
        let e = sample().with_properties(raw, UserProperties::default());
        let (fast, slow) = (e.clone().into_record(0), e.to_record());
        assert_eq!(fast.key, slow.key);
        let parsed = |p: &[u8]| serde_json::from_slice::<Value>(p).unwrap();
        assert_eq!(parsed(&fast.payload), parsed(&slow.payload));
        let text = String::from_utf8(fast.payload.clone()).unwrap();
        assert!(text.ends_with(r#","properties":{"a\"q":2.50,"t\tab":1,"b":"last","n":null}}"#), "{text}");
        let back = Event::from_payload(&fast.payload).unwrap();
        assert_eq!(back.properties.len(), 4);
        assert_eq!(back.properties["b"], Value::from("last"));
        // No properties at all still makes one object.
        let empty = sample().with_properties(RawProps::default(), UserProperties::default()).into_record(0);
        assert!(Event::from_payload(&empty.payload).unwrap().properties.is_empty());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["surprise"] = Value::from(1);
        assert!(serde_json::from_value::<Event>(v).is_err());
    }
}
