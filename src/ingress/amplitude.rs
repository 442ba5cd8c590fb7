//! Amplitude ingress: HTTP V2 (`POST /2/httpapi`), Batch (`POST /batch`,
//! shared with PostHog and routed here by the body's shape) and Identify
//! (`POST`/`GET /identify`), answering exactly as Amplitude does, because
//! the official SDKs decide from the body's `code` and index maps which
//! events to drop, split or retry.
//!
//! One request goes: body limit → [`validate::parse_upload`] → API key →
//! event count → [`validate_and_normalize`] (pure: tests and the bench call
//! it) → EPS throttle → `insert_id` dedup → [`publish`] → 200. Submodules:
//! `validate` (the rules and the 400 maps), `normalize` (event → envelope),
//! `throttle` (429), `identify` (the Identify API's form shape).
//!
//! Deduplication: an event whose `insert_id` was published within
//! `connectors.amplitude.dedup_window_secs` for the same project and device
//! (else user) is acknowledged as ingested but not published again. Keys are
//! remembered only after the publish succeeded, so a refused request can be
//! retried; see [`crate::dedup`] for restarts and replicas.

mod identify;
pub mod normalize;
mod throttle;
pub mod validate;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{publish, refuse, AppState, Dialect, IngressError, RawRequest};
use crate::config::Config;
use crate::dedup::DedupStore;
use crate::event::Event;
use crate::metrics as m;
pub use normalize::{Accepted, Origin};
use throttle::{EpsThrottle, Sender};
use validate::{validate_events, DEFAULT_MIN_ID_LENGTH, MAX_EVENTS};

/// HTTP V2 body limit: "keep request sizes under 1 MB" (decimal, as the
/// docs write it; a client that is refused splits its batch and resends).
pub const HTTPAPI_BODY_LIMIT: usize = 1_000_000;
/// Batch API body limit: "must not exceed 20MB". The shared `/batch` route
/// reads up to PostHog's 20 MiB; this tighter limit is checked here.
pub const BATCH_BODY_LIMIT: usize = 20_000_000;
/// Identify API body limit (undocumented; HTTP V2's).
pub const IDENTIFY_BODY_LIMIT: usize = HTTPAPI_BODY_LIMIT;

const SOURCE: &str = "amplitude";
/// DedupStore name: the metric's `stage` label and the on-disk table.
const DEDUP_STORE: &str = "amplitude_insert_id";

/// Accepted keys, the insert_id window and the throttle.
pub struct AmplitudeState {
    /// `connectors.amplitude.api_keys`; empty = open mode.
    api_keys: Vec<String>,
    /// Recently published insert_ids (hashed with project and device).
    dedup: DedupStore,
    /// Per-user / per-device EPS throttle; inert when the threshold is 0.
    throttle: EpsThrottle,
}

impl AmplitudeState {
    pub fn new(cfg: &Config, data_dir: Option<&Path>) -> anyhow::Result<AmplitudeState> {
        let c = &cfg.connectors.amplitude;
        Ok(AmplitudeState {
            api_keys: c.api_keys.iter().map(|k| k.expose().to_string()).collect(),
            dedup: DedupStore::open(
                DEDUP_STORE,
                Duration::from_secs(c.dedup_window_secs),
                c.dedup_max_entries,
                data_dir,
            )?,
            throttle: EpsThrottle::new(c.eps_threshold),
        })
    }

    /// Whether `key` is configured, compared in constant time.
    fn accepts(&self, key: &str) -> bool {
        self.api_keys.is_empty()
            || self.api_keys.iter().fold(false, |hit, k| hit | bool::from(k.as_bytes().ct_eq(key.as_bytes())))
    }

    fn check_key(&self, key: &str) -> Result<(), IngressError> {
        if self.accepts(key) {
            Ok(())
        } else {
            Err(IngressError::InvalidApiKey { key: key.to_string() })
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/2/httpapi", any(httpapi))
        .route("/2/httpapi/", any(httpapi))
        .route("/identify", any(identify))
        .route("/identify/", any(identify))
}

async fn httpapi(State(state): State<AppState>, req: Request) -> Response {
    if req.method() != Method::POST {
        return refuse(SOURCE, Dialect::Amplitude, IngressError::MethodNotAllowed, 1);
    }
    match RawRequest::read(req, HTTPAPI_BODY_LIMIT).await {
        Ok(raw) => handle_upload(&state, raw).await,
        Err(e) => refuse(SOURCE, Dialect::Amplitude, e, 1),
    }
}

/// `POST /batch` with an Amplitude body (see `ingress::batch`).
pub async fn handle_batch(state: &AppState, raw: RawRequest) -> Response {
    if raw.method != Method::POST {
        return refuse(SOURCE, Dialect::Amplitude, IngressError::MethodNotAllowed, 1);
    }
    if raw.body.len() > BATCH_BODY_LIMIT {
        let err = IngressError::TooLarge { what: "request body", limit: BATCH_BODY_LIMIT };
        return refuse(SOURCE, Dialect::Amplitude, err, 1);
    }
    handle_upload(state, raw).await
}

async fn handle_upload(state: &AppState, raw: RawRequest) -> Response {
    let received_at = state.clock.now();
    let upload = match validate::parse_upload(&raw.body) {
        Ok(u) => u,
        Err(e) => return refuse(SOURCE, Dialect::Amplitude, e, 1),
    };
    let (n, body_len) = (upload.events.len(), raw.body.len());
    state.meters.request_size(SOURCE, body_len, n);
    if let Err(e) = state.amplitude.check_key(&upload.api_key) {
        return refuse(SOURCE, Dialect::Amplitude, e, n);
    }
    let origin = Origin { api_key: &upload.api_key, received_at, peer_ip: raw.peer.map(|p| p.ip().to_string()) };
    // The events own their data now: the body (and the connection's read
    // buffer it points into) is not held while the publish waits.
    drop(raw);
    match validate_and_normalize(upload.events, upload.min_id_length, &origin) {
        Ok(accepted) => ingest(state, &upload.api_key, accepted, body_len, received_at).await,
        Err(e) => refuse(SOURCE, Dialect::Amplitude, e, n),
    }
}

async fn identify(State(state): State<AppState>, req: Request) -> Response {
    if req.method() != Method::POST && req.method() != Method::GET {
        return refuse(SOURCE, Dialect::Amplitude, IngressError::MethodNotAllowed, 1);
    }
    let raw = match RawRequest::read(req, IDENTIFY_BODY_LIMIT).await {
        Ok(r) => r,
        Err(e) => return refuse(SOURCE, Dialect::Amplitude, e, 1),
    };
    let received_at = state.clock.now();
    let form = identify::form(&raw);
    let Some(api_key) = form.api_key else {
        return refuse(SOURCE, Dialect::Amplitude, IngressError::MissingField { field: "api_key" }, 1);
    };
    if let Err(e) = state.amplitude.check_key(&api_key) {
        return refuse(SOURCE, Dialect::Amplitude, e, 1);
    }
    let items = match identify::identifications(form.identification.as_deref()) {
        Ok(items) => items,
        Err(e) => return refuse(SOURCE, Dialect::Amplitude, e, 1),
    };
    let n = items.len();
    state.meters.request_size(SOURCE, raw.body.len(), n);
    let origin = Origin { api_key: &api_key, received_at, peer_ip: raw.peer.map(|p| p.ip().to_string()) };
    match validate_and_normalize(items, DEFAULT_MIN_ID_LENGTH, &origin) {
        // Unverified: Amplitude's exact Identify success body. The HTTP V2
        // one keeps every answer JSON with an integer `code`.
        Ok(accepted) => ingest(&state, &api_key, accepted, raw.body.len(), received_at).await,
        Err(e) => refuse(SOURCE, Dialect::Amplitude, e, n),
    }
}

/// Validate and normalize a request's events: the pure part of the request
/// path (no key check, throttle, dedup or publish).
pub fn validate_and_normalize(
    events: Vec<Value>,
    min_id_length: usize,
    origin: &Origin<'_>,
) -> Result<Vec<Accepted>, IngressError> {
    if events.len() > MAX_EVENTS {
        return Err(IngressError::TooManyEvents { limit: MAX_EVENTS });
    }
    validate_events(&events, min_id_length)?;
    Ok(events
        .into_iter()
        .filter_map(|v| match v {
            Value::Object(obj) => Some(normalize::normalize(obj, origin)),
            _ => None,
        })
        .collect())
}

/// Throttle, dedup, publish, answer.
async fn ingest(
    state: &AppState,
    project: &str,
    accepted: Vec<Accepted>,
    payload_bytes: usize,
    received_at: DateTime<Utc>,
) -> Response {
    let amp = &state.amplitude;
    let n = accepted.len();
    let now_sec = received_at.timestamp();
    let throttling = amp.throttle.enabled();
    if throttling {
        let who: Vec<Sender<'_>> = accepted.iter().map(|a| sender(&a.user_id, &a.device_id)).collect();
        if let Err(e) = amp.throttle.check(project, &who, now_sec) {
            return refuse(SOURCE, Dialect::Amplitude, e, n);
        }
    }

    // What the request keeps while it waits on the bus is only what it
    // needs after: the new ids and, when throttling, the senders.
    let mut keys = Vec::new();
    let mut in_request = HashSet::new();
    let mut repeated_in_request = 0;
    let mut events: Vec<Event> = Vec::with_capacity(n);
    let mut who = Vec::with_capacity(if throttling { n } else { 0 });
    for a in accepted {
        let fresh = match &a.insert_id {
            None => true,
            Some(insert_id) => {
                let key = dedup_key(project, &a, insert_id);
                if in_request.contains(&key) {
                    repeated_in_request += 1;
                    false
                } else if amp.dedup.seen(&key) {
                    false
                } else {
                    in_request.insert(key.clone());
                    keys.push(key);
                    true
                }
            }
        };
        if fresh {
            events.push(a.event);
        }
        if throttling {
            who.push((a.user_id, a.device_id));
        }
    }
    drop(in_request);
    if repeated_in_request > 0 {
        m::dedup_hit(DEDUP_STORE, repeated_in_request);
    }

    if let Err(e) = publish(state, SOURCE, events).await {
        return refuse(SOURCE, Dialect::Amplitude, e, n);
    }
    amp.dedup.remember(keys.iter().map(String::as_str));
    if throttling {
        let who: Vec<Sender<'_>> = who.iter().map(|(u, d)| sender(u, d)).collect();
        amp.throttle.record(project, &who, now_sec);
    }
    success(n, payload_bytes, received_at)
}

fn sender<'a>(user_id: &'a Option<String>, device_id: &'a Option<String>) -> Sender<'a> {
    Sender { user_id: user_id.as_deref(), device_id: device_id.as_deref() }
}

/// Amplitude scopes insert_id dedup to the project and the device (the user
/// when there is no device). Hashed so memory per id is fixed and the API
/// key never reaches the dedup file on disk.
fn dedup_key(project: &str, a: &Accepted, insert_id: &str) -> String {
    let (scope_kind, scope) = match (&a.device_id, &a.user_id) {
        (Some(d), _) => ("d", d.as_str()),
        (None, Some(u)) => ("u", u.as_str()),
        (None, None) => ("-", ""),
    };
    let mut h = Sha256::new();
    for part in [project, scope_kind, scope, insert_id] {
        h.update(part.as_bytes());
        h.update([0x1f]);
    }
    hex::encode(&h.finalize()[..16])
}

/// Amplitude's success body. `events_ingested` counts every valid event,
/// duplicates included: they are ingested as far as the client can tell.
fn success(events: usize, payload_bytes: usize, now: DateTime<Utc>) -> Response {
    axum::Json(json!({
        "code": 200,
        "events_ingested": events,
        "payload_size_bytes": payload_bytes,
        "server_upload_time": now.timestamp_millis(),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::bus::{BusError, Publisher, Record, Topic};
    use crate::ingress::SystemClock;

    /// A bus that notes, when asked to publish, whether the request body
    /// has any holder left but the test.
    struct BodyWatch {
        body: Mutex<Option<Bytes>>,
        only_holder: Mutex<Option<bool>>,
    }

    #[async_trait]
    impl Publisher for BodyWatch {
        async fn publish(&self, _: Topic, _: Vec<Record>) -> Result<(), BusError> {
            let only = self.body.lock().unwrap().as_ref().map(Bytes::is_unique);
            *self.only_holder.lock().unwrap() = only;
            Ok(())
        }
        async fn ready(&self) -> Result<(), BusError> {
            Ok(())
        }
        async fn flush(&self, _: Duration) -> Result<(), BusError> {
            Ok(())
        }
    }

    /// The body is a slice of the connection's read buffer: a request
    /// waiting for the bus must not keep it (hyper's read buffers held
    /// ~117 KB each under Amplitude load, BENCHMARKS.md). Fails if the
    /// handler keeps the request until the publish returns.
    #[tokio::test]
    async fn the_body_is_released_before_the_publish() {
        let body = Bytes::from(
            json!({"api_key": "k", "events": [{"event_type": "e", "user_id": "user-1", "insert_id": "i-1"}]})
                .to_string(),
        );
        let watch = Arc::new(BodyWatch { body: Mutex::new(Some(body.clone())), only_holder: Mutex::new(None) });
        let state =
            AppState::new(Arc::new(Config::default()), watch.clone(), Arc::new(SystemClock), None, None).unwrap();
        let raw = RawRequest {
            method: Method::POST,
            path: "/batch".into(),
            query: None,
            headers: Default::default(),
            body,
            peer: None,
        };
        let resp = handle_batch(&state, raw).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(*watch.only_holder.lock().unwrap(), Some(true), "the handler still held the body");
    }
}
