//! Event → Brevo requests. Foundation scope: track-like events become custom
//! events on `/v3/events/batch`; identifies become contact upserts.

use serde_json::{json, Map, Value};

use super::brevo::{BrevoRequest, EndpointClass};
use crate::config::Config;
use crate::event::{DeadLetter, Event, Kind};

/// What one poll's events turn into.
pub struct Plan {
    pub requests: Vec<BrevoRequest>,
    pub dead_letters: Vec<DeadLetter>,
}

/// Brevo event names allow `[A-Za-z0-9_-]`, at most 255 characters.
pub fn sanitize_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).take(255).collect()
}

pub fn plan(config: &Config, events: &[Event]) -> Plan {
    let mut batch = Vec::new();
    let mut requests = Vec::new();
    let mut dead_letters = Vec::new();
    for ev in events {
        if ev.email.is_none() && ev.distinct_id.is_none() {
            dead_letters.push(DeadLetter {
                reason: "no_identifier".into(),
                detail: "event has neither an email nor a user id".into(),
                failed_at: chrono::Utc::now(),
                event: Some(ev.clone()),
                raw: None,
            });
            continue;
        }
        let mut identifiers = Map::new();
        if let Some(e) = &ev.email {
            identifiers.insert("email_id".into(), Value::from(e.clone()));
        }
        if let Some(id) = &ev.distinct_id {
            identifiers.insert("ext_id".into(), Value::from(id.clone()));
        }
        match ev.kind {
            Kind::Identify if ev.email.is_some() => requests.push(BrevoRequest {
                class: EndpointClass::Contacts,
                path: "/contacts".into(),
                body: json!({"email": ev.email, "ext_id": ev.distinct_id, "updateEnabled": true}),
                events: 1,
            }),
            _ => batch.push(json!({
                "event_name": sanitize_name(&ev.name),
                "event_date": ev.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "identifiers": identifiers,
                "event_properties": ev.properties,
            })),
        }
    }
    for chunk in batch.chunks(config.brevo.max_batch_events) {
        requests.push(BrevoRequest {
            class: EndpointClass::Events,
            path: "/events/batch".into(),
            body: json!({"events": chunk}),
            events: chunk.len(),
        });
    }
    Plan { requests, dead_letters }
}
