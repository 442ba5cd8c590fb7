//! PostHog capture: every route, body shape and encoding the PostHog SDKs
//! send, answered the way PostHog answers.
//!
//! - v0 (`/e`, `/i/v0/e`, `/capture`, `/track`, `/engage`, `/batch`, each
//!   also with a trailing slash; POST, GET `?data=`): [`decode`] turns the
//!   request into envelopes, [`handle`] publishes them and answers
//!   `200 {"status": 1}` (204 for `beacon=1`).
//! - v1 (`POST /i/v1/analytics/events`, Bearer token, per-event results):
//!   see [`v1`].
//! - CORS: [`cors`] reflects the caller's origin with credentials on every
//!   route here and on `/batch`, and answers preflights.
//!
//! Submodules: `decode` (where the payload sits and how it is wrapped),
//! `lz64` (capped LZ-string), `normalize` (one wire event → [`Event`]), `v1`.

mod decode;
mod lz64;
mod normalize;
#[cfg(test)]
mod tests;
pub mod v1;

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::{publish_records, refuse, AppState, Dialect, IngressError, RawRequest};
use crate::bus::Record;
use crate::config::Config;
use crate::event::scan::Scan;
use crate::event::{new_id, Event, Library, Nested, RawProps};
pub use normalize::{kind_of, parse_time, DISTINCT_ID_MAX_CHARS};

/// Body limit on `/batch` and the v1 route (PostHog: 20 MiB).
pub const BATCH_BODY_LIMIT: usize = 20 * 1024 * 1024;
/// Body limit on every other capture route (PostHog: 2 MiB).
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;
/// What a body may inflate to once decompressed and unwrapped. Decoders
/// stop one byte past it, so a gzip bomb costs at most this much memory.
pub const DECOMPRESSED_LIMIT: usize = 20 * 1024 * 1024;
/// One event's JSON may not exceed this (PostHog: 1 MB).
pub const EVENT_SIZE_LIMIT: usize = 1_000_000;
/// Longest accepted project token (PostHog: 64, ASCII).
pub const TOKEN_MAX_LEN: usize = 64;

/// The v0 capture routes; each is also served with a trailing slash.
pub const CAPTURE_PATHS: [&str; 5] = ["/e", "/i/v0/e", "/capture", "/track", "/engage"];

const SOURCE: &str = "posthog";

/// Accepted project tokens.
pub struct PosthogState {
    /// Empty means open mode: any well-formed token is accepted.
    tokens: Vec<String>,
}

impl PosthogState {
    pub fn new(cfg: &Config) -> anyhow::Result<PosthogState> {
        Ok(PosthogState::from_tokens(cfg.connectors.posthog.project_tokens.iter().map(|t| t.expose().to_string())))
    }

    /// A state accepting exactly `tokens` (none: open mode).
    pub fn from_tokens(tokens: impl IntoIterator<Item = String>) -> PosthogState {
        PosthogState { tokens: tokens.into_iter().collect() }
    }

    fn accepts(&self, token: &str) -> bool {
        self.tokens.is_empty() || self.tokens.iter().any(|t| t == token)
    }

    /// PostHog's token rules (trimmed, non-empty, ≤ 64 ASCII characters, no
    /// NUL, not a `phx_` personal key), then the configured allow-list.
    pub fn check_token(&self, raw: &str) -> Result<String, IngressError> {
        let token = raw.trim();
        let refuse = |code: &'static str, message: &str| IngressError::Unauthorized { code, message: message.into() };
        if token.is_empty() {
            return Err(refuse("missing_token", "the project token is empty"));
        }
        if token.len() > TOKEN_MAX_LEN || !token.is_ascii() || token.contains('\0') {
            return Err(refuse("invalid_token", "the project token is malformed"));
        }
        if token.starts_with("phx_") {
            return Err(refuse(
                "personal_api_key",
                "a personal API key (phx_) cannot capture events; use the project token (phc_)",
            ));
        }
        if !self.accepts(token) {
            return Err(refuse("invalid_token", "project token is not valid"));
        }
        Ok(token.to_string())
    }
}

/// What decoding needs to know about an HTTP request besides its body.
#[derive(Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The request path (`/engage` changes how a nameless event is read).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The TCP peer, used for the client ip when no proxy header names one.
    pub peer: Option<IpAddr>,
}

impl<'a> RequestFacts<'a> {
    pub fn of(raw: &'a RawRequest) -> RequestFacts<'a> {
        RequestFacts {
            path: &raw.path,
            query: raw.query.as_deref(),
            headers: &raw.headers,
            peer: raw.peer.map(|p| p.ip()),
        }
    }

    /// First value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let q = self.query?;
        url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }

    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The media type without parameters, lower-cased.
    pub fn mime_type(&self) -> Option<String> {
        self.header("content-type").map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
    }

    fn is_engage(&self) -> bool {
        self.path.trim_end_matches('/') == "/engage"
    }

    /// `beacon=1`: the browser's sendBeacon ignores the body, answer 204.
    pub fn beacon(&self) -> bool {
        self.query_param("beacon").is_some_and(|b| b.trim() == "1")
    }

    /// The client's address: the first `X-Forwarded-For` hop (Sluice runs
    /// behind an ingress or load balancer), else `X-Real-IP`, else the peer.
    /// Like PostHog's capture this trusts the header; it only ever feeds
    /// `context.ip`, never an access decision.
    pub fn client_ip(&self) -> Option<String> {
        let forwarded = self
            .header("x-forwarded-for")
            .and_then(|v| v.split(',').next())
            .or_else(|| self.header("x-real-ip"))
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        forwarded.or(self.peer).map(|ip| ip.to_string())
    }

    pub fn user_agent(&self) -> Option<String> {
        self.header("user-agent").filter(|u| !u.is_empty()).map(str::to_string)
    }
}

/// Routes served here (`/batch` is routed in `ingress::router` by body shape).
pub fn routes() -> Router<AppState> {
    let mut r = Router::new();
    for path in CAPTURE_PATHS {
        r = r.route(path, get(capture).post(capture)).route(&format!("{path}/"), get(capture).post(capture));
    }
    r = r.route(v1::PATH, post(v1::capture)).route(&format!("{}/", v1::PATH), post(v1::capture));
    r.layer(axum::middleware::from_fn(cors))
}

/// posthog-js runs on the customer's own origin, and some of its transports
/// send credentialed requests; a credentialed response must name the origin
/// (never `*`), so the caller's origin, method and headers are reflected, as
/// PostHog does. Every OPTIONS is answered here (200, empty), as a preflight.
///
/// The headers are the ones tower-http's `CorsLayer` writes when set to
/// mirror the request with credentials and a one-hour max age (a test holds
/// the two side by side). A middleware of its own because axum clones a
/// route's layers for every request, and that layer's clone plus the `Vary`
/// value it joins anew each time cost about 2 % of a PostHog request's CPU
/// (BENCHMARKS.md, "One produce call per request").
pub async fn cors(req: Request, next: axum::middleware::Next) -> Response {
    use axum::http::header::{self, HeaderValue};
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut resp = if req.method() == axum::http::Method::OPTIONS {
        let mut resp = StatusCode::OK.into_response();
        let mirrored = [
            (header::ACCESS_CONTROL_REQUEST_METHOD, header::ACCESS_CONTROL_ALLOW_METHODS),
            (header::ACCESS_CONTROL_REQUEST_HEADERS, header::ACCESS_CONTROL_ALLOW_HEADERS),
        ];
        for (asked, allowed) in mirrored {
            if let Some(v) = req.headers().get(asked) {
                resp.headers_mut().insert(allowed, v.clone());
            }
        }
        resp.headers_mut().insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("3600"));
        resp
    } else {
        next.run(req).await
    };
    let headers = resp.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    // Appended: a response's own Vary values stay.
    headers.append(
        header::VARY,
        HeaderValue::from_static("origin, access-control-request-method, access-control-request-headers"),
    );
    resp
}

async fn capture(State(state): State<AppState>, req: Request) -> Response {
    match RawRequest::read(req, BODY_LIMIT).await {
        Ok(raw) => handle(&state, raw).await,
        Err(e) => refuse(SOURCE, Dialect::Posthog, e, 1),
    }
}

/// Decode, validate, publish, answer: the v0 capture request cycle.
pub async fn handle(state: &AppState, raw: RawRequest) -> Response {
    let facts = RequestFacts::of(&raw);
    let records = match decode_records(&state.posthog, &facts, &raw.body, state.clock.now()) {
        Ok(r) => r,
        Err(e) => return refuse(SOURCE, Dialect::Posthog, e, 1),
    };
    state.meters.request_size(SOURCE, raw.body.len(), records.len());
    let (n, beacon) = (records.len(), facts.beacon());
    drop(raw);
    match publish_records(state, SOURCE, records).await {
        Ok(()) => ok(beacon),
        Err(e) => refuse(SOURCE, Dialect::Posthog, e, n),
    }
}

/// PostHog's success answer: the SDKs look only at the status.
fn ok(beacon: bool) -> Response {
    if beacon {
        StatusCode::NO_CONTENT.into_response()
    } else {
        // The bytes `Json(json!({"status": 1}))` writes, without building
        // and serializing a map per request.
        ([(axum::http::header::CONTENT_TYPE, "application/json")], r#"{"status":1}"#).into_response()
    }
}

/// The batch envelope `{api_key|token, batch, sent_at|sentAt,
/// historical_migration}`; on a single event only `batch` is absent.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    batch: Option<Vec<RawEvent<'a>>>,
    #[serde(default)]
    api_key: Option<Value>,
    #[serde(default)]
    token: Option<Value>,
    #[serde(default)]
    sent_at: Option<Value>,
    #[serde(default, rename = "sentAt")]
    sent_at_camel: Option<Value>,
    #[serde(default)]
    historical_migration: Option<Value>,
}

/// A parsed v0 body: the events, and the envelope's fields when the body
/// was the batch envelope.
#[derive(Debug)]
struct ParsedBody<'a> {
    items: Vec<RawEvent<'a>>,
    envelope: Option<BatchMeta>,
}

#[derive(Debug)]
struct BatchMeta {
    /// `api_key` or `token`; wins over per-event tokens.
    token: Option<Value>,
    sent_at: Option<DateTime<Utc>>,
    historical_migration: bool,
}

impl BatchMeta {
    /// The envelope fields read, in this order.
    const FIELDS: [&str; 5] = ["api_key", "token", "sent_at", "sentAt", "historical_migration"];

    /// From the values of [`BatchMeta::FIELDS`] (absent or null: `None`),
    /// for both readers of a body.
    fn from_fields(values: [Option<Value>; 5]) -> BatchMeta {
        let [api_key, token, sent_at, sent_at_camel, historical_migration] = values.map(|v| v.filter(|v| !v.is_null()));
        BatchMeta {
            token: api_key.or(token),
            sent_at: sent_at.or(sent_at_camel).as_ref().and_then(Value::as_str).and_then(parse_time),
            historical_migration: historical_migration == Some(Value::Bool(true)),
        }
    }
}

/// One event of a v0 body, read in the body's single pass: its fields as
/// raw entries, its `properties` as raw entries of their own.
/// (`pub(crate)` for the reader's tests in `event::scan`, which compare
/// against this serde path.)
#[derive(Debug)]
pub(crate) struct RawEvent<'a> {
    pub(crate) fields: RawProps<'a>,
    pub(crate) props: Nested<'a>,
}

impl RawEvent<'_> {
    /// The event's size as compact JSON (what the per-event limit counts).
    fn size(&self) -> usize {
        let props = match &self.props {
            Nested::Object(p) => p.json_len() + "\"properties\":,".len(),
            _ => 0,
        };
        self.fields.json_len() + props
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawEvent<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = RawEvent<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an event (a JSON object)")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<RawEvent<'de>, M::Error> {
                let (fields, props) = RawProps::split_entries(map, "properties")?;
                Ok(RawEvent { fields, props })
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

fn parse_body(text: &str) -> Result<ParsedBody<'_>, IngressError> {
    match scan_body(text) {
        Some(parsed) => Ok(parsed),
        None => parse_body_serde(text),
    }
}

/// [`parse_body`] by serde_json: what decides every text the scanner leaves.
fn parse_body_serde(text: &str) -> Result<ParsedBody<'_>, IngressError> {
    let invalid = |e: serde_json::Error| malformed("invalid_payload", format!("invalid JSON: {e}"));
    // Events are then read through borrowed slices of this text: refuse
    // what parsing them into values would have refused.
    if needs_strict_check(text.as_bytes()) {
        serde_json::from_str::<Checked>(text).map_err(invalid)?;
    }
    match text.trim_start().as_bytes().first() {
        Some(b'[') => Ok(ParsedBody { items: serde_json::from_str(text).map_err(invalid)?, envelope: None }),
        Some(b'{') => {
            let env: Envelope<'_> = serde_json::from_str(text).map_err(invalid)?;
            match env.batch {
                Some(items) => Ok(ParsedBody {
                    items,
                    envelope: Some(BatchMeta::from_fields([
                        env.api_key,
                        env.token,
                        env.sent_at,
                        env.sent_at_camel,
                        env.historical_migration,
                    ])),
                }),
                None => Ok(ParsedBody { items: vec![serde_json::from_str(text).map_err(invalid)?], envelope: None }),
            }
        }
        _ => Err(malformed("invalid_payload", "expected a JSON object or array")),
    }
}

/// [`parse_body`]'s common case in one pass without serde_json: a batch
/// envelope, an array of events or one event, read by [`Scan`]. `None`
/// whenever the reader is unsure (a syntax error, an escaped key, what the
/// strict check looks for, a repeated envelope field, a null `batch`): the
/// serde path then reads the text and gives the answer or the error.
fn scan_body(text: &str) -> Option<ParsedBody<'_>> {
    fn event<'a>(s: &mut Scan<'a>) -> Option<RawEvent<'a>> {
        (s.peek()? == b'{').then_some(())?;
        let (fields, props) = s.split_object("properties")?;
        Some(RawEvent { fields, props })
    }
    fn events<'a>(s: &mut Scan<'a>) -> Option<Vec<RawEvent<'a>>> {
        let mut items = Vec::new();
        s.array(|s| {
            items.push(event(s)?);
            Some(())
        })?;
        Some(items)
    }
    let mut s = Scan::new(text);
    let parsed = match s.peek()? {
        b'[' => ParsedBody { items: events(&mut s)?, envelope: None },
        b'{' => {
            let mut batch = None;
            let mut fields: [Option<&str>; 5] = [None; 5];
            s.object(|s, key| {
                if key == "batch" {
                    if batch.is_some() || s.peek()? != b'[' {
                        return None;
                    }
                    batch = Some(events(s)?);
                } else if let Some(i) = BatchMeta::FIELDS.iter().position(|f| *f == key) {
                    if fields[i].replace(s.value()?).is_some() {
                        return None; // serde refuses a repeated field
                    }
                } else {
                    s.value()?;
                }
                Some(())
            })?;
            match batch {
                Some(items) => ParsedBody {
                    items,
                    envelope: Some(BatchMeta::from_fields(
                        fields.map(|raw| raw.and_then(|raw| serde_json::from_str::<Value>(raw).ok())),
                    )),
                },
                // Not an envelope: the text is one event.
                None => {
                    let mut single = Scan::new(text);
                    let item = event(&mut single)?;
                    single.at_end().then_some(())?;
                    ParsedBody { items: vec![item], envelope: None }
                }
            }
        }
        _ => return None,
    };
    s.at_end().then_some(parsed)
}

/// One event after the request-level checks: its name decided, its JSON
/// object split from `properties`, which stay the request's raw JSON.
struct Wire<'a> {
    /// The event's size as compact JSON (the envelope is about as big).
    size: usize,
    name: String,
    /// The event's fields but `properties`, parsed only where read.
    top: RawProps<'a>,
    props: RawProps<'a>,
}

/// Decode a v0 capture request into envelopes, parsed back from the bus
/// records [`decode_records`] makes (what a consumer of the bus will read).
pub fn decode(
    policy: &PosthogState,
    facts: &RequestFacts<'_>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Vec<Event>, IngressError> {
    decode_records(policy, facts, body, now)?
        .iter()
        .map(|r| Event::from_payload(&r.payload).map_err(|e| IngressError::Internal(format!("envelope: {e}"))))
        .collect()
}

/// Decode a v0 capture request into bus records: payload location and
/// encoding, body shape, token, per-event validation, normalization,
/// serialization. Event properties go from the request's JSON text to the
/// record's without being parsed into values. Pure apart from metrics;
/// `now` is the receive time. Returns no records when every event was one
/// PostHog silently drops (`$performance_event`).
pub fn decode_records(
    policy: &PosthogState,
    facts: &RequestFacts<'_>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Vec<Record>, IngressError> {
    let payload = decode::payload(facts, body)?;
    let text = std::str::from_utf8(&payload).map_err(|_| malformed("invalid_utf8", "payload is not UTF-8"))?;
    let parsed = parse_body(text)?;
    if parsed.items.is_empty() {
        return Err(malformed("empty_batch", "the request contains no events"));
    }

    let mut wires = Vec::with_capacity(parsed.items.len());
    for raw in parsed.items {
        let size = raw.size();
        if size > EVENT_SIZE_LIMIT {
            return Err(IngressError::TooLarge { what: "event", limit: EVENT_SIZE_LIMIT });
        }
        wires.push(split_event(raw, size, facts.is_engage())?);
    }

    let token = match &parsed.envelope {
        Some(meta) => match &meta.token {
            Some(Value::String(t)) => t.clone(),
            Some(_) => return Err(unauthorized("invalid_token", "the batch token is not a string")),
            None => return Err(unauthorized("missing_token", "the batch has no api_key")),
        },
        None => request_token(&wires)?,
    };
    let token = policy.check_token(&token)?;

    wires.retain(|w| w.name != "$performance_event");
    let sent_at = parsed.envelope.as_ref().and_then(|m| m.sent_at).or_else(|| query_sent_at(facts));
    let shared = normalize::Shared {
        token: &token,
        now,
        sent_at,
        ip: if facts.query_param("ip").as_deref() == Some("0") { None } else { facts.client_ip() },
        user_agent: facts.user_agent(),
        library: facts.query_param("ver").map(|v| Library { name: String::new(), version: Some(v) }),
        historical_migration: parsed.envelope.as_ref().is_some_and(|m| m.historical_migration),
    };
    wires
        .into_iter()
        .map(|w| {
            let size = w.size + 512;
            to_event(&shared, w).map(|e| e.into_record(size))
        })
        .collect()
}

fn split_event(raw: RawEvent<'_>, size: usize, engage: bool) -> Result<Wire<'_>, IngressError> {
    let RawEvent { mut fields, props } = raw;
    let name = match fields.remove("event") {
        Some(Value::String(n)) => n,
        None | Some(Value::Null) if engage => "$identify".to_string(),
        None | Some(Value::Null) => return Err(malformed("missing_event_name", "an event has no name")),
        Some(_) => return Err(malformed("invalid_payload", "an event name is not a string")),
    };
    if name.is_empty() {
        return Err(malformed("missing_event_name", "an event name is empty"));
    }
    let props = match props {
        Nested::Object(p) => p,
        Nested::Absent | Nested::Null => RawProps::default(),
        Nested::Other => return Err(malformed("invalid_payload", "event properties are not an object")),
    };
    Ok(Wire { size, name, top: fields, props })
}

/// Without an envelope, each event names its token (`token`, `$token`,
/// `api_key`, else `properties.token`); they must agree.
fn request_token(wires: &[Wire]) -> Result<String, IngressError> {
    let mut token: Option<String> = None;
    for w in wires {
        let found = ["token", "$token", "api_key"]
            .iter()
            .find_map(|k| w.top.get(k).filter(|v| !v.is_null()))
            .or_else(|| w.props.get("token").filter(|v| !v.is_null()));
        let t = match found {
            None => continue,
            Some(Value::String(t)) => t,
            Some(_) => return Err(unauthorized("invalid_token", "an event token is not a string")),
        };
        match &token {
            None => token = Some(t),
            Some(seen) if *seen != t => {
                return Err(unauthorized("token_mismatch", "events in one request carry different tokens"))
            }
            Some(_) => {}
        }
    }
    token.ok_or_else(|| unauthorized("missing_token", "no project token in the request"))
}

/// posthog-js sends its send time as `_=<ms>`. Values that read as before
/// 2021 are seconds from old SDKs, which PostHog ignores too.
fn query_sent_at(facts: &RequestFacts<'_>) -> Option<DateTime<Utc>> {
    let ms: i64 = facts.query_param("_")?.trim().parse().ok()?;
    DateTime::from_timestamp_millis(ms).filter(|t| t.timestamp() >= 1_609_459_200)
}

fn to_event<'a>(shared: &normalize::Shared<'_>, w: Wire<'a>) -> Result<Event<RawProps<'a>>, IngressError> {
    let distinct_id = normalize::find_distinct_id(&w.top, &w.props)
        .ok_or_else(|| malformed("missing_distinct_id", format!("event {:?} has no distinct_id", w.name)))?;
    let id = match w.top.get("uuid") {
        None | Some(Value::Null) => new_id(),
        Some(Value::String(s)) if s.trim().is_empty() => new_id(),
        Some(Value::String(s)) => {
            let text = s.trim();
            let id = uuid::Uuid::parse_str(text)
                .map_err(|_| malformed("invalid_uuid", format!("event uuid {s:?} is not a UUID")))?;
            // 36 characters parse only in the hyphenated form: in lower
            // case, and with nothing trimmed, that is the canonical text.
            if text.len() == 36 && s.len() == 36 && !s.bytes().any(|b| b.is_ascii_uppercase()) {
                s
            } else {
                id.to_string()
            }
        }
        Some(_) => return Err(malformed("invalid_uuid", "an event uuid is not a string")),
    };
    Ok(normalize::envelope(shared, &w.name, distinct_id, id, w.top, w.props))
}

/// Whether `text` may hold something a borrowed read (`RawValue`) lets
/// through but parsing into values refuses: a `\uD800`–`\uDFFF` escape (a
/// lone surrogate?), a number with an exponent or hundreds of digits (out of
/// range?), or nesting near serde_json's recursion limit. One cheap pass
/// that may say yes too often, never too rarely; [`Checked`] then decides.
fn needs_strict_check(text: &[u8]) -> bool {
    let (mut depth, mut digits, mut in_string) = (0usize, 0usize, false);
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if in_string {
            // Skip to the string's next quote or escape.
            match memchr::memchr2(b'"', b'\\', &text[i..]) {
                Some(n) => i += n,
                None => return false,
            }
            match text[i] {
                b'\\' => {
                    let surrogate = text.get(i + 1) == Some(&b'u')
                        && matches!(text.get(i + 2), Some(b'd' | b'D'))
                        && matches!(text.get(i + 3), Some(b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'));
                    if surrogate {
                        return true;
                    }
                    i += 2;
                    continue;
                }
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth >= 100 {
                        return true;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                b'e' | b'E' if i > 0 && (text[i - 1].is_ascii_digit() || text[i - 1] == b'.') => return true,
                _ => {}
            }
            digits = if b.is_ascii_digit() { digits + 1 } else { 0 };
            if digits > 300 {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// Reads a JSON text the way parsing it into values would (escapes decoded,
/// lone surrogates and out-of-range numbers refused), keeping nothing.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Checked, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

fn malformed(code: &'static str, message: impl Into<String>) -> IngressError {
    IngressError::Malformed { code, message: message.into() }
}

fn unauthorized(code: &'static str, message: &str) -> IngressError {
    IngressError::Unauthorized { code, message: message.into() }
}
