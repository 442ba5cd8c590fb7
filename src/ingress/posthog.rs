//! PostHog capture: the routes every PostHog SDK posts to.
//!
//! Foundation scope: a single JSON event or a JSON batch on the capture
//! routes, token and distinct_id checks, normalization into an [`Event`].
//! Compression, form bodies, CORS and capture v1 come with the PostHog issue.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde_json::{Map, Value};

use super::{publish, refuse, AppState, Dialect, IngressError, RawRequest};
use crate::config::Config;
use crate::event::{Event, Kind, Source};

/// Body limit on `/batch` (PostHog: 20 MiB).
pub const BATCH_BODY_LIMIT: usize = 20 * 1024 * 1024;
/// Body limit on every other capture route (PostHog: 2 MiB).
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

const SOURCE: &str = "posthog";

/// Accepted project tokens.
pub struct PosthogState {
    tokens: Vec<String>,
}

impl PosthogState {
    pub fn new(cfg: &Config) -> anyhow::Result<PosthogState> {
        Ok(PosthogState {
            tokens: cfg.connectors.posthog.project_tokens.iter().map(|t| t.expose().to_string()).collect(),
        })
    }

    fn accepts(&self, token: &str) -> bool {
        self.tokens.is_empty() || self.tokens.iter().any(|t| t == token)
    }
}

pub fn routes() -> Router<AppState> {
    let mut r = Router::new();
    for path in ["/e", "/i/v0/e", "/capture", "/track", "/engage"] {
        r = r.route(path, any(capture)).route(&format!("{path}/"), any(capture));
    }
    r
}

async fn capture(State(state): State<AppState>, req: Request) -> Response {
    match RawRequest::read(req, BODY_LIMIT).await {
        Ok(raw) => handle(&state, raw).await,
        Err(e) => refuse(SOURCE, Dialect::Posthog, e, 1),
    }
}

/// Decode, validate, publish, answer.
pub async fn handle(state: &AppState, raw: RawRequest) -> Response {
    let events = match decode(state, &raw) {
        Ok(e) => e,
        Err(e) => return refuse(SOURCE, Dialect::Posthog, e, 1),
    };
    match publish(state, SOURCE, &events).await {
        Ok(()) => axum::Json(serde_json::json!({"status": 1})).into_response(),
        Err(e) => refuse(SOURCE, Dialect::Posthog, e, events.len()),
    }
}

fn decode(state: &AppState, raw: &RawRequest) -> Result<Vec<Event>, IngressError> {
    let body: Value = serde_json::from_slice(&raw.body)
        .map_err(|e| IngressError::Malformed { code: "invalid_payload", message: format!("invalid JSON: {e}") })?;
    let (envelope_token, items) = match body {
        Value::Array(items) => (None, items),
        Value::Object(mut obj) => match obj.remove("batch") {
            Some(Value::Array(items)) => {
                let token =
                    ["api_key", "token"].iter().find_map(|k| obj.get(*k).and_then(Value::as_str)).map(str::to_string);
                (token, items)
            }
            _ => (None, vec![Value::Object(obj)]),
        },
        _ => {
            return Err(IngressError::Malformed {
                code: "invalid_payload",
                message: "expected an object or array".into(),
            })
        }
    };
    let now = state.clock.now();
    let mut token: Option<String> = envelope_token;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(mut obj) = item else {
            return Err(IngressError::Malformed { code: "invalid_payload", message: "event is not an object".into() });
        };
        let mut props = match obj.remove("properties") {
            Some(Value::Object(p)) => p,
            _ => Map::new(),
        };
        let ev_token = ["token", "$token", "api_key"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(Value::as_str))
            .or_else(|| props.get("token").and_then(Value::as_str))
            .map(str::to_string);
        match (&token, ev_token) {
            (None, Some(t)) => token = Some(t),
            (Some(a), Some(b)) if *a != b => {
                return Err(IngressError::Unauthorized {
                    code: "token_mismatch",
                    message: "tokens differ within one request".into(),
                })
            }
            _ => {}
        }
        let name = obj.get("event").and_then(Value::as_str).unwrap_or_default().to_string();
        if name.is_empty() {
            return Err(IngressError::Malformed { code: "missing_event_name", message: "event name is empty".into() });
        }
        let distinct_id = ["distinct_id", "$distinct_id"]
            .iter()
            .find_map(|k| obj.get(*k))
            .or_else(|| props.get("distinct_id"))
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty())
            .ok_or_else(|| IngressError::Malformed {
                code: "missing_distinct_id",
                message: "distinct_id is missing or empty".into(),
            })?;
        let kind = match name.as_str() {
            "$identify" | "$set" => Kind::Identify,
            "$groupidentify" => Kind::Group,
            "$create_alias" => Kind::Alias,
            "$pageview" => Kind::Page,
            "$screen" => Kind::Screen,
            _ => Kind::Track,
        };
        let mut ev = Event::new(Source::Posthog, SOURCE, "", kind, &name, now);
        ev.distinct_id = Some(distinct_id.chars().take(200).collect());
        if let Some(Value::String(uuid)) = obj.get("uuid") {
            ev.id = uuid.clone();
        }
        if let Some(ts) = obj.get("timestamp").and_then(Value::as_str) {
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) {
                ev.timestamp = t.with_timezone(&chrono::Utc);
            }
        }
        if let Some(Value::Object(set)) = props.remove("$set") {
            ev.user_properties.set = set;
        }
        ev.email = ev.user_properties.set.get("email").and_then(Value::as_str).map(str::to_string);
        ev.context.ip = raw.peer.map(|p| p.ip().to_string());
        ev.properties = props;
        out.push(ev);
    }
    let token = token
        .ok_or_else(|| IngressError::Unauthorized { code: "missing_token", message: "no project token".into() })?;
    if token.starts_with("phx_") || !state.posthog.accepts(&token) {
        return Err(IngressError::Unauthorized { code: "invalid_token", message: "project token is not valid".into() });
    }
    for ev in &mut out {
        ev.project = token.clone();
    }
    Ok(out)
}
