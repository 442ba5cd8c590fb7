//! Talking to Brevo: the request type, the [`Deliver`] hop trait (HTTP
//! client, dry run), and reading Brevo's answers: status classes,
//! `x-sib-ratelimit-*` headers and the batch endpoint's per-event errors.
//!
//! Reading an answer ([`classify`]) is a pure function so the rules that
//! decide between "accepted", "retry", "pause" and "dead-letter" are tested
//! without a network.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;

use crate::config::BrevoConfig;
use crate::metrics as m;

/// Brevo's rate-limit classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointClass {
    /// `/v3/events` and `/v3/events/batch` (sharing one bucket is
    /// unverified; sharing is the stricter reading).
    Events,
    /// `/v3/contacts/*`.
    Contacts,
    /// Everything else.
    Other,
}

impl EndpointClass {
    pub const ALL: [EndpointClass; 3] = [EndpointClass::Events, EndpointClass::Contacts, EndpointClass::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            EndpointClass::Events => "events",
            EndpointClass::Contacts => "contacts",
            EndpointClass::Other => "other",
        }
    }

    pub fn index(self) -> usize {
        match self {
            EndpointClass::Events => 0,
            EndpointClass::Contacts => 1,
            EndpointClass::Other => 2,
        }
    }
}

/// One Brevo API call.
#[derive(Debug, Clone, PartialEq)]
pub struct BrevoRequest {
    pub class: EndpointClass,
    /// Path below the base URL (which ends in `/v3`), e.g. `/events/batch`.
    pub path: String,
    pub body: Value,
    /// `body` serialized once, before a rate-limit token is taken, so the
    /// token covers only the network leg.
    pub payload: bytes::Bytes,
    /// Source events this request carries (for the events-per-request metric).
    pub events: usize,
}

impl BrevoRequest {
    pub fn new(class: EndpointClass, path: impl Into<String>, body: Value, events: usize) -> BrevoRequest {
        // Serializing a Value built from owned JSON cannot fail.
        let payload = serde_json::to_vec(&body).unwrap_or_default().into();
        BrevoRequest { class, path: path.into(), body, payload, events }
    }
}

/// Brevo's rate-limit headers. `reset` is read as seconds; a value above an
/// hour cannot be seconds for a per-second or per-hour window, so it is read
/// as milliseconds (one integrator reads it that way: **unverified**).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    pub reset: Option<Duration>,
    pub retry_after: Option<Duration>,
}

impl RateHeaders {
    pub fn from_headers(h: &reqwest::header::HeaderMap) -> RateHeaders {
        let num = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok());
        RateHeaders {
            limit: num("x-sib-ratelimit-limit").filter(|v| *v >= 0.0).map(|v| v as u64),
            remaining: num("x-sib-ratelimit-remaining").filter(|v| *v >= 0.0).map(|v| v as u64),
            reset: num("x-sib-ratelimit-reset").and_then(reset_duration),
            // Retry-After may also be an HTTP date; Brevo is not known to
            // send one, and a date we cannot read falls back to `reset`.
            retry_after: num("retry-after").filter(|v| *v >= 0.0 && v.is_finite()).map(Duration::from_secs_f64),
        }
    }
}

fn reset_duration(v: f64) -> Option<Duration> {
    if !(v.is_finite() && v >= 0.0) {
        return None;
    }
    if v > 3600.0 {
        Some(Duration::from_secs_f64(v / 1000.0))
    } else {
        Some(Duration::from_secs_f64(v))
    }
}

/// What Brevo answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrevoReply {
    pub status: u16,
    pub body: String,
    pub rate: RateHeaders,
}

/// The request never got an HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("connection failed: {0}")]
    Connection(String),
}

/// The last hop: send one request to Brevo and return its answer, whatever
/// the status. Deciding what the answer means is [`classify`]'s job.
#[async_trait]
pub trait Deliver: Send + Sync + 'static {
    async fn send(&self, req: &BrevoRequest) -> Result<BrevoReply, DeliverError>;
}

/// Logs the exact requests instead of sending them (no API key configured)
/// and answers the way Brevo answers success.
pub struct DryRun;

#[async_trait]
impl Deliver for DryRun {
    async fn send(&self, req: &BrevoRequest) -> Result<BrevoReply, DeliverError> {
        tracing::info!(
            method = "POST",
            path = %req.path,
            body = %req.body,
            events = req.events,
            "dry run: would send Brevo request"
        );
        m::brevo_request(req.class.as_str(), 0, Duration::ZERO, req.events);
        let (status, body) = if req.path == "/events/batch" {
            (202, format!(r#"{{"message":"dry run","count":{}}}"#, req.events))
        } else if req.path == "/contacts/import" {
            (202, r#"{"processId":0}"#.to_string())
        } else if req.path.starts_with("/contacts/lists/") {
            (201, r#"{"contacts":{"success":[],"failure":[]}}"#.to_string())
        } else {
            (204, String::new())
        };
        Ok(BrevoReply { status, body, rate: RateHeaders::default() })
    }
}

/// The real Brevo API.
pub struct HttpBrevo {
    client: reqwest::Client,
    base_url: String,
    api_key: String,
    /// `log.debug`: log every request (path, body, answer), never its key.
    log_requests: bool,
}

impl HttpBrevo {
    pub fn new(cfg: &BrevoConfig) -> anyhow::Result<HttpBrevo> {
        let api_key = cfg.api_key.as_ref().map(|k| k.expose().to_string()).unwrap_or_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.request_timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.request_timeout_ms.min(5_000)))
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpBrevo { client, base_url: cfg.base_url.trim_end_matches('/').to_string(), api_key, log_requests: false })
    }

    /// Log every request and Brevo's answer (the connector docs' `debug`
    /// switch, `log.debug` here). The `api-key` header is never logged.
    pub fn with_request_log(mut self, on: bool) -> HttpBrevo {
        self.log_requests = on;
        self
    }
}

#[async_trait]
impl Deliver for HttpBrevo {
    async fn send(&self, req: &BrevoRequest) -> Result<BrevoReply, DeliverError> {
        let started = Instant::now();
        let class = req.class.as_str();
        let resp = self
            .client
            .post(format!("{}{}", self.base_url, req.path))
            .header("api-key", &self.api_key)
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(req.payload.clone())
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                m::brevo_request(class, 0, started.elapsed(), req.events);
                return Err(transport_error(e));
            }
        };
        let status = resp.status().as_u16();
        let rate = RateHeaders::from_headers(resp.headers());
        let body = match resp.text().await {
            Ok(b) => b,
            // The status line arrived but the body did not: the outcome
            // is unknown, so it is retried like a timeout.
            Err(e) => {
                m::brevo_request(class, 0, started.elapsed(), req.events);
                return Err(transport_error(e));
            }
        };
        m::brevo_request(class, status, started.elapsed(), req.events);
        if self.log_requests {
            tracing::info!(
                method = "POST",
                path = %req.path,
                body = %req.body,
                events = req.events,
                status,
                answer = %body,
                "Brevo request"
            );
        }
        Ok(BrevoReply { status, body, rate })
    }
}

fn transport_error(e: reqwest::Error) -> DeliverError {
    if e.is_timeout() {
        DeliverError::Timeout(e.to_string())
    } else {
        DeliverError::Connection(e.to_string())
    }
}

/// One rejected item of a batch: its index in the request and Brevo's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    pub index: usize,
    pub message: String,
}

/// What an answer means for the request that got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Everything was accepted.
    Accepted,
    /// 207: these items failed, every other item was accepted.
    Partial(Vec<ItemError>),
    /// A permanent refusal (4xx other than 401/403/408/409/425/429). With
    /// item errors (the 400 `errors[].eventIndex` shape) only those items are
    /// bad and the rest must be sent again; without, the bad items are
    /// unknown and the batch has to be split to find them.
    Rejected { items: Vec<ItemError>, message: String, request_wide: bool },
    /// 429: wait (for `wait` when Brevo said how long) and send again.
    RateLimited { wait: Option<Duration> },
    /// 401/403: the key (or the caller's IP) is refused. Nothing is wrong
    /// with the events; they wait until the operator fixes access.
    Unauthorized(String),
    /// 408, 409, 425, 5xx, and transport failures: try again after a backoff.
    Retry(String),
}

/// Read Brevo's answer to `req`.
pub fn classify(req: &BrevoRequest, reply: &BrevoReply) -> Verdict {
    let status = reply.status;
    match status {
        207 => match batch_errors(&reply.body) {
            Some(items) => Verdict::Partial(items),
            None => {
                // The 207 body is unverified; when it cannot be read the
                // failures are unknown, and sending again would duplicate the
                // accepted part. Accept, loudly.
                tracing::error!(path = %req.path, body = %truncate(&reply.body, 2000), "unreadable 207 from Brevo: treating the batch as accepted");
                Verdict::Accepted
            }
        },
        200..=299 => Verdict::Accepted,
        429 => Verdict::RateLimited { wait: reply.rate.retry_after.max(reply.rate.reset) },
        401 | 403 => Verdict::Unauthorized(format!("{status}: {}", error_message(&reply.body))),
        408 | 409 | 425 => Verdict::Retry(format!("{status}: {}", error_message(&reply.body))),
        400..=499 => {
            let items = batch_errors(&reply.body).unwrap_or_default();
            let message = format!("{status}: {}", error_message(&reply.body));
            // A missing list (404) or an oversize body (413) says nothing
            // about one item; splitting would not isolate anything.
            let request_wide = items.is_empty() && (status == 404 && req.path.starts_with("/contacts/lists/"));
            Verdict::Rejected { items, message, request_wide }
        }
        _ => Verdict::Retry(format!("{status}: {}", error_message(&reply.body))),
    }
}

/// The batch endpoint's per-event errors:
/// `{"errors":[{"eventIndex":[0,3],"message":"..."}], ...}`.
pub fn batch_errors(body: &str) -> Option<Vec<ItemError>> {
    let v: Value = serde_json::from_str(body).ok()?;
    let errors = v.get("errors")?.as_array()?;
    let mut out = Vec::new();
    for e in errors {
        let message = e.get("message").and_then(Value::as_str).unwrap_or("rejected by Brevo").to_string();
        let idx = e.get("eventIndex")?;
        let indexes: Vec<usize> = match idx {
            Value::Array(a) => a.iter().filter_map(Value::as_u64).map(|i| i as usize).collect(),
            Value::Number(n) => n.as_u64().map(|i| vec![i as usize]).unwrap_or_default(),
            _ => Vec::new(),
        };
        out.extend(indexes.into_iter().map(|index| ItemError { index, message: message.clone() }));
    }
    out.sort_by_key(|e| e.index);
    out.dedup_by_key(|e| e.index);
    (!out.is_empty()).then_some(out)
}

/// `{"code","message"}` → "code: message", else the body itself (short).
fn error_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let code = v.get("code").and_then(Value::as_str);
        let msg = v.get("message").and_then(Value::as_str);
        match (code, msg) {
            (Some(c), Some(m)) => return format!("{c}: {m}"),
            (None, Some(m)) => return m.to_string(),
            (Some(c), None) => return c.to_string(),
            _ => {}
        }
    }
    truncate(body, 500).to_string()
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Items a list call (`/contacts/lists/{id}/contacts/add|remove`) reported
/// as failed: `{"contacts":{"success":[...],"failure":[...]}}`.
pub fn list_failures(body: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/contacts/failure").and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str) -> BrevoRequest {
        BrevoRequest::new(EndpointClass::Events, path, Value::Null, 3)
    }

    fn reply(status: u16, body: &str) -> BrevoReply {
        BrevoReply { status, body: body.into(), rate: RateHeaders::default() }
    }

    #[test]
    fn success_statuses_are_accepted() {
        for s in [201, 202, 204] {
            assert_eq!(classify(&req("/events/batch"), &reply(s, "")), Verdict::Accepted);
        }
    }

    #[test]
    fn partial_failure_names_the_failed_indexes() {
        let body = r#"{"status":"partial","total_events":4,"successful_events":2,"failed_events":2,
            "errors":[{"eventIndex":[3,1],"message":"invalid identifiers"}]}"#;
        let v = classify(&req("/events/batch"), &reply(207, body));
        assert_eq!(
            v,
            Verdict::Partial(vec![
                ItemError { index: 1, message: "invalid identifiers".into() },
                ItemError { index: 3, message: "invalid identifiers".into() },
            ])
        );
    }

    #[test]
    fn a_400_with_indexes_rejects_only_those_items() {
        let body = r#"{"status":"failed","total_events":2,"successful_events":0,"failed_events":2,
            "errors":[{"eventIndex":[0],"message":"bad name"},{"eventIndex":[1],"message":"bad date"}]}"#;
        match classify(&req("/events/batch"), &reply(400, body)) {
            Verdict::Rejected { items, request_wide, .. } => {
                assert_eq!(items.len(), 2);
                assert_eq!(items[1].message, "bad date");
                assert!(!request_wide);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_400_without_indexes_carries_brevo_message() {
        let body = r#"{"code":"invalid_parameter","message":"events is required"}"#;
        match classify(&req("/events/batch"), &reply(400, body)) {
            Verdict::Rejected { items, message, .. } => {
                assert!(items.is_empty());
                assert_eq!(message, "400: invalid_parameter: events is required");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retryable_and_auth_statuses() {
        let r = req("/events/batch");
        assert!(matches!(classify(&r, &reply(500, "")), Verdict::Retry(_)));
        assert!(matches!(classify(&r, &reply(503, "")), Verdict::Retry(_)));
        assert!(matches!(classify(&r, &reply(408, "")), Verdict::Retry(_)));
        assert!(matches!(classify(&r, &reply(409, "")), Verdict::Retry(_)));
        let body = r#"{"code":"unauthorized","message":"Key not found"}"#;
        assert_eq!(classify(&r, &reply(401, body)), Verdict::Unauthorized("401: unauthorized: Key not found".into()));
    }

    #[test]
    fn a_429_waits_for_the_longer_of_reset_and_retry_after() {
        let mut rep = reply(429, r#"{"code":"too_many_requests","message":"slow down"}"#);
        rep.rate.reset = Some(Duration::from_secs(2));
        rep.rate.retry_after = Some(Duration::from_secs(5));
        assert_eq!(classify(&req("/events/batch"), &rep), Verdict::RateLimited { wait: Some(Duration::from_secs(5)) });
        rep.rate = RateHeaders::default();
        assert_eq!(classify(&req("/events/batch"), &rep), Verdict::RateLimited { wait: None });
    }

    #[test]
    fn missing_list_is_request_wide() {
        match classify(&req("/contacts/lists/9/contacts/add"), &reply(404, r#"{"code":"document_not_found"}"#)) {
            Verdict::Rejected { request_wide, .. } => assert!(request_wide),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rate_headers_are_parsed_with_reset_in_seconds_or_millis() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("x-sib-ratelimit-limit", "10".parse().unwrap());
        h.insert("x-sib-ratelimit-remaining", "3".parse().unwrap());
        h.insert("x-sib-ratelimit-reset", "1".parse().unwrap());
        let r = RateHeaders::from_headers(&h);
        assert_eq!((r.limit, r.remaining, r.reset), (Some(10), Some(3), Some(Duration::from_secs(1))));
        h.insert("x-sib-ratelimit-reset", "5000".parse().unwrap());
        assert_eq!(RateHeaders::from_headers(&h).reset, Some(Duration::from_secs(5)));
        h.insert("x-sib-ratelimit-reset", "soon".parse().unwrap());
        assert_eq!(RateHeaders::from_headers(&h).reset, None);
    }

    #[test]
    fn list_failures_are_read() {
        let body = r#"{"contacts":{"success":["a@x.io"],"failure":["b@x.io"]}}"#;
        assert_eq!(list_failures(body), vec![Value::from("b@x.io")]);
        assert!(list_failures("").is_empty());
    }
}
