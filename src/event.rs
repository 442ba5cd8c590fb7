//! The normalized event envelope: the one type every hop shares.
//!
//! Ingress sources build an [`Event`] from whatever their wire format is, the
//! bus carries it as JSON (see `docs/event.md` and `docs/event.schema.json`),
//! and the forwarder maps it to Brevo calls. Nothing downstream of the ingress
//! looks at a vendor's raw payload again.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
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

/// Person-property operations carried with an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserProperties {
    /// Properties to overwrite (`$set`).
    #[serde(default)]
    pub set: Map<String, Value>,
    /// Properties to write only when absent (`$set_once` / `$setOnce`).
    #[serde(default)]
    pub set_once: Map<String, Value>,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
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
    pub properties: Map<String, Value>,
    #[serde(default)]
    pub user_properties: UserProperties,
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
        Event {
            schema: SCHEMA_VERSION.to_string(),
            id: new_id(),
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
        crate::bus::Record {
            key: self.partition_key().into_bytes(),
            // Serializing a value built from owned JSON types cannot fail.
            payload: serde_json::to_vec(self).unwrap_or_default(),
        }
    }

    /// Parse a bus payload back into an event.
    pub fn from_payload(payload: &[u8]) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(payload)
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
    fn unknown_fields_are_refused() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["surprise"] = Value::from(1);
        assert!(serde_json::from_value::<Event>(v).is_err());
    }
}
