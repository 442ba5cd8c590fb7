//! Capture v1: `POST /i/v1/analytics/events`, as posthog-python speaks it
//! with `capture_mode="v1"` (its `capture_v1.py`) and PostHog's capture
//! service answers it.
//!
//! Request: `Authorization: Bearer <project token>`, `Content-Type:
//! application/json`, the headers `PostHog-Sdk-Info` (`<lib>/<version>`),
//! `PostHog-Attempt`, `PostHog-Request-Id` (a UUID),
//! `PostHog-Request-Timestamp` (RFC 3339, the clock-skew reference) and
//! `User-Agent`; body `{created_at, batch: [...], historical_migration?}`,
//! optionally `Content-Encoding: gzip | deflate | zstd | br`. Each event is
//! `{event, uuid, distinct_id, timestamp, options, properties, session_id?,
//! window_id?}` with `$set`/`$set_once` inside `properties` and `$lib`
//! coming from `PostHog-Sdk-Info`.
//!
//! Response: batch-level problems (headers, token, JSON, uuids) refuse the
//! whole request (400/401/413/415, 503 when the bus refuses); otherwise 200
//! `{"results": {<uuid>: {"result": "ok"|"warning"|"drop", "details"?}}}`.
//! An event that fails validation is `drop`ped with PostHog's detail tag and
//! never published; the rest are published together. `retry` is never
//! answered: when the bus refuses, the whole request gets 503 and the SDK
//! resends it, so a 200 always means every `ok` event is durable.

use std::collections::HashSet;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::decode::{gunzip, inflate, inflate_zlib};
use super::normalize::{self, Shared};
use super::{malformed, PosthogState, RequestFacts, BATCH_BODY_LIMIT, DECOMPRESSED_LIMIT, EVENT_SIZE_LIMIT, SOURCE};
use crate::event::{Event, Library};
use crate::ingress::{publish, refuse, AppState, Dialect, IngressError, RawRequest};

/// The v1 route (also served with a trailing slash).
pub const PATH: &str = "/i/v1/analytics/events";

/// Headers PostHog's v1 endpoint requires besides `Authorization`.
const REQUIRED_HEADERS: [&str; 6] = [
    "content-type",
    "user-agent",
    "posthog-sdk-info",
    "posthog-attempt",
    "posthog-request-id",
    "posthog-request-timestamp",
];

/// Longest event name and distinct id v1 accepts (longer ones are dropped,
/// not truncated as in v0).
const MAX_NAME_LEN: usize = 200;
const MAX_DISTINCT_ID_LEN: usize = 200;

/// Distinct ids that betray an SDK bug; PostHog accepts such events with a
/// `warning` and without person processing.
const ILLEGAL_DISTINCT_IDS: &[&str] = &[
    "0",
    "00000000-0000-0000-0000-000000000000",
    "[object object]",
    "anonymous",
    "anonymous-user",
    "backend",
    "distinct_id",
    "distinctid",
    "email",
    "false",
    "guest",
    "id",
    "nan",
    "none",
    "not_authenticated",
    "null",
    "system",
    "true",
    "undefined",
    "user",
];

/// What the server tells the SDK about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted.
    Ok,
    /// Accepted with a caveat (PostHog: person processing disabled).
    Warning(&'static str),
    /// Refused for good; the SDK reports it and does not resend.
    Drop(&'static str),
}

/// A decoded v1 request: the envelopes to publish and every event's verdict
/// keyed by its uuid, in request order.
#[derive(Debug)]
pub struct Decoded {
    pub events: Vec<Event>,
    pub results: Vec<(String, Verdict)>,
}

impl Decoded {
    /// The 200 body: `{"results": {uuid: {"result", "details"?}}}`.
    pub fn response_body(&self) -> Value {
        let mut results = Map::new();
        for (uuid, verdict) in &self.results {
            let entry = match verdict {
                Verdict::Ok => json!({"result": "ok"}),
                Verdict::Warning(d) => json!({"result": "warning", "details": d}),
                Verdict::Drop(d) => json!({"result": "drop", "details": d}),
            };
            results.insert(uuid.clone(), entry);
        }
        json!({ "results": results })
    }
}

#[derive(Deserialize)]
struct Batch<'a> {
    created_at: String,
    #[serde(default)]
    historical_migration: bool,
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// One event as v1 types it; a wrongly typed field fails the whole batch,
/// as on PostHog.
#[derive(Deserialize)]
struct WireEvent {
    event: String,
    uuid: String,
    distinct_id: String,
    timestamp: String,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    window_id: Option<String>,
    #[serde(default)]
    options: Value,
    #[serde(default = "empty_object")]
    properties: Value,
}

/// Typed `options`, each mapped back to the legacy property it came from so
/// v0 and v1 produce the same envelope for the same SDK call.
const OPTION_PROPERTIES: [(&str, &str, bool); 4] = [
    ("cookieless_mode", "$cookieless_mode", true),
    ("disable_skew_correction", "$ignore_sent_at", true),
    ("process_person_profile", "$process_person_profile", true),
    ("product_tour_id", "$product_tour_id", false),
];

/// Read `options` into properties; `None` when a known option has a value
/// of the wrong type (the event is then dropped with `invalid_options`).
fn apply_options(options: &Value, props: &mut Map<String, Value>) -> Option<()> {
    let map = match options {
        Value::Null => return Some(()),
        Value::Object(m) => m,
        _ => return None,
    };
    for (option, property, boolean) in OPTION_PROPERTIES {
        let Some(v) = map.get(option).filter(|v| !v.is_null()) else { continue };
        let value = if boolean { Value::Bool(coerce_bool(v)?) } else { Value::String(coerce_string(v)?) };
        props.insert(property.to_string(), value);
    }
    Some(())
}

fn coerce_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        _ => None,
    }
}

fn coerce_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

fn invalid_header(message: String) -> IngressError {
    malformed("invalid_header_value", message)
}

/// `PostHog-Sdk-Info` is `<lib>/<version>`, split at the last `/`.
fn sdk_library(info: &str) -> Option<Library> {
    let (name, version) = info.rsplit_once('/')?;
    let (name, version) = (name.trim(), version.trim());
    (!name.is_empty() && !version.is_empty() && info.len() <= 200)
        .then(|| Library { name: name.to_string(), version: Some(version.to_string()) })
}

/// Decode a v1 request: header checks, decompression, batch and event
/// validation, normalization. Pure apart from metrics.
pub fn decode(
    policy: &PosthogState,
    facts: &RequestFacts<'_>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Decoded, IngressError> {
    // Missing credentials are 401 before anything else is looked at.
    if facts.headers.get("authorization").is_none() {
        return Err(IngressError::Unauthorized {
            code: "missing_token",
            message: "missing Authorization header".into(),
        });
    }
    let missing: Vec<&str> = REQUIRED_HEADERS.iter().copied().filter(|h| facts.headers.get(*h).is_none()).collect();
    if !missing.is_empty() {
        return Err(malformed("missing_required_headers", format!("request is missing required headers: {missing:?}")));
    }
    let header = |name: &str| {
        facts.header(name).ok_or_else(|| invalid_header(format!("{name} contains non-visible ASCII characters")))
    };
    let auth = header("authorization")?;
    let token = match auth.get(..7) {
        Some(scheme) if auth.len() > 7 && scheme.eq_ignore_ascii_case("bearer ") => &auth[7..],
        _ => return Err(invalid_header("Authorization must use the Bearer scheme".into())),
    };
    let token = policy.check_token(token)?;

    let content_type = header("content-type")?;
    if !content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json") {
        return Err(IngressError::Unsupported {
            code: "unsupported_content_type",
            message: format!("unsupported content type: {content_type}"),
        });
    }
    let encoding = match facts.headers.get("content-encoding") {
        None => None,
        Some(v) => {
            let e = v
                .to_str()
                .map_err(|_| invalid_header("Content-Encoding contains non-visible ASCII characters".into()))?
                .trim()
                .to_ascii_lowercase();
            if !matches!(e.as_str(), "gzip" | "deflate" | "zstd" | "br") {
                return Err(IngressError::Unsupported {
                    code: "unsupported_encoding",
                    message: format!("unsupported content encoding: {e}"),
                });
            }
            Some(e)
        }
    };
    let request_id = header("posthog-request-id")?;
    uuid::Uuid::parse_str(request_id.trim())
        .map_err(|_| invalid_header(format!("PostHog-Request-Id is not a valid UUID: {request_id}")))?;
    let attempt = header("posthog-attempt")?;
    if !attempt.trim().parse::<u32>().is_ok_and(|n| n >= 1) {
        return Err(invalid_header(format!("PostHog-Attempt must be a positive integer: {attempt}")));
    }
    let sent = header("posthog-request-timestamp")?;
    let client_time = DateTime::parse_from_rfc3339(sent.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| invalid_header(format!("PostHog-Request-Timestamp is not valid RFC 3339: {sent}")))?;
    let library = sdk_library(header("posthog-sdk-info")?);

    if body.is_empty() {
        return Err(malformed("empty_body", "request body is empty"));
    }
    let inflated;
    let json: &[u8] = match encoding.as_deref() {
        None => body,
        Some(e) => {
            inflated = decompress(e, body)?;
            crate::metrics::decompression(SOURCE, body.len(), inflated.len());
            &inflated
        }
    };
    if json.len() > DECOMPRESSED_LIMIT {
        return Err(IngressError::TooLarge { what: "decompressed payload", limit: DECOMPRESSED_LIMIT });
    }
    let text = std::str::from_utf8(json).map_err(|_| malformed("request_parsing_error", "body is not UTF-8"))?;
    let batch: Batch<'_> = serde_json::from_str(text)
        .map_err(|e| malformed("request_parsing_error", format!("failed to parse request: {e}")))?;
    if batch.batch.is_empty() {
        return Err(malformed("empty_batch", "request batch is empty"));
    }
    if DateTime::parse_from_rfc3339(&batch.created_at).is_err() {
        return Err(malformed("invalid_batch", format!("created_at is not valid RFC 3339: {}", batch.created_at)));
    }

    let mut wires = Vec::with_capacity(batch.batch.len());
    let mut seen = HashSet::with_capacity(batch.batch.len());
    for raw in &batch.batch {
        let wire: WireEvent = serde_json::from_str(raw.get())
            .map_err(|e| malformed("request_parsing_error", format!("failed to parse request: {e}")))?;
        let uuid = wire.uuid.trim();
        if uuid.is_empty() {
            return Err(malformed("missing_event_uuid", "event submitted without a uuid"));
        }
        let uuid = uuid::Uuid::parse_str(uuid)
            .map_err(|_| malformed("invalid_event_uuid", format!("invalid event uuid: {uuid}")))?;
        if !seen.insert(uuid) {
            return Err(malformed("duplicate_event_uuid", format!("duplicate event uuid: {uuid}")));
        }
        wires.push((uuid, raw.get().len(), wire));
    }

    let shared = Shared {
        token: &token,
        now,
        sent_at: Some(client_time),
        ip: facts.client_ip(),
        user_agent: facts.user_agent(),
        library,
        historical_migration: batch.historical_migration,
    };
    let mut decoded = Decoded { events: Vec::new(), results: Vec::with_capacity(wires.len()) };
    for (uuid, size, wire) in wires {
        // The SDK keys its retry bookkeeping by the uuid exactly as it sent it.
        let key = wire.uuid.trim().to_string();
        match to_event(&shared, uuid, size, wire) {
            Ok((event, verdict)) => {
                decoded.events.push(event);
                decoded.results.push((key, verdict));
            }
            Err(reason) => decoded.results.push((key, Verdict::Drop(reason))),
        }
    }
    Ok(decoded)
}

/// Validate one event (PostHog's per-event `drop` tags) and build its envelope.
fn to_event(
    shared: &Shared<'_>,
    uuid: uuid::Uuid,
    size: usize,
    wire: WireEvent,
) -> Result<(Event, Verdict), &'static str> {
    if size > EVENT_SIZE_LIMIT {
        return Err("event_too_big");
    }
    if wire.event == "$performance_event" {
        return Err("dropped_performance_event");
    }
    if wire.event.is_empty() {
        return Err("missing_event_name");
    }
    if wire.event.len() > MAX_NAME_LEN {
        return Err("event_name_too_long");
    }
    let distinct_id = wire.distinct_id.trim();
    if distinct_id.is_empty() {
        return Err("missing_distinct_id");
    }
    if distinct_id.len() > MAX_DISTINCT_ID_LEN {
        return Err("distinct_id_too_large");
    }
    if DateTime::parse_from_rfc3339(&wire.timestamp).is_err() {
        return Err("invalid_event_timestamp");
    }
    let Value::Object(mut props) = wire.properties else {
        return Err("malformed_event_properties");
    };
    apply_options(&wire.options, &mut props).ok_or("invalid_options")?;
    if let Some(s) = wire.session_id {
        props.insert("$session_id".into(), Value::String(s));
    }
    if let Some(w) = wire.window_id {
        props.insert("$window_id".into(), Value::String(w));
    }
    let verdict = if ILLEGAL_DISTINCT_IDS.iter().any(|bad| distinct_id.eq_ignore_ascii_case(bad)) {
        Verdict::Warning("person_processing_disabled")
    } else {
        Verdict::Ok
    };
    let distinct_id =
        normalize::distinct_id_text(&Value::String(distinct_id.to_string())).ok_or("missing_distinct_id")?;
    let mut top = Map::new();
    top.insert("timestamp".into(), Value::String(wire.timestamp));
    let event = normalize::envelope(shared, &wire.event, distinct_id, uuid.to_string(), top, props);
    Ok((event, verdict))
}

/// Inflate a v1 body per its `Content-Encoding`, capped like v0.
fn decompress(encoding: &str, body: &[u8]) -> Result<Vec<u8>, IngressError> {
    match encoding {
        "gzip" => gunzip(body),
        "deflate" => inflate_zlib(body),
        "zstd" => third_party(|| {
            zstd_window_ok(body)?;
            let reader = ruzstd::decoding::StreamingDecoder::new(body)
                .map_err(|e| malformed("invalid_zstd", format!("invalid zstd data: {e}")))?;
            inflate(reader, "invalid_zstd", "zstd")
        }),
        "br" => third_party(|| inflate(brotli_decompressor::Decompressor::new(body, 4096), "invalid_brotli", "brotli")),
        other => Err(IngressError::Unsupported {
            code: "unsupported_encoding",
            message: format!("unsupported content encoding: {other}"),
        }),
    }
}

/// The zstd and brotli decoders are third-party code fed attacker bytes; a
/// panic in them must become a 400, not a dropped connection.
fn third_party(f: impl FnOnce() -> Result<Vec<u8>, IngressError>) -> Result<Vec<u8>, IngressError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(malformed("invalid_encoding", "the compressed body could not be decoded")))
}

/// A zstd frame names the window its decoder must hold; refuse windows
/// larger than the output cap before the decoder reserves them (up to
/// 100 MiB in ruzstd) for a few bytes of input.
fn zstd_window_ok(body: &[u8]) -> Result<(), IngressError> {
    const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    let too_large = || IngressError::TooLarge { what: "zstd window", limit: DECOMPRESSED_LIMIT };
    let invalid = || malformed("invalid_zstd", "not a zstd frame");
    if body.get(..4) != Some(&MAGIC[..]) {
        return Err(invalid());
    }
    let descriptor = *body.get(4).ok_or_else(invalid)?;
    let single_segment = descriptor & 0x20 != 0;
    let fcs_flag = descriptor >> 6;
    let dict_len = [0usize, 1, 2, 4][(descriptor & 0x03) as usize];
    let mut pos = 5;
    let window = if single_segment {
        None
    } else {
        let wd = *body.get(pos).ok_or_else(invalid)?;
        pos += 1;
        let log = 10 + u64::from(wd >> 3);
        let base = 1u64 << log;
        Some(base + (base / 8) * u64::from(wd & 7))
    };
    pos += dict_len;
    let fcs_len = match (fcs_flag, single_segment) {
        (0, true) => 1,
        (0, false) => 0,
        (1, _) => 2,
        (2, _) => 4,
        _ => 8,
    };
    let window = match window {
        Some(w) => w,
        None => {
            let bytes = body.get(pos..pos + fcs_len).ok_or_else(invalid)?;
            let mut v = 0u64;
            for (i, b) in bytes.iter().enumerate() {
                v |= u64::from(*b) << (8 * i);
            }
            if fcs_len == 2 {
                v += 256;
            }
            v
        }
    };
    if window > DECOMPRESSED_LIMIT as u64 {
        return Err(too_large());
    }
    Ok(())
}

/// `POST /i/v1/analytics/events`.
pub async fn capture(State(state): State<AppState>, req: Request) -> Response {
    match RawRequest::read(req, BATCH_BODY_LIMIT).await {
        Ok(raw) => handle(&state, raw).await,
        Err(e) => refuse(SOURCE, Dialect::PosthogV1, e, 1),
    }
}

/// Decode, publish the accepted events, answer per event.
pub async fn handle(state: &AppState, raw: RawRequest) -> Response {
    let facts = RequestFacts::of(&raw);
    let decoded = match decode(&state.posthog, &facts, &raw.body, state.clock.now()) {
        Ok(d) => d,
        Err(e) => return refuse(SOURCE, Dialect::PosthogV1, e, 1),
    };
    state.meters.request_size(SOURCE, raw.body.len(), decoded.results.len());
    let mut decoded = decoded;
    let events = std::mem::take(&mut decoded.events);
    let n = events.len();
    if let Err(e) = publish(state, SOURCE, events).await {
        return refuse(SOURCE, Dialect::PosthogV1, e, n);
    }
    for (_, verdict) in &decoded.results {
        if let Verdict::Drop(reason) = verdict {
            crate::metrics::events_rejected(SOURCE, reason, 1);
        }
    }
    axum::Json(decoded.response_body()).into_response()
}
